"""Resync: the AMI link drops mid-call, events are lost, the tracker rebuilds from a snapshot.

For every trace and many cut points: feed the events before the cut, lose a few, build
the ``CoreShowChannels`` answer of that moment from the trace itself (``snapshot_at``),
resync with the time of the last lost event (Asterisk's clock, as the Ping after the list
gives it), feed the rest. Nothing may stay open; a call answered before the cut, or whose
answering device is still up at the snapshot, ends answered by the right extension.
"""

from __future__ import annotations

from typing import Any

import pytest

from callbridge.calls import CallEnded
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.pbx.tracker import CallTracker, snapshot_at

from .test_tracker_traces import PBX, all_trace_names, load

CUTS = 24


def _ts(messages: list[AmiMessage], index: int) -> float:
    for msg in reversed(messages[: index + 1]):
        raw = msg.get("Timestamp")
        if raw is not None:
            return float(raw)
    return 0.0


def _run_with_gap(messages: list[AmiMessage], cut: int, lost: int) -> tuple[CallTracker, list[Any]]:
    tracker = CallTracker(PBX)
    ended: list[Any] = []
    resume = min(len(messages), cut + lost)
    for msg in messages[:cut]:
        ended += [e.summary for e in tracker.feed(msg) if isinstance(e, CallEnded)]
    at = _ts(messages, resume - 1) if resume else 0.0
    snapshot = snapshot_at(messages[:resume], at)
    ended += [e.summary for e in tracker.resync(snapshot, at) if isinstance(e, CallEnded)]
    for msg in messages[resume:]:
        ended += [e.summary for e in tracker.feed(msg) if isinstance(e, CallEnded)]
    return tracker, ended


@pytest.mark.parametrize("lost", [0, 3, 25])
@pytest.mark.parametrize("name", all_trace_names())
def test_cut_anywhere_nothing_stays_open_and_answers_survive(name: str, lost: int) -> None:
    messages, expected = load(name)
    step = max(1, len(messages) // CUTS)
    for cut in range(1, len(messages), step):
        tracker, ended = _run_with_gap(messages, cut, lost)
        assert tracker.open_calls() == [], (name, cut)
        assert tracker.live_channels == 0 and tracker.live_calls == 0
        gap_start = _ts(messages, cut - 1)
        gap_end = _ts(messages, min(len(messages), cut + lost) - 1)
        by_id = {s.linkedid: s for s in ended}
        for exp in expected:
            got = by_id.get(exp["linkedid"])
            if exp["end"] is not None and exp["end"] <= gap_end and exp["start"] >= gap_start:
                continue  # the whole call fell into the gap: nobody could see it
            if got is None:
                # The call started in the gap: it is known only if a channel survived it.
                assert exp["start"] >= gap_start, (name, cut, exp["linkedid"])
                continue
            assert got.result is not None and got.end is not None
            if exp["answered"] and (exp["answer"] < gap_start or exp["end"] > gap_end):
                assert got.answered, (name, cut)
                assert got.answered_by == exp["answered_by"], (name, cut)
            if exp["answer"] is not None and exp["answer"] < gap_start:
                assert got.answer == exp["answer"], (name, cut)


def test_calls_that_vanished_in_the_gap_end_at_the_resync_time_with_a_note() -> None:
    messages, expected = load("01-inbound-answered")
    answered_at = next(
        i
        for i, m in enumerate(messages)
        if m.event == "DialEnd" and m.get("DialStatus") == "ANSWER"
    )
    tracker = CallTracker(PBX)
    for msg in messages[: answered_at + 1]:
        tracker.feed(msg)
    at = expected[0]["end"] + 30.0
    events = tracker.resync([], at)
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert len(ended) == 1
    summary = ended[0].summary
    assert summary.end == at and summary.note is not None and "gap" in summary.note
    assert summary.answered_by == "101" and summary.result is not None
    assert tracker.open_calls() == []


def test_resync_of_a_fresh_tracker_adopts_live_calls() -> None:
    messages, expected = load("05-inbound-queue-answered")
    answered = next(i for i, m in enumerate(messages) if m.event == "AgentConnect")
    at = _ts(messages, answered + 5)
    tracker = CallTracker(PBX)
    tracker.resync(snapshot_at(messages[: answered + 6], at), at)
    ended: list[Any] = []
    for msg in messages[answered + 6 :]:
        ended += [e.summary for e in tracker.feed(msg) if isinstance(e, CallEnded)]
    assert len(ended) == 1
    assert ended[0].answered_by == "102" and ended[0].direction == "inbound"
    assert ended[0].external_number == expected[0]["external_number"]
    assert tracker.open_calls() == []
