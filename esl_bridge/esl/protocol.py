"""FreeSWITCH Event Socket wire format, parsed without any I/O.

Feed the bytes read from the socket, in whatever chunks TCP delivered them, to
:class:`FrameParser`; it returns complete :class:`Frame` objects. :func:`decode` turns a
frame into one typed message (:class:`CommandReply`, :class:`ApiResponse`,
:class:`Event`, :class:`DisconnectNotice`, ...). :class:`ChannelRecord` is the typed view
of a channel's headers (outbound ``connect`` reply, ``CHANNEL_DATA``, any channel event).

Wire facts (checked against the FreeSWITCH 1.10.12 transcripts in tests/fixtures):

* A frame is a header block ended by an empty line, then ``Content-Length`` bytes of body
  when that header is present. Outer header values are plain text, except in the
  outbound ``connect`` reply, whose values are URL-encoded and which has no
  Content-Length (``Content-Type`` comes near the end, docs/freeswitch.rst, fact 5).
* ``text/event-plain`` bodies are themselves a header block (URL-encoded values), an
  empty line, and an optional inner body sized by an inner ``Content-Length``
  (``BACKGROUND_JOB`` carries ``+OK <uuid>`` / ``-ERR CAUSE`` there).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import unquote

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADER_BYTES",
    "ApiResponse",
    "AuthRequest",
    "ChannelRecord",
    "CommandReply",
    "DisconnectNotice",
    "EslProtocolError",
    "Event",
    "EventDecodeError",
    "Frame",
    "FrameParser",
    "Message",
    "OtherMessage",
    "RudeRejection",
    "decode",
    "parse_event_plain",
    "parse_x_number",
]

# A connect reply with every channel variable is ~7 KB on a vanilla switch; leave a lot of
# room for big SDPs and custom variables, but never buffer without bound.
DEFAULT_MAX_HEADER_BYTES = 256 * 1024
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
_MAX_LENGTH_DIGITS = 12


class EslProtocolError(ValueError):
    """The byte stream is not ESL (garbage, oversize, truncated): drop the connection."""


class EventDecodeError(EslProtocolError):
    """One frame was framed correctly but its event body is malformed.

    The stream itself is still in sync, so a reader may log and skip the frame.
    """


def _headers_view(headers: dict[str, str]) -> Mapping[str, str]:
    return MappingProxyType(headers)


@dataclass(frozen=True, slots=True)
class Frame:
    """One ESL frame: outer headers (raw text, not URL-decoded) and body bytes."""

    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")


def _parse_header_block(block: bytes, *, url_decoded: bool) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in block.split(b"\n"):
        line = raw[:-1] if raw.endswith(b"\r") else raw
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or not name.strip():
            snippet = line[:60].decode("utf-8", "replace")
            raise EslProtocolError(f"ESL header line without 'Name: value': {snippet!r}")
        key = name.decode("utf-8", "replace").strip()
        text = value.decode("utf-8", "replace")
        if text.startswith(" "):
            text = text[1:]
        headers[key] = unquote(text) if url_decoded else text
    return headers


def _content_length(value: str, limit: int) -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_LENGTH_DIGITS:
        raise EslProtocolError(f"bad Content-Length {value[:40]!r}")
    length = int(text)
    if length > limit:
        raise EslProtocolError(f"Content-Length {length} is over the {limit} byte cap")
    return length


class FrameParser:
    """Incremental ESL framer: ``feed(bytes) -> list[Frame]``; no I/O, no clock.

    Raises :class:`EslProtocolError` on garbage; after that the parser is unusable
    (the caller drops the connection).
    """

    def __init__(
        self,
        *,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._buf = bytearray()
        self._scan_from = 0
        self._pending: dict[str, str] | None = None
        self._body_len = 0
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self._failed: EslProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not form a complete frame yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed is not None:
            raise self._failed
        self._buf += data
        frames: list[Frame] = []
        try:
            while True:
                frame = self._next_frame()
                if frame is None:
                    return frames
                frames.append(frame)
        except EslProtocolError as exc:
            self._failed = exc
            raise

    def eof(self) -> None:
        """The peer closed: raise if a frame was cut off in the middle."""
        if self._pending is not None or self._buf.strip(b"\r\n"):
            raise EslProtocolError(
                f"connection closed in the middle of a frame ({len(self._buf)} bytes buffered)"
            )

    def _next_frame(self) -> Frame | None:
        buf = self._buf
        if self._pending is None:
            # Tolerate stray blank lines between frames.
            skip = 0
            while skip < len(buf) and buf[skip] in (0x0A, 0x0D):
                skip += 1
            if skip:
                del buf[:skip]
                self._scan_from = 0
            end = buf.find(b"\n\n", max(0, self._scan_from - 1))
            if end < 0:
                if len(buf) > self._max_header:
                    raise EslProtocolError(
                        f"ESL header block over {self._max_header} bytes without an end"
                    )
                self._scan_from = len(buf)
                return None
            if end > self._max_header:
                raise EslProtocolError(f"ESL header block over {self._max_header} bytes")
            headers = _parse_header_block(bytes(buf[:end]), url_decoded=False)
            del buf[: end + 2]
            self._scan_from = 0
            length_text = headers.get("Content-Length")
            if length_text is None:
                return Frame(_headers_view(headers))
            self._body_len = _content_length(length_text, self._max_body)
            self._pending = headers
        if len(buf) < self._body_len:
            return None
        body = bytes(buf[: self._body_len])
        del buf[: self._body_len]
        headers = self._pending
        self._pending = None
        return Frame(_headers_view(headers), body)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """``auth/request``: the inbound socket greets with it; answer with ``auth``."""


@dataclass(frozen=True, slots=True)
class CommandReply:
    """``command/reply``. ``text`` is the Reply-Text (URL-decoded and stripped for the
    outbound connect reply, whose other headers are the channel data)."""

    text: str
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return self.text.startswith("+OK")

    @property
    def job_uuid(self) -> str | None:
        return self.headers.get("Job-UUID")

    @property
    def is_channel_data(self) -> bool:
        """True for the outbound ``connect`` reply (CHANNEL_DATA headers)."""
        return "Event-Name" in self.headers or "Socket-Mode" in self.headers

    def channel(self) -> ChannelRecord:
        return ChannelRecord.from_headers(self.headers)


@dataclass(frozen=True, slots=True)
class ApiResponse:
    """``api/response``: the body is the command's output, e.g. ``-ERR ...\\n``."""

    body: str

    @property
    def ok(self) -> bool:
        return not self.body.startswith("-ERR") and not self.body.startswith("-USAGE")

    @property
    def text(self) -> str:
        return self.body.strip()


@dataclass(frozen=True, slots=True)
class Event:
    """One ``text/event-plain`` event: URL-decoded headers and its optional body."""

    headers: Mapping[str, str]
    body: str = ""

    @property
    def name(self) -> str:
        return self.headers.get("Event-Name", "")

    @property
    def uuid(self) -> str | None:
        return self.headers.get("Unique-ID") or self.headers.get("Channel-Call-UUID")

    @property
    def application(self) -> str | None:
        """``Application`` of CHANNEL_EXECUTE[_COMPLETE] events."""
        return self.headers.get("Application")

    @property
    def job_uuid(self) -> str | None:
        return self.headers.get("Job-UUID")

    @property
    def subclass(self) -> str | None:
        return self.headers.get("Event-Subclass")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def channel(self) -> ChannelRecord:
        return ChannelRecord.from_headers(self.headers)


@dataclass(frozen=True, slots=True)
class DisconnectNotice:
    """``text/disconnect-notice``: ``linger`` (the call hung up, the socket lingers until
    ``exit``) or ``disconnect`` (the switch closes the socket now)."""

    headers: Mapping[str, str]
    body: str = ""

    @property
    def disposition(self) -> str | None:
        return self.headers.get("Content-Disposition")

    @property
    def linger(self) -> bool:
        return self.disposition == "linger"

    @property
    def session_uuid(self) -> str | None:
        return self.headers.get("Controlled-Session-UUID")


@dataclass(frozen=True, slots=True)
class RudeRejection:
    """``text/rude-rejection``: the ESL ACL refused this client."""

    body: str


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """Any content type the gateway does not use (``log/data``, json events...)."""

    frame: Frame


Message = (
    AuthRequest
    | CommandReply
    | ApiResponse
    | Event
    | DisconnectNotice
    | RudeRejection
    | OtherMessage
)


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace")


def parse_event_plain(body: bytes) -> Event:
    """Decode a ``text/event-plain`` body: URL-encoded headers, empty line, and the
    event's own body when an inner Content-Length is present."""
    end = body.find(b"\n\n")
    block, rest = (body, b"") if end < 0 else (body[:end], body[end + 2 :])
    try:
        headers = _parse_header_block(block, url_decoded=True)
    except EslProtocolError as exc:
        raise EventDecodeError(f"bad event header: {exc}") from exc
    if "Event-Name" not in headers:
        raise EventDecodeError("event without Event-Name")
    inner = headers.get("Content-Length")
    if inner is None:
        return Event(_headers_view(headers))
    try:
        length = _content_length(inner, len(rest))
    except EslProtocolError as exc:
        raise EventDecodeError(f"event body shorter than its Content-Length: {exc}") from exc
    return Event(_headers_view(headers), _text(rest[:length]))


def decode(frame: Frame) -> Message:
    """Turn a frame into a typed message. Raises :class:`EventDecodeError` for a
    malformed event body (the stream is still in sync)."""
    ctype = frame.content_type
    if ctype == "text/event-plain":
        return parse_event_plain(frame.body)
    if ctype == "command/reply":
        headers = dict(frame.headers)
        if "Event-Name" in headers or "Socket-Mode" in headers:
            # Outbound connect reply: every value is URL-encoded (Reply-Text: %2BOK%0A).
            headers = {k: unquote(v) for k, v in headers.items()}
            text = headers.get("Reply-Text", "").strip()
        else:
            text = headers.get("Reply-Text", "")
        return CommandReply(text, _headers_view(headers))
    if ctype == "api/response":
        return ApiResponse(_text(frame.body))
    if ctype == "auth/request":
        return AuthRequest()
    if ctype == "text/disconnect-notice":
        return DisconnectNotice(frame.headers, _text(frame.body))
    if ctype == "text/rude-rejection":
        return RudeRejection(_text(frame.body))
    return OtherMessage(frame)


# --------------------------------------------------------------------------- channel


_SIP_SCHEMES = ("sip:", "sips:", "tel:")
_UID_RE = re.compile(r"^[A-Za-z0-9_.+\-]{1,64}$")
_DISPLAY_NAME_RE = re.compile(r'^\s*(?:"(?:[^"\\]|\\.)*"|[^<"]*?)\s*<([^>]*)>')


def parse_x_number(value: str | None) -> str | None:
    """The callee uid carried by the ``X-Number`` SIP header (already URL-decoded).

    Accepts ``<sip:1002@host>``, ``sip:1002@host``, ``<sip:1002@host;transport=udp>``,
    ``1002``, ``"Bob" <sip:1002@host>``, ``sips:...`` and ``tel:1002``. Returns None when
    the value is absent or carries no usable user part.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    named = _DISPLAY_NAME_RE.match(text)
    if named:
        text = named.group(1).strip()
    elif text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    lowered = text.lower()
    scheme = next((s for s in _SIP_SCHEMES if lowered.startswith(s)), None)
    if scheme is None:
        user = text
        if "@" in user or ":" in user:
            return None
    else:
        rest = text[len(scheme) :]
        if scheme == "tel:":
            user = rest
        else:
            user, at, _host = rest.partition("@")
            if not at:
                return None  # sip:host has no user part
    # URI parameters (;user=phone, ;phone-context=..) and headers (?..) are not the uid.
    user = re.split(r"[;?]", user, maxsplit=1)[0].strip()
    if not _UID_RE.match(user):
        return None
    return user


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit():
        return None
    number = int(text)
    return number if number > 0 else None


@dataclass(frozen=True, slots=True)
class ChannelRecord:
    """Typed view of a channel's headers (URL-decoded).

    ``read_rate`` comes from ``variable_read_rate`` (G.722 reports 16000 there while
    ``rtp_use_codec_rate`` says 8000), else ``Channel-Read-Codec-Rate``; it is None
    before answer / early media (no read codec yet). ``channels`` is
    ``variable_rtp_use_codec_channels`` when known (Opus stereo=1 gives 2).
    """

    uuid: str
    caller_number: str | None = None
    caller_name: str | None = None
    destination_number: str | None = None
    callee_uid: str | None = None
    x_number: str | None = None
    cus_data: str | None = None
    direction: str | None = None
    answer_state: str | None = None
    call_state: str | None = None
    channel_name: str | None = None
    socket_mode: str | None = None
    control: str | None = None
    read_codec: str | None = None
    read_rate: int | None = None
    channels: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> ChannelRecord:
        get = headers.get
        uuid = get("Unique-ID") or get("variable_uuid") or get("Channel-Unique-ID")
        if not uuid:
            raise EslProtocolError("channel data without Unique-ID")
        x_number = get("variable_sip_h_X-Number")
        rate = _int_or_none(get("variable_read_rate")) or _int_or_none(
            get("Channel-Read-Codec-Rate")
        )
        return cls(
            uuid=uuid,
            caller_number=get("Caller-Caller-ID-Number"),
            caller_name=get("Caller-Caller-ID-Name"),
            destination_number=get("Caller-Destination-Number")
            or get("Channel-Destination-Number"),
            callee_uid=parse_x_number(x_number),
            x_number=x_number,
            cus_data=get("variable_sip_h_X-CusData"),
            direction=get("Call-Direction") or get("Caller-Direction"),
            answer_state=get("Answer-State"),
            call_state=get("Channel-Call-State"),
            channel_name=get("Channel-Name"),
            socket_mode=get("Socket-Mode"),
            control=get("Control"),
            read_codec=get("Channel-Read-Codec-Name") or get("variable_read_codec"),
            read_rate=rate,
            channels=_int_or_none(get("variable_rtp_use_codec_channels")),
            headers=MappingProxyType(dict(headers)),
        )

    @property
    def async_full(self) -> bool:
        """The socket runs async with full control (quoted ``&socket(...)``,
        docs/freeswitch.rst, fact 6)."""
        return self.socket_mode == "async" and self.control == "full"

    @property
    def has_media(self) -> bool:
        """The connect reply shows a read codec (core/unicast_gate.py decides with it)."""
        return self.read_rate is not None and self.read_codec is not None

    def merged(self, headers: Mapping[str, str]) -> ChannelRecord:
        """A new record with later channel headers (e.g. CHANNEL_ANSWER) on top."""
        combined = dict(self.headers)
        combined.update(headers)
        return ChannelRecord.from_headers(combined)


def iter_messages(parser: FrameParser, data: bytes) -> Iterator[Message]:
    """Convenience: feed ``data`` and decode every complete frame."""
    for frame in parser.feed(data):
        yield decode(frame)
