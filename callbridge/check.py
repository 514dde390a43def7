"""``callbridge check``: validate the config and probe what callbridge depends on.

The probes are a list of async check functions (:data:`CHECKS`), each returning its
findings; one line is printed per finding (``OK`` / ``PROBLEM`` / ``SKIP``) and the exit
code is non-zero when any finding is a problem. Later issues append their checks
(the portal, the store) to the list.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import secrets
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

from callbridge.config import Config, ConfigError, load_config
from callbridge.pbx.ami.client import AmiClient, AmiError
from callbridge.pbx.ami.framing import AmiMessage

__all__ = [
    "CHECKS",
    "REQUIRED_AMI_ACTIONS",
    "CheckContext",
    "Finding",
    "Status",
    "check_ami_login",
    "check_ami_permissions",
    "check_event_timestamps",
    "run",
    "run_checks",
]

#: Every AMI action callbridge sends, now or in a later issue.
REQUIRED_AMI_ACTIONS = (
    "Originate",
    "Ping",
    "CoreShowChannels",
    "Status",
    "Getvar",
    "Setvar",
    "Redirect",
    "BlindTransfer",
    "Hangup",
    "Events",
    "UserEvent",
    "ListCommands",
)

USER_EVENT_NAME = "callbridge-check"


class Status(enum.Enum):
    OK = "OK"
    PROBLEM = "PROBLEM"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Finding:
    status: Status
    what: str

    def line(self) -> str:
        return f"{self.status.value:<7} {self.what}"


@dataclass
class CheckContext:
    """What the checks share: the config and, once logged in, the AMI session."""

    config: Config
    #: How long a probe waits for an answer (the echoed UserEvent, an action).
    wait: float = 5.0
    ami: AmiClient | None = None
    #: Built by check_ami_login; a parameter so tests can give their own timings.
    make_ami: Callable[[Config], AmiClient] | None = None
    notes: dict[str, str] = field(default_factory=dict)


Check = Callable[[CheckContext], Awaitable[list[Finding]]]


def _default_ami(config: Config) -> AmiClient:
    ami = config.ami
    return AmiClient(
        ami.host,
        ami.port,
        ami.username,
        ami.secret,
        events=ami.events,
        connect_timeout=ami.connect_timeout,
        ping_interval=None,
        # The check must see the events exactly as Asterisk sends them.
        stamp_missing_timestamps=False,
    )


async def check_ami_login(ctx: CheckContext) -> list[Finding]:
    ami = ctx.config.ami
    client = (ctx.make_ami or _default_ami)(ctx.config)
    try:
        await client.connect()
    except AmiError as exc:
        return [Finding(Status.PROBLEM, f"AMI login as {ami.username!r}: {exc}")]
    ctx.ami = client
    return [
        Finding(
            Status.OK,
            f"AMI login as {ami.username!r} at {ami.host}:{ami.port} ({client.banner})",
        )
    ]


def _commands(response: AmiMessage) -> set[str]:
    # ListCommands answers one header per action the user may *write*:
    # "Originate: Originate a call. (Priv: originate,all)" (manager.c, action_listcommands).
    skip = {"response", "actionid", "message"}
    return {key.lower() for key, _ in response.items() if key.lower() not in skip}


async def check_ami_permissions(ctx: CheckContext) -> list[Finding]:
    if ctx.ami is None:
        return [Finding(Status.SKIP, "AMI write permissions: no AMI session")]
    try:
        response = await ctx.ami.action("ListCommands", within=ctx.wait)
    except AmiError as exc:
        return [Finding(Status.PROBLEM, f"AMI write permissions: ListCommands failed: {exc}")]
    if response.response != "Success":
        why = response.get("Message") or response.response
        return [
            Finding(
                Status.PROBLEM,
                f"AMI write permissions: ListCommands refused ({why}); "
                "the AMI user needs at least write = system,call,originate,user,reporting",
            )
        ]
    have = _commands(response)
    missing = [name for name in REQUIRED_AMI_ACTIONS if name.lower() not in have]
    if missing:
        return [
            Finding(
                Status.PROBLEM,
                f"AMI write permissions: the user may not send {', '.join(missing)} "
                "(extend write= in manager.conf for this user)",
            )
        ]
    return [Finding(Status.OK, f"AMI write permissions: all {len(REQUIRED_AMI_ACTIONS)} actions")]


async def check_event_timestamps(ctx: CheckContext) -> list[Finding]:
    client = ctx.ami
    if client is None:
        return [Finding(Status.SKIP, "AMI event timestamps: no AMI session")]
    token = secrets.token_hex(8)
    events = client.events()
    try:
        response = await client.action(
            "UserEvent", {"UserEvent": USER_EVENT_NAME, "CheckId": token}, within=ctx.wait
        )
        if response.response != "Success":
            why = response.get("Message") or response.response
            return [Finding(Status.PROBLEM, f"AMI event timestamps: UserEvent refused ({why})")]
        echo: AmiMessage | None = None
        async with asyncio.timeout(ctx.wait):
            async for item in events:
                if (
                    isinstance(item, AmiMessage)
                    and item.event == "UserEvent"
                    and item.get("CheckId") == token
                ):
                    echo = item
                    break
    except TimeoutError:
        return [
            Finding(
                Status.PROBLEM,
                f"AMI event timestamps: the UserEvent did not come back within {ctx.wait:g} s "
                "(the AMI user needs read = user, and no eventfilter may drop UserEvent)",
            )
        ]
    except AmiError as exc:
        return [Finding(Status.PROBLEM, f"AMI event timestamps: {exc}")]
    finally:
        await events.aclose()
    assert echo is not None
    if echo.get("Timestamp") is None:
        return [
            Finding(
                Status.PROBLEM,
                "AMI event timestamps: events carry no Timestamp; set timestampevents = yes "
                "in the [general] section of manager.conf (callbridge stamps arrival time "
                "meanwhile, which is less exact)",
            )
        ]
    return [Finding(Status.OK, "AMI event timestamps: events carry Timestamp")]


#: The checks, in order; later issues append theirs.
CHECKS: list[Check] = [check_ami_login, check_ami_permissions, check_event_timestamps]


async def run_checks(
    ctx: CheckContext, out: TextIO, checks: list[Check] | None = None
) -> list[Finding]:
    """Run every check, print one line per finding as it comes, return them all."""
    findings: list[Finding] = []
    try:
        for check in CHECKS if checks is None else checks:
            for finding in await check(ctx):
                print(finding.line(), file=out, flush=True)
                findings.append(finding)
    finally:
        if ctx.ami is not None:
            with contextlib.suppress(AmiError):
                await ctx.ami.close()
    return findings


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for finding in exc.findings:
            print(f"PROBLEM config: {finding}", file=sys.stdout)
        return 2
    print(Finding(Status.OK, "config is valid").line(), flush=True)
    findings = asyncio.run(run_checks(CheckContext(config), sys.stdout))
    return 1 if any(f.status is Status.PROBLEM for f in findings) else 0
