"""Routing settings: the FastAGI listener, deadlines, routes and dialplan variable names.

A frozen dataclass with working defaults, built from the ``[agi]`` and ``[routing]``
TOML tables by :meth:`RoutingSettings.from_mapping`; every error names its key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from callbridge.routing.schedule import Schedule, ScheduleError, parse_schedule

__all__ = [
    "Destination",
    "DestinationKind",
    "RouteRule",
    "RoutingSettings",
    "RoutingSettingsError",
    "Variables",
]


_SCRIPTS = {"route": "route", "callername": "callername", "blacklist": "blacklist"}


class RoutingSettingsError(ValueError):
    """One line per finding, each naming the key."""


class DestinationKind(StrEnum):
    MANAGER = "manager"  # the responsible user's extension
    MANAGER_MOBILE = "manager+mobile"  # their extension, then their mobile
    EXTENSION = "extension"
    QUEUE = "queue"
    GROUP = "group"  # a FreePBX ring group
    IVR = "ivr"
    FALLBACK = "fallback"  # the dialplan's own fallback destination


_NEEDS_TARGET = {
    DestinationKind.EXTENSION,
    DestinationKind.QUEUE,
    DestinationKind.GROUP,
    DestinationKind.IVR,
}


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestinationKind = DestinationKind.FALLBACK
    target: str = ""

    @classmethod
    def parse(cls, text: str, key: str = "destination") -> Destination:
        """``manager``, ``manager+mobile``, ``extension:101``, ``queue:700``, ``group:600``,
        ``ivr:3``, ``fallback``."""
        name, _, target = str(text).strip().partition(":")
        try:
            kind = DestinationKind(name.strip().lower())
        except ValueError:
            choices = ", ".join(k.value for k in DestinationKind)
            raise RoutingSettingsError(f"{key}: {text!r} is not one of {choices}") from None
        target = target.strip()
        if kind in _NEEDS_TARGET and not (target.isdigit() or target.isidentifier()):
            raise RoutingSettingsError(f"{key}: {text!r} needs a number, e.g. {kind.value}:700")
        if kind not in _NEEDS_TARGET and target:
            raise RoutingSettingsError(f"{key}: {kind.value} takes no target (got {text!r})")
        return cls(kind, target)


@dataclass(frozen=True, slots=True)
class RouteRule:
    """How calls to some DIDs are routed (the default rule has no DIDs)."""

    name: str = "default"
    dids: tuple[str, ...] = ()
    destination: Destination = Destination(DestinationKind.MANAGER)
    #: Caller unknown, or their manager cannot take calls.
    unknown: Destination = Destination()
    ring_time: int = 20
    mobile_ring_time: int = 25
    schedule: Schedule | None = None
    after_hours: Destination = Destination()


@dataclass(frozen=True, slots=True)
class Variables:
    """Names of the channel variables the route script sets and the snippet reads."""

    result: str = "CB_RESULT"  # found | fallback | blacklisted | error
    kind: str = "CB_ROUTE_KIND"  # ext | queue | group | ivr
    route_to: str = "CB_ROUTE_TO"
    mobile: str = "CB_ROUTE_MOBILE"
    ring_time: str = "CB_RING_TIME"
    mobile_ring_time: str = "CB_MOBILE_RING_TIME"
    caller_name: str = "CB_CALLER_NAME"
    blacklisted: str = "CB_BLACKLISTED"
    entity: str = "CB_CRM_ENTITY"  # contact:15
    responsible: str = "CB_RESPONSIBLE_ID"


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    # [agi]
    listen_host: str = "127.0.0.1"
    listen_port: int = 4573
    #: Where the dialplan connects (printed in the snippet); None = the listen address.
    public_host: str | None = None
    public_port: int | None = None
    #: Hard bound on one FastAGI session, whatever the script does.
    session_deadline: float = 2.0
    # [routing]
    #: The dialplan gets its answer within this many seconds of connecting.
    deadline: float = 0.3
    #: Part of the deadline kept for sending the answer after the CRM look-up.
    reply_reserve: float = 0.1
    #: Incremental sync period: the phonebook is never staler than this.
    freshness: float = 30.0
    #: How long "no CRM entity has this number" is believed.
    miss_ttl: float = 300.0
    #: After a failed CRM look-up, no new look-ups for this long (the CRM is down).
    crm_backoff: float = 5.0
    #: At most this many CRM look-ups in flight; more misses answer the fallback at once.
    max_crm_lookups: int = 8
    default_region: str = "RU"
    timezone: str = "UTC"
    excluded_users: tuple[int, ...] = ()
    excluded_extensions: tuple[str, ...] = ()
    blacklist: tuple[str, ...] = ()
    #: Entity types searched in this order for the caller's responsible and name.
    entity_priority: tuple[str, ...] = ("contact", "company", "lead")
    set_caller_name: bool = True
    #: Also set the CRM entity (``contact:15``) and responsible user id variables.
    crm_variables: bool = False
    routes: tuple[RouteRule, ...] = ()
    default_route: RouteRule = RouteRule()
    variables: Variables = Variables()
    # the snippet
    context: str = "callbridge-route"
    #: ``return`` (Custom Destination with Return = Yes) or ``context,exten,priority``.
    fallback: str = "return"
    dial_extension: str = "PJSIP/{ext}"
    dial_mobile: str = "Local/{mobile}@from-internal"
    dial_options: str = "tr"
    blacklist_action: str = "Hangup(21)"
    scripts: Mapping[str, str] = field(default_factory=lambda: dict(_SCRIPTS))

    @property
    def agi_host(self) -> str:
        return self.public_host or self.listen_host

    @property
    def agi_port(self) -> int:
        return self.public_port or self.listen_port

    @property
    def lookup_budget(self) -> float:
        return max(0.0, self.deadline - self.reply_reserve)

    def route_for(self, did: str) -> RouteRule:
        did = did.strip()
        for rule in self.routes:
            if did in rule.dids:
                return rule
        return self.default_route

    def with_listen(self, host: str, port: int) -> RoutingSettings:
        return replace(self, listen_host=host, listen_port=port)

    @classmethod
    def from_mapping(
        cls, agi: Mapping[str, Any] | None = None, routing: Mapping[str, Any] | None = None
    ) -> RoutingSettings:
        """Build from the ``[agi]`` and ``[routing]`` tables; raises
        :class:`RoutingSettingsError` listing every bad key."""
        errors: list[str] = []
        values: dict[str, Any] = {}
        # None = "not given" (a pydantic section dumps its unset optional keys as None).
        agi = {k: v for k, v in (agi or {}).items() if v is not None}
        routing = {k: v for k, v in (routing or {}).items() if v is not None}
        _agi_keys = {
            "listen": None,
            "public_host": "public_host",
            "public_port": "public_port",
            "session_deadline": "session_deadline",
        }
        for key, value in agi.items():
            if key == "listen":
                host, sep, port = str(value).rpartition(":")
                if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
                    errors.append(f"[agi] listen = {value!r}: expected HOST:PORT")
                else:
                    values["listen_host"] = host.strip("[]") or "127.0.0.1"
                    values["listen_port"] = int(port)
            elif key in _agi_keys:
                values[key] = value
            else:
                errors.append(f"[agi] {key}: unknown key")
        simple = {
            f.name
            for f in fields(cls)
            if f.name
            not in {
                "listen_host",
                "listen_port",
                "public_host",
                "public_port",
                "session_deadline",
                "routes",
                "default_route",
                "variables",
                "scripts",
            }
        }
        tuples = {
            "excluded_users",
            "excluded_extensions",
            "blacklist",
            "entity_priority",
        }
        for key, value in routing.items():
            if key in tuples:
                if not isinstance(value, list | tuple):
                    errors.append(f"[routing] {key} = {value!r}: expected a list")
                    continue
                values[key] = tuple(int(v) if key == "excluded_users" else str(v) for v in value)
            elif key in simple:
                values[key] = value
            elif key == "variables":
                known = {f.name for f in fields(Variables)}
                bad = [k for k in value if k not in known]
                errors += [f"[routing.variables] {k}: unknown key" for k in bad]
                names = {k: str(v) for k, v in value.items() if k in known}
                for k, v in names.items():
                    if not v.replace("_", "").isalnum() or not v[:1].isalpha():
                        errors.append(f"[routing.variables] {k} = {v!r}: not a variable name")
                values["variables"] = Variables(**names)
            elif key == "scripts":
                values["scripts"] = {**cls().scripts, **{str(k): str(v) for k, v in value.items()}}
            elif key in ("routes", "default"):
                pass
            else:
                errors.append(f"[routing] {key}: unknown key")
        timezone = str(routing.get("timezone", "UTC"))
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(f"[routing] timezone = {timezone!r}: unknown timezone")
            timezone = "UTC"
        if "default" in routing:
            rule = _rule(routing["default"], "[routing.default]", timezone, errors, default=True)
            if rule is not None:
                values["default_route"] = rule
        routes: list[RouteRule] = []
        for index, raw in enumerate(routing.get("routes", []) or []):
            rule = _rule(raw, f"[[routing.routes]] #{index + 1}", timezone, errors)
            if rule is not None:
                routes.append(rule)
        values["routes"] = tuple(routes)
        for name in ("deadline", "session_deadline", "freshness", "miss_ttl", "crm_backoff"):
            if name in values and not (isinstance(values[name], int | float) and values[name] > 0):
                errors.append(f"[routing] {name} = {values[name]!r}: expected a positive number")
        if errors:
            raise RoutingSettingsError("\n".join(errors))
        settings = cls(**values)
        if settings.deadline >= settings.session_deadline:
            raise RoutingSettingsError(
                f"[routing] deadline = {settings.deadline}: must be below "
                f"[agi] session_deadline = {settings.session_deadline}"
            )
        return settings


def _rule(
    raw: Any, key: str, timezone: str, errors: list[str], default: bool = False
) -> RouteRule | None:
    if not isinstance(raw, Mapping):
        errors.append(f"{key}: expected a table")
        return None
    known = {
        "name",
        "dids",
        "destination",
        "unknown",
        "ring_time",
        "mobile_ring_time",
        "hours",
        "holidays",
        "after_hours",
        "timezone",
    }
    for extra in set(raw) - known:
        errors.append(f"{key} {extra}: unknown key")
    try:
        dids: Iterable[Any] = raw.get("dids", [])
        if not default and not dids:
            errors.append(f"{key} dids: a route needs at least one DID")
        schedule = None
        if "hours" in raw:
            schedule = parse_schedule(
                raw["hours"],
                raw.get("holidays", []),
                str(raw.get("timezone", timezone)),
                key=f"{key} hours",
            )
        unknown = Destination.parse(raw.get("unknown", "fallback"), f"{key} unknown")
        if unknown.kind in (DestinationKind.MANAGER, DestinationKind.MANAGER_MOBILE):
            errors.append(f"{key} unknown: cannot be the manager (there is none)")
        rule = RouteRule(
            name=str(raw.get("name", "default" if default else key)),
            dids=tuple(str(d).strip() for d in dids),
            destination=Destination.parse(raw.get("destination", "manager"), f"{key} destination"),
            unknown=unknown,
            ring_time=int(raw.get("ring_time", 20)),
            mobile_ring_time=int(raw.get("mobile_ring_time", 25)),
            schedule=schedule,
            after_hours=Destination.parse(raw.get("after_hours", "fallback"), f"{key} after_hours"),
        )
    except (RoutingSettingsError, ScheduleError) as exc:
        errors.append(f"{key}: {exc}" if not str(exc).startswith(key) else str(exc))
        return None
    except (TypeError, ValueError) as exc:
        errors.append(f"{key}: {exc}")
        return None
    if rule.ring_time <= 0 or rule.mobile_ring_time <= 0:
        errors.append(f"{key}: ring times must be positive seconds")
    return rule


def _section(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        data = dump()
        return dict(data) if isinstance(data, Mapping) else {}
    return dict(value) if isinstance(value, Mapping) else {}


def settings_from_config(config: Any) -> RoutingSettings:
    """Settings from a loaded :class:`callbridge.config.Config`.

    Reads its ``agi`` and ``routing`` sections when the config has them (pydantic models
    or plain tables); ``[rules] default_region`` and ``exception_extensions`` fill the
    routing keys of the same meaning when those are not given.
    """
    agi = _section(getattr(config, "agi", None))
    routing = _section(getattr(config, "routing", None))
    rules = getattr(config, "rules", None)
    if rules is not None:
        routing.setdefault("default_region", getattr(rules, "default_region", "RU"))
        exceptions = list(getattr(rules, "exception_extensions", []) or [])
        if exceptions and "excluded_extensions" not in routing:
            routing["excluded_extensions"] = exceptions
    return RoutingSettings.from_mapping(agi, routing)
