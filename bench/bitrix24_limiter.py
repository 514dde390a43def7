"""Benchmark: the client's leaky-bucket limiter driving steady load against the emulator.

The emulator enforces the portal's bucket (default 2 req/s, burst 50) over real HTTP; several
workers call ``user.current`` as fast as the client lets them. Reported: requests answered,
the rate achieved after the opening burst as a percentage of the drain rate, and how many
``QUERY_LIMIT_EXCEEDED`` the portal answered (goal: ≥ 90 %, zero).

``--speed N`` runs a shortened timescale: the client and the emulator share one clock that
runs N times faster than the wall clock (sleeps are N times shorter), so ``--seconds 600
--speed 10`` is ten portal minutes in one real minute. ``--speed 1`` is a real-time run.

    .venv/bin/python bench/bitrix24_limiter.py --seconds 600 --speed 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx

from callbridge.crm.bitrix24.auth import WebhookAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.crm.bitrix24.limiter import LeakyBucket
from callbridge.crm.bitrix24.transport import Transport
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer

WEBHOOK = "1/benchcode"


class FastClock:
    """Wall time sped up ``speed`` times, shared by the client and the emulator."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self._t0 = time.time()
        self._m0 = time.monotonic()

    def __call__(self) -> float:
        return self._t0 + (time.monotonic() - self._m0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


async def run(
    rate: float, burst: int, seconds: float, speed: float, workers: int
) -> dict[str, Any]:
    clock = FastClock(speed)
    server = EmulatorServer(
        EmulatorOptions(
            webhook=WEBHOOK,
            rate=(rate, burst),
            operating_ms=0.0,
            switches={},
            token_ttl=3600.0,
            tls=False,
            clock=clock,
        )
    )
    base = (await server.start("127.0.0.1", 0)).rstrip("/")
    client = Bitrix24Client(
        WebhookAuth(f"{base}/rest/{WEBHOOK}/"),
        transport=Transport(timeout=10.0),
        limiter=LeakyBucket(rate, burst),
        clock=clock,
        sleep=clock.sleep,
    )
    start = clock()
    end = start + seconds
    done: list[float] = []
    failures: list[str] = []

    async def worker() -> None:
        while clock() < end:
            try:
                await client.call("user.current")
                done.append(clock())
            except Exception as exc:  # a benchmark reports failures, it does not stop
                failures.append(str(exc))

    await asyncio.gather(*(worker() for _ in range(workers)))
    async with httpx.AsyncClient() as http:
        state = (await http.get(f"{base}/_emulator/state")).json()
    await client.close()
    await server.stop()
    # Steady phase: the second half of the run, long after the opening burst is spent.
    half = start + seconds / 2
    steady = [t for t in done if half <= t < end]
    steady_rate = len(steady) / (seconds / 2)
    return {
        "plan": f"{rate:g}/{burst}",
        "portal_seconds": seconds,
        "speed": speed,
        "workers": workers,
        "answered": len(done),
        "ideal_answered": burst + rate * seconds,
        "steady_rate": round(steady_rate, 4),
        "steady_percent_of_drain": round(100 * steady_rate / rate, 1),
        "overall_percent_of_ideal": round(100 * len(done) / (burst + rate * seconds), 1),
        "query_limit_exceeded_portal": state["requests"]["by_error"].get("QUERY_LIMIT_EXCEEDED", 0),
        "query_limit_exceeded_client": client.stats.errors["QUERY_LIMIT_EXCEEDED"],
        "failures": len(failures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=600.0, help="portal seconds to run")
    parser.add_argument("--speed", type=float, default=10.0, help="clock speed-up (1 = real)")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    result = asyncio.run(run(args.rate, args.burst, args.seconds, args.speed, args.workers))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
