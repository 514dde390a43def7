"""Shared pieces of the Bitrix24 client tests: the emulator, a test-driven clock, tiny apps.

Imported by the ``test_bitrix24_*`` modules; it holds no tests itself.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer

WEBHOOK = "1/s3cr3tW3bh00kC0de"
START = 1_790_000_000.0


class ManualClock:
    """Time that moves only when code under test sleeps (or the test says so).

    The emulator reads the same clock, so a client backing off for 30 s moves the portal's
    time 30 s too, and nothing in a test waits for real.
    """

    def __init__(self, start: float = START) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds > 0:
            self.now += seconds
        await asyncio.sleep(0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Emulator:
    server: EmulatorServer
    base: str
    clock: ManualClock
    http: httpx.AsyncClient
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def webhook_url(self) -> str:
        return f"{self.base}/rest/{WEBHOOK}/"

    async def state(self) -> dict[str, Any]:
        r = await self.http.get(f"{self.base}/_emulator/state")
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    async def fault(self, mode: str, seconds: float | None = None, delay: float = 0.0) -> None:
        body: dict[str, Any] = {"mode": mode, "delay": delay}
        if seconds is not None:
            body["seconds"] = seconds
        r = await self.http.post(f"{self.base}/_emulator/faults", json=body)
        r.raise_for_status()

    async def install(self, handler: str) -> dict[str, Any]:
        r = await self.http.post(f"{self.base}/_emulator/install", json={"handler": handler})
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body


async def start_emulator(
    clock: ManualClock,
    *,
    rate: tuple[float, int] | None = None,
    operating_ms: float = 0.0,
    switches: dict[str, str] | None = None,
    token_ttl: float = 3600.0,
) -> tuple[EmulatorServer, str]:
    opts = EmulatorOptions(
        webhook=WEBHOOK,
        rate=rate,
        operating_ms=operating_ms,
        switches=switches or {},
        token_ttl=token_ttl,
        tls=False,
        clock=clock,
    )
    server = EmulatorServer(opts)
    base = await server.start("127.0.0.1", 0)
    return server, base.rstrip("/")


EmulatorFactory = Callable[..., Awaitable[Emulator]]


@pytest.fixture
async def make_emulator() -> AsyncIterator[EmulatorFactory]:
    started: list[Emulator] = []

    async def make(**kwargs: Any) -> Emulator:
        clock = ManualClock()
        server, base = await start_emulator(clock, **kwargs)
        emu = Emulator(server, base, clock, httpx.AsyncClient(timeout=10.0))
        started.append(emu)
        return emu

    yield make
    for emu in started:
        await emu.http.aclose()
        await emu.server.stop()


@pytest.fixture
async def emulator(make_emulator: EmulatorFactory) -> Emulator:
    return await make_emulator()


class Served:
    """A Starlette app served by uvicorn on a free port of 127.0.0.1."""

    def __init__(self, app: Starlette) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        # Listening before uvicorn starts: early connections wait in the backlog.
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task
        self._sock.close()
