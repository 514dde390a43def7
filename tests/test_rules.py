"""The rules as tables: number rewriting, normalisation, registration, users, status."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.calls import CallResult, CallStarted, CallSummary, Direction
from callbridge.config import RulesConfig
from callbridge.crm.base import CrmUser
from callbridge.rules import (
    DidRule,
    Registration,
    RuleConfigError,
    RuleSettings,
    Skip,
    UserDirectory,
    call_start_date,
    duration,
    external_call_id,
    finish_user,
    is_anonymous,
    normalise,
    parse_rewrite,
    registration,
    settings_from_config,
    status_code,
    unmapped_extensions,
)
from callbridge.rules.numbers import RewriteRule

DIRECTORY = UserDirectory.from_users(
    [
        CrmUser(11, "a", "101", None, True),
        CrmUser(12, "b", "102", None, True),
        CrmUser(14, "gone", "104", None, False),
    ]
)


@pytest.mark.parametrize(
    ("template", "number", "expected"),
    [
        ("7${DIAL_NUMBER}", "9161234567", "79161234567"),
        ("${DIAL_NUMBER:2}", "0079161234567", "79161234567"),
        ("${DIAL_NUMBER:1:10}", "89161234567", "9161234567"),
        ("${DIAL_NUMBER:-10}", "89161234567", "9161234567"),
        ("+7${DIAL_NUMBER:1}", "89161234567", "+79161234567"),
        ("${DIAL_NUMBER:0:-2}", "12345", "123"),
        ("${DIAL_NUMBER:20}", "12345", ""),
    ],
)
def test_rewrite_templates(template: str, number: str, expected: str) -> None:
    assert parse_rewrite(template).apply(number) == expected


@pytest.mark.parametrize(
    "template",
    ["${CALLERID(num)}", "7${DIAL_NUMBER", "x${DIAL_NUMBER}", "${DIAL_NUMBER:a}", "7"],
)
def test_bad_rewrite_is_a_config_error_naming_the_key(template: str) -> None:
    with pytest.raises(RuleConfigError, match=r"^\[rules\] number_rewrite: "):
        parse_rewrite(template)


@given(st.text(alphabet="0123456789", max_size=15), st.integers(-20, 20))
@settings(derandomize=True, deadline=None)
def test_rewrite_offset_matches_python_slicing(number: str, offset: int) -> None:
    template = f"${{DIAL_NUMBER:{offset}}}"
    # Asterisk's ${VAR:offset} clamps like Python slicing does
    assert parse_rewrite(template).apply(number) == number[offset:]


@pytest.mark.parametrize(
    ("raw", "rewrites", "expected"),
    [
        ("74951234567", (), "+74951234567"),
        ("84951234567", (), "+74951234567"),
        ("+7 (495) 123-45-67", (), "+74951234567"),
        ("4951234567", (), "+74951234567"),
        ("9161234567", (RewriteRule(None, parse_rewrite("7${DIAL_NUMBER}")),), "+79161234567"),
        ("+14155550123", (), "+14155550123"),
        ("101", (), "101"),  # not a possible number: kept as digits, never dropped
    ],
)
def test_normalise(raw: str, rewrites: tuple[RewriteRule, ...], expected: str) -> None:
    assert normalise(raw, "RU", rewrites) == expected


@pytest.mark.parametrize(
    ("number", "anonymous"),
    [(None, True), ("", True), ("<unknown>", True), ("Anonymous", True), ("74951234567", False)],
)
def test_anonymous_numbers(number: str | None, anonymous: bool) -> None:
    assert is_anonymous(number) is anonymous


def started(direction: Direction, **kw: Any) -> CallStarted:
    base = CallStarted("c1", 0.0, direction, "74951234567", "74957654321", "101")
    return replace(base, **kw)


@pytest.mark.parametrize(
    ("settings_kw", "event", "expected"),
    [
        ({}, started(Direction.INBOUND), (2, None, True)),
        ({"register_inbound": False}, started(Direction.INBOUND), "skip"),
        ({"dids": {"74957654321": DidRule(register=False)}}, started(Direction.INBOUND), "skip"),
        (
            {"register_inbound": False, "dids": {"74957654321": DidRule(register=True)}},
            started(Direction.INBOUND),
            (2, None, True),
        ),
        (
            {"dids": {"74957654321": DidRule(to_mobile=True, line="7", crm_create=False)}},
            started(Direction.INBOUND),
            (3, "7", False),
        ),
        ({}, started(Direction.INBOUND, tags={"CALLBACK": "1"}), (4, None, True)),
        ({}, started(Direction.OUTBOUND), (1, None, True)),
        ({"register_outbound": False}, started(Direction.OUTBOUND), "skip"),
        ({}, started(Direction.INTERNAL, external_number=None), "skip"),
        ({"exception_extensions": frozenset({"101"})}, started(Direction.OUTBOUND), "skip"),
        ({}, started(Direction.INBOUND, external_number="anonymous"), "skip"),
    ],
)
def test_registration_table(settings_kw: dict[str, Any], event: CallStarted, expected: Any) -> None:
    decision = registration(RuleSettings(**settings_kw), event)
    if expected == "skip":
        assert isinstance(decision, Skip) and decision.reason
    else:
        assert isinstance(decision, Registration)
        assert (decision.call_type, decision.line, decision.crm_create) == expected
        assert decision.external_call_id == "callbridge-c1"


def test_outbound_routes_match_the_dialled_number() -> None:
    config = RulesConfig(
        outbound_routes=[
            {"name": "intl", "pattern": r"810\d+", "register": False},
            {"name": "city", "pattern": r"[78]495\d{7}", "line": "city"},
        ],
    )
    rules = settings_from_config(config)
    intl = registration(rules, started(Direction.OUTBOUND, external_number="81014155550123"))
    city = registration(rules, started(Direction.OUTBOUND, external_number="84951112233"))
    assert isinstance(intl, Skip) and "intl" in intl.reason
    assert isinstance(city, Registration) and city.line == "city"


@pytest.mark.parametrize(
    ("result", "cause", "code"),
    [
        (CallResult.ANSWERED, 16, "200"),
        (CallResult.MISSED, 127, "304"),
        (CallResult.NOT_ANSWERED, 16, "304"),
        (CallResult.BUSY, 17, "486"),
        (CallResult.FAILED, 17, "486"),
        (CallResult.FAILED, 1, "404"),
        (CallResult.FAILED, 34, "503"),
        (CallResult.FAILED, 19, "480"),
        (CallResult.FAILED, None, "603"),
        (None, None, "OTHER"),
    ],
)
def test_status_code_table(result: CallResult | None, cause: int | None, code: str) -> None:
    assert status_code(result, cause) == code


def summary(**kw: Any) -> CallSummary:
    base = CallSummary(
        "c1",
        Direction.INBOUND,
        "74951234567",
        "74957654321",
        None,
        ["101", "102"],
        True,
        "101",
        None,
        "101",
        CallResult.ANSWERED,
        [],
        0.0,
        10.0,
        52.4,
        [],
        16,
    )
    return replace(base, **kw)


MISSED = {"answered": False, "answered_by": None, "final_operator": None, "answer": None}


@pytest.mark.parametrize(
    ("policy", "kw", "user", "talk"),
    [
        ("last_rung", {}, 11, 42),
        ("last_rung", {"final_operator": "102"}, 12, 42),
        ("last_rung", {"final_operator": "104", "answered_by": "104"}, 1, 42),  # inactive
        ("last_rung", {**MISSED, "result": CallResult.MISSED}, 12, 0),
        ("last_rung", {**MISSED, "rang": ["102", "104"], "result": CallResult.MISSED}, 12, 0),
        ("default", {**MISSED, "result": CallResult.MISSED}, 1, 0),
        ("responsible", {**MISSED, "result": CallResult.MISSED}, 1, 0),  # outbox resolves
        (
            "default",
            {**MISSED, "direction": Direction.OUTBOUND, "operator": "102", "rang": []},
            12,
            0,
        ),
    ],
)
def test_finish_user_and_duration(policy: Any, kw: dict[str, Any], user: int, talk: int) -> None:
    rules = RuleSettings(missed_call_user=policy)
    done = summary(**kw)
    assert finish_user(rules, DIRECTORY, done) == user
    assert duration(done) == talk


def test_start_date_iso_with_offset_and_external_id() -> None:
    rules = settings_from_config(RulesConfig())
    assert call_start_date(rules, 1_700_000_000.0) == "2023-11-14T22:13:20+00:00"
    moscow = replace(rules, timezone=ZoneInfo("Europe/Moscow"))
    assert call_start_date(moscow, 1_700_000_000.0) == "2023-11-15T01:13:20+03:00"
    assert external_call_id(rules, "1712345.12") == external_call_id(rules, "1712345.12")
    assert external_call_id(rules, "1712345.12") != external_call_id(rules, "1712345.13")


def test_unmapped_extensions_listed_for_the_start_warning() -> None:
    assert unmapped_extensions(["101", "104", "105", "102"], DIRECTORY) == ["104", "105"]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"number_rewrite": "${EXTEN}"}, "number_rewrite"),
        ({"default_region": "XX"}, "default_region"),
        ({"anonymous_number": "none"}, "anonymous_number"),
    ],
)
def test_config_errors_name_the_key(override: dict[str, Any], key: str) -> None:
    config = RulesConfig.model_validate(override)
    with pytest.raises(RuleConfigError) as info:
        settings_from_config(config)
    assert info.value.key == key
