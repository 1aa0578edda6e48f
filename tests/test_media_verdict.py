"""The one-way audio verdicts alone (core/media_verdict.py), on a fake clock: each verdict
from the counters that show it, after exactly ``window`` seconds, named once, and back to
ok when the hop recovers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from esl_bridge.core.media_verdict import (
    BROWSER_NOT_PLAYING,
    BROWSER_RTP_MISSING,
    BROWSER_SILENT,
    BROWSER_TO_SWITCH,
    GATEWAY_NOT_SENDING,
    LEVEL_FLOOR_DBOV,
    OK,
    SEND_PAUSE_S,
    SWITCH_FILLER_ONLY,
    SWITCH_SILENT,
    SWITCH_TO_BROWSER,
    WINDOW_S,
    Change,
    HopCounters,
    OneWayJudge,
)

LOUD = -12.0
SILENT = -127.0


def healthy(t: int) -> HopCounters:
    """A call where everything flows: every counter grows by 50 a second, levels loud, the
    browser reports every second on a sequence number that moves."""
    return HopCounters(
        rtp_from_browser=50 * t,
        frames_from_browser=50 * t,
        frames_to_switch=50 * t,
        browser_level_dbov=LOUD,
        datagrams_from_switch=50 * t,
        filler_from_switch=2,
        switch_level_dbov=LOUD,
        packets_to_browser=50 * t,
        browser_reports=t,
        browser_highest_seq=1000 + 50 * t,
    )


def run(judge: OneWayJudge, start: int, end: int, counters) -> list[tuple[float, Change]]:  # type: ignore[no-untyped-def]
    """Feed one snapshot a second from ``start`` to ``end`` (inclusive); every change."""
    seen: list[tuple[float, Change]] = []
    for t in range(start, end + 1):
        seen.extend((float(t), c) for c in judge.update(float(t), counters(t)))
    return seen


def test_the_documented_defaults() -> None:
    assert WINDOW_S == 5.0
    assert LEVEL_FLOOR_DBOV == -70.0
    judge = OneWayJudge(0.0)
    assert (judge.window, judge.floor_dbov) == (5.0, -70.0)
    with pytest.raises(ValueError):
        OneWayJudge(0.0, window=0)


def test_a_healthy_call_is_ok_both_ways_however_long() -> None:
    judge = OneWayJudge(0.0)
    assert run(judge, 0, 600, healthy) == []
    assert judge.verdicts == {BROWSER_TO_SWITCH: OK, SWITCH_TO_BROWSER: OK}
    assert judge.first_problem == {BROWSER_TO_SWITCH: OK, SWITCH_TO_BROWSER: OK}


def test_a_muted_microphone_is_browser_silent_after_the_window_then_ok_again() -> None:
    judge = OneWayJudge(0.0)
    run(judge, 0, 10, healthy)

    def muted(t: int) -> HopCounters:  # packets and frames flow, digital silence
        quiet = SILENT if 10 < t <= 30 else LOUD
        return replace(healthy(t), browser_level_dbov=quiet)

    seen = run(judge, 11, 40, muted)
    # Last loud frame at t=10: silent from then, named at t=15 with 5 s.
    assert seen == [
        (15.0, Change(BROWSER_TO_SWITCH, BROWSER_SILENT, 5.0)),
        (31.0, Change(BROWSER_TO_SWITCH, OK, 0.0)),
    ]
    assert judge.first_problem[BROWSER_TO_SWITCH] == BROWSER_SILENT
    assert judge.first_problem[SWITCH_TO_BROWSER] == OK


def test_a_level_just_at_the_floor_is_audio_and_just_below_is_silence() -> None:
    for level, expect in ((LEVEL_FLOOR_DBOV, []), (LEVEL_FLOOR_DBOV - 0.1, [BROWSER_SILENT])):
        judge = OneWayJudge(0.0)
        seen = run(judge, 0, 10, lambda t, lv=level: replace(healthy(t), browser_level_dbov=lv))
        assert [c.verdict for _t, c in seen] == expect


def test_no_rtp_from_the_browser_is_browser_rtp_missing() -> None:
    judge = OneWayJudge(100.0, window=3.0)

    def stopped(t: int) -> HopCounters:
        # The browser sent 2 s of packets, then nothing; the frames the gateway wrote to
        # the switch stop with them (only silence ticks after).
        n = min(t, 102) - 100
        return replace(healthy(t), rtp_from_browser=n, frames_from_browser=n, frames_to_switch=n)

    seen = run(judge, 100, 110, stopped)
    assert seen == [(105.0, Change(BROWSER_TO_SWITCH, BROWSER_RTP_MISSING, 3.0))]


def test_packets_that_never_become_frames_are_the_gateway_not_sending() -> None:
    judge = OneWayJudge(0.0)
    seen = run(
        judge, 0, 8, lambda t: replace(healthy(t), frames_from_browser=0, frames_to_switch=0)
    )
    assert seen == [(5.0, Change(BROWSER_TO_SWITCH, GATEWAY_NOT_SENDING, 5.0))]


def test_filler_only_from_the_switch_and_silence_from_the_switch_are_told_apart() -> None:
    judge = OneWayJudge(0.0)
    filler = run(judge, 0, 7, lambda t: replace(healthy(t), filler_from_switch=50 * t))
    assert filler == [(5.0, Change(SWITCH_TO_BROWSER, SWITCH_FILLER_ONLY, 5.0))]

    judge = OneWayJudge(0.0)
    silent = run(judge, 0, 7, lambda t: replace(healthy(t), switch_level_dbov=SILENT))
    assert silent == [(5.0, Change(SWITCH_TO_BROWSER, SWITCH_SILENT, 5.0))]

    judge = OneWayJudge(0.0)  # no datagram at all: nothing from the phone either
    gone = run(
        judge, 0, 7, lambda t: replace(healthy(t), datagrams_from_switch=10, filler_from_switch=0)
    )
    assert gone == [(5.0, Change(SWITCH_TO_BROWSER, SWITCH_FILLER_ONLY, 5.0))]


def test_nothing_sent_to_the_browser_is_the_gateway_not_sending() -> None:
    judge = OneWayJudge(0.0)
    run(judge, 0, 3, healthy)
    seen = run(judge, 4, 12, lambda t: replace(healthy(t), packets_to_browser=150))
    assert seen == [(8.0, Change(SWITCH_TO_BROWSER, GATEWAY_NOT_SENDING, 5.0))]


def test_reports_that_stop_counting_our_packets_are_browser_not_playing() -> None:
    judge = OneWayJudge(0.0)
    run(judge, 0, 3, healthy)

    def stuck(t: int) -> HopCounters:  # reports keep coming, on a frozen sequence number
        return replace(healthy(t), browser_highest_seq=1150)

    seen = run(judge, 4, 12, stuck)
    assert seen == [(8.0, Change(SWITCH_TO_BROWSER, BROWSER_NOT_PLAYING, 5.0))]


def test_the_browser_is_not_blamed_for_a_pause_of_ours() -> None:
    """Seen on a loaded machine: our sending stopped (gateway_not_sending) and came back,
    and the browser's next report, a report interval later, still had the old sequence
    number. The browser gets a whole window of our packets before it is judged."""
    judge = OneWayJudge(0.0)
    run(judge, 0, 3, healthy)

    def paused(t: int) -> HopCounters:  # nothing sent from 4 to 9; reports keep coming
        return replace(healthy(t), packets_to_browser=150, browser_highest_seq=1150)

    def back(t: int) -> HopCounters:  # sending again from 10; reports catch up at 12
        return replace(healthy(t), browser_highest_seq=1150 if t < 12 else 1000 + 50 * t)

    seen = run(judge, 4, 9, paused) + run(judge, 10, 20, back)
    assert seen == [
        (8.0, Change(SWITCH_TO_BROWSER, GATEWAY_NOT_SENDING, 5.0)),
        (10.0, Change(SWITCH_TO_BROWSER, OK, 0.0)),
    ]

    # Sending again, and the reports never move: browser_not_playing a window after the
    # pause (its last snapshot, 29), not at once.
    judge = OneWayJudge(0.0)
    run(judge, 0, 3, healthy)
    run(judge, 4, 29, paused)
    seen = run(judge, 30, 40, lambda t: replace(healthy(t), browser_highest_seq=1150))
    assert seen == [
        (30.0, Change(SWITCH_TO_BROWSER, OK, 0.0)),
        (34.0, Change(SWITCH_TO_BROWSER, BROWSER_NOT_PLAYING, 5.0)),
    ]


def test_snapshots_closer_than_a_pause_do_not_hold_the_verdict_back() -> None:
    """Snapshots can come between two packets (the timers wake for other reasons too): no
    packet between two snapshots less than SEND_PAUSE_S apart is no pause."""
    judge = OneWayJudge(0.0)
    run(judge, 0, 3, healthy)
    seen = []
    for t in range(4, 13):
        stuck = replace(healthy(t), browser_highest_seq=1150)
        seen += [(float(t), c) for c in judge.update(float(t), stuck)]
        soon = t + SEND_PAUSE_S / 2
        seen += [(soon, c) for c in judge.update(soon, stuck)]
    assert seen == [(8.0, Change(SWITCH_TO_BROWSER, BROWSER_NOT_PLAYING, 5.0))]


def test_snapshots_exactly_a_pause_apart_with_nothing_sent_are_a_pause() -> None:
    judge = OneWayJudge(0.0)
    judge.update(0.0, healthy(0))
    # From 0, a gap of exactly SEND_PAUSE_S is exact in floats. Nothing sent: the browser's
    # window starts again there, so its verdict comes a window after it, not after 0.
    assert judge.update(SEND_PAUSE_S, healthy(0)) == []
    seen = run(judge, 1, 10, lambda t: replace(healthy(t), browser_highest_seq=1000))
    assert seen == [(6.0, Change(SWITCH_TO_BROWSER, BROWSER_NOT_PLAYING, 6.0 - SEND_PAUSE_S))]


def test_a_browser_that_sends_no_reports_is_not_called_not_playing() -> None:
    judge = OneWayJudge(0.0)
    assert run(judge, 0, 30, lambda t: replace(healthy(t), browser_reports=0)) == []
    # Sparse reports (one every 7 s, as some browsers send for audio), each one moving on.
    judge = OneWayJudge(0.0)

    def sparse(t: int) -> HopCounters:
        k = t // 7
        return replace(healthy(t), browser_reports=k, browser_highest_seq=1000 + 350 * k)

    assert run(judge, 0, 60, sparse) == []


def test_the_first_broken_hop_is_named_and_each_change_once() -> None:
    judge = OneWayJudge(0.0)

    def everything_broken(t: int) -> HopCounters:
        return HopCounters(datagrams_from_switch=50 * t, filler_from_switch=50 * t)

    seen = run(judge, 0, 20, everything_broken)
    assert seen == [
        (5.0, Change(BROWSER_TO_SWITCH, BROWSER_RTP_MISSING, 5.0)),
        (5.0, Change(SWITCH_TO_BROWSER, SWITCH_FILLER_ONLY, 5.0)),
    ]
    # A later, different problem on the same direction is a change too; first_problem stays.
    seen = run(judge, 21, 30, lambda t: replace(healthy(t), switch_level_dbov=SILENT))
    assert [(c.direction, c.verdict) for _t, c in seen] == [
        (BROWSER_TO_SWITCH, OK),
        (SWITCH_TO_BROWSER, SWITCH_SILENT),
    ]
    assert judge.first_problem == {
        BROWSER_TO_SWITCH: BROWSER_RTP_MISSING,
        SWITCH_TO_BROWSER: SWITCH_FILLER_ONLY,
    }


def test_a_conference_mix_is_not_judged_by_its_level() -> None:
    judge = OneWayJudge(0.0, switch_level=False)
    quiet_room = run(judge, 0, 30, lambda t: replace(healthy(t), switch_level_dbov=SILENT))
    assert quiet_room == []
    # Filler only (no frames at all) still is a problem.
    seen = run(judge, 31, 40, lambda t: replace(healthy(t), filler_from_switch=50 * t - 1500))
    assert [c.verdict for _t, c in seen] == [SWITCH_FILLER_ONLY]


def test_any_positive_window_is_taken_and_a_refusal_says_why() -> None:
    assert OneWayJudge(0.0, window=0.5).window == 0.5
    assert OneWayJudge(0.0, window=1).window == 1
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=r"^window must be positive$"):
            OneWayJudge(0.0, window=bad)


def test_snapshots_counts_every_update() -> None:
    judge = OneWayJudge(0.0)
    assert judge.snapshots == 0
    run(judge, 0, 2, healthy)
    assert judge.snapshots == 3


def test_a_change_gives_its_seconds_to_the_millisecond() -> None:
    # Nothing ever comes from the browser: the first hop is broken since the start (0.0).
    def silent_browser(t: float) -> HopCounters:
        return replace(healthy(int(t)), rtp_from_browser=0)

    judge = OneWayJudge(0.0)
    judge.update(0.0, silent_browser(0.0))
    assert judge.update(5.25, silent_browser(5.25)) == [
        Change(BROWSER_TO_SWITCH, BROWSER_RTP_MISSING, 5.25)
    ]
    judge = OneWayJudge(0.0)
    judge.update(0.0, silent_browser(0.0))
    (change,) = judge.update(5.0004, silent_browser(5.0004))
    assert change.seconds == 5.0 and isinstance(change.seconds, float)
