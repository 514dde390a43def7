"""Installing callbridge as a Bitrix24 local application, and undoing it.

Two ways in, one result (tokens, ``member_id``, portal address and, when given, the
``application_token`` stored durably in :class:`~callbridge.store.tokens.TokenStore`):

* ``ONAPPINSTALL`` (reference §2.2), posted form-encoded to the install handler of a
  script-only application — or to the event endpoint, which hands it here. It carries
  everything, including the ``application_token`` that authenticates later events.
* The interactive install: the portal opens the handler (POST) with ``AUTH_ID``,
  ``REFRESH_ID``, ``AUTH_EXPIRES``, ``member_id``, ``DOMAIN``, ``PROTOCOL``. No
  ``application_token`` there: events stay refused until an ``ONAPPINSTALL`` brings it.

Who may install: the first install is trusted (there is nothing to check it against,
as with any Bitrix24 application); afterwards only the same portal (``member_id``) may
install again — another portal is refused with 409 and a log line.

After storing, :meth:`Installer.setup` runs off the request: ``event.bind`` for every
event callbridge handles (handler = ``web.public_url`` + the event path) and
``telephony.externalLine.add`` for each configured line. Its report is kept in
:class:`~callbridge.store.app_state.AppState` for ``/health``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from callbridge.actions.bitrix24_port import RestCaller
from callbridge.actions.event import BitrixEvent
from callbridge.store.app_state import AppState
from callbridge.store.tokens import Tokens, TokenStore
from callbridge.web.events import read_body, to_event
from callbridge.web.forms import BodyError, BodyLimits, decode_body

__all__ = ["EVENTS_TO_BIND", "Installer", "SetupReport", "tokens_from_install"]

log = logging.getLogger(__name__)

EVENTS_TO_BIND: tuple[str, ...] = (
    "ONEXTERNALCALLSTART",
    "ONEXTERNALCALLBACKSTART",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE",
    "ONCRMLEADADD",
    "ONCRMLEADUPDATE",
    "ONCRMLEADDELETE",
    "ONAPPUNINSTALL",
)

_DOMAIN = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")

_FINISH_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>callbridge</title>
<script src="//api.bitrix24.com/api/v1/"></script></head>
<body><p>callbridge is installed. The portal may take a moment to deliver events.</p>
<script>if (window.BX24) { BX24.init(function () { BX24.installFinish(); }); }</script>
</body></html>
"""


def _text(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key, "")
    return value.strip() if isinstance(value, str) else ""


def _endpoint_ok(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not parts.query


def tokens_from_install(auth: Mapping[str, Any], now: float) -> Tokens:
    """The ``auth[...]`` block of ``ONAPPINSTALL`` as :class:`Tokens`; ``ValueError``
    naming the missing or malformed field otherwise."""
    missing = [
        key
        for key in (
            "access_token",
            "refresh_token",
            "member_id",
            "application_token",
            "client_endpoint",
        )
        if not _text(auth, key)
    ]
    if missing:
        raise ValueError(f"ONAPPINSTALL without auth[{'], auth['.join(missing)}]")
    endpoint = _text(auth, "client_endpoint")
    if not _endpoint_ok(endpoint):
        raise ValueError("auth[client_endpoint] is not an http(s) URL")
    expires_at = _text(auth, "expires")
    expires_in = _text(auth, "expires_in")
    if expires_at.isdigit():
        expires = float(expires_at)
    elif expires_in.isdigit():
        expires = now + float(expires_in)
    else:
        expires = now + 3600.0
    return Tokens(
        access_token=_text(auth, "access_token"),
        refresh_token=_text(auth, "refresh_token"),
        expires=expires,
        member_id=_text(auth, "member_id"),
        client_endpoint=endpoint if endpoint.endswith("/") else endpoint + "/",
        application_token=_text(auth, "application_token"),
        domain=_text(auth, "domain"),
        scope=_text(auth, "scope"),
    )


def _tokens_from_interactive(form: Mapping[str, Any], now: float) -> Tokens:
    missing = [k for k in ("AUTH_ID", "REFRESH_ID", "member_id", "DOMAIN") if not _text(form, k)]
    if missing:
        raise ValueError(f"install request without {', '.join(missing)}")
    domain = _text(form, "DOMAIN")
    if not _DOMAIN.fullmatch(domain):
        raise ValueError("DOMAIN is not a host name")
    scheme = "http" if _text(form, "PROTOCOL") == "0" else "https"
    expires_in = _text(form, "AUTH_EXPIRES")
    return Tokens(
        access_token=_text(form, "AUTH_ID"),
        refresh_token=_text(form, "REFRESH_ID"),
        expires=now + (float(expires_in) if expires_in.isdigit() else 3600.0),
        member_id=_text(form, "member_id"),
        client_endpoint=f"{scheme}://{domain}/rest/",
        domain=domain,
    )


@dataclass
class SetupReport:
    bound: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    handler: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "bound": self.bound,
            "lines": self.lines,
            "errors": self.errors,
            "handler": self.handler,
        }


def _already(exc: Exception, *phrases: str) -> bool:
    text = f"{getattr(exc, 'code', '')} {getattr(exc, 'description', '')} {exc}".lower()
    return any(p in text for p in phrases)


@dataclass
class Installer:
    """The install handler, the ``ONAPPUNINSTALL`` handler and the post-install setup."""

    tokens: TokenStore
    state: AppState
    client: RestCaller | None
    clock: Callable[[], float]
    public_url: str
    events_path: str
    #: Bitrix24 line number → line name, registered with ``telephony.externalLine.add``.
    lines: Mapping[str, str] = field(default_factory=dict)
    crm_auto_create: bool = True
    limits: BodyLimits = field(default_factory=BodyLimits)
    #: Our application's client_id, to check a verified event belongs to it ("" = any).
    client_id: str = ""
    verify_timeout: float = 5.0
    #: Called after new tokens are stored (e.g. the call path reloads the users).
    on_installed: list[Callable[[], None]] = field(default_factory=list)
    _setup: asyncio.Task[SetupReport] | None = field(default=None, init=False)
    installs: int = field(default=0, init=False)

    @property
    def handler_url(self) -> str:
        return self.public_url.rstrip("/") + self.events_path if self.public_url else ""

    async def endpoint(self, request: Request) -> Response:
        """``POST`` install handler: ``ONAPPINSTALL`` or the interactive install."""
        try:
            body = await read_body(request, self.limits.max_bytes)
            form = decode_body(request.headers.get("content-type", ""), body, self.limits)
        except BodyError as exc:
            log.warning("install request refused (%d): %s", exc.status, exc.reason)
            return JSONResponse({"error": exc.reason}, status_code=exc.status)
        # The portal passes DOMAIN, PROTOCOL, … in the query string of the install page.
        query = dict(parse_qsl(request.url.query, keep_blank_values=True, max_num_fields=50))
        merged: dict[str, Any] = {**query, **form}
        if "event" in merged:
            try:
                event = to_event(merged)
            except BodyError as exc:
                return JSONResponse({"error": exc.reason}, status_code=exc.status)
            if event.name != "ONAPPINSTALL":
                return JSONResponse(
                    {"error": f"the install handler takes ONAPPINSTALL, not {event.name}"},
                    status_code=400,
                )
            return await self.on_install_event(event)
        try:
            tokens = _tokens_from_interactive(merged, self.clock())
        except ValueError as exc:
            log.warning("install request refused (400): %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        refused = self._store(tokens, "interactive install")
        if refused is not None:
            return refused
        return HTMLResponse(_FINISH_PAGE)

    async def on_install_event(self, event: BitrixEvent) -> Response:
        try:
            tokens = tokens_from_install(event.auth, self.clock())
        except ValueError as exc:
            log.warning("ONAPPINSTALL refused (400): %s", exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        refused = self._store(tokens, "ONAPPINSTALL")
        if refused is not None:
            return refused
        return JSONResponse({"result": "installed"})

    def _store(self, tokens: Tokens, how: str) -> Response | None:
        existing = self.tokens.load()
        if existing is not None and existing.member_id and existing.member_id != tokens.member_id:
            log.warning(
                "%s refused (409): portal member_id %r is not the installed %r",
                how,
                tokens.member_id[:40],
                existing.member_id,
            )
            return JSONResponse({"error": "another portal is installed"}, status_code=409)
        self.tokens.save(tokens)
        self.installs += 1
        self.state.put(
            "install",
            {
                "how": how,
                "member_id": tokens.member_id,
                "client_endpoint": tokens.client_endpoint,
                "has_application_token": bool(tokens.application_token),
                "uninstalled": False,
            },
            self.clock(),
        )
        log.info("%s stored for portal %s (%s)", how, tokens.client_endpoint, tokens.member_id)
        self._setup = asyncio.create_task(self.setup(), name="bitrix24-setup")
        for listener in self.on_installed:
            listener()
        return None

    async def adopt_token_from(self, event: BitrixEvent) -> bool:
        """The first event after an install that left no ``application_token`` (an
        interactive install, a code exchange) may supply it — but only if it is genuine:
        it names the installed portal (``member_id``) and its own ``access_token`` is
        accepted by that portal for *this* application (``app.info``). A forged event has
        no valid access token, so it sets nothing."""
        stored = self.tokens.load()
        given = event.auth.get("application_token")
        access = event.auth.get("access_token")
        member = event.auth.get("member_id")
        if (
            stored is None
            or stored.application_token
            or not stored.client_endpoint
            or not isinstance(given, str)
            or not given
            or not isinstance(access, str)
            or not access
            or member != stored.member_id
        ):
            return False
        url = stored.client_endpoint.rstrip("/") + "/app.info"
        try:
            async with httpx.AsyncClient(timeout=self.verify_timeout) as http:
                answer = await http.post(url, data={"auth": access})
            body = answer.json() if answer.status_code == 200 else {}
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("could not verify the event's access token at %s: %s", url, exc)
            return False
        result = body.get("result") if isinstance(body, dict) else None
        code = result.get("CODE") if isinstance(result, dict) else None
        if not code or (self.client_id and code != self.client_id):
            log.warning("event's access token not accepted for this application: %r", body)
            return False
        if not self.tokens.adopt_application_token(given):
            return False
        log.info("application token taken from a verified %s event", event.name)
        return True

    async def wait_setup(self) -> SetupReport | None:
        """The report of the last setup, once it has run (``None``: none started)."""
        return await self._setup if self._setup is not None else None

    async def setup(self) -> SetupReport:
        """Bind the events and register the lines; every failure is recorded, none fatal."""
        report = SetupReport(handler=self.handler_url)
        if self.client is None:
            report.errors.append("no Bitrix24 client in application mode: nothing bound")
        elif not self.handler_url:
            report.errors.append("web.public_url is not set: the portal cannot reach callbridge")
        else:
            for name in EVENTS_TO_BIND:
                try:
                    await self.client.call(
                        "event.bind", {"event": name, "handler": self.handler_url}
                    )
                    report.bound.append(name)
                except Exception as exc:
                    if _already(exc, "already bind", "already bound", "handler already"):
                        report.bound.append(name)
                    else:
                        report.errors.append(f"event.bind {name}: {exc}")
        if self.client is not None:
            for number, name in self.lines.items():
                try:
                    await self.client.call(
                        "telephony.externalLine.add",
                        {
                            "NUMBER": number,
                            "NAME": name,
                            "CRM_AUTO_CREATE": "Y" if self.crm_auto_create else "N",
                        },
                    )
                    report.lines.append(number)
                except Exception as exc:
                    if _already(exc, "already exists"):
                        report.lines.append(number)
                    else:
                        report.errors.append(f"telephony.externalLine.add {number}: {exc}")
        for error in report.errors:
            log.error("Bitrix24 setup: %s", error)
        log.info(
            "Bitrix24 setup: %d events bound, %d lines registered, %d errors",
            len(report.bound),
            len(report.lines),
            len(report.errors),
        )
        self.state.put("install.setup", report.as_json(), self.clock())
        return report

    async def on_uninstall(self, event: BitrixEvent) -> None:
        """``ONAPPUNINSTALL`` (already authenticated by the intake): stop sending."""
        log.warning("Bitrix24 application uninstalled from %s", _text(event.auth, "domain"))
        self.tokens.mark_failed("the application was uninstalled from the portal")
        install = self.state.get("install", {})
        if isinstance(install, dict):
            install["uninstalled"] = True
            self.state.put("install", install, self.clock())
