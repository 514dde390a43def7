"""The two ways callbridge authenticates to a portal, behind one interface.

* :class:`WebhookAuth` — incoming webhook: the secret is in the URL
  (``https://portal/rest/<user>/<code>/<method>``); nothing to refresh.
* :class:`OAuthAuth` — local application: ``<client_endpoint><method>`` with
  ``auth=<access_token>``; on ``expired_token`` the token is refreshed at the OAuth server
  exactly once however many requests saw it expire at the same moment, and the rotated refresh
  token is saved durably before the new access token is used (§2.2).

The transport calls :meth:`Auth.prepare` for each request and reports back what the portal
said; :attr:`Auth.state` is what ``/health`` and ``callbridge check`` show.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from callbridge.crm.base import ErrorKind
from callbridge.crm.bitrix24.errors import Bitrix24Error, map_error
from callbridge.crm.bitrix24.transport import Transport
from callbridge.store.tokens import StoredTokens, TokenStore

__all__ = ["Auth", "AuthState", "Credential", "OAuthAuth", "WebhookAuth", "rebase_url"]

log = logging.getLogger(__name__)

AuthStatus = Literal["ok", "not_installed", "refresh_failed", "rejected"]

# OAuth-server answers that mean "this refresh token will never work again" (§2.2).
_FATAL_REFRESH = frozenset(
    {
        "invalid_grant",
        "invalid_client",
        "invalid_request",
        "invalid_scope",
        "PAYMENT_REQUIRED",
        "NOT_INSTALLED",
        "ERROR_OAUTH",
        "insufficient_scope",
    }
)


@dataclass(frozen=True)
class AuthState:
    status: AuthStatus = "ok"
    reason: str = ""
    since: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Credential:
    """How one request is authenticated: its URL, extra body keys, the access token used."""

    url: str
    extra: dict[str, Any]
    token: str = ""


def rebase_url(base: str, method: str, final_url: str) -> str:
    """The base a redirect moved ``base + method`` to.

    ``https://old/rest/1/c/crm.lead.add`` → ``https://new/rest/1/c/crm.lead.add`` gives
    ``https://new/rest/1/c/``; a Location that does not end in the method keeps our path and
    takes only the new scheme and host.
    """
    parts = urlsplit(final_url)
    path = parts.path
    for suffix in (method, method + ".json", method + "/"):
        if path.lower().endswith("/" + suffix.lower()):
            new_path = path[: len(path) - len(suffix)]
            return urlunsplit((parts.scheme, parts.netloc, new_path, "", ""))
    old = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, old.path, "", ""))


class Auth(ABC):
    """An authentication strategy."""

    @property
    @abstractmethod
    def state(self) -> AuthState: ...

    @abstractmethod
    def prepare(self, method: str) -> Credential:
        """The credential for a call to ``method``; raises ``CrmError(AUTH)`` if none usable."""

    @abstractmethod
    def rebase(self, new_base: str) -> None:
        """The portal moved; later requests go to ``new_base``."""

    @abstractmethod
    def base(self) -> str: ...

    def can_refresh(self) -> bool:
        return False

    async def refresh(self, used: Credential, transport: Transport) -> None:
        """Get a fresh credential after ``used`` expired (OAuth only)."""
        raise Bitrix24Error(ErrorKind.AUTH, "expired_token", "this auth cannot refresh")

    def rejected(self, error: Bitrix24Error) -> None:  # noqa: B027 - optional hook
        """The portal refused our credential (revoked webhook, unknown token)."""

    def accepted(self) -> None:  # noqa: B027 - optional hook
        """A request went through: the credential works."""


class WebhookAuth(Auth):
    """Incoming webhook ``https://portal/rest/<user>/<code>/``."""

    def __init__(self, webhook_url: str) -> None:
        url = webhook_url.strip()
        if not url.endswith("/"):
            url += "/"
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        if parts.scheme not in ("http", "https") or len(segments) < 3 or segments[-3] != "rest":
            # Never echo the URL: it holds the secret code.
            raise ValueError("webhook URL must look like https://PORTAL/rest/<user id>/<code>/")
        self._base = url
        self._state = AuthState()

    @property
    def state(self) -> AuthState:
        return self._state

    def base(self) -> str:
        return self._base

    def prepare(self, method: str) -> Credential:
        return Credential(self._base + method, {})

    def rebase(self, new_base: str) -> None:
        self._base = new_base if new_base.endswith("/") else new_base + "/"
        log.warning("Bitrix24 portal moved; requests now go to its new address")

    def rejected(self, error: Bitrix24Error) -> None:
        if self._state.status != "rejected":
            log.error(
                "Bitrix24 refused the incoming webhook (%s: %s); sending stops until it is "
                "fixed in the config",
                error.code,
                error.description,
            )
        self._state = AuthState("rejected", f"{error.code}: {error.description}", time.time())

    def accepted(self) -> None:
        if not self._state.ok:
            self._state = AuthState()


class OAuthAuth(Auth):
    """Local-application OAuth with single-flight refresh and durable rotation."""

    def __init__(
        self,
        store: TokenStore,
        *,
        oauth_url: str,
        client_id: str,
        client_secret: str,
        clock: Any = time.time,
    ) -> None:
        self._store = store
        self._oauth_url = oauth_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._lock = asyncio.Lock()
        self._tokens: StoredTokens | None = store.load()
        self._failed_generation: int | None = None
        self._state = AuthState()
        self.refreshes = 0
        if self._tokens is None:
            self._state = AuthState("not_installed", "no tokens stored yet", clock())
        elif self._tokens.failed_reason:
            # A previous process was refused; stay stopped until a reinstall writes new tokens.
            self._failed_generation = self._tokens.generation
            self._state = AuthState(
                "refresh_failed", self._tokens.failed_reason, self._tokens.failed_at
            )

    @property
    def state(self) -> AuthState:
        return self._state

    def set_credentials(self, client_id: str, client_secret: str) -> None:
        """New application credentials (a reinstall made a new local application)."""
        self._client_id = client_id
        self._client_secret = client_secret

    def can_refresh(self) -> bool:
        return True

    def base(self) -> str:
        return self._tokens.client_endpoint if self._tokens is not None else ""

    def _reload_if_reinstalled(self) -> None:
        stored = self._store.load()
        if stored is None:
            return
        if self._failed_generation is not None and stored.generation <= self._failed_generation:
            return
        if stored.failed_reason:
            return
        if not self._state.ok:
            log.info("Bitrix24 application credentials found; sending resumes")
        self._tokens = stored
        self._failed_generation = None
        self._state = AuthState()

    def prepare(self, method: str) -> Credential:
        if not self._state.ok or self._tokens is None:
            self._reload_if_reinstalled()
        tokens = self._tokens
        if not self._state.ok or tokens is None:
            raise Bitrix24Error(
                ErrorKind.AUTH, self._state.status, self._state.reason, method=method
            )
        if not tokens.client_endpoint:
            raise Bitrix24Error(
                ErrorKind.AUTH,
                "NO_CLIENT_ENDPOINT",
                "the portal address is unknown until an install or event supplies it",
                method=method,
            )
        endpoint = tokens.client_endpoint
        if not endpoint.endswith("/"):
            endpoint += "/"
        return Credential(endpoint + method, {"auth": tokens.access_token}, tokens.access_token)

    def rebase(self, new_base: str) -> None:
        if self._tokens is None:
            return
        self._store.set_client_endpoint(new_base)
        loaded = self._store.load()
        if loaded is not None:
            self._tokens = loaded
        log.warning("Bitrix24 portal moved; requests now go to its new address")

    async def refresh(self, used: Credential, transport: Transport) -> None:
        async with self._lock:
            tokens = self._tokens
            if tokens is not None and tokens.access_token != used.token:
                return  # another request refreshed while we waited: use its token
            stored = self._store.load()
            if (
                stored is not None
                and stored.access_token != used.token
                and not stored.failed_reason
            ):
                self._tokens = stored  # another process refreshed (or a reinstall)
                return
            if tokens is None:
                raise Bitrix24Error(ErrorKind.AUTH, "not_installed", "no tokens stored")
            answer = await transport.get(
                self._oauth_url + "/oauth/token/",
                {
                    "grant_type": "refresh_token",
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "refresh_token": tokens.refresh_token,
                },
                method="oauth.token",
            )
            body = answer.body
            if answer.status == 200 and isinstance(body, dict) and body.get("access_token"):
                expires = body.get("expires")
                if not isinstance(expires, int | float):
                    expires = self._clock() + float(body.get("expires_in") or 3600)
                # Durable first: the old refresh token is spent from this moment.
                self._store.save_refreshed(
                    access_token=str(body["access_token"]),
                    refresh_token=str(body.get("refresh_token") or tokens.refresh_token),
                    expires=float(expires),
                    client_endpoint=str(body.get("client_endpoint") or ""),
                    scope=str(body.get("scope") or ""),
                )
                self._tokens = self._store.load()
                self.refreshes += 1
                self._state = AuthState()
                log.info("Bitrix24 access token refreshed")
                return
            code = str(body.get("error") or "") if isinstance(body, dict) else ""
            description = str(body.get("error_description") or "") if isinstance(body, dict) else ""
            code = code or f"HTTP_{answer.status}"
            kind = map_error(answer.status, code, description)
            if code in _FATAL_REFRESH or kind in (ErrorKind.AUTH, ErrorKind.VALIDATION):
                reason = f"{code}: {description}" if description else code
                self._store.mark_failed(reason)
                self._failed_generation = tokens.generation
                self._state = AuthState("refresh_failed", reason, self._clock())
                log.error(
                    "Bitrix24 refused to refresh the access token (%s); sending to the portal "
                    "stops until the application is reinstalled",
                    reason,
                )
                raise Bitrix24Error(ErrorKind.AUTH, code, description, status=answer.status)
            raise Bitrix24Error(
                ErrorKind.RETRYABLE,
                code,
                description or "OAuth server unavailable",
                status=answer.status,
            )

    def rejected(self, error: Bitrix24Error) -> None:
        reason = f"{error.code}: {error.description}"
        if self._state.status != "rejected":
            log.error("Bitrix24 refused the application's token (%s)", reason)
        # Not a stop: the next request tries again (an app restored by the admin just works).
        self._state = AuthState("rejected", reason, self._clock())

    def accepted(self) -> None:
        if self._state.status == "rejected":
            self._state = AuthState()
