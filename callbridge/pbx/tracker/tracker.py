"""The call tracker: AMI messages in, business-call events out. Pure: no I/O, no clock.

Rules it follows (reference §2, the trace READMEs):

* Channels are keyed by ``Uniqueid``; a call is the group of channels sharing a
  ``Linkedid``. When a channel shows up with another call's Linkedid (pickup, attended
  transfer, REFER), Asterisk has re-linked it to the older call: the younger call is
  absorbed (:class:`CallMerged`); the older call always survives, since Asterisk only
  moves channels to the oldest linkedid.
* Pickup: the picker's channel is masqueraded into the ringing leg, so the caller's
  ``DialEnd ANSWER`` names the picker (its own linkedid): the picker's call is absorbed
  and the picker answered. A pickup is not a transfer.
* Attended transfer (``*2``/``Atxfer`` through a Local leg, or phone REFER/Replaces
  across two calls): the older call absorbs the consultation call; "to" is the party of
  the consultation (the later leg of Transferee/TransferTarget, which side is which
  depends on the dialog the REFER came on), resolved through Local pairs.
* Direction comes from the call's first real channel: a trunk that rang in → inbound; a
  phone → outbound if it reaches a trunk, else internal; a leg made by an Originate
  (``DialBegin`` without a caller block, or created ``Down``) is our own outbound call.
* Local ``;1/;2`` halves are never parties; a device's answer counts only when every
  level up to the call's first channel answered too (``DialEnd ANSWER`` of the ``;1``
  toward its dialer, or ``AgentConnect``). Trunks going Up and Cdr never decide it.
* Times come only from ``Timestamp`` headers. A call ends when its last channel hung up;
  then it is forgotten (a bounded memory of ended ids absorbs late events).

One bad event is logged and skipped; it never stops the tracker.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable

from callbridge.calls import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallMerged,
    CallResult,
    CallStarted,
    CallSummary,
    CallTransferred,
    Direction,
    RecordingKnown,
    RingingChanged,
    Transfer,
    TransferType,
)
from callbridge.config import PbxConfig
from callbridge.pbx.ami.framing import AmiMessage

from .channels import (
    Chan,
    Kind,
    classify,
    dial_number,
    is_number,
    local_peer_name,
    originate_base,
    phone_of_dial_target,
)
from .state import Call, CallState, Trigger, advance

__all__ = ["TRACKED_VARIABLES", "CallTracker"]

log = logging.getLogger("callbridge.pbx.tracker")

#: Channel variables whose VarSet the tracker reads (besides the configured CRM tag).
TRACKED_VARIABLES = frozenset({"MIXMONITOR_FILENAME", "FROM_DID", "FMGRP"})

_RECENT_MAX = 20_000
_GAP_NOTE = "ended during an AMI gap: end time is the resync time"
_FAIL_STATUSES = frozenset({"CHANUNAVAIL", "CONGESTION", "INVALIDARGS", "DONTCALL", "TORTURE"})


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class CallTracker:
    """Feed AMI messages one by one; get :data:`callbridge.calls.CallEvent` values back."""

    def __init__(self, pbx: PbxConfig) -> None:
        self._pbx = pbx
        self._tag = pbx.crm_call_id_variable.lstrip("_")
        self._chans: dict[str, Chan] = {}
        self._by_name: dict[str, str] = {}  # live channel name → Uniqueid
        self._calls: dict[str, Call] = {}
        self._by_linkedid: dict[str, str] = {}  # Linkedid → call_id
        # Ids of ended calls/channels, so late events (Cdr, CEL, duplicates) do not
        # resurrect them; bounded, oldest forgotten first.
        self._recent: OrderedDict[str, None] = OrderedDict()
        # Originate legs of ended calls by channel name, for an OriginateResponse that
        # arrives after the leg hung up.
        self._recent_originate: OrderedDict[str, str] = OrderedDict()
        self._last_ts = 0.0
        self._out: list[CallEvent] = []
        self._channelless = 0
        self._handlers: dict[str, Callable[[AmiMessage, float], None]] = {
            "Newchannel": self._on_newchannel,
            "Newstate": self._on_newstate,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "AgentCalled": self._on_agent_called,
            "AgentConnect": self._on_agent_connect,
            "Hangup": self._on_hangup,
            "VarSet": self._on_varset,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "OriginateResponse": self._on_originate_response,
            "QueueCallerJoin": self._on_queue_join,
            "Pickup": self._on_touch,
        }

    # ------------------------------------------------------------------ public API

    def feed(self, msg: AmiMessage) -> list[CallEvent]:
        """Process one message (responses and list items are ignored)."""
        name = msg.event
        handler = self._handlers.get(name) if name is not None else None
        if handler is None:
            return []
        if name == "VarSet":
            # Half of a FreePBX stream is VarSet; most name variables we do not read.
            var = (msg.get("Variable") or "").lstrip("_")
            if var not in TRACKED_VARIABLES and var != self._tag:
                return []
        ts = self._timestamp(msg)
        out: list[CallEvent] = []
        self._out = out
        try:
            handler(msg, ts)
        except Exception:  # one bad event must never stop the tracker
            log.exception("tracker: event %s skipped: %r", name, msg.to_json_obj())
        return out

    def resync(self, snapshot_items: list[AmiMessage], at: float) -> list[CallEvent]:
        """Rebuild live state from ``CoreShowChannel`` items taken at Asterisk time ``at``.

        Known channels absent from the snapshot hung up during the gap (at ``at``); calls
        left without channels end then, with a note. Unknown channels are adopted; a
        device that is Up now counts as answered (at ``at`` if its answer was lost).
        """
        out: list[CallEvent] = []
        self._out = out
        self._last_ts = max(self._last_ts, at)
        present: set[str] = set()
        touched: set[str] = set()
        for item in snapshot_items:
            try:
                uid = item.get("Uniqueid")
                if not uid:
                    continue
                present.add(uid)
                chan = self._adopt_item(item, at)
                if chan is None:
                    continue
                state = _int(item.get("ChannelState"))
                if state is not None:
                    chan.state = state
                chan.bridge = item.get("BridgeId") or None
                touched.add(chan.call_id)
            except Exception:
                log.exception("tracker: snapshot item skipped: %r", item.to_json_obj())
        for chan in [c for c in self._chans.values() if c.alive and c.uid not in present]:
            call = self._calls.get(chan.call_id)
            if call is not None:
                call.note = _GAP_NOTE
                touched.add(call.call_id)
            self._hangup(chan, at, None)
        for call_id in touched:
            call = self._calls.get(call_id)
            if call is None:
                continue
            try:
                self._resync_call(call, at)
            except Exception:
                log.exception("tracker: resync of call %s failed", call_id)
        return out

    def open_calls(self) -> list[CallSummary]:
        """Summaries of the calls still open (``result``/``end``/``hangup_cause`` None)."""
        out = []
        for call in self._calls.values():
            if call.state is CallState.MERGED:
                continue
            self._decide_direction(call, final=True)
            summary = call.summary(None)
            summary.end = None
            summary.hangup_cause = None
            out.append(summary)
        return sorted(out, key=lambda s: s.start)

    def summaries(self) -> list[CallSummary]:
        """Alias of :meth:`open_calls`: ended calls travel in :class:`CallEnded`."""
        return self.open_calls()

    @property
    def live_channels(self) -> int:
        return len(self._chans)

    @property
    def live_calls(self) -> int:
        return len(self._calls)

    # ------------------------------------------------------------------ plumbing

    def _timestamp(self, msg: AmiMessage) -> float:
        raw = msg.get("Timestamp")
        if raw is not None:
            try:
                ts = float(raw)
            except ValueError:
                return self._last_ts
            if ts > self._last_ts:
                self._last_ts = ts
            return ts
        return self._last_ts

    def _remember(self, key: str) -> None:
        recent = self._recent
        recent[key] = None
        if len(recent) > _RECENT_MAX:
            recent.popitem(last=False)

    def _call_for(self, linkedid: str, ts: float) -> Call:
        call_id = self._by_linkedid.get(linkedid)
        if call_id is not None:
            return self._calls[call_id]
        call = Call(call_id=linkedid, start=ts)
        call.linkedids.add(linkedid)
        self._calls[linkedid] = call
        self._by_linkedid[linkedid] = linkedid
        return call

    def _new_chan(
        self, uid: str, name: str, linkedid: str, ts: float, state: int, cid: str, exten: str
    ) -> Chan:
        call = self._call_for(linkedid or uid, ts)
        kind, ext = classify(self._pbx, name)
        chan = Chan(
            uid=uid,
            name=name,
            kind=kind,
            ext=ext,
            call_id=call.call_id,
            linkedid=linkedid or uid,
            created=ts,
            state=state,
            cid_num=cid,
            exten=exten,
        )
        self._chans[uid] = chan
        self._by_name[name] = uid
        call.chans.append(uid)
        call.live.add(uid)
        if call.root is None and kind is not Kind.LOCAL:
            call.root = uid
            if ts < call.start:
                call.start = ts
        return chan

    def _chan(self, msg: AmiMessage, ts: float, prefix: str = "") -> Chan | None:
        """The channel an event's (prefixed) block describes; adopts unknown ones."""
        uid = msg.get(prefix + "Uniqueid")
        if not uid:
            return None
        chan = self._chans.get(uid)
        linkedid = msg.get(prefix + "Linkedid") or uid
        if chan is None:
            if uid in self._recent:
                return None
            name = msg.get(prefix + "Channel") or uid
            chan = self._new_chan(
                uid,
                name,
                linkedid,
                ts,
                _int(msg.get(prefix + "ChannelState")) or 0,
                msg.get(prefix + "CallerIDNum") or "",
                msg.get(prefix + "Exten") or "",
            )
        elif linkedid != chan.linkedid:
            self._relink(chan, linkedid, ts)
        return chan

    def _relink(self, chan: Chan, linkedid: str, ts: float) -> None:
        chan.linkedid = linkedid
        current = self._calls.get(chan.call_id)
        target_id = self._by_linkedid.get(linkedid)
        if current is None:
            return
        if target_id is None:
            self._by_linkedid[linkedid] = current.call_id
            current.linkedids.add(linkedid)
            return
        if target_id == current.call_id:
            return
        target = self._calls.get(target_id)
        if target is None:
            return
        # Asterisk only ever moves channels to the *oldest* linkedid; a younger one on a
        # channel is a snapshot taken before the move (AttendedTransfer blocks are), so
        # the older call always survives whichever side the event names.
        if target.start <= current.start:
            self._merge(target, current, ts)
        else:
            self._merge(current, target, ts)

    def _merge(self, keep: Call, gone: Call, ts: float) -> None:
        was_started = gone.started
        if not advance(gone, Trigger.ABSORB, "relink"):
            return
        for uid in gone.chans:
            chan = self._chans.get(uid)
            if chan is not None:
                chan.call_id = keep.call_id
            keep.chans.append(uid)
        keep.live |= gone.live
        for linkedid in gone.linkedids:
            self._by_linkedid[linkedid] = keep.call_id
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
        del self._calls[gone.call_id]
        if was_started and keep.started:
            self._out.append(CallMerged(keep.call_id, ts, gone.call_id))
        elif was_started:
            # The survivor was never announced: it takes over the absorbed call's story.
            self._start(keep, ts, force=True)
            self._out.append(CallMerged(keep.call_id, ts, gone.call_id))
        self._update_ringing(keep, ts)

    # ------------------------------------------------------------------ handlers

    def _on_touch(self, msg: AmiMessage, ts: float) -> None:
        self._chan(msg, ts)

    def _on_newchannel(self, msg: AmiMessage, ts: float) -> None:
        uid = msg.get("Uniqueid")
        if not uid or uid in self._chans or uid in self._recent:
            return  # duplicate Newchannel, or a late one for an ended channel
        state = _int(msg.get("ChannelState")) or 0
        chan = self._new_chan(
            uid,
            msg.get("Channel") or uid,
            msg.get("Linkedid") or uid,
            ts,
            state,
            msg.get("CallerIDNum") or "",
            msg.get("Exten") or "",
        )
        # An inbound leg starts ringing (4 Ring); one we placed (Originate) starts Down.
        chan.placed = state == 0

    def _on_newstate(self, msg: AmiMessage, ts: float) -> None:
        chan = self._chan(msg, ts)
        if chan is not None:
            state = _int(msg.get("ChannelState"))
            if state is not None:
                chan.state = state

    def _on_varset(self, msg: AmiMessage, ts: float) -> None:
        var = (msg.get("Variable") or "").lstrip("_")
        chan = self._chan(msg, ts)
        if chan is None:
            return
        call = self._calls.get(chan.call_id)
        if call is None:
            return
        value = msg.get("Value") or ""
        if var == "MIXMONITOR_FILENAME":
            if value and value not in call.recordings:
                call.recordings.append(value)
                if call.started:
                    self._out.append(RecordingKnown(call.call_id, ts, value))
        elif var == "FROM_DID":
            if value and call.did_var is None:
                call.did_var = value
        elif var == "FMGRP":
            if value:
                call.fm_owner = value
        elif value:
            call.tags[var] = value

    def _on_dial_begin(self, msg: AmiMessage, ts: float) -> None:
        dest = self._chan(msg, ts, "Dest")
        if dest is None:
            return
        caller = self._chan(msg, ts) if msg.get("Uniqueid") else None
        self._dialed(dest, caller, msg.get("DialString"), msg.get("DestCallerIDNum"), ts)

    def _dialed(
        self,
        dest: Chan,
        caller: Chan | None,
        dial_string: str | None,
        dest_cid: str | None,
        ts: float,
    ) -> None:
        call = self._calls.get(dest.call_id)
        if call is None:
            return
        dest.dialed = True
        if caller is not None:
            dest.dialer = caller.uid
        else:
            dest.caller_less = True
        if dest.kind is Kind.PHONE:
            dest.label = dest.ext
        elif dest.kind is Kind.TRUNK:
            dest.label = dial_number(dial_string, dest_cid)
        if dest.kind is not Kind.LOCAL:
            if dest.uid != call.root and call.first_target is None:
                call.first_target = (dest.kind.value, dest.label)
            if dest.label and dest.label not in call.rang:
                call.rang.append(dest.label)
            dest.ringing = dest.alive and dest.answered_at is None
        self._maybe_start(call, ts)
        self._update_ringing(call, ts)

    def _on_agent_called(self, msg: AmiMessage, ts: float) -> None:
        # Queues emit DialBegin too; AgentCalled only makes sure a member leg is known.
        dest = self._chan(msg, ts, "Dest")
        caller = self._chan(msg, ts)
        if dest is not None and not dest.dialed:
            self._dialed(dest, caller, msg.get("Interface"), msg.get("DestCallerIDNum"), ts)

    def _on_dial_end(self, msg: AmiMessage, ts: float) -> None:
        dest = self._chan(msg, ts, "Dest")
        if dest is None:
            return
        caller = self._chan(msg, ts) if msg.get("Uniqueid") else None
        status = (msg.get("DialStatus") or "").upper()
        if status == "ANSWER" and caller is not None and caller.call_id != dest.call_id:
            # Pickup: the picker's own call joins the caller's (Asterisk re-links it too).
            keep, gone = self._calls.get(caller.call_id), self._calls.get(dest.call_id)
            if keep is not None and gone is not None:
                self._merge(keep, gone, ts)
        call = self._calls.get(dest.call_id)
        if call is None:
            return
        if status == "ANSWER":
            if dest.answered_at is None:
                dest.answered_at = ts
            dest.dial_status = "ANSWER"
            if not dest.dialed:
                # Pickup: the trunk's DialEnd ANSWER names the picker's channel, which
                # never had a DialBegin of its own.
                dest.dialed = True
                dest.dialer = msg.get("Uniqueid") or None
                if dest.kind is Kind.PHONE and dest.ext and dest.ext not in call.rang:
                    call.rang.append(dest.ext)
        elif dest.dial_status != "ANSWER":
            # Duplicates (app_queue sends CANCEL twice) and late losers only overwrite
            # a non-answer.
            dest.dial_status = status
        dest.ringing = False
        self._maybe_start(call, ts)
        if status == "ANSWER":
            self._evaluate_answers(call)
        self._update_ringing(call, ts)

    def _on_agent_connect(self, msg: AmiMessage, ts: float) -> None:
        dest = self._chan(msg, ts, "Dest")
        if dest is None:
            return
        call = self._calls.get(dest.call_id)
        if call is None:
            return
        dest.agent_connected = True
        if dest.answered_at is None:
            dest.answered_at = ts
        dest.ringing = False
        self._maybe_start(call, ts)
        self._evaluate_answers(call)
        self._update_ringing(call, ts)

    def _on_queue_join(self, msg: AmiMessage, ts: float) -> None:
        chan = self._chan(msg, ts)
        if chan is not None:
            call = self._calls.get(chan.call_id)
            if call is not None:
                self._maybe_start(call, ts)

    def _on_bridge_enter(self, msg: AmiMessage, ts: float) -> None:
        chan = self._chan(msg, ts)
        if chan is not None:
            chan.bridge = msg.get("BridgeUniqueid")

    def _on_bridge_leave(self, msg: AmiMessage, ts: float) -> None:
        chan = self._chan(msg, ts)
        if chan is not None:
            chan.bridge = None

    def _on_hangup(self, msg: AmiMessage, ts: float) -> None:
        uid = msg.get("Uniqueid")
        if not uid or uid in self._recent:
            return
        chan = self._chan(msg, ts)
        if chan is None or not chan.alive:
            return
        self._hangup(chan, ts, _int(msg.get("Cause")))

    def _hangup(self, chan: Chan, ts: float, cause: int | None) -> None:
        chan.alive = False
        chan.ringing = False
        chan.cause = cause
        if self._by_name.get(chan.name) == chan.uid:
            del self._by_name[chan.name]
        call = self._calls.get(chan.call_id)
        if call is None:
            return
        call.live.discard(chan.uid)
        call.end = ts if call.end is None or ts > call.end else call.end
        if call.live:
            self._update_ringing(call, ts)
        else:
            self._end(call, ts)

    def _on_blind_transfer(self, msg: AmiMessage, ts: float) -> None:
        if (msg.get("Result") or "").lower() != "success":
            return
        transferer = self._chan(msg, ts, "Transferer")
        transferee = self._chan(msg, ts, "Transferee")
        anchor = transferee or transferer
        if anchor is None:
            return
        call = self._calls.get(anchor.call_id)
        if call is None:
            return
        source = transferer.ext if transferer is not None and transferer.ext else call.holder
        target = msg.get("Extension") or None
        self._transfer(call, TransferType.BLIND, source, target, ts)

    def _on_attended_transfer(self, msg: AmiMessage, ts: float) -> None:
        if (msg.get("Result") or "").lower() != "success":
            return
        orig = self._chan(msg, ts, "OrigTransferer")
        second = self._chan(msg, ts, "SecondTransferer")
        transferee = self._chan(msg, ts, "Transferee")
        target = self._chan(msg, ts, "TransferTarget")
        involved: dict[str, Call] = {}
        for chan in (transferee, target, orig, second):
            call = self._calls.get(chan.call_id) if chan is not None else None
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
                self._merge(call, other, ts)
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
        to, is_extension = self._party_of(moved_to) if moved_to is not None else (None, False)
        self._transfer(call, TransferType.ATTENDED, source, to, ts)
        if to is not None and is_extension:
            call.holder = to
            if to not in call.rang:
                call.rang.append(to)

    def _transfer(
        self, call: Call, kind: TransferType, source: str | None, to: str | None, ts: float
    ) -> None:
        transfer = Transfer(kind, source, to, ts)
        call.transfers.append(transfer)
        if call.started:
            self._out.append(CallTransferred(call.call_id, ts, transfer))

    def _on_originate_response(self, msg: AmiMessage, ts: float) -> None:
        channel = msg.get("Channel") or ""
        exten = msg.get("Exten") or None
        failed = (msg.get("Response") or "").lower() == "failure"
        uid = msg.get("Uniqueid")
        leg: Chan | None = None
        if uid and uid != "<unknown>":
            leg = self._chans.get(uid)
        if leg is None and channel:
            leg = self._originate_leg(channel)
        if leg is not None:
            call = self._calls.get(leg.call_id)
            if call is not None:
                call.originate_exten = exten
                call.originate_failed = call.originate_failed or failed
            return
        if channel and originate_base(channel) in self._recent_originate:
            return  # the leg's call already ended (and was reported failed)
        if failed:
            self._channelless_failure(msg, channel, exten, ts)

    def _originate_leg(self, channel: str) -> Chan | None:
        base = originate_base(channel) + "-"
        best: Chan | None = None
        for name, uid in self._by_name.items():
            if name.startswith(base):
                chan = self._chans[uid]
                if chan.caller_less and (best is None or chan.created < best.created):
                    best = chan
        return best

    def _channelless_failure(
        self, msg: AmiMessage, channel: str, exten: str | None, ts: float
    ) -> None:
        self._channelless += 1
        action = msg.get("ActionID")
        call_id = f"originate-{action}" if action else f"originate-{ts:.6f}-{self._channelless}"
        operator = phone_of_dial_target(self._pbx, channel)
        call = Call(call_id=call_id, start=ts)
        call.direction = Direction.OUTBOUND
        call.operator = operator
        call.external_number = exten
        call.originate_failed = True
        call.end = ts
        advance(call, Trigger.START, "OriginateResponse")
        self._out.append(
            CallStarted(call_id, ts, Direction.OUTBOUND, exten, None, operator, dict(call.tags))
        )
        advance(call, Trigger.END, "OriginateResponse")
        self._out.append(CallEnded(call_id, ts, call.summary(CallResult.FAILED)))
        self._remember(call_id)

    # ------------------------------------------------------------------ decisions

    def _decide_direction(self, call: Call, final: bool) -> bool:
        """Set direction/numbers once they are known (or, ``final``, best known)."""
        if call.direction is not None:
            return True
        root = self._chans.get(call.root) if call.root is not None else None
        if root is None:
            if not final:
                return False
            call.direction = Direction.OUTBOUND if call.originate_exten else Direction.INTERNAL
            call.external_number = call.originate_exten
            return True
        target = call.first_target
        if root.kind is Kind.PHONE:
            call.operator = root.ext
            if target is None and not final:
                return False
            if target is not None and target[0] == Kind.TRUNK.value:
                call.direction = Direction.OUTBOUND
                call.external_number = target[1]
            elif target is None and root.caller_less:
                call.direction = Direction.OUTBOUND
                call.external_number = call.originate_exten
            else:
                call.direction = Direction.INTERNAL
            return True
        if root.caller_less or root.placed:
            # A trunk leg we placed (callback): outbound; the operator is the phone it
            # reaches.
            if target is None and not final:
                return False
            call.direction = Direction.OUTBOUND
            call.external_number = root.label or call.originate_exten
            if target is not None and target[0] == Kind.PHONE.value:
                call.operator = target[1]
            return True
        call.direction = Direction.INBOUND
        call.external_number = root.cid_num or None
        call.did = root.exten if is_number(root.exten) else call.did_var
        return True

    def _maybe_start(self, call: Call, ts: float) -> None:
        if call.state is CallState.PENDING and self._decide_direction(call, final=False):
            self._start(call, ts)

    def _start(self, call: Call, ts: float, force: bool = False) -> None:
        if force:
            self._decide_direction(call, final=True)
        if not advance(call, Trigger.START, "start"):
            return
        assert call.direction is not None
        self._out.append(
            CallStarted(
                call.call_id,
                call.start,
                call.direction,
                call.external_number,
                call.did,
                call.operator,
                dict(call.tags),
            )
        )
        for path in call.recordings:
            self._out.append(RecordingKnown(call.call_id, ts, path))

    def _connected(self, dialer_uid: str | None) -> bool:
        """Whether a leg dialed by ``dialer_uid`` is joined all the way up to the caller."""
        for _ in range(16):  # Local chains are short; a cycle must not hang us
            if dialer_uid is None:
                return True
            dialer = self._chans.get(dialer_uid)
            if dialer is None or dialer.kind is not Kind.LOCAL or dialer.name.endswith(";1"):
                return True
            peer_name = local_peer_name(dialer.name)
            peer_uid = self._by_name.get(peer_name) if peer_name else None
            peer = self._chans.get(peer_uid) if peer_uid else None
            if peer is None:
                peer = self._peer_in_call(dialer)
            if peer is None:
                return True  # the ;1 half is gone or unseen: trust the answer
            if peer.answered_at is None and not peer.agent_connected:
                return False
            if peer.caller_less:
                return True
            dialer_uid = peer.dialer
        return True

    def _peer_in_call(self, local: Chan) -> Chan | None:
        peer_name = local_peer_name(local.name)
        call = self._calls.get(local.call_id)
        if call is None or peer_name is None:
            return None
        for uid in call.chans:
            chan = self._chans.get(uid)
            if chan is not None and chan.name == peer_name:
                return chan
        return None

    def _evaluate_answers(self, call: Call) -> None:
        candidates = []
        for uid in call.chans:
            chan = self._chans.get(uid)
            if (
                chan is not None
                and not chan.confirmed
                and chan.answered_at is not None
                and chan.kind is not Kind.LOCAL
                and not chan.caller_less
                and uid != call.root
            ):
                candidates.append(chan)
        candidates.sort(key=lambda c: c.answered_at or 0.0)
        for chan in candidates:
            if self._connected(chan.dialer):
                chan.confirmed = True
                self._device_answered(call, chan)

    def _device_answered(self, call: Call, chan: Chan) -> None:
        at = chan.answered_at if chan.answered_at is not None else self._last_ts
        self._decide_direction(call, final=True)
        if call.state is CallState.PENDING:
            self._start(call, at)
        if chan.kind is Kind.PHONE:
            if call.direction is Direction.OUTBOUND:
                if call.answer is not None:
                    call.holder = chan.ext  # e.g. the target of a transfer took it
                return
            if call.answer is None:
                self._answered(call, at, chan.ext, None)
            else:
                call.holder = chan.ext
            return
        # A trunk leg answered.
        if call.direction is Direction.OUTBOUND:
            if call.answer is None:
                self._answered(call, at, call.operator, None)
            return
        owner = self._forward_owner(call, chan)
        if call.answer is None:
            self._answered(call, at, owner, chan.label)
        else:
            call.holder = owner

    def _answered(self, call: Call, at: float, ext: str | None, device: str | None) -> None:
        call.answer = at
        call.answered_by = ext
        call.answered_on = device
        call.holder = ext
        if advance(call, Trigger.ANSWER, "answer"):
            self._out.append(CallAnswered(call.call_id, at, ext, device))

    def _forward_owner(self, call: Call, device: Chan) -> str | None:
        """The extension whose forward (follow-me to a mobile) a trunk leg is."""
        uid = device.dialer
        for _ in range(16):
            chan = self._chans.get(uid) if uid else None
            if chan is None or chan.kind is not Kind.LOCAL:
                break
            exten = chan.name[6:].split("@", 1)[0]
            if exten.startswith("FMPR-"):
                return exten[5:]
            peer = self._peer_in_call(chan) if chan.name.endswith(";2") else None
            uid = peer.dialer if peer is not None else chan.dialer
        if call.fm_owner:
            return call.fm_owner
        for uid in call.chans:
            chan = self._chans.get(uid)
            if chan is not None and chan.kind is Kind.LOCAL:
                exten = chan.name[6:].split("@", 1)[0]
                if exten.startswith("FMPR-"):
                    return exten[5:]
        return None

    def _party_of(self, chan: Chan) -> tuple[str | None, bool]:
        """(extension or number, whether it is an extension) behind a channel.

        A Local half resolves to the device its pair dialed (answered or still up), else
        to the exten it was made for (``Local/103@from-internal-xfer`` → 103).
        """
        if chan.kind is Kind.PHONE:
            return chan.ext, True
        if chan.kind is Kind.TRUNK:
            return chan.label, False
        call = self._calls.get(chan.call_id)
        peer = self._peer_in_call(chan)
        for half in (chan, peer):
            if half is None or call is None:
                continue
            for uid in call.chans:
                dev = self._chans.get(uid)
                if (
                    dev is not None
                    and dev.dialer == half.uid
                    and dev.kind is not Kind.LOCAL
                    and (dev.answered_at is not None or dev.alive)
                ):
                    if dev.kind is Kind.PHONE:
                        return dev.ext, True
                    return dev.label, False
        exten = chan.name[6:].split("@", 1)[0]
        return exten or None, bool(exten)

    def _update_ringing(self, call: Call, ts: float) -> None:
        labels: list[str] = []
        skip_trunks = call.direction is Direction.OUTBOUND
        for uid in call.chans:
            chan = self._chans.get(uid)
            if (
                chan is not None
                and chan.ringing
                and chan.alive
                and chan.label
                and not (skip_trunks and chan.kind is Kind.TRUNK)
                and chan.label not in labels
            ):
                labels.append(chan.label)
        ringing = tuple(labels)
        if ringing != call.ringing:
            call.ringing = ringing
            if call.started and call.state is not CallState.ENDED:
                self._out.append(RingingChanged(call.call_id, ts, ringing))

    def _result(self, call: Call) -> CallResult:
        if call.answer is not None:
            return CallResult.ANSWERED
        root = self._chans.get(call.root) if call.root else None
        # Our Originate failed (Asterisk said so) or never got its first leg answered.
        if call.originate_failed or (
            root is not None and root.caller_less and root.answered_at is None
        ):
            return CallResult.FAILED
        statuses = []
        for uid in call.chans:
            chan = self._chans.get(uid)
            if (
                chan is not None
                and chan.dialed
                and not chan.caller_less
                and chan.dial_status
                and chan.kind is not Kind.LOCAL
            ):
                statuses.append(chan.dial_status)
        if call.direction is Direction.INBOUND:
            if statuses and all(s == "BUSY" for s in statuses):
                return CallResult.BUSY
            return CallResult.MISSED
        if statuses and all(s == "BUSY" for s in statuses):
            return CallResult.BUSY
        if not statuses or all(s in _FAIL_STATUSES for s in statuses):
            return CallResult.FAILED
        return CallResult.NOT_ANSWERED

    def _hangup_cause(self, call: Call) -> int | None:
        root = self._chans.get(call.root) if call.root else None
        if call.direction is not Direction.OUTBOUND:
            return root.cause if root is not None else None
        if root is not None and root.kind is Kind.TRUNK:
            return root.cause
        first_trunk: Chan | None = None
        for uid in call.chans:
            chan = self._chans.get(uid)
            if chan is None or chan.kind is not Kind.TRUNK:
                continue
            if chan.confirmed:
                return chan.cause
            if first_trunk is None:
                first_trunk = chan
        if first_trunk is not None:
            return first_trunk.cause
        # No external party ever had a channel (e.g. a click-to-call whose operator did
        # not answer): there is no cause to report.
        return None

    def _end(self, call: Call, ts: float) -> None:
        if call.state is CallState.PENDING:
            self._start(call, ts, force=True)
        if call.ringing:
            call.ringing = ()
        call.end = ts
        call.hangup_cause = self._hangup_cause(call)
        if call.hangup_cause is None:
            # No external party: the first leg's cause is what failed (operator busy).
            root = self._chans.get(call.root) if call.root else None
            call.failure_cause = root.cause if root is not None else None
        result = self._result(call)
        if advance(call, Trigger.END, "last hangup"):
            self._out.append(CallEnded(call.call_id, ts, call.summary(result)))
        self._forget(call)

    def _forget(self, call: Call) -> None:
        self._calls.pop(call.call_id, None)
        for linkedid in call.linkedids:
            if self._by_linkedid.get(linkedid) == call.call_id:
                del self._by_linkedid[linkedid]
            self._remember(linkedid)
        for uid in call.chans:
            chan = self._chans.pop(uid, None)
            self._remember(uid)
            if chan is not None:
                if self._by_name.get(chan.name) == uid:
                    del self._by_name[chan.name]
                if chan.caller_less:
                    self._recent_originate[originate_base(chan.name.rsplit("-", 1)[0])] = (
                        call.call_id
                    )
                    if len(self._recent_originate) > 1000:
                        self._recent_originate.popitem(last=False)

    # ------------------------------------------------------------------ resync

    def _adopt_item(self, item: AmiMessage, at: float) -> Chan | None:
        uid = item.get("Uniqueid") or ""
        chan = self._chans.get(uid)
        linkedid = item.get("Linkedid") or uid
        if chan is not None:
            if linkedid != chan.linkedid:
                self._relink(chan, linkedid, at)
            return chan
        if uid in self._recent:
            return None
        created = at - _duration(item.get("Duration"))
        chan = self._new_chan(
            uid,
            item.get("Channel") or uid,
            linkedid,
            created,
            _int(item.get("ChannelState")) or 0,
            item.get("CallerIDNum") or "",
            item.get("Exten") or "",
        )
        call = self._calls[chan.call_id]
        if uid == linkedid and chan.kind is not Kind.LOCAL:
            call.root = uid  # the channel that started the linkedid is the first one
        if created < call.start:
            call.start = created
        return chan

    def _resync_call(self, call: Call, at: float) -> None:
        root_uid = call.root
        for uid in list(call.chans):
            chan = self._chans.get(uid)
            if chan is None or not chan.alive or uid == root_uid:
                continue
            if chan.kind is Kind.LOCAL:
                if chan.state == 6 and chan.answered_at is None and chan.name.endswith(";1"):
                    chan.answered_at = at
                continue
            if not chan.dialed:
                # Adopted from the snapshot: it was dialed while we were away.
                chan.dialed = True
                chan.label = chan.ext if chan.kind is Kind.PHONE else (chan.label or None)
                if chan.label and chan.label not in call.rang:
                    call.rang.append(chan.label)
                if call.first_target is None:
                    call.first_target = (chan.kind.value, chan.label)
            if chan.state == 6 and chan.answered_at is None:
                chan.answered_at = at
                chan.dial_status = "ANSWER"
            chan.ringing = chan.state in (5, 4) and chan.answered_at is None
        self._maybe_start(call, at)
        self._evaluate_answers(call)
        self._update_ringing(call, at)
        if not call.live:
            self._end(call, at)


def _duration(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        parts = [int(p) for p in value.split(":")]
    except ValueError:
        return 0.0
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + part
    return float(seconds)


def track_all(pbx: PbxConfig, messages: Iterable[AmiMessage]) -> list[CallEvent]:
    """Run a fresh tracker over ``messages``; every event, in order."""
    tracker = CallTracker(pbx)
    out: list[CallEvent] = []
    for msg in messages:
        out.extend(tracker.feed(msg))
    return out
