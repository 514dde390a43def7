"""Phone strings as the portal treats them (reference §6.2 and §4.3).

Two different rules: CRM matching compares a *normalised key* (``normalize_phone``), while
calls and statistics keep the number *as sent* with only foreign characters removed
(``clean_call_number``). Keeping both here makes the difference visible.
"""

from __future__ import annotations

import re

_CALL_NUMBER_DROP = re.compile(r"[^0-9+#*,;]")


def normalize_phone(raw: str) -> str:
    """The CRM duplicate-index key of a phone number (§6.2, from Bitrix's own source).

    ``+7 (900) 123-45-67``, ``89001234567`` and ``79001234567`` share one key;
    ``9001234567`` (no country code) does not. The extension after ``;`` or ``#`` is ignored.
    """
    text = raw.strip()
    if len(text) >= 10 and text.startswith("+8"):
        text = "00" + text[1:]
    # the extension part never takes part in matching (b24-rest-docs#72)
    text = re.split(r"[;#]", text, maxsplit=1)[0]
    digits = "".join(ch for ch in text if ch.isdigit() or ch == "*")
    if len(digits) >= 10:
        if digits[:2] in ("80", "81", "82"):
            pass
        elif digits.startswith("00"):
            digits = digits[2:]
        elif digits.startswith("011"):
            digits = digits[3:]
        elif digits.startswith("8"):
            digits = "7" + digits[1:]  # Russian trunk prefix
        elif digits.startswith("0"):
            digits = digits[1:]
    return digits


def clean_call_number(raw: str) -> str:
    """``PHONE_NUMBER`` of a call as stored: everything but digits and ``+ # * , ;`` removed."""
    return _CALL_NUMBER_DROP.sub("", raw)


def international(raw: str) -> str:
    """A best-effort E.164 rendering for ``PHONE_NUMBER_INTERNATIONAL`` in events."""
    key = normalize_phone(raw)
    return "+" + key if key else ""
