"""Install flow end to end: the emulator installs callbridge as a local application over
real HTTP; callbridge stores the credentials, binds its events and registers its lines.

The ``Stack`` here (emulator + Asterisk simulator + callbridge, all on port 0) is shared
with the click-to-call tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from callbridge.actions.originate import ClickToCallSettings
from callbridge.app import build_ami, build_services
from callbridge.config import parse_config
from callbridge.pbx.ami.client import AmiClient
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.store.app_state import AppState
from callbridge.store.db import connect
from callbridge.store.tokens import TokenStore
from callbridge.web.app import EVENTS_PATH, INSTALL_PATH, Services, create_app
from callbridge.web.install import EVENTS_TO_BIND
from callbridge.web.serve import RunningServer, bind_socket, start_server
from tests.waiting import until

LINE = "74957654321"
AMI_USER, AMI_SECRET = "callbridge", "s3cret"


@dataclass
class Stack:
    emulator: EmulatorServer
    portal: httpx.AsyncClient  # talks to the emulator's control endpoints
    sim: AsteriskSimulator
    services: Services
    server: RunningServer
    ami: AmiClient
    http: httpx.AsyncClient  # talks to callbridge
    db: Path
    app: dict[str, Any] | None = None

    async def install(self) -> dict[str, Any]:
        answer = await self.portal.post(
            "/_emulator/install", json={"handler": self.server.url + INSTALL_PATH}
        )
        assert answer.status_code == 200, answer.text
        self.app = answer.json()
        assert self.app["delivery_status"] == 200
        report = await self.services.installer.wait_setup()
        assert report is not None
        return self.app

    async def state(self) -> dict[str, Any]:
        response = await self.portal.get("/_emulator/state")
        data: dict[str, Any] = response.json()
        return data

    async def settle(self, drain: bool = True) -> None:
        """Every event the portal sent has been answered and handled (and, with ``drain``,
        every CRM operation it caused has been delivered)."""
        await self.emulator.emulator.deliverer.wait_idle()
        await self.services.dispatcher.idle()
        # Refusals reach the portal through the durable outbox, a moment later.
        pipeline = self.services.extras.get("pipeline")
        if drain and pipeline is not None:
            await until(lambda: pipeline.outbox.depth() == 0, "the outbox drained")

    def originates(self) -> list[Any]:
        return [a for a in self.sim.actions if (a.get("Action") or "").lower() == "originate"]

    async def post_event(self, body: list[tuple[str, str]]) -> httpx.Response:
        response = await self.http.post(
            EVENTS_PATH,
            content=urlencode(body),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        await self.services.dispatcher.idle()
        return response


async def make_stack(
    tmp_path: Path, settings: ClickToCallSettings | None = None, public_url: bool = True
) -> AsyncIterator[Stack]:
    emulator = EmulatorServer(EmulatorOptions(webhook=None, rate=None))
    base = await emulator.start("127.0.0.1", 0)
    sim = AsteriskSimulator(username=AMI_USER, secret=AMI_SECRET, asap=True)
    await sim.start("127.0.0.1", 0)
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    db = tmp_path / "callbridge.sqlite3"
    config = parse_config(
        {
            "ami": {
                "host": "127.0.0.1",
                "port": sim.port,
                "username": AMI_USER,
                "secret": AMI_SECRET,
                "reconnect_min": 0.05,
            },
            "bitrix24": {"oauth_url": base},
            "rules": {"lines": {LINE: LINE}},
            "web": {"listen": "127.0.0.1:0", "public_url": url if public_url else ""},
            "store": {"path": str(db)},
        },
        environ={},
    )
    ami, component = build_ami(config)
    services = build_services(config, settings=settings, ami=ami, ami_component=component)
    server = await start_server(create_app(services), "127.0.0.1", 0, services.ready, sock=sock)
    await ami.wait_connected()
    async with (
        httpx.AsyncClient(base_url=base) as portal,
        httpx.AsyncClient(base_url=server.url) as http,
    ):
        yield Stack(emulator, portal, sim, services, server, ami, http, db)
    await server.stop()
    services.extras["conn"].close()
    await sim.stop()
    await emulator.stop()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in make_stack(tmp_path):
        yield s


async def test_install_stores_binds_and_registers(stack: Stack) -> None:
    app = await stack.install()
    # Stored durably: a fresh connection to the same file sees the install.
    conn = connect(stack.db)
    stored = TokenStore(conn).load()
    assert stored is not None
    assert stored.application_token == app["application_token"]
    assert stored.member_id == app["member_id"]
    assert stored.client_endpoint.startswith(str(stack.portal.base_url).rstrip("/"))
    assert stored.access_token and stored.refresh_token
    setup = AppState(conn).get("install.setup")
    conn.close()
    assert setup["errors"] == []

    state = await stack.state()
    bound = {
        h["event"] for h in state["handlers"] if h["handler"] == stack.server.url + EVENTS_PATH
    }
    assert bound == set(EVENTS_TO_BIND)
    assert [ln["NUMBER"] for ln in state["lines"]] == [LINE]

    health = (await stack.http.get("/health")).json()
    assert health["portal"]["events_accepted"] is True
    assert health["ami"]["connected"] is True
    assert health["status"] == "ok", health["reasons"]


async def test_installing_twice_binds_nothing_twice(stack: Stack) -> None:
    await stack.install()
    report = await stack.services.installer.setup()
    assert report.errors == []
    state = await stack.state()
    assert len(state["handlers"]) == len(EVENTS_TO_BIND)
    assert len(state["lines"]) == 1


async def test_events_from_the_installed_portal_reach_handlers(stack: Stack) -> None:
    await stack.install()
    # A CRM change on the portal: ONCRMCONTACTADD goes to the bound handler.
    seen: list[str] = []

    async def record(event: Any) -> None:
        seen.append(event.name)

    stack.services.registry.register("ONCRMCONTACTADD", record)
    crm = stack.services.extras["crm_client"]
    await crm.call(
        "crm.contact.add", {"fields": {"NAME": "Olga", "PHONE": [{"VALUE": "+74951112233"}]}}
    )
    await stack.settle()
    state = await stack.state()
    deliveries = [d for d in state["deliveries"] if d["event"] == "ONCRMCONTACTADD"]
    assert deliveries and all(d["status"] == 200 for d in deliveries)
    assert seen == ["ONCRMCONTACTADD"]


async def test_uninstall_stops_sending(stack: Stack) -> None:
    app = await stack.install()
    body = [
        ("event", "ONAPPUNINSTALL"),
        ("data[CLEAN]", "0"),
        ("auth[member_id]", app["member_id"]),
        ("auth[application_token]", app["application_token"]),
    ]
    assert (await stack.post_event(body)).status_code == 200
    health = await stack.http.get("/health")
    assert health.status_code == 503
    assert any("uninstalled" in r for r in health.json()["reasons"])


async def test_another_portal_cannot_take_over(stack: Stack) -> None:
    await stack.install()
    forged = [
        ("event", "ONAPPINSTALL"),
        ("auth[access_token]", "x"),
        ("auth[refresh_token]", "y"),
        ("auth[member_id]", "attacker"),
        ("auth[application_token]", "attacker-token"),
        ("auth[client_endpoint]", "http://attacker.example/rest/"),
    ]
    response = await stack.http.post(
        INSTALL_PATH,
        content=urlencode(forged),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 409
    stored = stack.services.extras["tokens"].load()
    assert stored.member_id != "attacker"
    assert stored.client_endpoint != "http://attacker.example/rest/"


@pytest.mark.parametrize(
    "missing",
    ["access_token", "refresh_token", "member_id", "application_token", "client_endpoint"],
)
async def test_incomplete_install_is_refused(stack: Stack, missing: str) -> None:
    fields = {
        "access_token": "a",
        "refresh_token": "r",
        "member_id": "m",
        "application_token": "t",
        "client_endpoint": "http://portal.example/rest/",
    }
    del fields[missing]
    body = [("event", "ONAPPINSTALL")] + [(f"auth[{k}]", v) for k, v in fields.items()]
    response = await stack.http.post(
        INSTALL_PATH,
        content=urlencode(body),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert missing in response.json()["error"]
    assert stack.services.extras["tokens"].load() is None


async def test_interactive_install_stores_tokens_but_events_wait(stack: Stack) -> None:
    form = {
        "AUTH_ID": "access-1",
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": "refresh-1",
        "member_id": "m-42",
        "status": "L",
        "PLACEMENT": "DEFAULT",
    }
    response = await stack.http.post(
        INSTALL_PATH + "?DOMAIN=portal.example.com&PROTOCOL=1&LANG=en&APP_SID=x",
        content=urlencode(form),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert "installFinish" in response.text
    stored = stack.services.extras["tokens"].load()
    assert stored.client_endpoint == "https://portal.example.com/rest/"
    assert stored.member_id == "m-42"
    assert stored.application_token == ""
    event = [
        ("event", "ONEXTERNALCALLSTART"),
        ("data[CALL_ID]", "c1"),
        ("auth[member_id]", "m-42"),
        ("auth[application_token]", "anything"),
    ]
    assert (await stack.post_event(event)).status_code == 401


async def test_onappinstall_posted_to_the_event_endpoint_installs_too(tmp_path: Path) -> None:
    async for s in make_stack(tmp_path):
        answer = await s.portal.post(
            "/_emulator/install", json={"handler": s.server.url + EVENTS_PATH}
        )
        assert answer.json()["delivery_status"] == 200
        await s.services.installer.wait_setup()
        stored = s.services.extras["tokens"].load()
        assert stored.application_token == answer.json()["application_token"]


async def test_without_public_url_health_says_nothing_was_bound(tmp_path: Path) -> None:
    async for s in make_stack(tmp_path, public_url=False):
        await s.install()
        health = await s.http.get("/health")
        assert health.status_code == 503
        assert any("public_url" in r for r in health.json()["reasons"])
        assert (await s.state())["handlers"] == []


async def _app_tokens_without_install(stack: Stack) -> tuple[dict[str, Any], dict[str, Any]]:
    """A local application the portal made, whose ONAPPINSTALL never reached callbridge,
    and a genuine access token of it (OAuth code exchange, §2.2)."""
    app = (
        await stack.portal.post("/_emulator/install", json={"handler": "http://127.0.0.1:9/"})
    ).json()
    assert app["delivery_status"] != 200  # nobody listens there
    redirect = await stack.portal.get("/oauth/authorize/", params={"client_id": app["client_id"]})
    code = dict(httpx.QueryParams(httpx.URL(redirect.headers["location"]).query))["code"]
    tokens = (
        await stack.portal.post(
            "/oauth/token/",
            params={
                "grant_type": "authorization_code",
                "client_id": app["client_id"],
                "client_secret": app["client_secret"],
                "code": code,
            },
        )
    ).json()
    assert tokens["access_token"]
    return app, tokens


async def _interactive_install(stack: Stack, app: dict[str, Any], tokens: dict[str, Any]) -> None:
    host = httpx.URL(str(stack.portal.base_url))
    form = {
        "AUTH_ID": tokens["access_token"],
        "AUTH_EXPIRES": "3600",
        "REFRESH_ID": tokens["refresh_token"],
        "member_id": app["member_id"],
    }
    response = await stack.http.post(
        INSTALL_PATH + f"?DOMAIN={host.host}:{host.port}&PROTOCOL=0",
        content=urlencode(form),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text


def _click_event(app: dict[str, Any], access_token: str) -> list[tuple[str, str]]:
    return [
        ("event", "ONEXTERNALCALLSTART"),
        ("data[CALL_ID]", "externalCall.adopt"),
        ("data[USER_ID]", "1"),
        ("data[PHONE_NUMBER]", "74957770000"),
        ("ts", "1"),
        ("auth[access_token]", access_token),
        ("auth[member_id]", app["member_id"]),
        ("auth[application_token]", app["application_token"]),
    ]


async def test_first_genuine_event_supplies_the_application_token(stack: Stack) -> None:
    # An interactive install gives no application token (§2.2); the first event whose own
    # access token the portal accepts for this application may supply it.
    app, tokens = await _app_tokens_without_install(stack)
    await _interactive_install(stack, app, tokens)
    store = stack.services.extras["tokens"]
    assert store.load().application_token == ""
    response = await stack.post_event(_click_event(app, tokens["access_token"]))
    assert response.status_code == 200, response.text
    assert store.load().application_token == app["application_token"]


async def test_a_forged_event_cannot_supply_the_application_token(stack: Stack) -> None:
    app, tokens = await _app_tokens_without_install(stack)
    await _interactive_install(stack, app, tokens)
    store = stack.services.extras["tokens"]
    forged = _click_event(app, "made-up-access-token")
    assert (await stack.post_event(forged)).status_code == 401
    assert store.load().application_token == ""
    assert stack.originates() == []
