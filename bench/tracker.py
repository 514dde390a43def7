"""Benchmark of the AMI framer + call tracker over the recorded traces.

1. Throughput: every shared trace (noise included), copied with fresh ids and channel
   names and shifted in time so that 1,000 calls run at once, interleaved by Timestamp,
   serialised to bytes; then framed and tracked in 64 KiB reads. Reports events/s.
2. Memory: 100,000 calls fed through one tracker (noise-free copies, ids made unique per
   copy); tracemalloc samples the traced memory every 5,000 calls. Reports the slope
   (bytes per 1,000 calls) over the second half; flat means ended calls are forgotten.

Run: ``.venv/bin/python bench/tracker.py [--calls 100000] [--concurrent 1000]``.
"""

from __future__ import annotations

import argparse
import heapq
import re
import time
import tracemalloc
from pathlib import Path

from callbridge.calls import CallEnded
from callbridge.config import PbxConfig
from callbridge.pbx.ami.framing import AmiFramer, AmiMessage, iter_messages
from callbridge.pbx.tracker import TRACKED_VARIABLES, CallTracker

TRACES = Path(__file__).resolve().parent.parent / "tests" / "traces"
_SUFFIX = re.compile(r"-([0-9a-fA-F]{8})(;[12])?$")
_NOISE = {"Newexten", "CEL", "Cdr", "RTCPSent", "RTCPReceived", "DeviceStateChange"}


def _traces() -> list[list[AmiMessage]]:
    out = []
    for path in sorted(TRACES.glob("*/*.ami")):
        if "failed-login" not in path.name:
            out.append([m for m in iter_messages(path.read_bytes()) if m.event is not None])
    return out


def _copy(messages: list[AmiMessage], n: int, shift_us: int) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    last = 0.0
    for msg in messages:
        pairs = []
        for key, value in msg.items():
            if key.endswith(("Uniqueid", "Linkedid")) and value not in ("", "<unknown>"):
                value = f"c{n}-{value}"
            elif key.endswith("Channel"):
                m = _SUFFIX.search(value)
                if m:
                    suffix = f"{n & 0xFFFFFFFF:08x}"
                    value = value[: m.start()] + f"-{suffix}" + (m.group(2) or "")
            elif key == "Timestamp":
                micro = int(value.replace(".", "")) + shift_us
                value = f"{micro / 1e6:.6f}"
                last = micro / 1e6
            pairs.append((key, value))
        out.append((last, AmiMessage(pairs).to_bytes()))
    return out


def _template(messages: list[AmiMessage]) -> bytes:
    """One call as bytes with ``%(n)`` placeholders for the copy number (ids, names)."""
    out = []
    for msg in messages:
        pairs = []
        for key, value in msg.items():
            value = value.replace("%", "%%")
            if key.endswith(("Uniqueid", "Linkedid")) and value not in ("", "<unknown>"):
                value = "c%(n)d-" + value
            elif key.endswith("Channel"):
                m = _SUFFIX.search(value)
                if m:
                    value = value[: m.start()] + "-%(n)08x" + (m.group(2) or "")
            pairs.append((key, value))
        out.append(AmiMessage(pairs).to_bytes())
    return b"".join(out)


def throughput(concurrent: int) -> None:
    traces = _traces()
    span_us = 20_000_000  # all calls start within 20 s: with ~15-30 s calls, ~1,000 overlap
    copies = []
    for n in range(concurrent):
        trace = traces[n % len(traces)]
        first = float(trace[0].get("Timestamp") or 0)
        base = round((1_800_000_000 - first) * 1e6)
        copies.append(_copy(trace, n, base + n * span_us // concurrent))
    stream = b"".join(chunk for _, chunk in heapq.merge(*copies, key=lambda p: p[0]))
    events = sum(len(c) for c in copies)
    pbx = PbxConfig()
    best = float("inf")
    ended = 0
    for _ in range(3):
        framer = AmiFramer(expect_banner=False)
        tracker = CallTracker(pbx)
        ended = 0
        t0 = time.perf_counter()
        for off in range(0, len(stream), 65536):
            for msg in framer.feed(stream[off : off + 65536]):
                for ev in tracker.feed(msg):
                    if isinstance(ev, CallEnded):
                        ended += 1
        best = min(best, time.perf_counter() - t0)
    print(
        f"throughput: {events} events, {len(stream) / 1e6:.1f} MB, {concurrent} calls "
        f"interleaved, {ended} calls ended; parse+track {events / best:,.0f} events/s "
        f"({len(stream) / best / 1e6:.1f} MB/s, best of 3)"
    )


def memory(calls: int) -> None:
    pbx = PbxConfig()
    templates = []
    for trace in _traces():
        quiet = [
            m
            for m in trace
            if m.event not in _NOISE
            and not (
                m.event == "VarSet"
                and (m.get("Variable") or "").lstrip("_") not in TRACKED_VARIABLES
            )
        ]
        templates.append(_template(quiet))
    tracker = CallTracker(pbx)
    framer = AmiFramer(expect_banner=False)
    tracemalloc.start()
    samples: list[tuple[int, int]] = []
    done = 0
    copy = 0
    events = 0
    t0 = time.perf_counter()
    while done < calls:
        template = templates[copy % len(templates)]
        data = template % {b"n": copy}
        copy += 1
        for msg in framer.feed(data):
            events += 1
            for ev in tracker.feed(msg):
                if isinstance(ev, CallEnded):
                    done += 1
                    if done % 5000 == 0:
                        samples.append((done, tracemalloc.get_traced_memory()[0]))
    elapsed = time.perf_counter() - t0
    tracemalloc.stop()
    half = samples[len(samples) // 2 :]
    (x0, y0), (x1, y1) = half[0], half[-1]
    slope = (y1 - y0) / max(1, x1 - x0) * 1000
    print(
        f"memory: {done} calls ({events} events, {elapsed:.0f} s under tracemalloc); traced "
        f"{samples[0][1] / 1e6:.2f} MB after {samples[0][0]} calls, {y1 / 1e6:.2f} MB after "
        f"{x1}; slope over the second half {slope:+.0f} bytes per 1,000 calls; open calls "
        f"{tracker.live_calls}, live channels {tracker.live_channels}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--concurrent", type=int, default=1000)
    args = parser.parse_args()
    throughput(args.concurrent)
    memory(args.calls)


if __name__ == "__main__":
    main()
