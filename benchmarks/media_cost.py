"""CPU and latency cost of the media leg, against bare aiortc, measured in the same run.

Two processes, so the gateway's CPU is measured alone:

* the **gateway process** (this one) holds, per call, either a ``MediaLeg`` (bridged mode)
  or a plain aiortc ``RTCPeerConnection`` that sends a track and reads the browser's track
  (bare mode: the cost of aiortc alone);
* a **far-end process** (``--child``) holds the "browser" aiortc peers and, in bridged mode,
  one fake FreeSWITCH unicast peer per call (8 kHz mono L16 by default, 20 ms paced).

For 1, 10 and 30 concurrent calls, each mode runs for a measurement window after a
warm-up; the gateway process's CPU time (all threads: aiortc encodes in an executor) over
the window gives CPU per call. ``overhead_ratio`` = bridged CPU per call / bare CPU per call
(target <= 1.25); ``calls_per_core`` = 1 / bridged CPU per call (target >= 30). Both come
from the largest count whose audio was actually delivered (>= 80 % of the bursts, both
modes): on a starved machine work is skipped, and CPU per call would look cheaper.

Latency: both ends send a 100 ms 1 kHz burst every 500 ms, starting on a frame boundary;
the receiving end finds the onset sample. One-way latency = arrival of the frame holding
the onset + onset offset - emission of the burst's first frame (CLOCK_MONOTONIC is shared by
both processes). Added latency = bridged sample - median bare sample of the same
direction (browser->FreeSWITCH vs browser->aiortc peer, FreeSWITCH->browser vs aiortc
peer->browser); ``added_latency_p95_ms`` is the worse direction's p95 at the largest count
that kept real time (bare aiortc's event loop lag p99 <= 20 ms; target < 40). Every count's
numbers are printed, with the reason when a count is not used.

Run it in a loopback-only network namespace (it re-executes itself under ``unshare -n``
when the host has other interfaces; run as root)::

    python3 benchmarks/media_cost.py --quick        # under a minute
    python3 benchmarks/media_cost.py                # 1, 10, 30 calls, 8 s windows
    unshare -n sh -c 'ip link set lo up && python3 benchmarks/media_cost.py'  # explicit

The last line is ``media_cost: calls_per_core=.. overhead_ratio=.. added_latency_p95_ms=..``.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import math
import os
import resource
import statistics
import sys
import time
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
from aiortc.mediastreams import MediaStreamError  # noqa: E402

from esl_bridge.media.leg import LegConfig, MediaLeg, use_host_addresses  # noqa: E402
from esl_bridge.media.unicast import FRAME_S, ChannelFormat, PortAllocator  # noqa: E402

BURST_EVERY = 25  # frames: one burst every 500 ms
BURST_LEN = 5  # frames: 100 ms of tone
AMPLITUDE = 8000
THRESHOLD = 2500
MAX_LOOP_LAG_MS = 20.0  # beyond this (p99) the process no longer keeps real time


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


class BurstTrack(MediaStreamTrack):
    """A microphone playing the burst signal (48 kHz s16), absolute 20 ms pacing. The
    browsers send stereo; the bare gateway-side peer sends mono, like the MediaLeg does."""

    kind = "audio"

    def __init__(self, layout: str = "stereo") -> None:
        super().__init__()
        self.layout = layout
        self.channels = 2 if layout == "stereo" else 1
        self.sent: list[float] = []
        self.n = 0
        self.t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.t0 is None:
            self.t0 = time.monotonic()
        delay = self.t0 + self.n * FRAME_S - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        data, starts = burst_frame(self.n, 48000, self.channels)
        frame = av.AudioFrame(format="s16", layout=self.layout, samples=960)
        frame.planes[0].update(data.tobytes())
        frame.sample_rate = 48000
        frame.time_base = fractions.Fraction(1, 48000)
        frame.pts = self.n * 960
        self.n += 1
        if starts:
            self.sent.append(time.monotonic())
        return frame


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
    """One call's FreeSWITCH unicast side: bursts out (paced), onsets in."""

    def __init__(self, fmt: ChannelFormat, target: tuple[str, int]) -> None:
        self.fmt = fmt
        self.target = target
        self.sent: list[float] = []
        self.detector = OnsetDetector()
        self.transport: asyncio.DatagramTransport | None = None
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.task = asyncio.get_running_loop().create_task(self._play())

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        samples = np.frombuffer(data, dtype="<i2").reshape(-1, self.fmt.channels)[:, 0]
        self.detector.feed(samples, self.fmt.rate, time.monotonic())

    async def _play(self) -> None:
        t0 = time.monotonic()
        n = 0
        while self.transport is not None:
            delay = t0 + n * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            data, starts = burst_frame(n, self.fmt.rate, self.fmt.channels)
            self.transport.sendto(data.astype("<i2").tobytes(), self.target)
            if starts:
                self.sent.append(time.monotonic())
            n += 1

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.transport is not None:
            self.transport.close()
            self.transport = None


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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

    def stop(self) -> tuple[str, float]:
        self.task.cancel()
        if not self.lags:
            return "n/a", float("inf")
        text = f"{pct(self.lags, 50):.1f}/{pct(self.lags, 99):.1f}/{max(self.lags):.0f} ms"
        return text, pct(self.lags, 99)


async def wait_connected(pcs: list[RTCPeerConnection], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while any(pc.connectionState != "connected" for pc in pcs):
        if time.monotonic() > deadline:
            states = [pc.connectionState for pc in pcs]
            raise RuntimeError(f"peer connections did not connect: {states}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- far end


class FarEnd:
    """The child process: browsers and fake FreeSWITCHes, driven by JSON lines."""

    def __init__(self) -> None:
        self.browsers: list[tuple[RTCPeerConnection, BurstTrack, OnsetDetector]] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.fakes: list[FakeFreeSwitch] = []

    async def offer(self, n: int) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            track = BurstTrack()
            pc.addTrack(track)
            detector = OnsetDetector()

            def on_track(remote: MediaStreamTrack, detector: OnsetDetector = detector) -> None:
                self.tasks.append(loop.create_task(detect_track(remote, detector)))

            pc.on("track", on_track)
            self.browsers.append((pc, track, detector))

        async def make_offer(pc: RTCPeerConnection) -> str:
            with use_host_addresses(["127.0.0.1"]):
                await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription.sdp

        offers = await asyncio.gather(*(make_offer(pc) for pc, _, _ in self.browsers))
        return {"offers": list(offers)}

    async def answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        for (pc, _, _), sdp in zip(self.browsers, msg["answers"], strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        loop = asyncio.get_running_loop()
        fmt = ChannelFormat(msg["rate"], msg["channels"])
        for fs_ip, fs_port, our_ip, our_port in msg.get("unicast") or []:
            _, fake = await loop.create_datagram_endpoint(
                lambda our_ip=our_ip, our_port=our_port: FakeFreeSwitch(fmt, (our_ip, our_port)),
                local_addr=(fs_ip, fs_port),
            )
            self.fakes.append(fake)
        await wait_connected([pc for pc, _, _ in self.browsers])
        return {"ok": True}

    def collect(self) -> dict[str, Any]:
        return {
            "browser_sent": [t.sent for _, t, _ in self.browsers],
            "browser_onsets": [d.onsets for _, _, d in self.browsers],
            "fs_sent": [f.sent for f in self.fakes],
            "fs_onsets": [f.detector.onsets for f in self.fakes],
            "cpu": cpu_seconds(),
        }

    async def close(self) -> dict[str, Any]:
        for fake in self.fakes:
            fake.close()
        await asyncio.gather(*(pc.close() for pc, _, _ in self.browsers))
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.browsers, self.tasks, self.fakes = [], [], []
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
            reply = await far.offer(msg["n"])
        elif op == "answer":
            reply = await far.answer(msg)
        elif op == "collect":
            reply = far.collect()
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
            raise RuntimeError("far-end process died")
        return json.loads(line)  # type: ignore[no-any-return]


def latencies(sent: list[float], onsets: list[float], since: float) -> list[float]:
    """Match each onset to the last burst emitted before it; ms."""
    out = []
    sent = sorted(sent)
    for onset in onsets:
        if onset < since:
            continue
        before = [s for s in sent if s <= onset]
        if before and onset - before[-1] < BURST_EVERY * FRAME_S * 0.8:
            out.append((onset - before[-1]) * 1000)
    return out


async def run_mode(
    child: Child, mode: str, n: int, fmt: ChannelFormat, warmup: float, window: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    offers = (await child.ask(op="offer", n=n))["offers"]
    legs: list[MediaLeg] = []
    bare: list[tuple[RTCPeerConnection, BurstTrack, OnsetDetector]] = []
    tasks: list[asyncio.Task[None]] = []
    unicast: list[list[Any]] = []
    allocator = PortAllocator(20000, 29999)
    if mode == "bridged":
        for _ in range(n):
            legs.append(MediaLeg(LegConfig(), allocator))
        answers = await asyncio.gather(
            *(leg.handle_offer(o) for leg, o in zip(legs, offers, strict=True))
        )
        for leg in legs:
            p = await leg.start_unicast(fmt)
            unicast.append([p.local_ip, p.local_port, p.remote_ip, p.remote_port])
        pcs = [leg.pc for leg in legs]
    else:
        for _ in range(n):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            track = BurstTrack("mono")
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
    await child.ask(
        op="answer",
        answers=list(answers),
        unicast=unicast,
        rate=fmt.rate,
        channels=fmt.channels,
    )
    await wait_connected(pcs)
    await asyncio.sleep(warmup)
    since = time.monotonic()
    lag = LoopLag()
    cpu0, wall0 = cpu_seconds(), time.monotonic()
    child_cpu0 = (await child.ask(op="collect"))["cpu"]
    await asyncio.sleep(window)
    cpu1, wall1 = cpu_seconds(), time.monotonic()
    far = await child.ask(op="collect")
    until = time.monotonic()
    loop_lag, loop_lag_p99 = lag.stop()

    up: list[float] = []
    down: list[float] = []
    counters: dict[str, float] = {}
    for i in range(n):
        if mode == "bridged":
            up += latencies(far["browser_sent"][i], far["fs_onsets"][i], since)
            down += latencies(far["fs_sent"][i], far["browser_onsets"][i], since)
        else:
            up += latencies(far["browser_sent"][i], bare[i][2].onsets, since)
            down += latencies(bare[i][1].sent, far["browser_onsets"][i], since)
    up = [x for x in up if x <= (until - since) * 1000]
    for leg in legs:
        s = (await leg.stats()).unicast
        assert s is not None
        for key in (
            "rx_underruns",
            "tx_underruns",
            "rx_late_ticks",
            "tx_late_ticks",
            "rx_trimmed",
            "tx_trimmed",
            "rx_overflow_drops",
            "tx_overflow_drops",
        ):
            counters[key] = counters.get(key, 0) + getattr(s, key)
        counters["rx_jitter_ms_max"] = max(counters.get("rx_jitter_ms_max", 0), s.rx_jitter_ms)

    for leg in legs:
        await leg.close()
    for pc, _, _ in bare:
        await pc.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await child.ask(op="close")
    cpu_frac = (cpu1 - cpu0) / (wall1 - wall0)
    return {
        "mode": mode,
        "calls": n,
        "cpu_per_call": cpu_frac / n,
        "child_cpu_frac": (far["cpu"] - child_cpu0) / (wall1 - wall0),
        "up_ms": up,
        "down_ms": down,
        "counters": counters,
        "loop_lag": loop_lag,
        "loop_lag_p99": loop_lag_p99,
    }


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.array(values), q))


async def parent_main(args: argparse.Namespace) -> None:
    counts = [1, 10] if args.quick else [1, 10, 30]
    warmup, window = (1.0, 3.0) if args.quick else (2.0, 8.0)
    if args.calls:
        counts = [int(c) for c in args.calls.split(",")]
    fmt = ChannelFormat(args.rate, args.channels)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    child = Child(proc)
    print(
        f"media_cost: channel {fmt.rate} Hz x{fmt.channels}, browser codec opus, "
        f"counts {counts}, warm-up {warmup} s, window {window} s, cores {os.cpu_count()}, "
        f"a busy loop gets {cpu_probe():.2f} of a core now"
    )
    results: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        for n in counts:
            for mode in ("bare", "bridged"):
                r = await run_mode(child, mode, n, fmt, warmup, window)
                results[(mode, n)] = r
                print(
                    f"  {mode:8s} calls={n:3d} cpu_per_call={r['cpu_per_call'] * 100:6.2f}% "
                    f"far_end_cpu={r['child_cpu_frac'] * 100:6.1f}% "
                    f"up p50={pct(r['up_ms'], 50):6.1f} ms down p50={pct(r['down_ms'], 50):6.1f} ms"
                    f" samples={len(r['up_ms'])}/{len(r['down_ms'])}"
                    f" loop_lag p50/p99/max={r['loop_lag']}"
                    + (f" {r['counters']}" if mode == "bridged" else ""),
                    flush=True,
                )
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        await proc.wait()

    summaries = {
        n: summarize(results[("bare", n)], results[("bridged", n)], window) for n in counts
    }
    for n, sm in summaries.items():
        print(
            f"  calls={n:3d}: overhead_ratio={sm['ratio']:.2f} "
            f"calls_per_core={sm['calls_per_core']:.0f} "
            f"added browser->fs p50/p95={sm['up_p50']:.1f}/{sm['up_p95']:.1f} ms, "
            f"fs->browser p50/p95={sm['down_p50']:.1f}/{sm['down_p95']:.1f} ms"
            + (
                f"  NOT VALID for {'latency' if sm['delivered'] else 'CPU or latency'}: {sm['why']}"
                if sm["why"]
                else ""
            )
        )
    # CPU: the largest count whose audio was delivered (the work was done, so CPU time is
    # the cost of it). Latency: the largest count at which the machine kept real time.
    delivered = [n for n in counts if summaries[n]["delivered"]]
    realtime = [n for n in delivered if summaries[n]["realtime"]]
    n_cpu = delivered[-1] if delivered else counts[0]
    n_lat = realtime[-1] if realtime else counts[0]
    print(
        f"  reported: CPU from calls={n_cpu}, latency from calls={n_lat}"
        + ("" if realtime else " (no count kept real time: this machine is too loaded)")
    )
    cpu, lat = summaries[n_cpu], summaries[n_lat]
    print(
        f"media_cost: calls_per_core={cpu['calls_per_core']:.0f} "
        f"overhead_ratio={cpu['ratio']:.2f} "
        f"added_latency_p95_ms={max(lat['up_p95'], lat['down_p95']):.1f}"
    )


def summarize(bare: dict[str, Any], bridged: dict[str, Any], window: float) -> dict[str, Any]:
    """Ratios and added latency for one call count, and whether the run is meaningful:
    when the machine cannot keep up (bursts missing in either mode), CPU per call is
    understated (work was skipped, not done) and latency is the machine's, not ours."""
    n = bare["calls"]
    expected = n * window / (BURST_EVERY * FRAME_S)
    out: dict[str, Any] = {"delivered": True, "realtime": True, "why": ""}
    for name, r in (("bare", bare), ("bridged", bridged)):
        got = min(len(r["up_ms"]), len(r["down_ms"]))
        if got < 0.8 * expected:
            out["delivered"] = out["realtime"] = False
            out["why"] += f"{name} delivered {got}/{expected:.0f} bursts; "
    if bare["loop_lag_p99"] > MAX_LOOP_LAG_MS:
        out["realtime"] = False
        out["why"] += f"bare aiortc alone saw {bare['loop_lag_p99']:.0f} ms loop lag (p99); "
    out["ratio"] = bridged["cpu_per_call"] / bare["cpu_per_call"]
    out["calls_per_core"] = 1 / bridged["cpu_per_call"]
    for direction, key in (("up_ms", "up"), ("down_ms", "down")):
        base = statistics.median(bare[direction]) if bare[direction] else float("nan")
        added = [x - base for x in bridged[direction]]
        out[f"{key}_p50"] = pct(added, 50)
        out[f"{key}_p95"] = pct(added, 95)
    return out


def cpu_probe(seconds: float = 0.3) -> float:
    """Share of one core a busy loop gets right now (other tenants show up here)."""
    t0, c0 = time.monotonic(), time.process_time()
    while time.monotonic() - t0 < seconds:
        pass
    return (time.process_time() - c0) / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 10 calls, short windows")
    parser.add_argument("--calls", help="comma-separated call counts, e.g. 1,10,30")
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000, 48000))
    parser.add_argument("--channels", type=int, default=1, choices=(1, 2))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    if args.child:
        asyncio.run(child_main())
        return
    loopback_namespace.enter("media_cost")
    asyncio.run(parent_main(args))


if __name__ == "__main__":
    main()
