"""The AMI client over real TCP: against a scripted peer (fault shapes) and the simulator."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from callbridge.pbx.ami.client import (
    AmiClient,
    AmiConnectionError,
    AmiLoginError,
    AmiTimeout,
    Connected,
    Disconnected,
    StreamItem,
    backoff_delay,
)
from callbridge.pbx.ami.framing import AmiFramer, AmiMessage
from callbridge.sim.asterisk.server import AsteriskSimulator

TRACES = Path(__file__).parent / "traces" / "asterisk-22.10.1"
TRACE = TRACES / "01-inbound-answered.ami"

BANNER = b"Asterisk Call Manager/11.0.0\r\n"

Respond = Callable[[AmiMessage, "ScriptedPeer"], bytes | None]


def reply(action: AmiMessage, *pairs: tuple[str, str], response: str = "Success") -> bytes:
    head = [("Response", response)]
    if action.action_id is not None:
        head.append(("ActionID", action.action_id))
    return AmiMessage(head + list(pairs)).to_bytes()


def default_respond(action: AmiMessage, peer: ScriptedPeer) -> bytes | None:
    name = (action.get("Action") or "").lower()
    if name == "login":
        if action.get("Secret") != peer.secret:
            peer.close_after_write = True
            return reply(action, ("Message", "Authentication failed"), response="Error")
        return reply(action, ("Message", "Authentication accepted"))
    if name == "ping":
        return reply(action, ("Ping", "Pong"), ("Timestamp", "1795216280.634727"))
    if name == "logoff":
        peer.close_after_write = True
        return reply(action, ("Message", "Thanks for all the fish."), response="Goodbye")
    return reply(action, ("Message", f"Invalid/unknown command: {name}."), response="Error")


class ScriptedPeer:
    """A scripted AMI peer: a real TCP server answering each action as the test says."""

    def __init__(self, respond: Respond = default_respond, *, secret: str = "s") -> None:
        self.respond = respond
        self.secret = secret
        self.actions: list[AmiMessage] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.connections = 0
        self.close_after_write = False
        self.changed = asyncio.Event()
        self.banner = BANNER
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def send_all(self, data: bytes) -> None:
        for writer in self.writers:
            if not writer.is_closing():
                writer.write(data)

    def cut_all(self) -> None:
        for writer in self.writers:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        self.changed.set()
        framer = AmiFramer(expect_banner=False)
        writer.write(self.banner)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for action in framer.feed(data):
                    self.actions.append(action)
                    self.changed.set()
                    out = self.respond(action, self)
                    if out:
                        writer.write(out)
                    if self.close_after_write:
                        self.close_after_write = False
                        await writer.drain()
                        writer.close()
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            self.changed.set()
            writer.transport.abort()


# -- helpers ------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_client(port: int, **kw: object) -> AmiClient:
    opts: dict[str, object] = {
        "connect_timeout": 5.0,
        "action_timeout": 5.0,
        "ping_interval": None,
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
        "rand": lambda: 0.0,
    }
    opts.update(kw)
    secret = str(opts.pop("secret", "s"))
    return AmiClient("127.0.0.1", port, "u", secret, **opts)  # type: ignore[arg-type]


async def take(
    items: AsyncIterator[StreamItem], until: Callable[[StreamItem], bool]
) -> list[StreamItem]:
    """Items up to and including the first for which ``until`` holds (10 s at most)."""
    got: list[StreamItem] = []
    async with asyncio.timeout(10):
        async for item in items:
            got.append(item)
            if until(item):
                return got
    raise AssertionError(f"stream ended before the condition; got {got!r}")


def is_disconnect(item: StreamItem) -> bool:
    return isinstance(item, Disconnected)


@pytest.fixture
async def peer() -> AsyncIterator[ScriptedPeer]:
    p = ScriptedPeer()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def sim() -> AsyncIterator[AsteriskSimulator]:
    s = AsteriskSimulator(
        username="u", secret="s", traces=[TRACE], asap=True, seed=0, salt=7, auth_fail_delay=0.0
    )
    await s.start("127.0.0.1", 0)
    yield s
    await s.stop()


@pytest.fixture
async def paced_sim() -> AsyncIterator[AsteriskSimulator]:
    """Real-time pacing, 4× fast: the call goes on while the test acts on it."""
    s = AsteriskSimulator(
        username="u", secret="s", traces=[TRACE], speed=4.0, seed=0, salt=7, auth_fail_delay=0.0
    )
    await s.start("127.0.0.1", 0)
    yield s
    await s.stop()


def is_event(name: str) -> Callable[[StreamItem], bool]:
    return lambda m: isinstance(m, AmiMessage) and m.event == name


def is_connected(item: StreamItem, *, first: bool) -> bool:
    return isinstance(item, Connected) and item.first is first and item.at > 1_700_000_000


def is_timeline_event(m: StreamItem) -> bool:
    return isinstance(m, AmiMessage) and m.event != "FullyBooted" and "Timestamp" in m


# -- backoff ------------------------------------------------------------------------


def test_backoff_grows_doubles_and_caps() -> None:
    lows = [backoff_delay(a, minimum=0.5, maximum=30, rand=lambda: 0.0) for a in range(10)]
    highs = [backoff_delay(a, minimum=0.5, maximum=30, rand=lambda: 0.999999) for a in range(10)]
    assert lows[:4] == [0.25, 0.5, 1.0, 2.0]
    assert max(highs) <= 30 and highs[-1] == pytest.approx(30, rel=1e-5)
    assert all(lo < hi for lo, hi in zip(lows, highs, strict=True))
    assert min(lows) > 0  # never an immediate retry
    assert backoff_delay(10_000, minimum=0.5, maximum=30, rand=lambda: 0.5) == 22.5


# -- scripted peer: protocol and fault shapes ----------------------------------------


async def test_connect_logs_in_with_events_and_marks_the_stream(peer: ScriptedPeer) -> None:
    clock = FakeClock()
    client = make_client(peer.port, clock=clock, events="call,cdr")
    await client.connect()
    (login,) = peer.actions
    assert login.get("Action") == "Login"
    assert login.get("Username") == "u" and login.get("Secret") == "s"
    assert login.get("Events") == "call,cdr"
    assert login.action_id
    items = client.events()
    assert await anext(items) == Connected(first=True, at=clock.now)
    assert client.banner == "Asterisk Call Manager/11.0.0"
    await client.close()
    assert [m.get("Action") for m in peer.actions] == ["Login", "Logoff"]
    rest = [item async for item in items]
    assert rest == [Disconnected("closed by callbridge")]


async def test_refused_login_is_a_clear_error_and_not_retried(peer: ScriptedPeer) -> None:
    client = make_client(peer.port, secret="wrong")
    with pytest.raises(AmiLoginError, match="login refused for user 'u': Authentication failed"):
        await client.connect()
    assert peer.connections == 1
    assert not client.connected


async def test_not_an_ami_server() -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(AmiConnectionError, match="not an AMI server"):
            await make_client(port).connect()
    finally:
        server.close()
        await server.wait_closed()


async def test_connection_refused_is_a_clear_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(AmiConnectionError, match="cannot connect"):
        await make_client(port).connect()


async def test_several_events_in_one_write_come_out_in_order(peer: ScriptedPeer) -> None:
    client = make_client(peer.port)
    await client.connect()
    items = client.events()
    await anext(items)
    peer.send_all(
        b"".join(
            f"Event: E{i}\r\nPrivilege: call,all\r\nTimestamp: {i}.5\r\n\r\n".encode()
            for i in range(30)
        )
    )
    got = await take(items, lambda m: isinstance(m, AmiMessage) and m.event == "E29")
    assert [m.event for m in got if isinstance(m, AmiMessage)] == [f"E{i}" for i in range(30)]
    await client.close()


async def test_events_without_timestamp_are_stamped_and_logged_once(
    peer: ScriptedPeer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(1_800_000_123.25)
    client = make_client(peer.port, clock=clock)
    await client.connect()
    items = client.events()
    await anext(items)
    caplog.set_level(logging.WARNING, logger="callbridge.pbx.ami.client")
    peer.send_all(
        b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: X\r\n\r\n"
        b"Event: Newchannel\r\nPrivilege: call,all\r\nChannel: Y\r\n\r\n"
        b"Event: Hangup\r\nPrivilege: call,all\r\nTimestamp: 5.000001\r\nChannel: X\r\n\r\n"
    )
    got = await take(items, lambda m: isinstance(m, AmiMessage) and m.event == "Hangup")
    first, second, hangup = got
    assert isinstance(first, AmiMessage) and isinstance(second, AmiMessage)
    assert first.items() == [
        ("Event", "Newchannel"),
        ("Privilege", "call,all"),
        ("Timestamp", "1800000123.250000"),
        ("Channel", "X"),
    ]
    assert second.get("Timestamp") == "1800000123.250000"
    assert isinstance(hangup, AmiMessage) and hangup.get("Timestamp") == "5.000001"
    stamped = [r for r in caplog.records if "without Timestamp" in r.getMessage()]
    assert len(stamped) == 1 and "Newchannel" in stamped[0].getMessage()
    await client.close()


async def test_action_gets_its_own_response_by_action_id(peer: ScriptedPeer) -> None:
    client = make_client(peer.port)
    await client.connect()
    pong, unknown = await asyncio.gather(client.ping(), client.action("Nonsense"))
    assert pong.get("Ping") == "Pong"
    assert unknown.response == "Error" and "Invalid/unknown command" in (unknown["Message"])
    ids = [m.action_id for m in peer.actions]
    assert len(set(ids)) == len(ids)
    assert pong.action_id == peer.actions[1].action_id
    await client.close()


async def test_originate_is_sent_async(peer: ScriptedPeer) -> None:
    client = make_client(peer.port)
    await client.connect()
    await client.originate({"Channel": "PJSIP/101", "Exten": "74957770000"})
    sent = peer.actions[-1]
    assert sent.get("Action") == "Originate" and sent.get("Async") == "true"
    assert sent.get("Channel") == "PJSIP/101"
    await client.close()


async def test_list_action_answered_with_error_gives_no_items(peer: ScriptedPeer) -> None:
    client = make_client(peer.port)
    await client.connect()
    response, items = await client.action_list("PJSIPShowEndpoints")
    assert response.response == "Error" and items == []
    await client.close()


async def test_action_timeout_leaves_the_connection_up(peer: ScriptedPeer) -> None:
    def silent_on_status(action: AmiMessage, p: ScriptedPeer) -> bytes | None:
        if action.get("Action") == "Status":
            return None
        return default_respond(action, p)

    peer.respond = silent_on_status
    client = make_client(peer.port)
    await client.connect()
    with pytest.raises(AmiTimeout, match=r"no answer to Status \(ActionID .*\) within 0.05 s"):
        await client.action("Status", within=0.05)
    assert client.connected
    assert (await client.ping()).get("Ping") == "Pong"
    await client.close()


async def test_unanswered_ping_drops_the_connection(peer: ScriptedPeer) -> None:
    def no_pong(action: AmiMessage, p: ScriptedPeer) -> bytes | None:
        return None if action.get("Action") == "Ping" else default_respond(action, p)

    peer.respond = no_pong
    client = make_client(peer.port, ping_interval=0.01, ping_timeout=0.05)
    await client.connect()
    got = await take(client.events(), is_disconnect)
    assert got[-1] == Disconnected("keep-alive Ping unanswered within 0.05 s")
    assert not client.connected
    assert any(m.get("Action") == "Ping" for m in peer.actions)
    await client.close()


async def test_answered_pings_keep_the_connection(peer: ScriptedPeer) -> None:
    client = make_client(peer.port, ping_interval=0.01, ping_timeout=1.0)
    await client.connect()
    await peer.wait_for(lambda: sum(m.get("Action") == "Ping" for m in peer.actions) >= 5)
    assert client.connected
    await client.close()


async def test_cut_mid_message_ends_the_stream_and_fails_pending_actions(
    peer: ScriptedPeer,
) -> None:
    def never(action: AmiMessage, p: ScriptedPeer) -> bytes | None:
        return None if action.get("Action") == "Status" else default_respond(action, p)

    peer.respond = never
    client = make_client(peer.port)
    await client.connect()
    items = client.events()
    await anext(items)
    status = asyncio.create_task(client.action("Status", within=5))
    await peer.wait_for(lambda: any(m.get("Action") == "Status" for m in peer.actions))
    peer.send_all(b"Event: A\r\nPrivilege: call,all\r\nTimestamp: 1.0\r\n\r\nEvent: B\r\nChan")
    await take(items, lambda m: isinstance(m, AmiMessage))
    peer.cut_all()
    got = await take(items, is_disconnect)
    assert got == [Disconnected("connection closed by Asterisk")]
    with pytest.raises(AmiConnectionError, match="connection closed by Asterisk"):
        await status
    with pytest.raises(AmiConnectionError, match="not connected"):
        await client.ping()
    await client.close()


async def test_long_running_client_reconnects_with_backoff(peer: ScriptedPeer) -> None:
    client = make_client(peer.port, reconnect_min=0.02, reconnect_max=1.0)
    loop = asyncio.get_running_loop()
    await client.start()
    items = client.events()
    assert is_connected(await anext(items), first=True)
    peer.secret = "changed"  # the next logins are refused: retried, but only with backoff
    times: list[float] = []

    def stamp(action: AmiMessage, p: ScriptedPeer) -> bytes | None:
        if action.get("Action") == "Login":
            times.append(loop.time())
        return default_respond(action, p)

    peer.respond = stamp
    peer.cut_all()
    assert isinstance(await anext(items), Disconnected)
    await peer.wait_for(lambda: len(times) >= 4)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # attempt n waits minimum * 2**n / 2 (rand() = 0): 0.02, 0.04, 0.08 s ...
    assert all(gap >= 0.01 * 2**n * 0.9 for n, gap in enumerate(gaps, start=1))
    assert client.last_error is not None and "login refused" in client.last_error
    peer.secret = "s"
    item = await anext(items)
    assert isinstance(item, Connected) and item.first is False
    await client.close()


# -- against the Asterisk simulator ---------------------------------------------------


def events_of(items: list[StreamItem]) -> list[AmiMessage]:
    return [m for m in items if isinstance(m, AmiMessage)]


async def test_sim_login_good_and_bad(sim: AsteriskSimulator) -> None:
    bad = make_client(sim.port, secret="nope")
    with pytest.raises(AmiLoginError, match="Authentication failed"):
        await bad.connect()
    good = make_client(sim.port)
    await good.connect()
    items = good.events()
    assert isinstance(await anext(items), Connected)
    booted = await anext(items)
    assert isinstance(booted, AmiMessage) and booted.event == "FullyBooted"
    await good.close()
    logins = [m for m in sim.actions if m.get("Action") == "Login"]
    assert [m.get("Secret") for m in logins] == ["nope", "s"]  # the refusal was not retried


async def test_sim_event_list_and_snapshot(paced_sim: AsteriskSimulator) -> None:
    sim = paced_sim
    client = make_client(sim.port)
    await client.connect()
    items = client.events()
    # Let the call get going (answered), then list its channels.
    await take(items, is_event("BridgeEnter"))
    response, channels = await client.action_list("CoreShowChannels")
    assert response.get("EventList") == "start"
    assert channels and all(m.event == "CoreShowChannel" for m in channels)
    assert all(m.action_id == response.action_id for m in channels)
    live, at = await client.snapshot()
    assert {m.get("Uniqueid") for m in live} >= {m.get("Uniqueid") for m in channels} - {None}
    assert at == pytest.approx(sim.clock.time(), abs=5)
    sent = [m.get("Action") for m in sim.actions]
    assert sent[-2:] == ["CoreShowChannels", "Ping"]
    await client.close()


async def test_sim_reconnect_resumes_the_timeline(paced_sim: AsteriskSimulator) -> None:
    sim = paced_sim
    client = make_client(sim.port, stamp_missing_timestamps=False)
    await client.start()
    items = client.events()
    before = await take(items, lambda m: isinstance(m, AmiMessage) and m.event == "Newchannel")
    sim.set_faults({"drop_after_messages": 5})
    before += await take(items, is_disconnect)
    after = await take(items, lambda m: isinstance(m, Connected))
    assert is_connected(after[-1], first=False)
    after = await take(items, is_event("Hangup"))
    seen = [
        (m.event, m["Timestamp"], m.get("Uniqueid"))
        for m in events_of(before)
        if is_timeline_event(m)
    ]
    resumed = [
        (m.event, m["Timestamp"], m.get("Uniqueid"))
        for m in events_of(after)
        if is_timeline_event(m)
    ]
    assert seen and resumed
    stamps = [float(t) for _, t, _ in seen + resumed]
    assert stamps == sorted(stamps)  # the timeline went on; nothing was played again
    assert not set(seen) & set(resumed)
    await client.close()


async def test_sim_split_writes_give_the_same_events() -> None:
    async def first_events(split: bool) -> list[list[tuple[str, str]]]:
        s = AsteriskSimulator(
            username="u", secret="s", traces=[TRACE], asap=True, salt=7, auth_fail_delay=0.0
        )
        await s.start("127.0.0.1", 0)
        try:
            s.set_faults({"split_writes": split})
            client = make_client(s.port, stamp_missing_timestamps=False)
            await client.connect()
            got = await take(
                client.events(),
                lambda m: isinstance(m, AmiMessage) and m.event == "Hangup",
            )
            await client.close()
            return [[kv for kv in m.items() if kv[0] != "Timestamp"] for m in events_of(got)]
        finally:
            await s.stop()

    plain = await first_events(False)
    assert len(plain) > 20
    assert await first_events(True) == plain


async def test_sim_stall_is_caught_by_the_keep_alive(sim: AsteriskSimulator) -> None:
    client = make_client(sim.port, ping_interval=0.02, ping_timeout=0.2)
    await client.connect()
    items = client.events()
    await take(items, lambda m: isinstance(m, AmiMessage) and m.event == "Newchannel")
    sim.set_faults({"stall_seconds": 60})
    got = await take(items, is_disconnect)
    assert got[-1] == Disconnected("keep-alive Ping unanswered within 0.2 s")
    await client.close()


async def test_sim_gap_over_http_control_loses_the_gap_events(
    paced_sim: AsteriskSimulator,
) -> None:
    sim = paced_sim
    await sim.start_control("127.0.0.1", 0)
    client = make_client(sim.port, stamp_missing_timestamps=False)
    await client.start()
    items = client.events()
    before = await take(items, lambda m: isinstance(m, AmiMessage) and m.event == "Newchannel")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sim.control_port}") as http:
        reply_ = await http.post("/_sim/faults", json={"gap_seconds": 1})
        assert reply_.status_code == 200
        before += await take(items, is_disconnect)
        reconnected = await take(items, lambda m: isinstance(m, Connected))
        assert is_connected(reconnected[-1], first=False)
        after = await take(items, is_timeline_event)
        actions = (await http.get("/_sim/actions")).json()
    last = max(float(m["Timestamp"]) for m in events_of(before) if m.get("Timestamp"))
    first = float(events_of(after)[-1]["Timestamp"])
    # What played during the gap (1 s of real time, 4 s of the 4×-paced timeline) is gone,
    # as with a real Asterisk.
    assert first - last >= 1
    assert sum(1 for a in actions if str(a).count("Login")) >= 2
    await client.close()
