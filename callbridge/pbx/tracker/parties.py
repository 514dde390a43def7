"""Who is really behind a leg: resolving Local ``;1/;2`` pairs and dial chains.

Local halves are never parties (reference §2.4): a device's answer counts only when every
level of the chain that dialed it answered too, a Local half stands for the device its
pair dialed, and a trunk leg made by a FreePBX follow-me belongs to the extension whose
forward it is. Pure reads of the :class:`~.book.Book`; nothing here changes it.
"""

from __future__ import annotations

from .book import Book
from .channels import Chan, Kind, followme_owner, local_exten, local_peer_name
from .state import Call

__all__ = ["connected", "forward_owner", "party_of", "peer_in_call"]

_MAX_CHAIN = 16  # Local chains are short; a cycle must not hang us


def peer_in_call(b: Book, local: Chan) -> Chan | None:
    """The other half of a Local pair, looked up among its call's channels."""
    peer_name = local_peer_name(local.name)
    call = b.calls.get(local.call_id)
    if call is None or peer_name is None:
        return None
    for uid in call.chans:
        chan = b.chans.get(uid)
        if chan is not None and chan.name == peer_name:
            return chan
    return None


def connected(b: Book, dialer_uid: str | None) -> bool:
    """Whether a leg dialed by ``dialer_uid`` is joined all the way up to the caller."""
    for _ in range(_MAX_CHAIN):
        if dialer_uid is None:
            return True
        dialer = b.chans.get(dialer_uid)
        if dialer is None or dialer.kind is not Kind.LOCAL or dialer.name.endswith(";1"):
            return True
        peer_name = local_peer_name(dialer.name)
        peer_uid = b.by_name.get(peer_name) if peer_name else None
        peer = b.chans.get(peer_uid) if peer_uid else None
        if peer is None:
            peer = peer_in_call(b, dialer)
        if peer is None:
            return True  # the ;1 half is gone or unseen: trust the answer
        if peer.answered_at is None and not peer.agent_connected:
            return False
        if peer.caller_less:
            return True
        dialer_uid = peer.dialer
    return True


def forward_owner(b: Book, call: Call, device: Chan) -> str | None:
    """The extension whose forward (follow-me to a mobile) a trunk leg is."""
    uid = device.dialer
    for _ in range(_MAX_CHAIN):
        chan = b.chans.get(uid) if uid else None
        if chan is None or chan.kind is not Kind.LOCAL:
            break
        owner = followme_owner(chan.name)
        if owner is not None:
            return owner
        peer = peer_in_call(b, chan) if chan.name.endswith(";2") else None
        uid = peer.dialer if peer is not None else chan.dialer
    if call.fm_owner:
        return call.fm_owner
    for uid in call.chans:
        chan = b.chans.get(uid)
        if chan is not None and chan.kind is Kind.LOCAL:
            owner = followme_owner(chan.name)
            if owner is not None:
                return owner
    return None


def party_of(b: Book, chan: Chan) -> tuple[str | None, bool]:
    """(extension or number, whether it is an extension) behind a channel.

    A Local half resolves to the device its pair dialed (answered or still up), else
    to the exten it was made for (``Local/103@from-internal-xfer`` → 103).
    """
    if chan.kind is Kind.PHONE:
        return chan.ext, True
    if chan.kind is Kind.TRUNK:
        return chan.label, False
    call = b.calls.get(chan.call_id)
    peer = peer_in_call(b, chan)
    for half in (chan, peer):
        if half is None or call is None:
            continue
        for uid in call.chans:
            dev = b.chans.get(uid)
            if (
                dev is not None
                and dev.dialer == half.uid
                and dev.kind is not Kind.LOCAL
                and (dev.answered_at is not None or dev.alive)
            ):
                if dev.kind is Kind.PHONE:
                    return dev.ext, True
                return dev.label, False
    exten = local_exten(chan.name)
    return exten or None, bool(exten)
