"""A bare AMI client over real TCP (asyncio streams + AmiFramer) for the simulator tests.

Deliberately not callbridge's own client: these tests check the simulator, so the
client side stays minimal and obvious.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from pathlib import Path
from typing import Any

from callbridge.pbx.ami.framing import AmiFramer, AmiMessage, encode_action

TRACES = Path(__file__).parent / "traces"
SIMPLE = TRACES / "asterisk-22.10.1"
FREEPBX = TRACES / "asterisk-22.10.1-freepbx"
LIMIT = 20.0  # seconds: an upper bound so a broken simulator fails instead of hanging


class RawAmi:
    """One AMI connection: read messages one by one, send actions."""

    _ids = itertools.count(1)

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = AmiFramer()
        self.buffer: deque[AmiMessage] = deque()
        self.reads = 0
        self.eof = False

    @classmethod
    async def connect(cls, port: int) -> RawAmi:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def next(self) -> AmiMessage:
        """The next message; ``EOFError`` when the server closed the connection."""
        async with asyncio.timeout(LIMIT):
            while not self.buffer:
                if self.eof:
                    raise EOFError
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    data = b""
                if not data:
                    self.eof = True
                    continue
                self.reads += 1
                self.buffer.extend(self.framer.feed(data))
        return self.buffer.popleft()

    async def until_eof(self) -> list[AmiMessage]:
        out: list[AmiMessage] = []
        while True:
            try:
                out.append(await self.next())
            except EOFError:
                return out

    def send(self, action: str, **headers: str | list[str]) -> str:
        aid = str(headers.pop("ActionID", f"t-{next(self._ids)}"))
        self.writer.write(encode_action(action, {"ActionID": aid, **headers}))
        return aid

    async def response(self, aid: str, events: list[AmiMessage] | None = None) -> AmiMessage:
        """Read until the response to ``aid``; events read meanwhile go to ``events``."""
        while True:
            msg = await self.next()
            if msg.response is not None and msg.action_id == aid:
                return msg
            if events is not None:
                events.append(msg)

    async def login(self, username: str = "u", secret: str = "s", **extra: str) -> AmiMessage:
        aid = self.send("Login", Username=username, Secret=secret, **extra)
        return await self.response(aid)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def http(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP request to the control endpoint over a real socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b"" if body is None else json.dumps(body).encode()
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    async with asyncio.timeout(LIMIT):
        raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    return status, json.loads(payload)


def trace_events(path: Path) -> list[AmiMessage]:
    """The asynchronous events of a trace, as the simulator should replay them."""
    from callbridge.sim.asterisk.scenario import async_events

    return async_events(AmiFramer().feed(path.read_bytes()))
