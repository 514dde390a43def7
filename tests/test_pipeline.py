"""The whole call path over real sockets: simulator → AMI client → tracker → engine →
outbox (SQLite) → Bitrix24 adapter → emulator (HTTP). Assertions read the emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from callbridge.config import Config, parse_config
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.outbox.store import OutboxStore
from callbridge.pipeline import CallPipeline, build_pipeline
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.bitrix24.server import EmulatorOptions, EmulatorServer
from tests.waiting import until

TRACES = Path(__file__).parent / "traces" / "asterisk-22.10.1"


@pytest.fixture
async def portal() -> AsyncIterator[str]:
    server = EmulatorServer(EmulatorOptions(webhook="1/pipeline", rate=None))
    base = await server.start("127.0.0.1", 0)
    try:
        yield base
    finally:
        await server.stop()


async def _state(base: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        resp = await http.get(f"{base}/_emulator/state")
        resp.raise_for_status()
        data: dict[str, Any] = resp.json()
        return data


def _config(sim: AsteriskSimulator, base: str, tmp_path: Path) -> Config:
    return parse_config(
        {
            "ami": {
                "host": "127.0.0.1",
                "port": sim.port,
                "username": "cb",
                "secret": "pw",
                "ping_interval": 30.0,
                "reconnect_min": 0.05,
                "reconnect_max": 0.2,
            },
            "bitrix24": {"webhook_url": f"{base}/rest/1/pipeline/"},
            "store": {"path": str(tmp_path / "cb.sqlite3")},
        },
        {},
    )


async def _run_until_finished(pipeline: CallPipeline, base: str, calls: int) -> dict[str, Any]:
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    try:

        async def finished() -> bool:
            state = await _state(base)
            done = [c for c in state["calls"] if c["finished"]]
            return len(done) >= calls and pipeline.outbox.depth() == 0

        await until(finished, f"{calls} calls finished in the emulator", within=60)
        return await _state(base)
    finally:
        stop.set()
        await task


async def test_replayed_traces_land_once_each_with_the_real_answerer(
    portal: str, tmp_path: Path
) -> None:
    traces = [
        TRACES / "01-inbound-answered.ami",
        TRACES / "02-inbound-missed.ami",
        TRACES / "05-inbound-queue-answered.ami",
        TRACES / "09-inbound-blind-transfer.ami",
    ]
    sim = AsteriskSimulator(
        username="cb", secret="pw", traces=traces, asap=True, rebase_time=True, auth_fail_delay=0
    )
    await sim.start("127.0.0.1", 0)
    store = OutboxStore.open(tmp_path / "cb.sqlite3", time.time)
    config = _config(sim, portal, tmp_path)
    crm = Bitrix24Crm.from_config(config.bitrix24)
    try:
        pipeline = build_pipeline(config, crm, store)
        state = await _run_until_finished(pipeline, portal, calls=4)
    finally:
        await crm.close()
        store.close()
        await sim.stop()

    calls = state["calls"]
    assert len(calls) == 4, calls
    # One register per call, one finish per call.
    for call in calls:
        methods = [h["method"] for h in call["history"]]
        assert methods.count("telephony.externalcall.register") == 1, methods
        assert methods.count("telephony.externalcall.finish") == 1, methods
        assert call["shown_now"] == [], call  # no card left open
    by_status = sorted((c["STATUS_CODE"], c["USER_ID"]) for c in calls)

    # 01 → 101 (user 1) answered; 02 missed at 101; 05 queue → 102 (user 2) answered;
    # 09 → answered by 101, blind-transferred to 103 (user 3) who finishes it.
    assert by_status == sorted([("200", 1), ("304", 1), ("200", 2), ("200", 3)])
    assert pipeline.stats.calls_seen == 4
