"""Playing originated calls (click-to-call) in the shapes of the shared traces.

An ``Originate`` with ``Channel: PJSIP/<ext>`` or ``Local/<ext>@<context>`` and
``Context``/``Exten`` plays, re-keyed, with the operator's extension and the dialed
number put in place of the recorded ones:

* ``answered`` — trace ``08-click-to-call`` (the phone rings and answers, the number
  is dialled through the trunk and answers, the operator hangs up);
* ``busy`` — the failed Originate of trace ``13-ami-actions`` (the phone answers 486:
  ``OriginateResponse`` Failure, ``Reason: 0``, ``Uniqueid: <unknown>``, Hangup cause 17);
* ``no_answer`` — that shape after ``Timeout`` ms, with ``DialStatus: NOANSWER``,
  cause 19 and ``Reason: 3``;
* ``failed`` — only the ``OriginateResponse`` Failure (``Reason: 0``), as for an
  unreachable endpoint.

``ChannelId`` becomes the Uniqueid (and Linkedid) of the first channel. Each
``Variable:`` shows up as a ``VarSet`` on the originated channel; inherited ones
(``_X``/``__X``) also on every later channel of the call, right after its
``Newchannel``. Simplifications: the ``Local/`` form plays the phone channel of the
``PJSIP/`` form (only the ``OriginateResponse`` names the Local ``;1`` channel) and
``OtherChannelId`` is recorded but not used.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from callbridge.pbx.ami.framing import AmiFramer, AmiMessage

from . import actions as act
from .rekey import Rekey, TraceTemplate
from .scenario import Scenario, async_events
from .timeline import Instance

if TYPE_CHECKING:
    from .server import AsteriskSimulator
    from .session import Session

__all__ = ["Originator", "split_variables"]

_TRACES = Path(__file__).resolve().parents[3] / "tests" / "traces" / "asterisk-22.10.1"
_CHANNEL = re.compile(r"^(?P<tech>PJSIP|Local)/(?P<ext>[0-9A-Za-z*#+]+)(?:@(?P<ctx>[\w-]+))?$")

# What the recordings dialled, to be replaced by what was asked.
_ANSWERED = ("08-click-to-call.ami", "101", "74957770000", "1795216847.66")
_BUSY = ("13-ami-actions.ami", "103", "74957770000", "1795216479.21")
_RECORDED_VARIABLES = frozenset({"CRM_CALL_ID", "CRM_USER_ID"})


def split_variables(values: list[str]) -> list[tuple[str, str]]:
    """``Variable:`` headers → (name, value), split on commas outside quotes (ref §1.2)."""
    out: list[tuple[str, str]] = []
    for header in values:
        parts: list[str] = []
        buf: list[str] = []
        depth = 0
        quoted = False
        for ch in header:
            if ch == '"':
                quoted = not quoted
                continue
            if not quoted and ch in "([":
                depth += 1
            elif not quoted and ch in ")]" and depth:
                depth -= 1
            if ch == "," and not quoted and not depth:
                parts.append("".join(buf))
                buf = []
                continue
            buf.append(ch)
        parts.append("".join(buf))
        for part in parts:
            name, sep, value = part.partition("=")
            if sep and name.strip():
                out.append((name.strip(), value))
    return out


class Originator:
    """Turns Originate actions into calls on the simulator's timeline."""

    def __init__(self, sim: AsteriskSimulator, traces_dir: Path = _TRACES) -> None:
        self.sim = sim
        self._answered = self._shape(traces_dir, _ANSWERED)
        self._busy = self._shape(traces_dir, _BUSY)

    @staticmethod
    def _shape(folder: Path, spec: tuple[str, str, str, str]) -> list[tuple[float, AmiMessage]]:
        name, _, _, linkedid = spec
        events = async_events(AmiFramer().feed((folder / name).read_bytes()))
        chan_names: set[str] = set()
        for m in events:
            if m.get("Linkedid") == linkedid or m.get("LinkedID") == linkedid:
                for key in ("Channel", "DestChannel"):
                    value = m.get(key)
                    if value:
                        chan_names.add(value)
        keep: list[AmiMessage] = []
        for m in events:
            if m.event == "OriginateResponse" or any(
                v == linkedid or v in chan_names for _, v in m.items()
            ):
                keep.append(m)
        t0 = float(keep[0]["Timestamp"])
        return [(float(m["Timestamp"]) - t0, m) for m in keep]

    def originate(self, msg: AmiMessage, session: Session) -> list[AmiMessage]:
        aid = msg.get("ActionID")
        channel = msg.get("Channel") or ""
        m = _CHANNEL.match(channel)
        if m is None:
            return [act.error(aid, "Invalid channel")]
        exten = msg.get("Exten") or ""
        if not re.fullmatch(r"\+?[0-9*#]+", exten):
            return [act.error(aid, "Extension does not exist.")]
        timeline = self.sim.timeline
        if timeline is None:
            return [act.error(aid, "Originate failed")]
        outcome = self.sim.originate_outcome
        is_async = (msg.get("Async") or "").lower() in ("true", "yes", "1", "on")
        if not is_async and outcome != "answered":
            return [act.error(aid, "Originate failed")]
        timeout = _number(msg.get("Timeout"), 30000.0) / 1000.0
        variables = split_variables(msg.get_all("Variable"))
        if outcome == "answered":
            spec, shape = _ANSWERED, self._answered
        else:
            spec, shape = _BUSY, self._busy
        messages = _prepare(shape, outcome, msg, m, variables, timeout)
        _, rec_ext, rec_number, rec_uid = spec
        scenario = _scenario(messages, [rec_ext, rec_number])
        offset = self.sim.position
        rk = Rekey(
            timeline.ids,
            shift=timeline.epoch + offset - scenario.t0,
            numbers={rec_ext: m["ext"], rec_number: exten},
            ref_time=scenario.t0,
        )
        channel_id = msg.get("ChannelId")
        if channel_id and outcome != "failed":
            rk.pin("uid", rec_uid, channel_id)
        timeline.add(Instance(scenario, rk, offset, kind="originate"))
        self.sim.notify()
        return [act.success(aid, ("Message", "Originate successfully queued"))]


def _number(value: str | None, default: float) -> float:
    try:
        return float(value) if value else default
    except ValueError:
        return default


def _prepare(
    shape: list[tuple[float, AmiMessage]],
    outcome: str,
    action: AmiMessage,
    chan: re.Match[str],
    variables: list[tuple[str, str]],
    timeout: float,
) -> list[tuple[float, AmiMessage]]:
    aid = action.get("ActionID")
    out: list[tuple[float, AmiMessage]] = []
    first_channel: str | None = None
    vars_done = False
    delay = 0.0
    for t, msg in shape:
        event = msg.event
        if outcome == "failed" and event != "OriginateResponse":
            continue
        if outcome == "no_answer" and event == "DialEnd":
            delay = timeout  # the phone rang until the Originate's Timeout
        pairs = msg.items()
        if delay:
            pairs = [(k, f"{float(v) + delay:.6f}" if k == "Timestamp" else v) for k, v in pairs]
        if event == "Newchannel" and first_channel is None:
            first_channel = msg.get("Channel")
        if event == "VarSet" and msg.get("Variable") in _RECORDED_VARIABLES:
            if not vars_done:
                vars_done = True
                out.extend((t, _varset(pairs, name, value)) for name, value in variables)
            continue
        if event == "OriginateResponse":
            pairs = _originate_response(pairs, outcome, action, chan, aid)
        elif outcome == "no_answer":
            pairs = [_no_answer(k, v) for k, v in pairs]
        out.append((t + delay, AmiMessage(pairs)))
        if event == "Newchannel" and msg.get("Channel") != first_channel:
            inherited = [(n, v) for n, v in variables if n.startswith("_")]
            out.extend((t + delay, _varset(pairs, n, v)) for n, v in inherited)
        if event == "Newexten" and not vars_done and msg.get("Channel") == first_channel:
            # The busy shape recorded no variables: put them after the first dialplan step.
            vars_done = True
            out.extend((t + delay, _varset(pairs, n, v)) for n, v in variables)
    return out


def _varset(block: list[tuple[str, str]], name: str, value: str) -> AmiMessage:
    pairs: list[tuple[str, str]] = [("Event", "VarSet"), ("Privilege", "dialplan,all")]
    for key, val in block:
        if key in ("Event", "Privilege", "Variable", "Value", "Extension"):
            continue
        if key in ("Application", "AppData"):
            continue
        pairs.append((key, val))
    # Asterisk C-escapes VarSet values (reference §1.7).
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    pairs += [("Variable", name), ("Value", escaped)]
    return AmiMessage(pairs)


def _originate_response(
    pairs: list[tuple[str, str]],
    outcome: str,
    action: AmiMessage,
    chan: re.Match[str],
    aid: str | None,
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        if key == "ActionID":
            if aid is not None:
                out.append((key, aid))
            continue
        if key == "Channel" and (outcome != "answered" or chan["tech"] == "Local"):
            # Failures name the requested string; a Local first leg its ;1 half.
            value = action.get("Channel") or value
            if outcome == "answered":
                value = f"{value}-0000ffff;1"
        elif key == "Reason":
            value = {"answered": "4", "no_answer": "3"}.get(outcome, "0")
        elif key == "Context":
            value = action.get("Context") or value
        out.append((key, value))
    return out


def _no_answer(key: str, value: str) -> tuple[str, str]:
    if key == "DialStatus" and value == "BUSY":
        return key, "NOANSWER"
    if key == "Cause" and value == "17":
        return key, "19"
    if key == "Cause-txt" and value == "User busy":
        return key, "No user answer"
    if key == "Disposition" and value == "BUSY":
        return key, "NO ANSWER"
    return key, value


def _scenario(timed: list[tuple[float, AmiMessage]], numbers: list[str]) -> Scenario:
    timed.sort(key=lambda pair: pair[0])
    messages = [m for _, m in timed]
    t0 = float(messages[0].get("Timestamp") or 0.0) - timed[0][0]
    template = TraceTemplate(messages, numbers)
    return Scenario(
        name="originate",
        path=_TRACES,
        times=[t for t, _ in timed],
        template=template,
        t0=t0,
    )
