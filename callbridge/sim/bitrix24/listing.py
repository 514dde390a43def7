"""List-method mechanics shared by every ``*.list``/``*.get`` that pages (reference §3.4, §6.4).

Filters use Bitrix's key prefixes (``=``, ``!``, ``>``, ``>=``, ``<``, ``<=``, ``@``, ``!@``,
``%``, ``=%``); pages are fixed at 50 rows; ``start=-1`` drops the count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PAGE_SIZE = 50
_PREFIXES = ("!@", "!=", "!%", "=%", "%=", ">=", "<=", "=", "!", ">", "<", "@", "%")


@dataclass
class ListResult:
    """A page of a list method: the rows plus the envelope's ``total``/``next``."""

    items: list[Any]
    total: int | None
    next: int | None


def split_filter_key(key: str) -> tuple[str, str]:
    for prefix in _PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return prefix, key[len(prefix) :]
    return "", key


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _as_date(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) < 10 or value[4:5] != "-":
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def compare(a: Any, b: Any) -> int:
    """Three-way comparison the way a SQL filter would see two values."""
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        return (na > nb) - (na < nb)
    da, db = _as_date(a), _as_date(b)
    if da is not None and db is not None:
        return (da > db) - (da < db)
    sa, sb = ("" if a is None else str(a).lower()), ("" if b is None else str(b).lower())
    return (sa > sb) - (sa < sb)


def _row_values(value: Any) -> list[Any]:
    """A multifield (``PHONE``) matches when any of its values does."""
    if isinstance(value, list):
        return [v.get("VALUE") if isinstance(v, dict) else v for v in value]
    return [value]


def _bool_eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        truthy = {"y", "true", "1"}
        return (str(a).lower() in truthy) == (str(b).lower() in truthy)
    return compare(a, b) == 0


def _match_one(prefix: str, actual: Any, wanted: Any) -> bool:
    values = _row_values(actual)
    if prefix in ("@", "!@"):
        pool = wanted if isinstance(wanted, list) else [wanted]
        hit = any(_bool_eq(v, w) for v in values for w in pool)
        return hit if prefix == "@" else not hit
    if prefix in ("%", "=%", "%=", "!%"):
        needle = str(wanted).lower().strip("%")
        hit = any(needle in str(v or "").lower() for v in values)
        return not hit if prefix == "!%" else hit
    if isinstance(wanted, list):
        hit = any(_bool_eq(v, w) for v in values for w in wanted)
        return not hit if prefix in ("!", "!=") else hit
    if prefix in ("", "="):
        return any(_bool_eq(v, wanted) for v in values)
    if prefix in ("!", "!="):
        return not any(_bool_eq(v, wanted) for v in values)
    ops: dict[str, Callable[[int], bool]] = {
        ">": lambda c: c > 0,
        ">=": lambda c: c >= 0,
        "<": lambda c: c < 0,
        "<=": lambda c: c <= 0,
    }
    return any(v is not None and ops[prefix](compare(v, wanted)) for v in values)


def matches(row: dict[str, Any], flt: dict[str, Any]) -> bool:
    """Whether ``row`` passes every condition of a Bitrix-style filter (keys any case)."""
    folded = {k.upper(): v for k, v in row.items()}
    for key, wanted in flt.items():
        prefix, field = split_filter_key(str(key))
        if not _match_one(prefix, folded.get(field.upper()), wanted):
            return False
    return True


def order_rows(rows: list[dict[str, Any]], order: dict[str, Any]) -> list[dict[str, Any]]:
    result = list(rows)
    for field, direction in reversed(list(order.items())):
        desc = str(direction).upper() == "DESC"
        name = str(field).upper()
        present = [r for r in result if r.get(name) not in (None, "")]
        missing = [r for r in result if r.get(name) in (None, "")]
        present.sort(key=_SortKey.of(name), reverse=desc)
        result = present + missing
    return result


class _SortKey:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _SortKey) -> bool:
        return compare(self.value, other.value) < 0

    @staticmethod
    def of(name: str) -> Callable[[dict[str, Any]], _SortKey]:
        return lambda row: _SortKey(row.get(name))


def page(rows: Sequence[Any], start: Any) -> ListResult:
    """One fixed-size page; ``start=-1`` means "no count" (no ``total``)."""
    try:
        offset = int(start) if start not in (None, "") else 0
    except (TypeError, ValueError):
        offset = 0
    if offset < 0:
        items = list(rows[:PAGE_SIZE])
        return ListResult(items, None, None)
    items = list(rows[offset : offset + PAGE_SIZE])
    nxt = offset + PAGE_SIZE if offset + PAGE_SIZE < len(rows) else None
    return ListResult(items, len(rows), nxt)


def select_fields(
    row: dict[str, Any], select: Iterable[Any], multifields: Sequence[str]
) -> dict[str, Any]:
    """Apply ``select``: ``*`` = every plain field; multifields only when named (§6.1)."""
    wanted = [str(s).upper() for s in select if str(s)]
    if not wanted:
        wanted = ["*"]
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in multifields:
            if key in wanted:
                out[key] = value
        elif "*" in wanted or key in wanted or key == "ID":
            out[key] = value
    return out
