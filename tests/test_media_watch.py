"""The media_problem rule alone (core/media_watch.py), on a fake clock: a direction whose
counter stops growing for ``silence`` seconds is reported once, with how long it has been
quiet, and again only after its audio came back and stopped again. Pure; it had no test
of its own (mutation testing found every mutant of it untested, docs/mutation.rst)."""

from __future__ import annotations

from esl_bridge.core.media_watch import MediaWatch


def test_a_silent_direction_is_reported_once_at_the_silence_threshold() -> None:
    watch = MediaWatch(100.0, silence=5.0)
    # Both directions flow: nothing to report, however long.
    for t in range(1, 20):
        assert watch.update(100.0 + t, from_switch=t, from_browser=t) == []
    # The browser goes quiet at 119 (its last growth); the switch keeps sending.
    assert watch.update(123.9, from_switch=30, from_browser=19) == []
    assert watch.update(124.0, from_switch=31, from_browser=19) == [("from_browser", 5.0)]
    assert watch.update(130.0, from_switch=32, from_browser=19) == []  # reported once
    # Its audio comes back, then stops again: reported again, from the new last growth.
    assert watch.update(131.0, from_switch=33, from_browser=20) == []
    assert watch.update(135.5, from_switch=34, from_browser=20) == []
    assert watch.update(136.0, from_switch=35, from_browser=20) == [("from_browser", 5.0)]


def test_both_directions_are_judged_from_the_start_of_the_watch() -> None:
    watch = MediaWatch(10.0)  # the default threshold: 5 s
    assert watch.silence == 5.0
    assert watch.update(14.0, from_switch=0, from_browser=0) == []
    assert watch.update(17.5, from_switch=0, from_browser=0) == [
        ("from_switch", 7.5),
        ("from_browser", 7.5),
    ]
    assert watch.update(30.0, from_switch=0, from_browser=0) == []


def test_only_the_silent_direction_is_named() -> None:
    watch = MediaWatch(0.0, silence=2.0)
    assert watch.update(1.0, from_switch=5, from_browser=0) == []
    assert watch.update(2.0, from_switch=5, from_browser=0) == [("from_browser", 2.0)]
    assert watch.update(3.0, from_switch=5, from_browser=0) == [("from_switch", 2.0)]
