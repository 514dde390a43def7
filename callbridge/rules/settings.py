"""The rule settings: one frozen, validated object built from ``[rules]`` of the config.

Everything the rules and the engine decide is a function of this object, so tests build
it directly and the app builds it once from :class:`callbridge.config.RulesConfig`.
Keys the config does not define yet are read with their documented defaults (see
``docs/rules.md``), so adding them to the config is enough to make them configurable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from callbridge.rules.numbers import RewriteRule, RuleConfigError, parse_rewrite

__all__ = ["DidRule", "OutboundRoute", "RuleSettings", "settings_from_config"]

MissedUser = Literal["default", "responsible", "last_rung"]
EntityType = Literal["contact", "company", "lead"]


@dataclass(frozen=True, slots=True)
class DidRule:
    """What is special about one DID; ``None`` = the global setting."""

    register: bool | None = None
    line: str | None = None
    crm_create: bool | None = None
    crm_source: str | None = None
    #: The DID goes straight to a mobile (TYPE 3, "inbound with redirection").
    to_mobile: bool = False


@dataclass(frozen=True, slots=True)
class OutboundRoute:
    """An outbound route as FreePBX admins define it: a dial pattern (regex on the number)."""

    name: str
    pattern: re.Pattern[str]
    register: bool = True
    line: str | None = None


@dataclass(frozen=True, slots=True)
class RuleSettings:
    default_region: str = "RU"
    default_user_id: int = 1
    register_inbound: bool = True
    register_outbound: bool = True
    register_internal: bool = False
    dids: Mapping[str, DidRule] = field(default_factory=dict)
    outbound_routes: tuple[OutboundRoute, ...] = ()
    rewrites: tuple[RewriteRule, ...] = ()
    missed_call_user: MissedUser = "last_rung"
    registration_priority: tuple[EntityType, ...] = ()
    crm_create: bool = True
    crm_source: str = ""
    exception_extensions: frozenset[str] = frozenset()
    #: Number sent for withheld callers; ``""`` = do not register such calls.
    anonymous_number: str = ""
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    external_call_id_prefix: str = "callbridge"
    #: Seconds behind the newest AMI time after which an event is "late" (replayed).
    late_after: float = 300.0
    #: Tag (channel variable) marking a callback the PBX placed for a web form: TYPE 4.
    callback_tag: str = "CALLBACK"
    #: Tag carrying the CALL_ID Bitrix24 made for a click-to-call: never register those.
    crm_call_id_tag: str = "CRM_CALL_ID"
    add_to_chat: bool = True
    attach_recordings: bool = True

    def did_rule(self, did: str | None) -> DidRule:
        return self.dids.get(did or "", _NO_RULE)


_NO_RULE = DidRule()


def _opt(section: Any, name: str, default: Any) -> Any:
    # Keys the config model may not have yet (see the module docstring).
    return getattr(section, name, default)


def settings_from_config(rules: Any) -> RuleSettings:
    """Build :class:`RuleSettings` from a ``RulesConfig`` (or anything with its attributes).

    Raises :class:`RuleConfigError` naming the key for settings that cannot work.
    """
    region = str(rules.default_region).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise RuleConfigError("default_region", f"{region!r} is not a known region code")
    rewrites: list[RewriteRule] = []
    if rules.number_rewrite:
        rewrites.append(RewriteRule(None, parse_rewrite(rules.number_rewrite)))
    for i, item in enumerate(_opt(rules, "number_rewrites", [])):
        key = f"number_rewrites[{i}]"
        rewrites.insert(i, _rewrite_rule(item, key))
    dids: dict[str, DidRule] = {did: DidRule(line=line) for did, line in rules.lines.items()}
    for did, raw in dict(_opt(rules, "dids", {})).items():
        dids[did] = _did_rule(raw, dids.get(did, _NO_RULE), f"dids.{did}")
    for did in _opt(rules, "mobile_dids", []):
        base = dids.get(did, _NO_RULE)
        dids[did] = DidRule(base.register, base.line, base.crm_create, base.crm_source, True)
    routes = tuple(
        _route(raw, f"outbound_routes[{i}]")
        for i, raw in enumerate(_opt(rules, "outbound_routes", []))
    )
    tz_name = str(_opt(rules, "timezone", "UTC"))
    try:
        tz: tzinfo = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise RuleConfigError("timezone", f"{tz_name!r} is not a known time zone") from None
    anonymous = str(rules.anonymous_number)
    if anonymous and not any(c.isdigit() for c in anonymous):
        raise RuleConfigError("anonymous_number", f"{anonymous!r} has no digits")
    return RuleSettings(
        default_region=region,
        default_user_id=int(rules.default_user_id),
        register_inbound=bool(rules.register_inbound),
        register_outbound=bool(rules.register_outbound),
        register_internal=bool(rules.register_internal),
        dids=dids,
        outbound_routes=routes,
        rewrites=tuple(rewrites),
        missed_call_user=rules.missed_call_user,
        registration_priority=tuple(rules.registration_priority),
        crm_create=bool(rules.crm_create),
        crm_source=str(_opt(rules, "crm_source", "")),
        exception_extensions=frozenset(rules.exception_extensions),
        anonymous_number=anonymous,
        timezone=tz,
        external_call_id_prefix=str(_opt(rules, "external_call_id_prefix", "callbridge")),
        late_after=float(_opt(rules, "late_after", 300.0)),
        callback_tag=str(_opt(rules, "callback_tag", "CALLBACK")),
        crm_call_id_tag=str(_opt(rules, "crm_call_id_tag", "CRM_CALL_ID")),
        add_to_chat=bool(_opt(rules, "add_to_chat", True)),
        attach_recordings=bool(_opt(rules, "attach_recordings", True)),
    )


def _rewrite_rule(raw: Any, key: str) -> RewriteRule:
    if not isinstance(raw, Mapping) or "to" not in raw:
        raise RuleConfigError(key, 'expected {match = "<regex>", to = "<template>"}')
    match = raw.get("match")
    pattern = None
    if match:
        try:
            pattern = re.compile(str(match))
        except re.error as exc:
            msg = f"not a valid regular expression ({exc})"
            raise RuleConfigError(f"{key}.match", msg) from None
    return RewriteRule(pattern, parse_rewrite(str(raw["to"]), f"{key}.to"))


_DID_KEYS = {"register", "line", "crm_create", "crm_source", "to_mobile"}


def _did_rule(raw: Any, base: DidRule, key: str) -> DidRule:
    if not isinstance(raw, Mapping):
        raise RuleConfigError(key, "expected a table")
    unknown = set(raw) - _DID_KEYS
    if unknown:
        raise RuleConfigError(key, f"unknown keys {sorted(unknown)} (known: {sorted(_DID_KEYS)})")
    return DidRule(
        register=_bool_or_none(raw.get("register", base.register), f"{key}.register"),
        line=None if raw.get("line", base.line) is None else str(raw.get("line", base.line)),
        crm_create=_bool_or_none(raw.get("crm_create", base.crm_create), f"{key}.crm_create"),
        crm_source=raw.get("crm_source", base.crm_source),
        to_mobile=bool(_bool_or_none(raw.get("to_mobile", base.to_mobile), f"{key}.to_mobile")),
    )


def _bool_or_none(value: Any, key: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise RuleConfigError(key, f"expected true or false, got {value!r}")


def _route(raw: Any, key: str) -> OutboundRoute:
    if not isinstance(raw, Mapping) or "pattern" not in raw:
        raise RuleConfigError(key, 'expected {name = "...", pattern = "<regex>", register = true}')
    try:
        pattern = re.compile(str(raw["pattern"]))
    except re.error as exc:
        raise RuleConfigError(f"{key}.pattern", f"not a valid regular expression ({exc})") from None
    register = _bool_or_none(raw.get("register", True), f"{key}.register")
    line = raw.get("line")
    return OutboundRoute(
        name=str(raw.get("name", raw["pattern"])),
        pattern=pattern,
        register=True if register is None else register,
        line=None if line is None else str(line),
    )
