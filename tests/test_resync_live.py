"""Resync after an AMI cut, against the simulator's live ``CoreShowChannels``, over real TCP.

For every shared trace (both folders; not 13's failed login) and five cut points drawn with
a per-trace fixed seed from the trace's own messages: the simulator replays the trace, the
real :class:`AmiClient` reads it into a real :class:`CallTracker` through the consume loop
of :meth:`CallPipeline.on_ami_item` (a snapshot on every ``Connected``, applied at the
``SnapshotTaken`` marker with the Ping's time), the connection is cut after ``keep``
messages — without a gap, or with one during which the PBX is unreachable and its timeline
plays ``lost`` messages to nobody — and the client reconnects and resyncs from what is live
in the simulator at that moment.

Time: the simulator is paced (``speed`` 1) on a :class:`ManualClock` that only the test
moves, rather than ``asap``. Under ``asap`` the timeline runs as fast as a reader drains
it, so a ``drop_after_messages`` cut keeps playing into the dying session until the writer
notices (an uncontrolled loss of up to a burst). On the manual clock the timeline plays
exactly what is due: the cut loses nothing unless a gap is asked for, and a gap plays
exactly the messages due within it (``gap_seconds``: the PBX refuses connections while
its timeline runs on). In both modes the PBX clock — the Ping's ``Timestamp`` — is the
timeline's own time, as on a real Asterisk (checked for ``asap`` at the end).

What must hold after each run:

* nothing stays open (``live_calls == 0``) and every call seen ended exactly once;
* a call answered before the cut ends answered, by the right extension, at its real time
  (after the resync: the same, or at the resync time when the snapshot already showed the
  device Up); one answered inside the gap and still up at the resync ends answered, by the
  answerer or — when the answerer's leg did not survive the gap — by the one who took it on;
* a call whose channels all vanished during the gap ends at the resync time, noted so;
* a call still up at the resync keeps its real end and has no note (even when some of
  its channels vanished in the gap); a call wholly inside the gap is unseen;
  a call over before the cut equals its truth;
* with no gap at all, every call equals its truth (:func:`comparable`) — except that the
  answer time may be the resync time when the answer's event had not arrived before the
  cut while the snapshot already showed the answering device Up.

Cuts sit only in clean pauses (:class:`Timing`): no message before the cut is stamped
after it, none after it before it. Besides the seeded cuts, :data:`REGRESSIONS` keeps
cuts that once failed: between a leg's ``Newchannel`` and the ``DialBegin`` that dials it
(:func:`awaiting_dial`: the leg is live and not yet dialed, which a resync must not take
for "dialed while we were away"), and a gap that swallows the answer of a Local pair's
``;1`` half after its device answered.

The last test runs the whole pipeline to the Bitrix24 emulator: AMI dropped mid-call with a
gap, then the simulated PBX restarted mid-call with other (re-keyed) calls; no card stays
shown, every call is registered once and finished once.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.calls import CallEnded, CallEvent, CallSummary
from callbridge.config import Config, PbxConfig, parse_config
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.outbox.store import OutboxStore
from callbridge.pbx.ami.client import (
    AmiClient,
    AmiError,
    Connected,
    Disconnected,
    SnapshotTaken,
)
from callbridge.pbx.ami.framing import BANNER_PREFIX, AmiFramer, AmiMessage
from callbridge.pbx.tracker.tracker import CallTracker
from callbridge.pipeline import build_pipeline
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.scenario import async_events, load_scenario
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.asterisk.timeline import Timeline
from callbridge.sim.asterisk.truth import comparable, expected_calls
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from tests.waiting import until

TRACES = Path(__file__).parent / "traces"
PLAIN = TRACES / "asterisk-22.10.1"
PBX = PbxConfig()
USER, SECRET = "cb", "pw"
#: Unix time the simulated PBX clock starts at (its timeline's epoch).
EPOCH = 1_800_000_000.0
CUTS_PER_TRACE = 5
#: Seconds of PBX time each cut of a trace stays unreachable (0: reconnect at once).
GAPS = (0.0, 0.0, 0.4, 2.0, 6.0)
#: After the last message of a trace, a gap may end this much later.
TAIL = 2.0
#: The shortest pause between two messages a cut or a gap end is placed in (seconds).
MIN_PAUSE = 20e-6
#: Two unix times this close are the same moment (float and 6-decimal rounding).
SAME_TIME = 5e-6
WITHIN = 15.0


def trace_paths() -> list[Path]:
    return sorted(
        p
        for folder in ("asterisk-22.10.1", "asterisk-22.10.1-freepbx")
        for p in (TRACES / folder).glob("*.ami")
        if not p.name.endswith(".failed-login.ami")
    )


# -- where to cut ------------------------------------------------------------------------


@dataclass(frozen=True)
class Cut:
    trace: Path
    #: Messages the client reads before the connection is cut.
    keep: int
    #: Messages the timeline plays while the PBX is unreachable (0: no gap).
    lost: int

    @property
    def id(self) -> str:
        return f"{self.trace.stem}-keep{self.keep}-lost{self.lost}"


class Timing:
    """When the messages of some traces play on the simulator's clock, and where that
    clock can stop cleanly between them.

    Each trace plays in recorded order, a message once the clock has reached its time —
    and recorded times sometimes step back a little (Asterisk stamps an event when it
    makes it, not when it writes it), so a message is *released* at the latest time of
    its trace so far. Parked inside the pause before message ``k`` (in release order),
    the clock has played exactly ``k`` messages, every one of them stamped before the
    parking time and every later one stamped after it: a clean cut, where "before" in
    time and "before" in the stream agree.
    """

    def __init__(self, traces: Sequence[Path]) -> None:
        pairs: list[tuple[float, float]] = []
        for trace in traces:
            stamped = load_scenario(trace).times
            pairs += zip(itertools.accumulate(stamped, max), stamped, strict=True)
        pairs.sort(key=lambda pair: pair[0])
        #: Release time of each message, in play order.
        self.release = [released for released, _ in pairs]
        # The earliest stamp from message ``k`` on.
        later = list(itertools.accumulate(reversed([stamp for _, stamp in pairs]), min))
        self._later = later[::-1]

    def __len__(self) -> int:
        return len(self.release)

    def pause(self, index: int) -> tuple[float, float]:
        """The pause before message ``index`` (after the last one for ``len(self)``):
        (its start, its length; ≤ 0 when there is none)."""
        start = self.release[index - 1]
        stop = self._later[index] if index < len(self) else start + TAIL
        return start, stop - start

    def is_edge(self, index: int) -> bool:
        """Whether the clock can stop before message ``index`` with a clear margin: unix
        times near 1.8e9 carry ~0.2 µs of float precision and the Ping's 6 decimals, so
        a pause of a few µs could not tell "before the cut" from "after"."""
        return 0 < index <= len(self) and self.pause(index)[1] >= MIN_PAUSE

    def at_edge(self, index: int, share: float) -> float:
        """The position ``share`` of the way through the pause before message ``index``."""
        start, length = self.pause(index)
        return start + share * length

    def edge_after(self, position: float, first: int = 1) -> int:
        """The first edge (from ``first``) past ``position``: parked there, the clock has
        played every message stamped up to ``position``."""
        n = len(self)
        return next(
            i
            for i in range(first, n + 1)
            if self.is_edge(i) and (i == n or self._later[i] > position + SAME_TIME)
        )


def awaiting_dial(trace: Path) -> set[int]:
    """Cut points (``keep``) that fall after a channel's ``Newchannel`` and before the
    ``DialBegin`` that dials it.

    A resync there sees a live leg the tracker knows and nobody dialed yet. It once took
    it for "dialed while we were away": an outbound call lost its external number (the
    trunk leg, still ``Down`` on ``s``, became the first dial target) and a ring group's
    ``rang`` was reordered (the later-dialed leg, created first, counted first).
    """
    data = trace.read_bytes()
    framer = AmiFramer(expect_banner=data.startswith(BANNER_PREFIX.encode()))
    events = async_events(framer.feed(data))
    created: dict[str, int] = {}
    window: set[int] = set()
    for index, msg in enumerate(events):
        if msg.event == "Newchannel":
            created[msg.get("Channel") or ""] = index
        elif msg.event == "DialBegin":
            born = created.get(msg.get("DestChannel") or "")
            if born is not None:
                window.update(range(born + 1, index + 1))
    return window


def plan(trace: Path) -> list[Cut]:
    """Five cuts at seeded places of ``trace``, each with one of :data:`GAPS`."""
    timing = Timing([trace])
    edges = [i for i in range(1, len(timing)) if timing.is_edge(i)]
    rng = random.Random(trace.stem)
    keeps = sorted(rng.sample(edges, CUTS_PER_TRACE))
    gaps = list(GAPS)
    rng.shuffle(gaps)
    cuts: list[Cut] = []
    for keep, gap in zip(keeps, gaps, strict=True):
        lost = 0
        if gap > 0:
            # Every message due within ``gap`` seconds of the cut, at least one.
            lost = timing.edge_after(timing.at_edge(keep, 0.25) + gap, keep + 1) - keep
        cuts.append(Cut(trace, keep, lost))
    return cuts


def in_window(trace: Path, near: int) -> Cut:
    """The no-gap cut inside :func:`awaiting_dial`'s windows nearest to ``near``."""
    timing = Timing([trace])
    window = [i for i in sorted(awaiting_dial(trace)) if timing.is_edge(i)]
    return Cut(trace, min(window, key=lambda i: (abs(i - near), i)), 0)


FREEPBX = TRACES / "asterisk-22.10.1-freepbx"

#: Cuts that once failed, kept whatever the seeds draw.
REGRESSIONS = [
    # Trunk leg created (Down, Exten s) and not yet dialed: the number comes with the
    # DialBegin after the resync.
    in_window(PLAIN / "06-outbound-answered.ami", 70),
    in_window(PLAIN / "06b-outbound-no-answer.ami", 70),
    in_window(PLAIN / "08-click-to-call.ami", 0),
    in_window(FREEPBX / "F06-outbound-answered.ami", 0),
    # PJSIP/102 created before PJSIP/101 is dialed: rang stays in dial order.
    in_window(FREEPBX / "F03-ringgroup-local.ami", 560),
    # 102 answered on the ;2 side (seen); the gap swallowed the ;1's DialEnd ANSWER and
    # every hangup: answered by 102, ended at the resync.
    Cut(FREEPBX / "F03-ringgroup-local.ami", 639, 118),
]

SEEDED = [cut for trace in trace_paths() for cut in plan(trace)]
ALL_CUTS = SEEDED + REGRESSIONS


# -- the consumer: CallPipeline.on_ami_item with only the tracker behind it ---------------


class Follower:
    """The pipeline's consume loop over a real :class:`AmiClient`, feeding a tracker.

    As :meth:`CallPipeline.on_ami_item`: every ``Connected`` asks for a snapshot (marked
    in the stream), applied at its ``SnapshotTaken`` with the Ping's time.
    """

    def __init__(self, port: int) -> None:
        self.client = AmiClient(
            "127.0.0.1",
            port,
            USER,
            SECRET,
            ping_interval=None,
            reconnect_min=0.01,
            reconnect_max=0.05,
            action_timeout=5.0,
        )
        self.tracker = CallTracker(PBX)
        #: Event messages read (FullyBooted, which the simulator makes itself, excluded).
        self.received = 0
        #: Asterisk time of each resync applied, in order.
        self.resyncs: list[float] = []
        self.disconnects = 0
        self.ended: list[CallSummary] = []
        self._snapshot: asyncio.Task[tuple[list[AmiMessage], float]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start()
        self._task = asyncio.create_task(self._consume())

    async def close(self) -> None:
        await self.client.close()
        if self._task is not None:
            await self._task
        if self._snapshot is not None:
            self._snapshot.cancel()

    async def _consume(self) -> None:
        async for item in self.client.events():
            await self.on_item(item)

    def _take(self, events: list[CallEvent]) -> None:
        self.ended += [e.summary for e in events if isinstance(e, CallEnded)]

    async def on_item(self, item: object) -> None:
        if isinstance(item, Connected):
            self._snapshot = asyncio.create_task(self.client.snapshot(mark_stream=True))
        elif isinstance(item, SnapshotTaken):
            task, self._snapshot = self._snapshot, None
            if task is None:
                return
            try:
                _, at = await task
            except AmiError:
                return  # the session died again; the next Connected asks anew
            self._take(self.tracker.resync(item.items, at))
            self.resyncs.append(at)
        elif isinstance(item, Disconnected):
            self.disconnects += 1
        elif isinstance(item, AmiMessage):
            if item.event != "FullyBooted":
                self.received += 1
            self._take(self.tracker.feed(item))


def advance_to(sim: AsteriskSimulator, clock: ManualClock, position: float) -> None:
    """Move the PBX clock to ``position`` seconds of its timeline (started at 0)."""
    assert position >= clock.monotonic()
    clock.advance(position - clock.monotonic())


def _timeline(sim: AsteriskSimulator) -> Timeline:
    timeline = sim.timeline
    assert timeline is not None, "nobody logged in yet"
    return timeline


async def _played(sim: AsteriskSimulator, count: int) -> None:
    timeline = _timeline(sim)
    await sim.wait_for(lambda: timeline.played >= count, limit=WITHIN)
    assert timeline.played == count


# -- one cut -------------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ALL_CUTS, ids=[c.id for c in ALL_CUTS])
async def test_resync_from_the_live_channels_after_a_cut(cut: Cut) -> None:
    timing = Timing([cut.trace])
    n = len(timing)
    clock = ManualClock(start=EPOCH)
    sim = AsteriskSimulator(
        username=USER,
        secret=SECRET,
        traces=[cut.trace],
        speed=1.0,
        rebase_time=True,
        clock=clock,
        auth_fail_delay=0,
        salt=7,
        expected_fn=expected_calls,
    )
    await sim.start("127.0.0.1", 0)
    follower = Follower(sim.port)
    try:
        await follower.start()
        await until(lambda: len(follower.resyncs) == 1, "the first snapshot applied", WITHIN)
        # What is due at position 0 played at the login; nothing else until the clock moves.
        at_zero = sum(1 for t in timing.release if t <= 0.0)
        await _played(sim, at_zero)
        await until(lambda: follower.received == at_zero, "position 0 read", WITHIN)
        assert cut.keep >= at_zero

        if cut.lost == 0:
            # Cut after exactly ``keep`` messages, counted from here.
            sim.set_faults({"drop_after_messages": cut.keep - at_zero})
            resume = timing.at_edge(cut.keep, 0.5)
            advance_to(sim, clock, resume)
            await until(lambda: follower.disconnects == 1, "the cut", WITHIN)
            cut_at = resume
        else:
            cut_at = timing.at_edge(cut.keep, 0.25)
            advance_to(sim, clock, cut_at)
            await until(lambda: follower.received == cut.keep, f"{cut.keep} read", WITHIN)
            back = cut.keep + cut.lost
            gap_end = timing.at_edge(back, 0.5)
            sim.set_faults({"gap_seconds": gap_end - cut_at})  # cuts the session now
            # The timeline plays the gap to nobody; the PBX is reachable again only after.
            advance_to(sim, clock, timing.at_edge(back, 0.25))
            await _played(sim, back)
            resume = timing.at_edge(back, 0.75)
            advance_to(sim, clock, resume)
        await until(lambda: len(follower.resyncs) == 2, "the resync after the cut", WITHIN)
        # Nothing in flight was lost in the cut: the client read exactly ``keep``.
        assert follower.disconnects == 1
        assert follower.received == cut.keep
        advance_to(sim, clock, max(resume, timing.release[-1] + 1.0))
        await until(lambda: follower.received == n - cut.lost, "the rest of the trace read", WITHIN)
        expected = sim.expected()
    finally:
        await follower.close()
        await sim.stop()

    at = follower.resyncs[1]
    # The Ping dates the snapshot with the PBX's clock: the timeline's own time.
    assert at == pytest.approx(EPOCH + resume, abs=1e-5)
    check(cut, follower, expected, cut_time=EPOCH + cut_at, at=at)


def check(
    cut: Cut,
    follower: Follower,
    expected: list[dict[str, Any]],
    *,
    cut_time: float,
    at: float,
) -> None:
    tracker = follower.tracker
    assert tracker.live_calls == 0 and tracker.open_calls() == [], tracker.open_calls()
    ids = [s.linkedid for s in follower.ended]
    assert len(ids) == len(set(ids)), f"a call ended twice: {ids}"
    got = {s.linkedid: s for s in follower.ended}
    for summary in follower.ended:
        assert summary.result is not None and summary.end is not None, summary
    assert expected, cut
    for exp in expected:
        where = f"{cut.id}: call {exp['linkedid']}"
        actual = got.get(exp["linkedid"])
        if cut.lost == 0:
            assert actual is not None, f"{where}: never ended"
            obj = comparable(actual.to_json_obj(), exp)
            if exp["answer"] is not None and obj["answer"] == at and exp["answer"] >= at:
                obj["answer"] = exp["answer"]  # answered while the client was away
            assert obj == exp, where
            assert actual.note is None, where
            continue
        if exp["start"] >= cut_time and exp["end"] <= at:
            assert actual is None, f"{where}: wholly inside the gap, yet seen"
            continue
        assert actual is not None, f"{where}: never ended"
        if exp["end"] < cut_time:
            assert comparable(actual.to_json_obj(), exp) == exp, f"{where}: over before the cut"
            continue
        if exp["end"] <= at:
            # Its channels vanished during the gap: it ends when the resync saw that.
            assert actual.end == at, where
            assert actual.note is not None and "gap" in actual.note, where
        else:
            # It went on after the resync, to a real hangup: no gap note, even when some
            # of its channels vanished in the gap.
            assert actual.end == pytest.approx(exp["end"], abs=1e-6), where
            assert actual.note is None, where
        if not exp["answered"]:
            continue
        if exp["answer"] < cut_time:
            # Answered before the cut: by the same extension, at the same time.
            assert actual.answered and actual.result == "answered", where
            assert actual.answered_by == exp["answered_by"], where
            assert actual.answer == pytest.approx(exp["answer"], abs=1e-6), where
        elif exp["answer"] > at:
            # Answered after the resync: seen, though the snapshot may already have shown
            # the device Up (its Newstate lost in the gap): then answered at the resync.
            assert actual.answered and actual.answered_by == exp["answered_by"], where
            assert actual.answer in (pytest.approx(exp["answer"], abs=1e-6), at), where
        elif exp["end"] > at:
            # Answered inside the gap, still up at the resync: answered — by the answerer,
            # unless its leg did not survive the gap (a blind transfer inside it); then by
            # whoever took the call on, when they did (at the resync or later).
            assert actual.answered and actual.result == "answered", where
            assert actual.answered_by in (exp["answered_by"], exp["final_operator"]), where
            assert actual.answer is not None and at <= actual.answer <= exp["end"], where
    if cut.lost == 0:
        assert sorted(got) == sorted(e["linkedid"] for e in expected), cut.id


def test_cut_plan_covers_no_gap_and_gaps_in_every_trace() -> None:
    traces = trace_paths()
    assert len(traces) >= 21  # 15 plain + 6 FreePBX, without the failed login
    for trace in traces:
        cuts = [c for c in SEEDED if c.trace == trace]
        assert len(cuts) == CUTS_PER_TRACE
        assert sum(1 for c in cuts if c.lost == 0) >= 2
        assert sum(1 for c in cuts if c.lost > 0) >= 2
        assert plan(trace) == cuts  # seeded: the same cuts every run


def test_regression_cuts_sit_where_they_mean_to() -> None:
    for cut in REGRESSIONS:
        timing = Timing([cut.trace])
        assert timing.is_edge(cut.keep) and timing.is_edge(cut.keep + cut.lost), cut
        if cut.lost == 0:
            assert cut.keep in awaiting_dial(cut.trace), cut


# -- the whole pipeline: AMI dropped and the PBX restarted, mid-call ----------------------


@pytest.fixture
async def portal() -> AsyncIterator[str]:
    server = EmulatorServer(EmulatorOptions(webhook="1/x", rate=None))
    base = await server.start("127.0.0.1", 0)
    try:
        yield base
    finally:
        await server.stop()


async def _state(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{base}/_emulator/state")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data


def _config(port: int, base: str, tmp_path: Path) -> Config:
    return parse_config(
        {
            "ami": {
                "host": "127.0.0.1",
                "port": port,
                "username": USER,
                "secret": SECRET,
                "ping_interval": 30.0,
                "reconnect_min": 0.05,
                "reconnect_max": 0.2,
            },
            "bitrix24": {"webhook_url": f"{base}/rest/1/x/"},
            "store": {"path": str(tmp_path / "cb.sqlite3")},
        },
        {},
    )


def _sim(traces: list[Path], clock: ManualClock, port: int, salt: int) -> AsteriskSimulator:
    return AsteriskSimulator(
        username=USER,
        secret=SECRET,
        traces=traces,
        speed=1.0,
        rebase_time=True,
        clock=clock,
        auth_fail_delay=0,
        salt=salt,
        expected_fn=expected_calls,
    )


async def test_ami_dropped_and_pbx_restarted_mid_call_leave_no_card_open(
    portal: str, tmp_path: Path
) -> None:
    first = [PLAIN / "01-inbound-answered.ami", PLAIN / "05-inbound-queue-answered.ami"]
    second = [PLAIN / "06-outbound-answered.ami", PLAIN / "02-inbound-missed.ami"]
    clock = ManualClock(start=time.time())
    sim = _sim(first, clock, 0, salt=11)
    await sim.start("127.0.0.1", 0)
    port = sim.port
    config = _config(port, portal, tmp_path)
    store = OutboxStore.open(tmp_path / "cb.sqlite3", time.time)
    crm = Bitrix24Crm.from_config(config.bitrix24)
    pipeline = build_pipeline(config, crm, store)
    stop = asyncio.Event()
    run = asyncio.create_task(pipeline.run(stop))
    sim2: AsteriskSimulator | None = None
    try:
        await until(lambda: pipeline.stats.resyncs == 1, "first snapshot applied", WITHIN)
        timeline = _timeline(sim)
        by_id = {c["linkedid"]: c for c in sim.expected()}
        assert len(by_id) == 2
        a, b = sorted(by_id.values(), key=lambda c: c["end"])
        # ``a`` (05, queue) ends first; ``b`` (01) lasts longer. Both answered by then:
        timing = Timing(first)
        epoch = timeline.epoch
        answered = max(a["answer"], b["answer"]) - epoch
        cut = timing.edge_after(answered + 0.5)
        cut_at = timing.at_edge(cut, 0.25)
        advance_to(sim, clock, cut_at)
        await until(
            # ``ami_messages`` also counts the simulator's own FullyBooted.
            lambda: pipeline.stats.ami_messages - 1 == timeline.played == cut,
            "cut point",
            WITHIN,
        )

        async def shown_both() -> bool:
            calls = (await _state(portal))["calls"]
            return len(calls) == 2 and all(c["shown_now"] for c in calls)

        await until(shown_both, "both calls carded in the portal", WITHIN)

        # AMI dropped mid-call; ``a`` hangs up while the PBX is unreachable.
        back = timing.edge_after(a["end"] - epoch)
        assert b["end"] - epoch > timing.release[back - 1] + SAME_TIME
        gap_end = timing.at_edge(back, 0.5)
        sim.set_faults({"gap_seconds": gap_end - cut_at})
        advance_to(sim, clock, timing.at_edge(back, 0.25))
        await _played(sim, back)
        advance_to(sim, clock, timing.at_edge(back, 0.75))
        await until(lambda: pipeline.stats.resyncs == 2, "resync after the drop", WITHIN)
        assert pipeline.tracker.live_calls == 1  # ``b`` goes on; ``a`` ended at the resync

        # The PBX restarts while ``b`` is still up: new ids, other calls, nothing of ``b``.
        await sim.stop()
        clock2 = ManualClock(start=clock.time() + 5.0)
        sim2 = _sim(second, clock2, port, salt=12)
        await sim2.start("127.0.0.1", port)
        await until(lambda: pipeline.stats.resyncs == 3, "resync after the restart", WITHIN)
        advance_to(sim2, clock2, Timing(second).release[-1] + 1.0)
        await sim2.wait_for(lambda: bool(sim2 and sim2.status()["finished"]), limit=WITHIN)

        async def settled() -> bool:
            calls = (await _state(portal))["calls"]
            return (
                len(calls) == 4
                and all(c["finished"] for c in calls)
                and pipeline.outbox.depth() == 0
                and pipeline.tracker.live_calls == 0
            )

        await until(settled, "four calls finished in the portal", 30.0)
        state = await _state(portal)
    finally:
        stop.set()
        await run
        await crm.close()
        store.close()
        await sim.stop()
        if sim2 is not None:
            await sim2.stop()

    calls = state["calls"]
    assert len(calls) == 4, calls
    for call in calls:
        methods = [h["method"] for h in call["history"]]
        assert methods.count("telephony.externalcall.register") == 1, methods
        assert methods.count("telephony.externalcall.finish") == 1, methods
        assert call["shown_now"] == [], call  # no card left open
    assert pipeline.stats.calls_seen == 4 and pipeline.stats.calls_ended == 4


# -- the simulator's clock, as a resync relies on it ---------------------------------------


async def test_ping_under_asap_answers_with_the_timeline_time_not_the_clock() -> None:
    """Under ``asap`` the timeline runs ahead of the simulator's clock (here a manual one
    that never moves): the Ping that dates a snapshot still answers with the time the
    events already sent were stamped on, the timeline's ``epoch + position``."""
    trace = PLAIN / "06-outbound-answered.ami"
    timing = Timing([trace])
    sim = AsteriskSimulator(
        username=USER,
        secret=SECRET,
        traces=[trace],
        asap=True,
        rebase_time=True,
        clock=ManualClock(start=EPOCH),
        auth_fail_delay=0,
    )
    await sim.start("127.0.0.1", 0)
    follower = Follower(sim.port)
    try:
        await follower.start()
        await until(lambda: follower.received == len(timing), "the whole trace read", WITHIN)
        pong = await follower.client.ping()
    finally:
        await follower.close()
        await sim.stop()
    assert timing.release[-1] > 1.0  # the trace spans time the clock never moved through
    assert float(pong["Timestamp"]) == pytest.approx(EPOCH + timing.release[-1], abs=1e-5)


async def test_manual_clock_sleep_until_keeps_its_deadline_when_started_late() -> None:
    """The pacer sleeps in a task that starts after it computed when to wake; a clock
    moved in between must not push the wake-up later (it sleeps until a deadline)."""
    clock = ManualClock(start=EPOCH)
    late = asyncio.ensure_future(clock.sleep_until(5.0))  # not started yet
    clock.advance(3.0)
    await asyncio.sleep(0)  # now it starts, at 3.0
    assert not late.done() and clock.sleepers == 1
    clock.advance(2.0)  # 5.0: its deadline, not 3.0 + 5.0
    await late
    assert clock.sleepers == 0
    passed = asyncio.ensure_future(clock.sleep_until(4.0))  # a deadline already behind
    await passed
