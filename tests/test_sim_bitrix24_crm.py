"""CRM, users, tasks and notifications of the emulator against reference §6 (and §6.2 unit)."""

# fixtures are imported from the shared support module, so their parameters shadow them
# ruff: noqa: F811

from __future__ import annotations

import pytest

from callbridge.sim.bitrix24.params import parse_php_query, php_build_query
from callbridge.sim.bitrix24.phones import clean_call_number, normalize_phone
from tests.sim_bitrix24_support import (  # noqa: F401 - fixtures
    Portal,
    envelope,
    portal,
    start_portal,
)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("+7 (900) 123-45-67", "79001234567"),
        ("89001234567", "79001234567"),
        ("79001234567", "79001234567"),
        ("9001234567", "9001234567"),  # no country code: a different key
        ("+86 10 1234 5678", "861012345678"),  # +8… → 00… → country code kept
        ("0049 30 1234567", "49301234567"),
        ("011 1 212 555 0100", "12125550100"),
        ("74951234567;102", "74951234567"),  # extension ignored
        ("74951234567#102", "74951234567"),
        ("8123456", "8123456"),  # short numbers are left alone
    ],
)
def test_s6_2_phone_normaliser(raw: str, key: str) -> None:
    assert normalize_phone(raw) == key


def test_s4_3_call_number_keeps_plus_and_separators_only() -> None:
    assert clean_call_number("+7 (495) 123-45-67 ext;12") == "+74951234567;12"


def test_s5_1_php_query_roundtrip_rules() -> None:
    encoded = php_build_query(
        {"data": {"A": None, "B": [], "C": True, "D": False, "E": [1, 2]}, "ts": 5}
    )
    assert encoded == "data%5BC%5D=1&data%5BD%5D=0&data%5BE%5D%5B0%5D=1&data%5BE%5D%5B1%5D=2&ts=5"
    assert parse_php_query("a[x][]=1&a[x][]=2&b=3") == {"a": {"x": ["1", "2"]}, "b": "3"}


async def test_s6_1_lead_crud_with_phone_multifield_rules(portal: Portal) -> None:
    lead_id = await portal.result(
        "crm.lead.add",
        {"fields": {"TITLE": "Call", "PHONE": [{"VALUE": "+79001112233", "VALUE_TYPE": "WORK"}]}},
    )
    assert isinstance(lead_id, int)
    lead = await portal.result("crm.lead.get", {"id": lead_id})
    assert lead["ID"] == str(lead_id) and lead["STATUS_ID"] == "NEW"
    phone_id = lead["PHONE"][0]["ID"]
    await portal.result(
        "crm.lead.update",
        {
            "id": lead_id,
            "fields": {
                "NAME": "Ann",
                "PHONE": [{"ID": phone_id, "VALUE": "444444"}, {"VALUE": "+79005554433"}],
            },
        },
    )
    lead = await portal.result("crm.lead.get", {"id": lead_id})
    assert [p["VALUE"] for p in lead["PHONE"]] == ["444444", "+79005554433"]
    assert lead["NAME"] == "Ann"
    await portal.result(
        "crm.lead.update", {"id": lead_id, "fields": {"PHONE": [{"ID": phone_id, "DELETE": "Y"}]}}
    )
    lead = await portal.result("crm.lead.get", {"id": lead_id})
    assert [p["VALUE"] for p in lead["PHONE"]] == ["+79005554433"]
    assert await portal.result("crm.lead.delete", {"id": lead_id}) is True
    assert envelope(await portal.rest("crm.lead.get", {"id": lead_id})) == (400, "", "Not found")
    assert envelope(await portal.rest("crm.lead.get", {})) == (
        400,
        "",
        "ID is not defined or invalid.",
    )


async def test_s6_4_list_filter_select_and_multifields(portal: Portal) -> None:
    rows = await portal.result("crm.contact.list", {"filter": {"ASSIGNED_BY_ID": 2}})
    assert [r["ID"] for r in rows] == ["1"]
    assert "PHONE" not in rows[0]  # multifields only when selected (§6.1)
    rows = await portal.result(
        "crm.contact.list", {"filter": {"%LAST_NAME": "orl"}, "select": ["ID", "PHONE"]}
    )
    assert rows == [
        {
            "ID": "2",
            "PHONE": [
                {"ID": "2", "VALUE_TYPE": "MOBILE", "VALUE": "89031112233", "TYPE_ID": "PHONE"}
            ],
        }
    ]
    rows = await portal.result("crm.contact.list", {"filter": {"PHONE": "89031112233"}})
    assert [r["ID"] for r in rows] == ["2"]
    rows = await portal.result(
        "crm.contact.list", {"filter": {"@ID": [1, 2]}, "order": {"ID": "DESC"}}
    )
    assert [r["ID"] for r in rows] == ["2", "1"]
    deals = await portal.result("crm.deal.list", {"filter": {"CONTACT_ID": 1}})
    assert [(d["ID"], d["OPPORTUNITY"]) for d in deals] == [("1", "15000.00")]
    companies = await portal.result("crm.company.list", {"select": ["TITLE"]})
    assert companies == [{"ID": "1", "TITLE": "Romashka LLC"}]


async def test_s6_4_lead_with_contact_is_a_return_customer(portal: Portal) -> None:
    lead_id = await portal.result("crm.lead.add", {"fields": {"TITLE": "R", "CONTACT_ID": 1}})
    assert (await portal.result("crm.lead.get", {"id": lead_id}))["IS_RETURN_CUSTOMER"] == "Y"


async def test_s6_3_duplicate_findbycomm(portal: Portal) -> None:
    found = await portal.result(
        "crm.duplicate.findbycomm",
        {"type": "PHONE", "values": ["8 495 123 45 67", "+79005556677", "74951112233"]},
    )
    assert found == {"LEAD": [1], "CONTACT": [1], "COMPANY": [1]}
    only = await portal.result(
        "crm.duplicate.findbycomm",
        {"type": "PHONE", "values": ["74951234567"], "entity_type": "LEAD"},
    )
    assert only == []
    email = await portal.result(
        "crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["nobody@example.com"]}
    )
    assert email == []

    async def err(body: dict[str, object]) -> tuple[int, str, str]:
        return envelope(await portal.rest("crm.duplicate.findbycomm", body))

    assert await err({"values": ["1"]}) == (400, "", "Communication type is not defined.")
    assert await err({"type": "FAX", "values": ["1"]}) == (
        400,
        "",
        "Communication type 'FAX' is not supported in current context.",
    )
    assert await err({"type": "PHONE"}) == (400, "", "Communication values is not defined.")


async def test_s6_5_status_list_sources(portal: Portal) -> None:
    sources = await portal.result(
        "crm.status.list", {"filter": {"ENTITY_ID": "SOURCE"}, "order": {"SORT": "ASC"}}
    )
    assert [s["STATUS_ID"] for s in sources][:3] == ["CALL", "EMAIL", "WEB"]
    assert {"CALLBACK", "OTHER", "WEBFORM"} <= {s["STATUS_ID"] for s in sources}
    assert sources[0]["ENTITY_ID"] == "SOURCE" and sources[0]["SYSTEM"] == "Y"


async def test_s6_8_user_get_by_extension_both_filter_styles(portal: Portal) -> None:
    top = await portal.client.post("/rest/1/secret/user.get", json={"UF_PHONE_INNER": "102"})
    assert top.json()["total"] == 1
    user = top.json()["result"][0]
    assert (user["ID"], user["NAME"], user["LAST_NAME"]) == ("2", "Olga", "Smirnova")
    assert (user["UF_PHONE_INNER"], user["PERSONAL_MOBILE"], user["ACTIVE"]) == (
        "102",
        "+79161110102",
        True,
    )
    nested = await portal.result(
        "user.get", {"FILTER": {"ACTIVE": True}, "sort": "UF_PHONE_INNER", "order": "DESC"}
    )
    assert [u["UF_PHONE_INNER"] for u in nested] == ["103", "102", "101", ""]
    admin = await portal.result("user.get", {"filter": {"ID": 9}})
    assert admin[0]["UF_PHONE_INNER"] == "" and admin[0]["IS_ADMIN"] is True


async def test_s6_9_tasks_task_add(portal: Portal) -> None:
    result = await portal.result(
        "tasks.task.add",
        {
            "fields": {
                "TITLE": "Missed call",
                "RESPONSIBLE_ID": 2,
                "UF_CRM_TASK": ["C_1"],
                "AUDITORS": [3],
            }
        },
    )
    task = result["task"]
    assert (task["title"], task["responsibleId"], task["auditors"]) == ("Missed call", "2", ["3"])
    assert "ufCrmTask" not in task  # only when selected (§6.9)
    state = await portal.state()
    assert state["tasks"][0]["ufCrmTask"] == ["C_1"]
    missing = await portal.rest("tasks.task.add", {"fields": {"RESPONSIBLE_ID": 2}})
    assert missing.status_code == 400


async def test_s6_10_notifications_and_tag_replacement(portal: Portal) -> None:
    first = await portal.result(
        "im.notify.system.add", {"USER_ID": 2, "MESSAGE": "Missed call", "TAG": "call-1"}
    )
    second = await portal.result(
        "im.notify.personal.add", {"USER_ID": 2, "MESSAGE": "Missed call (2)", "TAG": "call-1"}
    )
    assert isinstance(first, int) and second == first + 1
    notes = (await portal.state())["notifications"]
    assert [(n["ID"], n["MESSAGE"], n["KIND"]) for n in notes] == [
        (second, "Missed call (2)", "personal")
    ]
    assert envelope(await portal.rest("im.notify.system.add", {"MESSAGE": "x"})) == (
        400,
        "USER_ID_EMPTY",
        "Recipient not specified",
    )
    assert envelope(await portal.rest("im.notify.system.add", {"USER_ID": 1})) == (
        400,
        "MESSAGE_EMPTY",
        "Message can't be empty",
    )


async def test_portal_info_methods(portal: Portal) -> None:
    assert (await portal.result("profile"))["ADMIN"] is False
    assert "telephony" in await portal.result("scope")
    methods = await portal.result("methods")
    assert {"batch", "telephony.externalcall.register", "crm.lead.add", "event.bind"} <= set(
        methods
    )
    assert (await portal.result("app.info"))["STATUS"] == "L"
    assert (await portal.result("user.current"))["NAME"] == "Ivan"


async def test_s6_7_timeline_comment_add_and_list(portal: Portal) -> None:
    response = await portal.rest(
        "crm.timeline.comment.add",
        {"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "contact", "COMMENT": "answered by 101"}},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["result"] == 1 and set(body) == {"result", "time"}
    other = await portal.result(
        "crm.timeline.comment.add",
        {"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "deal", "COMMENT": "on the deal"}},
    )
    assert other == 2
    state = await portal.state()
    assert state["comments"][0] == {
        "ID": "1",
        "ENTITY_ID": "1",
        "ENTITY_TYPE": "contact",
        "CREATED": "2026-03-10T11:19:38+03:00",
        "COMMENT": "answered by 101",
        "AUTHOR_ID": "1",  # the webhook's owner
        "FILES": {},
    }
    listed = await portal.client.post(
        "/rest/1/secret/crm.timeline.comment.list",
        json={"filter": {"ENTITY_ID": 1, "ENTITY_TYPE": "contact"}, "select": ["ID", "COMMENT"]},
    )
    assert listed.status_code == 200
    assert listed.json()["result"] == [{"ID": "1", "COMMENT": "answered by 101"}]
    assert listed.json()["total"] == 1
    page = await portal.client.get("/")
    assert "Timeline comments" in page.text and "answered by 101" in page.text


async def test_s6_7_timeline_comment_add_inside_a_batch_with_php_query(portal: Portal) -> None:
    cmd = {
        "c": "crm.timeline.comment.add?fields[ENTITY_ID]=1&fields[ENTITY_TYPE]=lead"
        "&fields[COMMENT]=from%20batch"
    }
    result = await portal.result("batch", {"cmd": cmd})
    assert result["result"] == {"c": 1} and result["result_error"] == []
    comments = await portal.result(
        "crm.timeline.comment.list", {"filter": {"ENTITY_ID": 1, "ENTITY_TYPE": "lead"}}
    )
    assert [c["COMMENT"] for c in comments] == ["from batch"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        # §6.7: only the lower-case key is read (crm ≥ 23.100)
        (
            {"FIELDS": {"ENTITY_ID": 1, "ENTITY_TYPE": "contact", "COMMENT": "x"}},
            (400, "100", "Required fields not provided"),
        ),
        (
            {"fields": {"ENTITY_TYPE": "contact", "COMMENT": "x"}},
            (400, "100", "Required fields not provided: ENTITY_ID, ENTITY_TYPE"),
        ),
        # the documented names are lower-case; finish answers CONTACT (§4.5)
        (
            {"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "CONTACT", "COMMENT": "x"}},
            (400, "NOT_FOUND", "Not found."),
        ),
        (
            {"fields": {"ENTITY_ID": 999, "ENTITY_TYPE": "contact", "COMMENT": "x"}},
            (400, "OWNER_NOT_FOUND", "Owner of the element not found"),
        ),
        (
            {"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "contact", "COMMENT": "  "}},
            (400, "INVALID_ARG_VALUE", "Empty comment"),
        ),
    ],
)
async def test_s6_7_timeline_comment_add_errors(
    portal: Portal, body: dict[str, object], error: tuple[int, str, str]
) -> None:
    assert envelope(await portal.rest("crm.timeline.comment.add", body)) == error
    assert (await portal.state())["comments"] == []


async def test_s6_7_timeline_comment_list_needs_the_entity(portal: Portal) -> None:
    assert envelope(
        await portal.rest("crm.timeline.comment.list", {"filter": {"ENTITY_TYPE": "deal"}})
    ) == (400, "", "ENTITY_ID and ENTITY_TYPE are required in the filter.")


async def test_s6_7_timeline_comment_files_are_base64_pairs(portal: Portal) -> None:
    fields = {"ENTITY_ID": 1, "ENTITY_TYPE": "company", "COMMENT": "with a file"}
    bad = {**fields, "FILES": [["a.txt", "not base64!"]]}
    assert envelope(await portal.rest("crm.timeline.comment.add", {"fields": bad})) == (
        400,
        "INVALID_ARG_VALUE",
        "File a.txt is not Base64",
    )
    good = {**fields, "FILES": [["a.txt", "aGVsbG8="]]}
    await portal.result("crm.timeline.comment.add", {"fields": good})
    [comment] = (await portal.state())["comments"]
    assert [(f["name"], f["size"]) for f in comment["FILES"].values()] == [("a.txt", 5)]
