"""HTTP control of the Asterisk simulator, for tests and people.

A deliberately small HTTP/1.1 server on asyncio streams (one request per connection,
JSON in and out), so it shares the simulator's event loop and clock and installs no
signal handlers of its own:

* ``POST /_sim/faults`` ``{"drop_after_messages": N}`` | ``{"split_writes": true}`` |
  ``{"stall_seconds": S}`` | ``{"gap_seconds": S}`` (keys may be combined) → status
* ``POST /_sim/originate-outcome`` ``{"outcome": "answered"|"busy"|"no_answer"|"failed"}``
* ``GET /_sim/actions`` → every action received, in order, headers as JSON
* ``GET /_sim/expected[?finished=1]`` → expected tracker results of the calls played so far
* ``GET /_sim/status`` → timeline position, live channels, sessions
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from .server import FaultError

if TYPE_CHECKING:
    from .server import AsteriskSimulator

__all__ = ["ControlServer"]

MAX_BODY = 1 << 20
OUTCOMES = ("answered", "busy", "no_answer", "failed")


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class ControlServer:
    """Serves the control endpoints of one simulator."""

    def __init__(self, sim: AsteriskSimulator) -> None:
        self.sim = sim
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port)
        port_: int = self._server.sockets[0].getsockname()[1]
        return port_

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            try:
                method, target, body = await _read_request(reader)
                status, payload = self.handle(method, target, body)
            except _HttpError as exc:
                status, payload = exc.status, {"error": exc.message}
            data = json.dumps(payload, ensure_ascii=False).encode()
            head = (
                f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode() + data)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    def handle(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        """Route one request; pure apart from the simulator calls."""
        url = urlsplit(target)
        path = url.path.rstrip("/")
        query = parse_qs(url.query)
        sim = self.sim
        if path == "/_sim/actions":
            _method(method, "GET")
            return 200, [m.to_json_obj() for m in sim.actions]
        if path == "/_sim/expected":
            _method(method, "GET")
            finished = query.get("finished", ["0"])[0].lower() in ("1", "true", "yes")
            return 200, sim.expected(finished_only=finished)
        if path == "/_sim/status":
            _method(method, "GET")
            return 200, sim.status()
        if path == "/_sim/faults":
            _method(method, "POST")
            spec = _json_object(body)
            try:
                return 200, sim.set_faults(spec)
            except FaultError as exc:
                raise _HttpError(400, str(exc)) from exc
        if path == "/_sim/originate-outcome":
            _method(method, "POST")
            spec = _json_object(body)
            outcome = spec.get("outcome")
            if outcome not in OUTCOMES or set(spec) != {"outcome"}:
                raise _HttpError(
                    400, f'expected {{"outcome": one of {list(OUTCOMES)}}}, got {spec!r}'
                )
            sim.originate_outcome = str(outcome)
            return 200, {"outcome": sim.originate_outcome}
        raise _HttpError(404, f"no such endpoint: {method} {url.path}")


def _method(method: str, allowed: str) -> None:
    if method != allowed:
        raise _HttpError(405, f"method {method} not allowed here; use {allowed}")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body or b"{}")
    except ValueError as exc:
        raise _HttpError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _HttpError(400, f"body must be a JSON object, got {type(obj).__name__}")
    return obj


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise _HttpError(400, "request head too long") from exc
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3:
        raise _HttpError(400, f"bad request line {lines[0]!r}")
    method, target, _ = parts
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError as exc:
                raise _HttpError(400, f"bad Content-Length {value.strip()!r}") from exc
    if length < 0 or length > MAX_BODY:
        raise _HttpError(400, f"Content-Length {length} out of range (0..{MAX_BODY})")
    body = await reader.readexactly(length) if length else b""
    return method.upper(), target, body
