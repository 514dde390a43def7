"""Bitrix24's own Python SDK, unmodified, against the emulator over HTTPS (``--tls``).

b24pysdk only speaks https and trusts the emulator's self-signed certificate through
``REQUESTS_CA_BUNDLE``. It is synchronous, so each call runs in a worker thread while the
emulator serves in the test's event loop.
"""

# fixtures are imported from the shared support module, so their parameters shadow them
# ruff: noqa: F811

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from b24pysdk import BitrixWebhook, Client
from b24pysdk.errors import BitrixAPIBadRequest, BitrixAPIUnauthorized

from tests.sim_bitrix24_support import Portal, StartPortal, start_portal  # noqa: F401

T = TypeVar("T")


async def off_loop(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


@pytest.fixture
async def sdk(
    start_portal: StartPortal, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Portal, Any]:
    cert = tmp_path / "emulator.pem"
    portal = await start_portal(rate=None, tls=True, tls_cert_out=cert)
    assert portal.url.startswith("https://127.0.0.1:")
    assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    domain = portal.url.removeprefix("https://")
    client = Client(BitrixWebhook(domain=domain, webhook_token="1/secret"))
    return portal, client


async def test_b24pysdk_telephony_register_show_finish(sdk: tuple[Portal, Any]) -> None:
    portal, client = sdk
    tel = client.telephony.external_call
    registered = await off_loop(
        lambda: (
            tel.register(
                "+74951234567", 2, user_phone_inner="101", external_call_id="sdk-1", line_number="7"
            ).result
        )
    )
    assert (registered["CRM_ENTITY_TYPE"], registered["CRM_ENTITY_ID"]) == ("CONTACT", 1)
    call_id = registered["CALL_ID"]
    assert await off_loop(lambda: tel.show(call_id=call_id, user_id=[2, 3]).result) is True
    found = await off_loop(lambda: tel.search_crm_entities("84951234567").result)
    assert found[0]["ASSIGNED_BY"]["USER_PHONE_INNER"] == "102"
    finished = await off_loop(lambda: tel.finish(call_id, user_id=2, duration=30).result)
    assert finished["CALL_STATUS"] == 1 and finished["PORTAL_USER_ID"] == 2
    state = await portal.state()
    assert state["calls"][0]["shown_now"] == [1, 3]


async def test_b24pysdk_crm_user_and_time_block(sdk: tuple[Portal, Any]) -> None:
    _, client = sdk
    lead = await off_loop(
        lambda: client.crm.lead.add(
            {"TITLE": "From SDK", "PHONE": [{"VALUE": "+79001230000", "VALUE_TYPE": "WORK"}]}
        )
    )
    lead_id = await off_loop(lambda: lead.result)
    assert isinstance(lead_id, int)
    got = await off_loop(lambda: client.crm.lead.get(lead_id).result)
    assert got["TITLE"] == "From SDK"
    users = await off_loop(lambda: client.user.get(filter={"UF_PHONE_INNER": "103"}).result)
    assert users[0]["LAST_NAME"] == "Volkov"
    time = await off_loop(lambda: client.user.get().time)
    assert time.operating_reset_at is not None and time.date_start.utcoffset() is not None


async def test_b24pysdk_batch_with_reference_and_error(sdk: tuple[Portal, Any]) -> None:
    _, client = sdk
    batch = client.call_batch(
        {
            "u": client.user.get(filter={"UF_PHONE_INNER": "102"}),
            "c": client.crm.contact.list(
                filter={"ASSIGNED_BY_ID": "$result[u][0][ID]"}, select=["ID"]
            ),
            "bad": client.telephony.external_call.finish("externalCall.none.1", user_id=1),
        }
    )
    result = await off_loop(lambda: batch.result)
    assert result.result["c"] == [{"ID": "1"}]
    assert result.result_error["bad"]["error_description"].startswith("Call is not found")
    assert result.result_total["u"] == 1
    assert result.result_time["u"].duration >= 0


async def test_b24pysdk_sees_the_real_error_classes(sdk: tuple[Portal, Any]) -> None:
    portal, client = sdk
    with pytest.raises(BitrixAPIBadRequest) as bad:
        await off_loop(lambda: client.telephony.external_call.register("abc", 2, user_id=1).result)
    assert bad.value.json_response == {
        "error": "",
        "error_description": "Unsupported phone number format",
        "time": bad.value.json_response["time"],
    }
    wrong = Client(
        BitrixWebhook(domain=portal.url.removeprefix("https://"), webhook_token="1/nope")
    )
    with pytest.raises(BitrixAPIUnauthorized):
        await off_loop(lambda: wrong.user.current().result)
