"""Settings: one TOML file, layered with ``CALLBRIDGE_<SECTION>__<KEY>`` environment
overrides, validated once into a frozen typed object.

Every error names the key, the value given and what was expected; unknown keys are
errors (a typo must never silently fall back to a default). Secrets are best given
through the environment (``CALLBRIDGE_AMI__SECRET``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["Config", "ConfigError", "is_phone_channel", "load_config", "parse_config"]

ENV_PREFIX = "CALLBRIDGE_"


class ConfigError(Exception):
    """A configuration problem; ``str()`` is one line per finding, each naming the key."""

    def __init__(self, findings: list[str]) -> None:
        super().__init__("\n".join(findings))
        self.findings = findings


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` → (host, port); ``[::1]:80`` works too."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class AmiConfig(_Section):
    host: str = "127.0.0.1"
    port: int = Field(5038, ge=1, le=65535)
    username: str = "callbridge"
    secret: str = ""
    #: Seconds between keep-alive Pings; a Ping unanswered for ``ping_timeout`` is a dead link.
    ping_interval: float = Field(15.0, gt=0)
    ping_timeout: float = Field(5.0, gt=0)
    connect_timeout: float = Field(5.0, gt=0)
    reconnect_min: float = Field(0.5, gt=0)
    reconnect_max: float = Field(30.0, gt=0)
    #: Event classes asked for at Login (``Events:``).
    events: str = "on"


class PbxConfig(_Section):
    #: Regex on the channel name (``Tech/resource-xxxxxxxx``). A channel whose name matches
    #: ``phone_channel`` is a phone; group 1 (or the ``ext`` group) is its extension.
    #: FreePBX convention: a PJSIP/SIP/IAX2 endpoint with a numeric name is an extension.
    phone_channel: str = r"^(?:PJSIP|SIP|IAX2)/(?P<ext>\d+)-[0-9a-fA-F]+$"
    #: Endpoint names that are always trunks, even when numeric.
    trunks: list[str] = []
    #: Extra endpoint names that are phones although not numeric.
    phones: dict[str, str] = {}
    #: Channel variable that carries callbridge's own tag of an originated call.
    crm_call_id_variable: str = "CRM_CALL_ID"

    @field_validator("phone_channel")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression ({exc})") from exc
        if compiled.groups < 1:
            raise ValueError("the regex needs a group capturing the extension")
        return value


class Bitrix24Config(_Section):
    #: Incoming-webhook URL ``https://portal/rest/<user>/<code>/`` (webhook mode), or empty.
    webhook_url: str = ""
    #: Local application credentials (application mode).
    client_id: str = ""
    client_secret: str = ""
    #: OAuth server (``https://oauth.bitrix.info``); the emulator serves its own.
    oauth_url: str = "https://oauth.bitrix.info"
    #: Token of an admin-made outgoing webhook; events carrying it are accepted.
    outgoing_token: str = ""
    rate: float = Field(2.0, gt=0)
    burst: int = Field(50, ge=1)
    timeout: float = Field(10.0, gt=0)


class RulesConfig(_Section):
    default_region: str = "RU"
    default_user_id: int = Field(1, ge=1)
    register_internal: bool = False
    register_inbound: bool = True
    register_outbound: bool = True
    #: DID → Bitrix24 external line number.
    lines: dict[str, str] = {}
    #: Rewrite of an external number before it goes to the CRM, e.g. ``7${DIAL_NUMBER:1}``.
    number_rewrite: str = ""
    #: "default" | "responsible" | "last_rung"
    missed_call_user: Literal["default", "responsible", "last_rung"] = "last_rung"
    #: Entity types in the order to search; empty = the portal's own choice.
    registration_priority: list[Literal["contact", "company", "lead"]] = []
    crm_create: bool = True
    exception_extensions: list[str] = []
    #: Number sent for withheld callers; empty = such calls are not registered.
    anonymous_number: str = ""
    #: Per-DID overrides: ``{ "74957654321" = { register = true, line = "...",
    #: crm_create = false, crm_source = "CALL", to_mobile = false } }``.
    dids: dict[str, dict[str, Any]] = {}
    #: DIDs that go straight to a mobile (registered as TYPE 3).
    mobile_dids: list[str] = []
    #: ``[{ name = "...", pattern = "<regex on the number>", register = true, line = "..." }]``.
    outbound_routes: list[dict[str, Any]] = []
    #: ``[{ match = "<regex>", to = "<template>" }]``, tried before ``number_rewrite``.
    number_rewrites: list[dict[str, Any]] = []
    crm_source: str = ""
    timezone: str = "UTC"
    external_call_id_prefix: str = "callbridge"
    #: Seconds behind the newest AMI time after which an event is replayed history: such
    #: calls are registered without showing a card.
    late_after: float = Field(300.0, gt=0)
    #: Channel-variable tag marking a web-form callback the PBX placed (TYPE 4).
    callback_tag: str = "CALLBACK"
    add_to_chat: bool = True
    attach_recordings: bool = True


class OutboxConfig(_Section):
    batch_size: int = Field(50, ge=1, le=50)
    #: Seconds a claimed operation may stay in flight before another worker may take it.
    lease: float = Field(120.0, gt=0)
    retention_days: float = Field(7.0, gt=0)
    retry_base: float = Field(1.0, gt=0)
    retry_cap: float = Field(300.0, gt=0)
    auth_pause: float = Field(60.0, gt=0)


class ClickToCallConfig(_Section):
    """``[click_to_call]``: see :class:`callbridge.actions.originate.ClickToCallSettings`."""

    agent_channel: Literal["local", "pjsip"] = "local"
    local_context: str = "originate-skipvm"
    outbound_context: str = "from-internal"
    outbound_prefixes: dict[str, str] = {}
    default_prefix: str = ""
    number_source: Literal["clicked", "international"] = "clicked"
    plus_replacement: str = ""
    ring_timeout_ms: int = Field(30_000, ge=1000)
    auto_answer: bool = False
    auto_answer_model: str = "generic"
    auto_answer_headers: dict[str, str] = {}
    click_burst: int = Field(5, ge=1)
    click_rate: float = Field(0.5, gt=0)
    user_cache_ttl: float = Field(300.0, ge=0)
    show_crm_name: bool = True
    name_lookup_timeout: float = Field(0.5, gt=0)
    action_timeout: float = Field(5.0, gt=0)
    notify_refusals: bool = True
    callback_destinations: dict[str, str] = {}
    callback_default: str = ""
    callback_context: str = "from-internal"
    callback_user_id: int = Field(1, ge=1)
    callback_burst: int = Field(3, ge=1)
    callback_rate: float = Field(1 / 60, gt=0)


class WebConfig(_Section):
    listen: str = "127.0.0.1:8080"
    #: URL the portal can reach callbridge at (for event handlers).
    public_url: str = ""

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        parse_listen(value)
        return value


class StoreConfig(_Section):
    path: str = "callbridge.sqlite3"


class Config(_Section):
    ami: AmiConfig = AmiConfig()
    pbx: PbxConfig = PbxConfig()
    bitrix24: Bitrix24Config = Bitrix24Config()
    rules: RulesConfig = RulesConfig()
    web: WebConfig = WebConfig()
    store: StoreConfig = StoreConfig()
    outbox: OutboxConfig = OutboxConfig()
    click_to_call: ClickToCallConfig = ClickToCallConfig()
    #: FastAGI server (``listen``, ``public_host``, ``public_port``, ``session_deadline``);
    #: validated by :mod:`callbridge.routing.settings`, which names every bad key.
    agi: dict[str, Any] = {}
    #: Routing of inbound callers (destinations, schedules, variables): see
    #: ``docs/routing.md``; validated like ``agi``.
    routing: dict[str, Any] = {}

    @model_validator(mode="after")
    def _rules_hold(self) -> Config:
        # The rules' own validation (rewrite templates, regexes, time zone) runs at load
        # time, so a bad rule is reported with its key before anything starts.
        from callbridge.routing.settings import RoutingSettingsError
        from callbridge.routing.settings import settings_from_config as routing_settings
        from callbridge.rules.numbers import RuleConfigError
        from callbridge.rules.settings import settings_from_config

        try:
            settings_from_config(self.rules)
        except RuleConfigError as exc:
            raise ValueError(str(exc)) from None
        try:
            routing_settings(self)
        except RoutingSettingsError as exc:
            raise ValueError(str(exc)) from None
        from callbridge.actions.originate import ClickToCallSettings

        try:
            ClickToCallSettings(**self.click_to_call.model_dump())
        except ValueError as exc:
            raise ValueError(f"[click_to_call] {exc}") from None
        return self


def _env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    sections: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    known = Config.model_fields
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "CALLBRIDGE_CONFIG":
            continue
        rest = name[len(ENV_PREFIX) :]
        section, sep, key = rest.partition("__")
        if not sep:
            continue
        section, key = section.lower(), key.lower()
        if section not in known:
            errors.append(f"{name}: unknown section [{section}] (known: {', '.join(known)})")
            continue
        sections.setdefault(section, {})[key] = _env_value(raw)
    return sections, errors


def _env_value(raw: str) -> Any:
    # Lists and tables are given as JSON (CALLBRIDGE_PBX__TRUNKS='["trunk"]'); scalars as
    # text, which pydantic turns into int/float/bool as the key's type says.
    stripped = raw.strip()
    if stripped[:1] in "[{":
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def _merge(base: dict[str, Any], over: dict[str, dict[str, Any]]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in over.items():
        current = merged.get(section)
        merged[section] = {**(current if isinstance(current, dict) else {}), **values}
    return merged


def _describe(exc: ValidationError, source: str) -> list[str]:
    findings = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        key = f"[{loc.split('.', 1)[0]}] {loc.split('.', 1)[1]}" if "." in loc else loc
        if not loc:  # a whole-config check (the rules'): its message names the key
            findings.append(f"{source}: {err['msg'].removeprefix('Value error, ')}")
        elif err["type"] == "extra_forbidden":
            findings.append(f"{source}: {key}: unknown key (value {err['input']!r})")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            findings.append(f"{source}: {key} = {err['input']!r}: {msg}")
    return findings


def parse_config(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None, source: str = "config"
) -> Config:
    env, errors = _env_overrides(os.environ if environ is None else environ)
    if errors:
        raise ConfigError(errors)
    try:
        return Config.model_validate(_merge(dict(data), env))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(
    path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load ``path`` (or ``$CALLBRIDGE_CONFIG``; none at all = defaults) plus env overrides."""
    env = os.environ if environ is None else environ
    chosen = path if path is not None else env.get("CALLBRIDGE_CONFIG")
    data: dict[str, Any] = {}
    source = "environment"
    if chosen:
        file = Path(chosen)
        source = str(file)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError([f"{file}: config file not found"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
    return parse_config(data, env, source)


_phone_cache: dict[str, re.Pattern[str]] = {}


def is_phone_channel(pbx: PbxConfig, channel: str) -> str | None:
    """The extension of a phone channel (``PJSIP/101-0000002a`` → ``101``), else ``None``.

    Trunks are anything that is not a phone; Local channels are neither.
    """
    tech, _, rest = channel.partition("/")
    endpoint = rest.rsplit("-", 1)[0] if "-" in rest else rest
    if endpoint in pbx.trunks:
        return None
    if endpoint in pbx.phones:
        return pbx.phones[endpoint]
    pattern = _phone_cache.get(pbx.phone_channel)
    if pattern is None:
        pattern = _phone_cache[pbx.phone_channel] = re.compile(pbx.phone_channel)
    match = pattern.match(channel)
    if match is None or tech == "Local":
        return None
    groups = match.groupdict()
    return groups.get("ext") or match.group(1)
