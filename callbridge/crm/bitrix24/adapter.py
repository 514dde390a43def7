"""The CRM port implemented for Bitrix24: operations packed into ``batch``, cached reads.

:meth:`Bitrix24Crm.execute` walks the operations in order and packs them into as few
``batch`` requests as it can (≤ 50 commands each). A :class:`~callbridge.crm.base.ResultRef`
to an operation in the *same* batch becomes ``$result[<cmd>][<field>]``; to one done by an
earlier request of this ``execute`` it becomes the value that request returned. A recording
sent with its content (``attachRecord`` with ``FILE_CONTENT``) goes alone, outside batch:
a Base64 body does not belong in a query string and file methods may be refused inside a
batch (§1.3 ``ERROR_BATCH_METHOD_NOT_ALLOWED``). Without content (a file name, answered
with an upload URL, or a ``RECORD_URL``) it rides in the batch like any other command.

A method the portal blocked for its operating time (§3.2) is not sent: its operations fail
RETRYABLE with ``retry_after`` and every other operation goes on.

A timeline comment (``ADD_COMMENT`` → ``crm.timeline.comment.add``, §6.7) names its entity
the way ``finish`` answered it (``CRM_ENTITY_TYPE`` "CONTACT", usually through a
``ResultRef`` to the finish), but the method documents only lower-case types ("contact").
``$result[...]`` cannot change case inside a batch, so a comment whose reference points into
the batch being built closes that batch first and goes in the next request, with the
finish's answer in hand; its ``ENTITY_TYPE`` is then lower-cased (``dynamic_N`` keeps its
documented form too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from callbridge.config import Bitrix24Config
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
from callbridge.crm.bitrix24.auth import Auth, AuthState, OAuthAuth, WebhookAuth
from callbridge.crm.bitrix24.batch import MAX_COMMANDS, BatchCommand, BatchRef
from callbridge.crm.bitrix24.client import Bitrix24Client, Sleep
from callbridge.crm.bitrix24.errors import Bitrix24Error
from callbridge.crm.bitrix24.limiter import PRIORITY_RESERVE, LeakyBucket
from callbridge.crm.bitrix24.transport import Transport
from callbridge.store.tokens import TokenStore

__all__ = ["METHODS", "Bitrix24Crm", "auth_from_config", "comment_entity_type"]

log = logging.getLogger(__name__)

METHODS: dict[OperationKind, str] = {
    OperationKind.REGISTER_CALL: "telephony.externalcall.register",
    OperationKind.SHOW_CALL: "telephony.externalcall.show",
    OperationKind.HIDE_CALL: "telephony.externalcall.hide",
    OperationKind.FINISH_CALL: "telephony.externalcall.finish",
    OperationKind.ATTACH_RECORD: "telephony.externalcall.attachrecord",
    OperationKind.CREATE_LEAD: "crm.lead.add",
    OperationKind.CREATE_TASK: "tasks.task.add",
    OperationKind.NOTIFY: "im.notify.system.add",
    OperationKind.ADD_COMMENT: "crm.timeline.comment.add",
}

# Methods whose parameters live under ``fields`` (the outbox may give them flat).
# (``crm.timeline.comment.add`` reads only the lower-case ``fields`` key, §6.7.)
_FIELDS_WRAPPED = frozenset(
    {OperationKind.CREATE_LEAD, OperationKind.CREATE_TASK, OperationKind.ADD_COMMENT}
)
# Methods whose result is a bare value (an id, a flag), not an object.
_SCALAR_RESULT = frozenset(
    {
        OperationKind.CREATE_LEAD,
        OperationKind.NOTIFY,
        OperationKind.SHOW_CALL,
        OperationKind.HIDE_CALL,
        OperationKind.ADD_COMMENT,
    }
)
# Operations whose references must be real values before sending (never ``$result``).
_NEEDS_VALUES = frozenset({OperationKind.ADD_COMMENT})
_ALONE = frozenset({OperationKind.ATTACH_RECORD})

_ENTITY_TYPES = {"CONTACT": "contact", "COMPANY": "company", "LEAD": "lead", "DEAL": "deal"}


def auth_from_config(config: Bitrix24Config, tokens: TokenStore | None) -> Auth:
    """Application mode when a client id is configured, else the incoming webhook."""
    if config.client_id:
        if tokens is None:
            raise ValueError("bitrix24.client_id is set: application mode needs a token store")
        return OAuthAuth(
            tokens,
            oauth_url=config.oauth_url,
            client_id=config.client_id,
            client_secret=config.client_secret,
        )
    if config.webhook_url:
        return WebhookAuth(config.webhook_url)
    raise ValueError("bitrix24: set webhook_url, or client_id and client_secret")


def _ref_path(kind: OperationKind, field: str) -> tuple[str, ...]:
    """Where ``field`` of an operation's normalised value sits in the raw result."""
    if kind in _SCALAR_RESULT:
        return ()
    if kind is OperationKind.CREATE_TASK:
        return ("task", "id") if field.upper() == "ID" else ("task", field)
    return (field,)


def _normalise(kind: OperationKind, raw: Any) -> dict[str, Any]:
    """A method's result as the port's mapping (ids under ``ID``, the raw under ``result``)."""
    if kind is OperationKind.CREATE_TASK and isinstance(raw, dict):
        task = raw.get("task")
        out = dict(raw)
        if isinstance(task, dict) and "id" in task:
            out["ID"] = task["id"]
        return out
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, bool) or raw is None or isinstance(raw, list):
        return {"result": raw}
    return {"ID": raw, "result": raw}


class _Unresolved(Exception):
    def __init__(self, error: CrmError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Chunk:
    indices: list[int]
    commands: list[BatchCommand]
    # index → index of the in-batch operation it depends on
    depends: dict[int, list[int]]


class Bitrix24Crm(CrmPort):
    """:class:`CrmPort` over a :class:`Bitrix24Client`."""

    def __init__(
        self,
        client: Bitrix24Client,
        *,
        users_ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.users_ttl = users_ttl
        self._clock = clock
        self._users: list[CrmUser] | None = None
        self._users_at = 0.0
        self._users_lock = asyncio.Lock()

    @classmethod
    def from_config(
        cls,
        config: Bitrix24Config,
        tokens: TokenStore | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        verify: bool | str = True,
        users_ttl: float = 300.0,
    ) -> Bitrix24Crm:
        auth = auth_from_config(config, tokens)
        client = Bitrix24Client(
            auth,
            transport=Transport(timeout=config.timeout, verify=verify),
            limiter=LeakyBucket(config.rate, config.burst, priority_reserve=PRIORITY_RESERVE),
            clock=clock,
            sleep=sleep,
        )
        return cls(client, users_ttl=users_ttl, clock=clock)

    @property
    def auth_state(self) -> AuthState:
        return self.client.auth_state

    async def close(self) -> None:
        await self.client.close()

    # -- writes -----------------------------------------------------------------------------

    async def execute(self, operations: Sequence[CrmOperation]) -> list[OperationResult]:
        ops = list(operations)
        results: list[OperationResult | None] = [None] * len(ops)
        position = {(op.call_key, op.key): i for i, op in enumerate(ops)}
        kinds = [op.kind for op in ops]
        values: dict[int, dict[str, Any]] = {}  # index → normalised value of a done op
        failures: dict[int, CrmError] = {}
        sent_any = False
        chunk = _Chunk([], [], {})

        def fail(i: int, error: CrmError) -> None:
            failures[i] = error
            results[i] = OperationResult(ops[i].key, False, error=error)

        async def flush() -> None:
            nonlocal sent_any, chunk
            current, chunk = chunk, _Chunk([], [], {})
            if not current.commands:
                return
            try:
                batch = await self.client.batch(current.commands)
            except Bitrix24Error as err:
                if not sent_any:
                    raise
                for i in current.indices:
                    fail(i, err)
                raise _Stop(err) from None
            sent_any = True
            for i, command in zip(current.indices, current.commands, strict=True):
                op = ops[i]
                dep_errors = [failures[d] for d in current.depends.get(i, []) if d in failures]
                if dep_errors:
                    # It ran with an unresolved $result: whatever it answered means nothing.
                    fail(i, _dependency_error(dep_errors[0]))
                elif command.name in batch.results:
                    values[i] = _normalise(op.kind, batch.results[command.name])
                    results[i] = OperationResult(op.key, True, values[i])
                elif command.name in batch.errors:
                    fail(i, batch.errors[command.name])
                else:
                    fail(i, CrmError(ErrorKind.RETRYABLE, "NOT_RUN", "batch stopped before it"))

        async def run_alone(i: int, params: dict[str, Any]) -> None:
            nonlocal sent_any
            op = ops[i]
            try:
                answer = await self.client.call(METHODS[op.kind], params)
            except Bitrix24Error as err:
                if not sent_any and err.kind is not ErrorKind.VALIDATION:
                    raise
                fail(i, err)
                if err.kind is ErrorKind.AUTH:
                    raise _Stop(err) from None
                return
            sent_any = True
            values[i] = _normalise(op.kind, answer.result)
            results[i] = OperationResult(op.key, True, values[i])

        try:
            for i, op in enumerate(ops):
                method = METHODS.get(op.kind)
                if method is None:
                    fail(i, CrmError(ErrorKind.VALIDATION, "UNKNOWN_OPERATION", str(op.kind)))
                    continue
                blocked = self.client.method_delay(method)
                if blocked > 0:
                    fail(
                        i,
                        Bitrix24Error(
                            ErrorKind.RETRYABLE,
                            "OPERATION_TIME_LIMIT",
                            f"{method} is held back until its operating-time budget resets",
                            method=method,
                            retry_after=blocked,
                        ),
                    )
                    continue
                alone = op.kind in _ALONE and "FILE_CONTENT" in op.params
                if alone:
                    await flush()
                in_chunk = {
                    (ops[j].call_key, ops[j].key): (j, cmd.name)
                    for j, cmd in zip(chunk.indices, chunk.commands, strict=True)
                }
                if op.kind in _NEEDS_VALUES and any(
                    (op.call_key, ref.key) in in_chunk for ref in _refs(op.params)
                ):
                    await flush()
                    in_chunk = {}
                deps: list[int] = []
                try:
                    params = self._params(
                        op, kinds, position, in_chunk, values, failures, deps, alone
                    )
                except _Unresolved as exc:
                    fail(i, exc.error)
                    continue
                if alone:
                    await run_alone(i, params)
                    continue
                chunk.indices.append(i)
                chunk.commands.append(BatchCommand(f"c{i}", method, params))
                if deps:
                    chunk.depends[i] = deps
                if len(chunk.commands) >= MAX_COMMANDS:
                    await flush()
            await flush()
        except _Stop as stop:
            for i in range(len(ops)):
                if results[i] is None:
                    fail(i, stop.error)
        return [
            r if r is not None else OperationResult(ops[i].key, False)
            for i, r in enumerate(results)
        ]

    @staticmethod
    def _params(
        op: CrmOperation,
        kinds: Sequence[OperationKind],
        position: Mapping[tuple[str, str], int],
        in_chunk: Mapping[tuple[str, str], tuple[int, str]],
        values: Mapping[int, Mapping[str, Any]],
        failures: Mapping[int, CrmError],
        deps: list[int],
        alone: bool,
    ) -> dict[str, Any]:
        def resolve(value: Any) -> Any:
            if isinstance(value, ResultRef):
                target = (op.call_key, value.key)
                if target in in_chunk and not alone:
                    j, name = in_chunk[target]
                    deps.append(j)
                    return BatchRef(name, _ref_path(kinds[j], value.field))
                j_done = position.get(target)
                if j_done is not None and j_done in values:
                    found = values[j_done].get(value.field)
                    if found is None:
                        raise _Unresolved(
                            CrmError(
                                ErrorKind.VALIDATION,
                                "UNRESOLVED_REFERENCE",
                                f"{value.key} has no {value.field}",
                            )
                        )
                    return found
                if j_done is not None and j_done in failures:
                    raise _Unresolved(_dependency_error(failures[j_done]))
                raise _Unresolved(
                    CrmError(
                        ErrorKind.VALIDATION,
                        "UNRESOLVED_REFERENCE",
                        f"{op.key} refers to {value.key}.{value.field}, which is neither in "
                        "this batch nor given",
                    )
                )
            if isinstance(value, Mapping):
                return {k: resolve(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [resolve(v) for v in value]
            return value

        params = dict(op.params)
        if op.kind in _FIELDS_WRAPPED and "fields" not in params:
            params = {"fields": params}
        resolved: dict[str, Any] = resolve(params)
        if op.kind is OperationKind.ADD_COMMENT:
            fields = resolved.get("fields")
            if isinstance(fields, dict) and isinstance(fields.get("ENTITY_TYPE"), str):
                fields["ENTITY_TYPE"] = comment_entity_type(fields["ENTITY_TYPE"])
        return resolved

    # -- reads ------------------------------------------------------------------------------

    async def users(self) -> list[CrmUser]:
        async with self._users_lock:
            now = self._clock()
            if self._users is not None and now - self._users_at < self.users_ttl:
                return self._users
            base = {"sort": "ID", "order": "ASC"}
            first = await self.client.call("user.get", {**base, "start": 0})
            rows: list[Any] = list(first.result or [])
            total = first.total or len(rows)
            starts = list(range(len(rows), total, 50)) if rows else []
            for group in range(0, len(starts), MAX_COMMANDS):
                commands = [
                    BatchCommand(f"p{s}", "user.get", {**base, "start": s})
                    for s in starts[group : group + MAX_COMMANDS]
                ]
                batch = await self.client.batch(commands)
                for command in commands:
                    if command.name in batch.errors:
                        raise batch.errors[command.name]
                    rows.extend(batch.results.get(command.name) or [])
            users = [u for u in (_user(row) for row in rows) if u is not None]
            self._users = users
            self._users_at = self._clock()
            return users

    async def entities_by_phone(self, phone: str) -> list[CrmEntity]:
        try:
            answer = await self.client.call(
                "telephony.externalcall.searchcrmentities", {"PHONE_NUMBER": phone}
            )
        except Bitrix24Error as err:
            if err.kind is ErrorKind.RETRYABLE:
                raise
            # Not allowed to this credential (scope, auth type): the CRM's duplicate search
            # matches phones the same way (§6.2), without names.
            log.info("searchCrmEntities refused (%s); using crm.duplicate.findbycomm", err.code)
            return await self._findbycomm(phone)
        out: list[CrmEntity] = []
        for row in answer.result or []:
            if not isinstance(row, dict):
                continue
            etype = _ENTITY_TYPES.get(str(row.get("CRM_ENTITY_TYPE", "")).upper())
            eid = _int(row.get("CRM_ENTITY_ID"))
            if etype is None or eid is None:
                continue
            out.append(
                CrmEntity(
                    etype,
                    eid,
                    str(row.get("NAME") or ""),
                    _int(row.get("ASSIGNED_BY_ID")),
                    (phone,),
                )
            )
        return out

    async def _findbycomm(self, phone: str) -> list[CrmEntity]:
        answer = await self.client.call(
            "crm.duplicate.findbycomm", {"type": "PHONE", "values": [phone]}
        )
        out: list[CrmEntity] = []
        found = answer.result if isinstance(answer.result, dict) else {}
        for key in ("CONTACT", "COMPANY", "LEAD"):
            for eid in found.get(key) or []:
                n = _int(eid)
                if n is not None:
                    out.append(CrmEntity(_ENTITY_TYPES[key], n, "", None, (phone,)))
        return out

    async def find_call(self, external_call_id: str) -> CallRecord | None:
        """The *finished* call with this external id, from call statistics (§4.8).

        An unfinished call is not listed anywhere over REST; inside its 30-minute window a
        register with the same ``EXTERNAL_CALL_ID`` answers its ``CALL_ID`` again (§4.3).
        """
        answer = await self.client.call(
            "voximplant.statistic.get", {"FILTER": {"EXTERNAL_CALL_ID": external_call_id}}
        )
        for row in answer.result or []:
            if isinstance(row, dict) and str(row.get("EXTERNAL_CALL_ID")) == external_call_id:
                return CallRecord(str(row.get("CALL_ID") or ""), external_call_id, True)
        return None


class _Stop(Exception):
    def __init__(self, error: CrmError) -> None:
        super().__init__(str(error))
        self.error = error


def comment_entity_type(crm_entity_type: str) -> str:
    """``finish``'s ``CRM_ENTITY_TYPE`` ("CONTACT", §4.5) as ``crm.timeline.comment.add``
    documents it ("contact", §6.7): the documented names are the same words in lower case."""
    return crm_entity_type.strip().lower()


def _refs(value: Any) -> Iterator[ResultRef]:
    """Every :class:`ResultRef` inside ``value`` (params nest mappings and lists)."""
    if isinstance(value, ResultRef):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _refs(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _refs(item)


def _dependency_error(cause: CrmError) -> CrmError:
    return CrmError(cause.kind, "DEPENDENCY_FAILED", f"an operation it needs failed: {cause}")


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _user(row: Any) -> CrmUser | None:
    if not isinstance(row, dict):
        return None
    uid = _int(row.get("ID"))
    if uid is None:
        return None
    name = " ".join(str(row.get(k) or "").strip() for k in ("NAME", "LAST_NAME")).strip()
    ext = str(row.get("UF_PHONE_INNER") or "").strip() or None
    mobile = str(row.get("PERSONAL_MOBILE") or "").strip() or None
    active = row.get("ACTIVE")
    return CrmUser(uid, name, ext, mobile, active in (True, "Y", "1", 1))
