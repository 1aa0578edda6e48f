"""The sans-I/O ESL parser against every recorded FreeSWITCH 1.10.12 transcript."""

from __future__ import annotations

import contextlib
import random
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.budget import examples
from support.esl_transcripts import Transcript, all_transcripts, load_summary, read_transcript

from esl_bridge.esl.protocol import (
    ApiResponse,
    AuthRequest,
    ChannelRecord,
    CommandReply,
    DisconnectNotice,
    EslProtocolError,
    Event,
    EventDecodeError,
    Frame,
    FrameParser,
    Message,
    RudeRejection,
    decode,
    parse_event_plain,
    parse_x_number,
)

TRANSCRIPTS = all_transcripts()
SUMMARIZED = [
    p for p in TRANSCRIPTS if (p.parent / "summaries" / f"{p.stem}.summary.json").exists()
]


def _frames(chunks: list[bytes]) -> list[Frame]:
    parser = FrameParser()
    frames: list[Frame] = []
    for chunk in chunks:
        frames.extend(parser.feed(chunk))
    parser.eof()
    return frames


def _messages(transcript: Transcript) -> list[Message]:
    return [decode(f) for f in _frames(transcript.freeswitch_chunks())]


def _event_names(messages: list[Message], *, with_app: bool) -> list[str]:
    names = []
    for message in messages:
        if isinstance(message, Event):
            name = message.name
            if with_app and name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
                name += "/" + (message.application or "")
            names.append(name)
    return names


def test_every_transcript_is_covered() -> None:
    assert len(TRANSCRIPTS) == 14
    assert len(SUMMARIZED) == 13  # the full-chain control connection has no summary


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
def test_chunking_does_not_matter(path) -> None:
    transcript = read_transcript(path)
    chunks = transcript.freeswitch_chunks()
    recorded = _frames(chunks)
    assert recorded, "every transcript has FreeSWITCH frames"
    blob = b"".join(chunks)
    assert _frames([blob]) == recorded
    rng = random.Random(path.stem)
    pieces, pos = [], 0
    while pos < len(blob):
        step = rng.randint(1, 700)
        pieces.append(blob[pos : pos + step])
        pos += step
    assert _frames(pieces) == recorded


@pytest.mark.parametrize("path", TRANSCRIPTS[:1] + TRANSCRIPTS[2:3], ids=lambda p: p.stem)
def test_byte_at_a_time(path) -> None:
    blob = b"".join(read_transcript(path).freeswitch_chunks())
    assert _frames([blob[i : i + 1] for i in range(len(blob))]) == _frames([blob])


@pytest.mark.parametrize("path", SUMMARIZED, ids=lambda p: p.stem)
def test_event_order_matches_summary(path) -> None:
    transcript = read_transcript(path)
    summary = transcript.summary()
    messages = _messages(transcript)
    key = next(k for k in ("events_seen", "all_events", "events") if k in summary or k == "events")
    if "events_seen" in summary:
        assert _event_names(messages, with_app=True) == summary["events_seen"]
    elif "all_events" in summary:
        assert _event_names(messages, with_app=False) == summary["all_events"]
    elif key in summary:
        assert _event_names(messages, with_app=False) == summary["events"]


@pytest.mark.parametrize(
    "path", [p for p in SUMMARIZED if p.stem.startswith("esl_outbound")], ids=lambda p: p.stem
)
def test_outbound_non_event_messages_match_summary(path) -> None:
    transcript = read_transcript(path)
    summary = transcript.summary()
    frames = _frames(transcript.freeswitch_chunks())
    non_events = [
        {"ctype": f.content_type, **f.headers}
        for f in frames
        if f.content_type != "text/event-plain"
    ]
    if "non_event_msgs" in summary:
        assert non_events == summary["non_event_msgs"]
    # The first frame is the connect reply: command/reply, no Content-Length.
    first = frames[0]
    assert "Content-Length" not in first.headers
    assert list(first.headers)[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    assert first.headers["Reply-Text"] == "%2BOK%0A"
    reply = decode(first)
    assert isinstance(reply, CommandReply) and reply.is_channel_data
    # The summary holds the connect reply URL-decoded, as decode() gives it.
    assert dict(reply.headers) == summary["connect_reply"]
    assert reply.text == "+OK" and reply.ok
    replies = [m for m in map(decode, frames[1:3])]
    assert [r.text for r in replies if isinstance(r, CommandReply)] == [
        summary["myevents_reply"],
        summary["linger_reply"],
    ]


@pytest.mark.parametrize(
    "path", [p for p in SUMMARIZED if "dtmf_events" in load_summary(p.stem)], ids=lambda p: p.stem
)
def test_dtmf_digits(path) -> None:
    transcript = read_transcript(path)
    expected = transcript.summary()["dtmf_events"]
    dtmf = [m for m in _messages(transcript) if isinstance(m, Event) and m.name == "DTMF"]
    assert [e.get("DTMF-Digit") for e in dtmf] == [e["DTMF-Digit"] for e in expected]
    for event, want in zip(dtmf, expected, strict=True):
        for key, value in want.items():
            assert event.get(key) == value
        assert event.get("DTMF-Source") == "RTP"


def test_outbound_main_call_details() -> None:
    transcript = read_transcript(TRANSCRIPTS[0].parent / "esl_outbound_main_call.txt")
    messages = _messages(transcript)
    connect = messages[0]
    assert isinstance(connect, CommandReply)
    record = connect.channel()
    assert record.uuid == "255574a3-d361-44e5-bc5a-1b9f4df22e02"
    assert record.caller_number == "1001" and record.caller_name == "1001"
    assert record.destination_number == "01002"
    assert record.x_number == "<sip:1002@127.0.0.1>"
    assert record.callee_uid == "1002"
    assert record.cus_data is None
    assert record.direction == "inbound"
    assert record.answer_state == "ringing"
    assert record.socket_mode == "async" and record.control == "full" and record.async_full
    assert record.read_codec is None and record.read_rate is None and not record.has_media
    assert record.headers["variable_effective_caller_id_name"] == "Extension 1001"
    assert record.headers["variable_DP_MATCH"] == "ARRAY::01002|:1002"

    answer = next(m for m in messages if isinstance(m, Event) and m.name == "CHANNEL_ANSWER")
    merged = record.merged(answer.headers)
    assert merged.read_codec == "PCMU" and merged.read_rate == 8000 and merged.channels == 1
    assert merged.answer_state == "answered" and merged.has_media
    assert merged.callee_uid == "1002"  # kept from the connect reply

    api = next(m for m in messages if isinstance(m, ApiResponse))
    assert api.ok and api.text == "+OK 255574a3-d361-44e5-bc5a-1b9f4df22e02 sent DTMF 789."

    notices = [m for m in messages if isinstance(m, DisconnectNotice)]
    assert [n.disposition for n in notices] == ["linger", "disconnect"]
    assert notices[0].linger and notices[0].headers["Linger-Time"] == "-1"
    assert notices[0].session_uuid == record.uuid
    assert (
        notices[1].body == "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"
    )
    bye = messages[-2]
    assert isinstance(bye, CommandReply) and bye.text == "+OK bye"


def test_linger_notice_may_come_before_the_hangup_events() -> None:
    path = TRANSCRIPTS[0].parent / "esl_outbound_rtp_autoflush_phone_dtmf.txt"
    messages = _messages(read_transcript(path))
    kinds = [m.name if isinstance(m, Event) else type(m).__name__ for m in messages]
    linger = kinds.index("DisconnectNotice")
    assert kinds.index("CHANNEL_HANGUP") > linger
    assert kinds.index("CHANNEL_HANGUP_COMPLETE") > linger


def test_originated_socket_legs() -> None:
    base = TRANSCRIPTS[0].parent
    quoted = _messages(
        read_transcript(base / "esl_outbound_originate_socket_quoted_async_full.txt")
    )
    assert isinstance(quoted[0], CommandReply)
    record = quoted[0].channel()
    assert record.direction == "outbound" and record.async_full
    assert record.caller_name == "Outbound Call"
    assert record.callee_uid is None and record.x_number is None
    assert record.headers["Caller-Orig-Caller-ID-Number"] == "1005"
    assert record.read_rate == 8000

    static = _messages(
        read_transcript(base / "esl_outbound_originate_socket_unquoted_static_mode.txt")
    )
    assert isinstance(static[0], CommandReply)
    srecord = static[0].channel()
    assert (srecord.socket_mode, srecord.control) == ("static", "single-channel")
    assert not srecord.async_full
    linger = static[2]
    assert isinstance(linger, CommandReply) and not linger.ok
    assert linger.text == "-ERR command not found"


def test_inbound_main_matches_summary() -> None:
    transcript = read_transcript(TRANSCRIPTS[0].parent / "esl_inbound_main.txt")
    summary = transcript.summary()
    messages = _messages(transcript)
    assert isinstance(messages[0], AuthRequest)
    auth = messages[1]
    assert isinstance(auth, CommandReply) and auth.text == "+OK accepted" and auth.ok
    status, unknown = messages[2], messages[3]
    assert isinstance(status, ApiResponse) and status.body == summary["api_status"]["body"]
    assert isinstance(unknown, ApiResponse) and not unknown.ok
    assert unknown.body == summary["api_unknown"]["body"]
    subscribe, bg = messages[4], messages[5]
    assert isinstance(subscribe, CommandReply)
    assert subscribe.text == summary["event_reply"]["Reply-Text"]
    assert isinstance(bg, CommandReply)
    assert bg.job_uuid == summary["bgapi_reply"]["Job-UUID"]
    assert bg.text == summary["bgapi_reply"]["Reply-Text"]

    jobs = [m for m in messages if isinstance(m, Event) and m.name == "BACKGROUND_JOB"]
    assert [j.body for j in jobs] == [
        summary["bg_job_body"],
        summary["bgapi_originate_unregistered"]["job_body"],
        summary["bgapi_socket_job_body"],
    ]
    assert jobs[0].job_uuid == summary["bgapi_reply"]["Job-UUID"]
    assert jobs[0].get("Job-Command") == "originate"
    assert jobs[0].get("Job-Command-Arg") == "{origination_caller_id_number=1005}user/1001 &park()"
    # greenswitch 0.0.19 puts the body into this header; it must stay a clean number.
    assert jobs[0].get("Content-Length") == "41"

    api_bodies = [m.body for m in messages if isinstance(m, ApiResponse)]
    for key in ("uuid_send_dtmf", "uuid_kill", "api_originate_unregistered"):
        assert summary[key]["body"] in api_bodies
    assert summary["api_originate_nonexistent_user"]["body"] == "-ERR SUBSCRIBER_ABSENT\n"
    assert "-ERR SUBSCRIBER_ABSENT\n" in api_bodies

    dtmf = [m for m in messages if isinstance(m, Event) and m.name == "DTMF"]
    assert len(dtmf) == len(summary["dtmf_events_from_phone"])
    for event, want in zip(dtmf, summary["dtmf_events_from_phone"], strict=True):
        assert dict(event.headers) == want  # every header, URL-decoded

    hangup = next(
        m for m in messages if isinstance(m, Event) and m.name == "CHANNEL_HANGUP_COMPLETE"
    )
    for key, value in summary["hangup_complete"].items():
        assert hangup.get(key) == value
    assert messages[-2] == CommandReply("+OK bye", messages[-2].headers)  # type: ignore[union-attr]
    last = messages[-1]
    assert isinstance(last, DisconnectNotice) and last.disposition is None


def test_auth_fail_matches_summary() -> None:
    transcript = read_transcript(TRANSCRIPTS[0].parent / "esl_inbound_auth_fail.txt")
    summary = transcript.summary()
    frames = _frames(transcript.freeswitch_chunks())
    assert [[f.content_type, dict(f.headers), f.body.decode()] for f in frames] == summary["all"]
    reply = decode(frames[1])
    assert isinstance(reply, CommandReply) and reply.text == "-ERR invalid" and not reply.ok


# ----------------------------------------------------------------------- channel record


@pytest.mark.parametrize(
    ("value", "uid"),
    [
        ("<sip:1002@127.0.0.1>", "1002"),
        ("sip:1002@host", "1002"),
        ("<sip:1002@host;transport=udp>", "1002"),
        ("<sip:1002;user=phone@host>", "1002"),
        ("1002", "1002"),
        ('"Bob" <sip:1002@host>', "1002"),
        ('"Bob \\"B\\" <x>" <sip:1002@host>', "1002"),
        ("Bob <sip:1002@host:5060>", "1002"),
        ("sips:1002@host", "1002"),
        ("SIP:1002@host", "1002"),
        ("tel:1002", "1002"),
        ("tel:+861012345;phone-context=example.com", "+861012345"),
        ("<tel:1002>", "1002"),
        ("  <sip:alice_01@example.com>  ", "alice_01"),
        (None, None),
        ("", None),
        ("   ", None),
        ("<sip:127.0.0.1>", None),
        ("sip:@host", None),
        ("<sip:10 02@host>", None),
        ("mailto:1002@host", None),
        ("1002@host", None),
        ("<>", None),
        ("sip:" + "1" * 65 + "@host", None),
    ],
)
def test_x_number_forms(value: str | None, uid: str | None) -> None:
    assert parse_x_number(value) == uid


def test_read_rate_prefers_variable_read_rate() -> None:
    # G.722: read_rate 16000 while the RTP clock rate says 8000 (docs/freeswitch.rst, fact 2).
    record = ChannelRecord.from_headers(
        {
            "Unique-ID": "u1",
            "Channel-Read-Codec-Name": "G722",
            "Channel-Read-Codec-Rate": "16000",
            "variable_rtp_use_codec_rate": "8000",
            "variable_read_rate": "16000",
            "variable_rtp_use_codec_channels": "2",
            "variable_sip_h_X-CusData": "order 42, vip",
        }
    )
    assert record.read_rate == 16000 and record.channels == 2 and record.read_codec == "G722"
    assert record.cus_data == "order 42, vip"
    with pytest.raises(EslProtocolError):
        ChannelRecord.from_headers({"Caller-Caller-ID-Number": "1001"})


@pytest.mark.parametrize(
    "stem",
    [
        "outbound_codec_g722_no_transcript",
        "outbound_codec_opus_mono_no_transcript",
        "outbound_codec_opus_stereo_no_transcript",
    ],
)
def test_codec_summaries_connect_reply(stem: str) -> None:
    headers = {k: unquote(v) for k, v in load_summary(stem)["connect_reply"].items()}
    record = ChannelRecord.from_headers(headers)
    assert record.callee_uid == "1002" and record.async_full and record.caller_number == "1003"
    # Before answer there is no read codec (docs/freeswitch.rst, fact 5).
    assert not record.has_media


# ---------------------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"Content-Type: api/response\nContent-Length: abc\n\n", "bad Content-Length"),
        (b"Content-Type: api/response\nContent-Length: -5\n\n", "bad Content-Length"),
        (b"Content-Type: api/response\nContent-Length: 99999999999999\n\n", "bad Content-Length"),
        (b"Content-Type: api/response\nContent-Length: 9000000\n\n", "over the"),
        (b"Content-Type: command/reply\nthis line has no colon\n\n", "without 'Name: value'"),
        (b": empty name\n\n", "without 'Name: value'"),
        (b"\x00\x01\x02garbage\n\n", "without 'Name: value'"),
    ],
)
def test_garbage_raises_clear_error(data: bytes, match: str) -> None:
    parser = FrameParser()
    with pytest.raises(EslProtocolError, match=match):
        parser.feed(data)
    with pytest.raises(EslProtocolError):  # stays failed: the caller must drop the link
        parser.feed(b"Content-Type: auth/request\n\n")


def test_header_block_cap() -> None:
    parser = FrameParser(max_header_bytes=1024)
    with pytest.raises(EslProtocolError, match="header block over"):
        parser.feed(b"X-Filler: " + b"a" * 2000)
    parser = FrameParser(max_header_bytes=1024)
    with pytest.raises(EslProtocolError, match="header block over"):
        parser.feed(b"X-Filler: " + b"a" * 2000 + b"\n\n")


def test_truncated_frame_at_eof() -> None:
    parser = FrameParser()
    assert parser.feed(b"Content-Type: api/response\nContent-Length: 10\n\n+OK") == []
    assert parser.buffered == 3
    with pytest.raises(EslProtocolError, match="in the middle of a frame"):
        parser.eof()
    parser = FrameParser()
    parser.feed(b"Content-Type: auth/req")
    with pytest.raises(EslProtocolError):
        parser.eof()
    FrameParser().eof()  # nothing buffered: a clean close


def test_bad_event_body_is_skippable() -> None:
    parser = FrameParser()
    bad_body = b"no colon here\n\n"
    good_body = b"Event-Name: HEARTBEAT\nUp-Time: 0%20years\n\n"
    data = (
        b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(bad_body)
        + bad_body
        + b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(good_body)
        + good_body
    )
    frames = parser.feed(data)
    assert len(frames) == 2
    with pytest.raises(EventDecodeError):
        decode(frames[0])
    event = decode(frames[1])
    assert isinstance(event, Event) and event.get("Up-Time") == "0 years" and event.body == ""
    with pytest.raises(EventDecodeError, match="Event-Name"):
        parse_event_plain(b"Foo: bar\n\n")
    with pytest.raises(EventDecodeError, match="shorter"):
        parse_event_plain(b"Event-Name: X\nContent-Length: 50\n\nshort")


def test_stray_newlines_between_frames_are_tolerated() -> None:
    frames = FrameParser().feed(
        b"\n\nContent-Type: auth/request\n\n\nContent-Type: auth/request\n\n"
    )
    assert [f.content_type for f in frames] == ["auth/request", "auth/request"]


def test_rude_rejection_and_unknown_types() -> None:
    body = b"Access Denied, go away.\n"
    frames = FrameParser().feed(
        b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n" % len(body)
        + body
        + b"Content-Type: log/data\nContent-Length: 2\n\nhi"
    )
    rude = decode(frames[0])
    assert isinstance(rude, RudeRejection) and rude.body == body.decode()
    other = decode(frames[1])
    assert type(other).__name__ == "OtherMessage"


@settings(max_examples=examples(40), deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=60))
def test_any_chunking_of_inbound_main(cuts: list[int]) -> None:
    blob = b"".join(
        read_transcript(TRANSCRIPTS[0].parent / "esl_inbound_main.txt").freeswitch_chunks()
    )
    pieces, pos = [], 0
    for size in cuts:
        pieces.append(blob[pos : pos + size])
        pos += size
    pieces.append(blob[pos:])
    assert _frames(pieces) == _frames([blob])


@settings(max_examples=examples(60), deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9_\-]{0,20}", fullmatch=True).filter(
            lambda k: k != "Content-Length"
        ),
        st.text(max_size=40),
        max_size=8,
    ),
    st.text(max_size=80),
)
def test_event_plain_roundtrip(headers: dict[str, str], body: str) -> None:
    from urllib.parse import quote

    lines = ["Event-Name: CUSTOM"] + [f"{k}: {quote(v, safe='')}" for k, v in headers.items()]
    raw_body = body.encode()
    if raw_body:
        lines.append(f"Content-Length: {len(raw_body)}")
    inner = ("\n".join(lines) + "\n\n").encode() + raw_body
    outer = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(inner) + inner
    (frame,) = FrameParser().feed(outer)
    event = decode(frame)
    assert isinstance(event, Event)
    assert event.name == "CUSTOM"
    for key, value in headers.items():
        assert event.get(key) == value
    assert event.body == body


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_fuzzed_bytes_only_raise_protocol_errors(chunks: list[bytes]) -> None:
    parser = FrameParser(max_header_bytes=4096, max_body_bytes=4096)
    prefix = b"Content-Type: command/reply\nReply-Text: +OK\n\n"
    try:
        frames = parser.feed(prefix)
        for chunk in chunks:
            frames += parser.feed(chunk)
        parser.eof()
    except EslProtocolError:
        return
    for frame in frames:
        with contextlib.suppress(EventDecodeError):
            decode(frame)
