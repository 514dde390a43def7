"""Benchmark: click-to-call latency, event received → Originate written to the AMI socket.

Everything runs for real in one process: the Bitrix24 emulator installs callbridge as a
local application, callbridge (uvicorn, SQLite store on disk, AMI client) takes signed
``ONEXTERNALCALLSTART`` events over HTTP, and the AMI peer timestamps each Originate as it
reads it off the socket. The clock starts just before the event's HTTP POST is sent, so
the figure includes the HTTP round trip into callbridge (a conservative "event received").

AMI peer (``--pbx``): ``stub`` (default) is a minimal AMI server here that answers Login,
Ping and Originate and nothing else, so the figure is callbridge's own; ``sim`` is the
Asterisk simulator, which also plays every originated call (≈150 events each) in the same
event loop — its CPU then shows up in the latency.

    .venv/bin/python bench/click_to_call.py [--clicks 1000] [--pbx stub|sim]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from callbridge.actions.originate import ClickToCallSettings
from callbridge.app import build_ami, build_services
from callbridge.config import parse_config
from callbridge.pbx.ami.framing import AmiFramer, AmiMessage
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from callbridge.web.app import EVENTS_PATH, INSTALL_PATH, create_app
from callbridge.web.serve import bind_socket, start_server


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class StubAmi:
    """Just enough AMI: banner, Login, Ping, Originate (queued), each answered at once."""

    def __init__(self, on_action: Callable[[AmiMessage], None]) -> None:
        self.on_action = on_action
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        framer = AmiFramer()
        try:
            while data := await reader.read(65536):
                for msg in framer.feed(data):
                    self.on_action(msg)
                    aid = msg.get("ActionID") or ""
                    action = (msg.get("Action") or "").lower()
                    text = {
                        "login": "Message: Authentication accepted",
                        "originate": "Message: Originate successfully queued",
                        "ping": f"Ping: Pong\r\nTimestamp: {time.time():.6f}",
                    }.get(action, "Message: ok")
                    if action == "logoff":
                        writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\n\r\n".encode())
                        await writer.drain()
                        return
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\n{text}\r\n\r\n".encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)


async def bench(clicks: int, data_dir: Path, pbx: str) -> dict[str, Any]:
    emulator = EmulatorServer(EmulatorOptions(webhook=None, rate=None))
    base = await emulator.start("127.0.0.1", 0)
    waiting: dict[str, asyncio.Future[float]] = {}

    def timed(msg: AmiMessage) -> None:
        # Called as the AMI peer reads the action off the socket.
        if (msg.get("Action") or "").lower() == "originate":
            for var in msg.get_all("Variable"):
                future = waiting.get(var.removeprefix("__CRM_CALL_ID="))
                if future is not None and not future.done():
                    future.set_result(time.perf_counter())

    peer: StubAmi | AsteriskSimulator
    if pbx == "sim":
        sim = AsteriskSimulator(username="cb", secret="pw", asap=True)
        record = sim.record_action

        def recorded(msg: AmiMessage) -> None:
            timed(msg)
            record(msg)

        sim.record_action = recorded  # type: ignore[method-assign]
        await sim.start("127.0.0.1", 0)
        peer = sim
    else:
        peer = StubAmi(timed)
        await peer.start()
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = parse_config(
        {
            "ami": {"host": "127.0.0.1", "port": peer.port, "username": "cb", "secret": "pw"},
            "bitrix24": {"oauth_url": base},
            "web": {"listen": "127.0.0.1:0", "public_url": url},
            "store": {"path": str(data_dir / "bench.sqlite3")},
        },
        environ={},
    )
    ami, component = build_ami(config)
    settings = ClickToCallSettings(click_burst=clicks + 10)
    services = build_services(config, settings=settings, ami=ami, ami_component=component)
    server = await start_server(create_app(services), "127.0.0.1", 0, services.ready, sock=sock)
    await ami.wait_connected()
    latencies: list[float] = []
    try:
        async with (
            httpx.AsyncClient(base_url=base) as portal,
            httpx.AsyncClient(base_url=server.url) as http,
        ):
            app = (
                await portal.post("/_emulator/install", json={"handler": url + INSTALL_PATH})
            ).json()
            await services.installer.wait_setup()
            for n in range(clicks + 20):  # the first 20 warm caches and connections
                call_id = f"externalCall.bench{n:06d}.1773236989"
                body = urlencode(
                    [
                        ("event", "ONEXTERNALCALLSTART"),
                        ("data[PHONE_NUMBER]", f"+7495{n:07d}"),
                        ("data[USER_ID]", "1"),
                        ("data[CALL_ID]", call_id),
                        ("data[LINE_NUMBER]", ""),
                        ("ts", str(1773236989 + n)),
                        ("auth[member_id]", app["member_id"]),
                        ("auth[application_token]", app["application_token"]),
                    ]
                )
                arrival = waiting[call_id] = asyncio.get_running_loop().create_future()
                t0 = time.perf_counter()
                response = await http.post(
                    EVENTS_PATH,
                    content=body,
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
                assert response.status_code == 200, response.text
                try:
                    t1 = await asyncio.wait_for(arrival, 10.0)
                except TimeoutError:
                    raise SystemExit(
                        f"click {n}: no Originate reached the AMI peer in 10 s"
                    ) from None
                del waiting[call_id]
                if n >= 20:
                    latencies.append((t1 - t0) * 1000)
    finally:
        await server.stop()
        await peer.stop()
        await emulator.stop()
    return {
        "pbx": pbx,
        "clicks": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p95_ms": round(_pct(latencies, 95), 2),
        "p99_ms": round(_pct(latencies, 99), 2),
        "max_ms": round(max(latencies), 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=1000)
    parser.add_argument("--pbx", choices=["stub", "sim"], default="stub")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(bench(args.clicks, Path(tmp), args.pbx))
    print(" ".join(f"{k}={v}" for k, v in result.items()))
    return 0 if result["p95_ms"] <= 20.0 else 1


if __name__ == "__main__":
    sys.exit(main())
