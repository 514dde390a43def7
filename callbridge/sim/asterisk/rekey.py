"""Re-keying a recorded call: fresh ids, shifted times, other caller numbers.

A trace is compiled once into a :class:`TraceTemplate`: every header value is cut into
literal text and *tokens* — Uniqueids/Linkedids, channel-name hex suffixes (both
halves of a Local ``;1``/``;2`` pair share one, so the pair stays a pair), bridge
UUIDs, chosen phone numbers and date-times in the forms Asterisk writes them
(``EventTV``, CEL/CDR times, recording file names and their ``YYYY/MM/DD`` folder).
A :class:`Rekey` is one instance of that trace: it maps each token to its new value
once and reuses it, so every header that mentions an id (Dest*/Transferer*/LocalOne*
blocks, CEL ``Extra``, ``Cdr``, ``MIXMONITOR_FILENAME`` …) changes the same way, and
the truth of the scenario can be re-keyed with the same mapping.

Pure: no I/O, no clock; the id allocator is seeded by a salt.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from callbridge.pbx.ami.framing import AmiMessage

__all__ = ["IdAllocator", "Rekey", "TraceTemplate"]

_UID = re.compile(r"^\d+\.\d+$")
_CHANNEL = re.compile(r"^[A-Za-z0-9_]+/.+-([0-9a-fA-F]{8})(?:;[12])?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_DATETIME_PATTERNS = (
    ("dt_tv", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000"),
    ("dt_iso", r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00"),
    ("dt_sql", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"),
    ("dt_file", r"(?<!\d)\d{8}-\d{6}(?!\d)"),
    ("dt_dir", r"(?<!\d)\d{4}/\d\d/\d\d(?=/)"),
)

# Every token holds a digit or a dash (hex suffixes follow one); most values hold neither.
_MAY_HOLD_TOKEN = re.compile(r"[\d-]")

#: Keys of a re-keyed truth/expected object whose float values are unix times.
_TIME_KEYS = frozenset({"start", "answer", "end", "created", "up", "hangup", "begin"})

Segments = tuple[str | tuple[str, str], ...]


class IdAllocator:
    """Fresh Uniqueid counters, channel hex suffixes and bridge UUIDs for one run.

    Derived from ``salt``: two runs with different salts practically never hand out
    the same id (Uniqueid counters start at a random point of a 10⁹ range, hex
    suffixes of a 2³² range).
    """

    def __init__(self, salt: int) -> None:
        self._rng = random.Random(salt)
        self._seq = self._rng.randrange(10**6, 10**9)
        self._hex = self._rng.getrandbits(32)

    def uniqueid_seq(self) -> int:
        self._seq += 1
        return self._seq

    def hex8(self) -> str:
        self._hex = (self._hex + 1) & 0xFFFFFFFF
        return f"{self._hex:08x}"

    def bridge_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


class Rekey:
    """The mapping of one played instance of a trace (see the module docstring).

    ``shift`` seconds are added to every time; ``numbers`` maps caller numbers;
    ``ref_time`` is a unix time of the original trace (its start), used to place a
    bare ``YYYY/MM/DD`` folder name in the day.
    """

    def __init__(
        self,
        ids: IdAllocator,
        *,
        shift: float = 0.0,
        numbers: Mapping[str, str] | None = None,
        ref_time: float = 0.0,
    ) -> None:
        self.ids = ids
        self.shift = shift
        self.numbers = dict(numbers or {})
        self.ref_time = ref_time
        self._cache: dict[tuple[str, str], str] = {}

    def token(self, kind: str, orig: str) -> str:
        key = (kind, orig)
        got = self._cache.get(key)
        if got is None:
            got = self._make(kind, orig)
            self._cache[key] = got
        return got

    def pin(self, kind: str, orig: str, new: str) -> None:
        """Decide the new value of one token up front (an Originate's ``ChannelId``)."""
        self._cache[(kind, orig)] = new

    def mapped(self, kind: str) -> dict[str, str]:
        """Original → new for the tokens of ``kind`` seen so far (``uid``, ``hex`` …)."""
        return {orig: new for (k, orig), new in self._cache.items() if k == kind}

    def shift_time(self, value: float) -> float:
        return value + self.shift

    def _make(self, kind: str, orig: str) -> str:
        if kind == "uid":
            epoch, _, _ = orig.partition(".")
            return f"{int(int(epoch) + self.shift)}.{self.ids.uniqueid_seq()}"
        if kind == "hex":
            return self.ids.hex8()
        if kind == "bridge":
            return self.ids.bridge_id()
        if kind == "num":
            return self.numbers.get(orig, orig)
        if not self.shift:
            return orig
        return _shift_datetime(kind, orig, self.shift, self.ref_time)


def _shift_datetime(kind: str, text: str, shift: float, ref_time: float) -> str:
    delta = timedelta(seconds=shift)
    if kind == "dt_tv":
        t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f+0000").replace(tzinfo=UTC) + delta
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+0000"
    if kind == "dt_iso":
        t = datetime.fromisoformat(text) + delta
        spec = "milliseconds" if "." in text else "seconds"
        return t.isoformat(timespec=spec)
    if kind == "dt_sql":
        t = datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) + delta
        return t.strftime("%Y-%m-%d %H:%M:%S")
    if kind == "dt_file":
        t = datetime.strptime(text, "%Y%m%d-%H%M%S").replace(tzinfo=UTC) + delta
        return t.strftime("%Y%m%d-%H%M%S")
    # dt_dir: a bare date; place it at the trace's time of day before shifting.
    day = datetime.strptime(text, "%Y/%m/%d").replace(tzinfo=UTC)
    t = day + timedelta(seconds=ref_time % 86400) + delta
    return t.strftime("%Y/%m/%d")


def _alternation(values: Iterable[str]) -> str:
    return "|".join(re.escape(v) for v in sorted(set(values), key=lambda v: (-len(v), v)))


class TraceTemplate:
    """A list of messages compiled for fast re-keyed rendering.

    ``numbers`` are the phone numbers that may be replaced (the external party's);
    ids are found by header name: ``*Uniqueid``/``*Linkedid`` values, the hex suffix of
    ``*Channel`` values, ``BridgeUniqueid``/``BridgeId`` UUIDs.
    """

    def __init__(self, messages: Sequence[AmiMessage], numbers: Iterable[str] = ()) -> None:
        uids: set[str] = set()
        hexes: set[str] = set()
        bridges: set[str] = set()
        for msg in messages:
            for key, value in msg.items():
                low = key.lower()
                if low.endswith(("uniqueid", "linkedid")) and _UID.match(value):
                    uids.add(value)
                elif low.endswith("channel") or low == "peer":
                    m = _CHANNEL.match(value)
                    if m:
                        hexes.add(m.group(1))
                if low.endswith(("bridgeuniqueid", "bridgeid")) and _UUID.match(value):
                    bridges.add(value)
        parts: list[str] = []
        if uids:
            parts.append(rf"(?P<uid>(?<![\d.])(?:{_alternation(uids)})(?!\d))")
        if hexes:
            parts.append(rf"(?P<hex>(?<=-)(?:{_alternation(hexes)})(?![0-9a-fA-F]))")
        if bridges:
            parts.append(rf"(?P<bridge>{_alternation(bridges)})")
        nums = [n for n in numbers if n]
        if nums:
            parts.append(rf"(?P<num>(?<!\d)(?:{_alternation(nums)})(?!\d))")
        parts.extend(f"(?P<{kind}>{pattern})" for kind, pattern in _DATETIME_PATTERNS)
        self._regex = re.compile("|".join(parts))
        self.uniqueids = frozenset(uids)
        # Header values repeat a lot ("call,all", "Up", channel names): cut each once.
        seen: dict[str, str | Segments] = {}
        self.messages: list[list[tuple[str, str | Segments]]] = []
        #: Per message: keys, static values, and (position, segments) of the others.
        self._compiled: list[tuple[tuple[str, ...], list[str], list[tuple[int, Segments]]]] = []
        for msg in messages:
            row: list[tuple[str, str | Segments]] = []
            for key, value in msg.items():
                if key == "Timestamp":
                    row.append((key, self._segments(key, value)))
                    continue
                segs = seen.get(value)
                if segs is None:
                    segs = seen[value] = self._segments(key, value)
                row.append((key, segs))
            self.messages.append(row)
            keys = tuple(k for k, _ in row)
            static = [v if isinstance(v, str) else "" for _, v in row]
            dynamic = [(i, v) for i, (_, v) in enumerate(row) if not isinstance(v, str)]
            self._compiled.append((keys, static, dynamic))

    def __len__(self) -> int:
        return len(self.messages)

    def _segments(self, key: str, value: str) -> str | Segments:
        if key == "Timestamp":
            return ("", ("ts", value))
        if not _MAY_HOLD_TOKEN.search(value):
            return value
        out: list[str | tuple[str, str]] = []
        pos = 0
        for m in self._regex.finditer(value):
            if m.start() > pos:
                out.append(value[pos : m.start()])
            kind = m.lastgroup or ""
            out.append((kind, m.group(0)))
            pos = m.end()
        if not out:
            return value
        if pos < len(value):
            out.append(value[pos:])
        return tuple(out)

    def render(self, index: int, rk: Rekey) -> AmiMessage:
        keys, static, dynamic = self._compiled[index]
        values = static.copy()
        for pos, segments in dynamic:
            values[pos] = _join(segments, rk)
        pairs = list(zip(keys, values, strict=True))
        # dict() over the reversed pairs keeps the first value of a repeated header.
        return AmiMessage(pairs, dict(reversed(pairs)))

    def rekey_text(self, text: str, rk: Rekey) -> str:
        segments = self._segments("", text)
        return segments if isinstance(segments, str) else _join(segments, rk)

    def rekey_obj(self, obj: Any, rk: Rekey, key: str = "") -> Any:
        """Re-key a JSON-like object (a truth or expected call) with ``rk``'s mapping."""
        if isinstance(obj, str):
            return self.rekey_text(obj, rk)
        if isinstance(obj, bool) or obj is None:
            return obj
        if isinstance(obj, float | int) and (key in _TIME_KEYS or key.endswith("_ts")):
            return round(rk.shift_time(float(obj)), 6)
        if isinstance(obj, Mapping):
            return {k: self.rekey_obj(v, rk, str(k)) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.rekey_obj(v, rk, key) for v in obj]
        return obj


def _join(segments: Segments, rk: Rekey) -> str:
    out: list[str] = []
    for seg in segments:
        if isinstance(seg, str):
            out.append(seg)
        elif seg[0] == "ts":
            out.append(_shift_timestamp(seg[1], rk.shift))
        else:
            out.append(rk.token(seg[0], seg[1]))
    return "".join(out)


def _shift_timestamp(value: str, shift: float) -> str:
    if not shift:
        return value
    try:
        return f"{float(value) + shift:.6f}"
    except ValueError:
        return value
