"""Shared pieces of click-to-call and callback: settings, the ports they talk through,
the ``Originate`` header builder (pure) and the watch on ``OriginateResponse``.

Both actions originate a two-leg call: first an internal destination (the clicking
agent's phone, or the queue/ring group/IVR a callback line points at), then the outside
number through the outbound context. The CRM ``CALL_ID`` rides along in an inherited
channel variable (``__`` + ``pbx.crm_call_id_variable``), so the tracker tags every leg
with it and the engine finishes *that* call with the real result instead of registering
a new one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from callbridge.actions.safety import (
    Refused,
    caller_id,
    check_extension,
    check_id,
    check_user_id,
)
from callbridge.calls import CallStarted
from callbridge.crm.base import CrmOperation, OperationKind
from callbridge.pbx.ami.framing import AmiMessage
from callbridge.pbx.tracker.originate import CHANNELLESS_PREFIX

__all__ = [
    "AUTO_ANSWER_PRESETS",
    "CHANNELLESS_PREFIX",
    "AmiActions",
    "ClickCrm",
    "ClickToCallSettings",
    "OperationSink",
    "OriginateFailure",
    "OriginateWatch",
    "build_originate",
    "refusal_operations",
]

#: Auto-answer headers per phone family (reference asterisk §3.1).
AUTO_ANSWER_PRESETS: dict[str, dict[str, str]] = {
    "generic": {"Call-Info": "<uri>;answer-after=0", "Alert-Info": "Ring Answer"},
    "polycom": {"Alert-Info": "info=Auto Answer"},
    "sangoma": {"Alert-Info": "ring-answer"},
    "mitel": {"Call-Info": "<sip:broadworks.net>;answer-after=0"},
    "openstage": {"Alert-Info": "<http://example.com>;info=alert-autoanswer"},
}

_CONTEXT = re.compile(r"[A-Za-z0-9_-]{1,80}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
_DIGITS = re.compile(r"[0-9]{0,16}")


@dataclass(frozen=True)
class ClickToCallSettings:
    """How callbridge originates. Every field is a TOML key of ``[click_to_call]``.

    ``agent_channel``: ``"local"`` rings ``Local/<ext>@<local_context>`` (FreePBX: all the
    agent's devices, never voicemail), ``"pjsip"`` rings ``PJSIP/<ext>`` directly.
    ``outbound_prefixes`` maps a Bitrix24 ``LINE_NUMBER`` to the digits dialled before the
    number (choosing the trunk/route of that line). ``callback_destinations`` maps a line
    to the extension, queue, ring group or IVR number a website callback rings first.
    """

    agent_channel: Literal["local", "pjsip"] = "local"
    local_context: str = "originate-skipvm"
    outbound_context: str = "from-internal"
    outbound_prefixes: Mapping[str, str] = field(default_factory=dict)
    default_prefix: str = ""
    #: "clicked" dials PHONE_NUMBER as the user clicked it, "international" the E.164 form.
    number_source: Literal["clicked", "international"] = "clicked"
    #: What a leading "+" becomes ("" drops it, "00" or "810" dials it as a prefix).
    plus_replacement: str = ""
    ring_timeout_ms: int = 30_000
    auto_answer: bool = False
    auto_answer_model: str = "generic"
    #: Replaces the model's headers when not empty, e.g. {"Call-Info" = "<uri>;answer-after=0"}.
    auto_answer_headers: Mapping[str, str] = field(default_factory=dict)
    #: Clicks per user: a burst, then this many per second.
    click_burst: int = 5
    click_rate: float = 0.5
    user_cache_ttl: float = 300.0
    #: Show the CRM entity's name on the agent's phone (one cached REST read per entity).
    show_crm_name: bool = True
    name_lookup_timeout: float = 0.5
    #: Seconds to wait for AMI's answer to the Originate action itself.
    action_timeout: float = 5.0
    notify_refusals: bool = True
    callback_destinations: Mapping[str, str] = field(default_factory=dict)
    callback_default: str = ""
    callback_context: str = "from-internal"
    #: Bitrix24 user a callback is registered to until someone answers.
    callback_user_id: int = 1
    callback_burst: int = 3
    callback_rate: float = 1 / 60

    def __post_init__(self) -> None:
        problems: list[str] = []
        for key in ("local_context", "outbound_context", "callback_context"):
            if not _CONTEXT.fullmatch(getattr(self, key)):
                problems.append(f"{key}: a dialplan context is letters, digits, '_' and '-'")
        for line, prefix in self.outbound_prefixes.items():
            if not _DIGITS.fullmatch(prefix):
                problems.append(f"outbound_prefixes[{line!r}]: digits only")
        if not _DIGITS.fullmatch(self.default_prefix):
            problems.append("default_prefix: digits only")
        if self.plus_replacement not in ("", "+") and not _DIGITS.fullmatch(self.plus_replacement):
            problems.append("plus_replacement: digits or '+'")
        for line, dest in self.callback_destinations.items():
            if not dest or not _DIGITS.fullmatch(dest):
                problems.append(f"callback_destinations[{line!r}]: an extension number")
        if not _DIGITS.fullmatch(self.callback_default):
            problems.append("callback_default: an extension number or empty")
        if self.auto_answer_model not in AUTO_ANSWER_PRESETS:
            problems.append(f"auto_answer_model: one of {', '.join(AUTO_ANSWER_PRESETS)}")
        for name, value in self.auto_answer_headers.items():
            # A comma would split the Variable, CR/LF would end the AMI header.
            if not _HEADER_NAME.fullmatch(name) or any(c in value for c in ',\r\n"\\'):
                problems.append(f"auto_answer_headers[{name!r}]: no commas, quotes or CR/LF")
        if self.ring_timeout_ms < 1000:
            problems.append("ring_timeout_ms: at least 1000")
        if self.click_burst < 1 or self.click_rate <= 0:
            problems.append("click_burst >= 1 and click_rate > 0")
        if problems:
            raise ValueError("; ".join(problems))

    def answer_headers(self) -> Mapping[str, str]:
        return self.auto_answer_headers or AUTO_ANSWER_PRESETS[self.auto_answer_model]


class AmiActions(Protocol):
    """The part of the AMI client the actions use."""

    async def action(self, name: str, headers: Mapping[str, str | list[str]]) -> AmiMessage: ...


class OperationSink(Protocol):
    """Where the finish and notice of a call that was not placed are written, to be sent
    (and retried) by the outbox dispatcher: :class:`~callbridge.outbox.store.OutboxStore`."""

    def add(self, entries: Iterable[CrmOperation]) -> int: ...


def refusal_operations(
    call_key: str,
    call_id: str,
    user_id: str,
    reason: str,
    status_code: str,
    notice: str | None,
) -> list[CrmOperation]:
    """The CRM work for a call that was not placed (pure): ``finish`` the portal's
    ``CALL_ID`` as failed, then (``notice``) tell the user why. Keyed per ``call_key`` and
    step, so writing them twice (a second refusal path, a replay) is a no-op."""
    user = int(check_user_id(user_id))
    ops = [
        CrmOperation(
            call_key,
            "finish",
            OperationKind.FINISH_CALL,
            {
                "CALL_ID": call_id,
                "USER_ID": user,
                "DURATION": 0,
                "STATUS_CODE": status_code,
                "FAILED_REASON": reason,
                "ADD_TO_CHAT": 0,
            },
        )
    ]
    if notice is not None:
        ops.append(
            CrmOperation(
                call_key, "notify", OperationKind.NOTIFY, {"USER_ID": user, "MESSAGE": notice}
            )
        )
    return ops


class ClickCrm(Protocol):
    """What click-to-call and callback need from the CRM (Bitrix24 adapter in
    :mod:`callbridge.actions.bitrix24_port`)."""

    async def user_extension(self, user_id: str) -> str | None:
        """The user's ``UF_PHONE_INNER`` (``None``: no such active user or none set)."""

    async def entity_name(self, entity_type: str, entity_id: str) -> str | None:
        """A display name of a CRM contact/company/lead, if it has one."""

    async def finish_failed(
        self, call_id: str, user_id: str, reason: str, status_code: str
    ) -> None:
        """``telephony.externalcall.finish`` a call that never happened."""

    async def notify(self, user_id: str, message: str) -> None:
        """A system notification to a user."""

    async def register_callback(
        self,
        phone: str,
        line: str,
        user_id: str,
        entity_type: str,
        entity_id: str,
        external_call_id: str,
    ) -> str:
        """Register a callback call (TYPE 4); answers its ``CALL_ID``."""


def build_originate(
    *,
    settings: ClickToCallSettings,
    first_channel: str,
    number: str,
    prefix: str,
    crm_call_id: str,
    crm_variable: str,
    user_id: str,
    shown_name: str,
    channel_id: str,
    auto_answer: bool,
) -> dict[str, str | list[str]]:
    """The headers of one ``Originate`` (pure; the AMI client adds its own ActionID).

    Every argument that steers the PBX must have passed :mod:`callbridge.actions.safety`
    already; this re-checks ids and digits so that a caller's mistake cannot reach the
    socket."""
    check_id(crm_call_id, "CALL_ID")
    check_id(channel_id, "ChannelId")
    check_id(crm_variable, "variable name")
    if not number.isdigit() or not number.isascii() or not _DIGITS.fullmatch(prefix):
        raise Refused("number", prefix + number, "digits only")
    exten = prefix + number
    variables = [f"__{crm_variable}={crm_call_id}", f"__CRM_USER_ID={check_extension(user_id)}"]
    if auto_answer:
        for header, value in settings.answer_headers().items():
            if first_channel.startswith("PJSIP/"):
                variables.append(f"PJSIP_HEADER(add,{header})={value}")
            else:
                # Through FreePBX's dialplan the header must survive into the dialled PJSIP
                # leg: the inherited SIPHEADERS hash applied by func-apply-sipheaders.
                variables.append(f"HASH(__SIPHEADERS,{header})={value}")
    return {
        "Channel": first_channel,
        "Context": settings.outbound_context,
        "Exten": exten,
        "Priority": "1",
        "CallerID": caller_id(shown_name, number),
        "Timeout": str(settings.ring_timeout_ms),
        "Async": "true",
        "ChannelId": channel_id,
        "OtherChannelId": channel_id + "-2",
        "Variable": variables,
    }


@dataclass(frozen=True, slots=True)
class OriginateFailure:
    """An Originate that failed before any channel of ours existed: nobody else (tracker,
    engine) will ever see it, so the action finishes the CRM call itself."""

    action_id: str
    crm_call_id: str
    user_id: str
    reason: str


_REASONS = {
    "0": "the phone could not be reached (unregistered or refused)",
    "1": "the call was hung up",
    "3": "no answer",
    "5": "busy",
    "8": "congestion",
}


@dataclass
class _Pending:
    crm_call_id: str
    user_id: str
    at: float
    action_id: str = ""
    seen: bool = False
    exten: str = ""


@dataclass
class OriginateWatch:
    """Pure: which of our Originates failed without ever creating a channel.

    An Originate is expected under its ChannelId before it is sent; the AMI client picks
    the ActionID, so :meth:`bind` ties the two once the action was answered. Fed every AMI
    event: ``Newchannel`` with one of our ChannelIds marks the Originate as seen (the
    tracker owns it from there); ``OriginateResponse`` with its ActionID (or our ChannelId
    as ``Uniqueid``) ends it. A response that arrives before :meth:`bind` (both can come in
    one read) is kept briefly. Entries older than ``ttl`` go in :meth:`prune`.
    """

    ttl: float = 600.0
    max_orphans: int = 256
    max_sent: int = 4096
    _pending: dict[str, _Pending] = field(default_factory=dict)  # by ChannelId
    _by_action: dict[str, str] = field(default_factory=dict)  # ActionID → ChannelId
    _orphans: dict[str, AmiMessage] = field(default_factory=dict)  # ActionID → response
    _sent: dict[str, None] = field(default_factory=dict)  # ActionIDs of ours, newest last

    def expect(
        self, channel_id: str, crm_call_id: str, user_id: str, now: float, exten: str = ""
    ) -> None:
        self._pending[channel_id] = _Pending(crm_call_id, user_id, now, exten=exten)

    def bind(self, channel_id: str, action_id: str) -> OriginateFailure | None:
        pending = self._pending.get(channel_id)
        if pending is None or not action_id:
            return None
        pending.action_id = action_id
        self._by_action[action_id] = channel_id
        self._sent[action_id] = None
        while len(self._sent) > self.max_sent:
            del self._sent[next(iter(self._sent))]
        early = self._orphans.pop(action_id, None)
        return self.feed(early) if early is not None else None

    def cancel(self, channel_id: str) -> None:
        pending = self._pending.pop(channel_id, None)
        if pending is not None:
            self._by_action.pop(pending.action_id, None)

    def __len__(self) -> int:
        return len(self._pending)

    def owns(self, started: CallStarted) -> bool:
        """Whether a call the tracker made of a channel-less ``OriginateResponse`` failure
        is one of our Originates. Those are finished (and the user told) by the action
        through this watch; the engine must not register them as calls of their own."""
        if not started.call_id.startswith(CHANNELLESS_PREFIX):
            return False
        action_id = started.call_id.removeprefix(CHANNELLESS_PREFIX)
        if action_id in self._by_action or action_id in self._sent:
            return True
        # The response can be read before the action's own answer was bound to it (both
        # in one read): an unbound Originate of ours to the very same Exten is this one.
        number = started.external_number
        return bool(number) and any(
            not p.action_id and p.exten == number for p in self._pending.values()
        )

    def _channel_of(self, uniqueid: str) -> str | None:
        if uniqueid in self._pending:
            return uniqueid
        base = uniqueid.removesuffix("-2")
        return base if base in self._pending else None

    def feed(self, message: AmiMessage) -> OriginateFailure | None:
        event = message.event
        if event == "Newchannel":
            channel_id = self._channel_of(message.get("Uniqueid") or "")
            if channel_id is not None:
                self._pending[channel_id].seen = True
            return None
        if event != "OriginateResponse":
            return None
        action_id = message.action_id or ""
        channel_id = self._by_action.get(action_id) or self._channel_of(
            message.get("Uniqueid") or ""
        )
        if channel_id is None:
            if action_id:
                self._orphans[action_id] = message
                while len(self._orphans) > self.max_orphans:
                    del self._orphans[next(iter(self._orphans))]
            return None
        pending = self._pending[channel_id]
        self.cancel(channel_id)
        if (message.get("Response") or "").lower() == "success" or pending.seen:
            return None
        code = message.get("Reason") or "0"
        return OriginateFailure(
            action_id,
            pending.crm_call_id,
            pending.user_id,
            _REASONS.get(code, f"the PBX could not place the call (reason {code})"),
        )

    def prune(self, now: float) -> None:
        for channel_id in [c for c, p in self._pending.items() if now - p.at > self.ttl]:
            self.cancel(channel_id)
        self._orphans.clear()
