"""Process helpers for the end-to-end tests and ``bench/e2e.py``: the Asterisk simulator,
the Bitrix24 emulator and ``callbridge run`` as three real processes on free ports.

Each process is started with ``python -m callbridge.cli …``; its stderr is read all the
time (so a chatty process never blocks on a full pipe) and kept, so a test waits for a
readiness line (``callbridge: listening on URL``) and a failure message can show what
the process said. Nothing here sleeps to synchronise: waits poll a condition with a
deadline (:func:`tests.waiting.until`).

The checks shared by the tests (:func:`landed_once`) read only the emulator's state: one
call record per ``EXTERNAL_CALL_ID``, one non-dedup ``register`` and one ``finish`` in
its ``history``, and no card left on anyone's screen.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.waiting import until

__all__ = [
    "CallbridgeProc",
    "EmulatorProc",
    "Proc",
    "SimProc",
    "free_port",
    "landed_once",
    "start_callbridge",
    "start_emulator",
    "start_sim",
    "stop_all",
    "write_config",
]

HOST = "127.0.0.1"
#: The source tree: the children run from it, so ``python -m callbridge.cli`` is this one.
ROOT = str(Path(__file__).resolve().parents[1])
STARTUP = 30.0
REGISTER = "telephony.externalcall.register"
FINISH = "telephony.externalcall.finish"
#: The webhook the emulator accepts in webhook-mode runs.
WEBHOOK = "1/e2e"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    """One child process whose stderr is drained into :attr:`lines` (the last 2000)."""

    name: str
    process: asyncio.subprocess.Process
    lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=2000))
    matched: dict[str, str] = field(default_factory=dict)
    #: Where to append the output when the process ends (``None``: nowhere).
    log: Path | None = None
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls, name: str, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Proc:
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **(env or {})}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "callbridge.cli",
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
            cwd=ROOT,
        )
        proc = cls(name, process)
        proc._reader = asyncio.create_task(proc._read(), name=f"{name}-stderr")
        return proc

    async def _read(self) -> None:
        stream = self.process.stderr
        assert stream is not None
        while True:
            raw = await stream.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            for needle in list(self.matched):
                if not self.matched[needle] and needle in line:
                    self.matched[needle] = line

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def wait_line(self, needle: str, within: float = STARTUP) -> str:
        """The first stderr line (from now on, or already seen) containing ``needle``."""
        if needle not in self.matched:
            self.matched[needle] = next((ln for ln in self.lines if needle in ln), "")

        def seen() -> bool:
            if not self.alive and not self.matched[needle]:
                raise AssertionError(
                    f"{self.name} exited ({self.process.returncode}) before {needle!r}:\n"
                    + self.tail()
                )
            return bool(self.matched[needle])

        await until(seen, f"{self.name} to print {needle!r}", within=within)
        return self.matched[needle]

    def save(self, path: Path) -> None:
        """Keep what the process said (the last 2000 lines), for a failing test's report."""
        with path.open("a", encoding="utf-8") as out:
            out.write("\n".join(self.lines) + "\n")

    def tail(self, n: int = 40) -> str:
        return "\n".join(list(self.lines)[-n:])

    async def kill(self) -> None:
        """``kill -9``: no goodbye, nothing flushed."""
        if self.alive:
            self.process.kill()
        await self._reap()
        if self.log is not None:
            self.save(self.log)

    async def stop(self, within: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL when it does not stop within ``within`` seconds."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), within)
            except TimeoutError:
                self.process.kill()
        await self._reap()
        if self.log is not None:
            self.save(self.log)
        return self.process.returncode

    async def _reap(self) -> None:
        await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@dataclass
class SimProc:
    proc: Proc
    ami_port: int
    control: str  # http://host:port

    async def status(self) -> dict[str, Any]:
        data: dict[str, Any] = await get_json(f"{self.control}/_sim/status")
        return data

    async def expected(self, *, finished: bool = False) -> list[dict[str, Any]]:
        q = "?finished=1" if finished else ""
        data: list[dict[str, Any]] = await get_json(f"{self.control}/_sim/expected{q}")
        return data

    async def faults(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = await post_json(f"{self.control}/_sim/faults", spec)
        return data


@dataclass
class EmulatorProc:
    proc: Proc
    url: str

    async def state(self) -> dict[str, Any]:
        data: dict[str, Any] = await get_json(f"{self.url}/_emulator/state")
        return data

    async def registered(self) -> int:
        """How many calls the portal holds."""
        return len((await self.state())["calls"])

    async def fault(self, mode: str, seconds: float | None = None, delay: float = 0.0) -> None:
        body: dict[str, Any] = {"mode": mode, "delay": delay}
        if seconds is not None:
            body["seconds"] = seconds
        await post_json(f"{self.url}/_emulator/faults", body)

    async def install(self, handler: str) -> dict[str, Any]:
        data: dict[str, Any] = await post_json(
            f"{self.url}/_emulator/install", {"handler": handler}
        )
        return data

    async def clock(self, offset_seconds: float) -> float:
        """Move the emulator's clock; returns its new time."""
        body = {"offset_seconds": offset_seconds}
        now: float = (await post_json(f"{self.url}/_emulator/clock", body))["now"]
        return now


@dataclass
class CallbridgeProc:
    proc: Proc
    url: str

    async def health(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"{self.url}/health")
            data: dict[str, Any] = resp.json()
            return data

    async def calls(self) -> dict[str, Any]:
        data: dict[str, Any] = (await self.health())["calls"]
        return data


async def stop_all(*procs: SimProc | CallbridgeProc | None) -> None:
    """Stop each process that was started (``None``: one that was not)."""
    for p in procs:
        if p is not None:
            await p.proc.stop()


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(url)
        resp.raise_for_status()
        return resp.json()


async def post_json(url: str, body: Mapping[str, Any]) -> Any:
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.post(url, json=dict(body))
        resp.raise_for_status()
        return resp.json()


async def start_sim(
    *,
    ami_port: int = 0,
    traces: Sequence[Path] = (),
    calls_per_minute: float | None = None,
    seed: int = 0,
    asap: bool = False,
    speed: float | None = None,
    username: str = "cb",
    secret: str = "pw",
) -> SimProc:
    """``callbridge sim asterisk`` with its HTTP control; times are rebased to now.

    ``speed`` plays the timeline that many times faster than real time (a 28 s trace in
    7 s at 4): the Timestamp headers keep the trace's own spacing.
    """
    args = [
        "sim",
        "asterisk",
        "--listen",
        f"{HOST}:{ami_port}",
        "--username",
        username,
        "--secret",
        secret,
        "--control",
        f"{HOST}:0",
        "--seed",
        str(seed),
        "--rebase-time",
    ]
    if traces:
        args += ["--trace", *map(str, traces)]
    if asap:
        args.append("--asap")
    elif speed is not None:
        args += ["--speed", str(speed)]
    if calls_per_minute is not None:
        args += ["--calls-per-minute", str(calls_per_minute)]
    proc = await Proc.spawn("sim", args)
    try:
        ami = await proc.wait_line("AMI on ")
        control = await proc.wait_line("control on ")
    except BaseException:
        await proc.kill()
        raise
    port = int(ami.rsplit(":", 1)[1])
    url = control.split("control on ", 1)[1].removesuffix("/_sim/").rstrip("/")
    return SimProc(proc, port, url)


async def start_emulator(
    *,
    port: int = 0,
    rate: str = "off",
    operating_ms: float = 0.0,
    token_ttl: float = 3600.0,
    webhook: str | None = WEBHOOK,
) -> EmulatorProc:
    """``callbridge sim bitrix24`` (no rate limit unless asked)."""
    args = [
        "sim",
        "bitrix24",
        "--listen",
        f"{HOST}:{port}",
        "--rate",
        rate,
        "--operating-ms",
        str(operating_ms),
        "--token-ttl",
        str(token_ttl),
    ]
    if webhook:
        args += ["--webhook", webhook]
    proc = await Proc.spawn("emulator", args)
    try:
        line = await proc.wait_line("emulator listening on ")
    except BaseException:
        await proc.kill()
        raise
    return EmulatorProc(proc, line.split("listening on ", 1)[1].strip())


def write_config(
    path: Path,
    *,
    ami_port: int,
    portal: str,
    store: Path,
    webhook: bool = True,
    web_port: int = 0,
    outbox: Mapping[str, Any] | None = None,
    rules: Mapping[str, Any] | None = None,
    rate: float = 50.0,
    burst: int = 100,
    timeout: float = 3.0,
) -> Path:
    """A TOML config for ``callbridge run`` with timings shortened for tests.

    ``webhook``: incoming-webhook mode; otherwise application mode against the emulator's
    OAuth server, with the credentials given through the environment.
    """
    ob = {
        "retry_base": 0.05,
        "retry_cap": 0.5,
        "auth_pause": 0.5,
        "lease": 5.0,
        **(outbox or {}),
    }
    rl = {"register_internal": True, **(rules or {})}
    b24 = (
        f'webhook_url = "{portal}/rest/{WEBHOOK}/"'
        if webhook
        else f'oauth_url = "{portal}"\nclient_id = ""\nclient_secret = ""'
    )
    text = f"""
[ami]
host = "{HOST}"
port = {ami_port}
username = "cb"
secret = "pw"
reconnect_min = 0.05
reconnect_max = 0.3
ping_interval = 2.0
ping_timeout = 2.0
connect_timeout = 2.0

[bitrix24]
{b24}
rate = {rate}
burst = {burst}
timeout = {timeout}

[rules]
{_toml_table(rl)}

[outbox]
{_toml_table(ob)}

[web]
listen = "{HOST}:{web_port}"
public_url = "http://{HOST}:{web_port}"

[store]
path = "{store}"
"""
    path.write_text(text, encoding="utf-8")
    return path


def _toml_table(values: Mapping[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "\n".join(f"{k} = {value(v)}" for k, v in values.items())


async def start_callbridge(config: Path, env: Mapping[str, str] | None = None) -> CallbridgeProc:
    """``callbridge run --config FILE``, ready once it printed where it listens. Its output
    is appended to ``callbridge.log`` next to the config when it ends."""
    proc = await Proc.spawn("callbridge", ["run", "--config", str(config)], env)
    proc.log = config.with_name("callbridge.log")
    try:
        line = await proc.wait_line("callbridge: listening on ")
    except BaseException:
        await proc.kill()
        raise
    return CallbridgeProc(proc, line.split("listening on ", 1)[1].strip())


def landed_once(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every call in the emulator registered once and finished once, no card left open.

    Returns the calls by ``EXTERNAL_CALL_ID``; raises ``AssertionError`` naming each
    call that breaks a rule (all of them, not only the first).
    """
    by_ext: dict[str, list[dict[str, Any]]] = {}
    for call in state["calls"]:
        by_ext.setdefault(str(call["EXTERNAL_CALL_ID"]), []).append(call)
    problems: list[str] = []
    for ext, records in by_ext.items():
        if len(records) != 1:
            problems.append(f"{ext}: {len(records)} call records (registered more than once)")
            continue
        call = records[0]
        history = call["history"]
        registers = [h for h in history if h["method"] == REGISTER and not h["dedup"]]
        finishes = [h for h in history if h["method"] == FINISH]
        if len(registers) != 1:
            problems.append(f"{ext}: {len(registers)} non-dedup registers")
        if len(finishes) != 1 or not call["finished"]:
            problems.append(f"{ext}: finished {call['finished']}, {len(finishes)} finishes")
        if call["shown_now"]:
            problems.append(f"{ext}: card still shown to {call['shown_now']}")
    if problems:
        raise AssertionError(
            f"{len(problems)} problems in {len(by_ext)} calls:\n" + "\n".join(problems[:30])
        )
    return {ext: records[0] for ext, records in by_ext.items()}


def external_ids(expected: Sequence[Mapping[str, Any]], prefix: str = "callbridge") -> set[str]:
    """The ``EXTERNAL_CALL_ID`` callbridge gives each expected call of the simulator."""
    return {f"{prefix}-{call['linkedid']}" for call in expected}


async def idle(cb: CallbridgeProc, within: float) -> dict[str, Any]:
    """Wait until callbridge has nothing left: outbox empty and no call open."""
    last: dict[str, Any] = {}

    async def quiet() -> bool:
        nonlocal last
        last = await cb.calls()
        return bool(last["depth"] == 0 and last["calls_open"] == 0)

    try:
        await until(quiet, "callbridge idle (outbox depth 0, calls_open 0)", within=within)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last calls section: {last}\n{cb.proc.tail()}") from None
    return last
