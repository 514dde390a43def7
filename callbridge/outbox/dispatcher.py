"""Hands outbox operations to the CRM port: ordered per call, batched across calls.

One round (:meth:`Dispatcher.run_once`) claims up to ``batch_size`` ready operations (the
ready prefix of each call's queue, oldest calls first), prepares them, sends them in one
``execute()`` and records every outcome. Preparing an operation means:

- resolving :class:`ResultRef` values to results stored earlier; a reference to an
  operation in the same ``execute()`` is left for the adapter (``$result[...]``), except
  for a timeline comment, which waits for the next round: it needs the finish's real
  answer (its CRM entity, or that there is none). A comment whose finish answered no CRM
  entity (an internal call, a number the portal bound to nothing) is skipped with that
  reason, never failed: there is nothing to fix and nowhere to write it;
- for a ``register``/``finish`` whose earlier answer was lost (timeout after sending,
  lease expired in a dead process), asking the CRM first (``find_call``) and not sending
  again when it already happened — a lost answer never makes a second call;
- the CRM look-ups the rules asked for: the registration priority (the entities of the
  call's number before ``register``) and the responsible user of a missed call. With an
  ``entity_lookup`` (the FastAGI phonebook) the entities come from there and cost no
  REST request; without one, or when it cannot tell (``None``), one ``entities_by_phone``
  per call asks the CRM.

Time, randomness and sleeping are injected, so tests drive them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from callbridge.crm.base import (
    CrmEntity,
    CrmError,
    CrmOperation,
    CrmPort,
    ErrorKind,
    OperationKind,
    ResultRef,
)
from callbridge.outbox.retry import RetryPolicy, next_attempt_at
from callbridge.outbox.store import OutboxStore, StoredOp

__all__ = ["SKIP_AFTER_FAILURE", "Dispatcher", "EntityLookup", "OutboxSettings"]

log = logging.getLogger(__name__)

#: When an operation fails for good, which later operations of its call are skipped.
#: Show/hide are best-effort: their failure never blocks the finish.
SKIP_AFTER_FAILURE: Mapping[OperationKind, tuple[OperationKind, ...]] = {
    OperationKind.REGISTER_CALL: tuple(OperationKind),  # nothing works without CALL_ID
    # needs the statistics row / the CRM entity the finish answers
    OperationKind.FINISH_CALL: (OperationKind.ATTACH_RECORD, OperationKind.ADD_COMMENT),
}

#: Operations whose references are resolved from stored results only (never ``$result``
#: inside a batch), and skipped when the referenced result lacks the field: a comment
#: goes on the entity ``finish`` answered, and a call bound to none has no timeline.
_NEEDS_STORED_RESULT = frozenset({OperationKind.ADD_COMMENT})

#: Operations whose lost answer is checked with ``find_call`` before sending again.
_CHECK_LOST = (OperationKind.REGISTER_CALL, OperationKind.FINISH_CALL)

_PAUSED = "paused_until"
_PAUSE_REASON = "pause_reason"


@dataclass(frozen=True, slots=True)
class OutboxSettings:
    batch_size: int = 50
    lease: float = 120.0
    retention: float = 7 * 86400.0
    purge_every: float = 3600.0
    #: Longest idle wait between looks at the store (a safety net; adds wake the loop).
    idle_max: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class _Prep(Enum):
    DONE = "done"  # finished during preparation (lost answer found in the CRM)
    SKIPPED = "skipped"
    BLOCKED = "blocked"
    NEXT_ROUND = "next_round"  # its dependency is in this round's batch


def _always_active(_user_id: int) -> bool:
    return True


#: The entities holding a phone number, as ``{"type", "id", "responsible"}`` dicts
#: (``type`` lower-case: contact | company | lead), or ``None`` when the source cannot
#: tell now (then the CRM is asked).
EntityLookup = Callable[[str], Awaitable[list[dict[str, Any]] | None]]


class Dispatcher:
    def __init__(
        self,
        store: OutboxStore,
        crm: CrmPort,
        *,
        clock: Callable[[], float],
        rand: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        settings: OutboxSettings | None = None,
        is_active_user: Callable[[int], bool] = _always_active,
        entity_lookup: EntityLookup | None = None,
    ) -> None:
        self._store = store
        self._crm = crm
        self._clock = clock
        self._rand = rand
        self._sleep = sleep
        self._settings = settings or OutboxSettings()
        self._is_active_user = is_active_user
        self._entity_lookup = entity_lookup
        self._wake = asyncio.Event()
        self._last_purge = float("-inf")
        #: Set by ``_resolve`` when it answers BLOCKED: what is awaited and until when.
        self._blocked_on = ""
        self._blocked_until = 0.0
        store.listeners.append(self.wake)
        #: Rounds that sent an ``execute()`` (for tests and metrics).
        self.executes = 0
        #: Rounds that failed with an unexpected exception (shown on /health).
        self.crashes = 0

    def wake(self) -> None:
        self._wake.set()

    # -- pause (auth) -----------------------------------------------------------------------

    def paused_until(self) -> float | None:
        value = self._store.state(_PAUSED)
        return None if value is None else float(value)

    def pause_reason(self) -> str | None:
        return self._store.state(_PAUSE_REASON)

    def _pause(self, error: CrmError, now: float) -> None:
        until = next_attempt_at(self._settings.retry, ErrorKind.AUTH, 1, now, 0.0) or now
        log.warning(
            "outbox paused until %.0f: the portal refused our credentials (%s)", until, error
        )
        self._store.set_state(_PAUSED, repr(until))
        self._store.set_state(_PAUSE_REASON, str(error))

    # -- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set; wake early when operations are added."""
        while not stop.is_set():
            self._wake.clear()
            try:
                if await self.run_once():
                    continue
            except Exception:
                # A bug or a broken store must not silently end delivery: log it, wait as
                # when idle (leases bring back whatever was in flight), and go on.
                self.crashes += 1
                log.exception("outbox: dispatch round failed; trying again")
            await self._idle(stop)

    async def _idle(self, stop: asyncio.Event) -> None:
        now = self._clock()
        due = self._store.next_due()
        paused = self.paused_until()
        wait = self._settings.idle_max
        if due is not None:
            wait = min(wait, max(0.0, due - now))
        if paused is not None and paused > now:
            wait = max(wait, paused - now)
        waiters = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._sleep(wait)),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for waiter in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter

    async def run_once(self) -> int:
        """One round; returns how many operations moved (done, failed, retried, skipped)."""
        now = self._clock()
        paused = self.paused_until()
        if paused is not None:
            if paused > now:
                return 0
            self._store.set_state(_PAUSED, None)
        self._store.reclaim_expired(now)
        if now - self._last_purge >= self._settings.purge_every:
            self._last_purge = now
            self._store.purge(now, self._settings.retention)
        claimed = self._store.claim(now, self._settings.batch_size, self._settings.lease)
        if not claimed:
            return 0
        moved = 0
        batch: list[tuple[StoredOp, CrmOperation]] = []
        in_batch: dict[str, set[str]] = {}
        blocked: set[str] = set()
        for index, op in enumerate(claimed):
            if op.call_key in blocked:
                self._store.release([op.id], "waiting on an earlier operation of its call", now)
                continue
            try:
                prepared = await self._prepare(op, in_batch.get(op.call_key, set()))
            except Exception as exc:
                err = exc if isinstance(exc, CrmError) else self._unexpected(exc)
                blocked.add(op.call_key)
                self._after_error(op, err, now, maybe_sent=False)
                moved += 1
                if err.kind is ErrorKind.AUTH:
                    rest = [o.id for o in claimed[index + 1 :]] + [o.id for o, _ in batch]
                    self._store.release(rest, "paused: the portal refused our credentials")
                    return moved
                continue
            if prepared is _Prep.BLOCKED:
                blocked.add(op.call_key)
                why = f"waiting on {self._blocked_on} of its call"
                self._store.release([op.id], why, self._blocked_until)
            elif prepared is _Prep.NEXT_ROUND:
                # Ready as soon as this round's answer is stored: the next round takes it.
                blocked.add(op.call_key)
                self._store.release([op.id], "waiting for the answer of this round", now)
            elif isinstance(prepared, _Prep):
                moved += 1
            else:
                batch.append((op, prepared))
                in_batch.setdefault(op.call_key, set()).add(op.key)
        if batch:
            moved += await self._send(batch, now)
        return moved

    async def _send(self, batch: list[tuple[StoredOp, CrmOperation]], now: float) -> int:
        self.executes += 1
        try:
            results = await self._crm.execute([prepared for _, prepared in batch])
        except Exception as exc:
            err = exc if isinstance(exc, CrmError) else self._unexpected(exc)
            if err.kind is ErrorKind.AUTH:
                self._pause(err, now)
                self._store.release([op.id for op, _ in batch], f"paused: {err}")
                return 0
            for op, _ in batch:
                # Nothing was judged: a request-level refusal is retried like an outage.
                kind_err = (
                    err
                    if err.kind is ErrorKind.RETRYABLE
                    else CrmError(ErrorKind.RETRYABLE, err.code, err.description)
                )
                self._after_error(op, kind_err, now, maybe_sent=True)
            return len(batch)
        if len(results) != len(batch):
            mismatch = CrmError(
                ErrorKind.RETRYABLE,
                "RESULT_MISMATCH",
                f"{len(results)} results for {len(batch)} operations",
            )
            for op, _ in batch:
                self._after_error(op, mismatch, now, maybe_sent=True)
            return len(batch)
        failed_calls: set[str] = set()
        paused = False
        for (op, _), result in zip(batch, results, strict=True):
            if result.ok:
                self._store.complete(op.id, result.value)
                continue
            error = result.error or CrmError(ErrorKind.RETRYABLE, "UNKNOWN", "no error given")
            if error.kind is ErrorKind.AUTH:
                if not paused:
                    self._pause(error, now)
                    paused = True
                self._store.release([op.id], f"paused: {error}")
            elif op.call_key in failed_calls:
                # Most likely caused by the earlier failure ($result of a failed command).
                self._store.release([op.id], "an earlier operation of its call failed", now)
            else:
                failed_calls.add(op.call_key)
                # A retryable failure of one command may be a request that timed out after
                # it was sent (the adapter reports it per operation): outcome unknown.
                self._after_error(op, error, now, maybe_sent=error.kind is ErrorKind.RETRYABLE)
        return len(batch)

    def _unexpected(self, exc: Exception) -> CrmError:
        """An exception that is not a CRM answer (a bug): logged, counted, and handled as
        an outage of unknown outcome, so the operation is retried, never dropped."""
        self.crashes += 1
        log.error("outbox: unexpected %s while sending", type(exc).__name__, exc_info=exc)
        return CrmError(ErrorKind.RETRYABLE, "UNEXPECTED", f"{type(exc).__name__}: {exc}")

    def _after_error(self, op: StoredOp, error: CrmError, now: float, maybe_sent: bool) -> None:
        if error.kind is ErrorKind.AUTH:
            self._pause(error, now)
            self._store.release([op.id], f"paused: {error}")
            return
        at = next_attempt_at(self._settings.retry, error.kind, op.attempts + 1, now, self._rand())
        if at is None:
            log.error("outbox op %s (%s/%s) failed: %s", op.id, op.call_key, op.key, error)
            self._store.fail(op.id, error, SKIP_AFTER_FAILURE.get(op.kind, ()))
        else:
            # Any operation that may have been applied is marked so: a register/finish is
            # looked up before it is sent again, and a show that may be on screen keeps
            # the call's hides from being skipped.
            self._store.retry_later(op.id, error, at, maybe_sent)

    # -- preparing ----------------------------------------------------------------------------

    async def _prepare(self, op: StoredOp, batch_keys: set[str]) -> CrmOperation | _Prep:
        if op.outcome_unknown and op.kind in _CHECK_LOST and await self._already_done(op):
            return _Prep.DONE
        params: dict[str, Any] = {}
        for name, value in op.params.items():
            resolved = self._resolve(op, value, batch_keys)
            if isinstance(resolved, _Prep):
                return resolved
            params[name] = resolved
        if op.kind is OperationKind.REGISTER_CALL and op.meta.get("priority"):
            entity = await self._lookup(op)
            if entity is not None:
                params["CRM_ENTITY_TYPE"] = entity["type"].upper()
                params["CRM_ENTITY_ID"] = entity["id"]
        if op.kind is OperationKind.FINISH_CALL and op.meta.get("user_rule") == "responsible":
            responsible = await self._responsible(op)
            if responsible is not None:
                params["USER_ID"] = responsible
        return op.operation(params)

    async def _already_done(self, op: StoredOp) -> bool:
        external = op.meta.get("external_call_id")
        if not external:
            return False
        record = await self._crm.find_call(str(external))
        if record is None:
            return False
        if op.kind is OperationKind.REGISTER_CALL:
            value = {"CALL_ID": record.call_id, "recovered": True, "finished": record.finished}
            self._store.complete(op.id, value, "done (found in the CRM after a lost answer)")
            return True
        if record.finished:
            value = {"CALL_ID": record.call_id, "recovered": True}
            self._store.complete(op.id, value, "done (found finished after a lost answer)")
            return True
        return False

    def _resolve(self, op: StoredOp, value: Any, batch_keys: set[str]) -> Any:
        if isinstance(value, list):
            out = []
            for item in value:
                resolved = self._resolve(op, item, batch_keys)
                if isinstance(resolved, _Prep):
                    return resolved
                out.append(resolved)
            return out
        if not isinstance(value, ResultRef):
            return value
        if value.key in batch_keys:
            if op.kind in _NEEDS_STORED_RESULT:
                return _Prep.NEXT_ROUND
            return value  # the adapter resolves it inside the same request
        target = self._store.find(op.call_key, value.key)
        if target is None or target.status in ("failed", "skipped", "dropped"):
            what = "missing" if target is None else target.status
            self._store.skip(op.id, f"skipped: needs {value.key}, which is {what}")
            return _Prep.SKIPPED
        if target.status != "done":
            # Try again when the dependency may be done: when its own retry (the
            # ``[outbox]`` policy) comes due, or — in flight elsewhere — after the
            # policy's first delay. Never a fixed hold-off of our own.
            now = self._clock()
            if target.status == "pending" and target.not_before > now:
                until = target.not_before
            else:
                delay = next_attempt_at(
                    self._settings.retry, ErrorKind.RETRYABLE, 1, now, self._rand()
                )
                until = now if delay is None else delay
            self._blocked_on, self._blocked_until = value.key, until
            return _Prep.BLOCKED
        result = target.result or {}
        if op.kind in _NEEDS_STORED_RESULT and result.get(value.field) in (None, "", 0):
            why = f"skipped: {value.key} answered no {value.field} (no CRM entity to write on)"
            if result.get("recovered"):
                why += "; it was recovered after a lost answer, which carries no entity"
            self._store.skip(op.id, why)
            return _Prep.SKIPPED
        if value.field not in result:
            self._store.fail(
                op.id,
                f"validation: result of {value.key} has no {value.field}",
                SKIP_AFTER_FAILURE.get(op.kind, ()),
            )
            return _Prep.SKIPPED
        return result[value.field]

    async def _entities(self, op: StoredOp) -> list[dict[str, Any]]:
        """The CRM entities of the call's number, looked up once per call and remembered."""
        register = self._store.find(op.call_key, "register")
        for source in (op, register):
            if source is not None and "entities" in source.meta:
                return list(source.meta["entities"])
        phone = str(op.meta.get("phone", ""))
        local = await self._local_entities(phone) if phone else []
        if local is not None:
            entities = local
        else:
            found: list[CrmEntity] = await self._crm.entities_by_phone(phone)
            entities = [
                {"type": e.type, "id": e.id, "responsible": e.responsible_id} for e in found
            ]
        self._store.set_meta(op.id, {**op.meta, "entities": entities})
        return entities

    async def _local_entities(self, phone: str) -> list[dict[str, Any]] | None:
        if self._entity_lookup is None:
            return None
        try:
            return await self._entity_lookup(phone)
        except Exception:
            # The phonebook is a shortcut: when it fails, the CRM still answers.
            log.exception("phonebook look-up of %s failed; asking the CRM", phone)
            return None

    async def _lookup(self, op: StoredOp) -> dict[str, Any] | None:
        entities = await self._entities(op)
        return _by_priority(entities, op.meta.get("priority", ()))

    async def _responsible(self, op: StoredOp) -> int | None:
        entities = await self._entities(op)
        priority = op.meta.get("priority") or ("contact", "company", "lead")
        for entity in _ordered(entities, priority):
            user = entity.get("responsible")
            if isinstance(user, int) and self._is_active_user(user):
                return user
        return None


def _ordered(entities: Sequence[dict[str, Any]], priority: Sequence[str]) -> list[dict[str, Any]]:
    ranked = [e for kind in priority for e in entities if e.get("type") == kind]
    return ranked


def _by_priority(
    entities: Sequence[dict[str, Any]], priority: Sequence[str]
) -> dict[str, Any] | None:
    ranked = _ordered(entities, priority)
    return ranked[0] if ranked else None
