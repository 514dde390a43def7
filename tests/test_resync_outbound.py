"""Outbound calls adopted from ``CoreShowChannels`` keep their dialled number.

callbridge (re)starts, or comes back from an AMI gap, while an outbound call is up: a
fresh tracker adopts it from the snapshot, with no DialBegin to name the number. The
number is in the snapshot's fields as Asterisk fills them (reference §3.7, §2.5): the
``Dial`` data of the phone, the trunk leg's ``Exten``/``CallerIDNum``; once the Dial has
ended, in the call's ``Cdr``. For every cut point from the dial until the call's Cdr, the
adopted call must carry the truth's number, direction and operator, and the rules and the
engine must register it (not skip it as "withheld").

After the Cdr (a few ms of teardown: the external party gone, the phone in its hangup
handler) no field left names the number; those cuts are not claimed here.

The snapshot helper (``snapshot_at``) and the simulator's live ``CoreShowChannels`` are
checked against a real answer of Asterisk (trace 13) and against the CEL records, which
carry each channel's application as Asterisk saw it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from callbridge.calls import CallEnded, CallEvent, CallStarted, Direction
from callbridge.config import PbxConfig
from callbridge.crm.base import CrmUser, OperationKind
from callbridge.engine import Engine
from callbridge.outbox.store import OutboxStore
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.pbx.tracker import CallTracker, snapshot_at
from callbridge.pbx.tracker.channels import dial_app_targets
from callbridge.pbx.tracker.recovery import dial_targets
from callbridge.rules import Registration, RuleSettings, UserDirectory, registration
from callbridge.rules.numbers import normalise
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.outbox_support import Clock
from tests.sim_asterisk_support import RawAmi
from tests.test_tracker_traces import load, trace_path

PBX = PbxConfig()
OUTBOUND = ["06-outbound-answered", "06b-outbound-no-answer", "F06-outbound-answered"]
SNAPSHOT_KEYS = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "ConnectedLineNum",
    "Context",
    "Exten",
    "Uniqueid",
    "Linkedid",
    "Application",
    "ApplicationData",
    "Duration",
    "BridgeId",
)
USER_OF = {"101": 11, "102": 12}
USERS = [CrmUser(uid, f"user {ext}", ext, None, True) for ext, uid in USER_OF.items()]


def _ts(messages: list[AmiMessage], index: int) -> float:
    """Asterisk's time at message ``index`` (the last dated one up to it)."""
    for msg in reversed(messages[: index + 1]):
        raw = msg.get("Timestamp")
        if raw is not None:
            return float(raw)
    raise AssertionError("no dated message")


def _cuts(messages: list[AmiMessage], linkedid: str) -> range:
    """Cut points after the call's first DialBegin, up to and including its Cdr's."""
    dial = next(
        i for i, m in enumerate(messages) if m.event == "DialBegin" and m["Linkedid"] == linkedid
    )
    cdr = next(i for i, m in enumerate(messages) if m.event == "Cdr" and m["UniqueID"] == linkedid)
    return range(dial + 1, cdr + 1)


def _adopt(
    messages: list[AmiMessage], cut: int, strip_apps: bool = False
) -> tuple[CallTracker, list[CallEvent]]:
    """A fresh tracker adopting the snapshot after ``messages[:cut]``, fed the rest."""
    at = _ts(messages, cut - 1)
    items = snapshot_at(messages[:cut], at)
    if strip_apps:  # an Asterisk that gave no application (not a real one: a fallback)
        items = [
            AmiMessage([(k, "" if k.startswith("Application") else v) for k, v in m.items()])
            for m in items
        ]
    tracker = CallTracker(PBX)
    events = tracker.resync(items, at)
    for msg in messages[cut:]:
        events += tracker.feed(msg)
    return tracker, events


def _started_and_ended(events: list[CallEvent], call_id: str) -> tuple[CallStarted, CallEnded]:
    started = [e for e in events if isinstance(e, CallStarted) and e.call_id == call_id]
    ended = [e for e in events if isinstance(e, CallEnded) and e.call_id == call_id]
    assert len(started) == 1 and len(ended) == 1, (started, ended)
    return started[0], ended[0]


@pytest.mark.parametrize("name", OUTBOUND)
def test_every_cut_after_the_dial_adopts_the_number_direction_and_operator(name: str) -> None:
    messages, [want] = load(name)
    settings = RuleSettings()
    cuts = _cuts(messages, want["linkedid"])
    assert len(cuts) > 15
    for cut in cuts:
        tracker, events = _adopt(messages, cut)
        started, ended = _started_and_ended(events, want["linkedid"])
        got = (started.direction, started.external_number, started.operator)
        assert got == (Direction(want["direction"]), want["external_number"], want["operator"]), (
            cut,
            messages[cut - 1].event,
        )
        summary = ended.summary
        assert (summary.direction, summary.external_number, summary.operator) == got, cut
        assert want["external_number"] in summary.rang, cut
        decision = registration(settings, started)
        assert isinstance(decision, Registration), (cut, decision)
        assert decision.phone == normalise(want["external_number"], settings.default_region)
        assert tracker.live_calls == 0


@pytest.mark.parametrize("name", ["06-outbound-answered", "06b-outbound-no-answer"])
def test_without_application_fields_the_legs_exten_or_the_cdr_still_name_it(name: str) -> None:
    """Plain Asterisk copies the dialed exten to the trunk leg. (FreePBX's macro dials
    from ``s``: there only ``ApplicationData`` or the Cdr name the number.)"""
    messages, [want] = load(name)
    for cut in _cuts(messages, want["linkedid"]):
        _, events = _adopt(messages, cut, strip_apps=True)
        started, _ = _started_and_ended(events, want["linkedid"])
        assert started.external_number == want["external_number"], cut
        assert started.direction == want["direction"], cut


def test_with_no_cdr_to_come_a_nameless_trunk_leg_still_makes_an_answered_outbound_call() -> None:
    """FreePBX, adopted after the phone's Dial returned (it runs its hangup macro, the
    trunk leg still up, both at ``s``): nothing names the number and, with cdr_manager
    off, nothing will. The call must still end outbound, answered, by its operator."""
    messages, [want] = load("F06-outbound-answered")
    no_cdr = [m for m in messages if m.event != "Cdr"]
    tried = 0
    for cut in range(_cuts(messages, want["linkedid"]).start, len(no_cdr)):
        at = _ts(no_cdr, cut - 1)
        items = snapshot_at(no_cdr[:cut], at)
        apps = {m["Channel"].rsplit("-", 1)[0]: m["Application"] for m in items}
        if apps.keys() != {"PJSIP/102", "PJSIP/trunk"} or apps["PJSIP/102"] == "Dial":
            continue
        if apps["PJSIP/trunk"] != "AppDial":
            continue
        tried += 1
        _, events = _adopt(no_cdr, cut)
        started, ended = _started_and_ended(events, want["linkedid"])
        assert (started.direction, started.operator) == (Direction.OUTBOUND, want["operator"])
        assert ended.summary.answered and ended.summary.result == want["result"], cut
    assert tried >= 5


@pytest.mark.parametrize("name", OUTBOUND)
def test_through_the_engine_the_adopted_call_is_registered_with_its_number(
    name: str, tmp_path: Path
) -> None:
    messages, [want] = load(name)
    cuts = _cuts(messages, want["linkedid"])
    # The first cut, one mid-call, the last (after the Dial ended, before the Cdr).
    for cut in sorted({cuts[0], cuts[len(cuts) // 2], cuts[-1]}):
        _, events = _adopt(messages, cut)
        store = OutboxStore.open(tmp_path / f"{name}-{cut}.sqlite3", Clock())
        try:
            engine = Engine(RuleSettings(), store, UserDirectory.from_users(USERS))
            for event in events:
                engine.handle(event)
            ops = store.ops_for_call(want["linkedid"])
            registers = [op for op in ops if op.kind is OperationKind.REGISTER_CALL]
            assert len(registers) == 1, (cut, [op.key for op in ops])
            params = registers[0].params
            assert params["PHONE_NUMBER"] == normalise(want["external_number"], "RU"), cut
            assert str(params["USER_ID"]) == str(USER_OF[want["operator"]]), cut
            assert any(op.kind is OperationKind.FINISH_CALL for op in ops), cut
        finally:
            store.close()


def test_snapshot_at_answers_what_asterisk_answered() -> None:
    """Trace 13 holds a real ``CoreShowChannels`` answer taken mid-call (a queue call)."""
    messages, _ = load("13-ami-actions")
    items = [i for i, m in enumerate(messages) if m.event == "CoreShowChannel"]
    real = [messages[i] for i in items]
    pong = [m for m in messages[: items[0]] if m.get("Ping") == "Pong"][-1]
    ours = snapshot_at(messages[: items[0]], float(pong["Timestamp"]), real[0].action_id or "")
    assert [{k: m.get(k) for k in SNAPSHOT_KEYS} for m in ours] == [
        {k: m.get(k) for k in SNAPSHOT_KEYS} for m in real
    ]
    assert {m["Application"] for m in real} == {"Queue", "AppQueue"}


@pytest.mark.parametrize(
    "name",
    ["06-outbound-answered", "F06-outbound-answered", "08-click-to-call", "F05-followme-mobile"],
)
def test_snapshot_applications_are_those_the_cel_records_show_in_the_bridge(name: str) -> None:
    """While a call talks, each bridged channel's application is the one its
    ``BRIDGE_ENTER`` CEL record carries (CEL reports the channel's own snapshot)."""
    messages, _ = load(name)
    enters = [
        (i, m)
        for i, m in enumerate(messages)
        if m.event == "CEL" and m["EventName"] == "BRIDGE_ENTER"
    ]
    assert enters
    cut = enters[-1][0] + 1
    items = {m["Uniqueid"]: m for m in snapshot_at(messages[:cut], _ts(messages, cut - 1))}
    seen = 0
    for _, cel in enters:
        item = items.get(cel["UniqueID"])
        if item is None:
            continue  # gone by now
        assert (item["Application"], item["ApplicationData"]) == (
            cel["Application"],
            cel["AppData"],
        ), cel["Channel"]
        seen += 1
    assert seen >= 2


@pytest.mark.parametrize("name", ["05-inbound-queue-answered", "08-click-to-call"])
def test_without_dialplan_events_placed_legs_still_show_who_placed_them(name: str) -> None:
    """With the ``dialplan`` class filtered there is no ``Newexten``: the leg a DialBegin
    placed shows the app Asterisk set on it, as the full stream's snapshot says."""
    messages, _ = load(name)
    plain = [m for m in messages if m.event != "Newexten"]
    checked = 0
    for cut in range(1, len(messages)):
        if messages[cut - 1].event != "DialBegin":
            continue
        dest = messages[cut - 1]["DestUniqueid"]
        at = _ts(messages, cut - 1)
        [want] = [m for m in snapshot_at(messages[:cut], at) if m["Uniqueid"] == dest]
        kept = len([m for m in messages[:cut] if m.event != "Newexten"])
        [got] = [m for m in snapshot_at(plain[:kept], at) if m["Uniqueid"] == dest]
        assert want["ApplicationData"] == "(Outgoing Line)", (cut, want["Channel"])
        assert (got["Application"], got["ApplicationData"]) == (
            want["Application"],
            want["ApplicationData"],
        ), (cut, got["Channel"])
        checked += 1
    assert checked >= 2


def test_dial_data_is_read_as_app_dial_reads_it() -> None:
    assert dial_app_targets("PJSIP/74957770000@trunk,300,Tb(func-apply-sipheaders^s^1)") == [
        "PJSIP/74957770000@trunk"
    ]
    assert dial_app_targets("PJSIP/101&PJSIP/102,20,Ttr") == ["PJSIP/101", "PJSIP/102"]
    assert dial_app_targets("") == [] and dial_app_targets("700,tT,,,120") == []

    def item(data: str) -> AmiMessage:
        return AmiMessage.from_mapping({"Application": "Dial", "ApplicationData": data})

    # FreePBX's trunk dial with a URI, chan_sip's peer/number, a PJSIP URI, phones.
    assert dial_targets(PBX, item("PJSIP/74957770000@trunk/sip:x@h,300,T")) == [
        ("PJSIP/trunk", "74957770000")
    ]
    assert dial_targets(PBX, item("SIP/trunk/79161234567,60")) == [("SIP/trunk", "79161234567")]
    assert dial_targets(PBX, item("PJSIP/trunk/sip:79161234567@10.0.0.1,60")) == [
        ("PJSIP/trunk", "79161234567")
    ]
    assert dial_targets(PBX, item("PJSIP/101/sip:101@127.0.0.1:5161&Local/1@x/n,15")) == []
    not_dial = AmiMessage.from_mapping({"Application": "Queue", "ApplicationData": "SIP/t/1"})
    assert dial_targets(PBX, not_dial) == []


async def test_the_simulators_live_snapshot_lets_a_fresh_tracker_adopt_the_call() -> None:
    """Over real TCP: mid-call ``CoreShowChannels`` from the simulator replaying 06, as
    Asterisk fills it (the same items as ``snapshot_at`` of what was played), then a
    fresh tracker adopts the call with its number."""
    path = trace_path("06-outbound-answered")
    want = _truth(path)
    clock = ManualClock()
    sim = AsteriskSimulator(
        username="u", secret="s", traces=[path], speed=1.0, clock=clock, auth_fail_delay=0
    )
    await sim.start("127.0.0.1", 0)
    try:
        cli = await RawAmi.connect(sim.port)
        await cli.login()
        talk = (want["answer"] + want["end"]) / 2 - want["start"]
        clock.advance(talk)
        timeline = sim.timeline
        assert timeline is not None
        await sim.wait_for(lambda: (timeline.next_time() or 0.0) > talk)
        aid = cli.send("CoreShowChannels")
        played: list[AmiMessage] = []
        await cli.response(aid, played)
        items: list[AmiMessage] = []
        while (msg := await cli.next()).event != "CoreShowChannelsComplete":
            if msg.action_id == aid:
                items.append(msg)
        await cli.close()
    finally:
        await sim.stop()
    at = _ts(played, len(played) - 1)
    assert len(items) == 2
    assert [{k: m.get(k) for k in SNAPSHOT_KEYS if k != "Duration"} for m in items] == [
        {k: m.get(k) for k in SNAPSHOT_KEYS if k != "Duration"}
        for m in snapshot_at(played, at, aid)
    ]
    apps = {m["Channel"].rsplit("-", 1)[0]: m["Application"] for m in items}
    assert apps == {"PJSIP/101": "Dial", "PJSIP/trunk": "AppDial"}
    events = CallTracker(PBX).resync(items, at)
    [started] = [e for e in events if isinstance(e, CallStarted)]
    assert (started.direction, started.external_number, started.operator) == (
        Direction.OUTBOUND,
        want["external_number"],
        want["operator"],
    )


def _truth(path: Path) -> dict[str, Any]:
    from callbridge.sim.asterisk.truth import expected_calls

    truth = json.loads(path.with_suffix(".truth.json").read_text(encoding="utf-8"))
    [call] = expected_calls(truth)
    return call
