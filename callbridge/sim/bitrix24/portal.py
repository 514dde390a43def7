"""Portal-wide methods: users, profile, app info, scopes, tasks, notifications (§6.8–6.10)."""

from __future__ import annotations

from typing import Any

from .context import Ctx, Handler, as_int, iso_time
from .errors import RestError
from .listing import ListResult, matches, order_rows, page
from .params import Params, list_items

SCOPES = ["basic", "crm", "telephony", "user", "im", "task", "placement"]
_USER_LIST_KEYS = ("sort", "order", "start", "select", "filter", "admin_mode", "auth")


def user_get(ctx: Ctx, params: Params) -> ListResult:
    """``user.get``: filter as ``FILTER``/``filter`` or as top-level keys (§6.8)."""
    flt = dict(params.mapping("filter"))
    for key, value in params.data.items():
        if key.lower() not in _USER_LIST_KEYS:
            flt[key] = value
    rows = [u.to_rest() for u in ctx.state.users.values()]
    rows = [r for r in rows if matches(r, flt)]
    sort = params.get("sort")
    if isinstance(sort, str) and sort:
        rows = order_rows(rows, {sort: str(params.get("order") or "ASC")})
    return page(rows, params.get("start"))


def user_current(ctx: Ctx, params: Params) -> dict[str, Any]:
    user = ctx.state.users[ctx.auth.user_id]
    return user.to_rest()


def profile(ctx: Ctx, params: Params) -> dict[str, Any]:
    user = ctx.state.users[ctx.auth.user_id]
    return {
        "ID": str(user.id),
        "ADMIN": user.admin,
        "NAME": user.name,
        "LAST_NAME": user.last_name,
        "PERSONAL_GENDER": "",
        "TIME_ZONE": "Europe/Moscow",
        "TIME_ZONE_OFFSET": 10800,
    }


def app_info(ctx: Ctx, params: Params) -> dict[str, Any]:
    app = ctx.auth.app
    return {
        "ID": app.app_id if app else None,
        "CODE": app.client_id if app else "",
        "VERSION": 1,
        "STATUS": "L",
        "INSTALLED": True,
        "PAYMENT_EXPIRED": "N",
        "DAYS": None,
        "LANGUAGE_ID": "en",
        "LICENSE": "en_project",
        "LICENSE_TYPE": "project",
        "LICENSE_FAMILY": "project",
    }


def scope(ctx: Ctx, params: Params) -> list[str]:
    if params.get("full") in ("true", "1", True, 1):
        return list(SCOPES)
    app = ctx.auth.app
    return app.scope.split(",") if app else list(SCOPES)


def tasks_task_add(ctx: Ctx, params: Params) -> dict[str, Any]:
    fields = params.mapping("fields")
    title = str(fields.get("TITLE") or "").strip()
    if not title:
        raise ctx.invalid("TITLE: required field is empty")
    responsible = as_int(fields.get("RESPONSIBLE_ID"))
    if responsible is None or ctx.state.active_user(responsible) is None:
        raise ctx.invalid("RESPONSIBLE_ID: user is not found")
    task_id = ctx.state.next_id("task")

    def ids(value: Any) -> list[str]:
        items = list_items(value)
        return [str(x) for x in items]

    task = {
        "id": str(task_id),
        "title": title,
        "description": str(fields.get("DESCRIPTION") or ""),
        "responsibleId": str(responsible),
        "createdBy": str(fields.get("CREATED_BY") or ctx.auth.user_id),
        "deadline": fields.get("DEADLINE") or None,
        "auditors": ids(fields.get("AUDITORS")),
        "accomplices": ids(fields.get("ACCOMPLICES")),
        "ufCrmTask": ids(fields.get("UF_CRM_TASK")),
        "status": "2",
        "createdDate": iso_time(ctx.now),
    }
    ctx.state.tasks.append(task)
    answer = {k: v for k, v in task.items() if k != "ufCrmTask"}
    return {"task": answer}


def _notify(kind: str) -> Handler:
    def handler(ctx: Ctx, params: Params) -> int:
        user_id = as_int(params.get("USER_ID"))
        if user_id is None or user_id <= 0:
            raise RestError(400, "USER_ID_EMPTY", "Recipient not specified")
        message = str(params.get("MESSAGE") or "").strip()
        if not message:
            raise RestError(400, "MESSAGE_EMPTY", "Message can't be empty")
        attach = params.get("ATTACH")
        if attach is not None and len(str(attach)) > 60000:
            raise RestError(
                400, "ATTACH_OVERSIZE", "You have exceeded the maximum allowable size of attach"
            )
        tag = params.get("TAG")
        if tag:
            # a TAG replaces the earlier notification with the same tag (§6.10)
            ctx.state.notifications[:] = [
                n
                for n in ctx.state.notifications
                if not (n.get("TAG") == tag and n["USER_ID"] == user_id)
            ]
        notification_id = ctx.state.next_id("notification")
        ctx.state.notifications.append(
            {
                "ID": notification_id,
                "KIND": kind,
                "USER_ID": user_id,
                "FROM_USER_ID": None if kind == "system" else ctx.auth.user_id,
                "MESSAGE": message,
                "MESSAGE_OUT": params.get("MESSAGE_OUT"),
                "TAG": tag,
                "SUB_TAG": params.get("SUB_TAG"),
                "t": ctx.now,
            }
        )
        return notification_id

    return handler


METHODS: dict[str, Handler] = {
    "user.get": user_get,
    "user.current": user_current,
    "profile": profile,
    "app.info": app_info,
    "scope": scope,
    "tasks.task.add": tasks_task_add,
    "im.notify.system.add": _notify("system"),
    "im.notify.personal.add": _notify("personal"),
    "im.notify": _notify("personal"),
}
