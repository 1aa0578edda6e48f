"""The signalling wire protocol, version 1: JSON text frames over one WebSocket.

Every frame is one JSON object with ``"v": 1`` and a ``"type"``. A client frame may carry
``"id"`` (an integer or a short string); the reply to it echoes it as ``"re"``.
``decode_client`` validates a client frame completely and never raises: it returns a
typed message or a ``ProtocolError`` to send back. The README has the full reference.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from esl_bridge.core import peer_json
from esl_bridge.core.invitations import (
    CHANNEL_ID_MAX_BYTES,
    CONTENT_MAX_BYTES,
    RESPONSE_MAX_BYTES,
    ApiError,
    utf8_len,
)

VERSION = 1
MAX_ID_CHARS = 64
MAX_TOKEN_CHARS = 2048

_UID_RE = re.compile(r"[\x21-\x7e]{1,64}")  # printable ASCII, no space, 1..64
_APPID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_REF_RE = re.compile(r"[\x21-\x7e]{1,64}")
_SURROGATE_MESSAGE = "'{}' holds a lone surrogate (\\ud800-\\udfff escape): not valid Unicode"


class Err:
    """Error codes carried in ``{"type": "error", "code": ...}``."""

    BAD_MESSAGE = "BAD_MESSAGE"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_TYPE = "UNKNOWN_TYPE"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_STARTED = "NOT_STARTED"
    ALREADY_END = "ALREADY_END"
    ALREADY_ACCEPT = "ALREADY_ACCEPT"
    ALREADY_SENT = "ALREADY_SENT"
    NOT_LOGGED_IN = "NOT_LOGGED_IN"
    ALREADY_LOGGED_IN = "ALREADY_LOGGED_IN"
    AUTH_FAILED = "AUTH_FAILED"
    APPID_REFUSED = "APPID_REFUSED"
    UID_RESERVED = "UID_RESERVED"
    UNKNOWN_INVITATION = "UNKNOWN_INVITATION"
    DUPLICATE_REF = "DUPLICATE_REF"
    TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
    RATE_LIMITED = "RATE_LIMITED"
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    TOO_MANY_INVITATIONS = "TOO_MANY_INVITATIONS"


#: The numeric codes of the RTM API errors (README.rst, Error codes), sent as ``errno``.
API_ERRNO = {e.name: int(e) for e in ApiError}


class Close:
    """WebSocket close codes (4000-4999 is the application range) and their reasons."""

    TAKEOVER = (4001, "TAKEOVER")
    RATE_LIMITED = (4002, "RATE_LIMITED")
    MESSAGE_TOO_LARGE = (4003, "MESSAGE_TOO_LARGE")
    TOO_MANY_INVITATIONS = (4004, "TOO_MANY_INVITATIONS")
    SLOW_CONSUMER = (4005, "SLOW_CONSUMER")
    RESUMED_ELSEWHERE = (4006, "RESUMED_ELSEWHERE")
    LOGIN_TIMEOUT = (4007, "LOGIN_TIMEOUT")
    ORIGIN_NOT_ALLOWED = (4008, "ORIGIN_NOT_ALLOWED")
    SHUTDOWN = (1001, "SERVER_SHUTDOWN")


# ---- client messages ------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    appid: str
    uid: str
    token: str | None
    session: str | None


@dataclass(frozen=True)
class Logout:
    pass


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Query:
    uids: tuple[str, ...]


@dataclass(frozen=True)
class Subscribe:
    uids: tuple[str, ...]


@dataclass(frozen=True)
class Unsubscribe:
    uids: tuple[str, ...]


@dataclass(frozen=True)
class PeerMessage:
    to: str
    text: str


@dataclass(frozen=True)
class Invite:
    ref: str
    callee: str
    content: str
    channel_id: str


@dataclass(frozen=True)
class Cancel:
    ref: str


@dataclass(frozen=True)
class Ack:
    inv: str


@dataclass(frozen=True)
class Accept:
    inv: str
    response: str


@dataclass(frozen=True)
class Refuse:
    inv: str
    response: str


Body = (
    Login
    | Logout
    | Ping
    | Query
    | Subscribe
    | Unsubscribe
    | PeerMessage
    | Invite
    | Cancel
    | Ack
    | Accept
    | Refuse
)
MsgId = int | str | None


@dataclass(frozen=True)
class ClientMessage:
    id: MsgId
    body: Body


@dataclass(frozen=True)
class ProtocolError:
    """A reply to send: ``fatal`` ones are followed by a close with ``close``."""

    code: str
    message: str
    re: MsgId = None
    fatal: bool = False
    close: tuple[int, str] | None = None

    def to_wire(self) -> dict[str, Any]:
        return error(self.re, self.code, self.message)


class _Invalid(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 128 * 1024
    max_peer_message_bytes: int = 32 * 1024
    max_uids_per_request: int = 256


def valid_uid(uid: str) -> bool:
    """A uid as the hub accepts it: 1-64 printable ASCII characters, no space."""
    return bool(_UID_RE.fullmatch(uid))


def valid_appid(appid: str) -> bool:
    """An appid as the hub accepts it at login: 1-64 of A-Z a-z 0-9 _ . -"""
    return bool(_APPID_RE.fullmatch(appid))


def _str(obj: dict[str, Any], key: str, *, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _Invalid(Err.BAD_MESSAGE, f"'{key}' must be a string")
    return value


def _opt_str(obj: dict[str, Any], key: str, max_chars: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise _Invalid(Err.BAD_MESSAGE, f"'{key}' must be a string of at most {max_chars}")
    return value


def _match(obj: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = _str(obj, key)
    if not pattern.fullmatch(value):
        raise _Invalid(Err.INVALID_ARGUMENT, f"'{key}' is not a valid {what}")
    return value


def _limited(obj: dict[str, Any], key: str, limit: int) -> str:
    value = _str(obj, key, default="")
    if utf8_len(value) > limit:
        raise _Invalid(Err.INVALID_ARGUMENT, f"'{key}' is over {limit} bytes of UTF-8")
    return value


def _uids(obj: dict[str, Any], limits: Limits) -> tuple[str, ...]:
    value = obj.get("uids")
    if not isinstance(value, list) or not all(isinstance(u, str) for u in value):
        raise _Invalid(Err.BAD_MESSAGE, "'uids' must be a list of strings")
    if not value or len(value) > limits.max_uids_per_request:
        raise _Invalid(
            Err.INVALID_ARGUMENT, f"'uids' must hold 1 to {limits.max_uids_per_request} uids"
        )
    for uid in value:
        if not _UID_RE.fullmatch(uid):
            raise _Invalid(Err.INVALID_ARGUMENT, "'uids' holds an invalid uid")
    return tuple(dict.fromkeys(value))  # dedupe, keep order


def _body(kind: str, obj: dict[str, Any], limits: Limits) -> Body:
    if kind == "login":
        return Login(
            appid=_match(obj, "appid", _APPID_RE, "appid"),
            uid=_match(obj, "uid", _UID_RE, "uid"),
            token=_opt_str(obj, "token", MAX_TOKEN_CHARS),
            session=_opt_str(obj, "session", MAX_ID_CHARS),
        )
    if kind == "logout":
        return Logout()
    if kind == "ping":
        return Ping()
    if kind == "query":
        return Query(_uids(obj, limits))
    if kind == "subscribe":
        return Subscribe(_uids(obj, limits))
    if kind == "unsubscribe":
        return Unsubscribe(_uids(obj, limits))
    if kind == "message":
        return PeerMessage(
            to=_match(obj, "to", _UID_RE, "uid"),
            text=_limited(obj, "text", limits.max_peer_message_bytes),
        )
    if kind == "invite":
        # Field types first, then sizes: over a limit is INVALID_ARGUMENT, nothing sent.
        return Invite(
            ref=_match(obj, "ref", _REF_RE, "ref"),
            callee=_match(obj, "callee", _UID_RE, "uid"),
            content=_limited(obj, "content", CONTENT_MAX_BYTES),
            channel_id=_limited(obj, "channel_id", CHANNEL_ID_MAX_BYTES),
        )
    if kind == "cancel":
        return Cancel(_match(obj, "ref", _REF_RE, "ref"))
    if kind == "ack":
        return Ack(_match(obj, "inv", _REF_RE, "invitation id"))
    if kind == "accept":
        return Accept(
            _match(obj, "inv", _REF_RE, "invitation id"),
            _limited(obj, "response", RESPONSE_MAX_BYTES),
        )
    if kind == "refuse":
        return Refuse(
            _match(obj, "inv", _REF_RE, "invitation id"),
            _limited(obj, "response", RESPONSE_MAX_BYTES),
        )
    raise _Invalid(Err.UNKNOWN_TYPE, "unknown message type")


def too_large(limits: Limits) -> ProtocolError:
    """The reply to a frame over ``max_message_bytes``: an error, then close 4003."""
    return ProtocolError(
        Err.MESSAGE_TOO_LARGE,
        f"frame over {limits.max_message_bytes} bytes",
        fatal=True,
        close=Close.MESSAGE_TOO_LARGE,
    )


def frame_size(raw: str | bytes) -> int:
    return len(raw) if isinstance(raw, bytes) else utf8_len(raw)


def decode_client(raw: str | bytes, limits: Limits | None = None) -> ClientMessage | ProtocolError:
    """Validate one client frame. Never raises; a bad frame yields the error to reply."""
    limits = limits or Limits()
    if frame_size(raw) > limits.max_message_bytes:
        return too_large(limits)
    try:
        obj = peer_json.loads(raw)
    except peer_json.PeerJsonError as exc:
        return ProtocolError(Err.BAD_MESSAGE, str(exc))
    if not isinstance(obj, dict):
        return ProtocolError(Err.BAD_MESSAGE, "not a JSON object")
    msg_id = obj.get("id")
    if isinstance(msg_id, str) and peer_json.has_lone_surrogate(msg_id):
        # Not echoed: a reply carrying it could not be encoded.
        return ProtocolError(Err.INVALID_ARGUMENT, _SURROGATE_MESSAGE.format("id"))
    if isinstance(msg_id, bool) or not (
        msg_id is None
        or (isinstance(msg_id, int) and -(2**53) <= msg_id <= 2**53)
        or (isinstance(msg_id, str) and len(msg_id) <= MAX_ID_CHARS)
    ):
        return ProtocolError(Err.BAD_MESSAGE, "'id' must be an integer or a short string")
    version = obj.get("v")
    if version != VERSION or isinstance(version, bool):
        return ProtocolError(
            Err.UNSUPPORTED_VERSION, f"protocol version {VERSION} is required", msg_id
        )
    kind = obj.get("type")
    if not isinstance(kind, str):
        return ProtocolError(Err.BAD_MESSAGE, "'type' must be a string", msg_id)
    # A string that UTF-8 cannot encode would be accepted here and then break the
    # connection of whoever it is forwarded to: refused at the door, field named.
    for key, value in obj.items():
        if isinstance(value, str) and peer_json.has_lone_surrogate(value):
            short = len(key) <= MAX_ID_CHARS and not peer_json.has_lone_surrogate(key)
            name = key if short else "?"
            return ProtocolError(Err.INVALID_ARGUMENT, _SURROGATE_MESSAGE.format(name), msg_id)
    try:
        body = _body(kind, obj, limits)
    except _Invalid as exc:
        return ProtocolError(exc.code, exc.message, msg_id)
    return ClientMessage(msg_id, body)


# ---- server messages ------------------------------------------------------------------


def server_message(kind: str, **fields: Any) -> dict[str, Any]:
    return {"v": VERSION, "type": kind, **fields}


def ok(re_: MsgId, **fields: Any) -> dict[str, Any]:
    return server_message("ok", re=re_, **fields)


def error(re_: MsgId, code: str, message: str) -> dict[str, Any]:
    out = server_message("error", re=re_, code=code, message=message)
    if code in API_ERRNO:
        out["errno"] = API_ERRNO[code]
    return out


def closing(close: tuple[int, str], message: str = "") -> dict[str, Any]:
    return server_message("closing", code=close[0], reason=close[1], message=message)


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


# ---- ARCall peer commands ------------------------------------------------------------

CMD_END_CALL = "EndCall"
CMD_SWITCH_AUDIO = "SwitchAudio"
CMD_CALL_STATE = "CallState"
CMD_CALL_STATE_RESULT = "CallStateResult"
CMD_CALLING = "Calling"


def peer_command(text: str) -> dict[str, Any] | None:
    """The ARCall command in a peer message (``{"Cmd": ...}``), or None for free text."""
    try:
        obj = peer_json.loads(text)
    except peer_json.PeerJsonError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("Cmd"), str):
        return obj
    return None


def busy_refusal() -> str:
    """The refusal response of a busy callee (JSON, never a bare word)."""
    return json.dumps({"Cmd": CMD_CALLING, "Reason": "calling"}, separators=(",", ":"))


def call_state_result(state: int, mode: int | None) -> str:
    """Answer to ``{"Cmd":"CallState"}``: state 0 idle, 1 calling, 2 in call."""
    body: dict[str, Any] = {"Cmd": CMD_CALL_STATE_RESULT, "state": state}
    if mode is not None:
        body["Mode"] = mode
    return json.dumps(body, separators=(",", ":"))
