"""What may reach an AMI action from outside: strict whitelists and sanitising, all pure.

Everything a Bitrix24 event (or any other untrusted source) says ends up in AMI headers
of an ``Originate``. AMI headers end at CR/LF, ``Variable`` values are split on commas
and dialplan applications on ``|``/``,``; ``${...}`` is expanded by the dialplan. So a
value that steers the PBX (number, extension, id) is never escaped, only *accepted* when
it matches a whitelist, and refused with a reason otherwise (:class:`Refused`). Display
names are the only free text we pass on, and ordinary names ("Smith & Sons",
"Petrov, Ivan") must never stop a call: they are cleaned and quoted instead of refused.

The per-user click limiter is here too: a token bucket whose clock is a parameter.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

__all__ = [
    "ClickLimiter",
    "Refused",
    "caller_id",
    "check_extension",
    "check_id",
    "check_user_id",
    "clean_display_name",
    "normalise_number",
    "quote_ami_value",
]

MAX_NUMBER_DIGITS = 20
MAX_EXTENSION_DIGITS = 16
MAX_ID_LENGTH = 128
MAX_NAME_LENGTH = 64

_NUMBER = re.compile(rf"\+?[0-9]{{1,{MAX_NUMBER_DIGITS}}}")
# One bracketed area code, as people write "+7 (495) 123-45-67": the only place a
# bracket may appear. A lone ")" or "(" stays in the string and fails the whitelist.
_AREA = re.compile(r"\(([0-9]{1,6})\)")
# Visual separators people type inside numbers; nothing else is dropped silently.
_SEPARATORS = str.maketrans("", "", " -.\u00a0")
_EXTENSION = re.compile(rf"[0-9]{{1,{MAX_EXTENSION_DIGITS}}}")
_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_ID_LENGTH}}}")
# Characters that would end or re-shape a quoted CallerID / Variable value.
_NAME_DROP = frozenset('"\\<>')


class Refused(ValueError):
    """An untrusted value was not accepted; ``reason`` is safe to log and to show a user."""

    def __init__(self, what: str, value: str, reason: str) -> None:
        # repr() keeps CR/LF and control characters visible (and harmless) in logs.
        super().__init__(f"{what} {value[:80]!r} refused: {reason}")
        self.what = what
        self.value = value
        self.reason = reason


def normalise_number(raw: str, plus_replacement: str = "") -> str:
    """A dialable number from what a user clicked: digits, optionally behind one ``+``.

    Spaces, hyphens, dots and one bracketed area code are dropped; anything else is
    :class:`Refused`. ``plus_replacement`` is what a leading ``+`` becomes (``""`` strips it,
    ``"00"`` dials it as an international prefix); it must be digits itself.
    """
    if not _EXTENSION.fullmatch(plus_replacement) and plus_replacement not in ("", "+"):
        raise Refused("plus replacement", plus_replacement, "must be digits or '+'")
    # Only spaces are trimmed: a trailing CR/LF is hostile, not whitespace to forgive.
    text = _AREA.sub(r"\1", raw.strip(" "), count=1).translate(_SEPARATORS)
    if not text:
        raise Refused("number", raw, "empty")
    if not _NUMBER.fullmatch(text):
        bad = sorted({c for c in text if not (c.isdigit() and c.isascii()) and c != "+"})
        detail = f"characters {bad!r} are not allowed" if bad else "not a phone number"
        raise Refused("number", raw, detail)
    if text.startswith("+"):
        text = plus_replacement + text[1:]
    return text


def check_extension(raw: str) -> str:
    """An extension is 1–16 ASCII digits, nothing else (no trimming of hostile input)."""
    value = raw.strip(" ")
    if not _EXTENSION.fullmatch(value):
        raise Refused("extension", raw, "an extension is digits only")
    return value


def check_id(raw: str, what: str = "id") -> str:
    """An id that may travel in AMI (``CALL_ID``, ChannelId): ``[A-Za-z0-9._-]{1,128}``."""
    if not _ID.fullmatch(raw):
        raise Refused(what, raw, "only letters, digits, '.', '_' and '-' are allowed")
    return raw


def check_user_id(raw: str) -> str:
    """A Bitrix24 user id: 1–12 ASCII digits, not zero."""
    if not re.fullmatch(r"[0-9]{1,12}", raw) or int(raw) == 0:
        raise Refused("user id", raw, "a user id is a positive number")
    return str(int(raw))


def clean_display_name(raw: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A CRM name made harmless: control characters (CR/LF among them) become spaces,
    quotes, backslashes and angle brackets are dropped, whitespace collapsed, length capped.

    Commas, ampersands, semicolons and the like stay: quoting (:func:`quote_ami_value`)
    makes them ordinary text.
    """
    out: list[str] = []
    for char in raw:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            out.append(" ")
        elif char not in _NAME_DROP:
            out.append(char)
    # "$" followed by "{" or "[" would read as a dialplan expression if a dialplan ever
    # expanded the value twice; a space between them keeps the text and kills the syntax.
    text = " ".join("".join(out).split())
    text = text.replace("${", "$ {").replace("$[", "$ [")
    return text[:max_length].rstrip()


def quote_ami_value(text: str) -> str:
    """``text`` (already cleaned) in double quotes, so Asterisk's argument splitter keeps
    commas, ``|`` and brackets inside it as text (reference §1.2); the quotes are removed
    by Asterisk."""
    if any(c in _NAME_DROP or unicodedata.category(c) == "Cc" for c in text):
        raise Refused("display name", text, "clean it with clean_display_name() first")
    return f'"{text}"'


def caller_id(name: str, number: str) -> str:
    """``"Name" <number>`` for an ``Originate``'s ``CallerID``; ``number`` must already be
    whitelisted. An empty name falls back to the number."""
    if not _NUMBER.fullmatch(number) and not _EXTENSION.fullmatch(number):
        raise Refused("number", number, "caller id number must be whitelisted first")
    shown = clean_display_name(name) or number
    return f"{quote_ami_value(shown)} <{number}>"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


@dataclass(slots=True)
class ClickLimiter:
    """Token bucket per key (the clicking user): ``burst`` clicks at once, then ``rate``
    per second. ``now`` is passed in, so tests drive time."""

    rate: float
    burst: int
    max_keys: int = 10_000
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        elapsed = max(0.0, now - bucket.at)
        bucket.tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _forget_full(self, now: float) -> None:
        # A bucket that has refilled completely carries no information: drop those first,
        # so the map stays bounded however many user ids a hostile sender makes up.
        full = [
            k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst
        ]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]
