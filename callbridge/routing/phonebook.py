"""The phonebook service: answers "who is this number?" from the local store, fast.

* :meth:`Phonebook.lookup` answers from SQLite; a number nobody has is remembered as a
  miss for ``miss_ttl``; an unknown number may ask the CRM **once** (one look-up in
  flight per number, at most ``max_crm_lookups`` at all) within the caller's budget. A
  look-up that overruns keeps running in the background and fills the store for the next
  call; the current call gets ``unavailable`` and its fallback. After a CRM failure no
  new look-ups start for ``crm_backoff`` seconds, so a dead portal costs nothing per call.
* :meth:`Phonebook.full_sync` pages every contact, company, lead and user into the store
  (with progress callbacks) and drops what the CRM no longer has.
* :meth:`Phonebook.incremental_sync` fetches what changed since the last cursor
  (``DATE_MODIFY``); :meth:`Phonebook.run` repeats it every ``freshness`` seconds.
* :meth:`Phonebook.apply_crm_event` applies ``ONCRM{CONTACT,COMPANY,LEAD}{ADD,UPDATE,DELETE}``
  pushed by the portal.

Clocks are parameters: ``clock`` (seconds, for misses and back-off) and ``sleep`` (for the
periodic loop) so tests drive time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from callbridge.crm.base import log_level_of
from callbridge.routing.numbers import phone_key
from callbridge.routing.source import ENTITY_TYPES, PhonebookSource, SourceEntity, SourceUser
from callbridge.store.phonebook import PhonebookEntity, PhonebookStore, PhonebookUser

__all__ = [
    "CrmChangeQueue",
    "Lookup",
    "LookupState",
    "Phonebook",
    "SyncProgress",
    "SyncReport",
]

log = logging.getLogger(__name__)


class LookupState(StrEnum):
    FOUND = "found"
    MISSING = "missing"  # the CRM has no entity with this number (known or remembered)
    UNAVAILABLE = "unavailable"  # not in the store and the CRM did not answer in time


@dataclass(frozen=True, slots=True)
class Lookup:
    state: LookupState
    key: str
    entities: tuple[PhonebookEntity, ...] = ()
    source: str = "store"  # store | miss-cache | crm | none


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Reported after each page: what is being synced and how many rows so far."""

    stage: str  # users | contact | company | lead | prune
    done: int


@dataclass(slots=True)
class SyncReport:
    users: int = 0
    entities: dict[str, int] = field(default_factory=dict)
    removed: int = 0
    bad_rows: int = 0


_EVENT_TYPES = {"CONTACT": "contact", "COMPANY": "company", "LEAD": "lead"}


def _parse_crm_event(event_name: str, data: Mapping[str, Any]) -> tuple[str, str, int] | str | None:
    """(entity type, ADD|UPDATE|DELETE, id); a problem as text; None: not for us."""
    name = event_name.upper()
    if not name.startswith("ONCRM"):
        return None
    for upper, kind in _EVENT_TYPES.items():
        rest = name.removeprefix(f"ONCRM{upper}")
        if rest != name and rest in ("ADD", "UPDATE", "DELETE"):
            fields = data.get("FIELDS") if isinstance(data, Mapping) else None
            raw_id = fields.get("ID") if isinstance(fields, Mapping) else None
            try:
                return kind, rest, int(str(raw_id))
            except ValueError:
                return f"{event_name}: data[FIELDS][ID] missing or not a number"
    return None


class CrmChangeQueue:
    """Collects CRM change events and applies them in bursts.

    The portal sends one event per created lead; re-reading each at once would spend one
    REST request per unknown caller. Events wait up to ``window`` seconds (or until
    ``max_batch`` are queued) and go to :meth:`Phonebook.apply_crm_events` together.
    """

    def __init__(
        self,
        book: Phonebook,
        *,
        window: float = 1.0,
        max_batch: int = 50,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.book = book
        self.window = window
        self.max_batch = max_batch
        self._sleep = sleep
        self._pending: list[tuple[str, Mapping[str, Any]]] = []
        self._wake = asyncio.Event()
        self.flushes = 0

    def submit(self, event_name: str, data: Mapping[str, Any]) -> None:
        self._pending.append((event_name, data))
        self._wake.set()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            self.flushes += 1
            try:
                await self.book.apply_crm_events(batch)
            except Exception as exc:  # the periodic incremental sync catches up
                log.warning("phonebook: CRM change events not applied: %s", exc)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
            self._wake.clear()
            if len(self._pending) < self.max_batch and not stop.is_set():
                await self._sleep(self.window)
            await self.flush()


def _to_store(entity: SourceEntity) -> PhonebookEntity:
    return PhonebookEntity(
        entity.type, entity.id, entity.name, entity.responsible_id, entity.modified
    )


class Phonebook:
    def __init__(
        self,
        store: PhonebookStore,
        source: PhonebookSource | None,
        *,
        region: str = "RU",
        miss_ttl: float = 300.0,
        crm_backoff: float = 5.0,
        max_crm_lookups: int = 8,
        freshness: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.source = source
        self.region = region
        self.miss_ttl = miss_ttl
        self.crm_backoff = crm_backoff
        self.max_crm_lookups = max_crm_lookups
        self.freshness = freshness
        self._clock = clock
        self._sleep = sleep
        self._inflight: dict[str, asyncio.Task[Lookup]] = {}
        self._crm_down_until = 0.0
        self.crm_lookups = 0
        self.crm_failures = 0

    def key(self, number: str) -> str:
        return phone_key(number, self.region)

    def user(self, user_id: int) -> PhonebookUser | None:
        return self.store.user(user_id)

    # look-ups ------------------------------------------------------------------------

    def lookup_local(self, number: str) -> Lookup | None:
        """The store's answer, or ``None`` when only the CRM could tell."""
        key = self.key(number)
        if not key:
            return Lookup(LookupState.MISSING, key, source="none")
        entities = self.store.entities_by_key(key)
        if entities:
            return Lookup(LookupState.FOUND, key, tuple(entities))
        if self.store.is_miss(key, self._clock()):
            return Lookup(LookupState.MISSING, key, source="miss-cache")
        return None

    async def lookup(self, number: str, budget: float) -> Lookup:
        """Who has ``number``: from the store, else the CRM within ``budget`` seconds."""
        local = self.lookup_local(number)
        if local is not None:
            return local
        key = self.key(number)
        task = self._inflight.get(key)
        if task is None:
            if (
                self.source is None
                or self._clock() < self._crm_down_until
                or len(self._inflight) >= self.max_crm_lookups
            ):
                return Lookup(LookupState.UNAVAILABLE, key, source="none")
            task = asyncio.create_task(self._ask_crm(number, key))
            self._inflight[key] = task
            task.add_done_callback(self._forget_inflight)
        if budget <= 0:
            return Lookup(LookupState.UNAVAILABLE, key, source="none")
        try:
            # shield: the look-up outlives this caller's budget and fills the store.
            return await asyncio.wait_for(asyncio.shield(task), budget)
        except TimeoutError:
            return Lookup(LookupState.UNAVAILABLE, key, source="none")

    def _forget_inflight(self, task: asyncio.Task[Lookup]) -> None:
        for key, running in list(self._inflight.items()):
            if running is task:
                del self._inflight[key]

    async def _ask_crm(self, number: str, key: str) -> Lookup:
        assert self.source is not None
        self.crm_lookups += 1
        try:
            found = await self.source.entities_by_phone(number)
        except Exception as exc:  # any CRM failure: contained, the call gets its fallback
            self.crm_failures += 1
            self._crm_down_until = self._clock() + self.crm_backoff
            log.log(log_level_of(exc), "phonebook: CRM look-up of %s failed: %s", key, exc)
            return Lookup(LookupState.UNAVAILABLE, key, source="none")
        matching = [e for e in found if key in {self.key(p) for p in e.phones} or not e.phones]
        if not matching:
            self.store.remember_miss(key, self._clock() + self.miss_ttl)
            return Lookup(LookupState.MISSING, key, source="crm")
        with self.store.transaction():
            for entity in matching:
                self._put(entity, extra_key=key)
        return Lookup(LookupState.FOUND, key, tuple(self.store.entities_by_key(key)), source="crm")

    async def settle(self) -> None:
        """Wait for the CRM look-ups in flight (they outlive their callers' budgets)."""
        tasks = list(self._inflight.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # writes --------------------------------------------------------------------------

    def _put(self, entity: SourceEntity, extra_key: str = "") -> None:
        phones = [(self.key(p), p) for p in entity.phones]
        if extra_key and not phones:
            phones = [(extra_key, extra_key)]
        self.store.put_entity(_to_store(entity), phones)

    def _put_users(self, users: list[SourceUser]) -> None:
        self.store.put_users(
            [PhonebookUser(u.id, u.name, u.extension, u.mobile, u.active) for u in users]
        )

    # syncs ---------------------------------------------------------------------------

    async def full_sync(self, progress: Callable[[SyncProgress], None] | None = None) -> SyncReport:
        """Every user and entity into the store; entities gone from the CRM are removed."""
        if self.source is None:
            raise RuntimeError("phonebook has no CRM source")
        report = SyncReport()
        started = self._clock()
        seen_users: list[SourceUser] = []
        after = 0
        while True:
            page = await self.source.users_page(after)
            seen_users += page
            if progress:
                progress(SyncProgress("users", len(seen_users)))
            if not page:
                break
            after = max(u.id for u in page)
            if len(page) < 50:
                break
        self.store.replace_users(
            [PhonebookUser(u.id, u.name, u.extension, u.mobile, u.active) for u in seen_users]
        )
        report.users = len(seen_users)
        for entity_type in ENTITY_TYPES:
            seen: set[int] = set()
            newest = await self._page_through(entity_type, None, seen, progress)
            report.entities[entity_type] = len(seen)
            stale = self.store.entity_ids(entity_type) - seen
            with self.store.transaction():
                for entity_id in stale:
                    self.store.delete_entity(entity_type, entity_id)
            report.removed += len(stale)
            if newest:
                self.store.set_cursor(f"modified:{entity_type}", newest)
        # A full sync is the truth: forget misses older than it.
        self.store.forget_misses()
        self.store.set_cursor("full_sync_at", repr(started))
        if progress:
            progress(SyncProgress("done", sum(report.entities.values())))
        return report

    async def _page_through(
        self,
        entity_type: str,
        since: str | None,
        seen: set[int],
        progress: Callable[[SyncProgress], None] | None,
    ) -> str:
        assert self.source is not None
        after = 0
        newest = since or ""
        while True:
            page = await self.source.entities_page(entity_type, after, since)
            with self.store.transaction():
                for entity in page:
                    self._put(entity)
                    seen.add(entity.id)
                    # ISO-8601 strings of one portal compare in time order.
                    newest = max(newest, entity.modified)
            if progress:
                progress(SyncProgress(entity_type, len(seen)))
            if len(page) < 50:
                return newest
            after = max(e.id for e in page)

    async def incremental_sync(self) -> int:
        """Fetch entities modified since the cursors (and all users); returns rows applied."""
        if self.source is None:
            return 0
        applied = 0
        after = 0
        users: list[SourceUser] = []
        while True:
            page = await self.source.users_page(after)
            users += page
            if len(page) < 50:
                break
            after = max(u.id for u in page)
        self._put_users(users)
        for entity_type in ENTITY_TYPES:
            cursor_name = f"modified:{entity_type}"
            since = self.store.cursor(cursor_name)
            seen: set[int] = set()
            newest = await self._page_through(entity_type, since, seen, None)
            applied += len(seen)
            if newest:
                self.store.set_cursor(cursor_name, newest)
        self.store.purge_misses(self._clock())
        return applied

    async def run(self, stop: asyncio.Event) -> None:
        """Incremental sync every ``freshness`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.incremental_sync()
            except Exception as exc:  # the next round tries again; lookups keep working
                log.log(log_level_of(exc), "phonebook: incremental sync failed: %s", exc)
            sleeper = asyncio.ensure_future(self._sleep(self.freshness))
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
            for pending in (sleeper, stopper):
                pending.cancel()

    # events --------------------------------------------------------------------------

    async def apply_crm_event(self, event_name: str, data: Mapping[str, Any]) -> bool:
        """Apply one CRM change event (``ONCRMCONTACTUPDATE`` with ``data[FIELDS][ID]``).

        Returns whether it was a phonebook event. ADD/UPDATE re-read the entity from the
        CRM (the event carries only its id); DELETE removes it locally.
        """
        return bool(await self.apply_crm_events([(event_name, data)]))

    async def apply_crm_events(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Apply many change events; the changed entities of one type are re-read with
        one list request (``@ID``), so a burst of new leads costs one request, not one per
        lead. Returns how many were phonebook events; a malformed one raises ValueError
        after the others were applied."""
        changed: dict[str, set[int]] = {}
        applied = 0
        bad: list[str] = []
        for event_name, data in events:
            parsed = _parse_crm_event(event_name, data)
            if parsed is None:
                continue
            if isinstance(parsed, str):
                bad.append(parsed)
                continue
            entity_type, action, entity_id = parsed
            applied += 1
            if action == "DELETE":
                self.store.delete_entity(entity_type, entity_id)
                changed.get(entity_type, set()).discard(entity_id)
            else:
                changed.setdefault(entity_type, set()).add(entity_id)
        if self.source is not None:
            for entity_type, ids in changed.items():
                if not ids:
                    continue
                found = await self.source.entities(entity_type, sorted(ids))
                with self.store.transaction():
                    for entity in found:
                        self._put(entity)
                    for gone in ids - {e.id for e in found}:
                        self.store.delete_entity(entity_type, gone)
        if bad:
            raise ValueError("; ".join(bad))
        return applied
