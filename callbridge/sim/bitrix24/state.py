"""The emulated portal as plain data: users, CRM, calls, lines, apps, tokens, subscriptions.

Nothing here does I/O or reads a clock; callers pass ``now`` (emulator seconds). The method
modules mutate this model; :meth:`PortalState.to_json` is what ``GET /_emulator/state`` shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENTITY_TYPES = ("LEAD", "CONTACT", "COMPANY", "DEAL")
MULTIFIELDS = ("PHONE", "EMAIL", "WEB", "IM")
CRM_OWNER_TYPE_ID = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4}


@dataclass
class User:
    id: int
    name: str
    last_name: str
    ext: str | None
    active: bool = True
    admin: bool = False
    email: str = ""
    personal_mobile: str = ""
    work_phone: str = ""
    timeman_status: str = "OPENED"

    def full_name(self) -> str:
        return f"{self.name} {self.last_name}".strip()

    def to_rest(self) -> dict[str, Any]:
        """The ``user.get`` row (strings, ``ACTIVE`` boolean, ``TIMESTAMP_X`` as PHP's ``{}``)."""
        return {
            "ID": str(self.id),
            "XML_ID": "",
            "ACTIVE": self.active,
            "NAME": self.name,
            "LAST_NAME": self.last_name,
            "SECOND_NAME": "",
            "EMAIL": self.email,
            "WORK_PHONE": self.work_phone,
            "PERSONAL_MOBILE": self.personal_mobile,
            "PERSONAL_PHONE": "",
            "UF_PHONE_INNER": self.ext or "",
            "UF_DEPARTMENT": [1],
            "USER_TYPE": "employee",
            "IS_ONLINE": "Y",
            "TIMESTAMP_X": {},
            "IS_ADMIN": self.admin,
        }


@dataclass
class HistoryEntry:
    t: float
    method: str
    users: list[int]
    dedup: bool = False


@dataclass
class Call:
    """An external call from ``register`` (or a click) until ``finish`` and beyond."""

    call_id: str
    external_call_id: str | None
    type: int
    phone_number: str
    line_number: str | None
    registered_user_id: int
    user_id: int
    app_key: str
    start_date: float
    crm_entity_type: str = ""
    crm_entity_id: int | None = None
    created_lead: int | None = None
    created_entities: list[dict[str, Any]] = field(default_factory=list)
    shown_to: list[int] = field(default_factory=list)
    shown_now: list[int] = field(default_factory=list)
    finished: bool = False
    status_code: str | None = None
    duration: int | None = None
    add_to_chat: bool | None = None
    stat_id: int | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "CALL_ID": self.call_id,
            "EXTERNAL_CALL_ID": self.external_call_id,
            "TYPE": self.type,
            "PHONE_NUMBER": self.phone_number,
            "LINE_NUMBER": self.line_number,
            "REGISTERED_USER_ID": self.registered_user_id,
            "USER_ID": self.user_id,
            "CRM_ENTITY_TYPE": self.crm_entity_type,
            "CRM_ENTITY_ID": self.crm_entity_id,
            "CRM_CREATED_LEAD": self.created_lead,
            "shown_to": list(self.shown_to),
            "shown_now": list(self.shown_now),
            "finished": self.finished,
            "STATUS_CODE": self.status_code,
            "DURATION": self.duration,
            "ADD_TO_CHAT": self.add_to_chat,
            "STATISTIC_ID": self.stat_id,
            "records": [dict(r) for r in self.records],
            "history": [
                {"t": h.t, "method": h.method, "users": list(h.users), "dedup": h.dedup}
                for h in self.history
            ],
        }


@dataclass
class Line:
    number: str
    name: str
    crm_auto_create: str
    app_key: str


@dataclass
class App:
    """A local application installed on the portal (reference §2.2)."""

    app_id: int
    client_id: str
    client_secret: str
    application_token: str
    handler: str
    user_id: int
    scope: str = "crm,telephony,user,im,task,basic"
    name: str = "callbridge"

    @property
    def key(self) -> str:
        return f"app:{self.app_id}"


@dataclass
class Token:
    value: str
    app_id: int
    user_id: int
    expires_at: float


@dataclass
class AuthCode:
    value: str
    app_id: int
    user_id: int
    issued_at: float
    used: bool = False


@dataclass
class Handler:
    event: str
    handler: str
    app_id: int
    auth_type: int = 0


@dataclass
class PendingEvent:
    """An event waiting to be posted; ``app_id`` limits it to one application's handlers."""

    name: str
    data: dict[str, Any]
    user_id: int | None
    app_id: int | None = None


@dataclass
class Delivery:
    t: float
    event: str
    handler: str
    app_id: int | None
    status: int | None
    error: str | None = None


@dataclass
class Requests:
    total: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    by_error: dict[str, int] = field(
        default_factory=lambda: {"QUERY_LIMIT_EXCEEDED": 0, "OPERATION_TIME_LIMIT": 0}
    )

    def count_method(self, method: str) -> None:
        self.by_method[method] = self.by_method.get(method, 0) + 1

    def count_error(self, code: str) -> None:
        self.by_error[code] = self.by_error.get(code, 0) + 1


@dataclass
class PortalState:
    """Everything the portal knows. Ids come from one counter per kind."""

    member_id: str = "a223c6b3710f85df22e9377d6c4f7553"
    users: dict[int, User] = field(default_factory=dict)
    entities: dict[str, dict[int, dict[str, Any]]] = field(
        default_factory=lambda: {t: {} for t in ENTITY_TYPES}
    )
    calls: dict[str, Call] = field(default_factory=dict)
    statistics: list[dict[str, Any]] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    #: Timeline comments (``crm.timeline.comment.add``, §6.7), as ``crm.timeline.comment.list``
    #: rows: ``ENTITY_TYPE`` lower-case, ids as strings.
    comments: list[dict[str, Any]] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    apps: dict[int, App] = field(default_factory=dict)
    access_tokens: dict[str, Token] = field(default_factory=dict)
    refresh_tokens: dict[str, Token] = field(default_factory=dict)
    auth_codes: dict[str, AuthCode] = field(default_factory=dict)
    handlers: list[Handler] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    pending_events: list[PendingEvent] = field(default_factory=list)
    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    upload_tokens: dict[str, str] = field(default_factory=dict)
    transcripts: list[dict[str, Any]] = field(default_factory=list)
    requests: Requests = field(default_factory=Requests)
    switches: dict[str, str] = field(default_factory=dict)
    _counters: dict[str, int] = field(default_factory=dict)

    def next_id(self, kind: str) -> int:
        self._counters[kind] = self._counters.get(kind, 0) + 1
        return self._counters[kind]

    def active_user(self, user_id: int) -> User | None:
        user = self.users.get(user_id)
        return user if user is not None and user.active else None

    def user_by_ext(self, ext: str) -> User | None:
        for user in self.users.values():
            if user.active and user.ext and user.ext == ext:
                return user
        return None

    def emit(
        self, name: str, data: dict[str, Any], user_id: int | None, app_id: int | None = None
    ) -> None:
        self.pending_events.append(PendingEvent(name, data, user_id, app_id))

    def take_events(self) -> list[PendingEvent]:
        events, self.pending_events = self.pending_events, []
        return events

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": [c.to_json() for c in self.calls.values()],
            "statistics": [dict(s) for s in self.statistics],
            "users": [u.to_rest() for u in self.users.values()],
            "leads": list(self.entities["LEAD"].values()),
            "contacts": list(self.entities["CONTACT"].values()),
            "companies": list(self.entities["COMPANY"].values()),
            "deals": list(self.entities["DEAL"].values()),
            "activities": list(self.activities),
            "comments": [dict(c) for c in self.comments],
            "tasks": list(self.tasks),
            "notifications": list(self.notifications),
            "lines": [
                {
                    "NUMBER": ln.number,
                    "NAME": ln.name,
                    "CRM_AUTO_CREATE": ln.crm_auto_create,
                    "app": ln.app_key,
                }
                for ln in self.lines
            ],
            "requests": {
                "total": self.requests.total,
                "by_method": dict(self.requests.by_method),
                "by_error": dict(self.requests.by_error),
            },
            "switches": dict(self.switches),
            "apps": [
                {"app_id": a.app_id, "client_id": a.client_id, "handler": a.handler}
                for a in self.apps.values()
            ],
            "handlers": [
                {
                    "event": h.event,
                    "handler": h.handler,
                    "auth_type": h.auth_type,
                    "app_id": h.app_id,
                }
                for h in self.handlers
            ],
            "deliveries": [
                {
                    "t": d.t,
                    "event": d.event,
                    "handler": d.handler,
                    "app_id": d.app_id,
                    "status": d.status,
                    "error": d.error,
                }
                for d in self.deliveries
            ],
        }


def _phone(state: PortalState, value: str, value_type: str = "WORK") -> dict[str, Any]:
    return {
        "ID": str(state.next_id("multifield")),
        "VALUE_TYPE": value_type,
        "VALUE": value,
        "TYPE_ID": "PHONE",
    }


_SOURCES = [
    ("CALL", "Call"),
    ("EMAIL", "E-Mail"),
    ("WEB", "Website"),
    ("ADVERTISING", "Advertising"),
    ("PARTNER", "Existing client"),
    ("RECOMMENDATION", "By recommendation"),
    ("TRADE_SHOW", "Show/Exhibition"),
    ("WEBFORM", "CRM form"),
    ("CALLBACK", "Callback"),
    ("RC_GENERATOR", "Sales boost"),
    ("STORE", "Online Store"),
    ("OTHER", "Other"),
]
_LEAD_STATUSES = [
    ("NEW", "Unassigned"),
    ("IN_PROCESS", "In progress"),
    ("PROCESSED", "Processed"),
    ("JUNK", "Junk lead"),
    ("CONVERTED", "High quality lead"),
]


def seeded(switches: dict[str, str] | None = None) -> PortalState:
    """The portal every emulator starts with (and returns to on reset)."""
    st = PortalState(switches=dict(switches or {}))
    for user in (
        User(1, "Ivan", "Petrov", "101", email="ivan@example.com", personal_mobile="+79161110101"),
        User(
            2, "Olga", "Smirnova", "102", email="olga@example.com", personal_mobile="+79161110102"
        ),
        User(3, "Sergey", "Volkov", "103", email="sergey@example.com"),
        User(4, "Pavel", "Sokolov", "104", active=False, email="pavel@example.com"),
        User(9, "Admin", "Portal", None, admin=True, email="admin@example.com"),
    ):
        st.users[user.id] = user
    sort = 10
    for entity_id, names in (("SOURCE", _SOURCES), ("STATUS", _LEAD_STATUSES)):
        for status_id, name in names:
            st.statuses.append(
                {
                    "ID": str(st.next_id("status")),
                    "ENTITY_ID": entity_id,
                    "STATUS_ID": status_id,
                    "NAME": name,
                    "NAME_INIT": name,
                    "SORT": str(sort),
                    "SYSTEM": "Y",
                    "CATEGORY_ID": None,
                    "COLOR": None,
                    "SEMANTICS": None,
                    "EXTRA": [],
                }
            )
            sort += 10
    stamp = "2026-01-15T10:00:00+03:00"
    common = {"DATE_CREATE": stamp, "DATE_MODIFY": stamp, "CREATED_BY_ID": "9", "OPENED": "Y"}
    cid = st.next_id("CONTACT")
    st.entities["CONTACT"][cid] = {
        "ID": str(cid),
        "NAME": "Anna",
        "LAST_NAME": "Kuznetsova",
        "TYPE_ID": "CLIENT",
        "SOURCE_ID": "CALL",
        "COMPANY_ID": "1",
        "ASSIGNED_BY_ID": "2",
        **common,
        "PHONE": [_phone(st, "+7 (495) 123-45-67")],
        "EMAIL": [],
    }
    cid = st.next_id("CONTACT")
    st.entities["CONTACT"][cid] = {
        "ID": str(cid),
        "NAME": "Boris",
        "LAST_NAME": "Orlov",
        "TYPE_ID": "CLIENT",
        "SOURCE_ID": "WEB",
        "COMPANY_ID": None,
        "ASSIGNED_BY_ID": "3",
        **common,
        "PHONE": [_phone(st, "89031112233", "MOBILE")],
        "EMAIL": [],
    }
    coid = st.next_id("COMPANY")
    st.entities["COMPANY"][coid] = {
        "ID": str(coid),
        "TITLE": "Romashka LLC",
        "COMPANY_TYPE": "CUSTOMER",
        "ASSIGNED_BY_ID": "3",
        **common,
        "PHONE": [_phone(st, "+74951112233")],
        "EMAIL": [],
    }
    lid = st.next_id("LEAD")
    st.entities["LEAD"][lid] = {
        "ID": str(lid),
        "TITLE": "Website enquiry",
        "NAME": "Dmitry",
        "LAST_NAME": "Lebedev",
        "STATUS_ID": "NEW",
        "SOURCE_ID": "WEB",
        "SOURCE_DESCRIPTION": "",
        "ASSIGNED_BY_ID": "1",
        "COMMENTS": "",
        "IS_RETURN_CUSTOMER": "N",
        "CONTACT_ID": None,
        "COMPANY_ID": None,
        **common,
        "PHONE": [_phone(st, "+7 900 555-66-77")],
        "EMAIL": [],
    }
    did = st.next_id("DEAL")
    st.entities["DEAL"][did] = {
        "ID": str(did),
        "TITLE": "Supply contract",
        "STAGE_ID": "NEW",
        "CATEGORY_ID": "0",
        "OPPORTUNITY": "15000.00",
        "CURRENCY_ID": "RUB",
        "CONTACT_ID": "1",
        "COMPANY_ID": "1",
        "ASSIGNED_BY_ID": "2",
        **common,
    }
    return st
