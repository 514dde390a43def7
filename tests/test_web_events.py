"""Event intake over real HTTP: bodies, token check, repeats, dispatch to handlers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from callbridge.actions.event import BitrixEvent
from callbridge.app import build_services
from callbridge.config import parse_config
from callbridge.store.tokens import Tokens
from callbridge.web.app import EVENTS_PATH, Services, create_app
from callbridge.web.forms import BodyError, BodyLimits, decode_body, parse_php_pairs
from callbridge.web.serve import start_server

APP_TOKEN = "51856fefc120afa4b628cc82d3935cce"
MEMBER = "a223c6b3710f85df22e9377d6c4f7553"
OUTGOING = "outgoing-webhook-token-123"


@dataclass
class Running:
    services: Services
    url: str
    http: httpx.AsyncClient
    seen: list[BitrixEvent]


def _config(tmp_path: Path, **bitrix: str) -> dict[str, object]:
    return {
        "store": {"path": str(tmp_path / "cb.sqlite3")},
        "web": {"listen": "127.0.0.1:0", "public_url": "http://127.0.0.1:9/"},
        "bitrix24": {"oauth_url": "http://127.0.0.1:9", **bitrix},
    }


async def _start(tmp_path: Path, install: bool = True, **bitrix: str) -> AsyncIterator[Running]:
    config = parse_config(_config(tmp_path, **bitrix), environ={})
    services = build_services(config)
    if install:
        services.extras["tokens"].save(
            Tokens(
                access_token="a",
                refresh_token="r",
                expires=2e9,
                member_id=MEMBER,
                client_endpoint="http://127.0.0.1:9/rest/",
                application_token=APP_TOKEN,
            )
        )
    seen: list[BitrixEvent] = []

    async def record(event: BitrixEvent) -> None:
        seen.append(event)

    services.registry.register("ONCRMCONTACTUPDATE", record)
    services.registry.register("ONEXTERNALCALLSTART", record)
    server = await start_server(create_app(services), "127.0.0.1", 0, services.ready)
    async with httpx.AsyncClient(base_url=server.url) as http:
        yield Running(services, server.url, http, seen)
    await server.stop()
    services.extras["conn"].close()


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async for r in _start(tmp_path, outgoing_token=OUTGOING):
        yield r


def _form(event: str, data: dict[str, str], token: str | None = APP_TOKEN, **extra: str) -> str:
    pairs = [("event", event), ("event_handler_id", "1055"), ("ts", "1773236988")]
    pairs += [(f"data[{k}]", v) for k, v in data.items()]
    pairs += [("auth[domain]", "example.bitrix24.com"), ("auth[member_id]", MEMBER)]
    if token is not None:
        pairs.append(("auth[application_token]", token))
    pairs += list(extra.items())
    return urlencode(pairs)


FORM = {"content-type": "application/x-www-form-urlencoded"}


async def _post(r: Running, body: str | bytes, headers: dict[str, str] = FORM) -> httpx.Response:
    response = await r.http.post(EVENTS_PATH, content=body, headers=headers)
    await r.services.dispatcher.idle()
    return response


# -- decoding (pure) ---------------------------------------------------------------------


def test_php_keys_nest_and_lists_number() -> None:
    got = parse_php_pairs(
        [("data[FIELDS][ID]", "7"), ("a[]", "x"), ("a[]", "y"), ("plain", "1"), ("b[c", "2")],
        BodyLimits(),
    )
    assert got == {
        "data": {"FIELDS": {"ID": "7"}},
        "a": {"0": "x", "1": "y"},
        "plain": "1",
        "b[c": "2",
    }


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/x-www-form-urlencoded", b"x" * 70_000, 413),
        ("application/x-www-form-urlencoded", b"event=%ff%fe", 400),
        ("application/x-www-form-urlencoded", "event=é".encode(), 400),
        ("application/x-www-form-urlencoded", b"&".join([b"a=1"] * 2000), 400),
        ("application/x-www-form-urlencoded", b"a" + b"[x]" * 20 + b"=1", 400),
        ("application/json", b"[" * 5000 + b"]" * 5000, 400),
        (
            "application/json",
            json.dumps({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}).encode(),
            400,
        ),
        ("application/json", b"{not json", 400),
        ("application/json", b"[1, 2]", 400),
        ("text/xml", b"<event/>", 415),
    ],
)
def test_hostile_bodies_are_refused(content_type: str, body: bytes, status: int) -> None:
    with pytest.raises(BodyError) as info:
        decode_body(content_type, body, BodyLimits())
    assert info.value.status == status


def test_json_means_the_same_as_its_form_twin() -> None:
    as_json = decode_body(
        "application/json",
        json.dumps({"event": "X", "data": {"A": 1, "B": True, "L": [5]}}).encode(),
        BodyLimits(),
    )
    as_form = decode_body(
        "application/x-www-form-urlencoded",
        b"event=X&data[A]=1&data[B]=1&data[L][0]=5",
        BodyLimits(),
    )
    assert as_json == as_form


# -- the endpoint ------------------------------------------------------------------------


async def test_a_genuine_event_reaches_its_handler(running: Running) -> None:
    response = await _post(running, _form("ONCRMCONTACTUPDATE", {"FIELDS][ID": "797"}))
    assert response.status_code == 200
    assert [e.name for e in running.seen] == ["ONCRMCONTACTUPDATE"]
    assert running.seen[0].data == {"FIELDS": {"ID": "797"}}


@pytest.mark.parametrize("token", ["forged-token", "", None, APP_TOKEN + "x", APP_TOKEN[:-1]])
async def test_forged_or_missing_token_is_401_and_nothing_runs(
    running: Running, token: str | None
) -> None:
    response = await _post(running, _form("ONEXTERNALCALLSTART", {"CALL_ID": "c1"}, token))
    assert response.status_code == 401
    assert running.seen == []
    assert running.services.state.seen_count() == 0  # nothing remembered either
    assert running.services.intake.refused == 1


async def test_a_refused_event_does_not_block_the_genuine_one(running: Running) -> None:
    assert (
        await _post(running, _form("ONEXTERNALCALLSTART", {"CALL_ID": "c1"}, "bad"))
    ).status_code == 401
    assert (
        await _post(running, _form("ONEXTERNALCALLSTART", {"CALL_ID": "c1"}))
    ).status_code == 200
    assert len(running.seen) == 1


async def test_other_portal_is_refused_even_with_the_token(running: Running) -> None:
    body = _form("ONCRMCONTACTUPDATE", {"FIELDS][ID": "1"}).replace(MEMBER, "someoneelse")
    assert (await _post(running, body)).status_code == 401
    assert running.seen == []


async def test_outgoing_webhook_token_is_accepted(running: Running) -> None:
    response = await _post(running, _form("ONEXTERNALCALLSTART", {"CALL_ID": "c9"}, OUTGOING))
    assert response.status_code == 200
    assert len(running.seen) == 1


async def test_replayed_event_is_ignored_even_after_a_restart(tmp_path: Path) -> None:
    body = _form("ONEXTERNALCALLSTART", {"CALL_ID": "externalCall.abc.1", "USER_ID": "1"})
    async for r in _start(tmp_path):
        assert (await _post(r, body)).json() == {"result": "accepted"}
        assert (await _post(r, body)).json() == {"result": "repeat"}
        assert len(r.seen) == 1
    async for r in _start(tmp_path, install=False):
        r.services.extras["tokens"]  # same store file: the install is still there
        assert (await _post(r, body)).json() == {"result": "repeat"}
        assert r.seen == []


async def test_two_updates_of_one_record_both_pass(running: Running) -> None:
    first = _form("ONCRMCONTACTUPDATE", {"FIELDS][ID": "5"})
    second = first.replace("ts=1773236988", "ts=1773236999")
    assert (await _post(running, first)).json() == {"result": "accepted"}
    assert (await _post(running, second)).json() == {"result": "accepted"}
    assert len(running.seen) == 2


async def test_unexpected_keys_are_tolerated(running: Running) -> None:
    body = _form(
        "ONEXTERNALCALLSTART",
        {"CALL_ID": "c2", "NEW_FIELD": "x", "CRM_CREATED_ENTITIES][0][ENTITY_TYPE": "LEAD"},
        **{"auth[expires]": "1773240000", "auth[user_id]": "1", "surprise": "yes", "x[y][z]": "1"},
    )
    assert (await _post(running, body)).status_code == 200
    assert running.seen[0].data["CRM_CREATED_ENTITIES"] == {"0": {"ENTITY_TYPE": "LEAD"}}


async def test_json_events_are_accepted(running: Running) -> None:
    body = json.dumps(
        {
            "event": "ONCRMCONTACTUPDATE",
            "data": {"FIELDS": {"ID": 12}},
            "ts": 1,
            "auth": {"application_token": APP_TOKEN, "member_id": MEMBER},
        }
    )
    response = await _post(running, body, {"content-type": "application/json"})
    assert response.status_code == 200
    assert running.seen[0].data == {"FIELDS": {"ID": "12"}}


async def test_events_without_handler_are_accepted_and_dropped(running: Running) -> None:
    assert (await _post(running, _form("ONCRMLEADADD", {"FIELDS][ID": "1"}))).status_code == 200
    assert running.seen == []


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        (b"x" * 100_000, FORM, 413),
        (b"event=%zz%", FORM, 400),
        (b"data[a]=1", FORM, 400),  # no event
        (b"event=X&" + b"a" + b"[b]" * 50 + b"=1", FORM, 400),
        (b"{}", {"content-type": "application/json"}, 400),
        (b"<xml/>", {"content-type": "application/xml"}, 415),
    ],
)
async def test_hostile_requests_get_4xx_and_do_nothing(
    running: Running, body: bytes, headers: dict[str, str], status: int
) -> None:
    assert (await _post(running, body, headers)).status_code == status
    assert running.seen == []
    assert running.services.state.seen_count() == 0


async def test_before_any_install_every_event_is_refused(tmp_path: Path) -> None:
    async for r in _start(tmp_path, install=False):
        response = await _post(r, _form("ONEXTERNALCALLSTART", {"CALL_ID": "c1"}))
        assert response.status_code == 401
        assert r.seen == []


async def test_a_code_exchange_alone_does_not_open_the_door(tmp_path: Path) -> None:
    # Tokens from an OAuth code exchange: no application token, no portal (§2.2).
    async for r in _start(tmp_path, install=False):
        r.services.extras["tokens"].save(
            Tokens(access_token="a", refresh_token="r", expires=2e9, domain="oauth.bitrix.info")
        )
        response = await _post(r, _form("ONEXTERNALCALLSTART", {"CALL_ID": "c1"}, ""))
        assert response.status_code == 401
        assert r.seen == []


async def test_health_says_why_it_is_unhealthy(tmp_path: Path) -> None:
    async for r in _start(tmp_path, install=False):
        response = await r.http.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy"
        assert any("not connected" in x or "no AMI" in x for x in body["reasons"])
        assert any("events are refused" in x for x in body["reasons"])
        assert body["store"] == {"ok": True}
