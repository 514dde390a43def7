"""Run the emulator on a real socket (HTTP or HTTPS) inside the caller's event loop.

>>> server = EmulatorServer(EmulatorOptions(webhook="1/secretcode"))
>>> base_url = await server.start("127.0.0.1", 0)   # "http://127.0.0.1:PORT"
>>> server.state                                     # the portal model, for tests
>>> await server.stop()

uvicorn serves the Starlette app through a thin H11 protocol subclass that puts the
connection's transport into the ASGI scope, so the ``down``/``lost_answer`` faults can cut a
connection without answering — something plain ASGI cannot express.
"""

from __future__ import annotations

import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from .app import TRANSPORT_KEY, Emulator
from .state import PortalState
from .tls import make_certificate


@dataclass
class EmulatorOptions:
    """How the emulated portal behaves; every field has the real portal's default."""

    webhook: str | None = None  # "USER_ID/CODE"; None = no incoming webhook
    rate: tuple[float, int] | None = (2.0, 50)  # leaky bucket drain/s and size; None = off
    operating_ms: float = 0.0  # method time each call costs (feeds §3.2)
    switches: dict[str, str] = field(default_factory=dict)
    token_ttl: float = 3600.0
    tls: bool = False
    tls_cert_out: str | Path | None = None
    clock: Callable[[], float] = time.time


class _TransportInScope(H11Protocol):
    """H11 protocol that exposes its transport to the app (for deliberate resets)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            scope[TRANSPORT_KEY] = self.transport
            await inner(scope, receive, send)

        self.app = app


class EmulatorServer:
    def __init__(self, options: EmulatorOptions) -> None:
        self.options = options
        self.emulator = Emulator(
            webhook=options.webhook,
            rate=options.rate,
            operating_ms=options.operating_ms,
            switches=dict(options.switches),
            token_ttl=options.token_ttl,
            clock=options.clock,
        )
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.base_url = ""
        self.cert_path: Path | None = None

    @property
    def state(self) -> PortalState:
        """The live portal model (replaced on ``/_emulator/reset``)."""
        return self.emulator.state

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Bind, start serving and return the base URL (``http(s)://HOST:PORT``)."""
        ssl_kwargs: dict[str, Any] = {}
        scheme = "http"
        if self.options.tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="b24emu-")
            tmp = Path(self._tmp.name)
            cert = (
                Path(self.options.tls_cert_out) if self.options.tls_cert_out else tmp / "cert.pem"
            )
            key = tmp / "key.pem"
            make_certificate(cert, key)
            self.cert_path = cert
            ssl_kwargs = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
            scheme = "https"
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets that say so, and
        # without it every answer waits ~40 ms for a delayed ACK (Nagle)
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
        self._socket = sock
        bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.emulator.asgi,
            http=_TransportInScope,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=5,
            **ssl_kwargs,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        await server.startup(sockets=[sock])
        self._server = server
        shown_host = f"[{host}]" if ":" in host else host
        self.base_url = f"{scheme}://{shown_host}:{bound_port}"
        self.emulator.public_url = self.base_url
        return self.base_url

    async def wait_deliveries(self) -> None:
        """Until every event delivery started so far has finished (answered or failed)."""
        await self.emulator.deliverer.wait_idle()

    async def stop(self) -> None:
        self.emulator.shutting_down.set()
        if self._server is not None:
            await self._server.shutdown(sockets=[self._socket] if self._socket else None)
            self._server = None
        await self.emulator.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
