"""What a channel record takes from FreeSWITCH's headers, field by field, with each
fallback header, and the callee uid read from ``X-Number`` in every form it accepts: what
mutation testing of ``esl/protocol.py`` showed no test held (docs/mutation.rst). Pure."""

from __future__ import annotations

import pytest

from esl_bridge.esl.protocol import ChannelRecord, EslProtocolError, parse_x_number

UUID = "5e1f0000-0000-4000-8000-0000000c0f01"


def test_every_field_from_its_first_header() -> None:
    headers = {
        "Unique-ID": UUID,
        "variable_uuid": "other",
        "Caller-Caller-ID-Number": "1001",
        "Caller-Caller-ID-Name": "Alice",
        "Caller-Destination-Number": "01002",
        "Channel-Destination-Number": "other",
        "variable_sip_h_X-Number": "<sip:bob@127.0.0.1>",
        "variable_sip_h_X-CusData": "order-7",
        "Call-Direction": "outbound",
        "Caller-Direction": "inbound",
        "Answer-State": "early",
        "Channel-Call-State": "EARLY",
        "Channel-Name": "sofia/internal/1001@127.0.0.1",
        "Socket-Mode": "async",
        "Control": "full",
        "Channel-Read-Codec-Name": "PCMU",
        "variable_read_codec": "other",
        "variable_read_rate": "8000",
        "Channel-Read-Codec-Rate": "16000",
        "variable_rtp_use_codec_channels": "2",
    }
    record = ChannelRecord.from_headers(headers)
    assert (record.uuid, record.caller_number, record.caller_name) == (UUID, "1001", "Alice")
    assert (record.destination_number, record.callee_uid, record.x_number) == (
        "01002",
        "bob",
        "<sip:bob@127.0.0.1>",
    )
    assert (record.cus_data, record.direction, record.answer_state) == (
        "order-7",
        "outbound",
        "early",
    )
    assert (record.call_state, record.channel_name) == ("EARLY", "sofia/internal/1001@127.0.0.1")
    assert (record.socket_mode, record.control, record.async_full) == ("async", "full", True)
    assert (record.read_codec, record.read_rate, record.channels) == ("PCMU", 8000, 2)
    assert record.has_media
    assert dict(record.headers) == headers


def test_the_fallback_headers() -> None:
    record = ChannelRecord.from_headers(
        {
            "variable_uuid": UUID,
            "Channel-Destination-Number": "01002",
            "Caller-Direction": "inbound",
            "variable_read_codec": "L16",
            "Channel-Read-Codec-Rate": "16000",
        }
    )
    assert (record.uuid, record.destination_number, record.direction) == (
        UUID,
        "01002",
        "inbound",
    )
    assert (record.read_codec, record.read_rate) == ("L16", 16000)
    assert ChannelRecord.from_headers({"Channel-Unique-ID": UUID}).uuid == UUID
    bare = ChannelRecord.from_headers({"Unique-ID": UUID})
    assert (bare.read_rate, bare.channels, bare.callee_uid, bare.has_media) == (
        None,
        None,
        None,
        False,
    )
    assert not ChannelRecord.from_headers({"Unique-ID": UUID, "Socket-Mode": "async"}).async_full
    with pytest.raises(EslProtocolError, match="without Unique-ID"):
        ChannelRecord.from_headers({"Channel-Name": "x"})


@pytest.mark.parametrize(
    ("rate", "expected"), [("0", None), ("-8000", None), ("8k", None), (" 8000 ", 8000)]
)
def test_a_read_rate_is_a_positive_number_or_nothing(rate: str, expected: int | None) -> None:
    record = ChannelRecord.from_headers({"Unique-ID": UUID, "variable_read_rate": rate})
    assert record.read_rate == expected


def test_later_headers_are_merged_on_top() -> None:
    record = ChannelRecord.from_headers({"Unique-ID": UUID, "Answer-State": "ringing"})
    merged = record.merged({"Answer-State": "answered", "Channel-Read-Codec-Name": "PCMU"})
    assert (merged.uuid, merged.answer_state, merged.read_codec) == (UUID, "answered", "PCMU")
    assert record.answer_state == "ringing"


@pytest.mark.parametrize(
    ("value", "uid"),
    [
        ("<sip:1002@host>", "1002"),
        ("sip:1002@host", "1002"),
        ("<sip:1002@host;transport=udp>", "1002"),
        ("sip:1002;user=phone@host", "1002"),
        ("1002", "1002"),
        ("  1002  ", "1002"),
        ('"Bob" <sip:bob@host>', "bob"),
        ("Bob <sip:bob@host>", "bob"),
        ("SIPS:alice@host", "alice"),
        ("tel:1002", "1002"),
        ("tel:1002;phone-context=example", "1002"),
        ("sip:host", None),
        ("user@host", None),
        ("a:b", None),
        ("<>", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("sip:bad uid@host", None),
        ("x" * 65, None),
    ],
)
def test_x_number_forms(value: str | None, uid: str | None) -> None:
    assert parse_x_number(value) == uid
