"""``callbridge sim bitrix24``: run the portal emulator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from .limits import parse_rate
from .server import EmulatorOptions, EmulatorServer


def _switches(items: list[str]) -> dict[str, str]:
    result = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--switch must look like NAME=VALUE; got {item!r}")
        result[name.strip()] = value.strip()
    return result


def options_from(args: argparse.Namespace) -> tuple[EmulatorOptions, str, int]:
    """Validated options and the listen address; ``ValueError`` names the bad flag."""
    host, sep, port_text = str(args.listen).rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"--listen must look like HOST:PORT; got {args.listen!r}")
    if args.tls_cert_out and not args.tls:
        raise ValueError("--tls-cert-out needs --tls")
    if args.token_ttl <= 0:
        raise ValueError("--token-ttl must be positive")
    if args.operating_ms < 0:
        raise ValueError("--operating-ms must not be negative")
    options = EmulatorOptions(
        webhook=args.webhook,
        rate=parse_rate(args.rate),
        operating_ms=args.operating_ms,
        switches=_switches(args.switch),
        token_ttl=args.token_ttl,
        tls=args.tls,
        tls_cert_out=args.tls_cert_out,
    )
    return options, host.strip("[]") or "127.0.0.1", int(port_text)


async def _serve(options: EmulatorOptions, host: str, port: int) -> None:
    server = EmulatorServer(options)
    url = await server.start(host, port)
    print(f"bitrix24 emulator listening on {url}", file=sys.stderr)
    if options.webhook:
        print(f"incoming webhook: {url}/rest/{options.webhook}/", file=sys.stderr)
    if options.tls and server.cert_path is not None:
        print(f"certificate: {server.cert_path}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        print("bitrix24 emulator stopped", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    try:
        options, host, port = options_from(args)
        # building the server validates the webhook and switches before we bind anything
        EmulatorServer(options)
    except ValueError as exc:
        print(f"callbridge sim bitrix24: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(options, host, port))
    except OSError as exc:
        print(f"callbridge sim bitrix24: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return 1
    return 0
