"""Decoding event bodies as Bitrix24 sends them, bounded against hostile input. Pure.

Bitrix24 posts events form-encoded with PHP-style nested keys (``data[FIELDS][ID]=7``,
``auth[application_token]=…``, reference §5.1); some senders (tests, proxies) use JSON.
Both end up as the same nested ``dict``. Limits on size, field count, key length and
nesting depth turn hostile bodies into :class:`BodyError` (a 4xx) before any work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

__all__ = ["BodyError", "BodyLimits", "decode_body", "parse_php_pairs"]


@dataclass(frozen=True, slots=True)
class BodyLimits:
    max_bytes: int = 64 * 1024
    max_fields: int = 1000
    max_key_length: int = 256
    max_depth: int = 8


class BodyError(ValueError):
    """The body is unacceptable; ``status`` is the HTTP answer (400, 413, 415)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# name[sub][sub2][] → "name", "[sub][sub2][]"
_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_PART = re.compile(r"\[([^\[\]]*)\]")


def parse_php_pairs(pairs: list[tuple[str, str]], limits: BodyLimits) -> dict[str, Any]:
    """``[("data[A][B]", "1")]`` → ``{"data": {"A": {"B": "1"}}}``, PHP's rules:

    ``[]`` appends (numbered ``"0"``, ``"1"`` … like a PHP list); a later value for the same
    path wins; a key that is not of the bracket form is kept whole as a plain key (PHP
    mangles it, we stay readable). Deeper nesting than ``limits.max_depth`` is an error.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        if len(key) > limits.max_key_length:
            raise BodyError(400, f"field name longer than {limits.max_key_length} characters")
        match = _KEY.fullmatch(key)
        path = [match.group(1), *_PART.findall(match.group(2))] if match else [key]
        if len(path) > limits.max_depth:
            raise BodyError(400, f"field {key[:60]!r} nested deeper than {limits.max_depth}")
        node = root
        for part in path[:-1]:
            child = node.get(part if part else str(len(node)))
            if not isinstance(child, dict):
                # A scalar at a path that now has children: the later, deeper value wins.
                child = {}
                node[part if part else str(len(node))] = child
            node = child
        last = path[-1]
        node[last if last else str(len(node))] = value
    return root


def _depth(value: Any, limit: int) -> int:
    # Iterative, so a hostile document cannot exhaust the Python stack here.
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > limit:
            return level
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _stringify(value: Any) -> Any:
    # A JSON event means the same as its form-encoded twin: scalars become the strings
    # PHP's http_build_query would have sent (true → "1", false → "0"), lists numbered maps.
    if isinstance(value, dict):
        return {str(k): _stringify(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return {str(i): _stringify(v) for i, v in enumerate(value) if v is not None}
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def decode_body(content_type: str, body: bytes, limits: BodyLimits) -> dict[str, Any]:
    """The body as a nested dict of strings, or :class:`BodyError`."""
    if len(body) > limits.max_bytes:
        raise BodyError(413, f"body larger than {limits.max_bytes} bytes")
    media = content_type.split(";", 1)[0].strip().lower()
    if media in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("ascii")
            pairs = parse_qsl(
                text,
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
                max_num_fields=limits.max_fields,
            )
        except UnicodeError:
            raise BodyError(400, "form body is not valid percent-encoded UTF-8") from None
        except ValueError as exc:
            raise BodyError(400, f"form body refused: {exc}") from None
        return parse_php_pairs(pairs, limits)
    if media == "application/json":
        try:
            parsed = json.loads(body)
        except RecursionError:
            raise BodyError(400, f"JSON nested deeper than {limits.max_depth}") from None
        except ValueError as exc:
            raise BodyError(400, f"JSON body refused: {exc}") from None
        if not isinstance(parsed, dict):
            raise BodyError(400, "JSON body must be an object")
        if _depth(parsed, limits.max_depth) > limits.max_depth:
            raise BodyError(400, f"JSON nested deeper than {limits.max_depth}")
        result: dict[str, Any] = _stringify(parsed)
        return result
    raise BodyError(415, f"unsupported content type {media!r}")
