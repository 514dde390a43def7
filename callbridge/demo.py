"""``callbridge demo`` (= ``make demo``): callbridge with no PBX and no portal.

Starts, in one process, the Asterisk simulator (a realistic call mix, or the captures
given with ``--trace``), the Bitrix24 emulator, and callbridge itself — the very
services ``callbridge run`` builds — then installs callbridge on the emulated portal as
a local application, the way an admin would (``/_emulator/install`` posts
``ONAPPINSTALL`` to callbridge's install handler). It prints where to look and a
progress line until stopped. All human output goes to stderr; with ``--trace …
--exit-when-idle`` stdout carries the emulator's final ``/_emulator/state`` JSON and
nothing else, which is how a support engineer replays a customer's capture end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx

from callbridge.app import build_ami, build_services, click_settings
from callbridge.config import Config, parse_config
from callbridge.crm.bitrix24.auth import OAuthAuth
from callbridge.crm.bitrix24.client import Bitrix24Client
from callbridge.pipeline import CallPipeline
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.web.app import INSTALL_PATH, Services, create_app
from callbridge.web.serve import RunningServer, start_server

__all__ = ["Demo", "demo_config", "run", "start_demo"]

log = logging.getLogger("callbridge.demo")

DEMO_WEBHOOK = "1/demo"
#: The traces' DIDs, as lines of the emulated portal (FreePBX inbound routes).
DEMO_LINES = {
    "74957654321": "74957654321",
    "74957654322": "74957654322",
    "74957654323": "74957654323",
    "74957654324": "74957654324",
}


@dataclass
class Demo:
    emulator: EmulatorServer
    portal: str
    sim: AsteriskSimulator
    web: RunningServer
    services: Services
    config: Config
    data_dir: Path

    @property
    def pipeline(self) -> CallPipeline:
        pipeline = self.services.extras["pipeline"]
        assert isinstance(pipeline, CallPipeline)
        return pipeline

    async def state(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.get(f"{self.portal}/_emulator/state")
            resp.raise_for_status()
            data: dict[str, Any] = resp.json()
            return data

    async def stop(self) -> None:
        await self.web.stop()
        await self.sim.stop()
        await self.emulator.stop()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def demo_config(
    *, ami_port: int, secret: str, web_port: int, agi_port: int, portal: str, data_dir: Path
) -> Config:
    host = "127.0.0.1"
    return parse_config(
        {
            "ami": {
                "host": host,
                "port": ami_port,
                "username": "callbridge",
                "secret": secret,
                "reconnect_min": 0.2,
                "reconnect_max": 2.0,
            },
            # Application mode: the credentials come from the install below.
            "bitrix24": {"oauth_url": portal, "client_id": "", "client_secret": ""},
            "rules": {"lines": DEMO_LINES},
            "web": {"listen": f"{host}:{web_port}", "public_url": f"http://{host}:{web_port}"},
            "store": {"path": str(data_dir / "callbridge.sqlite3")},
            "agi": {"listen": f"{host}:{agi_port}"},
        },
        {},
    )


async def start_demo(args: argparse.Namespace) -> Demo:
    """Start every part; if one cannot start, stop those already running and re-raise."""
    started: list[Callable[[], Awaitable[None]]] = []
    try:
        return await _start_parts(args, started)
    except BaseException:
        for stop in reversed(started):
            with contextlib.suppress(Exception):
                await stop()
        raise


async def _start_parts(
    args: argparse.Namespace, started: list[Callable[[], Awaitable[None]]]
) -> Demo:
    host = "127.0.0.1"
    data_dir = Path(args.data_dir)
    replay = bool(args.trace)

    emulator = EmulatorServer(EmulatorOptions(webhook=DEMO_WEBHOOK))
    portal = await emulator.start(host, args.emulator_port)
    started.append(emulator.stop)

    secret = secrets.token_hex(8)
    agi_port = args.agi_port or _free_port(host)
    sim = AsteriskSimulator(
        username="callbridge",
        secret=secret,
        traces=[Path(p) for p in args.trace],
        asap=replay,
        rebase_time=True,
        calls_per_minute=None if replay else args.calls_per_minute,
        auth_fail_delay=1.0,
        agi=(host, agi_port),  # calls to the FastAGI DIDs are routed by callbridge
    )
    started.append(sim.stop)
    await sim.start(host, args.ami_port)
    await sim.start_control(host, 0)

    web_port = args.web_port or _free_port(host)
    config = demo_config(
        ami_port=sim.port,
        secret=secret,
        web_port=web_port,
        agi_port=agi_port,
        portal=portal,
        data_dir=data_dir,
    )
    ami, ami_component = build_ami(config)
    services = build_services(
        config, settings=click_settings(config), ami=ami, ami_component=ami_component
    )
    web = await start_server(create_app(services), host, web_port, services.ready)
    started.append(web.stop)

    # Install callbridge on the portal as a local application, as an admin would.
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(
            f"{portal}/_emulator/install", json={"handler": f"{web.url}{INSTALL_PATH}"}
        )
        resp.raise_for_status()
        app = resp.json()
    client = services.extras["crm_client"]
    assert isinstance(client, Bitrix24Client)
    if isinstance(client.auth, OAuthAuth):
        client.auth.set_credentials(app["client_id"], app["client_secret"])
    installer = services.installer
    await installer.wait_setup()
    return Demo(emulator, portal, sim, web, services, config, data_dir)


def _banner(demo: Demo, out: TextIO) -> None:
    agi = demo.config.agi.get("listen", "")
    lines = [
        "callbridge demo is running (Ctrl-C to stop)",
        f"  Bitrix24 emulator page   {demo.portal}/      (watch calls appear, ring, close;",
        "                           click a number there to call it)",
        f"  emulator state (JSON)    {demo.portal}/_emulator/state",
        f"  incoming webhook         {demo.portal}/rest/{DEMO_WEBHOOK}/<method>",
        f"                           e.g. curl {demo.portal}/rest/{DEMO_WEBHOOK}/user.get",
        f"  callbridge health        {demo.web.url}/health",
        f"  Asterisk AMI (simulated) 127.0.0.1:{demo.sim.port} "
        f"(user callbridge, secret {demo.config.ami.secret})",
        f"  simulator control        http://127.0.0.1:{demo.sim.control_port}/_sim/status",
        f"  FastAGI                  agi://{agi}/route",
        f"  data                     {demo.data_dir}",
    ]
    out.write("\n".join(lines) + "\n")
    out.flush()


def _progress(demo: Demo, state: dict[str, Any]) -> str:
    calls = state.get("calls", [])
    finished = sum(1 for c in calls if c.get("finished"))
    return (
        f"calls seen {demo.pipeline.stats.calls_seen} · registered {len(calls)} · "
        f"finished {finished} · pending operations {demo.pipeline.outbox.depth()}"
    )


def _still_open(demo: Demo) -> str:
    open_calls = [s.linkedid for s in demo.pipeline.tracker.open_calls()]
    pending = demo.pipeline.outbox.listing()
    ops = [f"{op.call_key}:{op.key}({op.last_error or op.status})" for op in pending[:20]]
    return f"open calls: {open_calls or 'none'}; pending operations: {ops or 'none'}"


async def _main(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        demo = await start_demo(args)
    except (OSError, RuntimeError) as exc:
        # Typically a port given with --ami-port/--emulator-port/--web-port/--agi-port
        # that something else already uses.
        err.write(f"callbridge demo: could not start: {exc}\n")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    _banner(demo, err)
    code = 0
    deadline = time.monotonic() + args.idle_timeout
    last = ""
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            state = await demo.state()
            line = _progress(demo, state)
            if line != last:
                err.write(line + "\n")
                err.flush()
                last = line
            if not args.exit_when_idle:
                continue
            done = demo.sim.status()["finished"] and demo.pipeline.is_idle()
            if done:
                break
            if time.monotonic() > deadline:
                err.write(
                    f"callbridge demo: not idle after {args.idle_timeout:g}s: {_still_open(demo)}\n"
                )
                code = 1
                break
        if args.exit_when_idle:
            sys.stdout.write(json.dumps(await demo.state(), ensure_ascii=False) + "\n")
            sys.stdout.flush()
    finally:
        await demo.stop()
    return code


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.exit_when_idle and not args.trace:
        sys.stderr.write("callbridge demo: --exit-when-idle needs --trace FILE...\n")
        return 2
    missing = [p for p in args.trace if not Path(p).is_file()]
    if missing:
        sys.stderr.write(f"callbridge demo: trace file not found: {', '.join(missing)}\n")
        return 2
    args.data_dir = args.data_dir or tempfile.mkdtemp(prefix="callbridge-demo-")
    Path(args.data_dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_main(args))
