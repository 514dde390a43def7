"""``callbridge sim bitrix24`` as a real process: URL on stderr, flags honoured, clean SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import ssl
import sys
from pathlib import Path

import httpx


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callbridge.cli",
        "sim",
        "bitrix24",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def url_of(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
    found = re.search(r"listening on (\S+)", line)
    assert found, line
    return found.group(1)


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_cli_serves_with_webhook_rate_and_switches_then_stops_on_sigterm() -> None:
    proc = await spawn(
        "--listen", "127.0.0.1:0", "--webhook", "1/abc", "--rate", "off",
        "--operating-ms", "5", "--switch", "validation_error=ERROR_CORE",
    )  # fmt: skip
    url = await url_of(proc)
    async with httpx.AsyncClient(base_url=url) as client:
        bad = await client.post(
            "/rest/1/abc/telephony.externalcall.register", json={"TYPE": 9, "USER_ID": 1}
        )
        assert (bad.status_code, bad.json()["error"]) == (400, "ERROR_CORE")
        ok = await client.post("/rest/1/abc/profile", json={})
        assert ok.json()["time"]["operating"] == 0.005
        state = (await client.get("/_emulator/state")).json()
        assert state["switches"]["validation_error"] == "ERROR_CORE"
    code, err = await stop(proc)
    assert code == 0, err
    assert "stopped" in err


async def test_cli_tls_writes_the_certificate(tmp_path: Path) -> None:
    cert = tmp_path / "b24.pem"
    proc = await spawn("--listen", "127.0.0.1:0", "--tls", "--tls-cert-out", str(cert))
    url = await url_of(proc)
    assert url.startswith("https://")
    context = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(base_url=url, verify=context) as client:
        response = await client.post("/rest/1/x/profile", json={})
        assert response.json()["error"] == "NO_AUTH_FOUND"  # no webhook unless configured
    code, err = await stop(proc)
    assert code == 0, err


async def test_cli_refuses_bad_flags_clearly() -> None:
    for args, message in (
        (["--rate", "fast"], "--rate must look like 2/50 or off"),
        (["--switch", "nope=1"], "unknown switch 'nope'"),
        (["--webhook", "abc"], "--webhook must look like USER_ID/CODE"),
        (["--tls-cert-out", "x.pem"], "--tls-cert-out needs --tls"),
    ):
        proc = await spawn("--listen", "127.0.0.1:0", *args)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2
        assert message in err.decode()
