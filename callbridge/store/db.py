"""Opening the SQLite store and applying each module's schema.

Modules declare their tables as ``CREATE TABLE IF NOT EXISTS`` scripts and call
:func:`ensure_schema`; the store stays one file, in WAL mode so readers (the web
admin, ``callbridge outbox list``) never block the writer.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect", "ensure_schema"]


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating if needed) the store at ``path``; ``":memory:"`` works for tools."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a committed outbox row survives a power cut, not only a process kill.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def ensure_schema(conn: sqlite3.Connection, script: str) -> None:
    conn.executescript(script)
