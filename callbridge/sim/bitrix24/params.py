"""Request parameters the way PHP sees them.

Bitrix24 is PHP: form bodies and batch sub-queries are read with ``parse_str`` rules
(``fields[PHONE][0][VALUE]=…``), and events are sent with ``http_build_query`` rules (null and
empty arrays omitted, booleans as 1/0). Both directions live here, free of I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote_plus


def _split_key(key: str) -> list[str]:
    """``a[b][]`` → ``["a", "b", ""]``; a key with a broken bracket is taken literally."""
    open_at = key.find("[")
    if open_at <= 0:
        return [key]
    parts = [key[:open_at]]
    rest = key[open_at:]
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            break
        parts.append(rest[1:close])
        rest = rest[close + 1 :]
    return parts


def _next_index(node: dict[str, Any]) -> str:
    ints = [int(k) for k in node if k.lstrip("-").isdigit()]
    return str(max(ints) + 1 if ints else 0)


def parse_php_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Build nested parameters from ``(key, value)`` pairs with PHP ``parse_str`` rules."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        path = _split_key(key)
        node = root
        for i, part in enumerate(path):
            last = i == len(path) - 1
            name = _next_index(node) if part == "" else part
            if last:
                node[name] = value
            else:
                child = node.get(name)
                if not isinstance(child, dict):
                    child = {}
                    node[name] = child
                node = child
    result = _listify(root)
    assert isinstance(result, dict)
    return result


def parse_php_query(query: str) -> dict[str, Any]:
    """Parse a URL-encoded query string (``a[b]=1&c[]=2``) with PHP rules."""
    return parse_php_pairs(parse_qsl(query, keep_blank_values=True))


def _listify(value: Any) -> Any:
    """Maps keyed exactly ``0..n-1`` become lists, as PHP arrays do when JSON-encoded."""
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        if converted and [str(i) for i in range(len(converted))] == list(converted):
            return list(converted.values())
        return converted
    return value


def list_items(value: Any) -> list[Any]:
    """A list parameter as a list: a JSON list as it is, a form's indexed map
    (``PHONE[0][VALUE]=…`` parses to ``{"0": {...}}``) by its values, anything else empty."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        return list(value.values())
    return []


def _scalar(value: Any) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value)


def _walk(prefix: str, value: Any, out: list[str]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            _walk(f"{prefix}[{k}]" if prefix else str(k), v, out)
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _walk(f"{prefix}[{i}]" if prefix else str(i), v, out)
        return
    out.append(f"{quote_plus(prefix)}={quote_plus(_scalar(value))}")


def php_build_query(data: Mapping[str, Any]) -> str:
    """Encode like PHP ``http_build_query``: nulls and empty arrays vanish, ``true`` is ``1``."""
    out: list[str] = []
    _walk("", data, out)
    return "&".join(out)


class Params:
    """Top-level request parameters with case-insensitive lookup.

    Legacy methods accept ``fields`` and ``FIELDS`` alike, telephony methods take upper-case
    names; a lookup tries the exact name first, then any spelling.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self._folded = {k.lower(): k for k in self.data}

    def get(self, name: str, default: Any = None) -> Any:
        if name in self.data:
            return self.data[name]
        key = self._folded.get(name.lower())
        return self.data[key] if key is not None else default

    def has(self, name: str) -> bool:
        return name in self.data or name.lower() in self._folded

    def mapping(self, name: str) -> dict[str, Any]:
        """A nested object parameter; absent, empty or a list of nothing gives ``{}``."""
        value = self.get(name)
        if isinstance(value, dict):
            return value
        if isinstance(value, list) and not value:
            return {}
        return {}
