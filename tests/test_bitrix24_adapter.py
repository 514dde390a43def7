"""``Bitrix24Crm`` (the CRM port) against the emulator over real HTTP (issue 4 item 2)."""

from __future__ import annotations

from typing import Any

import pytest

from callbridge.config import Bitrix24Config
from callbridge.crm.base import CrmError, CrmOperation, ErrorKind, OperationKind, ResultRef
from callbridge.crm.bitrix24.adapter import METHODS, Bitrix24Crm, auth_from_config
from callbridge.crm.bitrix24.auth import WebhookAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.crm.bitrix24.limiter import Backoff, LeakyBucket, OperatingGuard
from tests.bitrix24_fixtures import Emulator, EmulatorFactory, emulator, make_emulator

__all__ = ["emulator", "make_emulator"]


def crm_for(emu: Emulator, **client_kwargs: Any) -> Bitrix24Crm:
    client = Bitrix24Client(
        WebhookAuth(emu.webhook_url),
        limiter=LeakyBucket(2.0, 50),
        backoff=Backoff(base=1.0, jitter=0.0),
        clock=emu.clock,
        sleep=emu.clock.sleep,
        **client_kwargs,
    )
    return Bitrix24Crm(client, users_ttl=300.0, clock=emu.clock)


def call_ops(call: str, user: int = 1) -> list[CrmOperation]:
    """The life of one inbound call: register, show, finish."""
    return [
        CrmOperation(
            call,
            "register",
            OperationKind.REGISTER_CALL,
            {
                "USER_ID": user,
                "PHONE_NUMBER": "74951234567",
                "TYPE": 2,
                "SHOW": 0,
                "EXTERNAL_CALL_ID": call,
                "LINE_NUMBER": "74957654321",
            },
        ),
        CrmOperation(
            call,
            "show",
            OperationKind.SHOW_CALL,
            {"CALL_ID": ResultRef("register", "CALL_ID"), "USER_ID": [1, 2]},
        ),
        CrmOperation(
            call,
            "finish",
            OperationKind.FINISH_CALL,
            {
                "CALL_ID": ResultRef("register", "CALL_ID"),
                "USER_ID": user,
                "DURATION": 30,
                "STATUS_CODE": "200",
                "ADD_TO_CHAT": 0,
            },
        ),
    ]


async def test_two_calls_in_one_batch(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    ops = call_ops("1700000001.1") + call_ops("1700000002.7", user=2)
    results = await crm.execute(ops)
    assert [r.key for r in results] == [op.key for op in ops]
    assert all(r.ok for r in results), [r.error for r in results]
    state = await emulator.state()
    assert state["requests"]["total"] == 1
    assert state["requests"]["by_method"].get("batch") == 1 or "batch" in str(
        state["requests"]["by_method"]
    )
    by_ext = {c["EXTERNAL_CALL_ID"]: c for c in state["calls"]}
    assert by_ext["1700000001.1"]["finished"] and by_ext["1700000002.7"]["USER_ID"] == 2
    assert results[0].value["CALL_ID"] == by_ext["1700000001.1"]["CALL_ID"]
    assert results[1].value == {"result": True}
    assert results[2].value["CALL_ID"] == results[0].value["CALL_ID"]
    await crm.close()


async def test_known_call_id_given_by_the_outbox(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    [reg] = await crm.execute(call_ops("1700000003.1")[:1])
    call_id = reg.value["CALL_ID"]
    finish = CrmOperation(
        "1700000003.1",
        "finish",
        OperationKind.FINISH_CALL,
        {"CALL_ID": call_id, "USER_ID": 1, "DURATION": 5, "ADD_TO_CHAT": 0},
    )
    [done] = await crm.execute([finish])
    assert done.ok and done.value["CALL_ID"] == call_id
    await crm.close()


async def test_sixty_operations_take_two_batches(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    ops: list[CrmOperation] = []
    for i in range(20):
        ops += call_ops(f"1700001000.{i}")
    results = await crm.execute(ops)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    state = await emulator.state()
    assert state["requests"]["total"] == 2
    assert sum(1 for c in state["calls"] if c["finished"]) == 20
    await crm.close()


async def test_per_operation_errors_and_dependencies(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    bad = call_ops("1700000004.1", user=999)  # no such user: register fails
    good = call_ops("1700000005.1")
    orphan = CrmOperation(
        "1700000006.1",
        "finish",
        OperationKind.FINISH_CALL,
        {"CALL_ID": ResultRef("register", "CALL_ID"), "USER_ID": 1},
    )
    results = await crm.execute([*bad, *good, orphan])
    reg, show, fin = results[:3]
    assert not reg.ok and reg.error is not None and reg.error.kind is ErrorKind.VALIDATION
    for dependent in (show, fin):
        assert not dependent.ok and dependent.error is not None
        assert dependent.error.code == "DEPENDENCY_FAILED"
        assert dependent.error.kind is ErrorKind.VALIDATION
    assert all(r.ok for r in results[3:6])
    last = results[6]
    assert not last.ok and last.error is not None and last.error.code == "UNRESOLVED_REFERENCE"
    await crm.close()


async def test_lead_task_notify_and_record(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    ops = [
        CrmOperation(
            "c7",
            "lead",
            OperationKind.CREATE_LEAD,
            {
                "TITLE": "Missed call from 74950000001",
                "SOURCE_ID": "CALL",
                "PHONE": [{"VALUE": "74950000001", "VALUE_TYPE": "WORK"}],
            },
        ),
        CrmOperation(
            "c7",
            "task",
            OperationKind.CREATE_TASK,
            {"TITLE": "Call back 74950000001", "RESPONSIBLE_ID": 2, "UF_CRM_TASK": ["L_"]},
        ),
        CrmOperation(
            "c7",
            "notify",
            OperationKind.NOTIFY,
            {"USER_ID": 2, "MESSAGE": "Missed call from 74950000001"},
        ),
        *call_ops("1700000007.1"),
        CrmOperation(
            "1700000007.1",
            "record",
            OperationKind.ATTACH_RECORD,
            {
                "CALL_ID": ResultRef("register", "CALL_ID"),
                "FILENAME": "call.mp3",
                "FILE_CONTENT": "SUQzBAAAAAAAI1RTU0UAAAAPAAADTGF2ZjU4Ljc2LjEwMAAAAAAAAAAA",
            },
        ),
    ]
    results = await crm.execute(ops)
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    lead, task, notify = results[:3]
    state = await emulator.state()
    assert int(lead.value["ID"]) in [int(x["ID"]) for x in state["leads"]]
    assert int(task.value["ID"]) in [int(t.get("ID", t.get("id", 0))) for t in state["tasks"]]
    assert notify.value["ID"]
    assert "FILE_ID" in results[-1].value
    call = next(c for c in state["calls"] if c["EXTERNAL_CALL_ID"] == "1700000007.1")
    assert [r["FILENAME"] for r in call["records"]] == ["call.mp3"]
    # the recording went alone: one batch before it, itself
    assert state["requests"]["total"] == 2
    await crm.close()


async def test_blocked_method_fails_retryable_others_go_on(
    make_emulator: EmulatorFactory,
) -> None:
    emu = await make_emulator(operating_ms=100_000.0)
    crm = crm_for(emu, guard=OperatingGuard(limit=480, hard=100.0), max_wait=0.0)
    for i in range(5):
        assert all(r.ok for r in await crm.execute(call_ops(f"1700002000.{i}")[:1]))
    # the portal now blocks register; the batch reports it per command
    results = await crm.execute(call_ops("1700002009.1"))
    assert results[0].error is not None and results[0].error.code == "OPERATION_TIME_LIMIT"
    # next time register is not even sent, while a notification goes through
    sent = (await emu.state())["requests"]["total"]
    note = CrmOperation("n", "notify", OperationKind.NOTIFY, {"USER_ID": 1, "MESSAGE": "hi"})
    again = await crm.execute([*call_ops("1700002010.1")[:1], note])
    assert again[0].error is not None and again[0].error.kind is ErrorKind.RETRYABLE
    assert again[0].error.code == "OPERATION_TIME_LIMIT"
    assert again[1].ok
    assert (await emu.state())["requests"]["total"] == sent + 1
    await crm.close()


async def test_users_cached_with_ttl(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    users = await crm.users()
    by_ext = {u.extension: u for u in users}
    assert by_ext["101"].name == "Ivan Petrov" and by_ext["101"].active
    assert by_ext["102"].id == 2 and by_ext["103"].name == "Sergey Volkov"
    sent = (await emulator.state())["requests"]["total"]
    assert await crm.users() == users
    assert (await emulator.state())["requests"]["total"] == sent
    emulator.clock.advance(301)
    await crm.users()
    assert (await emulator.state())["requests"]["total"] == sent + 1
    await crm.close()


async def test_entities_by_phone(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    found = await crm.entities_by_phone("74951234567")
    contact = next(e for e in found if e.type == "contact")
    assert contact.responsible_id == 2
    assert await crm.entities_by_phone("70000000000") == []
    await crm.close()


async def test_find_call_finished_and_unknown(emulator: Emulator) -> None:
    crm = crm_for(emulator)
    results = await crm.execute(call_ops("1700000008.1"))
    record = await crm.find_call("1700000008.1")
    assert record is not None and record.finished
    assert record.call_id == results[0].value["CALL_ID"]
    assert await crm.find_call("1700009999.9") is None
    await crm.close()


async def test_nothing_sent_at_all_raises(emulator: Emulator) -> None:
    await emulator.fault("down", seconds=3600)
    crm = crm_for(emulator, max_attempts=1)
    with pytest.raises(CrmError) as caught:
        await crm.execute(call_ops("1700000009.1"))
    assert caught.value.kind is ErrorKind.RETRYABLE
    await emulator.fault("none")
    await crm.close()


async def test_from_config(emulator: Emulator) -> None:
    config = Bitrix24Config(webhook_url=emulator.webhook_url, rate=2.0, burst=50, timeout=5.0)
    crm = Bitrix24Crm.from_config(config, clock=emulator.clock, sleep=emulator.clock.sleep)
    assert await crm.users()
    assert crm.auth_state.ok
    await crm.close()
    with pytest.raises(ValueError, match="webhook_url"):
        auth_from_config(Bitrix24Config(), None)
    with pytest.raises(ValueError, match="token store"):
        auth_from_config(Bitrix24Config(client_id="local.x", client_secret="y"), None)


def test_every_operation_kind_has_a_method() -> None:
    assert set(METHODS) == set(OperationKind)
