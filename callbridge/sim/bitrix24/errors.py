"""The portal's error envelope as an exception the method modules raise (reference §1.3)."""

from __future__ import annotations


class RestError(Exception):
    """One REST error answer: HTTP status, ``error`` code and ``error_description``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description

    def envelope(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def method_not_found() -> RestError:
    return RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


def wrong_auth_type() -> RestError:
    return RestError(403, "WRONG_AUTH_TYPE", "Current authorization type is denied for this method")
