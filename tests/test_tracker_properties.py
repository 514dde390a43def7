"""Properties: a recorded call comes out the same whatever surrounds it.

Mixed with another call (two re-keyed traces interleaved by timestamp), with other ids,
without the noise events, fed to a tracker that also saw garbage: same business calls.
"""

from __future__ import annotations

import heapq
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.calls import CallEnded
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.pbx.tracker import CallTracker

from .test_tracker_traces import (
    PBX,
    all_trace_names,
    assert_matches,
    is_noise,
    load,
    rekey,
    rekey_expected,
    run_tracker,
)

NAMES = all_trace_names()


def _timed(messages: list[AmiMessage]) -> list[tuple[float, AmiMessage]]:
    # Untimed messages (responses, list items) keep their place after the previous event.
    out, last = [], 0.0
    for msg in messages:
        raw = msg.get("Timestamp")
        if raw is not None:
            last = float(raw)
        out.append((last, msg))
    return out


def _interleave(*streams: list[AmiMessage]) -> list[AmiMessage]:
    merged = heapq.merge(*(_timed(s) for s in streams), key=lambda pair: pair[0])
    return [msg for _, msg in merged]


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    first=st.sampled_from(NAMES),
    second=st.sampled_from(NAMES),
    shift_ms=st.integers(min_value=-20_000, max_value=20_000),
    drop_noise=st.booleans(),
)
def test_two_calls_interleaved_rekeyed_come_out_as_alone(
    first: str, second: str, shift_ms: int, drop_noise: bool
) -> None:
    msgs_a, exp_a = load(first)
    msgs_b, exp_b = load(second)
    # Move b onto a's time line (plus the drawn shift) so the two calls overlap.
    start_a, start_b = exp_a[0]["start"], exp_b[0]["start"]
    shift_us = round((start_a - start_b) * 1e6) + shift_ms * 1000
    msgs_a, ids_a = rekey(msgs_a, "a", 1)
    msgs_b, ids_b = rekey(msgs_b, "b", 2, shift_us)
    mixed = _interleave(msgs_a, msgs_b)
    if drop_noise:
        mixed = [m for m in mixed if not is_noise(m)]
    got, _ = run_tracker(mixed)
    expected = rekey_expected(exp_a, ids_a, 0) + rekey_expected(exp_b, ids_b, shift_us)
    assert_matches(got, expected)


@settings(derandomize=True, deadline=None, max_examples=30)
@given(name=st.sampled_from(NAMES), tag=st.text("abcdef0123456789", min_size=1, max_size=12))
def test_rekeyed_ids_give_the_same_calls(name: str, tag: str) -> None:
    messages, expected = load(name)
    rekeyed, ids = rekey(messages, tag, 7)
    got, _ = run_tracker(rekeyed)
    assert_matches(got, rekey_expected(expected, ids, 0))


def test_noise_free_streams_give_the_same_calls() -> None:
    for name in NAMES:
        messages, expected = load(name)
        quiet = [m for m in messages if not is_noise(m)]
        assert len(quiet) < len(messages)
        got, _ = run_tracker(quiet)
        assert_matches(got, expected)


def _garbage() -> st.SearchStrategy[AmiMessage]:
    keys = st.sampled_from(
        ["Event", "Uniqueid", "Linkedid", "Channel", "DestUniqueid", "DialStatus", "Timestamp"]
    )
    values = st.sampled_from(
        ["Hangup", "DialEnd", "DialBegin", "Newchannel", "ANSWER", "x", "", "1.5", "PJSIP/1-1"]
    )
    return st.lists(st.tuples(keys, values), min_size=1, max_size=8).map(AmiMessage)


@settings(derandomize=True, deadline=None, max_examples=40)
@given(name=st.sampled_from(NAMES), junk=st.lists(_garbage(), max_size=20))
def test_malformed_events_never_stop_the_tracker(name: str, junk: list[AmiMessage]) -> None:
    messages, expected = load(name)
    tracker = CallTracker(PBX)
    for msg in junk:
        tracker.feed(msg)
    ended: list[dict[str, Any]] = []
    for msg in messages:
        for event in tracker.feed(msg):
            if isinstance(event, CallEnded):
                ended.append(event.summary.to_json_obj())
    for exp in expected:
        assert exp["linkedid"] in {c["linkedid"] for c in ended}
