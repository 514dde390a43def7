"""The generated FreePBX snippet, the dialplan interpreter that runs it, the FastAGI
caller's answers per §4.3, and the ``callbridge dialplan`` / ``phonebook sync`` commands."""

from __future__ import annotations

import argparse
import asyncio
import io
from dataclasses import replace
from pathlib import Path

import pytest

from callbridge.crm.bitrix24.auth import WebhookAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.pbx.agi import AgiServer, AgiSession
from callbridge.routing import cli as phonebook_cli
from callbridge.routing import dialplan as dialplan_cmd
from callbridge.routing.cli import ProgressBar
from callbridge.routing.dialplan import render
from callbridge.routing.phonebook import SyncProgress
from callbridge.routing.settings import RoutingSettings, Variables
from callbridge.sim.asterisk.dialplan import (
    Channel,
    DialplanError,
    DialplanRunner,
    call_fastagi,
    evaluate,
    parse_dialplan,
    substitute,
)
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.store.db import connect
from callbridge.store.phonebook import PhonebookStore

TRACE_CONF = Path(__file__).parent / "traces" / "asterisk-22.10.1" / "config" / "extensions.conf"


# ------------------------------------------------------------------ the snippet


def test_snippet_matches_the_configured_address_scripts_and_variables() -> None:
    settings = RoutingSettings(
        public_host="10.0.0.5",
        listen_port=4574,
        variables=Variables(route_to="ROUTE_TO", result="ROUTE_RESULT"),
        scripts={"route": "crm-route", "callername": "cid", "blacklist": "bl"},
        context="crm-route",
        fallback="ext-group,600,1",
    )
    text = render(settings)
    assert "[crm-route]" in text and "[crm-route-callername]" in text
    assert "AGI(agi://10.0.0.5:4574/crm-route,${CALLERID(num)},${FROM_DID})" in text
    assert "AGI(agi://10.0.0.5:4574/cid,${CALLERID(num)})" in text
    assert 'GotoIf($["${AGISTATUS}" != "SUCCESS"]?fallback)' in text
    assert 'GotoIf($["${ROUTE_RESULT}" != "found"]?fallback)' in text
    assert "Dial(PJSIP/${ROUTE_TO},${CB_RING_TIME},tr)" in text
    assert " same => n,Goto(ext-group,600,1)" in text
    assert "Return = No" in text
    plan = parse_dialplan(text)
    assert set(plan.contexts) == {"crm-route", "crm-route-callername", "crm-route-blacklist"}


def test_snippet_clears_every_variable_before_asking() -> None:
    text = render(RoutingSettings())
    agi_at = text.index("AGI(")
    for field in Variables.__dataclass_fields__:
        name = getattr(Variables(), field)
        assert text.index(f"Set({name}=)") < agi_at


def test_bad_fallback_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="context,exten,priority"):
        render(RoutingSettings(fallback="ext-group"))


def test_dialplan_command_prints_the_snippet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "callbridge.toml"
    config.write_text('[rules]\ndefault_region = "RU"\n')
    monkeypatch.delenv("CALLBRIDGE_CONFIG", raising=False)
    assert dialplan_cmd.run(argparse.Namespace(config=str(config))) == 0
    out = capsys.readouterr().out
    assert out == render(RoutingSettings())


def test_dialplan_command_reports_a_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dialplan_cmd.run(argparse.Namespace(config=str(tmp_path / "missing.toml"))) == 2
    assert "config file not found" in capsys.readouterr().err


# ------------------------------------------------------------------ the interpreter


def test_the_lab_dialplan_of_the_traces_parses() -> None:
    plan = parse_dialplan(TRACE_CONF.read_text())
    found = plan.steps("agi-route", "74957654325")
    assert found is not None and found[0] == "_X."
    assert [s.app for s in found[1]][:3] == ["NoOp", "Set", "AGI"]
    assert found[1][-1].label == "fallback"


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ('"SUCCESS" != "SUCCESS"', "0"),
        ('"FAILURE" != "SUCCESS"', "1"),
        ('"SUCCESS" != "SUCCESS" | "" = ""', "1"),
        ('"a" = "a" & "b" = "c"', "0"),
        ("10 > 9", "1"),
        ('!("x" = "x")', "0"),
        ("", ""),
    ],
)
def test_expressions(expression: str, value: str) -> None:
    assert evaluate(expression) == value


def test_substitution_innermost_first_and_substrings() -> None:
    values = {"A": "B", "B": "deep", "NUM": "74951234567"}

    def look(name: str) -> str:
        return values.get(name, "")

    assert substitute("${${A}}", look) == "deep"
    assert substitute("${NUM:1}-${NUM:0:4}", look) == "4951234567-7495"
    assert substitute('$["${A}" = "B"]', look) == "1"


@pytest.mark.parametrize(
    "text",
    ["exten => s,1,NoOp()", "[c]\nsame => n,NoOp()", "[c]\nexten => s,x,NoOp()", "[c]\nfoo"],
)
def test_unreadable_dialplan_names_the_line(text: str) -> None:
    with pytest.raises(DialplanError, match="line"):
        parse_dialplan(text)


async def test_unsupported_application_is_named() -> None:
    plan = parse_dialplan("[c]\nexten => s,1,Playback(hello)\n")
    with pytest.raises(DialplanError, match="Playback"):
        await DialplanRunner(plan).run("c", "s", Channel())


# ------------------------------------------------------------------ the FastAGI caller (§4.3)


async def test_caller_answers_like_asterisk() -> None:
    replies: dict[str, list[str]] = {}

    async def probe(session: AgiSession) -> None:
        for line in [
            "GET VARIABLE FROM_DID",
            "GET VARIABLE NO_SUCH_VAR",
            'GET FULL VARIABLE "${CALLERID(num)}-${CHANNEL}"',
            'SET VARIABLE CALLERID(name) "Ivan \\"V\\" Petrov"',
            'VERBOSE "hello there" 1',
            "FOO BAR",
            "set variable onlyone",
            "EXEC Playback hello",
            "ANSWER",
            "HANGUP",
            "ANSWER",
            "SET VARIABLE STILL ok",
        ]:
            reply = await session.command(line)
            replies[line] = [*reply.usage, reply.raw]

    async with AgiServer({"probe": probe}, port=0) as server:
        channel = Channel(caller_num="79161234567", variables={"FROM_DID": "74950000001"})
        out = await call_fastagi(f"agi://127.0.0.1:{server.port}/probe", ["a"], channel)
    assert out.status == "HANGUP"  # the script hung the channel up
    assert replies["GET VARIABLE FROM_DID"] == ["200 result=1 (74950000001)"]
    assert replies["GET VARIABLE NO_SUCH_VAR"] == ["200 result=0"]
    assert replies['GET FULL VARIABLE "${CALLERID(num)}-${CHANNEL}"'] == [
        "200 result=1 (79161234567-PJSIP/trunk-00000001)"
    ]
    assert channel.caller_name == 'Ivan "V" Petrov'
    assert replies["FOO BAR"] == ["510 Invalid or unknown command"]
    assert replies["set variable onlyone"] == [
        "Invalid command syntax.  Proper usage follows:",
        "Usage: SET VARIABLE <variablename> <value>",
        "520 End of proper usage.",
    ]
    assert replies["EXEC Playback hello"] == ["200 result=-2"]
    assert replies["HANGUP"] == ["200 result=1"]
    assert replies["ANSWER"][-1].startswith("511 ")
    assert replies["SET VARIABLE STILL ok"] == ["200 result=1"]  # allowed on a dead channel
    assert channel.variables["STILL"] == "ok"


async def test_caller_writes_hangup_inline_before_the_reply() -> None:
    seen: list[bool] = []

    async def two(session: AgiSession) -> None:
        await session.get_variable("A")
        seen.append(session.hung_up)
        reply = await session.command("ANSWER")
        seen.append(reply.dead_channel)

    async with AgiServer({"two": two}, port=0) as server:
        out = await call_fastagi(f"agi://127.0.0.1:{server.port}/two", [], Channel(), hangup_at=1)
    assert out.replies == [
        "200 result=0",
        "HANGUP",
        "511 Command Not Permitted on a dead channel or intercept routine",
    ]
    assert seen == [False, True] and out.status == "HANGUP"


async def test_caller_without_a_session_timeout_waits_like_asterisk_until_closed() -> None:
    gate = asyncio.Event()

    async def slow(session: AgiSession) -> None:
        await gate.wait()

    async with AgiServer({"slow": slow}, port=0, session_deadline=0.2) as server:
        out = await call_fastagi(f"agi://127.0.0.1:{server.port}/slow", [], Channel())
    assert out.status == "SUCCESS" and out.commands == []  # closed by the server's deadline


# ------------------------------------------------------------------ phonebook sync command


def test_progress_bar_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream)
    for p in [SyncProgress("users", 5), SyncProgress("contact", 50), SyncProgress("done", 50)]:
        bar(p)
    assert stream.getvalue() == "users: done\ncontact: done\n"


async def test_phonebook_sync_command_against_the_emulator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = EmulatorServer(EmulatorOptions(webhook="1/secretcode", rate=None))
    base = await server.start("127.0.0.1", 0)
    try:
        client = Bitrix24Client(WebhookAuth(f"{base}/rest/1/secretcode/"))
        await client.call(
            "crm.company.add",
            {"fields": {"TITLE": "Sync Co", "PHONE": [{"VALUE": "8 926 555 00 11"}]}},
        )
        await client.close()
        store = tmp_path / "cb.sqlite3"
        config = tmp_path / "callbridge.toml"
        config.write_text(
            f'[bitrix24]\nwebhook_url = "{base}/rest/1/secretcode/"\n[store]\npath = "{store}"\n'
        )
        # The command runs its own event loop, as it does from the shell.
        code = await asyncio.to_thread(phonebook_cli.sync, argparse.Namespace(config=str(config)))
    finally:
        await server.stop()
    assert code == 0
    assert "users" in capsys.readouterr().err
    hit = PhonebookStore(connect(store)).entities_by_key("79265550011")
    assert [e.name for e in hit] == ["Sync Co"]


def test_phonebook_sync_command_without_crm_settings_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "callbridge.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "cb.sqlite3"}"\n')
    assert phonebook_cli.sync(argparse.Namespace(config=str(config))) == 2
    assert "webhook_url" in capsys.readouterr().err


def test_settings_replace_keeps_the_snippet_consistent() -> None:
    base = RoutingSettings()
    moved = replace(base, listen_port=5000)
    assert "agi://127.0.0.1:5000/route" in render(moved)
