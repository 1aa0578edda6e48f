"""Browser -> FreeSWITCH without aiortc's jitter buffer and decoder thread.

Per call::

    SRTP --> aiortc RTCDtlsTransport --> tap on the transceiver's RTCRtpReceiver (this
        instance only) --> ReorderBuffer (sequence numbers, small fixed depth) --> inline
        decode to the channel's unicast format, one 20 ms frame per packet
        --> sink (``UnicastEndpoint.write_frame``, which paces toward FreeSWITCH)

Facts about aiortc 1.16 this module relies on (read in its source; ``check_hook_point``
verifies each one and raises ``HookPointChanged`` when a new aiortc breaks them):

* ``RTCDtlsTransport._handle_rtp_data`` parses each SRTP-unprotected datagram into an
  ``RtpPacket`` and awaits ``receiver._handle_rtp_packet(packet, arrival_time_ms=...)`` on
  the receiver *instance* its router picked, so an instance attribute of that name takes
  the packet for this receiver only (no class or process-wide patch).
* ``RTCRtpReceiver._handle_rtp_packet`` keeps the RTCP receiver statistics (a
  ``StreamStatistics`` per SSRC in the private ``__remote_streams``, which ``getStats`` and
  the RTCP receiver reports read) and the active SSRCs (``__active_ssrc``), looks the payload
  type up in ``__codecs`` (filled by ``receive()``), then feeds aiortc's jitter buffer and
  queues complete frames for the decoder thread. The tap does the statistics itself and
  hands the packet to us instead, so the decoder thread (started by ``receive()``) waits on
  an empty queue for the whole call and never wakes up.

Decoding (every codec aiortc negotiates for audio):

* Opus: libopus through ``ctypes`` when the system has it (``libopus.so.0``): it decodes
  directly at the channel's rate (8000, 16000 or 48000 Hz, mono), so nothing is resampled,
  and a lost packet is concealed by libopus itself: in-band FEC from the next packet when
  it is already buffered, else its packet loss concealment (PLC). Without the system
  library: PyAV's ``libopus`` decoder, which always outputs 48 kHz (FFmpeg fixes its rate),
  so channels at 8 or 16 kHz get a resampler; concealment is then libopus's PLC, reached
  by a packet of only the last TOC byte (a zero-length frame, which libopus decodes as a
  lost one).
* PCMU/PCMA: a 256-entry table per codec, built once from PyAV's ``pcm_mulaw`` /
  ``pcm_alaw`` decoders, applied with ``bytes.translate`` (no per-sample Python loop);
  G.722: PyAV's ``g722`` decoder (16 kHz). Resampled only when the channel's rate
  differs. A lost packet becomes silence (these codecs have no concealment of their own).
* Native fast path (the channel's unicast format is the negotiated PCMU/PCMA itself): the
  payload bytes go to the sink unchanged; a lost packet becomes the codec's silence.

A stereo channel gets the mono audio on both sides.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import av
from aiortc import RTCRtpReceiver, clock
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import StreamStatistics
from aiortc.rtp import RtpPacket

from esl_bridge.logs import get_logger

from .libopus import DecodeError, LibOpusDecoder, load_libopus, opus_backend
from .unicast import FRAME_S, native_to_le16

__all__ = [
    "DEFAULT_DEPTH",
    "HookPointChanged",
    "ReceivePath",
    "ReceiveStats",
    "ReceiverTap",
    "ReorderBuffer",
    "check_hook_point",
    "opus_backend",
    "tap_receiver",
]

log = get_logger("media")

DEFAULT_DEPTH = 2
"""Frames held while a missing one may still come: 2 x 20 ms at most (see ReorderBuffer)."""

MAX_GAP = 50
"""A sequence jump larger than this (1 s of 20 ms packets), either way, is a new stream:
the buffer resets instead of concealing or dropping everything in between."""

MAX_CONCEAL = 5
"""Concealed frames per gap at most (100 ms); the rest of a longer gap has already been
covered in real time by the endpoint's pacer (it sends silence when it has no frame)."""


# --------------------------------------------------------------------------- the tap


class HookPointChanged(RuntimeError):
    """aiortc no longer has what the receive tap relies on (see the module docstring)."""


_RECEIVER_ATTRS: dict[str, type] = {
    "_RTCRtpReceiver__codecs": dict,
    "_RTCRtpReceiver__remote_streams": dict,
    "_RTCRtpReceiver__active_ssrc": dict,
    "_enabled": bool,
}
_EXPECTED_PARAMS = ["self", "packet", "arrival_time_ms"]
_PACKET_ATTRS = ("payload_type", "sequence_number", "timestamp", "ssrc", "payload")


def check_hook_point(receiver: Any) -> None:
    """Raise HookPointChanged unless ``receiver`` (an aiortc RTCRtpReceiver) offers exactly
    the hook the tap uses: the method's signature, the transport calling it on the instance,
    and the private attributes the tap reads."""
    if not isinstance(receiver, RTCRtpReceiver):
        raise HookPointChanged(f"not an aiortc RTCRtpReceiver: {type(receiver).__name__}")
    problem = _class_problem(type(receiver))
    if problem is not None:
        raise HookPointChanged(problem)
    require_attributes(receiver, _RECEIVER_ATTRS, "RTCRtpReceiver")


def require_attributes(obj: Any, attrs: Mapping[str, Any], owner: str) -> None:
    """Raise HookPointChanged unless every (private) attribute of ``obj`` named in
    ``attrs`` is there, of its type: what the tap and the direct sender read or write."""
    for name, kind in attrs.items():
        value = getattr(obj, name, None)
        if not isinstance(value, kind):
            raise HookPointChanged(
                f"{owner} has no {name} of type {getattr(kind, '__name__', kind)} "
                f"(found {type(value).__name__})"
            )


@functools.cache
def _class_problem(cls: type) -> str | None:
    """What changed in the receiver's class or its callers (once per class: it reads
    aiortc's source)."""
    method = getattr(cls, "_handle_rtp_packet", None)
    if method is None or not inspect.iscoroutinefunction(method):
        return "RTCRtpReceiver._handle_rtp_packet is gone or not a coroutine"
    params = list(inspect.signature(method).parameters)
    if params != _EXPECTED_PARAMS:
        return (
            f"RTCRtpReceiver._handle_rtp_packet{tuple(params)} changed signature "
            f"(the tap was written for {tuple(_EXPECTED_PARAMS)})"
        )
    try:
        dispatch = inspect.getsource(RTCDtlsTransport._handle_rtp_data)
    except (AttributeError, OSError, TypeError) as exc:
        return f"cannot read RTCDtlsTransport._handle_rtp_data: {exc}"
    if "receiver._handle_rtp_packet(" not in dispatch:
        return "RTCDtlsTransport._handle_rtp_data no longer calls receiver._handle_rtp_packet"
    if not callable(getattr(StreamStatistics, "add", None)):
        return "aiortc.rtcrtpreceiver.StreamStatistics.add is gone"
    probe = RtpPacket()
    missing = [a for a in _PACKET_ATTRS if not hasattr(probe, a)]
    if missing:
        return f"aiortc RtpPacket lost attributes {missing}"
    return None


def tap_receiver(
    receiver: RTCRtpReceiver,
    on_packet: Callable[[RtpPacket, float], None],
    *,
    clock_s: Callable[[], float] = time.monotonic,
) -> Callable[[], None]:
    """Route every RTP packet of this receiver to ``on_packet(packet, now)`` instead of
    aiortc's jitter buffer and decoder thread (a ``ReceiverTap``); returns its ``untap``."""
    return ReceiverTap(receiver, on_packet, clock_s=clock_s).untap


class ReceiverTap:
    """Every RTP packet of one aiortc receiver goes to ``on_packet(packet, now)`` instead of
    aiortc's jitter buffer and decoder thread, keeping aiortc's RTCP receiver statistics.
    ``now`` comes from ``clock_s`` (``time.monotonic``, the clock of asyncio's default
    loop). Packets of an unknown payload type or of RTX are dropped as aiortc drops them.

    Packets reach ``deliver`` two ways: from aiortc's DTLS transport through the
    receiver's ``_handle_rtp_packet`` (replaced on this instance), and straight from the
    ICE sockets (media/srtp_tap.py ``SrtpTap``), which skips aiortc's receive loop.
    ``deliver`` takes anything with the ``RtpPacket`` attributes the path reads
    (``payload_type``, ``sequence_number``, ``timestamp``, ``ssrc``, ``payload``).

    An exception out of ``on_packet`` is logged (``media.receive_error``) and the next
    packet is handled: raised into aiortc it would end the transport's receive loop.

    ``untap()`` gives the receiver back its own method (idempotent). Raises
    HookPointChanged when this aiortc is not the one the tap was written for.
    """

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        on_packet: Callable[[RtpPacket, float], None],
        *,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        check_hook_point(receiver)
        self.receiver = receiver
        self.on_packet = on_packet
        self.clock_s = clock_s
        self.errors = 0
        self.packets = 0
        state = self._state = receiver.__dict__
        self._active = state["_RTCRtpReceiver__active_ssrc"]
        self._codecs = state["_RTCRtpReceiver__codecs"]
        self._streams = state["_RTCRtpReceiver__remote_streams"]
        self._media_codec: RTCRtpCodecParameters | None = None  # last seen, not RTX
        if getattr(state.get("_handle_rtp_packet"), "esl_bridge_tap", False):
            raise RuntimeError("this receiver is already tapped")
        deliver = self.deliver

        async def _handle_rtp_packet(packet: RtpPacket, arrival_time_ms: int) -> None:
            deliver(packet)

        _handle_rtp_packet.esl_bridge_tap = True  # type: ignore[attr-defined]
        self._method = _handle_rtp_packet
        state["_handle_rtp_packet"] = _handle_rtp_packet

    def untap(self) -> None:
        if self._state.get("_handle_rtp_packet") is self._method:
            del self._state["_handle_rtp_packet"]

    @property
    def codecs(self) -> Mapping[int, RTCRtpCodecParameters]:
        """The receiver's negotiated codecs by payload type (aiortc fills the one dict in
        place when the description is applied)."""
        return self._codecs

    def deliver(self, packet: Any) -> None:
        if not self._state["_enabled"]:
            return
        # aiortc stamps the SSRC with the wall clock on every packet; only
        # getSynchronizationSources reads it, with a 10 s horizon: every 25th packet
        # (0.5 s of audio) is as good, and a datetime per packet was 4 % of a call.
        self.packets += 1
        ssrc = packet.ssrc
        if self.packets % 25 == 1 or ssrc not in self._active:
            self._active[ssrc] = clock.current_datetime()
        codec = self._codecs.get(packet.payload_type)
        if codec is None:
            return
        stream = self._streams.get(ssrc)
        if stream is None:
            stream = self._streams[ssrc] = StreamStatistics(codec.clockRate)
        stream.add(packet)
        if codec is not self._media_codec:
            if codec.name.lower() == "rtx":  # a property that splits the MIME type
                return
            self._media_codec = codec
        try:
            self.on_packet(packet, self.clock_s())
        except Exception as exc:
            # Raised into aiortc, it would end the DTLS transport's receive loop (the call).
            self.errors += 1
            if self.errors in (1, 10, 100, 1000) or self.errors % 10000 == 0:
                log.error("media.receive_error", error=repr(exc), count=self.errors)


# --------------------------------------------------------------------------- reorder buffer


def seq_delta(seq: int, ref: int) -> int:
    """``seq - ref`` on the 16-bit sequence circle, in [-32768, 32767]."""
    return ((seq - ref + 0x8000) & 0xFFFF) - 0x8000


@dataclass
class BufferStats:
    received: int = 0
    emitted: int = 0
    reordered: int = 0
    lost: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    resets: int = 0


class ReorderBuffer:
    """Sans-I/O reorder buffer keyed by RTP sequence number (16-bit wrap).

    ``push(seq, ssrc, item, now)`` and ``poll(now)`` return what to emit, in order, as
    ``(seq, item)`` pairs; ``item`` None means "lost: conceal this one". In order, a packet
    is emitted at once (no added delay). Behind a missing packet at most ``depth`` packets
    are held; when the ``depth``-th arrives, or when the oldest held one has waited
    ``max_wait_s`` (default ``depth`` x 20 ms, for a stream that pauses), the missing one is
    declared lost. So with the default depth 2 a reordering of one position is repaired, and
    a loss holds the packets behind it for one packet interval (20 ms; ``max_wait_s``, 40 ms,
    at most). Concealment is asked for at most ``max_conceal`` frames per gap (the rest is
    only counted as lost).

    Dropped and counted: duplicates (of one of the last ``max_gap`` packets emitted); late
    packets (older than the next one to emit and not emitted: declared lost, or sent before
    the first packet of the stream, which sets where the stream starts). An SSRC change or a
    jump of more than ``max_gap`` either way resets the buffer (what it held is emitted
    first, in order, with no concealment). Memory: at most ``depth`` held items and
    ``max_gap`` remembered sequence numbers, whatever arrives.
    """

    def __init__(
        self,
        depth: int = DEFAULT_DEPTH,
        *,
        max_wait_s: float | None = None,
        max_gap: int = MAX_GAP,
        max_conceal: int = MAX_CONCEAL,
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1 (got {depth})")
        if not 0 < max_gap < 0x4000:
            raise ValueError(f"max_gap must be in 1..16383 (got {max_gap})")
        self.depth = depth
        self.max_wait_s = depth * FRAME_S if max_wait_s is None else max_wait_s
        self.max_gap = max_gap
        self.max_conceal = max_conceal
        self.stats = BufferStats()
        self._ssrc: int | None = None
        self._next: int | None = None  # the sequence number to emit next
        self._held: dict[int, tuple[Any, float]] = {}  # seq -> (item, arrival)
        self._emitted_recent: deque[int] = deque(maxlen=max_gap)
        self._gap_run = 0  # frames concealed in the current gap

    def __len__(self) -> int:
        return len(self._held)

    @property
    def next_seq(self) -> int | None:
        return self._next

    def deadline(self) -> float | None:
        """When ``poll`` will declare the missing packet lost (None: nothing is held)."""
        if not self._held:
            return None
        return min(arrival for _, arrival in self._held.values()) + self.max_wait_s

    def push(self, seq: int, ssrc: int, item: Any, now: float) -> list[tuple[int, Any]]:
        seq &= 0xFFFF
        stats = self.stats
        stats.received += 1
        if seq == self._next and ssrc == self._ssrc and not self._held:
            # The common case, in order with nothing held: emitted at once.
            self._emitted_recent.append(seq)
            stats.emitted += 1
            self._gap_run = 0
            self._next = (seq + 1) & 0xFFFF
            return [(seq, item)]
        out: list[tuple[int, Any]] = []
        if self._next is not None and ssrc != self._ssrc:
            self._reset(out)
        if self._next is None:
            self._ssrc, self._next = ssrc, seq
        assert self._next is not None
        delta = seq_delta(seq, self._next)
        if delta > self.max_gap or delta < -self.max_gap:
            self._reset(out)
            self._ssrc, self._next, delta = ssrc, seq, 0
        if delta < 0:
            if seq in self._emitted_recent:
                self.stats.duplicates += 1
            else:
                self.stats.late += 1
            return out
        if seq in self._held:
            self.stats.duplicates += 1
            return out
        if any(seq_delta(other, seq) > 0 for other in self._held):
            self.stats.reordered += 1
        self._held[seq] = (item, now)
        self._drain(out, now)
        return out

    def poll(self, now: float) -> list[tuple[int, Any]]:
        out: list[tuple[int, Any]] = []
        self._drain(out, now)
        return out

    def flush(self) -> list[tuple[int, Any]]:
        """Everything held, in order, no concealment (the end of a stream)."""
        out: list[tuple[int, Any]] = []
        self._reset(out, count=False)
        return out

    def _drain(self, out: list[tuple[int, Any]], now: float) -> None:
        held = self._held
        while held:
            assert self._next is not None
            entry = held.pop(self._next, None)
            if entry is not None:
                out.append((self._next, entry[0]))
                self._emitted_recent.append(self._next)
                self.stats.emitted += 1
                self._gap_run = 0
            else:
                oldest = min(arrival for _, arrival in held.values())
                if len(held) < self.depth and now - oldest < self.max_wait_s:
                    return  # the missing one may still come
                self.stats.lost += 1
                if self._gap_run < self.max_conceal:
                    self._gap_run += 1
                    out.append((self._next, None))
                    self.stats.concealed += 1
            self._next = (self._next + 1) & 0xFFFF

    def _reset(self, out: list[tuple[int, Any]], count: bool = True) -> None:
        if self._next is not None and count:
            self.stats.resets += 1
        base = self._next
        for seq in sorted(self._held, key=lambda s: seq_delta(s, base or 0)):
            out.append((seq, self._held[seq][0]))
            self.stats.emitted += 1
        self._held.clear()
        self._emitted_recent.clear()
        self._next = self._ssrc = None
        self._gap_run = 0


# --------------------------------------------------------------------------- decoders


class _Decoder(Protocol):
    out_rate: int

    def decode(self, payload: bytes) -> bytes:
        """Host-order s16 mono at ``out_rate``."""
        ...

    def conceal(self, next_payload: bytes | None) -> bytes: ...


class _AvDecoder:
    """A PyAV audio decoder giving host-order s16 mono bytes."""

    def __init__(self, name: str, rate: int) -> None:
        self._ctx = av.CodecContext.create(name, "r")
        self._ctx.sample_rate = rate  # type: ignore[attr-defined]
        self._ctx.layout = "mono"  # type: ignore[attr-defined]
        self.out_rate = 48000 if name == "libopus" else rate
        self._opus = name == "libopus"
        self._toc: int | None = None
        self._last = self.out_rate // 50
        self._resampler: av.AudioResampler | None = None

    def decode(self, payload: bytes) -> bytes:
        try:
            frames = self._ctx.decode(av.Packet(payload))
        except av.FFmpegError as exc:
            raise DecodeError(str(exc)) from exc
        if self._opus and payload:
            self._toc = payload[0] & 0xFC  # code 0: one frame
        out = []
        for frame in frames:
            if frame.format.name != "s16" or len(frame.layout.channels) != 1:
                if self._resampler is None:
                    self._resampler = av.AudioResampler(
                        format="s16", layout="mono", rate=frame.sample_rate
                    )
                out.extend(_s16(f) for f in self._resampler.resample(frame))
            else:
                out.append(_s16(frame))
        data = b"".join(out)
        if data:
            self._last = len(data) // 2
        return data

    def conceal(self, next_payload: bytes | None) -> bytes:
        if self._opus and self._toc is not None:
            # A TOC byte alone is a zero-length frame: libopus conceals it (PLC).
            try:
                return self.decode(bytes([self._toc]))
            except DecodeError:
                pass
        return bytes(self._last * 2)


def _s16(frame: av.AudioFrame) -> bytes:
    return bytes(frame.planes[0])[: frame.samples * 2]


_G711_TABLES: dict[str, tuple[bytes, bytes]] = {}


def _g711_tables(codec: str) -> tuple[bytes, bytes]:
    """(low bytes, high bytes) of the little-endian sample of each code, from PyAV."""
    if codec not in _G711_TABLES:
        ctx = av.CodecContext.create("pcm_mulaw" if codec == "PCMU" else "pcm_alaw", "r")
        ctx.sample_rate = 8000  # type: ignore[attr-defined]
        ctx.layout = "mono"  # type: ignore[attr-defined]
        pcm = b"".join(_s16(f) for f in ctx.decode(av.Packet(bytes(range(256)))))
        le = native_to_le16(pcm)
        if len(le) != 512:
            raise RuntimeError(f"PyAV decoded {len(le)} bytes for 256 {codec} codes")
        _G711_TABLES[codec] = (le[0::2], le[1::2])
    return _G711_TABLES[codec]


class _G711Decoder:
    """PCMU/PCMA to host-order s16 mono at 8 kHz by table lookup."""

    out_rate = 8000

    def __init__(self, codec: str) -> None:
        self._low, self._high = _g711_tables(codec)
        self._last = 160

    def decode(self, payload: bytes) -> bytes:
        out = bytearray(len(payload) * 2)
        out[0::2] = payload.translate(self._low)
        out[1::2] = payload.translate(self._high)
        self._last = len(payload) or self._last
        return native_to_le16(bytes(out))  # LE -> host order (the swap is symmetric)

    def conceal(self, next_payload: bytes | None) -> bytes:
        return bytes(self._last * 2)


class _Resampler:
    """Host-order s16 mono from ``rate_in`` to ``rate_out``, with the first output padded
    by the resampler's filter delay so each input frame completes one output frame."""

    def __init__(self, rate_in: int, rate_out: int) -> None:
        self.rate_in, self.rate_out = rate_in, rate_out
        self._av = av.AudioResampler(format="s16", layout="mono", rate=rate_out)
        self._primed = False

    def convert(self, pcm: bytes) -> bytes:
        samples = len(pcm) // 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.rate_in
        out = b"".join(_s16(f) for f in self._av.resample(frame))
        if not self._primed:
            self._primed = True
            short = round(samples * self.rate_out / self.rate_in) * 2 - len(out)
            if short > 0:
                out = bytes(short) + out
        return out


def _stereo(mono: bytes) -> bytes:
    out = bytearray(len(mono) * 2)
    out[0::4] = mono[0::2]
    out[1::4] = mono[1::2]
    out[2::4] = mono[0::2]
    out[3::4] = mono[1::2]
    return bytes(out)


# --------------------------------------------------------------------------- the path


class _Format(Protocol):
    """What the path needs of ``esl_bridge.media.unicast.ChannelFormat``."""

    @property
    def rate(self) -> int: ...

    @property
    def channels(self) -> int: ...

    @property
    def frame_bytes(self) -> int: ...

    def silence(self) -> bytes: ...


@dataclass
class ReceiveStats:
    received: int = 0
    reordered: int = 0
    lost: int = 0
    concealed: int = 0
    late: int = 0
    duplicates: int = 0
    resets: int = 0
    decode_errors: int = 0
    other_payload: int = 0
    frames_out: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


CODEC_NAMES = {"opus": "opus", "pcmu": "PCMU", "pcma": "PCMA", "g722": "G722"}


class ReceivePath:
    """The browser's RTP audio to the channel's unicast format, on the event loop thread.

    ``codec``: the negotiated codec (``RTCRtpCodecParameters``: name and payload type; other
    payload types are counted as ``other_payload`` and dropped). ``fmt``: the channel's
    unicast format (``ChannelFormat``; ``fmt.codec`` "PCMU"/"PCMA" equal to the negotiated
    codec selects the native fast path). ``sink(frame)`` gets frames of exactly
    ``fmt.frame_bytes`` bytes. ``opus_backend``: "auto" (libopus through ctypes when the
    system has it, else PyAV), "libopus" or "pyav".
    """

    def __init__(
        self,
        codec: RTCRtpCodecParameters,
        fmt: _Format,
        sink: Callable[[bytes], None],
        *,
        depth: int = DEFAULT_DEPTH,
        opus_backend: str = "auto",
    ) -> None:
        name = CODEC_NAMES.get(codec.name.lower())
        if name is None:
            raise ValueError(f"no receive path for codec {codec.name!r}")
        self.codec = name
        self.payload_type = codec.payloadType
        self.fmt = fmt
        self.sink = sink
        self.buffer = ReorderBuffer(depth)
        self._frame_bytes = fmt.frame_bytes
        self._stats = ReceiveStats()
        self._fifo = bytearray()
        channel_codec = getattr(fmt, "codec", "L16")
        self.native = channel_codec in ("PCMU", "PCMA") and channel_codec == name
        if channel_codec != "L16" and not self.native:
            raise ValueError(f"channel format {channel_codec} cannot carry {name} audio")
        self.backend = "native" if self.native else ""
        self._decoder: _Decoder | None = None
        self._resampler: _Resampler | None = None
        self._last_native = 160
        if not self.native:
            self._decoder = self._make_decoder(name, fmt.rate, opus_backend)
            if self._decoder.out_rate != fmt.rate:
                self._resampler = _Resampler(self._decoder.out_rate, fmt.rate)
        self.closed = False

    def _make_decoder(self, name: str, rate: int, backend: str) -> _Decoder:
        if name == "opus":
            if backend not in ("auto", "libopus", "pyav"):
                raise ValueError(f"unknown opus backend {backend!r}")
            if backend != "pyav" and load_libopus() is not None:
                self.backend = "libopus"
                return LibOpusDecoder(rate)
            if backend == "libopus":
                raise RuntimeError("libopus is not available on this system")
            self.backend = "pyav"
            return _AvDecoder("libopus", 48000)
        if name in ("PCMU", "PCMA"):
            self.backend = "table"
            return _G711Decoder(name)
        self.backend = "pyav"
        return _AvDecoder("g722", 16000)

    @property
    def stats(self) -> ReceiveStats:
        """A snapshot (packets keep coming while the caller awaits something else)."""
        b = self.buffer.stats
        return replace(
            self._stats,
            reordered=b.reordered,
            lost=b.lost,
            concealed=b.concealed,
            late=b.late,
            duplicates=b.duplicates,
            resets=b.resets,
        )

    def on_packet(self, packet: RtpPacket, now: float) -> None:
        """One RTP packet from the tap (``tap_receiver(receiver, path.on_packet)``)."""
        if self.closed:
            return
        self._stats.received += 1
        if packet.payload_type != self.payload_type:
            self._stats.other_payload += 1
            if self._stats.other_payload == 1:
                log.warning(
                    "media.receive_other_payload",
                    payload_type=packet.payload_type,
                    expected=self.payload_type,
                    codec=self.codec,
                )
            return
        ready = self.buffer.push(packet.sequence_number, packet.ssrc, packet.payload, now)
        if self.native and len(ready) == 1 and ready[0][1] is not None:
            # The fast path's common case: one in-order frame, moved as it is.
            payload = ready[0][1]
            self._last_native = len(payload) or self._last_native
            self._push(payload)
            return
        self._emit(ready)

    def poll(self, now: float) -> None:
        """Declare a missing packet lost once its wait is over (call on the pacing tick;
        ``buffer.deadline()`` says when it matters)."""
        if not self.closed and len(self.buffer):
            self._emit(self.buffer.poll(now))

    def close(self) -> None:
        self.closed = True
        closer = getattr(self._decoder, "close", None)
        if closer is not None:
            closer()

    def _emit(self, ready: list[tuple[int, Any]]) -> None:
        for index, (seq, payload) in enumerate(ready):
            if self.native:
                if payload is None:
                    payload = self.fmt.silence()[:1] * self._last_native
                else:
                    self._last_native = len(payload) or self._last_native
                self._push(payload)
                continue
            decoder = self._decoder
            assert decoder is not None
            if payload is None:
                following = None
                if index + 1 < len(ready) and ready[index + 1][0] == (seq + 1) & 0xFFFF:
                    following = ready[index + 1][1]
                pcm = decoder.conceal(following)
            else:
                try:
                    pcm = decoder.decode(payload)
                except DecodeError as exc:
                    self._stats.decode_errors += 1
                    if self._stats.decode_errors in (1, 10, 100, 1000):
                        log.warning(
                            "media.decode_error",
                            codec=self.codec,
                            error=str(exc),
                            count=self._stats.decode_errors,
                        )
                    pcm = decoder.conceal(None)
            if self._resampler is not None:
                pcm = self._resampler.convert(pcm)
            if self.fmt.channels == 2:
                pcm = _stereo(pcm)
            self._push(native_to_le16(pcm))

    def _push(self, data: bytes) -> None:
        size = self._frame_bytes
        if not self._fifo and len(data) == size:
            self.sink(data)
            self._stats.frames_out += 1
            return
        self._fifo += data
        while len(self._fifo) >= size:
            self.sink(bytes(self._fifo[:size]))
            del self._fifo[:size]
            self._stats.frames_out += 1
