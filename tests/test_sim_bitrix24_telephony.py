"""Telephony methods of the emulator against reference §4 (and the §2.5 auth switch)."""

# fixtures are imported from the shared support module, so their parameters shadow them
# ruff: noqa: F811

from __future__ import annotations

import base64
from typing import Any

from tests.sim_bitrix24_support import (  # noqa: F401 - fixtures
    T0,
    Portal,
    Receiver,
    StartPortal,
    envelope,
    portal,
    receiver,
    start_portal,
)

CALLER = "74951234567"  # the traces' caller: contact 1, responsible user 2
NOT_FOUND = "Call is not found (call should be registered prior to finishing"


async def register(p: Portal, **fields: Any) -> dict[str, Any]:
    body = {"USER_ID": 1, "PHONE_NUMBER": CALLER, "TYPE": 2, **fields}
    result: dict[str, Any] = await p.result("telephony.externalcall.register", body)
    return result


async def call_state(p: Portal, call_id: str) -> dict[str, Any]:
    calls = {c["CALL_ID"]: c for c in (await p.state())["calls"]}
    return calls[call_id]  # type: ignore[no-any-return]


# ---- §4.1 external lines -------------------------------------------------------------------


async def test_s4_1_external_line_lifecycle(portal: Portal) -> None:
    add = await portal.result(
        "telephony.externalLine.add",
        {"NUMBER": "74957654321", "NAME": "Main", "CRM_AUTO_CREATE": "x"},
    )
    assert isinstance(add["ID"], int)
    update = await portal.result(
        "telephony.externalLine.update", {"NUMBER": "74957654321", "NAME": "Sales"}
    )
    assert isinstance(update["ID"], str)
    lines = await portal.result("telephony.externalLine.get")
    assert lines == [{"NUMBER": "74957654321", "NAME": "Sales", "CRM_AUTO_CREATE": "N"}]
    assert await portal.result("telephony.externalLine.delete", {"NUMBER": "74957654321"}) == []
    assert await portal.result("telephony.externalLine.get") == []


async def test_s4_1_external_line_errors(portal: Portal) -> None:
    async def err(method: str, body: dict[str, Any]) -> tuple[int, str, str]:
        return envelope(await portal.rest(f"telephony.externalLine.{method}", body))

    assert await err("add", {"NAME": "x"}) == (400, "", "NUMBER should not be empty")
    await portal.result("telephony.externalLine.add", {"NUMBER": "100"})
    assert await err("add", {"NUMBER": "100"}) == (400, "", "Line already exists")
    assert await err("update", {"NUMBER": "100"}) == (400, "", "There are no fields to update")
    assert await err("update", {"NUMBER": "7", "NAME": "a"}) == (
        400,
        "",
        "Could not find line with number 7",
    )
    assert await err("delete", {"NUMBER": "7"}) == (400, "", "Could not find line with number 7")


# ---- §4.2 searchCrmEntities ------------------------------------------------------------------


async def test_s4_2_search_crm_entities_matches_normalised_phone(portal: Portal) -> None:
    found = await portal.result(
        "telephony.externalCall.searchCrmEntities", {"PHONE_NUMBER": "8 (495) 123-45-67"}
    )
    assert found == [
        {
            "CRM_ENTITY_TYPE": "CONTACT",
            "CRM_ENTITY_ID": 1,
            "ASSIGNED_BY_ID": 2,
            "NAME": "Anna Kuznetsova",
            "ASSIGNED_BY": {
                "ID": "2",
                "TIMEMAN_STATUS": "OPENED",
                "USER_PHONE_INNER": "102",
                "WORK_PHONE": None,
                "PERSONAL_PHONE": None,
                "PERSONAL_MOBILE": "+79161110102",
            },
        }
    ]
    none = await portal.result(
        "telephony.externalCall.searchCrmEntities", {"PHONE_NUMBER": "4951234567"}
    )
    assert none == []  # no country code, no match (§6.2)
    response = await portal.rest("telephony.externalCall.searchCrmEntities", {})
    assert envelope(response) == (400, "", "PHONE_NUMBER is empty")


# ---- §4.3 register ---------------------------------------------------------------------------


async def test_s4_3_register_binds_the_matching_contact(portal: Portal) -> None:
    result = await register(
        portal, USER_ID=0, USER_PHONE_INNER="102", PHONE_NUMBER="+7 495 123-45-67"
    )
    assert result["CALL_ID"].startswith("externalCall.")
    _, hexpart, stamp = result["CALL_ID"].split(".")
    assert len(hexpart) == 32 and int(stamp) == int(T0)
    assert {k: v for k, v in result.items() if k != "CALL_ID"} == {
        "CRM_CREATED_LEAD": None,
        "CRM_CREATED_ENTITIES": [],
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": 1,
    }
    call = await call_state(portal, result["CALL_ID"])
    assert call["PHONE_NUMBER"] == "+74951234567"  # stored as sent, minus foreign characters
    assert (call["REGISTERED_USER_ID"], call["shown_to"], call["shown_now"]) == (2, [2], [2])


async def test_s4_3_register_without_match_and_with_crm_create(portal: Portal) -> None:
    plain = await register(portal, PHONE_NUMBER="79990000001")
    assert (plain["CRM_ENTITY_TYPE"], plain["CRM_ENTITY_ID"]) == ("", None)
    created = await register(portal, PHONE_NUMBER="79990000002", CRM_CREATE=1, CRM_SOURCE="CALL")
    lead_id = created["CRM_CREATED_LEAD"]
    assert created["CRM_CREATED_ENTITIES"] == [{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead_id}]
    assert (created["CRM_ENTITY_TYPE"], created["CRM_ENTITY_ID"]) == ("LEAD", lead_id)
    lead = await portal.result("crm.lead.get", {"id": lead_id})
    assert (lead["SOURCE_ID"], lead["ASSIGNED_BY_ID"]) == ("CALL", "1")
    # finishing as another user re-assigns the auto-created lead (§4.3, §4.5)
    await portal.result(
        "telephony.externalcall.finish",
        {"CALL_ID": created["CALL_ID"], "USER_ID": 3, "DURATION": 5},
    )
    lead = await portal.result("crm.lead.get", {"id": lead_id})
    assert lead["ASSIGNED_BY_ID"] == "3"


async def test_s4_3_crm_create_is_php_truthy_so_N_creates(portal: Portal) -> None:
    created = await register(portal, PHONE_NUMBER="79990000003", CRM_CREATE="N")
    assert created["CRM_CREATED_LEAD"] is not None


async def test_s4_3_internal_number_gets_no_crm(portal: Portal) -> None:
    internal = await register(portal, PHONE_NUMBER="103", CRM_CREATE=1)
    assert (internal["CRM_CREATED_LEAD"], internal["CRM_ENTITY_TYPE"]) == (None, "")


async def test_s4_3_register_errors(portal: Portal) -> None:
    async def err(**fields: Any) -> tuple[int, str, str]:
        body = {"USER_ID": 1, "PHONE_NUMBER": CALLER, "TYPE": 2, **fields}
        return envelope(await portal.rest("telephony.externalcall.register", body))

    need_user = (400, "", "USER_ID or USER_PHONE_INNER should be set")
    assert await err(USER_ID=0) == need_user
    assert await err(USER_ID=0, USER_PHONE_INNER="555") == need_user
    assert await err(USER_ID=0, USER_PHONE_INNER="104") == need_user  # 104 is inactive
    assert await err(TYPE=9) == (400, "", "Unknown TYPE")
    assert await err(CALL_START_DATE="yesterday-ish") == (
        400,
        "",
        "CALL_START_DATE should be in the ISO-8601 format",
    )
    assert await err(PHONE_NUMBER="abc") == (400, "", "Unsupported phone number format")
    assert await err(USER_ID=4) == (400, "", "User is not found or is not active")
    assert await err(USER_ID=77) == (400, "", "User is not found or is not active")
    assert (await portal.state())["calls"] == []  # rejected requests leave nothing


async def test_s1_3_switch_validation_error_code_error_core(start_portal: StartPortal) -> None:
    p = await start_portal(rate=None, switches={"validation_error": "ERROR_CORE"})
    response = await p.rest("telephony.externalcall.register", {"USER_ID": 1, "TYPE": 9})
    assert envelope(response) == (400, "ERROR_CORE", "Unknown TYPE")


async def test_s4_3_same_external_call_id_unfinished_within_30_min_reuses_call_id(
    portal: Portal,
) -> None:
    first = await register(portal, EXTERNAL_CALL_ID="linked-1", LINE_NUMBER="74957654321")
    portal.clock.advance(29 * 60)
    again = await register(portal, EXTERNAL_CALL_ID="linked-1", LINE_NUMBER="74957654321")
    assert again["CALL_ID"] == first["CALL_ID"]
    other = await register(portal, EXTERNAL_CALL_ID="linked-2", LINE_NUMBER="74957654321")
    assert other["CALL_ID"] != first["CALL_ID"]
    call = await call_state(portal, first["CALL_ID"])
    assert [(h["method"], h["dedup"]) for h in call["history"]] == [
        ("telephony.externalcall.register", False),
        ("telephony.externalcall.register", True),
    ]
    assert call["history"][1]["t"] == T0 + 29 * 60


async def test_s4_3_window_is_30_minutes_from_the_call_start(portal: Portal) -> None:
    first = await register(portal, EXTERNAL_CALL_ID="x1")
    response = await portal.client.post("/_emulator/clock", json={"offset_seconds": 31 * 60})
    assert response.json()["offset_seconds"] == 31 * 60
    later = await register(portal, EXTERNAL_CALL_ID="x1")
    assert later["CALL_ID"] != first["CALL_ID"]


async def test_s4_3_window_uses_call_start_date_when_given(portal: Portal) -> None:
    old_start = "2026-03-10T10:40:00+03:00"  # 39.6 minutes before the emulator's now
    first = await register(portal, EXTERNAL_CALL_ID="d1", CALL_START_DATE=old_start)
    again = await register(portal, EXTERNAL_CALL_ID="d1", CALL_START_DATE=old_start)
    assert again["CALL_ID"] != first["CALL_ID"]


async def test_s4_3_finished_calls_are_not_reused(portal: Portal) -> None:
    first = await register(portal, EXTERNAL_CALL_ID="f1")
    await portal.result(
        "telephony.externalcall.finish", {"CALL_ID": first["CALL_ID"], "USER_ID": 1}
    )
    again = await register(portal, EXTERNAL_CALL_ID="f1")
    assert again["CALL_ID"] != first["CALL_ID"]


async def test_s4_3_without_external_call_id_concurrent_calls_collapse(portal: Portal) -> None:
    """The b24-rest-docs#175 trap: the second finish fails."""
    a = await register(portal)
    b = await register(portal)
    assert a["CALL_ID"] == b["CALL_ID"]
    await portal.result("telephony.externalcall.finish", {"CALL_ID": a["CALL_ID"], "USER_ID": 1})
    response = await portal.rest(
        "telephony.externalcall.finish", {"CALL_ID": b["CALL_ID"], "USER_ID": 1}
    )
    assert envelope(response) == (400, "", NOT_FOUND)


async def test_s4_3_dedup_is_keyed_on_user_and_type(portal: Portal) -> None:
    a = await register(portal, EXTERNAL_CALL_ID="k")
    assert (await register(portal, EXTERNAL_CALL_ID="k", USER_ID=2))["CALL_ID"] != a["CALL_ID"]
    assert (await register(portal, EXTERNAL_CALL_ID="k", TYPE=3))["CALL_ID"] != a["CALL_ID"]


async def test_s4_3_unknown_line_is_created_silently_or_refused_by_switch(
    start_portal: StartPortal,
) -> None:
    p = await start_portal(rate=None)
    await register(p, LINE_NUMBER="74950000000")
    assert await p.result("telephony.externalLine.get") == [
        {"NUMBER": "74950000000", "NAME": "74950000000", "CRM_AUTO_CREATE": "Y"}
    ]
    strict = await start_portal(rate=None, switches={"unknown_line": "error"})
    response = await strict.rest(
        "telephony.externalcall.register",
        {"USER_ID": 1, "PHONE_NUMBER": CALLER, "TYPE": 2, "LINE_NUMBER": "7"},
    )
    assert envelope(response) == (400, "", "Could not find line with number 7")


# ---- §2.5 auth types -------------------------------------------------------------------------


async def test_s2_5_switch_telephony_webhook_deny(start_portal: StartPortal) -> None:
    p = await start_portal(rate=None, switches={"telephony_webhook": "deny"})
    wrong = (403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
    body = {"USER_ID": 1, "PHONE_NUMBER": CALLER, "TYPE": 2}
    assert envelope(await p.rest("telephony.externalcall.register", body)) == wrong
    assert envelope(await p.rest("telephony.externalcall.finish", {"CALL_ID": "x"})) == wrong
    assert envelope(await p.rest("telephony.externalline.get")) == wrong
    show = await p.rest("telephony.externalcall.show", {"CALL_ID": "x"})
    assert show.json()["result"] is False  # documented with webhook examples


# ---- §4.4 show / hide --------------------------------------------------------------------------


async def test_s4_4_show_and_hide_per_user_json_and_form_arrays(portal: Portal) -> None:
    call_id = (await register(portal, SHOW=0))["CALL_ID"]
    assert (await call_state(portal, call_id))["shown_now"] == []
    assert await portal.result(
        "telephony.externalcall.show", {"CALL_ID": call_id, "USER_ID": [2, 3]}
    )
    response = await portal.client.post(
        "/rest/1/secret/telephony.externalcall.hide",
        data={"CALL_ID": call_id, "USER_ID[0]": "3"},
    )
    assert response.json()["result"] is True
    assert await portal.result("telephony.externalcall.show", {"CALL_ID": call_id})  # default user
    call = await call_state(portal, call_id)
    assert (call["shown_to"], call["shown_now"]) == ([2, 3, 1], [2, 1])
    assert [(h["method"], h["users"]) for h in call["history"]] == [
        ("telephony.externalcall.register", []),
        ("telephony.externalcall.show", [2, 3]),
        ("telephony.externalcall.hide", [3]),
        ("telephony.externalcall.show", [1]),
    ]


async def test_s4_4_show_on_unknown_or_finished_call_is_false(portal: Portal) -> None:
    assert (
        await portal.result("telephony.externalcall.show", {"CALL_ID": "externalCall.x.1"}) is False
    )
    call_id = (await register(portal))["CALL_ID"]
    await portal.result("telephony.externalcall.finish", {"CALL_ID": call_id, "USER_ID": 1})
    assert await portal.result("telephony.externalcall.hide", {"CALL_ID": call_id}) is False


# ---- §4.5 finish -------------------------------------------------------------------------------


async def test_s4_5_finish_returns_statistics_hides_only_finisher_and_creates_activity(
    portal: Portal,
) -> None:
    call_id = (await register(portal, LINE_NUMBER="74957654321", EXTERNAL_CALL_ID="L1"))["CALL_ID"]
    await portal.result("telephony.externalcall.show", {"CALL_ID": call_id, "USER_ID": [2, 3]})
    result = await portal.result(
        "telephony.externalcall.finish",
        {"CALL_ID": call_id, "USER_ID": 2, "DURATION": 95, "VOTE": 5, "ADD_TO_CHAT": 0},
    )
    assert result["CALL_ID"] == call_id
    assert result["PORTAL_USER_ID"] == 2
    assert result["PORTAL_NUMBER"] == "74957654321"
    assert result["INCOMING"] == "2"
    assert result["CALL_DURATION"] == 95
    assert result["CALL_STATUS"] == 1
    assert result["CALL_FAILED_CODE"] == "200"
    assert result["CALL_START_DATE"] == {}
    assert result["CALL_VOTE"] == 5
    assert (result["CRM_ENTITY_TYPE"], result["CRM_ENTITY_ID"]) == ("CONTACT", 1)
    state = await portal.state()
    call = next(c for c in state["calls"] if c["CALL_ID"] == call_id)
    assert call["finished"] and call["USER_ID"] == 2
    assert call["shown_now"] == [1, 3]  # only the finishing user's card closed
    activity = state["activities"][0]
    assert activity["ID"] == str(result["CRM_ACTIVITY_ID"])
    assert activity["ORIGIN_ID"] == f"VI_{call_id}"
    assert (activity["TYPE_ID"], activity["PROVIDER_ID"], activity["DIRECTION"]) == (
        "2",
        "VOXIMPLANT_CALL",
        "1",
    )
    assert (activity["OWNER_TYPE_ID"], activity["OWNER_ID"], activity["RESPONSIBLE_ID"]) == (
        "3",
        "1",
        "2",
    )
    listed = await portal.result(
        "crm.activity.list", {"filter": {"OWNER_TYPE_ID": 3, "OWNER_ID": 1}}
    )
    assert [a["ORIGIN_ID"] for a in listed] == [f"VI_{call_id}"]


async def test_s4_5_defaults_missed_call_and_unbound_portal_number(portal: Portal) -> None:
    call_id = (await register(portal, PHONE_NUMBER="79990000009"))["CALL_ID"]
    result = await portal.result(
        "telephony.externalcall.finish", {"CALL_ID": call_id, "USER_ID": 1}
    )
    assert (result["CALL_FAILED_CODE"], result["CALL_STATUS"], result["CALL_DURATION"]) == (
        "304",
        0,
        0,
    )
    assert result["PORTAL_NUMBER"] == "REST_APP:webhook"
    assert "CRM_ENTITY_TYPE" not in result
    assert result["CRM_ACTIVITY_ID"] is None
    assert (await call_state(portal, call_id))["ADD_TO_CHAT"] is False  # [SRC] default


async def test_s4_5_switch_add_to_chat_default(start_portal: StartPortal) -> None:
    p = await start_portal(rate=None, switches={"add_to_chat_default": "1"})
    call_id = (await register(p))["CALL_ID"]
    await p.result("telephony.externalcall.finish", {"CALL_ID": call_id, "USER_ID": 1})
    assert (await call_state(p, call_id))["ADD_TO_CHAT"] is True


async def test_s4_5_finish_errors(portal: Portal) -> None:
    call_id = (await register(portal))["CALL_ID"]

    async def err(body: dict[str, Any]) -> tuple[int, str, str]:
        return envelope(await portal.rest("telephony.externalcall.finish", body))

    assert await err({"CALL_ID": 123, "USER_ID": 1}) == (
        400,
        "INVALID_ARGUMENT",
        "CALL_ID must be a string",
    )
    assert await err({"CALL_ID": call_id}) == (400, "", "USER_ID or USER_PHONE_INNER should be set")
    assert await err({"CALL_ID": "externalCall.nope.1", "USER_ID": 1}) == (400, "", NOT_FOUND)
    assert await err({"CALL_ID": call_id, "USER_ID": 4}) == (
        400,
        "",
        "User is not found or is not active",
    )
    ok = await portal.result(
        "telephony.externalcall.finish", {"CALL_ID": call_id, "USER_PHONE_INNER": "103"}
    )
    assert ok["PORTAL_USER_ID"] == 3


# ---- §4.6 attachRecord -------------------------------------------------------------------------


async def finished_call(p: Portal) -> str:
    call_id: str = (await register(p))["CALL_ID"]
    await p.result(
        "telephony.externalcall.finish", {"CALL_ID": call_id, "USER_ID": 1, "DURATION": 3}
    )
    return call_id


async def test_s4_6_attach_record_base64(portal: Portal) -> None:
    call_id = await finished_call(portal)
    audio = b"ID3" + bytes(range(200))
    result = await portal.result(
        "telephony.externalCall.attachRecord",
        {
            "CALL_ID": call_id,
            "FILENAME": "call.mp3",
            "FILE_CONTENT": base64.b64encode(audio).decode(),
        },
    )
    assert isinstance(result["FILE_ID"], int)
    call = await call_state(portal, call_id)
    assert call["records"][0]["FILENAME"] == "call.mp3"
    assert call["records"][0]["size"] == len(audio)
    stats = await portal.result("voximplant.statistic.get", {"FILTER": {"CALL_ID": call_id}})
    assert stats[0]["RECORD_FILE_ID"] == str(result["FILE_ID"])


async def test_s4_6_attach_record_errors(portal: Portal) -> None:
    live = (await register(portal, PHONE_NUMBER="79990001122"))["CALL_ID"]
    done = await finished_call(portal)

    async def err(body: dict[str, Any]) -> tuple[int, str, str]:
        return envelope(await portal.rest("telephony.externalcall.attachrecord", body))

    assert await err({"CALL_ID": done}) == (
        400,
        "",
        "Required parameters are not set. Request should contain either URL or FILENAME parameter",
    )
    assert await err({"CALL_ID": live, "FILENAME": "a.mp3", "FILE_CONTENT": "AAAA"}) == (
        400,
        "",
        "Call is not found in the statistic table. It looks like it is not finished yet.",
    )
    assert await err({"CALL_ID": done, "FILENAME": "a.ogg", "FILE_CONTENT": "AAAA"}) == (
        400,
        "",
        "Wrong file extension. Only wav and mp3 are allowed",
    )
    assert await err({"CALL_ID": done, "FILENAME": "a.wav", "FILE_CONTENT": " "}) == (
        400,
        "",
        "File content is empty.",
    )
    assert await err({"CALL_ID": done, "FILENAME": "a.wav", "FILE_CONTENT": "not base64!"}) == (
        400,
        "",
        "File content is not properly encoded. Base64 encoding is expected.",
    )


async def test_s4_6_attach_record_upload_url_flow(portal: Portal) -> None:
    call_id = await finished_call(portal)
    answer = await portal.result(
        "telephony.externalcall.attachRecord", {"CALL_ID": call_id, "FILENAME": "big.wav"}
    )
    assert answer["fieldName"] == "file"
    assert answer["uploadUrl"].startswith(f"{portal.url}/rest/upload.json?auth=")
    assert "token=telephony%7C" in answer["uploadUrl"]
    upload = await portal.client.post(
        answer["uploadUrl"], files={"file": ("big.wav", b"RIFF" + b"\0" * 1000, "audio/wav")}
    )
    assert upload.status_code == 200, upload.text
    file_id = upload.json()["result"]["FILE_ID"]
    call = await call_state(portal, call_id)
    assert call["records"] == [
        {"FILENAME": "big.wav", "size": 1004, "FILE_ID": file_id, "via": "upload"}
    ]
    again = await portal.client.post(answer["uploadUrl"], files={"file": ("big.wav", b"x")})
    assert envelope(again) == (401, "NO_AUTH_FOUND", "Wrong authorization data")


async def test_s4_6_attach_record_by_url_is_one_get(portal: Portal, receiver: Receiver) -> None:
    call_id = await finished_call(portal)
    receiver.files["rec.mp3"] = b"ID3" + b"\1" * 500
    result = await portal.result(
        "telephony.externalcall.attachrecord",
        {"CALL_ID": call_id, "RECORD_URL": f"{receiver.url}/files/rec.mp3"},
    )
    assert isinstance(result["FILE_ID"], int)
    assert (await call_state(portal, call_id))["records"][0]["size"] == 503
    missing = await portal.rest(
        "telephony.externalcall.attachrecord",
        {"CALL_ID": call_id, "RECORD_URL": f"{receiver.url}/files/none.mp3"},
    )
    assert envelope(missing) == (400, "", "Server returns HTTP error code 404")


# ---- §4.7 / §4.8 -------------------------------------------------------------------------------


async def test_s4_7_attach_transcription(portal: Portal) -> None:
    call_id = await finished_call(portal)
    messages = [{"SIDE": "User", "START_TIME": 0, "STOP_TIME": 2, "MESSAGE": "Hello"}]
    result = await portal.result(
        "telephony.call.attachTranscription", {"CALL_ID": call_id, "MESSAGES": messages}
    )
    assert result == {"TRANSCRIPT_ID": 1}
    bad = await portal.rest(
        "telephony.call.attachTranscription",
        {"CALL_ID": call_id, "MESSAGES": [{**messages[0], "SIDE": "Bot"}]},
    )
    assert envelope(bad) == (400, "", "MESSAGES[0][SIDE] should be either Client or User")


async def test_s4_8_statistic_get_filters_by_call_id_and_external_call_id(portal: Portal) -> None:
    a = (await register(portal, EXTERNAL_CALL_ID="pbx-1"))["CALL_ID"]
    b = (await register(portal, EXTERNAL_CALL_ID="pbx-2"))["CALL_ID"]
    unfinished = (await register(portal, EXTERNAL_CALL_ID="pbx-3"))["CALL_ID"]
    for call_id in (a, b):
        await portal.result("telephony.externalcall.finish", {"CALL_ID": call_id, "USER_ID": 1})
    by_call = await portal.result("voximplant.statistic.get", {"FILTER": {"CALL_ID": b}})
    assert [r["EXTERNAL_CALL_ID"] for r in by_call] == ["pbx-2"]
    by_external = await portal.result(
        "voximplant.statistic.get", {"FILTER": {"EXTERNAL_CALL_ID": "pbx-1"}}
    )
    assert [r["CALL_ID"] for r in by_external] == [a]
    row = by_external[0]
    assert all(isinstance(v, str) for v in row.values())
    assert (row["CALL_TYPE"], row["CALL_FAILED_CODE"], row["PORTAL_USER_ID"]) == ("2", "304", "1")
    everything = await portal.client.post(
        "/rest/1/secret/voximplant.statistic.get",
        data={"FILTER[>CALL_START_DATE]": "2026-03-10T00:00:00+03:00"},
    )
    assert everything.json()["total"] == 2  # unfinished calls have no statistics
    assert unfinished not in {r["CALL_ID"] for r in everything.json()["result"]}
