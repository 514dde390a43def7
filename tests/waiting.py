"""Waiting on a condition in tests: poll a predicate until it holds or a deadline passes.

Not a sleep used as synchronisation: the test proceeds the moment the condition holds,
and fails with the condition's description when it never does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

POLL_SECONDS = 0.02


async def until(
    predicate: Callable[[], bool | Awaitable[bool]], what: str, within: float = 30.0
) -> None:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if not isinstance(value, bool):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for: {what}")
        await asyncio.sleep(POLL_SECONDS)
