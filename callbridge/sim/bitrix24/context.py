"""What a REST method handler gets: the portal, the caller's identity, the time, the switches.

Handlers are ``(ctx, params) -> result`` (a few that fetch a URL are ``async``); they raise
:class:`~.errors.RestError` for error answers and queue events on the state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from .errors import RestError
from .params import Params
from .state import App, PortalState

# The portal's own time zone: dates in answers carry it, naive dates sent in are read in it.
PORTAL_TZ = timezone(timedelta(hours=3))

# Documented-vs-observed choices (reference §8) and their defaults.
SWITCH_DEFAULTS: dict[str, str] = {
    "validation_error": "empty",  # "" (observed) or ERROR_CORE (documented), §1.3
    "telephony_webhook": "allow",  # allow ([SRC], asterlink) or deny (docs: WRONG_AUTH_TYPE), §2.5
    "add_to_chat_default": "0",  # finish without ADD_TO_CHAT: 0 ([SRC]) or 1 (new docs), §4.5
    "query_limit_status": "503",  # 503 (current docs, b24pysdk) or 429 (first docs), §3.1
    "bad_webhook_error": "NO_AUTH_FOUND",  # or INVALID_CREDENTIALS, §1.3
    "unknown_line": "create",  # register with an unknown LINE_NUMBER: create ([SRC]) or error
    "operating_limit": "480",  # seconds per method per 10 minutes, §3.2
    "fault_503_body": "html",  # body of the "503" fault: html (proxy page) or json
}
SWITCH_CHOICES: dict[str, tuple[str, ...]] = {
    "validation_error": ("empty", "ERROR_CORE"),
    "telephony_webhook": ("allow", "deny"),
    "add_to_chat_default": ("0", "1"),
    "query_limit_status": ("503", "429"),
    "bad_webhook_error": ("NO_AUTH_FOUND", "INVALID_CREDENTIALS"),
    "unknown_line": ("create", "error"),
    "fault_503_body": ("html", "json"),
}


def resolve_switches(given: dict[str, str]) -> dict[str, str]:
    """Defaults overlaid with ``given``; an unknown name or value raises ``ValueError``."""
    result = dict(SWITCH_DEFAULTS)
    for name, value in given.items():
        if name not in SWITCH_DEFAULTS:
            known = ", ".join(sorted(SWITCH_DEFAULTS))
            raise ValueError(f"unknown switch {name!r}; known switches: {known}")
        choices = SWITCH_CHOICES.get(name)
        if choices is not None and value not in choices:
            raise ValueError(f"switch {name} must be one of {', '.join(choices)}; got {value!r}")
        if choices is None:
            try:
                float(value)
            except ValueError:
                raise ValueError(f"switch {name} must be a number; got {value!r}") from None
        result[name] = value
    return result


@dataclass
class Auth:
    """Who is calling: an incoming webhook (its owner) or an application token."""

    kind: str  # "webhook" | "app"
    user_id: int
    app: App | None = None
    token: str | None = None

    @property
    def key(self) -> str:
        """Lines, dedup and operating time are kept per application ("no app" for webhooks)."""
        return self.app.key if self.app is not None else "webhook"


Fetch = Callable[[str], Awaitable[tuple[int, str, bytes]]]


@dataclass
class Ctx:
    state: PortalState
    now: float
    auth: Auth
    base_url: str
    fetch: Fetch | None = None
    in_batch: bool = False

    @property
    def switches(self) -> dict[str, str]:
        return self.state.switches

    def invalid(self, description: str) -> RestError:
        """A method-level validation error: ``""`` or ``ERROR_CORE`` per switch (§1.3)."""
        code = "ERROR_CORE" if self.switches.get("validation_error") == "ERROR_CORE" else ""
        return RestError(400, code, description)

    def iso(self, t: float) -> str:
        return iso_time(t)


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, tz=PORTAL_TZ).isoformat(timespec="seconds")


def parse_date(text: str) -> float | None:
    """Lenient ISO-8601 (PHP ``strtotime`` stand-in); naive values are portal time."""
    value = text.strip()
    if not value:
        return None
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=PORTAL_TZ)
    return parsed.astimezone(UTC).timestamp()


def php_true(value: Any) -> bool:
    """PHP truthiness: ``"N"`` is true, ``"0"``/``""``/0/None/empty list are false (§7.3)."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, str):
        return value not in ("", "0")
    if isinstance(value, list | dict):
        return len(value) > 0
    return bool(value)


def as_int(value: Any) -> int | None:
    """An integer parameter, or ``None`` when absent or not a number."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return int(text)
    return None


Handler = Callable[[Ctx, Params], Any]
