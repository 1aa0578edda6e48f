"""FreeSWITCH -> browser RTP sent on the shared tick, without aiortc's per-packet sender loop.

Per call, on the process-wide pacing tick (media/ticker.py ``SharedTicker.call_at``)::

    ChannelTrack.take_tick / next_payload (the encoded 20 ms payload) --> 12-byte RTP
        header + the constant MID extension --> SRTP protect (the DTLS transport's session)
        --> the nominated ICE pair's UDP socket (``sendto``), all synchronous

aiortc's ``RTCRtpSender._run_rtp`` does the same per packet with a task per call woken by
``ChannelTrack.recv``, an ``av.Packet``, the encoder's ``pack()``, an ``RtpPacket`` with
header extensions, two NTP clock reads, and two awaits down to the socket. Here the
sender's ``_run_rtp`` is replaced on the instance (no class or process-wide patch) by a
coroutine that only waits for the sender to stop, so aiortc never asks the track for a
packet: ``ChannelTrack.recv`` is not called while the direct sender runs.

Facts about aiortc 1.16 / aioice 0.13 this module relies on (read in their source;
``check_send_hook_point`` verifies each one and raises ``HookPointChanged`` when a new
aiortc or aioice breaks them):

* ``RTCRtpSender.send(parameters)`` records the MID and configures the sender's header
  extension map, then starts ``self._run_rtp(parameters.codecs[0])`` and
  ``self._run_rtcp()`` as tasks: an instance attribute ``_run_rtp`` is what it starts.
  ``stop()`` waits for the private events ``__rtp_started`` and ``__rtp_exited``, which
  the replacement sets as aiortc's loop does.
* ``_run_rtcp`` builds each RTCP sender report from the private ``__ntp_timestamp``,
  ``__rtp_timestamp``, ``__packet_count`` and ``__octet_count`` (octets of payload), and
  ``getStats`` reads the two counts: the direct sender keeps all four up to date.
* ``RTCDtlsTransport._send_rtp`` checks the state is connected, protects with
  ``_tx_srtp.protect`` and awaits ``transport._send``, which is aioice's
  ``Connection.send`` -> ``sendto(data, 1)`` -> the nominated pair's protocol
  ``send_data(data, remote_addr)``; for a host or server-reflexive candidate that protocol
  is ``StunProtocol`` whose ``send_data`` is one synchronous ``transport.sendto``. A TURN
  relay's protocol (channel binding) is asynchronous: there the protected packet is handed
  to it in a task, in order.
* aioice's ``Connection`` keeps its nominated pairs in one dict, ``_nominated``, for its
  whole life (filled and cleared, never replaced): the sender keeps a reference to it and
  looks the pair up per packet, and builds the pair's address and socket sender
  (``udp_send.DirectDatagrams``) again only when the pair changes.
* The DTLS transport's ``_tx_srtp`` is a pylibsrtp ``Session``; packets are protected on
  it with ``srtp_direct.DirectSrtp`` (the same libsrtp call, no per-packet allocation).
* For audio aiortc negotiates two header extensions, MID and ``ssrc-audio-level``; on the
  packet path it sends only the MID (no audio level: it has no ``AudioFrame`` to measure).
  The MID is constant for the call, so the header is one template per call with sequence
  number and timestamp filled in per packet. Audio has no NACK in aiortc's capabilities,
  so no RTP history is kept for retransmission.
* The browser's RTCP reports reach the sender through ``RTCDtlsTransport._handle_rtcp_data``
  as ``await recipient._handle_rtcp_packet(packet)`` (looked up on the instance) for each
  RR or SR holding a report block about the sender's SSRC: ``install()`` wraps it on the
  instance to note each such block's extended highest sequence number (the one-way audio
  verdict ``browser_not_playing``, core/media_verdict.py), then hands the packet on.

Sequence numbers and timestamps start at random values (aiortc's
``random_sequence_number`` and ``random32``), the timestamp steps by the codec's clock
rate / 50 per 20 ms tick (a tick dropped while the sender is disabled still advances it),
and the marker bit is set on the first packet only (the start of the talkspurt).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

import aioice.ice
from aiortc import RTCRtpSender
from aiortc.rtcdtlstransport import RTCDtlsTransport, State
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import random_sequence_number
from aiortc.rtp import HeaderExtensionsMap, RtcpRrPacket, RtcpSrPacket, RtpPacket
from aiortc.utils import random32

from esl_bridge.logs import get_logger

from .rtp_receive import HookPointChanged, require_attributes
from .srtp_direct import SessionSrtp
from .ticker import TICK_EPS, SharedTicker, shared_ticker
from .udp_send import DirectDatagrams
from .unicast import FRAME_S

__all__ = ["DirectSender", "HookPointChanged", "check_send_hook_point"]

log = get_logger("media")

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix)

# Ticks sent back to back at most per wake-up when the loop fell behind (the endpoint's
# schedule skips what is older than its catch-up limit; this only bounds one callback).
MAX_BURST = 10
# The RTCP sender report's clock pair is refreshed every this many packets (200 ms).
NTP_PAIR_EVERY = 10
# Packets handed to a TURN relay's asynchronous send and not yet gone (200 ms of audio).
MAX_IN_FLIGHT = 10

_SENDER_ATTRS: dict[str, type | tuple[type, ...]] = {
    "_RTCRtpSender__rtp_started": asyncio.Event,
    "_RTCRtpSender__rtp_exited": asyncio.Event,
    "_RTCRtpSender__rtp_header_extensions_map": HeaderExtensionsMap,
    "_RTCRtpSender__ntp_timestamp": int,
    "_RTCRtpSender__rtp_timestamp": int,
    "_RTCRtpSender__packet_count": int,
    "_RTCRtpSender__octet_count": int,
    "_ssrc": int,
    "_enabled": bool,
}
_RTCP_READS = (
    "self.__ntp_timestamp",
    "self.__rtp_timestamp",
    "self.__packet_count",
    "self.__octet_count",
)


class PayloadSource(Protocol):
    """What the direct sender needs of ``leg.ChannelTrack``."""

    readyState: str
    frames: int

    def next_deadline(self, now: float) -> float: ...

    def take_tick(self, now: float) -> bytes | None: ...

    def next_payload(self, channel_frame: bytes | None) -> bytes: ...

    def stop(self) -> None: ...


def check_send_hook_point(sender: Any) -> None:
    """Raise HookPointChanged unless ``sender`` (an aiortc RTCRtpSender) and the aiortc and
    aioice under it offer exactly what the direct sender uses (see the module docstring)."""
    if not isinstance(sender, RTCRtpSender):
        raise HookPointChanged(f"not an aiortc RTCRtpSender: {type(sender).__name__}")
    problem = _class_problem(type(sender))
    if problem is not None:
        raise HookPointChanged(problem)
    require_attributes(sender, _SENDER_ATTRS, "RTCRtpSender")


def _source(obj: Any) -> str | None:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return None


@functools.cache
def _class_problem(cls: type) -> str | None:
    """What changed in aiortc/aioice (once per sender class: it reads their source)."""
    run_rtp = getattr(cls, "_run_rtp", None)
    if run_rtp is None or not inspect.iscoroutinefunction(run_rtp):
        return "RTCRtpSender._run_rtp is gone or not a coroutine"
    params = list(inspect.signature(run_rtp).parameters)
    if params != ["self", "codec"]:
        return f"RTCRtpSender._run_rtp{tuple(params)} changed signature (expected (self, codec))"
    expected: list[tuple[Any, str, tuple[str, ...]]] = [
        (cls.send, "RTCRtpSender.send", ("self._run_rtp(parameters.codecs[0])",)),
        (cls.stop, "RTCRtpSender.stop", ("self.__rtp_started.wait()", "self.__rtp_exited.wait()")),
        (cls._run_rtcp, "RTCRtpSender._run_rtcp", _RTCP_READS),
        (
            RTCDtlsTransport._send_rtp,
            "RTCDtlsTransport._send_rtp",
            ("State.CONNECTED", "self._tx_srtp.protect(data)", "self.transport._send(data)"),
        ),
        (
            aioice.ice.Connection.sendto,
            "aioice Connection.sendto",
            ("self._nominated.get(component)", "active_pair.protocol.send_data("),
        ),
        (
            aioice.ice.StunProtocol.send_data,
            "aioice StunProtocol.send_data",
            ("self.transport.sendto(data, addr)",),
        ),
        (
            RTCDtlsTransport._handle_rtcp_data,
            "RTCDtlsTransport._handle_rtcp_data",
            ("await recipient._handle_rtcp_packet(packet)",),
        ),
    ]
    for obj, name, needles in expected:
        text = _source(obj)
        if text is None:
            return f"cannot read the source of {name}"
        missing = [n for n in needles if n not in text]
        if missing:
            return f"{name} no longer does {missing} (the direct RTP sender relies on it)"
    # The sender keeps a reference to the connection's dict of nominated pairs: it must be
    # the one dict for the connection's life (filled and cleared, never replaced).
    connection_text = _source(aioice.ice.Connection) or ""
    if connection_text.count("self._nominated =") + connection_text.count("self._nominated:") != 1:
        return "aioice Connection assigns _nominated more than once (the direct sender keeps it)"
    dtls_init = _source(RTCDtlsTransport.__init__) or ""
    for needle in ("self.__tx_bytes", "self.__tx_packets", "self._tx_srtp"):
        if needle not in dtls_init:
            return f"RTCDtlsTransport.__init__ no longer sets {needle}"
    return None


def _ntp_now() -> int:
    """The wall clock as a 64-bit NTP timestamp (what aiortc's ``clock.current_ntp_time``
    gives, without its datetime arithmetic)."""
    return int((time.time() + NTP_EPOCH_OFFSET) * 4294967296.0)


class DirectSender:
    """Sends one call's browser-bound RTP from the shared tick, in place of aiortc's
    per-packet loop in ``sender`` (this instance only).

    ``install()`` (before the sender starts, i.e. before the DTLS transport connects)
    replaces the sender's ``_run_rtp``; when aiortc starts it, packets go out every
    20 ms of the track's playout clock until the sender stops (``pc.close()``) or the
    transport fails. Raises HookPointChanged from ``install()`` on an aiortc it does not
    know.
    """

    def __init__(
        self,
        sender: RTCRtpSender,
        track: PayloadSource,
        *,
        ticker: SharedTicker | None = None,
        leg_log: Any = None,
    ) -> None:
        self.sender = sender
        self.track = track
        self.log = leg_log if leg_log is not None else log
        self._ticker = ticker
        self._state = sender.__dict__
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False
        self._header: bytearray | None = None
        self._seq = 0
        self._ts = 0
        self._step = 0
        self._dtls: RTCDtlsTransport | None = None
        self._dtls_state: dict[str, Any] = {}
        self._nominated: dict[int, Any] = {}  # the ICE connection's nominated pairs
        self._pair: Any = None  # the last nominated pair seen, its address and socket
        self._pair_addr: tuple[str, int] | None = None
        self._pair_socket: DirectDatagrams | None = None
        self._srtp = SessionSrtp()  # SRTP on the DTLS transport's tx session
        self._pending: asyncio.Future[None] | None = None
        self._in_flight = 0
        self.codec: RTCRtpCodecParameters | None = None
        self.packets = 0
        self.octets = 0
        self.send_errors = 0
        # The browser's reception report blocks about our stream, and the extended highest
        # sequence number the last one says it received (None before the first).
        self.browser_reports = 0
        self.browser_highest_seq: int | None = None

    # -- aiortc side

    def install(self) -> Callable[[], None]:
        """Replace the sender's ``_run_rtp`` (instance attribute); returns ``uninstall``."""
        check_send_hook_point(self.sender)
        state = self._state
        if isinstance(getattr(state.get("_run_rtp"), "__self__", None), DirectSender):
            raise RuntimeError("this sender already has a direct RTP sender")
        run = self._run_rtp
        state["_run_rtp"] = run
        handle_rtcp = self._rtcp_handler(self.sender._handle_rtcp_packet)
        state["_handle_rtcp_packet"] = handle_rtcp

        def uninstall() -> None:
            if state.get("_run_rtp") is run:
                del state["_run_rtp"]
            if state.get("_handle_rtcp_packet") is handle_rtcp:
                del state["_handle_rtcp_packet"]

        return uninstall

    def _rtcp_handler(self, original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        async def handle_rtcp(packet: Any) -> None:
            if isinstance(packet, RtcpRrPacket | RtcpSrPacket):
                ssrc = self.sender._ssrc
                for report in packet.reports:
                    if report.ssrc == ssrc:
                        self.browser_reports += 1
                        self.browser_highest_seq = report.highest_sequence
            await original(packet)

        return handle_rtcp

    async def _run_rtp(self, codec: RTCRtpCodecParameters) -> None:
        """What ``RTCRtpSender.send`` starts instead of aiortc's loop: set up, then wait
        for ``stop()`` (which cancels it) while the tick sends."""
        state = self._state
        state["_RTCRtpSender__rtp_started"].set()
        try:
            self._start(codec)
            await asyncio.get_running_loop().create_future()  # until cancelled
        except asyncio.CancelledError:
            pass
        finally:
            self._running = False
            if self.track.readyState == "live":
                self.track.stop()  # as aiortc's loop does when it ends
            state["_RTCRtpSender__rtp_exited"].set()

    def _start(self, codec: RTCRtpCodecParameters) -> None:
        self.codec = codec
        self._loop = asyncio.get_running_loop()
        if self._ticker is None:
            self._ticker = shared_ticker()
        self._dtls = dtls = self.sender.transport
        self._dtls_state = dtls.__dict__
        self._nominated = dtls.transport._connection._nominated
        self._step = codec.clockRate // 50
        self._seq = random_sequence_number()
        self._ts = random32()
        probe = RtpPacket(payload_type=codec.payloadType, marker=1, ssrc=self.sender._ssrc)
        probe.extensions.mid = self._state.get("_RTCRtpSender__mid")
        self._header = bytearray(
            probe.serialize(self._state["_RTCRtpSender__rtp_header_extensions_map"])
        )
        self._running = True
        track_codec = getattr(self.track, "codec", None)
        if track_codec is not None and track_codec != codec.name.lower():
            self.log.error("media.direct_sender_codec", codec=codec.name, track=track_codec)
        self.log.info(
            "media.direct_sender",
            codec=codec.name,
            payload_type=codec.payloadType,
            header_bytes=len(self._header),
        )
        self._ticker.call_at(self._loop.time(), self._on_tick)

    # -- the tick

    def _on_tick(self) -> None:
        if not self._running:
            return
        loop = self._loop
        ticker = self._ticker
        assert loop is not None and ticker is not None
        track = self.track
        now = loop.time()
        for _ in range(MAX_BURST):
            if track.readyState != "live":
                self._running = False
                return
            deadline = track.next_deadline(now)
            if deadline - now > TICK_EPS:
                ticker.call_at(min(deadline, now + FRAME_S), self._on_tick)
                return
            payload = track.next_payload(track.take_tick(now))
            track.frames += 1
            if self._state["_enabled"]:
                try:
                    self._send(payload)
                except Exception as exc:  # one bad packet must not end the call's audio
                    self.send_errors += 1
                    if self.send_errors in (1, 10, 100, 1000) or self.send_errors % 10000 == 0:
                        self.log.error("media.send_error", error=repr(exc), count=self.send_errors)
                if not self._running:
                    return
            self._ts = (self._ts + self._step) & 0xFFFFFFFF
        ticker.call_at(now, self._on_tick)  # still behind: go on at the next grid point

    def _send(self, payload: bytes) -> None:
        header = self._header
        dtls = self._dtls
        assert header is not None and dtls is not None
        if dtls._state is not State.CONNECTED:
            # aiortc's loop ends on this ConnectionError; so does this sender.
            self._stop_sending("dtls_not_connected")
            return
        struct.pack_into("!HI", header, 2, self._seq, self._ts)
        data = self._srtp.of(dtls._tx_srtp).protect(header, payload)
        # SRTP refuses to protect an index twice: the next packet gets the next number
        # even if this one fails to leave.
        self._seq = (self._seq + 1) & 0xFFFF
        header[1] &= 0x7F  # the marker: first packet only
        pair = self._nominated.get(1)
        if pair is None:
            self._stop_sending("no_ice_pair")
            return
        if pair is not self._pair:
            # The nominated pair, looked up once per change (the pair's address is a
            # property that builds a tuple): a synchronous socket for host and
            # server-reflexive candidates, a TURN relay's asynchronous send otherwise.
            self._pair = pair
            self._pair_addr = pair.remote_addr
            protocol = pair.protocol
            self._pair_socket = (
                DirectDatagrams(protocol.transport, protocol)
                if type(protocol) is aioice.ice.StunProtocol
                else None
            )
        if self._pair_socket is not None:
            self._pair_socket.send(data, self._pair_addr)
        else:
            self._send_async(self._pair.protocol, data, self._pair_addr)
        dtls_state = self._dtls_state
        dtls_state["_RTCDtlsTransport__tx_bytes"] += len(data)
        dtls_state["_RTCDtlsTransport__tx_packets"] += 1
        packets = self.packets = self.packets + 1
        octets = self.octets = self.octets + len(payload)
        state = self._state
        if packets % NTP_PAIR_EVERY == 1:
            # The sender report's (NTP, RTP) pair only has to name one instant of the
            # stream; a pair from the last 200 ms is as true as one from this packet.
            state["_RTCRtpSender__ntp_timestamp"] = _ntp_now()
            state["_RTCRtpSender__rtp_timestamp"] = self._ts
        state["_RTCRtpSender__packet_count"] = packets
        state["_RTCRtpSender__octet_count"] = octets

    def _send_async(self, protocol: Any, data: bytes, addr: tuple[str, int]) -> None:
        """A TURN relay: its ``send_data`` may wait for a channel binding. Packets are
        chained so they leave in order."""
        if self._in_flight >= MAX_IN_FLIGHT:
            # The relay is not keeping up: drop (counted) rather than queue without bound.
            self.send_errors += 1
            return
        previous = self._pending
        loop = self._loop
        assert loop is not None
        self._in_flight += 1

        async def send() -> None:
            try:
                if previous is not None and not previous.done():
                    await asyncio.wait({previous})  # in order; its outcome is its own
                await protocol.send_data(data, addr)
            except Exception:  # a failed relay send is one lost packet, counted
                self.send_errors += 1
            finally:
                self._in_flight -= 1

        self._pending = loop.create_task(send())

    def _stop_sending(self, reason: str) -> None:
        self._running = False
        self.log.info("media.direct_sender_stopped", reason=reason, packets=self.packets)
