"""Blind and attended transfers: who moved the call, and to whom.

Attended transfer (``*2``/``Atxfer`` through a Local leg, or phone REFER/Replaces across
two calls): the older call absorbs the consultation call; "to" is the party of the
consultation (the later leg of Transferee/TransferTarget, which side is which depends
on the dialog the REFER came on), resolved through Local pairs
(:func:`~.parties.party_of`). Only successful transfers count.
"""

from __future__ import annotations

from callbridge.calls import CallTransferred, Transfer, TransferType
from callbridge.pbx.ami.framing import AmiMessage

from .book import Book
from .linking import chan_of, merge
from .parties import party_of
from .state import Call

__all__ = ["on_attended_transfer", "on_blind_transfer"]


def on_blind_transfer(b: Book, msg: AmiMessage, ts: float) -> None:
    if (msg.get("Result") or "").lower() != "success":
        return
    transferer = chan_of(b, msg, ts, "Transferer")
    transferee = chan_of(b, msg, ts, "Transferee")
    anchor = transferee or transferer
    if anchor is None:
        return
    call = b.calls.get(anchor.call_id)
    if call is None:
        return
    source = transferer.ext if transferer is not None and transferer.ext else call.holder
    target = msg.get("Extension") or None
    _transfer(b, call, TransferType.BLIND, source, target, ts)


def on_attended_transfer(b: Book, msg: AmiMessage, ts: float) -> None:
    if (msg.get("Result") or "").lower() != "success":
        return
    orig = chan_of(b, msg, ts, "OrigTransferer")
    second = chan_of(b, msg, ts, "SecondTransferer")
    transferee = chan_of(b, msg, ts, "Transferee")
    target = chan_of(b, msg, ts, "TransferTarget")
    involved: dict[str, Call] = {}
    for chan in (transferee, target, orig, second):
        call = b.calls.get(chan.call_id) if chan is not None else None
        if call is not None:
            involved[call.call_id] = call
    if not involved:
        return
    # The parties now share a bridge, so Asterisk gives them all the oldest linkedid
    # (bridge_basic_push → ast_bridge_channel_update_linkedids): the older call
    # absorbs the consultation call now rather than at the next event of its leg.
    call = min(involved.values(), key=lambda c: c.start)
    for other in involved.values():
        if other is not call:
            merge(b, call, other, ts)
    source = orig.ext if orig is not None and orig.ext else None
    if source is None and second is not None and second.ext:
        source = second.ext
    if source is None:
        source = call.holder
    # Which of transferee/target is "who the call went to" depends on the dialog the
    # phone sent its REFER on (res_pjsip_refer.c): it is the party of the consultation,
    # i.e. the leg that appeared later. DTMF (*2) transfers always put the consultation
    # Local leg in TransferTarget, which is also the later one.
    parties = [c for c in (transferee, target) if c is not None]
    moved_to = max(parties, key=lambda c: c.created) if parties else None
    to, is_extension = party_of(b, moved_to) if moved_to is not None else (None, False)
    _transfer(b, call, TransferType.ATTENDED, source, to, ts)
    if to is not None and is_extension:
        call.holder = to
        if to not in call.rang:
            call.rang.append(to)


def _transfer(
    b: Book, call: Call, kind: TransferType, source: str | None, to: str | None, ts: float
) -> None:
    transfer = Transfer(kind, source, to, ts)
    call.transfers.append(transfer)
    if call.started:
        b.out.append(CallTransferred(call.call_id, ts, transfer))
