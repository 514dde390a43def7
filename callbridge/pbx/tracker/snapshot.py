"""What ``CoreShowChannels`` would have answered at a point of an AMI stream.

Pure helper for resync tests and simulators: replays channel events (Newchannel,
Newstate, Bridge*, Hangup, re-linking) and writes one ``CoreShowChannel`` list item per
channel still alive, with the fields Asterisk sends (reference §1.8, §3.7: Channel,
Uniqueid, Linkedid, ChannelState, BridgeId, Duration ``HH:MM:SS``…). ``Application`` and
``ApplicationData`` are what Asterisk keeps on the channel; it announces every change of
them with a ``Newexten`` (``Dial`` with its targets…, and for a leg something placed
``AppDial``/``AppQueue``/``AppDial2`` with ``(Outgoing Line)``), so they are the last
``Newexten``'s. A stream without dialplan events still shows the placed legs: their
``DialBegin`` sets what app_dial, app_queue and dial.c set. CEL and Cdr records (late
copies of a past moment) change nothing. Items carry no Timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable

from callbridge.pbx.ami.framing import AmiMessage

__all__ = ["snapshot_at"]

_RECORDS = frozenset({"CEL", "Cdr"})
_STATE_DESC = {
    "0": "Down",
    "4": "Ring",
    "5": "Ringing",
    "6": "Up",
    "7": "Busy",
}


def snapshot_at(
    messages: Iterable[AmiMessage], at: float, action_id: str = "resync"
) -> list[AmiMessage]:
    """CoreShowChannel items for the channels alive after ``messages``, as seen at ``at``."""
    live: dict[str, dict[str, str]] = {}
    for msg in messages:
        event = msg.event
        if event is None or msg.get("Timestamp") is None:
            continue  # responses and list items describe no change
        if event in _RECORDS:
            continue  # CEL/Cdr: records of a past moment, not the channel's state now
        if event in ("DialBegin", "AgentCalled"):
            _dialed(live, msg)
        uid = msg.get("Uniqueid")
        if not uid or uid == "none":
            continue
        if event == "Hangup":
            live.pop(uid, None)
            continue
        info = live.get(uid)
        if info is None:
            if event != "Newchannel":
                continue
            info = live[uid] = {"created": msg.get("Timestamp") or "0", "bridge": ""}
        # The current values, as Asterisk reports them: a dialed leg's Exten may become
        # empty after its answer (reference §2.1), and the listing then says so too.
        for key in ("Channel", "ChannelState", "CallerIDNum", "ConnectedLineNum", "Context"):
            value = msg.get(key)
            if value is not None:
                info[key] = value
        if "Exten" in msg:
            info["Exten"] = msg.get("Exten") or ""
        linkedid = msg.get("Linkedid")
        if linkedid:
            info["Linkedid"] = linkedid
        if event == "Newexten":
            # The app the channel runs now is the one its last dialplan step started.
            info["Application"] = msg.get("Application") or ""
            info["ApplicationData"] = msg.get("AppData") or ""
        elif event == "BridgeEnter":
            info["bridge"] = msg.get("BridgeUniqueid") or ""
        elif event == "BridgeLeave":
            info["bridge"] = ""
    items = []
    for uid, info in live.items():
        seconds = max(0, int(at - float(info["created"])))
        duration = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        state = info.get("ChannelState", "0")
        items.append(
            AmiMessage.from_mapping(
                {
                    "Event": "CoreShowChannel",
                    "ActionID": action_id,
                    "Channel": info.get("Channel", uid),
                    "ChannelState": state,
                    "ChannelStateDesc": _STATE_DESC.get(state, "Unknown"),
                    "CallerIDNum": info.get("CallerIDNum", ""),
                    "ConnectedLineNum": info.get("ConnectedLineNum", ""),
                    "Context": info.get("Context", ""),
                    "Exten": info.get("Exten", ""),
                    "Uniqueid": uid,
                    "Linkedid": info.get("Linkedid", uid),
                    "Application": info.get("Application", ""),
                    "ApplicationData": info.get("ApplicationData", ""),
                    "Duration": duration,
                    "BridgeId": info["bridge"],
                }
            )
        )
    return items


def _dialed(live: dict[str, dict[str, str]], msg: AmiMessage) -> None:
    """A placed leg shows who placed it, as app_dial, app_queue and dial.c set it (the
    ``Newexten`` Asterisk sends for it, when dialplan events are on, says the same)."""
    dest = live.get(msg.get("DestUniqueid") or "")
    if dest is None:
        return
    caller = live.get(msg.get("Uniqueid") or "")
    if msg.event == "AgentCalled" or dest.get("Application") == "AppQueue":
        app = "AppQueue"  # a queue member (its AgentCalled comes before the DialBegin)
    elif caller is None and not msg.get("Uniqueid"):
        app = "AppDial2"  # no caller block: an Originate (the dial API)
    elif caller is not None and caller.get("Application", "").lower() == "queue":
        app = "AppQueue"
    else:
        app = "AppDial"
    dest["Application"] = app
    dest["ApplicationData"] = "(Outgoing Line)"
