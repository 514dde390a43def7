"""Who rang and who answered: DialBegin/DialEnd, queue members, pickups.

A leg is dialed by ``DialBegin`` (or a queue's ``AgentCalled``); a leg made by an
Originate has no caller block. A device's answer (``DialEnd ANSWER`` or
``AgentConnect``) counts only once it is joined all the way up to the call's first
channel (:func:`~.parties.connected`); then the call is answered (:class:`CallAnswered`)
or, already answered, changes hands. Pickup: the picker's channel is masqueraded into the
ringing leg, so the caller's ``DialEnd ANSWER`` names the picker (its own linkedid): the
picker's call is absorbed and the picker answered. A pickup is not a transfer.
"""

from __future__ import annotations

from callbridge.calls import CallAnswered, Direction
from callbridge.pbx.ami.framing import AmiMessage

from .book import Book
from .channels import Chan, Kind, dial_number
from .decisions import decide_direction, maybe_start, start, update_ringing
from .linking import chan_of, merge
from .parties import connected, forward_owner
from .state import Call, CallState, Trigger, advance

__all__ = [
    "dialed",
    "evaluate_answers",
    "on_agent_called",
    "on_agent_connect",
    "on_dial_begin",
    "on_dial_end",
    "on_queue_join",
]


def on_dial_begin(b: Book, msg: AmiMessage, ts: float) -> None:
    dest = chan_of(b, msg, ts, "Dest")
    if dest is None:
        return
    caller = chan_of(b, msg, ts) if msg.get("Uniqueid") else None
    dialed(b, dest, caller, msg.get("DialString"), msg.get("DestCallerIDNum"), ts)


def dialed(
    b: Book,
    dest: Chan,
    caller: Chan | None,
    dial_string: str | None,
    dest_cid: str | None,
    ts: float,
) -> None:
    """``caller`` (None: an Originate) dialed ``dest``: it rings, and may be a first target."""
    call = b.calls.get(dest.call_id)
    if call is None:
        return
    dest.dialed = True
    if caller is not None:
        dest.dialer = caller.uid
    else:
        dest.caller_less = True
    if dest.kind is Kind.PHONE:
        dest.label = dest.ext
    elif dest.kind is Kind.TRUNK:
        dest.label = dial_number(dial_string, dest_cid)
    if dest.kind is not Kind.LOCAL:
        if dest.uid != call.root and call.first_target is None:
            call.first_target = (dest.kind.value, dest.label)
        if dest.label and dest.label not in call.rang:
            call.rang.append(dest.label)
        dest.ringing = dest.alive and dest.answered_at is None
    maybe_start(b, call, ts)
    update_ringing(b, call, ts)


def on_agent_called(b: Book, msg: AmiMessage, ts: float) -> None:
    # Queues emit DialBegin too; AgentCalled only makes sure a member leg is known.
    dest = chan_of(b, msg, ts, "Dest")
    caller = chan_of(b, msg, ts)
    if dest is not None and not dest.dialed:
        dialed(b, dest, caller, msg.get("Interface"), msg.get("DestCallerIDNum"), ts)


def on_dial_end(b: Book, msg: AmiMessage, ts: float) -> None:
    dest = chan_of(b, msg, ts, "Dest")
    if dest is None:
        return
    caller = chan_of(b, msg, ts) if msg.get("Uniqueid") else None
    status = (msg.get("DialStatus") or "").upper()
    if status == "ANSWER" and caller is not None and caller.call_id != dest.call_id:
        # Pickup: the picker's own call joins the caller's (Asterisk re-links it too).
        keep, gone = b.calls.get(caller.call_id), b.calls.get(dest.call_id)
        if keep is not None and gone is not None:
            merge(b, keep, gone, ts)
    call = b.calls.get(dest.call_id)
    if call is None:
        return
    if status == "ANSWER":
        if dest.answered_at is None:
            dest.answered_at = ts
        dest.dial_status = "ANSWER"
        if not dest.dialed:
            # Pickup: the trunk's DialEnd ANSWER names the picker's channel, which
            # never had a DialBegin of its own.
            dest.dialed = True
            dest.dialer = msg.get("Uniqueid") or None
            if dest.kind is Kind.PHONE and dest.ext and dest.ext not in call.rang:
                call.rang.append(dest.ext)
    elif dest.dial_status != "ANSWER":
        # Duplicates (app_queue sends CANCEL twice) and late losers only overwrite
        # a non-answer.
        dest.dial_status = status
    dest.ringing = False
    maybe_start(b, call, ts)
    if status == "ANSWER":
        evaluate_answers(b, call)
    update_ringing(b, call, ts)


def on_agent_connect(b: Book, msg: AmiMessage, ts: float) -> None:
    dest = chan_of(b, msg, ts, "Dest")
    if dest is None:
        return
    call = b.calls.get(dest.call_id)
    if call is None:
        return
    dest.agent_connected = True
    if dest.answered_at is None:
        dest.answered_at = ts
    dest.ringing = False
    maybe_start(b, call, ts)
    evaluate_answers(b, call)
    update_ringing(b, call, ts)


def on_queue_join(b: Book, msg: AmiMessage, ts: float) -> None:
    chan = chan_of(b, msg, ts)
    if chan is not None:
        call = b.calls.get(chan.call_id)
        if call is not None:
            maybe_start(b, call, ts)


def evaluate_answers(b: Book, call: Call) -> None:
    """Confirm, in order of answer, the device answers now joined up to the caller."""
    candidates = []
    for uid in call.chans:
        chan = b.chans.get(uid)
        if (
            chan is not None
            and not chan.confirmed
            and chan.answered_at is not None
            and chan.kind is not Kind.LOCAL
            and not chan.caller_less
            and uid != call.root
        ):
            candidates.append(chan)
    candidates.sort(key=lambda c: c.answered_at or 0.0)
    for chan in candidates:
        if connected(b, chan.dialer):
            chan.confirmed = True
            _device_answered(b, call, chan)


def _device_answered(b: Book, call: Call, chan: Chan) -> None:
    at = chan.answered_at if chan.answered_at is not None else b.last_ts
    decide_direction(b, call, final=True)
    if call.state is CallState.PENDING:
        start(b, call, at)
    if chan.kind is Kind.PHONE:
        if call.direction is Direction.OUTBOUND:
            if call.answer is not None:
                call.holder = chan.ext  # e.g. the target of a transfer took it
            return
        if call.answer is None:
            _answered(b, call, at, chan.ext, None)
        else:
            call.holder = chan.ext
        return
    # A trunk leg answered.
    if call.direction is Direction.OUTBOUND:
        if call.answer is None:
            _answered(b, call, at, call.operator, None)
        return
    owner = forward_owner(b, call, chan)
    if call.answer is None:
        _answered(b, call, at, owner, chan.label)
    else:
        call.holder = owner


def _answered(b: Book, call: Call, at: float, ext: str | None, device: str | None) -> None:
    call.answer = at
    call.answered_by = ext
    call.answered_on = device
    call.holder = ext
    if advance(call, Trigger.ANSWER, "answer"):
        b.out.append(CallAnswered(call.call_id, at, ext, device))
