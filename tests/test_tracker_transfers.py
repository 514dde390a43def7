"""Transfers, pickups and failed originates no recorded trace covers, from tests/scenarios/.

Each ``tests/scenarios/*.ami`` is a synthetic AMI stream built from Asterisk's own code
paths (see the README there); ``*.expected.json`` next to it is the call story written by
hand. Every scenario is checked whole (all ``trace calls`` keys), re-keyed and mixed with
a recorded trace, and the events the engine relies on are checked for the key cases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from callbridge.calls import CallMerged, CallTransferred, TransferType
from callbridge.pbx.ami.framing import AmiMessage, iter_messages
from callbridge.pbx.tracker.cli import summaries_of
from tests.test_tracker_traces import PBX, assert_matches, load, rekey, run_tracker

SCENARIOS = Path(__file__).parent / "scenarios"


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIOS.glob("*.ami"))


def load_scenario(name: str) -> tuple[list[AmiMessage], list[dict[str, Any]]]:
    path = SCENARIOS / f"{name}.ami"
    expected = json.loads((SCENARIOS / f"{name}.expected.json").read_text(encoding="utf-8"))
    return iter_messages(path.read_bytes()), expected


def test_every_scenario_has_its_expected_result() -> None:
    names = scenario_names()
    assert len(names) >= 8
    for name in names:
        assert (SCENARIOS / f"{name}.expected.json").is_file(), name


@pytest.mark.parametrize("name", scenario_names())
def test_scenario_matches_its_expected_calls(name: str) -> None:
    messages, expected = load_scenario(name)
    got, _ = run_tracker(messages)
    assert got == expected


@pytest.mark.parametrize("name", scenario_names())
def test_scenario_through_trace_calls_reader(name: str) -> None:
    # The offline reader (``callbridge trace calls``) sees the raw bytes, banner included.
    _, expected = load_scenario(name)
    data = (SCENARIOS / f"{name}.ami").read_bytes()
    got = [s.to_json_obj() for s in summaries_of(data, PBX)]
    assert got == expected


@pytest.mark.parametrize("name", scenario_names())
def test_scenario_interleaved_with_a_recorded_call(name: str) -> None:
    # Another call overlapping in time must not change either story.
    messages, expected = load_scenario(name)
    other, other_expected = load("04-inbound-ringgroup")
    other, ids = rekey(other, "o", 9)
    mine, _ = rekey(messages, "m", 10)
    mine_ids = {e["linkedid"]: f"m-{e['linkedid']}" for e in expected}
    # Put the other call at this scenario's time so the two really overlap.
    shift = float(_first_ts(messages)) - float(_first_ts(other))
    mixed = sorted(
        [_shift(m, shift) for m in other if m.event is not None]
        + [m for m in mine if m.event is not None],
        key=lambda m: float(m.get("Timestamp") or 0.0),
    )
    got, _ = run_tracker(mixed)
    want = []
    for exp in expected:
        exp = dict(exp)
        if not exp["linkedid"].startswith("originate-"):
            exp["linkedid"] = mine_ids[exp["linkedid"]]
        want.append(exp)
    for exp in other_expected:
        exp = dict(exp)
        exp["linkedid"] = ids[exp["linkedid"]]
        for key in ("start", "answer", "end"):
            if exp[key] is not None:
                exp[key] = float(f"{exp[key] + shift:.6f}")
        want.append(exp)
    assert_matches(got, want)


def _first_ts(messages: list[AmiMessage]) -> str:
    return next(m["Timestamp"] for m in messages if m.get("Timestamp"))


def _shift(msg: AmiMessage, shift: float) -> AmiMessage:
    pairs = []
    for key, value in msg.items():
        if key == "Timestamp":
            value = f"{float(value) + shift:.6f}"
        pairs.append((key, value))
    return AmiMessage(pairs)


# --- the events the engine sees --------------------------------------------------------


def _events(name: str) -> list[Any]:
    messages, _ = load_scenario(name)
    _, events = run_tracker(messages)
    return events


def test_dtmf_attended_transfer_announces_101_to_103_once() -> None:
    events = _events("S01-inbound-attended-transfer-dtmf")
    transfers = [e.transfer for e in events if isinstance(e, CallTransferred)]
    assert [(t.type, t.from_extension, t.to_extension) for t in transfers] == [
        (TransferType.ATTENDED, "101", "103")
    ]
    # The consultation leg never makes a second call.
    assert not any(isinstance(e, CallMerged) for e in events)


@pytest.mark.parametrize(
    "name", ["S03-inbound-attended-transfer-refer", "S04-inbound-attended-transfer-refer-reverse"]
)
def test_refer_attended_transfer_absorbs_the_consultation_call(name: str) -> None:
    messages, expected = load_scenario(name)
    _, events = run_tracker(messages)
    merged = [e for e in events if isinstance(e, CallMerged)]
    assert len(merged) == 1
    assert merged[0].call_id == expected[0]["linkedid"]
    assert merged[0].absorbed_call_id != expected[0]["linkedid"]
    transfers = [e for e in events if isinstance(e, CallTransferred)]
    assert [(e.call_id, e.transfer.from_extension, e.transfer.to_extension) for e in transfers] == [
        (expected[0]["linkedid"], "101", "103")
    ]


def test_pickup_is_not_a_transfer() -> None:
    for name in ("S05-inbound-directed-pickup", "S06-inbound-ringgroup-group-pickup"):
        events = _events(name)
        assert not any(isinstance(e, CallTransferred) for e in events), name
