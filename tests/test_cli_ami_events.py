"""``callbridge ami events`` as a real process against real AMI servers."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import pytest

from callbridge.pbx.ami.framing import AmiMessage
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.test_ami_client import TRACE, ScriptedPeer, default_respond


async def ami_events(port: int, *extra: str, secret: str = "s") -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callbridge.cli",
        "ami",
        "events",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--username",
        "u",
        "--secret",
        secret,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def sim() -> AsyncIterator[AsteriskSimulator]:
    s = AsteriskSimulator(
        username="u", secret="s", traces=[TRACE], asap=True, salt=7, auth_fail_delay=0.0
    )
    await s.start("127.0.0.1", 0)
    yield s
    await s.stop()


async def test_prints_messages_after_login_as_json_lines(sim: AsteriskSimulator) -> None:
    code, out, err = await ami_events(sim.port, "--count", "25")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 25
    objs = [json.loads(line) for line in lines]
    assert objs[0]["Event"] == "FullyBooted"  # the Login answer itself is not printed
    assert "Timestamp" not in objs[0]  # shown as Asterisk sent it, nothing stamped
    assert all("Response" not in o for o in objs)
    assert objs[1]["Event"] == "Newchannel" and "Timestamp" in objs[1]


async def test_refused_login_is_one_clear_line() -> None:
    peer = ScriptedPeer()
    await peer.start()
    try:
        code, out, err = await ami_events(peer.port, "--count", "1", secret="wrong")
    finally:
        await peer.stop()
    assert code != 0 and out == ""
    assert err.strip().splitlines() == [
        f"callbridge ami events: AMI 127.0.0.1:{peer.port}: login refused for user 'u': "
        "Authentication failed"
    ]
    assert peer.connections == 1


async def test_connection_refused_is_one_clear_line() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    code, out, err = await ami_events(port)
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0]


async def test_raw_values_repeats_and_replacement_characters_then_lost_connection() -> None:
    def on_login(action: AmiMessage, p: ScriptedPeer) -> bytes | None:
        out = default_respond(action, p)
        if action.get("Action") == "Login" and out is not None:
            out += (
                "Event: Newchannel\r\nPrivilege: call,all\r\nTimestamp: 1.5\r\n"
                'CallerIDName: Ann \\"Q\\" Иван\r\nVariable: a=1\r\nVariable: b=2\r\n\r\n'
            ).encode() + b"Event: Odd\r\nName: \xff\xd0x\r\n\r\nEvent: Partial\r\nChan"
            p.close_after_write = True
        return out

    peer = ScriptedPeer(on_login)
    await peer.start()
    try:
        code, out, err = await ami_events(peer.port)
    finally:
        await peer.stop()
    assert [json.loads(line) for line in out.splitlines()] == [
        {
            "Event": "Newchannel",
            "Privilege": "call,all",
            "Timestamp": "1.5",
            "CallerIDName": 'Ann \\"Q\\" Иван',
            "Variable": ["a=1", "b=2"],
        },
        {"Event": "Odd", "Name": "\ufffd\ufffdx"},
    ]
    assert "Иван" in out  # not \u-escaped
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "connection closed by Asterisk" in lines[0]


async def test_idle_exit_is_success() -> None:
    peer = ScriptedPeer()
    await peer.start()
    try:
        code, out, err = await ami_events(peer.port, "--idle-exit", "0.3")
    finally:
        await peer.stop()
    assert (code, out, err) == (0, "", "")
    assert [m.get("Action") for m in peer.actions] == ["Login", "Logoff"]
