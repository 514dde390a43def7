"""Our own Originates: matching ``OriginateResponse`` to the leg it placed.

The response names the dial target (``PJSIP/103``), not the channel, and may come after
the leg hung up; a failure that never made a channel is still a call that failed, and
is reported as one (started and ended at once) so the CRM hears of it.
"""

from __future__ import annotations

from callbridge.calls import CallEnded, CallResult, CallStarted, Direction
from callbridge.pbx.ami.framing import AmiMessage

from .book import Book
from .channels import Chan, originate_base, phone_of_dial_target
from .state import Call, Trigger, advance

__all__ = ["CHANNELLESS_PREFIX", "on_originate_response"]

#: The call id of an Originate that failed before any channel existed: this prefix, then
#: the Originate's ActionID (so whoever sent it can recognise its own failure).
CHANNELLESS_PREFIX = "originate-"


def on_originate_response(b: Book, msg: AmiMessage, ts: float) -> None:
    channel = msg.get("Channel") or ""
    exten = msg.get("Exten") or None
    failed = (msg.get("Response") or "").lower() == "failure"
    uid = msg.get("Uniqueid")
    leg: Chan | None = None
    if uid and uid != "<unknown>":
        leg = b.chans.get(uid)
    if leg is None and channel:
        leg = _originate_leg(b, channel)
    if leg is not None:
        call = b.calls.get(leg.call_id)
        if call is not None:
            call.originate_exten = exten
            call.originate_failed = call.originate_failed or failed
        return
    if channel and originate_base(channel) in b.recent_originate:
        return  # the leg's call already ended (and was reported failed)
    if failed:
        _channelless_failure(b, msg, channel, exten, ts)


def _originate_leg(b: Book, channel: str) -> Chan | None:
    """The oldest live leg an Originate of ``channel`` placed."""
    base = originate_base(channel) + "-"
    best: Chan | None = None
    for name, uid in b.by_name.items():
        if name.startswith(base):
            chan = b.chans[uid]
            if chan.caller_less and (best is None or chan.created < best.created):
                best = chan
    return best


def _channelless_failure(
    b: Book, msg: AmiMessage, channel: str, exten: str | None, ts: float
) -> None:
    b.channelless += 1
    action = msg.get("ActionID")
    call_id = (
        f"{CHANNELLESS_PREFIX}{action}"
        if action
        else f"{CHANNELLESS_PREFIX}{ts:.6f}-{b.channelless}"
    )
    operator = phone_of_dial_target(b.pbx, channel)
    call = Call(call_id=call_id, start=ts)
    call.direction = Direction.OUTBOUND
    call.operator = operator
    call.external_number = exten
    call.originate_failed = True
    call.end = ts
    advance(call, Trigger.START, "OriginateResponse")
    b.out.append(
        CallStarted(call_id, ts, Direction.OUTBOUND, exten, None, operator, dict(call.tags))
    )
    advance(call, Trigger.END, "OriginateResponse")
    b.out.append(CallEnded(call_id, ts, call.summary(CallResult.FAILED)))
    b.remember(call_id)
