"""Rebuilding live state after an AMI gap from a ``CoreShowChannels`` snapshot.

Known channels absent from the snapshot hung up during the gap (at the snapshot time);
calls left without channels end then, with a note. Unknown channels are adopted (created
``Duration`` ago); a device that is Up now counts as answered (at the snapshot time if
its answer was lost). One bad item, or one call that fails to rebuild, is logged and
skipped.
"""

from __future__ import annotations

import logging

from callbridge.calls import CallEvent
from callbridge.pbx.ami.framing import AmiMessage

from .book import Book
from .channel_events import hangup
from .channels import Chan, Kind, int_or_none
from .decisions import end, maybe_start, update_ringing
from .dialing import evaluate_answers
from .linking import chan_of
from .state import Call

__all__ = ["rebuild"]

log = logging.getLogger("callbridge.pbx.tracker")

_GAP_NOTE = "ended during an AMI gap: end time is the resync time"
_UP = 6
_RINGING_STATES = (5, 4)  # Ringing, Ring


def rebuild(b: Book, snapshot_items: list[AmiMessage], at: float) -> list[CallEvent]:
    """Rebuild live state from ``CoreShowChannel`` items taken at Asterisk time ``at``."""
    out: list[CallEvent] = []
    b.out = out
    b.last_ts = max(b.last_ts, at)
    present: set[str] = set()
    touched: set[str] = set()
    for item in snapshot_items:
        try:
            uid = item.get("Uniqueid")
            if not uid:
                continue
            present.add(uid)
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
    for chan in [c for c in b.chans.values() if c.alive and c.uid not in present]:
        call = b.calls.get(chan.call_id)
        if call is not None:
            call.note = _GAP_NOTE
            touched.add(call.call_id)
        hangup(b, chan, at, None)
    for call_id in touched:
        call = b.calls.get(call_id)
        if call is None:
            continue
        try:
            _resync_call(b, call, at)
        except Exception:
            log.exception("tracker: resync of call %s failed", call_id)
    return out


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
    if created < call.start:
        call.start = created
    return chan


def _resync_call(b: Book, call: Call, at: float) -> None:
    root_uid = call.root
    for uid in list(call.chans):
        chan = b.chans.get(uid)
        if chan is None or not chan.alive or uid == root_uid:
            continue
        if chan.kind is Kind.LOCAL:
            if chan.state == _UP and chan.answered_at is None and chan.name.endswith(";1"):
                chan.answered_at = at
            continue
        if not chan.dialed:
            # Adopted from the snapshot: it was dialed while we were away.
            chan.dialed = True
            chan.label = chan.ext if chan.kind is Kind.PHONE else (chan.label or None)
            if chan.label and chan.label not in call.rang:
                call.rang.append(chan.label)
            if call.first_target is None:
                call.first_target = (chan.kind.value, chan.label)
        if chan.state == _UP and chan.answered_at is None:
            chan.answered_at = at
            chan.dial_status = "ANSWER"
        chan.ringing = chan.state in _RINGING_STATES and chan.answered_at is None
    maybe_start(b, call, at)
    evaluate_answers(b, call)
    update_ringing(b, call, at)
    if not call.live:
        end(b, call, at)


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
