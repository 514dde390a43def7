"""The whole call path over real sockets: simulator → AMI client → tracker → engine →
outbox (SQLite) → Bitrix24 adapter → emulator (HTTP). Assertions read the emulator."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.outbox.store import OutboxStore
from callbridge.pipeline import build_pipeline
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.stack_support import run_until, running_portal, stack_config

TRACES = Path(__file__).parent / "traces" / "asterisk-22.10.1"


@pytest.fixture
async def portal() -> AsyncIterator[str]:
    async with running_portal("1/pipeline") as base:
        yield base


def _calls_finished(calls: int) -> Callable[[dict[str, Any]], bool]:
    def done(state: dict[str, Any]) -> bool:
        return len([c for c in state["calls"] if c["finished"]]) >= calls

    return done


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
    config = stack_config(sim.port, portal, "1/pipeline", tmp_path / "cb.sqlite3")
    crm = Bitrix24Crm.from_config(config.bitrix24)
    try:
        pipeline = build_pipeline(config, crm, store)
        state = await run_until(
            pipeline, portal, _calls_finished(4), "4 calls finished in the emulator"
        )
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
