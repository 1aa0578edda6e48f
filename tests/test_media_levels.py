"""The level of one frame (media/levels.py), as the one-way audio verdicts read it: the
peak sample in dBov, from L16 or from the native unicast's G.711 bytes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from esl_bridge.media.levels import _TABLES, SILENCE_DBOV, peak_dbov
from esl_bridge.media.unicast import ChannelFormat, ReceiveBuffer, SendPacer
from esl_bridge.sim import g711


def l16(samples: list[int]) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def test_l16_peaks_in_dbov() -> None:
    assert peak_dbov(None) is None and peak_dbov(b"") is None
    assert peak_dbov(bytes(320)) == SILENCE_DBOV == -127.0
    assert peak_dbov(l16([0, 16384, -3])) == pytest.approx(20 * math.log10(0.5), abs=0.05)
    assert peak_dbov(l16([-32768, 0])) == 0.0  # the most negative sample is full scale
    assert peak_dbov(l16([1] * 160)) == -90.3
    assert peak_dbov(l16([11] * 160)) > -70.0 > peak_dbov(l16([10] * 160))  # the floor


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_g711_bytes_decode_as_the_simulator_decodes_them(codec: str) -> None:
    every = bytes(range(256))
    assert list(_TABLES[codec]) == list(g711.decode(codec, every))
    silence = bytes([g711.SILENCE[codec]]) * 160
    assert peak_dbov(silence, codec) < -70.0  # the codec's silence is below the floor
    tone = g711.encode(codec, l16([8000, -8000] * 80))
    assert peak_dbov(tone, codec) == pytest.approx(20 * math.log10(8000 / 32768), abs=0.3)


def test_the_unicast_buffers_keep_the_last_frame_each_way_and_filler_is_not_one() -> None:
    fmt = ChannelFormat(8000)
    rx = ReceiveBuffer(fmt, created_at=0.0)
    audio = l16([1000] * 160)
    rx.push(audio, 0.0)
    rx.push(b"\xff" * 320, 0.02)  # FreeSWITCH's filler
    assert rx.last_audio is audio and rx.cng_frames == 1
    tx = SendPacer(fmt)
    assert tx.last_frame is None
    tx.push(audio)
    tx.push(b"short")  # refused: not a frame
    assert tx.last_frame is audio
