"""The legs of a transferred call land on the timeline of its CRM entity (issue 6, item 1).

Real parts end to end: the AMI simulator replays a shared trace over TCP, the pipeline
(AMI client → tracker → engine → SQLite outbox → Bitrix24 adapter) sends over HTTP to the
emulator, and the assertions read the emulator's state. ``finish`` cannot carry a
description (reference §4.5), so the engine queues ``crm.timeline.comment.add`` (§6.7) on
the entity ``finish`` answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.config import Config, parse_config
from callbridge.crm.base import CrmOperation, OperationKind, ResultRef
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.outbox.store import OutboxStore, StoredOp
from callbridge.pipeline import build_pipeline
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.stack_support import portal_state, run_until, running_portal, stack_config
from tests.waiting import until

TRACES = Path(__file__).parent / "traces" / "asterisk-22.10.1"
TRANSFER = TRACES / "09-inbound-blind-transfer.ami"
PLAIN = TRACES / "01-inbound-answered.ami"
#: The seeded contact carrying the caller's number (+7 (495) 123-45-67).
CONTACT = ("contact", "1")


@pytest.fixture
async def portal() -> AsyncIterator[str]:
    async with running_portal("1/legs") as base:
        yield base


@pytest.fixture
async def start_sim() -> AsyncIterator[Any]:
    started: list[AsteriskSimulator] = []

    async def start(trace: Path) -> AsteriskSimulator:
        sim = AsteriskSimulator(
            username="cb",
            secret="pw",
            traces=[trace],
            asap=True,
            rebase_time=True,
            auth_fail_delay=0,
        )
        await sim.start("127.0.0.1", 0)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        await sim.stop()


async def _rest(base: str, method: str, body: dict[str, Any]) -> Any:
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{base}/rest/1/legs/{method}", json=body)
        assert resp.status_code == 200, resp.text
        return resp.json()["result"]


def _config(sim: AsteriskSimulator, base: str, store: Path, **rules: Any) -> Config:
    outbox = {"retry_base": 0.05, "retry_cap": 0.2}
    return stack_config(sim.port, base, "1/legs", store, outbox=outbox, rules=rules)


def _ops(store: OutboxStore) -> list[StoredOp]:
    return store.listing(include_done=True)


def _legs(store: OutboxStore) -> list[StoredOp]:
    return [op for op in _ops(store) if op.key == "legs"]


def _one_finished_call(state: dict[str, Any]) -> bool:
    return any(c["finished"] for c in state["calls"])


async def _replay(
    start_sim: Any, portal: str, tmp_path: Path, trace: Path, **rules: Any
) -> tuple[dict[str, Any], list[StoredOp]]:
    sim = await start_sim(trace)
    path = tmp_path / "cb.sqlite3"
    store = OutboxStore.open(path, time.time)
    config = _config(sim, portal, path, **rules)
    crm = Bitrix24Crm.from_config(config.bitrix24)
    try:
        pipeline = build_pipeline(config, crm, store)
        state = await run_until(pipeline, portal, _one_finished_call, "the call finished")
        return state, _ops(store)
    finally:
        await crm.close()
        store.close()


async def test_blind_transfer_writes_its_legs_on_the_contact_timeline(
    portal: str, start_sim: Any, tmp_path: Path
) -> None:
    state, ops = await _replay(start_sim, portal, tmp_path, TRANSFER)

    [call] = state["calls"]
    assert (call["CRM_ENTITY_TYPE"], call["CRM_ENTITY_ID"]) == ("CONTACT", 1)
    [comment] = state["comments"]
    assert (comment["ENTITY_TYPE"], comment["ENTITY_ID"]) == CONTACT
    text = comment["COMMENT"]
    assert text.startswith("answered by 101; blind transfer 101 → 103 at "), text
    # The portal's own list of the contact's comments says the same.
    listed = await _rest(
        portal,
        "crm.timeline.comment.list",
        {"filter": {"ENTITY_ID": 1, "ENTITY_TYPE": "contact"}, "select": ["ID", "COMMENT"]},
    )
    assert listed == [{"ID": comment["ID"], "COMMENT": text}]
    # Sent once, after the finish, and remembered as done with the portal's id.
    [legs] = [op for op in ops if op.key == "legs"]
    assert legs.status == "done" and legs.result == {"ID": 1, "result": 1}
    finish = next(op for op in ops if op.key == "finish")
    assert finish.seq < legs.seq
    methods = [h["method"] for h in call["history"]]
    assert methods.count("telephony.externalcall.finish") == 1


async def test_a_call_without_transfers_adds_no_comment(
    portal: str, start_sim: Any, tmp_path: Path
) -> None:
    state, ops = await _replay(start_sim, portal, tmp_path, PLAIN)

    [call] = state["calls"]
    assert call["finished"] and call["CRM_ENTITY_TYPE"] == "CONTACT"  # a comment could go
    assert state["comments"] == []
    assert [op.key for op in ops if op.kind is OperationKind.ADD_COMMENT] == []


async def test_a_transferred_call_bound_to_no_entity_skips_the_comment_with_a_reason(
    portal: str, start_sim: Any, tmp_path: Path
) -> None:
    # No CRM entity carries the number and none may be created: finish answers no entity.
    assert await _rest(portal, "crm.contact.delete", {"id": 1}) is True
    state, ops = await _replay(start_sim, portal, tmp_path, TRANSFER, crm_create=False)

    [call] = state["calls"]
    assert call["finished"] and call["CRM_ENTITY_TYPE"] == ""
    assert state["comments"] == []
    [legs] = [op for op in ops if op.key == "legs"]
    assert legs.status == "skipped"
    assert legs.last_error == (
        "skipped: finish answered no CRM_ENTITY_ID (no CRM entity to write on)"
    )
    assert [op.key for op in ops if op.status == "failed"] == []  # nothing left to fix


async def test_the_comment_survives_a_restart_after_the_finish(
    portal: str, start_sim: Any, tmp_path: Path
) -> None:
    """First process: the call ends, one dispatch round sends register … finish, and the
    process dies before the next round. Second process on the same store: it sends the
    comment on the entity the first process's finish stored, and repeats nothing."""
    sim = await start_sim(TRANSFER)
    path = tmp_path / "cb.sqlite3"

    store = OutboxStore.open(path, time.time)
    config = _config(sim, portal, path)
    crm = Bitrix24Crm.from_config(config.bitrix24)
    first = build_pipeline(config, crm, store)
    await first.refresh_users()
    await first.ami.start()

    async def consume() -> None:
        async for item in first.ami.events():
            await first.on_ami_item(item)

    feeder = asyncio.create_task(consume())
    try:
        await until(lambda: bool(_legs(store)), "the call ended and its comment was queued")
        assert await first.dispatcher.run_once() > 0  # one round, then "kill -9"
    finally:
        await first.ami.close()
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        await crm.close()
        store.close()

    state = await portal_state(portal)
    [call] = state["calls"]
    assert call["finished"] and state["comments"] == []
    reopened = OutboxStore.open(path, time.time)
    try:
        [pending] = _legs(reopened)
        assert pending.status == "pending"
        assert pending.params["ENTITY_ID"] == ResultRef("finish", "CRM_ENTITY_ID")
        assert reopened.find(pending.call_key, "finish").status == "done"  # type: ignore[union-attr]
    finally:
        reopened.close()

    store = OutboxStore.open(path, time.time)
    crm = Bitrix24Crm.from_config(config.bitrix24)
    try:
        second = build_pipeline(config, crm, store)
        state = await run_until(second, portal, lambda s: len(s["comments"]) >= 1, "the comment")
        [done] = _legs(store)
    finally:
        await crm.close()
        store.close()

    [call] = state["calls"]
    methods = [h["method"] for h in call["history"]]
    assert methods.count("telephony.externalcall.register") == 1
    assert methods.count("telephony.externalcall.finish") == 1
    [comment] = state["comments"]
    assert (comment["ENTITY_TYPE"], comment["ENTITY_ID"]) == CONTACT
    assert "101 → 103" in comment["COMMENT"]
    assert done.status == "done"


async def test_the_adapter_sends_a_comment_after_its_finish_in_the_same_execute(
    portal: str,
) -> None:
    """The port used directly: register, finish and comment handed over together. The
    comment cannot ride in the finish's batch (``$result`` would carry "CONTACT"), so the
    adapter sends it in a second request with the type lower-cased (§6.7)."""
    crm = Bitrix24Crm.from_config(
        parse_config({"bitrix24": {"webhook_url": f"{portal}/rest/1/legs/"}}, {}).bitrix24
    )
    register = {
        "USER_ID": 1,
        "PHONE_NUMBER": "+74951234567",
        "TYPE": 2,
        "CALL_START_DATE": "2026-03-10T11:19:38+03:00",
        "CRM_CREATE": 0,
        "SHOW": 0,
        "EXTERNAL_CALL_ID": "legs-direct-1",
    }
    finish = {"CALL_ID": ResultRef("register", "CALL_ID"), "USER_ID": 3, "DURATION": 30}
    comment = {
        "ENTITY_TYPE": ResultRef("finish", "CRM_ENTITY_TYPE"),
        "ENTITY_ID": ResultRef("finish", "CRM_ENTITY_ID"),
        "COMMENT": "answered by 101; blind transfer 101 → 103 at 11:20:00",
    }
    ops = [
        CrmOperation("x", "register", OperationKind.REGISTER_CALL, register),
        CrmOperation("x", "finish", OperationKind.FINISH_CALL, finish),
        CrmOperation("x", "legs", OperationKind.ADD_COMMENT, comment),
    ]
    try:
        results = await crm.execute(ops)
    finally:
        await crm.close()

    assert [r.ok for r in results] == [True, True, True], results
    assert results[2].value == {"ID": 1, "result": 1}
    state = await portal_state(portal)
    assert state["requests"]["by_method"]["batch"] == 2  # finish's batch, then the comment's
    [stored] = state["comments"]
    assert (stored["ENTITY_TYPE"], stored["ENTITY_ID"]) == CONTACT
    assert stored["COMMENT"] == comment["COMMENT"]
