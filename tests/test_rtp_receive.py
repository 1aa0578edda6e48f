"""The browser -> FreeSWITCH receive path without aiortc's jitter buffer and decoder thread
(esl_bridge/media/rtp_receive.py): the reorder buffer on a fake clock, inline decoding of
every codec, and the receiver tap with its hook-point check."""

from __future__ import annotations

import asyncio
import fractions
import math
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_bridge.media import rtp_receive
from esl_bridge.media.rtp_receive import (
    HookPointChanged,
    ReceivePath,
    ReorderBuffer,
    check_hook_point,
    opus_backend,
    seq_delta,
    tap_receiver,
)
from esl_bridge.media.unicast import ChannelFormat

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)
PCMA = RTCRtpCodecParameters(mimeType="audio/PCMA", clockRate=8000, payloadType=8)
G722 = RTCRtpCodecParameters(mimeType="audio/G722", clockRate=8000, payloadType=9)
OPUS_BACKENDS = ["pyav"] + (["libopus"] if opus_backend() == "libopus" else [])


# --------------------------------------------------------------------------- reorder buffer


def push_all(buf: ReorderBuffer, seqs: list[int], ssrc: int = 1, t0: float = 0.0) -> list:
    out = []
    for i, seq in enumerate(seqs):
        out += buf.push(seq, ssrc, f"p{seq}", t0 + i * 0.001)
    return out


def test_in_order_packets_leave_at_once() -> None:
    buf = ReorderBuffer(2)
    for seq in range(10):
        assert buf.push(seq, 1, seq, 0.0) == [(seq, seq)]
    assert len(buf) == 0 and buf.stats.lost == 0


def test_a_swapped_pair_is_put_back_in_order() -> None:
    buf = ReorderBuffer(2)
    out = push_all(buf, [0, 1, 3, 2, 4])
    assert [s for s, _ in out] == [0, 1, 2, 3, 4]
    assert buf.stats.reordered == 1 and buf.stats.lost == 0


def test_a_gap_is_declared_lost_after_depth_packets() -> None:
    buf = ReorderBuffer(2)
    assert push_all(buf, [0, 2]) == [(0, "p0")]  # 2 waits for 1
    out = buf.push(3, 1, "p3", 0.002)
    assert out == [(1, None), (2, "p2"), (3, "p3")]
    assert buf.stats.lost == 1 and buf.stats.concealed == 1
    assert buf.push(1, 1, "p1", 0.003) == []  # too late
    assert buf.stats.late == 1 and buf.stats.duplicates == 0


def test_a_gap_is_declared_lost_after_the_wait_when_the_stream_pauses() -> None:
    buf = ReorderBuffer(2)
    assert buf.push(10, 1, "a", 1.0) == [(10, "a")]
    assert buf.push(12, 1, "c", 1.0) == []
    assert buf.deadline() == pytest.approx(1.04)
    assert buf.poll(1.039) == []
    assert buf.poll(1.04) == [(11, None), (12, "c")]
    assert buf.deadline() is None


def test_sequence_numbers_wrap() -> None:
    buf = ReorderBuffer(2)
    out = push_all(buf, [65533, 65534, 0, 65535, 1, 2])
    assert [s for s, _ in out] == [65533, 65534, 65535, 0, 1, 2]
    assert buf.stats.lost == 0 and buf.stats.reordered == 1


def test_duplicates_are_dropped() -> None:
    buf = ReorderBuffer(2)
    out = push_all(buf, [5, 5, 6, 8, 8, 6])
    assert [s for s, _ in out] == [5, 6]
    assert buf.stats.duplicates == 3 and len(buf) == 1


def test_ssrc_change_and_huge_jump_reset() -> None:
    buf = ReorderBuffer(2)
    push_all(buf, [100, 102])  # 102 held, waiting for 101
    out = buf.push(7, 2, "new", 0.01)
    assert out == [(102, "p102"), (7, "new")]  # held audio first, no concealment
    assert buf.stats.resets == 1 and buf.stats.lost == 0
    out = buf.push(7 + 5000, 2, "jump", 0.02)
    assert out == [(5007, "jump")]
    assert buf.stats.resets == 2
    out = buf.push(5007 - 3000, 2, "back", 0.03)  # a restarted sender
    assert out == [(2007, "back")] and buf.stats.resets == 3


def test_a_long_gap_conceals_a_bounded_number_of_frames() -> None:
    buf = ReorderBuffer(2, max_conceal=5)
    push_all(buf, [0])
    out = push_all(buf, [40, 41])
    assert [s for s, item in out if item is None] == [1, 2, 3, 4, 5]
    assert [s for s, item in out if item is not None] == [40, 41]
    assert buf.stats.lost == 39 and buf.stats.concealed == 5


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        ReorderBuffer(0)


@settings(max_examples=150, deadline=None)
@given(
    start=st.integers(0, 65535),
    n=st.integers(1, 200),
    depth=st.integers(1, 4),
    seed=st.randoms(use_true_random=False),
)
def test_local_reordering_within_depth_loses_nothing(
    start: int, n: int, depth: int, seed: object
) -> None:
    """Packets displaced by less than ``depth`` positions all come out, once, in order (the
    first packet sets where the stream starts, so it stays first)."""
    seqs = [(start + i) % 65536 for i in range(n)]
    arrival = list(range(n))
    i = 1
    while i < n - 1:
        if seed.random() < 0.3 and depth > 1:  # type: ignore[attr-defined]
            arrival[i], arrival[i + 1] = arrival[i + 1], arrival[i]
            i += 1  # disjoint swaps: nothing moves more than one place
        i += 1
    # A swap moves each packet at most one place; depth >= 2 absorbs it.
    buf = ReorderBuffer(depth, max_wait_s=1e9)
    out = []
    for k in arrival:
        out += buf.push(seqs[k], 9, k, 0.0)
        assert len(buf) < depth
    out += buf.flush()
    assert [item for _, item in out] == list(range(n))
    assert buf.stats.lost == 0 and buf.stats.late == 0 and buf.stats.duplicates == 0
    assert buf.stats.resets == 0 and len(buf) == 0


@settings(max_examples=100, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.integers(0, 65535) | st.integers(-8, 8),
            st.sampled_from([1, 1, 1, 2]),
            st.floats(0, 0.1),
        ),
        max_size=150,
    ),
    depth=st.integers(1, 4),
)
def test_any_input_keeps_order_bounds_and_accounts_for_every_packet(
    events: list[tuple[int, int, float]], depth: int
) -> None:
    """Whatever arrives (small steps, huge jumps, SSRC changes, duplicates): memory stays
    bounded, every packet is emitted at most once, output runs forward between resets, and
    received == emitted + late + duplicates + held."""
    buf = ReorderBuffer(depth, max_gap=50)
    seq, now = 1000, 0.0
    seen: set[tuple[int, int]] = set()
    emitted_ids: list[int] = []
    last: int | None = None
    for pid, (step, ssrc, dt) in enumerate(events):
        seq = (seq + step) % 65536 if -8 <= step <= 8 else step
        now += dt
        resets_before = buf.stats.resets
        out = buf.push(seq, ssrc, pid, now) + buf.poll(now)
        breaks = buf.stats.resets - resets_before  # a reset may start over, once each
        for out_seq, item in out:
            if last is not None and seq_delta(out_seq, last) <= 0:
                assert breaks > 0, (out_seq, last)
                breaks -= 1
            last = out_seq
            if item is not None:
                emitted_ids.append(item)
        assert len(buf) <= depth
        assert len(buf._emitted_recent) <= buf.max_gap
        seen.add((seq, ssrc))
    assert len(emitted_ids) == len(set(emitted_ids))
    s = buf.stats
    assert s.received == len(events)
    assert s.received == s.emitted + s.late + s.duplicates + len(buf)
    assert s.emitted == len(emitted_ids)
    assert s.concealed <= s.lost


# --------------------------------------------------------------------------- decoding


def opus_packets(freq: float, count: int, loud: int = 8000) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000  # type: ignore[attr-defined]
    enc.layout = "mono"  # type: ignore[attr-defined]
    enc.format = "s16"  # type: ignore[attr-defined]
    enc.bit_rate = 32000
    enc.time_base = fractions.Fraction(1, 48000)
    packets: list[bytes] = []
    for n in range(count + 10):
        t = (np.arange(960) + n * 960) / 48000
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update((loud * np.sin(2 * math.pi * freq * t)).astype("<i2").tobytes())
        frame.sample_rate = 48000
        frame.pts = n * 960
        frame.time_base = enc.time_base
        packets += [bytes(p) for p in enc.encode(frame)]  # type: ignore[attr-defined]
    return packets[:count]


def rtp(seq: int, payload: bytes, pt: int = 111, ssrc: int = 7) -> RtpPacket:
    return RtpPacket(
        payload_type=pt, sequence_number=seq & 0xFFFF, timestamp=seq * 960, ssrc=ssrc,
        payload=payload,
    )  # fmt: skip


def samples_of(frames: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(frames), dtype="<i2")


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def max_step(samples: np.ndarray) -> int:
    return int(np.max(np.abs(np.diff(samples.astype(np.int64)))))


@pytest.mark.parametrize("backend", OPUS_BACKENDS)
@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_opus_sine_is_decoded_continuous_at_the_channel_rate(backend: str, rate: int) -> None:
    frames: list[bytes] = []
    fmt = ChannelFormat(rate)
    path = ReceivePath(OPUS, fmt, frames.append, opus_backend=backend)
    for seq, payload in enumerate(opus_packets(440.0, 60)):
        path.on_packet(rtp(65500 + seq, payload), seq * 0.02)
    assert len(frames) == 60 and {len(f) for f in frames} == {fmt.frame_bytes}
    pcm = samples_of(frames[10:])
    assert abs(dominant_hz(pcm, rate) - 440.0) < 15
    # A sine of amplitude 8000 moves at most 2*pi*440/rate*8000 per sample; a click (a
    # missing or repeated piece) jumps far more.
    assert max_step(pcm) < 1.5 * 2 * math.pi * 440 / rate * 8000 + 300
    assert path.stats.frames_out == 60 and path.stats.lost == 0


@pytest.mark.parametrize("backend", OPUS_BACKENDS)
def test_opus_loss_is_concealed_by_libopus_not_silence(backend: str) -> None:
    frames: list[bytes] = []
    path = ReceivePath(OPUS, ChannelFormat(48000), frames.append, opus_backend=backend)
    packets = opus_packets(440.0, 40)
    for seq, payload in enumerate(packets):
        if seq != 20:
            path.on_packet(rtp(seq, payload), seq * 0.02)
    assert len(frames) == 40
    assert path.stats.lost == 1 and path.stats.concealed == 1
    concealed = samples_of([frames[20]])
    neighbours = samples_of([frames[19]])
    # libopus's PLC continues the tone (energy of the same order, same pitch), where
    # silence or a dropped frame would leave nothing.
    assert np.sqrt(np.mean(concealed.astype(float) ** 2)) > 0.3 * np.sqrt(
        np.mean(neighbours.astype(float) ** 2)
    )
    assert abs(dominant_hz(concealed, 48000) - 440.0) < 60


def test_opus_stereo_channel_gets_the_same_audio_on_both_sides() -> None:
    frames: list[bytes] = []
    fmt = ChannelFormat(48000, channels=2)
    path = ReceivePath(OPUS, fmt, frames.append)
    for seq, payload in enumerate(opus_packets(440.0, 20)):
        path.on_packet(rtp(seq, payload), 0.0)
    assert len(frames) == 20 and {len(f) for f in frames} == {3840}
    pcm = samples_of(frames).reshape(-1, 2)
    assert np.array_equal(pcm[:, 0], pcm[:, 1]) and np.abs(pcm).max() > 1000


def g711_encode(codec: str, pcm: np.ndarray) -> bytes:
    enc = av.CodecContext.create("pcm_mulaw" if codec == "PCMU" else "pcm_alaw", "w")
    enc.sample_rate = 8000  # type: ignore[attr-defined]
    enc.layout = "mono"  # type: ignore[attr-defined]
    enc.format = "s16"  # type: ignore[attr-defined]
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(pcm))
    frame.planes[0].update(pcm.astype("<i2").tobytes())
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in enc.encode(frame))  # type: ignore[attr-defined]


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_g711_decodes_like_pyav_at_8k_and_resamples_otherwise(
    codec: RTCRtpCodecParameters,
) -> None:
    t = np.arange(160 * 30) / 8000
    tone = (8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2")
    payload = g711_encode(codec.name, tone)
    dec = av.CodecContext.create("pcm_mulaw" if codec.name == "PCMU" else "pcm_alaw", "r")
    dec.sample_rate = 8000  # type: ignore[attr-defined]
    dec.layout = "mono"  # type: ignore[attr-defined]
    expected = b"".join(
        f.to_ndarray().astype("<i2").tobytes()
        for f in dec.decode(av.Packet(payload))  # type: ignore[attr-defined]
    )
    for rate in (8000, 16000, 48000):
        frames: list[bytes] = []
        path = ReceivePath(codec, ChannelFormat(rate), frames.append)
        for seq in range(30):
            path.on_packet(rtp(seq, payload[seq * 160 : (seq + 1) * 160], codec.payloadType), 0)
        assert len(frames) == 30 and {len(f) for f in frames} == {rate // 50 * 2}
        if rate == 8000:
            assert b"".join(frames) == expected
            assert path.backend == "table"
        else:
            assert abs(dominant_hz(samples_of(frames[5:]), rate) - 440.0) < 15


def test_g722_is_decoded_at_16k() -> None:
    enc = av.CodecContext.create("g722", "w")
    enc.sample_rate = 16000  # type: ignore[attr-defined]
    enc.layout = "mono"  # type: ignore[attr-defined]
    enc.format = "s16"  # type: ignore[attr-defined]
    t = np.arange(320 * 30) / 16000
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(t))
    frame.planes[0].update((8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes())
    frame.sample_rate = 16000
    payload = b"".join(bytes(p) for p in enc.encode(frame))  # type: ignore[attr-defined]
    frames: list[bytes] = []
    path = ReceivePath(G722, ChannelFormat(16000), frames.append)
    for seq in range(30):
        path.on_packet(rtp(seq, payload[seq * 160 : (seq + 1) * 160], 9), 0)
    assert len(frames) == 30 and {len(f) for f in frames} == {640}
    assert abs(dominant_hz(samples_of(frames[5:]), 16000) - 440.0) < 15


@pytest.mark.parametrize("codec", [PCMU, PCMA])
def test_native_fast_path_moves_payload_bytes_unchanged(codec: RTCRtpCodecParameters) -> None:
    fmt = ChannelFormat.native(codec.name)
    frames: list[bytes] = []
    path = ReceivePath(codec, fmt, frames.append)  # type: ignore[arg-type]
    assert path.native and path.backend == "native"
    payloads = [bytes([(seq * 7 + i) % 256 for i in range(160)]) for seq in range(10)]
    for seq, payload in enumerate(payloads):
        if seq != 4:
            path.on_packet(rtp(seq, payload, codec.payloadType), seq * 0.02)
    silence = fmt.silence()  # type: ignore[attr-defined]
    assert frames == [*payloads[:4], silence, *payloads[5:]]
    assert path.stats.concealed == 1


def test_native_format_of_another_codec_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        ReceivePath(OPUS, ChannelFormat.native("PCMU"), lambda _: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", OPUS_BACKENDS)
def test_other_payload_types_and_bad_packets_lose_nothing(backend: str) -> None:
    frames: list[bytes] = []
    path = ReceivePath(OPUS, ChannelFormat(16000), frames.append, opus_backend=backend)
    packets = opus_packets(440.0, 6)
    path.on_packet(rtp(0, packets[0]), 0)
    path.on_packet(rtp(1, b"\x0b\x00\x00", pt=126), 0)  # e.g. telephone-event: not ours
    path.on_packet(rtp(1, bytes([0x03, 0x00])), 0)  # code 3 with no frame: invalid Opus
    for seq in range(2, 6):
        path.on_packet(rtp(seq, packets[seq]), 0)
    s = path.stats
    assert s.other_payload == 1 and s.decode_errors == 1
    path.on_packet(rtp(6, b"\x0b\x00\x00", pt=126), 0)
    assert s.other_payload == 1 and path.stats.other_payload == 2  # stats are a snapshot
    assert len(frames) == 6 and {len(f) for f in frames} == {640}  # the bad one concealed


def test_unknown_codec_is_a_clear_error() -> None:
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    with pytest.raises(ValueError, match="VP8"):
        ReceivePath(vp8, ChannelFormat(8000), lambda _: None)


# --------------------------------------------------------------------------- the tap


def receiver_of_a_fresh_connection() -> tuple[RTCPeerConnection, RTCRtpReceiver]:
    # No offer, no gathering: this opens no socket.
    pc = RTCPeerConnection()
    return pc, pc.addTransceiver("audio", direction="recvonly").receiver


def test_hook_point_of_this_aiortc_is_the_one_the_tap_was_written_for() -> None:
    """Fails loudly on an aiortc whose receiver changed (then re-read its source)."""

    async def run() -> None:
        pc, receiver = receiver_of_a_fresh_connection()
        try:
            check_hook_point(receiver)
        finally:
            await pc.close()

    asyncio.run(run())


def test_hook_point_check_catches_a_changed_signature_and_missing_state() -> None:
    async def run() -> None:
        pc, receiver = receiver_of_a_fresh_connection()
        try:

            class Changed(RTCRtpReceiver):
                async def _handle_rtp_packet(  # type: ignore[override]
                    self, packet: RtpPacket, arrival_time_ms: int, extra: int = 0
                ) -> None:
                    return None

            receiver.__class__ = Changed
            with pytest.raises(HookPointChanged, match="signature"):
                tap_receiver(receiver, lambda p, now: None)
            assert "_handle_rtp_packet" not in receiver.__dict__
            receiver.__class__ = RTCRtpReceiver

            streams = receiver.__dict__.pop("_RTCRtpReceiver__remote_streams")
            with pytest.raises(HookPointChanged, match="__remote_streams"):
                tap_receiver(receiver, lambda p, now: None)
            receiver.__dict__["_RTCRtpReceiver__remote_streams"] = streams
            with pytest.raises(HookPointChanged, match="not an aiortc"):
                check_hook_point(object())
        finally:
            await pc.close()

    asyncio.run(run())


def test_tap_takes_packets_keeps_rtcp_stats_feeds_no_decoder_and_untaps() -> None:
    async def run() -> None:
        pc, receiver = receiver_of_a_fresh_connection()
        got: list[tuple[int, float]] = []
        try:
            receiver.__dict__["_RTCRtpReceiver__codecs"][111] = OPUS
            untap = tap_receiver(
                receiver, lambda p, now: got.append((p.sequence_number, now)), clock_s=lambda: 5.0
            )
            with pytest.raises(RuntimeError, match="already tapped"):
                tap_receiver(receiver, lambda p, now: None)
            for seq in range(3):
                await receiver._handle_rtp_packet(rtp(seq, b"\xf8\xff\xfe"), arrival_time_ms=0)
            await receiver._handle_rtp_packet(rtp(3, b"x", pt=99), arrival_time_ms=0)
            assert got == [(0, 5.0), (1, 5.0), (2, 5.0)]
            report = await receiver.getStats()
            inbound = [s for s in report.values() if s.type == "inbound-rtp"]
            assert inbound and inbound[0].packetsReceived == 3 and inbound[0].ssrc == 7
            assert [s.source for s in receiver.getSynchronizationSources()] == [7]
            # aiortc's own path would have put a frame in its jitter buffer / queue: nothing.
            assert receiver.__dict__["_RTCRtpReceiver__decoder_queue"].qsize() == 0
            jitter = receiver.__dict__["_RTCRtpReceiver__jitter_buffer"]
            assert all(p is None for p in jitter._packets)
            untap()
            untap()
            assert "_handle_rtp_packet" not in receiver.__dict__
            await receiver._handle_rtp_packet(rtp(4, b"\xf8\xff\xfe"), arrival_time_ms=0)
            assert len(got) == 3
        finally:
            await pc.close()

    asyncio.run(run())


def test_a_failing_callback_does_not_reach_aiortc_transport() -> None:
    """An exception out of ``_handle_rtp_packet`` would end aiortc's DTLS receive loop (and
    the call): the tap keeps it, and the next packet is handled."""

    async def run() -> None:
        pc, receiver = receiver_of_a_fresh_connection()
        got: list[int] = []

        def on_packet(packet: RtpPacket, now: float) -> None:
            got.append(packet.sequence_number)
            if packet.sequence_number == 0:
                raise ValueError("a bug downstream")

        try:
            receiver.__dict__["_RTCRtpReceiver__codecs"][111] = OPUS
            untap = tap_receiver(receiver, on_packet)
            await receiver._handle_rtp_packet(rtp(0, b"\xf8\xff\xfe"), arrival_time_ms=0)
            await receiver._handle_rtp_packet(rtp(1, b"\xf8\xff\xfe"), arrival_time_ms=0)
            assert got == [0, 1]
            untap()
        finally:
            await pc.close()

    asyncio.run(run())


@pytest.mark.skipif("libopus" not in OPUS_BACKENDS, reason="no system libopus")
def test_libopus_uses_in_band_fec_when_the_next_packet_is_there() -> None:
    """Browsers send Opus with in-band FEC: a lost packet is rebuilt from the copy in its
    successor (which the buffer holds when it declares the loss); that is closer to the real
    audio than PLC, which is what the same packet gets when its successor is lost too."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = 48000  # type: ignore[attr-defined]
    enc.layout = "mono"  # type: ignore[attr-defined]
    enc.format = "s16"  # type: ignore[attr-defined]
    enc.bit_rate = 32000
    enc.time_base = fractions.Fraction(1, 48000)
    enc.options = {"fec": "1", "packet_loss": "20"}
    packets: list[bytes] = []
    for n in range(50):
        t = (np.arange(960) + n * 960) / 48000
        pitch = 300 + 200 * np.sin(2 * math.pi * 3 * t)  # a voice-like glide
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update((8000 * np.sin(2 * math.pi * pitch * t)).astype("<i2").tobytes())
        frame.sample_rate = 48000
        frame.pts = n * 960
        frame.time_base = enc.time_base
        packets += [bytes(p) for p in enc.encode(frame)]  # type: ignore[attr-defined]
    lost = 30

    def decode(missing: set[int]) -> np.ndarray:
        frames: list[bytes] = []
        path = ReceivePath(OPUS, ChannelFormat(48000), frames.append, opus_backend="libopus")
        for seq, payload in enumerate(packets):
            if seq not in missing:
                path.on_packet(rtp(seq, payload), seq * 0.02)
        assert path.stats.concealed == len(missing) and len(frames) == len(packets)
        return np.frombuffer(frames[lost], dtype="<i2").astype(float)

    full: list[bytes] = []
    reference = ReceivePath(OPUS, ChannelFormat(48000), full.append, opus_backend="libopus")
    for seq, payload in enumerate(packets):
        reference.on_packet(rtp(seq, payload), 0.0)
    truth = np.frombuffer(full[lost], dtype="<i2").astype(float)
    with_fec = np.sqrt(np.mean((decode({lost}) - truth) ** 2))
    with_plc = np.sqrt(np.mean((decode({lost, lost + 1}) - truth) ** 2))
    assert with_fec < 0.8 * with_plc, (with_fec, with_plc)


def test_hook_point_check_catches_a_transport_that_calls_the_class_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If aiortc's transport stopped looking the method up on the instance, the tap would
    silently get nothing (and aiortc's decoder everything): the check must say so."""
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    async def _handle_rtp_data(self: Any, data: bytes, arrival_time_ms: int) -> None:
        packet = RtpPacket.parse(data)
        receiver = self._rtp_router.route_rtp(packet)
        if receiver is not None:
            await RTCRtpReceiver._handle_rtp_packet(receiver, packet, arrival_time_ms)

    async def run() -> None:
        pc, receiver = receiver_of_a_fresh_connection()
        try:
            with pytest.raises(HookPointChanged, match="no longer calls"):
                tap_receiver(receiver, lambda p, now: None)
        finally:
            await pc.close()

    monkeypatch.setattr(RTCDtlsTransport, "_handle_rtp_data", _handle_rtp_data)
    rtp_receive._class_problem.cache_clear()
    try:
        asyncio.run(run())
    finally:
        rtp_receive._class_problem.cache_clear()
