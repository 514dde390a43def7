"""What the simulated PBX plays when: one timeline of re-keyed trace instances.

Pure (no clock, no I/O): the server asks :meth:`Timeline.next_time` and pops
messages when it decides they are due. Positions are seconds since the timeline
started. Replayed traces start together at position 0 and interleave by their own
relative times; the call mix (:class:`CallMix`) spawns a fresh copy of a random
trace at Poisson arrival times; originated calls are added while playing. Only
instances that are still playing are held, so memory stays bounded however long
the mix runs (the expected results kept for ``GET /_sim/expected`` are capped).
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from callbridge.pbx.ami.framing import AmiMessage

from .channels import ChannelTable
from .rekey import IdAllocator, Rekey
from .scenario import Scenario

__all__ = ["CallMix", "ExpectedRecord", "Instance", "Timeline"]

ExpectedFn = Callable[[dict[str, Any]], list[dict[str, Any]]]


class Instance:
    """One playing copy of a scenario, placed at ``offset`` on the timeline."""

    def __init__(
        self,
        scenario: Scenario,
        rekey: Rekey,
        offset: float,
        *,
        kind: str = "replay",
        skip_events: frozenset[str] = frozenset(),
        expected: list[dict[str, Any]] | None = None,
        transform: Callable[[AmiMessage], AmiMessage | None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.rekey = rekey
        self.offset = offset
        self.kind = kind
        self.index = 0
        self.expected = expected or []
        self._skip = skip_events
        self._transform = transform
        self._skip_ahead()

    def _skip_ahead(self) -> None:
        if not self._skip:
            return
        messages = self.scenario.template.messages
        while self.index < len(messages) and messages[self.index][0][1] in self._skip:
            self.index += 1

    @property
    def done(self) -> bool:
        return self.index >= len(self.scenario.times)

    def next_time(self) -> float | None:
        if self.done:
            return None
        return self.offset + self.scenario.times[self.index]

    def pop(self) -> AmiMessage | None:
        msg = self.scenario.template.render(self.index, self.rekey)
        self.index += 1
        self._skip_ahead()
        if self._transform is not None:
            return self._transform(msg)
        return msg


@dataclass
class ExpectedRecord:
    call: dict[str, Any]
    instance: Instance


class CallMix:
    """Poisson arrivals of re-keyed copies of ``scenarios`` (seeded, repeatable)."""

    def __init__(
        self,
        scenarios: Sequence[Scenario],
        calls_per_minute: float,
        *,
        seed: int,
        expected_fn: ExpectedFn | None,
    ) -> None:
        if calls_per_minute <= 0:
            raise ValueError(f"calls_per_minute must be > 0, got {calls_per_minute!r}")
        if not scenarios:
            raise ValueError("the call mix needs at least one trace with a truth.json")
        self.scenarios = list(scenarios)
        self.rate = calls_per_minute / 60.0
        self.rng = random.Random(seed)
        self.expected_fn = expected_fn
        self.next_arrival = 0.0
        self.spawned = 0

    def spawn(self, ids: IdAllocator, epoch: float) -> Instance:
        """The call arriving at :attr:`next_arrival`; schedules the next arrival."""
        scenario = self.rng.choice(self.scenarios)
        at = self.next_arrival
        numbers = {n: self._vary(n) for n in scenario.external_numbers}
        rk = Rekey(ids, shift=epoch + at - scenario.t0, numbers=numbers, ref_time=scenario.t0)
        expected: list[dict[str, Any]] = []
        if self.expected_fn is not None and scenario.truth is not None:
            raw = self.expected_fn(scenario.truth)
            expected = [scenario.template.rekey_obj(call, rk) for call in raw]
        self.next_arrival = at + self.rng.expovariate(self.rate)
        self.spawned += 1
        # No client originated these calls: an OriginateResponse would answer nobody.
        return Instance(
            scenario,
            rk,
            at,
            kind="generated",
            skip_events=frozenset({"OriginateResponse"}),
            expected=expected,
        )

    def _vary(self, number: str) -> str:
        # Keep country and area code (the first 4 digits) so the number stays plausible.
        keep = min(4, len(number) - 1)
        while True:
            tail = "".join(str(self.rng.randrange(10)) for _ in range(len(number) - keep))
            new = number[:keep] + tail
            if new != number:
                return new


class Timeline:
    """The merged, re-keyed event stream of one simulator run, and its live state."""

    def __init__(self, ids: IdAllocator, epoch: float, *, expected_cap: int = 100_000) -> None:
        self.ids = ids
        #: Unix time of position 0 (used for fresh timestamps).
        self.epoch = epoch
        self.position = 0.0
        self.played = 0
        self.channels = ChannelTable()
        self.expected: deque[ExpectedRecord] = deque(maxlen=expected_cap)
        self.mix: CallMix | None = None
        self._heap: list[tuple[float, int, Instance]] = []
        self._seq = itertools.count()

    def add(self, instance: Instance) -> None:
        t = instance.next_time()
        if t is not None:
            heapq.heappush(self._heap, (t, next(self._seq), instance))

    @property
    def active(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        """Position of the next message, or ``None`` when nothing more is scheduled."""
        head = self._heap[0][0] if self._heap else None
        if self.mix is not None and (head is None or self.mix.next_arrival <= head):
            return self.mix.next_arrival
        return head

    def pop(self) -> AmiMessage | None:
        """Play the next message (``None`` if nothing is scheduled or it was filtered)."""
        while self.mix is not None and (
            not self._heap or self.mix.next_arrival <= self._heap[0][0]
        ):
            self.add(self.mix.spawn(self.ids, self.epoch))
        if not self._heap:
            return None
        t, _, inst = heapq.heappop(self._heap)
        msg = inst.pop()
        self.add(inst)
        self.position = max(self.position, t)
        if inst.expected:
            # Published when the instance plays its first message, then emptied.
            self.expected.extend(ExpectedRecord(c, inst) for c in inst.expected)
            inst.expected = []
        if msg is not None:
            self.played += 1
            self.channels.apply(msg, self.position)
        return msg

    def expected_calls(self, *, finished_only: bool = False) -> list[dict[str, Any]]:
        return [r.call for r in self.expected if not finished_only or r.instance.done]
