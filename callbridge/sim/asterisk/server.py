"""The Asterisk simulator: a real AMI TCP server playing one timeline to every client.

The timeline (:mod:`.timeline`) is made at the first successful Login and is shared by
all sessions; it plays from position 0 once a session reads events (so the first reader
gets everything, however short the first trace). A client that reconnects continues
from where it is (what played while it was away is not sent again). Pacing:
``speed`` × real time on the injected clock, or ``asap``, where the timeline moves only
while at least one client is reading and every reading client has drained its backlog
— it writes as fast as clients read.

Replayed traces are re-keyed on every start (fresh Uniqueids, channel suffixes,
bridge ids from a per-start ``salt``), so a restarted simulator never repeats a call;
``rebase_time`` shifts their times so the timeline starts now; a trace with a
``.truth.json`` beside it carries its expected tracker results (``expected``). With
``calls_per_minute`` the timeline is an endless seeded mix of re-keyed traces, each
carrying its expected tracker result (``expected``).

Faults (:meth:`AsteriskSimulator.set_faults`) and the HTTP control
(:mod:`.control`) act on the live sessions.

With ``agi=(host, port)`` inbound calls to the FastAGI-routed DIDs ask that FastAGI
server (callbridge) where they go before they ring anyone, and ring what it chose — or
``agi_fallback`` when it is down or slow (:mod:`.agi_route`); half of the generated
ones keep the recorded caller number, a caller the emulated CRM knows. Each decision is
kept in :attr:`AsteriskSimulator.agi_routes`. :meth:`AsteriskSimulator.play` adds a
replay of a trace at the current position (tests, tools).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from callbridge.pbx.ami.framing import AmiMessage

from . import actions as act
from .agi_route import AgiRouter, RouteResult, is_routed
from .clock import Clock, SystemClock
from .rekey import IdAllocator, Rekey
from .scenario import Scenario, default_mix_paths, is_mix_candidate, load_scenario
from .session import Session
from .timeline import CallMix, ExpectedFn, Instance, Timeline

__all__ = ["AsteriskSimulator", "FaultError"]

log = logging.getLogger(__name__)

#: Share of generated FastAGI-routed calls that keep the recorded (CRM-known) caller.
KNOWN_CALLER_SHARE = 0.5

#: Under ``asap``, how many messages a reading session may have queued before the
#: timeline waits for it.
ASAP_BACKLOG = 64


class FaultError(ValueError):
    """A fault request the simulator does not understand (names the key and value)."""


class AsteriskSimulator:
    """See the module docstring. All waiting goes through ``clock``."""

    def __init__(
        self,
        *,
        username: str = "callbridge",
        secret: str = "callbridge",
        traces: Sequence[Path] = (),
        speed: float = 1.0,
        asap: bool = False,
        rebase_time: bool = False,
        calls_per_minute: float | None = None,
        seed: int = 0,
        clock: Clock | None = None,
        auth_fail_delay: float = 1.0,
        salt: int | None = None,
        expected_fn: ExpectedFn | None = None,
        backlog_limit: int = 200_000,
        expected_cap: int = 100_000,
        agi: tuple[str, int] | None = None,
        agi_fallback: str = "101",
    ) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.username = username
        self.secret = secret
        self.speed = speed
        self.asap = asap
        self.rebase_time = rebase_time
        self.seed = seed
        self.clock: Clock = clock or SystemClock()
        self.auth_fail_delay = auth_fail_delay
        self.backlog_limit = backlog_limit
        self._expected_cap = expected_cap
        self.agi = agi
        self._router = AgiRouter(agi, fallback_extension=agi_fallback) if agi else None
        #: The FastAGI routing decisions made so far (newest last).
        self.agi_routes: deque[RouteResult] = deque(maxlen=1000)
        self._route_tasks: set[asyncio.Task[None]] = set()
        # Ids must differ between starts even with the same seed: the salt is random
        # unless a test pins it.
        self.salt = salt if salt is not None else random.SystemRandom().getrandbits(64)
        self.actions: list[AmiMessage] = []
        self.split_writes = False
        self.port = 0
        self.control_port = 0
        self.sessions: list[Session] = []
        self.timeline: Timeline | None = None
        self._mix: CallMix | None = None
        self._replay: list[Scenario] = []
        if expected_fn is None:
            # Replayed and generated calls alike carry their truth's expected results
            # (re-keyed like their events) for ``GET /_sim/expected``.
            from .truth import expected_calls

            expected_fn = expected_calls
        if calls_per_minute is not None:
            paths = [p for p in traces if is_mix_candidate(p)] if traces else default_mix_paths()
            scenarios = [load_scenario(p, vary_numbers=True) for p in paths]
            known = _known_caller_share if agi else None
            self._mix = CallMix(
                scenarios,
                calls_per_minute,
                seed=seed,
                expected_fn=expected_fn,
                known_caller=known,
            )
        else:
            self._replay = [load_scenario(Path(p)) for p in traces]
        self._expected_fn = expected_fn
        self._server: asyncio.Server | None = None
        self._control: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._session_tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._t_start = 0.0
        #: The timeline has taken its first step (a session was reading events).
        self._playing = False
        self._started_at = self.clock.monotonic()
        self._pending_drop: int | None = None
        self._pending_stall: float | None = None
        self._gap_until_pos: float | None = None
        self._gap_until_mono: float | None = None
        self.originate_outcome = "answered"
        self._originator: Any = None

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._on_connect, host, port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def start_control(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from .control import ControlServer

        self._control = ControlServer(self)
        self.control_port = await self._control.start(host, port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._control is not None:
            await self._control.stop()
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        for route_task in list(self._route_tasks):
            route_task.cancel()
        if self._route_tasks:
            await asyncio.gather(*self._route_tasks, return_exceptions=True)
        # Cutting a session ends its tasks; cancelling the server's handler task instead
        # would make asyncio's stream callback log the CancelledError.
        for session in list(self.sessions):
            session.cut()
        if self._session_tasks:
            _, stuck = await asyncio.wait(set(self._session_tasks), timeout=2.0)
            for task in stuck:  # e.g. asleep in the failed-login delay on a test clock
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._in_gap():
            # The network is "down": the connection ends before the banner.
            writer.transport.abort()
            return
        session = Session(self, reader, writer)
        self.sessions.append(session)
        task = asyncio.current_task()
        if task is not None:
            self._session_tasks.add(task)
        try:
            await session.run()
        finally:
            if task is not None:
                self._session_tasks.discard(task)
            self.session_closed(session)

    # -- sessions -------------------------------------------------------------------

    def notify(self) -> None:
        """Something changed (a write drained, a session came or went, a fault)."""
        self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 10.0) -> None:
        """Wait (real time, bounded) until ``predicate()`` holds; for tests and tools."""

        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), limit)

    def session_logged_in(self, session: Session) -> None:
        if self._pending_drop is not None:
            session.drop_after = self._pending_drop
            self._pending_drop = None
        if self._pending_stall is not None:
            session.stall(self._pending_stall)
            self._pending_stall = None
        if self.timeline is None:
            self._start_timeline()
        self.notify()

    def session_closed(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.remove(session)
        self.notify()

    def record_action(self, msg: AmiMessage) -> None:
        self.actions.append(msg)

    def uptime(self) -> int:
        return int(self.clock.monotonic() - self._started_at) + 408

    def broadcast_live(self, msg: AmiMessage) -> None:
        """An event made now (UserEvent), to every session reading events."""
        data = msg.to_bytes()
        for session in self.sessions:
            if session.reading_events:
                session.send(data)

    def channel_items(self, action_id: str | None) -> list[AmiMessage]:
        if self.timeline is None:
            return []
        return self.timeline.channels.items(self.position, action_id)

    # -- the timeline ---------------------------------------------------------------

    def _start_timeline(self) -> None:
        timeline = Timeline(
            IdAllocator(self.salt), self.clock.time(), expected_cap=self._expected_cap
        )
        if self._router is not None:
            timeline.gate_for = self._gate_for
            timeline.on_gate = self._on_gate
        self.timeline = timeline
        for scenario in self._replay:
            self._add_replay(scenario, 0.0, rebase=self.rebase_time)
        timeline.mix = self._mix
        self._t_start = self.clock.monotonic()
        self._runner = asyncio.create_task(self._run())

    def _add_replay(self, scenario: Scenario, offset: float, *, rebase: bool) -> None:
        timeline = self.timeline
        assert timeline is not None
        shift = timeline.epoch + offset - scenario.t0 if rebase else 0.0
        rk = Rekey(timeline.ids, shift=shift, ref_time=scenario.t0)
        expected: list[dict[str, Any]] = []
        if self._expected_fn is not None and scenario.truth is not None:
            raw = self._expected_fn(scenario.truth)
            expected = [scenario.template.rekey_obj(c, rk) for c in raw]
        timeline.add(Instance(scenario, rk, offset, expected=expected))

    def play(self, trace: Path) -> None:
        """Replay ``trace`` (re-keyed) from the current position, as one more call.

        Needs a started timeline (a client logged in); raises :class:`TraceError` for a
        file that is not a playable trace."""
        if self.timeline is None:
            raise RuntimeError("the timeline starts at the first Login; nothing plays yet")
        # Always shifted to now, like an originated call: its times follow the timeline's.
        self._add_replay(load_scenario(Path(trace)), self.position, rebase=True)
        self.notify()

    # -- FastAGI routing ------------------------------------------------------------

    def _gate_for(self, instance: Instance) -> int | None:
        if self._router is None or instance.kind == "originate":
            return None
        return self._router.gate(instance.scenario)

    def _on_gate(self, instance: Instance) -> None:
        task = asyncio.get_running_loop().create_task(self._route(instance))
        self._route_tasks.add(task)
        task.add_done_callback(self._route_tasks.discard)

    async def _route(self, instance: Instance) -> None:
        router, timeline = self._router, self.timeline
        assert router is not None and timeline is not None and instance.gate is not None
        try:
            block = instance.scenario.template.render(instance.gate, instance.rekey)
            result = await router.route(
                block.get("CallerIDNum") or "",
                block.get("Exten") or "",
                block.get("Channel") or "",
                block.get("Uniqueid") or "",
            )
            release = router.release(instance.scenario, block, result)
        except Exception:
            # A bug here must not hold the call forever: it plays as recorded.
            log.exception("FastAGI routing of a simulated call failed; playing it as recorded")
            timeline.release(instance)
            self.notify()
            return
        if result.via == "fallback":
            why = result.error or result.result or result.agi_status
            log.info("FastAGI route for %s: fallback (%s)", result.caller, why)
        instance.released_by = result
        self.agi_routes.append(result)
        timeline.release(
            instance, release.extra, release.skip, release.transform, release.fix_expected
        )
        self.notify()

    @property
    def position(self) -> float:
        """Seconds of timeline played (0 before the first Login)."""
        if self.timeline is None:
            return 0.0
        if self.asap or not self._playing:
            return self.timeline.position
        return max(self.timeline.position, (self.clock.monotonic() - self._t_start) * self.speed)

    def pbx_time(self) -> float:
        """Unix time on the simulated PBX's clock: the timeline's epoch plus its position.

        Replayed events carry ``Timestamp`` headers shifted onto the timeline (``epoch +``
        their position), so this is the clock they were stamped by — paced or ``asap``
        (where the timeline runs ahead of, or behind, the wall clock). Before the first
        Login, when no timeline exists, the simulator's clock.
        """
        if self.timeline is None:
            return self.clock.time()
        return self.timeline.epoch + self.position

    def _readers_ready(self) -> bool:
        readers = [s for s in self.sessions if s.reading_events]
        return bool(readers) and all(s.pending < ASAP_BACKLOG for s in readers)

    def _in_gap(self) -> bool:
        if self._gap_until_pos is not None:
            return True
        if self._gap_until_mono is not None:
            if self.clock.monotonic() < self._gap_until_mono:
                return True
            self._gap_until_mono = None
        return False

    async def _wait_changed(self, deadline: float | None = None) -> None:
        """Until something changes, or the clock's :meth:`~.Clock.monotonic` reaches
        ``deadline``."""
        # Waiters on the simulator's state (``wait_for``) see what was just played.
        self._changed.set()
        self._changed.clear()
        if deadline is None:
            await self._changed.wait()
            return
        waiter = asyncio.ensure_future(self._changed.wait())
        # An absolute deadline: the sleeping task starts later, and a test clock moved
        # meanwhile must not make it wait a delay computed before the move.
        sleeper = asyncio.ensure_future(self.clock.sleep_until(deadline))
        try:
            await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for fut in (waiter, sleeper):
                fut.cancel()
            await asyncio.gather(waiter, sleeper, return_exceptions=True)

    def _has_reader(self) -> bool:
        return any(s.reading_events for s in self.sessions)

    async def _run(self) -> None:
        timeline = self.timeline
        assert timeline is not None
        # The first step waits until a session reads events: what sits at position 0
        # (a 10 ms trace whole) must not play to nobody — to a Login with events off,
        # or before the session that logged in is registered as a reader. Position 0
        # (and the paced clock) starts then. A gap asked for meanwhile plays on.
        while not self._has_reader() and self._gap_until_pos is None:
            await self._wait_changed()
        self._t_start = self.clock.monotonic()
        self._playing = True
        burst = 0
        while True:
            t = timeline.next_time()
            if self._gap_until_pos is not None and (t is None or t > self._gap_until_pos):
                timeline.position = max(timeline.position, self._gap_until_pos)
                self._gap_until_pos = None
                self.notify()
                continue
            if t is None:
                await self._wait_changed()
                continue
            in_gap = self._gap_until_pos is not None
            if self.asap:
                if not in_gap and not self._readers_ready():
                    await self._wait_changed()
                    continue
            else:
                due = self._t_start + t / self.speed
                if due > self.clock.monotonic():
                    await self._wait_changed(due)
                    continue
            msg = timeline.pop()
            if msg is not None:
                self._broadcast(msg)
            burst += 1
            if burst >= 64:
                # Let sessions write and clients act between bursts.
                burst = 0
                await asyncio.sleep(0)

    def _broadcast(self, msg: AmiMessage) -> None:
        data = msg.to_bytes()
        for session in list(self.sessions):
            if not session.reading_events:
                continue
            if session.pending >= self.backlog_limit:
                # Asterisk's writetimeout: a client that does not read is hung up on.
                session.cut()
                continue
            session.send(data)

    # -- faults ---------------------------------------------------------------------

    def set_faults(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Apply faults to the live sessions (or the next one to log in); see control."""
        known = {"drop_after_messages", "split_writes", "stall_seconds", "gap_seconds"}
        for key in spec:
            if key not in known:
                raise FaultError(f"unknown fault {key!r}; expected one of {sorted(known)}")
        live = [s for s in self.sessions if s.authenticated and not s.closed]
        if "split_writes" in spec:
            value = spec["split_writes"]
            if not isinstance(value, bool):
                raise FaultError(f"split_writes must be true or false, got {value!r}")
            self.split_writes = value
        if "drop_after_messages" in spec:
            n = spec["drop_after_messages"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise FaultError(f"drop_after_messages must be an integer ≥ 0, got {n!r}")
            if live:
                for s in live:
                    s.drop_after = n
                    if n == 0:
                        s.cut()
            else:
                self._pending_drop = n
        if "stall_seconds" in spec:
            secs = _seconds(spec, "stall_seconds")
            if live:
                for s in live:
                    s.stall(secs)
            else:
                self._pending_stall = secs
        if "gap_seconds" in spec:
            secs = _seconds(spec, "gap_seconds")
            if self.asap:
                self._gap_until_pos = self.position + secs
            else:
                self._gap_until_mono = self.clock.monotonic() + secs
            for s in list(self.sessions):
                s.cut()
        self.notify()
        return self.status()

    # -- originate ------------------------------------------------------------------

    def originate(self, msg: AmiMessage, session: Session) -> list[AmiMessage]:
        """Answer an Originate (and, once playing is wired, schedule the call)."""
        aid = msg.get("ActionID")
        if not msg.get("Channel"):
            return [act.error(aid, "Channel not specified")]
        if msg.get("Exten") and not (msg.get("Context") and msg.get("Priority")):
            return [act.error(aid, "Originate with 'Exten' requires 'Context' and 'Priority'")]
        if self._originator is None:
            from .originate import Originator

            try:
                self._originator = Originator(self)
            except OSError:
                # Installed without the shared traces: answer, play nothing.
                self._originator = False
        if self._originator:
            answers: list[AmiMessage] = self._originator.originate(msg, session)
            return answers
        return [act.success(aid, ("Message", "Originate successfully queued"))]

    # -- views ----------------------------------------------------------------------

    def expected(self, *, finished_only: bool = False) -> list[dict[str, Any]]:
        if self.timeline is None:
            return []
        return self.timeline.expected_calls(finished_only=finished_only)

    def status(self) -> dict[str, Any]:
        tl = self.timeline
        return {
            "started": tl is not None,
            "position": round(self.position, 6),
            "played": tl.played if tl else 0,
            "active_instances": tl.active if tl else 0,
            "generated_calls": self._mix.spawned if self._mix else 0,
            "finished": tl is not None and tl.next_time() is None and not tl.held,
            "agi": None if self.agi is None else f"{self.agi[0]}:{self.agi[1]}",
            "agi_routes": [r.to_json() for r in list(self.agi_routes)[-20:]],
            "waiting_for_agi": len(tl.held) if tl else 0,
            "asap": self.asap,
            "speed": self.speed,
            "split_writes": self.split_writes,
            "in_gap": self._in_gap(),
            "live_channels": tl.channels.summary() if tl else [],
            "sessions": [
                {
                    "id": s.id,
                    "peer": s.peer,
                    "authenticated": s.authenticated,
                    "events": s.events_on,
                    "written": s.written,
                    "pending": s.pending,
                    "stalled": s.stall_until is not None,
                    "drop_after": s.drop_after,
                }
                for s in self.sessions
            ],
            "actions": len(self.actions),
        }


def _known_caller_share(scenario: Scenario) -> float:
    return KNOWN_CALLER_SHARE if is_routed(scenario) else 0.0


def _seconds(spec: Mapping[str, Any], key: str) -> float:
    value = spec[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f"{key} must be a number of seconds ≥ 0, got {value!r}")
    return float(value)
