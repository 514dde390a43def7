"""Bitrix24 errors mapped onto the CRM port's taxonomy (:class:`~callbridge.crm.base.ErrorKind`).

The portal's ``error`` code decides, never the HTTP status alone: ``QUERY_LIMIT_EXCEEDED`` has
come as 503 and as 429, ``OPERATION_TIME_LIMIT`` is 429, and method-level validation errors
arrive with an *empty* code (reference §1.3), so those are told apart by their description.
"""

from __future__ import annotations

from typing import Any

from callbridge.crm.base import CrmError, ErrorKind

__all__ = [
    "REJECTED_BEFORE_RUN",
    "Bitrix24Error",
    "error_from_envelope",
    "map_error",
    "transport_error",
]

#: Codes the portal answers *before* running the method: resending cannot double an effect.
REJECTED_BEFORE_RUN = frozenset(
    {
        "QUERY_LIMIT_EXCEEDED",
        "OPERATION_TIME_LIMIT",
        "OVERLOAD_LIMIT",
        "expired_token",
        "invalid_token",
        "NO_AUTH_FOUND",
        "ERROR_BATCH_LENGTH_EXCEEDED",
        "ERROR_BATCH_METHOD_NOT_ALLOWED",
        "ERROR_METHOD_NOT_FOUND",
        "WRONG_AUTH_TYPE",
        "insufficient_scope",
    }
)

_BY_CODE: dict[str, ErrorKind] = {
    # rate and load: try again later
    "QUERY_LIMIT_EXCEEDED": ErrorKind.RETRYABLE,
    "OPERATION_TIME_LIMIT": ErrorKind.RETRYABLE,
    "OVERLOAD_LIMIT": ErrorKind.RETRYABLE,
    "INTERNAL_SERVER_ERROR": ErrorKind.RETRYABLE,
    "ERROR_UNEXPECTED_ANSWER": ErrorKind.RETRYABLE,
    "SERVER_NOT_AVAILABLE": ErrorKind.RETRYABLE,
    # credentials, installation, scopes: an admin has to act
    "expired_token": ErrorKind.AUTH,
    "invalid_token": ErrorKind.AUTH,
    "NO_AUTH_FOUND": ErrorKind.AUTH,
    "ERROR_OAUTH": ErrorKind.AUTH,
    "PAYMENT_REQUIRED": ErrorKind.AUTH,
    "NOT_INSTALLED": ErrorKind.AUTH,
    "INVALID_CREDENTIALS": ErrorKind.AUTH,
    "insufficient_scope": ErrorKind.AUTH,
    "invalid_scope": ErrorKind.AUTH,
    "WRONG_AUTH_TYPE": ErrorKind.AUTH,
    "user_access_error": ErrorKind.AUTH,
    "invalid_grant": ErrorKind.AUTH,
    "invalid_client": ErrorKind.AUTH,
    "PORTAL_DELETED": ErrorKind.AUTH,
    # the portal will never accept it
    "ACCESS_DENIED": ErrorKind.PERMANENT,
    "ERROR_METHOD_NOT_FOUND": ErrorKind.PERMANENT,
    "NOT_FOUND": ErrorKind.PERMANENT,
    "OWNER_NOT_FOUND": ErrorKind.PERMANENT,
    # our request was wrong
    "INVALID_REQUEST": ErrorKind.VALIDATION,
    "invalid_request": ErrorKind.VALIDATION,
    "INVALID_ARGUMENT": ErrorKind.VALIDATION,
    "INVALID_ARG_VALUE": ErrorKind.VALIDATION,
    "ERROR_BATCH_LENGTH_EXCEEDED": ErrorKind.VALIDATION,
    "ERROR_BATCH_METHOD_NOT_ALLOWED": ErrorKind.VALIDATION,
    "ERROR_ARGUMENT": ErrorKind.VALIDATION,
}

# Empty-code (``""``/``ERROR_CORE``) errors whose description means "the thing is not there":
# retrying cannot help, and for ``finish`` it usually means an earlier attempt already worked.
_PERMANENT_DESCRIPTIONS = (
    "call is not found",
    "access denied",
    "is not found in the statistic table",
    "crm is not installed",
)


class Bitrix24Error(CrmError):
    """A :class:`CrmError` with what the Bitrix24 client knows about the failure.

    ``maybe_applied`` is true when the request may have reached the portal and run (a timeout,
    a dropped answer, a 5xx): the caller must not blindly resend anything that creates.
    ``retry_after`` (seconds) is set when the portal or the client knows when to try again.
    """

    def __init__(
        self,
        kind: ErrorKind,
        code: str,
        description: str = "",
        *,
        status: int | None = None,
        method: str | None = None,
        retry_after: float | None = None,
        maybe_applied: bool = False,
    ) -> None:
        super().__init__(kind, code, description)
        self.status = status
        self.method = method
        self.retry_after = retry_after
        self.maybe_applied = maybe_applied


def map_error(status: int | None, code: str, description: str = "") -> ErrorKind:
    """The kind of a portal error, from its code first and its HTTP status last."""
    kind = _BY_CODE.get(code)
    if kind is not None:
        return kind
    if code in ("", "ERROR_CORE"):
        lowered = description.lower()
        if any(text in lowered for text in _PERMANENT_DESCRIPTIONS):
            return ErrorKind.PERMANENT
        if status is not None and status >= 500:
            return ErrorKind.RETRYABLE
        return ErrorKind.VALIDATION
    if status is None:
        return ErrorKind.VALIDATION
    if status >= 500 or status == 429 or status == 408:
        return ErrorKind.RETRYABLE
    if status == 401:
        return ErrorKind.AUTH
    if status in (403, 404, 410):
        return ErrorKind.PERMANENT
    return ErrorKind.VALIDATION


def error_from_envelope(
    status: int | None, body: Any, *, method: str | None = None
) -> Bitrix24Error:
    """Build the error of an answer: ``{"error": …, "error_description": …}`` or anything else."""
    if isinstance(body, dict) and "error" in body:
        code = str(body.get("error") or "")
        description = str(body.get("error_description") or "")
    elif status is not None and status < 400:
        # A success status without the envelope (a maintenance page, a captive proxy): the
        # request may or may not have run.
        return Bitrix24Error(
            ErrorKind.RETRYABLE,
            "BAD_ANSWER",
            f"HTTP {status} answer is not a Bitrix24 envelope",
            status=status,
            method=method,
            maybe_applied=True,
        )
    else:
        # Not the portal's envelope (a proxy's HTML page, an empty body): judge by status.
        code = f"HTTP_{status}" if status is not None else "BAD_ANSWER"
        description = "answer is not a Bitrix24 envelope"
    kind = map_error(status, code, description)
    # 5xx other than the limiter's may come after the method ran.
    maybe_applied = status is not None and status >= 500 and code not in REJECTED_BEFORE_RUN
    return Bitrix24Error(
        kind, code, description, status=status, method=method, maybe_applied=maybe_applied
    )


def transport_error(
    code: str, description: str, *, method: str | None, maybe_applied: bool
) -> Bitrix24Error:
    """A failure below HTTP (timeout, reset, refused): always worth retrying later."""
    return Bitrix24Error(
        ErrorKind.RETRYABLE, code, description, method=method, maybe_applied=maybe_applied
    )
