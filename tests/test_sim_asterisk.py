"""The simulator speaks AMI like Asterisk 22 does: greeting, login, answers, recording."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.sim_asterisk_support import RawAmi


@pytest.fixture
async def sim() -> AsyncIterator[AsteriskSimulator]:
    s = AsteriskSimulator(username="u", secret="s", asap=True, auth_fail_delay=0)
    await s.start("127.0.0.1", 0)
    yield s
    await s.stop()


async def test_banner_is_one_line_and_login_answers_with_fully_booted(
    sim: AsteriskSimulator,
) -> None:
    cli = await RawAmi.connect(sim.port)
    resp = await cli.login()
    assert cli.framer.banner == "Asterisk Call Manager/11.0.0"
    assert resp.items()[:3] == [
        ("Response", "Success"),
        ("ActionID", resp.action_id),
        ("Message", "Authentication accepted"),
    ]
    booted = await cli.next()
    assert booted.event == "FullyBooted"
    assert booted.get("Privilege") == "system,all"
    assert booted.get("Status") == "Fully Booted"
    await cli.close()


async def test_wrong_secret_is_refused_and_the_connection_closed(sim: AsteriskSimulator) -> None:
    cli = await RawAmi.connect(sim.port)
    aid = cli.send("Login", Username="u", Secret="wrong")
    resp = await cli.response(aid)
    assert resp.response == "Error"
    assert resp.get("Message") == "Authentication failed"
    assert await cli.until_eof() == []
    assert sim.timeline is None  # a failed login does not start the timeline


async def test_actions_before_login_are_denied_and_the_connection_stays(
    sim: AsteriskSimulator,
) -> None:
    cli = await RawAmi.connect(sim.port)
    resp = await cli.response(cli.send("Ping"))
    assert (resp.response, resp.get("Message")) == ("Error", "Permission denied")
    assert (await cli.login()).response == "Success"
    await cli.close()


async def test_ping_unknown_listcommands_and_logoff(sim: AsteriskSimulator) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    pong = await cli.response(cli.send("Ping"))
    assert pong.get("Ping") == "Pong"
    float(pong["Timestamp"])
    bad = await cli.response(cli.send("NoSuchAction"))
    assert bad.response == "Error"
    assert bad.get("Message") == (
        "Invalid/unknown command: NoSuchAction. "
        "Use Action: ListCommands to show available commands."
    )
    cmds = await cli.response(cli.send("ListCommands"))
    assert cmds.get("Originate") == "Originate a call. (Priv: originate,all)"
    assert cmds.get("Ping") == "Keepalive command. (Priv: <none>)"
    bye = await cli.response(cli.send("Logoff"))
    assert (bye.response, bye.get("Message")) == ("Goodbye", "Thanks for all the fish.")
    assert await cli.until_eof() == []


async def test_every_action_is_recorded_in_order_with_its_headers(
    sim: AsteriskSimulator,
) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    await cli.response(cli.send("Ping", ActionID="p-1"))
    await cli.response(
        cli.send(
            "Originate",
            ActionID="o-1",
            Channel="PJSIP/101",
            Context="from-internal",
            Exten="74957770000",
            Priority="1",
            Variable=["A=1", "B=2"],
        )
    )
    names = [m.get("Action") for m in sim.actions]
    assert names == ["Login", "Ping", "Originate"]
    assert sim.actions[2].get_all("Variable") == ["A=1", "B=2"]
    await cli.close()


async def test_user_event_is_echoed_to_every_reader_with_a_timestamp(
    sim: AsteriskSimulator,
) -> None:
    a = await RawAmi.connect(sim.port)
    b = await RawAmi.connect(sim.port)
    await a.login()
    await b.login()
    aid = a.send("UserEvent", UserEvent="CallbridgeCheck", Token="Иван")
    assert (await a.response(aid)).response == "Success"
    for cli in (a, b):
        while (msg := await cli.next()).event != "UserEvent":
            pass
        assert msg.get("UserEvent") == "CallbridgeCheck"
        assert msg.get("Token") == "Иван"
        assert msg.get("Privilege") == "user,all"
        float(msg["Timestamp"])
        await cli.close()


async def test_events_off_then_on(sim: AsteriskSimulator) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login(Events="off")
    resp = await cli.response(cli.send("Events", EventMask="on"))
    assert resp.get("Events") == "On"
    await cli.close()


async def test_line_endings_with_bare_lf_are_accepted(sim: AsteriskSimulator) -> None:
    cli = await RawAmi.connect(sim.port)
    cli.writer.write(b"Action: Login\nUsername: u\nSecret: s\nActionID: lf-1\n\n")
    resp = await cli.response("lf-1")
    assert resp.get("Message") == "Authentication accepted"
    await cli.close()
