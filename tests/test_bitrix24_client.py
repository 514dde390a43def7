"""The Bitrix24 client against the portal emulator over real HTTP (issue 4 item 1).

Each test names the reference § it leans on. Time is the emulator's and the client's shared
:class:`ManualClock`: back-offs and waits move it, nothing sleeps for real.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from callbridge.crm.base import CrmError, ErrorKind
from callbridge.crm.bitrix24.auth import WebhookAuth
from callbridge.crm.bitrix24.batch import BatchCommand, BatchRef
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.crm.bitrix24.errors import Bitrix24Error
from callbridge.crm.bitrix24.limiter import Backoff, LeakyBucket, OperatingGuard
from callbridge.crm.bitrix24.transport import Transport
from tests.bitrix24_fixtures import (
    WEBHOOK,
    Emulator,
    EmulatorFactory,
    ManualClock,
    Served,
    emulator,
    make_emulator,
)

__all__ = ["emulator", "make_emulator"]  # fixtures used here


def never_slow() -> OperatingGuard:
    """A guard that never holds back on its own: the portal's block is what is tested."""
    return OperatingGuard(limit=480, hard=100.0)


def webhook_client(
    emu: Emulator,
    *,
    url: str | None = None,
    timeout: float = 5.0,
    limiter: LeakyBucket | None = None,
    guard: OperatingGuard | None = None,
    max_attempts: int = 4,
    max_wait: float = 30.0,
) -> Bitrix24Client:
    return Bitrix24Client(
        WebhookAuth(url or emu.webhook_url),
        transport=Transport(timeout=timeout),
        limiter=limiter or LeakyBucket(2.0, 50),
        guard=guard or OperatingGuard(),
        backoff=Backoff(base=1.0, cap=30.0, jitter=0.0),
        clock=emu.clock,
        sleep=emu.clock.sleep,
        max_attempts=max_attempts,
        max_wait=max_wait,
    )


def register_params(ext_id: str, user: int = 1) -> dict[str, Any]:
    return {
        "USER_ID": user,
        "PHONE_NUMBER": "74951234567",
        "TYPE": 2,
        "SHOW": 0,
        "EXTERNAL_CALL_ID": ext_id,
        "LINE_NUMBER": "74957654321",
    }


async def test_webhook_call_reads_users(emulator: Emulator) -> None:
    """§1.1 webhook URL form, §6.8 user.get with UF_PHONE_INNER."""
    client = webhook_client(emulator)
    answer = await client.call("user.get", {"sort": "ID"})
    names = {u["ID"]: u.get("UF_PHONE_INNER") for u in answer.result}
    assert str(names.get("1", names.get(1))) == "101"
    assert answer.total is not None and answer.total >= 4
    assert "operating" in answer.time
    assert client.auth_state.ok
    await client.close()


async def test_method_names_any_case_and_validation_error(emulator: Emulator) -> None:
    """§1.3: a method-level error arrives with an empty code and HTTP 400 → VALIDATION."""
    client = webhook_client(emulator)
    with pytest.raises(CrmError) as caught:
        await client.call("telephony.externalCall.register", {"PHONE_NUMBER": "7495", "TYPE": 2})
    assert caught.value.kind is ErrorKind.VALIDATION
    assert "USER_ID or USER_PHONE_INNER" in caught.value.description
    state = await emulator.state()
    # a validation error is not resent
    assert state["requests"]["total"] == 1
    await client.close()


async def test_renamed_portal_302_keeps_post_and_moves_base(emulator: Emulator) -> None:
    """§1.1: the old host answers 302; the body is POSTed again, later calls go direct."""
    hits: list[str] = []

    async def old_portal(request: Request) -> Response:
        hits.append(request.method)
        return RedirectResponse(emulator.base + request.url.path, status_code=302)

    old = Served(Starlette(routes=[Route("/{path:path}", old_portal, methods=["GET", "POST"])]))
    client = webhook_client(emulator, url=f"{old.url}/rest/{WEBHOOK}/")
    title = "Renamed portal lead"
    lead = await client.call("crm.lead.add", {"fields": {"TITLE": title}})
    assert int(lead.result) > 0
    leads = (await emulator.state())["leads"]
    assert [x for x in leads if x.get("TITLE") == title], "the POST body reached the new portal"
    assert client.auth.base() == emulator.webhook_url
    await client.call("user.get")
    assert hits == ["POST"]  # the second call went straight to the new address
    await client.close()
    await old.stop()


async def test_redirect_307_also_followed(emulator: Emulator) -> None:
    async def old_portal(request: Request) -> Response:
        return RedirectResponse(emulator.base + request.url.path, status_code=307)

    old = Served(Starlette(routes=[Route("/{path:path}", old_portal, methods=["POST"])]))
    client = webhook_client(emulator, url=f"{old.url}/rest/{WEBHOOK}/")
    answer = await client.call("telephony.externalcall.register", register_params("r307"))
    assert str(answer.result["CALL_ID"]).startswith("externalCall.")
    await client.close()
    await old.stop()


async def test_batch_references_and_per_command_errors(emulator: Emulator) -> None:
    """§3.3: ``$result`` references, halt=0, a failing command kept apart."""
    client = webhook_client(emulator)
    result = await client.batch(
        [
            BatchCommand("reg", "telephony.externalcall.register", register_params("b-1")),
            BatchCommand(
                "fin",
                "telephony.externalcall.finish",
                {
                    "CALL_ID": BatchRef("reg", ("CALL_ID",)),
                    "USER_ID": 1,
                    "DURATION": 12,
                    "STATUS_CODE": "200",
                    "ADD_TO_CHAT": 0,
                },
            ),
            BatchCommand(
                "bad",
                "telephony.externalcall.finish",
                {"CALL_ID": "externalCall.nope.1", "USER_ID": 1, "ADD_TO_CHAT": 0},
            ),
            BatchCommand("users", "user.get", {"filter": {"UF_PHONE_INNER": "102"}}),
        ]
    )
    call_id = result.results["reg"]["CALL_ID"]
    assert result.results["fin"]["CALL_ID"] == call_id
    assert result.errors["bad"].kind is ErrorKind.PERMANENT
    assert "Call is not found" in result.errors["bad"].description
    assert [u["ID"] for u in result.results["users"]] in (["2"], [2])
    state = await emulator.state()
    call = next(c for c in state["calls"] if c["CALL_ID"] == call_id)
    assert call["finished"] is True and call["DURATION"] == 12
    assert state["requests"]["total"] == 1  # one batch, one request
    await client.close()


async def test_batch_too_long_refused_before_sending(emulator: Emulator) -> None:
    client = webhook_client(emulator)
    with pytest.raises(Bitrix24Error) as caught:
        await client.batch([BatchCommand(f"c{i}", "user.current") for i in range(51)])
    assert caught.value.code == "ERROR_BATCH_LENGTH_EXCEEDED"
    assert (await emulator.state())["requests"]["total"] == 0
    await client.close()


async def test_down_then_back_retries_an_idempotent_read(emulator: Emulator) -> None:
    """Fault ``down``: connections reset; a read is retried with backoff until it is back."""
    await emulator.fault("down", seconds=5)
    client = webhook_client(emulator)
    answer = await client.call("user.get")
    assert answer.result
    assert client.stats.retries >= 1
    assert sum(emulator.clock.slept) >= 5  # it backed off, in the portal's time
    await client.close()


async def test_down_fails_retryable_when_it_lasts(emulator: Emulator) -> None:
    await emulator.fault("down", seconds=3600)
    client = webhook_client(emulator, max_attempts=3)
    with pytest.raises(CrmError) as caught:
        await client.call("user.get")
    assert caught.value.kind is ErrorKind.RETRYABLE
    assert caught.value.code in ("CONNECTION_LOST", "CONNECTION_FAILED")
    await client.close()


async def test_503_fault_not_resent_for_a_create(emulator: Emulator) -> None:
    """Fault ``503`` (a proxy page): retryable, but a create may have run → not resent."""
    await emulator.fault("503", seconds=3600)
    client = webhook_client(emulator)
    with pytest.raises(Bitrix24Error) as caught:
        await client.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    assert caught.value.kind is ErrorKind.RETRYABLE
    assert caught.value.status == 503
    assert client.stats.requests == 1
    # an idempotent read is retried until the fault ends
    await emulator.fault("503", seconds=2)
    assert (await client.call("user.get")).result
    await client.close()


async def test_timeout_every_request_has_one(emulator: Emulator) -> None:
    """Fault ``timeout``: the answer never comes in time; the client gives up at its timeout."""
    await emulator.fault("timeout", seconds=3600, delay=5.0)
    client = webhook_client(emulator, timeout=0.3, max_attempts=1)
    with pytest.raises(Bitrix24Error) as caught:
        await client.call("user.get")
    assert caught.value.code == "TIMEOUT"
    assert caught.value.kind is ErrorKind.RETRYABLE and caught.value.maybe_applied
    await emulator.fault("none")
    await client.close()


async def test_slow_answer_within_timeout(emulator: Emulator) -> None:
    await emulator.fault("slow", seconds=3600, delay=0.05)
    client = webhook_client(emulator, timeout=5.0)
    assert (await client.call("user.current")).result
    await emulator.fault("none")
    await client.close()


async def test_lost_answer_create_not_resent(emulator: Emulator) -> None:
    """Fault ``lost_answer``: the lead exists but we never heard; no blind second lead."""
    await emulator.fault("lost_answer", seconds=3600)
    client = webhook_client(emulator)
    with pytest.raises(Bitrix24Error) as caught:
        await client.call("crm.lead.add", {"fields": {"TITLE": "Lost answer lead"}})
    assert caught.value.retryable and caught.value.maybe_applied
    await emulator.fault("none")
    leads = (await emulator.state())["leads"]
    assert len([x for x in leads if x.get("TITLE") == "Lost answer lead"]) == 1
    await client.close()


async def test_lost_answer_register_is_idempotent_by_external_id(emulator: Emulator) -> None:
    """§4.3: resending a register with the same EXTERNAL_CALL_ID answers the same CALL_ID."""
    await emulator.fault("lost_answer", seconds=1)
    client = webhook_client(emulator)
    answer = await client.call("telephony.externalcall.register", register_params("lost-1"))
    calls = [c for c in (await emulator.state())["calls"] if c["EXTERNAL_CALL_ID"] == "lost-1"]
    assert len(calls) == 1
    assert calls[0]["CALL_ID"] == answer.result["CALL_ID"]
    assert [h["dedup"] for h in calls[0]["history"]] == [False, True]
    await client.close()


async def test_revoked_webhook_is_auth_and_recovers(emulator: Emulator) -> None:
    """Fault ``revoke``: 401 NO_AUTH_FOUND → AUTH, visible in auth_state; clears after."""
    client = webhook_client(emulator)
    await emulator.fault("revoke", seconds=3600)
    with pytest.raises(CrmError) as caught:
        await client.call("user.current")
    assert caught.value.kind is ErrorKind.AUTH and caught.value.code == "NO_AUTH_FOUND"
    assert client.auth_state.status == "rejected"
    assert client.stats.requests == 1  # an auth refusal is not retried
    await emulator.fault("none")
    await client.call("user.current")
    assert client.auth_state.ok
    await client.close()


async def test_query_limit_exceeded_backs_off_and_resends(
    make_emulator: EmulatorFactory,
) -> None:
    """§3.1: the portal's bucket is full (someone else spent it) → back off, even a create."""
    emu = await make_emulator(rate=(2.0, 5))
    # a limiter that believes the burst is 50: it will overrun the portal's 5
    client = webhook_client(emu, limiter=LeakyBucket(2.0, 50))
    for i in range(8):
        await client.call("crm.lead.add", {"fields": {"TITLE": f"lead {i}"}})
    state = await emu.state()
    assert state["requests"]["by_error"].get("QUERY_LIMIT_EXCEEDED", 0) >= 1
    assert client.stats.errors["QUERY_LIMIT_EXCEEDED"] >= 1
    titles = [x.get("TITLE") for x in state["leads"]]
    assert all(titles.count(f"lead {i}") == 1 for i in range(8))
    await client.close()


async def test_matching_limiter_never_trips_the_portal(make_emulator: EmulatorFactory) -> None:
    emu = await make_emulator(rate=(2.0, 10))
    client = webhook_client(emu, limiter=LeakyBucket(2.0, 10))
    start = emu.clock()
    for _ in range(40):
        await client.call("user.current")
    state = await emu.state()
    assert state["requests"]["by_error"].get("QUERY_LIMIT_EXCEEDED", 0) == 0
    # 8 at once, then 2 per second
    assert emu.clock() - start == pytest.approx((40 - 8) / 2.0)
    await client.close()


async def test_operation_time_limit_blocks_one_method_only(make_emulator: EmulatorFactory) -> None:
    """§3.2: 100 s per call, 480 s budget: the 6th user.get is refused; others go on."""
    emu = await make_emulator(operating_ms=100_000.0)
    client = webhook_client(emu, guard=never_slow(), max_wait=0.0)
    for _ in range(5):
        await client.call("user.get")
    with pytest.raises(Bitrix24Error) as caught:
        await client.call("user.get")
    assert caught.value.code == "OPERATION_TIME_LIMIT"
    assert caught.value.kind is ErrorKind.RETRYABLE
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    sent = (await emu.state())["requests"]["total"]
    # the same method is now held back without asking the portal again
    with pytest.raises(Bitrix24Error) as again:
        await client.call("user.get")
    assert again.value.code == "OPERATION_TIME_LIMIT"
    assert (await emu.state())["requests"]["total"] == sent
    # another method goes on
    assert (await client.call("user.current")).result
    # after the reset the method works again
    emu.clock.advance(caught.value.retry_after + 1)
    assert (await client.call("user.get")).result
    await client.close()


async def test_operating_time_watched_so_the_portal_never_blocks(
    make_emulator: EmulatorFactory,
) -> None:
    """§3.2: ``time.operating`` nearing the budget slows that method before a 429."""
    emu = await make_emulator(operating_ms=60_000.0)
    client = webhook_client(emu, guard=OperatingGuard(limit=480, hard=0.9), max_wait=3600.0)
    for _ in range(20):
        await client.call("user.get")
    state = await emu.state()
    assert state["requests"]["by_error"].get("OPERATION_TIME_LIMIT", 0) == 0
    assert max(emu.clock.slept) > 30  # it waited for the budget, in portal time
    await client.close()


async def test_secrets_never_logged(emulator: Emulator, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = webhook_client(emulator, max_attempts=2)
    await client.call("user.get")
    await emulator.fault("down", seconds=3600)
    with pytest.raises(CrmError):
        await client.call("user.get")
    await emulator.fault("revoke", seconds=3600)
    with pytest.raises(CrmError):
        await client.call("user.get")
    await emulator.fault("none")
    code = WEBHOOK.split("/")[1]
    assert caplog.records, "the client and httpx did log"
    assert any("/rest/1/***" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        assert code not in record.getMessage()
    assert code not in caplog.text
    await client.close()


async def test_bad_webhook_url_does_not_echo_secret() -> None:
    with pytest.raises(ValueError) as caught:
        WebhookAuth("https://portal.example/s3cr3t/")
    assert "s3cr3t" not in str(caught.value)


async def test_non_json_answer_is_an_error() -> None:
    async def page(request: Request) -> Response:
        return Response("<html>maintenance</html>", status_code=200, media_type="text/html")

    async def teapot(request: Request) -> Response:
        return JSONResponse({"unexpected": True}, status_code=418)

    served = Served(
        Starlette(
            routes=[
                Route("/rest/1/x/user.get", page, methods=["POST"]),
                Route("/rest/1/x/user.current", teapot, methods=["POST"]),
            ]
        )
    )
    clock = ManualClock()
    client = Bitrix24Client(
        WebhookAuth(f"{served.url}/rest/1/x/"), clock=clock, sleep=clock.sleep, max_attempts=1
    )
    with pytest.raises(Bitrix24Error) as caught:
        await client.call("user.get")
    assert caught.value.code == "BAD_ANSWER"
    assert caught.value.kind is ErrorKind.RETRYABLE and caught.value.maybe_applied
    with pytest.raises(Bitrix24Error) as other:
        await client.call("user.current")
    assert other.value.kind is ErrorKind.VALIDATION
    await client.close()
    await served.stop()
