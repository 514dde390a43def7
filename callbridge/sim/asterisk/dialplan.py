"""A small dialplan interpreter and FastAGI caller: Asterisk's side of FastAGI routing.

It runs the subset of ``extensions.conf`` that callbridge's snippet uses — ``Set``,
``AGI``, ``GotoIf``, ``Goto``, ``Dial``, ``NoOp``, ``Return``, ``Hangup`` (plus ``Busy``
and ``Congestion``) with ``${VAR}``, ``${CALLERID(num|name)}`` and ``$[…]`` expressions —
and stops where the call leaves it (a ``Goto`` into a context it does not have, such as
FreePBX's ``ext-queues``), returning the destination and the channel's variables.

``AGI(agi://host:port/script,args…)`` is a real FastAGI caller over TCP, answering like
Asterisk (reference asterisk.md §4): the environment block, replies per §4.3 (``510``,
``520-`` usage blocks, ``511`` on a dead channel, ``HANGUP`` written inline before the
reply when the channel hangs up), ``AGISTATUS`` ``SUCCESS``/``FAILURE``/``HANGUP`` and a
2 s connect timeout. Like Asterisk it waits for the server to close the socket; unlike
Asterisk it can be given an overall ``session_timeout`` so a test cannot hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

__all__ = [
    "AgiOutcome",
    "Channel",
    "DialAttempt",
    "Dialplan",
    "DialplanError",
    "DialplanOutcome",
    "DialplanRunner",
    "Step",
    "call_fastagi",
    "evaluate",
    "parse_agi_args",
    "parse_dialplan",
]


class DialplanError(ValueError):
    """A dialplan line the interpreter cannot read or run; names the line or step."""


# --------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class Step:
    priority: int
    label: str
    app: str
    data: str
    line: int


@dataclass
class Dialplan:
    contexts: dict[str, dict[str, list[Step]]] = field(default_factory=dict)
    globals: dict[str, str] = field(default_factory=dict)
    includes: dict[str, list[str]] = field(default_factory=dict)

    def steps(self, context: str, exten: str) -> tuple[str, list[Step]] | None:
        """The extension of ``context`` matching ``exten`` (exact first, then patterns)."""
        extens = self.contexts.get(context)
        if extens is None:
            return None
        if exten in extens:
            return exten, extens[exten]
        for pattern, steps in extens.items():
            if pattern.startswith("_") and _pattern(pattern).fullmatch(exten):
                return pattern, steps
        return None


def _pattern(pattern: str) -> re.Pattern[str]:
    out = []
    body = pattern[1:]
    i = 0
    while i < len(body):
        c = body[i]
        if c == "X":
            out.append("[0-9]")
        elif c == "Z":
            out.append("[1-9]")
        elif c == "N":
            out.append("[2-9]")
        elif c == ".":
            out.append(".+")
        elif c == "!":
            out.append(".*")
        elif c == "[":
            end = body.index("]", i)
            out.append("[" + body[i + 1 : end] + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


_LINE = re.compile(r"^(exten|same)\s*=>?\s*(.*)$", re.IGNORECASE)


def _strip_comment(line: str) -> str:
    out, escaped = [], False
    for c in line:
        if escaped:
            out.append(c)
            escaped = False
        elif c == "\\":
            out.append(c)
            escaped = True
        elif c == ";":
            break
        else:
            out.append(c)
    return "".join(out).rstrip()


def parse_dialplan(text: str) -> Dialplan:
    """Read ``[context]`` sections with ``exten =>`` / ``same =>`` lines."""
    plan = Dialplan()
    context: str | None = None
    exten: str | None = None
    last = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("[") and "]" in line:
            context = line[1 : line.index("]")].strip()
            plan.contexts.setdefault(context, {})
            exten = None
            continue
        if context in ("general", "globals"):
            # extensions.conf settings and global variables, not dialplan.
            key, eq, value = line.partition("=")
            if context == "globals" and eq:
                plan.globals[key.strip()] = value.strip()
            continue
        if context is not None and line.lower().startswith("include"):
            plan.includes.setdefault(context, []).append(line.partition(">")[2].strip())
            continue
        match = _LINE.match(line)
        if match is None:
            raise DialplanError(f"line {number}: not an exten/same line: {raw!r}")
        if context is None:
            raise DialplanError(f"line {number}: outside any [context]")
        kind, rest = match.group(1).lower(), match.group(2).strip().lstrip(">").strip()
        if kind == "exten":
            exten, _, rest = rest.partition(",")
            exten = exten.strip()
        elif exten is None:
            raise DialplanError(f"line {number}: 'same' without a preceding 'exten'")
        prio_text, _, app_text = rest.partition(",")
        prio_text = prio_text.strip()
        label = ""
        if "(" in prio_text and prio_text.endswith(")"):
            prio_text, _, label = prio_text[:-1].partition("(")
        if prio_text == "n":
            priority = last + 1
        elif prio_text.isdigit():
            priority = int(prio_text)
        else:
            raise DialplanError(f"line {number}: bad priority {prio_text!r}")
        app, paren, data = app_text.strip().partition("(")
        if paren and not data.endswith(")"):
            raise DialplanError(f"line {number}: unbalanced parentheses in {app_text!r}")
        plan.contexts[context].setdefault(exten, []).append(
            Step(priority, label.strip(), app.strip(), data[:-1] if paren else "", number)
        )
        last = priority
    return plan


@dataclass
class Channel:
    """The caller's channel as the interpreter sees it."""

    caller_num: str = "74951234567"
    caller_name: str = ""
    name: str = "PJSIP/trunk-00000001"
    uniqueid: str = "1795216955.71"
    language: str = "en"
    variables: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False

    def get(self, name: str) -> str | None:
        upper = name.upper()
        if upper in ("CALLERID(NUM)", "CALLERID(NUMBER)"):
            return self.caller_num
        if upper == "CALLERID(NAME)":
            return self.caller_name
        if upper == "CHANNEL":
            return self.name
        if upper == "UNIQUEID":
            return self.uniqueid
        return self.variables.get(name.lstrip("_"))

    def set(self, name: str, value: str) -> None:
        upper = name.upper()
        if upper in ("CALLERID(NUM)", "CALLERID(NUMBER)"):
            self.caller_num = value
        elif upper == "CALLERID(NAME)":
            self.caller_name = value
        elif value == "":
            self.variables.pop(name.lstrip("_"), None)
        else:
            # "__FROM_DID" is inherited by callees; the name seen is FROM_DID.
            self.variables[name.lstrip("_")] = value


# --------------------------------------------------------------------------- expressions


def substitute(text: str, lookup: Callable[[str], str]) -> str:
    """Expand ``${…}`` (innermost first) and then ``$[…]``."""
    for _ in range(100):
        start = text.rfind("${")
        if start < 0:
            break
        end = _matching(text, start + 1, "{", "}")
        inner = text[start + 2 : end]
        text = text[:start] + _variable(inner, lookup) + text[end + 1 :]
    for _ in range(100):
        start = text.rfind("$[")
        if start < 0:
            break
        end = _matching(text, start + 1, "[", "]")
        text = text[:start] + evaluate(text[start + 2 : end]) + text[end + 1 :]
    return text


def _matching(text: str, open_at: int, opener: str, closer: str) -> int:
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == opener:
            depth += 1
        elif text[i] == closer:
            depth -= 1
            if depth == 0:
                return i
    raise DialplanError(f"unbalanced {opener}{closer} in {text!r}")


def _variable(inner: str, lookup: Callable[[str], str]) -> str:
    name, offset, length = inner, None, None
    if ":" in inner and "(" not in inner.split(":", 1)[0][-1:]:
        parts = inner.split(":")
        name = parts[0]
        offset = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        length = int(parts[2]) if len(parts) > 2 and parts[2] else None
    value = lookup(name)
    if offset is not None:
        value = value[offset:]
        if length is not None:
            value = value[:length]
    return value


_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|(!=|<=|>=|=~|[=<>|&()!])|([^\s"=<>|&()!]+))')


def evaluate(expression: str) -> str:
    """Asterisk ``$[…]`` subset: strings/words, ``= != < > <= >=``, ``& |``, ``!``, ()."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = expression.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise DialplanError(f"cannot read expression {expression!r}")
        if m.group(1) is not None:
            tokens.append(("v", m.group(1)))
        elif m.group(2) is not None:
            tokens.append(("o", m.group(2)))
        elif m.group(3) is not None:
            tokens.append(("v", m.group(3)))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if not tokens:
        return ""
    value, rest = _or(tokens)
    if rest:
        raise DialplanError(f"trailing tokens in expression {expression!r}")
    return value


Tokens = list[tuple[str, str]]


def _truth(value: str) -> bool:
    return value not in ("", "0")


def _or(tokens: Tokens) -> tuple[str, Tokens]:
    left, tokens = _and(tokens)
    while tokens and tokens[0] == ("o", "|"):
        right, tokens = _and(tokens[1:])
        left = left if _truth(left) else right
        left = left if _truth(left) else "0"
    return left, tokens


def _and(tokens: Tokens) -> tuple[str, Tokens]:
    left, tokens = _cmp(tokens)
    while tokens and tokens[0] == ("o", "&"):
        right, tokens = _cmp(tokens[1:])
        left = left if _truth(left) and _truth(right) else "0"
    return left, tokens


def _compare(a: str, op: str, b: str) -> bool:
    try:
        x: float | str = float(a)
        y: float | str = float(b)
    except ValueError:
        x, y = a, b
    if op == "=":
        return x == y
    if op == "!=":
        return x != y
    if op == "<":
        return x < y  # type: ignore[operator]
    if op == ">":
        return x > y  # type: ignore[operator]
    if op == "<=":
        return x <= y  # type: ignore[operator]
    if op == ">=":
        return x >= y  # type: ignore[operator]
    raise DialplanError(f"unsupported operator {op!r}")


def _cmp(tokens: Tokens) -> tuple[str, Tokens]:
    left, tokens = _unary(tokens)
    while tokens and tokens[0][0] == "o" and tokens[0][1] in ("=", "!=", "<", ">", "<=", ">="):
        op = tokens[0][1]
        right, tokens = _unary(tokens[1:])
        left = "1" if _compare(left, op, right) else "0"
    return left, tokens


def _unary(tokens: Tokens) -> tuple[str, Tokens]:
    if not tokens:
        return "", tokens
    kind, value = tokens[0]
    if (kind, value) == ("o", "!"):
        inner, rest = _unary(tokens[1:])
        return ("0" if _truth(inner) else "1"), rest
    if (kind, value) == ("o", "("):
        inner, rest = _or(tokens[1:])
        if not rest or rest[0] != ("o", ")"):
            raise DialplanError("missing ')' in expression")
        return inner, rest[1:]
    if kind == "v":
        return value, tokens[1:]
    raise DialplanError(f"unexpected {value!r} in expression")


def split_args(data: str) -> list[str]:
    """App arguments split on commas outside parentheses/brackets/quotes."""
    out: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for c in data:
        if c == '"':
            quoted = not quoted
        elif not quoted and c in "([":
            depth += 1
        elif not quoted and c in ")]":
            depth -= 1
        if c == "," and depth == 0 and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    return out


# --------------------------------------------------------------------------- FastAGI caller


def parse_agi_args(line: str) -> list[str]:
    """Split a command line as Asterisk's ``parse_args``: spaces separate, ``"`` groups,
    ``\\`` escapes the next character."""
    args: list[str] = []
    cur: list[str] = []
    quoted = escaped = have = False
    for c in line:
        if escaped:
            cur.append(c)
            escaped = False
            have = True
        elif c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
            have = True
        elif c in " \t" and not quoted:
            if have:
                args.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(c)
            have = True
    if have:
        args.append("".join(cur))
    return args


@dataclass
class AgiOutcome:
    status: str  # SUCCESS | FAILURE | HANGUP | TIMEOUT (simulator only)
    commands: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    error: str = ""


_USAGE = {
    "SET VARIABLE": ["Usage: SET VARIABLE <variablename> <value>"],
    "GET VARIABLE": ["Usage: GET VARIABLE <variablename>"],
    "GET FULL VARIABLE": ["Usage: GET FULL VARIABLE <expression> [<channelname>]"],
    "VERBOSE": ["Usage: VERBOSE <message> <level>"],
    "EXEC": ["Usage: EXEC <application> <options>"],
    "SET CALLERID": ["Usage: SET CALLERID <number>"],
}
_DEAD_OK = {"GET VARIABLE", "GET FULL VARIABLE", "SET VARIABLE", "VERBOSE", "EXEC", "NOOP"}
#: command → (min args after the command words, max args)
_ARITY = {
    "ANSWER": (0, 0),
    "HANGUP": (0, 1),
    "NOOP": (0, 99),
    "GET VARIABLE": (1, 1),
    "GET FULL VARIABLE": (1, 2),
    "SET VARIABLE": (2, 2),
    "VERBOSE": (1, 2),
    "EXEC": (1, 99),
    "CHANNEL STATUS": (0, 1),
    "SET CALLERID": (1, 1),
}


class _Agi:
    """Asterisk's side of one FastAGI session."""

    def __init__(
        self,
        channel: Channel,
        expand: Callable[[str], str],
        exec_app: Callable[[str, str], str],
        hangup_at: int | None,
    ) -> None:
        self.channel = channel
        self.expand = expand
        self.exec_app = exec_app
        self.hangup_at = hangup_at
        self.count = 0

    def answer(self, line: str) -> list[str]:
        """The lines Asterisk writes for one command line (reply last)."""
        out: list[str] = []
        if self.hangup_at is not None and self.count == self.hangup_at and not self.channel.hung_up:
            self.channel.hung_up = True
            out.append("HANGUP")
        self.count += 1
        words = parse_agi_args(line)
        upper = [w.upper() for w in words]
        name = ""
        for size in (3, 2, 1):
            if " ".join(upper[:size]) in _ARITY:
                name = " ".join(upper[:size])
                break
        if not name:
            return [*out, "510 Invalid or unknown command"]
        args = words[len(name.split()) :]
        low, high = _ARITY[name]
        if not low <= len(args) <= high:
            usage = _USAGE.get(name, [f"Usage: {name}"])
            return [
                *out,
                "520-Invalid command syntax.  Proper usage follows:",
                *usage,
                "520 End of proper usage.",
            ]
        if self.channel.hung_up and name not in _DEAD_OK:
            return [*out, "511 Command Not Permitted on a dead channel or intercept routine"]
        return [*out, self._run(name, args)]

    def _run(self, name: str, args: list[str]) -> str:
        ch = self.channel
        if name == "ANSWER":
            return "200 result=0"
        if name == "HANGUP":
            ch.hung_up = True
            return "200 result=1"
        if name == "NOOP":
            return "200 result=0"
        if name == "GET VARIABLE":
            value = ch.get(args[0])
            return "200 result=0" if value is None else f"200 result=1 ({value})"
        if name == "GET FULL VARIABLE":
            return f"200 result=1 ({self.expand(args[0])})"
        if name == "SET VARIABLE":
            ch.set(args[0], args[1])
            return "200 result=1"
        if name == "VERBOSE":
            return "200 result=1"
        if name == "CHANNEL STATUS":
            return "200 result=6"
        if name == "SET CALLERID":
            match = re.match(r'^\s*"?([^"<]*)"?\s*<([^>]*)>\s*$', args[0])
            if match:
                ch.caller_name, ch.caller_num = match.group(1).strip(), match.group(2)
            else:
                ch.caller_num = args[0]
            return "200 result=1"
        if name == "EXEC":
            return f"200 result={self.exec_app(args[0], ' '.join(args[1:]))}"
        return "510 Invalid or unknown command"  # pragma: no cover - table covers all


async def call_fastagi(
    url: str,
    args: Sequence[str],
    channel: Channel,
    *,
    context: str = "from-pstn",
    exten: str = "s",
    priority: int = 1,
    expand: Callable[[str], str] | None = None,
    exec_app: Callable[[str, str], str] | None = None,
    hangup_at: int | None = None,
    connect_timeout: float = 2.0,
    session_timeout: float | None = None,
    env_overrides: Mapping[str, str] | None = None,
) -> AgiOutcome:
    """Run ``AGI(url,args…)`` against a FastAGI server as Asterisk would.

    ``hangup_at=k`` hangs the channel up just before the reply to command ``k``
    (0-based): Asterisk then writes ``HANGUP`` inline and answers as a dead channel.
    """
    started = time.monotonic()
    parts = urlsplit(url)
    if parts.scheme != "agi" or not parts.hostname:
        return AgiOutcome("FAILURE", error=f"not an agi:// URL: {url!r}")
    host, port = parts.hostname, parts.port or 4573
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), connect_timeout
        )
    except (OSError, TimeoutError) as exc:
        # "Couldn't connect to any host.  FastAGI failed." → AGISTATUS=FAILURE (§4.4)
        return AgiOutcome("FAILURE", elapsed=time.monotonic() - started, error=str(exc))
    script = url.split("://", 1)[1].partition("/")[2]
    env = {
        "network": "yes",
        **({"network_script": script} if script else {}),
        "request": url,
        "channel": channel.name,
        "language": channel.language,
        "type": channel.name.partition("/")[0],
        "uniqueid": channel.uniqueid,
        "version": "22.10.1",
        "callerid": channel.caller_num or "unknown",
        "calleridname": channel.caller_name or "unknown",
        "callingpres": "0",
        "callingani2": "0",
        "callington": "0",
        "callingtns": "0",
        "dnid": channel.variables.get("DNID", "unknown"),
        "rdnis": "unknown",
        "context": context,
        "extension": exten,
        "priority": str(priority),
        "enhanced": "0.0",
        "accountcode": "",
        "threadid": "140469439989440",
        **{f"arg_{i}": a for i, a in enumerate(args, 1)},
        **(env_overrides or {}),
    }
    agi = _Agi(
        channel,
        expand or functools.partial(_expand, lookup=lambda name: channel.get(name) or ""),
        exec_app or (lambda app, data: "-2"),
        hangup_at,
    )
    outcome = AgiOutcome("SUCCESS")
    block = "".join(f"agi_{k}: {v}\n" for k, v in env.items()) + "\n"

    async def converse() -> None:
        writer.write(block.encode())
        await writer.drain()
        while True:
            try:
                raw = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip():
                    outcome.commands.append(exc.partial.decode("utf-8", "replace"))
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                continue
            outcome.commands.append(line)
            replies = agi.answer(line)
            outcome.replies += replies
            writer.write("".join(r + "\n" for r in replies).encode())
            await writer.drain()

    try:
        await asyncio.wait_for(converse(), session_timeout)
    except TimeoutError:
        outcome.status = "TIMEOUT"
    except (ConnectionError, OSError) as exc:
        outcome.error = str(exc)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if outcome.status == "SUCCESS" and channel.hung_up:
        outcome.status = "HANGUP"
    outcome.elapsed = time.monotonic() - started
    return outcome


# --------------------------------------------------------------------------- interpreter


@dataclass(frozen=True, slots=True)
class DialAttempt:
    target: str
    timeout: str
    options: str
    status: str


@dataclass
class DialplanOutcome:
    """Where the call ended up.

    ``kind``: ``goto`` (left for a context not in this dialplan: ``destination``),
    ``answered`` (a Dial was answered and the call then hung up), ``return``,
    ``hangup``, ``end`` (ran off the end of the extension).
    """

    kind: str
    destination: tuple[str, str, str] | None = None
    dials: list[DialAttempt] = field(default_factory=list)
    agi: list[AgiOutcome] = field(default_factory=list)
    trail: list[str] = field(default_factory=list)
    channel: Channel = field(default_factory=Channel)

    @property
    def variables(self) -> dict[str, str]:
        return self.channel.variables


DialFn = Callable[[str, str], str]


def _expand(text: str, lookup: Callable[[str], str]) -> str:
    return substitute(text, lookup)


def _lookup_for(channel: Channel, context: str, exten: str, priority: int) -> Callable[[str], str]:
    special = {"EXTEN": exten, "CONTEXT": context, "PRIORITY": str(priority)}

    def lookup(name: str) -> str:
        if name in special:
            return special[name]
        return channel.get(name) or ""

    return lookup


def _always_no_answer(target: str, timeout: str) -> str:
    return "NOANSWER"


class DialplanRunner:
    """Runs a :class:`Dialplan` for one channel.

    ``dial(target, timeout)`` decides each ``Dial()``'s ``DIALSTATUS`` (``ANSWER``,
    ``NOANSWER``, ``BUSY``, …); ``hangup_at`` is passed to each FastAGI call.
    """

    def __init__(
        self,
        dialplan: Dialplan,
        *,
        dial: DialFn = _always_no_answer,
        hangup_at: int | None = None,
        agi_connect_timeout: float = 2.0,
        agi_session_timeout: float | None = 10.0,
        max_steps: int = 500,
    ) -> None:
        self.dialplan = dialplan
        self.dial = dial
        self.hangup_at = hangup_at
        self.agi_connect_timeout = agi_connect_timeout
        self.agi_session_timeout = agi_session_timeout
        self.max_steps = max_steps

    async def run(
        self, context: str, exten: str, channel: Channel, priority: int = 1
    ) -> DialplanOutcome:
        outcome = DialplanOutcome("end", channel=channel)
        found = self.dialplan.steps(context, exten)
        if found is None:
            raise DialplanError(f"no extension {exten!r} in context [{context}]")
        steps = found[1]
        index = self._index(steps, str(priority), context, exten)
        for _ in range(self.max_steps):
            if index >= len(steps):
                outcome.kind = "end"
                return outcome
            step = steps[index]

            lookup = _lookup_for(channel, context, exten, step.priority)
            data = substitute(step.data, lookup)
            app = step.app.lower()
            outcome.trail.append(f"{context},{exten},{step.priority} {step.app}({data})")
            index += 1
            if app in ("noop", "verbose", "answer", "progress", "ringing"):
                continue
            if app == "set":
                name, eq, value = data.partition("=")
                if not eq:
                    raise DialplanError(f"line {step.line}: Set needs NAME=value")
                channel.set(name.strip(), value)
            elif app in ("goto", "gotoif"):
                target = data
                if app == "gotoif":
                    cond, _, branches = data.partition("?")
                    yes, _, no = branches.partition(":")
                    target = yes if _truth(cond.strip()) else no
                    if not target.strip():
                        continue
                parts = [p.strip() for p in target.split(",")]
                if len(parts) == 1:
                    index = self._index(steps, parts[0], context, exten)
                    continue
                new_context = parts[0] if len(parts) == 3 else context
                new_exten = parts[-2]
                new_prio = parts[-1]
                jump = self.dialplan.steps(new_context, new_exten)
                if jump is None:
                    outcome.kind = "goto"
                    outcome.destination = (new_context, new_exten, new_prio)
                    return outcome
                context, exten, steps = new_context, new_exten, jump[1]
                index = self._index(steps, new_prio, context, exten)
            elif app == "agi":
                args = split_args(data)
                result = await call_fastagi(
                    args[0],
                    args[1:],
                    channel,
                    context=context,
                    exten=exten,
                    priority=step.priority,
                    expand=functools.partial(_expand, lookup=lookup),
                    exec_app=self._exec,
                    hangup_at=self.hangup_at,
                    connect_timeout=self.agi_connect_timeout,
                    session_timeout=self.agi_session_timeout,
                )
                outcome.agi.append(result)
                channel.set("AGISTATUS", result.status)
                if result.status == "HANGUP":
                    # AGI returns -1: the dialplan stops (the h extension would run).
                    outcome.kind = "hangup"
                    return outcome
            elif app == "dial":
                args = [*split_args(data), "", ""]
                status = self.dial(args[0], args[1])
                outcome.dials.append(DialAttempt(args[0], args[1], args[2], status))
                channel.set("DIALSTATUS", status)
                if status == "ANSWER":
                    # The bridged call ends when someone hangs up; the dialplan goes on
                    # (Asterisk continues only with the g option), so stop here.
                    outcome.kind = "answered"
                    return outcome
            elif app == "return":
                outcome.kind = "return"
                return outcome
            elif app in ("hangup", "busy", "congestion"):
                outcome.kind = "hangup"
                outcome.destination = (app, data, "")
                return outcome
            else:
                raise DialplanError(f"line {step.line}: application {step.app} not simulated")
        raise DialplanError(f"more than {self.max_steps} steps: a dialplan loop?")

    def _exec(self, app: str, data: str) -> str:
        if app.lower() in ("noop", "set", "verbose"):
            return "0"
        return "-2"

    @staticmethod
    def _index(steps: list[Step], target: str, context: str, exten: str) -> int:
        for i, step in enumerate(steps):
            if (target.isdigit() and step.priority == int(target)) or step.label == target:
                return i
        raise DialplanError(f"no priority or label {target!r} in {context},{exten}")
