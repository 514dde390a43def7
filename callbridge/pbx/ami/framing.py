"""AMI wire framing: bytes in, :class:`AmiMessage` objects out; actions out as bytes.

Pure and incremental, in the manner of h11: the caller feeds whatever ``recv()``
returned and gets back every message completed by those bytes, in order. The same
messages come out whatever the read boundaries are (inside a CRLF, inside a multi-byte
UTF-8 character, between messages), because nothing is decoded until a whole
message (up to its blank line) is in the buffer. Undecodable bytes become U+FFFD
(``errors="replace"``) and never drop or break a message.

Values are kept raw: no unescaping of Asterisk's C-escapes (see :func:`unescape`
for the fields where a consumer wants it).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import repeat

__all__ = [
    "BANNER_PREFIX",
    "AmiFramer",
    "AmiMessage",
    "encode_action",
    "unescape",
]

BANNER_PREFIX = "Asterisk Call Manager/"
_END = b"\r\n\r\n"


class AmiMessage:
    """One AMI message: an ordered multimap of header name → raw string value.

    ``get`` answers the first value of a header (exact spelling first, as Asterisk
    always spells event headers canonically, then case-insensitively); ``get_all``
    answers every value of a repeated header (``Variable``, ``ChanVariable``,
    ``Output``). ``items()`` keeps the order and the repeats as sent.

    A message framed off the wire keeps its decoded text and splits it into headers on
    first use: the reader task only frames, and the split (the costly part) runs in
    whoever consumes the message. Nothing is lost either way — the text is the whole
    message. ``event`` of a message whose first line is ``Event:`` is answered without
    splitting, so a consumer can drop the events it ignores for almost nothing.
    """

    __slots__ = ("_first", "_pairs", "_raw")

    def __init__(self, pairs: list[tuple[str, str]], first: dict[str, str] | None = None) -> None:
        self._pairs: list[tuple[str, str]] | None = pairs
        self._raw: str | None = None
        if first is None:
            first = {}
            for key, value in pairs:
                first.setdefault(key, value)
        self._first: dict[str, str] | None = first

    @classmethod
    def _from_raw(cls, raw: str) -> AmiMessage:
        msg = cls.__new__(cls)
        msg._raw = raw
        msg._pairs = None
        msg._first = None
        return msg

    def _split(self) -> tuple[list[tuple[str, str]], dict[str, str]]:
        pairs = self._pairs
        first = self._first
        if pairs is not None and first is not None:
            return pairs, first
        pairs = _split_block(self._raw or "")
        first = dict(pairs)
        if len(first) != len(pairs):
            # A repeated header: dict() over the reversed pairs keeps the *first* value.
            first = dict(reversed(pairs))
        self._pairs = pairs
        self._first = first
        self._raw = None
        return pairs, first

    @classmethod
    def from_mapping(cls, headers: Mapping[str, str | list[str]]) -> AmiMessage:
        """Build a message from ``{"Event": "Hangup", "Variable": ["a=1", "b=2"]}``."""
        pairs: list[tuple[str, str]] = []
        for key, value in headers.items():
            if isinstance(value, list):
                pairs.extend((key, item) for item in value)
            else:
                pairs.append((key, value))
        return cls(pairs)

    def get(self, key: str, default: str | None = None) -> str | None:
        raw = self._raw
        if raw is not None:
            # Not split yet: look the one header up in the text (C-speed ``find``), so a
            # consumer reading two headers of a noise event never pays for all twenty.
            value = _find_header(raw, key)
            if value is not None:
                return value
            if key.lower() not in raw.lower():
                return default
            # Present in another spelling: the exact rules below decide.
        pairs, first = self._split()
        value = first.get(key)
        if value is not None:
            return value
        lowered = key.lower()
        for name, val in pairs:
            if name.lower() == lowered:
                return val
        return default

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def get_all(self, key: str) -> list[str]:
        lowered = key.lower()
        return [val for name, val in self._split()[0] if name.lower() == lowered]

    def items(self) -> list[tuple[str, str]]:
        return list(self._split()[0])

    def keys(self) -> Iterator[str]:
        return iter(self._split()[1])

    @property
    def event(self) -> str | None:
        """The event name, or ``None`` for a response."""
        raw = self._raw
        if raw is not None and raw.startswith("Event: "):
            # The first header is Event, so its value is the first Event value.
            eol = raw.find("\r\n")
            return raw[7:] if eol < 0 else raw[7:eol]
        return self._split()[1].get("Event")

    @property
    def response(self) -> str | None:
        return self._split()[1].get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def to_json_obj(self) -> dict[str, str | list[str]]:
        """Headers as sent: a repeated header becomes a list of its values, in order."""
        out: dict[str, str | list[str]] = {}
        for key, value in self._split()[0]:
            prev = out.get(key)
            if prev is None:
                out[key] = value
            elif isinstance(prev, list):
                prev.append(value)
            else:
                out[key] = [prev, value]
        return out

    def to_bytes(self) -> bytes:
        """Serialise exactly as Asterisk frames a message (CRLF lines, blank line)."""
        return "".join(f"{k}: {v}\r\n" for k, v in self._split()[0]).encode() + b"\r\n"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AmiMessage) and self._split()[0] == other._split()[0]

    def __hash__(self) -> int:
        return hash(tuple(self._split()[0]))

    def __repr__(self) -> str:
        head = self.event or self.response or "?"
        return f"<AmiMessage {head} {len(self._split()[0])} headers>"


def _find_header(raw: str, key: str) -> str | None:
    """The first value of header ``key`` (exact spelling) in an unsplit message, if any.

    Same answer as splitting: a line's key is everything before its first colon, and one
    space after the colon is dropped.
    """
    if ":" in key or "\r" in key or "\n" in key:
        return None
    head = key + ":"
    if raw.startswith(head):
        start = len(head)
    else:
        at = raw.find("\r\n" + head)
        if at < 0:
            return None
        start = at + 2 + len(head)
    if raw.startswith(" ", start):
        start += 1
    end = raw.find("\r\n", start)
    return raw[start:] if end < 0 else raw[start:end]


def _split_line(line: str) -> tuple[str, str]:
    key, sep, value = line.partition(":")
    if not sep:
        # A line without a colon (never sent by Asterisk 12+); keep it, don't drop it.
        return ("", line)
    if value[:1] == " ":
        value = value[1:]
    return (key, value)


def _split_block(block: str) -> list[tuple[str, str]]:
    # Fast path: the usual "Key: Value" line, split in C by partition(": "). It gives the
    # same answer as "key up to the first colon, one space dropped" whenever the key has
    # no colon; any other line (no ": ", a colon in the key) takes the exact slow path.
    return [
        (key, value) if sep and ":" not in key else _split_line(key + sep + value)
        for key, sep, value in map(str.partition, block.split("\r\n"), repeat(": "))
    ]


def _trim_block(block: str) -> str:
    # Only a stream with stray blank lines gets here: take whole CRLFs off both ends so
    # the same message comes out whichever side of a read boundary the blank fell.
    while block.startswith("\r\n"):
        block = block[2:]
    while block.endswith("\r\n"):
        block = block[:-2]
    return block


class AmiFramer:
    """Incremental AMI framer for one connection (Asterisk → client direction).

    ``feed(data)`` returns the messages completed by ``data``. The one-line banner
    (``Asterisk Call Manager/x.y.z``), which is *not* followed by a blank line, is
    taken off the front and exposed as :attr:`banner`. ``expect_banner=False`` frames
    a stream with no banner (a trace cut after the greeting, or the client→Asterisk
    direction).
    """

    __slots__ = (
        "_buf",
        "_expect_banner",
        "_skipping",
        "banner",
        "max_message_bytes",
        "oversized",
    )

    def __init__(self, *, expect_banner: bool = True, max_message_bytes: int = 4 << 20) -> None:
        self._buf = bytearray()
        self._expect_banner = expect_banner
        self._skipping = False
        self.banner: str | None = None
        #: A message that grows past this without its blank line is discarded up to its
        #: blank line (counted in :attr:`oversized`) so a broken peer cannot make the
        #: buffer grow forever; the messages after it come out as usual.
        self.max_message_bytes = max_message_bytes
        self.oversized = 0

    def feed(self, data: bytes) -> list[AmiMessage]:
        buf = self._buf
        buf += data
        if self._expect_banner:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self.max_message_bytes:
                    self._expect_banner = False
                else:
                    return []
            else:
                line = bytes(buf[:nl]).rstrip(b"\r").decode("utf-8", "replace")
                self._expect_banner = False
                if line.startswith(BANNER_PREFIX):
                    self.banner = line
                    del buf[: nl + 1]
        end = buf.rfind(_END)
        if end < 0:
            if len(buf) > self.max_message_bytes:
                if not self._skipping:
                    self.oversized += 1
                    self._skipping = True
                # Keep the last 3 bytes: they may be the start of the blank line.
                del buf[:-3]
            return []
        if self._skipping:
            self._skipping = False
            first_end = buf.find(_END)
            del buf[: first_end + 4]
            end -= first_end + 4
            if end < 0:
                return []
        text = buf[:end].decode("utf-8", "replace")
        del buf[: end + 4]
        # Decoding the whole run at once is safe: a CR or LF byte is never swallowed by
        # an invalid sequence's U+FFFD, so the text splits exactly where the bytes do.
        messages: list[AmiMessage] = []
        append = messages.append
        from_raw = AmiMessage._from_raw
        for block in text.split("\r\n\r\n"):
            if block and block[0] != "\r" and block[-1] != "\n":
                append(from_raw(block))
            else:
                block = _trim_block(block)
                if block:
                    append(from_raw(block))
        return messages

    @property
    def pending(self) -> int:
        """Bytes buffered that do not yet form a complete message."""
        return len(self._buf)


def iter_messages(data: bytes, *, expect_banner: bool = True) -> list[AmiMessage]:
    """Frame a whole byte string (a trace file) at once."""
    return AmiFramer(expect_banner=expect_banner).feed(data)


def _header_value(value: str) -> str:
    # A CR or LF inside a value would end the header (or the whole action) early and
    # let the rest be read as further headers: header injection. Refuse it here, at
    # the one place every action goes through.
    if "\r" in value or "\n" in value:
        raise ValueError(f"AMI header value contains CR/LF: {value!r}")
    return value


def encode_action(
    action: str,
    headers: Mapping[str, str | int | Iterable[str]] | None = None,
) -> bytes:
    """Encode an action. Iterable values (``Variable``) become repeated headers."""
    lines = [f"Action: {_header_value(action)}\r\n"]
    for key, value in (headers or {}).items():
        if isinstance(value, str | int):
            lines.append(f"{key}: {_header_value(str(value))}\r\n")
        else:
            lines.extend(f"{key}: {_header_value(str(item))}\r\n" for item in value)
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def unescape(value: str) -> str:
    """Undo Asterisk's C-escaping of CallerIDName, ConnectedLineName, VarSet Value."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == "\\" and i + 1 < n and value[i + 1] in _ESCAPES:
            out.append(_ESCAPES[value[i + 1]])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)
