"""The ESL parser at its edges: limits at the boundary, the text of each refusal, bytes
that are not UTF-8, stray CRs, and which command replies are the outbound connect reply
(taken from a recorded FreeSWITCH 1.10.12 session, with one header left out)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from support.esl_transcripts import FIXTURES, read_transcript

from esl_bridge.esl.protocol import (
    ApiResponse,
    ChannelRecord,
    CommandReply,
    EslProtocolError,
    EventDecodeError,
    Frame,
    FrameParser,
    OtherMessage,
    decode,
    iter_messages,
    parse_event_plain,
    parse_x_number,
)


def _frame_bytes(headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    head = "".join(f"{name}: {value}\n" for name, value in headers).encode()
    return head + b"\n" + body


def _connect_reply() -> Frame:
    """The first frame of a recorded outbound session: the connect reply (channel data)."""
    transcript = read_transcript(FIXTURES / "esl_outbound_main_call.txt")
    parser = FrameParser()
    frames: list[Frame] = []
    for chunk in transcript.freeswitch_chunks():
        frames.extend(parser.feed(chunk))
    return frames[0]


def _without(frame: Frame, *names: str) -> Frame:
    """The same frame through the parser again, without the named headers."""
    kept = [(k, v) for k, v in frame.headers.items() if k not in names]
    (again,) = FrameParser().feed(_frame_bytes(kept))
    return again


# ------------------------------------------------------------------- the connect reply


def test_recorded_connect_reply_is_url_decoded_channel_data() -> None:
    frame = _connect_reply()
    assert frame.headers["Reply-Text"] == "%2BOK%0A"  # as the switch sends it
    reply = decode(frame)
    assert isinstance(reply, CommandReply)
    assert reply.text == "+OK" and reply.ok and reply.is_channel_data
    assert reply.headers["Reply-Text"] == "+OK\n"


@pytest.mark.parametrize("left_out", ["Event-Name", "Socket-Mode"])
def test_connect_reply_is_known_by_either_header(left_out: str) -> None:
    # Either header alone marks the channel data: its values are URL-decoded.
    frame = _without(_connect_reply(), left_out)
    reply = decode(frame)
    assert isinstance(reply, CommandReply)
    assert left_out not in reply.headers
    assert reply.text == "+OK" and reply.is_channel_data
    assert reply.channel().caller_name == frame.headers["Caller-Caller-ID-Name"]
    assert reply.headers["Reply-Text"] == "+OK\n"


def test_connect_reply_without_reply_text_has_empty_text() -> None:
    reply = decode(_without(_connect_reply(), "Reply-Text"))
    assert isinstance(reply, CommandReply)
    assert reply.text == "" and not reply.ok and reply.is_channel_data


def test_plain_command_reply_is_taken_as_sent() -> None:
    # Not channel data: Reply-Text is neither URL-decoded nor stripped.
    text = "-ERR 100%25 invalid "
    (frame,) = FrameParser().feed(
        _frame_bytes([("Content-Type", "command/reply"), ("Reply-Text", text)])
    )
    reply = decode(frame)
    assert isinstance(reply, CommandReply)
    assert reply.text == text and not reply.is_channel_data


def test_command_reply_without_reply_text_has_empty_text() -> None:
    (frame,) = FrameParser().feed(_frame_bytes([("Content-Type", "command/reply")]))
    reply = decode(frame)
    assert isinstance(reply, CommandReply)
    assert reply.text == "" and not reply.ok


def test_unknown_content_type_keeps_its_frame() -> None:
    (frame,) = FrameParser().feed(_frame_bytes([("Content-Type", "log/data")]))
    other = decode(frame)
    assert isinstance(other, OtherMessage) and other.frame is frame


def test_iter_messages_decodes_every_complete_frame() -> None:
    parser = FrameParser()
    data = _frame_bytes([("Content-Type", "auth/request")]) + _frame_bytes(
        [("Content-Type", "api/response"), ("Content-Length", "4")], b"+OK\n"
    )
    messages = list(iter_messages(parser, data + b"Content-Type: api/"))
    assert [type(m).__name__ for m in messages] == ["AuthRequest", "ApiResponse"]
    assert isinstance(messages[1], ApiResponse) and messages[1].text == "+OK"
    assert parser.buffered == len(b"Content-Type: api/")


# ---------------------------------------------------------------- header lines and bytes


def test_carriage_returns_end_no_value() -> None:
    # A CR before a line's LF is not part of the value; a line holding only a CR is blank.
    (frame,) = FrameParser().feed(b"Content-Type: command/reply\r\n\r\nReply-Text: +OK done\r\n\n")
    assert dict(frame.headers) == {"Content-Type": "command/reply", "Reply-Text": "+OK done"}


def test_event_header_block_may_start_with_a_blank_line() -> None:
    event = parse_event_plain(b"\r\nEvent-Name: HEARTBEAT\nUp-Time: 1\n\n")
    assert event.name == "HEARTBEAT" and event.get("Up-Time") == "1"


def test_bytes_that_are_not_utf8_are_replaced_not_fatal() -> None:
    body = b"-ERR \xff\n"
    data = b"Content-Type: api/response\nX-N\xe9me: v\xe9\nContent-Length: 7\n\n" + body
    (frame,) = FrameParser().feed(data)
    assert frame.headers["X-N\ufffdme"] == "v\ufffd"
    response = decode(frame)
    assert isinstance(response, ApiResponse)
    assert response.body == "-ERR \ufffd\n" and not response.ok


def test_event_values_that_are_not_utf8_are_replaced() -> None:
    event = parse_event_plain(b"Event-Name: CUSTOM\nX-V: a\xffb\nContent-Length: 2\n\n\xfe!")
    assert event.get("X-V") == "a\ufffdb" and event.body == "\ufffd!"


def test_a_bad_header_line_is_quoted_in_the_error() -> None:
    line = b"\xff" + b"x" * 99
    with pytest.raises(EslProtocolError) as caught:
        FrameParser().feed(b"Content-Type: command/reply\n" + line + b"\n\n")
    snippet = "\ufffd" + "x" * 59  # the first 60 bytes of the line
    assert str(caught.value) == f"ESL header line without 'Name: value': {snippet!r}"


def test_a_bad_event_header_names_the_line() -> None:
    with pytest.raises(EventDecodeError) as caught:
        parse_event_plain(b"Event-Name: X\nno colon\n\n")
    assert str(caught.value) == (
        "bad event header: ESL header line without 'Name: value': 'no colon'"
    )
    with pytest.raises(EventDecodeError) as caught:
        parse_event_plain(b"Up-Time: 1\n\n")
    assert str(caught.value) == "event without Event-Name"


def test_bad_content_length_is_quoted_up_to_40_characters() -> None:
    value = "9x" * 30
    with pytest.raises(EslProtocolError) as caught:
        FrameParser().feed(
            _frame_bytes([("Content-Type", "api/response"), ("Content-Length", value)])
        )
    assert str(caught.value) == f"bad Content-Length {value[:40]!r}"


def test_content_length_of_twelve_digits_is_read() -> None:
    data = _frame_bytes([("Content-Type", "api/response"), ("Content-Length", "000000000004")])
    (frame,) = FrameParser().feed(data + b"+OK\n")
    assert frame.body == b"+OK\n"
    with pytest.raises(EslProtocolError, match="bad Content-Length"):
        FrameParser().feed(
            _frame_bytes([("Content-Type", "api/response"), ("Content-Length", "0000000000004")])
        )


# ------------------------------------------------------------------- event-plain bodies


def test_event_inner_body_may_hold_blank_lines() -> None:
    inner = b"line one\n\nline three\n"
    event = parse_event_plain(b"Event-Name: CUSTOM\nContent-Length: %d\n\n" % len(inner) + inner)
    assert event.body == inner.decode()


def test_event_without_blank_line_keeps_its_last_header_whole() -> None:
    event = parse_event_plain(b"Event-Name: HEARTBEAT\nUp-Time: 12")
    assert event.name == "HEARTBEAT" and event.get("Up-Time") == "12" and event.body == ""


def test_event_inner_length_without_a_body_is_refused() -> None:
    with pytest.raises(EventDecodeError, match="shorter than its Content-Length"):
        parse_event_plain(b"Event-Name: BACKGROUND_JOB\nContent-Length: 4")


def test_event_with_an_empty_header_block_has_no_name() -> None:
    with pytest.raises(EventDecodeError, match="event without Event-Name"):
        parse_event_plain(b"\n\nEvent-Name: X\n\n")


def test_event_get_default_and_channel() -> None:
    event = parse_event_plain(
        b"Event-Name: CHANNEL_ANSWER\nUnique-ID: u-1\nAnswer-State: answered\n\n"
    )
    assert event.get("Missing", "fallback") == "fallback"
    assert event.get("Missing") is None
    record = event.channel()
    assert record.uuid == "u-1" and record.answer_state == "answered"


# ----------------------------------------------------------------------- framing limits


def test_header_cap_is_inclusive() -> None:
    cap = 32
    block = b"X-Filler: " + b"a" * (cap - len(b"X-Filler: "))
    assert len(block) == cap
    parser = FrameParser(max_header_bytes=cap)
    assert parser.feed(block) == []  # exactly at the cap, no end yet: wait for more
    (frame,) = parser.feed(b"\n\n")
    assert frame.headers["X-Filler"] == "a" * (cap - 10)
    (frame,) = FrameParser(max_header_bytes=cap).feed(block + b"\n\n")
    assert frame.headers["X-Filler"] == "a" * (cap - 10)
    with pytest.raises(EslProtocolError, match="without an end"):
        FrameParser(max_header_bytes=cap).feed(block + b"a")
    with pytest.raises(EslProtocolError, match=f"header block over {cap} bytes"):
        FrameParser(max_header_bytes=cap).feed(block + b"a\n\n")


def test_stray_carriage_returns_between_frames_are_dropped() -> None:
    parser = FrameParser()
    frames = parser.feed(_frame_bytes([("Content-Type", "auth/request")]) + b"\r\n\r\n")
    assert len(frames) == 1 and parser.buffered == 0
    parser.eof()  # nothing cut off


@pytest.mark.parametrize("left", [b" ", b"\t", b"X", b"\r\nX\r\n"])
def test_eof_with_any_partial_line_is_an_error(left: bytes) -> None:
    parser = FrameParser()
    assert parser.feed(_frame_bytes([("Content-Type", "auth/request")]) + left)
    with pytest.raises(EslProtocolError, match="in the middle of a frame"):
        parser.eof()


# ---------------------------------------------------------------------- channel records


def test_zero_rates_and_channels_are_unknown() -> None:
    record = ChannelRecord.from_headers(
        {
            "Unique-ID": "u1",
            "variable_read_rate": "0",
            "Channel-Read-Codec-Rate": "8000",
            "variable_rtp_use_codec_channels": "0",
        }
    )
    assert record.read_rate == 8000 and record.channels is None
    record = ChannelRecord.from_headers({"Unique-ID": "u1", "Channel-Read-Codec-Rate": "0"})
    assert record.read_rate is None


def test_channel_data_without_uuid_names_what_is_missing() -> None:
    with pytest.raises(EslProtocolError) as caught:
        ChannelRecord.from_headers({"Caller-Caller-ID-Number": "1001"})
    assert str(caught.value) == "channel data without Unique-ID"


@pytest.mark.parametrize(
    ("value", "uid"),
    [
        ("<1002", None),  # an angle bracket that is never closed
        ("1002>", None),
        ("1002;x=a@host", None),  # a host part without a scheme
        ("1002?h=a:b", None),
        ("sip:1002@host;maddr=a@b", "1002"),  # the user ends at the first '@'
        ("<sip:" + quote("1002") + "@host>", "1002"),
    ],
)
def test_x_number_odd_forms(value: str, uid: str | None) -> None:
    assert parse_x_number(value) == uid
