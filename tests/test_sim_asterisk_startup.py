"""The simulator's start: the first reader hears position 0, and replays carry their truth.

* A very short trace (03, the whole call in 10 ms at position 0) reaches the first
  session that reads events, every event of it — under ``asap`` and paced, also when the
  first Login had events off (a probe, a tool) and the reader came after it.
* ``GET /_sim/expected`` in ``--trace`` replay mode (the CLI, and the Python API without
  an ``expected_fn``) gives each replayed call's expected result, re-keyed like the events
  the client reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from callbridge.pbx.ami.framing import AmiMessage
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.asterisk.truth import expected_calls
from tests.e2e_support import get_json, start_sim
from tests.sim_asterisk_support import SIMPLE, RawAmi, trace_events

BUSY = SIMPLE / "03-inbound-busy.ami"
OUTBOUND = SIMPLE / "06-outbound-answered.ami"


async def _sim(trace: Path, **kw: Any) -> AsteriskSimulator:
    sim = AsteriskSimulator(username="u", secret="s", traces=[trace], auth_fail_delay=0, **kw)
    await sim.start("127.0.0.1", 0)
    return sim


async def _read_events(cli: RawAmi, n: int) -> list[AmiMessage]:
    """The next ``n`` async events (the Login's FullyBooted aside)."""
    out: list[AmiMessage] = []
    while len(out) < n:
        msg = await cli.next()
        if msg.event is not None and msg.event != "FullyBooted":
            out.append(msg)
    return out


async def _nothing_more(sim: AsteriskSimulator, cli: RawAmi) -> list[AmiMessage]:
    """Once the timeline is finished: the events still unread before a Ping's answer."""
    await sim.wait_for(lambda: bool(sim.status()["finished"]))
    extra: list[AmiMessage] = []
    await cli.response(cli.send("Ping"), extra)
    return [m for m in extra if m.event is not None]


def _shape(messages: list[AmiMessage]) -> list[tuple[str | None, str | None]]:
    """Event names and header names in order (ids are re-keyed, the rest is the trace's)."""
    return [(m.event, ",".join(k for k, _ in m.items())) for m in messages]


async def test_a_10_ms_trace_at_position_0_reaches_the_first_reader_whole_under_asap() -> None:
    orig = trace_events(BUSY)
    assert float(orig[-1]["Timestamp"]) - float(orig[0]["Timestamp"]) < 0.1  # it is short
    sim = await _sim(BUSY, asap=True)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        got = await _read_events(cli, len(orig))
        assert _shape(got) == _shape(orig)
        assert await _nothing_more(sim, cli) == []
        assert sim.status()["played"] == len(orig)
    finally:
        await sim.stop()


@pytest.mark.parametrize("asap", [True, False], ids=["asap", "paced"])
async def test_a_login_with_events_off_does_not_start_playing_to_nobody(asap: bool) -> None:
    orig = trace_events(BUSY)
    clock = ManualClock()
    sim = await _sim(BUSY, asap=asap, clock=clock)
    try:
        probe = await RawAmi.connect(sim.port)
        await probe.login(Events="off")  # the first Login makes the timeline…
        assert sim.status()["started"] is True
        # …which must not play while nobody reads: a Ping round trip lets it try.
        await probe.response(probe.send("Ping"))
        assert sim.status()["played"] == 0 and sim.position == 0.0
        reader = await RawAmi.connect(sim.port)
        await reader.login()
        clock.advance(1.0)  # paced: the whole 10 ms trace is due
        got = await _read_events(reader, len(orig))
        assert _shape(got) == _shape(orig)
        assert await _nothing_more(sim, reader) == []
        await probe.close()
        await reader.close()
    finally:
        await sim.stop()


async def test_replay_without_expected_fn_publishes_the_truth_rekeyed() -> None:
    truth = json.loads(OUTBOUND.with_suffix(".truth.json").read_text(encoding="utf-8"))
    [want] = expected_calls(truth)
    orig = trace_events(OUTBOUND)
    sim = await _sim(OUTBOUND, asap=True, rebase_time=True)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        got = await _read_events(cli, len(orig))
        [call] = sim.expected()
        _assert_rekeyed_truth(call, want, got)
    finally:
        await sim.stop()


async def test_the_cli_replay_serves_expected_results_over_http() -> None:
    truth = json.loads(OUTBOUND.with_suffix(".truth.json").read_text(encoding="utf-8"))
    [want] = expected_calls(truth)
    orig = trace_events(OUTBOUND)
    sim = await start_sim(traces=[OUTBOUND], asap=True, username="u", secret="s")
    try:
        cli = await RawAmi.connect(sim.ami_port)
        await cli.login()
        got = await _read_events(cli, len(orig))
        calls: list[dict[str, Any]] = await get_json(f"{sim.control}/_sim/expected?finished=1")
        assert len(calls) == 1
        _assert_rekeyed_truth(calls[0], want, got)
        await cli.close()
    finally:
        await sim.proc.stop()


def _assert_rekeyed_truth(
    call: dict[str, Any], want: dict[str, Any], events: list[AmiMessage]
) -> None:
    """``call`` is ``want`` with its ids and times as the replayed ``events`` carry them."""
    first = next(m for m in events if m.event == "Newchannel")
    assert call["linkedid"] == first["Linkedid"] != want["linkedid"]
    # Rebased: the call starts when its first channel does, on the timeline's clock.
    assert call["start"] == pytest.approx(float(first["Timestamp"]), abs=1e-5)
    shift = call["start"] - want["start"]
    for key in ("answer", "end"):
        assert call[key] == pytest.approx(want[key] + shift, abs=1e-5), key
    same = set(want) - {"linkedid", "start", "answer", "end", "recordings", "transfers"}
    assert {k: call[k] for k in same} == {k: want[k] for k in same}
    assert len(call["recordings"]) == len(want["recordings"])
