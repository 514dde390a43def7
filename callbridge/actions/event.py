"""An event as the portal posted it, in the shape the actions read.

Kept out of :mod:`callbridge.web` so that actions never import the web layer (arrows
point from ``web`` to ``actions``, not back).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["BitrixEvent"]


@dataclass(frozen=True, slots=True)
class BitrixEvent:
    """One event: ``name`` upper-case, ``data``/``auth`` nested dicts of strings."""

    name: str
    data: Mapping[str, Any]
    auth: Mapping[str, Any]
    ts: str = ""
    handler_id: str = ""

    def text(self, key: str) -> str:
        """``data[key]`` as a string ("" when absent or not a scalar)."""
        value = self.data.get(key, "")
        return value if isinstance(value, str) else ""
