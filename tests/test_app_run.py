"""``callbridge run`` as a real process: it serves /health, talks AMI, and stops cleanly
on SIGTERM with exit code 0."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import httpx

from callbridge.sim.asterisk.server import AsteriskSimulator

STARTUP_LIMIT = 30.0


async def _line_with(stream: asyncio.StreamReader, needle: str, seen: list[str]) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"process output ended before {needle!r}: {seen}")
        line = raw.decode(errors="replace").rstrip()
        seen.append(line)
        if needle in line:
            return line


async def _spawn(config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callbridge.cli",
        "run",
        "--config",
        str(config),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin"},
    )


async def test_run_serves_health_and_stops_on_sigterm(tmp_path: Path) -> None:
    sim = AsteriskSimulator(username="cb", secret="pw", asap=True)
    await sim.start("127.0.0.1", 0)
    config = tmp_path / "callbridge.toml"
    config.write_text(
        f"""
[ami]
host = "127.0.0.1"
port = {sim.port}
username = "cb"
secret = "pw"

[web]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:1/"

[store]
path = "{tmp_path / "store" / "cb.sqlite3"}"
""",
        encoding="utf-8",
    )
    proc = await _spawn(config)
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        line = await asyncio.wait_for(
            _line_with(proc.stderr, "callbridge: listening on ", seen), STARTUP_LIMIT
        )
        url = line.split("listening on ", 1)[1]
        await asyncio.wait_for(sim.wait_for(lambda: bool(sim.sessions)), STARTUP_LIMIT)
        async with httpx.AsyncClient(base_url=url) as http:
            health = await http.get("/health")
        body = health.json()
        # Not installed on a portal yet: unhealthy, and it says why.
        assert health.status_code == 503
        assert body["store"] == {"ok": True}
        assert body["portal"]["installed"] is False
        assert any("events are refused" in r for r in body["reasons"])
        assert (tmp_path / "store" / "cb.sqlite3").exists()
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(_line_with(proc.stderr, "callbridge: stopped", seen), STARTUP_LIMIT)
        assert await asyncio.wait_for(proc.wait(), STARTUP_LIMIT) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()


async def test_run_with_a_bad_config_says_which_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[web]\nlisten = "nowhere"\n', encoding="utf-8")
    proc = await _spawn(config)
    _, err = await asyncio.wait_for(proc.communicate(), STARTUP_LIMIT)
    assert proc.returncode == 2
    assert b"listen" in err and b"configuration error" in err


async def test_run_with_the_fastagi_port_taken_says_so_and_exits(tmp_path: Path) -> None:
    # A port in use is a configuration a user gets wrong: one line naming the part and
    # the port, a non-zero exit, and no SystemExit or hung process.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "cb.toml"
        config.write_text(
            f'[web]\nlisten = "127.0.0.1:0"\n[agi]\nlisten = "127.0.0.1:{port}"\n'
            f'[store]\npath = "{tmp_path / "cb.sqlite3"}"\n',
            encoding="utf-8",
        )
        proc = await _spawn(config)
        _, err = await asyncio.wait_for(proc.communicate(), STARTUP_LIMIT)
    assert proc.returncode == 1
    text = err.decode()
    assert "could not start fastagi" in text and str(port) in text
    assert "callbridge could not start" in text
