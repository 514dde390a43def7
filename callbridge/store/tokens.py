"""Durable Bitrix24 application credentials: OAuth tokens and what the install told us.

One row per portal key (one portal per process today). Every write is one statement in
autocommit mode on a ``synchronous=FULL`` WAL database, so a saved refresh token survives a
crash the moment :meth:`TokenStore.save_refreshed` returns — the client uses a rotated access
token only after that (reference §2.2: the old refresh token is spent once the new one is
issued). ``generation`` grows on every save, so a client stuck on a refused refresh sees a
reinstall (new tokens written by the install handler, maybe in another process) and resumes.
The refusal itself is stored too, for ``/health`` and ``callbridge check``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from callbridge.store.db import connect, ensure_schema

__all__ = ["StoredTokens", "TokenStore", "Tokens"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bitrix24_tokens (
    portal            TEXT PRIMARY KEY,
    access_token      TEXT NOT NULL,
    refresh_token     TEXT NOT NULL,
    expires           REAL NOT NULL,
    member_id         TEXT NOT NULL DEFAULT '',
    client_endpoint   TEXT NOT NULL DEFAULT '',
    application_token TEXT NOT NULL DEFAULT '',
    domain            TEXT NOT NULL DEFAULT '',
    scope             TEXT NOT NULL DEFAULT '',
    generation        INTEGER NOT NULL DEFAULT 1,
    failed_reason     TEXT,
    failed_at         REAL,
    updated_at        REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Tokens:
    """A full credential set, as an install (``ONAPPINSTALL``) or a code exchange gives it."""

    access_token: str
    refresh_token: str
    expires: float
    member_id: str = ""
    client_endpoint: str = ""
    application_token: str = ""
    domain: str = ""
    scope: str = ""

    def __repr__(self) -> str:  # secrets never end up in a log through repr()
        return (
            f"Tokens(member_id={self.member_id!r}, client_endpoint={self.client_endpoint!r}, "
            f"domain={self.domain!r}, expires={self.expires!r}, access_token=***, "
            "refresh_token=***, application_token=***)"
        )


@dataclass(frozen=True, repr=False)
class StoredTokens(Tokens):
    generation: int = 0
    failed_reason: str | None = None
    failed_at: float | None = None


class TokenStore:
    """The ``bitrix24_tokens`` table of the store."""

    def __init__(self, conn: sqlite3.Connection, portal: str = "default") -> None:
        self._conn = conn
        self.portal = portal
        ensure_schema(conn, _SCHEMA)

    @classmethod
    def open(cls, path: str | Path, portal: str = "default") -> Self:
        return cls(connect(path), portal)

    def close(self) -> None:
        self._conn.close()

    def load(self) -> StoredTokens | None:
        row = self._conn.execute(
            "SELECT * FROM bitrix24_tokens WHERE portal = ?", (self.portal,)
        ).fetchone()
        if row is None:
            return None
        return StoredTokens(
            access_token=row["access_token"],
            refresh_token=row["refresh_token"],
            expires=row["expires"],
            member_id=row["member_id"],
            client_endpoint=row["client_endpoint"],
            application_token=row["application_token"],
            domain=row["domain"],
            scope=row["scope"],
            generation=row["generation"],
            failed_reason=row["failed_reason"],
            failed_at=row["failed_at"],
        )

    def save(self, tokens: Tokens) -> int:
        """Store a full set (install, reinstall, code exchange); clears a recorded failure."""
        self._conn.execute(
            """
            INSERT INTO bitrix24_tokens (portal, access_token, refresh_token, expires, member_id,
                client_endpoint, application_token, domain, scope, generation, failed_reason,
                failed_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, NULL, NULL, ?)
            ON CONFLICT (portal) DO UPDATE SET
                access_token = excluded.access_token,
                refresh_token = excluded.refresh_token,
                expires = excluded.expires,
                -- a code exchange knows neither the application token nor the portal (§2.2):
                -- keep what an install stored
                member_id = COALESCE(NULLIF(excluded.member_id, ''), member_id),
                client_endpoint = COALESCE(NULLIF(excluded.client_endpoint, ''), client_endpoint),
                application_token =
                    COALESCE(NULLIF(excluded.application_token, ''), application_token),
                domain = COALESCE(NULLIF(excluded.domain, ''), domain),
                scope = COALESCE(NULLIF(excluded.scope, ''), scope),
                generation = generation + 1,
                failed_reason = NULL,
                failed_at = NULL,
                updated_at = excluded.updated_at
            """,
            (
                self.portal,
                tokens.access_token,
                tokens.refresh_token,
                tokens.expires,
                tokens.member_id,
                tokens.client_endpoint,
                tokens.application_token,
                tokens.domain,
                tokens.scope,
                time.time(),
            ),
        )
        return self._generation()

    def adopt_application_token(self, application_token: str) -> bool:
        """Store the application token a verified event brought, when none is stored yet
        (an interactive install or a code exchange gives none, reference §2.2)."""
        cur = self._conn.execute(
            "UPDATE bitrix24_tokens SET application_token = ?, updated_at = ? "
            "WHERE portal = ? AND application_token = ''",
            (application_token, time.time(), self.portal),
        )
        return cur.rowcount == 1

    def save_refreshed(
        self,
        *,
        access_token: str,
        refresh_token: str,
        expires: float,
        client_endpoint: str = "",
        scope: str = "",
    ) -> int:
        """Store a refresh answer's rotated pair (the install's application token stays)."""
        cur = self._conn.execute(
            """
            UPDATE bitrix24_tokens SET access_token = ?, refresh_token = ?, expires = ?,
                client_endpoint = COALESCE(NULLIF(?, ''), client_endpoint),
                scope = COALESCE(NULLIF(?, ''), scope),
                generation = generation + 1, failed_reason = NULL, failed_at = NULL,
                updated_at = ?
            WHERE portal = ?
            """,
            (
                access_token,
                refresh_token,
                expires,
                client_endpoint,
                scope,
                time.time(),
                self.portal,
            ),
        )
        if cur.rowcount != 1:
            raise LookupError(f"no Bitrix24 tokens stored for portal {self.portal!r}")
        return self._generation()

    def set_client_endpoint(self, client_endpoint: str) -> None:
        """The portal moved (HTTP 302 to a new address): later requests go there."""
        self._conn.execute(
            "UPDATE bitrix24_tokens SET client_endpoint = ?, updated_at = ? WHERE portal = ?",
            (client_endpoint, time.time(), self.portal),
        )

    def mark_failed(self, reason: str) -> None:
        """The OAuth server refused our refresh token: record why, for health and check."""
        self._conn.execute(
            "UPDATE bitrix24_tokens SET failed_reason = ?, failed_at = ? WHERE portal = ?",
            (reason, time.time(), self.portal),
        )

    def _generation(self) -> int:
        row = self._conn.execute(
            "SELECT generation FROM bitrix24_tokens WHERE portal = ?", (self.portal,)
        ).fetchone()
        return int(row["generation"]) if row is not None else 0
