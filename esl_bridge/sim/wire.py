"""Byte-level ESL framing, as FreeSWITCH 1.10.12's mod_event_socket writes it.

Every layout here was checked against the recorded transcripts in
tests/fixtures/freeswitch/ (see tests/test_sim_wire.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

Header = tuple[str, str]

# Characters switch_url_encode() escapes (besides bytes < 0x20 and > 0x7E). Verified on every
# header value of the fixtures: `/ , ( ) . _ - ' ! * ~ $` stay as they are.
_URL_UNSAFE = frozenset('\r\n #%&+:;<=>?@[\\]^`{|}"')

GOODBYE_BODY = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def url_encode(value: str) -> str:
    """Encode a header value the way FreeSWITCH serialises events (`%XX`, upper-case hex)."""
    out: list[str] = []
    for ch in value:
        if " " < ch <= "~" and ch not in _URL_UNSAFE:
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8"))
    return "".join(out)


def command_reply(reply_text: str, extra: Sequence[Header] = ()) -> bytes:
    """`Content-Type: command/reply` with a raw (not URL-encoded) Reply-Text."""
    lines = ["Content-Type: command/reply", f"Reply-Text: {reply_text}"]
    lines.extend(f"{k}: {v}" for k, v in extra)
    return ("\n".join(lines) + "\n\n").encode()


def api_response(body: str | bytes) -> bytes:
    data = body.encode() if isinstance(body, str) else body
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def serialize_event(headers: Iterable[Header], body: bytes = b"") -> bytes:
    """text/event-plain body: URL-encoded `Name: value` lines, then the optional body.

    Without a body the header block ends with one blank line; with one, FreeSWITCH adds its own
    `Content-Length` header, a blank line and the body (BACKGROUND_JOB).
    """
    text = "".join(f"{k}: {url_encode(v)}\n" for k, v in headers).encode()
    if body:
        return text + b"Content-Length: %d\n\n" % len(body) + body
    return text + b"\n"


def event_plain(headers: Iterable[Header], body: bytes = b"") -> bytes:
    """A complete event frame as sent to a `event plain` / `myevents` subscriber."""
    payload = serialize_event(headers, body)
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(payload) + payload


def connect_reply(channel_data: Iterable[Header], socket_mode: str, control: str) -> bytes:
    """Outbound-socket answer to `connect`: the CHANNEL_DATA headers (URL-encoded) first,
    then Content-Type, an URL-encoded Reply-Text, Socket-Mode and Control; no Content-Length."""
    text = "".join(f"{k}: {url_encode(v)}\n" for k, v in channel_data)
    text += (
        "Content-Type: command/reply\n"
        "Reply-Text: %2BOK%0A\n"
        f"Socket-Mode: {socket_mode}\n"
        f"Control: {control}\n\n"
    )
    return text.encode()


def disconnect_notice_inbound() -> bytes:
    """Sent after `exit` (and after a failed auth) on an inbound connection."""
    return (
        b"Content-Type: text/disconnect-notice\nContent-Length: %d\n\n" % len(GOODBYE_BODY)
        + GOODBYE_BODY
    )


def disconnect_notice_outbound(session_uuid: str) -> bytes:
    """Final notice on an outbound socket (after `exit`, or at hangup without linger)."""
    return (
        b"Content-Type: text/disconnect-notice\n"
        b"Controlled-Session-UUID: %s\n"
        b"Content-Disposition: disconnect\n"
        b"Content-Length: %d\n\n" % (session_uuid.encode(), len(GOODBYE_BODY)) + GOODBYE_BODY
    )


def linger_notice(session_uuid: str, channel_name: str) -> bytes:
    """Hangup notice on a lingering outbound socket; Channel-Name is NOT URL-encoded here."""
    return (
        "Content-Type: text/disconnect-notice\n"
        f"Controlled-Session-UUID: {session_uuid}\n"
        "Content-Disposition: linger\n"
        f"Channel-Name: {channel_name}\n"
        "Linger-Time: -1\n"
        "Content-Length: 0\n\n"
    ).encode()


AUTH_REQUEST = b"Content-Type: auth/request\n\n"
AUTH_FAIL = command_reply("-ERR invalid") + disconnect_notice_inbound()
