"""Writes the synthetic AMI scenarios of this folder (``*.ami``) and their expected calls.

Run ``.venv/bin/python -m tests.scenarios.build`` to regenerate. Each scenario is a
hand-written event sequence following Asterisk's own code paths (see README.md for the
source of every step); the expected tracker result of each (``*.expected.json``) is
written by hand here too, from what happened on the phones, never from the tracker.

Messages carry the full channel block in Asterisk's header order (reference §2.1):
``Channel ChannelState ChannelStateDesc CallerIDNum CallerIDName ConnectedLineNum
ConnectedLineName Language AccountCode Context Exten Priority Uniqueid Linkedid``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callbridge.sim.asterisk.truth import COMPARED_KEYS

HERE = Path(__file__).parent

T0 = 1795300000.0
STATES = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up", 7: "Busy"}
NAMES = {"101": "Ivan Petrov", "102": "Olga Smirnova", "103": "Sergey Volkov"}
CALLER = "74951234567"
DID = "74957654321"
EXTERNAL = "74957770000"

Pairs = list[tuple[str, str]]


@dataclass
class Chan:
    """One channel as Asterisk's snapshot describes it (mutable, like the channel)."""

    name: str
    uid: str
    linkedid: str
    state: int
    cid_num: str
    cid_name: str
    context: str
    exten: str
    priority: str = "1"
    cl_num: str = "<unknown>"
    cl_name: str = "<unknown>"

    def block(self, prefix: str = "") -> Pairs:
        return [
            (prefix + "Channel", self.name),
            (prefix + "ChannelState", str(self.state)),
            (prefix + "ChannelStateDesc", STATES[self.state]),
            (prefix + "CallerIDNum", self.cid_num),
            (prefix + "CallerIDName", self.cid_name),
            (prefix + "ConnectedLineNum", self.cl_num),
            (prefix + "ConnectedLineName", self.cl_name),
            (prefix + "Language", "en"),
            (prefix + "AccountCode", ""),
            (prefix + "Context", self.context),
            (prefix + "Exten", self.exten),
            (prefix + "Priority", self.priority),
            (prefix + "Uniqueid", self.uid),
            (prefix + "Linkedid", self.linkedid),
        ]


@dataclass
class Bridge:
    uid: str
    channels: int = 0

    def block(self, prefix: str = "") -> Pairs:
        return [
            (prefix + "BridgeUniqueid", self.uid),
            (prefix + "BridgeType", "basic"),
            (prefix + "BridgeTechnology", "simple_bridge"),
            (prefix + "BridgeCreator", "<unknown>"),
            (prefix + "BridgeName", "<unknown>"),
            (prefix + "BridgeNumChannels", str(self.channels)),
            (prefix + "BridgeVideoSourceMode", "none"),
        ]


class Stream:
    """An AMI connection's bytes: banner, login answer, then timestamped events."""

    def __init__(self, seq: int) -> None:
        self.t = T0 + seq * 1000.0
        self.seq = seq
        self.counter = 0
        self.chan_no = seq * 16
        self.bridge_no = 0
        self.marks: dict[str, float] = {}
        self.recording = ""
        self.out: list[Pairs] = [
            [("Response", "Success"), ("ActionID", "login-1")],
            [("Event", "FullyBooted"), ("Privilege", "system,all"), ("Status", "Fully Booted")],
        ]

    # -- ids ----------------------------------------------------------------------------
    def uid(self) -> str:
        self.counter += 1
        return f"{int(T0) + self.seq * 1000}.{self.seq * 100 + self.counter}"

    def suffix(self) -> str:
        self.chan_no += 1
        return f"{self.chan_no:08x}"

    def bridge(self) -> Bridge:
        self.bridge_no += 1
        return Bridge(f"{self.seq:08x}-0000-4000-8000-{self.bridge_no:012x}")

    # -- time ---------------------------------------------------------------------------
    def wait(self, seconds: float) -> None:
        self.t += seconds

    # -- events -------------------------------------------------------------------------
    def event(self, name: str, *parts: Pairs, privilege: str = "call,all") -> float:
        self.t += 0.000137
        ts = round(self.t, 6)
        msg: Pairs = [("Event", name), ("Privilege", privilege), ("Timestamp", f"{ts:.6f}")]
        for part in parts:
            msg.extend(part)
        self.out.append(msg)
        return ts

    def newchannel(self, chan: Chan) -> float:
        return self.event("Newchannel", chan.block())

    def newstate(self, chan: Chan, state: int) -> float:
        chan.state = state
        return self.event("Newstate", chan.block())

    def varset(self, chan: Chan, var: str, value: str) -> float:
        return self.event(
            "VarSet", chan.block(), [("Variable", var), ("Value", value)], privilege="dialplan,all"
        )

    def dial_begin(self, caller: Chan | None, dest: Chan, dial_string: str) -> float:
        head = caller.block() if caller is not None else []
        return self.event("DialBegin", head, dest.block("Dest"), [("DialString", dial_string)])

    def dial_state(self, caller: Chan | None, dest: Chan, status: str = "RINGING") -> float:
        head = caller.block() if caller is not None else []
        return self.event("DialState", head, dest.block("Dest"), [("DialStatus", status)])

    def dial_end(self, caller: Chan | None, dest: Chan, status: str) -> float:
        head = caller.block() if caller is not None else []
        return self.event("DialEnd", head, dest.block("Dest"), [("DialStatus", status)])

    def bridge_create(self, bridge: Bridge) -> float:
        return self.event("BridgeCreate", bridge.block())

    def bridge_enter(self, bridge: Bridge, chan: Chan, swap: Chan | None = None) -> float:
        bridge.channels += 1
        extra = [("SwapUniqueid", swap.uid)] if swap is not None else []
        return self.event("BridgeEnter", bridge.block(), chan.block(), extra)

    def bridge_leave(self, bridge: Bridge, chan: Chan) -> float:
        bridge.channels -= 1
        return self.event("BridgeLeave", bridge.block(), chan.block())

    def bridge_destroy(self, bridge: Bridge) -> float:
        return self.event("BridgeDestroy", bridge.block())

    def hangup_request(self, chan: Chan, cause: int = 16) -> float:
        return self.event("HangupRequest", chan.block(), [("Cause", str(cause))])

    def hangup(self, chan: Chan, cause: int = 16, text: str = "Normal Clearing") -> float:
        return self.event("Hangup", chan.block(), [("Cause", str(cause)), ("Cause-txt", text)])

    def connected(self, chan: Chan, num: str, name: str) -> float:
        chan.cl_num, chan.cl_name = num, name
        return self.event("NewConnectedLine", chan.block())

    def hold(self, chan: Chan, music_class: str | None = None) -> float:
        extra = [("MusicClass", music_class)] if music_class else []
        return self.event("Hold", chan.block(), extra)

    def moh(self, chan: Chan, start: bool) -> float:
        if start:
            return self.event("MusicOnHoldStart", chan.block(), [("Class", "default")])
        return self.event("MusicOnHoldStop", chan.block())

    def dtmf(self, chan: Chan, digits: str) -> None:
        for digit in digits:
            self.event("DTMFBegin", chan.block(), [("Digit", digit), ("Direction", "Received")])
            self.wait(0.12)
            self.event(
                "DTMFEnd",
                chan.block(),
                [("Digit", digit), ("DurationMs", "120"), ("Direction", "Received")],
            )
            self.wait(0.2)

    # -- channel factories --------------------------------------------------------------
    def trunk_in(self) -> Chan:
        uid = self.uid()
        return Chan(f"PJSIP/trunk-{self.suffix()}", uid, uid, 4, CALLER, "<unknown>",
                    "from-trunk", DID)  # fmt: skip

    def phone_leg(self, ext: str, linkedid: str, context: str = "from-internal") -> Chan:
        """A phone channel Asterisk placed (Dial/Originate): Down, in the dialed context."""
        return Chan(f"PJSIP/{ext}-{self.suffix()}", self.uid(), linkedid, 0, ext, NAMES[ext],
                    context, ext)  # fmt: skip

    def phone_call(self, ext: str, dialed: str) -> Chan:
        """A call a phone placed: Ring, its own linkedid, Exten = what it dialed."""
        uid = self.uid()
        return Chan(f"PJSIP/{ext}-{self.suffix()}", uid, uid, 4, ext, NAMES[ext],
                    "from-internal", dialed)  # fmt: skip

    def trunk_out(self, linkedid: str, number: str) -> Chan:
        return Chan(f"PJSIP/trunk-{self.suffix()}", self.uid(), linkedid, 0, number,
                    "<unknown>", "from-trunk", "s")  # fmt: skip

    def to_bytes(self) -> bytes:
        text = "Asterisk Call Manager/11.0.0\r\n"
        for msg in self.out:
            text += "".join(f"{k}: {v}\r\n" for k, v in msg) + "\r\n"
        text += (
            "Response: Goodbye\r\nActionID: logoff-1\r\nMessage: Thanks for all the fish.\r\n\r\n"
        )
        return text.encode()


# ----------------------------------------------------------------------------- helpers


def inbound_answered_by(s: Stream, ext: str) -> tuple[Chan, Chan, Bridge]:
    """Inbound call to the DID, dialed straight to ``ext``, answered, bridged, recorded."""
    trunk = s.trunk_in()
    s.marks["start"] = s.newchannel(trunk)
    s.varset(trunk, "__FROM_DID", DID)
    path = f"/var/spool/asterisk/monitor/2026/11/21/in-{DID}-{CALLER}-{trunk.uid}.wav"
    s.varset(trunk, "MIXMONITOR_FILENAME", path)
    s.recording = path
    trunk.context, trunk.exten, trunk.priority = "from-did-direct", ext, "3"
    phone = s.phone_leg(ext, trunk.linkedid)
    phone.cl_num = CALLER
    s.newchannel(phone)
    s.dial_begin(trunk, phone, ext)
    s.newstate(phone, 5)
    s.dial_state(trunk, phone)
    s.wait(3.2)
    s.newstate(phone, 6)
    phone.exten = ""
    s.marks["answer"] = s.dial_end(trunk, phone, "ANSWER")
    s.newstate(trunk, 6)
    b1 = s.bridge()
    s.bridge_create(b1)
    s.bridge_enter(b1, phone)
    s.bridge_enter(b1, trunk)
    return trunk, phone, b1


def expected(s: Stream, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "direction": "inbound",
        "external_number": CALLER,
        "did": DID,
        "operator": None,
        "rang": [],
        "answered": True,
        "answered_by": None,
        "answered_on": None,
        "final_operator": None,
        "result": "answered",
        "transfers": [],
        "start": s.marks.get("start"),
        "answer": s.marks.get("answer"),
        "end": s.marks.get("end"),
        "recordings": [],
        "hangup_cause": 16,
    }
    base.update(fields)
    return base


# ----------------------------------------------------------------------------- scenarios


def attended_dtmf(optimize: bool) -> tuple[Stream, list[dict[str, Any]]]:
    """Inbound → 101; 101 presses *2, dials 103 (Local/103@from-internal-xfer), 103 answers,
    101 hangs up: bridge_basic.c complete_enter merges the consultation bridge into the
    caller's and publishes AttendedTransfer (DestType Bridge). All channels share the
    caller's linkedid (the Local leg is requested by 101's channel)."""
    s = Stream(2 if optimize else 1)
    trunk, p101, b1 = inbound_answered_by(s, "101")
    s.wait(8.0)
    s.dtmf(p101, "*2")
    # feature_attended_transfer: ast_bridge_channel_write_hold → Hold on the transferer,
    # the transferee hears music.
    s.hold(p101)
    s.moh(trunk, True)
    s.dtmf(p101, "103")
    # dial_transfer: ast_request("Local", …, 101's channel, "103@from-internal-xfer").
    sfx = s.suffix()
    lid = trunk.linkedid
    l1 = Chan(f"Local/103@from-internal-xfer-{sfx};1", s.uid(), lid, 0, "<unknown>",
              "<unknown>", "from-internal-xfer", "103")  # fmt: skip
    l2 = Chan(f"Local/103@from-internal-xfer-{sfx};2", s.uid(), lid, 4, "<unknown>",
              "<unknown>", "from-internal-xfer", "103")  # fmt: skip
    s.newchannel(l1)
    s.newchannel(l2)
    s.varset(l1, "TRANSFERERNAME", p101.name)
    s.varset(l1, "ATTENDEDTRANSFER", p101.name)
    l1.cl_num, l1.cl_name = p101.cid_num, p101.cid_name
    l2.cid_num, l2.cid_name = p101.cid_num, p101.cid_name
    s.connected(l1, p101.cid_num, p101.cid_name)
    b2 = s.bridge()
    s.bridge_create(b2)
    s.event(
        "LocalBridge",
        l1.block("LocalOne"),
        l2.block("LocalTwo"),
        [("Context", "from-internal-xfer"), ("Exten", "103"), ("LocalOptimization", "Yes")],
    )
    s.bridge_enter(b2, l1)
    # calling_target_enter: bridge_move(target_bridge, transferee_bridge, transferer).
    s.bridge_leave(b1, p101)
    s.bridge_enter(b2, p101)
    l2.context, l2.priority = "from-internal", "4"
    p103 = s.phone_leg("103", lid)
    p103.cl_num, p103.cl_name = p101.cid_num, p101.cid_name
    s.newchannel(p103)
    s.dial_begin(l2, p103, "103")
    s.newstate(p103, 5)
    s.newstate(l1, 5)
    s.dial_state(l2, p103)
    s.wait(4.0)
    s.newstate(p103, 6)
    p103.exten = ""
    s.dial_end(l2, p103, "ANSWER")
    s.newstate(l2, 6)
    s.newstate(l1, 6)
    b3 = s.bridge()
    s.bridge_create(b3)
    s.bridge_enter(b3, p103)
    s.bridge_enter(b3, l2)
    s.wait(9.0)
    # The transferer hangs up: consulting_exit → bridge_unhold(transferee bridge) →
    # complete_enter: bridge_merge(transferee_bridge ← target_bridge, kick transferer).
    s.hangup_request(p101)
    s.moh(trunk, False)
    s.event("BridgeMerge", b1.block("To"), b2.block("From"))
    s.bridge_leave(b2, p101)
    s.bridge_leave(b2, l1)
    s.bridge_enter(b1, l1)
    s.event(
        "AttendedTransfer",
        [("Result", "Success")],
        p101.block("OrigTransferer"),
        b1.block("Orig"),
        p101.block("SecondTransferer"),
        b2.block("Second"),
        trunk.block("Transferee"),
        l1.block("TransferTarget"),
        [("IsExternal", "No"), ("DestType", "Bridge"), ("DestBridgeUniqueid", b1.uid)],
    )
    s.bridge_destroy(b2)
    s.hangup(p101)
    s.connected(trunk, "103", NAMES["103"])
    if optimize:
        # Without /n the pair optimizes away once both halves are bridged (core_unreal.c):
        # 103 swaps into the caller's bridge in place of the ;1 half.
        s.event(
            "LocalOptimizationBegin",
            l1.block("LocalOne"),
            l2.block("LocalTwo"),
            p103.block("Source"),
            [("DestUniqueId", l1.uid), ("Id", "1")],
        )
        s.bridge_leave(b3, p103)
        s.bridge_enter(b1, p103, swap=l1)
        s.bridge_leave(b1, l1)
        s.event(
            "LocalOptimizationEnd",
            l1.block("LocalOne"),
            l2.block("LocalTwo"),
            [("Success", "Yes"), ("Id", "1")],
        )
        s.bridge_leave(b3, l2)
        s.bridge_destroy(b3)
        s.hangup(l1)
        s.hangup(l2)
        s.wait(30.0)
        s.hangup_request(trunk)
        s.bridge_leave(b1, trunk)
        s.bridge_leave(b1, p103)
        s.bridge_destroy(b1)
        s.hangup(trunk)
        s.marks["end"] = s.hangup(p103)
    else:
        s.wait(30.0)
        s.hangup_request(trunk)
        s.bridge_leave(b1, trunk)
        s.bridge_leave(b1, l1)
        s.bridge_destroy(b1)
        s.hangup(trunk)
        s.hangup(l1)
        s.bridge_leave(b3, l2)
        s.bridge_leave(b3, p103)
        s.bridge_destroy(b3)
        s.hangup(l2)
        s.marks["end"] = s.hangup(p103)
    call = expected(
        s,
        linkedid=trunk.linkedid,
        rang=["101", "103"],
        answered_by="101",
        final_operator="103",
        transfers=[{"type": "attended", "from": "101", "to": "103"}],
        recordings=[s.recording],
    )
    return s, [call]


def attended_refer(on_consultation: bool) -> tuple[Stream, list[dict[str, Any]]]:
    """Inbound → 101; the phone holds the caller, calls 103 itself (a second call with its
    own linkedid), then sends REFER with Replaces. res_pjsip_refer.c hands the REFER
    dialog's channel and the Replaces dialog's channel to ast_bridge_transfer_attended
    (bridge.c): two 2-party basic bridges → swap optimization, the REFER dialog's peer is
    moved into the other bridge in place of the replaced channel (BridgeEnter with
    SwapUniqueid), basic-bridge push adopts the oldest linkedid, the transferer channels
    are kicked. The AttendedTransfer snapshots were taken before the move."""
    s = Stream(4 if on_consultation else 3)
    trunk, p101a, b1 = inbound_answered_by(s, "101")
    s.wait(6.0)
    s.hold(p101a)
    s.moh(trunk, True)
    s.wait(1.0)
    p101b = s.phone_call("101", "103")
    s.newchannel(p101b)
    p101b.context, p101b.priority = "from-internal", "3"
    p103 = s.phone_leg("103", p101b.linkedid)
    p103.cl_num, p103.cl_name = "101", NAMES["101"]
    s.newchannel(p103)
    s.dial_begin(p101b, p103, "103")
    s.newstate(p103, 5)
    s.dial_state(p101b, p103)
    s.wait(3.5)
    s.newstate(p103, 6)
    p103.exten = ""
    s.dial_end(p101b, p103, "ANSWER")
    s.newstate(p101b, 6)
    b2 = s.bridge()
    s.bridge_create(b2)
    s.bridge_enter(b2, p103)
    s.bridge_enter(b2, p101b)
    s.wait(7.0)
    if not on_consultation:
        # REFER on the held dialog, Replaces = the consultation dialog.
        orig, orig_bridge, second, second_bridge = p101a, b1, p101b, b2
        mover, target = trunk, p103
    else:
        # REFER on the consultation dialog, Replaces = the held dialog.
        orig, orig_bridge, second, second_bridge = p101b, b2, p101a, b1
        mover, target = p103, trunk
    snapshot = [
        [("Result", "Success")],
        orig.block("OrigTransferer"),
        orig_bridge.block("Orig"),
        second.block("SecondTransferer"),
        second_bridge.block("Second"),
        mover.block("Transferee"),
        target.block("TransferTarget"),
        [("IsExternal", "Yes"), ("DestType", "Bridge"), ("DestBridgeUniqueid", second_bridge.uid)],
    ]
    # bridge_swap_attended_transfer: the transferee moves into the other bridge, swapping
    # out the second transferer channel; every channel there takes the oldest linkedid.
    s.bridge_leave(orig_bridge, mover)
    if mover is trunk:
        s.moh(trunk, False)
    mover.linkedid = trunk.linkedid
    p103.linkedid = trunk.linkedid
    s.bridge_enter(second_bridge, mover, swap=second)
    s.bridge_leave(second_bridge, second)
    if mover is not trunk:
        s.moh(trunk, False)
    s.bridge_leave(orig_bridge, orig)
    s.bridge_destroy(orig_bridge)
    s.event("AttendedTransfer", *snapshot)
    s.hangup(p101a)
    s.hangup(p101b)
    s.connected(trunk, "103", NAMES["103"])
    s.connected(p103, CALLER, "<unknown>")
    s.wait(25.0)
    final = b2 if not on_consultation else b1
    s.hangup_request(trunk)
    s.bridge_leave(final, trunk)
    s.bridge_leave(final, p103)
    s.bridge_destroy(final)
    s.hangup(trunk)
    s.marks["end"] = s.hangup(p103)
    call = expected(
        s,
        linkedid=trunk.linkedid,
        rang=["101", "103"],
        answered_by="101",
        final_operator="103",
        transfers=[{"type": "attended", "from": "101", "to": "103"}],
        recordings=[s.recording],
    )
    return s, [call]


def pickup(group: bool) -> tuple[Stream, list[dict[str, Any]]]:
    """Inbound → 101 (group: ring group 101 & 103) ringing; 102 dials ``**101`` (group:
    ``*8``). pickup.c ast_do_pickup answers the picker, then ast_channel_move masquerades
    the picker into the ringing leg: the leg object takes the picker's uniqueid, name and
    linkedid (channel_internal_api.c swap), app_dial sees AST_CONTROL_MASQUERADE_NOTIFY and
    publishes DialEnd CANCEL for the old identity and DialBegin for the new one, then
    ANSWER; the zombie with the old identity hangs up (26). The bridge gives the picker the
    caller's linkedid. Pickup (Channel = picker, Target… = ringing leg) follows the move."""
    s = Stream(6 if group else 5)
    trunk = s.trunk_in()
    s.marks["start"] = s.newchannel(trunk)
    s.varset(trunk, "__FROM_DID", DID)
    trunk.context, trunk.exten, trunk.priority = (
        ("ext-group", "600", "12") if group else ("from-did-direct", "101", "3")
    )
    legs = []
    for ext in ("101", "103") if group else ("101",):
        leg = s.phone_leg(ext, trunk.linkedid)
        leg.cl_num = CALLER
        s.newchannel(leg)
        s.dial_begin(trunk, leg, ext)
        legs.append(leg)
    for leg in legs:
        s.newstate(leg, 5)
        s.dial_state(trunk, leg)
    s.wait(4.0)
    dialed = "*8" if group else "**101"
    picker = s.phone_call("102", dialed)
    s.newchannel(picker)
    picker.context, picker.priority = "app-pickup", "2"
    s.connected(picker, CALLER, "<unknown>")
    s.newstate(picker, 6)
    target = legs[0]
    before = Chan(**vars(target))
    # After the masquerade the dialed object carries the picker's identity.
    old = Chan(**vars(target))
    old.cid_num, old.cid_name, old.context, old.exten = "102", NAMES["102"], "app-pickup", dialed
    s.dial_end(trunk, old, "CANCEL")
    s.dial_begin(trunk, picker, target.cid_num)
    s.event("Pickup", picker.block(), before.block("Target"))
    s.connected(trunk, "102", NAMES["102"])
    picker.exten = ""
    s.marks["answer"] = s.dial_end(trunk, picker, "ANSWER")
    zombie = Chan(**vars(old))
    zombie.context, zombie.exten = "from-internal", target.exten
    s.hangup(zombie, 26, "Answered elsewhere")
    for leg in legs[1:]:
        s.dial_end(trunk, leg, "CANCEL")
        s.hangup_request(leg, 26)
        s.hangup(leg, 26, "Answered elsewhere")
    s.newstate(trunk, 6)
    b1 = s.bridge()
    s.bridge_create(b1)
    s.bridge_enter(b1, picker)
    s.bridge_enter(b1, trunk)
    picker.linkedid = trunk.linkedid
    s.wait(20.0)
    s.hangup_request(picker)
    s.bridge_leave(b1, picker)
    s.bridge_leave(b1, trunk)
    s.bridge_destroy(b1)
    s.hangup(picker)
    s.marks["end"] = s.hangup(trunk)
    call = expected(
        s,
        linkedid=trunk.linkedid,
        did=DID,
        rang=["101", "103", "102"] if group else ["101", "102"],
        answered_by="102",
        final_operator="102",
    )
    return s, [call]


def outbound_blind() -> tuple[Stream, list[dict[str, Any]]]:
    """101 calls out; the far end answers; the phone blind-transfers it (REFER) to 102.
    As in the recorded 09b: BlindTransfer, the transferer leaves and hangs up, the trunk
    channel (transferee) runs from-internal/102 and dials 102 in the same linkedid."""
    s = Stream(7)
    p101 = s.phone_call("101", EXTERNAL)
    s.marks["start"] = s.newchannel(p101)
    p101.cid_num = "74957654321"
    s.event(
        "NewCallerid",
        p101.block(),
        [("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")],
    )
    path = f"/var/spool/asterisk/monitor/2026/11/21/out-101-{EXTERNAL}-{p101.uid}.wav"
    s.varset(p101, "MIXMONITOR_FILENAME", path)
    p101.context, p101.priority = "from-internal", "7"
    trunk = s.trunk_out(p101.linkedid, EXTERNAL)
    trunk.cl_num = "74957654321"
    s.newchannel(trunk)
    s.dial_begin(p101, trunk, f"{EXTERNAL}@trunk")
    s.newstate(trunk, 5)
    s.dial_state(p101, trunk)
    s.wait(5.0)
    s.newstate(trunk, 6)
    s.marks["answer"] = s.dial_end(p101, trunk, "ANSWER")
    s.newstate(p101, 6)
    b1 = s.bridge()
    s.bridge_create(b1)
    s.bridge_enter(b1, trunk)
    s.bridge_enter(b1, p101)
    s.wait(12.0)
    s.hold(p101, "default")
    s.moh(trunk, True)
    s.event("Unhold", p101.block())
    s.event(
        "BlindTransfer",
        [("Result", "Success")],
        p101.block("Transferer"),
        trunk.block("Transferee"),
        b1.block(),
        [("IsExternal", "Yes"), ("Context", "from-internal"), ("Extension", "102")],
    )
    s.bridge_leave(b1, p101)
    s.moh(trunk, False)
    s.bridge_leave(b1, trunk)
    s.bridge_destroy(b1)
    s.hangup(p101)
    trunk.context, trunk.exten, trunk.priority = "from-internal", "102", "1"
    p102 = s.phone_leg("102", trunk.linkedid)
    p102.cl_num = EXTERNAL
    s.newchannel(p102)
    s.dial_begin(trunk, p102, "102")
    s.newstate(p102, 5)
    s.dial_state(trunk, p102)
    s.wait(4.0)
    s.newstate(p102, 6)
    s.dial_end(trunk, p102, "ANSWER")
    b2 = s.bridge()
    s.bridge_create(b2)
    s.bridge_enter(b2, p102)
    s.bridge_enter(b2, trunk)
    s.wait(30.0)
    s.hangup_request(trunk)
    s.bridge_leave(b2, trunk)
    s.bridge_leave(b2, p102)
    s.bridge_destroy(b2)
    s.hangup(trunk)
    s.marks["end"] = s.hangup(p102)
    call = expected(
        s,
        linkedid=p101.linkedid,
        direction="outbound",
        external_number=EXTERNAL,
        did=None,
        operator="101",
        rang=[EXTERNAL, "102"],
        answered_by="101",
        final_operator="102",
        transfers=[{"type": "blind", "from": "101", "to": "102"}],
        recordings=[path],
    )
    return s, [call]


def originate_failures() -> tuple[Stream, list[dict[str, Any]]]:
    """Two click-to-calls that never reach the customer. 1) Originate PJSIP/101 with a
    ChannelId: the caller-less leg rings 30 s unanswered (DialEnd NOANSWER); the
    OriginateResponse (Failure, Uniqueid = the ChannelId) comes before the leg's Hangup,
    as in the recorded 13-ami-actions. 2) Originate PJSIP/104, an endpoint without a
    contact: no channel at all, only OriginateResponse Failure with ``Uniqueid: <unknown>``."""
    s = Stream(8)
    leg = Chan("PJSIP/101-" + s.suffix(), "crm-c2c-0001", "crm-c2c-0001", 0, "101",
               NAMES["101"], "from-internal", "s")  # fmt: skip
    start = s.newchannel(leg)
    s.varset(leg, "CRM_CALL_ID", "CALL-0001")
    s.dial_begin(None, leg, "101")
    s.newstate(leg, 5)
    s.dial_state(None, leg)
    s.wait(30.0)
    s.dial_end(None, leg, "NOANSWER")
    s.event(
        "OriginateResponse",
        [
            ("ActionID", "c2c-0001"),
            ("Response", "Failure"),
            ("Channel", "PJSIP/101"),
            ("Context", "from-internal"),
            ("Exten", EXTERNAL),
            ("Reason", "3"),
            ("Uniqueid", "crm-c2c-0001"),
            ("CallerIDNum", "<unknown>"),
            ("CallerIDName", "<unknown>"),
        ],
    )
    end = s.hangup(leg, 0, "Unknown")
    s.wait(5.0)
    lone = s.event(
        "OriginateResponse",
        [
            ("ActionID", "c2c-0002"),
            ("Response", "Failure"),
            ("Channel", "PJSIP/104"),
            ("Context", "from-internal"),
            ("Exten", EXTERNAL),
            ("Reason", "0"),
            ("Uniqueid", "<unknown>"),
            ("CallerIDNum", "<unknown>"),
            ("CallerIDName", "<unknown>"),
        ],
    )
    common: dict[str, Any] = {
        "direction": "outbound",
        "external_number": EXTERNAL,
        "did": None,
        "answered": False,
        "answered_by": None,
        "answered_on": None,
        "final_operator": None,
        "result": "failed",
        "transfers": [],
        "answer": None,
        "recordings": [],
        "hangup_cause": None,
    }
    first = {"linkedid": "crm-c2c-0001", "operator": "101", "rang": ["101"], "start": start,
             "end": end, **common}  # fmt: skip
    second = {"linkedid": "originate-c2c-0002", "operator": "104", "rang": [], "start": lone,
              "end": lone, **common}  # fmt: skip
    return s, [first, second]


SCENARIOS = {
    "S01-inbound-attended-transfer-dtmf": lambda: attended_dtmf(optimize=False),
    "S02-inbound-attended-transfer-dtmf-optimized": lambda: attended_dtmf(optimize=True),
    "S03-inbound-attended-transfer-refer": lambda: attended_refer(on_consultation=False),
    "S04-inbound-attended-transfer-refer-reverse": lambda: attended_refer(on_consultation=True),
    "S05-inbound-directed-pickup": lambda: pickup(group=False),
    "S06-inbound-ringgroup-group-pickup": lambda: pickup(group=True),
    "S07-outbound-blind-transfer": outbound_blind,
    "S08-originate-failures": originate_failures,
}


def main() -> None:
    for name, build in SCENARIOS.items():
        stream, calls = build()
        (HERE / f"{name}.ami").write_bytes(stream.to_bytes())
        ordered = [{key: call[key] for key in COMPARED_KEYS} for call in calls]
        text = json.dumps(ordered, indent=2, ensure_ascii=False) + "\n"
        (HERE / f"{name}.expected.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
