"""The durable outbox on a real SQLite file: order per call, batching, restarts, faults."""

from __future__ import annotations

import argparse
import io
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from callbridge.crm.base import CrmEntity, CrmOperation, ErrorKind, OperationKind, ResultRef
from callbridge.outbox import cli
from callbridge.outbox.dispatcher import Dispatcher, OutboxSettings
from callbridge.outbox.retry import RetryPolicy, next_attempt_at
from callbridge.outbox.store import OutboxEntry, OutboxStore
from tests.outbox_support import Clock, PortalCrm

CALL_ID = ResultRef("register", "CALL_ID")


def register(call: str, user: int = 11, phone: str = "+74951234567") -> OutboxEntry:
    params = {
        "USER_ID": user,
        "PHONE_NUMBER": phone,
        "TYPE": 2,
        "SHOW": 0,
        "EXTERNAL_CALL_ID": f"cb-{call}",
    }
    op = CrmOperation(call, "register", OperationKind.REGISTER_CALL, params)
    return OutboxEntry(op, {"external_call_id": f"cb-{call}", "phone": phone})


def show(call: str, n: int, users: list[int]) -> CrmOperation:
    params = {"CALL_ID": CALL_ID, "USER_ID": users}
    return CrmOperation(call, f"show.{n}", OperationKind.SHOW_CALL, params)


def hide(call: str, n: int, users: list[int]) -> CrmOperation:
    params = {"CALL_ID": CALL_ID, "USER_ID": users}
    return CrmOperation(call, f"hide.{n}", OperationKind.HIDE_CALL, params)


def finish(call: str, user: int = 11, duration: int = 30, **meta: Any) -> OutboxEntry:
    params = {"CALL_ID": CALL_ID, "USER_ID": user, "DURATION": duration, "STATUS_CODE": "200"}
    op = CrmOperation(call, "finish", OperationKind.FINISH_CALL, params)
    return OutboxEntry(op, {"external_call_id": f"cb-{call}", "phone": "+74951234567", **meta})


class Rig:
    """A store file, a portal and a dispatcher with a driven clock and fixed jitter."""

    def __init__(self, path: Path, settings: OutboxSettings | None = None) -> None:
        self.path = path
        self.clock = Clock()
        self.portal = PortalCrm(self.clock)
        self.settings = settings or OutboxSettings()
        self.open()

    def open(self) -> None:
        self.store = OutboxStore.open(self.path, self.clock)
        self.dispatcher = Dispatcher(
            self.store,
            self.portal,
            clock=self.clock,
            rand=lambda: 0.5,
            settings=self.settings,
        )

    def restart(self) -> None:
        self.store.close()
        self.open()

    async def drain(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            if not await self.dispatcher.run_once():
                return

    def statuses(self, call: str) -> dict[str, str]:
        return {op.key: op.status for op in self.store.ops_for_call(call)}


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path / "store.sqlite3")


async def test_short_call_register_and_finish_go_in_one_request(rig: Rig) -> None:
    rig.store.add([register("A"), show("A", 1, [11]), finish("A")])
    await rig.drain()
    assert rig.portal.requests == 1
    [call] = rig.portal.by_external("cb-A")
    assert call.finished and call.finished_by == 11 and call.duration == 30
    # the call was over before anything was sent: no card flashes for it
    assert call.shown_ever == [] and call.shown_now == []
    assert rig.statuses("A") == {"register": "done", "show.1": "skipped", "finish": "done"}
    stored = rig.store.find("A", "register")
    assert stored is not None and stored.result is not None
    assert stored.result["CALL_ID"] == call.call_id


async def test_many_calls_share_requests_up_to_fifty_operations(rig: Rig) -> None:
    for n in range(30):
        rig.store.add([register(f"C{n}", phone=f"+7495000{n:04d}"), finish(f"C{n}")])
    await rig.drain()
    assert rig.portal.requests == 2  # 60 operations: 50 + 10
    assert all(c.finished and c.registers == 1 for c in rig.portal.calls.values())
    assert len(rig.portal.calls) == 30


async def test_later_operation_waits_for_earlier_one_of_its_call(rig: Rig) -> None:
    rig.store.add([register("A")])
    await rig.drain()
    rig.store.add([finish("A")])  # written later: CALL_ID comes from the stored result
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.finished and call.registers == 1


async def test_a_call_in_backoff_does_not_hold_up_other_calls(rig: Rig) -> None:
    rig.store.add([register("A"), finish("A")])
    rig.portal.fault, rig.portal.fault_times = "down", 1
    await rig.dispatcher.run_once()
    assert rig.statuses("A") == {"register": "pending", "finish": "pending"}
    rig.store.add([register("B", phone="+74950000002"), finish("B")])
    await rig.drain()
    assert rig.portal.by_external("cb-B")[0].finished
    assert rig.portal.by_external("cb-A") == []  # still waiting for its backoff
    op = rig.store.find("A", "register")
    assert op is not None and op.attempts == 1 and op.not_before > rig.clock.now
    rig.clock.advance(op.not_before - rig.clock.now)
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.finished and call.registers == 1


async def test_lost_answer_of_register_and_finish_never_makes_a_second_call(rig: Rig) -> None:
    rig.store.add([register("A"), show("A", 1, [11]), finish("A")])
    rig.portal.fault, rig.portal.fault_times = "lost_answer", 1
    await rig.dispatcher.run_once()
    assert rig.store.find("A", "register").outcome_unknown  # type: ignore[union-attr]
    rig.clock.advance(3600)  # past the portal's 30-minute window
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.registers == 1 and call.finishes == 1
    assert rig.statuses("A")["finish"] == "done"


async def test_lost_answer_of_register_alone_gets_the_same_call_back(rig: Rig) -> None:
    rig.store.add([register("A")])
    rig.portal.fault, rig.portal.fault_times = "lost_answer", 1
    await rig.dispatcher.run_once()
    rig.clock.advance(60)
    await rig.drain()
    rig.store.add([finish("A")])
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.finished and call.finishes == 1
    assert rig.store.find("A", "register").result["CALL_ID"] == call.call_id  # type: ignore[index,union-attr]


async def test_restart_mid_flight_resumes_and_never_repeats_a_done_step(rig: Rig) -> None:
    rig.store.add([register("A")])
    await rig.drain()
    rig.store.add([show("A", 1, [11])])
    await rig.drain()
    rig.store.add([hide("A", 2, [11]), finish("A")])
    # A process dies after claiming (and maybe sending): its lease keeps the work.
    taken = rig.store.claim(rig.clock.now, 50, rig.settings.lease)
    assert [op.key for op in taken] == ["hide.2", "finish"]
    rig.restart()
    await rig.drain()
    assert rig.statuses("A")["finish"] == "running"  # not before the lease runs out
    rig.clock.advance(rig.settings.lease + 1)
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.registers == 1 and call.finishes == 1
    assert set(rig.statuses("A").values()) == {"done"}


async def test_restart_after_lost_finish_finds_it_done(rig: Rig) -> None:
    rig.store.add([register("A"), finish("A")])
    rig.portal.fault, rig.portal.fault_times = "lost_answer", 1
    await rig.dispatcher.run_once()
    rig.restart()
    rig.clock.advance(3600)
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.finishes == 1 and call.registers == 1


async def test_auth_error_pauses_everything_and_loses_nothing(rig: Rig) -> None:
    for n in range(3):
        rig.store.add([register(f"C{n}", phone=f"+7495000000{n}"), finish(f"C{n}")])
    rig.portal.fault = "auth"
    await rig.dispatcher.run_once()
    assert rig.dispatcher.paused_until() == rig.clock.now + RetryPolicy().auth_pause
    assert all(op.attempts == 0 and op.status == "pending" for op in rig.store.listing())
    assert await rig.dispatcher.run_once() == 0  # paused: nothing is even tried
    assert rig.portal.requests == 1
    rig.portal.fault = None  # the admin fixed the application
    rig.clock.advance(RetryPolicy().auth_pause)
    await rig.drain()
    assert rig.store.depth() == 0
    assert len(rig.portal.calls) == 3 and all(c.finished for c in rig.portal.calls.values())


async def test_refused_register_fails_visibly_and_skips_the_rest_of_its_call(rig: Rig) -> None:
    rig.portal.refuse_users.add(99)
    rig.store.add([register("A", user=99), show("A", 1, [99]), finish("A", user=99)])
    await rig.drain()
    assert rig.statuses("A") == {"register": "failed", "show.1": "skipped", "finish": "skipped"}
    failed = rig.store.find("A", "register")
    assert failed is not None and "not active" in (failed.last_error or "")
    # the admin fixes the user and retries: the whole call goes through
    rig.portal.refuse_users.clear()
    assert len(rig.store.retry([failed.id])) == 3
    await rig.drain()
    assert rig.portal.by_external("cb-A")[0].finished


async def test_failed_hide_does_not_block_the_finish(rig: Rig) -> None:
    rig.store.add([register("A"), show("A", 1, [11, 12])])
    await rig.drain()
    bad_hide = CrmOperation("A", "hide.2", OperationKind.HIDE_CALL, {"CALL_ID": CALL_ID})
    rig.store.add([bad_hide, finish("A")])  # USER_ID missing: the portal refuses it
    await rig.drain()
    assert rig.statuses("A")["hide.2"] == "failed"
    assert rig.statuses("A")["finish"] == "done"


async def test_show_of_an_ended_call_is_not_replayed(rig: Rig) -> None:
    rig.portal.fault = "down"
    rig.store.add([register("A"), show("A", 1, [11, 12]), hide("A", 2, [12]), finish("A")])
    await rig.dispatcher.run_once()
    rig.portal.fault = None
    rig.clock.advance(600)
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.shown_ever == [] and call.finished
    assert rig.statuses("A") == {
        "register": "done",
        "show.1": "skipped",
        "hide.2": "skipped",
        "finish": "done",
    }


async def test_registration_priority_looks_the_number_up_once(rig: Rig) -> None:
    rig.portal.entities["+74951234567"] = [
        CrmEntity("lead", 5, "L", 13),
        CrmEntity("contact", 7, "C", 12),
    ]
    entry = register("A")
    meta = {**entry.meta, "priority": ["contact", "company", "lead"]}
    rig.store.add([OutboxEntry(entry.op, meta), finish("A", user=1, user_rule="responsible")])
    await rig.drain()
    [call] = rig.portal.by_external("cb-A")
    assert call.finished_by == 12  # the contact's responsible, found by the one look-up
    register_op = rig.store.find("A", "register")
    assert register_op is not None and register_op.meta["entities"][0]["id"] == 5
    assert rig.portal.requests == 2  # one search + one execute


async def test_retry_schedule_is_a_pure_function() -> None:
    policy = RetryPolicy(base=1.0, cap=60.0, auth_pause=30.0)
    table = [
        (ErrorKind.RETRYABLE, 1, 0.0, 100.5),
        (ErrorKind.RETRYABLE, 1, 1.0, 101.0),
        (ErrorKind.RETRYABLE, 3, 0.0, 102.0),
        (ErrorKind.RETRYABLE, 3, 0.5, 103.0),
        (ErrorKind.RETRYABLE, 20, 0.0, 130.0),  # capped at 60 s
        (ErrorKind.AUTH, 5, 0.9, 130.0),
    ]
    for kind, attempt, rand, expected in table:
        assert next_attempt_at(policy, kind, attempt, 100.0, rand) == expected
    assert next_attempt_at(policy, ErrorKind.PERMANENT, 1, 100.0, 0.3) is None
    assert next_attempt_at(policy, ErrorKind.VALIDATION, 1, 100.0, 0.3) is None


async def test_done_calls_are_purged_after_retention_failed_ones_kept(tmp_path: Path) -> None:
    rig = Rig(tmp_path / "s.sqlite3", OutboxSettings(retention=3600.0, purge_every=0.0))
    rig.portal.refuse_users.add(99)
    rig.store.add([register("A"), finish("A")])
    rig.store.add([register("B", user=99, phone="+74950000002"), finish("B", user=99)])
    await rig.drain()
    rig.clock.advance(3000)
    await rig.dispatcher.run_once()
    assert {op.call_key for op in rig.store.listing(include_done=True)} == {"A", "B"}
    rig.clock.advance(1000)
    await rig.dispatcher.run_once()
    assert {op.call_key for op in rig.store.listing(include_done=True)} == {"B"}


async def test_attempt_log_is_append_only(rig: Rig) -> None:
    rig.store.add([register("A"), finish("A")])
    rig.portal.fault, rig.portal.fault_times = "down", 1
    await rig.dispatcher.run_once()
    rig.clock.advance(10)
    await rig.drain()
    op = rig.store.find("A", "register")
    assert op is not None
    outcomes = [row["outcome"] for row in rig.store.attempts(op.id)]
    assert outcomes == ["queued", "retry", "done"]
    conn = sqlite3.connect(rig.path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE outbox_attempts SET outcome = 'x'")
    conn.close()


async def test_same_step_written_twice_is_stored_once(rig: Rig) -> None:
    assert rig.store.add([register("A"), finish("A")]) == 2
    assert rig.store.add([register("A"), finish("A")]) == 0
    assert [op.seq for op in rig.store.ops_for_call("A")] == [1, 2]


async def test_cli_lists_retries_and_drops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_path = tmp_path / "cb.sqlite3"
    config = tmp_path / "callbridge.toml"
    config.write_text(f'[store]\npath = "{store_path}"\n', encoding="utf-8")
    rig = Rig(store_path)
    rig.portal.refuse_users.add(99)
    rig.store.add([register("A", user=99), finish("A", user=99)])
    rig.store.add([register("B", phone="+74950000002"), finish("B")])
    await rig.drain()
    failed = rig.store.find("A", "register")
    assert failed is not None

    def run(*argv: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser()
        parser.add_argument("action", nargs="?", default="list")
        parser.add_argument("ids", nargs="*", type=int)
        parser.add_argument("--all", action="store_true")
        parser.add_argument("--config")
        out = io.StringIO()
        code = cli.run(parser.parse_args([*argv, "--config", str(config)]), out)
        return code, out.getvalue()

    code, text = run("list")
    assert code == 0 and "failed" in text and "not active" in text and " B " not in text
    code, text = run("list", "--all")
    assert code == 0 and text.count("done") == 2
    code, text = run("retry")
    assert code == 0 and "2 operation(s)" in text
    assert rig.statuses("A") == {"register": "pending", "finish": "pending"}
    code, text = run("drop", str(failed.id))
    assert code == 0 and rig.statuses("A")["register"] == "dropped"
    code, _ = run("drop")
    assert code == 2
    code, _ = run("retry", "12345")
    assert code == 1
