"""FastAGI protocol and server: the pure parsers, the exact bytes of traces 12 and 12b
replayed over real TCP, and the server's bounds (deadline, bad input, failing handlers)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from callbridge.pbx.agi import (
    AgiProtocolError,
    AgiReply,
    AgiServer,
    AgiSession,
    parse_environment,
    parse_reply,
    quote,
)
from callbridge.sim.asterisk.dialplan import parse_agi_args

TRACES = Path(__file__).parent / "traces" / "asterisk-22.10.1"


# ------------------------------------------------------------------ pure parts


def test_environment_block_of_trace_12() -> None:
    raw = (TRACES / "12-fastagi-route.agi.from-asterisk.raw").read_bytes()
    block = raw.split(b"\n\n", 1)[0].decode()
    env = parse_environment(block.split("\n"))
    assert env.script == "route"
    assert env.query == {"did": "74957654325", "cid": "74951234567"}
    assert env.get("callerid") == "74951234567"
    assert env.known(env.get("calleridname")) == ""
    assert env.get("accountcode") == ""
    assert env.get("channel") == "PJSIP/trunk-00000043"
    assert env.args == []


def test_environment_arguments_in_order() -> None:
    env = parse_environment(
        ["agi_network_script: /route", "agi_arg_2: b", "agi_arg_10: j", "agi_arg_1: a"]
    )
    assert env.script == "route"
    assert env.args == ["a", "b", "j"]
    assert env.arg(3) == ""


def test_environment_rejects_non_agi_lines() -> None:
    with pytest.raises(AgiProtocolError, match="line 2"):
        parse_environment(["agi_network: yes", "GET / HTTP/1.1"])


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("200 result=1 (74957654325)", AgiReply(200, "1", "74957654325")),
        ("200 result=0", AgiReply(200, "0")),
        ("200 result=0 Gosub complete", AgiReply(200, "0", None, "Gosub complete")),
        ("200 result=1 (a (b) c)", AgiReply(200, "1", "a (b) c")),
        ("200 result=48 endpos=1234", AgiReply(200, "48", None, "endpos=1234")),
        ("510 Invalid or unknown command", AgiReply(510, extra="Invalid or unknown command")),
        ("200 result=1 ()", AgiReply(200, "1", "")),
    ],
)
def test_parse_reply(line: str, reply: AgiReply) -> None:
    parsed = parse_reply(line)
    assert (parsed.code, parsed.result, parsed.data, parsed.extra) == (
        reply.code,
        reply.result,
        reply.data,
        reply.extra,
    )


def test_parse_reply_rejects_garbage() -> None:
    with pytest.raises(AgiProtocolError):
        parse_reply("hello")


@pytest.mark.parametrize(
    "value",
    ["Olga Smirnova", "", 'Ivan "Vanya" Petrov', "back\\slash", "  spaced  ", "Иван Петров"],
)
def test_quote_round_trips_through_asterisks_parse_args(value: str) -> None:
    assert parse_agi_args(f"SET VARIABLE X {quote(value)}") == ["SET", "VARIABLE", "X", value]


def test_quote_drops_line_breaks_so_a_name_cannot_inject_commands() -> None:
    quoted = quote("Evil\r\nHANGUP\x00\x07")
    assert "\n" not in quoted and "\r" not in quoted and "\x00" not in quoted
    assert parse_agi_args(f"SET VARIABLE X {quoted}")[3] == "EvilHANGUP"


# ------------------------------------------------------------------ trace replays


async def replay(
    raw: bytes, handler_commands: list[str], server: AgiServer, chunk: int | None
) -> tuple[bytes, bool]:
    """Play Asterisk's side of a trace: the env block, then one recorded reply per command
    line the server sends. Returns the bytes the server sent and whether it closed."""
    env, _, replies = raw.partition(b"\n\n")
    reply_lines = replies.split(b"\n")[:-1]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    data = env + b"\n\n"
    if chunk is None:
        writer.write(data)
    else:
        for i in range(0, len(data), chunk):
            writer.write(data[i : i + chunk])
            await writer.drain()
    sent = b""
    pending = list(reply_lines)
    for _ in handler_commands:
        line = await reader.readuntil(b"\n")
        sent += line
        # Answer with the recorded lines up to and including the final reply (skipping
        # over the inline HANGUP and the "100 Trying" line, which come first).
        while pending:
            reply = pending.pop(0)
            writer.write(reply + b"\n")
            head = reply[:4]
            if reply != b"HANGUP" and head != b"100 ":
                break
        await writer.drain()
    closed = await reader.read() == b""
    writer.close()
    await writer.wait_closed()
    return sent, closed


@pytest.mark.parametrize("chunk", [None, 1, 7])
async def test_trace_12_route_exchange_byte_for_byte(chunk: int | None) -> None:
    raw = (TRACES / "12-fastagi-route.agi.from-asterisk.raw").read_bytes()
    expected = (TRACES / "12-fastagi-route.agi.to-asterisk.raw").read_bytes()
    seen: dict[str, object] = {}

    async def route(session: AgiSession) -> None:
        seen["did"] = await session.get_variable("FROM_DID")
        seen["cid"] = await session.get_full_variable("${CALLERID(num)}")
        seen["none"] = await session.get_variable("NO_SUCH_VAR")
        await session.verbose("CRM lookup: responsible user for 74951234567 is ext 102", 1)
        seen["set1"] = await session.set_variable("ROUTE_TO", "102")
        seen["set2"] = await session.set_variable("CRM_RESPONSIBLE", "Olga Smirnova")

    async with AgiServer({"route": route}, port=0) as server:
        sent, closed = await replay(raw, expected.decode().splitlines(), server, chunk)
    assert sent == expected
    assert closed
    assert seen == {
        "did": "74957654325",
        "cid": "74951234567",
        "none": None,
        "set1": True,
        "set2": True,
    }
    assert server.stats.completed == 1


async def test_trace_12b_inline_hangup_gosub_and_dead_channel() -> None:
    raw = (TRACES / "12b-fastagi-dial.agi.from-asterisk.raw").read_bytes()
    expected = (TRACES / "12b-fastagi-dial.agi.to-asterisk.raw").read_bytes()
    replies: list[AgiReply] = []
    flags: list[bool] = []

    async def dial(session: AgiSession) -> None:
        for line in expected.decode().splitlines():
            replies.append(await session.command(line))
            flags.append(session.hung_up)

    async with AgiServer({"dial": dial}, port=0) as server:
        sent, closed = await replay(raw, expected.decode().splitlines(), server, None)
    assert sent == expected and closed
    assert [r.code for r in replies] == [200, 200, 200, 200, 200, 200, 511]
    assert (replies[2].result, replies[2].extra) == ("0", "Gosub complete")  # after 100 Trying
    assert replies[3].result == "-1"
    assert replies[4].data == "ANSWER"  # the real reply after the inline HANGUP
    assert flags == [False, False, False, False, True, True, True]
    assert replies[6].dead_channel


async def test_520_usage_block_is_one_reply() -> None:
    async def script(session: AgiSession) -> None:
        reply = await session.command("SET VARIABLE onlyone")
        await session.set_variable("USAGE", "|".join(reply.usage) + f"|{reply.code}")

    async with AgiServer({"s": script}, port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\nagi_network_script: s\n\n")
        assert await reader.readline() == b"SET VARIABLE onlyone\n"
        writer.write(
            b"520-Invalid command syntax.  Proper usage follows:\n"
            b" Usage: SET VARIABLE <variablename> <value>\n"
            b"520 End of proper usage.\n"
        )
        line = await reader.readline()
        writer.write(b"200 result=1\n")
        assert await reader.read() == b""
        writer.close()
    assert line == (
        b'SET VARIABLE USAGE "Invalid command syntax.  Proper usage follows:|'
        b' Usage: SET VARIABLE <variablename> <value>|520"\n'
    )


# ------------------------------------------------------------------ server bounds


async def open_session(port: int, script: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"agi_network: yes\nagi_network_script: {script}\nagi_callerid: 1\n\n".encode())
    await writer.drain()
    return reader, writer


async def test_a_hung_handler_is_cut_at_the_session_deadline() -> None:
    gate = asyncio.Event()

    async def stuck(session: AgiSession) -> None:
        await gate.wait()

    async with AgiServer({"stuck": stuck}, port=0, session_deadline=0.2) as server:
        reader, writer = await open_session(server.port, "stuck")
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await reader.read() == b""  # the server closed the socket
        assert loop.time() - started < 1.0
        writer.close()
    assert server.stats.deadline_exceeded == 1


async def test_a_silent_peer_is_cut_at_the_session_deadline() -> None:
    async def never(session: AgiSession) -> None:
        raise AssertionError("no environment block was sent")

    async with AgiServer({"x": never}, port=0, session_deadline=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"agi_network: yes\n")  # and then nothing
        assert await reader.read() == b""
        writer.close()
    assert server.stats.deadline_exceeded == 1


async def test_a_failing_handler_still_closes_the_socket() -> None:
    async def broken(session: AgiSession) -> None:
        raise RuntimeError("bug")

    async with AgiServer({"broken": broken}, port=0) as server:
        reader, writer = await open_session(server.port, "broken")
        assert await reader.read() == b""
        writer.close()
    assert server.stats.failed == 1


async def test_unknown_script_says_so_and_closes() -> None:
    async with AgiServer({}, port=0) as server:
        reader, writer = await open_session(server.port, "nope")
        assert (
            await reader.readline() == b"VERBOSE \"callbridge: unknown FastAGI script 'nope'\" 1\n"
        )
        writer.write(b"200 result=1\n")
        assert await reader.read() == b""
        writer.close()
    assert server.stats.unknown_script == 1


@pytest.mark.parametrize(
    "payload",
    [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"agi_x: " + b"a" * 10000 + b"\n\n", b"\xff\xfe\n\n"],
)
async def test_garbage_is_dropped_without_harm(payload: bytes) -> None:
    async def ok(session: AgiSession) -> None:
        await session.set_variable("X", "1")

    async with AgiServer({"ok": ok}, port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(payload)
        assert await reader.read() == b""
        writer.close()
        # and the server still serves a proper session afterwards
        reader, writer = await open_session(server.port, "ok")
        assert await reader.readline() == b'SET VARIABLE X "1"\n'
        writer.write(b"200 result=1\n")
        assert await reader.read() == b""
        writer.close()
    assert server.stats.protocol_errors == 1


async def test_peer_closing_mid_exchange_is_a_normal_end() -> None:
    got_reply = asyncio.Event()

    async def ask(session: AgiSession) -> None:
        await session.get_variable("A")
        got_reply.set()

    async with AgiServer({"ask": ask}, port=0) as server:
        reader, writer = await open_session(server.port, "ask")
        assert await reader.readline() == b"GET VARIABLE A\n"
        writer.close()
        await writer.wait_closed()
        await server.close()
    assert not got_reply.is_set()
    assert server.stats.failed == 0 and server.stats.active == 0


async def test_many_concurrent_sessions_each_get_their_own_answer() -> None:
    async def echo(session: AgiSession) -> None:
        await session.set_variable("ECHO", session.env.get("callerid"))

    async def one(i: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"agi_network_script: echo\nagi_callerid: {i}\n\n".encode())
        line = await reader.readline()
        writer.write(b"200 result=1\n")
        await reader.read()
        writer.close()
        return line

    async with AgiServer({"echo": echo}, port=0) as server:
        lines = await asyncio.gather(*(one(i) for i in range(200)))
    assert lines == [f'SET VARIABLE ECHO "{i}"\n'.encode() for i in range(200)]
    assert server.stats.completed == 200 and server.stats.active == 0


async def test_over_capacity_sessions_are_closed_at_once() -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def hold(session: AgiSession) -> None:
        entered.set()
        await gate.wait()

    async with AgiServer({"hold": hold}, port=0, max_sessions=1) as server:
        _r1, w1 = await open_session(server.port, "hold")
        await entered.wait()
        r2, w2 = await open_session(server.port, "hold")
        # Closed unread: EOF, or a reset because the env block was never read.
        with contextlib.suppress(ConnectionResetError):
            assert await r2.read() == b""
        gate.set()
        w1.close()
        w2.close()
