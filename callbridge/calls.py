"""The domain model every layer speaks: business calls and the events of their lives.

The call tracker (``callbridge.pbx.tracker``) emits :data:`CallEvent` values; the
engine turns them into CRM work. Nothing here knows about Asterisk or Bitrix24: an
*extension* is the internal number of a person's phone, an *external number* is the
other party as the PBX gave it, a *DID* is the number the caller dialled to reach us.

``call_id`` is the tracker's stable key of a business call (the Linkedid of its first
channel; it does not change when Asterisk re-links channels, the absorbed call's id is
announced in :class:`CallMerged`). Every ``at`` is a unix time taken from the AMI
``Timestamp`` headers, never from a local clock.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    INTERNAL = "internal"


class CallResult(StrEnum):
    ANSWERED = "answered"
    MISSED = "missed"  # inbound, nobody answered (incl. queue abandon)
    BUSY = "busy"
    NOT_ANSWERED = "not_answered"  # outbound/internal, the far end did not answer
    FAILED = "failed"  # could not be placed (originate failure, congestion, unavailable)


class TransferType(StrEnum):
    BLIND = "blind"
    ATTENDED = "attended"


@dataclass(frozen=True, slots=True)
class Transfer:
    type: TransferType
    from_extension: str | None
    to_extension: str | None
    at: float


@dataclass(frozen=True, slots=True)
class CallStarted:
    call_id: str
    at: float
    direction: Direction
    external_number: str | None
    did: str | None
    operator: str | None  # extension placing an outbound/internal call
    #: Tags carried by channel variables (e.g. the CRM call id of a click-to-call).
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RingingChanged:
    """The set of extensions whose phones ring now (empty when nobody rings)."""

    call_id: str
    at: float
    ringing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str
    at: float
    extension: str | None  # whose user took the call (operator for an outbound call)
    device: str | None = None  # e.g. the mobile number of a forward; None = the extension


@dataclass(frozen=True, slots=True)
class CallTransferred:
    call_id: str
    at: float
    transfer: Transfer


@dataclass(frozen=True, slots=True)
class RecordingKnown:
    call_id: str
    at: float
    path: str


@dataclass(frozen=True, slots=True)
class CallMerged:
    """Asterisk re-linked ``absorbed_call_id`` into ``call_id`` (pickup, attended transfer)."""

    call_id: str
    at: float
    absorbed_call_id: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    call_id: str
    at: float
    summary: CallSummary


CallEvent = (
    CallStarted
    | RingingChanged
    | CallAnswered
    | CallTransferred
    | RecordingKnown
    | CallMerged
    | CallEnded
)


@dataclass(slots=True)
class CallSummary:
    """What a business call *was*; the JSON of ``callbridge trace calls``.

    Field meanings are those of the tracker issue: ``rang`` in first-ring order,
    ``answered_by`` the extension whose user took the call, ``answered_on`` the device
    number when it is not the extension itself, ``final_operator`` the extension holding
    the call at its end; ``result``/``end``/``hangup_cause`` are ``None`` while open.
    """

    linkedid: str
    direction: Direction
    external_number: str | None
    did: str | None
    operator: str | None
    rang: list[str]
    answered: bool
    answered_by: str | None
    answered_on: str | None
    final_operator: str | None
    result: CallResult | None
    transfers: list[Transfer]
    start: float
    answer: float | None
    end: float | None
    recordings: list[str]
    hangup_cause: int | None
    tags: dict[str, str] = field(default_factory=dict)
    #: How the end was known when it was not a Hangup event (e.g. the call vanished during
    #: an AMI gap and ended at the resync time). Not part of the ``trace calls`` schema.
    note: str | None = None
    #: Q.850 cause of the leg that failed when there is no external party to report in
    #: ``hangup_cause`` (a click-to-call whose operator's phone was busy: 17).
    failure_cause: int | None = None

    @property
    def talk_seconds(self) -> int:
        if self.answer is None or self.end is None:
            return 0
        return max(0, round(self.end - self.answer))

    def to_json_obj(self) -> dict[str, Any]:
        data = asdict(self)
        data["direction"] = str(self.direction)
        data["result"] = None if self.result is None else str(self.result)
        data["transfers"] = [
            {"type": str(t.type), "from": t.from_extension, "to": t.to_extension}
            for t in self.transfers
        ]
        del data["tags"]
        data.pop("failure_cause", None)
        del data["note"]
        return data
