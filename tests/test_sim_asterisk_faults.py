"""Faults set over the HTTP control: cut, split, stall, gap — and the control's own views."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callbridge.pbx.ami.framing import AmiMessage
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.sim_asterisk_support import SIMPLE, RawAmi, http


@pytest.fixture
async def sim() -> AsyncIterator[AsteriskSimulator]:
    s = AsteriskSimulator(username="u", secret="s", asap=True, auth_fail_delay=0)
    await s.start("127.0.0.1", 0)
    await s.start_control("127.0.0.1", 0)
    yield s
    await s.stop()


async def test_drop_after_messages_cuts_the_connection_after_n_more(
    sim: AsteriskSimulator,
) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    assert (await cli.next()).event == "FullyBooted"
    status, _ = await http(sim.control_port, "POST", "/_sim/faults", {"drop_after_messages": 2})
    assert status == 200
    ids = [cli.send("Ping") for _ in range(3)]
    got = await cli.until_eof()
    assert [m.action_id for m in got] == ids[:2]


async def test_split_writes_cut_messages_into_small_pieces_that_still_frame(
    sim: AsteriskSimulator,
) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    assert (await cli.next()).event == "FullyBooted"
    status, body = await http(sim.control_port, "POST", "/_sim/faults", {"split_writes": True})
    assert (status, body["split_writes"]) == (200, True)
    reads_before = cli.reads
    aid = cli.send("UserEvent", UserEvent="Split", Name="Ольга Смирнова")
    await cli.response(aid)
    event = await cli.next()
    assert event.get("Name") == "Ольга Смирнова"
    # Pieces are 1–7 bytes: two messages of ~150 bytes take many reads.
    assert cli.reads - reads_before > 5
    await cli.close()


async def test_stall_holds_every_write_until_the_clock_has_moved() -> None:
    clock = ManualClock()
    sim = AsteriskSimulator(username="u", secret="s", asap=True, auth_fail_delay=0, clock=clock)
    await sim.start("127.0.0.1", 0)
    await sim.start_control("127.0.0.1", 0)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        assert (await cli.next()).event == "FullyBooted"
        await http(sim.control_port, "POST", "/_sim/faults", {"stall_seconds": 5})
        aid = cli.send("Ping")
        await sim.wait_for(lambda: sim.sessions[0].pending == 1 and clock.sleepers == 1)
        written = sim.sessions[0].written
        _, status = await http(sim.control_port, "GET", "/_sim/status")
        assert status["sessions"][0]["stalled"] is True
        clock.advance(4.9)
        await sim.wait_for(lambda: clock.sleepers == 1)
        assert sim.sessions[0].written == written  # still held
        clock.advance(0.2)
        assert (await cli.response(aid)).get("Ping") == "Pong"
        await cli.close()
    finally:
        await sim.stop()


async def test_gap_cuts_the_client_and_the_timeline_runs_on_without_it() -> None:
    path = SIMPLE / "09-inbound-blind-transfer.ami"
    clock = ManualClock()
    sim = AsteriskSimulator(
        username="u", secret="s", traces=[path], speed=1.0, auth_fail_delay=0, clock=clock
    )
    await sim.start("127.0.0.1", 0)
    await sim.start_control("127.0.0.1", 0)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        timeline = sim.timeline
        assert timeline is not None
        clock.advance(2.0)
        await sim.wait_for(lambda: (timeline.next_time() or 99) > 2.0)
        _, body = await http(sim.control_port, "POST", "/_sim/faults", {"gap_seconds": 10})
        assert body["in_gap"] is True
        before = await cli.until_eof()
        # During the gap the PBX is unreachable: a connection ends before the banner.
        refused = await RawAmi.connect(sim.port)
        assert await refused.until_eof() == []
        assert refused.framer.banner is None
        played_at_cut = timeline.played
        clock.advance(10.0)
        await sim.wait_for(lambda: (timeline.next_time() or 99) > 12.0)
        lost = timeline.played - played_at_cut
        again = await RawAmi.connect(sim.port)
        await again.login()
        clock.advance(100.0)
        after: list[AmiMessage] = []
        while not after or after[-1].get("EventName") != "LINKEDID_END":
            msg = await again.next()
            if msg.event not in (None, "FullyBooted"):
                after.append(msg)
        assert lost > 0
        stamps_before = {m["Timestamp"] for m in before if "Timestamp" in m}
        assert not stamps_before & {m["Timestamp"] for m in after}
        first = float(after[0]["Timestamp"])
        last_before = max(float(s) for s in stamps_before)
        assert first - last_before >= 10.0 - 2.0
        await again.close()
    finally:
        await sim.stop()


async def test_bad_fault_requests_are_refused_with_the_reason(sim: AsteriskSimulator) -> None:
    status, body = await http(sim.control_port, "POST", "/_sim/faults", {"drop_after": 1})
    assert status == 400 and "drop_after" in body["error"]
    status, body = await http(sim.control_port, "POST", "/_sim/faults", {"stall_seconds": "x"})
    assert status == 400 and "stall_seconds" in body["error"]
    status, body = await http(sim.control_port, "GET", "/_sim/nothing")
    assert status == 404


async def test_actions_endpoint_lists_every_action_with_its_headers(
    sim: AsteriskSimulator,
) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    await cli.response(cli.send("Ping", ActionID="p-9"))
    await cli.response(cli.send("Bogus", ActionID="b-1", Variable=["X=1", "Y=2"]))
    status, actions = await http(sim.control_port, "GET", "/_sim/actions")
    assert status == 200
    assert [a["Action"] for a in actions] == ["Login", "Ping", "Bogus"]
    assert actions[2]["Variable"] == ["X=1", "Y=2"]
    assert actions[1]["ActionID"] == "p-9"
    await cli.close()
