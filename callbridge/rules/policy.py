"""The business rules: pure functions from call facts and settings to CRM decisions.

Each function answers one question the engine asks (register this call? which TYPE,
line, number, user, status?) and is documented as one row of ``docs/rules.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from callbridge.calls import CallResult, CallStarted, CallSummary, Direction, Transfer
from callbridge.rules.numbers import is_anonymous, normalise
from callbridge.rules.settings import RuleSettings
from callbridge.rules.users import UserDirectory

__all__ = [
    "CALL_TYPE_CALLBACK",
    "CALL_TYPE_INBOUND",
    "CALL_TYPE_INBOUND_REDIRECTED",
    "CALL_TYPE_OUTBOUND",
    "Registration",
    "Skip",
    "call_start_date",
    "card_users",
    "duration",
    "external_call_id",
    "finish_user",
    "missed_user",
    "register_user",
    "registration",
    "status_code",
    "transfer_legs",
    "user_for_extension",
]

CALL_TYPE_OUTBOUND = 1
CALL_TYPE_INBOUND = 2
CALL_TYPE_INBOUND_REDIRECTED = 3
CALL_TYPE_CALLBACK = 4


@dataclass(frozen=True, slots=True)
class Registration:
    """How a call is registered (everything but the user, known at first ring)."""

    call_type: int
    phone: str
    line: str | None
    crm_create: bool
    crm_source: str
    external_call_id: str
    #: The CALL_ID Bitrix24 already made (click-to-call): no register, finish this one.
    crm_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """The call is not registered, and why (for the log and the admin journal)."""

    reason: str


def external_call_id(settings: RuleSettings, call_id: str) -> str:
    """Unique per call, and the same after a restart (derived from the tracker's call id)."""
    return f"{settings.external_call_id_prefix}-{call_id}"


def call_start_date(settings: RuleSettings, at: float) -> str:
    """``CALL_START_DATE``: ISO 8601 with the offset, so the portal never guesses the zone."""
    return datetime.fromtimestamp(at, settings.timezone).isoformat(timespec="seconds")


def _route_of(settings: RuleSettings, number: str) -> tuple[bool, str | None, str]:
    digits = "".join(c for c in number if c.isdigit() or c == "+")
    for route in settings.outbound_routes:
        if route.pattern.fullmatch(digits):
            return route.register, route.line, f"outbound route {route.name!r}"
    return settings.register_outbound, None, "outbound calls"


def registration(
    settings: RuleSettings, started: CallStarted, callee: str | None = None
) -> Registration | Skip:
    """Whether and how to register a call. ``callee``: the rung extension of an internal call."""
    ext_id = external_call_id(settings, started.call_id)
    crm_call_id = started.tags.get(settings.crm_call_id_tag) or None
    callback = settings.callback_tag in started.tags
    if started.direction is Direction.INTERNAL:
        if not settings.register_internal:
            return Skip("internal calls are not registered (register_internal = false)")
        if started.operator in settings.exception_extensions:
            return Skip(f"extension {started.operator} is in exception_extensions")
        if callee is None:
            return Skip("internal call without a callee extension")
        return Registration(CALL_TYPE_OUTBOUND, callee, None, False, "", ext_id, crm_call_id)
    number = started.external_number
    if is_anonymous(number):
        if not settings.anonymous_number:
            return Skip("withheld caller number and no anonymous_number placeholder")
        phone = settings.anonymous_number
    else:
        assert number is not None
        phone = normalise(number, settings.default_region, settings.rewrites)
    if started.direction is Direction.OUTBOUND:
        if started.operator in settings.exception_extensions:
            return Skip(f"extension {started.operator} is in exception_extensions")
        register, line, what = _route_of(settings, number or "")
        if not register:
            return Skip(f"{what} are not registered")
        call_type = CALL_TYPE_CALLBACK if callback else CALL_TYPE_OUTBOUND
        return Registration(
            call_type, phone, line, settings.crm_create, settings.crm_source, ext_id, crm_call_id
        )
    rule = settings.did_rule(started.did)
    register = settings.register_inbound if rule.register is None else rule.register
    if not register:
        return Skip(f"inbound calls to DID {started.did} are not registered")
    if callback:
        call_type = CALL_TYPE_CALLBACK
    elif rule.to_mobile:
        call_type = CALL_TYPE_INBOUND_REDIRECTED
    else:
        call_type = CALL_TYPE_INBOUND
    return Registration(
        call_type=call_type,
        phone=phone,
        line=rule.line,
        crm_create=settings.crm_create if rule.crm_create is None else rule.crm_create,
        crm_source=settings.crm_source if rule.crm_source is None else rule.crm_source,
        external_call_id=ext_id,
        crm_call_id=crm_call_id,
    )


def user_for_extension(
    settings: RuleSettings, directory: UserDirectory, extension: str | None
) -> int | None:
    """The user to card/register for ``extension``; ``None`` for exceptions and unmapped."""
    if extension is None or extension in settings.exception_extensions:
        return None
    return directory.user_of(extension)


def card_users(
    settings: RuleSettings, directory: UserDirectory, extensions: Iterable[str]
) -> list[int]:
    """Users who get a card while ``extensions`` ring (exceptions and unmapped get none)."""
    users: list[int] = []
    for ext in extensions:
        user = user_for_extension(settings, directory, ext)
        if user is not None and user not in users:
            users.append(user)
    return users


def register_user(
    settings: RuleSettings,
    directory: UserDirectory,
    direction: Direction,
    operator: str | None,
    ringing: Sequence[str],
) -> int:
    """``USER_ID`` of register: the operator (outbound) or the first carded ringing phone."""
    if direction is not Direction.INBOUND:
        return user_for_extension(settings, directory, operator) or settings.default_user_id
    users = card_users(settings, directory, ringing)
    return users[0] if users else settings.default_user_id


def missed_user(settings: RuleSettings, directory: UserDirectory, rang: Sequence[str]) -> int:
    """The user of an unanswered inbound call per ``missed_call_user``.

    ``responsible`` cannot be known without the CRM: this returns the fallback (default
    user) and the outbox replaces it with the entity's responsible at send time.
    """
    if settings.missed_call_user == "last_rung":
        for ext in reversed(rang):
            user = user_for_extension(settings, directory, ext)
            if user is not None:
                return user
    return settings.default_user_id


def finish_user(settings: RuleSettings, directory: UserDirectory, summary: CallSummary) -> int:
    """``USER_ID`` of finish: the final holder of an answered call, else per the rules."""
    if summary.answered:
        for ext in (summary.final_operator, summary.answered_by):
            user = user_for_extension(settings, directory, ext)
            if user is not None:
                return user
        return settings.default_user_id
    if summary.direction is not Direction.INBOUND:
        return user_for_extension(settings, directory, summary.operator) or (
            settings.default_user_id
        )
    return missed_user(settings, directory, summary.rang)


# Q.850 causes that say more than "failed" (reference §4.0 lists the codes Bitrix24 knows).
_CAUSE_STATUS = {
    1: "404",  # unallocated number
    3: "404",
    17: "486",  # user busy
    18: "480",  # no user responding
    19: "480",  # no answer
    20: "480",  # subscriber absent
    21: "603",  # call rejected
    28: "404",  # invalid number format
    34: "503",  # no circuit available
    38: "503",
    41: "503",
    42: "503",
}


def status_code(
    result: CallResult | None, hangup_cause: int | None = None, failure_cause: int | None = None
) -> str:
    """``STATUS_CODE`` of finish (strings, reference §4.0). A failed call's code comes from
    the external party's cause, else from the cause of the leg that failed."""
    if result is CallResult.ANSWERED:
        return "200"
    if result is CallResult.BUSY:
        return "486"
    if result in (CallResult.MISSED, CallResult.NOT_ANSWERED):
        return "304"
    if result is CallResult.FAILED:
        return _CAUSE_STATUS.get(hangup_cause or failure_cause or 0, "603")
    return "OTHER"


def duration(summary: CallSummary) -> int:
    """``DURATION``: talk seconds; 0 when nobody answered (it also drives ``CALL_STATUS``)."""
    return summary.talk_seconds if summary.answered else 0


def transfer_legs(settings: RuleSettings, summary: CallSummary) -> str:
    """The legs of a transferred call in words, for the call's activity description."""
    if not summary.transfers:
        return ""
    parts = [f"answered by {summary.answered_by or '?'}"]
    for transfer in summary.transfers:
        parts.append(_leg(settings, transfer))
    return "; ".join(parts)


def _leg(settings: RuleSettings, transfer: Transfer) -> str:
    at = datetime.fromtimestamp(transfer.at, settings.timezone).strftime("%H:%M:%S")
    return (
        f"{transfer.type} transfer {transfer.from_extension or '?'} → "
        f"{transfer.to_extension or '?'} at {at}"
    )
