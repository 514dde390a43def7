"""End-to-end faults under a steady generated call mix: the portal down, then 503-storming,
then slow, then losing answers; the AMI connection dropped; the simulated PBX killed and
restarted mid-call. Afterwards every call is in the portal once, finished once, and no
card is left on anyone's screen.

Three real processes (``callbridge sim asterisk`` with ``--calls-per-minute``, ``callbridge
sim bitrix24``, ``callbridge run``), real TCP/HTTP, a real SQLite store; time shortened
through configuration (retry backoff, reconnect delays) and the simulator's ``--speed``.
The mix is seeded, so a run repeats. The mix never ends by itself: it is stopped by
replacing the simulator with an empty one on the same port — callbridge reconnects, its
``CoreShowChannels`` snapshot is empty, and the calls cut short are ended from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from callbridge.sim.asterisk.scenario import default_mix_paths
from tests.e2e_support import (
    EmulatorProc,
    SimProc,
    external_ids,
    idle,
    landed_once,
    start_callbridge,
    start_sim,
    stop_all,
    write_config,
)
from tests.stack_support import emulator
from tests.waiting import until

__all__ = ["emulator"]  # the fixture, imported for pytest to find

SEED = 424242
#: Timeline calls per minute × speed = 4 calls/s of wall time, each lasting ≤ 7 s.
CALLS_PER_MINUTE = 60.0
SPEED = 4.0
FAULT_SECONDS = 2.0


def mix_traces() -> list[Path]:
    """The mix without 08 (click-to-call): its ``CRM_CALL_ID`` names a call of the recording
    portal that this emulator never registered, so its finish is refused for good."""
    return [p for p in default_mix_paths() if not p.name.startswith("08-")]


async def _more_registered(emu: EmulatorProc, than: int, what: str) -> None:
    async def more() -> bool:
        return await emu.registered() >= than

    await until(more, what, within=30)


async def _start_mix(seed: int, ami_port: int = 0) -> SimProc:
    return await start_sim(
        ami_port=ami_port,
        traces=mix_traces(),
        calls_per_minute=CALLS_PER_MINUTE,
        speed=SPEED,
        seed=seed,
    )


async def _stop_mix(sim: SimProc) -> SimProc:
    """Kill the mix mid-call and put an empty PBX on the same port."""
    await sim.proc.kill()
    return await start_sim(ami_port=sim.ami_port)


async def test_portal_down_503_slow_lost_answer_under_a_steady_mix(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    sim: SimProc | None = await _start_mix(SEED)
    assert sim is not None
    config = write_config(
        tmp_path / "cb.toml",
        ami_port=sim.ami_port,
        portal=emulator.url,
        store=tmp_path / "cb.sqlite3",
        timeout=3.0,
    )
    cb = await start_callbridge(config)
    held: dict[str, int] = {}
    try:
        await _more_registered(emulator, 5, "5 calls registered before the faults")
        for mode, delay in (("down", 0.0), ("503", 0.0), ("slow", 1.5), ("lost_answer", 0.0)):
            await emulator.fault(mode, seconds=FAULT_SECONDS, delay=delay)
            deepest = 0

            async def over() -> bool:
                nonlocal deepest
                deepest = max(deepest, (await cb.calls())["depth"])
                state = await emulator.state()
                return bool(state["faults"]["mode"] == "none")

            await until(over, f"the {mode} fault to run out", within=FAULT_SECONDS + 10)
            held[mode] = deepest
        await emulator.fault("none")
        count = await emulator.registered()
        await _more_registered(emulator, count + 3, "calls registered again after the faults")

        finished = await sim.expected(finished=True)
        played = await sim.expected()
        sim = await _stop_mix(sim)
        await idle(cb, 60)
        state = await emulator.state()
    finally:
        await stop_all(cb, sim)

    calls = landed_once(state)
    # While the portal was down the outbox held the work (it did not drop it).
    assert held["down"] > 0, held
    # Every call the PBX played to its end is there; nothing else is.
    ids = set(calls)
    assert external_ids(finished) <= ids, sorted(external_ids(finished) - ids)
    assert ids <= external_ids(played), sorted(ids - external_ids(played))
    assert len(ids) >= 20, len(ids)
    _some_results(state)


def _some_results(state: dict[str, Any]) -> None:
    # The portal saw the faults' effects and the calls still carry real outcomes.
    codes = {c["STATUS_CODE"] for c in state["calls"]}
    assert "200" in codes and codes - {"200"}, codes


async def test_ami_dropped_and_simulator_restarted_mid_call_leave_no_card_open(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    sim: SimProc | None = await _start_mix(SEED + 1)
    assert sim is not None
    config = write_config(
        tmp_path / "cb.toml",
        ami_port=sim.ami_port,
        portal=emulator.url,
        store=tmp_path / "cb.sqlite3",
    )
    cb = await start_callbridge(config)
    try:
        await _more_registered(emulator, 3, "3 calls registered")
        # 1. The AMI connection drops mid-stream; callbridge reconnects and resyncs.
        resyncs: int = (await cb.calls())["resyncs"]
        await sim.faults({"drop_after_messages": 40})

        async def resynced() -> bool:
            return int((await cb.calls())["resyncs"]) > resyncs

        await until(resynced, "a resync after the AMI connection dropped", within=30)
        count = await emulator.registered()
        await _more_registered(emulator, count + 3, "calls registered after the reconnection")

        # 2. The PBX dies with calls in progress and a new one (fresh ids) takes the port.
        live = (await sim.status())["live_channels"]
        assert live, "no call in progress when the simulator was killed"
        await sim.proc.kill()
        sim = await _start_mix(SEED + 2, ami_port=sim.ami_port)
        count = await emulator.registered()
        await _more_registered(emulator, count + 3, "calls of the new simulator registered")

        # 3. And once more, leaving an empty PBX: every open call must be closed.
        sim = await _stop_mix(sim)
        await idle(cb, 60)
        state = await emulator.state()
    finally:
        await stop_all(cb, sim)

    calls = landed_once(state)
    assert len(calls) >= 9, len(calls)
    assert all(not c["shown_now"] for c in state["calls"])
