"""The REST-budget pacing objects, driven by a hand-moved clock (reference §3.1, §3.2)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.crm.bitrix24.limiter import Backoff, LeakyBucket, OperatingGuard


class PortalBucket:
    """The portal's rule as §3.1 states it: +1 per request, drains Y/s, refused past X."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.level, self.at = 0.0, 0.0
        self.refused = 0

    def arrive(self, t: float) -> bool:
        self.level = max(0.0, self.level - (t - self.at) * self.rate)
        self.at = t
        if self.level + 1 > self.burst:
            self.refused += 1
            return False
        self.level += 1
        return True


def test_burst_then_drain_rate() -> None:
    bucket = LeakyBucket(2.0, 50, margin=2)
    waits = [bucket.reserve(0.0) for _ in range(52)]
    assert waits[:48] == [0.0] * 48
    assert waits[48] == pytest.approx(0.5)
    assert waits[49] == pytest.approx(1.0)
    assert waits[51] == pytest.approx(2.0)
    # after a quiet minute the whole burst is back
    assert bucket.wait_time(100.0) == 0.0
    assert bucket.level(100.0) == 0.0


def test_enterprise_plan_rates() -> None:
    bucket = LeakyBucket(5.0, 250, margin=2)
    waits = [bucket.reserve(0.0) for _ in range(250)]
    assert waits.count(0.0) == 248
    assert waits[-1] == pytest.approx(2 / 5)


def test_saturate_means_wait_one_drain_step() -> None:
    bucket = LeakyBucket(2.0, 50)
    assert bucket.wait_time(10.0) == 0.0
    bucket.saturate(10.0)
    assert bucket.wait_time(10.0) == pytest.approx(0.5)
    assert bucket.wait_time(10.5) == 0.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        LeakyBucket(0, 50)
    with pytest.raises(ValueError, match="burst"):
        LeakyBucket(2, 0)
    assert LeakyBucket(2, 1, margin=5).capacity == 1


def _steady_run(rate: float, burst: int, seconds: float, jitter: list[float]) -> tuple[int, int]:
    """Send as fast as the limiter allows; each request reaches the portal after a delay."""
    bucket = LeakyBucket(rate, burst)
    portal = PortalBucket(rate, burst)
    now = 0.0
    sent = 0
    arrivals: list[float] = []
    while now < seconds:
        now += bucket.reserve(now)
        arrivals.append(now + jitter[sent % len(jitter)])
        sent += 1
    for t in sorted(arrivals):
        portal.arrive(t)
    return sent, portal.refused


@settings(derandomize=True, deadline=None, max_examples=60)
@given(
    jitter=st.lists(st.floats(0.0, 0.4), min_size=1, max_size=40),
    plan=st.sampled_from([(2.0, 50), (5.0, 250)]),
)
def test_steady_load_never_refused_and_runs_at_drain_rate(
    jitter: list[float], plan: tuple[float, int]
) -> None:
    rate, burst = plan
    seconds = 300.0
    sent, refused = _steady_run(rate, burst, seconds, jitter)
    assert refused == 0
    # burst + rate·t requests: the whole drain rate is used
    expected = burst - 2 + rate * seconds
    assert sent >= 0.98 * expected


def test_concurrent_reservations_are_spread_out() -> None:
    bucket = LeakyBucket(2.0, 3, margin=0)
    waits = sorted(bucket.reserve(5.0) for _ in range(7))
    assert waits == pytest.approx([0, 0, 0, 0.5, 1.0, 1.5, 2.0])


def test_guard_lets_a_fresh_method_go() -> None:
    guard = OperatingGuard(limit=480)
    assert guard.delay("crm.lead.add", 0.0) == 0.0
    guard.observe("crm.lead.add", 100.0, 0.0, 6000.0)
    assert guard.delay("crm.lead.add", 0.0) == 0.0
    assert guard.operating("CRM.LEAD.ADD", 0.0) == 100.0


def test_guard_holds_a_method_nearing_its_budget_and_no_other() -> None:
    """60 s per call, 480 budget, hard line 90 %: after 7 calls the 8th would cross 432."""
    guard = OperatingGuard(limit=480, hard=0.9)
    portal_offset = 6000.0  # the portal's clock is not ours
    for k in range(1, 8):
        # calls a minute apart: each minute of the window holds one call
        now = 60.0 * k
        guard.observe("telephony.externalcall.register", 60.0 * k, now, now + portal_offset)
    now = 60.0 * 7
    # 420 used + 60 for the next call > 432: wait until the oldest minute (the first call's)
    # drops out, 10 minutes after it began
    first_minute = int((60.0 + portal_offset) // 60)
    expected = (first_minute + 10) * 60.0 - (now + portal_offset)
    assert guard.delay("telephony.externalcall.register", now) == pytest.approx(expected)
    assert guard.delay("telephony.externalcall.finish", now) == 0.0
    assert guard.delay("telephony.externalcall.register", now + expected) == 0.0
    # two calls at once need two minutes to drop out
    assert guard.delay("telephony.externalcall.register", now, calls=2) == pytest.approx(
        expected + 60.0
    )


def test_guard_counts_usage_it_did_not_cause() -> None:
    """Another client of the same webhook spent 400 s: the next answer shows it."""
    guard = OperatingGuard(limit=480, hard=0.9)
    guard.observe("user.get", 1.0, 0.0, 0.0)
    guard.observe("user.get", 402.0, 1.0, 1.0)
    assert guard.operating("user.get", 1.0) == pytest.approx(402.0)
    assert guard.delay("user.get", 1.0) > 0  # 402 + expected cost 401 > 432
    # the portal forgets sooner than we thought: its figure wins
    guard.observe("user.get", 5.0, 2.0, 2.0)
    assert guard.operating("user.get", 2.0) == pytest.approx(5.0)


def test_guard_block_until_reset() -> None:
    guard = OperatingGuard(limit=480, default_block=60)
    until = guard.block("crm.lead.add", 10.0, 42.0)
    assert until == 52.0
    assert guard.delay("crm.lead.add", 20.0) == pytest.approx(32.0)
    assert guard.delay("crm.lead.list", 20.0) == 0.0
    assert guard.delay("crm.lead.add", 52.0) == 0.0
    assert guard.block("c.d", 5.0, None) == 65.0


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(base=0.5, cap=8.0, jitter=0.0)
    assert [backoff.delay(a) for a in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    jittered = Backoff(base=1.0, cap=30.0, jitter=0.2)
    rng = random.Random(7)
    for attempt in range(1, 8):
        raw = min(30.0, 2.0 ** (attempt - 1))
        d = jittered.delay(attempt, rng)
        assert raw * 0.8 <= d <= min(30.0, raw * 1.2)


def test_a_priority_request_goes_ahead_of_queued_bulk_work() -> None:
    # Bulk work (outbox batches, syncs) fills the bucket and queues; a look-up a caller on
    # the line is waiting for takes one of the reserved top places at once.
    bucket = LeakyBucket(2.0, 50, margin=2, priority_reserve=4)
    now = 100.0
    bulk_waits = [bucket.reserve(now) for _ in range(60)]
    assert bulk_waits[:44] == [0.0] * 44 and bulk_waits[-1] > 5.0
    assert bucket.reserve(now, priority=True) == 0.0
    # The reserve is only for priority: bulk never plans on those places.
    fresh = LeakyBucket(2.0, 50, margin=2, priority_reserve=4)
    assert sum(1 for _ in range(48) if fresh.reserve(now) == 0.0) == 44
