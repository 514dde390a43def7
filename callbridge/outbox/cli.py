"""``callbridge outbox [list|retry|drop] [ids...] [--all] [--config FILE]``.

- ``list``: operations not done (``--all``: done ones too), one line each;
- ``retry IDS``: failed/skipped/dropped operations (and the operations of their call that
  were skipped because of them) go back to the queue; no ids = every failed operation;
- ``drop IDS``: give up on operations (kept and listed as ``dropped``); ``--all`` = every
  failed operation. Nothing is ever deleted by hand: the record stays for the journal.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from typing import TextIO

from callbridge.config import ConfigError, load_config
from callbridge.outbox.store import OutboxStore, StoredOp

__all__ = ["format_ops", "run"]


def _when(value: float) -> str:
    if value <= 0:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_ops(ops: list[StoredOp]) -> str:
    lines = [f"{'ID':>6}  {'CALL':<24} {'STEP':<12} {'STATUS':<8} {'TRIES':>5}  {'NEXT':<20} ERROR"]
    for op in ops:
        nxt = _when(op.not_before) if op.status == "pending" else "-"
        lines.append(
            f"{op.id:>6}  {op.call_key:<24} {op.key:<12} {op.status:<8} {op.attempts:>5}  "
            f"{nxt:<20} {op.last_error or ''}".rstrip()
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stdout = out or sys.stdout
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"callbridge outbox: {exc}", file=sys.stderr)
        return 2
    store = OutboxStore.open(config.store.path, time.time)
    try:
        action = getattr(args, "action", "list") or "list"
        ids: list[int] = list(getattr(args, "ids", []) or [])
        every = bool(getattr(args, "all", False))
        if action == "list":
            print(format_ops(store.listing(include_done=every, ids=ids)), file=stdout)
            return 0
        if not ids:
            if action == "drop" and not every:
                print("callbridge outbox drop: give operation ids, or --all", file=sys.stderr)
                return 2
            ids = store.failed_ids()
        known = {op.id for op in store.listing(include_done=True, ids=ids)}
        missing = [i for i in ids if i not in known]
        if missing:
            print(f"callbridge outbox: no operation with id {missing}", file=sys.stderr)
            return 1
        if action == "retry":
            changed = store.retry(ids)
            print(f"queued again: {len(changed)} operation(s) {changed}", file=stdout)
        else:
            changed = store.drop(ids)
            print(f"dropped: {len(changed)} operation(s) {changed}", file=stdout)
        return 0
    finally:
        store.close()
