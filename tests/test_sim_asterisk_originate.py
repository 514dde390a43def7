"""Originated calls play in the shapes of traces 08 (answered) and 13 (busy/failed)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from callbridge.pbx.ami.framing import AmiMessage
from callbridge.sim.asterisk.clock import ManualClock
from callbridge.sim.asterisk.originate import split_variables
from callbridge.sim.asterisk.server import AsteriskSimulator
from tests.sim_asterisk_support import RawAmi, http


@pytest.fixture
async def sim() -> AsyncIterator[AsteriskSimulator]:
    s = AsteriskSimulator(
        username="u", secret="s", asap=True, auth_fail_delay=0, clock=ManualClock()
    )
    await s.start("127.0.0.1", 0)
    await s.start_control("127.0.0.1", 0)
    yield s
    await s.stop()


async def _originate(cli: RawAmi, channel: str, **extra: str | list[str]) -> list[AmiMessage]:
    """Send an Originate; the events up to its call's LINKEDID_END / OriginateResponse."""
    aid = cli.send(
        "Originate",
        Channel=channel,
        Context="from-internal",
        Exten="79990001122",
        Priority="1",
        Async="true",
        **extra,
    )
    events: list[AmiMessage] = []
    resp = await cli.response(aid, events)
    assert (resp.response, resp.get("Message")) == ("Success", "Originate successfully queued")
    while True:
        msg = await cli.next()
        events.append(msg)
        if msg.get("EventName") == "LINKEDID_END":
            return events
        # "failed" plays no channel at all: the OriginateResponse is the whole call.
        if msg.event == "OriginateResponse" and not any(e.event == "Newchannel" for e in events):
            return events


async def test_answered_click_to_call_has_the_shape_of_trace_08(sim: AsteriskSimulator) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    events = await _originate(
        cli,
        "PJSIP/105",
        ActionID="c2c-7",
        ChannelId="cb-1234",
        Variable=["__CRM_CALL_ID=CALL-77", "CRM_USER_ID=15"],
    )
    first = next(e for e in events if e.event == "Newchannel")
    assert first["Channel"].startswith("PJSIP/105-")
    assert first["Uniqueid"] == first["Linkedid"] == "cb-1234"
    resp = next(e for e in events if e.event == "OriginateResponse")
    assert resp.action_id == "c2c-7"
    assert (resp["Response"], resp["Reason"], resp["Uniqueid"]) == ("Success", "4", "cb-1234")
    assert resp["Exten"] == "79990001122"
    trunk = [
        e for e in events if e.event == "Newchannel" and e["Channel"].startswith("PJSIP/trunk")
    ]
    assert len(trunk) == 1 and trunk[0]["Linkedid"] == "cb-1234"
    varsets = {(e["Channel"], e["Variable"], e["Value"]) for e in events if e.event == "VarSet"}
    assert (first["Channel"], "__CRM_CALL_ID", "CALL-77") in varsets
    assert (first["Channel"], "CRM_USER_ID", "15") in varsets
    assert (trunk[0]["Channel"], "__CRM_CALL_ID", "CALL-77") in varsets  # inherited
    assert (trunk[0]["Channel"], "CRM_USER_ID", "15") not in varsets
    assert not any("101" in v for e in events for k, v in e.items() if k.endswith("Channel"))
    dial_ends = [e for e in events if e.event == "DialEnd"]
    assert [e["DialStatus"] for e in dial_ends] == ["ANSWER", "ANSWER"]
    await cli.close()


async def test_busy_and_failed_outcomes_chosen_over_http(sim: AsteriskSimulator) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    status, _ = await http(sim.control_port, "POST", "/_sim/originate-outcome", {"outcome": "busy"})
    assert status == 200
    events = await _originate(cli, "PJSIP/104", ActionID="o-busy")
    resp = next(e for e in events if e.event == "OriginateResponse")
    assert (resp["Response"], resp["Reason"], resp["Uniqueid"]) == ("Failure", "0", "<unknown>")
    assert resp["Channel"] == "PJSIP/104"
    hangup = next(e for e in events if e.event == "Hangup")
    assert hangup["Channel"].startswith("PJSIP/104-") and hangup["Cause"] == "17"

    await http(sim.control_port, "POST", "/_sim/originate-outcome", {"outcome": "failed"})
    events = await _originate(cli, "Local/104@originate-skipvm", ActionID="o-fail")
    assert [e.event for e in events if e.event] == ["OriginateResponse"]
    assert events[-1]["Channel"] == "Local/104@originate-skipvm"

    await http(sim.control_port, "POST", "/_sim/originate-outcome", {"outcome": "no_answer"})
    events = await _originate(cli, "PJSIP/104", ActionID="o-na", Timeout="20000")
    resp = next(e for e in events if e.event == "OriginateResponse")
    assert resp["Reason"] == "3"
    begin = next(e for e in events if e.event == "DialBegin")
    end = next(e for e in events if e.event == "DialEnd")
    assert end["DialStatus"] == "NOANSWER"
    assert float(end["Timestamp"]) - float(begin["Timestamp"]) >= 20.0

    status, body = await http(sim.control_port, "POST", "/_sim/originate-outcome", {"x": 1})
    assert status == 400 and "outcome" in body["error"]
    await cli.close()


async def test_an_originate_with_a_bad_channel_is_refused(sim: AsteriskSimulator) -> None:
    cli = await RawAmi.connect(sim.port)
    await cli.login()
    resp = await cli.response(
        cli.send("Originate", Channel="PJSIP/1;2", Context="c", Exten="1", Priority="1")
    )
    assert (resp.response, resp.get("Message")) == ("Error", "Invalid channel")
    await cli.close()


def test_variable_headers_split_on_commas_outside_quotes() -> None:
    assert split_variables(['__CRM_CALL_ID="abc,123"', "A=1,B=2", "F=x(a,b)"]) == [
        ("__CRM_CALL_ID", "abc,123"),
        ("A", "1"),
        ("B", "2"),
        ("F", "x(a,b)"),
    ]
