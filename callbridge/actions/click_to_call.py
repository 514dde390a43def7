"""Click-to-call: ``ONEXTERNALCALLSTART`` → AMI ``Originate`` (agent first, then the number).

Bitrix24 has already registered the call (reference §5.2), so callbridge never registers
it again: the ``CALL_ID`` travels in an inherited channel variable and the engine finishes
it with the real result. This module only decides whether to place the call and places
it. When it does not (no extension, a refused number or id, too many clicks, the PBX
refusing the Originate) it finishes the call as failed with the reason and tells the user,
so no card is left open. Those two CRM writes go through the durable outbox (call key
``click:<CALL_ID>``) when one is given, so a portal that is down at that moment gets
them once it is back, even after a restart. A second delivery of one ``CALL_ID`` does
nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from callbridge.actions.event import BitrixEvent
from callbridge.actions.originate import (
    AmiActions,
    ClickCrm,
    ClickToCallSettings,
    OperationSink,
    OriginateFailure,
    OriginateWatch,
    build_originate,
    refusal_operations,
)
from callbridge.actions.safety import (
    ClickLimiter,
    Refused,
    check_extension,
    check_id,
    check_user_id,
    normalise_number,
)
from callbridge.pbx.ami.framing import AmiMessage

__all__ = ["ClickOutcome", "ClickToCall", "ExtensionDirectory", "new_channel_id"]

log = logging.getLogger(__name__)

_counter = itertools.count(1)
_PROCESS = os.urandom(4).hex()


def new_channel_id(kind: str) -> str:
    """A Uniqueid of our own: unique across restarts (random per process) and short."""
    return f"cb-{kind}-{_PROCESS}-{next(_counter)}"


@dataclass
class ExtensionDirectory:
    """``USER_ID`` → ``UF_PHONE_INNER``, cached for ``ttl`` seconds (misses too, shorter),
    because every click would otherwise spend a REST request of the portal's budget."""

    crm: ClickCrm
    clock: Callable[[], float]
    ttl: float = 300.0
    _cache: dict[str, tuple[str | None, float]] = field(default_factory=dict)

    async def extension(self, user_id: str) -> str | None:
        now = self.clock()
        hit = self._cache.get(user_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        ext = await self.crm.user_extension(user_id)
        self._cache[user_id] = (ext, now + (self.ttl if ext else min(self.ttl, 30.0)))
        return ext


@dataclass(frozen=True, slots=True)
class ClickOutcome:
    """What one click came to (for logs, tests and the admin journal)."""

    call_id: str
    placed: bool
    reason: str = ""
    action_id: str = ""


@dataclass
class ClickToCall:
    """The ``ONEXTERNALCALLSTART`` handler. Register :meth:`handle` in the event registry."""

    settings: ClickToCallSettings
    ami: AmiActions
    crm: ClickCrm
    clock: Callable[[], float]
    crm_variable: str = "CRM_CALL_ID"
    watch: OriginateWatch = field(default_factory=OriginateWatch)
    outcomes: list[ClickOutcome] = field(default_factory=list)
    #: The outbox: refusals are written there and sent (and retried) by its dispatcher.
    #: ``None``: sent straight through ``crm`` (lost if the portal is down right then).
    outbox: OperationSink | None = None
    _limiter: ClickLimiter = field(init=False)
    _directory: ExtensionDirectory = field(init=False)
    _names: dict[tuple[str, str], str | None] = field(default_factory=dict, init=False)
    _pruned: float = field(default=0.0, init=False)
    _recent: dict[str, None] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._limiter = ClickLimiter(self.settings.click_rate, self.settings.click_burst)
        self._directory = ExtensionDirectory(self.crm, self.clock, self.settings.user_cache_ttl)

    async def handle(self, event: BitrixEvent) -> None:
        outcome = await self._click(event)
        self.outcomes.append(outcome)
        del self.outcomes[:-1000]  # keep the journal bounded

    async def _click(self, event: BitrixEvent) -> ClickOutcome:
        raw_call_id = event.text("CALL_ID")
        try:
            call_id = check_id(raw_call_id, "CALL_ID")
        except Refused as exc:
            # Without a usable CALL_ID there is nothing we could even finish.
            log.warning("click refused: %s", exc)
            return ClickOutcome(raw_call_id[:80], False, exc.reason)
        # The intake already de-duplicates deliveries durably by CALL_ID (one fsync per
        # event); this in-memory guard covers any other path that hands the action the same
        # CALL_ID twice in one run, without a second synchronous disk write per click.
        if call_id in self._recent:
            log.info("click %s ignored: already handled", call_id)
            return ClickOutcome(call_id, False, "duplicate")
        self._recent[call_id] = None
        if len(self._recent) > 10_000:
            del self._recent[next(iter(self._recent))]
        try:
            user_id = check_user_id(event.text("USER_ID"))
        except Refused as exc:
            log.warning("click %s refused: %s", call_id, exc)
            return ClickOutcome(call_id, False, exc.reason)

        try:
            raw_number = event.text(
                "PHONE_NUMBER_INTERNATIONAL"
                if self.settings.number_source == "international"
                else "PHONE_NUMBER"
            ) or event.text("PHONE_NUMBER")
            number = normalise_number(raw_number, self.settings.plus_replacement)
            line = event.text("LINE_NUMBER")
            prefix = self.settings.outbound_prefixes.get(line, self.settings.default_prefix)
        except Refused as exc:
            return await self._refuse(call_id, user_id, "404", f"the number {exc.reason}", exc)

        if not self._limiter.allow(user_id, self.clock()):
            return await self._refuse(
                call_id, user_id, "423", "too many calls in a short time, try again shortly"
            )

        try:
            ext_raw = await self._directory.extension(user_id)
        except Exception as exc:  # the portal did not answer: nothing to call, say so
            return await self._refuse(
                call_id, user_id, "503", "your internal number could not be looked up", exc
            )
        if not ext_raw:
            return await self._refuse(
                call_id, user_id, "480", "your user has no internal number (extension) set"
            )
        try:
            ext = check_extension(ext_raw)
        except Refused as exc:
            return await self._refuse(
                call_id, user_id, "480", f"your internal number {exc.reason}", exc
            )

        name = await self._name(event)
        first = (
            f"PJSIP/{ext}"
            if self.settings.agent_channel == "pjsip"
            else f"Local/{ext}@{self.settings.local_context}"
        )
        channel_id = new_channel_id("c2c")
        headers = build_originate(
            settings=self.settings,
            first_channel=first,
            number=number,
            prefix=prefix,
            crm_call_id=call_id,
            crm_variable=self.crm_variable,
            user_id=user_id,
            shown_name=name or number,
            channel_id=channel_id,
            auto_answer=self.settings.auto_answer,
        )
        self.watch.expect(channel_id, call_id, user_id, self.clock(), str(headers["Exten"]))
        try:
            async with asyncio.timeout(self.settings.action_timeout):
                answer = await self.ami.action("Originate", headers)
        except Exception as exc:  # connection down, timeout: the call was not placed
            self.watch.cancel(channel_id)
            return await self._refuse(
                call_id, user_id, "503", "the PBX is not reachable right now", exc
            )
        if (answer.response or "").lower() != "success":
            self.watch.cancel(channel_id)
            why = answer.get("Message") or "Originate refused"
            return await self._refuse(call_id, user_id, "503", f"the PBX refused the call ({why})")
        action_id = answer.action_id or ""
        log.info("click %s: %s → %s%s originated (%s)", call_id, first, prefix, number, channel_id)
        early = self.watch.bind(channel_id, action_id)
        if early is not None:
            await self._originate_failed(early)
            return ClickOutcome(call_id, False, early.reason, action_id)
        return ClickOutcome(call_id, True, action_id=action_id)

    async def on_ami_event(self, item: object) -> None:
        """Feed every AMI stream item: a failed Originate the tracker will never see (no
        channel was made) is finished here."""
        if not isinstance(item, AmiMessage):
            return  # Connected / Disconnected markers
        now = self.clock()
        if now - self._pruned > 60.0:
            self._pruned = now
            self.watch.prune(now)
        failure = self.watch.feed(item)
        if failure is not None:
            await self._originate_failed(failure)

    async def _originate_failed(self, failure: OriginateFailure) -> None:
        await self._refuse(
            failure.crm_call_id, failure.user_id, "503", f"the call failed: {failure.reason}"
        )

    async def _name(self, event: BitrixEvent) -> str | None:
        if not self.settings.show_crm_name:
            return None
        key = (event.text("CRM_ENTITY_TYPE").upper(), event.text("CRM_ENTITY_ID"))
        if not key[0] or not key[1] or key[1] == "0":
            return None
        if key in self._names:
            return self._names[key]
        try:
            name = await asyncio.wait_for(
                self.crm.entity_name(*key), self.settings.name_lookup_timeout
            )
        except Exception as exc:  # a name is a nicety: never a reason not to call
            log.info("no CRM name for %s %s: %s", key[0], key[1], exc)
            return None
        if len(self._names) > 10_000:
            self._names.clear()
        self._names[key] = name
        return name

    async def _refuse(
        self,
        call_id: str,
        user_id: str,
        status_code: str,
        reason: str,
        exc: BaseException | None = None,
    ) -> ClickOutcome:
        log.warning(
            "click %s (user %s) not placed: %s%s",
            call_id,
            user_id,
            reason,
            f" [{exc}]" if exc else "",
        )
        notice = (
            f"The call could not be placed: {reason}." if self.settings.notify_refusals else None
        )
        if self.outbox is not None:
            ops = refusal_operations(
                f"click:{call_id}", call_id, user_id, reason, status_code, notice
            )
            try:
                self.outbox.add(ops)
                return ClickOutcome(call_id, False, reason)
            except Exception:  # the store itself failed: try the portal directly at least
                log.exception("click %s: could not queue the refusal", call_id)
        try:
            await self.crm.finish_failed(call_id, user_id, reason, status_code)
        except Exception:
            log.exception("click %s: could not finish the refused call", call_id)
        if notice is not None:
            try:
                await self.crm.notify(user_id, notice)
            except Exception:
                log.exception("click %s: could not notify user %s", call_id, user_id)
        return ClickOutcome(call_id, False, reason)
