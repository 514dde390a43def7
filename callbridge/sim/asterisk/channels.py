"""The channels live at a moment of the timeline, for ``CoreShowChannels``.

Fed every event the timeline plays, in order: ``Newchannel`` opens a channel,
``Hangup`` closes it, and any event carrying a channel block (plain or ``Dest``-
prefixed) refreshes that channel's state, caller ids, dialplan position and Linkedid;
``Newexten`` sets the application (Asterisk sends one for every change, placed legs'
``AppDial``/``AppQueue``/``AppDial2`` with ``(Outgoing Line)`` too; a ``DialBegin`` sets
the same on the leg it places, for streams without them), ``BridgeEnter``/``BridgeLeave``
the bridge. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from callbridge.pbx.ami.framing import AmiMessage

__all__ = ["ChannelTable", "LiveChannel"]

_BLOCK = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)
_PREFIXES = ("", "Dest")


@dataclass
class LiveChannel:
    created: float
    block: dict[str, str] = field(default_factory=dict)
    application: str = ""
    application_data: str = ""
    bridge_id: str = ""


class ChannelTable:
    """Live channels by Uniqueid, in order of creation."""

    def __init__(self) -> None:
        self._live: dict[str, LiveChannel] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, uniqueid: object) -> bool:
        return uniqueid in self._live

    def apply(self, msg: AmiMessage, position: float) -> None:
        """Update the table with one played event at timeline ``position`` (seconds)."""
        # Exact-spelling lookups in a plain dict: event headers are canonical, and this
        # runs for every played message.
        hdr = dict(reversed(msg.items()))
        event = hdr.get("Event")
        uid = hdr.get("Uniqueid")
        if event == "Newchannel" and uid is not None and "Channel" in hdr:
            self._live[uid] = LiveChannel(created=position)
        if not self._live:
            return
        for prefix in _PREFIXES:
            puid = hdr.get(prefix + "Uniqueid")
            chan = self._live.get(puid) if puid is not None else None
            if chan is None:
                continue
            block = chan.block
            for name in _BLOCK:
                value = hdr.get(prefix + name)
                if value is not None:
                    block[name] = value
        if event == "DialBegin" or event == "AgentCalled":
            self._dialed(hdr)
        if uid is None:
            return
        chan = self._live.get(uid)
        if chan is None:
            return
        if event == "Newexten":
            chan.application = hdr.get("Application", "")
            chan.application_data = hdr.get("AppData", "")
        elif event == "BridgeEnter":
            chan.bridge_id = hdr.get("BridgeUniqueid", "")
        elif event == "BridgeLeave":
            chan.bridge_id = ""
        elif event == "Hangup":
            del self._live[uid]

    def _dialed(self, hdr: dict[str, str]) -> None:
        """A placed leg shows who placed it, as Asterisk sets it on the new channel:
        ``AppDial`` (app_dial), ``AppQueue`` (app_queue), ``AppDial2`` (an Originate, the
        dial API), each with ``(Outgoing Line)``."""
        dest = self._live.get(hdr.get("DestUniqueid", ""))
        if dest is None:
            return
        caller_uid = hdr.get("Uniqueid")
        caller = self._live.get(caller_uid) if caller_uid is not None else None
        if hdr.get("Event") == "AgentCalled" or dest.application == "AppQueue":
            dest.application = "AppQueue"  # a queue member (AgentCalled comes first)
        elif caller_uid is None:
            dest.application = "AppDial2"
        elif caller is not None and caller.application.lower() == "queue":
            dest.application = "AppQueue"
        else:
            dest.application = "AppDial"
        dest.application_data = "(Outgoing Line)"

    def items(self, position: float, action_id: str | None) -> list[AmiMessage]:
        """``CoreShowChannel`` list items as Asterisk 22 writes them (no Timestamp)."""
        out: list[AmiMessage] = []
        for chan in self._live.values():
            pairs: list[tuple[str, str]] = [("Event", "CoreShowChannel")]
            if action_id is not None:
                pairs.append(("ActionID", action_id))
            pairs.extend((name, chan.block.get(name, "")) for name in _BLOCK)
            seconds = max(0, int(position - chan.created))
            pairs += [
                ("Application", chan.application),
                ("ApplicationData", chan.application_data),
                ("Duration", f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"),
                ("BridgeId", chan.bridge_id),
            ]
            out.append(AmiMessage(pairs))
        return out

    def summary(self) -> list[dict[str, str]]:
        """For ``GET /_sim/status``: channel, uniqueid, linkedid, state of each live one."""
        return [
            {
                "channel": c.block.get("Channel", ""),
                "uniqueid": uid,
                "linkedid": c.block.get("Linkedid", ""),
                "state": c.block.get("ChannelStateDesc", ""),
            }
            for uid, c in self._live.items()
        ]
