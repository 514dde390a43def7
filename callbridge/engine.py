"""The engine: call events in, CRM operations written to the outbox.

For each business call the engine decides, with the rules, what Bitrix24 must see:

- ``register`` when the call first rings a carded phone (outbound: when the operator
  dials), always with ``SHOW=0``, followed by a separate ``show`` — so a register whose
  answer is lost and is looked up or re-sent never leaves a card on screen by itself;
- ``show`` to every other user whose phone starts ringing, ``hide`` when it stops ringing
  or someone else answers, the card moved on transfers;
- at the end, ``hide`` for everyone still carded except the finisher (``finish`` hides
  only the finisher's card), ``finish`` by the final holder with talk seconds and status,
  for a transferred call a timeline comment with its legs on the entity ``finish`` bound
  it to (``legs``), then the recording.

The engine does no network I/O: its only effect is writing operations to the outbox,
keyed per call and step, so a replay writes nothing twice. Its per-call memory is rebuilt
from the outbox when a call it does not know shows up (a restart, with the tracker's
resync feeding the calls in progress), so it never shows a card twice or registers twice.

A *late* event (``at`` more than ``late_after`` seconds behind the newest AMI time seen)
belongs to a call being replayed after an outage: it never produces a ``show``.

What the engine knows of a call it has not finished (who rang, who answered and when,
the holder, transfers, recordings) is stored with the call's operations (the outbox's
``outbox_calls``) and forgotten with its ``finish``. A restarted engine therefore finishes
a call that spans the restart with its real answer time and recordings, and
:meth:`Engine.end_orphans` — called by the pipeline after each ``CoreShowChannels``
resync — finishes the calls that ended while nobody was watching: not live in the
snapshot, never finished in the outbox. Their end is the snapshot's time (the real end
lies between the last event a process saw and it), and an unanswered one says in
``FAILED_REASON`` that it ended while callbridge was down.

Calls callbridge originated itself (click-to-call, website callback) carry the ``CALL_ID``
the portal (or the callback action) already registered in a tag: they are never
registered again and always finished, whatever the rules would say about the call
(the portal's card must not stay open). An Originate of ours that failed before any
channel existed is finished by the action that sent it, so the engine leaves it alone
(:meth:`Engine.set_own_originates`).
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from callbridge import rules
from callbridge.calls import (
    CallAnswered,
    CallEnded,
    CallEvent,
    CallMerged,
    CallResult,
    CallStarted,
    CallSummary,
    CallTransferred,
    Direction,
    RecordingKnown,
    RingingChanged,
    Transfer,
    TransferType,
)
from callbridge.crm.base import CrmOperation, OperationKind, ResultRef
from callbridge.outbox.store import OutboxEntry, OutboxStore
from callbridge.rules import Registration, RuleSettings, Skip, UserDirectory
from callbridge.rules.policy import CALL_TYPE_CALLBACK, CALL_TYPE_OUTBOUND

__all__ = ["Engine"]

log = logging.getLogger(__name__)

_CALL_ID_REF = ResultRef("register", "CALL_ID")

#: Why a call is finished at a resync without having been seen to end.
ORPHAN_NOTE = "ended while callbridge was down"


@dataclass(slots=True)
class _Call:
    call_id: str
    started: CallStarted | None = None
    decision: Registration | Skip | None = None
    registered: bool = False
    shown: list[int] = field(default_factory=list)
    holder: int | None = None
    ended: bool = False
    steps: int = 0  # show/hide counter, part of their keys
    recordings: list[str] = field(default_factory=list)
    rang: list[str] = field(default_factory=list)
    answered_at: float | None = None
    answered_by: str | None = None
    final_operator: str | None = None
    transfers: list[Transfer] = field(default_factory=list)
    #: The facts last written to the outbox (``None``: none stored).
    saved: dict[str, Any] | None = None
    #: ``answered_at`` came from the store: a resynced tracker only knows a later time.
    answer_stored: bool = False
    #: From a restart: the stored register (its params and meta) and a portal ``CALL_ID``
    #: the call's cards were sent with (click-to-call).
    register_params: Mapping[str, Any] = field(default_factory=dict)
    register_meta: Mapping[str, Any] = field(default_factory=dict)
    crm_call_id: str | None = None


class Engine:
    def __init__(
        self, settings: RuleSettings, outbox: OutboxStore, directory: UserDirectory
    ) -> None:
        self._settings = settings
        self._outbox = outbox
        self._directory = directory
        self._calls: dict[str, _Call] = {}
        self._absorbed: set[str] = set()
        self._newest = float("-inf")
        self._warned: set[str] = set()
        self._own_originate: Callable[[CallStarted], bool] = _never
        #: Facts to write with this event's operations (``None``: forget the call).
        self._facts: dict[str, dict[str, Any] | None] = {}

    def set_own_originates(self, predicate: Callable[[CallStarted], bool]) -> None:
        """Tell the engine which channel-less calls are failed Originates of our own
        actions (they finish those themselves; registering them would make a second call)."""
        self._own_originate = predicate

    def set_directory(self, directory: UserDirectory) -> None:
        """New users from the CRM (the app refreshes them periodically)."""
        self._directory = directory

    @property
    def newest_at(self) -> float:
        return self._newest

    def handle(self, event: CallEvent) -> list[OutboxEntry]:
        """React to one event; returns the operations written (new or already present)."""
        self._newest = max(self._newest, event.at)
        if event.call_id in self._absorbed:
            return []
        self._facts = {}
        call = self._call(event.call_id)
        late = event.at < self._newest - self._settings.late_after
        entries: list[OutboxEntry]
        if isinstance(event, CallStarted):
            entries = self._started(call, event, late)
        elif isinstance(event, RingingChanged):
            entries = self._ringing(call, event, late)
        elif isinstance(event, CallAnswered):
            entries = self._answered(call, event, late)
        elif isinstance(event, CallTransferred):
            entries = self._transferred(call, event)
        elif isinstance(event, RecordingKnown):
            entries = self._recording(call, event)
        elif isinstance(event, CallMerged):
            entries = self._merged(call, event)
        else:
            entries = self._ended(call, event)
        self._note_facts(call)
        if entries or self._facts:
            self._outbox.add(entries, self._facts)
        if call.ended:
            # The outbox remembers the rest; keep memory bounded.
            self._calls.pop(call.call_id, None)
        return entries

    def end_orphans(self, live: Collection[str], at: float) -> list[OutboxEntry]:
        """Finish the calls that ended unseen: taken on (registered, or facts stored), not
        finished, not ``live`` (the call ids in the PBX's channel snapshot) and not open
        here (a call this process follows may have moved to another linkedid). Called
        after the tracker's resync was handled; ``at`` is the snapshot's Asterisk time.
        """
        self._newest = max(self._newest, at)
        written: list[OutboxEntry] = []
        for call_id in self._outbox.unfinished_calls():
            if call_id in live or call_id in self._absorbed:
                continue
            known = self._calls.get(call_id)
            if known is not None and not known.ended:
                continue  # open in this process: the tracker still follows it
            call = self._restore(call_id)
            if call.ended:
                continue
            self._facts = {}
            summary = self._orphan_summary(call, at)
            entries = self._ended(call, CallEnded(call_id, at, summary), note=ORPHAN_NOTE)
            self._note_facts(call)
            self._outbox.add(entries, self._facts)
            log.warning(
                "call %s ended while callbridge was down: finished at the resync (%s)",
                call_id,
                "answered" if summary.answered else "not answered",
            )
            written += entries
        return written

    def _orphan_summary(self, call: _Call, at: float) -> CallSummary:
        """What the store knows of a call that ended unseen, as if it ended at ``at``."""
        started = call.started
        if started is None:  # a register stored before facts were kept
            call_type = _int(call.register_params.get("TYPE"))
            inbound = call_type in (2, 3)
            direction = Direction.INBOUND if inbound else Direction.OUTBOUND
            started = CallStarted(call.call_id, at, direction, None, None, None)
        answered = call.answered_at is not None
        if answered:
            result = CallResult.ANSWERED
        elif started.direction is Direction.INBOUND:
            result = CallResult.MISSED
        else:
            result = CallResult.NOT_ANSWERED
        return CallSummary(
            linkedid=call.call_id,
            direction=started.direction,
            external_number=started.external_number,
            did=started.did,
            operator=started.operator,
            rang=list(call.rang),
            answered=answered,
            answered_by=call.answered_by,
            answered_on=None,
            final_operator=call.final_operator,
            result=result,
            transfers=list(call.transfers),
            start=started.at,
            answer=call.answered_at,
            end=max(at, call.answered_at or at, started.at),
            recordings=list(call.recordings),
            hangup_cause=None,
            tags=dict(started.tags),
            note=ORPHAN_NOTE,
        )

    # -- facts kept in the store --------------------------------------------------------

    def _note_facts(self, call: _Call) -> None:
        """Queue the call's facts for writing when they changed (or forgetting them)."""
        keep = not call.ended and call.started is not None and not isinstance(call.decision, Skip)
        if not keep:
            if call.saved is not None:
                self._facts[call.call_id] = None
                call.saved = None
            return
        facts = _facts_of(call)
        if facts != call.saved:
            self._facts[call.call_id] = facts
            call.saved = facts

    # -- state --------------------------------------------------------------------------

    def _call(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None:
            call = self._calls[call_id] = self._restore(call_id)
        return call

    def _restore(self, call_id: str) -> _Call:
        call = _Call(call_id)
        for op in self._outbox.ops_for_call(call_id):
            if op.kind is OperationKind.REGISTER_CALL:
                call.registered = True
                call.holder = _int(op.params.get("USER_ID"))
                call.register_params = op.params
                call.register_meta = op.meta
            elif op.kind in (OperationKind.SHOW_CALL, OperationKind.HIDE_CALL):
                call.steps += 1
                if isinstance(op.params.get("CALL_ID"), str):
                    call.crm_call_id = str(op.params["CALL_ID"])
                if op.status in ("skipped", "failed", "dropped"):
                    continue
                for user in _users(op.params.get("USER_ID")):
                    if op.kind is OperationKind.SHOW_CALL and user not in call.shown:
                        call.shown.append(user)
                    elif op.kind is OperationKind.HIDE_CALL and user in call.shown:
                        call.shown.remove(user)
            elif op.kind is OperationKind.FINISH_CALL:
                call.ended = True
            elif op.kind is OperationKind.ATTACH_RECORD:
                call.recordings.append(str(op.params.get("RECORD_PATH", "")))
        facts = self._outbox.call_facts(call_id)
        if facts is not None and not call.ended:
            _apply_facts(call, facts)
        return call

    def _decide(self, call: _Call, callee: str | None = None) -> Registration | Skip:
        if call.decision is not None:
            return call.decision
        assert call.started is not None
        decision = rules.registration(self._settings, call.started, callee)
        crm_call_id = call.started.tags.get(self._settings.crm_call_id_tag)
        if isinstance(decision, Skip) and crm_call_id:
            # A call the CRM already registered (click-to-call, callback): whatever the
            # rules say about registering, its CALL_ID must be finished, or its card stays.
            decision = _finish_only(call.started, crm_call_id, self._settings)
        elif not crm_call_id and self._own_originate(call.started):
            decision = Skip("an Originate of ours that failed before any channel existed")
        if isinstance(decision, Skip):
            log.info("call %s not registered: %s", call.call_id, decision.reason)
        call.decision = decision
        return decision

    def _user(self, extension: str | None) -> int:
        user = rules.user_for_extension(self._settings, self._directory, extension)
        if user is None:
            self._warn_unmapped(extension)
            return self._settings.default_user_id
        return user

    def _warn_unmapped(self, extension: str | None) -> None:
        if (
            extension
            and extension not in self._settings.exception_extensions
            and extension not in self._warned
        ):
            self._warned.add(extension)
            log.warning(
                "extension %s has no active Bitrix24 user: its calls go to user %s",
                extension,
                self._settings.default_user_id,
            )

    def _call_ref(self, call: _Call) -> Any:
        decision = call.decision
        if isinstance(decision, Registration) and decision.crm_call_id:
            return decision.crm_call_id
        if call.crm_call_id and not call.register_params:
            return call.crm_call_id
        return _CALL_ID_REF

    # -- operations ---------------------------------------------------------------------

    def _register(self, call: _Call, user: int) -> list[OutboxEntry]:
        decision = call.decision
        if call.registered or not isinstance(decision, Registration):
            return []
        call.registered = True
        call.holder = user
        if decision.crm_call_id:
            return []  # click-to-call: Bitrix24 registered it already (reference §7.5)
        assert call.started is not None
        params: dict[str, Any] = {
            "USER_ID": user,
            "PHONE_NUMBER": decision.phone,
            "TYPE": decision.call_type,
            "CALL_START_DATE": rules.call_start_date(self._settings, call.started.at),
            "CRM_CREATE": int(decision.crm_create),
            "SHOW": 0,
            "EXTERNAL_CALL_ID": decision.external_call_id,
        }
        if decision.line:
            params["LINE_NUMBER"] = decision.line
        if decision.crm_source:
            params["CRM_SOURCE"] = decision.crm_source
        meta: dict[str, Any] = {
            "external_call_id": decision.external_call_id,
            "phone": decision.phone,
        }
        if self._settings.registration_priority:
            meta["priority"] = list(self._settings.registration_priority)
        op = CrmOperation(call.call_id, "register", OperationKind.REGISTER_CALL, params)
        return [OutboxEntry(op, meta)]

    def _cards(self, call: _Call, kind: OperationKind, users: Sequence[int]) -> list[OutboxEntry]:
        if not users or not call.registered:
            return []
        call.steps += 1
        name = "show" if kind is OperationKind.SHOW_CALL else "hide"
        for user in users:
            if kind is OperationKind.SHOW_CALL:
                call.shown.append(user)
            else:
                call.shown.remove(user)
        params = {"CALL_ID": self._call_ref(call), "USER_ID": list(users)}
        return [OutboxEntry(CrmOperation(call.call_id, f"{name}.{call.steps}", kind, params))]

    def _show(self, call: _Call, users: Sequence[int], late: bool) -> list[OutboxEntry]:
        if late:
            return []
        return self._cards(call, OperationKind.SHOW_CALL, [u for u in users if u not in call.shown])

    def _hide(self, call: _Call, users: Sequence[int]) -> list[OutboxEntry]:
        return self._cards(call, OperationKind.HIDE_CALL, [u for u in call.shown if u in users])

    # -- events -------------------------------------------------------------------------

    def _started(self, call: _Call, event: CallStarted, late: bool) -> list[OutboxEntry]:
        if call.started is None:
            call.started = event
        if event.direction is not Direction.OUTBOUND or call.ended:
            return []  # inbound: registered at first ring; internal: once the callee rings
        if isinstance(self._decide(call), Skip):
            return []
        user = self._user(event.operator)
        entries = self._register(call, user)
        mapped = rules.user_for_extension(self._settings, self._directory, event.operator)
        if mapped is not None:
            entries += self._show(call, [mapped], late)
        return entries

    def _ringing(self, call: _Call, event: RingingChanged, late: bool) -> list[OutboxEntry]:
        if call.started is None or call.ended:
            return []
        for ext in event.ringing:
            if ext not in call.rang:
                call.rang.append(ext)
        carded = [e for e in event.ringing if e not in self._settings.exception_extensions]
        entries: list[OutboxEntry] = []
        if not call.registered and carded:
            callee = carded[0] if call.started.direction is Direction.INTERNAL else None
            if isinstance(self._decide(call, callee), Skip):
                return []
            first = (
                carded[0] if call.started.direction is Direction.INBOUND else call.started.operator
            )
            entries += self._register(call, self._user(first))
        if not call.registered:
            return entries
        users = rules.card_users(self._settings, self._directory, event.ringing)
        keep = set(users) | self._caller(call)
        if call.holder is not None and call.answered_at is not None:
            keep.add(call.holder)
        if call.answered_at is None:
            users = [*self._caller(call), *users]
        entries += self._hide(call, [u for u in call.shown if u not in keep])
        entries += self._show(call, users, late)
        return entries

    def _answered(self, call: _Call, event: CallAnswered, late: bool) -> list[OutboxEntry]:
        if call.started is None or call.ended:
            return []
        call.answered_at = call.answered_at or event.at
        if call.answered_by is None:
            call.answered_by = event.extension
        call.final_operator = event.extension
        if not call.registered:
            if isinstance(self._decide(call, event.extension), Skip):
                return []
            entries = self._register(call, self._user(event.extension))
        else:
            entries = []
        holder = rules.user_for_extension(self._settings, self._directory, event.extension)
        if holder is None:
            return entries
        call.holder = holder
        keep = {holder} | self._caller(call)
        entries += self._hide(call, [u for u in call.shown if u not in keep])
        entries += self._show(call, [holder], late)
        return entries

    def _transferred(self, call: _Call, event: CallTransferred) -> list[OutboxEntry]:
        if call.started is None or call.ended:
            return []
        call.transfers.append(event.transfer)
        if event.transfer.to_extension:
            call.final_operator = event.transfer.to_extension
        if not call.registered:
            return []
        transferer = rules.user_for_extension(
            self._settings, self._directory, event.transfer.from_extension
        )
        target = rules.user_for_extension(
            self._settings, self._directory, event.transfer.to_extension
        )
        if target is not None:
            call.holder = target
        if transferer is not None and transferer != target:
            return self._hide(call, [transferer])
        return []

    def _recording(self, call: _Call, event: RecordingKnown) -> list[OutboxEntry]:
        if event.path not in call.recordings:
            call.recordings.append(event.path)
        if call.ended and call.registered:
            return self._records(call, [event.path])
        return []

    def _records(self, call: _Call, paths: Sequence[str]) -> list[OutboxEntry]:
        if not self._settings.attach_recordings:
            return []
        entries = []
        for path in paths:
            digest = hashlib.sha1(path.encode()).hexdigest()[:12]
            params = {
                "CALL_ID": self._call_ref(call),
                "FILENAME": posixpath.basename(path),
                "RECORD_PATH": path,
            }
            op = CrmOperation(call.call_id, f"record.{digest}", OperationKind.ATTACH_RECORD, params)
            entries.append(OutboxEntry(op))
        return entries

    def _merged(self, call: _Call, event: CallMerged) -> list[OutboxEntry]:
        self._absorbed.add(event.absorbed_call_id)
        absorbed = self._calls.pop(event.absorbed_call_id, None)
        if absorbed is None:
            absorbed = self._restore(event.absorbed_call_id)
        # The survivor carries the story on; the absorbed call's facts are not an orphan.
        self._facts[absorbed.call_id] = None
        if not absorbed.registered or absorbed.ended:
            return []
        # Rare (internal calls registered): the absorbed record is closed so no card stays.
        answered = absorbed.answered_at is not None
        talk = max(0, round(event.at - absorbed.answered_at)) if absorbed.answered_at else 0
        user = absorbed.holder or self._settings.default_user_id
        entries = self._hide(absorbed, [u for u in absorbed.shown if u != user])
        absorbed.ended = True
        params = {
            "CALL_ID": self._call_ref(absorbed),
            "USER_ID": user,
            "DURATION": talk,
            "STATUS_CODE": "200" if answered else "304",
            "ADD_TO_CHAT": int(self._settings.add_to_chat),
        }
        op = CrmOperation(absorbed.call_id, "finish", OperationKind.FINISH_CALL, params)
        return [*entries, OutboxEntry(op, self._finish_meta(absorbed, None))]

    def _finish_meta(self, call: _Call, summary: CallSummary | None) -> dict[str, Any]:
        decision = call.decision
        meta: dict[str, Any] = {}
        if isinstance(decision, Registration) and not decision.crm_call_id:
            meta = {"external_call_id": decision.external_call_id, "phone": decision.phone}
        elif decision is None and call.register_meta.get("external_call_id"):
            # Restored after a restart: the stored register knows the ids to look up.
            meta = {
                k: call.register_meta[k]
                for k in ("external_call_id", "phone")
                if k in call.register_meta
            }
        if (
            summary is not None
            and not summary.answered
            and summary.direction is Direction.INBOUND
            and self._settings.missed_call_user == "responsible"
        ):
            meta["user_rule"] = "responsible"
            if self._settings.registration_priority:
                meta["priority"] = list(self._settings.registration_priority)
        return meta

    def _ended(self, call: _Call, event: CallEnded, note: str | None = None) -> list[OutboxEntry]:
        if call.ended:
            return []
        summary = event.summary
        if (
            call.answer_stored
            and call.answered_at is not None
            and summary.answered
            and (summary.answer is None or call.answered_at < summary.answer)
        ):
            # Answered before a restart: the resynced tracker dates the answer at its
            # snapshot; the stored time is the real one (talk seconds stay exact).
            summary = replace(summary, answer=call.answered_at)
        if call.started is None:
            call.started = CallStarted(
                call.call_id,
                summary.start,
                summary.direction,
                summary.external_number,
                summary.did,
                summary.operator,
                dict(summary.tags),
            )
        entries: list[OutboxEntry] = []
        if not call.registered:
            callee = summary.rang[0] if summary.rang else summary.answered_by
            if isinstance(self._decide(call, callee), Skip):
                call.ended = True
                return []
            if summary.direction is Direction.INBOUND:
                carded = [e for e in summary.rang if e not in self._settings.exception_extensions]
                first = carded[0] if carded else summary.answered_by
            else:
                first = summary.operator
            entries += self._register(call, self._user(first) if first else self._default())
        finisher = rules.finish_user(self._settings, self._directory, summary)
        entries += self._hide(call, [u for u in call.shown if u != finisher])
        call.ended = True
        params: dict[str, Any] = {
            "CALL_ID": self._call_ref(call),
            "USER_ID": finisher,
            "DURATION": rules.duration(summary),
            "STATUS_CODE": rules.status_code(
                summary.result, summary.hangup_cause, summary.failure_cause
            ),
            "ADD_TO_CHAT": int(self._settings.add_to_chat),
        }
        if summary.result is not CallResult.ANSWERED and summary.result is not None:
            reason = str(summary.result)
            params["FAILED_REASON"] = f"{reason}: {note}" if note else reason
        legs = rules.transfer_legs(self._settings, summary)
        finish = CrmOperation(call.call_id, "finish", OperationKind.FINISH_CALL, params)
        meta = self._finish_meta(call, summary)
        if legs:
            meta["description"] = legs
        entries.append(OutboxEntry(finish, meta))
        if legs:
            entries.append(_legs_comment(call.call_id, legs))
        for path in summary.recordings:
            if path not in call.recordings:
                call.recordings.append(path)
        entries += self._records(call, call.recordings)
        return entries

    def _caller(self, call: _Call) -> set[int]:
        """The operator placing an outbound/internal call keeps a card until the end."""
        if call.started is None or call.started.direction is Direction.INBOUND:
            return set()
        user = rules.user_for_extension(self._settings, self._directory, call.started.operator)
        return set() if user is None else {user}

    def _default(self) -> int:
        return self._settings.default_user_id


def _legs_comment(call_id: str, legs: str) -> OutboxEntry:
    """The legs of a transferred call as a comment on its CRM entity's timeline.

    ``finish`` cannot carry a description (reference §4.5); the entity the call was bound
    to comes back in its answer, so the comment refers to it and the outbox sends it once
    that answer is stored — or skips it, with the reason, when the call has no entity.
    """
    params = {
        "ENTITY_TYPE": ResultRef("finish", "CRM_ENTITY_TYPE"),
        "ENTITY_ID": ResultRef("finish", "CRM_ENTITY_ID"),
        "COMMENT": legs,
    }
    return OutboxEntry(CrmOperation(call_id, "legs", OperationKind.ADD_COMMENT, params))


def _never(_started: CallStarted) -> bool:
    return False


def _facts_of(call: _Call) -> dict[str, Any]:
    """The facts of a call as stored (JSON); the inverse of :func:`_apply_facts`."""
    started = call.started
    assert started is not None
    return {
        "started": {
            "at": started.at,
            "direction": started.direction.value,
            "external_number": started.external_number,
            "did": started.did,
            "operator": started.operator,
            "tags": dict(started.tags),
        },
        "rang": list(call.rang),
        "answered_at": call.answered_at,
        "answered_by": call.answered_by,
        "final_operator": call.final_operator,
        "holder": call.holder,
        "transfers": [
            {
                "type": t.type.value,
                "from": t.from_extension,
                "to": t.to_extension,
                "at": t.at,
            }
            for t in call.transfers
        ],
        "recordings": list(call.recordings),
    }


def _apply_facts(call: _Call, facts: Mapping[str, Any]) -> None:
    """Fill a restored call from its stored facts (what its operations cannot tell)."""
    started = facts.get("started")
    if isinstance(started, dict):
        call.started = CallStarted(
            call.call_id,
            float(started["at"]),
            Direction(started["direction"]),
            started.get("external_number"),
            started.get("did"),
            started.get("operator"),
            {str(k): str(v) for k, v in (started.get("tags") or {}).items()},
        )
    call.rang = [str(e) for e in facts.get("rang") or []]
    answered_at = facts.get("answered_at")
    if isinstance(answered_at, int | float):
        call.answered_at = float(answered_at)
        call.answer_stored = True
    call.answered_by = facts.get("answered_by")
    call.final_operator = facts.get("final_operator")
    holder = _int(facts.get("holder"))
    if holder is not None:
        call.holder = holder
    call.transfers = [
        Transfer(TransferType(t["type"]), t.get("from"), t.get("to"), float(t["at"]))
        for t in facts.get("transfers") or []
    ]
    for path in facts.get("recordings") or []:
        if path not in call.recordings:
            call.recordings.append(str(path))
    call.saved = dict(facts)


def _finish_only(started: CallStarted, crm_call_id: str, settings: RuleSettings) -> Registration:
    """A decision that registers nothing and finishes ``crm_call_id``."""
    callback = settings.callback_tag in started.tags
    return Registration(
        call_type=CALL_TYPE_CALLBACK if callback else CALL_TYPE_OUTBOUND,
        phone=started.external_number or "",
        line=None,
        crm_create=False,
        crm_source="",
        external_call_id=rules.external_call_id(settings, started.call_id),
        crm_call_id=crm_call_id,
    )


def _users(value: Any) -> list[int]:
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int)]
    return [value] if isinstance(value, int) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) else None
