"""``kill -9`` of callbridge under load, restarted on the same store: nothing lost, nothing
doubled — including a kill inside the emulator's ``lost_answer`` fault (the portal applied
requests whose answers never came back) and an expired OAuth token while calls flow.

Three real processes (simulator, emulator, ``callbridge run``), real TCP and HTTP, a real
SQLite store. The load is a finite set: every shared trace fit for the call mix, replayed
twice (fresh ids each), all starting together, so the expected number of calls is known
exactly. Kill moments are drawn from a seeded ``random.Random``, so a run repeats.
Assertions read the emulator's per-call ``history``.

The first two kills happen while the calls ring; the third once calls have begun to end
(8 s into the traces), and callbridge stays down while more of them end: those are not in
the PBX's channel snapshot and the new tracker never knew them, so the restarted engine
finishes them from what the outbox stored (``Engine.end_orphans``) — each still lands once,
with no card left open.
"""

from __future__ import annotations

import random
from pathlib import Path

from callbridge.sim.asterisk.scenario import default_mix_paths
from tests.e2e_support import (
    CallbridgeProc,
    EmulatorProc,
    SimProc,
    free_port,
    idle,
    landed_once,
    start_callbridge,
    start_emulator,
    start_sim,
    stop_all,
    write_config,
)
from tests.stack_support import emulator
from tests.waiting import until

__all__ = ["emulator"]  # the fixture, imported for pytest to find

SEED = 20240607
#: Token test: 4× real time (no kill there, so calls may end at any moment).
SPEED = 4.0
#: Timeline position (seconds) of the first call end after the trivial busy one.
FIRST_END = 8.0
#: Kill test: 1.5× real time.
KILL_SPEED = 1.5
#: Seconds of the traces callbridge stays down for the third kill.
DOWN = 2.0
#: Outbox timings short enough for a test; the lease outlives the HTTP timeout (1 s) so a
#: live request is never retaken, and a dead process's work comes back within seconds.
OUTBOX = {"lease": 1.5}
TIMEOUT = 1.0


def load_traces(*, outbound: bool = True) -> list[Path]:
    """The mix traces, twice. Not 08 (click-to-call): its ``CRM_CALL_ID`` names a call the
    recording portal registered, which this emulator has never seen — its finish is
    refused for good, by design, and it would never be registered here. Not 03 (busy): the
    whole call lasts 10 ms at position 0 of the timeline, where the simulator may play it
    before the first session reads events (a start-up race of the simulator, reported).

    ``outbound=False`` leaves out the outbound traces too: an outbound call that is in
    progress when callbridge (re)starts is adopted from ``CoreShowChannels`` without its
    dialled number and then skipped as "withheld" — a known tracker gap, reported.
    """
    traces = [
        p
        for p in default_mix_paths()
        if not p.name.startswith(("08-", "03-")) and (outbound or "outbound" not in p.name)
    ]
    return traces * 2


async def test_kill9_at_seeded_moments_and_inside_lost_answer(
    emulator: EmulatorProc, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    traces = load_traces(outbound=False)
    first_kill = rng.randint(2, 8)
    lost_requests = rng.randint(1, 2)
    second_kill_after = rng.randint(1, 5)
    sim = await start_sim(traces=traces, speed=KILL_SPEED)
    config = write_config(
        tmp_path / "cb.toml",
        ami_port=sim.ami_port,
        portal=emulator.url,
        store=tmp_path / "cb.sqlite3",
        outbox=OUTBOX,
        timeout=TIMEOUT,
    )
    cb = await start_callbridge(config)
    try:
        # 1. kill -9 after a seeded number of registered calls, restart on the same store.
        await until(lambda: _at_least(emulator, first_kill), f"{first_kill} calls registered", 30)
        await cb.proc.kill()
        cb = await start_callbridge(config)

        # 2. A seeded number of registrations later the portal starts applying requests
        #    and losing the answers; kill -9 once some were lost, restart.
        target = min(len(traces) - 1, await emulator.registered() + second_kill_after)
        await until(lambda: _at_least(emulator, target), f"{target} calls registered", 30)
        before: int = (await emulator.state())["requests"]["total"]
        await emulator.fault("lost_answer")

        async def answers_lost() -> bool:
            total: int = (await emulator.state())["requests"]["total"]
            return total - before >= lost_requests

        await until(answers_lost, f"{lost_requests} requests with lost answers", 30)
        await cb.proc.kill()
        await emulator.fault("none")
        cb = await start_callbridge(config)

        # 3. kill -9 once calls have begun to end; stay down while more of them end.
        async def position_past(t: float) -> bool:
            return bool((await sim.status())["position"] >= t)

        await until(lambda: position_past(FIRST_END), "the first calls ending", 60)
        await cb.proc.kill()
        down_at = (await sim.status())["position"]
        await until(lambda: position_past(down_at + DOWN), f"{DOWN}s of calls while down", 60)
        cb = await start_callbridge(config)
        # The path under test ran: the restarted process found calls that ended unseen.
        await cb.proc.wait_line("ended while callbridge was down", 30)

        async def played_out() -> bool:
            return bool((await sim.status())["finished"])

        await until(played_out, "the simulator played every trace", 60)
        await idle(cb, 60)
        state = await emulator.state()
    finally:
        await stop_all(cb, sim)

    calls = landed_once(state)
    assert len(calls) == len(traces), sorted(calls)


async def _at_least(emu: EmulatorProc, n: int) -> bool:
    return await emu.registered() >= n


async def test_token_expiry_under_load_in_application_mode(tmp_path: Path) -> None:
    """Installed as a local application; the emulator's clock jumps past the access
    token's lifetime while calls flow: callbridge refreshes it and every call lands once."""
    ttl = 600.0
    emulator = await start_emulator(token_ttl=ttl, webhook=None)
    sim: SimProc | None = None
    cb: CallbridgeProc | None = None
    traces = load_traces()
    rng = random.Random(SEED + 1)
    jump_after = rng.randint(3, 12)
    try:
        # Nothing listens on the AMI port yet: the simulator starts once installed.
        ami_port = free_port()
        config = write_config(
            tmp_path / "cb.toml",
            ami_port=ami_port,
            portal=emulator.url,
            store=tmp_path / "cb.sqlite3",
            webhook=False,
            outbox=OUTBOX,
            timeout=TIMEOUT,
        )
        # The install must reach a running callbridge; it has no credentials yet (the
        # portal makes them at install), so it is restarted with them on the same store.
        cb = await start_callbridge(config)
        app = await emulator.install(f"{cb.url}/bitrix24/install")
        assert app["client_id"] and app["client_secret"], app
        first = cb

        async def set_up() -> bool:
            portal = (await first.health())["portal"]
            return bool(portal["installed"] and portal["setup"])

        await until(set_up, "callbridge installed and its setup done", 30)
        await cb.proc.stop()
        env = {
            "CALLBRIDGE_BITRIX24__CLIENT_ID": app["client_id"],
            "CALLBRIDGE_BITRIX24__CLIENT_SECRET": app["client_secret"],
        }
        cb = await start_callbridge(config, env)
        sim = await start_sim(ami_port=ami_port, traces=traces, speed=SPEED)

        await until(lambda: _at_least(emulator, jump_after), f"{jump_after} calls registered", 30)
        jumped_at = await emulator.clock(ttl + 60.0)

        async def played_out() -> bool:
            return bool((await sim.status())["finished"])

        await until(played_out, "the simulator played every trace", 60)
        await idle(cb, 60)
        state = await emulator.state()
        portal = (await cb.health())["portal"]
    finally:
        await stop_all(cb, sim)
        await emulator.proc.stop()

    calls = landed_once(state)
    assert len(calls) == len(traces), sorted(calls)
    assert portal["auth"] == "ok", portal
    # The jump happened while calls were still being registered after it.
    late = [c for c in calls.values() if c["history"][0]["t"] >= jumped_at]
    assert late, "no call was registered after the clock moved past the token's lifetime"
