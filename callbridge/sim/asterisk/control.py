"""HTTP control of the Asterisk simulator, for tests and people.

A small Starlette app served by uvicorn in the simulator's own event loop (through
:func:`callbridge.web.serve.start_server`, which installs no signal handlers), JSON in
and out:

* ``POST /_sim/faults`` ``{"drop_after_messages": N}`` | ``{"split_writes": true}`` |
  ``{"stall_seconds": S}`` | ``{"gap_seconds": S}`` (keys may be combined) → status
* ``POST /_sim/originate-outcome`` ``{"outcome": "answered"|"busy"|"no_answer"|"failed"}``
* ``GET /_sim/actions`` → every action received, in order, headers as JSON
* ``GET /_sim/expected[?finished=1]`` → expected tracker results of the calls played so far
* ``GET /_sim/status`` → timeline position, live channels, sessions

A bad request gets a 400 whose ``error`` names what is wrong; nothing is changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from callbridge.web.serve import RunningServer, start_server

from .server import FaultError

if TYPE_CHECKING:
    from .server import AsteriskSimulator

__all__ = ["OUTCOMES", "ControlServer", "create_control_app"]

MAX_BODY = 1 << 20
OUTCOMES = ("answered", "busy", "no_answer", "failed")


class _BadRequest(Exception):
    pass


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise _BadRequest(f"body of {len(body)} bytes is over {MAX_BODY}")
    try:
        obj = json.loads(body or b"{}")
    except ValueError as exc:
        raise _BadRequest(f"body is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _BadRequest(f"body must be a JSON object, got {type(obj).__name__}")
    return obj


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_control_app(sim: AsteriskSimulator, ready: asyncio.Event) -> Starlette:
    async def actions(request: Request) -> JSONResponse:
        return JSONResponse([m.to_json_obj() for m in sim.actions])

    async def expected(request: Request) -> JSONResponse:
        finished = request.query_params.get("finished", "0").lower() in ("1", "true", "yes")
        return JSONResponse(sim.expected(finished_only=finished))

    async def status(request: Request) -> JSONResponse:
        return JSONResponse(sim.status())

    async def faults(request: Request) -> JSONResponse:
        try:
            return JSONResponse(sim.set_faults(await _json_object(request)))
        except (_BadRequest, FaultError) as exc:
            return _error(400, str(exc))

    async def originate_outcome(request: Request) -> JSONResponse:
        try:
            spec = await _json_object(request)
        except _BadRequest as exc:
            return _error(400, str(exc))
        outcome = spec.get("outcome")
        if outcome not in OUTCOMES or set(spec) != {"outcome"}:
            return _error(400, f'expected {{"outcome": one of {list(OUTCOMES)}}}, got {spec!r}')
        sim.originate_outcome = str(outcome)
        return JSONResponse({"outcome": sim.originate_outcome})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ready.set()
        yield

    async def not_routed(request: Request, exc: Exception) -> JSONResponse:
        code = getattr(exc, "status_code", 404)
        what = "no such endpoint" if code == 404 else "method not allowed here"
        return _error(code, f"{what}: {request.method} {request.url.path}")

    return Starlette(
        routes=[
            Route("/_sim/actions", actions, methods=["GET"]),
            Route("/_sim/expected", expected, methods=["GET"]),
            Route("/_sim/status", status, methods=["GET"]),
            Route("/_sim/faults", faults, methods=["POST"]),
            Route("/_sim/originate-outcome", originate_outcome, methods=["POST"]),
        ],
        lifespan=lifespan,
        exception_handlers={404: not_routed, 405: not_routed},
    )


class ControlServer:
    """Serves the control endpoints of one simulator."""

    def __init__(self, sim: AsteriskSimulator) -> None:
        self.sim = sim
        self._server: RunningServer | None = None

    async def start(self, host: str, port: int) -> int:
        ready = asyncio.Event()
        self._server = await start_server(create_control_app(self.sim, ready), host, port, ready)
        return self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
