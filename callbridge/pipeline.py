"""The call path: AMI client → tracker → engine → outbox → dispatcher → CRM.

This is the one place these parts are joined; ``callbridge run`` and ``callbridge demo``
build a :class:`CallPipeline` and run it next to the web server. Three tasks:

* **consume**: takes what the AMI client's reader queued (the reader never waits on us),
  feeds the tracker, hands every call event to the engine, which writes outbox rows. On
  every (re)connection it first rebuilds the calls in progress from ``CoreShowChannels``
  (calls that started before callbridge did, or that changed during a gap), then has the
  engine finish the calls the outbox took on that are no longer live — those that ended
  while callbridge was down or disconnected, which no event will ever end;
* **dispatch**: the outbox dispatcher sends what is due to the CRM, in order per call;
* **users**: refreshes the extension → user directory from the CRM now and then.

Nothing here decides anything: the tracker, the rules and the outbox do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from callbridge.calls import CallEnded, CallEvent, CallStarted
from callbridge.config import Config
from callbridge.crm.base import CrmError, CrmPort, log_level_of
from callbridge.engine import Engine
from callbridge.outbox.dispatcher import Dispatcher, EntityLookup, OutboxSettings
from callbridge.outbox.retry import RetryPolicy
from callbridge.outbox.store import OutboxStore
from callbridge.pbx.ami.client import (
    AmiClient,
    AmiError,
    Connected,
    Disconnected,
    SnapshotTaken,
)
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.pbx.tracker.tracker import CallTracker
from callbridge.rules import UserDirectory, settings_from_config, unmapped_extensions

__all__ = ["CallPipeline", "PipelineStats", "ami_client", "build_pipeline", "outbox_settings"]

log = logging.getLogger(__name__)

_USERS_STATE = "crm_users"


@dataclass(slots=True)
class PipelineStats:
    """Counters for ``/health``, the demo's progress line and the admin page."""

    ami_messages: int = 0
    calls_seen: int = 0
    calls_ended: int = 0
    resyncs: int = 0
    #: Calls finished at a resync because they ended while nobody was watching.
    orphans_ended: int = 0
    ami_connected: bool = False
    ami_last_error: str | None = None
    users_loaded: bool = False
    users_error: str | None = None


def outbox_settings(config: Config) -> OutboxSettings:
    ob = config.outbox
    return OutboxSettings(
        batch_size=ob.batch_size,
        lease=ob.lease,
        retention=ob.retention_days * 86400.0,
        retry=RetryPolicy(base=ob.retry_base, cap=ob.retry_cap, auth_pause=ob.auth_pause),
    )


class CallPipeline:
    def __init__(
        self,
        *,
        ami: AmiClient,
        tracker: CallTracker,
        engine: Engine,
        outbox: OutboxStore,
        dispatcher: Dispatcher,
        crm: CrmPort,
        users_refresh: float = 300.0,
        users_retry: float = 10.0,
        users_wait: float = 30.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self.ami = ami
        self.tracker = tracker
        self.engine = engine
        self.outbox = outbox
        self.dispatcher = dispatcher
        self.crm = crm
        self.stats = PipelineStats()
        self._users_refresh = users_refresh
        self._users_retry = users_retry
        self._users_wait = users_wait
        self._users_ready = asyncio.Event()
        self._users_kick = asyncio.Event()
        self._snapshot: asyncio.Task[tuple[list[AmiMessage], float]] | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.name = "call-pipeline"
        self._sleep = sleep
        self._directory = UserDirectory()
        self._extensions_seen: set[str] = set()
        self._load_cached_users()

    # -- the user directory ---------------------------------------------------------------

    def is_active_user(self, user_id: int) -> bool:
        # Until the first load succeeds we know nothing; let the portal judge.
        return not self.stats.users_loaded or self._directory.is_active(user_id)

    def _load_cached_users(self) -> None:
        # The last directory the portal gave, so a restart during a portal outage still
        # carries calls to the right users.
        raw = self.outbox.state(_USERS_STATE)
        if raw is None:
            return
        data = json.loads(raw)
        self._directory = UserDirectory(
            {str(k): int(v) for k, v in data["by_extension"].items()},
            frozenset(int(i) for i in data["active_ids"]),
        )
        self.engine.set_directory(self._directory)
        self.stats.users_loaded = True
        self._users_ready.set()

    async def refresh_users(self) -> None:
        users = await self.crm.users()
        self._directory = UserDirectory.from_users(users)
        self.outbox.set_state(
            _USERS_STATE,
            json.dumps(
                {
                    "by_extension": dict(self._directory.by_extension),
                    "active_ids": sorted(self._directory.active_ids),
                }
            ),
        )
        self._users_ready.set()
        self.engine.set_directory(self._directory)
        first = not self.stats.users_loaded
        self.stats.users_loaded = True
        self.stats.users_error = None
        if first:
            exts = sorted(u.extension for u in users if u.extension)
            log.info("loaded %d Bitrix24 users (%d with an extension)", len(users), len(exts))

    async def _users_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh_users()
                wait = self._users_refresh
            except CrmError as exc:
                self.stats.users_error = str(exc)
                log.log(log_level_of(exc), "could not load Bitrix24 users: %s", exc)
                wait = self._users_retry
            self._users_kick.clear()
            waiters = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(self._users_kick.wait()),
            ]
            await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()

    def reload_users(self) -> None:
        """Load the users again now (after an install gave new credentials)."""
        self._users_kick.set()

    # -- AMI → tracker → engine ---------------------------------------------------------

    def _handle(self, events: list[CallEvent]) -> None:
        for event in events:
            if isinstance(event, CallStarted):
                self.stats.calls_seen += 1
                if event.operator:
                    self._note_extension(event.operator)
            elif isinstance(event, CallEnded):
                self.stats.calls_ended += 1
                # Only extensions: ``rang`` also holds dialled and forward numbers.
                for ext in (event.summary.answered_by, event.summary.final_operator):
                    if ext:
                        self._note_extension(ext)
            self.engine.handle(event)

    def _end_orphans(self, items: list[AmiMessage], at: float) -> None:
        """Finish what the outbox took on and the PBX no longer has.

        Live is what the snapshot shows (a fresh tracker names calls by ``Linkedid``) plus
        what the engine still follows: a call the tracker kept under its own id after its
        channels moved to another linkedid is live, not an orphan.
        """
        live = {m.get("Linkedid") or m.get("Uniqueid") or "" for m in items}
        entries = self.engine.end_orphans(live, at)
        ended = {e.op.call_key for e in entries}
        if ended:
            self.stats.orphans_ended += len(ended)
            log.warning(
                "resync: %d calls ended while callbridge was not watching; finished at %.3f",
                len(ended),
                at,
            )

    def _note_extension(self, extension: str) -> None:
        if extension in self._extensions_seen or not self.stats.users_loaded:
            return
        self._extensions_seen.add(extension)
        if unmapped_extensions([extension], self._directory):
            log.warning(
                "extension %s has no active Bitrix24 user: its calls go to the default user",
                extension,
            )

    def is_idle(self) -> bool:
        """No call open in the tracker and nothing left to send."""
        return self.tracker.live_calls == 0 and self.outbox.depth() == 0

    async def on_ami_item(self, item: object) -> None:
        """Take one item of the AMI client's stream (a message or a connection marker).

        The snapshot is requested on every (re)connection and applied where the client
        marks it in the stream: events before the marker are older than the snapshot and
        were fed first; events after it may be newer. Call decisions need the user
        directory, so the first item waits (bounded) for it; meanwhile AMI events queue in
        the client, whose reader never waits on us.
        """
        if not self._users_ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._users_ready.wait(), self._users_wait)
            self._users_ready.set()  # waited once; from now on decide with what we have
        if isinstance(item, Connected):
            self.stats.ami_connected = True
            self.stats.ami_last_error = None
            self._snapshot = asyncio.create_task(self.ami.snapshot(mark_stream=True))
        elif isinstance(item, SnapshotTaken):
            snapshot, self._snapshot = self._snapshot, None
            if snapshot is None:
                return
            try:
                _, at = await snapshot
            except AmiError as exc:
                log.warning("resync failed: %s", exc)
                return
            self.stats.resyncs += 1
            log.info("resync: %d channels live at Asterisk time %.3f", len(item.items), at)
            self._handle(self.tracker.resync(item.items, at))
            self._end_orphans(item.items, at)
        elif isinstance(item, Disconnected):
            self.stats.ami_connected = False
            self.stats.ami_last_error = item.reason
            log.warning("AMI connection lost: %s", item.reason)
        elif isinstance(item, AmiMessage):
            self.stats.ami_messages += 1
            events = self.tracker.feed(item)
            if events:
                self._handle(events)

    async def start(self) -> None:
        """Start dispatching and the user refresh (the AMI stream is fed from outside)."""
        self._stop = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._users_loop(self._stop), name="pipeline-users"),
            asyncio.create_task(self.dispatcher.run(self._stop), name="pipeline-dispatch"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        pending = [t for t in (*self._tasks, self._snapshot) if t is not None]
        self._snapshot = None
        for task in pending:
            if not task.done() and task.get_name() != "pipeline-dispatch":
                task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, AmiError):
                await task
        self._tasks = []

    async def run(self, stop: asyncio.Event) -> None:
        """Standalone: start the AMI client, feed its stream, until ``stop`` is set."""
        await self.ami.start()
        await self.start()

        async def consume() -> None:
            async for item in self.ami.events():
                await self.on_ami_item(item)

        feeder = asyncio.create_task(consume(), name="pipeline-consume")
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([feeder, stopper], return_when=asyncio.FIRST_COMPLETED)
            if feeder.done() and feeder.exception() is not None:
                raise feeder.exception()  # type: ignore[misc]
        finally:
            stopper.cancel()
            await self.ami.close()
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
            await self.stop()


def ami_client(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
) -> AmiClient:
    """The long-running AMI client of ``[ami]`` (reconnects, keep-alive)."""
    ami = config.ami
    return AmiClient(
        ami.host,
        ami.port,
        ami.username,
        ami.secret,
        events=ami.events,
        connect_timeout=ami.connect_timeout,
        ping_interval=ami.ping_interval,
        ping_timeout=ami.ping_timeout,
        reconnect_min=ami.reconnect_min,
        reconnect_max=ami.reconnect_max,
        clock=clock,
        rand=rand,
    )


def build_pipeline(
    config: Config,
    crm: CrmPort,
    outbox: OutboxStore,
    *,
    clock: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
    ami: AmiClient | None = None,
    entity_lookup: EntityLookup | None = None,
) -> CallPipeline:
    """Everything of the call path built from the config, in one place (``ami``: an
    existing client to use instead of one built from ``[ami]``; ``entity_lookup``: where
    the registration priority finds a number's CRM entities — the FastAGI phonebook —
    instead of asking the CRM per call)."""
    rules = replace(
        settings_from_config(config.rules),
        crm_call_id_tag=config.pbx.crm_call_id_variable.lstrip("_"),
    )
    ami = ami or ami_client(config, clock=clock, rand=rand)
    engine = Engine(rules, outbox, UserDirectory())
    pipeline: CallPipeline
    dispatcher = Dispatcher(
        outbox,
        crm,
        clock=clock,
        rand=rand,
        settings=outbox_settings(config),
        is_active_user=lambda user_id: pipeline.is_active_user(user_id),
        entity_lookup=entity_lookup,
    )
    pipeline = CallPipeline(
        ami=ami,
        tracker=CallTracker(config.pbx),
        engine=engine,
        outbox=outbox,
        dispatcher=dispatcher,
        crm=crm,
    )
    return pipeline
