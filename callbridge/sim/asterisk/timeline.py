"""What the simulated PBX plays when: one timeline of re-keyed trace instances.

Pure (no clock, no I/O): the server asks :meth:`Timeline.next_time` and pops
messages when it decides they are due. Positions are seconds since the timeline
started. Replayed traces start together at position 0 and interleave by their own
relative times; the call mix (:class:`CallMix`) spawns a fresh copy of a random
trace at Poisson arrival times; originated calls are added while playing. Only
instances that are still playing are held, so memory stays bounded however long
the mix runs (the expected results kept for ``GET /_sim/expected`` are capped).

An instance may have a *gate*: the index of a message it cannot play before someone
outside decides how the call goes on (a FastAGI route, :mod:`.agi_route`). At its
gate the instance leaves the schedule for :attr:`Timeline.held` and ``on_gate`` is
told; :meth:`Timeline.release` puts it back with the messages to play first, the
recorded ones to drop and a rewrite of the rest. The rest of the timeline plays on
meanwhile, as other channels do while one waits on ``AGI()``.
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
        gate: int | None = None,
    ) -> None:
        self.scenario = scenario
        self.rekey = rekey
        self.offset = offset
        self.kind = kind
        self.index = 0
        self.expected = expected or []
        #: Index of the message this instance waits before (``None``: it never waits).
        self.gate = gate
        #: Whether the timeline has asked ``gate_for`` about this instance.
        self.gate_checked = gate is not None
        #: Whatever released the gate (e.g. the route), for views.
        self.released_by: Any = None
        self._skip = skip_events
        self._skip_index: frozenset[int] = frozenset()
        self._transform = transform
        self._extra: deque[AmiMessage] = deque()
        self._extra_time = 0.0
        self._skip_ahead()

    def _skip_ahead(self) -> None:
        if not self._skip and not self._skip_index:
            return
        messages = self.scenario.template.messages
        while self.index < len(messages) and (
            messages[self.index][0][1] in self._skip or self.index in self._skip_index
        ):
            self.index += 1

    @property
    def waiting(self) -> bool:
        """At its gate: nothing more plays until :meth:`release`."""
        return self.gate is not None and self.index >= self.gate and not self.done

    def release(
        self,
        extra: Sequence[AmiMessage] = (),
        skip: frozenset[int] = frozenset(),
        transform: Callable[[AmiMessage], AmiMessage] | None = None,
    ) -> None:
        """Open the gate: ``extra`` plays first (at the gate's time), the messages at the
        indices ``skip`` are dropped and every later message goes through ``transform``."""
        if self.gate is not None and self.index < len(self.scenario.times):
            self._extra_time = self.scenario.times[self.index]
        self.gate = None
        self._extra.extend(extra)
        self._skip_index = skip
        if transform is not None:
            earlier = self._transform
            if earlier is None:
                self._transform = transform
            else:
                first = earlier

                def both(msg: AmiMessage) -> AmiMessage | None:
                    out = first(msg)
                    return None if out is None else transform(out)

                self._transform = both
        self._skip_ahead()

    @property
    def done(self) -> bool:
        return self.index >= len(self.scenario.times) and not self._extra

    def next_time(self) -> float | None:
        if self._extra:
            return self.offset + self._extra_time
        if self.done:
            return None
        return self.offset + self.scenario.times[self.index]

    def pop(self) -> AmiMessage | None:
        if self._extra:
            return self._extra.popleft()
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
        known_caller: Callable[[Scenario], float] | None = None,
    ) -> None:
        if calls_per_minute <= 0:
            raise ValueError(f"calls_per_minute must be > 0, got {calls_per_minute!r}")
        if not scenarios:
            raise ValueError("the call mix needs at least one trace with a truth.json")
        self.scenarios = list(scenarios)
        self.rate = calls_per_minute / 60.0
        self.rng = random.Random(seed)
        self.expected_fn = expected_fn
        #: Per scenario, the share of its calls that keep the recorded caller number (a
        #: caller the CRM knows, e.g. for FastAGI routing); the others get a random one.
        self.known_caller = known_caller
        self.next_arrival = 0.0
        self.spawned = 0

    def spawn(self, ids: IdAllocator, epoch: float) -> Instance:
        """The call arriving at :attr:`next_arrival`; schedules the next arrival."""
        scenario = self.rng.choice(self.scenarios)
        at = self.next_arrival
        share = self.known_caller(scenario) if self.known_caller is not None else 0.0
        if share > 0 and self.rng.random() < share:
            numbers: dict[str, str] = {}
        else:
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
        #: Where an instance waits for an outside decision (``None``: nowhere).
        self.gate_for: Callable[[Instance], int | None] | None = None
        #: Told when an instance reaches its gate (it must later be released).
        self.on_gate: Callable[[Instance], None] | None = None
        #: Instances waiting at their gate, in arrival order.
        self.held: list[Instance] = []
        self._heap: list[tuple[float, int, Instance]] = []
        self._seq = itertools.count()

    def add(self, instance: Instance) -> None:
        if not instance.gate_checked:
            instance.gate_checked = True
            if self.gate_for is not None:
                instance.gate = self.gate_for(instance)
        if instance.waiting:
            self.held.append(instance)
            if self.on_gate is not None:
                self.on_gate(instance)
            return
        t = instance.next_time()
        if t is not None:
            heapq.heappush(self._heap, (t, next(self._seq), instance))

    def release(
        self,
        instance: Instance,
        extra: Sequence[AmiMessage] = (),
        skip: frozenset[int] = frozenset(),
        transform: Callable[[AmiMessage], AmiMessage] | None = None,
        fix_expected: Callable[[Any], Any] | None = None,
    ) -> None:
        """Put a held instance back on the schedule (see :meth:`Instance.release`);
        ``fix_expected`` rewrites its expected results (published or not)."""
        self.held.remove(instance)
        if fix_expected is not None:
            instance.expected = [fix_expected(c) for c in instance.expected]
            for record in self.expected:
                if record.instance is instance:
                    record.call = fix_expected(record.call)
        instance.release(extra, skip, transform)
        self.add(instance)

    @property
    def active(self) -> int:
        return len(self._heap) + len(self.held)

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
