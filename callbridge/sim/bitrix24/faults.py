"""Injected failures for ``POST /_emulator/faults`` — what a portal or its network can do.

Modes: ``down`` (connections reset, control routes stay up), ``503``, ``timeout`` (no answer
within ``delay``), ``lost_answer`` (applied, then the connection drops), ``slow`` (answer
``delay`` late), ``revoke`` (webhook refused; app refresh refused), ``moved`` (the portal was
renamed: REST answers 302 to the same path under ``to``, §1.1), ``none``.
A fault ends after ``seconds`` of emulator time, or when cleared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODES = ("none", "down", "503", "timeout", "lost_answer", "slow", "revoke", "moved")


@dataclass
class Fault:
    mode: str = "none"
    until: float | None = None
    delay: float = 0.0
    to: str = ""

    def active(self, now: float) -> str:
        """The mode in force at ``now`` (``"none"`` once it has run out)."""
        if self.mode != "none" and self.until is not None and now >= self.until:
            self.mode, self.until, self.delay = "none", None, 0.0
        return self.mode

    def to_json(self, now: float) -> dict[str, Any]:
        return {"mode": self.active(now), "until": self.until, "delay": self.delay, "to": self.to}


def parse_fault(body: Any, now: float) -> Fault:
    """Validate a faults request body; raises ``ValueError`` naming the bad key."""
    if not isinstance(body, dict):
        raise ValueError('body must be a JSON object like {"mode": "down", "seconds": 5}')
    mode = str(body.get("mode", ""))
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    seconds = body.get("seconds")
    delay = body.get("delay", 0.0)
    try:
        until = None if seconds is None else now + float(seconds)
        delay_f = float(delay or 0.0)
    except (TypeError, ValueError):
        raise ValueError("seconds and delay must be numbers") from None
    if delay_f < 0 or (seconds is not None and float(seconds) < 0):
        raise ValueError("seconds and delay must not be negative")
    to = str(body.get("to") or "").rstrip("/")
    if mode == "moved" and not to.startswith(("http://", "https://")):
        raise ValueError('mode "moved" needs "to": the new portal base URL (http(s)://host:port)')
    return Fault(mode=mode, until=until, delay=delay_f, to=to)
