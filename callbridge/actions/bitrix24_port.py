"""The actions' CRM port (:class:`~callbridge.actions.originate.ClickCrm`) on Bitrix24 REST.

Thin on purpose: every method is one REST call through the shared client, which paces,
refreshes tokens and maps errors. What goes into parameters has already passed the
safety whitelist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Bitrix24ClickCrm", "RestCaller"]


class _Answer(Protocol):
    @property
    def result(self) -> Any: ...


class RestCaller(Protocol):
    """``Bitrix24Client.call``."""

    async def call(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotent: bool | None = None,
    ) -> Any: ...


_NAME_METHODS = {"CONTACT": "crm.contact.get", "COMPANY": "crm.company.get", "LEAD": "crm.lead.get"}


def _scalar(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


class Bitrix24ClickCrm:
    """Click-to-call and callback needs, as Bitrix24 REST calls."""

    def __init__(self, client: RestCaller) -> None:
        self._client = client

    async def user_extension(self, user_id: str) -> str | None:
        answer = await self._client.call(
            "user.get", {"FILTER": {"ID": user_id, "ACTIVE": True}}, idempotent=True
        )
        users = answer.result
        if isinstance(users, list):
            for user in users:
                if isinstance(user, dict) and str(user.get("ID")) == user_id:
                    ext = _scalar(user.get("UF_PHONE_INNER"))
                    return ext or None
        return None

    async def entity_name(self, entity_type: str, entity_id: str) -> str | None:
        method = _NAME_METHODS.get(entity_type.upper())
        if method is None or not entity_id.isdigit():
            return None
        answer = await self._client.call(method, {"id": entity_id}, idempotent=True)
        item = answer.result
        if not isinstance(item, dict):
            return None
        person = " ".join(
            part for part in (_scalar(item.get("NAME")), _scalar(item.get("LAST_NAME"))) if part
        )
        if entity_type.upper() == "COMPANY":
            return _scalar(item.get("TITLE")) or None
        return person or _scalar(item.get("TITLE")) or None

    async def finish_failed(
        self, call_id: str, user_id: str, reason: str, status_code: str
    ) -> None:
        await self._client.call(
            "telephony.externalcall.finish",
            {
                "CALL_ID": call_id,
                "USER_ID": int(user_id),
                "DURATION": 0,
                "STATUS_CODE": status_code,
                "FAILED_REASON": reason,
                "ADD_TO_CHAT": 0,
            },
        )

    async def notify(self, user_id: str, message: str) -> None:
        await self._client.call(
            "im.notify.system.add", {"USER_ID": int(user_id), "MESSAGE": message}
        )

    async def register_callback(
        self,
        phone: str,
        line: str,
        user_id: str,
        entity_type: str,
        entity_id: str,
        external_call_id: str,
    ) -> str:
        params: dict[str, Any] = {
            "USER_ID": int(user_id),
            "PHONE_NUMBER": phone,
            "TYPE": 4,
            "SHOW": 0,
            "CRM_CREATE": 0,
            # One physical call, one EXTERNAL_CALL_ID (§4.3): two callbacks to one visitor
            # must not collapse into one CALL_ID, and a resend gives back the same one.
            "EXTERNAL_CALL_ID": external_call_id,
        }
        if line:
            params["LINE_NUMBER"] = line
        if entity_type.upper() in _NAME_METHODS and entity_id.isdigit() and entity_id != "0":
            params["CRM_ENTITY_TYPE"] = entity_type.upper()
            params["CRM_ENTITY_ID"] = int(entity_id)
        answer = await self._client.call("telephony.externalcall.register", params)
        result = answer.result
        call_id = result.get("CALL_ID") if isinstance(result, dict) else None
        if not isinstance(call_id, str) or not call_id:
            raise ValueError(f"register answered no CALL_ID: {result!r}")
        return call_id
