"""Routing decisions (pure): destinations, responsible users, schedules, settings errors."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from callbridge.routing.decide import Decision, Result, caller_name, choose_entity, decide
from callbridge.routing.phonebook import Lookup, LookupState
from callbridge.routing.schedule import Schedule, ScheduleError, parse_schedule
from callbridge.routing.settings import (
    Destination,
    DestinationKind,
    RouteRule,
    RoutingSettings,
    RoutingSettingsError,
    Variables,
)
from callbridge.store.phonebook import PhonebookEntity, PhonebookUser

OLGA = PhonebookUser(7, "Olga Smirnova", "102", "+7 916 000-00-02", True)
GONE = PhonebookUser(8, "Gone Away", "103", "+79160000003", False)
NOEXT = PhonebookUser(9, "No Extension", None, None, True)
USERS = {u.id: u for u in (OLGA, GONE, NOEXT)}
IVAN = PhonebookEntity("contact", 15, "Ivan Petrov", 7)
NOON_MONDAY = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # 12:00 in Moscow


def found(*entities: PhonebookEntity) -> Lookup:
    return Lookup(LookupState.FOUND, "74951234567", entities)


def run(
    rule: RouteRule,
    lookup: Lookup,
    settings: RoutingSettings | None = None,
    now: datetime = NOON_MONDAY,
    blacklisted: bool = False,
) -> Decision:
    return decide(settings or RoutingSettings(), rule, lookup, USERS.get, now, blacklisted)


def test_known_caller_goes_to_their_manager() -> None:
    d = run(RouteRule(), found(IVAN))
    assert (d.result, d.kind, d.route_to, d.mobile, d.ring_time) == (
        Result.FOUND,
        "ext",
        "102",
        "",
        20,
    )
    assert d.caller_name == "Ivan Petrov" and d.entity == "contact:15" and d.responsible_id == 7


def test_extension_and_mobile() -> None:
    rule = RouteRule(destination=Destination(DestinationKind.MANAGER_MOBILE), mobile_ring_time=40)
    d = run(rule, found(IVAN))
    assert (d.route_to, d.mobile, d.mobile_ring_time) == ("102", "+79160000002", 40)


@pytest.mark.parametrize(
    ("responsible", "reason"),
    [
        (8, "responsible user inactive"),
        (9, "responsible user has no extension"),
        (99, "responsible user unknown"),
        (None, "no responsible user"),
    ],
)
def test_a_manager_who_cannot_take_calls_is_never_routed_to(
    responsible: int | None, reason: str
) -> None:
    entity = PhonebookEntity("contact", 15, "Ivan Petrov", responsible)
    d = run(RouteRule(), found(entity))
    assert d.result is Result.FALLBACK and d.reason == reason
    assert d.route_to == "" and d.caller_name == "Ivan Petrov"


def test_excluded_users_and_extensions_are_never_routed_to() -> None:
    by_user = run(RouteRule(), found(IVAN), RoutingSettings(excluded_users=(7,)))
    by_ext = run(RouteRule(), found(IVAN), RoutingSettings(excluded_extensions=("102",)))
    assert by_user.result is by_ext.result is Result.FALLBACK


def test_unknown_caller_takes_the_rules_unknown_destination() -> None:
    rule = RouteRule(unknown=Destination(DestinationKind.QUEUE, "700"))
    d = run(rule, Lookup(LookupState.MISSING, "1"))
    assert (d.result, d.kind, d.route_to, d.ring_time) == (Result.FOUND, "queue", "700", 0)
    plain = run(RouteRule(), Lookup(LookupState.MISSING, "1"))
    assert plain.result is Result.FALLBACK and plain.variables(Variables()) == [
        ("CB_RESULT", "fallback")
    ]


def test_crm_unavailable_is_the_fallback() -> None:
    rule = RouteRule(unknown=Destination(DestinationKind.QUEUE, "700"))
    d = run(rule, Lookup(LookupState.UNAVAILABLE, "1"))
    assert d.result is Result.FALLBACK and d.reason == "CRM did not answer in time"


@pytest.mark.parametrize(
    ("dest", "kind", "target"),
    [("extension:105", "ext", "105"), ("group:600", "group", "600"), ("ivr:3", "ivr", "3")],
)
def test_fixed_destinations_keep_the_caller_name(dest: str, kind: str, target: str) -> None:
    d = run(RouteRule(destination=Destination.parse(dest)), found(IVAN))
    assert (d.result, d.kind, d.route_to, d.caller_name) == (
        Result.FOUND,
        kind,
        target,
        "Ivan Petrov",
    )


def test_blacklisted_wins_over_everything() -> None:
    d = run(RouteRule(), found(IVAN), blacklisted=True)
    assert d.result is Result.BLACKLISTED
    assert ("CB_BLACKLISTED", "1") in d.variables(Variables())


def test_entity_priority_then_responsible_then_lowest_id() -> None:
    lead = PhonebookEntity("lead", 1, "Lead", 7)
    company = PhonebookEntity("company", 4, "Acme", 7)
    orphan = PhonebookEntity("contact", 2, "Orphan", None)
    contact = PhonebookEntity("contact", 30, "Owned", 7)
    order = ("contact", "company", "lead")
    assert choose_entity([lead, company, orphan, contact], order) == contact
    assert choose_entity([lead, company], order) == company
    assert choose_entity([lead, company], ("lead", "company")) == lead
    assert choose_entity([], order) is None


def test_caller_name_is_cleaned() -> None:
    assert caller_name("Ivan\r\n\tPetrov\x00  Jr") == "Ivan Petrov Jr"
    assert len(caller_name("x" * 500)) == 64


def test_mobile_reaches_dial_as_digits_only() -> None:
    users = {7: PhonebookUser(7, "O", "102", "+7 (916) 000-00-02; DROP", True)}
    rule = RouteRule(destination=Destination(DestinationKind.MANAGER_MOBILE))
    d = decide(RoutingSettings(), rule, found(IVAN), users.get, NOON_MONDAY)
    assert d.mobile == "+79160000002"


# ------------------------------------------------------------------ schedules

OFFICE = parse_schedule(
    {"mon": ["09:00-13:00", "14:00-18:00"], "fri": "09:00-17:00", "sat": ["22:00-06:00"]},
    holidays=["2026-03-09"],
    timezone="Europe/Moscow",
)


@pytest.mark.parametrize(
    ("utc", "open_"),
    [
        (datetime(2026, 3, 2, 6, 0, tzinfo=UTC), True),  # Mon 09:00 MSK
        (datetime(2026, 3, 2, 5, 59, tzinfo=UTC), False),  # Mon 08:59
        (datetime(2026, 3, 2, 10, 30, tzinfo=UTC), False),  # Mon 13:30 lunch
        (datetime(2026, 3, 2, 15, 0, tzinfo=UTC), False),  # Mon 18:00 end is exclusive
        (datetime(2026, 3, 9, 7, 0, tzinfo=UTC), False),  # Mon holiday
        (datetime(2026, 3, 3, 7, 0, tzinfo=UTC), False),  # Tue: no hours
        (datetime(2026, 3, 7, 20, 0, tzinfo=UTC), True),  # Sat 23:00 overnight span
        (datetime(2026, 3, 8, 2, 0, tzinfo=UTC), True),  # Sun 05:00, tail of Saturday's
        (datetime(2026, 3, 8, 3, 0, tzinfo=UTC), False),  # Sun 06:00
    ],
)
def test_schedule_in_the_routes_timezone(utc: datetime, open_: bool) -> None:
    assert OFFICE.is_open(utc) is open_


def test_schedule_needs_aware_time() -> None:
    with pytest.raises(ValueError):
        Schedule().is_open(datetime(2026, 3, 2, 12, 0))


@pytest.mark.parametrize(
    ("hours", "holidays", "tz", "message"),
    [
        ({"funday": ["09:00-10:00"]}, [], "UTC", "not a weekday"),
        ({"mon": ["9-10"]}, [], "UTC", "not HH:MM"),
        ({"mon": ["09:00"]}, [], "UTC", "HH:MM-HH:MM"),
        ({}, ["03/09/2026"], "UTC", "ISO date"),
        ({}, [], "Mars/Olympus", "unknown timezone"),
    ],
)
def test_schedule_errors_name_the_problem(
    hours: dict[str, list[str]], holidays: list[str], tz: str, message: str
) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_schedule(hours, holidays, tz)


def test_after_hours_destination() -> None:
    rule = RouteRule(schedule=OFFICE, after_hours=Destination(DestinationKind.IVR, "2"))
    evening = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    d = run(rule, found(IVAN), now=evening)
    assert (d.kind, d.route_to, d.reason) == ("ivr", "2", "after hours")
    assert run(rule, found(IVAN)).route_to == "102"
    assert OFFICE.holidays == frozenset({date(2026, 3, 9)})
    assert OFFICE.hours[4] == ((time(9), time(17)),)


# ------------------------------------------------------------------ settings


def test_settings_from_toml_tables() -> None:
    s = RoutingSettings.from_mapping(
        {"listen": "0.0.0.0:4574", "public_host": "10.0.0.5", "session_deadline": 3.0},
        {
            "deadline": 0.25,
            "timezone": "Europe/Moscow",
            "blacklist": ["+7 999 000 00 00"],
            "excluded_users": [1, "2"],
            "variables": {"route_to": "ROUTE_TO"},
            "default": {"destination": "manager+mobile", "unknown": "queue:700"},
            "routes": [
                {
                    "name": "sales",
                    "dids": ["74957654325"],
                    "destination": "manager",
                    "hours": {"mon": ["09:00-18:00"]},
                    "holidays": ["2026-01-01"],
                    "after_hours": "ivr:2",
                }
            ],
        },
    )
    assert (s.listen_host, s.listen_port, s.agi_host, s.agi_port) == (
        "0.0.0.0",
        4574,
        "10.0.0.5",
        4574,
    )
    assert s.variables.route_to == "ROUTE_TO" and s.excluded_users == (1, 2)
    assert s.route_for("74957654325").name == "sales"
    assert s.route_for("74957654325").schedule is not None
    assert s.route_for("other").unknown == Destination(DestinationKind.QUEUE, "700")
    assert s.lookup_budget == pytest.approx(0.15)


def test_settings_errors_name_every_bad_key() -> None:
    with pytest.raises(RoutingSettingsError) as info:
        RoutingSettings.from_mapping(
            {"listen": "nope", "colour": "red"},
            {
                "deadlin": 1,
                "deadline": -1,
                "timezone": "Nowhere/Land",
                "variables": {"route_to": "bad name"},
                "routes": [
                    {"dids": [], "destination": "teleport"},
                    {"dids": ["1"], "unknown": "manager"},
                ],
            },
        )
    text = str(info.value)
    for needle in (
        "[agi] listen",
        "[agi] colour",
        "[routing] deadlin",
        "[routing] deadline",
        "timezone",
        "route_to",
        "#1 dids",
        "teleport",
        "#2 unknown",
    ):
        assert needle in text, needle


def test_deadline_must_fit_in_the_session() -> None:
    with pytest.raises(RoutingSettingsError, match="session_deadline"):
        RoutingSettings.from_mapping({"session_deadline": 0.2}, {"deadline": 0.3})
