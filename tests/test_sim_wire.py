"""The simulator's framing functions reproduce the recorded FreeSWITCH bytes exactly."""

from __future__ import annotations

import urllib.parse

import pytest
from support.sim_wire import FIXTURES, fs_frames, parse_event_body, read_transcript

from esl_bridge.sim import wire
from esl_bridge.sim.dialstring import parse_app, parse_dial_string, parse_socket_args, split_args

TRANSCRIPTS = sorted(p.name for p in FIXTURES.glob("esl_*.txt"))


def test_transcripts_found() -> None:
    assert len(TRANSCRIPTS) >= 13


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_url_encode_matches_every_recorded_value(name: str) -> None:
    checked = 0
    for frame in fs_frames(name):
        if frame.content_type == "text/event-plain":
            headers = parse_event_body(frame.body).headers
        elif frame.get("Event-Name"):  # connect reply
            headers = frame.headers
        else:
            continue
        for key, value in headers:
            if key in ("Reply-Text",):
                continue
            assert wire.url_encode(urllib.parse.unquote(value)) == value, (key, value)
            checked += 1
    if "auth_fail" not in name:
        assert checked > 50


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_event_frames_reserialise_byte_for_byte(name: str) -> None:
    """Decoding a recorded event and serialising it again gives the recorded bytes."""
    n = 0
    for frame in fs_frames(name):
        if frame.content_type != "text/event-plain":
            continue
        ev = parse_event_body(frame.body)
        decoded = [(k, urllib.parse.unquote(v)) for k, v in ev.headers]
        assert wire.event_plain(decoded, ev.body) == frame.raw
        n += 1
    if "auth_fail" not in name:
        assert n > 0


@pytest.mark.parametrize("name", [n for n in TRANSCRIPTS if n.startswith("esl_outbound")])
def test_connect_reply_reserialises(name: str) -> None:
    frame = fs_frames(name)[0]
    assert frame.get("Event-Name") == "CHANNEL_DATA"
    names = [k for k, _ in frame.headers]
    assert names[-4:] == ["Content-Type", "Reply-Text", "Socket-Mode", "Control"]
    assert "Content-Length" not in names
    data = [(k, urllib.parse.unquote(v)) for k, v in frame.headers[:-4]]
    mode, control = frame.get("Socket-Mode"), frame.get("Control")
    assert mode is not None and control is not None
    assert wire.connect_reply(data, mode, control) == frame.raw


def test_auth_request_and_failure_bytes() -> None:
    recs = read_transcript("esl_inbound_auth_fail.txt")
    assert recs[0].data == wire.AUTH_REQUEST
    assert recs[2].data == wire.AUTH_FAIL
    assert len(wire.AUTH_FAIL) == 178


def test_replies_and_notices_bytes() -> None:
    recs = {r.seq: r.data for r in read_transcript("esl_inbound_main.txt")}
    assert recs[3] == wire.command_reply("+OK accepted")
    assert recs[7] == wire.api_response("-ERR nosuchcommand Command not found!\n")
    assert recs[9] == wire.command_reply("+OK event listener enabled plain")
    assert recs[15] == wire.command_reply("+OK")
    assert recs[23] == wire.api_response("+OK\n")
    assert recs[26] == wire.api_response("-ERR USER_NOT_REGISTERED\n")
    assert recs[30] == wire.api_response("-ERR SUBSCRIBER_ABSENT\n")
    assert recs[38] == wire.command_reply("+OK bye")
    assert recs[39] == wire.disconnect_notice_inbound()
    job = "bb2114ea-965f-436b-a55a-e18a0f5876c2"
    assert recs[28].startswith(wire.command_reply(f"+OK Job-UUID: {job}", [("Job-UUID", job)]))


def test_outbound_notices_bytes() -> None:
    recs = {r.seq: r.data for r in read_transcript("esl_outbound_main_call.txt")}
    uuid = "255574a3-d361-44e5-bc5a-1b9f4df22e02"
    assert recs[22].endswith(wire.linger_notice(uuid, "sofia/internal/1001@127.0.0.1"))
    assert recs[24] == wire.command_reply("+OK bye")
    tail = recs[25] + recs[26] if 25 in recs else recs[26]
    assert tail == wire.disconnect_notice_outbound(uuid)
    static = read_transcript("esl_outbound_originate_socket_unquoted_static_mode.txt")
    assert static[-1].data.endswith(
        wire.disconnect_notice_outbound("12b1cfba-fbe4-4df8-9949-d4edef3ad7e6")
    )


def test_split_args_quotes() -> None:
    assert split_args("{a=1}user/1001 '&socket(127.0.0.1:8084 async full)'") == [
        "{a=1}user/1001",
        "&socket(127.0.0.1:8084 async full)",
    ]
    assert split_args("{a=1}user/1001 &socket(127.0.0.1:8084 async full)") == [
        "{a=1}user/1001",
        "&socket(127.0.0.1:8084",
        "async",
        "full)",
    ]


def test_dial_string_and_app_parsing() -> None:
    ds = parse_dial_string(
        "{origination_uuid=u1,origination_caller_id_number=1005,"
        "sip_h_X-ArInfo=a\\,b,originate_timeout=5}user/1002@127.0.0.1"
    )
    assert ds.endpoint == "user" and ds.target == "1002" and ds.domain == "127.0.0.1"
    assert ds.variables == {
        "origination_uuid": "u1",
        "origination_caller_id_number": "1005",
        "sip_h_X-ArInfo": "a,b",
        "originate_timeout": "5",
    }
    assert parse_dial_string("loopback/01002/default").context == "default"
    gw = parse_dial_string("sofia/gateway/pstn/90012345")
    assert (gw.endpoint, gw.gateway, gw.target) == ("gateway", "pstn", "90012345")
    assert parse_app("&park()").name == "park"
    sock = parse_app("&socket(127.0.0.1:8084 async full)")
    assert parse_socket_args(sock.args) == ("127.0.0.1", 8084, True, True)
    unquoted = parse_app("&socket(127.0.0.1:8084")
    assert parse_socket_args(unquoted.args) == ("127.0.0.1", 8084, False, False)
    assert parse_app("01002").extension == "01002"


def test_escapes_are_resolved_at_every_split() -> None:
    """Blank split, comma split and '=' split each resolve escapes (FreeSWITCH's
    switch_separate_string); `^^:` changes the separator; quotes group blanks."""
    args = split_args(r"{a=x\,y,b='p q',c=\\\\s}user/1 &park()")
    assert args[1] == "&park()"
    assert parse_dial_string(args[0]).variables == {"a": "x,y", "b": "p q", "c": " "}
    assert parse_dial_string("{^^:a=x,y:b=z}user/1").variables == {"a": "x,y", "b": "z"}
