"""The call tracker: AMI messages in, business-call events out. Pure: no I/O, no clock.

:class:`CallTracker` is the facade: it keeps one :class:`~.book.Book` (all state) and
hands each event, by name, to the module whose job it is. The rules they follow
(reference §2, the trace READMEs):

* Channels are keyed by ``Uniqueid``; a call is the group of channels sharing a
  ``Linkedid``. When a channel shows up with another call's Linkedid (pickup, attended
  transfer, REFER), Asterisk has re-linked it to the older call: the younger call is
  absorbed (:class:`CallMerged`); the older call always survives, since Asterisk only
  moves channels to the oldest linkedid (:mod:`.linking`).
* Pickup: the picker's channel is masqueraded into the ringing leg, so the caller's
  ``DialEnd ANSWER`` names the picker (its own linkedid): the picker's call is absorbed
  and the picker answered. A pickup is not a transfer (:mod:`.dialing`).
* Attended transfer (``*2``/``Atxfer`` through a Local leg, or phone REFER/Replaces
  across two calls): the older call absorbs the consultation call; "to" is the party of
  the consultation (the later leg of Transferee/TransferTarget, which side is which
  depends on the dialog the REFER came on), resolved through Local pairs
  (:mod:`.transfers`, :mod:`.parties`).
* Direction comes from the call's first real channel: a trunk that rang in → inbound; a
  phone → outbound if it reaches a trunk, else internal; a leg made by an Originate
  (``DialBegin`` without a caller block, or created ``Down``) is our own outbound call
  (:mod:`.decisions`, :mod:`.originate`).
* Local ``;1/;2`` halves are never parties; a device's answer counts only when every
  level up to the call's first channel answered too (``DialEnd ANSWER`` of the ``;1``
  toward its dialer, or ``AgentConnect``). Trunks going Up and Cdr never decide it.
* Times come only from ``Timestamp`` headers. A call ends when its last channel hung up;
  then it is forgotten (a bounded memory of ended ids absorbs late events)
  (:mod:`.channel_events`, :mod:`.book`). After an AMI gap, :mod:`.resync`: an adopted
  outbound call takes its number from the snapshot (the ``Dial`` data, the trunk leg's
  ``Exten``), or, adopted after its Dial ended, from its ``Cdr``.

One bad event is logged and skipped; it never stops the tracker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from callbridge.calls import CallEvent, CallSummary
from callbridge.config import PbxConfig
from callbridge.pbx.ami.framing import AmiMessage

from . import channel_events, dialing, originate, transfers
from .book import Book
from .decisions import decide_direction
from .resync import on_cdr, rebuild
from .state import CallState

__all__ = ["TRACKED_VARIABLES", "CallTracker", "track_all"]

log = logging.getLogger("callbridge.pbx.tracker")

#: Channel variables whose VarSet the tracker reads (besides the configured CRM tag).
TRACKED_VARIABLES = frozenset({"MIXMONITOR_FILENAME", "FROM_DID", "FMGRP"})

_Handler = Callable[[Book, AmiMessage, float], None]

#: Event name → the handler whose job it is; every other event is ignored.
_HANDLERS: dict[str, _Handler] = {
    "Newchannel": channel_events.on_newchannel,
    "Newstate": channel_events.on_newstate,
    "DialBegin": dialing.on_dial_begin,
    "DialEnd": dialing.on_dial_end,
    "AgentCalled": dialing.on_agent_called,
    "AgentConnect": dialing.on_agent_connect,
    "Hangup": channel_events.on_hangup,
    "VarSet": channel_events.on_varset,
    "BridgeEnter": channel_events.on_bridge_enter,
    "BridgeLeave": channel_events.on_bridge_leave,
    "BlindTransfer": transfers.on_blind_transfer,
    "AttendedTransfer": transfers.on_attended_transfer,
    "OriginateResponse": originate.on_originate_response,
    "QueueCallerJoin": dialing.on_queue_join,
    "Pickup": channel_events.on_touch,
    "Cdr": on_cdr,  # only fills in the target of a call adopted after its Dial ended
}


class CallTracker:
    """Feed AMI messages one by one; get :data:`callbridge.calls.CallEvent` values back."""

    def __init__(self, pbx: PbxConfig) -> None:
        self._book = Book(pbx)

    def feed(self, msg: AmiMessage) -> list[CallEvent]:
        """Process one message (responses and list items are ignored)."""
        name = msg.event
        handler = _HANDLERS.get(name) if name is not None else None
        if handler is None:
            return []
        book = self._book
        if name == "VarSet":
            # Half of a FreePBX stream is VarSet; most name variables we do not read.
            var = (msg.get("Variable") or "").lstrip("_")
            if var not in TRACKED_VARIABLES and var != book.tag:
                return []
        ts = _timestamp(book, msg)
        out: list[CallEvent] = []
        book.out = out
        try:
            handler(book, msg, ts)
        except Exception:  # one bad event must never stop the tracker
            log.exception("tracker: event %s skipped: %r", name, msg.to_json_obj())
        return out

    def resync(self, snapshot_items: list[AmiMessage], at: float) -> list[CallEvent]:
        """Rebuild live state from ``CoreShowChannel`` items taken at Asterisk time ``at``.

        Known channels absent from the snapshot hung up during the gap (at ``at``); calls
        left without channels end then, with a note. Unknown channels are adopted; a
        device that is Up now counts as answered (at ``at`` if its answer was lost).
        """
        return rebuild(self._book, snapshot_items, at)

    def open_calls(self) -> list[CallSummary]:
        """Summaries of the calls still open (``result``/``end``/``hangup_cause`` None)."""
        book = self._book
        out = []
        for call in book.calls.values():
            if call.state is CallState.MERGED:
                continue
            decide_direction(book, call, final=True)
            summary = call.summary(None)
            summary.end = None
            summary.hangup_cause = None
            out.append(summary)
        return sorted(out, key=lambda s: s.start)

    def summaries(self) -> list[CallSummary]:
        """Alias of :meth:`open_calls`: ended calls travel in :class:`CallEnded`."""
        return self.open_calls()

    @property
    def live_channels(self) -> int:
        return len(self._book.chans)

    @property
    def live_calls(self) -> int:
        return len(self._book.calls)


def _timestamp(book: Book, msg: AmiMessage) -> float:
    """The event's Asterisk time; undated or unreadable: the latest time seen."""
    raw = msg.get("Timestamp")
    if raw is not None:
        try:
            ts = float(raw)
        except ValueError:
            return book.last_ts
        if ts > book.last_ts:
            book.last_ts = ts
        return ts
    return book.last_ts


def track_all(pbx: PbxConfig, messages: Iterable[AmiMessage]) -> list[CallEvent]:
    """Run a fresh tracker over ``messages``; every event, in order."""
    tracker = CallTracker(pbx)
    out: list[CallEvent] = []
    for msg in messages:
        out.extend(tracker.feed(msg))
    return out
