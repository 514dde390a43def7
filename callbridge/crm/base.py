"""The CRM port: what the engine, outbox, routing and actions need from *any* CRM.

Work that changes the CRM is expressed as :class:`CrmOperation` values, so the outbox
can store them, order them per call and hand many of them to the adapter at once (the
Bitrix24 adapter packs them into ``batch`` requests). An operation may depend on the
result of an earlier operation of the same call (``finish`` needs the ``CALL_ID`` that
``register`` returned): it names that operation's ``key`` in ``params`` through
:class:`ResultRef`, and the adapter resolves it (inside one batch as ``$result[...]``).

Reads (users, entities by phone, the call a register made) are plain async methods.
Errors are one tree, :class:`CrmError`, whose :attr:`CrmError.kind` tells the caller
what to do: retry later, fix auth, drop (permanent), or fix the request (validation).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "CallRecord",
    "CrmEntity",
    "CrmError",
    "CrmOperation",
    "CrmPort",
    "CrmUser",
    "ErrorKind",
    "OperationKind",
    "OperationResult",
    "ResultRef",
    "log_level_of",
]


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"  # rate limit, 5xx, timeout, connection: try again later
    AUTH = "auth"  # token expired and could not be refreshed, app revoked: wait for an admin
    PERMANENT = "permanent"  # the portal will never accept this (not found, access denied)
    VALIDATION = "validation"  # our request was wrong (bad argument): a bug or bad data


class CrmError(Exception):
    def __init__(self, kind: ErrorKind, code: str, description: str = "") -> None:
        super().__init__(f"{code}: {description}" if description else code)
        self.kind = kind
        self.code = code
        self.description = description

    @property
    def retryable(self) -> bool:
        return self.kind is ErrorKind.RETRYABLE


def log_level_of(exc: BaseException) -> int:
    """How loudly to log a failed CRM call: before the application is installed every
    call fails by design (INFO); anything else is worth a WARNING."""
    return logging.INFO if getattr(exc, "code", "") == "not_installed" else logging.WARNING


class OperationKind(StrEnum):
    REGISTER_CALL = "register_call"
    SHOW_CALL = "show_call"
    HIDE_CALL = "hide_call"
    FINISH_CALL = "finish_call"
    ATTACH_RECORD = "attach_record"
    CREATE_LEAD = "create_lead"
    CREATE_TASK = "create_task"
    NOTIFY = "notify"
    ADD_COMMENT = "add_comment"  # a note on the timeline of the call's CRM entity


@dataclass(frozen=True, slots=True)
class ResultRef:
    """The value ``field`` of the result of operation ``key`` (same call)."""

    key: str
    field: str


@dataclass(frozen=True, slots=True)
class CrmOperation:
    """One CRM write. ``key`` is unique within ``call_key`` (e.g. ``register``, ``finish``).

    ``params`` use the CRM's own field names (Bitrix24: ``USER_ID``, ``CALL_ID``, …);
    values may be :class:`ResultRef`.
    """

    call_key: str
    key: str
    kind: OperationKind
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OperationResult:
    key: str
    ok: bool
    value: Mapping[str, Any] = field(default_factory=dict)
    error: CrmError | None = None


@dataclass(frozen=True, slots=True)
class CrmUser:
    id: int
    name: str
    extension: str | None
    mobile: str | None
    active: bool


@dataclass(frozen=True, slots=True)
class CrmEntity:
    type: str  # "contact" | "company" | "lead" | "deal"
    id: int
    name: str
    responsible_id: int | None
    phones: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A call as the CRM knows it (found by its external id)."""

    call_id: str
    external_call_id: str
    finished: bool


class CrmPort(ABC):
    """What callbridge needs from a CRM."""

    @abstractmethod
    async def execute(self, operations: Sequence[CrmOperation]) -> list[OperationResult]:
        """Run operations (possibly of many calls) as few requests as the CRM allows.

        Results come back in the order given; one failing operation does not fail the
        others. Raises :class:`CrmError` only when nothing could be sent at all.
        """

    @abstractmethod
    async def users(self) -> list[CrmUser]:
        """Every user with their extension and mobile (cached by the adapter)."""

    @abstractmethod
    async def entities_by_phone(self, phone: str) -> list[CrmEntity]:
        """CRM entities carrying ``phone`` (contacts, companies, leads)."""

    @abstractmethod
    async def find_call(self, external_call_id: str) -> CallRecord | None:
        """The call a register with this external id made, if the CRM has one."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
