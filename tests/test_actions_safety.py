"""The whitelist that stands between Bitrix24 events and AMI headers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.actions.safety import (
    ClickLimiter,
    Refused,
    caller_id,
    check_extension,
    check_id,
    clean_display_name,
    normalise_number,
    quote_ami_value,
)

HOSTILE = [
    "74951234567\r\nAction: Hangup",
    "74951234567\n",
    "7495&123",
    "7495,123",
    "7495|123",
    "7495;123",
    "${SHELL(id)}",
    "7495)123",
    "(7495",
    "+7 (495) 123)",
    "74951234567\x00",
    "٣٣٣",  # Arabic-Indic digits are digits to Python, not to Asterisk
    "",
    "+",
    "++7495",
    "1" * 21,
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("74951234567", "74951234567"),
        ("+7 (495) 123-45-67", "74951234567"),
        ("+49.495.1234567", "494951234567"),
        ("8 800 555 35 35", "88005553535"),
    ],
)
def test_ordinary_numbers_are_normalised(raw: str, expected: str) -> None:
    assert normalise_number(raw) == expected


def test_plus_can_become_an_international_prefix() -> None:
    assert normalise_number("+494951234567", plus_replacement="00") == "00494951234567"
    assert normalise_number("+494951234567", plus_replacement="+") == "+494951234567"


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_numbers_are_refused(raw: str) -> None:
    with pytest.raises(Refused) as info:
        normalise_number(raw)
    assert info.value.what == "number"
    assert "\n" not in str(info.value)  # the reason is one log line


@pytest.mark.parametrize("raw", ["101\r\n", "10 1", "101;", "1${X}", "", "abc", "1" * 17, "+101"])
def test_hostile_extensions_are_refused(raw: str) -> None:
    with pytest.raises(Refused):
        check_extension(raw)


def test_extension_digits_pass() -> None:
    assert check_extension("101") == "101"


@pytest.mark.parametrize(
    "raw", ["a,b", "a\r\nb", "a;b", "a|b", "${X}", "a)b", "a b", "", "x" * 129, "a&b"]
)
def test_hostile_ids_are_refused(raw: str) -> None:
    with pytest.raises(Refused):
        check_id(raw)


def test_bitrix_call_ids_pass() -> None:
    call_id = "externalCall.89350264e026dace3f2b14d1f438257c.1773236989"
    assert check_id(call_id) == call_id


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Smith & Sons", "Smith & Sons"),
        ("Petrov, Ivan", "Petrov, Ivan"),
        ('Evil"\r\nAction: Hangup\r\n', "Evil Action: Hangup"),
        ("Tab\there", "Tab here"),
        ("A <b> \\c", "A b c"),
        ("${SHELL(rm -rf /)}", "$ {SHELL(rm -rf /)}"),
        ("\u202eRTL", "RTL"),
    ],
)
def test_display_names_are_cleaned_not_refused(raw: str, expected: str) -> None:
    assert clean_display_name(raw) == expected


def test_caller_id_quotes_the_name() -> None:
    assert caller_id("Petrov, Ivan", "74951234567") == '"Petrov, Ivan" <74951234567>'
    assert caller_id("", "74951234567") == '"74951234567" <74951234567>'
    with pytest.raises(Refused):
        caller_id("x", "1;2")
    with pytest.raises(Refused):
        quote_ami_value('a"b')


@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.text())
def test_whatever_a_number_is_what_passes_is_digits(raw: str) -> None:
    try:
        number = normalise_number(raw)
    except Refused:
        return
    assert number.isascii() and number.isdigit()


@settings(derandomize=True, deadline=None, max_examples=300)
@given(st.text())
def test_a_cleaned_name_never_breaks_a_header(raw: str) -> None:
    name = clean_display_name(raw)
    assert not any(c in name for c in '\r\n"\\<>\x00')
    assert len(name) <= 64
    quote_ami_value(name)  # never raises on a cleaned name


def test_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = ClickLimiter(rate=0.5, burst=3)
    assert [limiter.allow("15", 100.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("16", 100.0)  # per user
    assert not limiter.allow("15", 101.0)
    assert limiter.allow("15", 102.0)  # 2 s at 0.5/s = one click back
    assert not limiter.allow("15", 102.0)


def test_limiter_stays_bounded() -> None:
    limiter = ClickLimiter(rate=1.0, burst=1, max_keys=10)
    for n in range(100):
        limiter.allow(str(n), 0.0)
    assert len(limiter._buckets) <= 10
