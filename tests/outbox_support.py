"""Test support for the outbox: a small portal behind the CRM port, and a driven clock.

``PortalCrm`` keeps the state Bitrix24 keeps for external calls (reference §4): active
calls keyed by ``CALL_ID``, the 30-minute re-registration rule for an unfinished call with
the same ``EXTERNAL_CALL_ID``, cards shown/hidden per user, ``finish`` hiding only the
finisher's card, call statistics found by external id. Faults behave like the network:
``down`` (nothing sent), ``lost_answer`` (done, answer lost), ``auth`` (refused). Tests
assert on that state, never on which methods were called.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from callbridge.crm.base import (
    CallRecord,
    CrmEntity,
    CrmError,
    CrmOperation,
    CrmPort,
    CrmUser,
    ErrorKind,
    OperationKind,
    OperationResult,
    ResultRef,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class PortalCall:
    call_id: str
    external_call_id: str | None
    user_id: int
    phone: str
    call_type: int
    start: float
    finished: bool = False
    finished_by: int | None = None
    duration: int | None = None
    status_code: str | None = None
    shown_now: list[int] = field(default_factory=list)
    shown_ever: list[int] = field(default_factory=list)
    registers: int = 0
    finishes: int = 0
    records: list[str] = field(default_factory=list)


class PortalCrm(CrmPort):
    def __init__(self, clock: Clock, users: Sequence[CrmUser] = ()) -> None:
        self.clock = clock
        self.calls: dict[str, PortalCall] = {}
        self._ids = itertools.count(1)
        self.fault: str | None = None  # "down" | "lost_answer" | "auth" | "bug"
        self.fault_times = 0  # how many execute() calls the fault lasts (0 = until cleared)
        self.refuse_users: set[int] = set()
        self.entities: dict[str, list[CrmEntity]] = {}
        self.requests = 0
        self._users = list(users)

    # -- faults ----------------------------------------------------------------------------

    def _fault_now(self) -> str | None:
        fault = self.fault
        if fault is not None and self.fault_times:
            self.fault_times -= 1
            if self.fault_times == 0:
                self.fault = None
        return fault

    def by_external(self, external_call_id: str) -> list[PortalCall]:
        return [c for c in self.calls.values() if c.external_call_id == external_call_id]

    # -- port --------------------------------------------------------------------------------

    async def execute(self, operations: Sequence[CrmOperation]) -> list[OperationResult]:
        self.requests += 1
        fault = self._fault_now()
        if fault == "down":
            raise CrmError(ErrorKind.RETRYABLE, "CONNECT_ERROR", "portal unreachable")
        if fault == "auth":
            raise CrmError(
                ErrorKind.AUTH, "expired_token", "The access token provided has expired."
            )
        if fault == "bug":
            # Not a CRM answer at all: what an unexpected exception in an adapter looks like.
            raise RuntimeError("adapter bug")
        results: list[OperationResult] = []
        done: dict[tuple[str, str], Mapping[str, Any]] = {}
        for op in operations:
            try:
                params = {k: self._resolve(op, v, done) for k, v in op.params.items()}
                value = self._run(op.kind, params)
            except CrmError as err:
                results.append(OperationResult(op.key, False, error=err))
                continue
            done[(op.call_key, op.key)] = value
            results.append(OperationResult(op.key, True, value))
        if fault == "lost_answer":
            raise CrmError(ErrorKind.RETRYABLE, "TIMEOUT", "no answer (the portal did it)")
        return results

    def _resolve(
        self, op: CrmOperation, value: Any, done: Mapping[tuple[str, str], Mapping[str, Any]]
    ) -> Any:
        if isinstance(value, ResultRef):
            found = done.get((op.call_key, value.key))
            if found is None or value.field not in found:
                raise CrmError(ErrorKind.VALIDATION, "", f"unresolved $result[{value.key}]")
            return found[value.field]
        if isinstance(value, list):
            return [self._resolve(op, v, done) for v in value]
        return value

    def _run(self, kind: OperationKind, p: Mapping[str, Any]) -> Mapping[str, Any]:
        if kind is OperationKind.REGISTER_CALL:
            return self._register(p)
        call = self.calls.get(str(p.get("CALL_ID")))
        if kind in (OperationKind.SHOW_CALL, OperationKind.HIDE_CALL):
            if not isinstance(p.get("USER_ID"), list):
                raise CrmError(ErrorKind.VALIDATION, "", "USER_ID should be set")
            if call is None or call.finished:
                return {"result": False}
            for user in p["USER_ID"]:
                if kind is OperationKind.SHOW_CALL:
                    call.shown_ever.append(user)
                    if user not in call.shown_now:
                        call.shown_now.append(user)
                elif user in call.shown_now:
                    call.shown_now.remove(user)
            return {"result": True}
        if kind is OperationKind.FINISH_CALL:
            if call is None or call.finished:
                raise CrmError(ErrorKind.VALIDATION, "", "Call is not found")
            user = int(p["USER_ID"])
            if user in self.refuse_users:
                raise CrmError(ErrorKind.VALIDATION, "", "User is not found or is not active")
            call.finished = True
            call.finishes += 1
            call.finished_by = user
            call.duration = int(p.get("DURATION", 0))
            call.status_code = str(p.get("STATUS_CODE"))
            if user in call.shown_now:
                call.shown_now.remove(user)
            return {"CALL_ID": call.call_id, "ID": call.finishes}
        if kind is OperationKind.ATTACH_RECORD:
            if call is None or not call.finished:
                raise CrmError(ErrorKind.VALIDATION, "", "Call is not found in the statistic")
            call.records.append(str(p.get("FILENAME")))
            return {"uploadUrl": "http://portal/upload"}
        raise CrmError(ErrorKind.VALIDATION, "ERROR_METHOD_NOT_FOUND", str(kind))

    def _register(self, p: Mapping[str, Any]) -> Mapping[str, Any]:
        user = int(p["USER_ID"])
        if user in self.refuse_users:
            raise CrmError(ErrorKind.VALIDATION, "", "User is not found or is not active")
        external = p.get("EXTERNAL_CALL_ID")
        now = self.clock()
        for call in self.calls.values():
            # §4.3: an unfinished identical registration inside 30 minutes → same CALL_ID.
            if (
                not call.finished
                and call.external_call_id == external
                and call.user_id == user
                and call.phone == p["PHONE_NUMBER"]
                and call.call_type == p["TYPE"]
                and call.start >= now - 1800
            ):
                call.registers += 1
                return {"CALL_ID": call.call_id}
        call = PortalCall(
            f"externalCall.{next(self._ids)}",
            external,
            user,
            str(p["PHONE_NUMBER"]),
            int(p["TYPE"]),
            now,
            registers=1,
        )
        if int(p.get("SHOW", 1)):
            call.shown_now.append(user)
            call.shown_ever.append(user)
        self.calls[call.call_id] = call
        return {"CALL_ID": call.call_id, "CRM_ENTITY_TYPE": p.get("CRM_ENTITY_TYPE", "")}

    async def users(self) -> list[CrmUser]:
        return list(self._users)

    async def entities_by_phone(self, phone: str) -> list[CrmEntity]:
        self.requests += 1
        if self.fault == "down":
            raise CrmError(ErrorKind.RETRYABLE, "CONNECT_ERROR", "portal unreachable")
        return list(self.entities.get(phone, []))

    async def find_call(self, external_call_id: str) -> CallRecord | None:
        # Like voximplant.statistic.get: finished calls only.
        self.requests += 1
        if self.fault == "down":
            raise CrmError(ErrorKind.RETRYABLE, "CONNECT_ERROR", "portal unreachable")
        for call in self.by_external(external_call_id):
            if call.finished:
                return CallRecord(call.call_id, external_call_id, True)
        return None
