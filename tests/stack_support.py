"""Shared pieces of the in-process stack tests: the Bitrix24 emulator as a portal, the
callbridge config pointing the AMI client at the simulator and the CRM at that portal, the
portal's state, running a pipeline until the portal shows what a test waits for, and the
engine → outbox → adapter rig (:class:`Live`) driven by a test clock.

Not a test module (no ``test_`` prefix), so pytest does not collect it; the tests import
what they use. Nothing here sleeps to synchronise: waits poll a condition with a deadline
(:func:`tests.waiting.until`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.config import Bitrix24Config, Config, parse_config
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.engine import Engine
from callbridge.outbox.dispatcher import Dispatcher
from callbridge.outbox.store import OutboxStore
from callbridge.pipeline import CallPipeline
from callbridge.rules import RuleSettings, UserDirectory
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from tests.e2e_support import EmulatorProc, start_emulator
from tests.outbox_support import Clock
from tests.waiting import until

HOST = "127.0.0.1"
#: The fixed start of the test clock of :class:`Live`.
T0 = 1_700_000_000.0


@contextlib.asynccontextmanager
async def running_portal(webhook: str) -> AsyncIterator[str]:
    """The emulator, unthrottled, accepting ``webhook`` (``"1/name"``); yields its base URL."""
    server = EmulatorServer(EmulatorOptions(webhook=webhook, rate=None))
    base = await server.start(HOST, 0)
    try:
        yield base
    finally:
        await server.stop()


async def portal_state(base: str, http_timeout: float = 5.0) -> dict[str, Any]:
    """The emulator's whole state (``GET /_emulator/state``)."""
    async with httpx.AsyncClient(timeout=http_timeout) as http:
        resp = await http.get(f"{base}/_emulator/state")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data


def stack_config(ami_port: int, base: str, webhook: str, store: Path, **sections: Any) -> Config:
    """callbridge's config for the simulator on ``ami_port`` and the portal at ``base``;
    reconnect delays are short so a dropped AMI session comes back within a test.
    ``sections`` adds or replaces whole top-level sections (``outbox=…``, ``rules=…``)."""
    data: dict[str, Any] = {
        "ami": {
            "host": HOST,
            "port": ami_port,
            "username": "cb",
            "secret": "pw",
            "ping_interval": 30.0,
            "reconnect_min": 0.05,
            "reconnect_max": 0.2,
        },
        "bitrix24": {"webhook_url": f"{base}/rest/{webhook}/"},
        "store": {"path": str(store)},
        **sections,
    }
    return parse_config(data, {})


async def run_until(
    pipeline: CallPipeline,
    base: str,
    done: Callable[[dict[str, Any]], bool],
    what: str,
    within: float = 60,
) -> dict[str, Any]:
    """Run the whole pipeline until ``done(state)`` holds and the outbox is empty; returns
    the portal's state then. A crashed pipeline fails the wait with its own error."""
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    try:

        async def finished() -> bool:
            if task.done():
                task.result()
            return bool(done(await portal_state(base))) and pipeline.outbox.depth() == 0

        await until(finished, what, within=within)
        return await portal_state(base)
    finally:
        stop.set()
        await task


async def no_wait(_seconds: float) -> None:
    """The adapter's retry sleep, made instant: the test clock, not the wall, paces it."""
    await asyncio.sleep(0)


class Live:
    """Engine → outbox (SQLite) → dispatcher → the real adapter → the emulator over HTTP,
    with the outbox's clock in the test's hands (:meth:`drain` moves it)."""

    def __init__(self, server: EmulatorServer, crm: Bitrix24Crm, path: Path) -> None:
        self.server = server
        self.crm = crm
        self.clock = Clock(T0)
        self.store = OutboxStore.open(path, self.clock)
        self.dispatcher = Dispatcher(self.store, crm, clock=self.clock, rand=lambda: 0.5)
        self.http = httpx.AsyncClient(base_url=server.base_url)
        self.engine: Engine | None = None

    async def start_engine(self, settings: RuleSettings) -> Engine:
        directory = UserDirectory.from_users(await self.crm.users())
        self.engine = Engine(settings, self.store, directory)
        return self.engine

    async def fault(self, mode: str) -> None:
        response = await self.http.post("/_emulator/faults", json={"mode": mode})
        response.raise_for_status()

    async def calls(self) -> dict[str, dict[str, Any]]:
        response = await self.http.get("/_emulator/state")
        response.raise_for_status()
        return {c["EXTERNAL_CALL_ID"]: c for c in response.json()["calls"]}

    async def all_calls(self) -> list[dict[str, Any]]:
        response = await self.http.get("/_emulator/state")
        return list(response.json()["calls"])

    async def drain(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            if self.store.depth() == 0:
                return
            if not await self.dispatcher.run_once():
                due = self.store.next_due()
                self.clock.now = max(self.clock.now, due if due is not None else self.clock.now)
                self.clock.advance(0.001)
        assert self.store.depth() == 0, self.store.listing()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    server = EmulatorServer(EmulatorOptions(webhook="1/code", rate=None))
    base = await server.start(HOST, 0)
    crm = Bitrix24Crm.from_config(
        Bitrix24Config(webhook_url=f"{base}/rest/1/code/", timeout=5.0), sleep=no_wait
    )
    rig = Live(server, crm, tmp_path / "store.sqlite3")
    try:
        yield rig
    finally:
        await rig.http.aclose()
        await crm.close()
        rig.store.close()
        await server.stop()


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorProc]:
    """The emulator as its own process (``callbridge sim bitrix24``)."""
    emu = await start_emulator()
    try:
        yield emu
    finally:
        await emu.proc.stop()
