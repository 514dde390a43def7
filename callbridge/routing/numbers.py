"""Phone-number keys: one canonical digits string per number, whatever its spelling.

``+7 (916) 123-45-67``, ``8 916 123 45 67``, ``79161234567``, ``9161234567`` and
``+7 916 1234567 доб. 12`` all give ``79161234567``: the phonebook stores this key for
each CRM phone and looks the caller up by the same key.

The key is E.164 without the ``+`` when ``phonenumbers`` recognises a possible number in
the default region; otherwise the digits as Bitrix24's duplicate index keeps them
(reference bitrix24-rest.md §6.2: ``+8…`` → ``008…``, ``00``/``011`` stripped, a leading
trunk ``8`` → ``7``, a leading ``0`` stripped, extensions after ``;``/``#`` dropped).
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

__all__ = ["bitrix_key", "phone_key"]

# Extension markers seen in CRM data: ";ext=12", "#12", "доб. 12", "ext. 12", "x12", ",12".
_EXTENSION = re.compile(r"(?:;|#|,|\bext\.?|\bx(?=\s*\d)|доб\.?|вн\.?)", re.IGNORECASE)


def _strip_extension(raw: str) -> str:
    match = _EXTENSION.search(raw)
    return raw[: match.start()] if match else raw


def bitrix_key(raw: str) -> str:
    """Bitrix24's own normalisation (§6.2), for numbers ``phonenumbers`` does not know."""
    text = raw.strip()
    if len(text) >= 10 and text.startswith("+8"):
        text = "00" + text[1:]
    digits = "".join(c for c in _strip_extension(text) if c.isdigit())
    if len(digits) >= 10 and not digits.startswith(("80", "81", "82")):
        if digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("011"):
            digits = digits[3:]
        elif digits.startswith("8"):
            digits = "7" + digits[1:]
        elif digits.startswith("0"):
            digits = digits[1:]
    return digits


@lru_cache(maxsize=65536)
def phone_key(raw: str, region: str = "RU") -> str:
    """The canonical digits key of ``raw`` (``""`` when it holds no digits)."""
    text = _strip_extension(raw.strip())
    digits = "".join(c for c in text if c.isdigit())
    if not digits:
        return ""
    plus = text.lstrip().startswith("+")
    if plus and digits.startswith("8") and len(digits) == 11:
        # "+8 916 …" is a Russian number written with the trunk prefix (§6.2 step 1).
        digits = "7" + digits[1:]
    candidate = "+" + digits if plus else digits
    if not plus:
        # International prefixes the region's rules do not cover (RU uses 810).
        if digits.startswith("00") and len(digits) > 4:
            candidate = "+" + digits[2:]
        elif digits.startswith("011") and len(digits) > 5:
            candidate = "+" + digits[3:]
    try:
        number = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return bitrix_key(raw)
    if len(digits) >= 7 and phonenumbers.is_possible_number(number):
        return f"{number.country_code}{number.national_number}"
    return bitrix_key(raw)
