"""Unicast media: channel format, port pairs, jitter buffer and pacing (fake clock), and the
UDP endpoint on loopback against a tiny fake FreeSWITCH."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
import random
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from support.ports_and_waits import free_udp_range

from esl_bridge.media.unicast import (
    FRAME_S,
    ChannelFormat,
    JitterSettings,
    MediaCounters,
    NoFreePorts,
    PortAllocator,
    PortPair,
    ReceiveBuffer,
    SendPacer,
    UnicastEndpoint,
    UnicastParams,
    bind_probe,
    channel_codec_name,
    is_cng_frame,
    is_local_address,
)

FIXTURES = Path(__file__).parent / "fixtures" / "freeswitch"
FMT8 = ChannelFormat(8000, 1)


def tagged(fmt: ChannelFormat, n: int) -> bytes:
    """A frame carrying its sequence number (never all 0xFF, never all zero)."""
    return struct.pack("<ii", n, 0x1234) + bytes(fmt.frame_bytes - 8)


def tag_of(frame: bytes) -> int | None:
    n, marker = struct.unpack_from("<ii", frame)
    return n if marker == 0x1234 else None


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# --------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("headers", "rate", "channels", "frame_bytes"),
    [
        ({"variable_read_rate": "8000", "variable_rtp_use_codec_channels": "1"}, 8000, 1, 320),
        # G.722: FreeSWITCH's L16 is 16 kHz while rtp_use_codec_rate says 8000.
        ({"variable_read_rate": "16000", "variable_rtp_use_codec_rate": "8000"}, 16000, 1, 640),
        ({"variable_read_rate": "48000", "variable_rtp_use_codec_channels": "1"}, 48000, 1, 1920),
        ({"variable_read_rate": "48000", "variable_rtp_use_codec_channels": "2"}, 48000, 2, 3840),
        ({"Channel-Read-Codec-Rate": "8000"}, 8000, 1, 320),
    ],
)
def test_channel_format_from_channel_variables(
    headers: dict[str, str], rate: int, channels: int, frame_bytes: int
) -> None:
    fmt = ChannelFormat.from_channel(headers)
    assert (fmt.rate, fmt.channels, fmt.frame_bytes) == (rate, channels, frame_bytes)


def test_channel_format_rejects_unanswered_channel_and_odd_formats() -> None:
    with pytest.raises(ValueError, match="read rate"):
        ChannelFormat.from_channel({"variable_ep_codec_string": "PCMU@8000h@20i@64000b"})
    with pytest.raises(ValueError):
        ChannelFormat(44100, 1)
    with pytest.raises(ValueError):
        ChannelFormat(8000, 3)


def test_recorded_datagram_sizes_match_the_formats() -> None:
    for name, fmt in [
        ("unicast_main_call_fs_to_app_first3s_pcmu_8k_mono.l16", ChannelFormat(8000, 1)),
        ("unicast_g722_16k_mono_first1s.l16", ChannelFormat(16000, 1)),
        ("unicast_opus_48k_mono_first0.5s.l16", ChannelFormat(48000, 1)),
        ("unicast_opus_48k_stereo_interleaved_first0.5s.l16", ChannelFormat(48000, 2)),
    ]:
        assert (FIXTURES / name).stat().st_size % fmt.frame_bytes == 0, name


# --------------------------------------------------------------------------- ports


def test_port_allocator_pairs_unique_exhaust_release() -> None:
    alloc = PortAllocator(30001, 30010, quarantine=0.0)  # odd start: rounded up to even
    pairs = [alloc.allocate(0.0) for _ in range(alloc.capacity)]
    assert sorted((p.fs_port, p.local_port) for p in pairs) == [
        (30002, 30003),
        (30004, 30005),
        (30006, 30007),
        (30008, 30009),
    ]
    with pytest.raises(NoFreePorts):
        alloc.allocate(0.0)
    alloc.release(pairs[1], 0.0)
    assert alloc.allocate(0.0) == pairs[1]
    assert alloc.in_use == alloc.capacity


def test_port_allocator_quarantines_a_freed_pair() -> None:
    """A pair whose call ended is not handed out again for ``quarantine`` seconds: the
    switch's side of it may still be bound (a leg that outlived its call)."""
    alloc = PortAllocator(30000, 30003, quarantine=60.0, rng=random.Random(1))
    first = alloc.allocate(100.0)
    second = alloc.allocate(100.0)
    alloc.release(first, 100.0)
    assert alloc.in_use == 1 and alloc.quarantined(100.0) == 1
    with pytest.raises(NoFreePorts, match="quarantine"):
        alloc.allocate(159.9)  # the only free pair is still in quarantine
    assert alloc.allocate(160.0) == first
    alloc.release(second, 160.0)
    alloc.release(first, 161.0)
    assert alloc.quarantined(220.5) == 1 and alloc.quarantined(221.0) == 0


def test_port_allocator_starts_anywhere_in_the_range() -> None:
    """A restarted gateway must not start at the bottom of the range again (where the
    leftovers of the killed one sit): the choice is random."""
    firsts = {
        PortAllocator(30000, 30999, rng=random.Random(seed)).allocate(0.0) for seed in range(20)
    }
    assert len(firsts) > 10
    assert all(30000 <= p.fs_port <= 30998 and p.local_port == p.fs_port + 1 for p in firsts)


class FakeProbe:
    """Ports some other process holds; the probe says no for a pair touching one."""

    def __init__(self, busy: set[int]) -> None:
        self.busy = busy
        self.probed: list[PortPair] = []

    def __call__(self, pair: PortPair) -> bool:
        self.probed.append(pair)
        return pair.fs_port not in self.busy and pair.local_port not in self.busy


def test_port_allocator_never_hands_out_a_pair_the_probe_finds_bound() -> None:
    # Pairs (30000, 30001) .. (30014, 30015); leftovers hold the switch side of all but
    # one and our side of another.
    busy = {30000, 30002, 30004, 30006, 30008, 30010, 30013}
    probe = FakeProbe(busy)
    alloc = PortAllocator(30000, 30015, quarantine=30.0, probe=probe, rng=random.Random(7))
    assert alloc.allocate(0.0) == PortPair(30014, 30015)
    # Each busy pair was probed once and is now in quarantine, not probed again.
    assert len(probe.probed) == len(set(probe.probed))
    with pytest.raises(NoFreePorts):
        alloc.allocate(1.0)
    assert alloc.in_use == 1
    probe.busy = set()  # the leftovers are gone; after the quarantine the pairs are back
    assert alloc.allocate(40.0) != PortPair(30014, 30015)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 10), st.floats(0, 5)), max_size=60),
    st.sets(st.integers(31000, 31011)),
)
def test_port_allocator_never_hands_out_a_pair_in_use_or_quarantined_or_bound(
    ops: list[tuple[bool, int, float]], busy: set[int]
) -> None:
    alloc = PortAllocator(31000, 31011, quarantine=2.0, probe=FakeProbe(busy), rng=random.Random(3))
    held: list[PortPair] = []
    freed: dict[PortPair, float] = {}
    now = 0.0
    for allocate, index, step in ops:
        now += step
        if allocate:
            try:
                pair = alloc.allocate(now)
            except NoFreePorts:
                continue
            assert pair not in held
            assert now >= freed.get(pair, -1e9) + 2.0
            assert pair.fs_port not in busy and pair.local_port not in busy
            held.append(pair)
        elif held:
            pair = held.pop(index % len(held))
            alloc.release(pair, now)
            freed[pair] = now
        assert alloc.in_use == len(held)


def test_bind_probe_sees_a_port_held_on_either_side() -> None:
    base, _ = free_udp_range(4)
    probe = bind_probe("127.0.0.1", "127.0.0.1")
    assert probe is not None
    assert probe(PortPair(base, base + 1))
    for port in (base, base + 1):
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        holder.bind(("127.0.0.1", port))
        try:
            assert not probe(PortPair(base, base + 1))
        finally:
            holder.close()
    assert probe(PortPair(base, base + 1))  # the probe itself keeps nothing bound


def test_the_probe_applies_only_when_the_switch_address_is_on_this_host() -> None:
    assert is_local_address("127.0.0.1") and is_local_address("127.0.0.53")
    assert not is_local_address("192.0.2.7")  # TEST-NET-1: never an address of this host
    assert not is_local_address("not an address")
    assert bind_probe("127.0.0.1", "192.0.2.7") is None


# --------------------------------------------------------------------------- receive buffer


def test_cng_frames_are_silence_and_bad_sizes_are_dropped() -> None:
    buf = ReceiveBuffer(FMT8, created_at=0.0)
    buf.push(b"\xff" * 320, 0.0)
    buf.push(b"\x01" * 100, 0.001)
    buf.push(tagged(FMT8, 7), 0.020)
    first = buf.pop(buf.next_deadline())
    assert first == bytes(320) and not is_cng_frame(first)
    assert tag_of(buf.pop(buf.next_deadline())) == 7
    assert (buf.cng_frames, buf.size_mismatches, buf.packets) == (1, 1, 3)


def simulate_receive(
    arrivals: list[tuple[float, bytes]],
    duration: float,
    buf: ReceiveBuffer,
    stall: tuple[float, float] | None = None,
) -> list[tuple[float, bytes, int]]:
    """Event simulation with a fake clock, shaped like the playout track: sleep until the
    deadline, re-read it on waking (the first datagram re-anchors it), pop when due.
    Returns (tick time, frame, queue depth after the tick)."""
    out: list[tuple[float, bytes, int]] = []
    arrivals = sorted(arrivals, key=lambda a: a[0])
    i = 0
    now = 0.0
    while True:
        wake = max(buf.next_deadline(), now)
        if stall is not None and stall[0] <= wake < stall[1]:
            wake = stall[1]  # the playout side (aiortc's sender) was stuck
        if wake > duration:
            return out
        while i < len(arrivals) and arrivals[i][0] <= wake:
            buf.push(arrivals[i][1], arrivals[i][0])
            i += 1
        now = wake
        if buf.next_deadline() > now:
            continue
        out.append((now, buf.pop(now), len(buf.queue)))


def simulate_send(
    pushes: list[tuple[float, bytes]], start: float, duration: float, pacer: SendPacer
) -> list[tuple[float, bytes]]:
    """The paced sender with a fake clock; returns (send time, frame)."""
    out: list[tuple[float, bytes]] = []
    pushes = sorted(pushes, key=lambda a: a[0])
    pacer.start(start)
    i = 0
    while True:
        tick = pacer.next_deadline()
        assert tick is not None
        if tick > duration:
            return out
        while i < len(pushes) and pushes[i][0] <= tick:
            pacer.push(pushes[i][1])
            i += 1
        out.extend((tick, f) for f in pacer.poll(tick))


def assert_exact_schedule(times: list[float], first: float) -> None:
    """Tick k at first + k * 20 ms, to float precision: no drift, no gap, no extra tick."""
    expected = first + np.arange(len(times)) * FRAME_S
    assert np.max(np.abs(np.array(times) - expected)) < 1e-9


def test_ten_minute_call_no_drift_same_delay_at_end() -> None:
    """Time-compressed 10-minute call, both directions, FreeSWITCH's +-5 ms jitter."""
    rng = random.Random(5)
    frames = int(600 / FRAME_S)
    # FreeSWITCH -> us: frame n sent at 20 ms * n, arriving 3 ms later +-5 ms.
    fs_arrivals = [
        (0.003 + n * FRAME_S + rng.uniform(-0.005, 0.005), tagged(FMT8, n)) for n in range(frames)
    ]
    buf = ReceiveBuffer(FMT8, created_at=0.0)
    played = simulate_receive(fs_arrivals, 600.0, buf)
    # After the first arrival, the playout schedule is exact and every tick yields a frame.
    start = next(i for i, (_, f, _) in enumerate(played) if tag_of(f) is not None)
    times = [t for t, _, _ in played[start:]]
    # The first frame may go out up to one tick late (the re-anchored deadline had passed
    # while the track slept); from then on the schedule is exact.
    assert times[0] <= fs_arrivals[0][0] + 0.010 + FRAME_S
    assert_exact_schedule(times[1:], times[1])
    tags = [tag_of(f) for _, f, _ in played[start:]]
    assert tags == list(range(len(tags)))  # no gap, no repeat, no reorder
    delays = [t - n * FRAME_S for (t, _, _), n in zip(played[start + 1 :], tags[1:], strict=True)]
    assert abs(delays[-1] - delays[0]) < 1e-9  # same delay at the end as at the start
    assert delays[0] == pytest.approx(0.003 + 0.010, abs=0.005 + 1e-9)  # transit + margin
    assert buf.queue.underruns == 0 and buf.queue.trimmed == 0 and buf.late_ticks == 0
    assert buf.jitter_s * 1000 == pytest.approx(3.3, abs=1.0)  # uniform +-5 ms -> ~3.3 ms

    # Browser -> FreeSWITCH: aiortc hands frames over with +-3 ms jitter; we pace.
    pushes = [
        (0.011 + m * FRAME_S + rng.uniform(-0.003, 0.003), tagged(FMT8, m)) for m in range(frames)
    ]
    pacer = SendPacer(FMT8)
    sent = simulate_send(pushes, start=fs_arrivals[0][0], duration=600.0, pacer=pacer)
    assert_exact_schedule([t for t, _ in sent], fs_arrivals[0][0])
    assert len(sent) == int((600.0 - fs_arrivals[0][0]) / FRAME_S) + 1
    sent_tags = [(t, tag_of(f)) for t, f in sent if tag_of(f) is not None]
    assert [n for _, n in sent_tags] == list(range(len(sent_tags)))
    tx_delays = [t - (0.011 + n * FRAME_S) for t, n in sent_tags]
    assert abs(tx_delays[-1] - tx_delays[0]) < 1e-9
    assert pacer.queue.underruns == 0 and pacer.queue.trimmed == 0


@pytest.mark.parametrize("ppm", [-100, 100])
def test_clock_skew_never_grows_the_delay(ppm: int) -> None:
    """FreeSWITCH's clock 100 ppm off ours for 10 minutes (60 ms, 3 frames of skew): the
    buffer conceals or trims; the delay stays within one frame of where it began."""
    period = FRAME_S * (1 + ppm * 1e-6)
    frames = int(600 / period)
    arrivals = [(0.004 + n * period, tagged(FMT8, n)) for n in range(frames)]
    buf = ReceiveBuffer(FMT8, created_at=0.0)
    played = simulate_receive(arrivals, 600.0, buf)
    real = [(t, tag_of(f)) for t, f, _ in played if tag_of(f) is not None]
    delays = [t - (0.004 + n * period) for t, n in real]
    assert max(delays) - min(delays) <= FRAME_S + 1e-9
    assert max(d for _, _, d in played) <= buf.settings.max_depth
    tags = [n for _, n in real]
    assert tags == sorted(set(tags))  # never reordered or repeated
    if ppm > 0:  # FreeSWITCH slower: we run dry now and then, and fill with silence
        assert buf.queue.underruns >= 2 and buf.queue.trimmed <= 1
    else:  # FreeSWITCH faster: surplus frames are trimmed
        assert buf.queue.trimmed >= 2 and buf.queue.underruns <= 1


def test_loss_jitter_and_bursts_keep_the_output_continuous() -> None:
    rng = random.Random(11)
    frames = 3000  # one minute
    arrivals: list[tuple[float, bytes]] = []
    lost = set(rng.sample(range(frames), 150))  # 5 % loss
    for n in range(frames):
        if n in lost:
            continue
        t = 0.002 + n * FRAME_S + rng.uniform(-0.005, 0.005)
        if n % 250 in (1, 2, 3):  # every 5 s, three frames held back and sent in one burst
            t = 0.002 + (n - n % 250 + 3) * FRAME_S + 0.0001 * (n % 250)
        arrivals.append((t, tagged(FMT8, n)))
    buf = ReceiveBuffer(FMT8, created_at=0.0)
    played = simulate_receive(arrivals, 60.0, buf)
    start = next(i for i, (_, f, _) in enumerate(played) if tag_of(f) is not None)
    out = played[start + 1 :]
    assert_exact_schedule([t for t, _, _ in out], out[0][0])  # a frame at every tick
    assert all(len(f) == FMT8.frame_bytes for _, f, _ in out)
    tags = [tag_of(f) for _, f, _ in out if tag_of(f) is not None]
    assert tags == sorted(set(tags))
    silent = sum(1 for _, f, _ in out if f == FMT8.silence())
    assert silent == buf.queue.underruns >= len(lost) * 0.9
    assert max(d for _, _, d in played) <= buf.settings.max_depth
    # Delay after a minute of abuse is back within one frame of where it started.
    first_t, first_f, _ = next(x for x in out if tag_of(x[1]) is not None)
    d_start = first_t - (0.002 + (tag_of(first_f) or 0) * FRAME_S)
    last_t, last_f, _ = next(x for x in reversed(out) if tag_of(x[1]) is not None)
    d_end = last_t - (0.002 + (tag_of(last_f) or 0) * FRAME_S)
    assert abs(d_end - d_start) <= FRAME_S + 0.005 + 1e-9


def test_sender_fills_silence_before_and_during_browser_gaps_and_skips_stalls() -> None:
    pacer = SendPacer(FMT8, JitterSettings(max_catchup=3))
    assert pacer.poll(1.0) == []  # not started: FreeSWITCH has not spoken yet
    pacer.start(1.0)
    assert pacer.poll(1.0) == [FMT8.silence()]
    pacer.push(tagged(FMT8, 0))
    assert [tag_of(f) for f in pacer.poll(1.02)] == [0]
    assert pacer.poll(1.04) == [FMT8.silence()]  # browser gap: silence, counted
    assert pacer.queue.underruns == 1
    # The loop stalled for a second: at most 3 catch-up frames, the rest skipped, and the
    # schedule keeps its phase.
    burst = pacer.poll(2.045)
    # ticks 3..52 were due at 2.045 s: 47 skipped, 3 served, the next is tick 53
    assert len(burst) == 3 and pacer.late_ticks == 47
    assert pacer.queue.late_drops == 0  # nothing was queued to drop
    assert pacer.next_deadline() == pytest.approx(1.0 + 53 * FRAME_S)
    pacer.push(b"\x00" * 10)
    assert pacer.size_mismatches == 1


def test_a_stalled_playout_does_not_add_lasting_delay() -> None:
    arrivals = [(0.004 + n * FRAME_S, tagged(FMT8, n)) for n in range(1000)]
    buf = ReceiveBuffer(FMT8, created_at=0.0)
    played = simulate_receive(arrivals, 19.9, buf, stall=(5.0, 5.5))
    real = [(t, tag_of(f)) for t, f, _ in played if tag_of(f) is not None]
    delay_before = next(t - (0.004 + n * FRAME_S) for t, n in real if t > 1.0)
    delay_after = next(t - (0.004 + n * FRAME_S) for t, n in real if t > 6.0)
    assert delay_after == pytest.approx(delay_before, abs=1e-9)
    assert buf.late_ticks > 0 and buf.queue.late_drops > 0  # stale frames went, not played


def test_sender_overflow_drops_oldest() -> None:
    pacer = SendPacer(FMT8, JitterSettings(max_depth=4))
    pacer.start(0.0)
    for n in range(10):
        pacer.push(tagged(FMT8, n))
    assert [tag_of(f) for f in pacer.poll(0.0)] == [6]
    assert pacer.queue.overflow_drops == 6


def test_sender_starts_without_the_backlog_of_before_freeswitch_spoke() -> None:
    pacer = SendPacer(FMT8)
    for n in range(5):
        pacer.push(tagged(FMT8, n))
    pacer.start(0.0)
    assert [tag_of(f) for f in pacer.poll(0.0)] == [4]  # newest only: no start-up delay


def test_real_freeswitch_arrival_times_and_payload() -> None:
    """Replay the recorded call: real arrival times, the real first 3 s of L16."""
    rows = list(csv.DictReader((FIXTURES / "unicast_main_call_fs_to_app.csv").open()))
    pcm = (FIXTURES / "unicast_main_call_fs_to_app_first3s_pcmu_8k_mono.l16").read_bytes()
    arrivals = []
    for i, row in enumerate(rows):
        if i < 150:
            payload = pcm[i * 320 : (i + 1) * 320]
            assert is_cng_frame(payload) == (row["all_0xFF"] == "1")
        else:
            payload = b"\xff" * 320 if row["all_0xFF"] == "1" else tagged(FMT8, i)
        arrivals.append((float(row["t_rel_s"]), payload))
    buf = ReceiveBuffer(FMT8, created_at=0.0)
    played = simulate_receive(arrivals, float(rows[-1]["t_rel_s"]) + 0.015, buf)
    assert buf.queue.underruns == 0 and buf.queue.overflow_drops == 0
    assert buf.cng_frames == sum(r["all_0xFF"] == "1" for r in rows)
    out = b"".join(f for _, f, _ in played[:150])
    assert all(not is_cng_frame(f) for _, f, _ in played)
    samples = np.frombuffer(out, dtype="<i2").astype(float)
    assert dominant_hz(samples, 8000) == pytest.approx(1000, abs=10)


# --------------------------------------------------------------------------- UDP endpoint


async def _endpoint_round_trip() -> None:
    fmt = ChannelFormat(16000, 1)
    alloc = PortAllocator(*free_udp_range(40))
    ep = UnicastEndpoint(fmt, alloc, host="127.0.0.1")
    params = await ep.open()
    assert params.headers()["remote-port"] == str(ep.pair.local_port)  # type: ignore[union-attr]
    loop = asyncio.get_running_loop()

    # The fake FreeSWITCH binds its local-port, like the real one.
    fs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fs.bind((params.local_ip, params.local_port))
    fs.setblocking(False)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    try:
        for n in range(5):
            ep.write_frame(tagged(fmt, n))
        await asyncio.sleep(0.1)
        with pytest.raises(BlockingIOError):
            fs.recv(4096)  # nothing sent before FreeSWITCH's first datagram

        async def playout() -> list[bytes]:
            """Like the browser track: wake at each playout deadline and take the frame."""
            frames = []
            for _ in range(20):
                while (delay := ep.next_playout() - loop.time()) > 0:
                    await asyncio.sleep(delay)
                frames.append(ep.read_frame(loop.time()))
            return frames

        player = asyncio.create_task(playout())
        target = (params.remote_ip, params.remote_port)
        fs.sendto(b"\xff" * fmt.frame_bytes, target)  # CNG first, as recorded
        fs.sendto(b"\x00" * 100, target)  # wrong size
        for n in range(10):
            fs.sendto(tagged(fmt, 100 + n), target)
            await asyncio.sleep(FRAME_S)
        stranger.sendto(tagged(fmt, 999), target)

        got: list[bytes] = []
        while len(got) < 12:
            data, addr = await loop.sock_recvfrom(fs, 8192)
            assert addr == (params.remote_ip, params.remote_port)
            got.append(data)
        assert all(len(d) == fmt.frame_bytes for d in got)
        # Of the 5 frames queued before FreeSWITCH spoke only the newest is sent (no
        # start-up backlog), then silence.
        sent_tags = [tag_of(d) for d in got if tag_of(d) is not None]
        assert sent_tags == [4]

        # Playout toward the browser: CNG became silence, tagged frames in order.
        played = await player
        tags = [tag_of(f) for f in played if tag_of(f) is not None]
        assert tags == sorted(tags) and tags and 999 not in tags
        assert all(not is_cng_frame(f) for f in played)

        stats = ep.stats()
        assert stats.rx_packets == 12 and stats.rx_cng_frames == 1
        assert stats.rx_size_mismatches == 1 and stats.rx_foreign_packets == 1
        assert stats.tx_packets >= 12 and stats.rx_bytes == 11 * fmt.frame_bytes + 100
    finally:
        fs.close()
        stranger.close()
        was_sending = ep.sending
        await ep.close()
        await ep.close()  # idempotent
    assert was_sending and not ep.sending
    assert alloc.in_use == 0 and ep._transport is None
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind((params.remote_ip, params.remote_port))  # the port is really free again
    probe.close()


def test_endpoint_round_trip_on_loopback() -> None:
    asyncio.run(asyncio.wait_for(_endpoint_round_trip(), 20))


async def _endpoint_skips_busy_ports() -> None:
    base, top = free_udp_range(4)  # two pairs
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", base + 1))  # our side of the first pair is taken
    try:
        for seed in range(4):  # whichever pair the random choice tries first
            alloc = PortAllocator(base, top, rng=random.Random(seed))
            ep = UnicastEndpoint(FMT8, alloc)
            params = await ep.open()
            assert params.remote_port == base + 3
            await ep.close()
            assert alloc.in_use == 0
    finally:
        busy.close()


async def _endpoint_takes_audio_only_from_the_pairs_switch_port() -> None:
    fmt = FMT8
    alloc = PortAllocator(*free_udp_range(40))
    counters = MediaCounters()  # the gateway's totals, shared by all its endpoints
    ep = UnicastEndpoint(fmt, alloc, host="127.0.0.1", counters=counters)
    params = await ep.open()
    loop = asyncio.get_running_loop()
    # From FreeSWITCH's address but another port (a leftover leg, another call): it comes
    # first, so nothing may be learnt from it.
    impostor = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    impostor.bind(("127.0.0.1", 0))
    impostor.setblocking(False)
    fs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fs.bind((params.local_ip, params.local_port))
    fs.setblocking(False)
    target = (params.remote_ip, params.remote_port)
    try:
        ep.unicast_requested(loop.time())
        for n in range(5):
            impostor.sendto(tagged(fmt, 500 + n), target)
        await asyncio.sleep(0.1)
        assert ep.not_started_for(loop.time()) is not None  # strangers do not start it
        for n in range(10):
            fs.sendto(tagged(fmt, n), target)
            impostor.sendto(tagged(fmt, 600 + n), target)
            await asyncio.sleep(FRAME_S)
        assert ep.not_started_for(loop.time()) is None
        frames = []
        while len(frames) < 10:
            while (delay := ep.next_playout() - loop.time()) > 0:
                await asyncio.sleep(delay)
            frames.append(ep.read_frame(loop.time()))
        got: list[bytes] = []
        while len(got) < 5:
            data, addr = await loop.sock_recvfrom(fs, 8192)
            assert addr == target  # from our port, to the switch's
            got.append(data)
        with pytest.raises(BlockingIOError):
            impostor.recv(8192)  # never one datagram toward the impostor
        tags = [tag_of(f) for f in frames if tag_of(f) is not None]
        assert tags and all(t < 100 for t in tags)  # only the switch's own frames
        stats = ep.stats()
        assert stats.rx_foreign_packets == 15 and counters.foreign_packets == 15
        assert stats.rx_packets == 10
    finally:
        impostor.close()
        fs.close()
        await ep.close()


def test_endpoint_takes_audio_only_from_the_pairs_switch_port() -> None:
    asyncio.run(asyncio.wait_for(_endpoint_takes_audio_only_from_the_pairs_switch_port(), 20))


def test_a_slow_socket_close_still_frees_the_pair_and_ends_the_close() -> None:
    """Seen on a starved machine: asyncio had not closed the socket within the wait. The
    wait is bounded, and its end is no error: close() returns, the pair goes back to the
    allocator (quarantined), the buffers are emptied, and the log says it."""
    asyncio.run(asyncio.wait_for(_slow_socket_close(), 10))


async def _slow_socket_close() -> None:
    alloc = PortAllocator(*free_udp_range(4))
    endpoint = UnicastEndpoint(FMT8, alloc)
    endpoint.close_wait = 0.01
    await endpoint.open()
    assert alloc.in_use == 1
    protocol = endpoint._protocol
    assert protocol is not None
    # The loop's close callback comes too late: the protocol does not hear of it in time.
    protocol.connection_lost = lambda exc: None  # type: ignore[method-assign]
    with capture_logs() as logs:
        await endpoint.close()
    assert alloc.in_use == 0
    assert endpoint.closed
    events = [entry["event"] for entry in logs]
    assert events == ["media.unicast_close_slow", "media.unicast_closed"], logs
    await endpoint.close()  # idempotent


def test_start_timeout_counts_from_the_unicast_command() -> None:
    endpoint = UnicastEndpoint(FMT8, PortAllocator(*free_udp_range(40)))
    assert endpoint.not_started_for(10.0) is None  # no command sent yet: nothing to time
    endpoint.unicast_requested(10.0)
    assert endpoint.not_started_for(15.5) == pytest.approx(5.5)


def test_endpoint_refuses_wildcard_addresses() -> None:
    with pytest.raises(ValueError, match="wildcard"):
        UnicastEndpoint(FMT8, PortAllocator(30000, 30009), host="0.0.0.0")


def test_endpoint_skips_busy_ports() -> None:
    asyncio.run(asyncio.wait_for(_endpoint_skips_busy_ports(), 10))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(-0.03, 0.06), st.booleans()),  # (arrival offset, lost)
        min_size=1,
        max_size=400,
    ),
    st.integers(1, 3),
)
def test_receive_buffer_invariants_under_any_arrival_pattern(
    pattern: list[tuple[float, bool]], target: int
) -> None:
    """Whatever the jitter, loss and bursts: one frame per tick, never reordered or repeated,
    bounded depth, and every frame accounted for (played, dropped or still queued)."""
    config = JitterSettings(target_depth=target, max_depth=target + 4, window=25)
    buf = ReceiveBuffer(FMT8, created_at=0.0, settings=config)
    arrivals = [
        (max(0.0, n * FRAME_S + offset), tagged(FMT8, n))
        for n, (offset, lost) in enumerate(pattern)
        if not lost
    ]
    duration = len(pattern) * FRAME_S + 0.2
    played = simulate_receive(arrivals, duration, buf)
    # The first datagram re-anchors the clock (one short interval); after it, 20 ms apart.
    first = min((t for t, _ in arrivals), default=duration)
    ticks = [t for t, _, _ in played if t > first][1:]
    assert all(b - a >= FRAME_S - 1e-9 for a, b in itertools.pairwise(ticks))
    assert all(len(f) == FMT8.frame_bytes for _, f, _ in played)
    assert max((d for _, _, d in played), default=0) <= config.max_depth
    # Unicast has no sequence numbers: frames play in arrival order, each at most once.
    rank = {tag_of(f): i for i, (_, f) in enumerate(sorted(arrivals, key=lambda a: a[0]))}
    tags = [tag_of(f) for _, f, _ in played if tag_of(f) is not None]
    ranks = [rank[t] for t in tags]
    assert ranks == sorted(set(ranks))
    q = buf.queue
    assert q.pushed == len(arrivals)
    assert q.popped + q.overflow_drops + q.trimmed + q.late_drops + len(q) == q.pushed
    assert q.popped == len(tags)


async def _silent_channel_times_out() -> tuple[float | None, float | None]:
    endpoint = UnicastEndpoint(FMT8, PortAllocator(*free_udp_range(40)))
    before = endpoint.seconds_since_rx(0.0)
    await endpoint.open()
    # No datagram ever comes: the silence counts from the opening, on the loop's clock.
    later = endpoint.seconds_since_rx(asyncio.get_running_loop().time() + 30.0)
    await endpoint.close()
    return before, later


def test_a_channel_that_never_sends_still_counts_toward_the_media_timeout() -> None:
    before, later = asyncio.run(asyncio.wait_for(_silent_channel_times_out(), 10))
    assert before is None  # not open yet: nothing to time
    assert later is not None and later >= 30.0


# --------------------------------------------------------------------------- native (G.711)

NATIVE = FIXTURES / "native_unicast"


@pytest.mark.parametrize(("codec", "silence"), [("PCMU", 0xFF), ("PCMA", 0xD5)])
def test_native_format_is_one_byte_per_sample_with_the_codecs_silence(
    codec: str, silence: int
) -> None:
    fmt = ChannelFormat.native(codec)
    assert (fmt.codec, fmt.rate, fmt.channels, fmt.frame_bytes) == (codec, 8000, 1, 160)
    assert fmt.is_native and not ChannelFormat(8000).is_native
    assert fmt.silence() == bytes([silence]) * 160
    assert ChannelFormat(8000).codec == "L16" and ChannelFormat(8000).silence() == bytes(320)


def test_native_format_rejects_what_freeswitch_cannot_send_natively() -> None:
    for bad in ("G722", "OPUS", "L16", "pcmu "):
        with pytest.raises(ValueError, match="native"):
            ChannelFormat.native(bad)
    with pytest.raises(ValueError):
        ChannelFormat(16000, 1, "PCMU")  # G.711 is 8 kHz mono only
    with pytest.raises(ValueError):
        ChannelFormat(8000, 2, "PCMA")
    with pytest.raises(ValueError):
        ChannelFormat(8000, 1, "GSM")
    assert ChannelFormat.native("pcma").codec == "PCMA"  # case does not matter


def test_channel_codec_name_from_what_the_real_switch_sends() -> None:
    """The recorded CHANNEL_PARK of the native call names the read codec in
    ``Channel-Read-Codec-Name`` and ``variable_read_codec``; early media (183) has neither."""
    talk = json.loads((NATIVE / "talk_summary.json").read_text())
    nortp = json.loads((NATIVE / "nortp_summary.json").read_text())
    assert channel_codec_name(talk["event_codec_headers"]) == "PCMU"
    assert channel_codec_name(nortp["event_codec_headers"]) is None
    assert channel_codec_name({"variable_read_codec": "opus"}) == "OPUS"
    assert channel_codec_name({"Channel-Read-Codec-Name": "G722"}) == "G722"
    assert channel_codec_name({"Channel-Read-Codec-Name": ""}) is None
    assert channel_codec_name({}) is None


def test_native_params_carry_the_flag_and_l16_params_do_not() -> None:
    base = {"local_ip": "127.0.0.1", "local_port": 9500}
    l16 = UnicastParams(**base, remote_ip="127.0.0.1", remote_port=9501)
    native = UnicastParams(**base, remote_ip="127.0.0.1", remote_port=9501, flags="native")
    assert "flags" not in l16.headers() and l16.flags is None
    assert native.headers()["flags"] == "native"


def test_native_receive_takes_160_byte_frames_and_freeswitchs_320_byte_filler() -> None:
    """Recorded: with ``flags: native`` the audio is 160 bytes of PCMU per 20 ms, and the CNG
    filler stays 320 bytes of 0xFF (FreeSWITCH sizes it by the decoded frame)."""
    for codec in ("PCMU", "PCMA"):
        fmt = ChannelFormat.native(codec)
        buf = ReceiveBuffer(fmt, created_at=0.0)
        buf.push(b"\xff" * 320, 0.0)  # filler: silence of the codec, not audio
        buf.push(b"\x12" * 160, 0.020)  # audio: passed on untouched
        buf.push(b"\x12" * 320, 0.021)  # an L16-sized frame of audio: not ours
        first = buf.pop(buf.next_deadline())
        assert first == fmt.silence()
        assert buf.pop(buf.next_deadline()) == b"\x12" * 160
        assert (buf.cng_frames, buf.size_mismatches) == (1, 1)


def test_native_sender_fills_with_the_codecs_silence() -> None:
    fmt = ChannelFormat.native("PCMA")
    pacer = SendPacer(fmt)
    pacer.push(b"\x55" * 320)  # wrong size for native: dropped, counted
    sent = simulate_send([(0.0, b"\x2a" * 160)], 0.0, 0.065, pacer)
    assert [f for _, f in sent] == [b"\x2a" * 160] + [b"\xd5" * 160] * 3
    assert pacer.size_mismatches == 1


def test_recorded_native_call_replays_as_pcmu_audio() -> None:
    """The real switch's first second of native datagrams (phone 1001 plays 1 kHz): every
    one is 160 bytes of PCMU or the 320-byte filler, and the playout decodes to 1 kHz."""
    rows = [
        r
        for r in csv.DictReader((NATIVE / "talk_datagrams.csv").open())
        if r["kind"] == "unicast fs->app"
    ]
    assert {(int(r["size"]), r["all_ff"]) for r in rows} <= {(160, "0"), (320, "1")}
    raw = (NATIVE / "talk_fs_to_app_first1s.bin").read_bytes()
    payloads, offset = [], 0
    for r in rows[:50]:
        payloads.append(raw[offset : offset + int(r["size"])])
        offset += int(r["size"])
    assert offset == len(raw)
    fmt = ChannelFormat.native("PCMU")
    buf = ReceiveBuffer(fmt, created_at=0.0)
    arrivals = [(float(r["t"]), p) for r, p in zip(rows, payloads, strict=False)]
    played = simulate_receive(arrivals, arrivals[-1][0] + 0.015, buf)
    assert buf.size_mismatches == 0 and buf.cng_frames == sum(r["all_ff"] == "1" for r in rows[:50])
    assert {len(f) for _, f, _ in played} == {160}
    pcm = np.array([ulaw_to_int(b) for _, f, _ in played for b in f], dtype=float)
    assert dominant_hz(pcm, 8000) == pytest.approx(1000, abs=10)


def ulaw_to_int(byte: int) -> int:
    """G.711 mu-law decode (for the test's own analysis)."""
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


async def _native_endpoint_round_trip() -> None:
    fmt = ChannelFormat.native("PCMU")
    alloc = PortAllocator(*free_udp_range(40))
    ep = UnicastEndpoint(fmt, alloc, host="127.0.0.1")
    params = await ep.open()
    assert params.flags == "native" and params.headers()["flags"] == "native"
    loop = asyncio.get_running_loop()
    fs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fs.bind((params.local_ip, params.local_port))
    fs.setblocking(False)
    target = (params.remote_ip, params.remote_port)
    try:
        fs.sendto(b"\xff" * 320, target)  # the recorded first datagram: the filler
        ep.write_frame(b"\x42" * 160)
        got: list[bytes] = []
        while len(got) < 3:
            data, _addr = await loop.sock_recvfrom(fs, 8192)
            got.append(data)
        assert {len(d) for d in got} == {160}
        assert b"\x42" * 160 in got and fmt.silence() in got
        stats = ep.stats()
        assert stats.codec == "PCMU" and stats.rx_cng_frames == 1
        assert stats.rx_size_mismatches == 0
    finally:
        fs.close()
        await ep.close()
    assert alloc.in_use == 0


def test_native_endpoint_round_trip_on_loopback() -> None:
    asyncio.run(asyncio.wait_for(_native_endpoint_round_trip(), 20))
