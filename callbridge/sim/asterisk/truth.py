"""Ground truth of a recorded scenario (``*.truth.json``) as expected tracker results.

A trace's ``truth.json`` describes its business calls in words ("mobile 79161234567
(follow-me of 101)", "missed (queue abandoned)"); the tracker prints them in the JSON
schema of ``callbridge trace calls`` (:meth:`callbridge.calls.CallSummary.to_json_obj`).
:func:`expected_calls` maps the first onto the second, so tests, the simulator's
``GET /_sim/expected`` and the tracker speak one schema.

Compared keys (:data:`COMPARED_KEYS`): every key of the schema. ``hangup_cause`` is
present in an expected call only when the truth's channel list lets us derive it (the
external party's channel, or the caller's for internal calls); when it is absent, compare
with :func:`comparable`, which drops from the actual result the keys the expected one
does not carry.

Mapping (tracker issue, item 5): direction = first word of the truth's; ``answered_by``
"external party" = the operator, "mobile N (… of E)" = E with ``answered_on`` N,
"E (pickup of X)" = E; ``final_operator`` = the truth's, else the answerer; ``result`` =
the leading words ("missed (queue abandoned)" → missed, "not answered" → not_answered,
"failed (…)" → failed); transfers keep type/from/to; times are ``timing.*_ts``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["COMPARED_KEYS", "TruthError", "comparable", "expected_call", "expected_calls"]

#: Keys of an expected call, in the order ``trace calls`` prints them.
COMPARED_KEYS: tuple[str, ...] = (
    "linkedid",
    "direction",
    "external_number",
    "did",
    "operator",
    "rang",
    "answered",
    "answered_by",
    "answered_on",
    "final_operator",
    "result",
    "transfers",
    "start",
    "answer",
    "end",
    "recordings",
    "hangup_cause",
)

_DIRECTIONS = ("inbound", "outbound", "internal")
_RESULTS = {
    "answered": "answered",
    "missed": "missed",
    "busy": "busy",
    "not answered": "not_answered",
    "not_answered": "not_answered",
    "failed": "failed",
}
_MOBILE = re.compile(r"^mobile\s+(?P<device>\S+)\s+\(.*\bof\s+(?P<ext>[^\s)]+)\)\s*$")
_PICKUP = re.compile(r"^(?P<ext>\S+)\s+\(pickup of\s+[^)]*\)\s*$")
# Same default as callbridge.config.PbxConfig.phone_channel: numeric PJSIP/SIP/IAX2 endpoint.
_PHONE = re.compile(r"^(?:PJSIP|SIP|IAX2)/\d+-[0-9a-fA-F]+$")


class TruthError(ValueError):
    """A truth.json entry this mapping does not understand (names the call and the field)."""


def expected_calls(truth: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every business call of a scenario's truth, as ``trace calls`` should print it."""
    calls = truth.get("calls")
    if not isinstance(calls, list):
        raise TruthError(f"truth {truth.get('scenario', '?')!r}: 'calls' is not a list")
    return [expected_call(call) for call in calls]


def expected_call(call: Mapping[str, Any]) -> dict[str, Any]:
    """One truth call → one expected tracker result (see the module docstring)."""
    where = f"truth call {call.get('linkedid', '?')!r}"
    direction = _direction(call, where)
    operator = _opt_str(call.get("operator"))
    answered_by, answered_on = _answerer(call.get("answered_by"), operator, where)
    final = _opt_str(call.get("final_operator")) or answered_by
    timing = call.get("timing")
    if not isinstance(timing, Mapping):
        raise TruthError(f"{where}: 'timing' missing")
    out: dict[str, Any] = {
        "linkedid": str(call["linkedid"]),
        "direction": direction,
        "external_number": _opt_str(call.get("external_number")),
        "did": _opt_str(call.get("did")) if direction == "inbound" else None,
        "operator": operator if direction != "inbound" else None,
        "rang": [str(r) for r in call.get("rang", [])],
        "answered": answered_by is not None,
        "answered_by": answered_by,
        "answered_on": answered_on,
        "final_operator": final,
        "result": _result(call.get("result"), where),
        "transfers": [
            {"type": str(t["type"]), "from": _opt_str(t.get("from")), "to": _opt_str(t.get("to"))}
            for t in call.get("transfers", [])
        ],
        "start": _opt_float(timing.get("call_start_ts")),
        "answer": _opt_float(timing.get("answered_ts")),
        "end": _opt_float(timing.get("call_end_ts")),
        "recordings": [str(p) for p in call.get("recording_files", [])],
    }
    cause = _hangup_cause(call.get("channels", []), direction)
    if cause is not None:
        out["hangup_cause"] = cause
    return out


def comparable(actual: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """``actual`` restricted to the keys ``expected`` carries (``hangup_cause`` may be absent)."""
    return {key: actual.get(key) for key in COMPARED_KEYS if key in expected}


def _direction(call: Mapping[str, Any], where: str) -> str:
    text = str(call.get("direction", "")).strip()
    first = text.split()[0].lower() if text else ""
    if first not in _DIRECTIONS:
        raise TruthError(f"{where}: direction {text!r} does not start with one of {_DIRECTIONS}")
    return first


def _answerer(value: Any, operator: str | None, where: str) -> tuple[str | None, str | None]:
    if value is None:
        return None, None
    text = str(value).strip()
    if text == "external party":
        if operator is None:
            raise TruthError(f"{where}: answered_by 'external party' but no operator")
        return operator, None
    mobile = _MOBILE.match(text)
    if mobile:
        return mobile["ext"], mobile["device"]
    pickup = _PICKUP.match(text)
    if pickup:
        return pickup["ext"], None
    if " " in text:
        raise TruthError(f"{where}: answered_by {text!r} is not a form this mapping knows")
    return text, None


def _result(value: Any, where: str) -> str:
    text = str(value or "").strip().lower()
    # Leading words: "missed (queue abandoned)" → "missed", "failed (103 busy)" → "failed".
    lead = text.split("(", 1)[0].strip()
    if lead not in _RESULTS:
        raise TruthError(f"{where}: result {value!r} does not start with a known result")
    return _RESULTS[lead]


def _hangup_cause(channels: Sequence[Mapping[str, Any]], direction: str) -> int | None:
    """Q.850 cause of the external party's channel (the caller's for internal calls).

    The external party is the first channel that is neither a Local half nor a phone; for
    internal calls the first channel (the caller). ``None`` when it cannot be derived
    (no such channel, or no cause recorded), e.g. a click-to-call whose operator was busy.
    """
    chosen: Mapping[str, Any] | None = None
    if direction == "internal":
        chosen = channels[0] if channels else None
    else:
        for ch in channels:
            name = str(ch.get("channel", ""))
            if name.startswith("Local/") or _PHONE.match(name):
                continue
            chosen = ch
            break
    if chosen is None:
        return None
    cause = chosen.get("cause")
    if cause is None or not str(cause).strip().lstrip("-").isdigit():
        return None
    return int(str(cause).strip())


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)
