"""Event intake: the one endpoint the portal posts events to, and the registry that hands
each event to the module that registered for it.

Order of work for one POST (each step can end it with a clear answer, and nothing is
done before the token check passed):

1. body read with a size cap, decoded (form with PHP keys, or JSON) → 4xx if hostile;
2. ``auth[application_token]`` compared in constant time with the stored token of the
   installation and with the configured outgoing-webhook token → 401 and a log line;
3. a repeat of an event already taken (same dedupe key, stored durably) → 200, ignored;
4. the event is queued for the registered handler (bounded queue, worker tasks) and the
   portal gets 200 at once — Bitrix24 throttles slow handlers and never retries (§5.1).

``ONAPPINSTALL`` is not an ordinary event: it carries the token the others are checked
against, so it goes to the install hook (see :mod:`callbridge.web.install`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from callbridge.actions.event import BitrixEvent
from callbridge.store.app_state import AppState
from callbridge.web.forms import BodyError, BodyLimits, decode_body

__all__ = [
    "BitrixEvent",
    "EventDispatcher",
    "EventHandler",
    "EventIntake",
    "EventRegistry",
    "dedupe_key",
    "read_body",
    "to_event",
]

log = logging.getLogger(__name__)


EventHandler = Callable[[BitrixEvent], Awaitable[None]]


class EventRegistry:
    """Event name → handlers. Modules register at startup; unknown events are accepted
    and dropped with a debug line (a portal may send more than we bound)."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[EventHandler]] = {}

    def register(self, event: str, handler: EventHandler) -> None:
        self._handlers.setdefault(event.upper(), []).append(handler)

    def handlers(self, event: str) -> Sequence[EventHandler]:
        return tuple(self._handlers.get(event.upper(), ()))

    def events(self) -> list[str]:
        return sorted(self._handlers)


_EVENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}")


def to_event(body: Mapping[str, Any]) -> BitrixEvent:
    """The decoded body as an event, or :class:`BodyError` when it is not one."""
    name = body.get("event")
    if not isinstance(name, str) or not name.strip():
        raise BodyError(400, "no 'event' field")
    if not _EVENT_NAME.fullmatch(name.strip()):
        raise BodyError(400, "'event' is not an event name")
    data = body.get("data", {})
    auth = body.get("auth", {})
    ts = body.get("ts", "")
    handler_id = body.get("event_handler_id", "")
    return BitrixEvent(
        name=name.strip().upper(),
        data=data if isinstance(data, dict) else {},
        auth=auth if isinstance(auth, dict) else {},
        ts=ts if isinstance(ts, str) else "",
        handler_id=handler_id if isinstance(handler_id, str) else "",
    )


# Events whose own id already says "this one happening": a second delivery with the same
# id is a repeat whatever its ``ts`` (asterlink de-duplicates clicks by CALL_ID, §5.2).
_ID_KEYS: dict[str, str] = {"ONEXTERNALCALLSTART": "CALL_ID"}


def dedupe_key(event: BitrixEvent) -> str:
    """Key under which an event counts as taken: the event name with its call id where
    it has one, else a digest of its data and ``ts`` (so two genuine updates of one CRM
    record at different times both pass, and a replay of either does not)."""
    id_key = _ID_KEYS.get(event.name)
    if id_key and event.text(id_key):
        return f"{event.name}:{event.text(id_key)}"
    digest = hashlib.sha256(
        json.dumps([event.data, event.ts], sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()[:32]
    return f"{event.name}:{digest}"


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing early (413) once it exceeds ``max_bytes``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyError(400, "bad Content-Length")
        if int(declared) > max_bytes:
            raise BodyError(413, f"body larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BodyError(413, f"body larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class EventDispatcher:
    """Runs handlers off the request path: a bounded queue and a few worker tasks.

    A failing handler is logged and contained to its one event. ``idle()`` lets callers
    (tests, shutdown) wait until everything queued has run.
    """

    registry: EventRegistry
    workers: int = 4
    max_queued: int = 1000
    _queue: asyncio.Queue[BitrixEvent] = field(init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    handled: int = field(default=0, init=False)
    failed: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(self.max_queued)

    def start(self) -> None:
        for n in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"event-worker-{n}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def submit(self, event: BitrixEvent) -> bool:
        """Queue ``event``; ``False`` when the queue is full (the caller answers 503)."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def idle(self) -> None:
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                for handler in self.registry.handlers(event.name):
                    try:
                        await handler(event)
                    except Exception:
                        self.failed += 1
                        log.exception("handler for %s failed", event.name)
                self.handled += 1
            finally:
                self._queue.task_done()


InstallHook = Callable[[BitrixEvent], Awaitable[Response]]


_NO_TOKEN_YET = "no application token stored yet (install the application first)"


@dataclass
class EventIntake:
    """The ``POST`` endpoint for portal events.

    ``accepted_tokens`` answers the tokens an event may carry now (the stored
    ``application_token`` of the installation, the configured outgoing-webhook token);
    ``expected_member`` the stored ``member_id`` (``None``: not known, not checked).
    """

    dispatcher: EventDispatcher
    state: AppState
    accepted_tokens: Callable[[], Sequence[str]]
    expected_member: Callable[[], str | None]
    clock: Callable[[], float]
    install_hook: InstallHook | None = None
    #: Verifies an event and stores its application token when none is stored yet.
    adopt_token: Callable[[BitrixEvent], Awaitable[bool]] | None = None
    limits: BodyLimits = field(default_factory=BodyLimits)
    refused: int = field(default=0, init=False)
    repeats: int = field(default=0, init=False)

    async def endpoint(self, request: Request) -> Response:
        client = request.client.host if request.client else "?"
        try:
            body = await read_body(request, self.limits.max_bytes)
            event = to_event(
                decode_body(request.headers.get("content-type", ""), body, self.limits)
            )
        except BodyError as exc:
            log.warning("event from %s refused (%d): %s", client, exc.status, exc.reason)
            return JSONResponse({"error": exc.reason}, status_code=exc.status)

        if event.name == "ONAPPINSTALL" and self.install_hook is not None:
            return await self.install_hook(event)

        problem = self._auth_problem(event)
        # An install that gave no application token (interactive, code exchange): the
        # first genuine event may supply it (checked against the portal).
        if (
            problem == _NO_TOKEN_YET
            and self.adopt_token is not None
            and await self.adopt_token(event)
        ):
            problem = self._auth_problem(event)
        if problem:
            self.refused += 1
            log.warning("event %s from %s refused (401): %s", event.name, client, problem)
            return JSONResponse({"error": "unauthorized"}, status_code=401)

        key = dedupe_key(event)
        if not self.state.first_time(key, event.name, self.clock()):
            self.repeats += 1
            log.info("event %s ignored: already taken (%s)", event.name, key)
            return JSONResponse({"result": "repeat"})
        if not self.dispatcher.submit(event):
            # Not remembered as taken: the work was not done, a resend must not be a repeat.
            self.state.forget(key)
            log.error("event %s dropped: handler queue full", event.name)
            return JSONResponse({"error": "busy"}, status_code=503)
        return JSONResponse({"result": "accepted"})

    def _auth_problem(self, event: BitrixEvent) -> str:
        given = event.auth.get("application_token", "")
        if not isinstance(given, str) or not given:
            return "no auth[application_token]"
        tokens = [t for t in self.accepted_tokens() if t]
        if not tokens:
            return _NO_TOKEN_YET
        # Compare with every accepted token, always, so timing says nothing about which.
        matched = False
        for token in tokens:
            matched |= hmac.compare_digest(given.encode(), token.encode())
        if not matched:
            return "auth[application_token] does not match"
        member = self.expected_member()
        given_member = event.auth.get("member_id", "")
        if member and isinstance(given_member, str) and given_member and given_member != member:
            return f"member_id {given_member[:40]!r} is not the installed portal"
        return ""
