"""Where the phonebook gets its data: :class:`PhonebookSource`, and its Bitrix24 form.

The CRM port (:class:`~callbridge.crm.base.CrmPort`) answers per-call questions; a full
sync needs paged list calls, so the phonebook asks for this narrower protocol instead.
:class:`Bitrix24PhonebookSource` implements it on any ``call(method, params)`` coroutine
(the Bitrix24 client's generic call), using keyset pagination (``start=-1``,
``>ID`` filter, ``ID`` order — reference bitrix24-rest.md §3.4) so 100,000 contacts cost
2,000 cheap requests rather than ever slower offset pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ENTITY_TYPES",
    "Bitrix24PhonebookSource",
    "CallFn",
    "PhonebookSource",
    "SourceEntity",
    "SourceUser",
    "entity_from_bitrix",
    "user_from_bitrix",
]

ENTITY_TYPES = ("contact", "company", "lead")
PAGE = 50


@dataclass(frozen=True, slots=True)
class SourceEntity:
    type: str
    id: int
    name: str
    responsible_id: int | None
    phones: tuple[str, ...]
    modified: str = ""


@dataclass(frozen=True, slots=True)
class SourceUser:
    id: int
    name: str
    extension: str | None
    mobile: str | None
    active: bool


class PhonebookSource(Protocol):
    """The reads a phonebook sync needs from the CRM."""

    async def entities_page(
        self, entity_type: str, after_id: int, modified_since: str | None
    ) -> list[SourceEntity]:
        """Up to one page of ``entity_type`` with ``id > after_id`` in id order, optionally
        only those modified at or after ``modified_since``. A short page is the last."""
        ...

    async def entity(self, entity_type: str, entity_id: int) -> SourceEntity | None:
        """One entity, ``None`` when it does not exist (any more)."""
        ...

    async def entities(self, entity_type: str, ids: Sequence[int]) -> list[SourceEntity]:
        """The entities among ``ids`` that exist (one request for up to 50 ids)."""
        ...

    async def entities_by_phone(self, phone: str) -> list[SourceEntity]:
        """Entities holding ``phone`` (the CRM's own matching)."""
        ...

    async def users_page(self, after_id: int) -> list[SourceUser]:
        """Up to one page of users with ``id > after_id`` in id order."""
        ...


CallFn = Callable[[str, Mapping[str, Any]], Awaitable[Any]]


def _int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _join(*parts: Any) -> str:
    return " ".join(str(p).strip() for p in parts if p and str(p).strip())


def entity_from_bitrix(entity_type: str, row: Mapping[str, Any]) -> SourceEntity:
    """A ``crm.contact/company/lead.list`` row → :class:`SourceEntity`.

    Raises ``ValueError`` naming the row when it has no usable ``ID``.
    """
    entity_id = _int(row.get("ID"))
    if entity_id is None:
        raise ValueError(f"{entity_type} row without a valid ID: {dict(row)!r:.200}")
    if entity_type == "company":
        name = _join(row.get("TITLE"))
    elif entity_type == "lead":
        # A lead's person name says more on a phone screen than its deal-ish title.
        name = _join(row.get("NAME"), row.get("LAST_NAME")) or _join(row.get("TITLE"))
    else:
        name = _join(row.get("NAME"), row.get("SECOND_NAME"), row.get("LAST_NAME"))
    phones: list[str] = []
    raw_phones = row.get("PHONE") or []
    if isinstance(raw_phones, Sequence) and not isinstance(raw_phones, str):
        for item in raw_phones:
            if isinstance(item, Mapping) and item.get("VALUE"):
                phones.append(str(item["VALUE"]))
    return SourceEntity(
        type=entity_type,
        id=entity_id,
        name=name,
        responsible_id=_int(row.get("ASSIGNED_BY_ID")),
        phones=tuple(phones),
        modified=str(row.get("DATE_MODIFY") or ""),
    )


def _active(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().upper() in ("Y", "1", "TRUE")
    return bool(value)


def user_from_bitrix(row: Mapping[str, Any]) -> SourceUser:
    user_id = _int(row.get("ID"))
    if user_id is None:
        raise ValueError(f"user row without a valid ID: {dict(row)!r:.200}")
    extension = str(row.get("UF_PHONE_INNER") or "").strip() or None
    mobile = str(row.get("PERSONAL_MOBILE") or "").strip() or None
    return SourceUser(
        id=user_id,
        name=_join(row.get("NAME"), row.get("LAST_NAME")),
        extension=extension,
        mobile=mobile,
        active=_active(row.get("ACTIVE", True)),
    )


def _unwrap(answer: Any) -> Any:
    # ``call`` may return the bare result, the whole envelope, or the client's
    # ApiResponse (``.result``).
    if isinstance(answer, Mapping):
        return answer.get("result", answer)
    return getattr(answer, "result", answer)


def _rows(answer: Any) -> list[Mapping[str, Any]]:
    answer = _unwrap(answer)
    if isinstance(answer, Mapping):
        answer = list(answer.values())
    if not isinstance(answer, list):
        raise ValueError(f"expected a list result, got {type(answer).__name__}")
    return [row for row in answer if isinstance(row, Mapping)]


_SELECT = {
    "contact": ["ID", "NAME", "SECOND_NAME", "LAST_NAME", "ASSIGNED_BY_ID", "DATE_MODIFY", "PHONE"],
    "company": ["ID", "TITLE", "ASSIGNED_BY_ID", "DATE_MODIFY", "PHONE"],
    "lead": ["ID", "TITLE", "NAME", "LAST_NAME", "ASSIGNED_BY_ID", "DATE_MODIFY", "PHONE"],
}


class Bitrix24PhonebookSource:
    """:class:`PhonebookSource` over Bitrix24 REST methods sent through ``call``."""

    def __init__(self, call: CallFn, urgent_call: CallFn | None = None) -> None:
        self._call = call
        #: For the look-up a caller on the line waits for: ahead of bulk work in the
        #: shared limiter (``Bitrix24Client.call`` with ``priority=True``).
        self._urgent_call = urgent_call or call

    async def entities_page(
        self, entity_type: str, after_id: int, modified_since: str | None
    ) -> list[SourceEntity]:
        if entity_type not in _SELECT:
            raise ValueError(f"unknown entity type {entity_type!r}")
        filt: dict[str, Any] = {">ID": after_id}
        if modified_since:
            filt[">=DATE_MODIFY"] = modified_since
        answer = await self._call(
            f"crm.{entity_type}.list",
            {"select": _SELECT[entity_type], "filter": filt, "order": {"ID": "ASC"}, "start": -1},
        )
        return [entity_from_bitrix(entity_type, row) for row in _rows(answer)]

    async def entity(self, entity_type: str, entity_id: int) -> SourceEntity | None:
        answer = await self._call(
            f"crm.{entity_type}.list",
            {"select": _SELECT[entity_type], "filter": {"=ID": entity_id}, "start": -1},
        )
        rows = _rows(answer)
        return entity_from_bitrix(entity_type, rows[0]) if rows else None

    async def entities(self, entity_type: str, ids: Sequence[int]) -> list[SourceEntity]:
        found: list[SourceEntity] = []
        for at in range(0, len(ids), 50):
            chunk = list(ids[at : at + 50])
            answer = await self._call(
                f"crm.{entity_type}.list",
                {"select": _SELECT[entity_type], "filter": {"@ID": chunk}, "start": -1},
            )
            found.extend(entity_from_bitrix(entity_type, row) for row in _rows(answer))
        return found

    async def entities_by_phone(self, phone: str) -> list[SourceEntity]:
        answer = await self._urgent_call(
            "crm.duplicate.findbycomm", {"type": "PHONE", "values": [phone]}
        )
        answer = _unwrap(answer)
        found: list[SourceEntity] = []
        if not isinstance(answer, Mapping):
            return found  # "[]" when nothing matched
        for upper, ids in answer.items():
            entity_type = str(upper).lower()
            if entity_type not in _SELECT or not isinstance(ids, list) or not ids:
                continue
            rows = _rows(
                await self._call(
                    f"crm.{entity_type}.list",
                    {
                        "select": _SELECT[entity_type],
                        "filter": {"@ID": [int(i) for i in ids[:PAGE]]},
                        "start": -1,
                    },
                )
            )
            found += [entity_from_bitrix(entity_type, row) for row in rows]
        return found

    async def users_page(self, after_id: int) -> list[SourceUser]:
        answer = await self._call(
            "user.get",
            {"sort": "ID", "order": "ASC", "FILTER": {">ID": after_id}, "ADMIN_MODE": True},
        )
        return [user_from_bitrix(row) for row in _rows(answer)]
