"""The send path toward the browser (ChannelTrack -> aiortc's RTCRtpSender) and the fast-path
decision of MediaLeg.start_unicast.

The track returns ``av.Packet``\\ s, encoded inline with PyAV; aiortc's sender only calls its
encoder's ``pack()`` on them (aiortc 1.16 ``RTCRtpSender._next_encoded_frame``), so these
tests run every packet through the real aiortc encoder's ``pack()`` to get the RTP
timestamps, and through the real decoders to get the audio back. The loopback tests run a
real aiortc peer as the browser (in a loopback-only namespace)."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import math
from collections import deque
from typing import Any, cast

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.codecs import get_decoder, get_encoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from structlog.testing import capture_logs
from support.netns import loopback_only
from support.tones import ToneTrack

from esl_bridge.media.leg import (
    OPUS_BIT_RATE,
    ChannelTrack,
    LegConfig,
    MediaLeg,
    PacketEncoder,
    use_host_addresses,
)
from esl_bridge.media.libopus import opus_backend
from esl_bridge.media.unicast import (
    FRAME_S,
    ChannelFormat,
    JitterSettings,
    PortAllocator,
    UnicastEndpoint,
)

AMPLITUDE = 9000
TONE_HZ = 441.3  # not 440: at 8 kHz a 440 Hz sine repeats every 5 frames; this one does not


def click_limit(rate: int) -> float:
    """Largest sine residual (``max_click``) of clean audio, with room: Opus and G.722
    decoded stay under ~50, G.711's quantization at this amplitude reaches ~620; a lost or
    blank frame gives thousands, three samples skipped at 48 kHz ~700."""
    return 1500.0 if rate == 8000 else 450.0


CODECS = {
    "opus": RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2),
    "pcmu": RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1),
    "pcma": RTCRtpCodecParameters(mimeType="audio/PCMA", clockRate=8000, channels=1),
    "g722": RTCRtpCodecParameters(mimeType="audio/G722", clockRate=8000, channels=1),
}
RTP_STEP = {"opus": 960, "pcmu": 160, "pcma": 160, "g722": 160}
OPUS_ENCODERS = ["pyav"] + (["libopus"] if opus_backend() == "libopus" else [])


def sine_l16(fmt: ChannelFormat, n: int, freq: float = TONE_HZ) -> bytes:
    """Frame ``n`` of a continuous sine, as the channel's unicast L16 (LE)."""
    k = fmt.samples_per_frame
    t = (np.arange(k) + n * k) / fmt.rate
    mono = (AMPLITUDE * np.sin(2 * math.pi * freq * t)).astype("<i2")
    return (np.repeat(mono, 2) if fmt.channels == 2 else mono).tobytes()


def g711_bytes(codec: str, pcm: np.ndarray) -> bytes:
    encoder = PacketEncoder(codec, 8000)
    return encoder.encode(pcm.astype(np.int16).tobytes())


class FakeEndpoint:
    """What ChannelTrack uses of a UnicastEndpoint: every tick is due at once, frames from a
    list (None: the endpoint's silence, as on underrun)."""

    def __init__(self, fmt: ChannelFormat, frames: list[bytes | None]) -> None:
        self.fmt = fmt
        self.closed = False
        self._frames = deque(frames)

    def next_playout(self) -> float:
        return 0.0

    def read_frame(self, now: float) -> bytes:
        frame = self._frames.popleft() if self._frames else None
        return self.fmt.silence() if frame is None else frame


async def track_packets(
    codec: str, fmt: ChannelFormat | None, frames: list[bytes | None], before: int = 0
) -> tuple[ChannelTrack, list[av.Packet]]:
    """``before`` packets before unicast, then one per frame of the endpoint."""
    track = ChannelTrack()
    track.set_codec(codec)
    packets = [await track.recv() for _ in range(before)]
    if fmt is not None:
        track.attach(cast(UnicastEndpoint, FakeEndpoint(fmt, frames)))
        packets += [await track.recv() for _ in frames]
    track.stop()
    return track, packets


def rtp_timestamps(codec: str, packets: list[av.Packet]) -> list[int]:
    """What aiortc's sender makes of the packets: its encoder's ``pack()``."""
    encoder = get_encoder(CODECS[codec])
    stamps = []
    for packet in packets:
        payloads, timestamp = encoder.pack(packet)
        assert payloads == [bytes(packet)] and payloads[0]
        stamps.append(timestamp)
    return stamps


def decode(codec: str, packets: list[av.Packet], stamps: list[int]) -> tuple[np.ndarray, int]:
    """The browser's decoding of the payloads (aiortc's own decoder): mono samples, rate."""
    decoder = get_decoder(CODECS[codec])
    out = []
    rate = 0
    for packet, stamp in zip(packets, stamps, strict=True):
        for frame in decoder.decode(JitterFrame(bytes(packet), stamp)):
            rate = frame.sample_rate
            out.append(frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0])
    return np.concatenate(out).astype(float), rate


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def max_click(samples: np.ndarray, rate: int) -> float:
    """Largest deviation from a pure TONE_HZ sine: x[n+1] + x[n-1] == 2 cos(w) x[n] holds for
    any amplitude and phase, so a click, a gap or a skipped sample shows as a spike."""
    c = 2 * math.cos(2 * math.pi * TONE_HZ / rate)
    return float(np.abs(samples[2:] - c * samples[1:-1] + samples[:-2]).max())


# --------------------------------------------------------------------------- packets


@pytest.mark.parametrize(
    ("codec", "rate", "channels", "encoder_rate"),
    [
        ("opus", 8000, 1, 8000),
        ("opus", 16000, 1, 16000),
        ("opus", 48000, 2, 48000),
        ("pcmu", 8000, 1, 8000),
        ("pcma", 16000, 1, 8000),
        ("pcmu", 48000, 2, 8000),
        ("g722", 16000, 1, 16000),
        ("g722", 8000, 1, 16000),
    ],
)
def test_track_sends_packets_with_continuous_timestamps_and_a_clean_sine(
    codec: str, rate: int, channels: int, encoder_rate: int
) -> None:
    fmt = ChannelFormat(rate, channels)
    frames: list[bytes | None] = [sine_l16(fmt, n) for n in range(60)]
    track, packets = asyncio.run(track_packets(codec, fmt, frames, before=5))
    assert all(isinstance(p, av.Packet) for p in packets)
    # Encoded at the channel's rate when the codec takes it: no resampling.
    assert track.rate == encoder_rate
    assert (track._reframer is None) == (rate == encoder_rate)
    # Stamped in the RTP clock, so aiortc's pack() does no Fraction arithmetic per packet.
    rtp_clock = 48000 if codec == "opus" else 8000
    assert all(p.time_base == fractions.Fraction(1, rtp_clock) for p in packets)
    stamps = rtp_timestamps(codec, packets)
    assert np.diff(stamps).tolist() == [RTP_STEP[codec]] * (len(stamps) - 1)
    audio, out_rate = decode(codec, packets, stamps)
    per_frame = out_rate // 50
    tone = audio[(5 + 10) * per_frame :]  # past the silence and the codec's start-up
    assert dominant_hz(tone, out_rate) == pytest.approx(440, abs=10)
    assert np.sqrt(np.mean(tone**2)) > AMPLITUDE / 2
    assert max_click(tone, out_rate) < click_limit(out_rate)  # no click/gap at joins


@pytest.mark.parametrize("backend", OPUS_ENCODERS)
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_both_opus_encoders_give_a_clean_sine_at_the_channel_rate(backend: str, rate: int) -> None:
    """The system's libopus (media/libopus.py) and PyAV's fallback encode the same way: at
    the channel's own rate, mono, one packet per 20 ms, heard by the browser as a clean sine."""
    encoder = PacketEncoder("opus", rate, opus_backend=backend)
    assert encoder.backend == backend
    fmt = ChannelFormat(rate)
    packets = []
    for n in range(60):
        packet = av.Packet(encoder.encode(sine_l16(fmt, n)))
        packet.time_base = fractions.Fraction(1, rate)
        packet.pts = n * fmt.samples_per_frame
        packets.append(packet)
    assert all(bytes(p)[0] & 0x04 == 0 for p in packets)  # TOC stereo bit clear: mono
    stamps = rtp_timestamps("opus", packets)
    audio, out_rate = decode("opus", packets, stamps)
    tone = audio[10 * out_rate // 50 :]
    assert dominant_hz(tone, out_rate) == pytest.approx(440, abs=10)
    assert np.sqrt(np.mean(tone**2)) > AMPLITUDE / 2
    assert max_click(tone, out_rate) < click_limit(out_rate)


def test_click_detector_sees_a_gap_and_a_skip() -> None:
    """The continuity check would notice the faults it is there for."""
    fmt = ChannelFormat(8000)
    frames: list[bytes | None] = [sine_l16(fmt, n) for n in range(40)]
    _, packets = asyncio.run(track_packets("pcmu", fmt, frames))
    stamps = rtp_timestamps("pcmu", packets)
    audio, rate = decode("pcmu", packets, stamps)
    assert max_click(audio[160:], rate) < click_limit(rate)
    gap = audio.copy()
    gap[1600:1760] = 0  # a frame of silence
    assert max_click(gap[160:], rate) > click_limit(rate)
    skip = np.concatenate([audio[:1600], audio[1603:]])  # three samples lost
    assert max_click(skip[160:], rate) > click_limit(rate)


def test_opus_packets_are_mono_at_the_telephony_bit_rate() -> None:
    fmt = ChannelFormat(48000, 2)
    frames: list[bytes | None] = [sine_l16(fmt, n) for n in range(50)]
    _, packets = asyncio.run(track_packets("opus", fmt, frames))
    assert all(bytes(p)[0] & 0x04 == 0 for p in packets)  # TOC stereo bit clear: mono
    bits_per_s = 8 * sum(p.size for p in packets[10:]) / (len(packets[10:]) * FRAME_S)
    assert bits_per_s < 1.5 * OPUS_BIT_RATE


def test_silence_before_unicast_and_on_underrun() -> None:
    fmt = ChannelFormat(8000)
    sine = [sine_l16(fmt, n) for n in range(3)]
    frames: list[bytes | None] = [*sine, None, None]
    _, packets = asyncio.run(track_packets("pcma", fmt, frames, before=3))
    payloads = [bytes(p) for p in packets]
    assert payloads[:3] == [b"\xd5" * 160] * 3  # G.711 A-law silence before unicast
    assert payloads[-2:] == [b"\xd5" * 160] * 2  # and on underrun (L16 zeros encoded)
    assert all(p != b"\xd5" * 160 for p in payloads[3:6])

    _, packets = asyncio.run(track_packets("opus", fmt, [None] * 4, before=4))
    stamps = rtp_timestamps("opus", packets)
    assert np.diff(stamps).tolist() == [960] * 7  # silence keeps the clock going
    audio, _ = decode("opus", packets, stamps)
    assert np.abs(audio).max() < 50


def test_fast_path_sends_the_channel_bytes_untouched() -> None:
    fmt = ChannelFormat.native("PCMU")
    l16 = ChannelFormat(8000)
    frames: list[bytes | None] = [
        g711_bytes("pcmu", np.frombuffer(sine_l16(l16, n), "<i2")) for n in range(20)
    ]
    track, packets = asyncio.run(track_packets("pcmu", fmt, [*frames, None], before=2))
    assert track.passthrough
    assert [bytes(p) for p in packets] == [b"\xff" * 160] * 2 + frames + [b"\xff" * 160]
    stamps = rtp_timestamps("pcmu", packets)
    assert np.diff(stamps).tolist() == [160] * (len(packets) - 1)


def test_track_refuses_native_bytes_of_another_codec() -> None:
    track = ChannelTrack()
    track.set_codec("opus")
    endpoint = FakeEndpoint(ChannelFormat.native("PCMA"), [])
    with pytest.raises(ValueError, match="PCMA unicast cannot feed a opus browser"):
        track.attach(cast(UnicastEndpoint, endpoint))


def test_packet_encoder_rejects_what_it_cannot_do() -> None:
    with pytest.raises(ValueError):
        PacketEncoder("speex", 8000)
    with pytest.raises(ValueError):
        PacketEncoder("pcmu", 16000)
    with pytest.raises(ValueError):
        ChannelTrack().set_codec("telephone-event")


# --------------------------------------------------------------------------- fast path decision


@pytest.mark.parametrize(
    ("browser", "channel", "path"),
    [
        ("pcmu", "PCMU", "fast"),
        ("pcma", "PCMA", "fast"),
        ("pcma", "pcma", "fast"),
        ("pcmu", "PCMA", "transcode"),
        ("pcma", "PCMU", "transcode"),
        ("opus", "OPUS", "transcode"),
        ("opus", "PCMU", "transcode"),
        ("g722", "G722", "transcode"),
        ("pcmu", None, "transcode"),
        (None, "PCMU", "transcode"),  # unicast before the browser's offer
    ],
)
def test_start_unicast_takes_the_fast_path_only_for_the_same_g711(
    browser: str | None, channel: str | None, path: str
) -> None:
    async def scenario() -> None:
        leg = MediaLeg(LegConfig(), PortAllocator(42100, 42109), call_id="c1")
        if browser is not None:  # what _note_codec does once the SDP is negotiated
            leg.codec = browser
            leg.track.set_codec(browser)
        try:
            with capture_logs() as logs:
                params = await leg.start_unicast(ChannelFormat(8000), channel)
            assert leg.path == path
            assert leg.endpoint is not None
            if path == "fast":
                assert params.flags == "native" and params.headers()["flags"] == "native"
                assert leg.endpoint.fmt == ChannelFormat.native(cast(str, channel))
                assert leg.track.passthrough
            else:
                assert params.flags is None and "flags" not in params.headers()
                assert leg.endpoint.fmt == ChannelFormat(8000)
                assert not leg.track.passthrough
            logged = [e for e in logs if e["event"] == "media.path"]
            assert logged == [
                {
                    "event": "media.path",
                    "call_id": "c1",
                    "path": path,
                    "codec": browser,
                    "channel_codec": channel,
                    "log_level": "info",
                }
            ]
            assert (await leg.stats()).path == path
        finally:
            await leg.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_path_is_none_before_unicast_and_native_format_needs_the_same_codec() -> None:
    async def scenario() -> None:
        alloc = PortAllocator(42200, 42209)
        leg = MediaLeg(LegConfig(), alloc)
        try:
            assert leg.path is None
            leg.codec = "opus"
            leg.track.set_codec("opus")
            with pytest.raises(ValueError, match="native PCMU unicast needs a browser on PCMU"):
                await leg.start_unicast(ChannelFormat.native("PCMU"), "PCMU")
            assert leg.endpoint is None and leg.path is None and alloc.in_use == 0
        finally:
            await leg.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


# --------------------------------------------------------------------------- over aiortc


class Switch(asyncio.DatagramProtocol):
    """FreeSWITCH's unicast side: records what it gets."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)


# The switch sends its whole tone at once into a deep, never-trimmed buffer that never
# skips ticks: every frame is played in order whatever the machine's load, so a gap or a
# click in what the browser hears is the send path's, not the test's timing.
DEEP = JitterSettings(target_depth=1, max_depth=1000, window=10**9, max_catchup=10**9)
TONE_FRAMES = 120


async def browser_hears(
    codecs: tuple[str, ...], fmt: ChannelFormat, channel_codec: str | None, tone: list[bytes]
) -> tuple[MediaLeg, list[av.AudioFrame], list[bytes]]:
    loop = asyncio.get_running_loop()
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTrack(ToneTrack(1000.0))
    heard: list[av.AudioFrame] = []
    tasks: list[asyncio.Task[None]] = []

    async def listen(track: Any) -> None:
        while True:
            try:
                heard.append(await track.recv())
            except MediaStreamError:
                return

    @browser.on("track")
    def _on_track(track: Any) -> None:
        tasks.append(loop.create_task(listen(track)))

    leg = MediaLeg(LegConfig(codecs=codecs, jitter=DEEP), PortAllocator(42300, 42399))
    switch = Switch()
    try:
        with use_host_addresses(["127.0.0.1"]):
            await browser.setLocalDescription(await browser.createOffer())
        answer = await leg.handle_offer(browser.localDescription.sdp)
        await browser.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        params = await leg.start_unicast(fmt, channel_codec)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: switch, local_addr=(params.local_ip, params.local_port)
        )
        for _ in range(2400):  # ICE + DTLS: waited for, bounded only against a hang
            if leg.pc.connectionState == "connected" and heard:
                break
            await asyncio.sleep(0.025)
        assert leg.pc.connectionState == "connected"
        for n, frame in enumerate(tone):
            transport.sendto(frame, (params.remote_ip, params.remote_port))
            if n % 10 == 9:
                await asyncio.sleep(0)
        checked, last_loud = 0, -1
        for _ in range(6000):  # until the browser heard the tone and the silence after it
            for i in range(checked, len(heard)):
                if np.abs(heard[i].to_ndarray()).max() > 2000:
                    last_loud = i
            checked = len(heard)
            if last_loud >= 0 and len(heard) - last_loud > 10:
                break
            await asyncio.sleep(0.02)
        transport.close()
    finally:
        await leg.close()
        await browser.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return leg, heard, switch.received


def tone_run(heard: list[av.AudioFrame]) -> tuple[np.ndarray, list[int]]:
    """The browser's decoded frames from the tone's start to its end (minus two frames at
    each edge), as mono samples, and the RTP timestamp steps between them."""
    loud = [i for i, f in enumerate(heard) if np.abs(f.to_ndarray()).max() > 2000]
    assert loud, "the browser never heard the tone"
    frames = heard[loud[0] + 2 : loud[-1] - 1]
    steps = [(b.pts - a.pts) % 2**32 for a, b in itertools.pairwise(frames)]
    audio = np.concatenate(
        [f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in frames]
    )
    return audio.astype(float), steps


async def opus_sine_scenario() -> None:
    fmt = ChannelFormat(16000)
    tone = [sine_l16(fmt, n) for n in range(TONE_FRAMES)]
    leg, heard, _ = await browser_hears(("opus",), fmt, "OPUS", tone)
    assert leg.path == "transcode" and leg.track.rate == 16000
    audio, steps = tone_run(heard)
    stats = leg.track.frames, leg.track.resample_shortfalls, len(heard)
    # Continuous RTP timestamps, nothing skipped.
    assert steps == [960] * len(steps), (sorted(set(steps)), stats)
    assert len(steps) >= TONE_FRAMES - 6, (len(steps), stats)  # every tone frame arrived
    rate = heard[0].sample_rate
    assert dominant_hz(audio, rate) == pytest.approx(440, abs=10)
    clicks = np.flatnonzero(
        np.abs(audio[2:] - 2 * math.cos(2 * math.pi * TONE_HZ / rate) * audio[1:-1] + audio[:-2])
        >= click_limit(rate)
    )
    assert max_click(audio, rate) < click_limit(rate), (clicks[:10] / (rate // 50), stats)


@loopback_only
def test_a_sine_reaches_the_browser_continuous_over_opus() -> None:
    asyncio.run(asyncio.wait_for(opus_sine_scenario(), 240))


async def fast_path_scenario() -> None:
    l16 = ChannelFormat(8000)
    tone = [g711_bytes("pcmu", np.frombuffer(sine_l16(l16, n), "<i2")) for n in range(60)]
    leg, heard, received = await browser_hears(("PCMU",), l16, "PCMU", tone)
    assert leg.path == "fast"
    audio, steps = tone_run(heard)
    assert steps == [160] * len(steps)
    assert max_click(audio, 8000) < click_limit(8000)
    # The browser decodes exactly the switch's bytes: each frame it heard is the mu-law
    # decoding of one frame the switch sent (PCMU is stateless, and no two tone frames are equal).
    decoder = get_decoder(CODECS["pcmu"])
    sent = {
        decoder.decode(JitterFrame(frame, 0))[0].to_ndarray().tobytes(): n
        for n, frame in enumerate(tone)
    }
    loud = [f for f in heard if np.abs(f.to_ndarray()).max() > 2000]
    order = [sent.get(f.to_ndarray().tobytes()) for f in loud]
    assert None not in order and order == sorted(order) and len(order) >= len(tone) - 4
    # Toward the switch: native frames, 160 bytes of PCMU carrying the browser's 1 kHz.
    assert received and {len(d) for d in received} == {160}
    pcm = np.concatenate(
        [decoder.decode(JitterFrame(d, 0))[0].to_ndarray()[0] for d in received[10:]]
    )
    assert dominant_hz(pcm.astype(float), 8000) == pytest.approx(1000, abs=15)


@loopback_only
def test_fast_path_moves_the_switch_bytes_to_the_browser_untouched() -> None:
    asyncio.run(asyncio.wait_for(fast_path_scenario(), 240))
