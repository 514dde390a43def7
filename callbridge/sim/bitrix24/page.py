"""``GET /``: the portal as a plain, self-refreshing HTML page for a person watching a demo."""

from __future__ import annotations

from html import escape
from typing import Any

from .context import iso_time


def _phones(row: dict[str, Any]) -> str:
    return ", ".join(str(p.get("VALUE", "")) for p in row.get("PHONE") or [])


def _table(title: str, headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = (
        "".join(
            "<tr>"
            + "".join(f"<td>{escape('' if c is None else str(c))}</td>" for c in row)
            + "</tr>"
            for row in rows
        )
        or f'<tr><td colspan="{len(headers)}"><i>none</i></td></tr>'
    )
    return f"<h2>{escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _call_status(call: dict[str, Any]) -> str:
    if call["finished"]:
        return f"finished ({call['STATUS_CODE']}, {call['DURATION']} s)"
    if call["shown_now"]:
        return "ringing — card shown to " + ", ".join(str(u) for u in call["shown_now"])
    return "registered"


def render(state: dict[str, Any], now: float) -> str:
    users = {int(u["ID"]): f"{u['NAME']} {u['LAST_NAME']}" for u in state["users"]}
    calls = [
        [
            iso_time(c["history"][0]["t"]) if c["history"] else "",
            {
                1: "outgoing",
                2: "incoming",
                3: "incoming (redirected)",
                4: "callback",
                5: "info",
            }.get(c["TYPE"], str(c["TYPE"])),
            c["PHONE_NUMBER"],
            c["LINE_NUMBER"] or "",
            users.get(c["USER_ID"], str(c["USER_ID"])),
            f"{c['CRM_ENTITY_TYPE']} {c['CRM_ENTITY_ID'] or ''}".strip(),
            _call_status(c),
            ", ".join(r["FILENAME"] for r in c["records"]),
        ]
        for c in reversed(state["calls"])
    ]

    def people(rows: list[dict[str, Any]]) -> list[list[Any]]:
        return [
            [
                r["ID"],
                (f"{r.get('NAME') or ''} {r.get('LAST_NAME') or ''}".strip() or r.get("TITLE", "")),
                _phones(r),
                users.get(int(r.get("ASSIGNED_BY_ID") or 0), ""),
            ]
            for r in rows
        ]

    names = {
        (kind, str(r["ID"])): (
            f"{r.get('NAME') or ''} {r.get('LAST_NAME') or ''}".strip() or r.get("TITLE", "")
        )
        for kind, key in (
            ("lead", "leads"),
            ("contact", "contacts"),
            ("company", "companies"),
            ("deal", "deals"),
        )
        for r in state[key]
    }
    comments = [
        [
            c["CREATED"],
            f"{c['ENTITY_TYPE']} {c['ENTITY_ID']} "
            f"{names.get((c['ENTITY_TYPE'], c['ENTITY_ID']), '')}".strip(),
            users.get(int(c["AUTHOR_ID"] or 0), c["AUTHOR_ID"]),
            c["COMMENT"],
        ]
        for c in reversed(state["comments"])
    ]
    notes = [
        [iso_time(n["t"]), users.get(n["USER_ID"], n["USER_ID"]), n["MESSAGE"]]
        for n in reversed(state["notifications"])
    ]
    options = "".join(
        f'<option value="{uid}">{escape(name)}</option>' for uid, name in users.items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>Bitrix24 emulator</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
th{{background:#eef}}</style></head>
<body><h1>Bitrix24 emulator</h1><p>Portal time {escape(iso_time(now))} ·
requests {state["requests"]["total"]}</p>
<form id="click"><b>Click to call</b> as
<select name="user_id">{options}</select>
<input name="phone_number" placeholder="+74951234567" required>
<input name="line_number" placeholder="line (optional)"><button>Call</button></form>
<script>
document.getElementById("click").addEventListener("submit", async (e) => {{
  e.preventDefault();
  const f = new FormData(e.target);
  await fetch("/_emulator/click", {{method: "POST", headers: {{"Content-Type": "application/json"}},
    body: JSON.stringify({{user_id: Number(f.get("user_id")), phone_number: f.get("phone_number"),
                          line_number: f.get("line_number") || null}})}});
  location.reload();
}});
</script>
{_table("Calls", ["started", "type", "number", "line", "user", "CRM", "state", "records"], calls)}
{_table("Timeline comments", ["time", "CRM", "author", "comment"], comments)}
{_table("Leads", ["ID", "name", "phones", "responsible"], people(state["leads"]))}
{_table("Contacts", ["ID", "name", "phones", "responsible"], people(state["contacts"]))}
{_table("Notifications", ["time", "to", "message"], notes)}
</body></html>"""
