"""The parts of ``benchmarks/media_cost.py`` that decide what it reports.

The benchmark's figures come from a live run (no test asserts on time); what is checked
here is what makes them trustworthy: the native PCMU stream the fake FreeSWITCH speaks is
real G.711 mu-law (compared with FFmpeg's codec through PyAV), a burst that never arrived
or a sender that skipped bursts makes a point invalid with a reason, and the far end is
split over processes as documented. The times below are made-up instants, not clock reads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import media_cost
from media_cost import Direction, Run


def _ffmpeg_ulaw(samples: np.ndarray) -> bytes:
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = 8000
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples))
    frame.planes[0].update(samples.astype(np.int16).tobytes())
    frame.sample_rate = 8000
    frame.pts = 0
    return b"".join(bytes(p) for p in codec.encode(frame))


def test_ulaw_encode_agrees_with_ffmpegs_mulaw() -> None:
    # Every int16 value. FFmpeg's table rounds to the nearest level where ours truncates
    # within a segment like the classic reference encoder: codes may differ by one step at
    # level boundaries, nowhere else.
    samples = np.arange(-32768, 32768, dtype=np.int32).astype(np.int16)
    ours = np.frombuffer(media_cost.ulaw_encode(samples), dtype=np.uint8).astype(np.int32)
    theirs = np.frombuffer(_ffmpeg_ulaw(samples), dtype=np.uint8).astype(np.int32)
    assert np.abs(ours - theirs).max() <= 1
    assert np.count_nonzero(ours != theirs) < 0.02 * len(samples)
    assert media_cost.ulaw_encode(np.zeros(160, dtype=np.int16)) == b"\xff" * 160


def test_ulaw_decode_is_ffmpegs_mulaw() -> None:
    codec = av.CodecContext.create("pcm_mulaw", "r")
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = 8000
    every_byte = bytes(range(256))
    frames = codec.decode(av.Packet(every_byte))
    theirs = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    assert media_cost.ulaw_decode(every_byte).tolist() == theirs.tolist()


def test_burst_survives_the_ulaw_round_trip() -> None:
    frame, starts = media_cost.burst_frame(0, 8000, 1)
    assert starts
    decoded = media_cost.ulaw_decode(media_cost.ulaw_encode(frame))
    detector = media_cost.OnsetDetector()
    detector.feed(decoded, 8000, 100.0)
    assert detector.onsets == [100.0 + np.flatnonzero(np.abs(frame) > 2500)[0] / 8000]


def test_every_burst_is_matched_or_counted_missing() -> None:
    sent = [10.0 + 0.5 * k for k in range(8)]  # 10.0 .. 13.5
    onsets = [s + 0.030 for s in sent]
    del onsets[3]  # the burst sent at 11.5 never arrived
    latencies, due, missing = media_cost.match_bursts(sent, onsets, since=10.2, until=14.0)
    # Due: sent in [10.2, 14.0 - MATCH_S]: 10.5 .. 13.5 minus those too close to the end.
    last = 14.0 - media_cost.MATCH_S
    assert due == len([s for s in sent if 10.2 <= s <= last])
    assert missing == 1
    assert latencies == pytest.approx([30.0] * (due - 1))


def test_an_onset_too_late_is_not_a_match() -> None:
    late = media_cost.MATCH_S + 0.01
    latencies, due, missing = media_cost.match_bursts([1.0], [1.0 + late], since=0.0, until=9.0)
    assert (latencies, due, missing) == ([], 1, 1)


def _run(**overrides: object) -> Run:
    up, down = Direction(), Direction()
    media_cost.add_direction(up, [1.0, 1.5, 2.0], [1.02, 1.52, 2.02], since=1.0, until=3.0)
    media_cost.add_direction(down, [1.0, 1.5, 2.0], [1.03, 1.53, 2.03], since=1.0, until=3.0)
    fields: dict[str, object] = {
        "mode": "bridged",
        "calls": 1,
        "cpu_per_call": 0.05,
        "far_cpu": 0.1,
        "far_procs": 1,
        "far_lag_p99": 2.0,
        "gw_lag": "n/a",
        "gw_lag_p99": 3.0,
        "up": up,
        "down": down,
        "threads": {},
        "counters": {},
        "paths": ["transcode"],
    }
    fields.update(overrides)
    return Run(**fields)  # type: ignore[arg-type]


def test_a_complete_run_is_valid() -> None:
    assert _run().problems() == []


def test_a_lost_burst_makes_the_point_invalid() -> None:
    down = Direction()
    media_cost.add_direction(down, [1.0, 1.5, 2.0], [1.03, 2.03], since=1.0, until=3.0)
    why = _run(down=down).problems()
    assert len(why) == 1 and "1 of 3 bursts never arrived" in why[0], why


def test_a_sender_that_skipped_bursts_makes_the_point_invalid() -> None:
    up = Direction()
    media_cost.add_direction(up, [1.0, 2.0], [1.02, 2.02], since=1.0, until=3.0)
    why = _run(up=up).problems()
    assert len(why) == 1 and "did not emit every burst" in why[0], why


def test_a_starved_far_end_makes_the_point_invalid() -> None:
    why = _run(far_lag_p99=35.0).problems()
    assert len(why) == 1 and "far end starved" in why[0], why


def test_a_starved_gateway_makes_the_point_invalid() -> None:
    why = _run(gw_lag_p99=55.0).problems()
    assert len(why) == 1 and "gateway process starved" in why[0], why


def test_capacity_comes_from_the_largest_count_the_gateway_carried_in_real_time() -> None:
    """Bare aiortc starves first: the ratio and the latency baseline come from the largest
    count valid in both modes, calls per core from the largest valid bridged count."""
    results = {
        1: (_run(mode="bare", cpu_per_call=0.10), _run(cpu_per_call=0.030)),
        10: (_run(mode="bare", cpu_per_call=0.06), _run(cpu_per_call=0.015)),
        30: (_run(mode="bare", cpu_per_call=0.03, gw_lag_p99=150.0), _run(cpu_per_call=0.010)),
    }
    line = media_cost.closing_line("pcmu", " path=fast", results)
    assert "calls_per_core=100 overhead_ratio=0.25 " in line, line
    assert line.endswith("from_calls=30 ratio_from_calls=10"), line
    # The bridged run starved too: nothing of the 30-call point is used.
    results[30] = (results[30][0], _run(cpu_per_call=0.010, far_lag_p99=40.0))
    line = media_cost.closing_line("pcmu", " path=fast", results)
    assert "calls_per_core=67 " in line and line.endswith("from_calls=10 ratio_from_calls=10")
    # No count valid in both: the line says so.
    results[10] = (_run(mode="bare", gw_lag_p99=80.0), results[10][1])
    results[1] = (_run(mode="bare", gw_lag_p99=80.0), results[1][1])
    assert media_cost.closing_line("pcmu", "", results).endswith("NOT VALID (no valid point)")


def test_the_far_end_is_split_over_processes() -> None:
    assert media_cost.split_calls(1, 5, 8) == [1]
    assert media_cost.split_calls(10, 5, 8) == [5, 5]
    assert media_cost.split_calls(30, 5, 8) == [5] * 6
    assert media_cost.split_calls(11, 5, 8) == [4, 4, 3]
    assert media_cost.split_calls(100, 5, 8) == [13] * 4 + [12] * 4


@pytest.mark.parametrize("codec", ["pcmu", "opus"])
def test_the_far_ends_ear_finds_each_burst(codec: str) -> None:
    # The browsers' pre-encoded packets, heard by the far end's tap: one onset per burst,
    # at the tone's first loud sample (within the Opus encoder's look-ahead).
    cycle = media_cost.encoded_cycle(codec)
    detector = media_cost.OnsetDetector()
    tap = media_cost.PayloadTap(codec, detector)

    for n in range(3 * media_cost.BURST_EVERY):
        tap.on_packet(SimpleNamespace(payload=cycle[n % len(cycle)]), 0.0)
    assert len(detector.onsets) == 3
