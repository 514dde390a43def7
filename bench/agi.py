"""Benchmark of FastAGI routing: ``route`` answer times at 100 concurrent sessions.

The server (AgiServer + RoutingScripts + a SQLite phonebook of 100,000 CRM entities)
runs in this process; the load — Asterisk's side, the simulator's FastAGI caller —
runs in a child process so the two do not share an event loop. A session's time is
from the caller's connect to the server closing the socket (what the dialplan waits).

1. warm: every caller is a known client (their manager's extension is the answer).
2. crm hung: every caller is unknown to the store and the CRM never answers; each call
   must get the fallback within the routing deadline (300 ms).

Run: ``.venv/bin/python bench/agi.py [--entities 100000] [--calls 5000] [--concurrency 100]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from callbridge.pbx.agi import AgiServer
from callbridge.routing.phonebook import Phonebook
from callbridge.routing.scripts import RoutingScripts
from callbridge.routing.settings import Destination, DestinationKind, RouteRule, RoutingSettings
from callbridge.routing.source import SourceEntity, SourceUser
from callbridge.sim.asterisk.dialplan import Channel, call_fastagi
from callbridge.store.db import connect
from callbridge.store.phonebook import PhonebookEntity, PhonebookStore, PhonebookUser


class HungCrm:
    """A CRM that accepts every request and never answers."""

    def __init__(self) -> None:
        self.never = asyncio.Event()
        self.requests = 0

    async def entities_page(
        self, entity_type: str, after_id: int, modified_since: str | None
    ) -> list[SourceEntity]:
        await self.never.wait()
        return []

    async def entity(self, entity_type: str, entity_id: int) -> SourceEntity | None:
        await self.never.wait()
        return None

    async def entities_by_phone(self, phone: str) -> list[SourceEntity]:
        self.requests += 1
        await self.never.wait()
        return []

    async def users_page(self, after_id: int) -> list[SourceUser]:
        await self.never.wait()
        return []


def number(i: int) -> str:
    return f"7916{i:07d}"


def fill(store: PhonebookStore, entities: int, users: int) -> None:
    with store.transaction():
        store.put_users(
            [
                PhonebookUser(u, f"User {u}", str(100 + u), f"+7926{u:07d}", True)
                for u in range(1, users + 1)
            ]
        )
        for i in range(1, entities + 1):
            store.put_entity(
                PhonebookEntity("contact", i, f"Client {i}", 1 + i % users),
                [(number(i), "+" + number(i))],
            )


def load(port: int, numbers: list[str], concurrency: int, rate: float, out: Connection) -> None:
    """Child process: ``concurrency`` callers working through ``numbers``; with ``rate``
    > 0 sessions also start no faster than ``rate`` per second (open loop)."""

    async def main() -> list[tuple[float, str, str]]:
        queue = list(numbers)
        results: list[tuple[float, str, str]] = []
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        issued = 0

        async def worker() -> None:
            nonlocal issued
            while queue:
                caller = queue.pop()
                if rate > 0:
                    issued += 1
                    await asyncio.sleep(max(0.0, t0 + issued / rate - loop.time()))
                channel = Channel(caller_num=caller, variables={"FROM_DID": "74957654325"})
                outcome = await call_fastagi(
                    f"agi://127.0.0.1:{port}/route",
                    [caller, "74957654325"],
                    channel,
                    session_timeout=5.0,
                )
                results.append(
                    (outcome.elapsed, outcome.status, channel.variables.get("CB_RESULT", ""))
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results

    out.send(asyncio.run(main()))
    out.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def scenario(
    name: str,
    phonebook: Phonebook,
    settings: RoutingSettings,
    numbers: list[str],
    concurrency: int,
    rate: float = 0.0,
) -> None:
    scripts = RoutingScripts(phonebook, settings)
    async with AgiServer(scripts.handlers(), port=0, max_sessions=10_000) as server:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=load, args=(server.port, numbers, concurrency, rate, child))
        started = time.perf_counter()
        cpu = time.process_time()
        proc.start()
        results = await asyncio.to_thread(parent.recv)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        await asyncio.to_thread(proc.join)
    times = [r[0] * 1000 for r in results]
    statuses = {s: sum(1 for r in results if r[1] == s) for s in {r[1] for r in results}}
    verdicts = {v: sum(1 for r in results if r[2] == v) for v in {r[2] for r in results}}
    print(
        f"{name:>9}: {len(results)} sessions, {concurrency} concurrent"
        f"{f' at {rate:.0f}/s' if rate else ''}: "
        f"p50 {percentile(times, 50):.2f} ms, p99 {percentile(times, 99):.2f} ms, "
        f"max {max(times):.2f} ms, mean {statistics.fmean(times):.2f} ms; "
        f"{len(results) / wall:.0f} sessions/s (incl. child start); "
        f"AGISTATUS {statuses}; CB_RESULT {verdicts}; "
        f"over deadline {sum(1 for t in times if t > settings.deadline * 1000)}; "
        f"server CPU {cpu / len(results) * 1000:.3f} ms/session"
    )


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop sessions/s")
    ns = ap.parse_args()
    rng = random.Random(1)
    settings = RoutingSettings(
        default_route=RouteRule(destination=Destination(DestinationKind.MANAGER_MOBILE))
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = PhonebookStore(connect(Path(tmp) / "pb.sqlite3"))
        started = time.perf_counter()
        fill(store, ns.entities, ns.users)
        print(
            f"phonebook: {store.count_entities()} entities, {store.count_users()} users "
            f"written in {time.perf_counter() - started:.1f}s"
        )
        known = [number(rng.randint(1, ns.entities)) for _ in range(ns.calls)]
        warm = Phonebook(store, None)
        await scenario("warm", warm, settings, known, ns.concurrency)
        await scenario("warm", warm, settings, known, ns.concurrency, ns.rate)
        crm = HungCrm()
        hung = Phonebook(store, crm)
        unknown = [f"7495{i:07d}" for i in range(ns.calls)]
        await scenario("crm hung", hung, settings, unknown, ns.concurrency)
        print(f"crm hung: {crm.requests} CRM look-ups started (cap {hung.max_crm_lookups})")
        await hung.close()


if __name__ == "__main__":
    asyncio.run(main())
