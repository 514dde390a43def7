"""Engine → outbox → the real Bitrix24 adapter → the emulator over real HTTP.

Assertions are on the emulator's per-call ``history`` (``GET /_emulator/state``): each call
registered once, cards shown and hidden right, finished once by the right user.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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
from callbridge.rules import RuleSettings
from tests.stack_support import T0, Live, live

__all__ = ["live"]  # the fixture, imported for pytest to find


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
