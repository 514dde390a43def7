"""Telephony methods for an external PBX (reference §4): lines, calls, records, statistics.

The rules copied here are the ones a connector trips over: CALL_ID reuse inside 30 minutes
for an unfinished identical registration (§4.3), cards shown/hidden per user (§4.4), finish
hiding the card only for the finishing user and creating the call activity (§4.5), records
attachable only after finish (§4.6).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from typing import Any
from urllib.parse import quote, urlsplit

from .context import Ctx, Handler, as_int, iso_time, parse_date, php_true
from .crm import create_entity, find_by_phone
from .errors import RestError, wrong_auth_type
from .listing import ListResult, matches, order_rows, page
from .params import Params
from .phones import clean_call_number
from .state import CRM_OWNER_TYPE_ID, Call, HistoryEntry, Line

DEDUP_WINDOW = 30 * 60.0
CALL_NOT_FOUND = "Call is not found (call should be registered prior to finishing"
RECORD_NOT_FINISHED = (
    "Call is not found in the statistic table. It looks like it is not finished yet."
)
_OUTGOING_TYPES = (1, 4, 5)


def _app_only(ctx: Ctx) -> None:
    """§2.5: the documented rule (switch ``telephony_webhook=deny``) refuses webhooks."""
    if ctx.auth.kind == "webhook" and ctx.switches.get("telephony_webhook") == "deny":
        raise wrong_auth_type()


def _lines_of(ctx: Ctx) -> list[Line]:
    return [ln for ln in ctx.state.lines if ln.app_key == ctx.auth.key]


def _find_line(ctx: Ctx, number: str) -> Line | None:
    return next((ln for ln in _lines_of(ctx) if ln.number == number), None)


# ---- external lines (§4.1) -------------------------------------------------------------


def line_add(ctx: Ctx, params: Params) -> dict[str, Any]:
    _app_only(ctx)
    number = str(params.get("NUMBER") or "").strip()
    if not number:
        raise ctx.invalid("NUMBER should not be empty")
    if _find_line(ctx, number) is not None:
        raise ctx.invalid("Line already exists")
    crm = "Y" if str(params.get("CRM_AUTO_CREATE", "Y")).upper() == "Y" else "N"
    ctx.state.lines.append(Line(number[:50], str(params.get("NAME") or ""), crm, ctx.auth.key))
    return {"ID": ctx.state.next_id("line")}


def line_update(ctx: Ctx, params: Params) -> dict[str, Any]:
    _app_only(ctx)
    number = str(params.get("NUMBER") or "").strip()
    if not number:
        raise ctx.invalid("NUMBER should not be empty")
    if not params.has("NAME") and not params.has("CRM_AUTO_CREATE"):
        raise ctx.invalid("There are no fields to update")
    line = _find_line(ctx, number)
    if line is None:
        raise ctx.invalid(f"Could not find line with number {number}")
    if params.has("NAME"):
        line.name = str(params.get("NAME") or "")
    if params.has("CRM_AUTO_CREATE"):
        line.crm_auto_create = "Y" if str(params.get("CRM_AUTO_CREATE")).upper() == "Y" else "N"
    return {"ID": str(ctx.state.lines.index(line) + 1)}


def line_get(ctx: Ctx, params: Params) -> list[dict[str, str]]:
    _app_only(ctx)
    return [
        {"NUMBER": ln.number, "NAME": ln.name, "CRM_AUTO_CREATE": ln.crm_auto_create}
        for ln in _lines_of(ctx)
    ]


def line_delete(ctx: Ctx, params: Params) -> list[Any]:
    _app_only(ctx)
    number = str(params.get("NUMBER") or "").strip()
    if not number:
        raise ctx.invalid("NUMBER should not be empty")
    line = _find_line(ctx, number)
    if line is None:
        raise ctx.invalid(f"Could not find line with number {number}")
    ctx.state.lines.remove(line)
    return []


# ---- CRM look-up (§4.2) ------------------------------------------------------------------


def crm_matches(ctx: Ctx, phone: str) -> list[tuple[str, int]]:
    """Contacts, then leads, then companies matching ``phone`` ([SRC] order)."""
    found: list[tuple[str, int]] = []
    for entity_type in ("CONTACT", "LEAD", "COMPANY"):
        found.extend((entity_type, eid) for eid in find_by_phone(ctx.state, phone, entity_type))
    return found


def search_crm_entities(ctx: Ctx, params: Params) -> list[dict[str, Any]]:
    phone = str(params.get("PHONE_NUMBER") or "").strip()
    if not phone:
        raise ctx.invalid("PHONE_NUMBER is empty")
    result = []
    for entity_type, eid in crm_matches(ctx, phone):
        row = ctx.state.entities[entity_type][eid]
        assigned = as_int(row.get("ASSIGNED_BY_ID")) or 0
        user = ctx.state.users.get(assigned)
        if entity_type == "COMPANY":
            name = str(row.get("TITLE") or "")
        else:
            name = f"{row.get('NAME') or ''} {row.get('LAST_NAME') or ''}".strip()
            if entity_type == "LEAD" and not name:
                name = str(row.get("TITLE") or "")
        result.append(
            {
                "CRM_ENTITY_TYPE": entity_type,
                "CRM_ENTITY_ID": eid,
                "ASSIGNED_BY_ID": assigned,
                "NAME": name,
                "ASSIGNED_BY": {
                    "ID": str(assigned),
                    "TIMEMAN_STATUS": user.timeman_status if user else "UNAVAILABLE",
                    "USER_PHONE_INNER": (user.ext if user else None) or None,
                    "WORK_PHONE": (user.work_phone if user else None) or None,
                    "PERSONAL_PHONE": None,
                    "PERSONAL_MOBILE": (user.personal_mobile if user else None) or None,
                },
            }
        )
    return result


# ---- register (§4.3) ----------------------------------------------------------------------


def _user_from(ctx: Ctx, params: Params) -> int:
    """``USER_ID`` wins when non-zero, else ``USER_PHONE_INNER`` must name an active user."""
    user_id = as_int(params.get("USER_ID")) or 0
    if user_id:
        return user_id
    inner = str(params.get("USER_PHONE_INNER") or "").strip()
    user = ctx.state.user_by_ext(inner) if inner else None
    if user is None:
        raise ctx.invalid("USER_ID or USER_PHONE_INNER should be set")
    return user.id


def _new_call_id(now: float) -> str:
    return f"externalCall.{secrets.token_hex(16)}.{int(now)}"


def register_call(
    ctx: Ctx,
    *,
    user_id: int,
    phone: str,
    call_type: int,
    start: float,
    line: str | None,
    external_id: str | None,
    crm_create: bool,
    crm_source: str | None,
    entity: tuple[str, int] | None,
    show: bool,
    method: str,
) -> tuple[Call, bool]:
    """The register rule itself, shared with the emulator's click-to-call.

    Returns the call and whether it is an existing one handed back (dedup).
    """
    st = ctx.state
    for call in st.calls.values():
        if (
            not call.finished
            and call.app_key == ctx.auth.key
            and call.phone_number == phone
            and call.type == call_type
            and call.registered_user_id == user_id
            and (line is None or call.line_number == line)
            and (external_id is None or call.external_call_id == external_id)
            and call.start_date >= ctx.now - DEDUP_WINDOW
        ):
            users = [user_id] if show else []
            if show:
                _show(call, users)
            call.history.append(HistoryEntry(ctx.now, method, users, dedup=True))
            return call, True
    call = Call(
        call_id=_new_call_id(ctx.now),
        external_call_id=external_id,
        type=call_type,
        phone_number=phone,
        line_number=line,
        registered_user_id=user_id,
        user_id=user_id,
        app_key=ctx.auth.key,
        start_date=start,
    )
    internal = st.user_by_ext(phone) is not None
    if not internal:
        if entity is not None:
            call.crm_entity_type, call.crm_entity_id = entity
        else:
            hits = crm_matches(ctx, phone)
            if hits:
                call.crm_entity_type, call.crm_entity_id = hits[0]
            elif crm_create:
                title = (
                    "Outgoing" if call_type in _OUTGOING_TYPES else "Incoming"
                ) + f" call {phone}"
                lead_id = create_entity(
                    ctx,
                    "LEAD",
                    {
                        "TITLE": title,
                        "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}],
                        "SOURCE_ID": crm_source or "CALL",
                        "ASSIGNED_BY_ID": user_id,
                    },
                )
                call.created_lead = lead_id
                call.created_entities = [{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead_id}]
                call.crm_entity_type, call.crm_entity_id = "LEAD", lead_id
    users = [user_id] if show else []
    if show:
        _show(call, users)
    call.history.append(HistoryEntry(ctx.now, method, users))
    st.calls[call.call_id] = call
    app_id = ctx.auth.app.app_id if ctx.auth.app else None
    st.emit(
        "ONVOXIMPLANTCALLINIT",
        {
            "CALL_ID": call.call_id,
            "CALL_TYPE": call_type,
            "CALLER_ID": phone,
            "REST_APP_ID": app_id,
        },
        user_id,
    )
    st.emit("ONVOXIMPLANTCALLSTART", {"CALL_ID": call.call_id, "USER_ID": user_id}, user_id)
    return call, False


def register_answer(call: Call) -> dict[str, Any]:
    return {
        "CALL_ID": call.call_id,
        "CRM_CREATED_LEAD": call.created_lead,
        "CRM_CREATED_ENTITIES": list(call.created_entities),
        "CRM_ENTITY_TYPE": call.crm_entity_type,
        "CRM_ENTITY_ID": call.crm_entity_id,
    }


def register(ctx: Ctx, params: Params) -> dict[str, Any]:
    _app_only(ctx)
    user_id = _user_from(ctx, params)
    call_type = as_int(params.get("TYPE"))
    if call_type is None or not 1 <= call_type <= 5:
        raise ctx.invalid("Unknown TYPE")
    start = ctx.now
    raw_date = params.get("CALL_START_DATE")
    if raw_date not in (None, ""):
        parsed = parse_date(str(raw_date))
        if parsed is None:
            raise ctx.invalid("CALL_START_DATE should be in the ISO-8601 format")
        start = parsed
    phone = clean_call_number(str(params.get("PHONE_NUMBER") or ""))
    if not phone:
        raise ctx.invalid("Unsupported phone number format")
    if ctx.state.active_user(user_id) is None:
        raise ctx.invalid("User is not found or is not active")
    line = str(params.get("LINE_NUMBER") or "").strip() or None
    if line is not None and _find_line(ctx, line) is None:
        if ctx.switches.get("unknown_line") == "error":
            raise ctx.invalid(f"Could not find line with number {line}")
        # [SRC]: an unknown line is silently created for the app
        ctx.state.lines.append(Line(line, line, "Y", ctx.auth.key))
    entity: tuple[str, int] | None = None
    entity_type = str(params.get("CRM_ENTITY_TYPE") or "").upper()
    entity_id = as_int(params.get("CRM_ENTITY_ID"))
    if entity_type in ("CONTACT", "COMPANY", "LEAD") and entity_id:
        entity = (entity_type, entity_id)
    external = params.get("EXTERNAL_CALL_ID")
    call, _ = register_call(
        ctx,
        user_id=user_id,
        phone=phone,
        call_type=call_type,
        start=start,
        line=line,
        external_id=str(external) if external not in (None, "") else None,
        crm_create=php_true(params.get("CRM_CREATE", 0)),
        crm_source=str(params.get("CRM_SOURCE") or "") or None,
        entity=entity,
        show=php_true(params.get("SHOW", 1)),
        method="telephony.externalcall.register",
    )
    return register_answer(call)


# ---- show / hide (§4.4) ------------------------------------------------------------------


def _show(call: Call, users: list[int]) -> None:
    for uid in users:
        if uid not in call.shown_to:
            call.shown_to.append(uid)
        if uid not in call.shown_now:
            call.shown_now.append(uid)


def _target_users(call: Call, params: Params) -> list[int]:
    value = params.get("USER_ID")
    if isinstance(value, dict):
        value = list(value.values())
    items = value if isinstance(value, list) else [value] if value not in (None, "") else []
    users = [u for u in (as_int(v) for v in items) if u]
    return users or [call.registered_user_id]


def _active_call(ctx: Ctx, params: Params) -> Call | None:
    call = ctx.state.calls.get(str(params.get("CALL_ID") or ""))
    return call if call is not None and not call.finished else None


def show(ctx: Ctx, params: Params) -> bool:
    call = _active_call(ctx, params)
    if call is None:
        return False
    users = _target_users(call, params)
    _show(call, users)
    call.history.append(HistoryEntry(ctx.now, "telephony.externalcall.show", users))
    return True


def hide(ctx: Ctx, params: Params) -> bool:
    call = _active_call(ctx, params)
    if call is None:
        return False
    users = _target_users(call, params)
    call.shown_now = [u for u in call.shown_now if u not in users]
    call.history.append(HistoryEntry(ctx.now, "telephony.externalcall.hide", users))
    return True


# ---- finish (§4.5) -------------------------------------------------------------------------


def _app_id_text(ctx: Ctx) -> str:
    return str(ctx.auth.app.app_id) if ctx.auth.app else ""


def finish(ctx: Ctx, params: Params) -> dict[str, Any]:
    _app_only(ctx)
    raw_call_id = params.get("CALL_ID")
    if not isinstance(raw_call_id, str):
        raise RestError(400, "INVALID_ARGUMENT", "CALL_ID must be a string")
    user_id = _user_from(ctx, params)
    call = ctx.state.calls.get(raw_call_id)
    if call is None or call.finished:
        raise ctx.invalid(CALL_NOT_FOUND)
    if ctx.state.active_user(user_id) is None:
        raise ctx.invalid("User is not found or is not active")
    duration = as_int(params.get("DURATION")) or 0
    status_code = str(params.get("STATUS_CODE") or ("200" if duration > 0 else "304"))
    add_to_chat_raw = params.get("ADD_TO_CHAT")
    add_to_chat = (
        php_true(add_to_chat_raw)
        if add_to_chat_raw is not None
        else ctx.switches.get("add_to_chat_default") == "1"
    )
    try:
        cost = float(params.get("COST") or 0)
    except (TypeError, ValueError):
        cost = 0.0
    st = ctx.state
    stat_id = st.next_id("statistic")
    call.finished = True
    call.user_id = user_id
    call.status_code = status_code
    call.duration = duration
    call.add_to_chat = add_to_chat
    call.stat_id = stat_id
    # the card closes only for the user who finishes (§4.5, §7.8)
    call.shown_now = [u for u in call.shown_now if u != user_id]
    call.history.append(HistoryEntry(ctx.now, "telephony.externalcall.finish", [user_id]))
    if call.created_lead is not None:
        lead = st.entities["LEAD"].get(call.created_lead)
        if lead is not None:
            lead["ASSIGNED_BY_ID"] = str(user_id)
    activity_id: int | None = None
    if call.crm_entity_type and call.crm_entity_id:
        activity_id = st.next_id("activity")
        outgoing = call.type in _OUTGOING_TYPES
        st.activities.append(
            {
                "ID": str(activity_id),
                "TYPE_ID": "2",
                "PROVIDER_ID": "VOXIMPLANT_CALL",
                "PROVIDER_TYPE_ID": "CALL",
                "DIRECTION": "2" if outgoing else "1",
                "OWNER_TYPE_ID": str(CRM_OWNER_TYPE_ID[call.crm_entity_type]),
                "OWNER_ID": str(call.crm_entity_id),
                "RESPONSIBLE_ID": str(user_id),
                "START_TIME": iso_time(call.start_date),
                "END_TIME": iso_time(call.start_date + duration),
                "COMPLETED": "Y",
                "SUBJECT": ("Outgoing" if outgoing else "Incoming") + f" call {call.phone_number}",
                "ORIGIN_ID": f"VI_{call.call_id}",
            }
        )
    vote = as_int(params.get("VOTE"))
    record: dict[str, Any] = {
        "ID": stat_id,
        "CALL_ID": call.call_id,
        "EXTERNAL_CALL_ID": call.external_call_id,
        "PORTAL_USER_ID": user_id,
        "PHONE_NUMBER": call.phone_number,
        "PORTAL_NUMBER": call.line_number or f"REST_APP:{_app_id_text(ctx) or 'webhook'}",
        "INCOMING": str(call.type),
        "CALL_DURATION": duration,
        "CALL_START_DATE": iso_time(call.start_date),
        "CALL_STATUS": 1 if duration > 0 else 0,
        "CALL_VOTE": vote,
        "COST": cost,
        "COST_CURRENCY": str(params.get("COST_CURRENCY") or ""),
        "CALL_FAILED_CODE": status_code,
        "CALL_FAILED_REASON": str(params.get("FAILED_REASON") or ""),
        "CALL_RECORD_URL": str(params.get("RECORD_URL") or ""),
        "REST_APP_ID": _app_id_text(ctx),
        "REST_APP_NAME": ctx.auth.app.name if ctx.auth.app else "",
        "CRM_ACTIVITY_ID": activity_id,
        "COMMENT": None,
        "RECORD_FILE_ID": None,
        "TRANSCRIPT_ID": None,
    }
    if call.crm_entity_type and call.crm_entity_id:
        record["CRM_ENTITY_TYPE"] = call.crm_entity_type
        record["CRM_ENTITY_ID"] = call.crm_entity_id
    st.statistics.append(record)
    st.emit(
        "ONVOXIMPLANTCALLEND",
        {
            "CALL_ID": call.call_id,
            "CALL_TYPE": call.type,
            "PHONE_NUMBER": call.phone_number,
            "PORTAL_NUMBER": record["PORTAL_NUMBER"],
            "PORTAL_USER_ID": user_id,
            "CALL_DURATION": duration,
            "CALL_START_DATE": record["CALL_START_DATE"],
            "COST": cost,
            "COST_CURRENCY": record["COST_CURRENCY"],
            "CALL_FAILED_CODE": status_code,
            "CALL_FAILED_REASON": record["CALL_FAILED_REASON"],
            "CRM_ACTIVITY_ID": activity_id,
        },
        user_id,
    )
    answer = {
        k: v
        for k, v in record.items()
        if k not in ("CALL_RECORD_URL", "RECORD_FILE_ID", "TRANSCRIPT_ID")
    }
    answer["CALL_START_DATE"] = {}  # PHP serialises the date object as {} (§1.2)
    return answer


# ---- records (§4.6) ----------------------------------------------------------------------


def _statistic(ctx: Ctx, call_id: str) -> dict[str, Any] | None:
    return next((s for s in ctx.state.statistics if s["CALL_ID"] == call_id), None)


def _check_name(ctx: Ctx, filename: str, allowed: tuple[str, ...] = ("wav", "mp3")) -> None:
    if not filename:
        raise ctx.invalid("File name is empty")
    if filename.rsplit(".", 1)[-1].lower() not in allowed or "." not in filename:
        raise ctx.invalid("Wrong file extension. Only wav and mp3 are allowed")


def store_record(ctx: Ctx, call_id: str, filename: str, content: bytes, source: str) -> int:
    """Keep a recording on the statistics row and its call (re-attaching replaces)."""
    stat = _statistic(ctx, call_id)
    if stat is None:
        raise ctx.invalid(RECORD_NOT_FINISHED)
    file_id = ctx.state.next_id("file")
    ctx.state.files[file_id] = {"FILENAME": filename, "size": len(content), "CALL_ID": call_id}
    stat["RECORD_FILE_ID"] = file_id
    call = ctx.state.calls.get(call_id)
    if call is not None:
        call.records = [
            {"FILENAME": filename, "size": len(content), "FILE_ID": file_id, "via": source}
        ]
        call.history.append(
            HistoryEntry(ctx.now, "telephony.externalcall.attachrecord", [call.user_id])
        )
    return file_id


async def attach_record(ctx: Ctx, params: Params) -> dict[str, Any]:
    call_id = str(params.get("CALL_ID") or "")
    filename = str(params.get("FILENAME") or "").strip()
    content = params.get("FILE_CONTENT")
    url = str(params.get("RECORD_URL") or "").strip()
    if not url and not filename:
        raise ctx.invalid(
            "Required parameters are not set. "
            "Request should contain either URL or FILENAME parameter"
        )
    if _statistic(ctx, call_id) is None:
        raise ctx.invalid(RECORD_NOT_FINISHED)
    if content is not None:
        _check_name(ctx, filename)
        text = str(content).strip()
        if not text:
            raise ctx.invalid("File content is empty.")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ctx.invalid(
                "File content is not properly encoded. Base64 encoding is expected."
            ) from None
        return {"FILE_ID": store_record(ctx, call_id, filename, data, "base64")}
    if url:
        name = filename or urlsplit(url).path.rsplit("/", 1)[-1]
        _check_name(ctx, name, ("wav", "mp3", "flac"))
        if ctx.fetch is None:
            raise RestError(400, "SERVER_NOT_AVAILABLE", "Server is not available")
        try:
            status, _content_type, body = await ctx.fetch(url)
        except Exception:  # the portal gives up after one try, whatever went wrong
            raise RestError(400, "SERVER_NOT_AVAILABLE", "Server is not available") from None
        if status != 200:
            raise ctx.invalid(f"Server returns HTTP error code {status}")
        if not body:
            raise ctx.invalid("File content is empty.")
        return {"FILE_ID": store_record(ctx, call_id, name, body, "url")}
    _check_name(ctx, filename)
    token = secrets.token_hex(16)
    ctx.state.upload_tokens[token] = f"{call_id}\n{filename}"
    auth = quote(ctx.auth.token or "webhook", safe="")
    return {
        "uploadUrl": f"{ctx.base_url}/rest/upload.json?auth={auth}&token=telephony%7C{token}",
        "fieldName": "file",
    }


def take_upload(ctx: Ctx, token: str) -> tuple[str, str] | None:
    """The call and file name an ``uploadUrl`` token was issued for (one use only)."""
    key = token.removeprefix("telephony|")
    value = ctx.state.upload_tokens.pop(key, None)
    if value is None:
        return None
    call_id, _, filename = value.partition("\n")
    return call_id, filename


# ---- transcription (§4.7) and statistics (§4.8) ----------------------------------------------


def attach_transcription(ctx: Ctx, params: Params) -> dict[str, Any]:
    call_id = str(params.get("CALL_ID") or "")
    if not call_id:
        raise ctx.invalid("CALL_ID should be set")
    messages = params.get("MESSAGES")
    if isinstance(messages, dict):
        messages = list(messages.values())
    if not isinstance(messages, list):
        raise ctx.invalid("MESSAGES should be an array")
    for i, msg in enumerate(messages):
        msg = msg if isinstance(msg, dict) else {}
        if msg.get("SIDE") not in ("Client", "User"):
            raise ctx.invalid(f"MESSAGES[{i}][SIDE] should be either Client or User")
        if (as_int(msg.get("START_TIME")) or 0) < 0 or as_int(msg.get("START_TIME")) is None:
            raise ctx.invalid(f"MESSAGES[{i}][START_TIME] should be greater or equal to zero")
        if (as_int(msg.get("STOP_TIME")) or 0) <= 0:
            raise ctx.invalid(f"MESSAGES[{i}][STOP_TIME] should be greater than zero")
        if not str(msg.get("MESSAGE") or "").strip():
            raise ctx.invalid(f"MESSAGES[{i}][MESSAGE] is empty")
    stat = _statistic(ctx, call_id)
    if stat is None:
        raise ctx.invalid(f"Call {call_id} is not found. Is it finished?")
    transcript_id = ctx.state.next_id("transcript")
    ctx.state.transcripts.append({"ID": transcript_id, "CALL_ID": call_id, "MESSAGES": messages})
    stat["TRANSCRIPT_ID"] = transcript_id
    return {"TRANSCRIPT_ID": transcript_id}


def _stat_row(stat: dict[str, Any], call: Call | None) -> dict[str, Any]:
    row = {
        k: ("" if v is None else str(v))
        for k, v in stat.items()
        if k not in ("INCOMING", "CALL_STATUS")
    }
    row["CALL_TYPE"] = str(stat["INCOMING"])
    row["CALL_CATEGORY"] = "external"
    row["TRANSCRIPT_PENDING"] = "N"
    row.setdefault("CRM_ENTITY_TYPE", "")
    row.setdefault("CRM_ENTITY_ID", "")
    return row


def statistic_get(ctx: Ctx, params: Params) -> ListResult:
    rows = [_stat_row(s, ctx.state.calls.get(s["CALL_ID"])) for s in ctx.state.statistics]
    rows = [r for r in rows if matches(r, params.mapping("FILTER"))]
    sort = params.get("SORT")
    if isinstance(sort, str) and sort:
        rows = order_rows(rows, {sort: str(params.get("ORDER") or "ASC")})
    return page(rows, params.get("start"))


METHODS: dict[str, Handler] = {
    "telephony.externalline.add": line_add,
    "telephony.externalline.update": line_update,
    "telephony.externalline.get": line_get,
    "telephony.externalline.delete": line_delete,
    "telephony.externalcall.searchcrmentities": search_crm_entities,
    "telephony.externalcall.register": register,
    "telephony.externalcall.show": show,
    "telephony.externalcall.hide": hide,
    "telephony.externalcall.finish": finish,
    "telephony.externalcall.attachrecord": attach_record,
    "telephony.call.attachtranscription": attach_transcription,
    "voximplant.statistic.get": statistic_get,
}
