"""The life of one business call as data: its states, the allowed transitions, its record.

A call is ``PENDING`` from its first channel until the tracker knows enough to announce it
(direction, numbers), ``STARTED`` once announced, ``ANSWERED`` when a party took it,
``ENDED`` when its last channel hung up, ``MERGED`` when Asterisk re-linked it into an
older call. :data:`TRANSITIONS` is the whole table; anything else is impossible and is
logged with the call, the state and the trigger (:func:`advance`), never raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum

from callbridge.calls import CallResult, CallSummary, Direction, Transfer

__all__ = ["TRANSITIONS", "Call", "CallState", "Trigger", "advance"]

log = logging.getLogger("callbridge.pbx.tracker")


class CallState(StrEnum):
    PENDING = "pending"
    STARTED = "started"
    ANSWERED = "answered"
    ENDED = "ended"
    MERGED = "merged"


class Trigger(StrEnum):
    START = "start"  # direction and numbers known: CallStarted
    ANSWER = "answer"  # first party took the call: CallAnswered
    END = "end"  # last channel hung up: CallEnded
    ABSORB = "absorb"  # re-linked into an older call: CallMerged


TRANSITIONS: dict[tuple[CallState, Trigger], CallState] = {
    (CallState.PENDING, Trigger.START): CallState.STARTED,
    (CallState.PENDING, Trigger.ABSORB): CallState.MERGED,
    (CallState.STARTED, Trigger.ANSWER): CallState.ANSWERED,
    (CallState.STARTED, Trigger.END): CallState.ENDED,
    (CallState.STARTED, Trigger.ABSORB): CallState.MERGED,
    (CallState.ANSWERED, Trigger.END): CallState.ENDED,
    (CallState.ANSWERED, Trigger.ABSORB): CallState.MERGED,
}


def advance(call: Call, trigger: Trigger, event: str) -> bool:
    """Move ``call`` along the table; False (and a log line) if the move is impossible."""
    new = TRANSITIONS.get((call.state, trigger))
    if new is None:
        log.warning(
            "call %s: impossible transition %s in state %s (event %s); ignored",
            call.call_id,
            trigger,
            call.state,
            event,
        )
        return False
    call.state = new
    return True


@dataclass(slots=True)
class Call:
    call_id: str
    start: float
    state: CallState = CallState.PENDING
    linkedids: set[str] = field(default_factory=set)
    chans: list[str] = field(default_factory=list)  # every Uniqueid ever in the call
    live: set[str] = field(default_factory=set)
    root: str | None = None  # Uniqueid of the first real (non-Local) channel
    direction: Direction | None = None
    external_number: str | None = None
    did: str | None = None
    did_var: str | None = None  # FROM_DID as the inbound route set it
    operator: str | None = None
    #: First non-Local leg dialed from anywhere but the call's own first channel.
    first_target: tuple[str, str | None] | None = None  # ("phone"|"trunk", label)
    rang: list[str] = field(default_factory=list)
    ringing: tuple[str, ...] = ()
    answered_by: str | None = None
    answered_on: str | None = None
    answer: float | None = None
    holder: str | None = None  # extension holding the call now (final_operator)
    transfers: list[Transfer] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    fm_owner: str | None = None  # FreePBX follow-me group (FMGRP) = whose forward this is
    originate_failed: bool = False
    originate_exten: str | None = None
    end: float | None = None
    hangup_cause: int | None = None
    failure_cause: int | None = None
    note: str | None = None
    #: Adopted after its Dial ended, with a trunk leg nobody named: its start and its
    #: answer wait for its Cdr (which names the number) or its end.
    awaiting_number: bool = False

    @property
    def started(self) -> bool:
        return self.state in (CallState.STARTED, CallState.ANSWERED, CallState.ENDED)

    def summary(self, result: CallResult | None) -> CallSummary:
        return CallSummary(
            linkedid=self.call_id,
            direction=self.direction or Direction.INTERNAL,
            external_number=self.external_number,
            did=self.did,
            operator=self.operator,
            rang=list(self.rang),
            answered=self.answered_by is not None or self.answer is not None,
            answered_by=self.answered_by,
            answered_on=self.answered_on,
            final_operator=self.holder if self.answer is not None else None,
            result=result,
            transfers=list(self.transfers),
            start=self.start,
            answer=self.answer,
            end=self.end,
            recordings=list(self.recordings),
            hangup_cause=self.hangup_cause,
            failure_cause=self.failure_cause,
            tags=dict(self.tags),
            note=self.note,
        )
