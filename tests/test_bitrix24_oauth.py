"""Application mode against the emulator over real HTTP (issue 5 item 2, reference §2.2).

The emulator installs a local application by POSTing ``ONAPPINSTALL`` to a tiny handler
served here, which stores the tokens in a real SQLite :class:`TokenStore`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from callbridge.crm.base import CrmError, ErrorKind
from callbridge.crm.bitrix24.auth import OAuthAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.crm.bitrix24.limiter import LeakyBucket
from callbridge.crm.bitrix24.transport import Transport
from callbridge.store.tokens import Tokens, TokenStore
from tests.bitrix24_fixtures import Emulator, EmulatorFactory, Served, make_emulator

__all__ = ["make_emulator"]


def install_app(store: TokenStore) -> Starlette:
    """The install handler: ONAPPINSTALL's ``auth[...]`` keys into the store (§2.2)."""

    async def install(request: Request) -> Response:
        form = await request.form()
        auth = {k[5:-1]: str(v) for k, v in form.items() if k.startswith("auth[")}
        store.save(
            Tokens(
                access_token=auth["access_token"],
                refresh_token=auth["refresh_token"],
                expires=float(auth.get("expires") or 0),
                member_id=auth.get("member_id", ""),
                client_endpoint=auth.get("client_endpoint", ""),
                application_token=auth.get("application_token", ""),
                domain=auth.get("domain", ""),
                scope=auth.get("scope", ""),
            )
        )
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/install", install, methods=["POST"])])


@dataclass
class App:
    emu: Emulator
    store: TokenStore
    path: Path
    handler: Served
    client_id: str
    client_secret: str

    def client(self, store: TokenStore | None = None) -> Bitrix24Client:
        auth = OAuthAuth(
            store or self.store,
            oauth_url=self.emu.base,
            client_id=self.client_id,
            client_secret=self.client_secret,
            clock=self.emu.clock,
        )
        return Bitrix24Client(
            auth,
            transport=Transport(timeout=5.0),
            limiter=LeakyBucket(1000.0, 10_000),
            clock=self.emu.clock,
            sleep=self.emu.clock.sleep,
        )

    async def reinstall(self) -> None:
        creds = await self.emu.install(self.handler.url + "/install")
        self.client_id, self.client_secret = creds["client_id"], creds["client_secret"]


@pytest.fixture
async def app(make_emulator: EmulatorFactory, tmp_path: Path) -> AsyncIterator[App]:
    emu = await make_emulator()
    path = tmp_path / "callbridge.sqlite3"
    store = TokenStore.open(path)
    handler = Served(install_app(store))
    creds = await emu.install(handler.url + "/install")
    assert store.load() is not None, "ONAPPINSTALL reached the handler"
    yield App(emu, store, path, handler, creds["client_id"], creds["client_secret"])
    await handler.stop()
    store.close()


async def test_install_then_call(app: App) -> None:
    client = app.client()
    answer = await client.call("user.current")
    assert answer.result
    assert client.auth_state.ok
    stored = app.store.load()
    assert stored is not None and stored.application_token and stored.member_id
    await client.close()


async def test_refresh_storm_refreshes_once(app: App) -> None:
    """50 requests across one expiry → one refresh, all succeed."""
    client = app.client()
    await client.call("user.current")
    before = app.store.load()
    assert before is not None
    app.emu.clock.advance(3601)  # the access token has expired in the portal's time
    answers = await asyncio.gather(*(client.call("user.current") for _ in range(50)))
    assert all(a.result for a in answers)
    after = app.store.load()
    assert after is not None
    assert isinstance(client.auth, OAuthAuth) and client.auth.refreshes == 1
    assert after.generation == before.generation + 1
    assert after.refresh_token != before.refresh_token
    await client.close()


class CrashAfterSave(TokenStore):
    """The process dies right after the rotated tokens are durable, before they are used."""

    def save_refreshed(
        self,
        *,
        access_token: str,
        refresh_token: str,
        expires: float,
        client_endpoint: str = "",
        scope: str = "",
    ) -> int:
        super().save_refreshed(
            access_token=access_token,
            refresh_token=refresh_token,
            expires=expires,
            client_endpoint=client_endpoint,
            scope=scope,
        )
        raise SystemExit("killed between the refresh answer and the next request")


async def test_rotation_survives_a_restart(app: App) -> None:
    crashing = CrashAfterSave.open(app.path)
    client = app.client(crashing)
    await client.call("user.current")
    app.emu.clock.advance(3601)
    with pytest.raises(SystemExit):
        await client.call("user.current")
    await client.close()
    crashing.close()
    # a new process on the same file: the rotated access token works without refreshing
    restarted_store = TokenStore.open(app.path)
    restarted = app.client(restarted_store)
    assert (await restarted.call("user.current")).result
    assert isinstance(restarted.auth, OAuthAuth) and restarted.auth.refreshes == 0
    # and the rotated refresh token is the one saved: the next refresh is accepted
    app.emu.clock.advance(3601)
    assert (await restarted.call("user.current")).result
    assert restarted.auth.refreshes == 1
    await restarted.close()
    restarted_store.close()


async def test_revoked_app_stops_then_resumes_after_reinstall(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.client()
    await client.call("user.current")
    app.emu.clock.advance(3601)
    await app.emu.fault("revoke", seconds=3600)
    caplog.set_level(logging.INFO)
    with pytest.raises(CrmError) as caught:
        await client.call("user.current")
    assert caught.value.kind is ErrorKind.AUTH and caught.value.code == "invalid_grant"
    assert client.auth_state.status == "refresh_failed"
    assert "invalid_grant" in client.auth_state.reason
    assert any(
        r.levelno == logging.ERROR and "reinstalled" in r.getMessage() for r in caplog.records
    )
    stored = app.store.load()
    assert stored is not None and stored.failed_reason and "invalid_grant" in stored.failed_reason
    # sending stops: nothing more reaches the portal or the OAuth server
    sent = (await app.emu.state())["requests"]["total"]
    with pytest.raises(CrmError) as stopped:
        await client.call("user.current")
    assert stopped.value.kind is ErrorKind.AUTH
    assert (await app.emu.state())["requests"]["total"] == sent
    # a fresh process reads the failure from the store
    assert app.client(TokenStore.open(app.path)).auth_state.status == "refresh_failed"
    # the admin reinstalls: new tokens through the same store, sending resumes
    await app.emu.fault("none")
    await app.reinstall()
    assert (await client.call("user.current")).result
    assert client.auth_state.ok
    await client.close()


async def test_not_installed_is_auth(tmp_path: Path) -> None:
    store = TokenStore.open(tmp_path / "empty.sqlite3")
    auth = OAuthAuth(store, oauth_url="http://127.0.0.1:9", client_id="x", client_secret="y")
    client = Bitrix24Client(auth)
    assert client.auth_state.status == "not_installed"
    with pytest.raises(CrmError) as caught:
        await client.call("user.current")
    assert caught.value.kind is ErrorKind.AUTH
    await client.close()
    store.close()


async def test_oauth_secrets_never_logged(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = app.client()
    await client.call("user.current")
    app.emu.clock.advance(3601)
    await client.call("user.current")  # refresh: a GET carrying the client secret
    stored = app.store.load()
    assert stored is not None
    secrets = [
        app.client_secret,
        stored.access_token,
        stored.refresh_token,
        stored.application_token,
    ]
    assert any("oauth/token" in r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret not in caplog.text
    await client.close()
