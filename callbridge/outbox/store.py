"""The durable outbox on SQLite: write operations, claim ready work, record outcomes.

Synchronous and small: every method is one short transaction on the store's connection,
so the async dispatcher may call it directly. Operations are :class:`CrmOperation` values
plus ``meta`` (hints for the dispatcher that are never sent: the external call id for a
lost-answer lookup, the CRM lookup a register wants first). ``ResultRef`` values in
params are stored as ``{"$ref": [key, field]}``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callbridge.crm.base import CrmError, CrmOperation, OperationKind, ResultRef
from callbridge.outbox.schema import OPEN, SCHEMA
from callbridge.store.db import connect, ensure_schema

__all__ = ["OutboxEntry", "OutboxStore", "StoredOp", "decode_params", "encode_params"]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    op: CrmOperation
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredOp:
    id: int
    call_key: str
    seq: int
    key: str
    kind: OperationKind
    params: Mapping[str, Any]
    meta: Mapping[str, Any]
    status: str
    attempts: int
    not_before: float
    outcome_unknown: bool
    result: Mapping[str, Any] | None
    last_error: str | None
    created_at: float
    updated_at: float

    def operation(self, params: Mapping[str, Any] | None = None) -> CrmOperation:
        return CrmOperation(
            self.call_key, self.key, self.kind, self.params if params is None else params
        )


def _encode(value: Any) -> Any:
    if isinstance(value, ResultRef):
        return {"$ref": [value.key, value.field]}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        ref = value.get("$ref")
        if len(value) == 1 and isinstance(ref, list) and len(ref) == 2:
            return ResultRef(str(ref[0]), str(ref[1]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def encode_params(params: Mapping[str, Any]) -> str:
    return json.dumps(_encode(params), ensure_ascii=False, sort_keys=True)


def decode_params(text: str) -> dict[str, Any]:
    decoded = _decode(json.loads(text))
    assert isinstance(decoded, dict)
    return decoded


def _row(row: sqlite3.Row) -> StoredOp:
    return StoredOp(
        id=row["id"],
        call_key=row["call_key"],
        seq=row["seq"],
        key=row["op_key"],
        kind=OperationKind(row["kind"]),
        params=decode_params(row["params"]),
        meta=json.loads(row["meta"]),
        status=row["status"],
        attempts=row["attempts"],
        not_before=row["not_before"],
        outcome_unknown=bool(row["outcome_unknown"]),
        result=None if row["result"] is None else json.loads(row["result"]),
        last_error=row["last_error"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _error_text(error: CrmError | str) -> str:
    if isinstance(error, str):
        return error
    return f"{error.kind}: {error}"


class OutboxStore:
    """The outbox tables of one store file. ``clock`` gives unix time (injected for tests)."""

    def __init__(self, conn: sqlite3.Connection, clock: Callable[[], float]) -> None:
        self._conn = conn
        self._clock = clock
        ensure_schema(conn, SCHEMA)
        #: Called after operations were added (the dispatcher's wake-up).
        self.listeners: list[Callable[[], None]] = []

    @classmethod
    def open(cls, path: str | Path, clock: Callable[[], float]) -> OutboxStore:
        return cls(connect(path), clock)

    def close(self) -> None:
        self._conn.close()

    # -- transactions -------------------------------------------------------------------

    def _tx(self) -> _Tx:
        return _Tx(self._conn)

    def _log(self, op_id: int, outcome: str, error: CrmError | str | None = None) -> None:
        kind = error.kind.value if isinstance(error, CrmError) else None
        self._conn.execute(
            "INSERT INTO outbox_attempts (op_id, at, outcome, error_kind, error) "
            "VALUES (?, ?, ?, ?, ?)",
            (op_id, self._clock(), outcome, kind, None if error is None else _error_text(error)),
        )

    # -- writing ------------------------------------------------------------------------

    def add(
        self,
        entries: Iterable[OutboxEntry | CrmOperation],
        facts: Mapping[str, Mapping[str, Any] | None] | None = None,
    ) -> int:
        """Write operations (in order) after the existing ones of their call.

        A ``(call_key, key)`` already present is left as it is. ``facts``: what the engine
        knows of calls (``None`` forgets a call), written in the same transaction, so the
        operations and the knowledge they came from never disagree after a crash.
        Returns how many operations were new.
        """
        now = self._clock()
        added = 0
        with self._tx():
            for call_key, value in (facts or {}).items():
                if value is None:
                    self._conn.execute("DELETE FROM outbox_calls WHERE call_key = ?", (call_key,))
                else:
                    self._conn.execute(
                        "INSERT INTO outbox_calls (call_key, facts, updated_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (call_key) DO UPDATE SET facts = excluded.facts, "
                        "updated_at = excluded.updated_at",
                        (call_key, json.dumps(dict(value), sort_keys=True), now),
                    )
            for item in entries:
                entry = item if isinstance(item, OutboxEntry) else OutboxEntry(item)
                op = entry.op
                cur = self._conn.execute(
                    "INSERT INTO outbox_ops (call_key, seq, op_key, kind, params, meta, "
                    "created_at, updated_at) SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ?, ? "
                    "FROM outbox_ops WHERE call_key = ? "
                    "ON CONFLICT (call_key, op_key) DO NOTHING",
                    (
                        op.call_key,
                        op.key,
                        op.kind.value,
                        encode_params(op.params),
                        json.dumps(dict(entry.meta), sort_keys=True),
                        now,
                        now,
                        op.call_key,
                    ),
                )
                if cur.rowcount:
                    added += 1
                    assert cur.lastrowid is not None
                    self._log(cur.lastrowid, "queued")
        if added:
            for listener in list(self.listeners):
                listener()
        return added

    # -- reading ------------------------------------------------------------------------

    def get(self, op_id: int) -> StoredOp | None:
        row = self._conn.execute("SELECT * FROM outbox_ops WHERE id = ?", (op_id,)).fetchone()
        return None if row is None else _row(row)

    def ops_for_call(self, call_key: str) -> list[StoredOp]:
        rows = self._conn.execute(
            "SELECT * FROM outbox_ops WHERE call_key = ? ORDER BY seq", (call_key,)
        ).fetchall()
        return [_row(r) for r in rows]

    def call_facts(self, call_key: str) -> dict[str, Any] | None:
        """What the engine stored about an unfinished call (``None``: nothing)."""
        row = self._conn.execute(
            "SELECT facts FROM outbox_calls WHERE call_key = ?", (call_key,)
        ).fetchone()
        if row is None:
            return None
        value = json.loads(row[0])
        return value if isinstance(value, dict) else None

    def unfinished_calls(self) -> list[str]:
        """Calls the engine took on and has not finished: a ``register`` that did not fail
        for good, or stored facts — and no ``finish`` row at all. Oldest first."""
        rows = self._conn.execute(
            "SELECT call_key FROM ("
            " SELECT call_key, MIN(id) AS first FROM outbox_ops"
            " WHERE kind = ? AND status NOT IN ('failed', 'skipped', 'dropped')"
            " GROUP BY call_key"
            " UNION ALL"
            " SELECT call_key, NULL FROM outbox_calls"
            ") AS taken WHERE NOT EXISTS ("
            " SELECT 1 FROM outbox_ops f WHERE f.call_key = taken.call_key AND f.kind = ?)"
            " GROUP BY call_key ORDER BY MIN(COALESCE(first, 0)), call_key",
            (OperationKind.REGISTER_CALL.value, OperationKind.FINISH_CALL.value),
        ).fetchall()
        return [str(r[0]) for r in rows]

    def find(self, call_key: str, key: str) -> StoredOp | None:
        row = self._conn.execute(
            "SELECT * FROM outbox_ops WHERE call_key = ? AND op_key = ?", (call_key, key)
        ).fetchone()
        return None if row is None else _row(row)

    def listing(self, include_done: bool = False, ids: Sequence[int] = ()) -> list[StoredOp]:
        sql = "SELECT * FROM outbox_ops"
        args: list[Any] = []
        where = []
        if not include_done:
            where.append("status != 'done'")
        if ids:
            where.append(f"id IN ({','.join('?' * len(ids))})")
            args.extend(ids)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._conn.execute(sql + " ORDER BY id", args).fetchall()
        return [_row(r) for r in rows]

    def attempts(self, op_id: int) -> list[sqlite3.Row]:
        return self._conn.execute(
            "SELECT * FROM outbox_attempts WHERE op_id = ? ORDER BY id", (op_id,)
        ).fetchall()

    def depth(self) -> int:
        """Operations not yet done (pending or running)."""
        row = self._conn.execute(
            "SELECT COUNT(*) FROM outbox_ops WHERE status IN ('pending', 'running')"
        ).fetchone()
        return int(row[0])

    def oldest_pending(self) -> float | None:
        row = self._conn.execute(
            "SELECT MIN(created_at) FROM outbox_ops WHERE status IN ('pending', 'running')"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def next_due(self) -> float | None:
        """When the earliest waiting operation or lease comes due."""
        row = self._conn.execute(
            "SELECT MIN(CASE status WHEN 'running' THEN lease_until ELSE not_before END) "
            "FROM outbox_ops WHERE status IN ('pending', 'running')"
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def state(self, name: str) -> str | None:
        row = self._conn.execute(
            "SELECT value FROM outbox_state WHERE name = ?", (name,)
        ).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, name: str, value: str | None) -> None:
        if value is None:
            self._conn.execute("DELETE FROM outbox_state WHERE name = ?", (name,))
        else:
            self._conn.execute(
                "INSERT INTO outbox_state (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    # -- claiming -----------------------------------------------------------------------

    def reclaim_expired(self, now: float) -> int:
        """Take back work whose lease ran out: its outcome is unknown (it may have been sent)."""
        with self._tx():
            rows = self._conn.execute(
                "SELECT id FROM outbox_ops WHERE status = 'running' AND lease_until <= ?", (now,)
            ).fetchall()
            for row in rows:
                self._conn.execute(
                    "UPDATE outbox_ops SET status = 'pending', lease_until = NULL, "
                    "outcome_unknown = 1, updated_at = ? WHERE id = ?",
                    (now, row["id"]),
                )
                self._log(row["id"], "lease expired")
        return len(rows)

    def claim(self, now: float, limit: int, lease: float, scan_calls: int = 1000) -> list[StoredOp]:
        """Atomically take up to ``limit`` ready operations, in per-call order.

        An operation is ready when it is pending, due, and no earlier open operation of its
        call is running or waiting (the ready *prefix* of each call's queue); ready
        operations are taken oldest first, across every call. ``show`` operations of a call
        whose ``finish`` is already queued are skipped (the call is over; a card now would
        only flash), and so are its ``hide`` operations when no ``show`` of it was ever
        done (or possibly done: sent with its answer lost).

        Readiness is decided in SQL over the whole table: a scan of the oldest calls (the
        earlier design, ``scan_calls`` of them) let calls waiting on a retry or an answer
        hide ready work behind them, and cost one query per open call each round.
        ``scan_calls`` now bounds how many candidates one query reads (pages follow).
        """
        taken: list[StoredOp] = []
        page = max(1, min(scan_calls, 2 * limit))
        last_id = 0
        with self._tx():
            while len(taken) < limit:
                # Operations taken in this claim are running now; they do not hold up the
                # rest of their call's prefix (it goes in the same batch).
                mine = json.dumps([op.id for op in taken])
                rows = self._conn.execute(
                    "SELECT * FROM outbox_ops o WHERE o.status = 'pending' AND o.not_before <= ? "
                    "AND o.id > ? AND NOT EXISTS (SELECT 1 FROM outbox_ops e "
                    " WHERE e.call_key = o.call_key AND e.seq < o.seq AND ("
                    "  (e.status = 'running' AND e.id NOT IN (SELECT value FROM json_each(?)))"
                    "  OR (e.status = 'pending' AND e.not_before > ?))) "
                    "ORDER BY o.id LIMIT ?",
                    (now, last_id, mine, now, page),
                ).fetchall()
                if not rows:
                    break
                ready = [_row(r) for r in rows]
                last_id = ready[-1].id
                self._take(now, lease, limit, ready, taken)
                if len(rows) < page:
                    break
        return taken

    def _take(
        self, now: float, lease: float, limit: int, ready: list[StoredOp], taken: list[StoredOp]
    ) -> None:
        """Take ``ready`` (oldest first) into ``taken``, skipping what the call's end
        made pointless."""
        ended: dict[str, bool] = {}
        shown: dict[str, bool] = {}
        for op in ready:
            if len(taken) >= limit:
                break
            call = op.call_key
            if call not in ended:
                ended[call] = self._finish_queued(call)
                shown[call] = ended[call] and self._has_done_show(call)
            if ended[call] and op.kind is OperationKind.SHOW_CALL:
                self._finish_as(op.id, "skipped", "call already ended", now)
                continue
            if ended[call] and op.kind is OperationKind.HIDE_CALL and not shown[call]:
                self._finish_as(op.id, "skipped", "call already ended, never shown", now)
                continue
            self._conn.execute(
                "UPDATE outbox_ops SET status = 'running', lease_until = ?, "
                "updated_at = ? WHERE id = ?",
                (now + lease, now, op.id),
            )
            taken.append(op)

    def _finish_queued(self, call_key: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM outbox_ops WHERE call_key = ? AND kind = ? "
            "AND status IN ('pending', 'running')",
            (call_key, OperationKind.FINISH_CALL.value),
        ).fetchone()
        return row is not None

    def _has_done_show(self, call_key: str) -> bool:
        # A show whose answer was lost (timeout, dead process) may have reached the portal:
        # its card may be on screen, so the hides must still go.
        row = self._conn.execute(
            "SELECT 1 FROM outbox_ops WHERE call_key = ? AND kind = ? "
            "AND (status = 'done' OR outcome_unknown = 1)",
            (call_key, OperationKind.SHOW_CALL.value),
        ).fetchone()
        return row is not None

    # -- outcomes -----------------------------------------------------------------------

    def _finish_as(self, op_id: int, status: str, why: str | None, now: float) -> None:
        self._conn.execute(
            "UPDATE outbox_ops SET status = ?, lease_until = NULL, last_error = "
            "COALESCE(?, last_error), updated_at = ?, finished_at = ? WHERE id = ?",
            (status, why, now, now, op_id),
        )
        self._log(op_id, status, why)

    def complete(self, op_id: int, value: Mapping[str, Any], note: str = "done") -> None:
        now = self._clock()
        with self._tx():
            self._conn.execute(
                "UPDATE outbox_ops SET status = 'done', lease_until = NULL, result = ?, "
                "outcome_unknown = 0, attempts = attempts + 1, updated_at = ?, "
                "finished_at = ? WHERE id = ?",
                (json.dumps(dict(value), ensure_ascii=False, default=str), now, now, op_id),
            )
            self._log(op_id, note)

    def retry_later(
        self, op_id: int, error: CrmError | str, not_before: float, outcome_unknown: bool
    ) -> None:
        """A failed attempt that may succeed later."""
        now = self._clock()
        with self._tx():
            self._conn.execute(
                "UPDATE outbox_ops SET status = 'pending', lease_until = NULL, "
                "attempts = attempts + 1, not_before = ?, last_error = ?, "
                "outcome_unknown = MAX(outcome_unknown, ?), updated_at = ? WHERE id = ?",
                (not_before, _error_text(error), int(outcome_unknown), now, op_id),
            )
            self._log(op_id, "retry", error)

    def release(self, op_ids: Iterable[int], why: str, not_before: float = 0.0) -> None:
        """Give work back untried (no attempt counted): paused sending, a blocked dependency."""
        now = self._clock()
        with self._tx():
            for op_id in op_ids:
                self._conn.execute(
                    "UPDATE outbox_ops SET status = 'pending', lease_until = NULL, "
                    "not_before = MAX(not_before, ?), updated_at = ? "
                    "WHERE id = ? AND status = 'running'",
                    (not_before, now, op_id),
                )
                self._log(op_id, "released", why)

    def fail(self, op_id: int, error: CrmError | str, skip_after: Sequence[OperationKind]) -> None:
        """Mark an operation failed for good; later open ops of ``skip_after`` kinds skipped."""
        now = self._clock()
        with self._tx():
            self._conn.execute(
                "UPDATE outbox_ops SET attempts = attempts + 1 WHERE id = ?", (op_id,)
            )
            self._finish_as(op_id, "failed", _error_text(error), now)
            row = self._conn.execute(
                "SELECT call_key, seq, op_key FROM outbox_ops WHERE id = ?", (op_id,)
            ).fetchone()
            if skip_after:
                later = self._conn.execute(
                    "SELECT id, kind FROM outbox_ops WHERE call_key = ? AND seq > ? "
                    "AND status IN ('pending', 'running')",
                    (row["call_key"], row["seq"]),
                ).fetchall()
                for other in later:
                    if OperationKind(other["kind"]) in skip_after:
                        why = f"skipped: {row['op_key']} failed ({_error_text(error)})"
                        self._finish_as(other["id"], "skipped", why, now)

    def set_meta(self, op_id: int, meta: Mapping[str, Any]) -> None:
        """Remember what the dispatcher learnt for an operation (a CRM lookup's answer)."""
        self._conn.execute(
            "UPDATE outbox_ops SET meta = ?, updated_at = ? WHERE id = ?",
            (json.dumps(dict(meta), sort_keys=True), self._clock(), op_id),
        )

    def skip(self, op_id: int, why: str) -> None:
        with self._tx():
            self._finish_as(op_id, "skipped", why, self._clock())

    # -- admin (``callbridge outbox``) ----------------------------------------------------

    def retry(self, op_ids: Sequence[int]) -> list[int]:
        """Failed/skipped/dropped → pending now, plus the skipped later ops of their calls."""
        now = self._clock()
        revived: list[int] = []
        with self._tx():
            for op_id in op_ids:
                row = self._conn.execute(
                    "SELECT call_key, seq, status FROM outbox_ops WHERE id = ?", (op_id,)
                ).fetchone()
                if row is None or row["status"] in OPEN or row["status"] == "done":
                    continue
                later = self._conn.execute(
                    "SELECT id FROM outbox_ops WHERE call_key = ? AND (id = ? OR "
                    "(seq > ? AND status = 'skipped'))",
                    (row["call_key"], op_id, row["seq"]),
                ).fetchall()
                for other in later:
                    self._conn.execute(
                        "UPDATE outbox_ops SET status = 'pending', not_before = 0, "
                        "lease_until = NULL, finished_at = NULL, updated_at = ? WHERE id = ?",
                        (now, other["id"]),
                    )
                    self._log(other["id"], "retry requested")
                    revived.append(other["id"])
        return revived

    def drop(self, op_ids: Sequence[int]) -> list[int]:
        """Give up on operations that are not done (they stay listed as ``dropped``)."""
        now = self._clock()
        dropped: list[int] = []
        with self._tx():
            for op_id in op_ids:
                row = self._conn.execute(
                    "SELECT status FROM outbox_ops WHERE id = ?", (op_id,)
                ).fetchone()
                if row is None or row["status"] in ("done", "dropped"):
                    continue
                self._finish_as(op_id, "dropped", "dropped by admin", now)
                dropped.append(op_id)
        return dropped

    def failed_ids(self) -> list[int]:
        return [
            r[0]
            for r in self._conn.execute(
                "SELECT id FROM outbox_ops WHERE status = 'failed' ORDER BY id"
            )
        ]

    def purge(self, now: float, retention: float) -> int:
        """Delete calls whose operations are all done or skipped since ``retention`` seconds.

        Calls with a failed or dropped operation stay until an admin acts on them.
        """
        with self._tx():
            cur = self._conn.execute(
                "DELETE FROM outbox_ops WHERE call_key IN ("
                " SELECT call_key FROM outbox_ops GROUP BY call_key"
                " HAVING SUM(status NOT IN ('done', 'skipped')) = 0"
                " AND MAX(COALESCE(finished_at, updated_at)) < ?)",
                (now - retention,),
            )
            # Facts outlive their call only after a crash between finish and forgetting.
            self._conn.execute(
                "DELETE FROM outbox_calls WHERE call_key IN "
                "(SELECT call_key FROM outbox_ops WHERE kind = ?)",
                (OperationKind.FINISH_CALL.value,),
            )
        return cur.rowcount


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (rollback on error); nests as a no-op."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._outer = False

    def __enter__(self) -> None:
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")
            self._outer = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._outer:
            return
        if exc_type is None:
            self._conn.execute("COMMIT")
        else:
            self._conn.execute("ROLLBACK")
