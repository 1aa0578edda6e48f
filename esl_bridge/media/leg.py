"""The browser side of a call: one aiortc RTCPeerConnection bridged to a unicast endpoint.

Audio path, per call::

    browser --Opus/G.711--> aiortc decoder --> consumer task: PyAV resample to the channel
        rate/layout, exact 20 ms frames --> UnicastEndpoint.write_frame --> paced to FreeSWITCH
    FreeSWITCH --L16--> UnicastEndpoint jitter buffer --> ChannelTrack.recv on the playout
        clock: PyAV resample to the codec rate --> aiortc encoder --> browser

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
* PyAV's ``AudioResampler`` refuses a frame whose format differs from its first one, and
  aiortc's encoders each own such a resampler: the track therefore emits one fixed format
  for the whole call (the negotiated codec's rate, mono), silence included.
* aiortc computes the RFC 6465 audio level of every frame it sends in a pure-Python loop
  over all samples (``rtp.compute_audio_level_dbov``): at 48 kHz stereo that is one of the
  largest single costs per call. The track therefore sends mono (half the samples; telephony
  audio is mono, and FreeSWITCH's Opus stereo=1 frames carry L == R).
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
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import SessionDescription

from esl_bridge.logs import get_logger

from .codec_choice import browser_codec_order
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
    native_to_le16,
)

__all__ = [
    "ChannelTrack",
    "LegConfig",
    "LegStats",
    "MediaLeg",
    "Reframer",
    "codec_capabilities",
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


# --------------------------------------------------------------------------- tracks


class ChannelTrack(MediaStreamTrack):
    """FreeSWITCH's channel audio toward the browser, one frame per 20 ms of playout clock.

    Before the unicast endpoint is attached (the browser can connect before the SIP side
    answers) it plays silence on its own clock. Output format is fixed once negotiated:
    ``rate`` Hz, ``layout``; the channel's L16 is resampled to it with PyAV.
    """

    kind = "audio"

    def __init__(self, rate: int = 48000, layout: str = "mono") -> None:
        super().__init__()
        self.rate = rate
        self.layout = layout
        self.samples = rate // 50
        self._channels = 2 if layout == "stereo" else 1
        self._silence = bytes(self.samples * self._channels * 2)
        self._endpoint: UnicastEndpoint | None = None
        self._reframer: Reframer | None = None
        self._pending: deque[bytes] = deque()
        self._own_next: float | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, rate)
        self.frames = 0
        self.resample_shortfalls = 0

    def set_format(self, rate: int, layout: str) -> None:
        """Fix the output format before the first ``recv`` (after negotiation)."""
        if self.frames:
            return  # too late: aiortc's encoder resampler is bound to the first format
        self.rate, self.layout, self.samples = rate, layout, rate // 50
        self._channels = 2 if layout == "stereo" else 1
        self._silence = bytes(self.samples * self._channels * 2)
        self._time_base = fractions.Fraction(1, rate)
        if self._endpoint is not None:  # unicast started before the offer: redo the resampler
            self.attach(self._endpoint)

    def attach(self, endpoint: UnicastEndpoint) -> None:
        self._endpoint = endpoint
        fmt = endpoint.fmt
        same = fmt.rate == self.rate and fmt.layout == self.layout
        self._reframer = None if same else Reframer(self.rate, self.layout)

    def detach(self) -> None:
        self._endpoint = None
        self._reframer = None
        self._pending.clear()

    async def _wait_tick(self) -> bytes | None:
        """Sleep until the next playout tick; the channel's L16 frame, or None for silence."""
        loop = asyncio.get_running_loop()
        while True:
            endpoint = self._endpoint
            if endpoint is not None and not endpoint.closed:
                self._own_next = None
                # Re-read the deadline after every sleep: FreeSWITCH's first datagram
                # re-anchors the playout clock.
                delay = endpoint.next_playout() - loop.time()
                if delay > 0:
                    await asyncio.sleep(min(delay, FRAME_S))
                    continue
                return endpoint.read_frame(loop.time())
            now = loop.time()
            if self._own_next is None:
                self._own_next = now
            delay = self._own_next - now
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            self._own_next += FRAME_S
            if now - self._own_next > 3 * FRAME_S:  # stalled: resync, do not burst
                self._own_next = now + FRAME_S
            return None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        l16 = await self._wait_tick()
        payload = self._silence
        endpoint = self._endpoint
        if l16 is not None and endpoint is not None:
            if self._reframer is None:
                payload = le16_to_native(l16)
            else:
                self._pending.extend(self._reframer.convert(_frame_from_l16(l16, endpoint.fmt)))
                if self._pending:
                    payload = self._pending.popleft()
                else:
                    self.resample_shortfalls += 1
            while len(self._pending) > 1:  # never let resampler slack add delay
                self._pending.popleft()
        frame = av.AudioFrame(format="s16", layout=self.layout, samples=self.samples)
        frame.planes[0].update(payload)
        frame.sample_rate = self.rate
        frame.time_base = self._time_base
        frame.pts = self._pts
        self._pts += self.samples
        self.frames += 1
        return frame


class _BrowserAudioConsumer:
    """Reads the browser's decoded track, resamples to the channel format in exact 20 ms
    frames and hands them to the endpoint's paced sender."""

    def __init__(self) -> None:
        self.endpoint: UnicastEndpoint | None = None
        self._reframer: Reframer | None = None
        self._input_key: tuple[str, str, int] | None = None
        self.frames_in = 0
        self.frames_out = 0
        self.dropped_no_channel = 0

    def attach(self, endpoint: UnicastEndpoint) -> None:
        self.endpoint = endpoint
        self._reframer = None
        self._input_key = None

    def feed(self, frame: av.AudioFrame) -> None:
        self.frames_in += 1
        endpoint = self.endpoint
        if endpoint is None or endpoint.closed:
            self.dropped_no_channel += 1
            return
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if self._reframer is None or key != self._input_key:
            # A new resampler per input format: PyAV refuses a change of format.
            self._reframer = Reframer(endpoint.fmt.rate, endpoint.fmt.layout)
            self._input_key = key
        for out in self._reframer.convert(frame):
            endpoint.write_frame(native_to_le16(out))
            self.frames_out += 1

    async def run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.AudioFrame):
                self.feed(frame)


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
        self._consumer = _BrowserAudioConsumer()
        self._consumer_task: asyncio.Task[None] | None = None
        self.transceiver: RTCRtpTransceiver | None = None
        self.endpoint: UnicastEndpoint | None = None
        self.codec: str | None = None
        self.closed = False

        @self.pc.on("connectionstatechange")
        def _on_connection_state() -> None:
            state = self.pc.connectionState
            self.log.info("media.connection_state", state=state)
            if self._on_state is not None:
                self._on_state(state)

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and self._consumer_task is None and not self.closed:
                self._consumer_task = asyncio.get_running_loop().create_task(
                    self._consumer.run(track), name="media-leg-consumer"
                )

    # -- signalling

    async def handle_offer(self, sdp: str, sip_codec: str | None = None) -> str:
        """Apply the browser's offer; returns our answer SDP (candidates included).
        ``sip_codec``: the SIP side's codec when known (media/codec_choice.py), which the
        ``sip`` entry of ``[media] codecs`` puts first."""
        if self.transceiver is None:
            # Our transceiver first, so the codec preference applies during negotiation.
            self.transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
            order = browser_codec_order(self.config.codecs, sip_codec)
            self.transceiver.setCodecPreferences(codec_capabilities(order))
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await self.pc.createAnswer()
        with use_host_addresses(self.config.host_addresses or None):
            await self.pc.setLocalDescription(answer)
        local = self.pc.localDescription
        self._note_codec(local.sdp)
        return local.sdp

    async def create_offer(self) -> str:
        """Offer from the gateway's side (when the browser is the answerer)."""
        if self.transceiver is None:
            self.transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
            order = browser_codec_order(self.config.codecs, None)
            self.transceiver.setCodecPreferences(codec_capabilities(order))
        offer = await self.pc.createOffer()
        with use_host_addresses(self.config.host_addresses or None):
            await self.pc.setLocalDescription(offer)
        return self.pc.localDescription.sdp

    async def handle_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        self._note_codec(sdp)

    def _note_codec(self, sdp: str) -> None:
        for media in SessionDescription.parse(sdp).media:
            if media.kind == "audio" and media.rtp.codecs:
                name = media.rtp.codecs[0].mimeType.split("/", 1)[1].lower()
                self.codec = name
                rate = CODEC_RATES.get(name, 48000)
                self.track.set_format(rate, "mono")
                self.log.info("media.codec", codec=name)
                return

    # -- FreeSWITCH side

    async def start_unicast(self, fmt: ChannelFormat) -> UnicastParams:
        """Open the unicast endpoint for the channel's format; returns the parameters of the
        ``unicast`` command. Send that command only when the call's ``UnicastGate``
        (core/unicast_gate.py) allows it."""
        if self.closed:
            raise RuntimeError("media leg is closed")
        if self.endpoint is not None:
            return self.endpoint.params
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
        self.track.attach(endpoint)
        self._consumer.attach(endpoint)
        return params

    # -- stats, end

    async def stats(self, with_rtp: bool = False) -> LegStats:
        rtp: dict[str, Any] = {}
        if with_rtp and not self.closed:
            report = await self.pc.getStats()
            for item in report.values():
                if item.type in ("inbound-rtp", "outbound-rtp", "remote-inbound-rtp"):
                    rtp[item.type] = {
                        k: v for k, v in vars(item).items() if k not in ("id", "type")
                    }
        return LegStats(
            codec=self.codec,
            connection_state=self.pc.connectionState,
            ice_state=self.pc.iceConnectionState,
            track_frames=self.track.frames,
            browser_frames_in=self._consumer.frames_in,
            browser_frames_out=self._consumer.frames_out,
            browser_frames_dropped_no_channel=self._consumer.dropped_no_channel,
            unicast=None if self.endpoint is None else self.endpoint.stats(),
            rtp=rtp,
        )

    async def close(self) -> None:
        """Close the peer connection, stop the tasks, free the unicast ports. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.track.detach()
        self.track.stop()
        await self.pc.close()
        task, self._consumer_task = self._consumer_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.endpoint is not None:
            await self.endpoint.close()
        self.log.info("media.leg_closed")
