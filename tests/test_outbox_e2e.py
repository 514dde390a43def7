"""Engine → outbox → the real Bitrix24 adapter → the emulator over real HTTP.

Assertions are on the emulator's per-call ``history`` (``GET /_emulator/state``): each call
registered once, cards shown and hidden right, finished once by the right user.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.calls import (
    CallAnswered,
    CallEnded,
    CallResult,
    CallStarted,
    CallSummary,
    Direction,
    RingingChanged,
)
from callbridge.config import Bitrix24Config
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.engine import Engine
from callbridge.outbox.dispatcher import Dispatcher
from callbridge.outbox.store import OutboxStore
from callbridge.rules import RuleSettings, UserDirectory
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from tests.test_outbox_support import Clock

T0 = 1_700_000_000.0


async def _no_wait(_seconds: float) -> None:
    await asyncio.sleep(0)


class Live:
    def __init__(self, server: EmulatorServer, crm: Bitrix24Crm, path: Path) -> None:
        self.server = server
        self.crm = crm
        self.clock = Clock(T0)
        self.store = OutboxStore.open(path, self.clock)
        self.dispatcher = Dispatcher(self.store, crm, clock=self.clock, rand=lambda: 0.5)
        self.http = httpx.AsyncClient(base_url=server.base_url)
        self.engine: Engine | None = None

    async def start_engine(self, settings: RuleSettings) -> Engine:
        directory = UserDirectory.from_users(await self.crm.users())
        self.engine = Engine(settings, self.store, directory)
        return self.engine

    async def fault(self, mode: str) -> None:
        response = await self.http.post("/_emulator/faults", json={"mode": mode})
        response.raise_for_status()

    async def calls(self) -> dict[str, dict[str, Any]]:
        response = await self.http.get("/_emulator/state")
        response.raise_for_status()
        return {c["EXTERNAL_CALL_ID"]: c for c in response.json()["calls"]}

    async def all_calls(self) -> list[dict[str, Any]]:
        response = await self.http.get("/_emulator/state")
        return list(response.json()["calls"])

    async def drain(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            if self.store.depth() == 0:
                return
            if not await self.dispatcher.run_once():
                due = self.store.next_due()
                self.clock.now = max(self.clock.now, due if due is not None else self.clock.now)
                self.clock.advance(0.001)
        assert self.store.depth() == 0, self.store.listing()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    server = EmulatorServer(EmulatorOptions(webhook="1/code", rate=None))
    base = await server.start("127.0.0.1", 0)
    crm = Bitrix24Crm.from_config(
        Bitrix24Config(webhook_url=f"{base}/rest/1/code/", timeout=5.0), sleep=_no_wait
    )
    rig = Live(server, crm, tmp_path / "store.sqlite3")
    try:
        yield rig
    finally:
        await rig.http.aclose()
        await crm.close()
        rig.store.close()
        await server.stop()


def summary(call: str, **kw: Any) -> CallSummary:
    base = CallSummary(
        linkedid=call,
        direction=Direction.INBOUND,
        external_number="74951234567",
        did="74957654321",
        operator=None,
        rang=["101", "102"],
        answered=True,
        answered_by="102",
        answered_on=None,
        final_operator="102",
        result=CallResult.ANSWERED,
        transfers=[],
        start=T0,
        answer=T0 + 6,
        end=T0 + 66,
        recordings=[],
        hangup_cause=16,
    )
    return replace(base, **kw)


def ring_group_story(call: str, number: str, t: float = T0) -> list[Any]:
    return [
        CallStarted(call, t, Direction.INBOUND, number, "74957654321", None),
        RingingChanged(call, t + 1, ("101", "102")),
        CallAnswered(call, t + 6, "102"),
        RingingChanged(call, t + 6, ()),
        CallEnded(
            call, t + 66, summary(call, external_number=number, start=t, answer=t + 6, end=t + 66)
        ),
    ]


def methods(call: dict[str, Any]) -> list[tuple[str, list[int]]]:
    return [(h["method"].rsplit(".", 1)[-1], h["users"]) for h in call["history"]]


async def test_ring_group_call_lands_with_cards_moved(live: Live) -> None:
    engine = await live.start_engine(RuleSettings(default_user_id=9))
    story = ring_group_story("c1", "74951234567")
    for event in story[:3]:  # rings, then 102 answers: sent as it happens
        engine.handle(event)
        await live.drain()
    for event in story[3:]:
        engine.handle(event)
    await live.drain()
    call = (await live.calls())["callbridge-c1"]
    assert methods(call) == [
        ("register", []),  # SHOW=0: no card from the register itself
        ("show", [1, 2]),
        ("hide", [1]),
        ("finish", [2]),
    ]
    assert call["finished"] and call["USER_ID"] == 2
    assert call["DURATION"] == 60 and call["STATUS_CODE"] == "200"
    assert call["shown_now"] == [] and call["TYPE"] == 2


@pytest.mark.parametrize("mode", ["down", "503"])
async def test_outage_mid_load_then_recovery(live: Live, mode: str) -> None:
    engine = await live.start_engine(RuleSettings(default_user_id=9))
    for n in range(12):
        for event in ring_group_story(f"c{n}", f"7495100{n:04d}", T0 + n):
            engine.handle(event)
        if n == 4:
            await live.fault(mode)
            await live.dispatcher.run_once()  # fails: the portal is out
    assert live.store.depth() > 0
    await live.fault("none")
    await live.drain()
    calls = await live.all_calls()
    assert sorted(c["EXTERNAL_CALL_ID"] for c in calls) == sorted(
        f"callbridge-c{n}" for n in range(12)
    )
    for call in calls:
        steps = [m for m, _ in methods(call) if not m.startswith(("show", "hide"))]
        assert steps == ["register", "finish"], call["history"]
        assert call["USER_ID"] == 2 and call["DURATION"] == 60 and call["shown_now"] == []


async def test_lost_answer_still_one_call(live: Live) -> None:
    engine = await live.start_engine(RuleSettings(default_user_id=9))
    await live.fault("lost_answer")
    for event in ring_group_story("c1", "74951234567"):
        engine.handle(event)
    await live.dispatcher.run_once()  # applied by the portal, answer lost
    await live.fault("none")
    await live.drain()
    calls = await live.all_calls()
    assert [c["EXTERNAL_CALL_ID"] for c in calls] == ["callbridge-c1"]
    [call] = calls
    assert [m for m, _ in methods(call)].count("finish") == 1
    assert call["finished"] and call["USER_ID"] == 2
