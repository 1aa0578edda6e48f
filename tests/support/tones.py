"""An audio track playing a tone, for aiortc peers standing in for browsers or phones."""

from __future__ import annotations

import asyncio
import fractions
import math

import av
import numpy as np
from aiortc import AudioStreamTrack
from aiortc.mediastreams import MediaStreamError


class ToneTrack(AudioStreamTrack):
    """A sine, 48 kHz s16 (stereo or mono), on an absolute 20 ms schedule: a browser's
    microphone or a SIP side's audio for an aiortc peer in the tests."""

    def __init__(self, freq: float, layout: str = "stereo") -> None:
        super().__init__()
        self.freq = freq
        self.layout = layout
        self.n = 0
        self.t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.t0 is None:
            self.t0 = loop.time()
        delay = self.t0 + self.n * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        samples = 960
        t = (np.arange(samples) + self.n * samples) / 48000
        mono = (8000 * np.sin(2 * math.pi * self.freq * t)).astype("<i2")
        data = np.repeat(mono, 2) if self.layout == "stereo" else mono
        frame = av.AudioFrame(format="s16", layout=self.layout, samples=samples)
        frame.planes[0].update(data.tobytes())
        frame.sample_rate = 48000
        frame.time_base = fractions.Fraction(1, 48000)
        frame.pts = self.n * samples
        self.n += 1
        return frame
