"""CRM methods: leads, contacts, companies, deals, duplicates, statuses, activities,
timeline comments (§6).

Legacy CRM answers carry ids and amounts as strings and flags as ``Y``/``N``; phones live in
the ``PHONE`` multifield and are matched through the §6.2 normaliser.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .context import Ctx, Handler, as_int, iso_time
from .errors import RestError
from .listing import ListResult, matches, order_rows, page, select_fields
from .params import Params, list_items
from .phones import normalize_phone
from .state import MULTIFIELDS, PortalState

_EVENT_ENTITIES = ("LEAD", "CONTACT", "COMPANY", "DEAL")


def find_by_phone(state: PortalState, phone: str, entity_type: str) -> list[int]:
    """Ids of ``entity_type`` rows with a phone sharing ``phone``'s normalised key."""
    key = normalize_phone(phone)
    if not key:
        return []
    hits = []
    for eid, row in state.entities[entity_type].items():
        for item in row.get("PHONE") or []:
            if normalize_phone(str(item.get("VALUE", ""))) == key:
                hits.append(eid)
                break
    return hits


def _multifield_items(state: PortalState, kind: str, value: Any) -> list[dict[str, Any]]:
    items = list_items(value)
    result = []
    for item in items:
        if isinstance(item, dict) and str(item.get("VALUE", "")).strip():
            result.append(
                {
                    "ID": str(state.next_id("multifield")),
                    "VALUE_TYPE": str(item.get("VALUE_TYPE") or "WORK"),
                    "VALUE": str(item["VALUE"]),
                    "TYPE_ID": kind,
                }
            )
    return result


def _merge_multifield(
    state: PortalState, kind: str, current: list[dict[str, Any]], value: Any
) -> list[dict[str, Any]]:
    """§6.1: items without ID are appended; with ID changed; ``DELETE=Y`` or empty VALUE removes."""
    items = list_items(value)
    result = [dict(x) for x in current]
    for item in items:
        if not isinstance(item, dict):
            continue
        item_id = str(item.get("ID", "") or "")
        if not item_id:
            result.extend(_multifield_items(state, kind, [item]))
            continue
        for existing in result:
            if existing["ID"] == item_id:
                if str(item.get("DELETE", "")).upper() == "Y" or str(item.get("VALUE", "x")) == "":
                    result.remove(existing)
                else:
                    if "VALUE" in item:
                        existing["VALUE"] = str(item["VALUE"])
                    if "VALUE_TYPE" in item:
                        existing["VALUE_TYPE"] = str(item["VALUE_TYPE"])
                break
    return result


def _plain(value: Any) -> Any:
    """Legacy answers hold scalars as strings; lists/maps and null pass through."""
    if value is None or isinstance(value, list | dict):
        return value
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)


def create_entity(ctx: Ctx, entity_type: str, fields: dict[str, Any]) -> int:
    """Add a CRM row the way ``crm.<type>.add`` does; also used by register's auto-lead."""
    st = ctx.state
    eid = st.next_id(entity_type)
    stamp = iso_time(ctx.now)
    row: dict[str, Any] = {"ID": str(eid)}
    for key, value in fields.items():
        name = str(key).upper()
        if name in MULTIFIELDS:
            row[name] = _multifield_items(st, name, value)
        elif name != "ID":
            row[name] = _plain(value)
    row.setdefault("ASSIGNED_BY_ID", str(ctx.auth.user_id))
    row.setdefault("CREATED_BY_ID", str(ctx.auth.user_id))
    row["DATE_CREATE"] = stamp
    row["DATE_MODIFY"] = stamp
    if entity_type != "DEAL":
        row.setdefault("PHONE", [])
        row.setdefault("EMAIL", [])
    if entity_type == "LEAD":
        row.setdefault("TITLE", f"Lead #{eid}")
        row.setdefault("STATUS_ID", "NEW")
        row.setdefault("SOURCE_ID", None)
        linked = row.get("CONTACT_ID") not in (None, "", "0") or row.get("COMPANY_ID") not in (
            None,
            "",
            "0",
        )
        row["IS_RETURN_CUSTOMER"] = "Y" if linked else "N"
    if entity_type == "DEAL":
        row.setdefault("TITLE", f"Deal #{eid}")
        row.setdefault("STAGE_ID", "NEW")
        row.setdefault("OPPORTUNITY", "0.00")
    if entity_type == "COMPANY":
        row.setdefault("TITLE", f"Company #{eid}")
    st.entities[entity_type][eid] = row
    st.emit(f"ONCRM{entity_type}ADD", {"FIELDS": {"ID": eid}}, ctx.auth.user_id)
    return eid


def _entity_id(ctx: Ctx, params: Params) -> int:
    eid = as_int(params.get("id"))
    if eid is None or eid <= 0:
        raise ctx.invalid("ID is not defined or invalid.")
    return eid


def _get_row(ctx: Ctx, entity_type: str, params: Params) -> dict[str, Any]:
    row = ctx.state.entities[entity_type].get(_entity_id(ctx, params))
    if row is None:
        raise ctx.invalid("Not found")
    return row


def _fields(ctx: Ctx, params: Params) -> dict[str, Any]:
    fields = params.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ctx.invalid("Parameter 'fields' must be array.")
    return fields


def _entity_methods(entity_type: str) -> dict[str, Handler]:
    name = entity_type.lower()

    def add(ctx: Ctx, params: Params) -> int:
        return create_entity(ctx, entity_type, _fields(ctx, params))

    def get(ctx: Ctx, params: Params) -> dict[str, Any]:
        return dict(_get_row(ctx, entity_type, params))

    def update(ctx: Ctx, params: Params) -> bool:
        row = _get_row(ctx, entity_type, params)
        for key, value in _fields(ctx, params).items():
            field_name = str(key).upper()
            if field_name in MULTIFIELDS:
                row[field_name] = _merge_multifield(
                    ctx.state, field_name, row.get(field_name) or [], value
                )
            elif field_name != "ID":
                row[field_name] = _plain(value)
        row["DATE_MODIFY"] = iso_time(ctx.now)
        ctx.state.emit(
            f"ONCRM{entity_type}UPDATE", {"FIELDS": {"ID": int(row["ID"])}}, ctx.auth.user_id
        )
        return True

    def delete(ctx: Ctx, params: Params) -> bool:
        row = _get_row(ctx, entity_type, params)
        del ctx.state.entities[entity_type][int(row["ID"])]
        ctx.state.emit(
            f"ONCRM{entity_type}DELETE", {"FIELDS": {"ID": int(row["ID"])}}, ctx.auth.user_id
        )
        return True

    def list_(ctx: Ctx, params: Params) -> ListResult:
        flt = params.mapping("filter")
        rows = [r for r in ctx.state.entities[entity_type].values() if matches(r, flt)]
        order = params.mapping("order") or {"ID": "ASC"}
        rows = order_rows(rows, order)
        select = params.get("select") or []
        select_list = (
            select
            if isinstance(select, list)
            else list(select.values())
            if isinstance(select, dict)
            else [select]
        )
        result = page(rows, params.get("start"))
        result.items = [select_fields(r, select_list, MULTIFIELDS) for r in result.items]
        return result

    return {
        f"crm.{name}.add": add,
        f"crm.{name}.get": get,
        f"crm.{name}.update": update,
        f"crm.{name}.delete": delete,
        f"crm.{name}.list": list_,
    }


def duplicate_findbycomm(ctx: Ctx, params: Params) -> Any:
    kind = str(params.get("type") or "").upper()
    if not kind:
        raise ctx.invalid("Communication type is not defined.")
    if kind not in ("PHONE", "EMAIL"):
        raise ctx.invalid(f"Communication type '{kind}' is not supported in current context.")
    values = params.get("values")
    if isinstance(values, dict):
        values = list(values.values())
    if isinstance(values, str):
        values = [values]
    if not values:
        raise ctx.invalid("Communication values is not defined.")
    if len(values) > 20:
        raise ctx.invalid("Too many communication values.")
    wanted = str(params.get("entity_type") or "").upper()
    types = [wanted] if wanted else ["LEAD", "CONTACT", "COMPANY"]
    if any(t not in ("LEAD", "CONTACT", "COMPANY") for t in types):
        raise ctx.invalid(f"Entity type '{wanted}' is not supported in current context.")
    result: dict[str, list[int]] = {}
    for entity_type in types:
        hits: list[int] = []
        for value in values:
            if kind == "PHONE":
                found = find_by_phone(ctx.state, str(value), entity_type)
            else:
                needle = str(value).strip().lower()
                found = [
                    eid
                    for eid, row in ctx.state.entities[entity_type].items()
                    if any(
                        str(e.get("VALUE", "")).lower() == needle for e in row.get("EMAIL") or []
                    )
                ]
            hits.extend(h for h in found if h not in hits)
        if hits:
            result[entity_type] = hits[:20]
            if len(hits) >= 20:
                break  # §6.3: types after one with ≥ 20 duplicates are not returned
    return result if result else []


def status_list(ctx: Ctx, params: Params) -> list[dict[str, Any]]:
    rows = [r for r in ctx.state.statuses if matches(r, params.mapping("filter"))]
    return order_rows(rows, params.mapping("order") or {"SORT": "ASC"})


def activity_list(ctx: Ctx, params: Params) -> ListResult:
    rows = [r for r in ctx.state.activities if matches(r, params.mapping("filter"))]
    rows = order_rows(rows, params.mapping("order") or {"ID": "ASC"})
    return page(rows, params.get("start"))


def activity_get(ctx: Ctx, params: Params) -> dict[str, Any]:
    wanted = _entity_id(ctx, params)
    for row in ctx.state.activities:
        if row["ID"] == str(wanted):
            return dict(row)
    raise ctx.invalid("Not found")


# ---- timeline comments (§6.7) -------------------------------------------------------------

#: The documented ``ENTITY_TYPE`` names the emulator has rows for. Only the lower-case
#: spelling is documented (§6.7); the emulator refuses any other (``CONTACT``), so a client
#: cannot come to depend on leniency nobody has shown a real portal to have.
COMMENT_ENTITY_TYPES = {"lead": "LEAD", "deal": "DEAL", "contact": "CONTACT", "company": "COMPANY"}


def _comment_files(ctx: Ctx, value: Any) -> dict[str, dict[str, Any]]:
    """``FILES: [[name, base64], …]`` → the list answer's ``FILES`` map (name and size only)."""
    items = list_items(value)
    files: dict[str, dict[str, Any]] = {}
    for item in items:
        pair = (
            item
            if isinstance(item, list)
            else list(item.values())
            if isinstance(item, dict)
            else []
        )
        if len(pair) != 2:
            raise RestError(400, "INVALID_ARG_VALUE", "FILES must be pairs of name and content")
        try:
            content = base64.b64decode(str(pair[1]), validate=True)
        except (binascii.Error, ValueError):
            raise RestError(400, "INVALID_ARG_VALUE", f"File {pair[0]} is not Base64") from None
        file_id = ctx.state.next_id("comment_file")
        files[str(file_id)] = {
            "id": file_id,
            "date": iso_time(ctx.now),
            "name": str(pair[0]),
            "size": len(content),
            "authorId": ctx.auth.user_id,
        }
    return files


def comment_add(ctx: Ctx, params: Params) -> int:
    """``crm.timeline.comment.add``: ``{"fields": {ENTITY_ID, ENTITY_TYPE, COMMENT}}`` → id.

    Only the lower-case ``fields`` key is read (crm ≥ 23.100, §6.7). Error codes are the
    documented ones (HTTP 400: ``100`` required fields, ``NOT_FOUND`` unknown type,
    ``OWNER_NOT_FOUND`` no such entity, ``INVALID_ARG_VALUE`` empty comment); their
    descriptions are the documentation's wording, the real portal's text is unknown.
    """
    fields = params.data.get("fields")  # exact key: FIELDS/Fields are not accepted
    if not isinstance(fields, dict) or not fields:
        raise RestError(400, "100", "Required fields not provided")
    raw_type = fields.get("ENTITY_TYPE")
    entity_id = as_int(fields.get("ENTITY_ID"))
    if raw_type in (None, "") or entity_id is None:
        raise RestError(400, "100", "Required fields not provided: ENTITY_ID, ENTITY_TYPE")
    entity_type = COMMENT_ENTITY_TYPES.get(str(raw_type))
    if entity_type is None:
        raise RestError(400, "NOT_FOUND", "Not found.")
    if entity_id not in ctx.state.entities[entity_type]:
        raise RestError(400, "OWNER_NOT_FOUND", "Owner of the element not found")
    comment = str(fields.get("COMMENT") or "")
    if not comment.strip():
        raise RestError(400, "INVALID_ARG_VALUE", "Empty comment")
    author = as_int(fields.get("AUTHOR_ID")) or ctx.auth.user_id
    files = _comment_files(ctx, fields.get("FILES"))
    comment_id = ctx.state.next_id("comment")
    ctx.state.comments.append(
        {
            "ID": str(comment_id),
            "ENTITY_ID": str(entity_id),
            "ENTITY_TYPE": str(raw_type),
            "CREATED": iso_time(ctx.now),
            "COMMENT": comment,
            "AUTHOR_ID": str(author),
            "FILES": files,
        }
    )
    return comment_id


def comment_list(ctx: Ctx, params: Params) -> ListResult:
    """``crm.timeline.comment.list``: the comments of one entity (``filter`` needs both
    ``ENTITY_ID`` and ``ENTITY_TYPE``); ``select``, ``order`` (``ID``/``CREATED``/
    ``AUTHOR_ID``) and ``start`` as any list method."""
    flt = params.mapping("filter")
    folded = {str(k).upper(): v for k, v in flt.items()}
    if folded.get("ENTITY_ID") in (None, "") or folded.get("ENTITY_TYPE") in (None, ""):
        raise ctx.invalid("ENTITY_ID and ENTITY_TYPE are required in the filter.")
    rows = [r for r in ctx.state.comments if matches(r, flt)]
    rows = order_rows(rows, params.mapping("order") or {"ID": "ASC"})
    select = params.get("select") or []
    select_list = select if isinstance(select, list) else [select]
    result = page(rows, params.get("start"))
    result.items = [select_fields(r, select_list, ()) for r in result.items]
    return result


METHODS: dict[str, Handler] = {
    "crm.duplicate.findbycomm": duplicate_findbycomm,
    "crm.status.list": status_list,
    "crm.activity.list": activity_list,
    "crm.activity.get": activity_get,
    "crm.timeline.comment.add": comment_add,
    "crm.timeline.comment.list": comment_list,
}
for _t in _EVENT_ENTITIES:
    METHODS.update(_entity_methods(_t))
