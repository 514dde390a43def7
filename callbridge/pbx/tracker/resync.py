"""Rebuilding live state after an AMI gap from a ``CoreShowChannels`` snapshot.

Known channels absent from the snapshot hung up during the gap (at the snapshot time);
calls left without channels end then, with a note (only those: a call that goes on has
none). Unknown channels are adopted (created ``Duration`` ago) as dialed while we were
away, and so is a known one now ringing or Up; a known one still Down waits for its
DialBegin. A device that is Up now counts as answered (at the snapshot time if its
answer was lost); a device that answered behind a Local pair whose ``;1`` vanished with
no DialEnd seen counts as answered too. One bad item, or one call that fails to rebuild,
is logged and skipped.

An adopted leg has no DialBegin: its number comes from the snapshot fields
(:mod:`.recovery`: the ``Dial`` data of the channel dialing it, its ``Exten``…); a call
whose Dial had already ended at the snapshot gets it from its ``Cdr`` (:func:`on_cdr`).
"""

from __future__ import annotations

import logging

from callbridge.calls import CallEvent
from callbridge.pbx.ami.framing import AmiMessage

from .book import Book
from .channel_events import hangup
from .channels import Chan, Kind, classify, dial_number, int_or_none
from .decisions import end, maybe_start, nameless_trunk, update_ringing
from .dialing import evaluate_answers
from .linking import chan_of
from .parties import peer_in_call
from .recovery import dial_targets, dialed_number, is_outgoing_line, items_of
from .state import Call, CallState

__all__ = ["on_cdr", "rebuild"]

log = logging.getLogger("callbridge.pbx.tracker")

_GAP_NOTE = "ended during an AMI gap: end time is the resync time"
_UP = 6
_RINGING_STATES = (5, 4)  # Ringing, Ring


def rebuild(b: Book, snapshot_items: list[AmiMessage], at: float) -> list[CallEvent]:
    """Rebuild live state from ``CoreShowChannel`` items taken at Asterisk time ``at``."""
    out: list[CallEvent] = []
    b.out = out
    b.last_ts = max(b.last_ts, at)
    present: dict[str, AmiMessage] = {}
    touched: set[str] = set()
    adopted: set[str] = set()  # channels this resync learnt of
    for item in snapshot_items:
        try:
            uid = item.get("Uniqueid")
            if not uid:
                continue
            present[uid] = item
            if uid not in b.chans and uid not in b.recent:
                adopted.add(uid)
            chan = _adopt_item(b, item, at)
            if chan is None:
                continue
            state = int_or_none(item.get("ChannelState"))
            if state is not None:
                chan.state = state
            chan.bridge = item.get("BridgeId") or None
            touched.add(chan.call_id)
        except Exception:
            log.exception("tracker: snapshot item skipped: %r", item.to_json_obj())
    vanished = [c for c in b.chans.values() if c.alive and c.uid not in present]
    for call_id in {c.call_id for c in vanished}:
        call = b.calls.get(call_id)
        if call is None:
            continue
        try:
            _answers_through_vanished_locals(b, call, {c.uid for c in vanished})
        except Exception:
            log.exception("tracker: answers of call %s before the gap not inferred", call_id)
    for chan in vanished:
        call = b.calls.get(chan.call_id)
        if call is not None:
            touched.add(call.call_id)
            if call.live <= {chan.uid}:
                # Its last channel: the call itself ended unseen; it ends now (the note
                # says why). A call that goes on keeps no note.
                call.note = _GAP_NOTE
        hangup(b, chan, at, None)
    for call_id in touched:
        call = b.calls.get(call_id)
        if call is None:
            continue
        try:
            _resync_call(b, call, at, present, adopted)
        except Exception:
            log.exception("tracker: resync of call %s failed", call_id)
    return out


def _answers_through_vanished_locals(b: Book, call: Call, vanished: set[str]) -> None:
    """A device answered behind a Local pair whose ``;1`` half vanished in the gap
    without a ``DialEnd`` seen toward it: the answer reached the caller.

    In Asterisk the ``;2`` half answering (its Dial got ``ANSWER``) answers the ``;1``
    half, and the ``;1`` side's dialer takes that answer unless it cancels the ``;1``
    first (its caller hung up in the same instant). A ``CANCEL``/``NOANSWER`` would have
    been seen, so with none seen before the gap, answered is the better guess: the
    ``;1`` counts as answered at the device's answer time, and the device's answer is
    confirmed before the vanished channels hang up. Chains of Local pairs are followed
    inward out (a ``;1`` whose ``;2`` reached an answered ``;1``).
    """
    inferred, changed = False, True
    while changed:
        changed = False
        for uid in call.chans:
            half = b.chans.get(uid)
            if (
                half is None
                or uid not in vanished
                or half.kind is not Kind.LOCAL
                or not half.name.endswith(";1")
                or not half.dialed
                or half.answered_at is not None
                or half.dial_status is not None
            ):
                continue
            answer = _answer_behind(b, call, half)
            if answer is not None:
                half.answered_at = answer
                half.dial_status = "ANSWER"
                changed = inferred = True
    if inferred and not call.awaiting_number:
        evaluate_answers(b, call)


def _answer_behind(b: Book, call: Call, half: Chan) -> float | None:
    """When a leg dialed by the ``;2`` peer of ``half`` took the call (``DialEnd
    ANSWER``, an agent's connect or, for a nested pair, its ``;1``'s answer)."""
    peer = peer_in_call(b, half)
    if peer is None:
        return None
    times = []
    for uid in call.chans:
        leg = b.chans.get(uid)
        if leg is None or leg.dialer != peer.uid or leg.answered_at is None:
            continue
        if leg.dial_status == "ANSWER" or leg.agent_connected:
            times.append(leg.answered_at)
    return min(times) if times else None


def _adopt_item(b: Book, item: AmiMessage, at: float) -> Chan | None:
    """The channel a snapshot item describes, as any event's block would find it.

    A channel we did not know is adopted as created ``Duration`` before ``at``.
    """
    uid = item.get("Uniqueid") or ""
    known = uid in b.chans or uid in b.recent
    created = at if known else at - _duration(item.get("Duration"))
    chan = chan_of(b, item, created)
    if chan is None or known:
        return chan
    call = b.calls[chan.call_id]
    if uid == chan.linkedid and chan.kind is not Kind.LOCAL:
        call.root = uid  # the channel that started the linkedid is the first one
    # A trunk leg Asterisk placed did not ring in: should it be the first real channel
    # left (its caller gone), the call is outbound, as for one seen created Down.
    chan.placed = chan.kind is Kind.TRUNK and is_outgoing_line(item)
    if created < call.start:
        call.start = created
    return chan


def _resync_call(
    b: Book, call: Call, at: float, items: dict[str, AmiMessage], adopted: set[str]
) -> None:
    root_uid = call.root
    call_items = items_of(items, call.chans)
    root = b.root_of(call)
    root_item = items.get(root.uid) if root is not None and root.kind is Kind.PHONE else None
    if root is not None and root.placed and root.label is None and root.alive:
        # A placed trunk leg left first (its caller gone): its number is the call's.
        root.label = dialed_number(b.pbx, root, items.get(root.uid), call_items, None)
    for uid in list(call.chans):
        chan = b.chans.get(uid)
        if chan is None or not chan.alive or uid == root_uid:
            continue
        if chan.kind is Kind.LOCAL:
            if chan.state == _UP and chan.answered_at is None and chan.name.endswith(";1"):
                chan.answered_at = at
            continue
        if not chan.dialed and (uid in adopted or chan.state in (_UP, *_RINGING_STATES)):
            # Adopted from the snapshot, or known and ringing or up now without the
            # DialBegin we saw: it was dialed while we were away. A known leg still Down
            # is not (yet): its DialBegin is still to come (created before it is dialed),
            # and counting it now would make it the first target without its number, or
            # put it first among legs dialed before it.
            chan.dialed = True
            if chan.kind is Kind.PHONE:
                chan.label = chan.ext
            elif chan.label is None:
                chan.label = dialed_number(b.pbx, chan, items.get(uid), call_items, root_item)
            if chan.label and chan.label not in call.rang:
                call.rang.append(chan.label)
            # A nameless trunk leg is not the target yet: the call waits (pending) for
            # its Cdr to name it, and is outbound anyway at its end (decide_direction).
            if call.first_target is None and (chan.label or chan.kind is Kind.PHONE):
                call.first_target = (chan.kind.value, chan.label)
        if chan.state == _UP and chan.answered_at is None:
            chan.answered_at = at
            chan.dial_status = "ANSWER"
        chan.ringing = chan.state in _RINGING_STATES and chan.answered_at is None
    if call.first_target is None:
        _target_from_dial(b, call, call_items)
    root = b.root_of(call)
    call.awaiting_number = (
        call.state is CallState.PENDING
        and call.first_target is None
        and root is not None
        and root.kind is Kind.PHONE
        and nameless_trunk(b, call) is not None
    )
    maybe_start(b, call, at)
    if not call.awaiting_number:
        evaluate_answers(b, call)
    update_ringing(b, call, at)
    if not call.live:
        end(b, call, at)


def _target_from_dial(b: Book, call: Call, call_items: list[AmiMessage]) -> None:
    """A channel of the call is ``Dial``-ing a trunk whose leg the snapshot does not show
    (not made yet, or already gone): that number is the call's first target."""
    for item in call_items:
        for _, number in dial_targets(b.pbx, item):
            call.first_target = (Kind.TRUNK.value, number)
            if number not in call.rang:
                call.rang.append(number)
            return


def on_cdr(b: Book, msg: AmiMessage, ts: float) -> None:
    """A ``Cdr`` for a call adopted without its first target names what it dialed.

    Only for a call still pending without a target (one adopted from a snapshot taken
    after its Dial ended, its trunk leg gone or nameless): the record of its first
    channel (``UniqueID``) says which leg it dialed and with what (``LastData`` of a
    ``Dial``, else ``Destination``). Calls tracked live never need it; it never adopts
    or revives anything (Cdr comes late, often after the hangups).
    """
    chan = b.chans.get(msg.get("UniqueID") or "")
    call = b.calls.get(chan.call_id) if chan is not None else None
    if call is None or call.first_target is not None or call.state is not CallState.PENDING:
        return
    dest = msg.get("DestinationChannel") or ""
    if not dest or classify(b.pbx, dest)[0] is not Kind.TRUNK:
        return
    base = dest.rsplit("-", 1)[0]
    targets = dial_targets(b.pbx, msg, "LastApplication", "LastData")
    number = next((n for tb, n in targets if tb == base), None)
    if number is None:
        number = dial_number(None, msg.get("Destination"))
    if number is None:
        return
    call.first_target = (Kind.TRUNK.value, number)
    if number not in call.rang:
        call.rang.append(number)
    for uid in call.chans:
        leg = b.chans.get(uid)
        if leg is not None and leg.kind is Kind.TRUNK and leg.dialed and leg.label is None:
            leg.label = number
    call.awaiting_number = False
    maybe_start(b, call, ts)
    evaluate_answers(b, call)
    update_ringing(b, call, ts)


def _duration(value: str | None) -> float:
    """Seconds in a ``CoreShowChannel`` ``Duration`` (``HH:MM:SS``); 0 if unreadable."""
    if not value:
        return 0.0
    try:
        parts = [int(p) for p in value.split(":")]
    except ValueError:
        return 0.0
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(seconds)
