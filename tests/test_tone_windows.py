"""The tone finder the browser tests rely on (support/tone_windows.py): it counts the
100 ms windows that carry the tone on every channel, and nothing else."""

from __future__ import annotations

import math

import numpy as np
from support.tone_windows import TONE_WINDOWS, describe, tone_windows

RATE = 16000


def tone(hz: float, seconds: float, rate: int = RATE, level: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (level * np.sin(2 * math.pi * hz * t)).astype(np.int16)


def test_each_whole_window_of_the_tone_counts() -> None:
    assert tone_windows([tone(1000, 1.0)], RATE, 1000) == 10
    assert tone_windows([tone(1000, 1.05)], RATE, 1000) == 10  # the partial window: not
    assert tone_windows([tone(1000, 0.3, rate=48000)], 48000, 1000) == 3


def test_a_shifted_tone_silence_or_a_silent_channel_do_not_count() -> None:
    assert tone_windows([tone(750, 1.0)], RATE, 1000) == 0  # the starved browser's pitch
    assert tone_windows([tone(1040, 1.0)], RATE, 1000) == 0  # a 4 % rate error
    assert tone_windows([tone(1000, 1.0, level=100)], RATE, 1000) == 0  # near silence
    silent = np.zeros(RATE, dtype=np.int16)
    assert tone_windows([tone(1000, 1.0), silent], RATE, 1000) == 0
    assert tone_windows([tone(1000, 1.0), tone(1000, 1.0)], RATE, 1000) == 10


def test_stretches_of_the_tone_among_others_are_counted_together() -> None:
    """What a starved Chromium sent: the tone, 750 Hz for a while, the tone again."""
    mixed = np.concatenate([tone(1000, 0.3), tone(750, 0.4), tone(1000, 0.2), tone(750, 0.1)])
    assert tone_windows([mixed], RATE, 1000) == 5 == TONE_WINDOWS
    assert describe(mixed, RATE).split()[:4] == ["1000/5657", "1000/5657", "1000/5657", "750/5657"]
