"""The demo routes known callers to their manager through FastAGI, end to end.

Everything real, in one process: ``callbridge demo``'s Bitrix24 emulator, callbridge's
services (FastAGI server, SQLite phonebook, AMI pipeline) and the Asterisk simulator,
whose calls to the FastAGI-routed DIDs run the ``callbridge dialplan`` snippet against
callbridge over TCP before they ring anyone. Calls are the real trace 12 (DID
74957654325), replayed on demand; the caller 74951234567 is the emulator's seeded
contact Anna Kuznetsova, whose responsible is user 2 (Olga, ext 102).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.demo import DEMO_WEBHOOK, Demo, start_demo
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.routing.phonebook import Phonebook
from callbridge.sim.asterisk.agi_route import RouteResult
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.asterisk.truth import expected_calls
from callbridge.web.app import Component
from tests.sim_asterisk_support import RawAmi
from tests.waiting import until

TRACE_12 = Path(__file__).parent / "traces" / "asterisk-22.10.1" / "12-fastagi-route.ami"
CALLER = "74951234567"
WITHIN = 30.0


def demo_args(tmp_path: Path) -> argparse.Namespace:
    # No --trace and no call mix: the simulator stays idle until a test plays a call.
    return argparse.Namespace(
        trace=[],
        calls_per_minute=None,
        emulator_port=0,
        ami_port=0,
        web_port=0,
        agi_port=0,
        data_dir=str(tmp_path),
    )


class Listener:
    """A second AMI client that keeps every event the simulator plays."""

    def __init__(self, ami: RawAmi) -> None:
        self.ami = ami
        self.events: list[AmiMessage] = []

    def hung_up(self, extension: str) -> bool:
        return any(
            m.event == "Hangup" and f"/{extension}-" in (m.get("Channel") or "")
            for m in self.events
        )

    async def pump(self) -> None:
        while True:
            try:
                self.events.append(await self.ami.next())
            except (EOFError, TimeoutError):
                return


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    d = await start_demo(demo_args(tmp_path))
    # Replays play as fast as the clients read (a 13 s call takes milliseconds).
    d.sim.asap = True
    book = d.services.extras["phonebook"]
    assert isinstance(book, Phonebook)
    # The install brought credentials: callbridge syncs its phonebook at once.
    await until(lambda: book.user(2) is not None, "the phonebook synced after the install", WITHIN)
    try:
        yield d
    finally:
        await d.stop()


async def calls_of(demo: Demo, number: str) -> list[dict[str, Any]]:
    state = await demo.state()
    return [c for c in state["calls"] if c["PHONE_NUMBER"].lstrip("+") == number]


async def play_and_wait(demo: Demo) -> tuple[RouteResult, dict[str, Any]]:
    before = len(demo.sim.agi_routes)
    seen = len(await calls_of(demo, CALLER))
    demo.sim.play(TRACE_12)
    await until(lambda: len(demo.sim.agi_routes) > before, "the simulator asked FastAGI", WITHIN)
    route = demo.sim.agi_routes[-1]

    async def finished() -> bool:
        calls = await calls_of(demo, CALLER)
        return len(calls) > seen and calls[-1]["finished"]

    await until(finished, "the routed call registered and finished in the CRM", WITHIN)
    return route, (await calls_of(demo, CALLER))[-1]


def fastagi(demo: Demo) -> Component:
    for component in demo.services.components:
        if getattr(component, "name", "") == "fastagi":
            return component
    raise AssertionError("no FastAGI component in the demo's services")


async def test_demo_passes_its_fastagi_address_to_the_simulator(demo: Demo) -> None:
    host, port = demo.sim.agi or ("", 0)
    assert f"{host}:{port}" == demo.config.agi["listen"]
    async with httpx.AsyncClient() as http:
        status = (await http.get(f"http://127.0.0.1:{demo.sim.control_port}/_sim/status")).json()
    assert status["agi"] == demo.config.agi["listen"]


async def listen(demo: Demo) -> tuple[Listener, asyncio.Task[None]]:
    listener = Listener(await RawAmi.connect(demo.sim.port))
    aid = listener.ami.send("Login", Username="callbridge", Secret=demo.config.ami.secret)
    assert (await listener.ami.response(aid)).get("Response") == "Success"
    return listener, asyncio.create_task(listener.pump())


def of_channel(events: list[AmiMessage], prefix: str, event: str) -> list[AmiMessage]:
    return [m for m in events if m.event == event and (m.get("Channel") or "").startswith(prefix)]


async def test_known_caller_rings_their_manager_and_the_phone_shows_their_name(
    demo: Demo,
) -> None:
    listener, pump = await listen(demo)
    try:
        route, call = await play_and_wait(demo)
        await until(lambda: listener.hung_up("102"), "ext 102's channel hung up", WITHIN)
    finally:
        pump.cancel()
    # callbridge's route script chose the responsible manager over FastAGI.
    assert (route.via, route.agi_status, route.result) == ("route", "SUCCESS", "found")
    assert route.extension == "102" and route.caller_name == "Anna Kuznetsova"
    # The CRM card: the responsible manager's call (user 2 = ext 102).
    assert call["REGISTERED_USER_ID"] == 2 and call["USER_ID"] == 2
    assert (call["CRM_ENTITY_TYPE"], call["CRM_ENTITY_ID"]) == ("CONTACT", 1)
    # On AMI: the real exchange, then the manager's phone shows the client's name.
    commands = [m.get("Command") for m in listener.events if m.event == "AGIExecStart"]
    assert 'SET VARIABLE CALLERID(name) "Anna Kuznetsova"' in commands
    assert [m.get("ResultCode") for m in listener.events if m.event == "AGIExecEnd"] == [
        "200"
    ] * len(commands)
    dial = [m for m in listener.events if m.event == "DialBegin"]
    assert [m.get("DialString") for m in dial] == ["102"]
    assert dial[0].get("DestConnectedLineName") == "Anna Kuznetsova"
    phone = of_channel(listener.events, "PJSIP/102-", "NewConnectedLine")
    assert phone and phone[0].get("ConnectedLineName") == "Anna Kuznetsova"
    caller = of_channel(listener.events, "PJSIP/trunk-", "Hangup")
    assert caller[0].get("CallerIDName") == "Anna Kuznetsova"


async def test_a_new_responsible_manager_gets_the_next_call(demo: Demo) -> None:
    # The contact moves to Sergey (user 3, ext 103); the phonebook learns it.
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{demo.portal}/rest/{DEMO_WEBHOOK}/crm.contact.update",
            json={"id": 1, "fields": {"ASSIGNED_BY_ID": 3}},
        )
        resp.raise_for_status()
    book = demo.services.extras["phonebook"]
    assert isinstance(book, Phonebook)
    await book.full_sync()
    listener, pump = await listen(demo)
    try:
        route, call = await play_and_wait(demo)
        await until(lambda: listener.hung_up("103"), "ext 103's channel hung up", WITHIN)
    finally:
        pump.cancel()
    assert (route.via, route.extension) == ("route", "103")
    assert call["REGISTERED_USER_ID"] == 3 and call["USER_ID"] == 3
    # The recorded call to 102 was re-targeted: channel, dial string, the phone's name.
    dial = [m for m in listener.events if m.event == "DialBegin"]
    assert [(m.get("DialString"), m.get("DestCallerIDName")) for m in dial] == [
        ("103", "Sergey Volkov")
    ]
    assert not any("/102-" in (m.get("Channel") or "") for m in listener.events)


async def test_with_fastagi_stopped_the_call_goes_to_the_fallback(demo: Demo) -> None:
    await fastagi(demo).stop()
    route, call = await play_and_wait(demo)
    assert (route.via, route.agi_status, route.exchanges[0].commands) == (
        "fallback",
        "FAILURE",
        [],
    )
    assert route.extension == "101"  # the simulated PBX's fallback destination
    assert route.elapsed < 2.0  # connection refused: no wait for a dead callbridge
    assert call["REGISTERED_USER_ID"] == 1 and call["USER_ID"] == 1


async def test_the_simulators_expected_result_follows_the_route() -> None:
    # No callbridge at all on that port: every routed call takes the fallback, and the
    # tracker result the simulator publishes says so (ext 101 rang and answered).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = ("127.0.0.1", int(sock.getsockname()[1]))
    sim = AsteriskSimulator(
        traces=[TRACE_12], asap=True, expected_fn=expected_calls, agi=dead, agi_fallback="103"
    )
    await sim.start()
    ami = await RawAmi.connect(sim.port)
    try:
        aid = ami.send("Login", Username="callbridge", Secret="callbridge")
        assert (await ami.response(aid)).get("Response") == "Success"
        await until(lambda: sim.status()["finished"], "the replay finished", WITHIN)
        assert [r.extension for r in sim.agi_routes] == ["103"]
        [call] = sim.expected()
        assert (call["rang"], call["answered_by"]) == (["103"], "103")
        assert call["did"] == "74957654325"
    finally:
        ami.writer.close()
        await sim.stop()
