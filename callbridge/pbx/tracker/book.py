"""The tracker's book: every live channel and call, how they are filed, and how forgotten.

One :class:`Book` holds the whole state of one tracker. Channels are filed by
``Uniqueid`` and by live name, calls by call id and by every ``Linkedid`` they own. Ended
ids are remembered (bounded, oldest forgotten first) so late events (Cdr, CEL,
duplicates) cannot resurrect them. Bookkeeping only: no decisions, no events of its own;
the job modules beside it (dialing, transfers, decisions…) read and write it and append
their events to :attr:`Book.out`.
"""

from __future__ import annotations

from collections import OrderedDict

from callbridge.calls import CallEvent
from callbridge.config import PbxConfig
from callbridge.pbx.ami.framing import AmiMessage

from .channels import Chan, Kind, classify, int_or_none, originate_base
from .state import Call

__all__ = ["Book"]

_RECENT_MAX = 20_000
_RECENT_ORIGINATE_MAX = 1000


class Book:
    """All a tracker knows; mutated in place by the handlers of one event at a time."""

    __slots__ = (
        "by_linkedid",
        "by_name",
        "calls",
        "channelless",
        "chans",
        "last_ts",
        "out",
        "pbx",
        "recent",
        "recent_originate",
        "tag",
    )

    def __init__(self, pbx: PbxConfig) -> None:
        self.pbx = pbx
        #: The configured CRM tag variable, as VarSet names it (without ``_`` inheritance).
        self.tag = pbx.crm_call_id_variable.lstrip("_")
        self.chans: dict[str, Chan] = {}
        self.by_name: dict[str, str] = {}  # live channel name → Uniqueid
        self.calls: dict[str, Call] = {}
        self.by_linkedid: dict[str, str] = {}  # Linkedid → call_id
        # Ids of ended calls/channels, so late events (Cdr, CEL, duplicates) do not
        # resurrect them; bounded, oldest forgotten first.
        self.recent: OrderedDict[str, None] = OrderedDict()
        # Originate legs of ended calls by channel name, for an OriginateResponse that
        # arrives after the leg hung up.
        self.recent_originate: OrderedDict[str, str] = OrderedDict()
        self.last_ts = 0.0  # latest Asterisk Timestamp seen: the time of undated events
        #: Events produced by the message being processed (the caller swaps in a new list).
        self.out: list[CallEvent] = []
        self.channelless = 0  # failed Originates without a channel, for unique call ids

    def remember(self, key: str) -> None:
        recent = self.recent
        recent[key] = None
        if len(recent) > _RECENT_MAX:
            recent.popitem(last=False)

    def call_for(self, linkedid: str, ts: float) -> Call:
        """The call owning ``linkedid``; a new one (starting at ``ts``) if none does."""
        call_id = self.by_linkedid.get(linkedid)
        if call_id is not None:
            return self.calls[call_id]
        call = Call(call_id=linkedid, start=ts)
        call.linkedids.add(linkedid)
        self.calls[linkedid] = call
        self.by_linkedid[linkedid] = linkedid
        return call

    def new_chan(
        self, msg: AmiMessage, uid: str, linkedid: str, ts: float, prefix: str = ""
    ) -> Chan:
        """File the channel that ``msg``'s (``prefix``-ed) header block describes.

        It joins the call of ``linkedid``; the first non-Local channel of a call is its
        root, and the call starts no later than it was created (``ts``).
        """
        name = msg.get(prefix + "Channel") or uid
        call = self.call_for(linkedid or uid, ts)
        kind, ext = classify(self.pbx, name)
        chan = Chan(
            uid=uid,
            name=name,
            kind=kind,
            ext=ext,
            call_id=call.call_id,
            linkedid=linkedid or uid,
            created=ts,
            state=int_or_none(msg.get(prefix + "ChannelState")) or 0,
            cid_num=msg.get(prefix + "CallerIDNum") or "",
            exten=msg.get(prefix + "Exten") or "",
        )
        self.chans[uid] = chan
        self.by_name[name] = uid
        call.chans.append(uid)
        call.live.add(uid)
        if call.root is None and kind is not Kind.LOCAL:
            call.root = uid
            if ts < call.start:
                call.start = ts
        return chan

    def root_of(self, call: Call) -> Chan | None:
        """The call's first real channel (None until one appeared)."""
        return self.chans.get(call.root) if call.root is not None else None

    def forget(self, call: Call) -> None:
        """Drop an ended call and its channels, remembering their ids."""
        self.calls.pop(call.call_id, None)
        for linkedid in call.linkedids:
            if self.by_linkedid.get(linkedid) == call.call_id:
                del self.by_linkedid[linkedid]
            self.remember(linkedid)
        for uid in call.chans:
            chan = self.chans.pop(uid, None)
            self.remember(uid)
            if chan is not None:
                if self.by_name.get(chan.name) == uid:
                    del self.by_name[chan.name]
                if chan.caller_less:
                    base = originate_base(chan.name.rsplit("-", 1)[0])
                    self.recent_originate[base] = call.call_id
                    if len(self.recent_originate) > _RECENT_ORIGINATE_MAX:
                        self.recent_originate.popitem(last=False)
