"""``callbridge ami events``: print every AMI message as one JSON object per line.

For looking at what a PBX really sends. It logs in, then prints each message received
after its own Login answer (which is not printed) as ``AmiMessage.to_json_obj()``:
header names as sent, raw values, a repeated header as a list, undecodable bytes as
U+FFFD. Timestamps are shown as Asterisk sent them (nothing stamped). It does not
reconnect: a refused login or a lost connection ends it with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from typing import TextIO

from callbridge.pbx.ami.client import (
    AmiClient,
    AmiError,
    AmiLoginError,
    Connected,
    Disconnected,
    SnapshotTaken,
)

__all__ = ["run", "stream"]

EXIT_OK = 0
EXIT_LOGIN = 3
EXIT_CONNECTION = 4


async def stream(
    client: AmiClient,
    out: TextIO,
    *,
    count: int | None = None,
    idle_exit: float | None = None,
) -> tuple[int, str | None]:
    """Print the client's messages; (exit code, error line or ``None``)."""
    try:
        await client.connect()
    except AmiError as exc:
        code = EXIT_LOGIN if isinstance(exc, AmiLoginError) else EXIT_CONNECTION
        return code, str(exc)
    printed = 0
    items = client.events()
    try:
        while count is None or printed < count:
            try:
                item = await asyncio.wait_for(anext(items), idle_exit)
            except TimeoutError:
                return EXIT_OK, None
            if isinstance(item, Connected | SnapshotTaken):
                continue
            if isinstance(item, Disconnected):
                return EXIT_CONNECTION, f"AMI {client.host}:{client.port}: {item.reason}"
            out.write(json.dumps(item.to_json_obj(), ensure_ascii=False) + "\n")
            out.flush()
            printed += 1
        return EXIT_OK, None
    finally:
        await client.close()
        await items.aclose()


def run(args: argparse.Namespace) -> int:
    if args.count is not None and args.count < 0:
        print("callbridge ami events: --count must be 0 or more", file=sys.stderr)
        return 2
    if args.idle_exit is not None and args.idle_exit <= 0:
        print("callbridge ami events: --idle-exit must be more than 0 seconds", file=sys.stderr)
        return 2
    # The error line below is the whole story; the client's warnings (a cut mid-message)
    # would only repeat it.
    logging.basicConfig(level=logging.ERROR, format="callbridge ami events: %(message)s")
    client = AmiClient(
        args.host,
        args.port,
        args.username,
        args.secret,
        stamp_missing_timestamps=False,
    )
    try:
        code, error = asyncio.run(
            stream(client, sys.stdout, count=args.count, idle_exit=args.idle_exit)
        )
    except BrokenPipeError:
        # `callbridge ami events | head` closing the pipe is a normal way to stop.
        return EXIT_OK
    if error is not None:
        print(f"callbridge ami events: {error}", file=sys.stderr)
    return code
