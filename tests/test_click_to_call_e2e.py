"""The whole click-to-call and callback loop, end to end, with every part real.

``/_emulator/click`` (or the website's callback form) → the portal posts the event over
HTTP → callbridge checks it and writes ``Originate`` to the simulator's AMI socket → the
simulator plays the originated call in the outcome asked for over its HTTP control →
AMI events → tracker → engine → outbox → ``telephony.externalcall.finish`` of *the
portal's* ``CALL_ID`` with the real result. Nothing is registered twice, no card stays
open. Refusals travel through the same durable outbox, so a portal that is down when a
click is refused still gets its finish and the user's notice, once, when it is back.

The last test runs ``callbridge demo`` as a separate process and clicks a number the way
the emulator page's form does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.actions.originate import CHANNELLESS_PREFIX, ClickToCallSettings, OriginateWatch
from callbridge.app import build_ami, build_services
from callbridge.calls import CallEnded, CallResult, CallStarted, CallSummary, Direction
from callbridge.config import Config, parse_config
from callbridge.crm.base import CrmUser, OperationKind
from callbridge.engine import Engine
from callbridge.outbox.store import OutboxStore
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.pipeline import CallPipeline
from callbridge.rules import RuleSettings, UserDirectory
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.web.app import create_app
from callbridge.web.serve import bind_socket, start_server
from tests.test_web_install import AMI_SECRET, AMI_USER, LINE, Stack
from tests.waiting import until

NUMBER = "74957770000"
T0 = 1_795_000_000.0
PREFIX = "9"
#: Seeded portal users: Ivan (1) has extension 101, Olga (2) 102; the admin (9) none.
IVAN, OLGA, ADMIN = 1, 2, 9
SETTINGS = ClickToCallSettings(
    outbound_prefixes={LINE: PREFIX},
    click_burst=50,
    callback_destinations={LINE: "102"},  # the callback line rings Olga's phone
    callback_user_id=IVAN,  # registered to Ivan until somebody answers
)
FINISH = "telephony.externalcall.finish"
REGISTER = "telephony.externalcall.register"


def _config(sim: AsteriskSimulator, portal: str, url: str, db: Path) -> Config:
    return parse_config(
        {
            "ami": {
                "host": "127.0.0.1",
                "port": sim.port,
                "username": AMI_USER,
                "secret": AMI_SECRET,
                "reconnect_min": 0.05,
            },
            "bitrix24": {"oauth_url": portal},
            "rules": {"lines": {LINE: LINE}},
            "web": {"listen": "127.0.0.1:0", "public_url": url},
            "store": {"path": str(db)},
            # Short backoff: a refused click's finish is retried promptly once the portal
            # is back (the waiting itself is the dispatcher's, driven by its clock).
            "outbox": {"retry_base": 0.05, "retry_cap": 0.4},
        },
        environ={},
    )


async def _serve(
    sim: AsteriskSimulator, emulator: EmulatorServer, portal: str, db: Path
) -> AsyncIterator[Stack]:
    """callbridge itself, on ``db``, joined to a running simulator and emulator."""
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = _config(sim, portal, url, db)
    ami, component = build_ami(config)
    services = build_services(config, settings=SETTINGS, ami=ami, ami_component=component)
    server = await start_server(create_app(services), "127.0.0.1", 0, services.ready, sock=sock)
    await ami.wait_connected()
    try:
        async with (
            httpx.AsyncClient(base_url=portal) as portal_http,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            yield Stack(emulator, portal_http, sim, services, server, ami, http, db)
    finally:
        await server.stop()
        services.extras["conn"].close()


@pytest.fixture
async def parts() -> AsyncIterator[tuple[AsteriskSimulator, EmulatorServer, str]]:
    emulator = EmulatorServer(EmulatorOptions(webhook=None, rate=None))
    portal = await emulator.start("127.0.0.1", 0)
    sim = AsteriskSimulator(username=AMI_USER, secret=AMI_SECRET, asap=True)
    await sim.start("127.0.0.1", 0)
    await sim.start_control("127.0.0.1", 0)
    try:
        yield sim, emulator, portal
    finally:
        await sim.stop()
        await emulator.stop()


@pytest.fixture
async def stack(
    parts: tuple[AsteriskSimulator, EmulatorServer, str], tmp_path: Path
) -> AsyncIterator[Stack]:
    sim, emulator, portal = parts
    async for s in _serve(sim, emulator, portal, tmp_path / "callbridge.sqlite3"):
        await s.install()
        yield s


# -- helpers ------------------------------------------------------------------------------


def pipeline_of(s: Stack) -> CallPipeline:
    pipeline = s.services.extras["pipeline"]
    assert isinstance(pipeline, CallPipeline)
    return pipeline


def outbox_of(s: Stack) -> OutboxStore:
    return pipeline_of(s).outbox


async def set_outcome(s: Stack, outcome: str) -> None:
    """Through the simulator's HTTP control, as the demo and a person would."""
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            f"http://127.0.0.1:{s.sim.control_port}/_sim/originate-outcome",
            json={"outcome": outcome},
        )
    assert answer.status_code == 200, answer.text
    assert s.sim.originate_outcome == outcome


async def portal_fault(s: Stack, mode: str) -> None:
    answer = await s.portal.post("/_emulator/faults", json={"mode": mode})
    assert answer.status_code == 200, answer.text


async def click(s: Stack, user_id: int, phone: str, drain: bool = True) -> str:
    answer = await s.portal.post(
        "/_emulator/click", json={"user_id": user_id, "phone_number": phone, "line_number": LINE}
    )
    assert answer.status_code == 200, answer.text
    await s.settle(drain=drain)
    call_id: str = answer.json()["CALL_ID"]
    return call_id


def call_of(state: dict[str, Any], call_id: str) -> dict[str, Any]:
    [call] = [c for c in state["calls"] if c["CALL_ID"] == call_id]
    assert isinstance(call, dict)
    return call


def methods(call: dict[str, Any]) -> list[str]:
    return [h["method"] for h in call["history"]]


def statistic_of(state: dict[str, Any], call_id: str) -> dict[str, Any]:
    [record] = [r for r in state["statistics"] if r["CALL_ID"] == call_id]
    assert isinstance(record, dict)
    return record


def notes_to(state: dict[str, Any], user_id: int) -> list[str]:
    return [n["MESSAGE"] for n in state["notifications"] if n["USER_ID"] == user_id]


async def finished(s: Stack, call_id: str, within: float = 30.0) -> dict[str, Any]:
    """The portal's state once ``call_id`` is finished and callbridge has nothing left."""

    async def done() -> bool:
        state = await s.state()
        return any(c["CALL_ID"] == call_id and c["finished"] for c in state["calls"])

    await until(done, f"call {call_id} finished on the portal", within)
    await until(lambda: outbox_of(s).depth() == 0, "the outbox drained", within)
    return await s.state()


def variables(action: Any) -> list[str]:
    value = action.to_json_obj().get("Variable", [])
    return [value] if isinstance(value, str) else list(value)


# -- click-to-call: the whole loop ----------------------------------------------------------

OUTCOMES = [
    # outcome, STATUS_CODE, talked
    ("answered", "200", True),
    ("busy", "486", False),  # the agent's phone answered 486: Hangup cause 17
    ("no_answer", "480", False),  # rang out the Originate's Timeout: cause 19
    ("failed", "503", False),  # OriginateResponse Failure, no channel ever existed
]


@pytest.mark.parametrize(("outcome", "code", "talked"), OUTCOMES)
async def test_a_click_is_placed_played_and_finished_with_the_real_result(
    stack: Stack, outcome: str, code: str, talked: bool
) -> None:
    await set_outcome(stack, outcome)
    call_id = await click(stack, IVAN, "+7 (495) 777-00-00")

    # The Originate on the AMI socket: Ivan's phone first, then the number, tagged.
    [action] = stack.originates()
    assert action["Channel"] == "Local/101@originate-skipvm"
    assert action["Exten"] == PREFIX + NUMBER
    assert action["Async"] == "true"
    assert f"__CRM_CALL_ID={call_id}" in variables(action)

    state = await finished(stack, call_id)
    call = call_of(state, call_id)
    assert call["USER_ID"] == IVAN  # the clicking user
    assert call["STATUS_CODE"] == code
    assert (call["DURATION"] > 0) is talked
    assert call["shown_now"] == []  # no card left open
    # One call for one click: the portal's own, never registered again, finished once.
    assert [c["CALL_ID"] for c in state["calls"]] == [call_id]
    assert methods(call) == ["_emulator.click", FINISH]
    assert REGISTER not in state["requests"]["by_method"]
    record = statistic_of(state, call_id)
    assert record["CALL_FAILED_CODE"] == code
    if talked:
        assert record["CALL_FAILED_REASON"] == ""
        assert notes_to(state, IVAN) == []
    else:
        assert record["CALL_FAILED_REASON"]  # failed, and why
    if outcome == "failed":
        # Nobody but the action saw it fail: it finished the call and told Ivan why.
        assert "could not be reached" in record["CALL_FAILED_REASON"]
        [note] = notes_to(state, IVAN)
        assert "could not be placed" in note
    # Everything callbridge meant to send was sent and nothing was given up on.
    assert outbox_of(stack).failed_ids() == []


async def test_clicks_in_a_row_each_finish_their_own_call(stack: Stack) -> None:
    results: dict[str, str] = {}
    for outcome in ("answered", "failed", "busy", "answered"):
        await set_outcome(stack, outcome)
        call_id = await click(stack, IVAN, f"+7495777000{len(results)}")
        state = await finished(stack, call_id)
        results[call_id] = call_of(state, call_id)["STATUS_CODE"]
    assert list(results.values()) == ["200", "503", "486", "200"]
    state = await stack.state()
    assert sorted(c["CALL_ID"] for c in state["calls"]) == sorted(results)
    assert all(methods(c).count(FINISH) == 1 and c["shown_now"] == [] for c in state["calls"])
    assert len(stack.originates()) == 4
    assert REGISTER not in state["requests"]["by_method"]


# -- website callback: the whole loop -------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "code", "finisher"),
    [
        ("answered", "200", OLGA),  # the real answerer, not the user it was registered to
        ("busy", "486", OLGA),
        ("failed", "503", IVAN),  # no channel ever: finished by the action, to the fallback
    ],
)
async def test_a_website_callback_is_registered_placed_and_finished(
    stack: Stack, outcome: str, code: str, finisher: int
) -> None:
    await set_outcome(stack, outcome)
    answer = await stack.portal.post(
        "/_emulator/callback-form", json={"phone_number": "+74957770000", "line_number": LINE}
    )
    assert answer.status_code == 200, answer.text
    await stack.settle()

    [action] = stack.originates()
    assert action["Channel"] == "Local/102@from-internal"  # the line's callback destination
    assert action["Exten"] == PREFIX + NUMBER
    [registered] = (await stack.state())["calls"]
    call_id = registered["CALL_ID"]
    assert registered["TYPE"] == 4
    assert registered["REGISTERED_USER_ID"] == IVAN
    assert f"__CRM_CALL_ID={call_id}" in variables(action)

    state = await finished(stack, call_id)
    call = call_of(state, call_id)
    assert call["USER_ID"] == finisher
    assert call["STATUS_CODE"] == code
    assert (call["DURATION"] > 0) is (outcome == "answered")
    assert call["shown_now"] == []
    assert len(state["calls"]) == 1
    assert methods(call) == [REGISTER, FINISH]  # registered once (by callbridge), finished once
    assert state["requests"]["by_method"][REGISTER] == 1
    record = statistic_of(state, call_id)
    assert record["INCOMING"] == "4"
    assert bool(record["CALL_FAILED_REASON"]) is (outcome != "answered")


# -- the pieces that make the loop close (pure) ----------------------------------------------


def _failure(action_id: str, exten: str = PREFIX + NUMBER) -> CallStarted:
    """What the tracker makes of an OriginateResponse failure no channel belongs to."""
    return CallStarted(
        CHANNELLESS_PREFIX + action_id, T0, Direction.OUTBOUND, exten, None, None, {}
    )


def test_the_watch_knows_its_own_channelless_failures() -> None:
    watch = OriginateWatch()
    watch.expect("cb-c2c-x-1", "externalCall.a.1", "1", T0, PREFIX + NUMBER)
    # Read before the action's answer was bound: recognised by its Exten.
    assert watch.owns(_failure("cb-1-aa-7"))
    assert not watch.owns(_failure("other-tool-3", exten="74950000000"))
    assert watch.bind("cb-c2c-x-1", "cb-1-aa-7") is None
    response = AmiMessage(
        [
            ("Event", "OriginateResponse"),
            ("ActionID", "cb-1-aa-7"),
            ("Response", "Failure"),
            ("Reason", "0"),
            ("Uniqueid", "<unknown>"),
        ]
    )
    failure = watch.feed(response)
    assert failure is not None and failure.crm_call_id == "externalCall.a.1"
    # Still ours after the watch dealt with it (the engine may see it later).
    assert watch.owns(_failure("cb-1-aa-7"))
    assert not watch.owns(_failure("other-tool-3"))  # nothing of ours is pending now
    ringing = CallStarted("cb-c2c-x-1", T0, Direction.OUTBOUND, NUMBER, None, "101", {})
    assert not watch.owns(ringing)  # a call with channels is the tracker's and the engine's


def _engine(tmp_path: Path, settings: RuleSettings, own: OriginateWatch) -> Engine:
    store = OutboxStore.open(tmp_path / "engine.sqlite3", lambda: T0)
    users = [CrmUser(1, "Ivan Petrov", "101", None, True)]
    engine = Engine(settings, store, UserDirectory.from_users(users))
    engine.set_own_originates(own.owns)
    return engine


def _ended(started: CallStarted, result: CallResult, cause: int | None) -> CallEnded:
    return CallEnded(
        started.call_id,
        T0 + 5,
        CallSummary(
            linkedid=started.call_id,
            direction=started.direction,
            external_number=started.external_number,
            did=None,
            operator=started.operator,
            rang=[],
            answered=False,
            answered_by=None,
            answered_on=None,
            final_operator=None,
            result=result,
            transfers=[],
            start=T0,
            answer=None,
            end=T0 + 5,
            recordings=[],
            hangup_cause=cause,
            tags=dict(started.tags),
        ),
    )


def test_a_tagged_call_the_rules_would_skip_is_still_finished(tmp_path: Path) -> None:
    # Ivan's extension is an exception and the number unknown: the rules skip such a call,
    # but the portal registered this one and its card must close.
    settings = replace(RuleSettings(), exception_extensions=frozenset({"101"}))
    engine = _engine(tmp_path, settings, OriginateWatch())
    tags = {settings.crm_call_id_tag: "externalCall.b.2"}
    started = CallStarted("c9", T0, Direction.OUTBOUND, None, None, "101", tags)
    engine.handle(started)
    entries = engine.handle(_ended(started, CallResult.FAILED, 17))
    [finish] = [e.op for e in entries if e.op.kind is OperationKind.FINISH_CALL]
    assert finish.params["CALL_ID"] == "externalCall.b.2"
    assert finish.params["STATUS_CODE"] == "486"
    assert [e.op.kind for e in entries].count(OperationKind.REGISTER_CALL) == 0


def test_our_channelless_failure_is_not_registered_a_strangers_is(tmp_path: Path) -> None:
    watch = OriginateWatch()
    watch.expect("cb-c2c-x-2", "externalCall.c.3", "1", T0, PREFIX + NUMBER)
    watch.bind("cb-c2c-x-2", "cb-1-aa-8")
    engine = _engine(tmp_path, RuleSettings(), watch)
    ours = _failure("cb-1-aa-8")
    assert engine.handle(ours) == []
    assert engine.handle(_ended(ours, CallResult.FAILED, None)) == []
    stranger = _failure("fop2-17", exten="74950000000")
    engine.handle(stranger)
    kinds = [e.op.kind for e in engine.handle(_ended(stranger, CallResult.FAILED, None))]
    assert OperationKind.FINISH_CALL in kinds  # an outbound attempt like any other


# -- refusals go through the durable outbox -------------------------------------------------


async def _warm(s: Stack, kind: str) -> None:
    """What must be known before the portal goes down for the refusal to be the one
    named: the admin's missing extension, or Ivan's extension (both cached)."""
    if kind == "no extension":
        warm = await click(s, ADMIN, NUMBER)
        await finished(s, warm)
    elif kind == "originate failed":
        await set_outcome(s, "answered")
        warm = await click(s, IVAN, "74957770009")
        await finished(s, warm)
        await set_outcome(s, "failed")


REFUSALS = [
    # kind, clicking user, number, STATUS_CODE, what the notice says
    ("number refused", IVAN, "7495;7770000", "404", "the number"),
    ("no extension", ADMIN, NUMBER, "480", "no internal number"),
    ("extension not looked up", IVAN, NUMBER, "503", "could not be looked up"),
    ("originate failed", IVAN, NUMBER, "503", "could not be reached"),
]


@pytest.mark.parametrize(("kind", "user", "number", "code", "says"), REFUSALS)
async def test_a_refusal_while_the_portal_is_down_lands_once_it_is_back(
    stack: Stack, kind: str, user: int, number: str, code: str, says: str
) -> None:
    await _warm(stack, kind)
    before = await stack.state()
    originates = len(stack.originates())

    await portal_fault(stack, "down")
    call_id = await click(stack, user, number, drain=False)
    outbox = outbox_of(stack)
    key = f"click:{call_id}"

    def tried_and_waiting() -> bool:
        finish = outbox.find(key, "finish")
        return finish is not None and finish.status == "pending" and finish.attempts >= 2

    # Sent, refused by the dead portal, kept and retried.
    await until(tried_and_waiting, "the refusal's finish retried while the portal is down")
    assert not call_of(await stack.state(), call_id)["finished"]

    await portal_fault(stack, "none")
    state = await finished(stack, call_id)
    call = call_of(state, call_id)
    assert methods(call) == ["_emulator.click", FINISH]  # exactly once
    assert call["shown_now"] == []
    assert call["USER_ID"] == user
    record = statistic_of(state, call_id)
    assert record["CALL_FAILED_CODE"] == code
    assert says in record["CALL_FAILED_REASON"]
    new_notes = notes_to(state, user)[len(notes_to(before, user)) :]
    assert len(new_notes) == 1 and "could not be placed" in new_notes[0]
    assert says in new_notes[0]
    for step in ("finish", "notify"):
        op = outbox.find(key, step)
        assert op is not None and op.status == "done"
    expected = originates + (1 if kind == "originate failed" else 0)
    assert len(stack.originates()) == expected  # a refused click originates nothing


async def test_a_refusal_survives_a_restart_while_the_portal_is_down(
    parts: tuple[AsteriskSimulator, EmulatorServer, str], tmp_path: Path
) -> None:
    sim, emulator, portal = parts
    db = tmp_path / "callbridge.sqlite3"
    async for first in _serve(sim, emulator, portal, db):
        await first.install()
        await portal_fault(first, "down")
        call_id = await click(first, IVAN, "7495|7770000", drain=False)
        await until(tried(outbox_of(first), f"click:{call_id}"), "the refusal tried once")
    # callbridge is gone; the portal comes back; a new callbridge on the same store.
    async for second in _serve(sim, emulator, portal, db):
        await portal_fault(second, "none")
        state = await finished(second, call_id)
        call = call_of(state, call_id)
        assert methods(call) == ["_emulator.click", FINISH]
        assert call["STATUS_CODE"] == "404"
        assert len(notes_to(state, IVAN)) == 1
        assert second.originates() == []


def tried(outbox: OutboxStore, call_key: str) -> Callable[[], bool]:
    def check() -> bool:
        op = outbox.find(call_key, "finish")
        return op is not None and op.attempts >= 1

    return check


# -- the demo: the emulator page's click form -----------------------------------------------


async def test_the_page_form_clicks_a_number_in_the_demo(tmp_path: Path) -> None:
    """``callbridge demo`` in its own process; the page's form posts to
    ``/_emulator/click``; the call is placed on the simulated PBX and finished."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; from callbridge.cli import main; sys.exit(main())",
        "demo",
        "--data-dir",
        str(tmp_path / "demo"),
        "--calls-per-minute",
        "0.01",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    banner: dict[str, str] = {}
    try:
        async with asyncio.timeout(60):
            while "control" not in banner:
                line = (await proc.stderr.readline()).decode()
                assert line, f"demo exited early ({await proc.wait()})"
                if m := re.search(r"emulator page\s+(http://\S+)/", line):
                    banner["portal"] = m[1]
                elif m := re.search(r"simulator control\s+(http://\S+)/_sim/status", line):
                    banner["control"] = m[1]
        drain = asyncio.create_task(_drain(proc.stderr))
        async with httpx.AsyncClient(base_url=banner["portal"], timeout=30) as http:
            page = (await http.get("/")).text
            # The form on the page and the script that sends it, as a browser would.
            assert '<form id="click">' in page
            assert 'fetch("/_emulator/click", {method: "POST"' in page
            for name in ("user_id", "phone_number", "line_number"):
                assert f'name="{name}"' in page
            assert '<option value="1">Ivan Petrov</option>' in page
            # What the script posts for "Ivan Petrov", "+7 495 777-00-00", no line.
            form = {"user_id": 1, "phone_number": "+7 495 777-00-00", "line_number": None}
            answer = await http.post("/_emulator/click", json=form)
            assert answer.status_code == 200, answer.text
            call_id = answer.json()["CALL_ID"]

            async def placed() -> bool:
                actions = (await http.get(f"{banner['control']}/_sim/actions")).json()
                return any(
                    a.get("Action") == "Originate"
                    and f"__CRM_CALL_ID={call_id}" in str(a.get("Variable"))
                    for a in actions
                )

            await until(placed, "the click's Originate on the simulated PBX", within=30)

            async def done() -> bool:
                state = (await http.get("/_emulator/state")).json()
                return any(c["CALL_ID"] == call_id and c["finished"] for c in state["calls"])

            # Real time: the simulator plays the recorded call at its own pace.
            await until(done, "the click's call finished on the portal", within=90)
            state = (await http.get("/_emulator/state")).json()
            call = call_of(state, call_id)
            assert call["STATUS_CODE"] == "200" and call["DURATION"] > 0
            assert call["USER_ID"] == 1 and call["shown_now"] == []
            # In real time the engine also shows the card while the phone rings.
            assert methods(call).count(FINISH) == 1 and REGISTER not in methods(call)
            page = (await http.get("/")).text
            assert f"finished (200, {call['DURATION']} s)" in page
        drain.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drain
    finally:
        if proc.returncode is None:
            proc.terminate()
        assert await proc.wait() in (0, -15)


async def _drain(stream: asyncio.StreamReader) -> None:
    # The demo writes a progress line now and then; a full pipe would stall it.
    while await stream.readline():
        pass
