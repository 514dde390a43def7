"""``callbridge trace calls FILE... [--config FILE]``: business calls of raw AMI traces.

Each file is its own AMI stream (its own tracker). Prints one JSON object per business
call (:meth:`callbridge.calls.CallSummary.to_json_obj`), ordered by start; calls still
open at the end of a file are printed with ``result``, ``end`` and ``hangup_cause`` null.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from callbridge.calls import CallEnded, CallSummary
from callbridge.config import ConfigError, PbxConfig, load_config
from callbridge.pbx.ami.framing import AmiFramer

from .tracker import CallTracker

__all__ = ["run", "summaries_of"]

_CHUNK = 1 << 16


def summaries_of(data: bytes, pbx: PbxConfig) -> list[CallSummary]:
    """Every business call in one raw AMI stream, ended and open, in order of start."""
    framer = AmiFramer(expect_banner=data.startswith(b"Asterisk Call Manager/"))
    tracker = CallTracker(pbx)
    calls: list[CallSummary] = []
    for offset in range(0, len(data), _CHUNK):
        for msg in framer.feed(data[offset : offset + _CHUNK]):
            for event in tracker.feed(msg):
                if isinstance(event, CallEnded):
                    calls.append(event.summary)
    calls.extend(tracker.open_calls())
    calls.sort(key=lambda s: s.start)
    return calls


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        print(f"callbridge trace calls: {exc}", file=sys.stderr)
        return 2
    status = 0
    for name in args.files:
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"callbridge trace calls: {path}: {exc.strerror or exc}", file=sys.stderr)
            status = 1
            continue
        for summary in summaries_of(data, config.pbx):
            print(json.dumps(summary.to_json_obj(), ensure_ascii=False))
    return status
