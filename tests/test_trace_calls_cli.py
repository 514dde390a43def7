"""``callbridge trace calls``: run as a real subprocess over recorded traces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from callbridge.sim.asterisk.truth import comparable, expected_calls

from .test_tracker_traces import trace_path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from callbridge.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "trace", "calls", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )


def _expected(name: str) -> list[dict[str, object]]:
    truth = json.loads(trace_path(name).with_suffix(".truth.json").read_text(encoding="utf-8"))
    return expected_calls(truth)


def test_prints_one_json_call_per_line_for_each_file_in_order_of_start() -> None:
    names = ["13-ami-actions", "F05-followme-mobile"]
    proc = _run(*(str(trace_path(n)) for n in names))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    expected = _expected(names[0]) + _expected(names[1])
    assert len(lines) == len(expected)
    for got, exp in zip(lines, expected, strict=True):
        assert comparable(got, exp) == exp
    assert [c["start"] for c in lines[:2]] == sorted(c["start"] for c in lines[:2])


def test_a_call_cut_short_is_printed_open(tmp_path: Path) -> None:
    data = trace_path("01-inbound-answered").read_bytes()
    cut = data.index(b"Event: BridgeEnter")
    partial = tmp_path / "cut.ami"
    partial.write_bytes(data[:cut])
    proc = _run(str(partial))
    assert proc.returncode == 0, proc.stderr
    (call,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert call["result"] is None and call["end"] is None and call["hangup_cause"] is None
    assert call["answered_by"] == "101"


def test_missing_file_and_bad_config_are_clear_errors(tmp_path: Path) -> None:
    proc = _run(str(tmp_path / "nope.ami"))
    assert proc.returncode == 1 and "nope.ami" in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[pbx]\nphone_channel = '('\n", encoding="utf-8")
    proc = _run("--config", str(bad), str(trace_path("07-internal")))
    assert proc.returncode == 2 and "phone_channel" in proc.stderr


def test_config_decides_what_is_a_phone(tmp_path: Path) -> None:
    # With 101 declared a trunk, its calls to 102 are inbound from "outside".
    conf = tmp_path / "pbx.toml"
    conf.write_text("[pbx]\ntrunks = ['101']\n", encoding="utf-8")
    proc = _run("--config", str(conf), str(trace_path("07-internal")))
    assert proc.returncode == 0, proc.stderr
    (call,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert call["direction"] == "inbound" and call["answered_by"] == "102"
