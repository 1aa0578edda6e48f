"""Finding a browser's test tone in the audio it sent, window by window.

Chromium's fake microphone (support/browser.py: a 1 kHz WAV file) does not always
deliver that tone on a starved machine: with four CPU hogs and other suites beside it, a
run recorded at the simulated phone had stretches of 100-300 ms where the 1 kHz tone gave
way to 750 Hz (with 1250 Hz beside it), then came back; every packet of the browser had
arrived and been decoded (the gateway's receive stats: nothing lost, concealed or late),
and the browser had sent fewer packets than real time. One FFT over a whole second then
peaked at 750 Hz. What the gateway can get wrong (a rate, the channel layout, a codec)
moves the tone in *every* window, so the tests count 100 ms windows that carry the tone,
on every channel, and wait until there are enough of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WINDOW_S = 0.1  # 10 Hz resolution: a tone off by a rate error (>= 4 %) is 40 Hz away
TONE_WINDOWS = 5  # half a second of the tone, not necessarily in one piece
TOLERANCE_HZ = 15.0
MIN_RMS = 200.0  # below this a window is near silence (the tones are at -12 dBFS)


def _windows(samples: np.ndarray, rate: int) -> list[np.ndarray]:
    size = int(rate * WINDOW_S)
    return [samples[i : i + size] for i in range(0, len(samples) - size + 1, size)]


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    x = samples.astype(float)
    x -= x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(float) ** 2)))


def tone_windows(channels: Sequence[np.ndarray], rate: int, hz: float) -> int:
    """How many whole 100 ms windows carry ``hz`` (within TOLERANCE_HZ, louder than
    MIN_RMS) on every one of ``channels`` (1-D sample arrays of equal length)."""
    per_channel = [_windows(column, rate) for column in channels]
    count = 0
    for windows in zip(*per_channel, strict=True):
        if all(
            _rms(w) > MIN_RMS and abs(dominant_hz(w, rate) - hz) <= TOLERANCE_HZ for w in windows
        ):
            count += 1
    return count


def describe(samples: np.ndarray, rate: int, limit: int = 50) -> str:
    """The first ``limit`` 100 ms windows of ``samples`` as dominant Hz/rms: for a
    failure's message."""
    windows = _windows(samples, rate)
    shown = " ".join(f"{dominant_hz(w, rate):.0f}/{_rms(w):.0f}" for w in windows[:limit])
    return shown + (f" ... ({len(windows)} windows)" if len(windows) > limit else "")
