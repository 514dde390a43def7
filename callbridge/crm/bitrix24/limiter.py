"""Pacing decisions for the REST budget, as pure objects driven by an injected clock.

* :class:`LeakyBucket` mirrors the portal's request-rate bucket (§3.1): every request adds 1,
  the level drains by ``rate`` per second, the portal refuses a request that takes the level
  past ``burst``. Ours is kept ``margin`` below the portal's so jitter between our send time
  and the portal's arrival time never tips it over; in steady state it still admits exactly
  ``rate`` requests per second.
* :class:`OperatingGuard` follows each method's ``time.operating`` (§3.2) and holds back a
  method that nears its budget, or one the portal blocked until its ``operating_reset_at``,
  while every other method goes on.
* :class:`Backoff` is the capped, jittered delay after a refusal.

None of them sleeps: each says how long to wait; the client does the waiting.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["PRIORITY_RESERVE", "Backoff", "LeakyBucket", "OperatingGuard"]

#: Bucket places callbridge keeps for look-ups a caller on the line waits for.
PRIORITY_RESERVE = 4


class LeakyBucket:
    """The portal's leaky bucket, seen from the client.

    :meth:`reserve` books the next slot and says how long to wait for it; concurrent callers
    each get their own slot (a booked slot counts even before it is used), so N tasks asking at
    once are spread out at ``1/rate`` apart once the burst is spent.
    """

    def __init__(
        self, rate: float = 2.0, burst: int = 50, *, margin: int = 2, priority_reserve: int = 0
    ) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self.rate = rate
        self.burst = burst
        # Never plan on the last `margin` places of the portal's bucket; keep at least one.
        self.capacity = float(max(1, burst - max(0, margin)))
        #: Places at the top of the bucket only priority requests may take (a caller on
        #: the line waiting for its route), so bulk work (outbox batches, syncs) never
        #: leaves them queued behind it.
        self.bulk_capacity = max(1.0, self.capacity - max(0, priority_reserve))
        self._level = 0.0
        self._prio = 0.0  # the part of the level booked by priority requests
        self._at: float | None = None

    def _drain(self, now: float) -> None:
        if self._at is not None and now > self._at:
            self._level = max(0.0, self._level - (now - self._at) * self.rate)
            self._prio = min(self._prio, self._level)
        if self._at is None or now > self._at:
            self._at = now

    def level(self, now: float) -> float:
        """Requests in the bucket at ``now`` (booked future slots included)."""
        self._drain(now)
        return self._level

    def wait_time(self, now: float, *, priority: bool = False) -> float:
        """How long a request made at ``now`` would wait, without booking it."""
        self._drain(now)
        if not priority:
            return max(0.0, (self._level + 1.0 - self.bulk_capacity) / self.rate)
        # Bulk bookings past ``bulk_capacity`` are slots in the future: at ``now`` the
        # bucket holds at most ``bulk_capacity`` of them, plus the priority requests.
        filled = min(self._level - self._prio, self.bulk_capacity) + self._prio
        return max(0.0, (filled + 1.0 - self.capacity) / self.rate)

    def reserve(self, now: float, *, priority: bool = False) -> float:
        """Book one request; returns the seconds to wait before sending it. A priority
        request may use the reserved top places, so it goes ahead of queued bulk work."""
        wait = self.wait_time(now, priority=priority)
        self._level += 1.0
        if priority:
            self._prio += 1.0
        return wait

    def saturate(self, now: float) -> None:
        """The portal said ``QUERY_LIMIT_EXCEEDED``: its bucket is full, whatever we thought.

        Something else spends this portal's budget (another app on the same IP); assume the
        bucket full now so the next request waits for one drain step.
        """
        self._drain(now)
        self._level = max(self._level, self.capacity)


WINDOW_MINUTES = 10


@dataclass
class _MethodState:
    # The portal's sliding window as we reconstruct it: portal minute → seconds used.
    window: dict[int, float] = field(default_factory=dict)
    cost: float = 0.0  # what one call of the method is expected to add
    blocked_until: float | None = None  # local clock


@dataclass
class OperatingGuard:
    """Per-method operating-time budget (§3.2), on the client's clock.

    The portal sums each method's time over ten one-minute buckets and refuses the next call
    once the sum passes ``limit`` (480 s in the cloud). The guard rebuilds that window from
    every answer's ``time.operating`` (what a call added goes into its minute, so usage by
    other clients of the same credential is counted too) and holds a method back until the
    minutes that drop out leave room for one more call under ``hard`` × limit — a method is
    slowed before the portal would block it, and no other method is. A portal block
    (``OPERATION_TIME_LIMIT``) holds the method until ``operating_reset_at``.
    """

    limit: float = 480.0
    hard: float = 0.9
    default_block: float = 60.0
    _methods: dict[str, _MethodState] = field(default_factory=dict)
    _offset: float = 0.0  # portal time − local time, from the last answer

    def _state(self, method: str) -> _MethodState:
        return self._methods.setdefault(method.lower(), _MethodState())

    @staticmethod
    def _used(state: _MethodState, portal_now: float) -> float:
        current = int(portal_now // 60)
        for minute in [m for m in state.window if m <= current - WINDOW_MINUTES]:
            del state.window[minute]
        return sum(state.window.values())

    def observe(
        self, method: str, operating: float, now: float, portal_now: float | None = None
    ) -> None:
        """Record an answer's ``time.operating`` (``portal_now`` = its ``time.finish``)."""
        if portal_now is None:
            portal_now = now + self._offset
        else:
            self._offset = portal_now - now
        state = self._state(method)
        before = self._used(state, portal_now)
        added = operating - before
        if added < -1e-6:
            # The portal counts less than we thought: start again from its figure, all of it
            # in this minute (it then drops out later than it really does: the safe side).
            state.window = {int(portal_now // 60): operating}
            return
        minute = int(portal_now // 60)
        state.window[minute] = state.window.get(minute, 0.0) + max(0.0, added)
        # Expected cost of the next call: the latest, decaying slowly from the largest seen.
        state.cost = max(added, 0.8 * state.cost)

    def block(self, method: str, now: float, reset_in: float | None) -> float:
        """The portal blocked ``method``; returns the local time it is blocked until."""
        state = self._state(method)
        if reset_in is not None and reset_in > 0:
            until = now + reset_in
        else:
            until = now + self.default_block
        state.blocked_until = until
        return until

    def delay(self, method: str, now: float, calls: int = 1) -> float:
        """Seconds ``method`` should wait before ``calls`` more calls (0 = go)."""
        state = self._methods.get(method.lower())
        if state is None:
            return 0.0
        if state.blocked_until is not None:
            if state.blocked_until > now:
                return state.blocked_until - now
            state.blocked_until = None
        portal_now = now + self._offset
        used = self._used(state, portal_now)
        room = self.hard * self.limit - calls * state.cost
        if used <= room:
            return 0.0
        # Wait for the oldest minutes to drop out until there is room.
        for minute in sorted(state.window):
            used -= state.window[minute]
            if used <= room:
                drop_at = (minute + WINDOW_MINUTES) * 60.0
                return max(0.0, drop_at - portal_now)
        return max(0.0, (max(state.window) + WINDOW_MINUTES) * 60.0 - portal_now)

    def operating(self, method: str, now: float) -> float:
        """The method's time in the portal's window at ``now``, as far as we know."""
        state = self._methods.get(method.lower())
        return self._used(state, now + self._offset) if state is not None else 0.0


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with jitter: ``base·2^(attempt-1)`` up to ``cap``."""

    base: float = 0.5
    cap: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        raw = min(self.cap, self.base * float(2 ** max(0, attempt - 1)))
        if self.jitter <= 0:
            return raw
        spread = raw * self.jitter
        r: float = (rng or random.Random()).uniform(-spread, spread)
        return max(0.0, min(self.cap, raw + r))
