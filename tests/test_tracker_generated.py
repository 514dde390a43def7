"""The simulator's generated call mix, read over real TCP, against ``GET /_sim/expected``.

The Asterisk simulator plays an endless, seeded mix of re-keyed recorded calls (many in
progress at once, their events interleaved) and knows each call's expected tracker
result. This test logs in like any AMI client, frames the byte stream, feeds every
message to a fresh :class:`CallTracker` and, once ``CALLS`` calls have ended, checks
every call the simulator reports finished against what the tracker said about it.

``CALLS`` is 1,000 as the tracker issue asks (``TRACKER_GENERATED_CALLS`` overrides it):
about 300,000 messages over loopback with up to ~80 calls open at once, the simulator
writing as fast as the test reads; the run takes 15-20 s.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from callbridge.calls import CallEnded, CallSummary
from callbridge.pbx.ami.framing import AmiFramer, AmiMessage, encode_action
from callbridge.pbx.tracker import CallTracker
from callbridge.sim.asterisk.server import AsteriskSimulator
from callbridge.sim.asterisk.truth import comparable
from tests.sim_asterisk_support import http
from tests.test_tracker_traces import PBX

CALLS = int(os.environ.get("TRACKER_GENERATED_CALLS", "1000"))
#: Arrivals per minute of simulated time: calls last 10-60 s, so dozens overlap.
RATE = 240.0
LIMIT = 120.0


class Reader:
    """A plain asyncio AMI client feeding one tracker."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.framer = AmiFramer(expect_banner=True)
        self.tracker = CallTracker(PBX)
        self.ended: dict[str, CallSummary] = {}
        self.messages = 0
        self.most_open = 0

    async def read_until(self, done: Any) -> None:
        while not done():
            chunk = await self.reader.read(1 << 16)
            assert chunk, "the simulator closed the AMI connection"
            for msg in self.framer.feed(chunk):
                self.feed(msg)

    def feed(self, msg: AmiMessage) -> None:
        self.messages += 1
        for event in self.tracker.feed(msg):
            if isinstance(event, CallEnded):
                assert event.call_id not in self.ended, f"call {event.call_id} ended twice"
                self.ended[event.call_id] = event.summary
        self.most_open = max(self.most_open, self.tracker.live_calls)


async def test_generated_interleaved_calls_match_the_simulators_expectations() -> None:
    sim = AsteriskSimulator(
        username="u",
        secret="s",
        calls_per_minute=RATE,
        asap=True,
        seed=20261121,
        salt=77,
        auth_fail_delay=0,
    )
    await sim.start("127.0.0.1", 0)
    await sim.start_control("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
        client = Reader(reader, writer)
        writer.write(
            encode_action("Login", {"Username": "u", "Secret": "s", "ActionID": "login-1"})
        )
        async with asyncio.timeout(LIMIT):
            await client.read_until(lambda: len(client.ended) >= CALLS)
            status, finished = await http(sim.control_port, "GET", "/_sim/expected?finished=1")
            assert status == 200
            wanted = {e["linkedid"]: e for e in finished}
            # Calls the simulator finished playing may still be on the wire: read on.
            await client.read_until(lambda: set(wanted) <= set(client.ended))
            _, everything = await http(sim.control_port, "GET", "/_sim/expected")
        writer.close()
        await writer.wait_closed()
    finally:
        await sim.stop()

    assert len(wanted) >= CALLS
    mismatches = []
    for lid, exp in wanted.items():
        got = comparable(client.ended[lid].to_json_obj(), exp)
        if got != exp:
            mismatches.append((lid, got, exp))
    assert not mismatches, (
        f"{len(mismatches)} of {len(wanted)} calls differ; first: {mismatches[0]}"
    )
    # Nothing invented: every call the tracker ended is one the simulator played.
    known = {e["linkedid"] for e in everything}
    assert set(client.ended) <= known, sorted(set(client.ended) - known)[:5]
    # The calls really were interleaved.
    assert client.most_open >= 10, client.most_open
