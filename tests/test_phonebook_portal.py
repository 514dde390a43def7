"""A tiny in-process Bitrix24 portal for phonebook tests, and the checks that it answers
list calls the way the reference says (§3.4 keyset paging, §6.2 phone matching).

It stands in for the portal, not for any callbridge code: the phonebook's own Bitrix24
source (:class:`Bitrix24PhonebookSource`) runs unchanged on top of its ``call``. A gate
(a real :class:`asyncio.Event`) makes it hang until released; ``fail`` makes it refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from callbridge.crm.base import CrmError, ErrorKind
from callbridge.routing.numbers import bitrix_key
from callbridge.routing.source import Bitrix24PhonebookSource

PAGE = 50


class MiniPortal:
    def __init__(self) -> None:
        self.rows: dict[str, dict[int, dict[str, Any]]] = {"contact": {}, "company": {}, "lead": {}}
        self.users: dict[int, dict[str, Any]] = {}
        self.calls: list[tuple[str, Mapping[str, Any]]] = []
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.clock = 0  # DATE_MODIFY counter

    def stamp(self) -> str:
        self.clock += 1
        return f"2026-03-01T10:{self.clock // 60:02d}:{self.clock % 60:02d}+03:00"

    def add(
        self, entity_type: str, entity_id: int, name: str, phones: list[str], assigned: int | None
    ) -> None:
        row: dict[str, Any] = {
            "ID": str(entity_id),
            "ASSIGNED_BY_ID": str(assigned) if assigned else None,
            "DATE_MODIFY": self.stamp(),
            "PHONE": [
                {"ID": str(i), "VALUE": p, "VALUE_TYPE": "WORK", "TYPE_ID": "PHONE"}
                for i, p in enumerate(phones, 1)
            ],
        }
        if entity_type == "company":
            row["TITLE"] = name
        else:
            first, _, last = name.partition(" ")
            row["NAME"], row["LAST_NAME"] = first, last
            if entity_type == "lead":
                row["TITLE"] = f"Lead #{entity_id}"
        self.rows[entity_type][entity_id] = row

    def add_user(
        self, user_id: int, name: str, ext: str | None, mobile: str | None, active: bool = True
    ) -> None:
        first, _, last = name.partition(" ")
        self.users[user_id] = {
            "ID": str(user_id),
            "NAME": first,
            "LAST_NAME": last,
            "UF_PHONE_INNER": ext,
            "PERSONAL_MOBILE": mobile,
            "ACTIVE": active,
        }

    async def call(self, method: str, params: Mapping[str, Any]) -> Any:
        self.calls.append((method, params))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise CrmError(ErrorKind.RETRYABLE, "SERVER_NOT_AVAILABLE", "portal down")
        if method == "user.get":
            after = int(params.get("FILTER", {}).get(">ID", 0))
            ids = sorted(i for i in self.users if i > after)[:PAGE]
            return {"result": [self.users[i] for i in ids], "total": len(self.users)}
        if method == "crm.duplicate.findbycomm":
            key = bitrix_key(params["values"][0])
            found: dict[str, list[int]] = {}
            for entity_type, rows in self.rows.items():
                hits = [
                    i
                    for i, r in rows.items()
                    if any(bitrix_key(p["VALUE"]) == key for p in r["PHONE"])
                ]
                if hits:
                    found[entity_type.upper()] = hits
            return {"result": found or []}
        entity_type = method.split(".")[1]
        assert method == f"crm.{entity_type}.list", method
        assert params.get("start") == -1
        filt = params.get("filter", {})
        out = []
        for i, row in sorted(self.rows[entity_type].items()):
            if ">ID" in filt and not i > int(filt[">ID"]):
                continue
            if "=ID" in filt and i != int(filt["=ID"]):
                continue
            if "@ID" in filt and i not in filt["@ID"]:
                continue
            if ">=DATE_MODIFY" in filt and row["DATE_MODIFY"] < filt[">=DATE_MODIFY"]:
                continue
            out.append(row)
        return {"result": out[:PAGE]}


async def test_keyset_pages_cover_every_row_once() -> None:
    portal = MiniPortal()
    for i in range(1, 121):
        portal.add("contact", i, f"Name{i} Last", [f"+7 916 000 {i:04d}"], 1)
    source = Bitrix24PhonebookSource(portal.call)
    seen: list[int] = []
    after = 0
    while True:
        page = await source.entities_page("contact", after, None)
        seen += [e.id for e in page]
        if len(page) < PAGE:
            break
        after = page[-1].id
    assert seen == list(range(1, 121))
    assert all(call[1]["filter"][">ID"] in (0, 50, 100) for call in portal.calls)


async def test_findbycomm_matches_trunk_prefix_like_the_portal() -> None:
    portal = MiniPortal()
    portal.add("company", 4, "Acme", ["8 (495) 123-45-67"], 2)
    source = Bitrix24PhonebookSource(portal.call)
    found = await source.entities_by_phone("+74951234567")
    assert [(e.type, e.id, e.name, e.responsible_id) for e in found] == [("company", 4, "Acme", 2)]
    assert await source.entities_by_phone("+74950000000") == []


async def test_gate_holds_calls_until_released() -> None:
    portal = MiniPortal()
    portal.gate = asyncio.Event()
    task = asyncio.create_task(portal.call("user.get", {}))
    await asyncio.sleep(0)
    assert not task.done()
    portal.gate.set()
    assert (await task)["result"] == []


async def test_fail_raises_a_retryable_crm_error() -> None:
    portal = MiniPortal()
    portal.fail = True
    with pytest.raises(CrmError) as info:
        await portal.call("user.get", {})
    assert info.value.retryable
