"""asyncio AMI client: one TCP session to Asterisk, its actions, its events, its reconnects.

One reader task per connection frames bytes (:class:`AmiFramer`) and routes each message:
the answer to a pending action resolves that action's future, the items of a pending list
action are collected until ``EventList: Complete``, everything else goes into an
unbounded queue. Reading therefore never waits on whoever consumes the events (a reader
that stalls makes Asterisk cut the session, reference §1.6). Consumers iterate
:meth:`AmiClient.events`, which yields messages and the connection markers
:class:`Connected` / :class:`Disconnected` in stream order, so the consumer knows where
a gap is and can resync (:meth:`AmiClient.snapshot`).

Two ways to run it:

* :meth:`AmiClient.connect` — one attempt, errors raised (``callbridge ami events``,
  ``callbridge check``). A lost connection is reported, not retried.
* :meth:`AmiClient.start` — the long-running client: connects, and after any loss or
  refusal tries again after :func:`backoff_delay` (exponential, capped, jittered).

Every timeout and interval is a constructor parameter; wall-clock time is read only
through ``clock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from callbridge.pbx.ami.framing import BANNER_PREFIX, AmiFramer, AmiMessage, encode_action

__all__ = [
    "AmiActionError",
    "AmiClient",
    "AmiConnectionError",
    "AmiError",
    "AmiLoginError",
    "AmiTimeout",
    "Connected",
    "Disconnected",
    "SnapshotTaken",
    "StreamItem",
    "backoff_delay",
]

log = logging.getLogger(__name__)

Headers = Mapping[str, str | int | Iterable[str]]


class AmiError(Exception):
    """Base of every error this client raises."""


class AmiConnectionError(AmiError):
    """No session: connection refused, lost, or the peer is not an AMI server."""


class AmiLoginError(AmiError):
    """Asterisk refused the Login (wrong user or secret, login already in use)."""


class AmiTimeout(AmiError):
    """An action got no answer within its timeout."""


class AmiActionError(AmiError):
    """An action was answered ``Response: Error``; :attr:`response` is that answer."""

    def __init__(self, message: str, response: AmiMessage) -> None:
        super().__init__(message)
        self.response = response


@dataclass(frozen=True)
class Connected:
    """A session is up (logged in). ``first`` is False after a reconnect: resync."""

    first: bool
    at: float


@dataclass(frozen=True)
class Disconnected:
    """The session ended; events from now until the next :class:`Connected` are lost."""

    reason: str


@dataclass(frozen=True)
class SnapshotTaken:
    """Where in the stream a ``CoreShowChannels`` snapshot was complete (stream order).

    Events before this marker happened before the snapshot, events after it may be
    newer than it: a consumer resyncs exactly here. ``items`` are the list items.
    """

    items: list[AmiMessage]


StreamItem = AmiMessage | Connected | Disconnected | SnapshotTaken

#: Events Asterisk sends without ``Timestamp`` even with ``timestampevents = yes``.
_UNSTAMPED_BY_DESIGN = frozenset({"FullyBooted"})


def backoff_delay(
    attempt: int, *, minimum: float, maximum: float, rand: Callable[[], float]
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0-based).

    Exponential from ``minimum``, capped at ``maximum``, with "equal jitter": half the
    step is fixed and half random (``rand()`` in [0, 1)), so many clients restarted at
    once spread out, and no attempt ever follows the previous one without a pause.
    """
    step = min(maximum, minimum * (2.0 ** min(attempt, 62)))
    return step / 2.0 + step / 2.0 * rand()


@dataclass
class _Pending:
    action: str
    future: asyncio.Future[tuple[AmiMessage, list[AmiMessage]]]
    is_list: bool
    response: AmiMessage | None = None
    #: Put a :class:`SnapshotTaken` marker into the event stream when the list completes.
    mark: bool = False
    items: list[AmiMessage] = field(default_factory=list)


class _Session:
    """One live TCP session: its streams, its pending actions and its close reason."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: dict[str, _Pending] = {}
        self.reason: str | None = None
        self.closed = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []

    def drop(self, reason: str) -> None:
        """Cut the connection; the reader sees EOF and reports ``reason``."""
        if self.reason is None:
            self.reason = reason
        self.writer.transport.abort()


_END = object()


class AmiClient:
    """An AMI session manager; see the module docstring."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        events: str = "on",
        connect_timeout: float = 5.0,
        action_timeout: float = 10.0,
        ping_interval: float | None = 15.0,
        ping_timeout: float = 5.0,
        reconnect_min: float = 0.5,
        reconnect_max: float = 30.0,
        stamp_missing_timestamps: bool = True,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self._secret = secret
        self.events_mask = events
        self.connect_timeout = connect_timeout
        self.action_timeout = action_timeout
        #: ``None`` turns the keep-alive off.
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        #: Stamp async events that lack ``Timestamp`` with their arrival time (``clock``).
        self.stamp_missing_timestamps = stamp_missing_timestamps
        self._clock = clock
        self._rand = rand
        self._queue: asyncio.Queue[StreamItem | object] = asyncio.Queue()
        self._session: _Session | None = None
        self._ids = itertools.count(1)
        self._id_prefix = f"cb-{os.getpid():x}-{random.getrandbits(24):06x}"
        self._sessions_made = 0
        self._stamped_logged: set[str] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._up = asyncio.Event()
        #: The ``Asterisk Call Manager/x.y.z`` line of the current/last session.
        self.banner: str | None = None
        #: Why the last connection attempt failed (long-running mode), for status pages.
        self.last_error: str | None = None

    # -- connection ------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.reason is None

    async def connect(self) -> None:
        """One attempt: TCP, banner, Login. Raises :class:`AmiLoginError` or
        :class:`AmiConnectionError`; on success the reader (and keep-alive) run."""
        where = f"{self.host}:{self.port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
            )
        except TimeoutError:
            raise AmiConnectionError(
                f"AMI {where}: no connection within {self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            raise AmiConnectionError(
                f"AMI {where}: cannot connect: {exc.strerror or exc}"
            ) from None
        try:
            framer, early = await asyncio.wait_for(
                self._handshake(reader, writer), self.connect_timeout
            )
        except TimeoutError:
            writer.transport.abort()
            raise AmiConnectionError(
                f"AMI {where}: no banner/Login answer within {self.connect_timeout:g} s"
            ) from None
        except BaseException:
            writer.transport.abort()
            raise
        session = _Session(reader, writer)
        self._session = session
        first = self._sessions_made == 0
        self._sessions_made += 1
        self.last_error = None
        self._queue.put_nowait(Connected(first=first, at=self._clock()))
        for message in early:
            self._route(session, message)
        session.tasks.append(asyncio.create_task(self._read_loop(session, framer)))
        if self.ping_interval is not None:
            session.tasks.append(asyncio.create_task(self._keepalive(session)))
        self._up.set()

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[AmiFramer, list[AmiMessage]]:
        where = f"{self.host}:{self.port}"
        line = await reader.readline()
        banner = line.rstrip(b"\r\n").decode("utf-8", "replace")
        if not banner.startswith(BANNER_PREFIX):
            what = repr(banner[:80]) if line else "the connection closed"
            raise AmiConnectionError(f"AMI {where}: not an AMI server (first line: {what})")
        self.banner = banner
        login_id = self._next_id()
        writer.write(
            encode_action(
                "Login",
                {
                    "ActionID": login_id,
                    "Username": self.username,
                    "Secret": self._secret,
                    "Events": self.events_mask,
                },
            )
        )
        framer = AmiFramer(expect_banner=False)
        answered = False
        early: list[AmiMessage] = []
        while not answered:
            data = await reader.read(65536)
            if not data:
                raise AmiConnectionError(f"AMI {where}: connection closed before Login answer")
            for message in framer.feed(data):
                if answered:
                    # Whatever came in the same read after the answer is not lost.
                    early.append(message)
                elif message.response is not None and message.action_id == login_id:
                    if message.response != "Success":
                        why = message.get("Message") or message.response
                        raise AmiLoginError(
                            f"AMI {where}: login refused for user {self.username!r}: {why}"
                        )
                    answered = True
                else:
                    log.debug("AMI %s: before the Login answer, ignored: %r", where, message)
        return framer, early

    async def start(self) -> None:
        """Run the long-running client: connect now and reconnect after any loss."""
        if self._supervisor is None:
            self._closing = False
            self._supervisor = asyncio.create_task(self._supervise())

    async def wait_connected(self) -> None:
        """Wait until a session is up (long-running mode)."""
        await self._up.wait()

    async def _supervise(self) -> None:
        attempt = 0
        while not self._closing:
            try:
                await self.connect()
            except AmiError as exc:
                self.last_error = str(exc)
                level = logging.ERROR if isinstance(exc, AmiLoginError) else logging.WARNING
                log.log(level, "%s", exc)
            else:
                attempt = 0
                session = self._session
                assert session is not None
                await session.closed.wait()
                if self._stopping():
                    return
            delay = backoff_delay(
                attempt, minimum=self.reconnect_min, maximum=self.reconnect_max, rand=self._rand
            )
            attempt += 1
            log.info("AMI %s:%s: reconnecting in %.2f s", self.host, self.port, delay)
            await asyncio.sleep(delay)

    def _stopping(self) -> bool:
        # A method, not the attribute: close() flips it while the supervisor awaits.
        return self._closing

    async def close(self) -> None:
        """Log off (best effort), stop reconnecting, end :meth:`events`."""
        self._closing = True
        session = self._session
        if session is not None and session.reason is None:
            session.reason = "closed by callbridge"
            with contextlib.suppress(AmiError):
                await self.action("Logoff", within=min(self.action_timeout, 2.0))
            session.drop(session.reason)
        if session is not None:
            await session.closed.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self._queue.put_nowait(_END)

    # -- reading ---------------------------------------------------------------------

    async def _read_loop(self, session: _Session, framer: AmiFramer) -> None:
        reason = "connection closed by Asterisk"
        try:
            while True:
                data = await session.reader.read(65536)
                if not data:
                    break
                for message in framer.feed(data):
                    self._route(session, message)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost: {exc}"
        finally:
            if framer.pending:
                log.warning(
                    "AMI %s:%s: session ended inside a message; %d bytes dropped",
                    self.host,
                    self.port,
                    framer.pending,
                )
            self._end_session(session, session.reason or reason)

    def _end_session(self, session: _Session, reason: str) -> None:
        if session.closed.is_set():
            return
        session.reason = reason
        self.last_error = reason
        for task in session.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        session.writer.transport.abort()
        error = AmiConnectionError(f"AMI {self.host}:{self.port}: {reason}")
        for pending in session.pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
        session.pending.clear()
        if self._session is session:
            self._up.clear()
        self._queue.put_nowait(Disconnected(reason))
        session.closed.set()

    def _route(self, session: _Session, message: AmiMessage) -> None:
        action_id = message.action_id
        pending = session.pending.get(action_id) if action_id is not None else None
        if pending is not None:
            if message.response is not None:
                if not pending.is_list or message.response != "Success":
                    # A plain answer, or an Error instead of a list (reference §1.4).
                    del session.pending[action_id]  # type: ignore[arg-type]
                    if not pending.future.done():
                        pending.future.set_result((message, []))
                else:
                    pending.response = message
                return
            if pending.is_list and message.event is not None:
                if (message.get("EventList") or "").lower() == "complete":
                    del session.pending[action_id]  # type: ignore[arg-type]
                    items = pending.items
                    response = pending.response or message
                    if pending.mark:
                        self._queue.put_nowait(SnapshotTaken(items))
                    if not pending.future.done():
                        pending.future.set_result((response, items))
                else:
                    pending.items.append(message)
                return
        if message.event is not None and action_id is None and "Timestamp" not in message:
            message = self._stamp(message)
        self._queue.put_nowait(message)

    def _stamp(self, message: AmiMessage) -> AmiMessage:
        if not self.stamp_missing_timestamps:
            return message
        name = message.event or "?"
        if name not in self._stamped_logged and name not in _UNSTAMPED_BY_DESIGN:
            self._stamped_logged.add(name)
            log.warning(
                "AMI event %s arrived without Timestamp; stamping it with its arrival time "
                "(set timestampevents = yes in manager.conf [general]); logged once per event",
                name,
            )
        pairs = message.items()
        # Where Asterisk puts it: after Event and Privilege.
        at = 1 + sum(1 for key, _ in pairs[1:2] if key == "Privilege")
        pairs.insert(at, ("Timestamp", f"{self._clock():.6f}"))
        return AmiMessage(pairs)

    async def events(self) -> AsyncGenerator[StreamItem, None]:
        """Every event and connection marker, in order, until :meth:`close`."""
        while True:
            item = await self._queue.get()
            if item is _END:
                return
            assert isinstance(item, AmiMessage | Connected | Disconnected | SnapshotTaken)
            yield item

    # -- actions ---------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def _send(
        self,
        name: str,
        headers: Headers | None,
        within: float | None,
        is_list: bool,
        mark: bool = False,
    ) -> tuple[AmiMessage, list[AmiMessage]]:
        session = self._session
        if session is None or session.closed.is_set():
            raise AmiConnectionError(f"AMI {self.host}:{self.port}: not connected ({name})")
        action_id = self._next_id()
        data = encode_action(name, {**(headers or {}), "ActionID": action_id})
        loop = asyncio.get_running_loop()
        pending = _Pending(name, loop.create_future(), is_list, mark=mark)
        session.pending[action_id] = pending
        wait = self.action_timeout if within is None else within
        try:
            session.writer.write(data)
            return await asyncio.wait_for(pending.future, wait)
        except TimeoutError:
            raise AmiTimeout(
                f"AMI {self.host}:{self.port}: no answer to {name} (ActionID {action_id}) "
                f"within {wait:g} s"
            ) from None
        finally:
            session.pending.pop(action_id, None)

    async def action(
        self, name: str, headers: Headers | None = None, *, within: float | None = None
    ) -> AmiMessage:
        """Send one action; its response (``Success`` or ``Error``), as answered."""
        response, _ = await self._send(name, headers, within, is_list=False)
        return response

    async def action_list(
        self, name: str, headers: Headers | None = None, *, within: float | None = None
    ) -> tuple[AmiMessage, list[AmiMessage]]:
        """A list action: (response, items). An ``Error`` answer gives (that answer, [])."""
        return await self._send(name, headers, within, is_list=True)

    async def ping(self, *, within: float | None = None) -> AmiMessage:
        return await self.action("Ping", within=self.ping_timeout if within is None else within)

    async def originate(self, headers: Headers, *, within: float | None = None) -> AmiMessage:
        """Originate with ``Async: true``: a synchronous Originate blocks the whole AMI
        session (reference §1.6). The outcome arrives as an ``OriginateResponse`` event
        carrying the ActionID of the returned response."""
        return await self.action("Originate", {**headers, "Async": "true"}, within=within)

    async def snapshot(
        self, *, within: float | None = None, mark_stream: bool = False
    ) -> tuple[list[AmiMessage], float]:
        """``CoreShowChannels`` items, then Asterisk's clock (Ping's ``Timestamp``) right
        after: the live channels and the PBX time the list is known to be current at.

        With ``mark_stream`` a :class:`SnapshotTaken` marker also goes into
        :meth:`events` at the point the list completed, so a consumer applies the
        snapshot in stream order (events queued before it are older than it).
        """
        response, items = await self._send(
            "CoreShowChannels", None, within, is_list=True, mark=mark_stream
        )
        if response.response != "Success":
            raise AmiActionError(
                f"CoreShowChannels refused: {response.get('Message') or response.response}",
                response,
            )
        pong = await self.action("Ping", within=within)
        stamp = pong.get("Timestamp")
        try:
            at = float(stamp) if stamp is not None else self._clock()
        except ValueError:
            at = self._clock()
        if stamp is None:
            log.warning("AMI Ping answer has no Timestamp; using the local clock for the snapshot")
        return items, at

    # -- keep-alive ------------------------------------------------------------------

    async def _keepalive(self, session: _Session) -> None:
        assert self.ping_interval is not None
        while session.reason is None:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.action("Ping", within=self.ping_timeout)
            except AmiTimeout:
                log.warning(
                    "AMI %s:%s: Ping unanswered within %g s; dropping the connection",
                    self.host,
                    self.port,
                    self.ping_timeout,
                )
                session.drop(f"keep-alive Ping unanswered within {self.ping_timeout:g} s")
                return
            except AmiConnectionError:
                return
