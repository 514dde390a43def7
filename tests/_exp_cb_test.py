from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from callbridge.actions.originate import ClickToCallSettings
from tests.test_web_install import LINE, make_stack
from tests.waiting import until


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "failed", "cb"])
async def test_exp(tmp_path: Path, caplog, outcome) -> None:
    caplog.set_level(logging.INFO)
    async for s in make_stack(tmp_path, ClickToCallSettings(outbound_prefixes={LINE: "9"}, callback_destinations={LINE: "600"})):
        await s.install()
        if outcome == "cb":
            r = await s.portal.post("/_emulator/callback-form", json={"phone_number": "+74957770000", "line_number": LINE})
        else:
            s.sim.originate_outcome = outcome
            r = await s.portal.post("/_emulator/click", json={"user_id": 1, "phone_number": "+74957770000", "line_number": LINE})
        await s.settle()
        async def done() -> bool:
            st = await s.state()
            return any(c["finished"] for c in st["calls"])
        try:
            await until(done, "finished", within=10)
        finally:
            st = await s.state()
            for c in st["calls"]:
                print({k: c[k] for k in ("TYPE", "USER_ID", "finished", "STATUS_CODE", "DURATION", "shown_now")}, [h["method"] for h in c["history"]])
            for x in st["statistics"]: print(x["CALL_FAILED_CODE"], x["CALL_FAILED_REASON"])
            print(st["notifications"])
            print([a.to_json_obj() for a in s.sim.actions if a.get("Action") == "Originate"])
            p = s.services.extras.get("pipeline")
            if p:
                for row in p.outbox._conn.execute("select call_key, op_key, kind, params, status, last_error from outbox_ops"):
                    print(tuple(row))
