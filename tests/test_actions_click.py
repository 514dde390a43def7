"""Click-to-call and website callback end to end: a click on the emulated portal becomes
an Originate on the simulated Asterisk's AMI socket — or, when refused, a finished call
and a notification, with nothing originated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from callbridge.actions.originate import ClickToCallSettings, OriginateWatch
from callbridge.pbx.ami.framing import AmiMessage
from tests.test_web_install import LINE, Stack, make_stack

NUMBER = "74957770000"
SETTINGS = ClickToCallSettings(outbound_prefixes={LINE: "9"}, click_burst=50)


@pytest.fixture
async def installed(tmp_path: Path) -> AsyncIterator[Stack]:
    async for s in make_stack(tmp_path, SETTINGS):
        await s.install()
        yield s


async def click(s: Stack, user_id: int, phone: str, line: str = LINE) -> str:
    answer = await s.portal.post(
        "/_emulator/click", json={"user_id": user_id, "phone_number": phone, "line_number": line}
    )
    assert answer.status_code == 200, answer.text
    await s.settle()
    call_id: str = answer.json()["CALL_ID"]
    return call_id


def statistics(state: dict[str, Any], call_id: str) -> list[dict[str, Any]]:
    return [r for r in state["statistics"] if r.get("CALL_ID") == call_id]


async def assert_refused(s: Stack, call_id: str, user_id: int, code: str) -> None:
    assert s.originates() == []
    state = await s.state()
    [record] = statistics(state, call_id)  # finished once, as failed
    assert str(record["CALL_FAILED_CODE"]) == code
    assert record["CALL_FAILED_REASON"]
    [call] = [c for c in state["calls"] if c["CALL_ID"] == call_id]
    assert call["finished"] and call["shown_now"] == []  # no card left open
    notes = [n for n in state["notifications"] if n["USER_ID"] == user_id]
    assert notes and "could not be placed" in notes[-1]["MESSAGE"]


def headers(action: AmiMessage) -> dict[str, Any]:
    return action.to_json_obj()


async def test_click_originates_agent_first_then_the_number(installed: Stack) -> None:
    call_id = await click(installed, 1, "+7 (495) 777-00-00")
    [action] = installed.originates()
    h = headers(action)
    assert h["Channel"] == "Local/101@originate-skipvm"
    assert h["Context"] == "from-internal"
    assert h["Exten"] == "9" + NUMBER  # the line's outbound prefix
    assert h["Priority"] == "1"
    assert h["Async"] == "true"
    assert h["ChannelId"].startswith("cb-c2c-")
    assert h["OtherChannelId"] == h["ChannelId"] + "-2"
    assert f"__CRM_CALL_ID={call_id}" in h["Variable"]
    assert "__CRM_USER_ID=1" in h["Variable"]
    assert h["CallerID"].endswith(f"<{NUMBER}>")
    # callbridge registers nothing itself: the only call is the one the portal made.
    state = await installed.state()
    assert [c["CALL_ID"] for c in state["calls"]] == [call_id]
    assert statistics(state, call_id) == []  # finishing is the engine's, with the real result


async def test_pjsip_form_with_auto_answer(tmp_path: Path) -> None:
    settings = ClickToCallSettings(
        agent_channel="pjsip", auto_answer=True, auto_answer_model="mitel"
    )
    async for s in make_stack(tmp_path, settings):
        await s.install()
        await click(s, 1, NUMBER)
        [action] = s.originates()
        h = headers(action)
        assert h["Channel"] == "PJSIP/101"
        assert h["Exten"] == NUMBER
        assert "PJSIP_HEADER(add,Call-Info)=<sip:broadworks.net>;answer-after=0" in h["Variable"]


async def test_freepbx_form_with_auto_answer_uses_the_inherited_header_hash(
    tmp_path: Path,
) -> None:
    async for s in make_stack(tmp_path, ClickToCallSettings(auto_answer=True)):
        await s.install()
        await click(s, 1, NUMBER)
        [action] = s.originates()
        variables = headers(action)["Variable"]
        assert "HASH(__SIPHEADERS,Call-Info)=<uri>;answer-after=0" in variables
        assert "HASH(__SIPHEADERS,Alert-Info)=Ring Answer" in variables


async def test_user_without_extension_gets_a_finished_call_and_a_notice(installed: Stack) -> None:
    call_id = await click(installed, 9, NUMBER)  # the admin has no UF_PHONE_INNER
    await assert_refused(installed, call_id, 9, "480")


HOSTILE_NUMBERS = [
    "74957770000\r\nAction: Hangup",
    "7495&7770000",
    "7495,7770000",
    "7495|7770000",
    "7495;7770000",
    "${SHELL(id)}74957770000",
    "7495)7770000",
]


@pytest.mark.parametrize("number", HOSTILE_NUMBERS)
async def test_hostile_numbers_originate_nothing(installed: Stack, number: str) -> None:
    call_id = await click(installed, 1, number)
    await assert_refused(installed, call_id, 1, "404")


@pytest.mark.parametrize(
    "extension", ["101\r\nAction: Hangup", "101&102", "101,102", "101|x", "101;x", "${X}", "10)1"]
)
async def test_hostile_extensions_originate_nothing(installed: Stack, extension: str) -> None:
    installed.emulator.state.users[1].ext = extension
    call_id = await click(installed, 1, NUMBER)
    await assert_refused(installed, call_id, 1, "480")


def signed(s: Stack, data: dict[str, str], ts: str = "1773236988") -> list[tuple[str, str]]:
    assert s.app is not None
    body = [("event", "ONEXTERNALCALLSTART"), ("ts", ts)]
    body += [(f"data[{k}]", v) for k, v in data.items()]
    body += [
        ("auth[member_id]", s.app["member_id"]),
        ("auth[application_token]", s.app["application_token"]),
    ]
    return body


@pytest.mark.parametrize(
    "field_value",
    [
        ("CALL_ID", "externalCall.abc\r\nAction: Hangup"),
        ("CALL_ID", "a,b"),
        ("CALL_ID", "a;b"),
        ("CALL_ID", "a|b"),
        ("CALL_ID", "a&b"),
        ("CALL_ID", "${EVIL}"),
        ("CALL_ID", "a)b"),
        ("USER_ID", "1\r\n"),
        ("USER_ID", "1;2"),
        ("USER_ID", "${X}"),
        ("LINE_NUMBER", "x"),  # unknown line: default prefix, still a call
    ],
)
async def test_hostile_ids_originate_nothing(
    installed: Stack, field_value: tuple[str, str]
) -> None:
    field, value = field_value
    data = {"CALL_ID": "externalCall.good.1", "USER_ID": "1", "PHONE_NUMBER": NUMBER}
    data[field] = value
    response = await installed.post_event(signed(installed, data))
    assert response.status_code == 200
    if field == "LINE_NUMBER":
        assert headers(installed.originates()[0])["Exten"] == NUMBER
    else:
        assert installed.originates() == []


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("Smith & Sons", '"Smith & Sons"'),
        ("Petrov, Ivan", '"Petrov, Ivan"'),
        ('Evil"\r\nAction: Hangup', '"Evil Action: Hangup"'),
        ("${SHELL(reboot)}", '"$ {SHELL(reboot)}"'),
    ],
)
async def test_hostile_display_names_still_call(installed: Stack, name: str, shown: str) -> None:
    crm = installed.services.extras["crm_client"]
    await crm.call(
        "crm.company.add", {"fields": {"TITLE": name, "PHONE": [{"VALUE": "+" + NUMBER}]}}
    )
    await installed.settle()
    await click(installed, 1, NUMBER)
    [action] = installed.originates()
    assert headers(action)["CallerID"] == f"{shown} <{NUMBER}>"


async def test_a_repeated_call_id_originates_once(installed: Stack) -> None:
    data = {"CALL_ID": "externalCall.dup.1", "USER_ID": "1", "PHONE_NUMBER": NUMBER}
    await installed.post_event(signed(installed, data, ts="1"))
    await installed.post_event(signed(installed, data, ts="2"))  # a re-delivery, new ts
    assert len(installed.originates()) == 1


async def test_forged_click_originates_nothing(installed: Stack) -> None:
    data = {"CALL_ID": "externalCall.forged.1", "USER_ID": "1", "PHONE_NUMBER": NUMBER}
    body = [
        (k, "forged" if k == "auth[application_token]" else v) for k, v in signed(installed, data)
    ]
    assert (await installed.post_event(body)).status_code == 401
    assert installed.originates() == []


async def test_clicks_beyond_the_users_rate_are_refused(tmp_path: Path) -> None:
    settings = ClickToCallSettings(click_burst=2, click_rate=0.001)
    async for s in make_stack(tmp_path, settings):
        await s.install()
        # Different numbers: the portal answers one CALL_ID for a repeated unfinished
        # registration of the same number (reference §4.3), which is a repeat, not a click.
        await click(s, 1, "74957770001")
        await click(s, 1, "74957770002")
        third = await click(s, 1, "74957770003")
        assert len(s.originates()) == 2
        [record] = statistics(await s.state(), third)
        assert str(record["CALL_FAILED_CODE"]) == "423"
        await click(s, 3, NUMBER)  # another user is not held back
        assert headers(s.originates()[-1])["Channel"] == "Local/103@originate-skipvm"


async def test_website_callback_rings_the_line_destination_then_the_visitor(
    tmp_path: Path,
) -> None:
    settings = ClickToCallSettings(
        callback_destinations={LINE: "700"}, outbound_prefixes={LINE: "9"}
    )
    async for s in make_stack(tmp_path, settings):
        await s.install()
        answer = await s.portal.post(
            "/_emulator/callback-form", json={"phone_number": "+" + NUMBER, "line_number": LINE}
        )
        assert answer.status_code == 200
        await s.settle()
        [action] = s.originates()
        h = headers(action)
        assert h["Channel"] == "Local/700@from-internal"
        assert h["Exten"] == "9" + NUMBER
        state = await s.state()
        [call] = [c for c in state["calls"] if c["TYPE"] == 4]
        assert f"__CRM_CALL_ID={call['CALL_ID']}" in h["Variable"]


async def test_callback_for_a_line_without_destination_originates_nothing(
    installed: Stack,
) -> None:
    answer = await installed.portal.post(
        "/_emulator/callback-form", json={"phone_number": NUMBER, "line_number": LINE}
    )
    assert answer.status_code == 200
    await installed.settle()
    assert installed.originates() == []
    assert [c for c in (await installed.state())["calls"]] == []


# -- the Originate watch (pure) ----------------------------------------------------------


def _msg(**headers: str) -> AmiMessage:
    return AmiMessage.from_mapping(headers)


def test_a_failure_before_any_channel_is_ours_to_finish() -> None:
    watch = OriginateWatch()
    watch.expect("cb-c2c-1", "externalCall.x.1", "1", now=0.0)
    assert watch.bind("cb-c2c-1", "A1") is None
    failure = watch.feed(
        _msg(Event="OriginateResponse", ActionID="A1", Response="Failure", Reason="0")
    )
    assert failure is not None and failure.crm_call_id == "externalCall.x.1"
    assert len(watch) == 0


def test_a_failure_after_a_channel_existed_is_the_trackers() -> None:
    watch = OriginateWatch()
    watch.expect("cb-c2c-1", "externalCall.x.1", "1", now=0.0)
    watch.bind("cb-c2c-1", "A1")
    watch.feed(_msg(Event="Newchannel", Uniqueid="cb-c2c-1"))
    assert (
        watch.feed(_msg(Event="OriginateResponse", ActionID="A1", Response="Failure", Reason="5"))
        is None
    )


def test_a_response_read_before_bind_is_not_lost() -> None:
    watch = OriginateWatch()
    watch.expect("cb-c2c-1", "externalCall.x.1", "1", now=0.0)
    assert (
        watch.feed(_msg(Event="OriginateResponse", ActionID="A1", Response="Failure", Reason="8"))
        is None
    )
    failure = watch.bind("cb-c2c-1", "A1")
    assert failure is not None and "congestion" in failure.reason


def test_success_and_strangers_are_ignored_and_old_entries_pruned() -> None:
    watch = OriginateWatch(ttl=10.0)
    watch.expect("c1", "x", "1", now=0.0)
    watch.bind("c1", "A1")
    assert watch.feed(_msg(Event="OriginateResponse", ActionID="A1", Response="Success")) is None
    assert watch.feed(_msg(Event="OriginateResponse", ActionID="other", Response="Failure")) is None
    watch.expect("c2", "y", "1", now=0.0)
    watch.prune(now=11.0)
    assert len(watch) == 0
