"""Which operations a dispatcher round takes: every ready one, oldest first, whatever waits.

A real SQLite store and the real dispatcher; the portal is the outbox tests' portal
(:class:`PortalCrm`), asserted on by its state. The clock is driven, never waited on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.crm.base import OperationKind
from callbridge.outbox.dispatcher import OutboxSettings
from callbridge.outbox.retry import RetryPolicy
from tests.test_outbox import Rig, finish, hide, register, show

#: More calls than one round used to look at (the claim's former ``scan_calls``).
WAITING_CALLS = 1001


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    policy = RetryPolicy(base=30.0, cap=300.0)
    return Rig(tmp_path / "store.sqlite3", OutboxSettings(retry=policy))


def _park(rig: Rig, calls: int) -> None:
    """``calls`` older calls whose register waits on a retry (the portal failed them)."""
    for n in range(calls):
        rig.store.add([register(f"W{n}", phone=f"+7495{n:07d}"), finish(f"W{n}")])
    for op in rig.store.listing():
        if op.kind is OperationKind.REGISTER_CALL:
            rig.store.retry_later(op.id, "retryable: 503", rig.clock.now + 60.0, False)


async def test_ready_call_behind_a_thousand_waiting_calls_is_sent_now(rig: Rig) -> None:
    _park(rig, WAITING_CALLS)
    rig.store.add([register("NEW"), show("NEW", 1, [11])])
    moved = await rig.dispatcher.run_once()
    assert moved == 2
    [call] = rig.portal.by_external("cb-NEW")
    assert call.registers == 1 and call.shown_now == [11]
    # Nothing of the waiting calls was sent early.
    assert all(not rig.portal.by_external(f"cb-W{n}") for n in range(WAITING_CALLS))
    assert rig.portal.requests == 1


async def test_one_round_takes_the_ready_work_of_every_call_up_to_the_batch(rig: Rig) -> None:
    _park(rig, 3)
    for n in range(20):
        rig.store.add([register(f"C{n}", phone=f"+7499{n:07d}"), show(f"C{n}", 1, [11])])
    claimed = rig.store.claim(rig.clock.now, 50, 10.0, scan_calls=5)
    assert len(claimed) == 40  # 20 calls × (register + show); not 5 calls' worth
    keys = [(op.call_key, op.key) for op in claimed]
    assert keys == [(f"C{n}", k) for n in range(20) for k in ("register", "show.1")]


async def test_per_call_order_holds_behind_a_waiting_operation(rig: Rig) -> None:
    rig.store.add([register("A"), show("A", 1, [11]), hide("A", 2, [11])])
    [reg] = rig.store.claim(rig.clock.now, 1, 10.0)
    rig.store.retry_later(reg.id, "retryable: 503", rig.clock.now + 5.0, False)
    assert rig.store.claim(rig.clock.now, 50, 10.0) == []  # show waits for its register
    rig.clock.advance(5.0)
    assert [op.key for op in rig.store.claim(rig.clock.now, 50, 10.0)] == [
        "register",
        "show.1",
        "hide.2",
    ]


async def test_a_lost_show_answer_keeps_the_hide(rig: Rig) -> None:
    """A ``show`` sent with its answer lost may be on screen: the call's hides must go."""
    rig.store.add([register("A"), show("A", 1, [11, 12])])
    rig.portal.fault, rig.portal.fault_times = "lost_answer", 1
    await rig.dispatcher.run_once()
    rig.store.add([hide("A", 2, [12]), finish("A")])
    rig.clock.advance(300.0)
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.finished and call.shown_now == [], call


async def test_an_unexpected_exception_is_retried_not_dropped(rig: Rig) -> None:
    # Something that is not a CRM answer (a bug in an adapter) must neither end delivery
    # nor lose the operations it hit: they wait for a retry, outcome unknown.
    rig.portal.fault, rig.portal.fault_times = "bug", 1
    rig.store.add([register("X"), finish("X")])
    await rig.dispatcher.run_once()
    assert rig.dispatcher.crashes == 1
    assert rig.statuses("X") == {"register": "pending", "finish": "pending"}
    rig.clock.advance(600)
    await rig.drain()
    assert rig.statuses("X") == {"register": "done", "finish": "done"}
    [call] = rig.portal.by_external("cb-X")
    assert call.registers == 1
