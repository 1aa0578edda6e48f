"""CPU per received frame: esl_bridge/media/rtp_receive.py against aiortc's receive side.

For each codec and channel format, the same RTP packets (a 440 Hz sine, 20 ms each) go

* **ours**: through the tap on an aiortc receiver (its RTCP statistics kept) into
  ``ReceivePath.on_packet`` (reorder buffer, inline decode, framing);
* **aiortc**: through ``RTCRtpReceiver._handle_rtp_packet`` (its jitter buffer, then its
  decoder thread, then an ``AudioFrame`` on the remote track's queue), read with
  ``track.recv()`` and cut to the channel format with ``leg.Reframer`` (today's consumer).

One packet at a time, each one waited for before the next (as 20 ms apart on a call, so
aiortc's decoder thread wakes up once per frame, as it does in a call). CPU is the
process's CPU time (``time.process_time``: every thread) over all packets; idle time does
not count. No socket is opened (the receiver's connection never gathers).

    python3 benchmarks/rtp_receive_cost.py            # 1500 packets (30 s of audio) each
    python3 benchmarks/rtp_receive_cost.py --packets 300

One line per case: ``rtp_receive_cost: codec=.. channel=.. ours_us=.. aiortc_us=.. ratio=..``
(microseconds of CPU per 20 ms frame; ratio = ours / aiortc). Then the delay the reorder
buffer adds (on a simulated clock: 20 ms packets with 0-5 ms jitter, no loss, then 5 %
loss and 5 % reordering): ``rtp_receive_buffer: ... added_delay_ms p50=.. p95=.. max=..``.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.rtcrtpparameters import (
    RTCRtpCodecParameters,
    RTCRtpDecodingParameters,
    RTCRtpReceiveParameters,
)
from aiortc.rtcrtpreceiver import RemoteStreamTrack
from aiortc.rtp import RtpPacket

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from esl_bridge.media.leg import Reframer
from esl_bridge.media.rtp_receive import ReceivePath, ReorderBuffer, opus_backend, tap_receiver
from esl_bridge.media.unicast import ChannelFormat, native_to_le16

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, payloadType=0)
SSRC = 4242


def sine_frames(count: int, rate: int) -> list[av.AudioFrame]:
    frames = []
    samples = rate // 50
    for n in range(count):
        t = (np.arange(samples) + n * samples) / rate
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update((8000 * np.sin(2 * math.pi * 440 * t)).astype("<i2").tobytes())
        frame.sample_rate = rate
        frame.pts = n * samples
        frame.time_base = fractions.Fraction(1, rate)
        frames.append(frame)
    return frames


def encode(codec: str, count: int) -> list[bytes]:
    if codec == "opus":
        enc = av.CodecContext.create("libopus", "w")
        enc.sample_rate, enc.layout, enc.format = 48000, "mono", "s16"  # type: ignore[attr-defined]
        enc.bit_rate = 32000
        enc.time_base = fractions.Fraction(1, 48000)
        frames = sine_frames(count + 10, 48000)
    else:
        enc = av.CodecContext.create("pcm_mulaw", "w")
        enc.sample_rate, enc.layout, enc.format = 8000, "mono", "s16"  # type: ignore[attr-defined]
        frames = sine_frames(count, 8000)
    out: list[bytes] = []
    for frame in frames:
        out += [bytes(p) for p in enc.encode(frame)]  # type: ignore[attr-defined]
    return out[:count]


def packets(codec: RTCRtpCodecParameters, payloads: list[bytes]) -> list[RtpPacket]:
    step = 960 if codec.name == "opus" else 160
    return [
        RtpPacket(
            payload_type=codec.payloadType,
            sequence_number=n & 0xFFFF,
            timestamp=n * step,
            ssrc=SSRC,
            payload=p,
        )
        for n, p in enumerate(payloads)
    ]


async def ours(
    codec: RTCRtpCodecParameters, fmt: Any, pkts: list[RtpPacket], backend: str
) -> float:
    """Through the tap on a receiver (RTCP statistics included), as on a call."""
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("audio", direction="recvonly").receiver
    receiver.__dict__["_RTCRtpReceiver__codecs"][codec.payloadType] = codec
    out: list[bytes] = []
    path = ReceivePath(codec, fmt, out.append, opus_backend=backend)
    untap = tap_receiver(receiver, path.on_packet)
    try:
        start = time.process_time()
        for packet in pkts:
            await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
        cpu = time.process_time() - start
    finally:
        untap()
        await pc.close()
    assert path.stats.frames_out == len(pkts) == len(out), path.stats
    return cpu / len(pkts)


async def aiortc_side(codec: RTCRtpCodecParameters, fmt: Any, pkts: list[RtpPacket]) -> float:
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("audio", direction="recvonly").receiver
    track = receiver._track = RemoteStreamTrack(kind="audio")  # as setRemoteDescription does
    await receiver.receive(
        RTCRtpReceiveParameters(
            codecs=[codec],
            encodings=[RTCRtpDecodingParameters(ssrc=SSRC, payloadType=codec.payloadType)],
        )
    )
    native = getattr(fmt, "codec", "L16") != "L16"
    reframer = Reframer(fmt.rate, "mono")
    sink: list[bytes] = []
    arrived = asyncio.Event()
    counted = [0]

    async def consume() -> None:  # today's consumer: track.recv, Reframer, to the endpoint
        while True:
            frame = await track.recv()
            for out in reframer.convert(frame):
                data = native_to_le16(out)
                if native:  # (today there is no native path: the gateway re-encodes)
                    data = data[: fmt.frame_bytes]
                sink.append(data)
            counted[0] += 1
            arrived.set()

    consumer = asyncio.get_running_loop().create_task(consume())
    warmup = 10  # aiortc's audio jitter buffer holds a few packets before the first frame
    try:
        for packet in pkts[:warmup]:
            await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
            await asyncio.sleep(0.02)
        start, first = time.process_time(), counted[0]

        async def steady() -> None:
            for packet in pkts[warmup:]:
                arrived.clear()
                await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
                await arrived.wait()  # one frame out per packet in, as on a call

        await asyncio.wait_for(steady(), timeout=120)
        cpu = time.process_time() - start
        got = counted[0] - first
    finally:
        consumer.cancel()
        await receiver.stop()
        await pc.close()
    return cpu / max(got, 1)


def buffer_delay(count: int, loss: float, swap: float, seed: int = 10) -> tuple[float, ...]:
    """Delay the reorder buffer adds to each packet (emission - arrival), in ms: packets sent
    every 20 ms with 0-5 ms of jitter, ``loss`` dropped, ``swap`` one place late; ``poll``
    on a 20 ms tick as well as on each arrival. Returns (p50, p95, max)."""
    rng = random.Random(seed)
    arrivals: list[tuple[float, int]] = []
    held: tuple[float, int] | None = None
    for n in range(count):
        t = n * 0.020 + rng.uniform(0, 0.005)
        r = rng.random()
        if n > 5 and r < loss:
            continue
        if n > 5 and r < loss + swap and held is None:
            held = (t, n)
            continue
        arrivals.append((t, n))
        if held is not None:
            arrivals.append((t + 0.0001, held[1]))
            held = None
    buf = ReorderBuffer()
    arrived_at: dict[int, float] = {}
    delays: list[float] = []
    tick = 0.0
    for t, n in arrivals:
        while tick < t:
            for seq, item in buf.poll(tick):
                if item is not None:
                    delays.append(tick - arrived_at[seq])
            tick += 0.020
        arrived_at[n & 0xFFFF] = t
        for seq, item in buf.push(n & 0xFFFF, 1, n, t):
            if item is not None:
                delays.append(t - arrived_at[seq])
    ordered = sorted(delays)

    def pick(q: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return pick(0.5), pick(0.95), 1000 * ordered[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1500)
    args = parser.parse_args()
    cases: list[tuple[str, RTCRtpCodecParameters, Any, str]] = []
    backends = (["libopus"] if opus_backend() == "libopus" else []) + ["pyav"]
    for rate in (48000, 16000, 8000):
        for backend in backends:
            cases.append((f"opus/{backend}", OPUS, ChannelFormat(rate), backend))
    cases.append(("pcmu", PCMU, ChannelFormat(8000), "auto"))
    cases.append(("pcmu", PCMU, ChannelFormat.native("PCMU"), "auto"))
    payloads = {"opus": encode("opus", args.packets), "pcmu": encode("pcmu", args.packets)}
    aiortc_cache: dict[tuple[str, int, str], float] = {}
    for label, codec, fmt, backend in cases:
        pkts = packets(codec, payloads[codec.name.lower()])
        mine = asyncio.run(ours(codec, fmt, pkts, backend))
        kind = getattr(fmt, "codec", "L16")
        key = (codec.name, fmt.rate, kind)
        if key not in aiortc_cache:
            aiortc_cache[key] = asyncio.run(aiortc_side(codec, fmt, pkts))
        theirs = aiortc_cache[key]
        channel = f"{kind}/{fmt.rate}"
        print(
            f"rtp_receive_cost: codec={label} channel={channel} ours_us={mine * 1e6:.1f} "
            f"aiortc_us={theirs * 1e6:.1f} ratio={mine / theirs:.2f}",
            flush=True,
        )

    for loss, swap in ((0.0, 0.0), (0.05, 0.05)):
        p50, p95, worst = buffer_delay(50_000, loss, swap)
        print(
            f"rtp_receive_buffer: loss={loss:.0%} reorder={swap:.0%} depth=2 "
            f"added_delay_ms p50={p50:.1f} p95={p95:.1f} max={worst:.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
