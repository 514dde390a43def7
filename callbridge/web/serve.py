"""Serving the ASGI app with uvicorn on a socket we bind ourselves.

Binding first means port 0 works (tests, the demo) and the real address is known before
anything connects. Signals are ours, not uvicorn's: uvicorn re-raises a captured SIGTERM
after its graceful shutdown, which would end the process as "killed" instead of with
exit code 0; :func:`serve_until_signalled` turns SIGTERM/SIGINT into a clean stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette

__all__ = ["RunningServer", "bind_socket", "start_server"]

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The caller owns signal handling (see module docstring).
        yield


@dataclass
class RunningServer:
    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        await self.task

    async def serve_until_signalled(self) -> None:
        """Run until SIGTERM/SIGINT (or the server ends by itself), then stop cleanly."""
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._on_signal, sig)
                installed.append(sig)
        try:
            await self.task
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s received: stopping", sig.name)
        if self.server.should_exit:
            self.server.force_exit = True
        self.server.should_exit = True


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0 = any free port: read it back with
    ``getsockname()``, e.g. to build ``web.public_url`` before the app is made)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def start_server(
    app: Starlette,
    host: str,
    port: int,
    ready: asyncio.Event,
    *,
    sock: socket.socket | None = None,
    log_level: str = "warning",
) -> RunningServer:
    """Serve ``app`` on ``sock`` (or a new socket bound to ``host:port``) and return once
    ``ready`` is set by the app's lifespan — or raise if the server ended first."""
    if sock is None:
        sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_level=log_level, access_log=False, log_config=None
    )
    server = _Server(config)

    async def serve() -> None:
        try:
            await server.serve(sockets=[sock])
        except SystemExit:
            # uvicorn answers a failed lifespan startup with sys.exit(); inside an event
            # loop someone else owns (the demo, tests) that must not escape as SystemExit.
            raise RuntimeError("startup failed (see the log above)") from None

    task = asyncio.create_task(serve(), name="uvicorn")
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if waiter not in done:
        waiter.cancel()
        sock.close()
        exc = task.exception() if not task.cancelled() else None
        raise RuntimeError(f"web server did not start: {exc or 'startup failed'}")
    return RunningServer(server, task, host, bound_port)
