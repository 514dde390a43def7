"""The FastAGI scripts: ``route``, ``callername`` and ``blacklist``.

Each reads the caller from the environment block (``agi_arg_1`` or ``agi_callerid``),
the DID from ``agi_arg_2``, the URL's ``did=``, or ``GET VARIABLE FROM_DID``, gathers
facts within the routing deadline, lets :func:`~callbridge.routing.decide.decide` choose,
and sets the channel variables. Whatever fails — the CRM, the store, a bug — the script
still answers: ``CB_RESULT=error``/``fallback`` sends the call to the dialplan's fallback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from callbridge.pbx.agi import AgiEnvironment, AgiHandler, AgiSession
from callbridge.routing.decide import Decision, Result, decide, fallback
from callbridge.routing.phonebook import Lookup, LookupState, Phonebook
from callbridge.routing.settings import RoutingSettings

__all__ = ["RoutingScripts"]

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RoutingScripts:
    """The FastAGI handlers, built once with the phonebook, settings and clocks."""

    def __init__(
        self,
        phonebook: Phonebook,
        settings: RoutingSettings,
        *,
        now: Callable[[], datetime] = _utcnow,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.phonebook = phonebook
        self.settings = settings
        self._now = now
        self._monotonic = monotonic
        self._blacklist = {k for k in (phonebook.key(n) for n in settings.blacklist) if k}
        self.decisions: dict[str, int] = {}

    def handlers(self) -> dict[str, AgiHandler]:
        names = self.settings.scripts
        return {
            names.get("route", "route"): self.route,
            names.get("callername", "callername"): self.callername,
            names.get("blacklist", "blacklist"): self.blacklist,
        }

    # facts ---------------------------------------------------------------------------

    @staticmethod
    def caller_number(env: AgiEnvironment) -> str:
        return env.arg(1) or env.query.get("cid", "") or AgiEnvironment.known(env.get("callerid"))

    async def did(self, session: AgiSession) -> str:
        env = session.env
        did = env.arg(2) or env.query.get("did", "")
        if not did:
            # FreePBX inbound routes set FROM_DID; ask, but carry on when it is unset.
            did = await session.get_variable("FROM_DID") or ""
        return did or AgiEnvironment.known(env.get("dnid")) or env.get("extension")

    def is_blacklisted(self, number: str) -> bool:
        key = self.phonebook.key(number)
        return bool(key) and key in self._blacklist

    async def _lookup(self, number: str, started: float) -> Lookup:
        budget = self.settings.lookup_budget - (self._monotonic() - started)
        return await self.phonebook.lookup(number, budget)

    # scripts -------------------------------------------------------------------------

    async def route(self, session: AgiSession) -> None:
        started = session.started
        names = self.settings.variables
        number = self.caller_number(session.env)
        try:
            did = await self.did(session)
            rule = self.settings.route_for(did)
            blacklisted = self.is_blacklisted(number)
            lookup = (
                Lookup(LookupState.MISSING, "")
                if blacklisted
                else await self._lookup(number, started)
            )
            decision = decide(
                self.settings, rule, lookup, self.phonebook.user, self._now(), blacklisted
            )
        except Exception:
            log.exception("route: deciding for %r failed; answering the fallback", number)
            decision = Decision(Result.ERROR, reason="internal error")
        self.decisions[decision.result.value] = self.decisions.get(decision.result.value, 0) + 1
        log.debug(
            "route %s: %s %s (%s)", number, decision.result, decision.route_to, decision.reason
        )
        for name, value in decision.variables(names, self.settings.crm_variables):
            if session.hung_up:
                return  # the caller is gone; nothing left to tell
            await session.set_variable(name, value)
        if self.settings.set_caller_name and decision.caller_name and not session.hung_up:
            await session.set_variable("CALLERID(name)", decision.caller_name)

    async def callername(self, session: AgiSession) -> None:
        started = session.started
        number = self.caller_number(session.env)
        try:
            lookup = await self._lookup(number, started)
            decision = decide(
                self.settings,
                self.settings.default_route,
                lookup,
                self.phonebook.user,
                self._now(),
            )
        except Exception:
            log.exception("callername: look-up of %r failed", number)
            decision = fallback("internal error")
        if decision.caller_name:
            await session.set_variable(self.settings.variables.caller_name, decision.caller_name)
            if not session.hung_up:
                await session.set_variable("CALLERID(name)", decision.caller_name)

    async def blacklist(self, session: AgiSession) -> None:
        number = self.caller_number(session.env)
        flag = "1" if self.is_blacklisted(number) else "0"
        await session.set_variable(self.settings.variables.blacklisted, flag)
