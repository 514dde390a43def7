"""``callbridge run``: build every part of the process in one place and serve it.

:func:`build_services` is the only place that constructs things (store, Bitrix24
client, AMI link, event intake, install flow, click-to-call, health) and wires them
together; nothing is a module global. :func:`run` loads the config, builds, serves the
web app with uvicorn and stops cleanly on SIGTERM/SIGINT (exit code 0).

Seam for the engine issue: the AMI link's events go to :class:`AmiEventPump`, which
hands each message to every consumer in ``consumers`` (today the Originate watch; the
tracker → engine → outbox chain joins as another consumer and as components). A health
probe per part makes ``/health`` report what exists.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from callbridge.actions.bitrix24_port import Bitrix24ClickCrm
from callbridge.actions.callback import Callback
from callbridge.actions.click_to_call import ClickToCall
from callbridge.actions.event import BitrixEvent
from callbridge.actions.originate import ClickToCallSettings, OriginateWatch
from callbridge.config import Config, ConfigError, load_config, parse_listen
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.crm.bitrix24.auth import Auth, OAuthAuth, WebhookAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.crm.bitrix24.limiter import PRIORITY_RESERVE, LeakyBucket
from callbridge.outbox.dispatcher import EntityLookup
from callbridge.outbox.store import OutboxStore
from callbridge.pbx.agi import AgiServer
from callbridge.pbx.ami.client import AmiClient
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.pipeline import CallPipeline, ami_client, build_pipeline
from callbridge.routing.phonebook import CrmChangeQueue, LookupState, Phonebook
from callbridge.routing.scripts import RoutingScripts
from callbridge.routing.settings import settings_from_config as routing_settings_from_config
from callbridge.routing.source import Bitrix24PhonebookSource
from callbridge.store.app_state import AppState
from callbridge.store.db import connect
from callbridge.store.phonebook import PhonebookStore
from callbridge.store.tokens import TokenStore
from callbridge.web.app import EVENTS_PATH, Component, FunctionComponent, Services, create_app
from callbridge.web.events import EventDispatcher, EventIntake, EventRegistry
from callbridge.web.health import Health, Probe, ProbeResult
from callbridge.web.install import Installer
from callbridge.web.serve import start_server

__all__ = ["AmiEventPump", "AmiLink", "build_ami", "build_services", "run"]

log = logging.getLogger("callbridge")

Clock = Callable[[], float]


class AmiLink(Protocol):
    """What the process needs from the AMI client."""

    @property
    def connected(self) -> bool: ...

    async def action(self, name: str, headers: Mapping[str, str | list[str]]) -> AmiMessage: ...

    def events(self) -> AsyncIterator[object]: ...


#: Takes every stream item: AMI messages and the client's Connected/Disconnected markers.
AmiConsumer = Callable[[object], Awaitable[None]]


@dataclass
class AmiEventPump:
    """Reads the AMI link's events and hands each to every consumer, in order.

    A consumer that fails is logged and the pump goes on: one bad message never stops
    event intake. Consumers must be quick (the AMI reader must never wait on the CRM).
    """

    link: AmiLink
    consumers: list[AmiConsumer] = field(default_factory=list)
    name: str = "ami-events"
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async for item in self.link.events():
            for consumer in self.consumers:
                try:
                    await consumer(item)
                except Exception:
                    log.exception("AMI consumer failed on %r", getattr(item, "event", item))


def _make_auth(config: Config, tokens: TokenStore, clock: Clock) -> Auth:
    if config.bitrix24.webhook_url:
        return WebhookAuth(config.bitrix24.webhook_url)
    return OAuthAuth(
        tokens,
        oauth_url=config.bitrix24.oauth_url,
        client_id=config.bitrix24.client_id,
        client_secret=config.bitrix24.client_secret,
        clock=clock,
    )


def _store_probe(conn: sqlite3.Connection) -> Probe:
    def check() -> ProbeResult:
        conn.execute("SELECT 1").fetchone()
        return ProbeResult({"ok": True})

    return Probe("store", check)


def _portal_probe(
    config: Config, client: Bitrix24Client, tokens: TokenStore, state: AppState
) -> Probe:
    def check() -> ProbeResult:
        auth = client.auth_state
        stored = tokens.load()
        mode = "webhook" if config.bitrix24.webhook_url else "application"
        problems: list[str] = []
        if not auth.ok:
            problems.append(f"auth {auth.status}: {auth.reason}")
        events_ok = bool(
            (stored is not None and stored.application_token) or config.bitrix24.outgoing_token
        )
        if not events_ok:
            problems.append("events are refused until the application is installed (ONAPPINSTALL)")
        setup = state.get("install.setup")
        if isinstance(setup, dict) and setup.get("errors"):
            problems.extend(f"setup: {e}" for e in setup["errors"][:5])
        install = state.get("install") or {}
        if isinstance(install, dict) and install.get("uninstalled"):
            problems.append("the application was uninstalled from the portal")
        facts = {
            "mode": mode,
            "auth": auth.status,
            "auth_reason": auth.reason,
            "installed": stored is not None,
            "member_id": stored.member_id if stored else None,
            "portal": stored.client_endpoint if stored else None,
            "events_accepted": events_ok,
            "setup": setup,
            "requests": client.stats.requests,
        }
        return ProbeResult(facts, tuple(problems))

    return Probe("portal", check)


def _events_probe(dispatcher: EventDispatcher, intake: EventIntake) -> Probe:
    def check() -> ProbeResult:
        problems = []
        if dispatcher.depth >= dispatcher.max_queued:
            problems.append("event queue full")
        return ProbeResult(
            {
                "queued": dispatcher.depth,
                "handled": dispatcher.handled,
                "failed": dispatcher.failed,
                "refused": intake.refused,
                "repeats": intake.repeats,
            },
            tuple(problems),
        )

    return Probe("events", check)


def _ami_probe(link: AmiLink | None) -> Probe:
    def check() -> ProbeResult:
        if link is None:
            return ProbeResult({"configured": False}, ("no AMI link",))
        connected = bool(link.connected)
        return ProbeResult(
            {"configured": True, "connected": connected},
            () if connected else ("not connected to Asterisk",),
        )

    return Probe("ami", check)


CRM_PHONEBOOK_EVENTS = tuple(
    f"ONCRM{kind}{action}"
    for kind in ("CONTACT", "COMPANY", "LEAD")
    for action in ("ADD", "UPDATE", "DELETE")
)


def _phonebook_handler(changes: CrmChangeQueue) -> Callable[[BitrixEvent], Awaitable[None]]:
    async def handle(event: BitrixEvent) -> None:
        # Queued: a burst of CRM changes is re-read with one request per entity type.
        changes.submit(event.name, event.data)

    return handle


@dataclass
class _RoutingParts:
    book: Phonebook
    changes: CrmChangeQueue
    components: list[Component]
    probe: Probe
    sync_now: Callable[[], None]


#: How long the registration priority waits for the phonebook to ask the CRM about a
#: number it does not hold (registration is not on the dialplan's deadline).
PHONEBOOK_REGISTER_BUDGET = 5.0


def phonebook_entities(book: Phonebook, budget: float = PHONEBOOK_REGISTER_BUDGET) -> EntityLookup:
    """The outbox's entity look-up answered from the FastAGI phonebook (no REST request
    when the number is in the store or a remembered miss). ``None`` when the phonebook
    cannot tell in time, so the dispatcher asks the CRM itself. Entities with a
    responsible user, then the oldest, come first — the one routing chose."""

    async def lookup(phone: str) -> list[dict[str, Any]] | None:
        found = await book.lookup(phone, budget)
        if found.state is LookupState.UNAVAILABLE:
            return None
        ranked = sorted(found.entities, key=lambda e: (0 if e.responsible_id else 1, e.id))
        return [{"type": e.type, "id": e.id, "responsible": e.responsible_id} for e in ranked]

    return lookup


def _routing(config: Config, conn: sqlite3.Connection, client: Bitrix24Client) -> _RoutingParts:
    """The FastAGI server and the phonebook behind it, as components, their probe, and
    a call that syncs the phonebook now (after an install brought credentials)."""
    settings = routing_settings_from_config(config)
    book = Phonebook(
        PhonebookStore(conn),
        Bitrix24PhonebookSource(client.call, functools.partial(client.call, priority=True)),
        region=settings.default_region,
        miss_ttl=settings.miss_ttl,
        crm_backoff=settings.crm_backoff,
        max_crm_lookups=settings.max_crm_lookups,
        freshness=settings.freshness,
    )
    server = AgiServer(
        RoutingScripts(book, settings).handlers(),
        host=settings.listen_host,
        port=settings.listen_port,
        session_deadline=settings.session_deadline,
    )
    stop = asyncio.Event()
    sync_task: list[asyncio.Task[None]] = []
    changes = CrmChangeQueue(book)
    change_task: list[asyncio.Task[None]] = []

    async def start_sync() -> None:
        stop.clear()
        sync_task.append(asyncio.create_task(book.run(stop), name="phonebook-sync"))
        change_task.append(asyncio.create_task(changes.run(stop), name="phonebook-events"))

    async def stop_sync() -> None:
        stop.set()
        for task in [*sync_task, *change_task]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        sync_task.clear()
        change_task.clear()

    def sync_now() -> None:
        # The loop syncs first thing: restart it rather than wait out ``freshness``
        # (before the install the portal refused us, and known callers would fall back).
        if not sync_task or stop.is_set():
            return
        for task in sync_task:
            task.cancel()
        sync_task.clear()
        sync_task.append(asyncio.create_task(book.run(stop), name="phonebook-sync"))

    def check() -> ProbeResult:
        st = server.stats
        try:
            listening: str | None = f"{server.host}:{server.port}"
        except RuntimeError:
            listening = None
        facts = {
            "listening": listening,
            "sessions": st.sessions,
            "active": st.active,
            "failed": st.failed,
            "deadline_exceeded": st.deadline_exceeded,
            "crm_lookups": book.crm_lookups,
            "crm_failures": book.crm_failures,
        }
        return ProbeResult(facts, () if listening else ("FastAGI server not running",))

    parts: list[Component] = [
        FunctionComponent("fastagi", server.start, server.close),
        FunctionComponent("phonebook-sync", start_sync, stop_sync),
    ]
    return _RoutingParts(book, changes, parts, Probe("fastagi", check), sync_now)


def _outbox_probe(pipeline: CallPipeline, clock: Clock) -> Probe:
    def check() -> ProbeResult:
        outbox = pipeline.outbox
        oldest = outbox.oldest_pending()
        paused = pipeline.dispatcher.pause_reason()
        stats = pipeline.stats
        facts = {
            "depth": outbox.depth(),
            "oldest_pending_seconds": None if oldest is None else round(clock() - oldest, 1),
            "paused": paused,
            "calls_seen": stats.calls_seen,
            "calls_ended": stats.calls_ended,
            "calls_open": pipeline.tracker.live_calls,
            "ami_messages": stats.ami_messages,
            "resyncs": stats.resyncs,
            "users_loaded": stats.users_loaded,
            "orphans_ended": stats.orphans_ended,
            "dispatch_errors": pipeline.dispatcher.crashes,
        }
        problems: list[str] = []
        if paused:
            problems.append(f"outbox paused: {paused}")
        if stats.users_error:
            problems.append(f"Bitrix24 users not loaded: {stats.users_error}")
        return ProbeResult(facts, tuple(problems))

    return Probe("calls", check)


def build_services(
    config: Config,
    *,
    clock: Clock = time.time,
    settings: ClickToCallSettings | None = None,
    ami: AmiLink | None = None,
    ami_component: Component | None = None,
) -> Services:
    """Every part of the process, wired. ``ami`` is the AMI link (built by :func:`run`
    from ``[ami]``; tests pass one connected to the simulator); ``ami_component`` owns its
    lifetime when the services should start and stop it."""
    settings = settings or ClickToCallSettings()
    conn = connect(config.store.path)
    state = AppState(conn)
    tokens = TokenStore(conn)
    client = Bitrix24Client(
        _make_auth(config, tokens, clock),
        timeout=config.bitrix24.timeout,
        limiter=LeakyBucket(
            config.bitrix24.rate, config.bitrix24.burst, priority_reserve=PRIORITY_RESERVE
        ),
    )
    registry = EventRegistry()
    dispatcher = EventDispatcher(registry)

    def accepted_tokens() -> list[str]:
        stored = tokens.load()
        return [stored.application_token if stored else "", config.bitrix24.outgoing_token]

    def expected_member() -> str | None:
        stored = tokens.load()
        return stored.member_id if stored and stored.member_id else None

    installer = Installer(
        tokens=tokens,
        state=state,
        client=None if config.bitrix24.webhook_url else client,
        clock=clock,
        public_url=config.web.public_url,
        events_path=EVENTS_PATH,
        lines={line: f"callbridge {line}" for line in dict.fromkeys(config.rules.lines.values())},
        crm_auto_create=config.rules.crm_create,
        client_id=config.bitrix24.client_id,
    )
    intake = EventIntake(
        dispatcher=dispatcher,
        state=state,
        accepted_tokens=accepted_tokens,
        expected_member=expected_member,
        clock=clock,
        install_hook=installer.on_install_event,
        adopt_token=installer.adopt_token_from,
    )
    registry.register("ONAPPUNINSTALL", installer.on_uninstall)

    components: list[Component] = []
    probes: list[Probe] = []
    crm = Bitrix24Crm(client)
    pipeline: CallPipeline | None = None
    consumers: list[AmiConsumer] = []
    phonebook: Phonebook | None = None
    routing: _RoutingParts | None = None
    if config.agi:
        # FastAGI routing: its phonebook is kept fresh by CRM events and a periodic sync.
        routing = _routing(config, conn, client)
        phonebook = routing.book
        installer.on_installed.append(routing.sync_now)
    if isinstance(ami, AmiClient):
        # The call path: tracker → engine → outbox → the same client (one rate budget).
        # With a phonebook, the registration priority reads it instead of the CRM.
        call_outbox = OutboxStore.open(config.store.path, clock)
        pipeline = build_pipeline(
            config,
            crm,
            call_outbox,
            clock=clock,
            ami=ami,
            entity_lookup=None if phonebook is None else phonebook_entities(phonebook),
        )
        components.append(pipeline)
        consumers.append(pipeline.on_ami_item)
        probes.append(_outbox_probe(pipeline, clock))
        installer.on_installed.append(pipeline.reload_users)
    if routing is not None:
        for name in CRM_PHONEBOOK_EVENTS:
            registry.register(name, _phonebook_handler(routing.changes))
        components.extend(routing.components)
        probes.append(routing.probe)
    click: ClickToCall | None = None
    callback: Callback | None = None
    if ami is not None:
        click_crm = Bitrix24ClickCrm(client)
        watch = OriginateWatch()
        variable = config.pbx.crm_call_id_variable
        # Refusals go through the durable outbox when the call path has one.
        outbox = pipeline.outbox if pipeline is not None else None
        click = ClickToCall(settings, ami, click_crm, clock, variable, watch, outbox=outbox)
        callback = Callback(settings, ami, click_crm, clock, variable, watch, outbox=outbox)
        if pipeline is not None:
            # A failed Originate of ours without any channel is the watch's to finish.
            pipeline.engine.set_own_originates(watch.owns)
        registry.register("ONEXTERNALCALLSTART", click.handle)
        registry.register("ONEXTERNALCALLBACKSTART", callback.handle)
        if ami_component is not None:
            components.insert(0, ami_component)
        consumers.append(click.on_ami_event)
        components.append(AmiEventPump(ami, consumers))

    async def close_client() -> None:
        await client.close()

    async def nothing() -> None:
        return None

    components.insert(0, FunctionComponent("bitrix24-client", nothing, close_client))
    health = Health(
        [
            _store_probe(conn),
            _portal_probe(config, client, tokens, state),
            _events_probe(dispatcher, intake),
            _ami_probe(ami),
            *probes,
        ]
    )
    return Services(
        state=state,
        registry=registry,
        dispatcher=dispatcher,
        intake=intake,
        installer=installer,
        health=health,
        components=components,
        click=click,
        callback=callback,
        extras={
            "config": config,
            "tokens": tokens,
            "crm_client": client,
            "conn": conn,
            "pipeline": pipeline,
            "phonebook": phonebook,
        },
    )


async def _main(config: Config) -> int:
    host, port = parse_listen(config.web.listen)
    try:
        settings = click_settings(config)
    except (TypeError, ValueError) as exc:
        print(f"callbridge: configuration error:\n[click_to_call] {exc}", file=sys.stderr)
        return 2
    ami, ami_component = build_ami(config)
    services = build_services(config, settings=settings, ami=ami, ami_component=ami_component)
    app = create_app(services)
    try:
        server = await start_server(app, host, port, services.ready)
    except (OSError, RuntimeError) as exc:
        log.error("callbridge could not start: %s", exc)
        return 1
    # One line a supervisor (and the tests) can wait for: the address really bound.
    print(f"callbridge: listening on {server.url}", file=sys.stderr, flush=True)
    await server.serve_until_signalled()
    print("callbridge: stopped", file=sys.stderr, flush=True)
    return 0


def click_settings(config: Config) -> ClickToCallSettings:
    """``[click_to_call]`` of the config as settings; defaults while the config model has
    no such section yet (its keys are the fields of :class:`ClickToCallSettings`)."""
    section = getattr(config, "click_to_call", None)
    if section is None:
        return ClickToCallSettings()
    dump = getattr(section, "model_dump", None)
    values = dump() if callable(dump) else dict(section)
    return ClickToCallSettings(**values)


def build_ami(config: Config) -> tuple[AmiClient, Component]:
    """The long-running AMI client from ``[ami]`` and the component owning its lifetime."""
    client = ami_client(config)
    return client, FunctionComponent("ami", client.start, client.close)


def run(args: argparse.Namespace) -> int:
    """``callbridge run --config FILE``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"callbridge: configuration error:\n{exc}", file=sys.stderr)
        return 2
    return asyncio.run(_main(config))
