"""CPU and latency cost of the media leg, against bare aiortc, measured in the same run.

The **gateway process** (this one) holds, per call, either a ``MediaLeg`` (bridged mode) or
a plain aiortc ``RTCPeerConnection`` that sends a track and reads the browser's track (bare
mode: the cost of aiortc alone, same codec). Only its CPU time is measured (all of its
threads: aiortc encodes in an executor and decodes in a thread), less what the process
spends with no call (measured first). ``--pin`` pins it to one CPU, the far end to the rest.

The **far end** runs in several other processes (``--calls-per-child`` calls each, default
5), so it never starves the measurement through one busy event loop: per call an aiortc
"browser" and, in bridged mode, a fake FreeSWITCH unicast peer. The browsers send
pre-encoded packets (aiortc only packs them: no encoder, executor, resampler or audio level
on the far end), hear through the gateway's own SRTP and RTP taps (no aiortc receive
loop, jitter buffer or decoder thread), run on the gateway's kind of event loop
(``--event-loop``) and offer one codec only: Opus, or PCMU. The fake FreeSWITCH speaks
what the leg opened: L16 at the channel rate (Opus calls: ``--rate``, default 8000 Hz;
PCMU calls: 8000 Hz) or, on the G.711 fast path, native PCMU (160 bytes every 20 ms,
``flags: native``).

Signal: both ends send a 100 ms 1 kHz burst every 500 ms, starting on a frame boundary;
the receiving end finds the onset sample. One-way latency = arrival of the frame holding
the onset + onset offset - emission of the burst's first frame (CLOCK_MONOTONIC is shared by
all processes). Added latency = bridged sample - median bare sample of the same direction
and codec (browser->FreeSWITCH vs browser->aiortc peer, FreeSWITCH->browser vs aiortc
peer->browser); ``added_latency_p95_ms`` is the worse direction's p95.

A point (codec, call count) is VALID only when, in both modes, every sender (far end, and
the gateway's aiortc peers in bare mode) emitted every burst due in the window, the far
end's event loops kept real time (loop lag p99 <= 20 ms in each child) and every burst
arrived at the other side, both directions (so the gateway's audio arrived). Otherwise
the reasons are printed and the point is not used: on a starved machine work is skipped,
and CPU per call would look cheaper.
``overhead_ratio`` = bridged CPU per call / bare CPU per call, from the largest count valid
in both modes (``ratio_from_calls``); ``calls_per_core`` = 1 / bridged CPU per call, from
the largest count whose bridged run is valid (``from_calls``; see ``closing_line``). The
gateway's own event loop must keep real time too (loop lag p99 <= 20 ms).

Run it in a loopback-only network namespace (it re-executes itself under ``unshare -n``
when the host has other interfaces; run as root)::

    python3 benchmarks/media_cost.py --quick            # 1, 10, 30 calls, 3 s windows
    python3 benchmarks/media_cost.py                    # the same, 8 s windows
    python3 benchmarks/media_cost.py --codec pcmu --calls 1,20 --pin

The last lines, one per codec::

    media_cost: codec=opus calls_per_core=.. overhead_ratio=.. added_latency_p95_ms=.. from_calls=.. ratio_from_calls=..
    media_cost: codec=pcmu path=fast calls_per_core=.. overhead_ratio=.. added_latency_p95_ms=.. from_calls=.. ratio_from_calls=..
"""  # noqa: E501

from __future__ import annotations

import argparse
import asyncio
import fractions
import functools
import inspect
import json
import logging
import math
import os
import re
import resource
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import loopback_namespace  # noqa: E402
from aiortc import (  # noqa: E402
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.codecs.opus import OpusEncoder  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402

from esl_bridge.loops import DEFAULT_EVENT_LOOP, EVENT_LOOPS, new_event_loop  # noqa: E402
from esl_bridge.media.leg import (  # noqa: E402
    LegConfig,
    MediaLeg,
    codec_capabilities,
    use_host_addresses,
)
from esl_bridge.media.rtp_receive import ReceiverTap  # noqa: E402
from esl_bridge.media.srtp_tap import SrtpTap  # noqa: E402
from esl_bridge.media.unicast import FRAME_S, ChannelFormat, PortAllocator  # noqa: E402
from esl_bridge.sim import g711  # noqa: E402

BURST_EVERY = 25  # frames: one burst every 500 ms
BURST_LEN = 5  # frames: 100 ms of tone
AMPLITUDE = 8000
THRESHOLD = 2500
MAX_LOOP_LAG_MS = 20.0  # beyond this (p99) a far-end process no longer keeps real time
MATCH_S = BURST_EVERY * FRAME_S * 0.8  # an onset belongs to a burst sent at most this before
CODECS = ("opus", "pcmu")
CODEC_RATE = {"opus": 48000, "pcmu": 8000}


# --------------------------------------------------------------------------- signals


def burst_frame(n: int, rate: int, channels: int) -> tuple[np.ndarray, bool]:
    """Frame n of the burst signal (int16, interleaved) and whether a burst starts in it."""
    k = rate // 50
    phase = n % BURST_EVERY
    if phase >= BURST_LEN:
        return np.zeros(k * channels, dtype=np.int16), False
    t = (np.arange(k) + phase * k) / rate
    mono = (AMPLITUDE * np.sin(2 * math.pi * 1000 * t)).astype(np.int16)
    return (np.repeat(mono, channels) if channels == 2 else mono), phase == 0


@functools.lru_cache(maxsize=BURST_EVERY)
def native_frame(phase: int) -> bytes:
    """Frame ``phase`` of the burst signal in PCMU (the far end's native unicast), encoded
    once: the signal repeats every ``BURST_EVERY`` frames."""
    return ulaw_encode(burst_frame(phase, 8000, 1)[0])


def ulaw_encode(samples: np.ndarray) -> bytes:
    """G.711 mu-law of int16 samples (what a native PCMU unicast stream carries), with the
    simulator's encoder."""
    return g711.encode("PCMU", samples.astype("<i2").tobytes())


def ulaw_decode(data: bytes) -> np.ndarray:
    return np.frombuffer(g711.decode("PCMU", data), dtype=np.int16)


class OnsetDetector:
    """Finds burst onsets in a received stream; records onset times (monotonic)."""

    def __init__(self) -> None:
        self.onsets: list[float] = []
        self._quiet_frames = BURST_EVERY

    def feed(self, mono: np.ndarray, rate: int, arrival: float) -> None:
        loud = np.flatnonzero(np.abs(mono) > THRESHOLD)
        if loud.size == 0:
            self._quiet_frames += 1
            return
        if self._quiet_frames >= BURST_EVERY - BURST_LEN - 5:
            self.onsets.append(arrival + int(loud[0]) / rate)
        self._quiet_frames = 0


class Pacer:
    """Absolute 20 ms pacing from the first call; records when each burst left."""

    def __init__(self) -> None:
        self.n = 0
        self.t0: float | None = None
        self.sent: list[float] = []

    async def tick(self) -> int:
        if self.t0 is None:
            self.t0 = time.monotonic()
        delay = self.t0 + self.n * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        n = self.n
        self.n += 1
        if n % BURST_EVERY == 0:
            self.sent.append(time.monotonic())
        return n


class BurstTrack(MediaStreamTrack):
    """The bare gateway-side peer's source: the burst signal as audio frames (mono, the
    rate the leg would send: 48 kHz for Opus, 8 kHz for PCMU), encoded by aiortc."""

    kind = "audio"

    def __init__(self, rate: int) -> None:
        super().__init__()
        self.rate = rate
        self.pacer = Pacer()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self.pacer.tick()
        data, _ = burst_frame(n, self.rate, 1)
        samples = self.rate // 50
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(data.tobytes())
        frame.sample_rate = self.rate
        frame.time_base = fractions.Fraction(1, self.rate)
        frame.pts = n * samples
        return frame


def encoded_cycle(codec: str) -> list[bytes]:
    """One burst period (25 frames) of the browser's signal, encoded once: Opus 48 kHz
    stereo like a browser (the second of two encoded periods, past the encoder's start-up),
    or PCMU."""
    if codec == "pcmu":
        return [ulaw_encode(burst_frame(n, 8000, 1)[0]) for n in range(BURST_EVERY)]
    encoder = OpusEncoder()
    payloads: list[bytes] = []
    for n in range(2 * BURST_EVERY):
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        frame.planes[0].update(burst_frame(n, 48000, 2)[0].tobytes())
        frame.sample_rate = 48000
        frame.time_base = fractions.Fraction(1, 48000)
        frame.pts = n * 960
        out, _ = encoder.encode(frame)
        payloads.extend(out)
    return payloads[-BURST_EVERY:]


class PacketTrack(MediaStreamTrack):
    """A browser's microphone as pre-encoded packets: aiortc's sender only packs them, so
    the far end spends its CPU on RTP, not on encoding."""

    kind = "audio"

    def __init__(self, codec: str, cycle: Sequence[bytes]) -> None:
        super().__init__()
        self.cycle = cycle
        self.rate = CODEC_RATE[codec]
        self.time_base = fractions.Fraction(1, self.rate)
        self.pacer = Pacer()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        n = await self.pacer.tick()
        packet = av.Packet(self.cycle[n % BURST_EVERY])
        packet.pts = n * (self.rate // 50)
        packet.time_base = self.time_base
        return packet


async def detect_track(track: MediaStreamTrack, detector: OnsetDetector) -> None:
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        assert isinstance(frame, av.AudioFrame)
        arrival = time.monotonic()
        channels = len(frame.layout.channels)
        mono = frame.to_ndarray().reshape(-1, channels)[:, 0]
        detector.feed(mono, frame.sample_rate, arrival)


class FakeFreeSwitch(asyncio.DatagramProtocol):
    """One call's FreeSWITCH unicast side: bursts out (paced), onsets in. ``codec`` "L16"
    (little-endian at the channel rate) or "PCMU" (native: 160 bytes of mu-law per 20 ms)."""

    def __init__(self, codec: str, rate: int, channels: int, target: tuple[str, int]) -> None:
        self.codec = codec
        self.rate = rate
        self.channels = channels
        self.target = target
        self.pacer = Pacer()
        self.detector = OnsetDetector()
        self.transport: asyncio.DatagramTransport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.task = asyncio.get_running_loop().create_task(self._play())

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.codec == "PCMU":
            samples = ulaw_decode(data)
        else:
            samples = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)[:, 0]
        self.detector.feed(samples, self.rate, time.monotonic())

    async def _play(self) -> None:
        while self.transport is not None:
            n = await self.pacer.tick()
            data, _ = burst_frame(n, self.rate, self.channels)
            if self.codec == "PCMU":
                payload = native_frame(n % BURST_EVERY)
            else:
                payload = data.astype("<i2").tobytes()
            if self.transport is not None:
                self.transport.sendto(payload, self.target)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def cpu_seconds() -> float:
    """CPU time of this process, all threads (not its children)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_ticks() -> dict[str, int]:
    """Clock ticks (user + system) per thread of this process, from /proc, keyed by the
    Python thread's name (the kernel's is "python3" for all); digits in the names are folded
    so that pools add up (``ThreadPoolExecutor-#_#``)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    out: dict[str, int] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended
        name = names.get(int(task.name)) or stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        key = re.sub(r"\d+", "#", name)
        out[key] = out.get(key, 0) + ticks
    return out


class LoopLag:
    """How late the event loop wakes a 10 ms sleep: starvation shows here first."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.010)
            self.lags.append((time.monotonic() - t - 0.010) * 1000)

    def take(self) -> list[float]:
        lags, self.lags = self.lags, []
        return lags

    def stop(self) -> None:
        self.task.cancel()


async def wait_connected(pcs: list[RTCPeerConnection], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(pc.connectionState != "connected" for pc in pcs):
        if time.monotonic() > deadline:
            states = [pc.connectionState for pc in pcs]
            raise RuntimeError(f"peer connections did not connect: {states}")
        await asyncio.sleep(0.05)


def offer_only(pc: RTCPeerConnection, track: MediaStreamTrack, codec: str) -> None:
    """A sendrecv audio transceiver that offers ``codec`` only (opus or PCMU)."""
    transceiver = pc.addTransceiver(track, direction="sendrecv")
    transceiver.setCodecPreferences(codec_capabilities([codec]))


class PayloadTap:
    """A far-end browser's ear: each RTP payload decoded inline (PCMU by table, Opus with
    PyAV's libopus) and fed to the onset detector as it arrives, through the gateway's own
    receive tap (``esl_bridge.media.rtp_receive.ReceiverTap``, fed by its SRTP tap at the
    ICE sockets): aiortc's receive loop, jitter buffer and decoder thread are skipped, so
    the far end stays cheap; both modes are heard the same way, so the added latency is
    unaffected."""

    def __init__(self, codec: str, detector: OnsetDetector) -> None:
        self.codec = codec
        self.detector = detector
        self.decoder: Any = None
        if codec == "opus":
            self.decoder = av.CodecContext.create("libopus", "r")
            self.decoder.format = "s16"
            self.decoder.layout = "mono"
            self.decoder.sample_rate = 48000

    def on_packet(self, packet: Any, arrival: float) -> None:
        if not packet.payload:
            return
        if self.decoder is None:
            self.detector.feed(ulaw_decode(packet.payload), 8000, arrival)
            return
        for frame in self.decoder.decode(av.Packet(packet.payload)):
            self.detector.feed(frame.to_ndarray().reshape(-1), frame.sample_rate, arrival)


# --------------------------------------------------------------------------- far end


class FarEnd:
    """A child process: browsers and fake FreeSWITCHes, driven by JSON lines."""

    def __init__(self) -> None:
        self.browsers: list[tuple[RTCPeerConnection, PacketTrack, OnsetDetector]] = []
        self.fakes: list[FakeFreeSwitch] = []
        self.cycles: dict[str, list[bytes]] = {}
        self.lag: LoopLag | None = None

    async def offer(self, n: int, codec: str) -> dict[str, Any]:
        if codec not in self.cycles:
            self.cycles[codec] = encoded_cycle(codec)
        for _ in range(n):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            track = PacketTrack(codec, self.cycles[codec])
            offer_only(pc, track, codec)
            detector = OnsetDetector()
            self.browsers.append((pc, track, detector))

        async def make_offer(pc: RTCPeerConnection, detector: OnsetDetector) -> str:
            receiver = pc.getTransceivers()[0].receiver
            tap = ReceiverTap(receiver, PayloadTap(codec, detector).on_packet)
            with use_host_addresses(["127.0.0.1"]):
                await pc.setLocalDescription(await pc.createOffer())
            # The gateway's SRTP tap (media/srtp_tap.py) once the ICE sockets exist: the
            # far end skips aiortc's receive loop too, so more calls fit beside the gateway.
            SrtpTap(receiver.transport, tap).install()
            return pc.localDescription.sdp

        offers = await asyncio.gather(*(make_offer(pc, d) for pc, _, d in self.browsers[-n:]))
        return {"offers": list(offers)}

    async def answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        for (pc, _, _), sdp in zip(self.browsers, msg["answers"], strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        loop = asyncio.get_running_loop()
        for fs_ip, fs_port, our_ip, our_port in msg.get("unicast") or []:
            _, fake = await loop.create_datagram_endpoint(
                lambda our_ip=our_ip, our_port=our_port: FakeFreeSwitch(
                    msg["fs_codec"], msg["rate"], msg["channels"], (our_ip, our_port)
                ),
                local_addr=(fs_ip, fs_port),
            )
            self.fakes.append(fake)
        await wait_connected([pc for pc, _, _ in self.browsers])
        self.lag = LoopLag()
        return {"ok": True}

    def collect(self, since: float) -> dict[str, Any]:
        """Burst emissions and onsets from ``since`` on, CPU time, loop lags since the last
        collect."""

        def recent(times: list[float]) -> list[float]:
            return [t for t in times if t >= since]

        return {
            "browser_sent": [recent(t.pacer.sent) for _, t, _ in self.browsers],
            "browser_onsets": [recent(d.onsets) for _, _, d in self.browsers],
            "fs_sent": [recent(f.pacer.sent) for f in self.fakes],
            "fs_onsets": [recent(f.detector.onsets) for f in self.fakes],
            "cpu": cpu_seconds(),
            "lags": self.lag.take() if self.lag is not None else [],
        }

    async def close(self) -> dict[str, Any]:
        if self.lag is not None:
            self.lag.stop()
            self.lag = None
        for fake in self.fakes:
            fake.close()
        await asyncio.gather(*(pc.close() for pc, _, _ in self.browsers))
        self.browsers, self.fakes = [], []
        return {"ok": True}


async def child_main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    far = FarEnd()
    while line := await reader.readline():
        msg = json.loads(line)
        op = msg["op"]
        if op == "offer":
            reply = await far.offer(msg["n"], msg["codec"])
        elif op == "answer":
            reply = await far.answer(msg)
        elif op == "collect":
            reply = far.collect(msg.get("since", 0.0))
        elif op == "close":
            reply = await far.close()
        else:
            reply = {"error": f"unknown op {op}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


# --------------------------------------------------------------------------- gateway side


class Child:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ask(self, **msg: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 120)
        if not line:
            raise RuntimeError(f"far-end process {self.proc.pid} died")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"far-end process {self.proc.pid}: {reply['error']}")
        return reply


def split_calls(n: int, per_child: int, children: int) -> list[int]:
    """Calls per far-end process: ``per_child`` each, on as few processes as that needs,
    never more than ``children``; the remainder spread evenly."""
    used = min(children, max(1, math.ceil(n / per_child)))
    base, extra = divmod(n, used)
    return [base + (1 if i < extra else 0) for i in range(used)]


@dataclass
class Direction:
    """One direction of one mode: latencies and the bursts that never arrived."""

    latencies_ms: list[float] = field(default_factory=list)
    due: int = 0
    missing: int = 0
    calls_missing: int = 0
    senders_short: int = 0


def match_bursts(
    sent: Sequence[float], onsets: Sequence[float], since: float, until: float
) -> tuple[list[float], int, int]:
    """For each burst sent in [since, until - MATCH_S] (so that it had time to arrive), the
    first onset after it and within MATCH_S. Returns (latencies in ms, bursts due, bursts
    missing)."""
    ordered = sorted(onsets)
    latencies: list[float] = []
    due = missing = 0
    for s in sent:
        if s < since or s > until - MATCH_S:
            continue
        due += 1
        i = int(np.searchsorted(ordered, s))
        if i < len(ordered) and ordered[i] - s < MATCH_S:
            latencies.append((ordered[i] - s) * 1000)
        else:
            missing += 1
    return latencies, due, missing


def add_direction(
    d: Direction, sent: Sequence[float], onsets: Sequence[float], since: float, until: float
) -> None:
    lat, due, missing = match_bursts(sent, onsets, since, until)
    d.latencies_ms += lat
    d.due += due
    d.missing += missing
    d.calls_missing += 1 if missing else 0
    # Every 20 ms frame due in the window was sent: one burst per BURST_EVERY frames.
    expected = (until - MATCH_S - since) / (BURST_EVERY * FRAME_S)
    if due < math.floor(expected):
        d.senders_short += 1


@dataclass
class Run:
    """One mode (bare or bridged) at one call count for one codec."""

    mode: str
    calls: int
    cpu_per_call: float
    far_cpu: float
    far_procs: int
    far_lag_p99: float
    gw_lag: str
    gw_lag_p99: float
    up: Direction
    down: Direction
    threads: dict[str, float]
    counters: dict[str, float]
    paths: list[str]

    def problems(self) -> list[str]:
        """Why this run cannot be used (empty: it can)."""
        why = []
        down_sender = "fake FreeSWITCH" if self.mode == "bridged" else "gateway's aiortc peers"
        for name, sender, d in (
            ("browser->gateway side", "far-end browsers", self.up),
            ("gateway side->browser", down_sender, self.down),
        ):
            if d.due == 0:
                why.append(f"{self.mode} {name}: no burst due in the window")
            if d.senders_short:
                why.append(
                    f"{self.mode} {name}: {d.senders_short} of {self.calls} {sender} did not "
                    "emit every burst due (sender starved)"
                )
            if d.missing:
                why.append(
                    f"{self.mode} {name}: {d.missing} of {d.due} bursts never arrived "
                    f"({d.calls_missing} calls)"
                )
        if self.far_lag_p99 > MAX_LOOP_LAG_MS:
            why.append(
                f"{self.mode}: far end starved (event loop lag p99 {self.far_lag_p99:.0f} ms "
                f"in its worst process)"
            )
        if self.gw_lag_p99 > MAX_LOOP_LAG_MS:
            # The measured process itself fell behind: it skipped work, and its CPU per
            # call would look cheaper than it is.
            why.append(
                f"{self.mode}: gateway process starved (event loop lag p99 "
                f"{self.gw_lag_p99:.0f} ms)"
            )
        return why


def fast_path_available() -> bool:
    """Whether this build has the G.711 fast path (``ChannelFormat.native`` and
    ``MediaLeg.start_unicast(..., channel_codec=...)``)."""
    params = inspect.signature(MediaLeg.start_unicast).parameters
    return hasattr(ChannelFormat, "native") and "channel_codec" in params


async def start_leg_unicast(leg: MediaLeg, codec: str, fmt: ChannelFormat) -> tuple[Any, str]:
    """Start the leg's unicast as the gateway does for an answered channel: its L16 format
    and, where the build knows it, its read codec (a PCMU channel, 8 kHz, for the pcmu
    runs). The leg picks the path; returns the unicast params and that path."""
    if codec == "pcmu":
        fmt = ChannelFormat(8000, 1)
        if fast_path_available():
            params = await leg.start_unicast(fmt, channel_codec="PCMU")  # type: ignore[call-arg]
            return params, str(getattr(leg, "path", None) or "transcode")
    params = await leg.start_unicast(fmt)
    return params, "transcode"


@dataclass
class Live:
    """What one run opened, so that it is closed even when the run fails half-way."""

    legs: list[MediaLeg] = field(default_factory=list)
    bare: list[tuple[RTCPeerConnection, BurstTrack, OnsetDetector]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)

    async def close(self) -> None:
        legs, bare, tasks, children = self.legs, self.bare, self.tasks, self.children
        self.legs, self.bare, self.tasks, self.children = [], [], [], []
        for leg in legs:
            await leg.close()
        for pc, _, _ in bare:
            await pc.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.ask(op="close") for c in children), return_exceptions=True)


async def run_mode(
    children: list[Child],
    per_child: int,
    codec: str,
    mode: str,
    n: int,
    fmt: ChannelFormat,
    warmup: float,
    window: float,
    idle: float,
) -> Run:
    """One mode at one count: set up, warm up, measure a window, close everything."""
    shares = split_calls(n, per_child, len(children))
    live = Live(children=children[: len(shares)])
    try:
        return await _measure(live, shares, codec, mode, n, fmt, warmup, window, idle)
    finally:
        await live.close()


async def _measure(
    live: Live,
    shares: list[int],
    codec: str,
    mode: str,
    n: int,
    fmt: ChannelFormat,
    warmup: float,
    window: float,
    idle: float,
) -> Run:
    loop = asyncio.get_running_loop()
    used = live.children
    replies = await asyncio.gather(
        *(c.ask(op="offer", n=k, codec=codec) for c, k in zip(used, shares, strict=True))
    )
    offers = [o for r in replies for o in r["offers"]]
    legs, bare, tasks = live.legs, live.bare, live.tasks
    unicast: list[list[Any]] = []
    paths: list[str] = []
    fs_codec = "L16"
    allocator = PortAllocator(20000, 29999)
    if mode == "bridged":
        legs.extend(MediaLeg(LegConfig(), allocator) for _ in range(n))
        answers = await asyncio.gather(
            *(leg.handle_offer(o) for leg, o in zip(legs, offers, strict=True))
        )
        for leg in legs:
            p, path = await start_leg_unicast(leg, codec, fmt)
            paths.append(path)
            unicast.append([p.local_ip, p.local_port, p.remote_ip, p.remote_port])
        if paths and all(path == "fast" for path in paths):
            fs_codec = "PCMU"
        elif "fast" in paths:
            raise RuntimeError(f"calls took different paths: {sorted(set(paths))}")
        pcs = [leg.pc for leg in legs]
    else:
        for _ in range(n):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            track = BurstTrack(CODEC_RATE[codec])
            pc.addTrack(track)
            detector = OnsetDetector()

            def on_track(remote: MediaStreamTrack, detector: OnsetDetector = detector) -> None:
                tasks.append(loop.create_task(detect_track(remote, detector)))

            pc.on("track", on_track)
            bare.append((pc, track, detector))

        async def answer(pc: RTCPeerConnection, offer: str) -> str:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            with use_host_addresses(["127.0.0.1"]):
                await pc.setLocalDescription(await pc.createAnswer())
            return pc.localDescription.sdp

        answers = await asyncio.gather(
            *(answer(pc, o) for (pc, _, _), o in zip(bare, offers, strict=True))
        )
        pcs = [pc for pc, _, _ in bare]
    starts = [0]
    for k in shares:
        starts.append(starts[-1] + k)
    rate, channels = (8000, 1) if fs_codec == "PCMU" else (fmt.rate, fmt.channels)
    await asyncio.gather(
        *(
            c.ask(
                op="answer",
                answers=list(answers[a:b]),
                unicast=unicast[a:b],
                fs_codec=fs_codec,
                rate=rate,
                channels=channels,
            )
            for c, a, b in zip(used, starts[:-1], starts[1:], strict=True)
        )
    )
    await wait_connected(pcs)
    await asyncio.sleep(warmup)
    print(
        f"  {codec} {mode} calls={n}: window of {window:g} s opens "
        f"(gateway pid {os.getpid()}, far end pids {[c.proc.pid for c in used]})",
        flush=True,
    )
    gw_lag = LoopLag()
    far0 = await asyncio.gather(*(c.ask(op="collect", since=math.inf) for c in used))
    since = time.monotonic()
    cpu0, ticks0 = cpu_seconds(), thread_ticks()
    await asyncio.sleep(window)
    cpu1, ticks1, until = cpu_seconds(), thread_ticks(), time.monotonic()
    gw_lags = gw_lag.take()
    gw_lag.stop()
    await asyncio.sleep(MATCH_S)  # let the last bursts arrive before collecting
    far1 = await asyncio.gather(*(c.ask(op="collect", since=since) for c in used))
    elapsed = until - since

    def merged(key: str) -> list[list[float]]:
        return [item for reply in far1 for item in reply[key]]

    up, down = Direction(), Direction()
    browser_sent, browser_onsets = merged("browser_sent"), merged("browser_onsets")
    if mode == "bridged":
        fs_sent, fs_onsets = merged("fs_sent"), merged("fs_onsets")
        for i in range(n):
            add_direction(up, browser_sent[i], fs_onsets[i], since, until)
            add_direction(down, fs_sent[i], browser_onsets[i], since, until)
    else:
        for i in range(n):
            add_direction(up, browser_sent[i], bare[i][2].onsets, since, until)
            add_direction(down, bare[i][1].pacer.sent, browser_onsets[i], since, until)

    counters: dict[str, float] = {}
    for leg in legs:
        s = (await leg.stats()).unicast
        if s is None:
            continue
        for key in ("rx_underruns", "tx_underruns", "rx_overflow_drops", "tx_overflow_drops"):
            counters[key] = counters.get(key, 0) + getattr(s, key)

    hz = os.sysconf("SC_CLK_TCK")
    threads = {
        name: (ticks1.get(name, 0) - ticks0.get(name, 0)) / hz / elapsed
        for name in ticks1
        if ticks1.get(name, 0) > ticks0.get(name, 0)
    }
    far_cpu = sum(b["cpu"] - a["cpu"] for a, b in zip(far0, far1, strict=True)) / elapsed
    return Run(
        mode=mode,
        calls=n,
        cpu_per_call=max(0.0, (cpu1 - cpu0) / elapsed - idle) / n,
        far_cpu=far_cpu,
        far_procs=len(used),
        far_lag_p99=max(pct(r["lags"], 99) if r["lags"] else math.inf for r in far1),
        gw_lag=lag_text(gw_lags),
        gw_lag_p99=pct(gw_lags, 99) if gw_lags else math.inf,
        up=up,
        down=down,
        threads=threads,
        counters=counters,
        paths=paths,
    )


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.array(values), q))


def lag_text(lags: Sequence[float]) -> str:
    if not lags:
        return "n/a"
    return f"{pct(lags, 50):.1f}/{pct(lags, 99):.1f}/{max(lags):.0f} ms"


def added_latency(bare: Run, bridged: Run) -> dict[str, float]:
    """Per direction, p50 and p95 of the bridged latencies less bare aiortc's median."""
    out: dict[str, float] = {}
    for key in ("up", "down"):
        base_values = getattr(bare, key).latencies_ms
        base = statistics.median(base_values) if base_values else float("nan")
        added = [x - base for x in getattr(bridged, key).latencies_ms]
        out[f"{key}_p50"] = pct(added, 50)
        out[f"{key}_p95"] = pct(added, 95)
    return out


def summarize(bare: Run, bridged: Run) -> dict[str, Any]:
    """Ratio, calls per core and added latency for one call count; ``why`` lists what makes
    the point invalid (empty: valid)."""
    out: dict[str, Any] = {"why": bare.problems() + bridged.problems()}
    out["ratio"] = bridged.cpu_per_call / bare.cpu_per_call
    out["calls_per_core"] = 1 / bridged.cpu_per_call
    out.update(added_latency(bare, bridged))
    return out


def closing_line(codec: str, path: str, results: dict[int, tuple[Run, Run]]) -> str:
    """The codec's last line. ``calls_per_core`` comes from the largest count whose bridged
    run is valid: it is the gateway's CPU alone, and an event loop's CPU per call falls as
    it carries more calls, so the largest count it carried in real time is the nearest to
    its capacity. ``overhead_ratio`` needs bare aiortc valid at the same count, which on two
    cores holds at fewer calls (bare aiortc costs three to five times as much): it comes
    from the largest count where both runs are valid, and so does the bare median the
    added latency is measured against. ``from_calls`` and ``ratio_from_calls`` name them."""
    counts = sorted(results)
    both = [n for n in counts if not summarize(*results[n])["why"]]
    bridged = [n for n in counts if not results[n][1].problems()]
    n_ratio = both[-1] if both else counts[-1]
    n_cap = bridged[-1] if both else n_ratio  # a count valid in both is valid bridged
    cap = results[n_cap][1]
    ratio = summarize(*results[n_ratio])["ratio"]
    lat = added_latency(results[n_ratio][0], cap)
    tail = f" from_calls={n_cap} ratio_from_calls={n_ratio}"
    if not both:
        tail += " NOT VALID (no valid point)"
    return (
        f"media_cost: codec={codec}{path} calls_per_core={1 / cap.cpu_per_call:.0f} "
        f"overhead_ratio={ratio:.2f} "
        f"added_latency_p95_ms={max(lat['up_p95'], lat['down_p95']):.1f}{tail}"
    )


def print_run(codec: str, r: Run) -> None:
    top = sorted(r.threads.items(), key=lambda kv: -kv[1])[:4]
    threads = ", ".join(f"{name} {share * 100:.0f}%" for name, share in top)
    print(
        f"  {codec:4s} {r.mode:7s} calls={r.calls:3d} "
        f"gateway_cpu_per_call={r.cpu_per_call * 100:5.2f}% "
        f"far_end_cpu={r.far_cpu * 100:5.1f}% in {r.far_procs} procs "
        f"(loop lag p99 {r.far_lag_p99:.1f} ms) "
        f"up p50={pct(r.up.latencies_ms, 50):5.1f} ms "
        f"down p50={pct(r.down.latencies_ms, 50):5.1f} ms "
        f"bursts up {r.up.due - r.up.missing}/{r.up.due} "
        f"down {r.down.due - r.down.missing}/{r.down.due} "
        f"gateway loop lag p50/p99/max={r.gw_lag}"
        + (f" path={'/'.join(sorted(set(r.paths)))} {r.counters}" if r.mode == "bridged" else "")
        + f"\n       gateway threads: {threads}",
        flush=True,
    )


async def run_codec(
    args: argparse.Namespace,
    children: list[Child],
    codec: str,
    counts: list[int],
    fmt: ChannelFormat,
    warmup: float,
    window: float,
    idle: float,
) -> str:
    """All counts for one codec; returns its closing line."""
    if codec == "pcmu" and not fast_path_available():
        print(
            "  pcmu: fast path not available in this build (no ChannelFormat.native / "
            "start_unicast(channel_codec=)): the PCMU calls take the transcoding path"
        )
    results: dict[int, tuple[Run, Run]] = {}
    for n in counts:
        runs: dict[str, Run] = {}
        for mode in ("bare", "bridged"):
            if args.mode in (mode, "both"):
                runs[mode] = await run_mode(
                    children, args.calls_per_child, codec, mode, n, fmt, warmup, window, idle
                )
                print_run(codec, runs[mode])
        if args.mode != "both":
            continue  # one mode only (profiling): no ratio to report
        results[n] = (runs["bare"], runs["bridged"])
    if args.mode != "both":
        return f"media_cost: codec={codec} mode={args.mode} only: no ratio (see the runs above)"
    summaries = {n: summarize(*results[n]) for n in counts}
    for n, sm in summaries.items():
        verdict = "  valid"
        if sm["why"]:
            usable = "" if results[n][1].problems() else " (bridged valid: calls_per_core counts)"
            verdict = f"  NOT VALID{usable}: {'; '.join(sm['why'])}"
        print(
            f"  {codec} calls={n:3d}: overhead_ratio={sm['ratio']:.2f} "
            f"calls_per_core={sm['calls_per_core']:.0f} "
            f"added browser->fs p50/p95={sm['up_p50']:.1f}/{sm['up_p95']:.1f} ms, "
            f"fs->browser p50/p95={sm['down_p50']:.1f}/{sm['down_p95']:.1f} ms" + verdict
        )
    path = ""
    if codec == "pcmu":
        paths = {p for _, bridged in results.values() for p in bridged.paths}
        path = f" path={paths.pop() if len(paths) == 1 else 'mixed'}"
    return closing_line(codec, path, results)


async def parent_main(args: argparse.Namespace) -> None:
    counts = [1, 10, 30]
    warmup, window = (1.0, 3.0) if args.quick else (2.0, 8.0)
    warmup = args.warmup if args.warmup is not None else warmup
    window = args.window if args.window is not None else window
    if args.calls:
        counts = [int(c) for c in args.calls.split(",")]
    codecs = list(CODECS) if args.codec == "both" else [args.codec]
    fmt = ChannelFormat(args.rate, args.channels)
    n_children = len(split_calls(max(counts), args.calls_per_child, args.max_children))
    cpus = sorted(os.sched_getaffinity(0))
    pin_note = "not pinned"
    if args.pin and len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})
        pin_note = f"gateway pinned to CPU {cpus[0]}, far end on CPUs {cpus[1:]}"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            "--event-loop",
            args.event_loop,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 24,  # a reply holds every burst time of the window
        )
        for _ in range(n_children)
    ]
    if args.pin and len(cpus) >= 2:
        for proc in procs:
            os.sched_setaffinity(proc.pid, set(cpus[1:]))
    children = [Child(proc) for proc in procs]
    print(
        f"media_cost: codecs {codecs}, Opus channel {fmt.rate} Hz x{fmt.channels}, PCMU "
        "channel 8000 Hz, "
        f"counts {counts}, warm-up {warmup} s, window {window} s, far end in up to "
        f"{n_children} processes of {args.calls_per_child} calls, cores {os.cpu_count()}, "
        f"event loop {args.event_loop}, "
        f"{pin_note}, a busy loop gets {cpu_probe():.2f} of a core now, load average "
        f"{os.getloadavg()[0]:.2f}",
        flush=True,
    )
    lines = []
    try:
        idle = await idle_cpu(window)
        print(
            f"  gateway process with no call: {idle * 100:.2f}% of a core (harness: loop-lag "
            "probe, pipes); subtracted from both modes before dividing by the calls",
            flush=True,
        )
        for codec in codecs:
            lines.append(await run_codec(args, children, codec, counts, fmt, warmup, window, idle))
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in procs:
            await proc.wait()
    for line in lines:
        print(line)


async def idle_cpu(window: float) -> float:
    """Share of a core the gateway process spends with no call (its loop-lag probe)."""
    lag = LoopLag()
    await asyncio.sleep(0.5)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    await asyncio.sleep(window)
    cpu1, t1 = cpu_seconds(), time.monotonic()
    lag.stop()
    return (cpu1 - cpu0) / (t1 - t0)


def cpu_probe(seconds: float = 0.3) -> float:
    """Share of one core a busy loop gets right now (other tenants show up here)."""
    t0, c0 = time.monotonic(), time.process_time()
    while time.monotonic() - t0 < seconds:
        pass
    return (time.process_time() - c0) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows (3 s)")
    parser.add_argument("--calls", help="comma-separated call counts, e.g. 1,10,30")
    parser.add_argument(
        "--codec",
        choices=(*CODECS, "both"),
        default="both",
        help="the browsers' codec (default: both, one after the other)",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=8000,
        choices=(8000, 16000, 48000),
        help="the Opus calls' channel rate, L16 (default 8000; PCMU channels are 8000)",
    )
    parser.add_argument(
        "--channels", type=int, default=1, choices=(1, 2), help="the Opus calls' channels"
    )
    parser.add_argument(
        "--calls-per-child", type=int, default=5, help="far-end calls per process (default 5)"
    )
    parser.add_argument(
        "--max-children", type=int, default=8, help="most far-end processes (default 8)"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the gateway process to the first allowed CPU and the far end to the others",
    )
    parser.add_argument("--warmup", type=float, help="seconds before each window")
    parser.add_argument("--window", type=float, help="seconds measured per run")
    parser.add_argument(
        "--mode",
        choices=("bare", "bridged", "both"),
        default="both",
        help="run one mode only, e.g. to profile the gateway with a long --window",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=DEFAULT_EVENT_LOOP,
        help="the event loop of the gateway (both modes) and of the far end (default uvloop)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.calls_per_child < 1 or args.max_children < 1:
        parser.error("--calls-per-child and --max-children must be at least 1")
    if args.calls and not re.fullmatch(r"[1-9]\d*(,[1-9]\d*)*", args.calls):
        parser.error(f"--calls wants positive counts separated by commas, got {args.calls!r}")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        with asyncio.Runner(loop_factory=lambda: new_event_loop(args.event_loop)) as runner:
            runner.run(child_main())
        return
    loopback_namespace.enter("media_cost")
    with asyncio.Runner(loop_factory=lambda: new_event_loop(args.event_loop)) as runner:
        runner.run(parent_main(args))


if __name__ == "__main__":
    main()
