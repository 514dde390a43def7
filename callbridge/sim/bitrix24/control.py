"""Control routes under ``/_emulator/`` for tests, the demo and people (issue 4 and 5).

They act *as the portal's users* (click a number, submit a callback form, install an app)
or on the emulator itself (state, faults, clock, reset). They are never faulted or limited.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .context import Auth, Ctx, as_int
from .faults import parse_fault
from .phones import clean_call_number, international
from .telephony import crm_matches, register_answer, register_call

if TYPE_CHECKING:
    from .app import Emulator


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("body must be JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _base(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def routes(emu: Emulator) -> list[Route]:
    async def state(request: Request) -> Response:
        now = emu.now()
        body = emu.state.to_json()
        body["now"] = now
        body["clock_offset"] = emu.offset
        body["faults"] = emu.fault.to_json(now)
        return JSONResponse(body)

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(emu.fault.to_json(emu.now()))
        try:
            emu.fault = parse_fault(await _body(request), emu.now())
        except ValueError as exc:
            return _bad(str(exc))
        return JSONResponse(emu.fault.to_json(emu.now()))

    async def clock(request: Request) -> Response:
        try:
            body = await _body(request)
            if "offset_seconds" in body:
                emu.offset = float(body["offset_seconds"])
            elif "advance_seconds" in body:
                emu.offset += float(body["advance_seconds"])
            else:
                return _bad('give {"offset_seconds": N} (or {"advance_seconds": N})')
        except (ValueError, TypeError) as exc:
            return _bad(f"offset must be a number: {exc}")
        return JSONResponse({"now": emu.now(), "offset_seconds": emu.offset})

    async def reset(request: Request) -> Response:
        emu.reset()
        return JSONResponse({"ok": True})

    async def click(request: Request) -> Response:
        """A user clicks a number: the portal registers a TYPE 1 call and sends the event."""
        try:
            body = await _body(request)
        except ValueError as exc:
            return _bad(str(exc))
        user_id = as_int(body.get("user_id"))
        raw_phone = str(body.get("phone_number") or "")
        phone = clean_call_number(raw_phone)
        if user_id is None or emu.state.active_user(user_id) is None:
            return _bad(f"user_id must name an active user; got {body.get('user_id')!r}")
        if not phone:
            return _bad("phone_number is required")
        line_number = str(body.get("line_number") or "").strip() or None
        st = emu.state
        line = (
            next((ln for ln in st.lines if ln.number == line_number), None) if line_number else None
        )
        if line_number and line is None:
            return _bad(f"no external line {line_number!r} is registered")
        if line is not None and line.app_key.startswith("app:"):
            app = st.apps.get(int(line.app_key.split(":", 1)[1]))
        else:
            # no line: the application itself is the default outgoing line
            app = next(reversed(st.apps.values()), None) if st.apps else None
        auth = Auth("app", user_id, app) if app is not None else Auth("webhook", user_id)
        ctx = Ctx(st, emu.now(), auth, _base(request))
        call, _ = register_call(
            ctx,
            user_id=user_id,
            phone=phone,
            call_type=1,
            start=ctx.now,
            line=line_number,
            external_id=None,
            crm_create=line is None or line.crm_auto_create == "Y",
            crm_source="CALL",
            entity=None,
            show=True,
            method="_emulator.click",
        )
        answer = register_answer(call)
        data: dict[str, Any] = {
            "PHONE_NUMBER": raw_phone,
            "PHONE_NUMBER_INTERNATIONAL": international(raw_phone),
            "EXTENSION": "",
            "USER_ID": str(user_id),
            "CALL_LIST_ID": "0",
            "LINE_NUMBER": line_number or "",
            "IS_MOBILE": "0",
            "CALL_ID": call.call_id,
            "CRM_ENTITY_TYPE": call.crm_entity_type,
            "CRM_ENTITY_ID": str(call.crm_entity_id or 0),
        }
        if call.created_lead is not None:
            data["CRM_CREATED_LEAD"] = str(call.created_lead)
            data["CRM_CREATED_ENTITIES"] = answer["CRM_CREATED_ENTITIES"]
        st.emit("ONEXTERNALCALLSTART", data, user_id, app.app_id if app else None)
        emu.flush_events(_base(request))
        return JSONResponse({"CALL_ID": call.call_id})

    async def callback_form(request: Request) -> Response:
        """A website visitor orders a callback: ``ONEXTERNALCALLBACKSTART``, nothing registered."""
        try:
            body = await _body(request)
        except ValueError as exc:
            return _bad(str(exc))
        phone = str(body.get("phone_number") or "").strip()
        if not phone:
            return _bad("phone_number is required")
        st = emu.state
        ctx = Ctx(st, emu.now(), Auth("webhook", 0), _base(request))
        hits = crm_matches(ctx, phone)
        entity_type, entity_id = hits[0] if hits else ("", 0)
        data = {
            "PHONE_NUMBER": phone,
            "TEXT": str(body.get("text") or "A callback has been ordered from the website"),
            "VOICE": "ruinternalfemale",
            "CRM_ENTITY_TYPE": entity_type,
            "CRM_ENTITY_ID": str(entity_id) if entity_id else "",
            "LINE_NUMBER": str(body.get("line_number") or ""),
        }
        st.emit("ONEXTERNALCALLBACKSTART", data, None)
        emu.flush_events(_base(request))
        return JSONResponse({"ok": True, "data": data})

    async def install(request: Request) -> Response:
        try:
            body = await _body(request)
        except ValueError as exc:
            return _bad(str(exc))
        handler = str(body.get("handler") or "").strip()
        if not handler.startswith(("http://", "https://")):
            return _bad("handler must be an http(s) URL")
        app, status = await emu.install(handler, _base(request))
        return JSONResponse(
            {
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "member_id": emu.state.member_id,
                "application_token": app.application_token,
                "delivery_status": status,
            }
        )

    return [
        Route("/_emulator/state", state, methods=["GET"]),
        Route("/_emulator/faults", faults, methods=["GET", "POST"]),
        Route("/_emulator/clock", clock, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/click", click, methods=["POST"]),
        Route("/_emulator/callback-form", callback_form, methods=["POST"]),
        Route("/_emulator/install", install, methods=["POST"]),
    ]
