"""The registration priority reads the FastAGI phonebook, not the CRM, per call.

Real parts: the Bitrix24 emulator over HTTP (webhook mode), callbridge's services as
``callbridge run`` builds them (outbox, dispatcher, SQLite phonebook), and the Asterisk
simulator replaying trace 01 (caller 74951234567 → DID 74957654321 → ext 101). The
caller's number belongs to two CRM entities: the seeded contact Anna Kuznetsova and a
company added here; ``registration_priority`` puts companies first.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.app import build_ami, build_services, phonebook_entities
from callbridge.config import Config, parse_config
from callbridge.routing.phonebook import Phonebook
from callbridge.routing.source import Bitrix24PhonebookSource
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.store.db import connect
from callbridge.store.phonebook import PhonebookStore
from callbridge.web.app import create_app
from callbridge.web.serve import RunningServer, start_server
from tests.stack_support import portal_state
from tests.waiting import until

TRACE_01 = Path(__file__).parent / "traces" / "asterisk-22.10.1" / "01-inbound-answered.ami"
CALLER = "74951234567"
SEARCH = "telephony.externalcall.searchCrmEntities"
HOST = "127.0.0.1"


@dataclass
class Stack:
    emulator: EmulatorServer
    portal: str
    sim: AsteriskSimulator
    web: RunningServer
    phonebook: Phonebook | None
    company_id: int

    async def state(self) -> dict[str, Any]:
        return await portal_state(self.portal, http_timeout=10)

    async def searches(self) -> int:
        by_method = (await self.state())["requests"]["by_method"]
        return sum(n for m, n in by_method.items() if m.lower() == SEARCH.lower())

    async def finished_call(self) -> dict[str, Any]:
        async def done() -> bool:
            calls = [c for c in (await self.state())["calls"] if CALLER in c["PHONE_NUMBER"]]
            return bool(calls) and calls[-1]["finished"]

        await until(done, "the caller's call registered and finished", 30.0)
        calls = [c for c in (await self.state())["calls"] if CALLER in c["PHONE_NUMBER"]]
        last: dict[str, Any] = calls[-1]
        return last


def config(portal: str, ami_port: int, tmp_path: Path, *, agi: bool) -> Config:
    data: dict[str, Any] = {
        "ami": {
            "host": HOST,
            "port": ami_port,
            "username": "callbridge",
            "secret": "callbridge",
            "reconnect_min": 0.2,
            "reconnect_max": 2.0,
        },
        "bitrix24": {"webhook_url": f"{portal}/rest/1/prio/"},
        "rules": {"registration_priority": ["company", "contact", "lead"]},
        "web": {"listen": f"{HOST}:0"},
        "store": {"path": str(tmp_path / "callbridge.sqlite3")},
    }
    if agi:
        data["agi"] = {"listen": f"{HOST}:0"}
    return parse_config(data, {})


async def start_stack(tmp_path: Path, *, agi: bool) -> Stack:
    emulator = EmulatorServer(EmulatorOptions(webhook="1/prio"))
    portal = await emulator.start(HOST, 0)
    async with httpx.AsyncClient(timeout=10) as http:
        resp = await http.post(
            f"{portal}/rest/1/prio/crm.company.add",
            json={
                "fields": {
                    "TITLE": "Kuznetsova & Sons",
                    "ASSIGNED_BY_ID": 3,
                    "PHONE": [{"VALUE": "+7 495 123 45 67", "VALUE_TYPE": "WORK"}],
                }
            },
        )
        resp.raise_for_status()
        company_id = int(resp.json()["result"])
    # Idle until the test plays the trace (no mix, no replay at login).
    sim = AsteriskSimulator(asap=True, rebase_time=True)
    await sim.start(HOST, 0)
    cfg = config(portal, sim.port, tmp_path, agi=agi)
    ami, ami_component = build_ami(cfg)
    services = build_services(cfg, ami=ami, ami_component=ami_component)
    web = await start_server(create_app(services), HOST, 0, services.ready)
    book = services.extras["phonebook"]
    phonebook = book if isinstance(book, Phonebook) else None
    if phonebook is not None:
        await phonebook.full_sync()  # `callbridge phonebook sync`
    await until(lambda: sim.timeline is not None, "callbridge logged in to AMI", 30.0)
    return Stack(emulator, portal, sim, web, phonebook, company_id)


@contextlib.asynccontextmanager
async def running_stack(tmp_path: Path, *, agi: bool) -> AsyncIterator[Stack]:
    stack = await start_stack(tmp_path, agi=agi)
    try:
        yield stack
    finally:
        await stack.web.stop()
        await stack.sim.stop()
        await stack.emulator.stop()


@pytest.fixture
async def with_phonebook(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, agi=True) as stack:
        yield stack


@pytest.fixture
async def without_phonebook(tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(tmp_path, agi=False) as stack:
        yield stack


async def test_registration_priority_reads_the_phonebook_without_asking_the_crm(
    with_phonebook: Stack,
) -> None:
    stack = with_phonebook
    before = await stack.searches()
    stack.sim.play(TRACE_01)
    call = await stack.finished_call()
    # Companies first: the company holding the number, not the contact.
    assert (call["CRM_ENTITY_TYPE"], call["CRM_ENTITY_ID"]) == ("COMPANY", stack.company_id)
    assert await stack.searches() == before == 0


async def test_without_a_phonebook_the_priority_still_asks_the_crm_per_call(
    without_phonebook: Stack,
) -> None:
    stack = without_phonebook
    assert stack.phonebook is None
    stack.sim.play(TRACE_01)
    call = await stack.finished_call()
    assert (call["CRM_ENTITY_TYPE"], call["CRM_ENTITY_ID"]) == ("COMPANY", stack.company_id)
    assert await stack.searches() == 1


class _Portal:
    """Counts the phonebook source's requests to the emulator."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.methods: list[str] = []

    async def call(self, method: str, params: Any) -> Any:
        self.methods.append(method)
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(f"{self.base}/rest/1/prio/{method}", json=params)
            resp.raise_for_status()
            return resp.json()


async def test_phonebook_entities_rank_and_answer_from_the_store(tmp_path: Path) -> None:
    emulator = EmulatorServer(EmulatorOptions(webhook="1/prio"))
    portal = await emulator.start(HOST, 0)
    try:
        source = _Portal(portal)
        book = Phonebook(
            PhonebookStore(connect(tmp_path / "pb.sqlite3")), Bitrix24PhonebookSource(source.call)
        )
        await book.full_sync()
        source.methods.clear()
        lookup = phonebook_entities(book)
        assert await lookup("8 (495) 123-45-67") == [{"type": "contact", "id": 1, "responsible": 2}]
        assert await lookup("+7 926 000 00 00") == []  # asked the CRM once …
        assert await lookup("+7 926 000 00 00") == []  # … then remembered as a miss
        assert source.methods == ["crm.duplicate.findbycomm"]
    finally:
        await emulator.stop()
    # The portal is gone: a number the store does not hold cannot be told, so the
    # dispatcher will ask the CRM itself (None); a stored one still answers.
    assert await lookup("+7 926 111 11 11") is None
    assert await lookup("+74951234567") == [{"type": "contact", "id": 1, "responsible": 2}]
