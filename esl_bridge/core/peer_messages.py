"""The call protocol's ``Cmd`` messages: one frozen dataclass each, parse, serialise, limits.

No I/O. Every JSON body with a ``Cmd`` that the gateway sends or reads is here, whether it
travels as a peer message (``message`` frame) or as an invitation's ``refuse`` response
(``Refused``, ``Calling``); docs/protocol.rst is the reference for what each means.

* ``parse(text)`` decodes with ``peer_json.loads`` (bounded depth, no NaN, UTF-8 only)
  and returns one of the dataclasses, or raises a ``PeerMessageError`` (a ``ValueError``)
  that names the command and the field at fault, never the text. Fields a message does
  not define are ignored (clients may add their own); a field it defines must have its
  type and fit its limit.
* ``serialise(msg)`` is compact JSON with the field names browsers and ARCall clients
  use today (``ChanId``, ``Sdp``, ``Reason``, ``State``, ``Cause``, ``state``, ``Mode``).
* A dataclass checks its fields when it is built, so the gateway cannot send what it
  would refuse to read.

DTMF: the browser sends ``Digits``, the gateway has always sent ``Digit`` (one digit per
FreeSWITCH ``DTMF`` event). ``parse`` accepts either (both at once only when equal);
``serialise`` writes ``Digit``, so clients that read only ``Digit`` keep working.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from esl_bridge.core import peer_json
from esl_bridge.core.invitations import CHANNEL_ID_MAX_BYTES

__all__ = [
    "CALL_STATE_VALUES",
    "CHANNEL_ID_MAX_BYTES",
    "DTMF_DIGITS",
    "MAX_DTMF_DIGITS",
    "MAX_SDP_BYTES",
    "MAX_TEXT_LENGTH",
    "MAX_WORD_BYTES",
    "Answer",
    "CallState",
    "CallStateResult",
    "Calling",
    "Dtmf",
    "EndCall",
    "MediaError",
    "MediaProblem",
    "NotACommand",
    "Offer",
    "PeerMessage",
    "PeerMessageError",
    "Refused",
    "SipState",
    "UnknownCommand",
    "commands",
    "parse",
    "serialise",
]

#: Longest SDP (UTF-8 bytes) in an Offer or Answer. A peer message holds at most 32 KB
#: (``max_peer_message_bytes``); JSON escaping of line ends and the other fields need the
#: rest. A browser's non-trickle offer, candidates included, is a few KB.
MAX_SDP_BYTES = 24 * 1024
#: Most DTMF digits in one ``Dtmf`` message, and the digits allowed (RFC 4733 events 0-15).
MAX_DTMF_DIGITS = 32
DTMF_DIGITS = frozenset("0123456789*#ABCDabcd")
#: Longest ``Reason``, ``State`` or ``Cause`` (UTF-8 bytes): words, not prose.
MAX_WORD_BYTES = 128
#: Longest text ``parse`` decodes at all (characters or bytes): above any message frame.
MAX_TEXT_LENGTH = 64 * 1024

#: CallStateResult ``state`` values (``CallBook.call_state_of``).
CALL_STATE_VALUES = frozenset({0, 1, 2})


class PeerMessageError(ValueError):
    """A body that is not an acceptable call-protocol message. ``cmd`` is its ``Cmd`` when
    it had a string one (so a caller can answer a broken ``Offer``), else None."""

    def __init__(self, message: str, cmd: str | None = None) -> None:
        super().__init__(message)
        self.cmd = cmd


class NotACommand(PeerMessageError):
    """Not a JSON object with a string ``Cmd``: free text between web users, or garbage."""


class UnknownCommand(PeerMessageError):
    """A ``Cmd`` this gateway does not speak (ARCall has more, e.g. ``SwitchAudio``)."""


# -- field checks (shared by construction and parsing) -----------------------------------


def _check_text(cmd: str, name: str, value: object, limit: int, *, empty: bool = True) -> None:
    if not isinstance(value, str):
        raise PeerMessageError(f"{cmd}: {name} must be a string", cmd)
    if peer_json.has_lone_surrogate(value):
        raise PeerMessageError(f"{cmd}: {name} holds a lone surrogate", cmd)
    if not empty and not value:
        raise PeerMessageError(f"{cmd}: {name} must not be empty", cmd)
    if len(value) > limit or len(value.encode("utf-8")) > limit:
        raise PeerMessageError(f"{cmd}: {name} longer than {limit} bytes", cmd)


def _check_optional(cmd: str, name: str, value: object, limit: int) -> None:
    if value is not None:
        _check_text(cmd, name, value, limit)


# -- the messages ------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class _Message:
    CMD: ClassVar[str]
    chan_id: str | None = None  # ``ChanId``: the call's channel id; None when absent

    def __post_init__(self) -> None:
        _check_optional(self.CMD, "ChanId", self.chan_id, CHANNEL_ID_MAX_BYTES)

    def body(self) -> dict[str, Any]:
        """The JSON object this message is on the wire."""
        out: dict[str, Any] = {"Cmd": self.CMD}
        if self.chan_id is not None:
            out["ChanId"] = self.chan_id
        return out


@dataclass(frozen=True, kw_only=True)
class EndCall(_Message):
    """Both ways: the call is over (W -> G ends it; G -> W says the other side ended it).
    The gateway sends it without ``ChanId``."""

    CMD: ClassVar[str] = "EndCall"


@dataclass(frozen=True, kw_only=True)
class CallState(_Message):
    """W -> G (and browser to browser): which state am I in? Answered by CallStateResult."""

    CMD: ClassVar[str] = "CallState"


@dataclass(frozen=True, kw_only=True)
class CallStateResult(_Message):
    """``state`` 0 idle, 1 calling, 2 in call; ``Mode`` 1 (audio) as ARCall sends it."""

    CMD: ClassVar[str] = "CallStateResult"
    state: int = 0
    mode: int | None = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_int(self.state) or self.state not in CALL_STATE_VALUES:
            raise PeerMessageError("CallStateResult: state must be 0, 1 or 2", self.CMD)
        if self.mode is not None and not _is_int(self.mode):
            raise PeerMessageError("CallStateResult: Mode must be an integer", self.CMD)

    def body(self) -> dict[str, Any]:
        out = {**super().body(), "state": self.state}
        if self.mode is not None:
            out["Mode"] = self.mode
        return out


@dataclass(frozen=True, kw_only=True)
class _SdpMessage(_Message):
    sdp: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_text(self.CMD, "Sdp", self.sdp, MAX_SDP_BYTES)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "Sdp": self.sdp}


@dataclass(frozen=True, kw_only=True)
class Offer(_SdpMessage):
    """W -> G: the browser's complete (non-trickle) offer for the call ``ChanId``."""

    CMD: ClassVar[str] = "Offer"


@dataclass(frozen=True, kw_only=True)
class Answer(_SdpMessage):
    """G -> W: the gateway's answer to an Offer, candidates included."""

    CMD: ClassVar[str] = "Answer"


@dataclass(frozen=True, kw_only=True)
class MediaError(_Message):
    """G -> W: an Offer could not be answered; ``Reason`` says why."""

    CMD: ClassVar[str] = "MediaError"
    reason: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_text(self.CMD, "Reason", self.reason, MAX_WORD_BYTES, empty=False)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "Reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class MediaProblem(_Message):
    """G -> W: the one-way audio verdict of a direction of the call changed
    (core/media_verdict.py): ``Direction`` ``browser_to_switch`` or ``switch_to_browser``,
    ``Verdict`` one of that direction's verdicts (``ok`` when it recovered)."""

    CMD: ClassVar[str] = "MediaProblem"
    direction: str = ""
    verdict: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_text(self.CMD, "Direction", self.direction, MAX_WORD_BYTES, empty=False)
        _check_text(self.CMD, "Verdict", self.verdict, MAX_WORD_BYTES, empty=False)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "Direction": self.direction, "Verdict": self.verdict}


@dataclass(frozen=True, kw_only=True)
class Dtmf(_Message):
    """Both ways: DTMF digits. Read from ``Digits`` or ``Digit``, written as ``Digit``."""

    CMD: ClassVar[str] = "Dtmf"
    digits: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        digits = self.digits
        if not isinstance(digits, str) or not digits:
            raise PeerMessageError("Dtmf: Digits must be a non-empty string", self.CMD)
        if len(digits) > MAX_DTMF_DIGITS:
            raise PeerMessageError(f"Dtmf: more than {MAX_DTMF_DIGITS} digits", self.CMD)
        if not set(digits) <= DTMF_DIGITS:
            raise PeerMessageError("Dtmf: Digits allows only 0-9 * # A-D a-d", self.CMD)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "Digit": self.digits}


@dataclass(frozen=True, kw_only=True)
class _ReasonCause(_Message):
    """A ``Reason``-like word plus an optional FreeSWITCH ``Cause``."""

    cause: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_optional(self.CMD, "Cause", self.cause, MAX_WORD_BYTES)


@dataclass(frozen=True, kw_only=True)
class SipState(_ReasonCause):
    """G -> W, RTC -> SIP before the answer: ``State`` ringing or early_media."""

    CMD: ClassVar[str] = "SipState"
    state: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_text(self.CMD, "State", self.state, MAX_WORD_BYTES, empty=False)

    def body(self) -> dict[str, Any]:
        out = {**super().body(), "State": self.state}
        if self.cause is not None:
            out["Cause"] = self.cause
        return out


@dataclass(frozen=True, kw_only=True)
class Refused(_ReasonCause):
    """An invitation's ``refuse`` response: ``Reason`` and, after a SIP failure, ``Cause``."""

    CMD: ClassVar[str] = "Refused"
    reason: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_text(self.CMD, "Reason", self.reason, MAX_WORD_BYTES, empty=False)

    def body(self) -> dict[str, Any]:
        out = {**super().body(), "Reason": self.reason}
        if self.cause is not None:
            out["Cause"] = self.cause
        return out


@dataclass(frozen=True, kw_only=True)
class Calling(_Message):
    """The busy ``refuse`` response: the callee is in another call."""

    CMD: ClassVar[str] = "Calling"
    reason: str = "calling"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_text(self.CMD, "Reason", self.reason, MAX_WORD_BYTES, empty=False)

    def body(self) -> dict[str, Any]:
        return {**super().body(), "Reason": self.reason}


PeerMessage = (
    EndCall
    | CallState
    | CallStateResult
    | Offer
    | Answer
    | MediaError
    | MediaProblem
    | Dtmf
    | SipState
    | Refused
    | Calling
)


# -- parsing -----------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _chan_id(body: Mapping[str, Any]) -> str | None:
    # A null ChanId is read as none at all; its type is checked by the dataclass.
    return body.get("ChanId")


def _dtmf(body: Mapping[str, Any]) -> Dtmf:
    many, one = body.get("Digits"), body.get("Digit")
    if many is not None and one is not None and many != one:
        raise PeerMessageError("Dtmf: Digits and Digit disagree", Dtmf.CMD)
    digits = many if many is not None else one
    return Dtmf(chan_id=_chan_id(body), digits=digits)


def _readers() -> dict[str, Callable[[Mapping[str, Any]], PeerMessage]]:
    return {
        EndCall.CMD: lambda b: EndCall(chan_id=_chan_id(b)),
        CallState.CMD: lambda b: CallState(chan_id=_chan_id(b)),
        CallStateResult.CMD: lambda b: CallStateResult(
            chan_id=_chan_id(b), state=b.get("state"), mode=b.get("Mode")
        ),
        Offer.CMD: lambda b: Offer(chan_id=_chan_id(b), sdp=b.get("Sdp")),
        Answer.CMD: lambda b: Answer(chan_id=_chan_id(b), sdp=b.get("Sdp")),
        MediaError.CMD: lambda b: MediaError(chan_id=_chan_id(b), reason=b.get("Reason")),
        MediaProblem.CMD: lambda b: MediaProblem(
            chan_id=_chan_id(b), direction=b.get("Direction"), verdict=b.get("Verdict")
        ),
        Dtmf.CMD: _dtmf,
        SipState.CMD: lambda b: SipState(
            chan_id=_chan_id(b), state=b.get("State"), cause=b.get("Cause")
        ),
        Refused.CMD: lambda b: Refused(
            chan_id=_chan_id(b), reason=b.get("Reason"), cause=b.get("Cause")
        ),
        Calling.CMD: lambda b: Calling(chan_id=_chan_id(b), reason=b.get("Reason", "calling")),
    }


# Built on first use, not at import: the same dict from then on (one cached call), and
# mutation testing sees the builder run under the mutant (docs/mutation.rst).
@functools.cache
def _reader_table() -> Mapping[str, Callable[[Mapping[str, Any]], PeerMessage]]:
    return _readers()


@functools.cache
def commands() -> frozenset[str]:
    """Every ``Cmd`` this module reads and writes."""
    return frozenset(_reader_table())


def parse(text: str | bytes) -> PeerMessage:
    """The message ``text`` holds, or ``PeerMessageError`` (``NotACommand``,
    ``UnknownCommand``, or a bad field) saying why not."""
    if isinstance(text, str | bytes | bytearray) and len(text) > MAX_TEXT_LENGTH:
        raise NotACommand(f"longer than {MAX_TEXT_LENGTH} characters")
    try:
        body = peer_json.loads(text)
    except peer_json.PeerJsonError as exc:
        raise NotACommand(str(exc)) from None
    if not isinstance(body, dict):
        raise NotACommand("not a JSON object")
    cmd = body.get("Cmd")
    if not isinstance(cmd, str):
        raise NotACommand("no string Cmd")
    reader = _reader_table().get(cmd)
    if reader is None:
        # The name is the peer's: say how long it is, not what it is.
        raise UnknownCommand(f"unknown Cmd ({len(cmd)} characters)")
    return reader(body)


def serialise(msg: PeerMessage) -> str:
    """Compact JSON of ``msg`` (ASCII only: any other character is escaped)."""
    return json.dumps(msg.body(), separators=(",", ":"))
