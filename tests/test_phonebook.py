"""The local phonebook: number keys, the SQLite tables, full and incremental sync, CRM
events, remembered misses and the once-per-number CRM look-up within a budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.routing.numbers import bitrix_key, phone_key
from callbridge.routing.phonebook import LookupState, Phonebook, SyncProgress
from callbridge.routing.source import Bitrix24PhonebookSource
from callbridge.store.db import connect
from callbridge.store.phonebook import PhonebookEntity, PhonebookStore, PhonebookUser
from tests.test_phonebook_portal import MiniPortal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, portal: MiniPortal | None = None, **kw: object) -> tuple[Phonebook, Clock]:
    clock = Clock()
    store = PhonebookStore(connect(tmp_path / "pb.sqlite3"))
    source = Bitrix24PhonebookSource(portal.call) if portal else None
    return Phonebook(store, source, clock=clock, **kw), clock  # type: ignore[arg-type]


# ------------------------------------------------------------------ the number zoo

ZOO = [
    "+7 (916) 123-45-67",
    "+79161234567",
    "79161234567",
    "89161234567",
    "8 916 123 45 67",
    "8(916)123-45-67",
    "8-916-123-45-67",
    "9161234567",
    "+7 916 123-45-67 доб. 12",
    "+7 916 1234567 ext. 5",
    "+79161234567;ext=3",
    "+79161234567#44",
    "+8 916 123-45-67",
    "  +7-916-123-4567  ",
    "7 916 123 45 67",
]


@pytest.mark.parametrize("spelling", ZOO)
def test_every_spelling_of_one_number_has_one_key(spelling: str) -> None:
    assert phone_key(spelling) == "79161234567"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("+49 30 1234567", "49301234567"),
        ("0049 30 1234567", "49301234567"),
        ("810 49 30 1234567", "49301234567"),
        ("101", "101"),
        ("", ""),
        ("anonymous", ""),
    ],
)
def test_foreign_and_short_numbers(raw: str, key: str) -> None:
    assert phone_key(raw) == key


def test_bitrix_matching_rules_of_reference_6_2() -> None:
    assert bitrix_key("+7 (900) 123-45-67") == bitrix_key("89001234567") == "79001234567"
    assert bitrix_key("9001234567") == "9001234567"  # no country code: no match in Bitrix
    assert bitrix_key("+8 900 123 4567") == "89001234567"  # "+8" → "008…" → "00" stripped
    assert bitrix_key("+79001234567#12") == "79001234567"


@settings(derandomize=True, deadline=None, max_examples=200)
@given(
    st.from_regex(r"9[0-9]{9}", fullmatch=True),
    st.sampled_from(["+7{}", "8{}", "7{}", "+7 ({}) ", "8 {}"]),
)
def test_any_mobile_in_any_spelling_keys_to_7_prefixed(national: str, shape: str) -> None:
    if "(" in shape:
        text = f"+7 ({national[:3]}) {national[3:6]}-{national[6:8]}-{national[8:]}"
    elif " " in shape:
        text = f"8 {national[:3]} {national[3:]}"
    else:
        text = shape.format(national)
    assert phone_key(text) == "7" + national


# ------------------------------------------------------------------ the store


def test_store_replaces_an_entity_with_all_its_phones(tmp_path: Path) -> None:
    store = PhonebookStore(connect(tmp_path / "s.sqlite3"))
    ivan = PhonebookEntity("contact", 15, "Ivan Petrov", 7)
    store.put_entity(ivan, [("79161234567", "+7 916 123-45-67"), ("74951234567", "495")])
    assert store.entities_by_key("74951234567") == [ivan]
    store.put_entity(ivan, [("79161234567", "+7 916 123-45-67")])
    assert store.entities_by_key("74951234567") == []
    assert store.phones_of("contact", 15) == ["79161234567"]
    assert store.delete_entity("contact", 15)
    assert store.entities_by_key("79161234567") == []
    assert store.phones_of("contact", 15) == []  # cascade


def test_store_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = PhonebookStore(connect(path))
    store.put_users([PhonebookUser(7, "Olga", "102", "+79160000002", True)])
    store.put_entity(PhonebookEntity("lead", 3, "Lead", 7), [("79161234567", "x")])
    store.set_cursor("modified:lead", "2026-03-01T10:00:00+03:00")
    again = PhonebookStore(connect(path))
    assert again.user(7) == PhonebookUser(7, "Olga", "102", "+79160000002", True)
    assert again.entities_by_key("79161234567")[0].name == "Lead"
    assert again.cursor("modified:lead") == "2026-03-01T10:00:00+03:00"


def test_a_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = PhonebookStore(connect(tmp_path / "s.sqlite3"))
    with pytest.raises(RuntimeError), store.transaction():
        store.put_entity(PhonebookEntity("contact", 1, "A", None), [("1", "1")])
        raise RuntimeError("boom")
    assert store.count_entities() == 0


# ------------------------------------------------------------------ sync


def seeded_portal() -> MiniPortal:
    portal = MiniPortal()
    portal.add_user(7, "Olga Smirnova", "102", "+7 916 000-00-02")
    portal.add_user(8, "Gone Away", "103", None, active=False)
    portal.add("contact", 15, "Ivan Petrov", ["+7 (495) 123-45-67", "8 916 123 45 67"], 7)
    portal.add("company", 4, "Acme", ["+7 495 765-43-21"], 8)
    portal.add("lead", 3, "Petr Leadov", ["89031112233"], None)
    return portal


async def test_full_sync_fills_the_store_with_progress(tmp_path: Path) -> None:
    portal = seeded_portal()
    for i in range(100, 230):  # three pages of contacts
        portal.add("contact", i, f"C{i} X", [f"+7 999 000 {i:04d}"], 7)
    book, _ = make(tmp_path, portal)
    progress: list[SyncProgress] = []
    report = await book.full_sync(progress.append)
    assert report.users == 2
    assert report.entities == {"contact": 131, "company": 1, "lead": 1}
    assert [p.done for p in progress if p.stage == "contact"] == [50, 100, 131]
    assert progress[-1] == SyncProgress("done", 133)
    found = book.lookup_local("8 (495) 123-45-67")
    assert found is not None and found.state is LookupState.FOUND
    assert found.entities[0].name == "Ivan Petrov" and found.entities[0].responsible_id == 7
    assert book.user(8) == PhonebookUser(8, "Gone Away", "103", None, False)


async def test_full_sync_removes_what_the_crm_no_longer_has(tmp_path: Path) -> None:
    portal = seeded_portal()
    book, _ = make(tmp_path, portal)
    await book.full_sync()
    del portal.rows["company"][4]
    report = await book.full_sync()
    assert report.removed == 1
    assert book.lookup_local("+74957654321") is None


async def test_incremental_sync_asks_only_for_changes_since_the_cursor(tmp_path: Path) -> None:
    portal = seeded_portal()
    book, _ = make(tmp_path, portal)
    await book.full_sync()
    cursor = book.store.cursor("modified:contact")
    assert cursor
    portal.add("contact", 16, "New Client", ["+7 926 555 44 33"], 7)
    portal.calls.clear()
    applied = await book.incremental_sync()
    assert applied >= 1
    contact_calls = [p for m, p in portal.calls if m == "crm.contact.list"]
    assert contact_calls[0]["filter"][">=DATE_MODIFY"] == cursor
    hit = book.lookup_local("89265554433")
    assert hit is not None and hit.entities[0].id == 16


async def test_periodic_sync_runs_every_freshness_period_on_the_given_sleep(
    tmp_path: Path,
) -> None:
    portal = seeded_portal()
    ticks: asyncio.Queue[float] = asyncio.Queue()
    release = asyncio.Event()

    async def sleep(seconds: float) -> None:
        ticks.put_nowait(seconds)
        await release.wait()

    clock = Clock()
    book = Phonebook(
        PhonebookStore(connect(tmp_path / "pb.sqlite3")),
        Bitrix24PhonebookSource(portal.call),
        clock=clock,
        freshness=30.0,
        sleep=sleep,
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(book.run(stop))
    assert await ticks.get() == 30.0  # one sync done, waiting the freshness bound
    assert book.lookup_local("+74951234567") is not None
    portal.add("lead", 9, "Late Lead", ["+7 903 000 00 09"], 7)
    release.set()
    assert await ticks.get() == 30.0
    assert book.lookup_local("+79030000009") is not None
    stop.set()
    await runner


async def test_crm_events_add_update_delete(tmp_path: Path) -> None:
    portal = seeded_portal()
    book, _ = make(tmp_path, portal)
    portal.add("contact", 20, "Event Person", ["+7 916 777 66 55"], 7)
    assert await book.apply_crm_event("ONCRMCONTACTADD", {"FIELDS": {"ID": "20"}})
    hit = book.lookup_local("+79167776655")
    assert hit is not None and hit.entities[0].name == "Event Person"
    portal.add("contact", 20, "Renamed Person", ["+7 916 777 66 55"], 7)
    await book.apply_crm_event("onCrmContactUpdate", {"FIELDS": {"ID": 20}})
    hit = book.lookup_local("+79167776655")
    assert hit is not None and hit.entities[0].name == "Renamed Person"
    await book.apply_crm_event("ONCRMCONTACTDELETE", {"FIELDS": {"ID": "20"}})
    assert book.lookup_local("+79167776655") is None
    assert not await book.apply_crm_event("ONCRMDEALADD", {"FIELDS": {"ID": "1"}})
    with pytest.raises(ValueError, match="FIELDS"):
        await book.apply_crm_event("ONCRMLEADUPDATE", {"FIELDS": {}})


async def test_update_event_for_a_vanished_entity_removes_it(tmp_path: Path) -> None:
    portal = seeded_portal()
    book, _ = make(tmp_path, portal)
    await book.full_sync()
    del portal.rows["lead"][3]
    await book.apply_crm_event("ONCRMLEADUPDATE", {"FIELDS": {"ID": "3"}})
    assert book.lookup_local("89031112233") is None


# ------------------------------------------------------------------ look-ups


async def test_a_miss_asks_the_crm_once_and_is_remembered(tmp_path: Path) -> None:
    portal = seeded_portal()
    book, clock = make(tmp_path, portal, miss_ttl=60.0)
    first = await book.lookup("+7 999 123 00 00", 1.0)
    assert first.state is LookupState.MISSING and first.source == "crm"
    second = await book.lookup("8 999 123 00 00", 1.0)
    assert second.state is LookupState.MISSING and second.source == "miss-cache"
    assert [m for m, _ in portal.calls] == ["crm.duplicate.findbycomm"]
    clock.now += 61.0
    third = await book.lookup("+79991230000", 1.0)
    assert third.source == "crm"


async def test_a_number_unknown_locally_is_found_in_the_crm_and_kept(tmp_path: Path) -> None:
    portal = seeded_portal()
    book, _ = make(tmp_path, portal)
    found = await book.lookup("84951234567", 1.0)
    assert found.state is LookupState.FOUND and found.source == "crm"
    again = await book.lookup("+7 495 123 45 67", 1.0)
    assert again.source == "store" and again.entities == found.entities


async def test_a_hung_crm_answers_unavailable_within_budget_then_fills_later(
    tmp_path: Path,
) -> None:
    portal = seeded_portal()
    portal.gate = asyncio.Event()
    book, _ = make(tmp_path, portal)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(book.lookup("84951234567", 0.05) for _ in range(20)))
    assert loop.time() - started < 0.5
    assert {r.state for r in results} == {LookupState.UNAVAILABLE}
    assert len(portal.calls) == 1  # one look-up in flight per number
    portal.gate.set()
    await book.settle()
    later = await book.lookup("84951234567", 0.0)
    assert later.state is LookupState.FOUND and later.source == "store"


async def test_after_a_crm_failure_no_lookups_for_the_backoff(tmp_path: Path) -> None:
    portal = seeded_portal()
    portal.fail = True
    book, clock = make(tmp_path, portal, crm_backoff=5.0)
    assert (await book.lookup("+79990000001", 1.0)).state is LookupState.UNAVAILABLE
    assert (await book.lookup("+79990000002", 1.0)).state is LookupState.UNAVAILABLE
    assert len(portal.calls) == 1
    portal.fail = False
    clock.now += 5.1
    assert (await book.lookup("+79990000002", 1.0)).state is LookupState.MISSING
    assert book.crm_failures == 1


async def test_in_flight_lookups_are_capped(tmp_path: Path) -> None:
    portal = seeded_portal()
    portal.gate = asyncio.Event()
    book, _ = make(tmp_path, portal, max_crm_lookups=3)
    results = await asyncio.gather(*(book.lookup(f"+7999000000{i}", 0.01) for i in range(6)))
    assert {r.state for r in results} == {LookupState.UNAVAILABLE}
    assert len(portal.calls) == 3
    portal.gate.set()
    await book.close()
