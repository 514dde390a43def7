"""``batch`` (§3.3): encoding up to 50 commands and reading their answers back, pure.

A command is ``"method?query"`` with the query in PHP ``http_build_query`` form
(``fields[PHONE][0][VALUE]=…``). A value may be a :class:`BatchRef` to an earlier command's
result: it is written as ``$result[cmd][field]…`` unencoded, which the portal substitutes
whether it does so before or after parsing the query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from callbridge.crm.base import ErrorKind
from callbridge.crm.bitrix24.errors import Bitrix24Error, map_error

__all__ = [
    "MAX_COMMANDS",
    "BatchCommand",
    "BatchRef",
    "BatchResult",
    "decode_batch",
    "encode_batch",
    "php_query",
]

MAX_COMMANDS = 50


@dataclass(frozen=True, slots=True)
class BatchRef:
    """``$result[command][path…]``: a value taken from an earlier command of the same batch."""

    command: str
    path: tuple[str | int, ...] = ()

    def expression(self) -> str:
        return f"$result[{self.command}]" + "".join(f"[{p}]" for p in self.path)


@dataclass(frozen=True, slots=True)
class BatchCommand:
    name: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class BatchResult:
    """Per-command outcome: each command is in exactly one of ``results`` and ``errors``;
    a command absent from both did not run (``halt`` stopped the batch before it)."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, Bitrix24Error] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)
    times: dict[str, Mapping[str, Any]] = field(default_factory=dict)


def php_query(params: Mapping[str, Any]) -> str:
    """``params`` as PHP's ``http_build_query`` writes them (``None`` left out, bools 1/0)."""
    pairs: list[str] = []

    def walk(key: str, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, BatchRef):
            pairs.append(f"{quote(key, safe='')}={value.expression()}")
        elif isinstance(value, bool):
            pairs.append(f"{quote(key, safe='')}={'1' if value else '0'}")
        elif isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{key}[{k}]", v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{key}[{i}]", v)
        else:
            pairs.append(f"{quote(key, safe='')}={quote(str(value), safe='')}")

    for k, v in params.items():
        walk(str(k), v)
    return "&".join(pairs)


def encode_batch(commands: Sequence[BatchCommand], *, halt: bool = False) -> dict[str, Any]:
    """The ``batch`` parameters for ``commands`` (refused locally beyond 50 or on a clash)."""
    if not commands:
        raise ValueError("a batch needs at least one command")
    if len(commands) > MAX_COMMANDS:
        raise Bitrix24Error(
            ErrorKind.VALIDATION,
            "ERROR_BATCH_LENGTH_EXCEEDED",
            f"{len(commands)} commands, at most {MAX_COMMANDS} per batch",
            method="batch",
        )
    cmd: dict[str, str] = {}
    for command in commands:
        if command.name in cmd:
            raise ValueError(f"duplicate batch command name {command.name!r}")
        if command.method.lower() == "batch":
            raise Bitrix24Error(
                ErrorKind.VALIDATION,
                "ERROR_BATCH_METHOD_NOT_ALLOWED",
                "batch cannot be nested",
                method="batch",
            )
        query = php_query(command.params)
        cmd[command.name] = f"{command.method}?{query}" if query else command.method
    return {"halt": 1 if halt else 0, "cmd": cmd}


def _as_map(value: Any, names: Sequence[str]) -> dict[str, Any]:
    # PHP gives [] for an empty map, and a list when the commands were sent as a list.
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        if not value:
            return {}
        return {names[i]: v for i, v in enumerate(value) if i < len(names)}
    return {}


def decode_batch(body: Any, commands: Sequence[BatchCommand]) -> BatchResult:
    """Read a ``batch`` answer's ``result`` object back into per-command outcomes."""
    names = [c.name for c in commands]
    methods = {c.name: c.method for c in commands}
    if not isinstance(body, dict):
        raise Bitrix24Error(
            ErrorKind.RETRYABLE, "BAD_ANSWER", "batch answer has no result object", method="batch"
        )
    out = BatchResult()
    results = _as_map(body.get("result"), names)
    errors = _as_map(body.get("result_error"), names)
    for name, err in errors.items():
        if isinstance(err, dict):
            code = str(err.get("error") or "")
            description = str(err.get("error_description") or "")
        else:
            code, description = "", str(err)
        out.errors[name] = Bitrix24Error(
            map_error(None, code, description), code, description, method=methods.get(name)
        )
    for name, value in results.items():
        if name not in out.errors:
            out.results[name] = value
    for name, total in _as_map(body.get("result_total"), names).items():
        if isinstance(total, int):
            out.totals[name] = total
    for name, nxt in _as_map(body.get("result_next"), names).items():
        if isinstance(nxt, int):
            out.nexts[name] = nxt
    for name, t in _as_map(body.get("result_time"), names).items():
        if isinstance(t, dict):
            out.times[name] = t
    return out
