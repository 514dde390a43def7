from __future__ import annotations

from pathlib import Path

import pytest

from callbridge.actions.originate import ClickToCallSettings
from callbridge.config import parse_config
from callbridge.pbx.tracker.tracker import CallTracker
from tests.test_web_install import LINE, make_stack
from tests.waiting import until


@pytest.mark.parametrize("outcome", ["busy", "no_answer"])
async def test_exp(tmp_path: Path, outcome) -> None:
    async for s in make_stack(tmp_path, ClickToCallSettings(outbound_prefixes={LINE: "9"})):
        await s.install()
        seen = []
        async def rec(item: object) -> None:
            seen.append(item)
        s.services.components  # noqa
        pump = [c for c in s.services.components if type(c).__name__ == "AmiEventPump"][0]
        pump.consumers.insert(0, rec)
        s.sim.originate_outcome = outcome
        await s.portal.post("/_emulator/click", json={"user_id": 1, "phone_number": "+74957770000", "line_number": LINE})
        await s.settle()
        await until(lambda: any(getattr(m, "event", None) == "OriginateResponse" for m in seen), "resp", 10)
        await until(lambda: sum(getattr(m, "event", None) == "Hangup" for m in seen) >= 1, "h", 10)
        tr = CallTracker(parse_config({}, environ={}).pbx)
        for m in seen:
            if hasattr(m, "event") and m.event:
                if m.event in ("Newchannel", "Hangup", "OriginateResponse", "VarSet", "DialBegin", "DialEnd", "Newstate"):
                    print(m.event, {k: v for k, v in m.items() if k in ("Channel", "Uniqueid", "Linkedid", "Variable", "Value", "Response", "Reason", "ActionID", "Cause", "DialStatus", "DestChannel", "ChannelState", "CallerIDNum", "Exten", "Context")})
                for e in tr.feed(m):
                    print("   ->", e)
