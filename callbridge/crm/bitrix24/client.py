"""The Bitrix24 REST client: one request path with pacing, retries and error mapping.

``call`` and ``batch`` go through the same loop:

1. wait for the method's operating-time guard and for a slot in the leaky bucket;
2. authenticate (webhook URL or OAuth token) and POST JSON through the transport;
3. read the envelope: ``expired_token`` → refresh once and resend; ``QUERY_LIMIT_EXCEEDED``
   → the bucket is full, back off and resend (the portal refused before running, so this is
   safe even for a create); ``OPERATION_TIME_LIMIT`` → that method waits until its reset;
   anything else maps onto :class:`~callbridge.crm.base.ErrorKind`.

A failure after which the request *may* have run (timeout, dropped answer, 5xx) is resent
only for idempotent methods; creation is made idempotent by the caller instead
(``EXTERNAL_CALL_ID``), so ``register`` with one counts as idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from callbridge.crm.base import ErrorKind
from callbridge.crm.bitrix24.auth import Auth, AuthState, rebase_url
from callbridge.crm.bitrix24.batch import BatchCommand, BatchResult, decode_batch, encode_batch
from callbridge.crm.bitrix24.errors import Bitrix24Error, error_from_envelope
from callbridge.crm.bitrix24.limiter import Backoff, LeakyBucket, OperatingGuard
from callbridge.crm.bitrix24.transport import Transport

__all__ = ["ApiResponse", "Bitrix24Client", "ClientStats", "is_idempotent"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_IDEMPOTENT = frozenset(
    {
        "telephony.externalcall.show",
        "telephony.externalcall.hide",
        "telephony.externalcall.attachrecord",  # re-attaching replaces the record (§4.6)
        "telephony.externalcall.searchcrmentities",
        "crm.duplicate.findbycomm",
        "voximplant.statistic.get",
        "user.current",
        "server.time",
        "profile",
    }
)
_READ_SUFFIXES = (".get", ".list", ".search", ".fields", ".current")

# Codes that mean the portal does not accept our credential at all.
_REJECTED = frozenset(
    {
        "NO_AUTH_FOUND",
        "invalid_token",
        "ERROR_OAUTH",
        "NOT_INSTALLED",
        "PAYMENT_REQUIRED",
        "INVALID_CREDENTIALS",
        "PORTAL_DELETED",
    }
)


def is_idempotent(method: str, params: Mapping[str, Any] | None = None) -> bool:
    """Whether sending ``method`` twice has the effect of sending it once."""
    m = method.lower()
    if m == "telephony.externalcall.register":
        # Same EXTERNAL_CALL_ID inside the 30-minute window → same CALL_ID (§4.3).
        return bool(params and params.get("EXTERNAL_CALL_ID"))
    return m in _IDEMPOTENT or m.endswith(_READ_SUFFIXES)


@dataclass(frozen=True)
class ApiResponse:
    result: Any
    total: int | None = None
    next: int | None = None
    time: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    errors: Counter[str] = field(default_factory=Counter)


class Bitrix24Client:
    """Async client for one portal."""

    def __init__(
        self,
        auth: Auth,
        *,
        transport: Transport | None = None,
        timeout: float = 10.0,
        limiter: LeakyBucket | None = None,
        guard: OperatingGuard | None = None,
        backoff: Backoff | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_attempts: int = 4,
        max_wait: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.auth = auth
        self.transport = transport or Transport(timeout=timeout)
        self.limiter = limiter or LeakyBucket()
        self.guard = guard or OperatingGuard()
        self.backoff = backoff or Backoff()
        self.clock = clock
        self.sleep = sleep
        self.max_attempts = max(1, max_attempts)
        #: Longest a call waits for a blocked method before failing RETRYABLE with retry_after.
        self.max_wait = max_wait
        self.stats = ClientStats()
        self._rng = rng or random.Random()

    @property
    def auth_state(self) -> AuthState:
        return self.auth.state

    async def close(self) -> None:
        await self.transport.close()

    def method_delay(self, method: str) -> float:
        """Seconds ``method`` must still wait for its operating-time budget."""
        return self.guard.delay(method, self.clock())

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
        priority: bool = False,
    ) -> ApiResponse:
        """Call one REST method; raises :class:`Bitrix24Error`. ``priority``: a caller is
        waiting on the line for this answer; it goes ahead of bulk work in the limiter."""
        params = dict(params or {})
        idem = is_idempotent(method, params) if idempotent is None else idempotent
        body = await self._request(
            method, params, idempotent=idem, guarded=(method,), priority=priority
        )
        total = body.get("total")
        nxt = body.get("next")
        t = body.get("time")
        return ApiResponse(
            body.get("result"),
            total if isinstance(total, int) else None,
            nxt if isinstance(nxt, int) else None,
            t if isinstance(t, dict) else {},
        )

    async def batch(self, commands: Sequence[BatchCommand], *, halt: bool = False) -> BatchResult:
        """Run up to 50 commands as one request; per-command errors come back apart."""
        params = encode_batch(commands, halt=halt)
        idem = all(is_idempotent(c.method, c.params) for c in commands)
        body = await self._request(
            "batch", params, idempotent=idem, guarded=tuple(c.method for c in commands)
        )
        result = decode_batch(body.get("result"), commands)
        now = self.clock()
        server_now = _server_now(body)
        for command in commands:
            t = result.times.get(command.name)
            if t is not None:
                self._observe(command.method, t, now, server_now)
            err = result.errors.get(command.name)
            if err is not None:
                self.stats.errors[err.code] += 1
                if err.code == "OPERATION_TIME_LIMIT":
                    until = self.guard.block(command.method, now, None)
                    err.retry_after = max(0.0, until - now)
        return result

    # -- the request loop -------------------------------------------------------------------

    async def _wait_turn(self, method: str, guarded: Sequence[str], priority: bool = False) -> None:
        counts = Counter(m.lower() for m in guarded)
        now = self.clock()
        delay = max((self.guard.delay(m, now, n) for m, n in counts.items()), default=0.0)
        if delay > self.max_wait:
            raise Bitrix24Error(
                ErrorKind.RETRYABLE,
                "OPERATION_TIME_LIMIT",
                "method is held back until its operating-time budget resets",
                method=method,
                retry_after=delay,
            )
        if delay > 0:
            await self.sleep(delay)
        wait = self.limiter.reserve(self.clock(), priority=priority)
        if wait > 0:
            await self.sleep(wait)

    async def _backoff(self, attempt: int) -> None:
        self.stats.retries += 1
        await self.sleep(self.backoff.delay(attempt, self._rng))

    async def _request(
        self,
        method: str,
        params: dict[str, Any],
        *,
        idempotent: bool,
        guarded: Sequence[str],
        priority: bool = False,
    ) -> dict[str, Any]:
        attempt = 0
        refreshed = False
        while True:
            attempt += 1
            await self._wait_turn(method, guarded, priority)
            credential = self.auth.prepare(method)
            payload = {**params, **credential.extra}
            self.stats.requests += 1
            try:
                answer = await self.transport.post_json(credential.url, payload, method=method)
            except Bitrix24Error as sent_err:
                self.stats.errors[sent_err.code] += 1
                log.warning("Bitrix24 %s failed: %s", method, sent_err)
                if (idempotent or not sent_err.maybe_applied) and attempt < self.max_attempts:
                    await self._backoff(attempt)
                    continue
                raise
            if answer.redirected:
                self.auth.rebase(rebase_url(self.auth.base(), method, answer.url))
            body = answer.body
            now = self.clock()
            if (
                answer.status == 200
                and isinstance(body, dict)
                and "result" in body
                and "error" not in body
            ):
                if method != "batch":  # the outer batch is not counted (§3.2)
                    t = body.get("time")
                    if isinstance(t, dict):
                        self._observe(method, t, now, _server_now(body))
                self.auth.accepted()
                return body
            err = error_from_envelope(answer.status, body, method=method)
            self.stats.errors[err.code] += 1
            log.debug("Bitrix24 %s answered %s %s", method, answer.status, err.code)
            if err.code == "expired_token" and self.auth.can_refresh() and not refreshed:
                refreshed = True
                attempt -= 1  # the refused request did not run: it does not use an attempt
                await self.auth.refresh(credential, self.transport)
                continue
            if err.code == "QUERY_LIMIT_EXCEEDED":
                self.limiter.saturate(now)
                log.warning("Bitrix24 request limit reached; backing off")
                if attempt < self.max_attempts:
                    await self._backoff(attempt)
                    continue
                err.retry_after = self.limiter.wait_time(now) + self.backoff.base
                raise err
            if err.code == "OPERATION_TIME_LIMIT":
                reset_in = _reset_in(body)
                until = self.guard.block(method, now, reset_in)
                log.warning(
                    "Bitrix24 blocked %s for its operating time; it waits %.0f s",
                    method,
                    until - now,
                )
                err.retry_after = max(0.0, until - now)
                if attempt < self.max_attempts and until - now <= self.max_wait:
                    continue
                raise err
            if err.code in _REJECTED:
                self.auth.rejected(err)
            if (
                err.retryable
                and (idempotent or not err.maybe_applied)
                and attempt < self.max_attempts
            ):
                await self._backoff(attempt)
                continue
            raise err

    def _observe(
        self, method: str, t: Mapping[str, Any], now: float, server_now: float | None
    ) -> None:
        operating = t.get("operating")
        if not isinstance(operating, int | float):
            return
        finish = t.get("finish")
        portal_now = float(finish) if isinstance(finish, int | float) else server_now
        self.guard.observe(method, float(operating), now, portal_now)


def _server_now(body: Any) -> float | None:
    if isinstance(body, dict):
        t = body.get("time")
        if isinstance(t, dict):
            finish = t.get("finish")
            if isinstance(finish, int | float):
                return float(finish)
    return None


def _reset_in(body: Any) -> float | None:
    """Seconds to ``operating_reset_at`` from the portal's own clock, when the answer says."""
    if not isinstance(body, dict):
        return None
    t = body.get("time")
    if not isinstance(t, dict):
        return None
    reset_at = t.get("operating_reset_at")
    now = t.get("finish", t.get("start"))
    if isinstance(reset_at, int | float) and isinstance(now, int | float):
        return float(reset_at) - float(now)
    return None
