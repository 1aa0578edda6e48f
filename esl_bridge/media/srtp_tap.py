"""The browser's SRTP audio taken straight from the ICE sockets, past aiortc's receive loop.

Without it, each browser packet travels (aioice 0.13, aiortc 1.16)::

    socket --> StunProtocol.datagram_received (tries to parse it as STUN: a ValueError
        per packet) --> Connection.data_received --> asyncio.Queue --> RTCDtlsTransport's
        receive task wakes up (_recv_next) --> SRTP unprotect --> RtpPacket.parse --> the
        RTP router --> await receiver._handle_rtp_packet (our ReceiverTap)

which was the largest single cost of a call on the G.711 fast path (a task wake-up and
a queue hand-off per packet). With the tap, the socket's protocol hands an SRTP packet
of the negotiated audio straight to ``SrtpTap``: unprotect with the DTLS transport's own
SRTP session, a 12-byte header parse, the ``ReceiverTap`` (RTCP receiver statistics,
the reorder buffer and the path toward FreeSWITCH). All synchronous, in the socket's
read callback.

What still takes aiortc's way, unchanged: STUN (connectivity checks, consent), DTLS,
RTCP, packets before the DTLS handshake has given the SRTP keys, packets of a payload
type this call did not negotiate (left for aiortc's router), and a packet that is not
valid RTP. SRTP has one replay window per session: a packet is unprotected once, by
whichever path takes it, so nothing is seen twice; packets already queued for aiortc
when the tap starts taking reach the same ``ReceiverTap`` through aiortc, and the
reorder buffer puts them in order.

Facts this module relies on (read in aioice's and aiortc's source; ``check_srtp_hook_point``
verifies them and raises ``HookPointChanged`` when a new version breaks them):

* asyncio's datagram transport calls ``protocol.datagram_received(data, addr)`` on the
  protocol *instance*, so an instance attribute of that name replaces it for that
  socket only (no class or process-wide patch); aioice's ``StunProtocol`` hands what is
  not STUN to ``self.receiver.data_received`` (the ``Connection``'s queue).
* The ``Connection`` keeps its sockets' protocols in ``_protocols``, filled while
  gathering, which aiortc finishes inside ``setLocalDescription``.
* ``RTCDtlsTransport`` sets ``_rx_srtp`` (a pylibsrtp ``Session``) when the handshake
  completes, has ``_state``, counts ``__rx_bytes``/``__rx_packets`` for its stats, and in
  ``_recv_next`` unprotects with ``_rx_srtp.unprotect`` what ``is_rtcp`` says is RTP.
"""

from __future__ import annotations

import functools
import inspect
import struct
from collections.abc import Callable
from typing import Any

import aioice.ice
import pylibsrtp
from aiortc.rtcdtlstransport import RTCDtlsTransport, State

from esl_bridge.logs import get_logger

from .rtp_receive import HookPointChanged, ReceiverTap, require_attributes
from .srtp_direct import SessionSrtp

__all__ = ["RtpView", "SrtpTap", "check_srtp_hook_point", "parse_rtp"]

log = get_logger("media")

_HEADER = struct.Struct("!BBHII")

_DTLS_ATTRS: dict[str, type | tuple[type, ...]] = {
    "_RTCDtlsTransport__rx_bytes": int,
    "_RTCDtlsTransport__rx_packets": int,
    "_state": State,
}


class RtpView:
    """The fields of one RTP packet the receive path reads (what ``ReceiverTap.deliver``
    and aiortc's ``StreamStatistics.add`` take from an ``RtpPacket``)."""

    __slots__ = ("marker", "payload", "payload_type", "sequence_number", "ssrc", "timestamp")

    def __init__(
        self,
        payload_type: int,
        sequence_number: int,
        timestamp: int,
        ssrc: int,
        payload: bytes,
        marker: int = 0,
    ) -> None:
        self.payload_type = payload_type
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.ssrc = ssrc
        self.payload = payload
        self.marker = marker


def parse_rtp(data: bytes) -> RtpView | None:
    """An unprotected RTP packet's header fields and payload (CSRCs, a header extension
    and padding skipped, RFC 3550 section 5.1); None when it is not valid RTP."""
    if len(data) < 12:
        return None
    first, second, seq, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        return None
    start = 12 + 4 * (first & 0x0F)
    if first & 0x10:
        if len(data) < start + 4:
            return None
        start += 4 + 4 * ((data[start + 2] << 8) | data[start + 3])
    end = len(data)
    if first & 0x20:
        end -= data[-1]
    if end < start:
        return None
    return RtpView(second & 0x7F, seq, timestamp, ssrc, data[start:end], second >> 7)


def check_srtp_hook_point(dtls: Any) -> None:
    """Raise HookPointChanged unless ``dtls`` (an aiortc RTCDtlsTransport), its ICE
    connection and the aioice/aiortc code under them are what the tap was written for."""
    if not isinstance(dtls, RTCDtlsTransport):
        raise HookPointChanged(f"not an aiortc RTCDtlsTransport: {type(dtls).__name__}")
    problem = _class_problem()
    if problem is not None:
        raise HookPointChanged(problem)
    require_attributes(dtls, _DTLS_ATTRS, "RTCDtlsTransport")
    connection = getattr(getattr(dtls, "transport", None), "_connection", None)
    if not isinstance(connection, aioice.ice.Connection):
        raise HookPointChanged("RTCDtlsTransport.transport._connection is not an aioice Connection")
    require_attributes(connection, {"_protocols": list}, "aioice Connection")


@functools.cache
def _class_problem() -> str | None:
    expected: list[tuple[Any, str, tuple[str, ...]]] = [
        (
            aioice.ice.StunProtocol.datagram_received,
            "aioice StunProtocol.datagram_received",
            ("self.receiver.data_received(",),
        ),
        (
            RTCDtlsTransport._recv_next,
            "RTCDtlsTransport._recv_next",
            ("is_rtcp(data)", "self._rx_srtp.unprotect(data)", "self.__rx_packets += 1"),
        ),
        (RTCDtlsTransport._setup_srtp, "RTCDtlsTransport._setup_srtp", ("self._rx_srtp =",)),
    ]
    for obj, name, needles in expected:
        try:
            text = inspect.getsource(obj)
        except (OSError, TypeError):
            return f"cannot read the source of {name}"
        missing = [n for n in needles if n not in text]
        if missing:
            return f"{name} no longer does {missing} (the SRTP tap relies on it)"
    return None


class SrtpTap:
    """Takes one call's browser RTP at its ICE sockets (see the module docstring).

    ``install()`` once the local description is set (the sockets exist then); returns
    ``uninstall``, which gives every socket back its own handler (idempotent). Counts what
    it took (``packets``), what failed SRTP (``srtp_errors``: forged, replayed or from
    another session) and what was not RTP after unprotecting (``malformed``).
    """

    def __init__(self, dtls: RTCDtlsTransport, tap: ReceiverTap) -> None:
        check_srtp_hook_point(dtls)
        self.dtls = dtls
        self.tap = tap
        self.packets = 0
        self.srtp_errors = 0
        self.malformed = 0
        self._dtls_state = dtls.__dict__
        self._protocols: list[Any] = []
        self._srtp = SessionSrtp()  # SRTP on the DTLS transport's receive session

    def install(self) -> Callable[[], None]:
        protocols = list(self.dtls.transport._connection._protocols)
        for protocol in protocols:
            if "datagram_received" in protocol.__dict__:
                raise RuntimeError("this ICE socket already has a datagram tap")
        for protocol in protocols:
            protocol.__dict__["datagram_received"] = self._handler(protocol.datagram_received)
        self._protocols = protocols
        if not protocols:
            log.warning("media.srtp_tap_no_sockets")

        def uninstall() -> None:
            for protocol in self._protocols:
                protocol.__dict__.pop("datagram_received", None)
            self._protocols = []

        return uninstall

    def _handler(self, original: Callable[[bytes, Any], None]) -> Callable[[bytes, Any], None]:
        dtls = self.dtls
        take = self._take
        codecs = self.tap.codecs  # the receiver's payload types (filled in place by aiortc)
        connected = State.CONNECTED

        def datagram_received(data: bytes, addr: Any) -> None:
            # SRTP/SRTCP start with 128..191; RTCP's packet type byte is 192..208 (what
            # aiortc's is_rtcp tests); the RTP payload type is in the clear.
            if (
                len(data) >= 12
                and 127 < data[0] < 192
                and not 191 < data[1] < 209
                and dtls._rx_srtp is not None
                and dtls._state is connected
                and (data[1] & 0x7F) in codecs
            ):
                take(data)
            else:
                original(data, addr)

        return datagram_received

    def _take(self, data: bytes) -> None:
        try:
            plain = self._srtp.of(self.dtls._rx_srtp).unprotect(data)
        except pylibsrtp.Error:
            self.srtp_errors += 1
            if self.srtp_errors in (1, 100, 10000):
                log.warning("media.srtp_unprotect_failed", count=self.srtp_errors)
            return
        state = self._dtls_state
        state["_RTCDtlsTransport__rx_bytes"] += len(data)
        state["_RTCDtlsTransport__rx_packets"] += 1
        packet = parse_rtp(plain)
        if packet is None:
            self.malformed += 1
            return
        self.packets += 1
        self.tap.deliver(packet)
