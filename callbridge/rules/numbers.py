"""Phone numbers as the CRM should see them: FreePBX-style rewriting, then normalisation.

Admins know rewriting from FreePBX and the commercial Bitrix24 modules: a template such as
``7${DIAL_NUMBER}``, ``${DIAL_NUMBER:2}`` or ``${DIAL_NUMBER:1:10}`` with Asterisk's
substring semantics (negative offset counts from the end, negative length leaves that many
characters off the end). The evaluator here is tiny and pure; any other ``${...}`` is a
configuration error naming the key, never a silently wrong number.

After rewriting the number is normalised with ``phonenumbers`` in the default region and
written as E.164 (``+74951234567``), so one physical number is one string everywhere
(Bitrix24 keeps ``PHONE_NUMBER`` as sent, reference §7.1). A number ``phonenumbers`` cannot
make sense of is kept as its digits rather than dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

__all__ = [
    "ANONYMOUS_NUMBERS",
    "NumberRewrite",
    "RewriteRule",
    "RuleConfigError",
    "is_anonymous",
    "normalise",
    "parse_rewrite",
]

#: What Asterisk and providers put in CallerID when the caller withheld the number.
ANONYMOUS_NUMBERS = frozenset(
    {"", "<unknown>", "unknown", "anonymous", "restricted", "private", "withheld", "unavailable"}
)


class RuleConfigError(ValueError):
    """A rules setting that cannot work; the message starts with the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"[rules] {key}: {message}")
        self.key = key


_VAR = re.compile(r"\$\{([^}]*)\}")
_DIAL = re.compile(r"^DIAL_NUMBER(?::(-?\d+))?(?::(-?\d+))?$")
_LITERAL = re.compile(r"^[0-9+*#]*$")


@dataclass(frozen=True, slots=True)
class _Piece:
    literal: str = ""
    is_var: bool = False
    offset: int = 0
    length: int | None = None


@dataclass(frozen=True, slots=True)
class NumberRewrite:
    """A parsed template; :meth:`apply` is pure."""

    template: str
    pieces: tuple[_Piece, ...]

    def apply(self, number: str) -> str:
        out: list[str] = []
        for piece in self.pieces:
            if not piece.is_var:
                out.append(piece.literal)
                continue
            out.append(_substring(number, piece.offset, piece.length))
        return "".join(out)


def _substring(value: str, offset: int, length: int | None) -> str:
    # Asterisk ${VAR:offset:length}: negative offset from the end; negative length drops
    # that many characters from the end of what is left.
    start = max(0, len(value) + offset) if offset < 0 else min(offset, len(value))
    rest = value[start:]
    if length is None:
        return rest
    if length < 0:
        return rest[: max(0, len(rest) + length)]
    return rest[:length]


def parse_rewrite(template: str, key: str = "number_rewrite") -> NumberRewrite:
    """Parse ``template``; raise :class:`RuleConfigError` naming ``key`` when it is not one."""
    pieces: list[_Piece] = []
    pos = 0
    for match in _VAR.finditer(template):
        literal = template[pos : match.start()]
        _check_literal(literal, template, key)
        if literal:
            pieces.append(_Piece(literal=literal))
        inner = _DIAL.match(match.group(1))
        if inner is None:
            raise RuleConfigError(
                key,
                f"{template!r}: only ${{DIAL_NUMBER}}, ${{DIAL_NUMBER:offset}} and "
                f"${{DIAL_NUMBER:offset:length}} are understood, not ${{{match.group(1)}}}",
            )
        length = None if inner.group(2) is None else int(inner.group(2))
        pieces.append(_Piece(is_var=True, offset=int(inner.group(1) or 0), length=length))
        pos = match.end()
    tail = template[pos:]
    _check_literal(tail, template, key)
    if tail:
        pieces.append(_Piece(literal=tail))
    if not any(p.is_var for p in pieces):
        raise RuleConfigError(key, f"{template!r}: the template never uses ${{DIAL_NUMBER}}")
    return NumberRewrite(template, tuple(pieces))


def _check_literal(literal: str, template: str, key: str) -> None:
    if not _LITERAL.match(literal):
        raise RuleConfigError(
            key, f"{template!r}: text outside ${{...}} may only be digits, +, * or # ({literal!r})"
        )


@dataclass(frozen=True, slots=True)
class RewriteRule:
    """Rewrite numbers that fully match ``match`` (a regex; ``None`` = every number)."""

    match: re.Pattern[str] | None
    rewrite: NumberRewrite

    def applies(self, number: str) -> bool:
        return self.match is None or self.match.fullmatch(number) is not None


def is_anonymous(number: str | None) -> bool:
    if number is None:
        return True
    return number.strip().lower() in ANONYMOUS_NUMBERS or not any(c.isdigit() for c in number)


def normalise(number: str, region: str, rewrites: tuple[RewriteRule, ...] = ()) -> str:
    """The CRM form of ``number``: first matching rewrite, then E.164 when it parses.

    ``number`` must not be anonymous (check :func:`is_anonymous` first).
    """
    raw = "".join(c for c in number if c.isdigit() or c == "+")
    for rule in rewrites:
        if rule.applies(raw):
            raw = rule.rewrite.apply(raw)
            break
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return raw
    if not phonenumbers.is_possible_number(parsed):
        return raw
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
