"""The routing decision as a pure function: caller facts in, channel variables out.

No I/O here: the route script gathers the facts (phonebook look-up, users, the instant)
and :func:`decide` says where the call goes and what the phone shows. Every path ends in
a :class:`Decision`; when nothing better is known it is the fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from callbridge.routing.phonebook import Lookup, LookupState
from callbridge.routing.settings import (
    Destination,
    DestinationKind,
    RouteRule,
    RoutingSettings,
    Variables,
)
from callbridge.store.phonebook import PhonebookEntity, PhonebookUser

__all__ = ["Decision", "Result", "caller_name", "choose_entity", "decide", "dialable"]


class Result(StrEnum):
    FOUND = "found"
    FALLBACK = "fallback"
    BLACKLISTED = "blacklisted"
    ERROR = "error"


_KIND = {
    DestinationKind.EXTENSION: "ext",
    DestinationKind.QUEUE: "queue",
    DestinationKind.GROUP: "group",
    DestinationKind.IVR: "ivr",
}


@dataclass(frozen=True, slots=True)
class Decision:
    result: Result
    kind: str = ""  # ext | queue | group | ivr
    route_to: str = ""
    mobile: str = ""
    ring_time: int = 0
    mobile_ring_time: int = 0
    caller_name: str = ""
    entity: str = ""  # contact:15
    responsible_id: int | None = None
    reason: str = ""

    def variables(self, names: Variables, crm_details: bool = True) -> list[tuple[str, str]]:
        """``(name, value)`` pairs to set, empty values left out (the snippet clears
        every variable before calling, so an unset one reads as empty). Each is one
        round trip to Asterisk, so the kind is left out for an extension (the snippet's
        default) and the CRM entity/responsible only sent when ``crm_details``."""
        pairs = [
            (names.result, self.result.value),
            (names.kind, "" if self.kind == "ext" else self.kind),
            (names.route_to, self.route_to),
            (names.mobile, self.mobile),
            (names.ring_time, str(self.ring_time) if self.ring_time else ""),
            (names.mobile_ring_time, str(self.mobile_ring_time) if self.mobile else ""),
            (names.caller_name, self.caller_name),
        ]
        if crm_details:
            pairs += [
                (names.entity, self.entity),
                (names.responsible, str(self.responsible_id or "")),
            ]
        if self.result is Result.BLACKLISTED:
            pairs.append((names.blacklisted, "1"))
        return [(n, v) for n, v in pairs if v]


def fallback(reason: str, name: str = "", entity: str = "") -> Decision:
    return Decision(Result.FALLBACK, caller_name=name, entity=entity, reason=reason)


def dialable(number: str | None) -> str:
    """Digits and a leading ``+`` only: a CRM value never reaches ``Dial()`` as syntax."""
    if not number:
        return ""
    text = number.strip()
    digits = "".join(c for c in text if c.isdigit())
    return ("+" + digits if text.startswith("+") else digits) if digits else ""


def caller_name(name: str, limit: int = 64) -> str:
    """A CRM name fit for ``CALLERID(name)``: control characters dropped, spaces folded."""
    cleaned = "".join(c if c.isprintable() else " " for c in name)
    return " ".join(cleaned.split())[:limit]


def choose_entity(
    entities: Sequence[PhonebookEntity], priority: Sequence[str]
) -> PhonebookEntity | None:
    """The entity that speaks for the caller: by type priority, then one with a
    responsible user, then the oldest (lowest id) — stable across calls."""
    if not entities:
        return None

    def rank(e: PhonebookEntity) -> tuple[int, int, int]:
        order = priority.index(e.type) if e.type in priority else len(priority)
        return (order, 0 if e.responsible_id else 1, e.id)

    return min(entities, key=rank)


def _plain(dest: Destination, rule: RouteRule, name: str, entity: str, reason: str) -> Decision:
    if dest.kind is DestinationKind.FALLBACK:
        return fallback(reason, name, entity)
    kind = _KIND[dest.kind]
    return Decision(
        Result.FOUND,
        kind=kind,
        route_to=dest.target,
        ring_time=rule.ring_time if kind == "ext" else 0,
        caller_name=name,
        entity=entity,
        reason=reason,
    )


def routable(user: PhonebookUser | None, settings: RoutingSettings) -> str:
    """Why ``user`` cannot take the call (``""`` when they can)."""
    if user is None:
        return "responsible user unknown"
    if not user.active:
        return "responsible user inactive"
    if user.id in settings.excluded_users:
        return "responsible user excluded"
    ext = dialable(user.extension)
    if not ext:
        return "responsible user has no extension"
    if ext in settings.excluded_extensions:
        return "responsible extension excluded"
    return ""


def decide(
    settings: RoutingSettings,
    rule: RouteRule,
    lookup: Lookup,
    user_of: Callable[[int], PhonebookUser | None],
    now: datetime,
    blacklisted: bool = False,
) -> Decision:
    """Where the call goes, for the caller ``lookup`` found, at instant ``now``."""
    if blacklisted:
        return Decision(Result.BLACKLISTED, reason="caller blacklisted")
    entity = (
        choose_entity(lookup.entities, settings.entity_priority)
        if lookup.state is LookupState.FOUND
        else None
    )
    name = caller_name(entity.name) if entity else ""
    ref = f"{entity.type}:{entity.id}" if entity else ""
    dest = rule.destination
    if rule.schedule is not None and not rule.schedule.is_open(now):
        dest = rule.after_hours
        if dest.kind not in (DestinationKind.MANAGER, DestinationKind.MANAGER_MOBILE):
            return _plain(dest, rule, name, ref, "after hours")
    if dest.kind not in (DestinationKind.MANAGER, DestinationKind.MANAGER_MOBILE):
        return _plain(dest, rule, name, ref, "fixed destination")
    if lookup.state is LookupState.UNAVAILABLE:
        return fallback("CRM did not answer in time")
    if entity is None:
        return _plain(rule.unknown, rule, name, ref, "caller not in the CRM")
    if entity.responsible_id is None:
        return _plain(rule.unknown, rule, name, ref, "no responsible user")
    user = user_of(entity.responsible_id)
    why_not = routable(user, settings)
    if why_not or user is None:
        return _plain(rule.unknown, rule, name, ref, why_not)
    mobile = dialable(user.mobile) if dest.kind is DestinationKind.MANAGER_MOBILE else ""
    return Decision(
        Result.FOUND,
        kind="ext",
        route_to=dialable(user.extension),
        mobile=mobile,
        ring_time=rule.ring_time,
        mobile_ring_time=rule.mobile_ring_time if mobile else 0,
        caller_name=name,
        entity=ref,
        responsible_id=user.id,
        reason="responsible manager",
    )
