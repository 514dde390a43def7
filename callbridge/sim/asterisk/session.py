"""One AMI client connection to the simulator: reads actions, writes answers and events.

Every byte written goes through one ordered queue and one writer task, so an
action's answer (and its list items) is never interleaved with events — as with
Asterisk, which writes events only between actions. The writer is also where the
connection faults act: ``drop_after`` (cut after N more messages, counted when they
are queued), ``stall`` (stop writing for a while, like a synchronous action) and
``split_writes`` (every message in small random pieces, to cut inside CRLF and UTF-8).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import random
from collections import deque
from typing import TYPE_CHECKING

from callbridge.pbx.ami.framing import AmiMessage

from . import actions as act

if TYPE_CHECKING:
    from .server import AsteriskSimulator

__all__ = ["Session"]

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
_CUT = object()
_CLOSE = object()
_ids = itertools.count(1)


class Session:
    """State and tasks of one connection (see the module docstring)."""

    def __init__(
        self,
        sim: AsteriskSimulator,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.id = next(_ids)
        self.sim = sim
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.authenticated = False
        self.events_on = True
        self.closed = False
        self.written = 0
        self.drop_after: int | None = None
        self.stall_until: float | None = None
        self._queue: deque[bytes | object] = deque()
        self._wake = asyncio.Event()
        self._challenge: str | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._rng = random.Random(sim.seed * 7919 + self.id)

    # -- queueing -------------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def reading_events(self) -> bool:
        return self.authenticated and self.events_on and not self.closed

    def send(self, msg: AmiMessage | bytes) -> None:
        """Queue one message (an event or an answer) for writing, in order."""
        if self.closed or (self._queue and self._queue[-1] is _CUT):
            return
        self._queue.append(msg.to_bytes() if isinstance(msg, AmiMessage) else msg)
        if self.drop_after is not None:
            self.drop_after -= 1
            if self.drop_after <= 0:
                self._queue.append(_CUT)
        self._wake.set()

    def close_after_flush(self) -> None:
        self._queue.append(_CLOSE)
        self._wake.set()

    def cut(self) -> None:
        """Drop the connection now, as a network failure would (buffered data is lost)."""
        if self.closed:
            return
        self.closed = True
        self.writer.transport.abort()
        self._wake.set()
        if self._writer_task is not None and self._writer_task is not asyncio.current_task():
            # It may be asleep in a stall on the simulator's clock.
            self._writer_task.cancel()
        self.sim.session_closed(self)

    def stall(self, seconds: float) -> None:
        self.stall_until = self.sim.clock.monotonic() + seconds
        self._wake.set()

    # -- tasks ----------------------------------------------------------------------

    async def run(self) -> None:
        writer_task = self._writer_task = asyncio.create_task(self._write_loop())
        try:
            self.send(BANNER)
            await self._read_loop()
        finally:
            if not self.closed:
                self.close_after_flush()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await writer_task

    def _finish(self) -> None:
        if not self.closed:
            self.closed = True
            self.writer.close()
            self._wake.set()
            self.sim.session_closed(self)

    async def _read_loop(self) -> None:
        framer = act.ActionReader()
        while not self.closed:
            try:
                data = await self.reader.read(65536)
            except ConnectionError:
                return
            if not data:
                return
            for item in framer.feed(data):
                if isinstance(item, act.BadAction):
                    self.send(act.error(None, item.message))
                    continue
                if not await self._handle(item):
                    return

    async def _write_loop(self) -> None:
        queue = self._queue
        clock = self.sim.clock
        try:
            while not self.closed:
                if not queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self.stall_until is not None:
                    left = self.stall_until - clock.monotonic()
                    if left > 0:
                        self.sim.notify()
                        await clock.sleep_until(self.stall_until)
                        continue
                    self.stall_until = None
                head = queue[0]
                if head is _CUT:
                    self.cut()
                    return
                if head is _CLOSE:
                    queue.clear()
                    await self.writer.drain()
                    self._finish()
                    return
                if self.sim.split_writes:
                    queue.popleft()
                    assert isinstance(head, bytes)
                    await self._write_split(head)
                    self.written += 1
                else:
                    chunk: list[bytes] = []
                    while queue and isinstance(queue[0], bytes) and len(chunk) < 256:
                        item = queue.popleft()
                        assert isinstance(item, bytes)
                        chunk.append(item)
                    self.writer.write(b"".join(chunk))
                    self.written += len(chunk)
                await self.writer.drain()
                self.sim.notify()
        except (ConnectionError, OSError):
            if not self.closed:
                self.closed = True
                self.sim.session_closed(self)

    async def _write_split(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            step = self._rng.randint(1, 7)
            self.writer.write(data[pos : pos + step])
            pos += step
            await self.writer.drain()
            # Give the loop a turn so the pieces leave as separate segments.
            await asyncio.sleep(0)

    # -- actions --------------------------------------------------------------------

    async def _handle(self, msg: AmiMessage) -> bool:
        """Answer one action; ``False`` when the connection is to end."""
        self.sim.record_action(msg)
        name = msg.get("Action")
        aid = msg.get("ActionID")
        if not name:
            self.send(act.error(aid, "Missing action in request"))
            return True
        low = name.lower()
        if not self.authenticated and low not in ("login", "logoff", "challenge"):
            self.send(act.error(aid, "Permission denied"))
            return True
        if low == "login":
            return await self._login(msg, aid)
        if low == "logoff":
            self.send(act.goodbye(aid))
            self.close_after_flush()
            return False
        if low == "challenge":
            return self._challenge_action(msg, aid)
        if low == "ping":
            # Asterisk's clock, which dated the events already sent: the timeline's.
            ts = f"{self.sim.pbx_time():.6f}"
            self.send(act.success(aid, ("Ping", "Pong"), ("Timestamp", ts)))
        elif low == "events":
            self.events_on = _events_on(msg.get("EventMask"))
            self.send(act.success(aid, ("Events", "On" if self.events_on else "Off")))
            self.sim.notify()
        elif low == "coreshowchannels":
            self._core_show_channels(aid)
        elif low == "userevent":
            self._user_event(msg, aid)
        elif low == "listcommands":
            self.send(act.list_commands(aid))
        elif low == "originate":
            for answer in self.sim.originate(msg, self):
                self.send(answer)
        else:
            self.send(act.unknown(aid, name))
        return True

    async def _login(self, msg: AmiMessage, aid: str | None) -> bool:
        if self.authenticated:
            self.send(act.success(aid, ("Message", "Already authenticated")))
            return True
        if self._credentials_ok(msg):
            self.authenticated = True
            self.events_on = _events_on(msg.get("Events"))
            self.send(act.success(aid, ("Message", "Authentication accepted")))
            if self.events_on:
                self.send(
                    AmiMessage(
                        [
                            ("Event", "FullyBooted"),
                            ("Privilege", "system,all"),
                            ("Uptime", str(self.sim.uptime())),
                            ("LastReload", str(self.sim.uptime())),
                            ("Status", "Fully Booted"),
                        ]
                    )
                )
            self.sim.session_logged_in(self)
            return True
        # Asterisk sleeps before refusing (it slows password guessing), then hangs up.
        await self.sim.clock.sleep(self.sim.auth_fail_delay)
        self.send(act.error(aid, "Authentication failed"))
        self.close_after_flush()
        return False

    def _credentials_ok(self, msg: AmiMessage) -> bool:
        if msg.get("Username") != self.sim.username:
            return False
        auth_type = (msg.get("AuthType") or "").lower()
        if auth_type == "md5":
            if self._challenge is None:
                return False
            digest = hashlib.md5((self._challenge + self.sim.secret).encode()).hexdigest()
            return (msg.get("Key") or "").lower() == digest
        return msg.get("Secret") == self.sim.secret

    def _challenge_action(self, msg: AmiMessage, aid: str | None) -> bool:
        if (msg.get("AuthType") or "").lower() != "md5":
            self.send(act.error(aid, "Must specify AuthType"))
            return True
        self._challenge = str(self._rng.randrange(10**8, 10**9))
        self.send(act.success(aid, ("Challenge", self._challenge)))
        return True

    def _core_show_channels(self, aid: str | None) -> None:
        items = self.sim.channel_items(aid)
        self.send(act.success(aid, ("EventList", "start"), ("Message", "Channels will follow")))
        for item in items:
            self.send(item)
        tail: list[tuple[str, str]] = [("Event", "CoreShowChannelsComplete")]
        if aid is not None:
            tail.append(("ActionID", aid))
        tail += [("EventList", "Complete"), ("ListItems", str(len(items)))]
        self.send(AmiMessage(tail))

    def _user_event(self, msg: AmiMessage, aid: str | None) -> None:
        name = msg.get("UserEvent")
        if not name:
            self.send(act.error(aid, "Missing UserEvent"))
            return
        self.send(act.success(aid, ("Message", "Event Sent")))
        pairs = [
            ("Event", "UserEvent"),
            ("Privilege", "user,all"),
            ("Timestamp", f"{self.sim.clock.time():.6f}"),
            ("UserEvent", name),
        ]
        skip = {"action", "actionid", "userevent"}
        pairs += [(k, v) for k, v in msg.items() if k.lower() not in skip]
        self.sim.broadcast_live(AmiMessage(pairs))


def _events_on(value: str | None) -> bool:
    # Absent = the user's read classes (all, in the simulator); "off"/"no" = none.
    return value is None or value.strip().lower() not in ("off", "no", "0")
