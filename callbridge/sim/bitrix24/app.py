"""The ASGI edge of the emulator: REST and OAuth routes, auth, limits, faults, envelopes.

One :class:`Emulator` owns the portal state and everything around it (bucket, operating
time, faults, clock offset, event deliverer); :meth:`Emulator.asgi` is the Starlette app.
Control routes live in :mod:`.control`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import control, oauth, page
from .context import Auth, Ctx, resolve_switches
from .dispatch import Dispatcher, normalize_method
from .errors import RestError
from .events import Deliverer, build_body
from .faults import Fault
from .limits import LeakyBucket, OperatingTime
from .params import Params, parse_php_pairs, parse_php_query
from .state import App, PendingEvent, PortalState, seeded
from .telephony import store_record, take_upload

TRANSPORT_KEY = "callbridge.transport"


class Dropped(Response):
    """A "response" that sends nothing: the connection was cut on purpose."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


async def drop_connection(request: Request) -> Response:
    """Reset the client's connection without an answer (``down``, ``lost_answer``)."""
    transport = request.scope.get(TRANSPORT_KEY)
    if transport is None:
        raise ConnectionResetError("emulator fault: connection dropped")
    transport.abort()
    # let the protocol see connection_lost so uvicorn does not try to answer
    for _ in range(3):
        await asyncio.sleep(0)
    return Dropped()


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


class Emulator:
    """The portal runtime behind the HTTP routes."""

    def __init__(
        self,
        *,
        webhook: str | None,
        rate: tuple[float, int] | None,
        operating_ms: float,
        switches: dict[str, str],
        token_ttl: float,
        clock: Callable[[], float],
    ) -> None:
        self.webhook = _parse_webhook(webhook)
        self.rate = rate
        self.switches = resolve_switches(switches)
        self.token_ttl = token_ttl
        self.clock = clock
        self.offset = 0.0
        self.state: PortalState = seeded(self.switches)
        self.bucket = LeakyBucket(rate[0], rate[1]) if rate else None
        self.operating = OperatingTime(float(self.switches["operating_limit"]))
        self.fault = Fault()
        self.public_url = ""
        self.shutting_down = asyncio.Event()
        self.deliverer = Deliverer(lambda: self.state)
        self.dispatcher = Dispatcher(
            self.operating,
            operating_ms / 1000.0,
            self.now,
            lambda m: self.state.requests.count_method(m),
        )
        self._fetch_client: httpx.AsyncClient | None = None  # made on first use
        self.asgi = Starlette(routes=self._routes())

    # ---- time --------------------------------------------------------------------------

    def now(self) -> float:
        """The emulator's clock: the injected clock plus ``/_emulator/clock`` offset."""
        return self.clock() + self.offset

    # ---- lifecycle ---------------------------------------------------------------------

    def reset(self) -> None:
        self.state = seeded(self.switches)
        self.offset = 0.0
        self.fault = Fault()
        self.operating.reset()
        if self.bucket is not None:
            self.bucket.reset()

    async def close(self) -> None:
        self.shutting_down.set()
        await self.deliverer.close()
        if self._fetch_client is not None:
            await self._fetch_client.aclose()

    # ---- routes ------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/rest/{path:path}", self.rest, methods=["GET", "POST"]),
            Route("/oauth/token/", self.token, methods=["GET", "POST"]),
            Route("/oauth/token", self.token, methods=["GET", "POST"]),
            Route("/oauth/authorize/", self.authorize, methods=["GET"]),
            *control.routes(self),
        ]

    async def page(self, request: Request) -> Response:
        return HTMLResponse(page.render(self.state.to_json(), self.now()))

    async def _apply_fault(self, request: Request, *, oauth_route: bool) -> Response | str:
        """Answer for an active fault, or the mode to honour later (``lost_answer``/``revoke``)."""
        mode = self.fault.active(self.now())
        if mode == "down":
            return await drop_connection(request)
        if mode == "503":
            if self.switches["fault_503_body"] == "json":
                return _json(
                    {"error": "OVERLOAD_LIMIT", "error_description": "Service is overloaded"}, 503
                )
            return HTMLResponse(
                "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>", 503
            )
        if mode == "timeout":
            await self._wait(self.fault.delay)
            return await drop_connection(request)
        if mode == "slow":
            await self._wait(self.fault.delay)
        if mode == "moved" and not oauth_route:
            query = f"?{request.url.query}" if request.url.query else ""
            location = f"{self.fault.to}{request.url.path}{query}"
            return Response(status_code=302, headers={"Location": location})
        return mode

    async def _wait(self, seconds: float) -> None:
        """Hold a request for real ``seconds`` (faults are about wall-clock client timeouts)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.shutting_down.wait(), timeout=seconds)

    # ---- REST --------------------------------------------------------------------------

    async def rest(self, request: Request) -> Response:
        try:
            return await self._rest(request)
        finally:
            await request.close()

    async def _rest(self, request: Request) -> Response:
        fault = await self._apply_fault(request, oauth_route=False)
        if isinstance(fault, Response):
            return fault
        path = request.path_params["path"]
        segments = [s for s in path.split("/") if s]
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        start = self.now()
        try:
            params = await _read_params(request)
        except ValueError as exc:
            return _json({"error": "INVALID_REQUEST", "error_description": str(exc)}, 400)
        method = normalize_method(segments[-1]) if segments else ""
        st = self.state
        st.requests.total += 1
        st.requests.count_method(method)
        try:
            if self.bucket is not None and not self.bucket.try_take(start):
                status = int(self.switches["query_limit_status"])
                raise RestError(status, "QUERY_LIMIT_EXCEEDED", "Too many requests")
            if method == "upload" and len(segments) == 1 and "token" in request.query_params:
                response = await self._upload(request, base_url, start)
            else:
                auth = self._authenticate(segments, params, fault == "revoke")
                params.pop("auth", None)
                ctx = Ctx(st, start, auth, base_url, self._fetch)
                outcome = await self.dispatcher.call(ctx, method, Params(params))
                body: dict[str, Any] = {"result": outcome.result}
                if outcome.total is not None:
                    body["total"] = outcome.total
                if outcome.next is not None:
                    body["next"] = outcome.next
                body["time"] = outcome.time
                response = _json(body)
        except RestError as exc:
            st.requests.count_error(exc.error)
            body = {
                **exc.envelope(),
                "time": self.dispatcher.time_block(
                    start, self.now(), _error_key(self, segments, params), method
                ),
            }
            response = _json(body, exc.status)
        self.flush_events(base_url)
        if fault == "lost_answer":
            return await drop_connection(request)
        return response

    def _authenticate(self, segments: list[str], params: dict[str, Any], revoked: bool) -> Auth:
        if len(segments) == 3:
            user_text, code, _ = segments
            if self.webhook is None or revoked or (user_text, code) != self.webhook:
                if self.switches["bad_webhook_error"] == "INVALID_CREDENTIALS":
                    raise RestError(401, "INVALID_CREDENTIALS", "Invalid request credentials")
                raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
            return Auth("webhook", int(user_text))
        if len(segments) != 1:
            raise RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
        token = params.get("auth")
        if not isinstance(token, str) or not token:
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        found = oauth.check_access(self.state, token, self.now())
        return Auth("app", found.user_id, self.state.apps[found.app_id], token)

    async def _upload(self, request: Request, base_url: str, now: float) -> Response:
        """The second step of the ``uploadUrl`` flow: a multipart POST with field ``file``."""
        target = take_upload_token(self, request.query_params["token"])
        if target is None:
            raise RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")
        call_id, filename = target
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise RestError(400, "", "File is empty")
        content = await upload.read()
        ctx = Ctx(self.state, now, Auth("webhook", 0), base_url)
        file_id = store_record(ctx, call_id, filename, content, "upload")
        block = self.dispatcher.time_block(now, self.now(), "upload", None)
        return _json({"result": {"FILE_ID": file_id}, "time": block})

    async def _fetch(self, url: str) -> tuple[int, str, bytes]:
        if self._fetch_client is None:
            # the portal does not verify TLS when fetching RECORD_URL (§4.6)
            self._fetch_client = httpx.AsyncClient(timeout=30.0, verify=False)
        response = await self._fetch_client.get(url)
        return response.status_code, response.headers.get("content-type", ""), response.content

    # ---- OAuth -------------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        fault = await self._apply_fault(request, oauth_route=True)
        if isinstance(fault, Response):
            return fault
        params: dict[str, Any] = parse_php_query(request.url.query)
        if request.method == "POST":
            try:
                params.update(await _read_params(request))
            except ValueError as exc:
                return _json({"error": "invalid_request", "error_description": str(exc)}, 400)
        base_url = f"{request.url.scheme}://{request.url.netloc}"
        try:
            body = oauth.token_endpoint(
                self.state,
                params,
                now=self.now(),
                ttl=self.token_ttl,
                client_endpoint=f"{base_url}/rest/",
                server_endpoint=f"{base_url}/rest/",
                oauth_domain=request.url.netloc,
                revoked=fault == "revoke",
            )
            response = _json(body)
        except RestError as exc:
            response = _json(exc.envelope(), exc.status)
        if fault == "lost_answer":
            return await drop_connection(request)
        return response

    async def authorize(self, request: Request) -> Response:
        """``/oauth/authorize/?client_id=…`` → redirect to the app's handler with a code."""
        client_id = request.query_params.get("client_id", "")
        app = next((a for a in self.state.apps.values() if a.client_id == client_id), None)
        if app is None:
            return _json({"error": "invalid_client", "error_description": "Unknown client_id"}, 400)
        user_id = int(request.query_params.get("user_id", str(app.user_id)))
        code = oauth.issue_code(self.state, app, user_id, self.now())
        netloc = request.url.netloc
        query = httpx.QueryParams(
            {
                "code": code.value,
                "state": request.query_params.get("state", ""),
                "domain": netloc,
                "member_id": self.state.member_id,
                "scope": app.scope,
                "server_domain": netloc,
            }
        )
        separator = "&" if "?" in app.handler else "?"
        return Response(status_code=302, headers={"Location": f"{app.handler}{separator}{query}"})

    # ---- events ------------------------------------------------------------------------

    def flush_events(self, base_url: str) -> None:
        """Hand every queued event to the deliverer (background, one attempt each)."""
        for event in self.state.take_events():
            self.deliver(event, base_url)

    def _event_body(
        self,
        app: App,
        event: PendingEvent,
        base: str,
        *,
        handler_id: int | None,
        with_refresh: bool = False,
    ) -> str:
        """The form body for ``event`` to ``app``, with this portal's time, token lifetime
        and public address (its domain is the address without the scheme)."""
        return build_body(
            self.state,
            app,
            event,
            now=self.now(),
            ttl=self.token_ttl,
            base_url=base,
            domain=base.split("://", 1)[-1],
            handler_id=handler_id,
            with_refresh=with_refresh,
        )

    def deliver(self, event: PendingEvent, base_url: str) -> int:
        base = self.public_url or base_url
        count = 0
        for app, sub in self.deliverer.targets(event):
            handler_id = self.state.handlers.index(sub) + 1
            body = self._event_body(app, event, base, handler_id=handler_id)
            self.deliverer.spawn(sub.handler, body, event.name, app.app_id, self.now())
            count += 1
        return count

    async def install(self, handler: str, base_url: str) -> tuple[App, int | None]:
        """Create a local app and post ``ONAPPINSTALL`` to its handler (§2.2); waits for it."""
        admin = next(u.id for u in self.state.users.values() if u.admin)
        app = oauth.create_app(self.state, handler, admin)
        event = PendingEvent(
            "ONAPPINSTALL",
            {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"},
            admin,
        )
        base = self.public_url or base_url
        body = self._event_body(app, event, base, handler_id=None, with_refresh=True)
        status = await self.deliverer.post(handler, body, event.name, app.app_id, self.now())
        return app, status


def take_upload_token(emulator: Emulator, token: str) -> tuple[str, str] | None:
    ctx = Ctx(emulator.state, emulator.now(), Auth("webhook", 0), "")
    return take_upload(ctx, token)


def _error_key(emulator: Emulator, segments: list[str], params: dict[str, Any]) -> str:
    """Operating-time key for an error answer's time block (best effort, never raises)."""
    if len(segments) == 3:
        return "webhook"
    token = params.get("auth")
    found = emulator.state.access_tokens.get(token) if isinstance(token, str) else None
    return f"app:{found.app_id}" if found else "webhook"


def _parse_webhook(text: str | None) -> tuple[str, str] | None:
    if not text:
        return None
    user, sep, code = text.strip("/").partition("/")
    if not sep or not user.isdigit() or not code or "/" in code:
        raise ValueError(f"--webhook must look like USER_ID/CODE (e.g. 1/secretcode); got {text!r}")
    return user, code


async def _read_params(request: Request) -> dict[str, Any]:
    """Query string plus body (JSON, form or multipart), PHP-style; a GET body is not read."""
    params = parse_php_query(request.url.query)
    if request.method != "POST":
        return params
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
        # the form stays open: an upload reads its file later; rest() closes the request
        params.update(parse_php_pairs(pairs))
        return params
    raw = await request.body()
    if not raw.strip():
        return params
    if content_type == "application/json" or (
        content_type == "" and raw.lstrip()[:1] in (b"{", b"[")
    ):
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("Request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ValueError("JSON body must be an object")
        params.update(body)
        return params
    params.update(parse_php_query(raw.decode("utf-8", errors="replace")))
    return params
