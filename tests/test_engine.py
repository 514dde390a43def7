"""The engine fed with call stories: which CRM operations each story writes to the outbox."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from callbridge.calls import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallMerged,
    CallResult,
    CallStarted,
    CallSummary,
    CallTransferred,
    Direction,
    RecordingKnown,
    RingingChanged,
    Transfer,
    TransferType,
)
from callbridge.crm.base import CrmUser, ResultRef
from callbridge.engine import Engine
from callbridge.outbox.store import OutboxStore
from callbridge.rules import RuleSettings, UserDirectory
from tests.outbox_support import Clock

REF = ResultRef("register", "CALL_ID")
T0 = 1_700_000_000.0
USERS = [
    CrmUser(11, "Ivan Petrov", "101", None, True),
    CrmUser(12, "Olga Smirnova", "102", None, True),
    CrmUser(13, "Sergey Volkov", "103", None, True),
    CrmUser(14, "Gone", "104", None, False),
]


class Story:
    def __init__(self, path: Path, settings: RuleSettings | None = None) -> None:
        self.clock = Clock(T0)
        self.store = OutboxStore.open(path, self.clock)
        self.settings = settings or RuleSettings()
        self.engine = Engine(self.settings, self.store, UserDirectory.from_users(USERS))

    def feed(self, *events: CallEvent) -> None:
        for event in events:
            self.engine.handle(event)

    def ops(self, call: str = "c1") -> list[tuple[str, dict[str, Any]]]:
        return [(op.key, dict(op.params)) for op in self.store.ops_for_call(call)]

    def keys(self, call: str = "c1") -> list[str]:
        return [op.key for op in self.store.ops_for_call(call)]


@pytest.fixture
def story(tmp_path: Path) -> Story:
    return Story(tmp_path / "s.sqlite3")


def inbound(at: float = T0, number: str | None = "74951234567", **kw: Any) -> CallStarted:
    return CallStarted("c1", at, Direction.INBOUND, number, "74957654321", None, **kw)


def summary(**kw: Any) -> CallSummary:
    base = CallSummary(
        linkedid="c1",
        direction=Direction.INBOUND,
        external_number="74951234567",
        did="74957654321",
        operator=None,
        rang=["101"],
        answered=True,
        answered_by="101",
        answered_on=None,
        final_operator="101",
        result=CallResult.ANSWERED,
        transfers=[],
        start=T0,
        answer=T0 + 5,
        end=T0 + 47,
        recordings=[],
        hangup_cause=16,
    )
    return replace(base, **kw)


def ended(at: float = T0 + 47, **kw: Any) -> CallEnded:
    return CallEnded("c1", at, summary(**kw))


def test_inbound_answered_by_101(story: Story) -> None:
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101",)),
        CallAnswered("c1", T0 + 5, "101"),
        RingingChanged("c1", T0 + 5, ()),
        ended(),
    )
    assert story.ops() == [
        (
            "register",
            {
                "USER_ID": 11,
                "PHONE_NUMBER": "+74951234567",
                "TYPE": 2,
                "CALL_START_DATE": "2023-11-14T22:13:20+00:00",
                "CRM_CREATE": 1,
                "SHOW": 0,
                "EXTERNAL_CALL_ID": "callbridge-c1",
            },
        ),
        ("show.1", {"CALL_ID": REF, "USER_ID": [11]}),
        (
            "finish",
            {
                "CALL_ID": REF,
                "USER_ID": 11,
                "DURATION": 42,
                "STATUS_CODE": "200",
                "ADD_TO_CHAT": 1,
            },
        ),
    ]


def test_ring_group_102_answers_101_card_hidden(story: Story) -> None:
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101", "102")),
        CallAnswered("c1", T0 + 6, "102"),
        RingingChanged("c1", T0 + 6, ()),
        ended(rang=["101", "102"], answered_by="102", final_operator="102"),
    )
    ops = story.ops()
    assert [k for k, _ in ops] == ["register", "show.1", "hide.2", "finish"]
    assert ops[1][1]["USER_ID"] == [11, 12]
    assert ops[2][1]["USER_ID"] == [11]
    assert ops[3][1]["USER_ID"] == 12


def test_missed_in_ring_group_last_rung_finishes_others_hidden(story: Story) -> None:
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101", "102")),
        ended(
            at=T0 + 9,
            rang=["101", "102"],
            answered=False,
            answered_by=None,
            final_operator=None,
            answer=None,
            result=CallResult.MISSED,
            hangup_cause=127,
        ),
    )
    ops = dict(story.ops())
    assert list(ops) == ["register", "show.1", "hide.2", "finish"]
    assert ops["hide.2"]["USER_ID"] == [11]  # finish hides only the finisher's (12) card
    assert ops["finish"]["USER_ID"] == 12
    assert ops["finish"]["DURATION"] == 0 and ops["finish"]["STATUS_CODE"] == "304"


def test_missed_with_default_user_hides_every_card(tmp_path: Path) -> None:
    story = Story(tmp_path / "s.sqlite3", RuleSettings(missed_call_user="default"))
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101", "102")),
        ended(answered=False, answered_by=None, final_operator=None, result=CallResult.MISSED),
    )
    ops = dict(story.ops())
    assert ops["hide.2"]["USER_ID"] == [11, 12]
    assert ops["finish"]["USER_ID"] == 1


def test_missed_with_responsible_user_asks_the_outbox_to_look_up(tmp_path: Path) -> None:
    settings = RuleSettings(missed_call_user="responsible", registration_priority=("contact",))
    story = Story(tmp_path / "s.sqlite3", settings)
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101",)),
        ended(answered=False, answered_by=None, final_operator=None, result=CallResult.MISSED),
    )
    finish = story.store.find("c1", "finish")
    register = story.store.find("c1", "register")
    assert finish is not None and register is not None
    assert finish.meta["user_rule"] == "responsible" and finish.params["USER_ID"] == 1
    assert register.meta["priority"] == ["contact"]


def test_inbound_busy(story: Story) -> None:
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101",)),
        ended(answered=False, answered_by=None, answer=None, result=CallResult.BUSY),
    )
    ops = dict(story.ops())
    assert ops["finish"]["STATUS_CODE"] == "486" and ops["finish"]["DURATION"] == 0


def test_blind_transfer_101_to_103_moves_the_card(story: Story) -> None:
    transfer = Transfer(TransferType.BLIND, "101", "103", T0 + 20)
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101",)),
        CallAnswered("c1", T0 + 5, "101"),
        RingingChanged("c1", T0 + 5, ()),
        CallTransferred("c1", T0 + 20, transfer),
        RingingChanged("c1", T0 + 20, ("103",)),
        CallAnswered("c1", T0 + 24, "103"),
        RingingChanged("c1", T0 + 24, ()),
        ended(final_operator="103", transfers=[transfer]),
    )
    ops = story.ops()
    assert [(k, p.get("USER_ID")) for k, p in ops] == [
        ("register", 11),
        ("show.1", [11]),
        ("hide.2", [11]),
        ("show.3", [13]),
        ("finish", 13),
        ("legs", None),
    ]
    finish = story.store.find("c1", "finish")
    assert finish is not None
    assert finish.meta["description"] == ("answered by 101; blind transfer 101 → 103 at 22:13:40")


def test_outbound_answered_registered_when_dialled(story: Story) -> None:
    story.feed(
        CallStarted("c1", T0, Direction.OUTBOUND, "74957770000", None, "101"),
        CallAnswered("c1", T0 + 8, "101"),
        CallEnded(
            "c1",
            T0 + 30,
            summary(
                direction=Direction.OUTBOUND,
                external_number="74957770000",
                did=None,
                operator="101",
                rang=[],
                answer=T0 + 8,
                end=T0 + 30,
            ),
        ),
    )
    ops = dict(story.ops())
    assert list(ops) == ["register", "show.1", "finish"]
    assert ops["register"]["TYPE"] == 1 and ops["register"]["PHONE_NUMBER"] == "+74957770000"
    assert ops["finish"]["DURATION"] == 22 and ops["finish"]["USER_ID"] == 11


def test_internal_call_not_registered_by_default(story: Story) -> None:
    story.feed(
        CallStarted("c1", T0, Direction.INTERNAL, None, None, "101"),
        RingingChanged("c1", T0 + 1, ("102",)),
        CallAnswered("c1", T0 + 3, "102"),
        ended(direction=Direction.INTERNAL, external_number=None, operator="101"),
    )
    assert story.ops() == []


def test_exception_extension_never_gets_a_card(tmp_path: Path) -> None:
    story = Story(tmp_path / "s.sqlite3", RuleSettings(exception_extensions=frozenset({"101"})))
    story.feed(inbound(), RingingChanged("c1", T0 + 1, ("101", "102")))
    ops = dict(story.ops())
    assert ops["register"]["USER_ID"] == 12 and ops["show.1"]["USER_ID"] == [12]


def test_unmapped_and_inactive_extensions_fall_back_to_default_user(story: Story) -> None:
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("104", "105")),
        ended(rang=["104", "105"], answered_by="105", final_operator="105"),
    )
    ops = dict(story.ops())
    assert ops["register"]["USER_ID"] == 1 and "show.1" not in ops
    assert ops["finish"]["USER_ID"] == 1


def test_call_that_ended_during_an_outage_gets_no_card(story: Story) -> None:
    # Events of another call tell the engine how far AMI time is.
    story.feed(CallStarted("now", T0 + 3600, Direction.INBOUND, "74950000001", "1", None))
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101",)),
        CallAnswered("c1", T0 + 5, "101"),
        ended(),
    )
    ops = dict(story.ops())
    assert list(ops) == ["register", "finish"]
    assert ops["register"]["SHOW"] == 0


def test_restart_resync_does_not_register_or_show_again(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    first = Story(path)
    first.feed(inbound(), RingingChanged("c1", T0 + 1, ("101", "102")))
    first.store.close()
    second = Story(path)  # a new process: the tracker's resync feeds the live call again
    second.feed(
        inbound(),
        RingingChanged("c1", T0 + 30, ("101", "102")),
        CallAnswered("c1", T0 + 31, "102"),
        ended(rang=["101", "102"], answered_by="102", final_operator="102"),
    )
    assert [(k, p.get("USER_ID")) for k, p in second.ops()] == [
        ("register", 11),
        ("show.1", [11, 12]),
        ("hide.2", [11]),
        ("finish", 12),
    ]


def test_replayed_events_write_nothing_twice(story: Story) -> None:
    events: list[CallEvent] = [inbound(), RingingChanged("c1", T0 + 1, ("101",)), ended()]
    story.feed(*events)
    before = story.keys()
    story.feed(*events)
    assert story.keys() == before


@pytest.mark.parametrize(
    ("anonymous_number", "expected"),
    [("", []), ("000", ["register", "show.1", "finish"])],
)
def test_withheld_number_skipped_or_placeholder(
    tmp_path: Path, anonymous_number: str, expected: list[str]
) -> None:
    story = Story(tmp_path / "s.sqlite3", RuleSettings(anonymous_number=anonymous_number))
    story.feed(
        inbound(number="anonymous"),
        RingingChanged("c1", T0 + 1, ("101",)),
        ended(external_number="anonymous"),
    )
    assert story.keys() == expected
    if expected:
        assert dict(story.ops())["register"]["PHONE_NUMBER"] == "000"


def test_click_to_call_uses_the_portals_call_id_and_never_registers(story: Story) -> None:
    crm_id = "externalCall.abc.1"
    story.feed(
        CallStarted(
            "c1", T0, Direction.OUTBOUND, "74957770000", None, "101", {"CRM_CALL_ID": crm_id}
        ),
        CallAnswered("c1", T0 + 4, "101"),
        ended(direction=Direction.OUTBOUND, operator="101", rang=[]),
    )
    ops = dict(story.ops())
    assert list(ops) == ["show.1", "finish"]
    assert ops["finish"]["CALL_ID"] == crm_id


def test_recording_attached_after_finish(story: Story) -> None:
    path = "/var/spool/asterisk/monitor/2024/01/02/in-1-2.wav"
    story.feed(
        inbound(),
        RingingChanged("c1", T0 + 1, ("101",)),
        CallAnswered("c1", T0 + 5, "101"),
        RecordingKnown("c1", T0 + 5, path),
        ended(recordings=[path]),
    )
    keys = story.keys()
    assert keys[-2] == "finish" and keys[-1].startswith("record.")
    record = story.store.ops_for_call("c1")[-1]
    assert record.params["FILENAME"] == "in-1-2.wav" and record.params["RECORD_PATH"] == path


def test_callback_and_mobile_did_types(tmp_path: Path) -> None:
    from callbridge.rules import DidRule

    settings = RuleSettings(dids={"74957654321": DidRule(to_mobile=True, line="L1")})
    story = Story(tmp_path / "s.sqlite3", settings)
    story.feed(inbound(), RingingChanged("c1", T0 + 1, ("101",)))
    register = dict(story.ops())["register"]
    assert register["TYPE"] == 3 and register["LINE_NUMBER"] == "L1"


def test_merged_call_absorbed_record_is_closed(tmp_path: Path) -> None:
    story = Story(tmp_path / "s.sqlite3", RuleSettings(register_internal=True))
    story.feed(
        CallStarted("c2", T0, Direction.INTERNAL, None, None, "101"),
        RingingChanged("c2", T0 + 1, ("103",)),
        CallAnswered("c2", T0 + 3, "103"),
        CallMerged("c1", T0 + 10, "c2"),
        RingingChanged("c2", T0 + 11, ("102",)),
    )
    ops = story.ops("c2")
    assert ops[-1][0] == "finish"  # nothing after the merge: events of c2 are ignored
    assert ops[-1][1]["DURATION"] == 7 and ops[-1][1]["STATUS_CODE"] == "200"
    assert [(k, p.get("USER_ID")) for k, p in ops] == [
        ("register", 11),
        ("show.1", [11, 13]),  # the caller's card and the callee's
        ("hide.2", [11]),  # finish (by 13) hides only its own card
        ("finish", 13),
    ]
