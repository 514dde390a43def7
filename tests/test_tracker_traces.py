"""Call stories from real Asterisk recordings: each trace's business calls, as its truth says.

Each test feeds one raw ``.ami`` file through the framer and the tracker and compares the
printed calls with ``expected_calls(truth.json)`` (callbridge.sim.asterisk.truth). The
helpers here (loading, re-keying, noise) are shared by the other tracker tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from callbridge.calls import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallStarted,
    RecordingKnown,
    RingingChanged,
)
from callbridge.config import PbxConfig
from callbridge.pbx.ami.framing import AmiMessage, iter_messages
from callbridge.pbx.tracker import TRACKED_VARIABLES, CallTracker
from callbridge.sim.asterisk.truth import comparable, expected_calls

TRACES = Path(__file__).parent / "traces"
PBX = PbxConfig()

NOISE_EVENTS = frozenset(
    {
        "Newexten",
        "CEL",
        "Cdr",
        "RTCPSent",
        "RTCPReceived",
        "DeviceStateChange",
        "ExtensionStatus",
        "QueueMemberStatus",
        "AGIExecStart",
        "AGIExecEnd",
        "NewConnectedLine",
        "MusicOnHoldStart",
        "MusicOnHoldStop",
        "MixMonitorStart",
        "MixMonitorStop",
        "SoftHangupRequest",
        "HangupRequest",
        "Hold",
        "Unhold",
        "DialState",
        "LocalBridge",
        "BridgeCreate",
        "BridgeDestroy",
        "SuccessfulAuth",
        "InvalidPassword",
        "RequestBadFormat",
    }
)


def trace_path(name: str) -> Path:
    found = sorted(TRACES.glob(f"*/{name}.ami"))
    assert len(found) == 1, name
    return found[0]


def all_trace_names() -> list[str]:
    return sorted(p.stem for p in TRACES.glob("*/*.ami") if "failed-login" not in p.name)


def load(name: str) -> tuple[list[AmiMessage], list[dict[str, Any]]]:
    path = trace_path(name)
    truth = json.loads(path.with_suffix(".truth.json").read_text(encoding="utf-8"))
    return iter_messages(path.read_bytes()), expected_calls(truth)


def run_tracker(messages: list[AmiMessage]) -> tuple[list[dict[str, Any]], list[CallEvent]]:
    """Every ended and open call as ``trace calls`` prints it (by start), plus all events."""
    tracker = CallTracker(PBX)
    events: list[CallEvent] = []
    for msg in messages:
        events.extend(tracker.feed(msg))
    calls = [e.summary for e in events if isinstance(e, CallEnded)] + tracker.open_calls()
    calls.sort(key=lambda s: s.start)
    return [c.to_json_obj() for c in calls], events


def assert_matches(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    by_id = {call["linkedid"]: call for call in got}
    assert sorted(by_id) == sorted(e["linkedid"] for e in expected), got
    for exp in expected:
        assert comparable(by_id[exp["linkedid"]], exp) == exp


def is_noise(msg: AmiMessage) -> bool:
    event = msg.event
    if event in NOISE_EVENTS:
        return True
    if event == "VarSet":
        var = (msg.get("Variable") or "").lstrip("_")
        return var not in TRACKED_VARIABLES and var != PBX.crm_call_id_variable
    return False


_SUFFIX = re.compile(r"-([0-9a-fA-F]{8})(;[12])?$")


def rekey(
    messages: list[AmiMessage], tag: str, stream: int, shift_us: int = 0
) -> tuple[list[AmiMessage], dict[str, str]]:
    """Give every Uniqueid/Linkedid and channel suffix of a stream new values, shift times.

    Returns the new messages and the old→new id map (to re-key expectations too).
    """
    ids: dict[str, str] = {}

    def new_id(old: str) -> str:
        if old in ("", "<unknown>", "none"):
            return old
        if old not in ids:
            ids[old] = f"{tag}-{old}"
        return ids[old]

    def new_name(old: str) -> str:
        match = _SUFFIX.search(old)
        if match is None:
            return old
        suffix = f"{stream:02x}{int(match.group(1), 16) & 0xFFFFFF:06x}"
        return old[: match.start()] + f"-{suffix}" + (match.group(2) or "")

    out = []
    for msg in messages:
        pairs = []
        for key, value in msg.items():
            if key.endswith(("Uniqueid", "Linkedid", "UniqueID")):
                value = new_id(value)
            elif key.endswith("Channel") and key != "DestChannelState":
                value = new_name(value)
            elif key == "Timestamp" and shift_us:
                value = f"{(int(value.replace('.', '')) + shift_us) / 1e6:.6f}"
            pairs.append((key, value))
        out.append(AmiMessage(pairs))
    return out, ids


def rekey_expected(
    expected: list[dict[str, Any]], ids: dict[str, str], shift_us: int
) -> list[dict[str, Any]]:
    out = []
    for exp in expected:
        exp = dict(exp)
        exp["linkedid"] = ids.get(exp["linkedid"], exp["linkedid"])
        for key in ("start", "answer", "end"):
            if exp[key] is not None and shift_us:
                micro = round(exp[key] * 1e6) + shift_us
                exp[key] = float(f"{micro / 1e6:.6f}")
        out.append(exp)
    return out


@pytest.mark.parametrize("name", all_trace_names())
def test_every_recorded_trace_matches_its_truth(name: str) -> None:
    messages, expected = load(name)
    got, _ = run_tracker(messages)
    assert_matches(got, expected)


# --- call stories, one per recording, with the events the engine relies on ---------------


def _story(name: str) -> tuple[list[dict[str, Any]], list[CallEvent]]:
    messages, expected = load(name)
    got, events = run_tracker(messages)
    assert_matches(got, expected)
    return got, events


def test_inbound_to_101_answered_and_recorded() -> None:
    _got, events = _story("01-inbound-answered")
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "CallStarted" and kinds[-1] == "CallEnded"
    started = events[0]
    assert isinstance(started, CallStarted)
    assert (started.external_number, started.did) == ("74951234567", "74957654321")
    answered = [e for e in events if isinstance(e, CallAnswered)]
    assert [(a.extension, a.device) for a in answered] == [("101", None)]
    assert any(isinstance(e, RecordingKnown) for e in events)
    ringing = [e.ringing for e in events if isinstance(e, RingingChanged)]
    assert ringing == [("101",), ()]


def test_inbound_to_101_missed_caller_gives_up() -> None:
    got, events = _story("02-inbound-missed")
    assert got[0]["result"] == "missed" and got[0]["answered_by"] is None
    assert not any(isinstance(e, CallAnswered) for e in events)


def test_inbound_to_101_busy() -> None:
    got, _ = _story("03-inbound-busy")
    assert got[0]["result"] == "busy"


def test_inbound_ring_group_102_answers() -> None:
    got, _ = _story("04-inbound-ringgroup")
    assert got[0]["rang"] == ["101", "102"] and got[0]["answered_by"] == "102"


def test_inbound_queue_102_answers() -> None:
    got, _ = _story("05-inbound-queue-answered")
    assert got[0]["answered_by"] == "102"


def test_inbound_queue_abandoned_is_missed() -> None:
    got, _ = _story("05b-inbound-queue-abandoned")
    assert got[0]["result"] == "missed"


def test_outbound_101_to_external_answered() -> None:
    got, _ = _story("06-outbound-answered")
    assert (got[0]["operator"], got[0]["answered_by"]) == ("101", "101")


def test_outbound_101_not_answered() -> None:
    got, _ = _story("06b-outbound-no-answer")
    assert got[0]["result"] == "not_answered"


def test_internal_101_calls_102() -> None:
    got, _ = _story("07-internal")
    assert got[0]["direction"] == "internal" and got[0]["external_number"] is None


def test_click_to_call_rings_101_then_dials_external() -> None:
    got, events = _story("08-click-to-call")
    started = [e for e in events if isinstance(e, CallStarted)]
    assert started[0].tags == {"CRM_CALL_ID": "CALL-20261120-0001"}
    assert got[0]["rang"] == ["101", "74957770000"]


def test_inbound_101_blind_transfers_to_103_by_ami() -> None:
    got, _ = _story("09-inbound-blind-transfer")
    assert got[0]["final_operator"] == "103"


def test_inbound_101_blind_transfers_to_103_by_refer() -> None:
    got, _ = _story("09b-inbound-blind-transfer-refer")
    assert got[0]["transfers"] == [{"type": "blind", "from": "101", "to": "103"}]


def test_inbound_routed_by_fastagi_to_102() -> None:
    _story("12-fastagi-route")


def test_inbound_fastagi_dials_102_itself() -> None:
    _story("12b-fastagi-dial")


def test_queue_call_and_failed_click_to_call_to_busy_103() -> None:
    got, _ = _story("13-ami-actions")
    failed = [c for c in got if c["result"] == "failed"]
    assert len(failed) == 1 and failed[0]["operator"] == "103"


def test_freepbx_inbound_to_101_through_macros() -> None:
    _story("F01-inbound-answered")


def test_freepbx_ring_group_local_members_102_answers() -> None:
    got, _ = _story("F03-ringgroup-local")
    assert got[0]["answered_by"] == "102"


def test_freepbx_queue_local_members_101_answers() -> None:
    got, _ = _story("F04-queue-local-answered")
    assert got[0]["answered_by"] == "101"


def test_freepbx_follow_me_mobile_answers_for_101() -> None:
    got, events = _story("F05-followme-mobile")
    assert (got[0]["answered_by"], got[0]["answered_on"]) == ("101", "79161234567")
    answered = [e for e in events if isinstance(e, CallAnswered)]
    assert [(a.extension, a.device) for a in answered] == [("101", "79161234567")]


def test_freepbx_outbound_102_answered() -> None:
    _story("F06-outbound-answered")


def test_freepbx_internal_101_calls_102() -> None:
    _story("F11-internal")
