"""Benchmark: the whole path under a generated call mix at rising rates, against the
Bitrix24 emulator at the cloud limit (2 requests/s, burst 50), batched vs one request per
operation.

For each rate (calls/s) and each client — callbridge as configured (``[outbox]
batch_size = 50``) and a baseline that sends one request per operation (``batch_size =
1``) — three real processes are started: the Asterisk simulator playing the seeded mix
at that rate in real time with ``--rebase-time`` (its Timestamps are wall-clock), the
emulator with ``--rate 2/50 --operating-ms N``, and ``callbridge run``. The mix runs for
``--seconds``; then the simulator is replaced by an empty one (the calls cut short are
ended from the snapshot) and callbridge gets ``--drain`` seconds to empty its outbox.

Reported per rate and client:

* ``calls``: calls in the emulator (distinct ``EXTERNAL_CALL_ID``), ``backlog``: outbox
  operations still pending when the drain time ran out;
* ``calls/s``: calls registered per second of the load window (sustained only when the
  backlog drained and the portal refused nothing: ``refused`` counts
  ``QUERY_LIMIT_EXCEEDED``/``OPERATION_TIME_LIMIT``/503 answers);
* ``req/call``: REST requests (``requests.total``) per call;
* ``p50``/``p95`` delay: emulator time of the ``register`` (``history[0].t``) minus the
  call's start (``start`` of the simulator's expected call, i.e. its first channel). This
  includes the dialplan time before the first ring (IVR, AGI, queue entry), so it is an
  upper bound of ring → register.

    .venv/bin/python bench/e2e.py --rates 5 10 20 30 --seconds 20

The machine's load average and CPU count are printed with the table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callbridge.sim.asterisk.scenario import default_mix_paths
from tests.e2e_support import (
    start_callbridge,
    start_emulator,
    start_sim,
    write_config,
)

REFUSALS = ("QUERY_LIMIT_EXCEEDED", "OPERATION_TIME_LIMIT", "503", "OVERLOAD_LIMIT")


@dataclass
class Row:
    rate: float
    client: str
    calls: int
    backlog: int
    calls_per_s: float
    req_per_call: float
    refused: int
    p50: float | None
    p95: float | None
    drained_in: float | None
    load: float


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def run_one(
    rate: float, batch_size: int, seconds: float, drain: float, operating_ms: float, seed: int
) -> Row:
    # 08 (click-to-call) finishes a CALL_ID of the recording portal: not a call to count.
    traces = [p for p in default_mix_paths() if not p.name.startswith("08-")]
    with tempfile.TemporaryDirectory(prefix="callbridge-bench-") as tmp:
        emu = await start_emulator(rate="2/50", operating_ms=operating_ms)
        sim = await start_sim(traces=traces, calls_per_minute=rate * 60.0, seed=seed)
        config = write_config(
            Path(tmp) / "cb.toml",
            ami_port=sim.ami_port,
            portal=emu.url,
            store=Path(tmp) / "cb.sqlite3",
            outbox={"batch_size": batch_size, "retry_base": 0.5, "retry_cap": 5.0},
            rate=2.0,
            burst=50,
            timeout=10.0,
        )
        cb = await start_callbridge(config)
        try:
            t0 = time.monotonic()
            await asyncio.sleep(seconds)  # the load window: a duration, not a synchronisation
            window = time.monotonic() - t0
            expected = await sim.expected()
            await sim.proc.kill()
            sim = await start_sim(ami_port=sim.ami_port)
            drained_in: float | None = None
            deadline = time.monotonic() + drain
            calls: dict[str, Any] = {}
            while time.monotonic() < deadline:
                calls = await cb.calls()
                if calls["depth"] == 0 and calls["calls_open"] == 0:
                    drained_in = time.monotonic() - t0 - window
                    break
                await asyncio.sleep(0.2)
            calls = await cb.calls()
            state = await emu.state()
        finally:
            for p in (cb, sim, emu):
                await p.proc.stop()
    start_of = {f"callbridge-{c['linkedid']}": float(c["start"]) for c in expected}
    delays = []
    in_window = 0
    t_first = min(start_of.values()) if start_of else 0.0
    for call in state["calls"]:
        history = call["history"]
        if not history:
            continue
        start = start_of.get(str(call["EXTERNAL_CALL_ID"]))
        if start is not None:
            delays.append(history[0]["t"] - start)
        if history[0]["t"] <= t_first + window:
            in_window += 1
    by_error: dict[str, int] = state["requests"]["by_error"]
    refused = sum(n for code, n in by_error.items() if code in REFUSALS or code.startswith("5"))
    n_calls = len({c["EXTERNAL_CALL_ID"] for c in state["calls"]})
    return Row(
        rate=rate,
        client="batched" if batch_size > 1 else "one-per-op",
        calls=n_calls,
        backlog=int(calls["depth"]),
        calls_per_s=in_window / window,
        req_per_call=state["requests"]["total"] / max(1, n_calls),
        refused=refused,
        p50=_pct(delays, 0.5),
        p95=_pct(delays, 0.95),
        drained_in=drained_in,
        load=os.getloadavg()[0],
    )


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[Row], operating_ms: float, seconds: float) -> None:
    print(
        f"emulator --rate 2/50 --operating-ms {operating_ms:g}; load window {seconds:g}s; "
        f"{os.cpu_count()} CPUs"
    )
    head = (
        f"{'rate':>5} {'client':>10} {'calls':>6} {'calls/s':>8} {'req/call':>9} "
        f"{'refused':>8} {'p50 s':>6} {'p95 s':>6} {'backlog':>8} {'drained':>8} {'load1':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r.rate:>5g} {r.client:>10} {r.calls:>6} {r.calls_per_s:>8.2f} "
            f"{r.req_per_call:>9.3f} {r.refused:>8} {_fmt(r.p50):>6} {_fmt(r.p95):>6} "
            f"{r.backlog:>8} {_fmt(r.drained_in, '.1f'):>8} {r.load:>6.2f}"
        )


async def main(args: argparse.Namespace) -> int:
    rows: list[Row] = []
    for rate in args.rates:
        for batch_size in (50, 1):
            row = await run_one(
                rate, batch_size, args.seconds, args.drain, args.operating_ms, args.seed
            )
            rows.append(row)
            print(f"done: {row}", file=sys.stderr, flush=True)
    print_table(rows, args.operating_ms, args.seconds)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[5.0, 10.0, 20.0, 30.0])
    parser.add_argument("--seconds", type=float, default=20.0, help="load window per run")
    parser.add_argument("--drain", type=float, default=30.0, help="time allowed to drain")
    parser.add_argument("--operating-ms", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=7)
    sys.exit(asyncio.run(main(parser.parse_args())))
