"""Shared pieces for the Bitrix24 emulator tests: a driven clock, servers, an event receiver.

No tests live here; the ``test_sim_bitrix24_*`` modules import these fixtures.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callbridge.sim.bitrix24.params import parse_php_pairs
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer

T0 = 1773130778.0  # 2026-03-10T11:19:38+03:00, the reference's example time


class Clock:
    """The emulator's injectable clock; tests move it instead of waiting."""

    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Portal:
    server: EmulatorServer
    url: str
    client: httpx.AsyncClient
    clock: Clock

    async def rest(
        self, method: str, body: dict[str, Any] | None = None, **kw: Any
    ) -> httpx.Response:
        """POST JSON to the configured webhook (``1/secret``)."""
        return await self.client.post(f"/rest/1/secret/{method}", json=body or {}, **kw)

    async def result(self, method: str, body: dict[str, Any] | None = None) -> Any:
        response = await self.rest(method, body)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    async def state(self) -> dict[str, Any]:
        response = await self.client.get("/_emulator/state")
        assert response.status_code == 200
        return response.json()  # type: ignore[no-any-return]


StartPortal = Callable[..., Awaitable[Portal]]


@pytest.fixture
async def start_portal() -> AsyncIterator[StartPortal]:
    """Factory: ``await start_portal(rate=None, ...)`` → a running emulator on port 0."""
    started: list[Portal] = []

    async def start(**options: Any) -> Portal:
        clock = options.pop("clock", None) or Clock()
        options.setdefault("webhook", "1/secret")
        server = EmulatorServer(EmulatorOptions(clock=clock, **options))
        url = await server.start("127.0.0.1", 0)
        verify: Any = True
        if server.cert_path is not None:
            verify = ssl.create_default_context(cafile=str(server.cert_path))
        client = httpx.AsyncClient(base_url=url, timeout=10.0, verify=verify)
        portal = Portal(server, url, client, clock)
        started.append(portal)
        return portal

    yield start
    for portal in started:
        await portal.client.aclose()
        await portal.server.stop()


@pytest.fixture
async def portal(start_portal: StartPortal) -> Portal:
    """An emulator with webhook ``1/secret`` and the rate limit off."""
    return await start_portal(rate=None)


@dataclass
class Receiver:
    """A real HTTP server standing in for callbridge's event endpoint (and a record host)."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    files: dict[str, bytes] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [p for p in self.posts if p["form"].get("event") == name]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    rec = Receiver(url=f"http://127.0.0.1:{port}")

    async def hook(request: Request) -> Response:
        raw = (await request.body()).decode()
        pairs = parse_qsl(raw, keep_blank_values=True)
        rec.posts.append(
            {
                "path": request.url.path,
                "content_type": request.headers.get("content-type"),
                "raw": raw,
                "pairs": pairs,
                "form": parse_php_pairs(pairs),
            }
        )
        rec.arrived.set()
        return PlainTextResponse("ok", status_code=rec.status)

    async def file(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in rec.files:
            return PlainTextResponse("missing", status_code=404)
        return Response(rec.files[name], media_type="audio/mpeg")

    app = Starlette(
        routes=[
            Route("/hook/{rest:path}", hook, methods=["POST"]),
            Route("/files/{name}", file, methods=["GET"]),
        ]
    )
    config = uvicorn.Config(app, log_config=None, lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    config.load()
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    yield rec
    await server.shutdown(sockets=[sock])


def envelope(response: httpx.Response) -> tuple[int, str, str]:
    """``(status, error, error_description)`` of an error answer."""
    body = response.json()
    return response.status_code, body["error"], body["error_description"]
