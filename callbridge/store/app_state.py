"""Small durable facts of the running application: which events were already taken in
(so a repeated delivery does nothing) and a few named values (what the last install
bound and registered, for ``/health`` and the admin).

Tokens and the portal's identity live in :mod:`callbridge.store.tokens`; this module
keeps only what the web side and the actions need. Every write is one statement, so a
crash leaves either the old or the new row, never half of one.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from callbridge.store.db import ensure_schema

__all__ = ["AppState"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen_events (
    key   TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_events_at ON seen_events (at);
CREATE TABLE IF NOT EXISTS app_values (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    at    REAL NOT NULL
);
"""


class AppState:
    """Seen-event keys and named JSON values in the shared SQLite store."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        ensure_schema(conn, _SCHEMA)

    def first_time(self, key: str, event: str, now: float) -> bool:
        """Remember ``key``; ``True`` only the first time it is seen (atomic, so two
        concurrent deliveries of one event cannot both pass)."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO seen_events (key, event, at) VALUES (?, ?, ?)",
            (key, event, now),
        )
        return cur.rowcount == 1

    def forget(self, key: str) -> None:
        """Drop ``key`` (an event refused for a passing reason may be taken again)."""
        self._conn.execute("DELETE FROM seen_events WHERE key = ?", (key,))

    def prune_seen(self, before: float) -> int:
        """Forget keys older than ``before``; answers how many went."""
        return self._conn.execute("DELETE FROM seen_events WHERE at < ?", (before,)).rowcount

    def seen_count(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM seen_events").fetchone()
        return int(row[0])

    def put(self, name: str, value: Any, now: float) -> None:
        self._conn.execute(
            "INSERT INTO app_values (name, value, at) VALUES (?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, at = excluded.at",
            (name, json.dumps(value, sort_keys=True), now),
        )

    def get(self, name: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM app_values WHERE name = ?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])
