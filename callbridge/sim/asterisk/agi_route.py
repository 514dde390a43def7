"""Inbound calls to FastAGI-routed DIDs: ask callbridge where they go, then play them there.

The traces' PBX routes DIDs 74957654325 and 74957654327 through FastAGI (scenarios
``12-fastagi-route`` and ``12b-fastagi-dial``); both recordings ring extension 102. With
an ``agi`` address the simulator plays such a call up to its first ``AGIExecStart`` (the
moment Asterisk ran ``AGI()``), holds it there, and runs callbridge's routing snippet
(``callbridge dialplan``'s context, interpreted by :mod:`.dialplan`) against the FastAGI
server, as Asterisk would. The call then goes on in the recorded shape, re-targeted:

* the extension the route chose replaces the recorded ``102`` everywhere (channel names,
  ``DialString``, CDR/CEL fields — the way :mod:`.originate` puts the operator's extension
  in place of the recorded one) and that extension's name replaces "Olga Smirnova";
* when the route gave no extension (callbridge down, slow, the caller unknown, or a
  queue/group/IVR answer the simulator has no recording for) it plays to the fallback
  extension instead — the route's normal destination of the simulated PBX;
* the recorded AGI exchange on AMI is replaced by the real one: ``AGIExecStart`` /
  ``AGIExecEnd`` per command (``CommandId``, ``Command``, ``ResultCode``, ``Result``), the
  ``VarSet`` of each ``SET VARIABLE`` between them, a ``NewCallerid`` when the script set
  ``CALLERID(name)`` (later events then carry that name for the caller), and the
  ``AGISTATUS`` the dialplan saw.

Simplifications: the dialplan steps of the snippet itself (its ``Newexten``/``VarSet``
events) are not played — the recorded ``agi-route`` steps are; every ``Dial()`` of a
``PJSIP/`` extension is taken as answered (the recordings are answered calls), any other
target as not answered.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callbridge.pbx.ami.framing import AmiMessage

from .dialplan import AgiOutcome, Channel, DialplanRunner, parse_agi_args, parse_dialplan
from .rekey import Segments
from .scenario import Scenario

__all__ = [
    "DEFAULT_FALLBACK",
    "EXTENSION_NAMES",
    "RECORDED_EXTENSION",
    "ROUTED_DIDS",
    "AgiRouter",
    "Release",
    "RouteResult",
    "gate_index",
    "is_routed",
]

#: DIDs the traces' PBX hands to FastAGI (tests/traces/README.md, "The PBX").
ROUTED_DIDS = frozenset({"74957654325", "74957654327"})
#: The extension the FastAGI recordings ring.
RECORDED_EXTENSION = "102"
#: Caller ID names of the traces' endpoints (config/pjsip.conf).
EXTENSION_NAMES: Mapping[str, str] = {
    "101": "Ivan Petrov",
    "102": "Olga Smirnova",
    "103": "Sergey Volkov",
}
#: Where a routed call goes when the route gives no extension (ext 101 is the
#: destination of the traces' direct DID).
DEFAULT_FALLBACK = "101"

_EXT_IN_TEXT = re.compile(rf"(?<![0-9A-Za-z.]){RECORDED_EXTENSION}(?![0-9A-Za-z])")
_PJSIP = re.compile(r"^PJSIP/([0-9]+)$")
_FINAL_REPLY = re.compile(r"^(\d{3}) ?(.*)$")


def _text(value: str | Segments) -> str:
    """The original text of a compiled template value."""
    if isinstance(value, str):
        return value
    return "".join(seg if isinstance(seg, str) else seg[1] for seg in value)


def is_routed(scenario: Scenario) -> bool:
    """An inbound call to a FastAGI-routed DID that runs ``AGI()``."""
    calls = (scenario.truth or {}).get("calls") or []
    dids = {c.get("did") for c in calls if isinstance(c, dict)}
    return bool(dids & ROUTED_DIDS) and gate_index(scenario) is not None


def gate_index(scenario: Scenario) -> int | None:
    """Index of the scenario's first ``AGIExecStart``: the call waits there for its route."""
    for index, row in enumerate(scenario.template.messages):
        if row and row[0][0] == "Event" and _text(row[0][1]) == "AGIExecStart":
            return index
    return None


def _recorded_agi(scenario: Scenario) -> frozenset[int]:
    """Indices of the recorded AGI exchange: its AGIExec events and the VarSets of the
    variables its ``SET VARIABLE`` commands set (on any channel: ``__X`` is inherited)."""
    rows = [{k: _text(v) for k, v in row} for row in scenario.template.messages]
    names: set[str] = set()
    for row in rows:
        if row.get("Event") == "AGIExecStart":
            words = parse_agi_args(row.get("Command", ""))
            if len(words) >= 3 and [w.upper() for w in words[:2]] == ["SET", "VARIABLE"]:
                names.add(words[2])
    skip = set()
    for index, row in enumerate(rows):
        event = row.get("Event")
        agi = event in ("AGIExecStart", "AGIExecEnd")
        if agi or (event == "VarSet" and row.get("Variable") in names):
            skip.add(index)
    return frozenset(skip)


@dataclass(frozen=True)
class RouteResult:
    """What the routing dialplan decided for one call."""

    caller: str
    did: str
    extension: str
    via: str  # "route" (callbridge chose the extension) | "fallback"
    agi_status: str  # AGISTATUS the dialplan saw ("" when no AGI() ran)
    result: str  # the route script's result variable (found | fallback | …)
    caller_name: str
    exchanges: tuple[AgiOutcome, ...] = ()
    elapsed: float = 0.0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "caller": self.caller,
            "did": self.did,
            "extension": self.extension,
            "via": self.via,
            "agi_status": self.agi_status,
            "result": self.result,
            "caller_name": self.caller_name,
            "commands": [c for x in self.exchanges for c in x.commands],
            "elapsed": round(self.elapsed, 6),
            "error": self.error,
        }


@dataclass
class Release:
    """How a held instance goes on: messages to play first, recorded ones to drop, the
    rewrite of every later message and of the expected result."""

    extra: list[AmiMessage]
    skip: frozenset[int]
    transform: Callable[[AmiMessage], AmiMessage]
    fix_expected: Callable[[Any], Any]


@dataclass
class AgiRouter:
    """Runs callbridge's routing snippet against the FastAGI server at ``address``.

    ``snippet``/``context`` default to what ``callbridge dialplan`` prints for that
    address with default settings.
    """

    address: tuple[str, int]
    fallback_extension: str = DEFAULT_FALLBACK
    snippet: str | None = None
    context: str | None = None
    connect_timeout: float = 2.0
    #: Asterisk has no bound on a FastAGI session; the simulator keeps one so a server
    #: that never closes cannot hold a call forever.
    session_timeout: float = 5.0
    result_variable: str = "CB_RESULT"
    _gates: dict[int, int | None] = field(default_factory=dict, repr=False)
    _skips: dict[int, frozenset[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.fallback_extension.isdigit():
            raise ValueError(
                f"agi fallback extension must be digits, got {self.fallback_extension!r}"
            )
        if self.snippet is None:
            from callbridge.routing.dialplan import render
            from callbridge.routing.settings import RoutingSettings

            settings = RoutingSettings(listen_host=self.address[0], listen_port=self.address[1])
            self.snippet = render(settings)
            self.context = self.context or settings.context
            self.result_variable = settings.variables.result
        if not self.context:
            raise ValueError("agi: a snippet needs the name of its context")
        self.plan = parse_dialplan(self.snippet)

    def gate(self, scenario: Scenario) -> int | None:
        """Where a call of ``scenario`` waits for its route (``None``: not routed)."""
        key = id(scenario)
        if key not in self._gates:
            self._gates[key] = gate_index(scenario) if is_routed(scenario) else None
        return self._gates[key]

    async def route(self, caller: str, did: str, channel: str, uniqueid: str) -> RouteResult:
        """Run the snippet for one call; never raises (a failure is the fallback)."""
        started = time.monotonic()
        chan = Channel(
            caller_num=caller,
            name=channel,
            uniqueid=uniqueid,
            variables={"FROM_DID": did, "DNID": did},
        )
        runner = DialplanRunner(
            self.plan,
            dial=_answer_extensions,
            agi_connect_timeout=self.connect_timeout,
            agi_session_timeout=self.session_timeout,
        )
        assert self.context is not None
        try:
            out = await runner.run(self.context, "s", chan)
        except Exception as exc:  # a broken snippet: the call still goes somewhere
            return RouteResult(
                caller=caller,
                did=did,
                extension=self.fallback_extension,
                via="fallback",
                agi_status="",
                result="",
                caller_name="",
                elapsed=time.monotonic() - started,
                error=f"{type(exc).__name__}: {exc}",
            )
        extension, via = self.fallback_extension, "fallback"
        if out.kind == "answered" and out.dials:
            m = _PJSIP.match(out.dials[-1].target)
            if m:
                extension, via = m.group(1), "route"
        return RouteResult(
            caller=caller,
            did=did,
            extension=extension,
            via=via,
            agi_status=chan.variables.get("AGISTATUS", ""),
            result=chan.variables.get(self.result_variable, ""),
            caller_name=chan.caller_name,
            exchanges=tuple(out.agi),
            elapsed=time.monotonic() - started,
            error="; ".join(x.error for x in out.agi if x.error),
        )

    def release(self, scenario: Scenario, block: AmiMessage, result: RouteResult) -> Release:
        """The rewrite of a held call of ``scenario`` whose gate message is ``block``."""
        key = id(scenario)
        if key not in self._skips:
            self._skips[key] = _recorded_agi(scenario)
        extra = exchange_events(block, result)
        name_to = EXTENSION_NAMES.get(result.extension, result.extension)
        name_from = EXTENSION_NAMES[RECORDED_EXTENSION]
        ext = result.extension

        def text(value: str) -> str:
            if ext != RECORDED_EXTENSION:
                value = _EXT_IN_TEXT.sub(ext, value)
                value = value.replace(name_from, name_to)
            return value

        def transform(msg: AmiMessage) -> AmiMessage:
            pairs = [(k, text(v)) for k, v in msg.items()]
            if result.caller_name:
                pairs = _with_caller_name(pairs, result.caller, result.caller_name)
            if msg.event == "VarSet" and msg.get("Variable") == "AGISTATUS" and result.agi_status:
                pairs = [(k, result.agi_status if k == "Value" else v) for k, v in pairs]
            return AmiMessage(pairs)

        def fix_expected(obj: Any) -> Any:
            if isinstance(obj, str):
                return text(obj)
            if isinstance(obj, dict):
                return {k: fix_expected(v) for k, v in obj.items()}
            if isinstance(obj, list):
                return [fix_expected(v) for v in obj]
            return obj

        return Release(extra, self._skips[key], transform, fix_expected)


def _answer_extensions(target: str, timeout: str) -> str:
    return "ANSWER" if _PJSIP.match(target) else "NOANSWER"


def _with_caller_name(
    pairs: list[tuple[str, str]], caller: str, name: str
) -> list[tuple[str, str]]:
    """Every ``…CallerIDNum``/``…ConnectedLineNum`` equal to the caller gets ``name`` in
    its ``…Name`` sibling (the caller's channel, and the phones' connected line)."""
    names: set[str] = set()
    for key, value in pairs:
        low = key.lower()
        if value == caller and low.endswith(("calleridnum", "connectedlinenum")):
            names.add(low[:-3] + "name")
    if not names:
        return pairs
    return [(k, name if k.lower() in names else v) for k, v in pairs]


_RESULTS = {200: "Success", 510: "Invalid or unknown command", 520: "Usage"}
_AGI_KEYS = frozenset({"Event", "Privilege", "CommandId", "Command", "ResultCode", "Result"})
_PRESENTATION = ("CID-CallingPres", "0 (Presentation Allowed, Not Screened)")


def _pair_replies(outcome: AgiOutcome) -> list[tuple[str, str]]:
    """(command, final reply line) for each command of one session."""
    lines = iter(outcome.replies)
    out: list[tuple[str, str]] = []
    for command in outcome.commands:
        final = ""
        for line in lines:
            # "HANGUP" (written inline) and "520-…" usage lines come before the reply.
            if _FINAL_REPLY.match(line) and line[3:4] != "-":
                final = line
                break
        out.append((command, final))
    return out


def _event(
    name: str, privilege: str, channel: list[tuple[str, str]], *rest: tuple[str, str]
) -> AmiMessage:
    return AmiMessage([("Event", name), ("Privilege", privilege), *channel, *rest])


def exchange_events(block: AmiMessage, result: RouteResult) -> list[AmiMessage]:
    """The AMI events of ``result``'s FastAGI exchange, with the channel headers of
    ``block`` (the recorded first ``AGIExecStart``)."""
    channel = [(k, v) for k, v in block.items() if k not in _AGI_KEYS]
    rng = random.Random(block.get("Uniqueid") or "")
    out: list[AmiMessage] = []
    for outcome in result.exchanges:
        for command, reply in _pair_replies(outcome):
            ids = (("CommandId", str(rng.randrange(10**8, 2**31))), ("Command", command))
            out.append(_event("AGIExecStart", "agi,all", channel, *ids))
            m = _FINAL_REPLY.match(reply)
            code = int(m.group(1)) if m else 0
            words = parse_agi_args(command)
            is_set = len(words) == 4 and [w.upper() for w in words[:2]] == ["SET", "VARIABLE"]
            if code == 200 and is_set:
                name, value = words[2], words[3]
                if name.upper() == "CALLERID(NAME)":
                    # A function, not a variable: Asterisk reports the new caller ID.
                    channel = [(k, value if k == "CallerIDName" else v) for k, v in channel]
                    out.append(_event("NewCallerid", "call,all", channel, _PRESENTATION))
                else:
                    # VarSet values are C-escaped (reference §1.7).
                    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
                    out.append(
                        _event(
                            "VarSet",
                            "dialplan,all",
                            channel,
                            ("Variable", name),
                            ("Value", escaped),
                        )
                    )
            text = _RESULTS.get(code) or (m.group(2) if m else "")
            out.append(
                _event(
                    "AGIExecEnd",
                    "agi,all",
                    channel,
                    *ids,
                    ("ResultCode", str(code)),
                    ("Result", text),
                )
            )
    return out
