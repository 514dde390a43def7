"""callbridge.crm.bitrix24 — the Bitrix24 REST client and the CRM-port adapter.

``errors`` (taxonomy), ``limiter`` (leaky bucket, operating-time guard, backoff; pure),
``transport`` (httpx, redirects, timeouts, log redaction), ``auth`` (webhook and OAuth),
``batch`` (encoding/decoding; pure), ``client`` (the request loop), ``adapter`` (CrmPort).
"""

from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.crm.bitrix24.auth import Auth, AuthState, OAuthAuth, WebhookAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.crm.bitrix24.errors import Bitrix24Error

__all__ = [
    "Auth",
    "AuthState",
    "Bitrix24Client",
    "Bitrix24Crm",
    "Bitrix24Error",
    "OAuthAuth",
    "WebhookAuth",
]
