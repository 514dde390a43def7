"""``callbridge sim asterisk`` as a real process: prints its ports, answers, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

from tests.sim_asterisk_support import LIMIT, SIMPLE, RawAmi, http

_RUN = "import sys; from callbridge.cli import main; sys.exit(main())"


async def _start(*args: str) -> tuple[asyncio.subprocess.Process, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RUN, "sim", "asterisk", *args, stderr=asyncio.subprocess.PIPE
    )
    assert proc.stderr is not None
    lines: list[str] = []
    async with asyncio.timeout(LIMIT):
        while True:
            line = (await proc.stderr.readline()).decode()
            assert line, f"the simulator exited early: {lines}"
            lines.append(line.strip())
            if "control on" in line:
                return proc, lines


async def test_the_cli_serves_ami_and_control_and_stops_cleanly_on_sigterm() -> None:
    trace = str(SIMPLE / "01-inbound-answered.ami")
    proc, lines = await _start(
        "--listen", "127.0.0.1:0", "--control", "127.0.0.1:0",
        "--username", "crm", "--secret", "pw", "--asap", "--trace", trace,
    )  # fmt: skip
    try:
        ami = re.search(r"AMI on 127\.0\.0\.1:(\d+)", lines[0])
        ctl = re.search(r"control on http://127\.0\.0\.1:(\d+)/_sim/", lines[1])
        assert ami and ctl, lines
        cli = await RawAmi.connect(int(ami.group(1)))
        assert (await cli.login("crm", "pw")).get("Message") == "Authentication accepted"
        while (msg := await cli.next()).event != "Newchannel":
            pass
        assert msg["Channel"].startswith("PJSIP/trunk-")
        status, body = await http(int(ctl.group(1)), "GET", "/_sim/status")
        assert status == 200 and body["started"] is True
        await cli.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(LIMIT):
            code = await proc.wait()
            assert proc.stderr is not None
            rest = (await proc.stderr.read()).decode()
    assert code == 0
    assert "stopped" in rest


async def test_a_missing_trace_is_one_clear_line_and_exit_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RUN, "sim", "asterisk", "--listen", "127.0.0.1:0",
        "--trace", "/nonexistent/x.ami", stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(LIMIT):
        _, err = await proc.communicate()
    assert proc.returncode == 2
    text = err.decode().strip()
    assert text.count("\n") == 0 and "/nonexistent/x.ami" in text and "cannot read" in text
