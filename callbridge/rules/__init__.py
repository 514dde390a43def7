"""Pure business rules: what to register, for whom, with which type, line, number and status.

No I/O here: the engine asks, the rules answer from :class:`RuleSettings` and the facts of
the call. ``docs/rules.md`` is the table of these answers.
"""

from callbridge.rules.numbers import RuleConfigError, is_anonymous, normalise, parse_rewrite
from callbridge.rules.policy import (
    Registration,
    Skip,
    call_start_date,
    card_users,
    duration,
    external_call_id,
    finish_user,
    missed_user,
    register_user,
    registration,
    status_code,
    transfer_legs,
    user_for_extension,
)
from callbridge.rules.settings import DidRule, OutboundRoute, RuleSettings, settings_from_config
from callbridge.rules.users import UserDirectory, unmapped_extensions

__all__ = [
    "DidRule",
    "OutboundRoute",
    "Registration",
    "RuleConfigError",
    "RuleSettings",
    "Skip",
    "UserDirectory",
    "call_start_date",
    "card_users",
    "duration",
    "external_call_id",
    "finish_user",
    "is_anonymous",
    "missed_user",
    "normalise",
    "parse_rewrite",
    "register_user",
    "registration",
    "settings_from_config",
    "status_code",
    "transfer_legs",
    "unmapped_extensions",
    "user_for_extension",
]
