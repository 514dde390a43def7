"""``callbridge check``: validate the config and probe what callbridge depends on.

The probes are a list of async check functions (:data:`CHECKS`), each returning its
findings; one line is printed per finding (``OK`` / ``PROBLEM`` / ``SKIP``) and the exit
code is non-zero when any finding is a problem. The checks cover AMI (login, write
permissions, event timestamps) and the portal (auth and token state, scopes, users
without an internal number).
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
from callbridge.crm.base import CrmError
from callbridge.crm.bitrix24.adapter import Bitrix24Crm
from callbridge.pbx.ami.client import AmiClient, AmiError
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.store.db import connect
from callbridge.store.tokens import TokenStore

__all__ = [
    "AMI_CHECKS",
    "CHECKS",
    "PORTAL_CHECKS",
    "REQUIRED_AMI_ACTIONS",
    "CheckContext",
    "Finding",
    "Status",
    "check_ami_login",
    "check_ami_permissions",
    "check_event_timestamps",
    "check_portal_auth",
    "check_portal_scopes",
    "check_portal_users",
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
    NOTE = "NOTE"  # worth knowing, not a failure


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
    #: The Bitrix24 adapter, built by the first portal check (tests may give one).
    portal: Bitrix24Crm | None = None
    closers: list[Callable[[], object]] = field(default_factory=list)


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


#: Scopes callbridge uses (reference §2.3); ``basic`` is implicit.
REQUIRED_SCOPES = ("telephony", "crm", "user", "im", "task")


def _portal(ctx: CheckContext) -> Bitrix24Crm | None:
    crm = ctx.portal
    if crm is None and (ctx.config.bitrix24.webhook_url or ctx.config.bitrix24.client_id):
        conn = connect(ctx.config.store.path)
        ctx.closers.append(conn.close)
        crm = ctx.portal = Bitrix24Crm.from_config(ctx.config.bitrix24, TokenStore(conn))
    return crm


async def check_portal_auth(ctx: CheckContext) -> list[Finding]:
    """The portal accepts callbridge: webhook valid, or application installed and its
    tokens not refused (an app removed or unused for 180 days stops here)."""
    b24 = ctx.config.bitrix24
    crm = _portal(ctx)
    if crm is None:
        return [
            Finding(
                Status.PROBLEM,
                "Bitrix24: neither [bitrix24] webhook_url nor client_id is set",
            )
        ]
    mode = "incoming webhook" if b24.webhook_url else "local application"
    state = crm.auth_state
    if state.status == "refresh_failed":
        return [
            Finding(
                Status.PROBLEM,
                f"Bitrix24 {mode}: the portal refused the refresh token ({state.reason}); "
                "nothing is sent until the application is installed again (queued "
                "operations are kept)",
            )
        ]
    if state.status == "not_installed":
        return [
            Finding(
                Status.PROBLEM,
                f"Bitrix24 {mode}: not installed yet (no ONAPPINSTALL received); install "
                "the local application with its handler at <public_url>/bitrix24/install",
            )
        ]
    try:
        answer = await crm.client.call("scope")
    except CrmError as exc:
        return [Finding(Status.PROBLEM, f"Bitrix24 {mode}: the portal refused: {exc}")]
    scopes = {str(s).lower() for s in (answer.result or [])}
    ctx.notes["scopes"] = ",".join(sorted(scopes))
    return [Finding(Status.OK, f"Bitrix24 {mode}: the portal accepts callbridge")]


async def check_portal_scopes(ctx: CheckContext) -> list[Finding]:
    if "scopes" not in ctx.notes:
        return [Finding(Status.SKIP, "Bitrix24 scopes: the portal was not reached")]
    have = set(ctx.notes["scopes"].split(","))
    missing = [s for s in REQUIRED_SCOPES if s not in have]
    if missing:
        return [
            Finding(
                Status.PROBLEM,
                f"Bitrix24 scopes: missing {', '.join(missing)} (give the application or "
                "webhook these permissions)",
            )
        ]
    return [Finding(Status.OK, f"Bitrix24 scopes: {', '.join(REQUIRED_SCOPES)}")]


async def check_portal_users(ctx: CheckContext) -> list[Finding]:
    """Active users without an internal number: their calls go to the default user."""
    crm = ctx.portal
    if crm is None or "scopes" not in ctx.notes:
        return [Finding(Status.SKIP, "Bitrix24 users: the portal was not reached")]
    try:
        users = await crm.users()
    except CrmError as exc:
        return [Finding(Status.PROBLEM, f"Bitrix24 users: user.get failed: {exc}")]
    active = [u for u in users if u.active]
    without = [f"{u.name} (id {u.id})" for u in active if not u.extension]
    findings = [Finding(Status.OK, f"Bitrix24 users: {len(active)} active")]
    if without:
        findings.append(
            Finding(
                Status.NOTE,
                f"Bitrix24 users without an internal number (UF_PHONE_INNER): "
                f"{', '.join(without[:20])}{' …' if len(without) > 20 else ''}",
            )
        )
    default = ctx.config.rules.default_user_id
    if not any(u.id == default for u in active):
        findings.append(
            Finding(
                Status.PROBLEM,
                f"[rules] default_user_id = {default}: no active Bitrix24 user has this id",
            )
        )
    return findings


AMI_CHECKS: list[Check] = [check_ami_login, check_ami_permissions, check_event_timestamps]
PORTAL_CHECKS: list[Check] = [check_portal_auth, check_portal_scopes, check_portal_users]
#: The checks, in order.
CHECKS: list[Check] = [*AMI_CHECKS, *PORTAL_CHECKS]


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
        if ctx.portal is not None:
            await ctx.portal.close()
        for close in ctx.closers:
            close()
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
