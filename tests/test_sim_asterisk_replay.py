"""Replaying real traces: exactly their events, re-keyed, on one shared timeline."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from callbridge.pbx.ami.framing import AmiMessage
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.sim_asterisk_support import FREEPBX, SIMPLE, RawAmi, trace_events

_HEX = re.compile(r"-([0-9a-f]{8})(?=;[12]$|$)")


async def _sim(traces: Sequence[Path], **kw: object) -> AsteriskSimulator:
    sim = AsteriskSimulator(username="u", secret="s", traces=traces, auth_fail_delay=0, **kw)  # type: ignore[arg-type]
    await sim.start("127.0.0.1", 0)
    return sim


async def _events(cli: RawAmi, n: int) -> list[AmiMessage]:
    out: list[AmiMessage] = []
    while len(out) < n:
        msg = await cli.next()
        if msg.event is not None and msg.event != "FullyBooted":
            out.append(msg)
    return out


def _id_maps(orig: list[AmiMessage], got: list[AmiMessage]) -> dict[str, str]:
    """Old → new ids read from the id-carrying headers; fails on an inconsistent map."""
    mapping: dict[str, str] = {}
    for o, g in zip(orig, got, strict=True):
        assert [k for k, _ in o.items()] == [k for k, _ in g.items()], o.event
        for (key, old), (_, new) in zip(o.items(), g.items(), strict=True):
            low = key.lower()
            pairs: list[tuple[str, str]] = []
            if low.endswith(("uniqueid", "linkedid")) and old[:1].isdigit():
                pairs.append((old, new))
            elif low.endswith("channel") and (m_old := _HEX.search(old)):
                m_new = _HEX.search(new)
                assert m_new is not None, (key, new)
                pairs.append((m_old.group(1), m_new.group(1)))
            if low.endswith("bridgeuniqueid"):
                pairs.append((old, new))
            for a, b in pairs:
                assert mapping.setdefault(a, b) == b, f"{key}: {a} mapped twice"
    assert len(set(mapping.values())) == len(mapping), "two old ids got one new id"
    assert not set(mapping) & set(mapping.values()), "an id was not re-keyed"
    return mapping


def _assert_rekeyed(orig: list[AmiMessage], got: list[AmiMessage]) -> dict[str, str]:
    mapping = _id_maps(orig, got)
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))
    for o, g in zip(orig, got, strict=True):
        for (key, old), (_, new) in zip(o.items(), g.items(), strict=True):
            assert pattern.sub(lambda m: mapping[m.group(0)], old) == new, (o.event, key)
    return mapping


async def test_replay_gives_exactly_the_trace_events_in_order_with_ids_rekeyed() -> None:
    path = FREEPBX / "F04-queue-local-answered.ami"
    orig = trace_events(path)
    sim = await _sim([path], asap=True)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        got = await _events(cli, len(orig))
        mapping = _assert_rekeyed(orig, got)
        assert len(mapping) > 10  # uniqueids, hex suffixes, bridges all seen
        assert orig[0].event == "Newchannel"  # the recording login's own events are gone
        await sim.wait_for(lambda: sim.status()["finished"])
        assert "OriginateResponse" not in [m.event for m in got]
    finally:
        await sim.stop()


async def test_originate_response_is_replayed_with_its_action_id() -> None:
    path = SIMPLE / "08-click-to-call.ami"
    orig = trace_events(path)
    sim = await _sim([path], asap=True)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        got = await _events(cli, len(orig))
        _assert_rekeyed(orig, got)
        resp = [m for m in got if m.event == "OriginateResponse"]
        assert [m.action_id for m in resp] == ["c2c-1"]
    finally:
        await sim.stop()


async def test_a_restarted_simulator_never_repeats_an_id() -> None:
    path = SIMPLE / "01-inbound-answered.ami"
    orig = trace_events(path)
    seen: list[set[str]] = []
    for _ in range(2):
        sim = await _sim([path], asap=True)
        try:
            cli = await RawAmi.connect(sim.port)
            await cli.login()
            got = await _events(cli, len(orig))
            seen.append({m["Uniqueid"] for m in got if "Uniqueid" in m})
        finally:
            await sim.stop()
    assert seen[0] and seen[1]
    assert not seen[0] & seen[1]


async def test_two_traces_start_together_and_interleave_by_relative_time() -> None:
    a, b = SIMPLE / "01-inbound-answered.ami", SIMPLE / "02-inbound-missed.ami"
    ev_a, ev_b = trace_events(a), trace_events(b)
    t0 = {id(ev_a): float(ev_a[0]["Timestamp"]), id(ev_b): float(ev_b[0]["Timestamp"])}
    stamps_a = {m["Timestamp"] for m in ev_a}
    stamps_b = {m["Timestamp"] for m in ev_b}
    assert not stamps_a & stamps_b
    sim = await _sim([a, b], asap=True)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        got = await _events(cli, len(ev_a) + len(ev_b))
    finally:
        await sim.stop()
    rel: list[float] = []
    from_a: list[AmiMessage] = []
    from_b: list[AmiMessage] = []
    for msg in got:
        ts = msg["Timestamp"]  # not rebased: the trace's own times
        source = ev_a if ts in stamps_a else ev_b
        assert ts in stamps_a or ts in stamps_b
        (from_a if source is ev_a else from_b).append(msg)
        rel.append(float(ts) - t0[id(source)])
    assert rel == sorted(rel)
    assert [m["Timestamp"] for m in from_a] == [m["Timestamp"] for m in ev_a]
    assert [m["Timestamp"] for m in from_b] == [m["Timestamp"] for m in ev_b]
    # Both calls are live at once: b's first event comes before a's last.
    assert got.index(from_b[0]) < got.index(from_a[-1])


async def test_a_client_that_reconnects_continues_the_timeline_without_resends() -> None:
    path = SIMPLE / "09-inbound-blind-transfer.ami"
    orig = trace_events(path)
    stamps = [m["Timestamp"] for m in orig]
    rel = [float(s) - float(stamps[0]) for s in stamps]
    clock = ManualClock()
    sim = await _sim([path], speed=1.0, clock=clock)
    try:
        timeline = sim.timeline
        first = await RawAmi.connect(sim.port)
        await first.login()
        timeline = sim.timeline
        assert timeline is not None
        clock.advance(3.0)
        await sim.wait_for(lambda: (timeline.next_time() or 99) > 3.0)
        before = await _events(first, sum(1 for r in rel if r <= 3.0))
        await first.close()
        await sim.wait_for(lambda: not sim.sessions)
        clock.advance(5.0)  # the timeline runs on while nobody listens
        await sim.wait_for(lambda: (timeline.next_time() or 99) > 8.0)
        played_while_away = timeline.played
        second = await RawAmi.connect(sim.port)
        await second.login()
        clock.advance(100.0)
        after: list[AmiMessage] = []
        while not after or after[-1]["Timestamp"] != stamps[-1]:
            after += await _events(second, 1)
        await second.close()
    finally:
        await sim.stop()
    got = [m["Timestamp"] for m in before + after]
    assert len(set(got)) == len(got), "an event was sent twice"
    assert [m["Timestamp"] for m in before] == stamps[: len(before)]
    lost = stamps[len(before) : played_while_away]
    assert lost, "the gap should have cost some events"
    # After the reconnect: the rest of the trace from where the timeline was.
    assert [m["Timestamp"] for m in after] == stamps[played_while_away:]


async def test_rebase_time_shifts_every_timestamp_so_the_timeline_starts_now() -> None:
    path = SIMPLE / "06-outbound-answered.ami"
    orig = trace_events(path)
    clock = ManualClock(start=1_900_000_000.0)
    sim = await _sim([path], asap=True, rebase_time=True, clock=clock)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        got = await _events(cli, len(orig))
    finally:
        await sim.stop()
    t0 = float(orig[0]["Timestamp"])
    assert got[0]["Timestamp"] == "1900000000.000000"
    for o, g in zip(orig, got, strict=True):
        assert abs((float(g["Timestamp"]) - 1_900_000_000.0) - (float(o["Timestamp"]) - t0)) < 2e-6
    # CDR times move with them (the trace was recorded in 2026, the new epoch is 2030).
    cdr = next(m for m in got if m.event == "Cdr")
    assert cdr["StartTime"].startswith("2030-03-17")
    recording = next(m for m in got if m.get("Variable") == "MIXMONITOR_FILENAME")
    assert "/2030/03/17/" in recording["Value"] and "-20300317-" in recording["Value"]


async def test_core_show_channels_lists_exactly_the_channels_live_mid_call() -> None:
    path = FREEPBX / "F03-ringgroup-local.ami"
    clock = ManualClock()
    sim = await _sim([path], speed=1.0, clock=clock)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        clock.advance(6.0)  # ringing the group: trunk, Local pairs and phones are up
        timeline = sim.timeline
        assert timeline is not None
        await sim.wait_for(lambda: (timeline.next_time() or 0) > 6.0)
        aid = cli.send("CoreShowChannels")
        events: list[AmiMessage] = []
        resp = await cli.response(aid, events)
        assert (resp.get("EventList"), resp.get("Message")) == ("start", "Channels will follow")
        items: list[AmiMessage] = []
        while True:
            msg = await cli.next()
            if msg.action_id != aid:
                continue
            if msg.event == "CoreShowChannelsComplete":
                break
            items.append(msg)
        live: dict[str, str] = {}
        for ev in events:
            if ev.event == "Newchannel":
                live[ev["Uniqueid"]] = ev["Channel"]
            elif ev.event == "Hangup":
                live.pop(ev["Uniqueid"], None)
        assert len(live) >= 3
        assert {m["Uniqueid"]: m["Channel"] for m in items} == live
        assert msg.get("ListItems") == str(len(items))
        assert msg.get("EventList") == "Complete"
        assert all("Timestamp" not in m for m in items)
        assert all(re.fullmatch(r"\d\d:\d\d:\d\d", m["Duration"]) for m in items)
    finally:
        await sim.stop()
