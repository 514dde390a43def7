"""What ``CoreShowChannels`` would have answered at a point of an AMI stream.

Pure helper for resync tests and simulators: replays channel events (Newchannel,
Newstate, Bridge*, Hangup, re-linking) and writes one ``CoreShowChannel`` list item per
channel still alive, with the fields Asterisk sends (reference §1.8, §3.7: Channel,
Uniqueid, Linkedid, ChannelState, BridgeId, Duration ``HH:MM:SS``…). ``Application`` and
``ApplicationData`` are what Asterisk keeps on the channel: the app of its last
``Newexten`` (``Dial`` with its targets…), or for a leg something placed, ``AppDial``
(``AppQueue`` from a queue, ``AppDial2`` from an Originate) with ``(Outgoing Line)``.
Items carry no Timestamp.
"""

from __future__ import annotations

from collections.abc import Iterable

from callbridge.pbx.ami.framing import AmiMessage

__all__ = ["snapshot_at"]

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
        if event == "DialBegin":
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
        for key in ("Channel", "ChannelState", "CallerIDNum", "ConnectedLineNum", "Context"):
            value = msg.get(key)
            if value is not None:
                info[key] = value
        for key in ("Exten", "Linkedid"):
            value = msg.get(key)
            if value:
                info[key] = value
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
    """A placed leg shows who placed it, as app_dial, app_queue and dial.c set it."""
    dest = live.get(msg.get("DestUniqueid") or "")
    if dest is None:
        return
    caller = live.get(msg.get("Uniqueid") or "")
    if caller is None and not msg.get("Uniqueid"):
        app = "AppDial2"  # no caller block: an Originate (the dial API)
    elif caller is not None and caller.get("Application", "").lower() == "queue":
        app = "AppQueue"
    else:
        app = "AppDial"
    dest["Application"] = app
    dest["ApplicationData"] = "(Outgoing Line)"
