"""The browser side of a call: one aiortc RTCPeerConnection bridged to a unicast endpoint.

Audio path, per call::

    browser --Opus/G.711--> aiortc decoder --> consumer task: PyAV resample to the channel
        rate/layout, exact 20 ms frames --> UnicastEndpoint.write_frame --> paced to FreeSWITCH
    FreeSWITCH --L16--> UnicastEndpoint jitter buffer --> ChannelTrack (take_tick,
        next_payload) on the shared pacing tick: encoder at the channel's rate (Opus)
        --> DirectSender (media/rtp_send.py): RTP header, SRTP, UDP, synchronously
        --> browser  (aiortc's own sender loop is replaced on the instance and never
        calls ChannelTrack.recv, which stays for use outside a MediaLeg)

Fast path (``MediaLeg.path == "fast"``): the browser negotiated PCMU or PCMA and the
channel's codec is the same; FreeSWITCH's ``unicast`` runs with ``flags: native`` and the
channel's 160-byte G.711 frames are the RTP payloads toward the browser, untouched.

Facts about aiortc 1.16 / aioice 0.13 this module relies on (read in their source):

* aioice gathers host candidates from ``aioice.ice.get_host_addresses()``, which lists every
  interface address **except 127.0.0.1**, and neither aioice nor aiortc takes a list of
  addresses. ``use_host_addresses()`` wraps that function once, process-wide, with one that
  answers from a context variable when it is set (and defers to aioice otherwise), so each
  peer connection gathers on exactly the configured addresses. Host candidates bind port 0:
  aioice 0.13 has no port range for them.
* ``RTCRtpTransceiver.setCodecPreferences`` must be applied before the offer is set: aiortc
  negotiates codecs inside ``setRemoteDescription``, so the leg adds its transceiver first.
* aiortc has no telephone-event codec: it never negotiates RFC 4733, and an RTP packet with
  an unknown payload type is dropped in ``RTCRtpReceiver._handle_rtp_packet``. Browser DTMF
  therefore has to come as an SDK call over signalling (then ``uuid_send_dtmf``).
* PyAV's ``AudioResampler`` refuses a frame whose format differs from its first one: a
  ``Reframer`` is made per input format.
* ``RTCRtpSender._next_encoded_frame`` hands an ``AudioFrame`` to its encoder's ``encode``
  in the loop's default executor (a thread hand-off per frame), after computing its RFC 6465
  audio level in a pure-Python loop over all samples, and aiortc's encoders resample it;
  anything else the track returns (an ``av.Packet``) goes to the encoder's ``pack()`` only,
  inline, which turns ``pts`` (in ``time_base``) into the RTP timestamp (48 kHz for Opus,
  8 kHz for G.711 and G.722). The track therefore encodes itself and returns packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability, RTCRtpCodecParameters
from aiortc.sdp import SessionDescription

from esl_bridge.core.media_verdict import HopCounters
from esl_bridge.logs import get_logger

from .codec_choice import browser_codec_order
from .levels import peak_dbov
from .libopus import LibOpusEncoder, load_libopus
from .rtp_receive import ReceivePath, ReceiverTap
from .rtp_send import DirectSender
from .srtp_tap import SrtpTap
from .ticker import TICK_EPS, SharedTicker, shared_ticker
from .unicast import (
    FRAME_S,
    ChannelFormat,
    JitterSettings,
    MediaCounters,
    PortAllocator,
    UnicastEndpoint,
    UnicastParams,
    UnicastStats,
    le16_to_native,
)

__all__ = [
    "ChannelTrack",
    "LegConfig",
    "LegStats",
    "MediaLeg",
    "PacketEncoder",
    "Reframer",
    "codec_capabilities",
    "hold_tone",
    "use_host_addresses",
]

log = get_logger("media")

# Sample rate of each codec's audio (G.722 says 8000 in SDP but samples at 16 kHz).
CODEC_RATES = {"opus": 48000, "g722": 16000, "pcmu": 8000, "pcma": 8000}


# --------------------------------------------------------------------------- host addresses

_HOST_ADDRESSES: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "esl_bridge_host_addresses", default=None
)


def _install_host_address_hook() -> None:
    original = aioice.ice.get_host_addresses
    if getattr(original, "_esl_bridge_hook", False):
        return

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = _HOST_ADDRESSES.get()
        if chosen is None:
            return original(use_ipv4, use_ipv6)
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    get_host_addresses._esl_bridge_hook = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = get_host_addresses


@contextlib.contextmanager
def use_host_addresses(addresses: Sequence[str] | None) -> Iterator[None]:
    """ICE host candidates gathered inside this block (``setLocalDescription``) use exactly
    ``addresses`` (127.0.0.1 allowed); None keeps aioice's own choice."""
    _install_host_address_hook()
    token = _HOST_ADDRESSES.set(None if addresses is None else tuple(addresses))
    try:
        yield
    finally:
        _HOST_ADDRESSES.reset(token)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LegConfig:
    """The [media] settings a leg needs. ``host_addresses`` empty: aioice's default (every
    interface but loopback). ``ice_servers``: ``stun:``/``turn:``/``turns:`` URLs; none by
    default, so nothing outside is ever contacted."""

    ice_servers: tuple[str, ...] = ()
    turn_username: str = ""
    turn_password: str = ""
    host_addresses: tuple[str, ...] = ("127.0.0.1",)
    codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA")
    unicast_host: str = "127.0.0.1"
    fs_unicast_host: str | None = None
    jitter: JitterSettings = field(default_factory=JitterSettings)

    @classmethod
    def from_settings(cls, media: Any) -> LegConfig:
        """From ``esl_bridge.config.MediaSettings`` (same field names)."""
        return cls(
            ice_servers=tuple(media.ice_servers),
            turn_username=media.turn_username,
            turn_password=media.turn_password,
            host_addresses=tuple(media.host_addresses),
            codecs=tuple(media.codecs),
            unicast_host=media.unicast_host,
        )

    def rtc_configuration(self) -> RTCConfiguration:
        servers = []
        for url in self.ice_servers:
            if url.startswith(("turn:", "turns:")):
                servers.append(
                    RTCIceServer(
                        urls=url, username=self.turn_username, credential=self.turn_password
                    )
                )
            else:
                servers.append(RTCIceServer(urls=url))
        # An explicit empty list: aiortc would otherwise fall back to Google's STUN server.
        return RTCConfiguration(iceServers=servers)


def codec_capabilities(names: Sequence[str]) -> list[RTCRtpCodecCapability]:
    """aiortc's audio capabilities in the order of ``names`` (case-insensitive: opus, PCMU,
    PCMA, G722). Unknown names raise ValueError."""
    capabilities = RTCRtpReceiver.getCapabilities("audio")
    available = capabilities.codecs if capabilities is not None else []
    chosen: list[RTCRtpCodecCapability] = []
    for name in names:
        matches = [c for c in available if c.mimeType.lower() == f"audio/{name.lower()}"]
        if not matches:
            raise ValueError(f"codec {name!r} is not supported by aiortc")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


# --------------------------------------------------------------------------- audio helpers


def _frame_from_l16(data: bytes, fmt: ChannelFormat) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16", layout=fmt.layout, samples=fmt.samples_per_frame)
    frame.planes[0].update(le16_to_native(data))
    frame.sample_rate = fmt.rate
    return frame


def _frame_bytes(frame: av.AudioFrame) -> bytes:
    # A plane may be padded past the samples; cut to what the frame holds (packed s16).
    size = frame.samples * len(frame.layout.channels) * 2
    return bytes(frame.planes[0])[:size]


class Reframer:
    """PyAV resampling into exact 20 ms frames (s16, host order), without a frame of lag.

    A resampler keeps a few samples inside its filter, so the first 20 ms in gives a little
    less than 20 ms out; cut into 20 ms frames, every frame would then complete only with
    the *next* input, 20 ms late. Padding the very first output with that shortfall (a
    fraction of a millisecond of silence, once) makes each input complete one frame.
    """

    def __init__(self, rate: int, layout: str) -> None:
        self.rate = rate
        self.channels = 2 if layout == "stereo" else 1
        self.frame_bytes = rate // 50 * self.channels * 2
        self._resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        self._fifo = bytearray()
        self._primed = False

    def convert(self, frame: av.AudioFrame) -> list[bytes]:
        produced = b"".join(_frame_bytes(f) for f in self._resampler.resample(frame))
        if not self._primed:
            self._primed = True
            expected = round(frame.samples * self.rate / frame.sample_rate)
            shortfall = expected * self.channels * 2 - len(produced)
            if shortfall > 0:
                self._fifo += bytes(shortfall)
        self._fifo += produced
        out = []
        while len(self._fifo) >= self.frame_bytes:
            out.append(bytes(self._fifo[: self.frame_bytes]))
            del self._fifo[: self.frame_bytes]
        return out


# --------------------------------------------------------------------------- encoding

# Opus toward the browser: a telephony bit rate (the channel is 8-48 kHz speech, not music)
# and libopus's VoIP mode; aiortc's own encoder would use 96 kb/s stereo at 48 kHz.
OPUS_BIT_RATE = 28000
OPUS_APPLICATION = "voip"
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # the input rates libopus accepts

# PyAV encoder names and the sample rate each browser codec is encoded at.
_FFMPEG_ENCODERS = {"opus": "libopus", "pcmu": "pcm_mulaw", "pcma": "pcm_alaw", "g722": "g722"}
_G711_SILENCE = {"pcmu": b"\xff", "pcma": b"\xd5"}


def encoder_rate(codec: str, channel_rate: int) -> int:
    """The rate the browser's codec is encoded at: Opus at the channel's rate when libopus
    takes it (so no resampling), G.711 at 8 kHz, G.722 at 16 kHz."""
    codec = codec.lower()
    if codec == "opus":
        return channel_rate if channel_rate in OPUS_RATES else 48000
    if codec not in CODEC_RATES:
        raise ValueError(f"no encoder for codec {codec!r}")
    return CODEC_RATES[codec]


def _rtp_time_base(codec: str) -> fractions.Fraction:
    """The codec's RTP clock (Opus 48 kHz at any encoder rate; G.711 and G.722 8 kHz):
    packets stamped in it let aiortc's ``pack()`` skip its Fraction arithmetic."""
    return fractions.Fraction(1, 48000 if codec == "opus" else 8000)


class PacketEncoder:
    """One 20 ms frame of s16 mono (host order) at ``rate`` in, one encoded payload out,
    inline (no thread): Opus with the system's libopus (media/libopus.py) when it is there
    (``opus_backend`` "auto"), else with PyAV's encoders (libopus, pcm_mulaw, pcm_alaw,
    g722)."""

    def __init__(self, codec: str, rate: int, opus_backend: str = "auto") -> None:
        codec = codec.lower()
        if codec not in _FFMPEG_ENCODERS:
            raise ValueError(f"no encoder for codec {codec!r}")
        if rate != encoder_rate(codec, rate):
            raise ValueError(f"{codec} is not encoded at {rate} Hz")
        if opus_backend not in ("auto", "libopus", "pyav"):
            raise ValueError(f"unknown opus backend {opus_backend!r}")
        self.codec = codec
        self.rate = rate
        self.samples = rate // 50
        self._pts = 0
        silence = _G711_SILENCE.get(codec)
        self._silence = None if silence is None else silence * self.samples
        self._last = b""
        self._libopus: LibOpusEncoder | None = None
        self.backend = "pyav"
        if codec == "opus" and opus_backend != "pyav" and load_libopus() is not None:
            self._libopus = LibOpusEncoder(rate, OPUS_BIT_RATE)
            self.backend = "libopus"
            return
        if opus_backend == "libopus" and codec == "opus":
            raise RuntimeError("libopus is not available on this system")
        context = av.CodecContext.create(_FFMPEG_ENCODERS[codec], "w")
        context.format = "s16"
        context.layout = "mono"
        context.sample_rate = rate
        context.time_base = fractions.Fraction(1, rate)
        if codec == "opus":
            context.bit_rate = OPUS_BIT_RATE
            context.options = {"application": OPUS_APPLICATION}
        self._context = context

    def encode(self, pcm: bytes) -> bytes:
        if self._libopus is not None:
            return self._libopus.encode(pcm)
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(pcm)
        frame.sample_rate = self.rate
        frame.pts = self._pts
        self._pts += self.samples
        packets = self._context.encode(frame)
        if len(packets) == 1:  # what libopus, g722 and G.711 do with a 20 ms frame
            payload = bytes(packets[0])
        else:
            payload = b"".join(bytes(p) for p in packets) or self._last
        self._last = payload
        return payload

    def silence(self) -> bytes:
        """The codec's silence: G.711's silence byte, or silence through the encoder (which
        keeps its state continuous for the audio that follows)."""
        if self._silence is not None:
            return self._silence
        return self.encode(bytes(self.samples * 2))


def _left_channel(l16: bytes) -> bytes:
    """Interleaved stereo -> its left channel (FreeSWITCH's Opus stereo=1 has L == R)."""
    return np.frombuffer(l16, dtype="<i2")[0::2].astype(np.int16).tobytes()  # LE -> host


# --------------------------------------------------------------------------- hold tone

HOLD_BEEP_FRAMES = 10  # 200 ms of tone ...
HOLD_TONE_PERIOD = 100  # ... every 2 s
HOLD_TONE_LEVEL = 0.1  # of full scale (-20 dBFS)


def hold_tone(fmt: ChannelFormat, hz: float) -> Callable[[], bytes]:
    """A held call's comfort tone toward the channel, in its unicast format (L16 or the
    fast path's G.711): each call gives the next 20 ms frame of a 200 ms beep of ``hz``
    every 2 s, beginning with the beep."""
    samples = fmt.samples_per_frame
    t = np.arange(HOLD_BEEP_FRAMES * samples) / fmt.rate
    beep = (HOLD_TONE_LEVEL * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    encoder = PacketEncoder(fmt.codec.lower(), fmt.rate) if fmt.is_native else None
    frames: list[bytes] = []
    for i in range(HOLD_BEEP_FRAMES):
        pcm = beep[i * samples : (i + 1) * samples]
        if encoder is not None:
            frames.append(encoder.encode(pcm.tobytes()))  # host order in, G.711 out
        else:
            frames.append(np.repeat(pcm, fmt.channels).astype("<i2").tobytes())
    frames += [fmt.silence()] * (HOLD_TONE_PERIOD - HOLD_BEEP_FRAMES)
    position = 0

    def next_frame() -> bytes:
        nonlocal position
        frame = frames[position]
        position = (position + 1) % len(frames)
        return frame

    return next_frame


# --------------------------------------------------------------------------- tracks


class ChannelTrack(MediaStreamTrack):
    """FreeSWITCH's channel audio toward the browser: one encoded ``av.Packet`` per 20 ms
    of playout clock.

    Returning packets (not ``AudioFrame`` objects) makes aiortc's ``RTCRtpSender`` call only its
    encoder's ``pack()``: no executor thread, no pure-Python audio level, no resampler of
    aiortc's. The track encodes inline with PyAV (``PacketEncoder``):

    * Opus at the channel's rate (8/16/48 kHz, all rates libopus takes), mono;
    * G.711 / G.722 at their own rate: directly when the channel has that rate, else through
      a ``Reframer`` (the only resampling left);
    * a stereo channel (Opus stereo=1, L == R) gives its left channel;
    * fast path (the endpoint carries the browser's own G.711, ``native`` unicast): the
      channel's 160 bytes are the packet, untouched.

    ``pts`` counts 20 ms frames in the encoder's time base, so ``pack()`` turns it into a
    continuous RTP timestamp (48 kHz clock for Opus, whatever the encoder's rate; 8 kHz
    for G.711 and G.722). Before the unicast endpoint is attached (the browser can connect
    before the SIP side answers) and on underrun it sends the codec's silence at the same
    rate. Pacing is the process-wide ``SharedTicker``.
    """

    kind = "audio"

    def __init__(
        self, codec: str = "opus", rate: int = 48000, ticker: SharedTicker | None = None
    ) -> None:
        super().__init__()
        self.codec = codec.lower()
        self.rate = rate  # the encoder's sample rate
        self.layout = "mono"
        self.samples = rate // 50
        self._ticker = ticker
        self._endpoint: UnicastEndpoint | None = None
        self._encoder: PacketEncoder | None = None
        self._adapt: Callable[[bytes], bytes | None] | None = None
        self._passthrough = False
        self._reframer: Reframer | None = None
        self._pending: deque[bytes] = deque()
        self._own_next: float | None = None
        self._time_base = _rtp_time_base(self.codec)
        self._planned = False
        self.frames = 0
        self.resample_shortfalls = 0

    @property
    def passthrough(self) -> bool:
        """True on the fast path: channel bytes sent as they are."""
        if not self._planned:
            self._plan()
        return self._passthrough

    def set_codec(self, codec: str) -> None:
        """The negotiated browser codec (before the first ``recv``; later calls are ignored
        once frames went out, as aiortc keeps the codec it started with)."""
        if self.frames:
            return
        codec = codec.lower()
        if codec not in _FFMPEG_ENCODERS:
            raise ValueError(f"no encoder for codec {codec!r}")
        self.codec = codec
        self._planned = False
        self._plan()

    def attach(self, endpoint: UnicastEndpoint) -> None:
        self._endpoint = endpoint
        self._planned = False
        self._plan()

    def detach(self) -> None:
        self._endpoint = None
        self._planned = False
        self._pending.clear()

    def _plan(self) -> None:
        """Choose encoder and channel adapter for (codec, channel format)."""
        self._planned = True
        endpoint = self._endpoint
        fmt = None if endpoint is None else endpoint.fmt
        self._reframer = None
        self._pending.clear()
        self._passthrough = False
        self._adapt = None
        channel_rate = self.rate if fmt is None else fmt.rate
        rate = encoder_rate(self.codec, channel_rate)
        if self._encoder is None or (self._encoder.codec, self._encoder.rate) != (
            self.codec,
            rate,
        ):
            # pts counts frames, so a new encoder (Opus before/after the channel's rate is
            # known) keeps the RTP timestamps continuous.
            self._encoder = PacketEncoder(self.codec, rate)
        self.rate, self.samples = rate, rate // 50
        self._time_base = _rtp_time_base(self.codec)
        if fmt is None:
            return
        if fmt.codec != "L16":
            if fmt.codec.lower() != self.codec:
                raise ValueError(f"{fmt.codec} unicast cannot feed a {self.codec} browser")
            self._passthrough = True
            return
        if fmt.rate == rate:
            self._adapt = le16_to_native if fmt.channels == 1 else _left_channel
        else:
            reframer = Reframer(rate, "mono")
            self._reframer = reframer

            def adapt(l16: bytes) -> bytes | None:
                self._pending.extend(reframer.convert(_frame_from_l16(l16, fmt)))
                out = self._pending.popleft() if self._pending else None
                while len(self._pending) > 1:  # never let resampler slack add delay
                    self._pending.popleft()
                return out

            self._adapt = adapt

    def next_deadline(self, now: float) -> float:
        """Loop time of the next playout tick: the endpoint's (FreeSWITCH's first datagram
        re-anchors it, so re-read it after every wait), else the track's own 20 ms clock."""
        endpoint = self._endpoint
        if endpoint is not None and not endpoint.closed:
            self._own_next = None
            return endpoint.next_playout()
        if self._own_next is None:
            self._own_next = now
        return self._own_next

    def take_tick(self, now: float) -> bytes | None:
        """Consume the tick due at ``now`` (``next_deadline(now)`` is past): the channel's
        frame, or None for silence."""
        endpoint = self._endpoint
        if endpoint is not None and not endpoint.closed:
            return endpoint.read_frame(now)  # takes the due tick even a hair early
        own = now if self._own_next is None else self._own_next
        self._own_next = own + FRAME_S
        if now - self._own_next > 3 * FRAME_S:  # stalled: resync, do not burst
            self._own_next = now + FRAME_S
        return None

    async def _wait_tick(self) -> bytes | None:
        """Wait for the next playout tick; the channel's frame, or None for silence."""
        loop = asyncio.get_running_loop()
        if self._ticker is None:
            self._ticker = shared_ticker()
        ticker = self._ticker
        while True:
            now = loop.time()
            deadline = self.next_deadline(now)
            if deadline - now > TICK_EPS:
                await ticker.wait(min(deadline, now + FRAME_S))
                continue
            return self.take_tick(now)

    def next_payload(self, channel_frame: bytes | None) -> bytes:
        """The encoded payload for one tick, given the endpoint's frame (None: silence)."""
        if not self._planned:
            self._plan()
        encoder = self._encoder
        assert encoder is not None
        if channel_frame is None or self._endpoint is None:
            return encoder.silence()
        if self._passthrough:
            return channel_frame
        assert self._adapt is not None
        pcm = self._adapt(channel_frame)
        if pcm is None:
            self.resample_shortfalls += 1
            return encoder.silence()
        return encoder.encode(pcm)

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        channel_frame = await self._wait_tick()
        packet = av.Packet(self.next_payload(channel_frame))
        packet.time_base = self._time_base
        packet.pts = self.frames * self._time_base.denominator // 50
        self.frames += 1
        return packet


class _BrowserAudio:
    """The browser's RTP audio toward the channel: packets from the receiver tap
    (media/rtp_receive.py) go through a ``ReceivePath`` (reorder buffer, inline decoding, or
    the payload bytes as they are on the fast path) into the endpoint's paced sender. The
    path exists once both the negotiated codec and the endpoint are known; packets before
    that are counted and dropped (the browser can connect before the SIP side answers)."""

    def __init__(self, leg_log: Any) -> None:
        self.log = leg_log
        self.codec: RTCRtpCodecParameters | None = None
        self.endpoint: UnicastEndpoint | None = None
        self.path: ReceivePath | None = None
        self.packets_in = 0
        self.dropped_no_channel = 0
        self._poll: asyncio.TimerHandle | None = None
        self.closed = False

    def set_codec(self, codec: RTCRtpCodecParameters) -> None:
        if self.codec is None:
            self.codec = codec
            self._build()

    def attach(self, endpoint: UnicastEndpoint) -> None:
        self.endpoint = endpoint
        self._build()

    def _build(self) -> None:
        if self.closed or self.path is not None or self.codec is None or self.endpoint is None:
            return
        try:
            # Straight into the endpoint's paced sender: on_packet checks the endpoint is
            # open, and a closed one's queue is bounded.
            self.path = ReceivePath(self.codec, self.endpoint.fmt, self.endpoint.write_frame)
        except (ValueError, RuntimeError) as exc:
            # Nothing the channel can take: the call keeps the other direction, and the
            # media timeout ends it if FreeSWITCH hears nothing.
            self.log.error("media.receive_path_failed", codec=self.codec.name, error=str(exc))
            return
        self.log.info("media.receive_path", codec=self.path.codec, decoder=self.path.backend)

    def on_packet(self, packet: Any, now: float) -> None:
        self.packets_in += 1
        path, endpoint = self.path, self.endpoint
        if path is None or endpoint is None or endpoint.closed:
            self.dropped_no_channel += 1
            return
        path.on_packet(packet, now)
        self._arm_poll()

    def _arm_poll(self) -> None:
        """A gap waiting in the reorder buffer is declared lost at its deadline even when
        no further packet comes (the browser paused): one timer, only while a gap waits."""
        path = self.path
        deadline = None if path is None else path.buffer.deadline()
        if deadline is None:
            return
        if self._poll is not None:
            if self._poll.when() <= deadline:
                return
            self._poll.cancel()
        self._poll = asyncio.get_running_loop().call_at(deadline, self._on_poll)

    def _on_poll(self) -> None:
        self._poll = None
        if self.path is not None and not self.closed:
            self.path.poll(asyncio.get_running_loop().time())
            self._arm_poll()

    @property
    def frames_out(self) -> int:
        return 0 if self.path is None else self.path.stats.frames_out

    def close(self) -> None:
        if self.closed:  # a leg handed over closes its audio twice
            return
        self.closed = True
        if self._poll is not None:
            self._poll.cancel()
            self._poll = None
        if self.path is not None:
            self.path.close()


# --------------------------------------------------------------------------- the leg


@dataclass
class LegStats:
    codec: str | None
    connection_state: str
    ice_state: str
    track_frames: int
    browser_frames_in: int
    browser_frames_out: int
    browser_frames_dropped_no_channel: int
    unicast: UnicastStats | None
    rtp: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    # The receive path's counters (media/rtp_receive.py ReceiveStats): received, reordered,
    # lost, concealed, late, duplicates, resets, decode_errors, other_payload, frames_out;
    # and the SRTP tap's (media/srtp_tap.py): socket_taken, srtp_errors, not_rtp.
    receive: dict[str, int] = field(default_factory=dict)


class MediaLeg:
    """One call's media: ``handle_offer`` (browser's SDP) and ``start_unicast`` (channel's
    format, when the gate allows) in any order; ``close`` ends everything."""

    def __init__(
        self,
        config: LegConfig,
        allocator: PortAllocator,
        *,
        call_id: str = "",
        on_state: Callable[[str], None] | None = None,
        counters: MediaCounters | None = None,
    ) -> None:
        self.config = config
        self.allocator = allocator
        self.counters = counters
        self.log = log.bind(call_id=call_id) if call_id else log
        self._on_state = on_state
        self.pc = RTCPeerConnection(configuration=config.rtc_configuration())
        self.track = ChannelTrack()
        self._browser_audio = _BrowserAudio(self.log)
        self._tap: ReceiverTap | None = None
        self.srtp_tap: SrtpTap | None = None
        self._untap_srtp: Callable[[], None] | None = None
        self.direct_sender: DirectSender | None = None
        self._uninstall_sender: Callable[[], None] | None = None
        self.transceiver: RTCRtpTransceiver | None = None
        self.endpoint: UnicastEndpoint | None = None
        self.codec: str | None = None
        # "fast": browser and channel speak the same G.711, bytes moved as they are;
        # "transcode": L16 unicast, encoded/decoded here. None before unicast.
        self.path: str | None = None
        self.closed = False

        @self.pc.on("connectionstatechange")
        def _on_connection_state() -> None:
            state = self.pc.connectionState
            self.log.info("media.connection_state", state=state)
            if self._on_state is not None:
                self._on_state(state)

    # -- signalling

    async def handle_offer(self, sdp: str, sip_codec: str | None = None) -> str:
        """Apply the browser's offer; returns our answer SDP (candidates included).
        ``sip_codec``: the SIP side's codec when known (media/codec_choice.py), which the
        ``sip`` entry of ``[media] codecs`` puts first."""
        if self.transceiver is None:
            # Our transceiver first, so the codec preference applies during negotiation.
            self._add_transceiver(browser_codec_order(self.config.codecs, sip_codec))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await self.pc.createAnswer()
        with use_host_addresses(self.config.host_addresses or None):
            await self.pc.setLocalDescription(answer)
        self._tap_sockets()
        local = self.pc.localDescription
        self._note_codec(local.sdp)
        return local.sdp

    async def create_offer(self) -> str:
        """Offer from the gateway's side (when the browser is the answerer)."""
        if self.transceiver is None:
            self._add_transceiver(browser_codec_order(self.config.codecs, None))
        offer = await self.pc.createOffer()
        with use_host_addresses(self.config.host_addresses or None):
            await self.pc.setLocalDescription(offer)
        self._tap_sockets()
        return self.pc.localDescription.sdp

    async def handle_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        self._note_codec(sdp)

    def _add_transceiver(self, codecs: Sequence[str]) -> None:
        """Our transceiver, its codec preference, and the tap that takes the browser's RTP
        before aiortc's jitter buffer and decoder thread (media/rtp_receive.py)."""
        self.transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        self.transceiver.setCodecPreferences(codec_capabilities(codecs))
        self._tap = ReceiverTap(
            self.transceiver.receiver,
            self._browser_audio.on_packet,
            clock_s=asyncio.get_running_loop().time,
        )
        # Toward the browser: RTP sent on the shared tick (media/rtp_send.py), not by
        # aiortc's per-packet loop, which then never calls the track's recv().
        self.direct_sender = DirectSender(self.transceiver.sender, self.track, leg_log=self.log)
        self._uninstall_sender = self.direct_sender.install()

    def _tap_sockets(self) -> None:
        """The browser's SRTP taken at the ICE sockets (media/srtp_tap.py), once they
        exist: gathering ends inside setLocalDescription."""
        if self.srtp_tap is not None or self._tap is None or self.transceiver is None:
            return
        self.srtp_tap = SrtpTap(self.transceiver.receiver.transport, self._tap)
        self._untap_srtp = self.srtp_tap.install()

    def _note_codec(self, sdp: str) -> None:
        for media in SessionDescription.parse(sdp).media:
            if media.kind == "audio" and media.rtp.codecs:
                negotiated = media.rtp.codecs[0]
                name = negotiated.mimeType.split("/", 1)[1].lower()
                self.codec = name
                self._browser_audio.set_codec(negotiated)
                if name in _FFMPEG_ENCODERS:
                    self.track.set_codec(name)
                self.log.info("media.codec", codec=name)
                return

    # -- FreeSWITCH side

    def choose_path(self, fmt: ChannelFormat, channel_codec: str | None) -> ChannelFormat:
        """The endpoint format for a channel of L16 format ``fmt`` whose read codec is
        ``channel_codec``: the channel's own G.711 (``native`` unicast, the fast path) when
        the browser negotiated that same codec, else ``fmt`` (transcode)."""
        if fmt.codec != "L16":
            if self.codec is None or fmt.codec.lower() != self.codec:
                raise ValueError(
                    f"native {fmt.codec} unicast needs a browser on {fmt.codec}, "
                    f"not {self.codec or 'no codec yet'}"
                )
            return fmt
        channel = (channel_codec or "").upper()
        if self.codec is not None and self.codec.upper() == channel and channel in ("PCMU", "PCMA"):
            return ChannelFormat.native(channel)
        return fmt

    async def start_unicast(
        self, fmt: ChannelFormat, channel_codec: str | None = None
    ) -> UnicastParams:
        """Open the unicast endpoint for the channel; returns the parameters of the
        ``unicast`` command (``flags="native"`` on the fast path). Send that command only
        when the call's ``UnicastGate`` (core/unicast_gate.py) allows it.

        ``fmt`` is the channel's L16 format; ``channel_codec`` its read codec (PCMU, PCMA,
        G722, OPUS; None when unknown). When the browser negotiated PCMU or PCMA and the
        channel's codec is the same, the fast path is taken: the endpoint carries the codec's
        bytes and nothing is decoded or encoded here. A browser offer that comes after
        ``start_unicast`` keeps the transcode path (the choice is made here, once).
        """
        if self.closed:
            raise RuntimeError("media leg is closed")
        if self.endpoint is not None:
            return self.endpoint.params
        fmt = self.choose_path(fmt, channel_codec)
        path = "fast" if fmt.codec != "L16" else "transcode"
        endpoint = UnicastEndpoint(
            fmt,
            self.allocator,
            host=self.config.unicast_host,
            fs_host=self.config.fs_unicast_host,
            settings=self.config.jitter,
            counters=self.counters,
        )
        params = await endpoint.open()
        self.endpoint = endpoint
        self.path = path
        self.track.attach(endpoint)
        self._browser_audio.attach(endpoint)
        self.log.info("media.path", path=path, codec=self.codec, channel_codec=channel_codec)
        return params

    @property
    def has_offer(self) -> bool:
        """The browser's offer was taken: a further one is an ICE restart."""
        return self.pc.remoteDescription is not None

    def hand_over(self, successor: MediaLeg) -> None:
        """ICE restart (aiortc cannot restart ICE on a transport: ``RTCIceTransport.start``
        runs once): give this leg's unicast endpoint (the same FreeSWITCH stream and ports)
        to ``successor``, a new leg of the same call that has taken the browser's new offer.
        This leg then closes without the endpoint. Raises ValueError (nothing moved) when the
        successor's codec cannot take a fast-path endpoint."""
        endpoint = self.endpoint
        if endpoint is None or successor.endpoint is not None:
            return
        if self.path == "fast" and endpoint.fmt.codec.lower() != successor.codec:
            raise ValueError(
                f"{endpoint.fmt.codec} unicast cannot feed a {successor.codec} browser"
            )
        self.track.detach()
        self._browser_audio.close()  # its receive path fed the endpoint: no longer
        self.endpoint = None
        successor.endpoint, successor.path = endpoint, self.path
        successor.track.attach(endpoint)
        successor._browser_audio.attach(endpoint)
        successor.log.info("media.path", path=self.path, codec=successor.codec, handed_over=True)

    # -- stats, end

    @property
    def browser_packets(self) -> int:
        """RTP packets received from the browser so far (the media_problem rule counts them)."""
        return self._browser_audio.packets_in

    def hop_counters(self) -> HopCounters:
        """The one-way audio counters of every hop (core/media_verdict.py): totals the
        media path keeps anyway, and the level of the last frame each way (once a call)."""
        audio, endpoint, sender = self._browser_audio, self.endpoint, self.direct_sender
        rx = None if endpoint is None else endpoint.rx
        tx = None if endpoint is None else endpoint.tx
        codec = "L16" if endpoint is None else endpoint.fmt.codec
        return HopCounters(
            browser_connected=self.pc.connectionState == "connected",
            rtp_from_browser=audio.packets_in,
            frames_from_browser=audio.frames_out,
            frames_to_switch=0 if tx is None else tx.packets - tx.silence_frames,
            browser_level_dbov=None if tx is None else peak_dbov(tx.last_frame, codec),
            datagrams_from_switch=0 if rx is None else rx.packets,
            filler_from_switch=0 if rx is None else rx.cng_frames,
            switch_level_dbov=None if rx is None else peak_dbov(rx.last_audio, codec),
            packets_to_browser=0 if sender is None else sender.packets,
            browser_reports=0 if sender is None else sender.browser_reports,
            browser_highest_seq=None if sender is None else sender.browser_highest_seq,
        )

    async def stats(self, with_rtp: bool = False) -> LegStats:
        rtp: dict[str, Any] = {}
        if with_rtp and not self.closed:
            report = await self.pc.getStats()
            for item in report.values():
                if item.type in ("inbound-rtp", "outbound-rtp", "remote-inbound-rtp"):
                    rtp[item.type] = {
                        k: v for k, v in vars(item).items() if k not in ("id", "type")
                    }
        audio = self._browser_audio
        return LegStats(
            codec=self.codec,
            connection_state=self.pc.connectionState,
            ice_state=self.pc.iceConnectionState,
            track_frames=self.track.frames,
            browser_frames_in=audio.packets_in,
            browser_frames_out=audio.frames_out,
            browser_frames_dropped_no_channel=audio.dropped_no_channel,
            unicast=None if self.endpoint is None else self.endpoint.stats(),
            rtp=rtp,
            path=self.path,
            receive=self._receive_counters(),
        )

    def _receive_counters(self) -> dict[str, int]:
        audio, tap = self._browser_audio, self.srtp_tap
        counters = {} if audio.path is None else audio.path.stats.as_dict()
        if tap is not None:
            counters.update(
                socket_taken=tap.packets, srtp_errors=tap.srtp_errors, not_rtp=tap.malformed
            )
        return counters

    async def close(self) -> None:
        """Close the peer connection, stop the tasks, free the unicast ports. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.track.detach()
        self.track.stop()
        if self._untap_srtp is not None:
            self._untap_srtp()
            self._untap_srtp = None
        tap, self._tap = self._tap, None
        if tap is not None:
            tap.untap()
        self._browser_audio.close()
        # The unicast ports first: closing the peer connection can take a while (a dead
        # browser, DTLS close), and the ports are what the next call needs.
        try:
            if self.endpoint is not None:
                await self.endpoint.close()
        finally:
            await self.pc.close()  # whatever the ports did: no peer connection is left open
        self.log.info("media.leg_closed")
