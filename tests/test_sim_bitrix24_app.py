"""Application mode of the emulator: OAuth server, event.* methods, event delivery (§2.2, §5)."""

# fixtures are imported from the shared support module, so their parameters shadow them
# ruff: noqa: F811

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.sim_bitrix24_support import (  # noqa: F401 - fixtures
    T0,
    Portal,
    Receiver,
    envelope,
    portal,
    receiver,
    start_portal,
)


async def install(p: Portal, rec: Receiver) -> dict[str, Any]:
    """Install a local app whose handler is the receiver; returns credentials + install auth."""
    response = await p.client.post(
        "/_emulator/install", json={"handler": f"{rec.url}/hook/install"}
    )
    assert response.status_code == 200, response.text
    creds: dict[str, Any] = response.json()
    assert creds["delivery_status"] == 200
    creds["auth"] = rec.events("ONAPPINSTALL")[-1]["form"]["auth"]
    return creds


async def app_call(p: Portal, token: str, method: str, body: dict[str, Any] | None = None) -> Any:
    response = await p.client.post(f"/rest/{method}", json={**(body or {}), "auth": token})
    assert response.status_code == 200, response.text
    return response.json()["result"]


async def test_s2_2_install_posts_onappinstall_form_encoded(
    portal: Portal, receiver: Receiver
) -> None:
    creds = await install(portal, receiver)
    assert creds["client_id"].startswith("local.")
    assert creds["client_secret"]
    post = receiver.events("ONAPPINSTALL")[0]
    assert post["content_type"] == "application/x-www-form-urlencoded"
    keys = [k for k, _ in post["pairs"]]
    assert "auth[access_token]" in keys and "auth[refresh_token]" in keys
    form = post["form"]
    assert form["data"] == {"VERSION": "1", "ACTIVE": "Y", "INSTALLED": "Y", "LANGUAGE_ID": "en"}
    assert form["ts"] == str(int(T0))
    auth = form["auth"]
    assert auth["client_endpoint"] == f"{portal.url}/rest/"
    assert auth["domain"] == portal.url.split("://")[1]
    assert auth["member_id"] == creds["member_id"]
    assert auth["application_token"] == creds["application_token"]
    assert auth["expires_in"] == "3600" and auth["status"] == "L"
    assert "telephony" in auth["scope"]
    assert (await app_call(portal, auth["access_token"], "profile"))["ID"] == "9"


async def test_s2_2_access_token_in_query_body_or_form(portal: Portal, receiver: Receiver) -> None:
    token = (await install(portal, receiver))["auth"]["access_token"]
    by_query = await portal.client.get("/rest/user.current.json", params={"auth": token})
    assert by_query.json()["result"]["ID"] == "9"
    by_form = await portal.client.post("/rest/profile", data={"auth": token})
    assert by_form.json()["result"]["ID"] == "9"


async def test_s2_2_token_expiry_refresh_rotation(start_portal: Any, receiver: Receiver) -> None:
    p: Portal = await start_portal(rate=None, token_ttl=60)
    creds = await install(p, receiver)
    access, refresh = creds["auth"]["access_token"], creds["auth"]["refresh_token"]
    p.clock.advance(61)
    expired = await p.client.post("/rest/profile", json={"auth": access})
    assert envelope(expired) == (401, "expired_token", "The access token provided has expired.")
    grant = {
        "grant_type": "refresh_token",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "refresh_token": refresh,
    }
    response = await p.client.get("/oauth/token/", params=grant)
    assert response.status_code == 200
    tokens = response.json()
    assert tokens["expires_in"] == 60 and tokens["expires"] == int(p.clock.t) + 60
    assert tokens["client_endpoint"] == f"{p.url}/rest/"
    assert tokens["domain"] == p.url.split("://")[1]  # the OAuth server's host (§2.2)
    assert tokens["member_id"] == creds["member_id"] and tokens["user_id"] == 9
    assert "application_token" not in tokens
    assert tokens["refresh_token"] != refresh
    assert (await app_call(p, tokens["access_token"], "profile"))["ID"] == "9"
    reused = await p.client.get("/oauth/token/", params=grant)
    assert envelope(reused) == (400, "invalid_grant", "Invalid refresh token")
    rotated = await p.client.post(
        "/oauth/token/", data={**grant, "refresh_token": tokens["refresh_token"]}
    )
    assert rotated.status_code == 200
    bad_secret = await p.client.get("/oauth/token/", params={**grant, "client_secret": "x"})
    assert envelope(bad_secret) == (401, "invalid_client", "Invalid client credentials")
    no_grant = await p.client.get("/oauth/token/", params={"client_id": creds["client_id"]})
    assert envelope(no_grant) == (400, "invalid_request", "Unsupported or missing grant_type")


async def test_s2_2_authorization_code_grant(portal: Portal, receiver: Receiver) -> None:
    creds = await install(portal, receiver)
    redirect = await portal.client.get(
        "/oauth/authorize/", params={"client_id": creds["client_id"], "state": "s1"}
    )
    assert redirect.status_code == 302
    location = urlsplit(redirect.headers["location"])
    assert location.path == "/hook/install"
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["state"] == "s1" and query["member_id"] == creds["member_id"]
    grant = {
        "grant_type": "authorization_code",
        "client_id": creds["client_id"],
        "client_secret": creds["client_secret"],
        "code": query["code"],
    }
    tokens = (await portal.client.get("/oauth/token/", params=grant)).json()
    assert (await app_call(portal, tokens["access_token"], "profile"))["ID"] == "9"
    again = await portal.client.get("/oauth/token/", params=grant)
    assert envelope(again) == (400, "invalid_grant", "Invalid authorization code")
    late = await portal.client.get("/oauth/authorize/", params={"client_id": creds["client_id"]})
    code = parse_qs(urlsplit(late.headers["location"]).query)["code"][0]
    portal.clock.advance(31)  # codes live 30 s
    expired = await portal.client.get("/oauth/token/", params={**grant, "code": code})
    assert envelope(expired) == (400, "invalid_grant", "Invalid authorization code")


async def test_s5_5_event_bind_get_unbind(portal: Portal, receiver: Receiver) -> None:
    token = (await install(portal, receiver))["auth"]["access_token"]
    handler = f"{receiver.url}/hook/events"
    assert await app_call(
        portal, token, "event.bind", {"event": "OnExternalCallStart", "handler": handler}
    )
    twice = await portal.client.post(
        "/rest/event.bind", json={"auth": token, "event": "ONEXTERNALCALLSTART", "handler": handler}
    )
    assert envelope(twice) == (400, "", "Handler already binded")
    unknown = await portal.client.post(
        "/rest/event.bind", json={"auth": token, "event": "ONNOTHING", "handler": handler}
    )
    assert envelope(unknown) == (400, "ERROR_EVENT_NOT_FOUND", "Event not found")
    assert await app_call(portal, token, "event.get") == [
        {"event": "ONEXTERNALCALLSTART", "handler": handler, "auth_type": "0", "offline": 0}
    ]
    state = await portal.state()
    assert state["handlers"] == [
        {"event": "ONEXTERNALCALLSTART", "handler": handler, "auth_type": 0, "app_id": 1}
    ]
    result = await app_call(
        portal, token, "event.unbind", {"event": "ONEXTERNALCALLSTART", "handler": handler}
    )
    assert result == {"count": 1}
    assert await app_call(portal, token, "event.get") == []


async def test_s5_5_event_methods_refuse_webhooks(portal: Portal) -> None:
    response = await portal.rest("event.bind", {"event": "ONCRMLEADADD", "handler": "http://x/"})
    assert envelope(response) == (
        403,
        "WRONG_AUTH_TYPE",
        "Current authorization type is denied for this method",
    )


async def bind(p: Portal, token: str, rec: Receiver, *events: str) -> str:
    handler = f"{rec.url}/hook/events"
    for event in events:
        await app_call(p, token, "event.bind", {"event": event, "handler": handler})
    return handler


async def test_s5_2_click_registers_and_sends_onexternalcallstart(
    portal: Portal, receiver: Receiver
) -> None:
    creds = await install(portal, receiver)
    token = creds["auth"]["access_token"]
    handler = await bind(portal, token, receiver, "ONEXTERNALCALLSTART")
    await app_call(portal, token, "telephony.externalLine.add", {"NUMBER": "74957654321"})
    click = await portal.client.post(
        "/_emulator/click",
        json={"user_id": 1, "phone_number": "+7 (495) 123-45-67", "line_number": "74957654321"},
    )
    call_id = click.json()["CALL_ID"]
    await portal.server.wait_deliveries()
    post = receiver.events("ONEXTERNALCALLSTART")[0]
    assert post["path"] == "/hook/events"
    assert post["content_type"] == "application/x-www-form-urlencoded"
    assert "data%5BCALL_ID%5D=" in post["raw"]  # PHP-style keys, percent-encoded
    form = post["form"]
    assert form["data"] == {
        "PHONE_NUMBER": "+7 (495) 123-45-67",
        "PHONE_NUMBER_INTERNATIONAL": "+74951234567",
        "EXTENSION": "",
        "USER_ID": "1",
        "CALL_LIST_ID": "0",
        "LINE_NUMBER": "74957654321",
        "IS_MOBILE": "0",
        "CALL_ID": call_id,
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "1",
    }
    assert form["auth"]["application_token"] == creds["application_token"]
    assert form["auth"]["member_id"] == creds["member_id"]
    assert form["auth"]["client_endpoint"] == f"{portal.url}/rest/"
    assert form["auth"]["user_id"] == "1"
    assert form["event_handler_id"] == "1" and form["ts"] == str(int(T0))
    # the event's token acts for the clicking user; the connector finishes without register
    event_token = form["auth"]["access_token"]
    assert (await app_call(portal, event_token, "user.current"))["ID"] == "1"
    await app_call(
        portal,
        event_token,
        "telephony.externalcall.finish",
        {"CALL_ID": call_id, "USER_ID": 1, "DURATION": 7},
    )
    state = await portal.state()
    call = next(c for c in state["calls"] if c["CALL_ID"] == call_id)
    assert (call["TYPE"], call["finished"], call["history"][0]["method"]) == (
        1,
        True,
        "_emulator.click",
    )
    assert [(d["event"], d["handler"], d["status"]) for d in state["deliveries"]][-1] == (
        "ONEXTERNALCALLSTART",
        handler,
        200,
    )


async def test_s5_3_callback_form_sends_onexternalcallbackstart(
    portal: Portal, receiver: Receiver
) -> None:
    token = (await install(portal, receiver))["auth"]["access_token"]
    await bind(portal, token, receiver, "ONEXTERNALCALLBACKSTART")
    response = await portal.client.post(
        "/_emulator/callback-form",
        json={"phone_number": "+74951234567", "line_number": "7", "text": "Call me"},
    )
    assert response.status_code == 200
    await portal.server.wait_deliveries()
    form = receiver.events("ONEXTERNALCALLBACKSTART")[0]["form"]
    assert form["data"] == {
        "PHONE_NUMBER": "+74951234567",
        "TEXT": "Call me",
        "VOICE": "ruinternalfemale",
        "CRM_ENTITY_TYPE": "CONTACT",
        "CRM_ENTITY_ID": "1",
        "LINE_NUMBER": "7",
    }
    assert "access_token" not in form["auth"]  # no user fired it (§5.1)
    assert (await portal.state())["calls"] == []  # nothing registered (§5.3)


async def test_s5_1_crm_changes_fire_oncrm_events_from_webhook_and_app(
    portal: Portal, receiver: Receiver
) -> None:
    token = (await install(portal, receiver))["auth"]["access_token"]
    await bind(
        portal,
        token,
        receiver,
        "ONCRMLEADADD",
        "ONCRMLEADUPDATE",
        "ONCRMLEADDELETE",
        "ONCRMCONTACTADD",
        "ONCRMCOMPANYUPDATE",
    )
    lead_id = await portal.result("crm.lead.add", {"fields": {"TITLE": "via webhook 1/secret"}})
    await app_call(portal, token, "crm.lead.update", {"id": lead_id, "fields": {"TITLE": "app"}})
    await app_call(portal, token, "crm.lead.delete", {"id": lead_id})
    await portal.result("crm.contact.add", {"fields": {"NAME": "New"}})
    await portal.result("crm.company.update", {"id": 1, "fields": {"TITLE": "Romashka JSC"}})
    await portal.result("crm.deal.add", {"fields": {"TITLE": "not subscribed"}})
    await portal.server.wait_deliveries()
    got = sorted(
        (p["form"]["event"], p["form"]["data"]["FIELDS"]["ID"]) for p in receiver.posts[1:]
    )
    assert got == sorted(
        [
            ("ONCRMLEADADD", str(lead_id)),
            ("ONCRMLEADUPDATE", str(lead_id)),
            ("ONCRMLEADDELETE", str(lead_id)),
            ("ONCRMCONTACTADD", "3"),
            ("ONCRMCOMPANYUPDATE", "1"),
        ]
    )


async def test_s5_1_failed_delivery_is_recorded_and_not_retried(
    portal: Portal, receiver: Receiver
) -> None:
    token = (await install(portal, receiver))["auth"]["access_token"]
    await bind(portal, token, receiver, "ONCRMLEADADD")
    receiver.status = 500
    await portal.result("crm.lead.add", {"fields": {"TITLE": "x"}})
    await portal.server.wait_deliveries()
    assert len(receiver.events("ONCRMLEADADD")) == 1
    deliveries = (await portal.state())["deliveries"]
    assert [(d["event"], d["status"]) for d in deliveries] == [
        ("ONAPPINSTALL", 200),
        ("ONCRMLEADADD", 500),
    ]


async def test_s5_1_unreachable_handler_is_recorded(portal: Portal, receiver: Receiver) -> None:
    token = (await install(portal, receiver))["auth"]["access_token"]
    await app_call(
        portal, token, "event.bind", {"event": "ONCRMLEADADD", "handler": "http://127.0.0.1:9/x"}
    )
    await portal.result("crm.lead.add", {"fields": {"TITLE": "x"}})
    await portal.server.wait_deliveries()
    last = (await portal.state())["deliveries"][-1]
    assert last["status"] is None and last["error"]
