"""The generated call mix: re-keyed real calls, interleaved, each with its expected result."""

from __future__ import annotations

from collections import defaultdict

from callbridge.pbx.ami.framing import AmiMessage
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.sim_asterisk_support import RawAmi, http


def _linkedid(msg: AmiMessage) -> str | None:
    return msg.get("Linkedid") or msg.get("LinkedID")


async def _run_mix(n_calls: int, *, seed: int, salt: int) -> tuple[list[AmiMessage], list[str]]:
    """Events until ``n_calls`` calls have ended (CEL LINKEDID_END), and their linkedids."""
    sim = AsteriskSimulator(
        username="u",
        secret="s",
        asap=True,
        calls_per_minute=60,
        seed=seed,
        salt=salt,
        clock=ManualClock(),
        auth_fail_delay=0,
    )
    await sim.start("127.0.0.1", 0)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        events: list[AmiMessage] = []
        ended: list[str] = []
        while len(ended) < n_calls:
            msg = await cli.next()
            if msg.event in (None, "FullyBooted"):
                continue
            events.append(msg)
            if msg.get("EventName") == "LINKEDID_END":
                ended.append(msg["LinkedID"])
        await cli.close()
    finally:
        await sim.stop()
    return events, ended


async def test_generated_calls_carry_expected_results_that_match_their_linkedids() -> None:
    sim = AsteriskSimulator(
        username="u",
        secret="s",
        asap=True,
        calls_per_minute=30,
        seed=7,
        clock=ManualClock(),
        auth_fail_delay=0,
    )
    await sim.start("127.0.0.1", 0)
    await sim.start_control("127.0.0.1", 0)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        by_call: dict[str, list[AmiMessage]] = defaultdict(list)
        ended: list[str] = []
        most_active = 0
        while len(ended) < 25:
            msg = await cli.next()
            lid = _linkedid(msg)
            if lid is not None:
                by_call[lid].append(msg)
            if msg.get("EventName") == "LINKEDID_END":
                ended.append(lid or "")
            assert sim.timeline is not None
            most_active = max(most_active, sim.timeline.active)
        status, expected = await http(sim.control_port, "GET", "/_sim/expected")
        assert status == 200
        _, finished = await http(sim.control_port, "GET", "/_sim/expected?finished=1")
        await cli.close()
    finally:
        await sim.stop()
    by_linkedid = {e["linkedid"]: e for e in expected}
    assert len(by_linkedid) == len(expected), "two expected results share a linkedid"
    assert {e["linkedid"] for e in finished} >= set(ended)
    for lid in ended:
        exp = by_linkedid[lid]
        events = by_call[lid]
        first = min(float(m["Timestamp"]) for m in events)
        assert abs(exp["start"] - first) < 1.0, lid
        values = {v for m in events for _, v in m.items()}
        if exp["external_number"] is not None:
            assert exp["external_number"] in values, lid
        for path in exp["recordings"]:
            assert lid in path  # file names carry the re-keyed uniqueid
            assert path in values
    numbers = {by_linkedid[lid]["external_number"] for lid in ended} - {None}
    assert len(numbers) > 3, "caller numbers should vary"
    # Calls overlap: some call starts before an earlier one has ended.
    starts = {lid: min(float(m["Timestamp"]) for m in by_call[lid]) for lid in ended}
    ends = {lid: max(float(m["Timestamp"]) for m in by_call[lid]) for lid in ended}
    assert any(
        starts[b] < ends[a] for a in ended for b in ended if a != b and starts[a] < starts[b]
    )
    assert most_active < 20  # only the calls in progress are held


async def test_the_mix_is_repeatable_for_a_seed_and_ids_follow_the_salt() -> None:
    first, ended_1 = await _run_mix(6, seed=11, salt=5)
    second, ended_2 = await _run_mix(6, seed=11, salt=5)
    other, _ = await _run_mix(6, seed=11, salt=6)
    n = min(len(first), len(second), len(other))
    assert [m.items() for m in first[:n]] == [m.items() for m in second[:n]]
    assert ended_1 == ended_2
    assert [m.event for m in first[:n]] == [m.event for m in other[:n]]
    uids_1 = {m["Uniqueid"] for m in first if "Uniqueid" in m}
    uids_other = {m["Uniqueid"] for m in other if "Uniqueid" in m}
    assert uids_1 and not uids_1 & uids_other
