"""``callbridge check`` against the simulator and a scripted peer, and as a process."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

from callbridge.check import (
    AMI_CHECKS,
    PORTAL_CHECKS,
    REQUIRED_AMI_ACTIONS,
    CheckContext,
    Status,
    run_checks,
)
from callbridge.config import parse_config
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.store.db import connect
from callbridge.store.tokens import Tokens, TokenStore
from tests.test_ami_client import TRACE, ScriptedPeer, default_respond, reply


def ctx_for(port: int, secret: str = "s") -> CheckContext:
    config = parse_config(
        {"ami": {"host": "127.0.0.1", "port": port, "username": "u", "secret": secret}},
        environ={},
    )
    return CheckContext(config, wait=2.0)


async def test_all_ok_against_the_simulator() -> None:
    sim = AsteriskSimulator(username="u", secret="s", traces=[TRACE], auth_fail_delay=0.0)
    await sim.start("127.0.0.1", 0)
    out = io.StringIO()
    try:
        findings = await run_checks(ctx_for(sim.port), out, AMI_CHECKS)
    finally:
        await sim.stop()
    assert [f.status for f in findings] == [Status.OK, Status.OK, Status.OK]
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("OK ") for line in lines)
    sent = [m.get("Action") for m in sim.actions]
    assert sent == ["Login", "ListCommands", "UserEvent", "Logoff"]
    assert sim.actions[2].get("UserEvent") == "callbridge-check"


async def test_bad_secret_is_a_problem_and_the_rest_is_skipped() -> None:
    sim = AsteriskSimulator(username="u", secret="s", traces=[TRACE], auth_fail_delay=0.0)
    await sim.start("127.0.0.1", 0)
    try:
        findings = await run_checks(ctx_for(sim.port, "bad"), io.StringIO(), AMI_CHECKS)
    finally:
        await sim.stop()
    assert [f.status for f in findings] == [Status.PROBLEM, Status.SKIP, Status.SKIP]
    assert "Authentication failed" in findings[0].what


def limited_pbx(action: AmiMessage, peer: ScriptedPeer) -> bytes | None:
    """An Asterisk whose AMI user lacks originate/transfer rights and timestampevents."""
    name = (action.get("Action") or "").lower()
    if name == "listcommands":
        allowed = [a for a in REQUIRED_AMI_ACTIONS if a not in ("Originate", "BlindTransfer")]
        return reply(action, *[(a, f"{a} things. (Priv: x,all)") for a in allowed])
    if name == "userevent":
        echo = [("Event", "UserEvent"), ("Privilege", "user,all")]
        echo += [(k, v) for k, v in action.items() if k != "Action"]
        return reply(action, ("Message", "Event Sent")) + AmiMessage(echo).to_bytes()
    return default_respond(action, peer)


async def test_missing_permissions_and_timestamps_are_reported() -> None:
    peer = ScriptedPeer(limited_pbx)
    await peer.start()
    out = io.StringIO()
    try:
        findings = await run_checks(ctx_for(peer.port), out, AMI_CHECKS)
    finally:
        await peer.stop()
    assert [f.status for f in findings] == [Status.OK, Status.PROBLEM, Status.PROBLEM]
    assert "may not send Originate, BlindTransfer" in findings[1].what
    assert "timestampevents = yes" in findings[2].what
    assert [line.split()[0] for line in out.getvalue().splitlines()] == ["OK", "PROBLEM", "PROBLEM"]


async def test_user_event_that_never_comes_back_is_a_problem() -> None:
    def no_echo(action: AmiMessage, peer: ScriptedPeer) -> bytes | None:
        if (action.get("Action") or "").lower() == "userevent":
            return reply(action, ("Message", "Event Sent"))
        return limited_pbx(action, peer)

    peer = ScriptedPeer(no_echo)
    await peer.start()
    ctx = ctx_for(peer.port)
    ctx.wait = 0.2
    try:
        findings = await run_checks(ctx, io.StringIO(), AMI_CHECKS)
    finally:
        await peer.stop()
    assert findings[2].status is Status.PROBLEM
    assert "did not come back within 0.2 s" in findings[2].what


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callbridge.cli",
        "check",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_cli_bad_config_exits_2_with_findings(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[ami]\nport = "x"\nbogus = 1\n', encoding="utf-8")
    code, out = await run_cli("--config", str(bad), env={"PATH": ""})
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 2 and all(line.startswith("PROBLEM config:") for line in lines)
    assert any("port" in line for line in lines) and any("bogus" in line for line in lines)


async def test_cli_against_the_simulator_and_the_emulator(tmp_path: Path) -> None:
    sim = AsteriskSimulator(username="u", secret="s", traces=[TRACE], auth_fail_delay=0.0)
    await sim.start("127.0.0.1", 0)
    portal = EmulatorServer(EmulatorOptions(webhook="1/chk", rate=None))
    base = await portal.start("127.0.0.1", 0)
    good = tmp_path / "cb.toml"
    good.write_text(
        f'[ami]\nhost = "127.0.0.1"\nport = {sim.port}\nusername = "u"\n'
        f'[bitrix24]\nwebhook_url = "{base}/rest/1/chk/"\n'
        f'[store]\npath = "{tmp_path / "cb.sqlite3"}"\n',
        encoding="utf-8",
    )
    try:
        code, out = await run_cli(
            "--config", str(good), env={"CALLBRIDGE_AMI__SECRET": "s", "PATH": ""}
        )
        bad_code, bad_out = await run_cli(
            "--config", str(good), env={"CALLBRIDGE_AMI__SECRET": "x", "PATH": ""}
        )
    finally:
        await sim.stop()
        await portal.stop()
    assert code == 0, out
    # config, 3 AMI checks, auth, scopes, users; then a NOTE: the seeded admin (id 9) has
    # no internal number.
    statuses = [line.split()[0] for line in out.splitlines()]
    assert statuses == ["OK"] * 7 + ["NOTE"], out
    assert "without an internal number" in out.splitlines()[-1]
    assert bad_code == 1
    assert bad_out.splitlines()[1].startswith("PROBLEM AMI login as 'u'")


def portal_ctx(tmp_path: Path, **bitrix24: str) -> CheckContext:
    config = parse_config(
        {"bitrix24": bitrix24, "store": {"path": str(tmp_path / "cb.sqlite3")}}, environ={}
    )
    return CheckContext(config, wait=2.0)


async def test_portal_checks_with_a_wrong_webhook_code(tmp_path: Path) -> None:
    portal = EmulatorServer(EmulatorOptions(webhook="1/right", rate=None))
    base = await portal.start("127.0.0.1", 0)
    try:
        ctx = portal_ctx(tmp_path, webhook_url=f"{base}/rest/1/wrong/")
        findings = await run_checks(ctx, io.StringIO(), PORTAL_CHECKS)
    finally:
        await portal.stop()
    assert [f.status for f in findings] == [Status.PROBLEM, Status.SKIP, Status.SKIP]
    assert "refused" in findings[0].what


async def test_application_not_installed_is_a_problem(tmp_path: Path) -> None:
    ctx = portal_ctx(tmp_path, client_id="local.1", client_secret="s")
    findings = await run_checks(ctx, io.StringIO(), PORTAL_CHECKS)
    assert findings[0].status is Status.PROBLEM
    assert "not installed" in findings[0].what


async def test_application_whose_refresh_was_refused_says_so(tmp_path: Path) -> None:
    # A previous process was refused by the OAuth server (app removed, 180 days unused):
    # the store remembers it and check reports it without sending anything.
    conn = connect(tmp_path / "cb.sqlite3")
    store = TokenStore(conn)
    store.save(
        Tokens(
            access_token="a",
            refresh_token="r",
            expires=0.0,
            client_endpoint="http://127.0.0.1:9/rest/",
            member_id="m",
            application_token="t",
        )
    )
    store.mark_failed("invalid_grant: refresh token expired")
    conn.close()
    ctx = portal_ctx(tmp_path, client_id="local.1", client_secret="s")
    findings = await run_checks(ctx, io.StringIO(), PORTAL_CHECKS)
    assert findings[0].status is Status.PROBLEM
    assert "refused the refresh token" in findings[0].what
    assert "invalid_grant" in findings[0].what
