"""``callbridge sim asterisk``: run the AMI simulator until SIGTERM/SIGINT.

Prints where it listens (AMI, and the HTTP control if asked) to stderr, one line
each, so a script can read the ports when it passed port 0.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from .scenario import TraceError
from .server import AsteriskSimulator

__all__ = ["parse_hostport", "run"]


def parse_hostport(value: str, flag: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); a clear error naming the flag otherwise."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{flag} {value!r}: expected HOST:PORT with PORT 0..65535")
    return host.strip("[]"), int(port)


async def _main(args: argparse.Namespace) -> int:
    listen = parse_hostport(args.listen, "--listen")
    control = parse_hostport(args.control, "--control") if args.control else None
    agi_arg = getattr(args, "agi", None)
    agi = parse_hostport(agi_arg, "--agi") if agi_arg else None
    sim = AsteriskSimulator(
        username=args.username,
        secret=args.secret,
        traces=[Path(p) for p in args.trace],
        speed=args.speed,
        asap=args.asap,
        rebase_time=args.rebase_time,
        calls_per_minute=args.calls_per_minute,
        seed=args.seed,
        agi=agi,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sim.start(*listen)
    print(f"callbridge sim asterisk: AMI on {listen[0]}:{sim.port}", file=sys.stderr, flush=True)
    if agi is not None:
        print(
            f"callbridge sim asterisk: FastAGI routing via agi://{agi[0]}:{agi[1]}",
            file=sys.stderr,
            flush=True,
        )
    if control is not None:
        await sim.start_control(*control)
        print(
            f"callbridge sim asterisk: control on http://{control[0]}:{sim.control_port}/_sim/",
            file=sys.stderr,
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        await sim.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    print("callbridge sim asterisk: stopped", file=sys.stderr, flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except (ValueError, TraceError, OSError) as exc:
        print(f"callbridge sim asterisk: {exc}", file=sys.stderr)
        return 2
