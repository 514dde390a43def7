"""What the tracker knows about one Asterisk channel (one call leg), and how to read names.

A channel is keyed by its ``Uniqueid`` (stable for its whole life, reference §2.3). Whether
it is a phone, a trunk or a Local half comes only from the channel name and the
configuration (:func:`callbridge.config.is_phone_channel`), never from CallerIDNum or
Context. Pure helpers, no state beyond the :class:`Chan` record itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from callbridge.config import PbxConfig, is_phone_channel

__all__ = [
    "Chan",
    "Kind",
    "classify",
    "dial_app_targets",
    "dial_number",
    "followme_owner",
    "int_or_none",
    "is_number",
    "local_exten",
    "local_peer_name",
    "originate_base",
    "phone_of_dial_target",
]


class Kind(Enum):
    PHONE = "phone"  # a configured extension's device
    TRUNK = "trunk"  # anything real that is not a phone: provider, gateway, mobile leg
    LOCAL = "local"  # a Local/…;1 or ;2 half: never a party (reference §2.4)


@dataclass(slots=True)
class Chan:
    uid: str
    name: str
    kind: Kind
    ext: str | None  # extension of a phone channel
    call_id: str
    linkedid: str
    created: float
    state: int
    cid_num: str  # CallerIDNum when the channel appeared
    exten: str  # Exten when the channel appeared (DID of an inbound trunk channel)
    alive: bool = True
    placed: bool = False  # created Down by Newchannel: a leg Asterisk placed, not one ringing in
    #: Uniqueid of the channel whose Dial created this leg (None: not dialed, or Originate).
    dialer: str | None = None
    dialed: bool = False  # some DialBegin (or AgentCalled) targeted it
    caller_less: bool = False  # dialed by an Originate (DialBegin without caller block)
    label: str | None = None  # what "rang": the extension, or the number dialed
    dial_status: str | None = None  # last DialEnd status toward it
    answered_at: float | None = None  # its DialEnd ANSWER (or AgentConnect) time
    agent_connected: bool = False
    confirmed: bool = False  # its answer reached the call's first channel
    ringing: bool = False
    bridge: str | None = None
    cause: int | None = None


_OPTIONS = re.compile(r"/[a-zA-Z]+$")
_NUMBER = re.compile(r"^\+?[0-9*#]+$")


def classify(pbx: PbxConfig, name: str) -> tuple[Kind, str | None]:
    """(kind, extension) of a channel name, from configuration only."""
    if name.startswith("Local/"):
        return Kind.LOCAL, None
    ext = is_phone_channel(pbx, name)
    if ext is not None:
        return Kind.PHONE, ext
    return Kind.TRUNK, None


def local_peer_name(name: str) -> str | None:
    """``Local/x@ctx-0001;1`` ↔ ``Local/x@ctx-0001;2``; None for a non-Local name."""
    if not name.startswith("Local/") or len(name) < 3 or name[-2] != ";":
        return None
    half = name[-1]
    if half == "1":
        return name[:-1] + "2"
    if half == "2":
        return name[:-1] + "1"
    return None


def local_exten(name: str) -> str:
    """The exten a Local channel was made for: ``Local/103@from-internal-xfer-…;1`` → 103."""
    return name[6:].split("@", 1)[0]


def followme_owner(name: str) -> str | None:
    """The extension whose FreePBX follow-me a Local channel is (``Local/FMPR-101@…`` → 101)."""
    exten = local_exten(name)
    return exten[5:] if exten.startswith("FMPR-") else None


def int_or_none(value: str | None) -> int | None:
    """An integer header (``ChannelState``, ``Cause``); None when absent or malformed."""
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def is_number(value: str | None) -> bool:
    return bool(value) and _NUMBER.match(value or "") is not None


def dial_number(dial_string: str | None, fallback: str | None = None) -> str | None:
    """The number a trunk leg was dialed with.

    ``79161234567@trunk`` (PJSIP), ``trunk/sip:79161234567@host`` (PJSIP URI),
    ``peer/79161234567`` (chan_sip/IAX2) → ``79161234567``. ``fallback`` (the leg's own
    CallerIDNum, which Asterisk sets to the dialed exten when the endpoint has none) is
    used when the dial string carries no number.
    """
    if dial_string:
        text = dial_string
        if "@" in text:
            text = text.split("@", 1)[0]
        text = text.rsplit("/", 1)[-1]
        text = text.rsplit(":", 1)[-1]
        if is_number(text):
            return text
    if fallback and is_number(fallback):
        return fallback
    return None


def dial_app_targets(data: str | None) -> list[str]:
    """The ``Tech/resource`` targets of a ``Dial`` application's data.

    ``PJSIP/74957770000@trunk,300,Tb(…)`` → ``["PJSIP/74957770000@trunk"]``;
    ``PJSIP/101&PJSIP/102,20,Ttr`` → both. The first argument is the ``&``-separated
    target list (app_dial's syntax); anything without a technology is not a target.
    """
    if not data:
        return []
    first = data.split(",", 1)[0]
    return [t.strip() for t in first.split("&") if "/" in t.strip()]


def originate_base(channel: str) -> str:
    """The channel-name prefix an Originate ``Channel`` produces.

    ``PJSIP/103`` → ``PJSIP/103`` (channel ``PJSIP/103-0000001f``),
    ``PJSIP/79161234567@trunk`` → ``PJSIP/trunk``, ``SIP/trunk/7916…`` → ``SIP/trunk``,
    ``Local/101@from-internal/n`` → ``Local/101@from-internal`` (``…-0000001a;1``).
    """
    tech, _, rest = channel.partition("/")
    if tech == "Local":
        return f"Local/{_OPTIONS.sub('', rest)}"
    resource = rest.split("/", 1)[0]
    if "@" in resource:
        resource = resource.split("@", 1)[1]
    return f"{tech}/{resource}"


def phone_of_dial_target(pbx: PbxConfig, channel: str) -> str | None:
    """Extension of an Originate ``Channel`` such as ``PJSIP/103`` (no ``-xxxx`` suffix)."""
    ext = is_phone_channel(pbx, channel)
    if ext is None and "-" not in channel.partition("/")[2]:
        ext = is_phone_channel(pbx, channel + "-00000000")
    return ext
