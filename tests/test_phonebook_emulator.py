"""The phonebook against the Bitrix24 emulator over real HTTP: full sync through the real
client, then routing answers while the emulated portal is slow or down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from callbridge.crm.bitrix24.auth import WebhookAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.pbx.agi import AgiServer
from callbridge.routing.dialplan import render
from callbridge.routing.phonebook import CrmChangeQueue, LookupState, Phonebook
from callbridge.routing.scripts import RoutingScripts
from callbridge.routing.settings import RoutingSettings
from callbridge.routing.source import Bitrix24PhonebookSource
from callbridge.sim.asterisk.dialplan import Channel, DialplanRunner, parse_dialplan
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.store.db import connect
from callbridge.store.phonebook import PhonebookStore


@dataclass
class Portal:
    server: EmulatorServer
    client: Bitrix24Client
    phonebook: Phonebook

    async def fault(self, **body: object) -> None:
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{self.server.base_url}/_emulator/faults", json=body)
            answer.raise_for_status()


@pytest.fixture
async def portal(tmp_path: Path) -> AsyncIterator[Portal]:
    server = EmulatorServer(EmulatorOptions(webhook="1/secretcode", rate=None))
    base = await server.start("127.0.0.1", 0)
    client = Bitrix24Client(WebhookAuth(f"{base}/rest/1/secretcode/"), timeout=5.0)
    phonebook = Phonebook(
        PhonebookStore(connect(tmp_path / "pb.sqlite3")), Bitrix24PhonebookSource(client.call)
    )
    yield Portal(server, client, phonebook)
    await phonebook.close()
    await client.close()
    await server.stop()


async def add_contact(client: Bitrix24Client, name: str, phone: str, assigned: int) -> int:
    answer = await client.call(
        "crm.contact.add",
        {
            "fields": {
                "NAME": name,
                "LAST_NAME": "Client",
                "ASSIGNED_BY_ID": assigned,
                "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}],
            }
        },
    )
    return int(answer.result)


async def test_full_sync_over_http_finds_the_number_zoo(portal: Portal) -> None:
    contact_id = await add_contact(portal.client, "Zoo", "+7 (926) 111-22-33", 2)
    report = await portal.phonebook.full_sync()
    assert report.users == len(portal.server.state.users)
    assert report.entities["contact"] >= 1
    for spelling in ("89261112233", "+7 926 111 22 33", "9261112233", "7-926-111-22-33"):
        hit = portal.phonebook.lookup_local(spelling)
        assert hit is not None and hit.state is LookupState.FOUND, spelling
        assert (hit.entities[0].id, hit.entities[0].responsible_id) == (contact_id, 2)
    olga = portal.phonebook.user(2)
    assert olga is not None and (olga.extension, olga.active) == ("102", True)
    pavel = portal.phonebook.user(4)
    assert pavel is not None and not pavel.active


async def test_update_event_is_applied_from_the_portal(portal: Portal) -> None:
    contact_id = await add_contact(portal.client, "Before", "+7 926 000 11 22", 1)
    await portal.client.call(
        "crm.contact.update", {"id": contact_id, "fields": {"NAME": "After", "ASSIGNED_BY_ID": 3}}
    )
    await portal.phonebook.apply_crm_event("ONCRMCONTACTUPDATE", {"FIELDS": {"ID": contact_id}})
    hit = portal.phonebook.lookup_local("89260001122")
    assert hit is not None
    assert (hit.entities[0].name, hit.entities[0].responsible_id) == ("After Client", 3)


async def test_incremental_sync_picks_up_new_contacts(portal: Portal) -> None:
    await portal.phonebook.full_sync()
    await add_contact(portal.client, "Late", "+7 926 333 44 55", 2)
    assert await portal.phonebook.incremental_sync() >= 1
    assert portal.phonebook.lookup_local("+79263334455") is not None


@pytest.mark.parametrize("fault", [{"mode": "slow", "delay": 3.0}, {"mode": "down"}])
async def test_slow_or_down_portal_gives_the_fallback_within_the_deadline(
    portal: Portal, fault: dict[str, object]
) -> None:
    await portal.phonebook.full_sync()
    await portal.fault(**fault)
    settings = RoutingSettings(deadline=0.3)
    scripts = RoutingScripts(
        portal.phonebook, settings, now=lambda: datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    )
    async with AgiServer(scripts.handlers(), port=0) as server:
        plan = parse_dialplan(render(replace(settings, listen_port=server.port)))
        for number in ("+7 999 000 00 01", "+7 999 000 00 02"):
            channel = Channel(caller_num=number, variables={"FROM_DID": "74957654325"})
            out = await DialplanRunner(plan).run(settings.context, "s", channel)
            assert out.kind == "return" and out.dials == []
            assert out.variables["CB_RESULT"] == "fallback"
            assert out.agi[0].elapsed < 0.3
    await portal.fault(mode="none")


async def _lead(client: Bitrix24Client, phone: str) -> int:
    answer = await client.call(
        "crm.lead.add", {"fields": {"TITLE": f"Call {phone}", "PHONE": [{"VALUE": phone}]}}
    )
    return int(answer.result)


async def test_a_burst_of_new_leads_is_read_back_in_one_request(portal: Portal) -> None:
    # Every unknown caller becomes a lead and the portal sends ONCRMLEADADD for each:
    # the queue re-reads them together, so a burst costs one request, not one per lead.
    ids = [await _lead(portal.client, f"+7926555{n:04d}") for n in range(12)]
    waited: list[float] = []

    async def no_wait(seconds: float) -> None:
        waited.append(seconds)

    queue = CrmChangeQueue(portal.phonebook, window=1.0, sleep=no_wait)
    before = portal.server.state.requests.by_method.get("crm.lead.list", 0)
    for lead_id in ids:
        queue.submit("ONCRMLEADADD", {"FIELDS": {"ID": str(lead_id)}})
    queue.submit("ONCRMLEADDELETE", {"FIELDS": {"ID": str(ids[0])}})
    await queue.flush()
    after = portal.server.state.requests.by_method.get("crm.lead.list", 0)
    assert after - before == 1
    assert queue.flushes == 1
    gone = portal.phonebook.lookup_local("89265550000")  # deleted in the same burst
    assert gone is None or gone.state is not LookupState.FOUND
    for n in range(1, 12):
        hit = portal.phonebook.lookup_local(f"8926555{n:04d}")
        assert hit is not None and hit.state is LookupState.FOUND, n


async def test_a_malformed_change_event_does_not_block_the_others(portal: Portal) -> None:
    lead_id = await _lead(portal.client, "+79267770011")
    with pytest.raises(ValueError, match="data\\[FIELDS\\]\\[ID\\]"):
        await portal.phonebook.apply_crm_events(
            [("ONCRMLEADADD", {"FIELDS": {}}), ("ONCRMLEADADD", {"FIELDS": {"ID": lead_id}})]
        )
    hit = portal.phonebook.lookup_local("89267770011")
    assert hit is not None and hit.state is LookupState.FOUND
