"""The client→Asterisk half of AMI for the simulator: framing actions, building answers.

Pure. :class:`ActionReader` frames actions as Asterisk's manager.c does (``\\r\\n`` or
a bare ``\\n`` ends a line, an empty line ends the action, at most 1024 bytes a line
and 128 lines an action). The ``*_response`` helpers build answers with the header
order Asterisk 22 uses (``Response``, ``ActionID``, then the rest).
"""

from __future__ import annotations

from dataclasses import dataclass

from callbridge.pbx.ami.framing import AmiMessage

__all__ = [
    "LIST_COMMANDS",
    "ActionReader",
    "BadAction",
    "error",
    "goodbye",
    "list_commands",
    "success",
    "unknown",
]

MAX_LINE = 1024
MAX_LINES = 128


@dataclass(frozen=True)
class BadAction:
    """An action Asterisk would refuse to parse; ``message`` is its error text."""

    message: str


class ActionReader:
    """Incremental framing of actions sent by a client."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._lines: list[tuple[str, str]] = []
        self._too_long = False
        self._too_many = False

    def feed(self, data: bytes) -> list[AmiMessage | BadAction]:
        out: list[AmiMessage | BadAction] = []
        self._buf += data
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    self._too_long = True
                    self._buf.clear()
                return out
            raw = bytes(self._buf[:nl]).rstrip(b"\r")
            del self._buf[: nl + 1]
            if not raw:
                if self._too_long or self._too_many:
                    reason = "line too long" if self._too_long else "too many lines"
                    out.append(BadAction(f"Failed to parse message: {reason}"))
                elif self._lines:
                    out.append(AmiMessage(self._lines))
                self._lines = []
                self._too_long = self._too_many = False
                continue
            if len(raw) > MAX_LINE:
                self._too_long = True
                continue
            if len(self._lines) >= MAX_LINES:
                self._too_many = True
                continue
            key, _, value = raw.decode("utf-8", "replace").partition(":")
            self._lines.append((key.strip(), value.lstrip(" ")))


def _head(response: str, action_id: str | None) -> list[tuple[str, str]]:
    pairs = [("Response", response)]
    if action_id is not None:
        pairs.append(("ActionID", action_id))
    return pairs


def success(action_id: str | None, *pairs: tuple[str, str]) -> AmiMessage:
    return AmiMessage(_head("Success", action_id) + list(pairs))


def error(action_id: str | None, message: str) -> AmiMessage:
    return AmiMessage([*_head("Error", action_id), ("Message", message)])


def goodbye(action_id: str | None) -> AmiMessage:
    return AmiMessage([*_head("Goodbye", action_id), ("Message", "Thanks for all the fish.")])


def unknown(action_id: str | None, name: str) -> AmiMessage:
    return error(
        action_id,
        f"Invalid/unknown command: {name}. Use Action: ListCommands to show available commands.",
    )


#: (action, synopsis, privilege) as Asterisk 22 lists them for a ``write = all`` user.
LIST_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("AbsoluteTimeout", "Set absolute timeout.", "system,call,all"),
    ("Atxfer", "Attended transfer.", "call,all"),
    ("BlindTransfer", "Blind transfer channel(s) to the given destination", "call,all"),
    ("Bridge", "Bridge two channels already in the PBX.", "call,all"),
    ("CancelAtxfer", "Cancel an attended transfer.", "call,all"),
    ("Challenge", "Generate Challenge for MD5 Auth.", "<none>"),
    ("Command", "Execute Asterisk CLI Command.", "command,all"),
    ("CoreSettings", "Show PBX core settings (version etc).", "system,reporting,all"),
    ("CoreShowChannels", "List currently active channels.", "system,reporting,all"),
    ("CoreStatus", "Show PBX core status variables.", "system,reporting,all"),
    ("DBDel", "Delete DB entry.", "system,all"),
    ("DBGet", "Get DB Entry.", "system,reporting,all"),
    ("DBPut", "Put DB entry.", "system,all"),
    ("Events", "Control Event Flow.", "<none>"),
    ("ExtensionState", "Check Extension Status.", "call,reporting,all"),
    ("ExtensionStateList", "List the current known extension states.", "call,reporting,all"),
    ("Filter", "Dynamically add filters for the current manager session.", "system,all"),
    ("Getvar", "Gets a channel variable or function value.", "call,reporting,all"),
    ("Hangup", "Hangup channel.", "system,call,all"),
    ("ListCategories", "List categories in configuration file.", "config,all"),
    ("ListCommands", "List available manager commands.", "<none>"),
    ("Login", "Login Manager.", "<none>"),
    ("Logoff", "Logoff Manager.", "<none>"),
    ("MixMonitor", "Record a call and mix the audio during the recording.", "system,all"),
    ("Originate", "Originate a call.", "originate,all"),
    ("PJSIPShowEndpoints", "Lists PJSIP endpoints.", "system,all"),
    ("Ping", "Keepalive command.", "<none>"),
    ("QueueAdd", "Add interface to queue.", "agent,all"),
    ("QueuePause", "Makes a queue member temporarily unavailable.", "agent,all"),
    ("QueueRemove", "Remove interface from queue.", "agent,all"),
    ("QueueStatus", "Show queue status.", "<none>"),
    ("QueueSummary", "Show queue summary.", "<none>"),
    ("Redirect", "Redirect (transfer) a call.", "call,all"),
    ("Setvar", "Sets a channel variable or function value.", "call,all"),
    ("Status", "List channel status.", "system,call,reporting,all"),
    ("UserEvent", "Send an arbitrary event.", "user,all"),
    ("WaitEvent", "Wait for an event to occur.", "<none>"),
)


def list_commands(action_id: str | None) -> AmiMessage:
    return success(action_id, *((n, f"{syn} (Priv: {priv})") for n, syn, priv in LIST_COMMANDS))
