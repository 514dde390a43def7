"""The OAuth side of the portal (reference §2.2): local apps, codes, tokens, rotation.

The emulator is both the portal and the OAuth server. Access tokens live ``token_ttl``
seconds of emulator time; every refresh issues a new refresh token and spends the old one.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .errors import RestError
from .state import App, AuthCode, PortalState, Token

CODE_TTL = 30.0
REFRESH_TTL = 180 * 24 * 3600.0


@dataclass
class TokenPair:
    access: Token
    refresh: Token


def create_app(state: PortalState, handler: str, user_id: int) -> App:
    app_id = state.next_id("app")
    app = App(
        app_id=app_id,
        client_id=f"local.{secrets.token_hex(7)}.{secrets.randbelow(10**8):08d}",
        client_secret=secrets.token_urlsafe(36)[:48],
        application_token=secrets.token_hex(16),
        handler=handler,
        user_id=user_id,
    )
    state.apps[app_id] = app
    return app


def issue_tokens(state: PortalState, app: App, user_id: int, now: float, ttl: float) -> TokenPair:
    access = Token(secrets.token_hex(32), app.app_id, user_id, now + ttl)
    refresh = Token(secrets.token_hex(32), app.app_id, user_id, now + REFRESH_TTL)
    state.access_tokens[access.value] = access
    state.refresh_tokens[refresh.value] = refresh
    return TokenPair(access, refresh)


def issue_code(state: PortalState, app: App, user_id: int, now: float) -> AuthCode:
    code = AuthCode(secrets.token_hex(16), app.app_id, user_id, now)
    state.auth_codes[code.value] = code
    return code


def check_access(state: PortalState, token: str, now: float) -> Token:
    """The token behind ``auth=``, or the 401 envelope a portal answers (§1.3)."""
    found = state.access_tokens.get(token)
    if found is None or found.app_id not in state.apps:
        raise RestError(401, "invalid_token", "Unable to get application by token")
    if now >= found.expires_at:
        raise RestError(401, "expired_token", "The access token provided has expired.")
    return found


def _oauth_error(status: int, error: str, description: str) -> RestError:
    return RestError(status, error, description)


def token_endpoint(
    state: PortalState,
    params: dict[str, Any],
    *,
    now: float,
    ttl: float,
    client_endpoint: str,
    server_endpoint: str,
    oauth_domain: str,
    revoked: bool,
) -> dict[str, Any]:
    """``/oauth/token/`` for the ``authorization_code`` and ``refresh_token`` grants."""
    grant = str(params.get("grant_type") or "")
    if grant not in ("authorization_code", "refresh_token"):
        raise _oauth_error(400, "invalid_request", "Unsupported or missing grant_type")
    client_id = str(params.get("client_id") or "")
    app = next((a for a in state.apps.values() if a.client_id == client_id), None)
    if app is None or str(params.get("client_secret") or "") != app.client_secret:
        raise _oauth_error(401, "invalid_client", "Invalid client credentials")
    if grant == "authorization_code":
        code = state.auth_codes.get(str(params.get("code") or ""))
        if (
            code is None
            or code.used
            or code.app_id != app.app_id
            or now > code.issued_at + CODE_TTL
        ):
            raise _oauth_error(400, "invalid_grant", "Invalid authorization code")
        code.used = True
        user_id = code.user_id
    else:
        if revoked:
            raise _oauth_error(400, "invalid_grant", "Application is not installed or was removed")
        old = state.refresh_tokens.get(str(params.get("refresh_token") or ""))
        if old is None or old.app_id != app.app_id or now >= old.expires_at:
            raise _oauth_error(400, "invalid_grant", "Invalid refresh token")
        # rotation: the refresh token just used is spent (§2.2)
        del state.refresh_tokens[old.value]
        user_id = old.user_id
    tokens = issue_tokens(state, app, user_id, now, ttl)
    return {
        "access_token": tokens.access.value,
        "refresh_token": tokens.refresh.value,
        "expires": int(tokens.access.expires_at),
        "expires_in": int(ttl),
        "scope": app.scope,
        "domain": oauth_domain,
        "server_endpoint": server_endpoint,
        "client_endpoint": client_endpoint,
        "member_id": state.member_id,
        "status": "L",
        "user_id": user_id,
    }
