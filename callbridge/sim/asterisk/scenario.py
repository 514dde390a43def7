"""Loading a recorded trace as a playable scenario: its asynchronous events and truth.

Only what a live Asterisk would push unasked is kept: ``Event:`` messages without an
``ActionID``, plus ``OriginateResponse`` (which echoes the ActionID of the Originate
that caused it). Responses and list items of the recording client are dropped, and
so are the ``FullyBooted`` and ``SuccessfulAuth`` of its own login — the simulator
sends its own ``FullyBooted`` to each client that logs in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callbridge.pbx.ami.framing import AmiFramer, AmiMessage

from .rekey import TraceTemplate

__all__ = ["Scenario", "TraceError", "default_mix_paths", "load_scenario"]


class TraceError(ValueError):
    """A trace file the simulator cannot play (names the file and what is wrong)."""


@dataclass
class Scenario:
    """One trace: its events (relative times from the first one) and, if any, truth."""

    name: str
    path: Path
    times: list[float]
    template: TraceTemplate
    t0: float
    truth: dict[str, Any] | None = None
    external_numbers: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.times[-1] if self.times else 0.0


def async_events(messages: list[AmiMessage]) -> list[AmiMessage]:
    """The messages of a recorded connection that Asterisk sent unasked (module doc)."""
    out: list[AmiMessage] = []
    own_auth_dropped = False
    for msg in messages:
        event = msg.event
        if event is None:
            continue
        if msg.action_id is not None and event != "OriginateResponse":
            continue
        if event == "FullyBooted" and "Timestamp" not in msg:
            continue
        if event == "SuccessfulAuth" and not own_auth_dropped:
            own_auth_dropped = True
            continue
        out.append(msg)
    return out


def load_scenario(path: Path, *, vary_numbers: bool = False) -> Scenario:
    """Read ``path`` (a ``.ami`` file) and the ``.truth.json`` next to it, if present.

    ``vary_numbers`` marks the external parties' numbers of the truth as tokens, so a
    :class:`~callbridge.sim.asterisk.rekey.Rekey` can replace them.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TraceError(f"trace {path}: cannot read: {exc.strerror or exc}") from exc
    framer = AmiFramer(expect_banner=data.startswith(b"Asterisk Call Manager/"))
    events = async_events(framer.feed(data))
    if not events:
        raise TraceError(f"trace {path}: no asynchronous events (is it an AMI trace?)")
    stamps: list[float] = []
    last: float | None = None
    for msg in events:
        raw = msg.get("Timestamp")
        if raw is not None:
            try:
                last = float(raw)
            except ValueError as exc:
                raise TraceError(f"trace {path}: Timestamp {raw!r} is not a number") from exc
        if last is None:
            raise TraceError(f"trace {path}: the first event ({msg.event}) has no Timestamp")
        stamps.append(last)
    t0 = stamps[0]
    truth = _load_truth(path)
    numbers: list[str] = []
    if truth is not None:
        for call in truth.get("calls", []):
            num = call.get("external_number") if isinstance(call, dict) else None
            if isinstance(num, str) and num.isdigit() and num not in numbers:
                numbers.append(num)
    template = TraceTemplate(events, numbers if vary_numbers else ())
    name = path.name.removesuffix(".ami")
    return Scenario(
        name=name,
        path=path,
        times=[s - t0 for s in stamps],
        template=template,
        t0=t0,
        truth=truth,
        external_numbers=numbers,
    )


def _load_truth(path: Path) -> dict[str, Any] | None:
    truth_path = path.with_name(path.name.removesuffix(".ami") + ".truth.json")
    if not truth_path.exists():
        return None
    try:
        obj = json.loads(truth_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TraceError(f"truth {truth_path}: not readable JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise TraceError(f"truth {truth_path}: not a JSON object")
    return obj


def is_mix_candidate(path: Path) -> bool:
    """Traces fit for the generated call mix: not 13 (action answers), not failed logins,
    not 08 (a click-to-call carries the CALL_ID a portal made for *that* click: replayed
    on its own it would name a call no portal knows; clicks are played by Originate)."""
    name = path.name
    return (
        name.endswith(".ami")
        and not name.endswith(".failed-login.ami")
        and not name.startswith(("13-", "08-"))
        and path.with_name(name.removesuffix(".ami") + ".truth.json").exists()
    )


def default_mix_paths() -> list[Path]:
    """The shared traces of the source tree (``tests/traces``) fit for the call mix."""
    root = Path(__file__).resolve().parents[3] / "tests" / "traces"
    return sorted(p for p in root.rglob("*.ami") if is_mix_candidate(p))
