"""FastAGI server protocol (reference asterisk.md §4): many concurrent sessions, each bounded.

Asterisk connects, writes the environment block (``agi_key: value`` lines, a blank line
ends it), then waits for one command line at a time and answers each with a reply
(``200 result=1 (value)``, ``510 …``, a multi-line ``520-…`` usage block, ``511 …`` on a
dead channel). While a script runs, the channel may hang up: Asterisk then writes an
unsolicited ``HANGUP`` line *before* the reply to the pending command (trace 12b); the
session skips it, remembers it, and keeps reading for the real reply.

Asterisk has no read timeout on the socket (§4.4): a script that never closes leaves a
zombie channel. So every session here has a hard deadline after which the socket is
closed whatever the handler is doing, and the socket is always closed when the handler
returns — that is what ends ``AGI()`` with ``AGISTATUS=SUCCESS``.

The pure parts (:func:`parse_environment`, :func:`parse_reply`, :func:`quote`) do no
I/O; :class:`AgiSession` and :class:`AgiServer` are the asyncio edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

__all__ = [
    "AgiClosed",
    "AgiEnvironment",
    "AgiError",
    "AgiHandler",
    "AgiProtocolError",
    "AgiReply",
    "AgiServer",
    "AgiSession",
    "AgiStats",
    "parse_environment",
    "parse_reply",
    "quote",
]

log = logging.getLogger(__name__)

#: A line longer than this is not AGI; the session is dropped rather than buffering it.
MAX_LINE = 8192
#: An environment block with more lines than this is not Asterisk's.
MAX_ENV_LINES = 256


class AgiError(Exception):
    """Base of every FastAGI failure; contained to one session."""


class AgiProtocolError(AgiError):
    """The peer sent something that is not FastAGI."""


class AgiClosed(AgiError):
    """The peer closed the socket (Asterisk ended the AGI, e.g. after a hangup)."""


# --------------------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The environment block Asterisk sends first (keys without the ``agi_`` prefix)."""

    values: Mapping[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key, default)

    @property
    def network_script(self) -> str:
        """``route?did=…`` — the part of the URL after ``host:port/``."""
        return self.values.get("network_script", "")

    @property
    def script(self) -> str:
        """The script name (path without query string and slashes): ``route``."""
        return self.network_script.partition("?")[0].strip("/")

    @property
    def query(self) -> dict[str, str]:
        """The URL's query parameters (last value wins): ``{"did": "7495…"}``."""
        raw = self.network_script.partition("?")[2]
        return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}

    @property
    def args(self) -> list[str]:
        """``agi_arg_1``, ``agi_arg_2``, … in order (the ``AGI()`` arguments)."""
        found: list[tuple[int, str]] = []
        for key, value in self.values.items():
            if key.startswith("arg_") and key[4:].isdigit():
                found.append((int(key[4:]), value))
        return [value for _, value in sorted(found)]

    def arg(self, index: int) -> str:
        """Argument ``index`` (1-based), ``""`` when absent."""
        return self.values.get(f"arg_{index}", "")

    @staticmethod
    def known(value: str) -> str:
        """Asterisk writes ``unknown`` for an absent caller id/name/dnid; map it to ``""``."""
        return "" if value == "unknown" else value


def parse_environment(lines: Iterable[str]) -> AgiEnvironment:
    """The environment block from its lines (without the terminating blank line).

    Raises :class:`AgiProtocolError` naming the offending line when one is not
    ``agi_<key>: <value>``.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        key, sep, value = line.partition(":")
        if not sep or not key.startswith("agi_") or not key[4:]:
            raise AgiProtocolError(f"environment line {number} is not 'agi_key: value': {line!r}")
        # Asterisk writes "key: value"; an empty value is "key: " (agi_accountcode).
        values[key[4:]] = value[1:] if value.startswith(" ") else value
    return AgiEnvironment(values)


@dataclass(frozen=True, slots=True)
class AgiReply:
    """One reply: ``code`` (200, 510, 511, 520), ``result`` (text after ``result=``),
    ``data`` (inside the parentheses, ``None`` when none) and any trailing text."""

    code: int
    result: str = ""
    data: str | None = None
    extra: str = ""
    usage: tuple[str, ...] = ()
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 200

    @property
    def dead_channel(self) -> bool:
        return self.code == 511


def parse_reply(line: str) -> AgiReply:
    """Parse one reply line (the last line for a multi-line ``520``).

    ``200 result=1 (74957654325)`` → code 200, result ``1``, data ``74957654325``;
    ``200 result=0 Gosub complete`` → extra ``Gosub complete``; ``510 Invalid …`` → 510.
    """
    head, _, rest = line.partition(" ")
    if len(head) != 3 or not head.isdigit():
        raise AgiProtocolError(f"not an AGI reply: {line!r}")
    code = int(head)
    if not rest.startswith("result="):
        return AgiReply(code=code, extra=rest, raw=line)
    result, _, tail = rest[len("result=") :].partition(" ")
    data: str | None = None
    # The value is written raw between parentheses and may itself contain parentheses,
    # so take everything from the first "(" to the *last* ")".
    if tail.startswith("(") and ")" in tail:
        close = tail.rindex(")")
        data = tail[1:close]
        tail = tail[close + 1 :].lstrip(" ")
    return AgiReply(code=code, result=result, data=data, extra=tail, raw=line)


_CONTROL = {c: None for c in range(32)} | {127: None}


def quote(value: str) -> str:
    """One command argument as Asterisk's ``parse_args`` reads it back verbatim.

    Control characters (CR/LF would end the command line and let a CRM name inject
    commands) are dropped; backslash and double quote are escaped; the result is always
    quoted so spaces and empty values survive.
    """
    cleaned = value.translate(_CONTROL)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _word(value: str) -> str:
    # A command word or variable name sent unquoted: it must not split or end the line.
    if not value or any(c.isspace() or ord(c) < 32 or c == '"' for c in value):
        raise ValueError(f"not a valid AGI word: {value!r}")
    return value


# --------------------------------------------------------------------------- asyncio edge


class AgiSession:
    """One FastAGI connection: the environment, then commands and their replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        environment: AgiEnvironment,
        deadline: float,
        started: float | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.env = environment
        #: ``time.monotonic()`` value at which the server closes this session.
        self.deadline = deadline
        #: ``time.monotonic()`` value when the connection was accepted.
        self.started = time.monotonic() if started is None else started
        #: Asterisk said ``HANGUP`` (or answered 511): the caller is gone.
        self.hung_up = False
        self.commands_sent = 0

    def remaining(self) -> float:
        """Seconds left before the hard deadline."""
        return max(0.0, self.deadline - time.monotonic())

    async def _readline(self) -> str:
        try:
            raw = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            raise AgiClosed("connection closed by Asterisk") from exc
        except asyncio.LimitOverrunError as exc:
            raise AgiProtocolError(f"line longer than {MAX_LINE} bytes") from exc
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def command(self, line: str) -> AgiReply:
        """Send one command line and return its final reply.

        Skips unsolicited ``HANGUP`` lines (noting :attr:`hung_up`), intermediate
        ``100 Trying…`` lines (GOSUB), and gathers a ``520-`` usage block into
        :attr:`AgiReply.usage`.
        """
        if "\n" in line or "\r" in line:
            raise ValueError("an AGI command is one line")
        self._writer.write(line.encode("utf-8") + b"\n")
        await self._writer.drain()
        self.commands_sent += 1
        usage: list[str] = []
        while True:
            text = await self._readline()
            if text == "HANGUP":
                self.hung_up = True
                continue
            if text.startswith("520-"):
                # "520-Invalid command syntax.  Proper usage follows:" then free-form
                # usage lines until "520 End of proper usage."
                usage.append(text[4:])
                while True:
                    more = await self._readline()
                    if more.startswith("520 "):
                        return AgiReply(code=520, extra=more[4:], usage=tuple(usage), raw=more)
                    usage.append(more)
            reply = parse_reply(text)
            if reply.code == 100:
                continue
            if reply.dead_channel:
                self.hung_up = True
            return reply

    async def get_variable(self, name: str) -> str | None:
        """``GET VARIABLE``: the value, or ``None`` when unset."""
        reply = await self.command(f"GET VARIABLE {_word(name)}")
        return reply.data if reply.ok and reply.result == "1" else None

    async def get_full_variable(self, expression: str) -> str | None:
        reply = await self.command(f"GET FULL VARIABLE {quote(expression)}")
        return reply.data if reply.ok and reply.result == "1" else None

    async def set_variable(self, name: str, value: str) -> bool:
        """``SET VARIABLE name "value"`` (allowed on a dead channel too)."""
        reply = await self.command(f"SET VARIABLE {_word(name)} {quote(value)}")
        return reply.ok

    async def verbose(self, message: str, level: int = 1) -> bool:
        reply = await self.command(f"VERBOSE {quote(message)} {int(level)}")
        return reply.ok

    async def close(self) -> None:
        if self._writer.is_closing():
            return
        self._writer.close()
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)


AgiHandler = Callable[[AgiSession], Awaitable[None]]


@dataclass(slots=True)
class AgiStats:
    """Counters for health/metrics pages."""

    sessions: int = 0
    active: int = 0
    completed: int = 0
    failed: int = 0
    deadline_exceeded: int = 0
    unknown_script: int = 0
    protocol_errors: int = 0
    by_script: dict[str, int] = field(default_factory=dict)


class AgiServer:
    """Serves FastAGI on ``host:port``, dispatching on the script name.

    ``handlers`` maps script names (``route``) to coroutines taking the session. A
    session that outlives ``session_deadline`` seconds (from accept) is closed; a
    handler that raises is logged and the socket closed — the dialplan then sees
    ``AGISTATUS=SUCCESS`` with its variables unset and takes its fallback.
    """

    def __init__(
        self,
        handlers: Mapping[str, AgiHandler],
        *,
        host: str = "127.0.0.1",
        port: int = 4573,
        session_deadline: float = 2.0,
        max_sessions: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if session_deadline <= 0:
            raise ValueError("session_deadline must be positive")
        self._handlers = dict(handlers)
        self._host = host
        self._port = port
        self._session_deadline = session_deadline
        self._slots = asyncio.Semaphore(max_sessions)
        self._max_sessions = max_sessions
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats = AgiStats()

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def host(self) -> str:
        return self._host

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self._host, self._port, limit=MAX_LINE
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> AgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            # Only close() cancels these tasks. Python 3.11's start_server callback calls
            # task.exception() on the finished task, which logs a cancelled one as an error.
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        started = self._clock()
        self.stats.sessions += 1
        self.stats.active += 1
        session: AgiSession | None = None
        try:
            if self._slots.locked():
                # Over capacity: close at once so the dialplan falls back now rather than
                # queueing behind calls that are already being answered.
                log.warning("FastAGI: %d sessions active, refusing one", self._max_sessions)
                self.stats.failed += 1
                return
            async with self._slots, asyncio.timeout(self._session_deadline):
                env = await self._read_environment(reader)
                session = AgiSession(reader, writer, env, started + self._session_deadline, started)
                handler = self._handlers.get(env.script)
                self.stats.by_script[env.script] = self.stats.by_script.get(env.script, 0) + 1
                if handler is None:
                    self.stats.unknown_script += 1
                    log.warning("FastAGI: unknown script %r (%s)", env.script, env.get("channel"))
                    await session.verbose(f"callbridge: unknown FastAGI script {env.script!r}")
                    return
                await handler(session)
                self.stats.completed += 1
        except TimeoutError:
            self.stats.deadline_exceeded += 1
            log.warning("FastAGI: session exceeded %.3fs, closing", self._session_deadline)
        except AgiProtocolError as exc:
            self.stats.protocol_errors += 1
            log.warning("FastAGI: protocol error: %s", exc)
        except AgiClosed:
            # Asterisk went away (hangup with AGIEXITONHANGUP, or the env block was cut).
            self.stats.completed += 1
        except (ConnectionError, OSError) as exc:
            self.stats.failed += 1
            log.info("FastAGI: connection error: %s", exc)
        except Exception:
            self.stats.failed += 1
            log.exception("FastAGI: handler for %r failed", session.env.script if session else "?")
        finally:
            self.stats.active -= 1
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _read_environment(self, reader: asyncio.StreamReader) -> AgiEnvironment:
        lines: list[str] = []
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                raise AgiClosed("connection closed inside the environment block") from exc
            except asyncio.LimitOverrunError as exc:
                raise AgiProtocolError(f"environment line longer than {MAX_LINE}") from exc
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not text:
                return parse_environment(lines)
            lines.append(text)
            if len(lines) > MAX_ENV_LINES:
                raise AgiProtocolError(f"environment block longer than {MAX_ENV_LINES} lines")
