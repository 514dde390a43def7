"""Running one REST method or a ``batch`` of them (reference §3.2, §3.3).

The dispatcher finds the handler (method names in any case), applies the per-method
operating-time limit, and builds each call's ``time`` block. ``batch`` runs its commands in
order, substitutes ``$result[cmd][field]…`` references, keeps per-command errors apart and
honours ``halt``; the outer batch costs no operating time, each command costs its own.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from . import crm, events, portal, telephony
from .context import Ctx, Handler, iso_time, php_true
from .errors import RestError, method_not_found
from .limits import OperatingTime
from .listing import ListResult
from .params import Params, parse_php_query

MAX_BATCH = 50
# methods a batch may not contain (nested batch; file transfer)
_NOT_IN_BATCH = frozenset({"batch", "upload", "disk.file.upload"})
_REFERENCE = re.compile(r"\$result\[([^\]]+)\]((?:\[[^\]]*\])*)")


def _methods_list(ctx: Ctx, params: Params) -> list[str]:
    return sorted([*REGISTRY, "batch"])


REGISTRY: dict[str, Handler] = {
    **crm.METHODS,
    **portal.METHODS,
    **telephony.METHODS,
    **events.METHODS,
    "methods": _methods_list,
}


def normalize_method(raw: str) -> str:
    """``Telephony.ExternalCall.Register.json/`` → ``telephony.externalcall.register``."""
    name = unquote(raw).strip().strip("/").lower()
    for suffix in (".json", ".xml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


@dataclass
class Outcome:
    """A method's answer before it becomes JSON: result, paging and its time block."""

    result: Any
    total: int | None
    next: int | None
    time: dict[str, Any]


class Dispatcher:
    def __init__(
        self,
        operating: OperatingTime,
        cost_seconds: float,
        clock: Callable[[], float],
        count_method: Callable[[str], None],
    ) -> None:
        self.operating = operating
        self.cost = cost_seconds
        self.clock = clock
        self.count_method = count_method

    def time_block(
        self, start: float, finish: float, key: str, method: str | None
    ) -> dict[str, Any]:
        block: dict[str, Any] = {
            "start": round(start, 6),
            "finish": round(finish, 6),
            "duration": round(finish - start, 6),
            "processing": round(finish - start, 6),
            "date_start": iso_time(start),
            "date_finish": iso_time(finish),
        }
        if method is not None:
            block["operating_reset_at"] = self.operating.reset_at(key, method, finish)
            block["operating"] = self.operating.operating(key, method, finish)
        else:
            block["operating_reset_at"] = int(start) + 600
            block["operating"] = 0
        return block

    async def call(self, ctx: Ctx, method: str, params: Params) -> Outcome:
        """Run one method; raises ``RestError`` for an error answer."""
        if method == "batch":
            if ctx.in_batch:
                raise RestError(
                    405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
                )
            return await self._batch(ctx, params)
        handler = REGISTRY.get(method)
        if handler is None:
            raise method_not_found()
        if ctx.in_batch and method in _NOT_IN_BATCH:
            raise RestError(
                405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage"
            )
        key = ctx.auth.key
        start = ctx.now
        if self.operating.blocked(key, method, start):
            raise RestError(
                429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit."
            )
        try:
            value = handler(ctx, params)
            if inspect.isawaitable(value):
                value = await value
        finally:
            # the method's time is spent whether it succeeded or not
            if self.cost > 0:
                self.operating.add(key, method, self.cost, start)
        finish = max(self.clock(), start) + self.cost
        block = self.time_block(start, finish, key, method)
        if isinstance(value, ListResult):
            return Outcome(value.items, value.total, value.next, block)
        return Outcome(value, None, None, block)

    async def _batch(self, ctx: Ctx, params: Params) -> Outcome:
        cmd = params.get("cmd")
        if isinstance(cmd, list):
            commands = [(str(i), v) for i, v in enumerate(cmd)]
        elif isinstance(cmd, dict):
            commands = [(str(k), v) for k, v in cmd.items()]
        else:
            commands = []
        if len(commands) > MAX_BATCH:
            raise RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")
        halt = php_true(params.get("halt", 0))
        results: dict[str, Any] = {}
        errors: dict[str, Any] = {}
        totals: dict[str, int] = {}
        nexts: dict[str, int] = {}
        times: dict[str, Any] = {}
        start = ctx.now
        for name, text in commands:
            method_part, _, query = str(text).partition("?")
            method = normalize_method(method_part)
            sub_params = _substitute(parse_php_query(query), results)
            self.count_method(method)
            sub_ctx = Ctx(ctx.state, self.clock(), ctx.auth, ctx.base_url, ctx.fetch, in_batch=True)
            try:
                outcome = await self.call(sub_ctx, method, Params(sub_params))
            except RestError as exc:
                errors[name] = exc.envelope()
                ctx.state.requests.count_error(exc.error)
                if halt:
                    break
                continue
            results[name] = outcome.result
            times[name] = outcome.time
            if outcome.total is not None:
                totals[name] = outcome.total
            if outcome.next is not None:
                nexts[name] = outcome.next
        finish = max(self.clock(), start)
        as_list = isinstance(cmd, list)
        body = {
            "result": _php_map(results, as_list),
            "result_error": _php_map(errors, as_list),
            "result_total": _php_map(totals, as_list),
            "result_next": _php_map(nexts, as_list),
            "result_time": _php_map(times, as_list),
        }
        return Outcome(body, None, None, self.time_block(start, finish, ctx.auth.key, None))


def _php_map(values: dict[str, Any], numeric: bool) -> Any:
    """PHP serialises an empty map as ``[]`` and a 0..n-1 keyed map as a list."""
    if not values:
        return []
    if numeric and list(values) == [str(i) for i in range(len(values))]:
        return list(values.values())
    return values


def _lookup(results: dict[str, Any], name: str, path: str) -> Any:
    value: Any = results.get(name)
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    """Replace ``$result[cmd][field]…`` in every string of a command's parameters."""
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REFERENCE.fullmatch(value)
    if whole is not None:
        found = _lookup(results, whole.group(1), whole.group(2))
        if isinstance(found, dict | list):
            return found

    def repl(m: re.Match[str]) -> str:
        found = _lookup(results, m.group(1), m.group(2))
        return "" if found is None or isinstance(found, dict | list) else str(found)

    return _REFERENCE.sub(repl, value)
