"""The outbox tables. The outbox's rules live here, not only in code:

- ``status`` is a closed set (CHECK); ``done``, ``failed``, ``skipped`` and ``dropped`` are
  terminal;
- ``(call_key, op_key)`` is unique, so writing the same step of a call twice (a replay,
  a resync after restart) is a no-op;
- ``(call_key, seq)`` is unique: the per-call order an operation waits on;
- ``lease_until`` marks work a dispatcher took; an expired lease is work a dead process
  left behind, taken back with its outcome unknown;
- ``outbox_attempts`` is an append-only log (updates are refused by a trigger);
- ``outbox_calls`` holds what the engine knows of each call it has not finished yet (who
  rang, who answered and when, transfers, recordings), written in the same transaction
  as the call's operations and deleted with its ``finish``, so a restarted engine can
  finish a call that ended while no process was watching it.
"""

from __future__ import annotations

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_ops (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    call_key        TEXT    NOT NULL,
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    op_key          TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    params          TEXT    NOT NULL,
    meta            TEXT    NOT NULL DEFAULT '{}',
    status          TEXT    NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'done', 'failed', 'skipped',
                                      'dropped')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    not_before      REAL    NOT NULL DEFAULT 0,
    lease_until     REAL,
    outcome_unknown INTEGER NOT NULL DEFAULT 0 CHECK (outcome_unknown IN (0, 1)),
    result          TEXT,
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    finished_at     REAL,
    UNIQUE (call_key, op_key),
    UNIQUE (call_key, seq),
    CHECK ((status = 'running') = (lease_until IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS outbox_ops_open ON outbox_ops (status, call_key, seq);

CREATE TABLE IF NOT EXISTS outbox_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    op_id       INTEGER NOT NULL REFERENCES outbox_ops (id) ON DELETE CASCADE,
    at          REAL    NOT NULL,
    outcome     TEXT    NOT NULL,
    error_kind  TEXT,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS outbox_attempts_op ON outbox_attempts (op_id);
CREATE TRIGGER IF NOT EXISTS outbox_attempts_append_only
BEFORE UPDATE ON outbox_attempts
BEGIN
    SELECT RAISE(ABORT, 'outbox_attempts is append-only');
END;

CREATE TABLE IF NOT EXISTS outbox_calls (
    call_key    TEXT PRIMARY KEY,
    facts       TEXT NOT NULL,
    updated_at  REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS outbox_state (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

TERMINAL = ("done", "failed", "skipped", "dropped")
OPEN = ("pending", "running")
