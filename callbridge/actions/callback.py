"""Website callback: ``ONEXTERNALCALLBACKSTART`` → register (TYPE 4) → ``Originate``.

Bitrix24 registers nothing for a callback (reference §5.3), so callbridge registers it
itself — to the line's fallback user until someone answers — and then rings the
callback destination configured for the line (queue, ring group, IVR or extension, all
reachable as numbers in FreePBX's ``from-internal``); when it answers, the visitor is
dialled through the outbound context. The registered ``CALL_ID`` rides in the same
inherited variable as a click-to-call, so the engine finishes it with the real answerer.
A callback that cannot be placed is finished as failed at once (through the durable
outbox, call key ``callback:<CALL_ID>``, when one is given): no card stays open.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from callbridge.actions.click_to_call import new_channel_id
from callbridge.actions.event import BitrixEvent
from callbridge.actions.originate import (
    AmiActions,
    ClickCrm,
    ClickToCallSettings,
    OperationSink,
    OriginateWatch,
    build_originate,
    refusal_operations,
)
from callbridge.actions.safety import ClickLimiter, Refused, check_extension, normalise_number

__all__ = ["Callback", "CallbackOutcome"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CallbackOutcome:
    number: str
    placed: bool
    reason: str = ""
    call_id: str = ""


@dataclass
class Callback:
    """The ``ONEXTERNALCALLBACKSTART`` handler. Register :meth:`handle`."""

    settings: ClickToCallSettings
    ami: AmiActions
    crm: ClickCrm
    clock: Callable[[], float]
    crm_variable: str = "CRM_CALL_ID"
    watch: OriginateWatch = field(default_factory=OriginateWatch)
    outcomes: list[CallbackOutcome] = field(default_factory=list)
    #: The outbox for the finish of a callback that could not be placed (see ClickToCall).
    outbox: OperationSink | None = None
    _limiter: ClickLimiter = field(init=False)

    def __post_init__(self) -> None:
        # Per visitor number: a form submitted in a loop must not ring the queue in a loop.
        self._limiter = ClickLimiter(self.settings.callback_rate, self.settings.callback_burst)

    async def handle(self, event: BitrixEvent) -> None:
        outcome = await self._callback(event)
        self.outcomes.append(outcome)
        del self.outcomes[:-1000]

    async def _callback(self, event: BitrixEvent) -> CallbackOutcome:
        raw = event.text("PHONE_NUMBER")
        line = event.text("LINE_NUMBER")
        try:
            number = normalise_number(raw, self.settings.plus_replacement)
            destination = check_extension(
                self.settings.callback_destinations.get(line, self.settings.callback_default)
            )
        except Refused as exc:
            # Nothing registered yet, so nothing to finish: refusing is a log line.
            log.warning("callback for line %r refused: %s", line[:40], exc)
            return CallbackOutcome(raw[:40], False, exc.reason)
        if not self._limiter.allow(number, self.clock()):
            log.warning("callback to %s refused: too many requests for this number", number)
            return CallbackOutcome(number, False, "rate limited")

        user_id = str(self.settings.callback_user_id)
        channel_id = new_channel_id("cb")
        try:
            call_id = await self.crm.register_callback(
                number,
                line,
                user_id,
                event.text("CRM_ENTITY_TYPE"),
                event.text("CRM_ENTITY_ID"),
                external_call_id=channel_id,
            )
        except Exception as exc:
            log.error("callback to %s not placed: registering it failed: %s", number, exc)
            return CallbackOutcome(number, False, f"register failed: {exc}")

        prefix = self.settings.outbound_prefixes.get(line, self.settings.default_prefix)
        try:
            headers = build_originate(
                settings=self.settings,
                first_channel=f"Local/{destination}@{self.settings.callback_context}",
                number=number,
                prefix=prefix,
                crm_call_id=call_id,
                crm_variable=self.crm_variable,
                user_id=user_id,
                shown_name=f"Callback {number}",
                channel_id=channel_id,
                auto_answer=False,
            )
        except Refused as exc:  # a CALL_ID the portal made up that we cannot pass on
            return await self._fail(call_id, number, user_id, exc.reason)
        self.watch.expect(channel_id, call_id, user_id, self.clock(), str(headers["Exten"]))
        try:
            async with asyncio.timeout(self.settings.action_timeout):
                answer = await self.ami.action("Originate", headers)
        except Exception as exc:
            self.watch.cancel(channel_id)
            return await self._fail(call_id, number, user_id, f"PBX not reachable: {exc}")
        if (answer.response or "").lower() != "success":
            self.watch.cancel(channel_id)
            why = answer.get("Message") or "Originate refused"
            return await self._fail(call_id, number, user_id, f"the PBX refused ({why})")
        log.info("callback %s: %s then %s%s originated", call_id, destination, prefix, number)
        early = self.watch.bind(channel_id, answer.action_id or "")
        if early is not None:
            return await self._fail(call_id, number, user_id, early.reason)
        return CallbackOutcome(number, True, call_id=call_id)

    async def _fail(self, call_id: str, number: str, user_id: str, reason: str) -> CallbackOutcome:
        log.warning("callback %s to %s failed: %s", call_id, number, reason)
        if self.outbox is not None:
            ops = refusal_operations(f"callback:{call_id}", call_id, user_id, reason, "503", None)
            try:
                self.outbox.add(ops)
                return CallbackOutcome(number, False, reason, call_id)
            except Exception:  # the store itself failed: try the portal directly at least
                log.exception("callback %s: could not queue its finish", call_id)
        try:
            await self.crm.finish_failed(call_id, user_id, reason, "503")
        except Exception:
            log.exception("callback %s: could not finish the failed call", call_id)
        return CallbackOutcome(number, False, reason, call_id)
