"""Events, both directions (reference §5): ``event.bind/unbind/get`` and outbound delivery.

Bitrix posts events form-encoded with PHP ``http_build_query`` keys (``data[CALL_ID]``,
``auth[application_token]``), once, without retries; each attempt is recorded with the HTTP
status it got. ``build_body`` is pure; :class:`Deliverer` does the posting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from .context import Ctx, Handler
from .errors import RestError, wrong_auth_type
from .oauth import issue_tokens
from .params import Params, php_build_query
from .state import App, Delivery, PendingEvent, PortalState
from .state import Handler as Subscription

KNOWN_EVENTS = frozenset(
    {
        "ONAPPINSTALL",
        "ONAPPUNINSTALL",
        "ONEXTERNALCALLSTART",
        "ONEXTERNALCALLBACKSTART",
        "ONVOXIMPLANTCALLINIT",
        "ONVOXIMPLANTCALLSTART",
        "ONVOXIMPLANTCALLEND",
        "ONUSERADD",
    }
    | {
        f"ONCRM{e}{op}"
        for e in ("LEAD", "CONTACT", "COMPANY", "DEAL")
        for op in ("ADD", "UPDATE", "DELETE")
    }
)


def _app_of(ctx: Ctx) -> App:
    if ctx.auth.app is None:
        raise wrong_auth_type()  # events belong to applications only (§2.1, §5.5)
    return ctx.auth.app


def _event_name(ctx: Ctx, params: Params) -> str:
    name = str(params.get("event") or "").strip().upper()
    if name not in KNOWN_EVENTS:
        raise RestError(400, "ERROR_EVENT_NOT_FOUND", "Event not found")
    return name


def bind(ctx: Ctx, params: Params) -> bool:
    app = _app_of(ctx)
    name = _event_name(ctx, params)
    handler = str(params.get("handler") or "").strip()
    if not handler:
        raise ctx.invalid("Handler is not defined")
    if str(params.get("event_type") or "online").lower() == "offline":
        raise RestError(403, "ACCESS_DENIED", "Access denied! Offline events are not supported")
    auth_type = int(str(params.get("auth_type") or "0") or 0)
    for sub in ctx.state.handlers:
        if sub.app_id == app.app_id and sub.event == name and sub.handler == handler:
            raise ctx.invalid("Handler already binded")
    ctx.state.handlers.append(Subscription(name, handler, app.app_id, auth_type))
    return True


def unbind(ctx: Ctx, params: Params) -> dict[str, int]:
    app = _app_of(ctx)
    name = _event_name(ctx, params)
    handler = str(params.get("handler") or "").strip()
    before = len(ctx.state.handlers)
    ctx.state.handlers[:] = [
        s
        for s in ctx.state.handlers
        if not (
            s.app_id == app.app_id and s.event == name and (not handler or s.handler == handler)
        )
    ]
    return {"count": before - len(ctx.state.handlers)}


def get(ctx: Ctx, params: Params) -> list[dict[str, Any]]:
    app = _app_of(ctx)
    return [
        {"event": s.event, "handler": s.handler, "auth_type": str(s.auth_type), "offline": 0}
        for s in ctx.state.handlers
        if s.app_id == app.app_id
    ]


METHODS: dict[str, Handler] = {"event.bind": bind, "event.unbind": unbind, "event.get": get}


def build_body(
    state: PortalState,
    app: App,
    event: PendingEvent,
    *,
    now: float,
    ttl: float,
    base_url: str,
    domain: str,
    handler_id: int | None,
    with_refresh: bool = False,
) -> str:
    """The form body a portal posts for ``event`` to one of ``app``'s handlers (§5.1)."""
    auth: dict[str, Any] = {}
    if event.user_id is not None:
        tokens = issue_tokens(state, app, event.user_id, now, ttl)
        auth["access_token"] = tokens.access.value
        auth["expires"] = int(tokens.access.expires_at)
        auth["expires_in"] = int(ttl)
        if with_refresh:
            auth["refresh_token"] = tokens.refresh.value
        auth["scope"] = app.scope
    auth.update(
        {
            "domain": domain,
            "server_endpoint": f"{base_url}/rest/",
            "status": "L",
            "client_endpoint": f"{base_url}/rest/",
            "member_id": state.member_id,
            "user_id": event.user_id,
            "application_token": app.application_token,
        }
    )
    body: dict[str, Any] = {"event": event.name}
    if handler_id is not None:
        body["event_handler_id"] = handler_id
    body.update({"data": event.data, "ts": int(now), "auth": auth})
    return php_build_query(body)


class Deliverer:
    """Posts events to their handlers in the background, one attempt each."""

    def __init__(self, state_of: Callable[[], PortalState], timeout: float = 10.0) -> None:
        self._state_of = state_of
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None  # made on first use: TLS setup is slow
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def targets(self, event: PendingEvent) -> list[tuple[App, Subscription]]:
        state = self._state_of()
        result = []
        for sub in state.handlers:
            app = state.apps.get(sub.app_id)
            if app is None or sub.event != event.name:
                continue
            if event.app_id is not None and app.app_id != event.app_id:
                continue
            result.append((app, sub))
        return result

    async def post(
        self, url: str, body: str, event: str, app_id: int | None, now: float
    ) -> int | None:
        """One POST, recorded in ``deliveries``; failures are recorded, never retried."""
        state = self._state_of()
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, verify=False)
        try:
            response = await self._client.post(
                url, content=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
        except httpx.HTTPError as exc:
            state.deliveries.append(
                Delivery(now, event, url, app_id, None, f"{type(exc).__name__}: {exc}")
            )
            return None
        state.deliveries.append(Delivery(now, event, url, app_id, response.status_code))
        return response.status_code

    async def _post_quietly(
        self, url: str, body: str, event: str, app_id: int | None, now: float
    ) -> None:
        await self.post(url, body, event, app_id, now)

    def spawn(self, url: str, body: str, event: str, app_id: int | None, now: float) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._post_quietly(url, body, event, app_id, now))
        self._tasks.add(task)
        self._idle.clear()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not self._tasks:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Until every delivery started so far has been answered or has failed."""
        while self._tasks:
            await self._idle.wait()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
