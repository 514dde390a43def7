"""What the tracker decides about a call, and the events that announce it.

Direction and numbers (from the call's first real channel and first target), when the
call can be announced (:class:`CallStarted`), who is ringing now
(:class:`RingingChanged`), and at the end the result and hangup cause
(:class:`CallEnded`). Reads the :class:`~.book.Book`; never looks at AMI messages.
"""

from __future__ import annotations

from callbridge.calls import (
    CallEnded,
    CallResult,
    CallStarted,
    Direction,
    RecordingKnown,
    RingingChanged,
)

from .book import Book
from .channels import Chan, Kind, is_number
from .state import Call, CallState, Trigger, advance

__all__ = [
    "decide_direction",
    "end",
    "hangup_cause",
    "maybe_start",
    "nameless_trunk",
    "result",
    "start",
    "update_ringing",
]

_FAIL_STATUSES = frozenset({"CHANUNAVAIL", "CONGESTION", "INVALIDARGS", "DONTCALL", "TORTURE"})


def decide_direction(b: Book, call: Call, final: bool) -> bool:
    """Set direction/numbers once they are known (or, ``final``, best known)."""
    if call.direction is not None:
        return True
    root = b.root_of(call)
    if root is None:
        if not final:
            return False
        call.direction = Direction.OUTBOUND if call.originate_exten else Direction.INTERNAL
        call.external_number = call.originate_exten
        return True
    target = call.first_target
    if root.kind is Kind.PHONE:
        call.operator = root.ext
        if target is None and not final:
            return False
        if target is None:
            target = nameless_trunk(b, call)
        if target is not None and target[0] == Kind.TRUNK.value:
            call.direction = Direction.OUTBOUND
            call.external_number = target[1]
        elif target is None and root.caller_less:
            call.direction = Direction.OUTBOUND
            call.external_number = call.originate_exten
        else:
            call.direction = Direction.INTERNAL
        return True
    if root.caller_less or root.placed:
        # A trunk leg we placed (callback): outbound; the operator is the phone it
        # reaches.
        if target is None and not final:
            return False
        call.direction = Direction.OUTBOUND
        call.external_number = root.label or call.originate_exten
        if target is not None and target[0] == Kind.PHONE.value:
            call.operator = target[1]
        return True
    call.direction = Direction.INBOUND
    call.external_number = root.cid_num or None
    call.did = root.exten if is_number(root.exten) else call.did_var
    return True


def nameless_trunk(b: Book, call: Call) -> tuple[str, str | None] | None:
    """A dialed trunk leg whose number nobody named (adopted after an AMI gap)."""
    for uid in call.chans:
        chan = b.chans.get(uid)
        if chan is not None and chan.kind is Kind.TRUNK and chan.dialed and uid != call.root:
            return (Kind.TRUNK.value, chan.label)
    return None


def maybe_start(b: Book, call: Call, ts: float) -> None:
    """Announce a pending call as soon as its direction is known."""
    if call.state is CallState.PENDING and decide_direction(b, call, final=False):
        start(b, call, ts)


def start(b: Book, call: Call, ts: float, force: bool = False) -> None:
    """Announce the call (``force``: with what is known so far) and its recordings."""
    if force:
        decide_direction(b, call, final=True)
    if not advance(call, Trigger.START, "start"):
        return
    assert call.direction is not None
    b.out.append(
        CallStarted(
            call.call_id,
            call.start,
            call.direction,
            call.external_number,
            call.did,
            call.operator,
            dict(call.tags),
        )
    )
    for path in call.recordings:
        b.out.append(RecordingKnown(call.call_id, ts, path))


def update_ringing(b: Book, call: Call, ts: float) -> None:
    """Recompute who is ringing; announce a change once the call is started."""
    labels: list[str] = []
    skip_trunks = call.direction is Direction.OUTBOUND
    for uid in call.chans:
        chan = b.chans.get(uid)
        if (
            chan is not None
            and chan.ringing
            and chan.alive
            and chan.label
            and not (skip_trunks and chan.kind is Kind.TRUNK)
            and chan.label not in labels
        ):
            labels.append(chan.label)
    ringing = tuple(labels)
    if ringing != call.ringing:
        call.ringing = ringing
        if call.started and call.state is not CallState.ENDED:
            b.out.append(RingingChanged(call.call_id, ts, ringing))


def result(b: Book, call: Call) -> CallResult:
    """How the call went, from its answer and the dial statuses of its real legs."""
    if call.answer is not None:
        return CallResult.ANSWERED
    root = b.root_of(call)
    # Our Originate failed (Asterisk said so) or never got its first leg answered.
    if call.originate_failed or (
        root is not None and root.caller_less and root.answered_at is None
    ):
        return CallResult.FAILED
    statuses = []
    for uid in call.chans:
        chan = b.chans.get(uid)
        if (
            chan is not None
            and chan.dialed
            and not chan.caller_less
            and chan.dial_status
            and chan.kind is not Kind.LOCAL
        ):
            statuses.append(chan.dial_status)
    if statuses and all(s == "BUSY" for s in statuses):
        return CallResult.BUSY
    if call.direction is Direction.INBOUND:
        return CallResult.MISSED
    if not statuses or all(s in _FAIL_STATUSES for s in statuses):
        return CallResult.FAILED
    return CallResult.NOT_ANSWERED


def hangup_cause(b: Book, call: Call) -> int | None:
    """The cause of the external party's hangup (None when there never was one)."""
    root = b.root_of(call)
    if call.direction is not Direction.OUTBOUND:
        return root.cause if root is not None else None
    if root is not None and root.kind is Kind.TRUNK:
        return root.cause
    first_trunk: Chan | None = None
    for uid in call.chans:
        chan = b.chans.get(uid)
        if chan is None or chan.kind is not Kind.TRUNK:
            continue
        if chan.confirmed:
            return chan.cause
        if first_trunk is None:
            first_trunk = chan
    if first_trunk is not None:
        return first_trunk.cause
    # No external party ever had a channel (e.g. a click-to-call whose operator did
    # not answer): there is no cause to report.
    return None


def end(b: Book, call: Call, ts: float) -> None:
    """The call's last channel hung up at ``ts``: announce its end, then forget it."""
    if call.state is CallState.PENDING:
        start(b, call, ts, force=True)
    if call.ringing:
        call.ringing = ()
    call.end = ts
    call.hangup_cause = hangup_cause(b, call)
    if call.hangup_cause is None:
        # No external party: the first leg's cause is what failed (operator busy).
        root = b.root_of(call)
        call.failure_cause = root.cause if root is not None else None
    outcome = result(b, call)
    if advance(call, Trigger.END, "last hangup"):
        b.out.append(CallEnded(call.call_id, ts, call.summary(outcome)))
    b.forget(call)
