"""Benchmark: AMI framing throughput of callbridge versus panoramisk 1.4, same bytes, same run.

Every shared trace (``tests/traces/**/*.ami``) has its banner line taken off and the
remaining message stream is concatenated and repeated until the corpus is at least
``--megabytes`` MB; one banner goes in front of the whole corpus, as on a real
connection. Both parsers are fed the same corpus in ``--chunk``-byte reads (64 KiB,
what a socket read hands over under load), ``--rounds`` times; the best round counts.

callbridge: :class:`callbridge.pbx.ami.framing.AmiFramer.feed` (full fidelity: every
header kept in order, repeats kept, undecodable bytes as U+FFFD).
panoramisk: ``AMIProtocol.data_received`` with the encoding its ``Manager`` sets
(``utf8``), which decodes each chunk, splits on the blank line and builds one
``Message`` per block via ``Message.from_line``; its dispatch (``handle_message``) is
replaced by a counter so only parsing is timed.

Run: ``.venv/bin/python bench/ami_parse.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callbridge.pbx.ami.framing import BANNER_PREFIX, AmiFramer  # noqa: E402


def build_corpus(megabytes: float) -> tuple[bytes, int]:
    """The banner plus all traces' messages repeated to ``megabytes``; (bytes, message count)."""
    parts: list[bytes] = []
    per_copy = 0
    for path in sorted((ROOT / "tests" / "traces").glob("**/*.ami")):
        data = path.read_bytes()
        if data.startswith(BANNER_PREFIX.encode()):
            data = data[data.index(b"\n") + 1 :]
        parts.append(data)
        per_copy += len(AmiFramer(expect_banner=False).feed(data))
    one = b"".join(parts)
    copies = max(1, -(-int(megabytes * 1_000_000) // len(one)))
    banner = (BANNER_PREFIX + "11.0.0\r\n").encode()
    return banner + one * copies, per_copy * copies


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def run_callbridge(reads: list[bytes]) -> int:
    framer = AmiFramer()
    feed = framer.feed
    count = 0
    for chunk in reads:
        count += len(feed(chunk))
    return count


def run_callbridge_lookup(reads: list[bytes]) -> int:
    # What a consumer pays to read one header of every message (the tracker reads a
    # few headers of the events it ignores): looked up in the text, nothing split.
    framer = AmiFramer()
    feed = framer.feed
    count = 0
    for chunk in reads:
        for message in feed(chunk):
            message.get("Uniqueid")
            count += 1
    return count


def run_callbridge_split(reads: list[bytes]) -> int:
    # Full fidelity for every message: split into all of its headers (order, repeats
    # and U+FFFD kept) and indexed — the fair comparison with panoramisk, which builds
    # a full message object for every block.
    framer = AmiFramer()
    feed = framer.feed
    count = 0
    for chunk in reads:
        for message in feed(chunk):
            message.items()
            count += 1
    return count


def run_panoramisk(reads: list[bytes]) -> int:
    from panoramisk.ami_protocol import AMIProtocol

    class _Transport:
        def write(self, data: bytes) -> None:  # pragma: no cover - never called
            pass

        def close(self) -> None:  # pragma: no cover - never called
            pass

    seen: list[Any] = []
    protocol = AMIProtocol()
    protocol.connection_made(_Transport())
    protocol.encoding = "utf8"  # what panoramisk.Manager sets by default
    protocol.handle_message = seen.append
    data_received = protocol.data_received
    for chunk in reads:
        data_received(chunk)
    return len(seen)


def best_of(
    rounds: int, func: Callable[[list[bytes]], int], reads: list[bytes]
) -> tuple[float, int]:
    best = float("inf")
    count = 0
    for _ in range(rounds):
        start = time.perf_counter()
        count = func(reads)
        best = min(best, time.perf_counter() - start)
    return best, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=20.0)
    parser.add_argument("--chunk", type=int, default=64 * 1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    corpus, expected = build_corpus(args.megabytes)
    reads = chunks(corpus, args.chunk)
    print(
        f"corpus: {len(corpus) / 1e6:.1f} MB, {expected} messages, {len(reads)} reads of "
        f"{args.chunk} bytes, best of {args.rounds}"
    )

    cb_time, cb_count = best_of(args.rounds, run_callbridge, reads)
    lk_time, lk_count = best_of(args.rounds, run_callbridge_lookup, reads)
    sp_time, sp_count = best_of(args.rounds, run_callbridge_split, reads)
    pm_time, pm_count = best_of(args.rounds, run_panoramisk, reads)
    for name, count in (
        ("framer", cb_count),
        ("framer+lookup", lk_count),
        ("framer+split", sp_count),
    ):
        if count != expected:
            print(f"callbridge {name} gave {count} messages, expected {expected}", file=sys.stderr)
            return 1
    cb_rate = cb_count / cb_time
    lk_rate = lk_count / lk_time
    sp_rate = sp_count / sp_time
    pm_rate = pm_count / pm_time
    print(
        f"callbridge framing (reader task)   : {cb_rate:12,.0f} messages/s "
        f"({cb_count} in {cb_time:.3f} s)"
    )
    print(
        f"callbridge framing + one lookup    : {lk_rate:12,.0f} messages/s "
        f"({lk_count} in {lk_time:.3f} s)"
    )
    print(
        f"callbridge framing + full split    : {sp_rate:12,.0f} messages/s "
        f"({sp_count} in {sp_time:.3f} s)"
    )
    print(
        f"panoramisk 1.4 data_received       : {pm_rate:12,.0f} messages/s "
        f"({pm_count} in {pm_time:.3f} s)"
    )
    print(f"ratio framing / panoramisk         : {cb_rate / pm_rate:.2f}x")
    print(f"ratio framing+lookup / panoramisk  : {lk_rate / pm_rate:.2f}x")
    print(f"ratio framing+split / panoramisk   : {sp_rate / pm_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
