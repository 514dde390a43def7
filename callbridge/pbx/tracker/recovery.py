"""What a ``CoreShowChannels`` item tells about a leg we adopt without its DialBegin.

After an AMI gap (or at start-up) the events that named a leg's number are gone; the
snapshot still says, per channel (reference §3.7, §2.5, §2.10):

* ``Application``/``ApplicationData``: the app the channel runs now. A channel running
  ``Dial`` carries its targets (``PJSIP/74957770000@trunk,300,…``), which is where the
  number of an outbound call lives after the route's prefix rules. A leg that Asterisk
  placed shows ``(Outgoing Line)`` as data (``AppDial`` for Dial, ``AppQueue`` for a
  queue, ``AppDial2`` for an Originate or the dial API): it did not ring in.
* ``Exten``: app_dial copies the dialer's exten to the leg it dials, so a trunk leg
  dialed from ``from-internal`` carries the number (FreePBX's macro runs at ``s``).
* ``CallerIDNum`` of a dialed leg: the callee's identity, which Asterisk sets to the
  dialed exten when the endpoint has none.

``ConnectedLineNum`` of a trunk leg is *our* caller id (what the far end is shown), never
the number dialed, so it is not used. Pure reads; nothing here changes the book.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from callbridge.config import PbxConfig
from callbridge.pbx.ami.framing import AmiMessage

from .channels import Chan, Kind, classify, dial_app_targets, dial_number, is_number, originate_base

__all__ = ["dial_targets", "dialed_number", "is_outgoing_line", "items_of"]

#: ``ApplicationData`` of every leg Asterisk placed itself (app_dial, app_queue, dial.c).
_OUTGOING_LINE = "(Outgoing Line)"
_PLACING_APPS = frozenset({"appdial", "appdial2", "appqueue"})


def is_outgoing_line(item: AmiMessage) -> bool:
    """Whether the item's channel is a leg Asterisk placed (dialed), not one that rang in."""
    app = (item.get("Application") or "").lower()
    return app in _PLACING_APPS or (item.get("ApplicationData") or "") == _OUTGOING_LINE


def dial_targets(
    pbx: PbxConfig, item: AmiMessage, app: str = "Application", data: str = "ApplicationData"
) -> list[tuple[str, str]]:
    """(channel-name base, number) of each trunk the item's channel is ``Dial``-ing.

    ``PJSIP/74957770000@trunk`` → (``PJSIP/trunk``, ``74957770000``). Phones and Local
    channels are not trunks; a target without a readable number is left out. ``app``
    and ``data`` name the headers (a ``Cdr`` has ``LastApplication``/``LastData``).
    """
    if (item.get(app) or "").lower() != "dial":
        return []
    out = []
    for target in dial_app_targets(item.get(data)):
        base = originate_base(target)
        if classify(pbx, base + "-00000000")[0] is not Kind.TRUNK:
            continue
        number = dial_number(target.partition("/")[2])
        if number is not None:
            out.append((base, number))
    return out


def dialed_number(
    pbx: PbxConfig,
    leg: Chan,
    item: AmiMessage | None,
    call_items: Iterable[AmiMessage],
    root_item: AmiMessage | None,
) -> str | None:
    """The number a trunk ``leg`` of a call was dialed with, from the snapshot.

    In order: the ``Dial`` data of a channel of the call that dials this leg's trunk
    (then of any trunk); the leg's own ``Exten`` (copied from its dialer), its
    ``CallerIDNum``; last, the ``Exten`` the call's first channel (a phone) dialed.
    """
    base = leg.name.rsplit("-", 1)[0]
    other: str | None = None
    for candidate in call_items:
        for target_base, number in dial_targets(pbx, candidate):
            if target_base == base:
                return number
            other = other or number
    if other is not None:
        return other
    # A leg that rang in (it runs dialplan of its own) has its DID and caller there.
    if item is not None and (is_outgoing_line(item) or not item.get("Application")):
        exten = item.get("Exten")
        if is_number(exten):
            return exten
        from_cid = dial_number(None, item.get("CallerIDNum"))
        if from_cid is not None:
            return from_cid
    if root_item is not None:
        exten = root_item.get("Exten")
        if is_number(exten):
            return exten
    return None


def items_of(items: Mapping[str, AmiMessage], uids: Iterable[str]) -> list[AmiMessage]:
    """The snapshot items of the given channels (those the snapshot showed)."""
    return [items[uid] for uid in uids if uid in items]
