"""AMI framing: the same messages whatever the read boundaries, nothing dropped."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.pbx.ami.framing import AmiFramer, AmiMessage, encode_action, iter_messages

TRACES = sorted((Path(__file__).parent / "traces").glob("**/*.ami"))
BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def frame(data: bytes, cuts: list[int]) -> tuple[str | None, list[list[tuple[str, str]]], int]:
    """Feed ``data`` cut at ``cuts``; (banner, every message's headers, bytes left over)."""
    framer = AmiFramer()
    out: list[AmiMessage] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out.extend(framer.feed(data[last:cut]))
        last = cut
    return framer.banner, [m.items() for m in out], framer.pending


def test_traces_exist() -> None:
    assert len(TRACES) >= 20


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name)
@settings(derandomize=True, deadline=None, max_examples=25)
@given(data=st.data())
def test_trace_any_read_boundaries(path: Path, data: st.DataObject) -> None:
    raw = path.read_bytes()
    whole = frame(raw, [])
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=60))
    assert frame(raw, cuts) == whole
    banner, messages, pending = whole
    assert banner == "Asterisk Call Manager/11.0.0"
    assert pending == 0
    # Every blank-line-terminated block is a message: none lost, none invented.
    assert len(messages) == raw.count(b"\r\n\r\n")


@pytest.mark.parametrize("path", TRACES[:3], ids=lambda p: p.name)
def test_trace_byte_by_byte(path: Path) -> None:
    raw = path.read_bytes()
    assert frame(raw, list(range(len(raw)))) == frame(raw, [])


def _cyrillic_stream() -> bytes:
    return (
        BANNER
        + "Event: Newchannel\r\nCallerIDName: Иван Петров\r\nUniqueid: 1.1\r\n\r\n".encode()
        + "Event: Hangup\r\nCallerIDName: Ольга\r\nCause: 16\r\n\r\n".encode()
    )


def test_splits_inside_crlf_and_inside_utf8() -> None:
    raw = _cyrillic_stream()
    whole = frame(raw, [])
    crlf_middles = [i + 1 for i in range(len(raw) - 1) if raw[i : i + 2] == b"\r\n"]
    utf8_middles = [i for i in range(len(raw)) if 0x80 <= raw[i] < 0xC0]  # continuation bytes
    assert crlf_middles and utf8_middles
    for cut in crlf_middles + utf8_middles:
        assert frame(raw, [cut]) == whole
    assert frame(raw, crlf_middles + utf8_middles) == whole
    assert whole[1][0][1] == ("CallerIDName", "Иван Петров")


@settings(derandomize=True, deadline=None, max_examples=200)
@given(
    st.lists(
        st.lists(
            st.tuples(
                st.text("ABCabc-_ :", min_size=0, max_size=8).filter(lambda k: ":" not in k),
                st.text(
                    st.characters(codec="utf-8", blacklist_characters="\r\n"),
                    max_size=12,
                ),
            ),
            min_size=1,
            max_size=5,
        ),
        max_size=6,
    ),
    st.data(),
)
def test_generated_messages_round_trip(
    messages: list[list[tuple[str, str]]], data: st.DataObject
) -> None:
    raw = BANNER + b"".join(AmiMessage(pairs).to_bytes() for pairs in messages)
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=20))
    banner, got, pending = frame(raw, cuts)
    assert banner == "Asterisk Call Manager/11.0.0"
    assert pending == 0
    # A value's leading space is the one after the colon: "K:  x" keeps " x".
    assert got == [[(k, v) for k, v in pairs] for pairs in messages]


@settings(derandomize=True, deadline=None, max_examples=200)
@given(st.binary(max_size=300), st.data())
def test_arbitrary_bytes_never_crash_and_split_the_same(raw: bytes, data: st.DataObject) -> None:
    stream = BANNER + raw + b"\r\n\r\n"
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    assert frame(stream, cuts) == frame(stream, [])


def test_several_messages_in_one_read_come_out_in_order() -> None:
    names = [f"E{i}" for i in range(50)]
    raw = b"".join(f"Event: {n}\r\nSeq: {i}\r\n\r\n".encode() for i, n in enumerate(names))
    out = AmiFramer(expect_banner=False).feed(raw)
    assert [m.event for m in out] == names
    assert [m.get("Seq") for m in out] == [str(i) for i in range(50)]


def test_repeated_keys_are_kept_in_order() -> None:
    raw = (
        b"Event: Status\r\nVariable: a=1\r\nChannel: PJSIP/101-1\r\n"
        b"Variable: b=2\r\nvariable: c=3\r\n\r\n"
    )
    (msg,) = AmiFramer(expect_banner=False).feed(raw)
    assert msg.get("Variable") == "a=1"
    assert msg.get_all("Variable") == ["a=1", "b=2", "c=3"]
    assert msg.to_json_obj() == {
        "Event": "Status",
        "Variable": ["a=1", "b=2"],
        "Channel": "PJSIP/101-1",
        "variable": "c=3",
    }
    assert msg.to_bytes() == raw


def test_undecodable_bytes_become_replacement_characters() -> None:
    raw = b"Event: Newchannel\r\nCallerIDName: \xff\xfeAnn\xd0\r\n\r\nEvent: Next\r\n\r\n"
    msgs = AmiFramer(expect_banner=False).feed(raw)
    assert [m.event for m in msgs] == ["Newchannel", "Next"]
    assert msgs[0].get("CallerIDName") == "\ufffd\ufffdAnn\ufffd"


def test_banner_taken_off_even_when_it_arrives_byte_by_byte() -> None:
    framer = AmiFramer()
    stream = BANNER + b"Response: Success\r\nActionID: 1\r\n\r\n"
    got: list[AmiMessage] = []
    for i in range(len(stream)):
        got.extend(framer.feed(stream[i : i + 1]))
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert [m.items() for m in got] == [[("Response", "Success"), ("ActionID", "1")]]


def test_stream_without_banner_keeps_its_first_message() -> None:
    framer = AmiFramer()
    (msg,) = framer.feed(b"Response: Success\r\nActionID: 1\r\n\r\n")
    assert framer.banner is None
    assert msg.response == "Success"


def test_trailing_partial_message_is_held_not_emitted() -> None:
    framer = AmiFramer(expect_banner=False)
    assert [m.event for m in framer.feed(b"Event: A\r\n\r\nEvent: B\r\nUniq")] == ["A"]
    assert framer.pending == len(b"Event: B\r\nUniq")
    assert framer.feed(b"ueid: 1\r\n\r") == []
    (msg,) = framer.feed(b"\n")
    assert msg.items() == [("Event", "B"), ("Uniqueid", "1")]
    assert framer.pending == 0


def test_stray_blank_lines_do_not_invent_messages_or_headers() -> None:
    raw = b"\r\nEvent: A\r\n\r\n\r\n\r\n\r\nEvent: B\r\n\r\n\r\n"
    whole = AmiFramer(expect_banner=False).feed(raw)
    assert [m.items() for m in whole] == [[("Event", "A")], [("Event", "B")]]


def test_line_without_colon_is_kept() -> None:
    (msg,) = AmiFramer(expect_banner=False).feed(b"Event: X\r\nodd line\r\nK:v\r\n\r\n")
    assert msg.items() == [("Event", "X"), ("", "odd line"), ("K", "v")]


def test_oversized_message_is_skipped_and_the_next_one_comes_out() -> None:
    framer = AmiFramer(expect_banner=False, max_message_bytes=100)
    assert framer.feed(b"Event: Big\r\nData: " + b"x" * 150) == []
    assert framer.oversized == 1
    assert framer.pending < 100
    out = framer.feed(b"x" * 150 + b"\r\n\r\nEvent: Small\r\n\r\n")
    assert [m.event for m in out] == ["Small"]
    assert framer.oversized == 1


def test_lazy_event_matches_the_parsed_headers() -> None:
    for msg in iter_messages(TRACES[0].read_bytes()):
        assert msg.event == dict(reversed(msg.items())).get("Event")


def test_encode_action() -> None:
    raw = encode_action("Originate", {"Channel": "PJSIP/101", "Variable": ["a=1", "b=2"]})
    assert raw == (
        b"Action: Originate\r\nChannel: PJSIP/101\r\nVariable: a=1\r\nVariable: b=2\r\n\r\n"
    )


@pytest.mark.parametrize("bad", ["a\r\nAction: Hangup", "x\n", "y\r"])
def test_encode_action_refuses_cr_lf(bad: str) -> None:
    with pytest.raises(ValueError, match="CR/LF"):
        encode_action("Originate", {"CallerID": bad})
    with pytest.raises(ValueError, match="CR/LF"):
        encode_action("Originate", {"Variable": ["ok=1", bad]})


@settings(derandomize=True, deadline=None, max_examples=300)
@given(
    lines=st.lists(
        st.tuples(
            st.sampled_from(["Event", "Uniqueid", "uniqueid", "Variable", "X:Y", "", "Value"]),
            st.sampled_from([": ", ":", ": : x"]),
            st.text(alphabet="ab: \tЖ", max_size=6),
        ),
        min_size=1,
        max_size=8,
    ),
    key=st.sampled_from(["Event", "Uniqueid", "UNIQUEID", "Variable", "X", "Value", "Missing"]),
)
def test_lookup_before_split_answers_as_the_split_message(
    lines: list[tuple[str, str, str]], key: str
) -> None:
    # A framed message answers ``get`` from its text until something splits it; both
    # paths must give the same answer for every header, present, repeated or missing.
    data = "".join(f"{k}{sep}{v}\r\n" for k, sep, v in lines).encode() + b"\r\n"
    (lazy,) = AmiFramer(expect_banner=False).feed(data)
    (split,) = AmiFramer(expect_banner=False).feed(data)
    split.items()
    assert lazy.get(key) == split.get(key)
