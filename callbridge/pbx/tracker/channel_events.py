"""Handlers of a channel's own life: created, state changes, variables, bridges, hangup.

A call ends when its last channel hung up (:func:`hangup`, shared with resync). The
channel variables read here (recording file, the DID FreePBX saw, the follow-me group,
the CRM tag) are the ones :data:`~.tracker.TRACKED_VARIABLES` lets through.
"""

from __future__ import annotations

from callbridge.calls import RecordingKnown
from callbridge.pbx.ami.framing import AmiMessage

from .book import Book
from .channels import Chan, int_or_none
from .decisions import end, update_ringing
from .dialing import evaluate_answers
from .linking import chan_of

__all__ = [
    "hangup",
    "on_bridge_enter",
    "on_bridge_leave",
    "on_hangup",
    "on_newchannel",
    "on_newstate",
    "on_touch",
    "on_varset",
]


def on_touch(b: Book, msg: AmiMessage, ts: float) -> None:
    """An event that only shows a channel (and so its current linkedid): Pickup."""
    chan_of(b, msg, ts)


def on_newchannel(b: Book, msg: AmiMessage, ts: float) -> None:
    uid = msg.get("Uniqueid")
    if not uid or uid in b.chans or uid in b.recent:
        return  # duplicate Newchannel, or a late one for an ended channel
    chan = b.new_chan(msg, uid, msg.get("Linkedid") or uid, ts)
    # An inbound leg starts ringing (4 Ring); one we placed (Originate) starts Down.
    chan.placed = chan.state == 0


def on_newstate(b: Book, msg: AmiMessage, ts: float) -> None:
    chan = chan_of(b, msg, ts)
    if chan is not None:
        state = int_or_none(msg.get("ChannelState"))
        if state is not None:
            chan.state = state


def on_varset(b: Book, msg: AmiMessage, ts: float) -> None:
    var = (msg.get("Variable") or "").lstrip("_")
    chan = chan_of(b, msg, ts)
    if chan is None:
        return
    call = b.calls.get(chan.call_id)
    if call is None:
        return
    value = msg.get("Value") or ""
    if var == "MIXMONITOR_FILENAME":
        if value and value not in call.recordings:
            call.recordings.append(value)
            if call.started:
                b.out.append(RecordingKnown(call.call_id, ts, value))
    elif var == "FROM_DID":
        if value and call.did_var is None:
            call.did_var = value
    elif var == "FMGRP":
        if value:
            call.fm_owner = value
    elif value:
        call.tags[var] = value


def on_bridge_enter(b: Book, msg: AmiMessage, ts: float) -> None:
    chan = chan_of(b, msg, ts)
    if chan is not None:
        chan.bridge = msg.get("BridgeUniqueid")


def on_bridge_leave(b: Book, msg: AmiMessage, ts: float) -> None:
    chan = chan_of(b, msg, ts)
    if chan is not None:
        chan.bridge = None


def on_hangup(b: Book, msg: AmiMessage, ts: float) -> None:
    uid = msg.get("Uniqueid")
    if not uid or uid in b.recent:
        return
    chan = chan_of(b, msg, ts)
    if chan is None or not chan.alive:
        return
    hangup(b, chan, ts, int_or_none(msg.get("Cause")))


def hangup(b: Book, chan: Chan, ts: float, cause: int | None) -> None:
    """``chan`` hung up at ``ts``; its call ends with its last channel."""
    chan.alive = False
    chan.ringing = False
    chan.cause = cause
    if b.by_name.get(chan.name) == chan.uid:
        del b.by_name[chan.name]
    call = b.calls.get(chan.call_id)
    if call is None:
        return
    call.live.discard(chan.uid)
    call.end = ts if call.end is None or ts > call.end else call.end
    if call.live:
        update_ringing(b, call, ts)
    else:
        if call.awaiting_number:
            # No Cdr named it: the answers seen at the resync count now, number unknown.
            call.awaiting_number = False
            evaluate_answers(b, call)
        end(b, call, ts)
