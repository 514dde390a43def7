"""The portal's two limits (reference §3.1, §3.2), driven by the emulator's clock.

* ``LeakyBucket``: every REST request adds 1, the level drains by ``rate`` per second, a
  request that would lift it past ``burst`` is refused (``QUERY_LIMIT_EXCEEDED``).
* ``OperatingTime``: per method and per app/webhook, seconds of method time summed over ten
  one-minute buckets; past the limit the *next* call of that method is refused
  (``OPERATION_TIME_LIMIT``) until the oldest bucket drops out (``operating_reset_at``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WINDOW_BUCKETS = 10
BUCKET_SECONDS = 60.0


@dataclass
class LeakyBucket:
    rate: float
    burst: int
    level: float = 0.0
    at: float | None = None

    def _drain(self, now: float) -> None:
        if self.at is not None and now > self.at:
            self.level = max(0.0, self.level - (now - self.at) * self.rate)
        if self.at is None or now > self.at:
            self.at = now

    def try_take(self, now: float) -> bool:
        """Count one request; ``False`` (and nothing counted) when it would overflow."""
        self._drain(now)
        if self.level + 1 > self.burst:
            return False
        self.level += 1
        return True

    def reset(self) -> None:
        self.level = 0.0
        self.at = None


@dataclass
class _MethodUse:
    buckets: dict[int, float] = field(default_factory=dict)

    def _trim(self, now: float) -> None:
        current = int(now // BUCKET_SECONDS)
        for minute in [m for m in self.buckets if m <= current - WINDOW_BUCKETS]:
            del self.buckets[minute]

    def used(self, now: float) -> float:
        self._trim(now)
        return sum(self.buckets.values())

    def reset_at(self, now: float) -> int:
        self._trim(now)
        oldest = min(self.buckets) if self.buckets else int(now // BUCKET_SECONDS)
        return math.ceil((oldest + WINDOW_BUCKETS) * BUCKET_SECONDS)


@dataclass
class OperatingTime:
    limit_seconds: float = 480.0
    uses: dict[tuple[str, str], _MethodUse] = field(default_factory=dict)

    def blocked(self, key: str, method: str, now: float) -> bool:
        use = self.uses.get((key, method))
        return use is not None and use.used(now) > self.limit_seconds

    def add(self, key: str, method: str, seconds: float, now: float) -> None:
        use = self.uses.setdefault((key, method), _MethodUse())
        minute = int(now // BUCKET_SECONDS)
        use.buckets[minute] = use.buckets.get(minute, 0.0) + seconds

    def operating(self, key: str, method: str, now: float) -> float:
        use = self.uses.get((key, method))
        return round(use.used(now), 4) if use is not None else 0.0

    def reset_at(self, key: str, method: str, now: float) -> int:
        use = self.uses.get((key, method))
        if use is None:
            return math.ceil(now + WINDOW_BUCKETS * BUCKET_SECONDS)
        return use.reset_at(now)

    def reset(self) -> None:
        self.uses.clear()


def parse_rate(text: str | None) -> tuple[float, int] | None:
    """``"2/50"`` → ``(2.0, 50)``; ``"off"``/empty → ``None``. Raises ``ValueError`` if bad."""
    if text is None or text.strip().lower() in ("", "off", "none"):
        return None
    rate_text, sep, burst_text = text.partition("/")
    if not sep:
        raise ValueError(f"--rate must look like 2/50 or off, got {text!r}")
    rate, burst = float(rate_text), int(burst_text)
    if rate <= 0 or burst <= 0:
        raise ValueError(f"--rate needs a positive drain and burst, got {text!r}")
    return rate, burst
