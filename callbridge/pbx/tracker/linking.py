"""Which call a channel belongs to: Linkedid groups, re-linking and merges.

A call is the group of channels sharing a ``Linkedid``. When a channel shows up with
another call's Linkedid (pickup, attended transfer, REFER), Asterisk has re-linked it to
the older call: the younger call is absorbed (:class:`CallMerged`) and the older one
always survives, since Asterisk only moves channels to the oldest linkedid. Every
handler finds its channels through :func:`chan_of`, so a re-link is noticed on the
first event that shows it.
"""

from __future__ import annotations

from callbridge.calls import CallMerged
from callbridge.pbx.ami.framing import AmiMessage

from .book import Book
from .channels import Chan
from .decisions import start, update_ringing
from .state import Call, Trigger, advance

__all__ = ["chan_of", "merge", "relink"]


def chan_of(b: Book, msg: AmiMessage, ts: float, prefix: str = "") -> Chan | None:
    """The channel an event's (prefixed) block describes; adopts unknown ones."""
    uid = msg.get(prefix + "Uniqueid")
    if not uid:
        return None
    chan = b.chans.get(uid)
    linkedid = msg.get(prefix + "Linkedid") or uid
    if chan is None:
        if uid in b.recent:
            return None
        chan = b.new_chan(msg, uid, linkedid, ts, prefix)
    elif linkedid != chan.linkedid:
        relink(b, chan, linkedid, ts)
    return chan


def relink(b: Book, chan: Chan, linkedid: str, ts: float) -> None:
    """``chan`` now carries ``linkedid``: file it, merging two calls if it joins another."""
    chan.linkedid = linkedid
    current = b.calls.get(chan.call_id)
    target_id = b.by_linkedid.get(linkedid)
    if current is None:
        return
    if target_id is None:
        b.by_linkedid[linkedid] = current.call_id
        current.linkedids.add(linkedid)
        return
    if target_id == current.call_id:
        return
    target = b.calls.get(target_id)
    if target is None:
        return
    # Asterisk only ever moves channels to the *oldest* linkedid; a younger one on a
    # channel is a snapshot taken before the move (AttendedTransfer blocks are), so
    # the older call always survives whichever side the event names.
    if target.start <= current.start:
        merge(b, target, current, ts)
    else:
        merge(b, current, target, ts)


def merge(b: Book, keep: Call, gone: Call, ts: float) -> None:
    """``keep`` absorbs ``gone``: its channels, linkedids, story so far."""
    was_started = gone.started
    if not advance(gone, Trigger.ABSORB, "relink"):
        return
    for uid in gone.chans:
        chan = b.chans.get(uid)
        if chan is not None:
            chan.call_id = keep.call_id
        keep.chans.append(uid)
    keep.live |= gone.live
    for linkedid in gone.linkedids:
        b.by_linkedid[linkedid] = keep.call_id
    keep.linkedids |= gone.linkedids
    for label in gone.rang:
        if label not in keep.rang:
            keep.rang.append(label)
    for path in gone.recordings:
        if path not in keep.recordings:
            keep.recordings.append(path)
    keep.transfers.extend(gone.transfers)
    for key, value in gone.tags.items():
        keep.tags.setdefault(key, value)
    del b.calls[gone.call_id]
    if was_started and keep.started:
        b.out.append(CallMerged(keep.call_id, ts, gone.call_id))
    elif was_started:
        # The survivor was never announced: it takes over the absorbed call's story.
        start(b, keep, ts, force=True)
        b.out.append(CallMerged(keep.call_id, ts, gone.call_id))
    update_ringing(b, keep, ts)
