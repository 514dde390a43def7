"""Fault injection and the control endpoints of the emulator (issue 4, item 3)."""

# fixtures are imported from the shared support module, so their parameters shadow them
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.sim_bitrix24_support import (  # noqa: F401 - fixtures
    Portal,
    Receiver,
    envelope,
    portal,
    receiver,
    start_portal,
)


async def set_fault(p: Portal, **body: Any) -> None:
    response = await p.client.post("/_emulator/faults", json=body)
    assert response.status_code == 200, response.text


async def test_fault_down_resets_rest_and_oauth_but_not_control(portal: Portal) -> None:
    await set_fault(portal, mode="down", seconds=30)
    with pytest.raises(httpx.TransportError):
        await portal.rest("profile")
    with pytest.raises(httpx.TransportError):
        await portal.client.get("/oauth/token/")
    assert (await portal.client.get("/_emulator/state")).status_code == 200
    assert (await portal.client.get("/")).status_code == 200
    portal.clock.advance(30)  # the fault runs out on the emulator's clock
    assert (await portal.rest("profile")).status_code == 200


async def test_fault_503_answers_a_proxy_page_or_json(start_portal: Any) -> None:
    p: Portal = await start_portal(rate=None)
    await set_fault(p, mode="503")
    response = await p.rest("profile")
    assert response.status_code == 503
    assert "Service Temporarily Unavailable" in response.text
    await set_fault(p, mode="none")
    assert (await p.rest("profile")).status_code == 200
    j: Portal = await start_portal(rate=None, switches={"fault_503_body": "json"})
    await set_fault(j, mode="503", seconds=5)
    assert envelope(await j.rest("profile")) == (503, "OVERLOAD_LIMIT", "Service is overloaded")


async def test_fault_timeout_holds_the_answer_and_applies_nothing(portal: Portal) -> None:
    await set_fault(portal, mode="timeout", delay=30)
    with pytest.raises(httpx.ReadTimeout):
        await portal.rest("crm.lead.add", {"fields": {"TITLE": "t"}}, timeout=0.3)
    await set_fault(portal, mode="none")
    assert len((await portal.state())["leads"]) == 1


async def test_fault_timeout_gives_up_after_delay_without_answer(portal: Portal) -> None:
    await set_fault(portal, mode="timeout", delay=0.05)
    with pytest.raises(httpx.TransportError):
        await portal.rest("profile")


async def test_fault_lost_answer_applies_then_drops(portal: Portal) -> None:
    await set_fault(portal, mode="lost_answer")
    with pytest.raises(httpx.TransportError):
        await portal.rest("crm.lead.add", {"fields": {"TITLE": "applied"}})
    await set_fault(portal, mode="none")
    titles = [lead["TITLE"] for lead in (await portal.state())["leads"]]
    assert titles[-1] == "applied"


async def test_fault_slow_answers_late(portal: Portal) -> None:
    await set_fault(portal, mode="slow", delay=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await portal.rest("profile")
    assert response.status_code == 200
    assert loop.time() - started >= 0.2


async def test_fault_revoke_webhook_and_refresh(portal: Portal, receiver: Receiver) -> None:
    install = await portal.client.post(
        "/_emulator/install", json={"handler": f"{receiver.url}/hook/i"}
    )
    creds = install.json()
    auth = receiver.events("ONAPPINSTALL")[0]["form"]["auth"]
    await set_fault(portal, mode="revoke")
    assert envelope(await portal.rest("profile")) == (
        401,
        "NO_AUTH_FOUND",
        "Wrong authorization data",
    )
    refresh = await portal.client.get(
        "/oauth/token/",
        params={
            "grant_type": "refresh_token",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
            "refresh_token": auth["refresh_token"],
        },
    )
    assert envelope(refresh) == (
        400,
        "invalid_grant",
        "Application is not installed or was removed",
    )


async def test_faults_reject_bad_bodies(portal: Portal) -> None:
    response = await portal.client.post("/_emulator/faults", json={"mode": "explode"})
    assert response.status_code == 400
    assert "mode must be one of" in response.json()["error"]
    response = await portal.client.post("/_emulator/faults", json={"mode": "slow", "delay": "x"})
    assert response.status_code == 400


async def test_control_reset_returns_to_seed_and_clock_moves(portal: Portal) -> None:
    await portal.result("crm.lead.add", {"fields": {"TITLE": "gone after reset"}})
    moved = await portal.client.post("/_emulator/clock", json={"offset_seconds": 3600})
    assert moved.json()["now"] == portal.clock.t + 3600
    assert (await portal.rest("profile")).json()["time"]["start"] == portal.clock.t + 3600
    assert (await portal.client.post("/_emulator/reset")).json() == {"ok": True}
    state = await portal.state()
    assert [lead["TITLE"] for lead in state["leads"]] == ["Website enquiry"]
    assert state["clock_offset"] == 0 and state["requests"]["total"] == 0
    names = {(u["ID"], u["NAME"], u["LAST_NAME"], u["UF_PHONE_INNER"]) for u in state["users"]}
    assert {("1", "Ivan", "Petrov", "101"), ("2", "Olga", "Smirnova", "102")} <= names
    assert ("3", "Sergey", "Volkov", "103") in names
    contact = next(c for c in state["contacts"] if c["ID"] == "1")
    assert contact["ASSIGNED_BY_ID"] == "2"
    assert state["switches"]["validation_error"] == "empty"


async def test_control_click_validates_input(portal: Portal) -> None:
    bad_user = await portal.client.post(
        "/_emulator/click", json={"user_id": 4, "phone_number": "1"}
    )
    assert bad_user.status_code == 400
    bad_line = await portal.client.post(
        "/_emulator/click", json={"user_id": 1, "phone_number": "79001234567", "line_number": "5"}
    )
    assert bad_line.json() == {"error": "no external line '5' is registered"}
    ok = await portal.client.post(
        "/_emulator/click", json={"user_id": 1, "phone_number": "79990000000"}
    )
    state = await portal.state()
    assert state["calls"][0]["CALL_ID"] == ok.json()["CALL_ID"]
    assert state["calls"][0]["CRM_CREATED_LEAD"] is not None  # line-less: CRM_AUTO_CREATE default Y


async def test_webhook_and_application_work_at_once(start_portal: Any, receiver: Receiver) -> None:
    p: Portal = await start_portal(rate=None, webhook="1/demo")
    await p.client.post("/_emulator/install", json={"handler": f"{receiver.url}/hook/i"})
    token = receiver.events("ONAPPINSTALL")[0]["form"]["auth"]["access_token"]
    by_hook = await p.client.post("/rest/1/demo/user.current", json={})
    by_app = await p.client.post("/rest/user.current", json={"auth": token})
    assert (by_hook.json()["result"]["ID"], by_app.json()["result"]["ID"]) == ("1", "9")


def test_unknown_switch_is_refused_with_the_known_names() -> None:
    from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer

    with pytest.raises(
        ValueError, match="unknown switch 'nope'; known switches: add_to_chat_default"
    ):
        EmulatorServer(EmulatorOptions(switches={"nope": "1"}))
    with pytest.raises(ValueError, match="query_limit_status must be one of 503, 429"):
        EmulatorServer(EmulatorOptions(switches={"query_limit_status": "418"}))
    with pytest.raises(ValueError, match="USER_ID/CODE"):
        EmulatorServer(EmulatorOptions(webhook="secret"))


async def test_s1_1_renamed_portal_answers_302_to_the_new_host(start_portal: Any) -> None:
    old: Portal = await start_portal(rate=None)
    new: Portal = await start_portal(rate=None)
    await set_fault(old, mode="moved", to=new.url)
    response = await old.client.post(
        "/rest/1/secret/crm.lead.add.json?x=1", json={"fields": {"TITLE": "re-posted"}}
    )
    assert response.status_code == 302
    location = response.headers["location"]
    assert location == f"{new.url}/rest/1/secret/crm.lead.add.json?x=1"
    # the client re-POSTs the body to Location instead of following as GET
    again = await new.client.post(location, json={"fields": {"TITLE": "re-posted"}})
    assert again.status_code == 200
    assert [lead["TITLE"] for lead in (await new.state())["leads"]][-1] == "re-posted"
    assert len((await old.state())["leads"]) == 1
    bad = await old.client.post("/_emulator/faults", json={"mode": "moved"})
    assert bad.status_code == 400
