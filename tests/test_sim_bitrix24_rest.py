"""The emulator's REST transport, rule by rule against the reference (§1, §2.1, §3)."""

# fixtures are imported from the shared support module, so their parameters shadow them
# ruff: noqa: F811

from __future__ import annotations

from datetime import datetime

import httpx

from tests.sim_bitrix24_support import (  # noqa: F401 - fixtures
    T0,
    Portal,
    StartPortal,
    envelope,
    portal,
    start_portal,
)


async def test_s1_2_success_envelope_has_the_full_time_block(portal: Portal) -> None:
    response = await portal.rest("profile")
    assert response.status_code == 200
    body = response.json()
    assert body["result"]["ID"] == "1"
    time = body["time"]
    assert set(time) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating_reset_at",
        "operating",
    }
    assert time["start"] == T0
    assert time["duration"] == round(time["finish"] - time["start"], 6)
    assert time["date_start"] == "2026-03-10T11:19:38+03:00"
    assert datetime.fromisoformat(time["date_finish"]).utcoffset() is not None
    assert isinstance(time["operating_reset_at"], int)


async def test_s1_3_error_answers_carry_the_time_block_too(portal: Portal) -> None:
    response = await portal.rest("no.such.method")
    assert envelope(response) == (404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    assert "operating_reset_at" in response.json()["time"]


async def test_s1_1_method_names_any_case_json_suffix_and_trailing_slash(portal: Portal) -> None:
    for path in (
        "/rest/1/secret/USER.CURRENT",
        "/rest/1/secret/user.current.json",
        "/rest/1/secret/User.Current/",
        "/rest/1/secret/user.current.json/",
    ):
        response = await portal.client.post(path, json={})
        assert response.status_code == 200, path
        assert response.json()["result"]["ID"] == "1"


async def test_s1_1_form_body_with_php_nested_keys(portal: Portal) -> None:
    response = await portal.client.post(
        "/rest/1/secret/crm.lead.add",
        data={
            "fields[TITLE]": "Form lead",
            "fields[PHONE][0][VALUE]": "+79005550001",
            "fields[PHONE][0][VALUE_TYPE]": "MOBILE",
        },
    )
    assert response.status_code == 200, response.text
    lead = await portal.result("crm.lead.get", {"id": response.json()["result"]})
    assert lead["TITLE"] == "Form lead"
    assert [(p["VALUE"], p["VALUE_TYPE"]) for p in lead["PHONE"]] == [("+79005550001", "MOBILE")]


async def test_s1_1_get_query_string_is_read(portal: Portal) -> None:
    response = await portal.client.get(
        "/rest/1/secret/crm.duplicate.findbycomm",
        params={"type": "PHONE", "values[]": "74951234567"},
    )
    assert response.status_code == 200
    assert response.json()["result"] == {"CONTACT": [1]}


async def test_s1_1_get_with_json_body_is_not_read(portal: Portal) -> None:
    response = await portal.client.request(
        "GET",
        "/rest/1/secret/crm.duplicate.findbycomm",
        json={"type": "PHONE", "values": ["74951234567"]},
    )
    assert envelope(response) == (400, "", "Communication type is not defined.")


async def test_s1_3_bad_json_body_is_refused_clearly(portal: Portal) -> None:
    response = await portal.client.post(
        "/rest/1/secret/profile", content=b"{oops", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error_description"] == "Request body is not valid JSON"


# ---- §2.1 incoming webhook -------------------------------------------------------------


async def test_s2_1_wrong_webhook_code_is_no_auth_found(portal: Portal) -> None:
    response = await portal.client.post("/rest/1/wrong/profile", json={})
    assert envelope(response) == (401, "NO_AUTH_FOUND", "Wrong authorization data")
    response = await portal.client.post("/rest/2/secret/profile", json={})
    assert envelope(response) == (401, "NO_AUTH_FOUND", "Wrong authorization data")


async def test_s2_1_no_webhook_unless_configured(start_portal: StartPortal) -> None:
    p = await start_portal(webhook=None, rate=None)
    response = await p.client.post("/rest/1/secret/profile", json={})
    assert envelope(response) == (401, "NO_AUTH_FOUND", "Wrong authorization data")


async def test_s1_3_switch_bad_webhook_error_invalid_credentials(start_portal: StartPortal) -> None:
    p = await start_portal(rate=None, switches={"bad_webhook_error": "INVALID_CREDENTIALS"})
    response = await p.client.post("/rest/1/nope/profile", json={})
    assert envelope(response) == (401, "INVALID_CREDENTIALS", "Invalid request credentials")
    assert (await p.state())["switches"]["bad_webhook_error"] == "INVALID_CREDENTIALS"


async def test_s2_2_oauth_route_without_auth_is_refused(portal: Portal) -> None:
    response = await portal.client.post("/rest/profile", json={})
    assert envelope(response) == (401, "NO_AUTH_FOUND", "Wrong authorization data")
    response = await portal.client.post("/rest/profile", json={"auth": "not-a-token"})
    assert envelope(response) == (401, "invalid_token", "Unable to get application by token")


# ---- §3.1 leaky bucket -------------------------------------------------------------------


async def test_s3_1_bucket_refuses_with_503_and_drains_on_the_clock(
    start_portal: StartPortal,
) -> None:
    p = await start_portal(rate=(2.0, 5))
    for _ in range(5):
        assert (await p.rest("profile")).status_code == 200
    refused = await p.rest("profile")
    assert envelope(refused) == (503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    p.clock.advance(0.5)  # drains one request
    assert (await p.rest("profile")).status_code == 200
    assert (await p.rest("profile")).status_code == 503
    p.clock.advance(2.5)  # drains five
    for _ in range(5):
        assert (await p.rest("profile")).status_code == 200
    state = await p.state()
    assert state["requests"]["by_error"]["QUERY_LIMIT_EXCEEDED"] == 2
    assert state["requests"]["total"] == 13


async def test_s3_1_switch_query_limit_status_429(start_portal: StartPortal) -> None:
    p = await start_portal(rate=(2.0, 1), switches={"query_limit_status": "429"})
    assert (await p.rest("profile")).status_code == 200
    assert envelope(await p.rest("profile")) == (429, "QUERY_LIMIT_EXCEEDED", "Too many requests")


async def test_s3_1_rate_limit_is_on_by_default_at_2_per_second_burst_50(
    start_portal: StartPortal,
) -> None:
    p = await start_portal()
    codes = [(await p.rest("profile")).status_code for _ in range(51)]
    assert codes[:50] == [200] * 50
    assert codes[50] == 503


async def test_s3_1_a_batch_counts_as_one_request(start_portal: StartPortal) -> None:
    p = await start_portal(rate=(2.0, 2))
    cmd = {f"c{i}": "user.current" for i in range(10)}
    for _ in range(2):
        response = await p.rest("batch", {"cmd": cmd})
        assert response.status_code == 200
        assert response.json()["result"]["result_error"] == []
    assert (await p.rest("batch", {"cmd": cmd})).status_code == 503
    state = await p.state()
    assert state["requests"]["by_method"]["batch"] == 3
    assert state["requests"]["by_method"]["user.current"] == 20


# ---- §3.2 operating time -----------------------------------------------------------------


async def test_s3_2_operating_time_blocks_one_method_only(start_portal: StartPortal) -> None:
    p = await start_portal(rate=None, operating_ms=100_000, switches={"operating_limit": "250"})
    operating = []
    for _ in range(3):
        response = await p.rest("crm.lead.list")
        assert response.status_code == 200
        operating.append(response.json()["time"]["operating"])
    assert operating == [100.0, 200.0, 300.0]
    reset_at = response.json()["time"]["operating_reset_at"]
    assert reset_at == (int(T0 // 60) + 10) * 60
    blocked = await p.rest("crm.lead.list")
    assert envelope(blocked) == (
        429,
        "OPERATION_TIME_LIMIT",
        "Method is blocked due to operation time limit.",
    )
    assert blocked.json()["time"]["operating_reset_at"] == reset_at
    assert (await p.rest("crm.contact.list")).status_code == 200  # other methods go on
    p.clock.advance(reset_at - p.clock.t)
    assert (await p.rest("crm.lead.list")).status_code == 200
    assert (await p.state())["requests"]["by_error"]["OPERATION_TIME_LIMIT"] == 1


async def test_s3_2_batch_commands_count_against_their_own_method(
    start_portal: StartPortal,
) -> None:
    p = await start_portal(rate=None, operating_ms=100_000, switches={"operating_limit": "150"})
    response = await p.rest("batch", {"cmd": {"a": "crm.lead.list", "b": "crm.lead.list"}})
    result = response.json()["result"]
    assert result["result_time"]["b"]["operating"] == 200.0
    assert response.json()["time"]["operating"] == 0  # the outer batch is not counted
    response = await p.rest("batch", {"cmd": {"a": "crm.lead.list", "b": "profile"}})
    result = response.json()["result"]
    assert result["result_error"] == {
        "a": {
            "error": "OPERATION_TIME_LIMIT",
            "error_description": "Method is blocked due to operation time limit.",
        }
    }
    assert result["result"]["b"]["ID"] == "1"


# ---- §3.3 batch ------------------------------------------------------------------------


async def test_s3_3_batch_references_and_per_command_errors(portal: Portal) -> None:
    response = await portal.rest(
        "batch",
        {
            "halt": 0,
            "cmd": {
                "u": "user.get?UF_PHONE_INNER=102",
                "c": "crm.contact.list?filter[ASSIGNED_BY_ID]=$result[u][0][ID]&select[]=ID",
                "bad": "telephony.externalcall.finish?CALL_ID=nope&USER_ID=1",
                "n": "crm.lead.add?fields[TITLE]=for%20$result[u][0][NAME]",
            },
        },
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["result"]["c"] == [{"ID": "1"}]
    assert result["result_error"] == {
        "bad": {
            "error": "",
            "error_description": "Call is not found (call should be registered prior to finishing",
        }
    }
    assert result["result_total"] == {"u": 1, "c": 1}
    assert result["result_next"] == []
    assert set(result["result_time"]) == {"u", "c", "n"}
    lead = await portal.result("crm.lead.get", {"id": result["result"]["n"]})
    assert lead["TITLE"] == "for Olga"


async def test_s3_3_batch_halt_stops_at_the_first_error(portal: Portal) -> None:
    response = await portal.rest(
        "batch",
        {
            "halt": 1,
            "cmd": {"a": "profile", "b": "no.such.method", "c": "crm.lead.add?fields[TITLE]=x"},
        },
    )
    result = response.json()["result"]
    assert list(result["result"]) == ["a"]
    assert result["result_error"] == {
        "b": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    }
    assert len((await portal.state())["leads"]) == 1  # "c" never ran


async def test_s3_3_batch_list_form_gives_lists_and_next(portal: Portal) -> None:
    adds = [f"crm.lead.add?fields[TITLE]=L{i}" for i in range(50)]
    response = await portal.rest("batch", {"cmd": adds})
    assert len(response.json()["result"]["result"]) == 50
    response = await portal.rest("batch", {"cmd": ["crm.lead.list?select[]=ID", "profile"]})
    result = response.json()["result"]
    assert isinstance(result["result"], list)
    assert len(result["result"][0]) == 50
    assert result["result_total"] == [51]
    assert result["result_next"] == [50]


async def test_s3_3_batch_length_and_nested_batch(portal: Portal) -> None:
    too_many = {f"c{i}": "profile" for i in range(51)}
    response = await portal.rest("batch", {"cmd": too_many})
    assert envelope(response) == (400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
    response = await portal.rest("batch", {"cmd": {"inner": "batch?cmd[x]=profile"}})
    assert response.json()["result"]["result_error"] == {
        "inner": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        }
    }


async def test_s3_3_batch_as_form_body_with_double_encoded_queries(portal: Portal) -> None:
    response = await portal.client.post(
        "/rest/1/secret/batch",
        content="cmd[a]=user.get%3FUF_PHONE_INNER%3D103&cmd[b]=profile&halt=0",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    result = response.json()["result"]
    assert result["result"]["a"][0]["NAME"] == "Sergey"


async def test_s3_4_list_paging_total_next_and_start_minus_one(portal: Portal) -> None:
    await portal.rest("batch", {"cmd": [f"crm.lead.add?fields[TITLE]=P{i}" for i in range(50)]})
    first = (await portal.rest("crm.lead.list", {"order": {"ID": "ASC"}})).json()
    assert (len(first["result"]), first["total"], first["next"]) == (50, 51, 50)
    second = (await portal.rest("crm.lead.list", {"start": 50})).json()
    assert (len(second["result"]), second["total"]) == (1, 51)
    assert "next" not in second
    fast = (await portal.rest("crm.lead.list", {"start": -1, "filter": {">ID": 49}})).json()
    assert "total" not in fast
    assert [r["ID"] for r in fast["result"]] == ["50", "51"]


async def test_s1_1_state_counts_requests_by_method_lower_cased(portal: Portal) -> None:
    await portal.client.post("/rest/1/secret/Telephony.ExternalLine.Get", json={})
    state = await portal.state()
    assert state["requests"]["by_method"] == {"telephony.externalline.get": 1}


async def test_emulator_answers_over_plain_http_client(portal: Portal) -> None:
    async with httpx.AsyncClient() as other:
        response = await other.get(f"{portal.url}/")
    assert response.status_code == 200
    assert "Bitrix24 emulator" in response.text
    assert 'http-equiv="refresh"' in response.text
