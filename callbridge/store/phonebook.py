"""The local phonebook tables: CRM phone key → entity, users, remembered misses, cursors.

Routing answers the dialplan from here in microseconds instead of asking the CRM per
call. Phone keys are the canonical digits of :func:`callbridge.routing.numbers.phone_key`
(this module only stores them). Every write of one entity replaces its phones in one
transaction, so a reader never sees an entity with half its numbers.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from callbridge.store.db import ensure_schema

__all__ = ["PhonebookEntity", "PhonebookStore", "PhonebookUser"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS pb_entity (
    entity_type TEXT NOT NULL,            -- contact | company | lead
    entity_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    responsible_id INTEGER,               -- ASSIGNED_BY_ID
    modified TEXT NOT NULL DEFAULT '',    -- DATE_MODIFY as the CRM wrote it
    PRIMARY KEY (entity_type, entity_id)
);
CREATE TABLE IF NOT EXISTS pb_phone (
    phone_key TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id INTEGER NOT NULL,
    raw TEXT NOT NULL,                    -- the number as the CRM holds it
    PRIMARY KEY (phone_key, entity_type, entity_id),
    FOREIGN KEY (entity_type, entity_id) REFERENCES pb_entity ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS pb_phone_entity ON pb_phone (entity_type, entity_id);
CREATE TABLE IF NOT EXISTS pb_user (
    user_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    extension TEXT,
    mobile TEXT,
    active INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pb_user_extension ON pb_user (extension);
CREATE TABLE IF NOT EXISTS pb_miss (
    phone_key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL              -- on the phonebook's clock (seconds)
);
CREATE TABLE IF NOT EXISTS pb_cursor (
    name TEXT PRIMARY KEY,                -- e.g. modified:contact, full_sync_at
    value TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class PhonebookEntity:
    type: str
    id: int
    name: str
    responsible_id: int | None
    modified: str = ""


@dataclass(frozen=True, slots=True)
class PhonebookUser:
    id: int
    name: str
    extension: str | None
    mobile: str | None
    active: bool


class PhonebookStore:
    """SQLite access for the phonebook (one connection, used from one thread)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._depth = 0
        ensure_schema(conn, SCHEMA)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes (a page of a sync) into one commit; nests."""
        if self._depth == 0:
            self._conn.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self._conn.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self._conn.execute("COMMIT")

    # entities ------------------------------------------------------------------------

    def put_entity(self, entity: PhonebookEntity, phones: Iterable[tuple[str, str]]) -> None:
        """Insert or replace ``entity`` and all its phones (``(key, raw)`` pairs)."""
        with self.transaction():
            self._conn.execute(
                "INSERT INTO pb_entity (entity_type, entity_id, name, responsible_id, modified)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (entity_type, entity_id) DO UPDATE SET"
                " name = excluded.name, responsible_id = excluded.responsible_id,"
                " modified = excluded.modified",
                (entity.type, entity.id, entity.name, entity.responsible_id, entity.modified),
            )
            self._conn.execute(
                "DELETE FROM pb_phone WHERE entity_type = ? AND entity_id = ?",
                (entity.type, entity.id),
            )
            rows = {key: raw for key, raw in phones if key}
            self._conn.executemany(
                "INSERT INTO pb_phone (phone_key, entity_type, entity_id, raw) VALUES (?, ?, ?, ?)",
                [(key, entity.type, entity.id, raw) for key, raw in rows.items()],
            )
            # A number that now belongs to someone is no longer a miss.
            self._conn.executemany("DELETE FROM pb_miss WHERE phone_key = ?", [(k,) for k in rows])

    def delete_entity(self, entity_type: str, entity_id: int) -> bool:
        cur = self._conn.execute(
            "DELETE FROM pb_entity WHERE entity_type = ? AND entity_id = ?",
            (entity_type, entity_id),
        )
        return cur.rowcount > 0

    def entities_by_key(self, key: str) -> list[PhonebookEntity]:
        rows = self._conn.execute(
            "SELECT e.entity_type, e.entity_id, e.name, e.responsible_id, e.modified"
            " FROM pb_phone p JOIN pb_entity e"
            " ON e.entity_type = p.entity_type AND e.entity_id = p.entity_id"
            " WHERE p.phone_key = ? ORDER BY e.entity_type, e.entity_id",
            (key,),
        ).fetchall()
        return [PhonebookEntity(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def entity(self, entity_type: str, entity_id: int) -> PhonebookEntity | None:
        r = self._conn.execute(
            "SELECT entity_type, entity_id, name, responsible_id, modified FROM pb_entity"
            " WHERE entity_type = ? AND entity_id = ?",
            (entity_type, entity_id),
        ).fetchone()
        return None if r is None else PhonebookEntity(r[0], r[1], r[2], r[3], r[4])

    def phones_of(self, entity_type: str, entity_id: int) -> list[str]:
        rows = self._conn.execute(
            "SELECT phone_key FROM pb_phone WHERE entity_type = ? AND entity_id = ?"
            " ORDER BY phone_key",
            (entity_type, entity_id),
        ).fetchall()
        return [r[0] for r in rows]

    def entity_ids(self, entity_type: str) -> set[int]:
        rows = self._conn.execute(
            "SELECT entity_id FROM pb_entity WHERE entity_type = ?", (entity_type,)
        ).fetchall()
        return {r[0] for r in rows}

    def count_entities(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM pb_entity").fetchone()[0])

    # users ---------------------------------------------------------------------------

    def put_users(self, users: Sequence[PhonebookUser]) -> None:
        with self.transaction():
            self._conn.executemany(
                "INSERT INTO pb_user (user_id, name, extension, mobile, active)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
                " name = excluded.name, extension = excluded.extension,"
                " mobile = excluded.mobile, active = excluded.active",
                [(u.id, u.name, u.extension, u.mobile, int(u.active)) for u in users],
            )

    def replace_users(self, users: Sequence[PhonebookUser]) -> None:
        """The full user list: users no longer listed are removed."""
        with self.transaction():
            self._conn.execute("DELETE FROM pb_user")
            self.put_users(users)

    def user(self, user_id: int) -> PhonebookUser | None:
        r = self._conn.execute(
            "SELECT user_id, name, extension, mobile, active FROM pb_user WHERE user_id = ?",
            (user_id,),
        ).fetchone()
        return None if r is None else PhonebookUser(r[0], r[1], r[2], r[3], bool(r[4]))

    def count_users(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM pb_user").fetchone()[0])

    # misses --------------------------------------------------------------------------

    def remember_miss(self, key: str, expires_at: float) -> None:
        self._conn.execute(
            "INSERT INTO pb_miss (phone_key, expires_at) VALUES (?, ?)"
            " ON CONFLICT (phone_key) DO UPDATE SET expires_at = excluded.expires_at",
            (key, expires_at),
        )

    def is_miss(self, key: str, now: float) -> bool:
        r = self._conn.execute(
            "SELECT expires_at FROM pb_miss WHERE phone_key = ?", (key,)
        ).fetchone()
        return r is not None and float(r[0]) > now

    def purge_misses(self, now: float) -> int:
        return self._conn.execute("DELETE FROM pb_miss WHERE expires_at <= ?", (now,)).rowcount

    def forget_misses(self) -> None:
        self._conn.execute("DELETE FROM pb_miss")

    # cursors -------------------------------------------------------------------------

    def cursor(self, name: str) -> str | None:
        r = self._conn.execute("SELECT value FROM pb_cursor WHERE name = ?", (name,)).fetchone()
        return None if r is None else str(r[0])

    def set_cursor(self, name: str, value: str) -> None:
        self._conn.execute(
            "INSERT INTO pb_cursor (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )
