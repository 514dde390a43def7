"""``GET /health``: one JSON document saying what works, 200 when all is well, 503 with
the reasons otherwise.

Each part of the process contributes a :class:`Probe` (a name and a function answering
its facts and, when unhealthy, why); the endpoint only runs them. So the engine or the
outbox adds its own probe when it is wired in, without this module knowing it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = ["Health", "Probe", "ProbeResult"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProbeResult:
    facts: dict[str, Any]
    #: Why this part is unhealthy; empty when healthy.
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Probe:
    name: str
    check: Callable[[], ProbeResult]


@dataclass
class Health:
    probes: Sequence[Probe]

    def report(self) -> tuple[bool, dict[str, Any]]:
        document: dict[str, Any] = {}
        reasons: list[str] = []
        for probe in self.probes:
            try:
                result = probe.check()
            except Exception as exc:  # a broken probe is a finding, not a crashed endpoint
                log.exception("health probe %s failed", probe.name)
                result = ProbeResult({}, (f"probe failed: {exc}",))
            document[probe.name] = result.facts
            reasons.extend(f"{probe.name}: {p}" for p in result.problems)
        healthy = not reasons
        return healthy, {"status": "ok" if healthy else "unhealthy", "reasons": reasons, **document}

    async def endpoint(self, request: Request) -> Response:
        healthy, document = self.report()
        return JSONResponse(document, status_code=200 if healthy else 503)
