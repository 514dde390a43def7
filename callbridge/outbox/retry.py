"""When to try a failed operation again: a pure function of error kind, attempt and now.

Retryable errors back off exponentially with "equal jitter" (half fixed, half random), so
many calls failing together during an outage do not come back as one storm. Auth errors
pause the whole outbox for a fixed time (an admin must act; probing more often would only
burn the rate budget). Permanent and validation errors are never retried.
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.crm.base import ErrorKind

__all__ = ["RetryPolicy", "next_attempt_at"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 1.0
    cap: float = 300.0
    auth_pause: float = 60.0


def next_attempt_at(
    policy: RetryPolicy, kind: ErrorKind, attempt: int, now: float, rand: float
) -> float | None:
    """Unix time of the next try after failed attempt number ``attempt`` (1-based).

    ``rand`` is a number in [0, 1) from an injected random source. ``None``: never again.
    """
    if kind is ErrorKind.AUTH:
        return now + policy.auth_pause
    if kind is not ErrorKind.RETRYABLE:
        return None
    exp = min(max(attempt, 1) - 1, 30)
    delay = min(policy.cap, policy.base * (2.0**exp))
    return now + delay / 2 + (delay / 2) * min(max(rand, 0.0), 1.0)
