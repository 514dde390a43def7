"""HTTP for the Bitrix24 client: one place that sends, times out and follows a renamed portal.

* Every request has a timeout (connect, read, write, pool).
* A renamed portal answers 301/302/307/308 with the new address. httpx (like browsers) would
  turn a followed 302 POST into a GET and drop the body (§1.1), so redirects are never
  auto-followed: the same POST is sent again to ``Location`` and the final URL is returned so
  the auth strategy can remember the new base.
* Secrets travel in URLs (the webhook code is a path segment; the OAuth refresh is a GET with
  the client secret in its query). httpx logs every request URL at INFO, so a filter on the
  ``httpx`` logger masks them before any handler sees the record.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx

from callbridge.crm.base import ErrorKind
from callbridge.crm.bitrix24.errors import Bitrix24Error, transport_error

__all__ = ["Answer", "Transport", "redact"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})

_SECRET_PATTERNS = (
    # /rest/<user id>/<webhook code>/  → /rest/<user id>/***/
    (re.compile(r"(/rest/\d+/)[^/?#\s\"']+"), r"\1***"),
    # auth=…, access_token=…, refresh_token=…, client_secret=…, code=… in query strings/forms
    (
        re.compile(r"((?:auth|access_token|refresh_token|client_secret|code)=)[^&\s\"']+"),
        r"\1***",
    ),
)


def redact(text: str) -> str:
    """``text`` with webhook codes and token/secret parameters masked."""
    for pattern, repl in _SECRET_PATTERNS:
        text = pattern.sub(repl, text)
    return text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact(a) if isinstance(a, str) else _redact_obj(a) for a in args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def _redact_obj(value: object) -> object:
    if isinstance(value, httpx.URL):
        return redact(str(value))
    return value


_FILTER = _RedactFilter()


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, the parsed JSON body (``None`` if not JSON), the final URL."""

    status: int
    body: Any
    url: str
    redirected: bool


class Transport:
    """Sends requests to the portal and the OAuth server; owns the httpx client."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        verify: bool | str = True,
        max_redirects: int = 5,
        user_agent: str = "callbridge/0.1 (+https://github.com/callbridge)",
        client: httpx.AsyncClient | None = None,
    ) -> None:
        _install_log_filter()
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._own = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            verify=verify,
            follow_redirects=False,
            headers={"Accept": "application/json", "User-Agent": user_agent},
        )

    async def close(self) -> None:
        if self._own:
            await self._client.aclose()

    async def post_json(self, url: str, payload: Any, *, method: str) -> Answer:
        """POST ``payload`` as JSON to ``url``; on a redirect, POST it again to the new place."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        return await self._send("POST", url, method=method, content=body, headers=headers)

    async def get(self, url: str, params: dict[str, str], *, method: str) -> Answer:
        return await self._send("GET", url, method=method, params=params)

    async def _send(
        self,
        verb: str,
        url: str,
        *,
        method: str,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        redirected = False
        for _ in range(self.max_redirects + 1):
            try:
                response = await self._client.request(
                    verb, url, content=content, headers=headers, params=params
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the portal: safe to resend anything.
                raise transport_error(
                    "CONNECTION_FAILED", _describe(exc), method=method, maybe_applied=False
                ) from None
            except httpx.TimeoutException as exc:
                raise transport_error(
                    "TIMEOUT", _describe(exc), method=method, maybe_applied=True
                ) from None
            except httpx.TransportError as exc:
                # Reset or closed after the request went out: it may have run.
                raise transport_error(
                    "CONNECTION_LOST", _describe(exc), method=method, maybe_applied=True
                ) from None
            if response.status_code in _REDIRECTS and "location" in response.headers:
                url = urljoin(str(response.url), response.headers["location"])
                params = None  # the new location carries its own query
                redirected = True
                continue
            try:
                parsed: Any = response.json()
            except ValueError:
                parsed = None
            return Answer(response.status_code, parsed, url, redirected)
        raise Bitrix24Error(
            ErrorKind.RETRYABLE,
            "TOO_MANY_REDIRECTS",
            f"more than {self.max_redirects} redirects",
            method=method,
        )


def _describe(exc: Exception) -> str:
    # httpx messages can carry the URL; never let one out unmasked.
    return redact(f"{type(exc).__name__}: {exc}")
