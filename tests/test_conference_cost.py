"""The parts of ``benchmarks/conference_cost.py`` that decide what it reports.

The benchmark's figures come from a live run (no test asserts on time); checked here is
what makes them trustworthy: how a room is made up, how CPU is read from /proc and
divided, which process is the switch, and that a member who did not hear the room makes
the point INVALID with a reason. Times and tick counts below are made-up values.
"""

from __future__ import annotations

import fractions
import sys
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import conference_cost as cc
import media_cost


def test_a_room_is_mostly_web_members_with_at_least_one_phone() -> None:
    phones = [n for n, _ in cc.PHONES]
    assert cc.member_plan(3, phones) == (2, ["1000"])
    assert cc.member_plan(10, phones) == (8, ["1000", "1002"])
    assert cc.member_plan(40, phones) == (36, phones)  # no more phones than there are
    assert cc.member_plan(2, ["1001"]) == (1, ["1001"])
    assert cc.member_plan(10, ["1001"]) == (9, ["1001"])  # a real switch: one phone
    with pytest.raises(ValueError):
        cc.member_plan(1, phones)
    with pytest.raises(ValueError):
        cc.member_plan(3, [])


def test_the_switch_target_is_parsed_and_a_bad_one_refused_without_its_password() -> None:
    assert cc.parse_target("") is None
    assert cc.parse_target("127.0.0.1:8021:Clue:Con") == cc.SwitchTarget(
        "127.0.0.1", 8021, "Clue:Con"
    )
    for bad in ("127.0.0.1:8021", "127.0.0.1:port:secret", ":8021:secret"):
        with pytest.raises(ValueError) as info:
            cc.parse_target(bad)
        assert "secret" not in str(info.value)


def test_cpu_is_read_after_the_command_name_and_divided_per_member() -> None:
    # /proc/<pid>/stat of a process whose name holds ") (" and spaces: utime 250, stime 50.
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 30
    stat = "4242 (free) (switch x) " + " ".join(fields)
    assert cc.stat_cpu_seconds(stat, ticks=100) == pytest.approx(3.0)
    # 3 CPU seconds over 10 s = 30 % of a core, less 5 % idle, over 5 members: 5 % each.
    assert cc.cpu_per_member_pct(3.0, 10.0, 0.05, 5) == pytest.approx(5.0)
    assert cc.cpu_per_member_pct(0.1, 10.0, 0.05, 5) == 0.0  # never below zero


def test_the_switch_is_the_one_process_of_that_name(tmp_path: Path) -> None:
    def proc(pid: int, comm: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")

    proc(10, "python3")
    proc(11, "freeswitch")
    (tmp_path / "self").mkdir()
    assert cc.find_pid("freeswitch", tmp_path) == 11
    proc(12, "freeswitch")  # two switches: which one is unknown
    assert cc.find_pid("freeswitch", tmp_path) is None
    assert cc.find_pid("baresip", tmp_path) is None


def test_a_member_that_did_not_hear_the_room_makes_the_point_invalid() -> None:
    # 4 s window: 200 packets due.
    assert cc.web_problems("w1", (100, 90), (300, 280), 4.0) == []
    why = cc.web_problems("w1", (100, 90), (200, 190), 4.0)
    assert why == ["w1 received 100 of 200 packets due"]
    why = cc.web_problems("w2", (0, 0), (200, 5), 4.0)  # packets, but silence
    assert why == ["w2 heard sound in 5 of 200 frames"]
    line = cc.result_line(10, 2.5, None, why)
    assert line == (
        "conference_cost: members=10 gateway_cpu_per_member_pct=2.50 "
        "switch_cpu_per_member_pct=n/a INVALID: w2 heard sound in 5 of 200 frames"
    )
    assert cc.result_line(3, 3.921, 1.5, []) == (
        "conference_cost: members=3 gateway_cpu_per_member_pct=3.92 switch_cpu_per_member_pct=1.50"
    )


def test_loud_frames_counts_frames_with_sound() -> None:
    t = np.arange(160) / 8000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
    quiet = (np.full(160, 300)).astype("<i2").tobytes()
    assert cc.loud_frames(tone + quiet + tone + quiet[:100]) == 2
    assert cc.loud_frames(quiet * 5) == 0
    assert cc.loud_frames(b"") == 0
    # 16 kHz frames (a wideband recording): 640 bytes each.
    wide = (8000 * np.sin(2 * np.pi * 440 * np.arange(320) / 16000)).astype("<i2").tobytes()
    assert cc.loud_frames(wide * 3, 640) == 3


def _opus_packets(samples_48k: np.ndarray) -> list[bytes]:
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate = 48000
    encoder.layout = "mono"
    encoder.format = "s16"
    packets: list[bytes] = []
    for n in range(len(samples_48k) // 960):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(samples_48k[n * 960 : (n + 1) * 960].astype("<i2").tobytes())
        frame.sample_rate = 48000
        frame.time_base = fractions.Fraction(1, 48000)
        frame.pts = n * 960
        packets.extend(bytes(p) for p in encoder.encode(frame))
    return packets


def test_the_ear_counts_packets_and_hears_the_bursts_not_silence() -> None:
    # The browsers' own pre-encoded bursts (5 loud frames of 25) are heard as sound...
    ear = cc.Ear()
    cycle = media_cost.encoded_cycle("opus")
    for n in range(4 * media_cost.BURST_EVERY):
        ear.on_packet(SimpleNamespace(payload=cycle[n % len(cycle)]))
    packets, loud = ear.count()
    assert packets == 100
    assert 4 * media_cost.BURST_LEN <= loud <= 4 * (media_cost.BURST_LEN + 2)
    # ...and Opus of silence is not; empty payloads are not packets.
    quiet = cc.Ear()
    for payload in _opus_packets(np.zeros(960 * 20)):
        quiet.on_packet(SimpleNamespace(payload=payload))
    quiet.on_packet(SimpleNamespace(payload=b""))
    assert quiet.count()[1] == 0 and quiet.count()[0] >= 19


def test_a_phone_is_found_in_the_real_switchs_list_by_its_contact_user() -> None:
    assert cc.list_number("1001-0x557d65a13620") == "1001"
    assert cc.list_number("1000") == "1000"
    assert cc.list_number("alice") == "alice"


def test_a_room_that_was_not_made_is_reported_invalid_without_a_figure() -> None:
    line = cc.result_line(3, float("nan"), None, ["the room was not made: RuntimeError('x')"])
    assert line == (
        "conference_cost: members=3 gateway_cpu_per_member_pct=nan "
        "switch_cpu_per_member_pct=n/a INVALID: the room was not made: RuntimeError('x')"
    )
