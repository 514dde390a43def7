"""The ``callbridge`` command: argument parsing and dispatch, nothing else.

Each sub-command lives with the code it drives and is imported only when used, so
``callbridge ami events`` does not load the web stack. Every runner takes the parsed
arguments and returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# sub-command path → "module:function"
_RUNNERS: dict[tuple[str, ...], str] = {
    ("ami", "events"): "callbridge.pbx.ami.events_cmd:run",
    ("check",): "callbridge.check:run",
    ("sim", "asterisk"): "callbridge.sim.asterisk.cli:run",
    ("sim", "bitrix24"): "callbridge.sim.bitrix24.cli:run",
    ("trace", "calls"): "callbridge.pbx.tracker.cli:run",
    ("run",): "callbridge.app:run",
    ("demo",): "callbridge.demo:run",
    ("outbox",): "callbridge.outbox.cli:run",
    ("phonebook", "sync"): "callbridge.routing.cli:sync",
    ("dialplan",): "callbridge.routing.dialplan:run",
}


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: $CALLBRIDGE_CONFIG)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callbridge", description="Asterisk/FreePBX ↔ Bitrix24 connector"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ami = sub.add_parser("ami", help="talk to an Asterisk Manager Interface").add_subparsers(
        dest="ami_command", required=True, metavar="SUBCOMMAND"
    )
    ev = ami.add_parser("events", help="print every AMI message as one JSON object per line")
    ev.add_argument("--host", default="127.0.0.1")
    ev.add_argument("--port", type=int, default=5038)
    ev.add_argument("--username", required=True)
    ev.add_argument("--secret", required=True)
    ev.add_argument("--count", type=int, help="exit 0 after this many messages")
    ev.add_argument("--idle-exit", type=float, metavar="SECONDS", help="exit 0 after this idle")
    ev.set_defaults(path=("ami", "events"))

    chk = sub.add_parser("check", help="validate the config and probe AMI and the portal")
    _config_arg(chk)
    chk.set_defaults(path=("check",))

    sim = sub.add_parser("sim", help="built-in simulators").add_subparsers(
        dest="sim_command", required=True, metavar="SIMULATOR"
    )
    sa = sim.add_parser("asterisk", help="an AMI server replaying real traces or a call mix")
    sa.add_argument("--listen", default="127.0.0.1:5038", metavar="HOST:PORT")
    sa.add_argument("--username", default="callbridge")
    sa.add_argument("--secret", default="callbridge")
    sa.add_argument("--trace", nargs="+", default=[], metavar="FILE")
    pace = sa.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, metavar="X")
    pace.add_argument("--asap", action="store_true")
    sa.add_argument("--rebase-time", action="store_true")
    sa.add_argument("--calls-per-minute", type=float, metavar="N")
    sa.add_argument("--control", metavar="HOST:PORT", help="HTTP control endpoint")
    sa.add_argument("--agi", metavar="HOST:PORT", help="FastAGI server the dialplan calls")
    sa.add_argument("--seed", type=int, default=0)
    sa.set_defaults(path=("sim", "asterisk"))

    sb = sim.add_parser("bitrix24", help="a Bitrix24 portal emulator")
    sb.add_argument("--listen", default="127.0.0.1:8024", metavar="HOST:PORT")
    sb.add_argument("--webhook", metavar="USER_ID/CODE")
    sb.add_argument("--rate", default="2/50", metavar="RATE/BURST|off")
    sb.add_argument("--operating-ms", type=float, default=0.0, metavar="N")
    sb.add_argument("--switch", action="append", default=[], metavar="NAME=VALUE")
    sb.add_argument("--token-ttl", type=float, default=3600.0, metavar="SECONDS")
    sb.add_argument("--tls", action="store_true")
    sb.add_argument("--tls-cert-out", metavar="FILE")
    sb.set_defaults(path=("sim", "bitrix24"))

    tr = sub.add_parser("trace", help="offline tools for AMI trace files").add_subparsers(
        dest="trace_command", required=True, metavar="SUBCOMMAND"
    )
    tc = tr.add_parser("calls", help="one JSON object per business call in the traces")
    tc.add_argument("files", nargs="+", metavar="FILE")
    _config_arg(tc)
    tc.set_defaults(path=("trace", "calls"))

    run = sub.add_parser("run", help="run callbridge")
    _config_arg(run)
    run.set_defaults(path=("run",))

    demo = sub.add_parser("demo", help="callbridge with a simulated PBX and an emulated portal")
    demo.add_argument("--ami-port", type=int, default=0)
    demo.add_argument("--emulator-port", type=int, default=0)
    demo.add_argument("--web-port", type=int, default=0)
    demo.add_argument("--agi-port", type=int, default=0)
    demo.add_argument("--calls-per-minute", type=float, default=12.0)
    demo.add_argument("--trace", nargs="+", default=[], metavar="FILE")
    demo.add_argument("--exit-when-idle", action="store_true")
    demo.add_argument("--idle-timeout", type=float, default=120.0)
    demo.add_argument("--data-dir", help="where the demo keeps its store (default: a temp dir)")
    demo.set_defaults(path=("demo",))

    ob = sub.add_parser("outbox", help="inspect the durable outbox")
    ob.add_argument("action", choices=["list", "retry", "drop"], nargs="?", default="list")
    ob.add_argument("ids", nargs="*", type=int)
    ob.add_argument("--all", action="store_true", help="list done operations too")
    _config_arg(ob)
    ob.set_defaults(path=("outbox",))

    pb = sub.add_parser("phonebook", help="the local phonebook").add_subparsers(
        dest="phonebook_command", required=True, metavar="SUBCOMMAND"
    )
    pbs = pb.add_parser("sync", help="full sync of CRM phones and users")
    _config_arg(pbs)
    pbs.set_defaults(path=("phonebook", "sync"))

    dp = sub.add_parser("dialplan", help="print the FreePBX extensions_custom.conf snippet")
    _config_arg(dp)
    dp.set_defaults(path=("dialplan",))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = _RUNNERS[args.path]
    module_name, _, func_name = target.partition(":")
    runner = getattr(importlib.import_module(module_name), func_name)
    try:
        code: int = runner(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
