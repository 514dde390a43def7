"""Calls that end while callbridge is down (or disconnected), and calls spanning a restart.

The engine stores what it knows of every unfinished call with the call's operations; a
restarted engine over the same SQLite file finishes, at the resync, the calls that are no
longer live (:meth:`Engine.end_orphans`), and finishes a call that spans the restart with
its real answer time and the recordings learnt before it.

The first tests drive the engine on a real store and send its operations through the real
dispatcher to the test portal (:class:`PortalCrm`), asserting on the portal's state; the
last runs the whole call path twice over real sockets — the simulator's AMI (paced by a
clock the test moves), the Bitrix24 emulator over HTTP — with a "restart" in between while
one call ends unseen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from callbridge.calls import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallMerged,
    CallResult,
    CallStarted,
    CallSummary,
    Direction,
    RecordingKnown,
    RingingChanged,
)
from callbridge.config import Config
from callbridge.crm.base import CrmOperation, CrmUser, OperationKind
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.engine import ORPHAN_NOTE, Engine
from callbridge.outbox.dispatcher import Dispatcher
from callbridge.outbox.store import OutboxEntry, OutboxStore
from callbridge.pipeline import CallPipeline, build_pipeline
from callbridge.rules import RuleSettings, UserDirectory
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.scenario import load_scenario
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.asterisk.truth import expected_calls
from tests.outbox_support import Clock, PortalCrm
from tests.stack_support import portal_state, running_portal, stack_config
from tests.waiting import until

T0 = 1_700_000_000.0
USERS = [
    CrmUser(11, "Ivan Petrov", "101", None, True),
    CrmUser(12, "Olga Smirnova", "102", None, True),
    CrmUser(13, "Sergey Volkov", "103", None, True),
]
REC = "/var/spool/asterisk/monitor/2026/11/20/in-74957654321-74951234567-c1.wav"


class Process:
    """One callbridge process's engine and dispatcher on the shared store file; a
    restart is a new :class:`Process` on the same file and portal (memory lost)."""

    def __init__(self, path: Path, portal: PortalCrm, settings: RuleSettings) -> None:
        self.store = OutboxStore.open(path, portal.clock)
        self.engine = Engine(settings, self.store, UserDirectory.from_users(USERS))
        self.dispatcher = Dispatcher(self.store, portal, clock=portal.clock, rand=lambda: 0.5)

    def feed(self, *events: CallEvent) -> None:
        for event in events:
            self.engine.handle(event)

    async def drain(self) -> None:
        for _ in range(20):
            if not await self.dispatcher.run_once():
                break
        assert self.store.depth() == 0, self.store.listing()

    def close(self) -> None:
        self.store.close()


class Rig:
    def __init__(self, path: Path, settings: RuleSettings | None = None) -> None:
        self.path = path
        self.clock = Clock(T0)
        self.portal = PortalCrm(self.clock)
        self.settings = settings or RuleSettings()
        self.process = Process(path, self.portal, self.settings)

    def restart(self) -> Process:
        self.process.close()
        self.process = Process(self.path, self.portal, self.settings)
        return self.process

    def finish_params(self, call: str) -> dict[str, Any]:
        op = self.process.store.find(call, "finish")
        assert op is not None, self.process.store.ops_for_call(call)
        return dict(op.params)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "cb.sqlite3")


def inbound(call: str = "c1", at: float = T0) -> CallStarted:
    return CallStarted(call, at, Direction.INBOUND, "74951234567", "74957654321", None)


def ringing(call: str, at: float, *exts: str) -> RingingChanged:
    return RingingChanged(call, at, tuple(exts))


async def test_answered_call_ended_while_down_is_finished_by_its_holder(rig: Rig) -> None:
    first = rig.process
    first.feed(
        inbound(),
        ringing("c1", T0 + 1, "101", "102"),
        CallAnswered("c1", T0 + 5, "101"),
        ringing("c1", T0 + 5),
        RecordingKnown("c1", T0 + 5, REC),
    )
    await first.drain()
    [card] = rig.portal.by_external("callbridge-c1")
    assert card.shown_now == [11] and not card.finished

    # kill; the call ends unseen; a new process resyncs from an empty snapshot at T0+100
    second = rig.restart()
    written = second.engine.end_orphans(set(), T0 + 100)
    assert {e.op.kind for e in written} >= {OperationKind.FINISH_CALL}
    await second.drain()

    assert card.finished and card.finishes == 1 and card.registers == 1
    assert (card.finished_by, card.status_code, card.duration) == (11, "200", 95)
    assert card.shown_now == []
    assert card.records == [REC.rsplit("/", 1)[1]]  # recording learnt before the restart
    assert "FAILED_REASON" not in rig.finish_params("c1")
    # Finished once: a later resync finds nothing more to do.
    assert second.engine.end_orphans(set(), T0 + 200) == []
    assert second.store.unfinished_calls() == []


async def test_unanswered_call_ended_while_down_says_so_and_closes_every_card(
    rig: Rig,
) -> None:
    first = rig.process
    first.feed(inbound(), ringing("c1", T0 + 1, "101", "102"))
    await first.drain()
    [card] = rig.portal.by_external("callbridge-c1")
    assert sorted(card.shown_now) == [11, 12]

    second = rig.restart()
    second.engine.end_orphans(set(), T0 + 40)
    await second.drain()

    assert card.finished and card.status_code == "304" and card.duration == 0
    assert card.shown_now == []  # the hide went to the one finish does not close
    params = rig.finish_params("c1")
    assert params["FAILED_REASON"] == f"missed: {ORPHAN_NOTE}"
    assert params["USER_ID"] == 12  # missed_call_user "last_rung", from the stored facts


async def test_call_seen_starting_but_not_yet_registered_lands_as_missed(rig: Rig) -> None:
    rig.process.feed(inbound())  # in the IVR: nothing rang yet, nothing registered
    assert rig.process.store.ops_for_call("c1") == []
    second = rig.restart()
    second.engine.end_orphans(set(), T0 + 30)
    await second.drain()
    [card] = rig.portal.by_external("callbridge-c1")
    assert card.registers == 1 and card.finished and card.status_code == "304"
    assert card.shown_ever == []  # registered with SHOW=0 and nobody carded: it is over


async def test_live_and_followed_calls_are_left_alone(rig: Rig) -> None:
    rig.process.feed(inbound("c1"), ringing("c1", T0 + 1, "101"))
    rig.process.feed(inbound("c2"), ringing("c2", T0 + 1, "102"))
    second = rig.restart()
    # c1 is in the snapshot; c2 is not, but this process follows it (its channels moved
    # to another linkedid, which the tracker files under c2's own id).
    second.feed(CallAnswered("c2", T0 + 3, "102"))
    assert second.engine.end_orphans({"c1"}, T0 + 10) == []
    await second.drain()
    assert not any(c.finished for c in rig.portal.calls.values())
    assert second.store.unfinished_calls() == ["c1", "c2"]


async def test_a_call_absorbed_by_a_merge_is_finished_once_not_as_an_orphan(rig: Rig) -> None:
    settings = replace(rig.settings, register_internal=True)
    rig.settings = settings
    first = rig.restart()
    first.feed(inbound("c1"), ringing("c1", T0 + 1, "101"))
    internal = CallStarted("c3", T0 + 2, Direction.INTERNAL, None, None, "103")
    first.feed(internal, ringing("c3", T0 + 3, "102"))
    first.feed(CallMerged("c1", T0 + 4, "c3"))
    merged_finish = first.store.find("c3", "finish")
    assert merged_finish is not None
    assert first.engine.end_orphans({"c1"}, T0 + 10) == []
    second = rig.restart()
    assert second.engine.end_orphans({"c1"}, T0 + 20) == []
    assert rig.finish_params("c3") == dict(merged_finish.params)
    assert second.store.unfinished_calls() == ["c1"]


async def test_skipped_calls_leave_nothing_to_end(rig: Rig) -> None:
    # internal calls are not registered by default: once decided, nothing is kept
    rig.process.feed(CallStarted("c9", T0, Direction.INTERNAL, None, None, "101"))
    assert rig.process.store.unfinished_calls() == ["c9"]  # undecided yet: kept
    rig.process.feed(ringing("c9", T0 + 1, "102"))
    assert rig.process.store.unfinished_calls() == []
    assert rig.restart().engine.end_orphans(set(), T0 + 5) == []


async def test_register_stored_without_facts_is_finished_as_not_answered(rig: Rig) -> None:
    # A store written before facts were kept: only the register row exists.
    params = {
        "USER_ID": 12,
        "PHONE_NUMBER": "+74951234567",
        "TYPE": 2,
        "SHOW": 0,
        "EXTERNAL_CALL_ID": "callbridge-old",
    }
    op = CrmOperation("old", "register", OperationKind.REGISTER_CALL, params)
    rig.process.store.add([OutboxEntry(op, {"external_call_id": "callbridge-old"})])
    second = rig.restart()
    second.engine.end_orphans(set(), T0 + 5)
    await second.drain()
    [card] = rig.portal.by_external("callbridge-old")
    assert card.finished and card.status_code == "304"
    finish = second.store.find("old", "finish")
    assert finish is not None
    assert finish.params["FAILED_REASON"] == f"missed: {ORPHAN_NOTE}"
    assert finish.meta["external_call_id"] == "callbridge-old"  # a lost answer is looked up


async def test_call_spanning_a_restart_keeps_its_answer_time_and_recording(rig: Rig) -> None:
    first = rig.process
    first.feed(
        inbound(),
        ringing("c1", T0 + 1, "101"),
        CallAnswered("c1", T0 + 5, "101"),
        ringing("c1", T0 + 5),
        RecordingKnown("c1", T0 + 6, REC),
    )
    await first.drain()

    # The restarted tracker adopts the call from the snapshot at T0+60: it knows no
    # number, dates the answer at the snapshot and never saw the recording's VarSet.
    second = rig.restart()
    adopted = CallStarted("c1", T0 + 1, Direction.INBOUND, None, None, None)
    summary = CallSummary(
        linkedid="c1",
        direction=Direction.INBOUND,
        external_number=None,
        did=None,
        operator=None,
        rang=["101"],
        answered=True,
        answered_by="101",
        answered_on=None,
        final_operator="101",
        result=CallResult.ANSWERED,
        transfers=[],
        start=T0 + 1,
        answer=T0 + 60,
        end=T0 + 90,
        recordings=[],
        hangup_cause=16,
    )
    second.feed(adopted, CallAnswered("c1", T0 + 60, "101"))
    assert second.engine.end_orphans({"c1"}, T0 + 60) == []
    second.feed(CallEnded("c1", T0 + 90, summary))
    await second.drain()

    [card] = rig.portal.by_external("callbridge-c1")
    assert card.finished and card.duration == 85  # T0+5 → T0+90, not 30
    assert card.records == [REC.rsplit("/", 1)[1]]
    assert card.shown_now == [] and card.registers == 1


# -- the whole path, twice, over real sockets ------------------------------------------

TRACES = Path(__file__).parent / "traces" / "asterisk-22.10.1"
WITHIN = 15.0


@pytest.fixture
async def emulator() -> AsyncIterator[str]:
    async with running_portal("1/orphans") as base:
        yield base


async def _calls(base: str) -> dict[str, dict[str, Any]]:
    return {c["EXTERNAL_CALL_ID"]: c for c in (await portal_state(base))["calls"]}


class Running:
    """One callbridge "process": its own store connection, CRM client and pipeline."""

    def __init__(self, config: Config, path: Path) -> None:
        self.store = OutboxStore.open(path, time.time)
        self.crm = Bitrix24Crm.from_config(config.bitrix24)
        self.pipeline: CallPipeline = build_pipeline(config, self.crm, self.store)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.pipeline.run(self.stop))

    async def close(self) -> None:
        self.stop.set()
        await self.task
        await self.crm.close()
        self.store.close()


def _advance_to(clock: ManualClock, position: float) -> None:
    assert position >= clock.monotonic()
    clock.advance(position - clock.monotonic())


async def test_restart_while_a_call_ends_finishes_it_at_the_resync(
    emulator: str, tmp_path: Path
) -> None:
    """05 (queue, answered by 102) ends while callbridge is down; 01 (answered by 101,
    recorded) spans the restart. Both land once, with the right user, no card open, the
    talk time of 01 counted from its real answer and its recording attached."""
    traces = [TRACES / "01-inbound-answered.ami", TRACES / "05-inbound-queue-answered.ami"]
    clock = ManualClock(start=time.time())
    sim = AsteriskSimulator(
        username="cb",
        secret="pw",
        traces=traces,
        speed=1.0,
        rebase_time=True,
        clock=clock,
        auth_fail_delay=0,
        salt=5,
        expected_fn=expected_calls,
    )
    await sim.start("127.0.0.1", 0)
    config = stack_config(sim.port, emulator, "1/orphans", tmp_path / "cb.sqlite3")
    path = tmp_path / "cb.sqlite3"
    times = sorted(t for p in traces for t in load_scenario(p).times)
    runner: Running | None = Running(config, path)
    try:
        assert runner is not None
        first = runner.pipeline
        await until(lambda: first.stats.resyncs == 1, "first snapshot applied", WITHIN)
        timeline = sim.timeline
        assert timeline is not None
        epoch = timeline.epoch
        by_end = sorted(sim.expected(), key=lambda c: c["end"])
        short, long = by_end  # 05 ends first
        ext_short = f"callbridge-{short['linkedid']}"
        ext_long = f"callbridge-{long['linkedid']}"
        # Both answered and carded; 01's recording known.
        answered = max(short["answer"], long["answer"]) - epoch + 0.5
        _advance_to(clock, answered)
        played = sum(1 for t in times if t <= answered)
        await until(lambda: timeline.played >= played, "played to both answers", WITHIN)

        async def both_carded() -> bool:
            calls = await _calls(emulator)
            return len(calls) == 2 and all(c["shown_now"] for c in calls.values())

        await until(both_carded, "both calls carded in the portal", WITHIN)
        await until(lambda: first.outbox.depth() == 0, "outbox drained", WITHIN)

        # callbridge goes away (its memory with it); 05 hangs up while nobody listens.
        await runner.close()
        runner = None
        ended_short = short["end"] - epoch + 0.25
        assert long["end"] - epoch > ended_short + 0.5
        _advance_to(clock, ended_short)
        await sim.wait_for(
            lambda: timeline.played >= sum(1 for t in times if t <= ended_short), WITHIN
        )
        assert ext_short not in [k for k, c in (await _calls(emulator)).items() if c["finished"]]

        # A new process on the same store: the snapshot has only 01.
        runner = Running(config, path)
        second = runner.pipeline
        await until(lambda: second.stats.resyncs == 1, "snapshot after the restart", WITHIN)
        assert second.stats.orphans_ended == 1
        _advance_to(clock, max(times) + 1.0)

        async def settled() -> bool:
            calls = await _calls(emulator)
            return (
                len(calls) == 2
                and all(c["finished"] for c in calls.values())
                and second.outbox.depth() == 0
                and second.tracker.live_calls == 0
            )

        await until(settled, "both calls finished in the portal", WITHIN)
        calls = await _calls(emulator)
        # The adapter sends FILENAME only (the upload is the recordings issue's): what
        # reached the portal is the done attachRecord operation of each call.
        attached = {
            op.call_key: op.params["FILENAME"]
            for op in second.outbox.listing(include_done=True)
            if op.kind is OperationKind.ATTACH_RECORD and op.status == "done"
        }
    finally:
        if runner is not None:
            await runner.close()
        await sim.stop()

    for call in calls.values():
        methods = [h["method"] for h in call["history"]]
        assert methods.count("telephony.externalcall.register") == 1, methods
        assert methods.count("telephony.externalcall.finish") == 1, methods
        assert call["shown_now"] == [], call
    short_call, long_call = calls[ext_short], calls[ext_long]
    # 05: answered by 102 (user 2) before the restart, ended unseen: 200 by its holder,
    # talk time up to the resync (the end lies within the gap).
    assert (short_call["STATUS_CODE"], short_call["USER_ID"]) == ("200", 2)
    resync_talk = ended_short - (short["answer"] - epoch)
    assert short_call["DURATION"] >= round(short["end"] - short["answer"])
    assert short_call["DURATION"] <= round(resync_talk) + 1
    # 01: answered by 101 (user 1) before the restart, ended after it: real talk time,
    # and its recording (learnt before the restart) attached.
    assert (long_call["STATUS_CODE"], long_call["USER_ID"]) == ("200", 1)
    assert long_call["DURATION"] == round(long["end"] - long["answer"])
    [recording] = long["recordings"]
    assert attached[long["linkedid"]] == recording.rsplit("/", 1)[1]
    assert short["linkedid"] in attached  # 05's recording too, attached after its finish
