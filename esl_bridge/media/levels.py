"""The level of one 20 ms frame, for the one-way audio verdicts (core/media_verdict.py):
the peak sample against full scale, in dBov. Called once per call per second on the last
frame a hop kept (never per packet)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SILENCE_DBOV", "peak_dbov"]

#: The level of digital silence (RFC 6465's lowest level, -127 dBov).
SILENCE_DBOV = -127.0


def _g711_table(alaw: bool) -> np.ndarray:
    """Linear value of each G.711 byte (ITU-T G.711 decoding, 16-bit scale)."""
    out = np.zeros(256, dtype=np.int32)
    for byte in range(256):
        if alaw:
            v = byte ^ 0x55
            exponent, mantissa = (v >> 4) & 0x07, v & 0x0F
            base = (mantissa << 4) + (8 if exponent == 0 else 0x108)
            sample = base << max(0, exponent - 1)
            out[byte] = sample if v & 0x80 else -sample
        else:
            v = ~byte & 0xFF
            exponent, mantissa = (v >> 4) & 0x07, v & 0x0F
            sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
            out[byte] = -sample if v & 0x80 else sample
    return out


_TABLES = {"PCMU": _g711_table(alaw=False), "PCMA": _g711_table(alaw=True)}


def peak_dbov(frame: bytes | None, codec: str = "L16") -> float | None:
    """Peak of ``frame`` in dBov (0 = full scale, ``SILENCE_DBOV`` for all zeros); None
    for no frame. ``codec``: "L16" (little-endian 16-bit, any channel count) or the
    native unicast's "PCMU"/"PCMA" bytes."""
    if not frame:
        return None
    table = _TABLES.get(codec)
    if table is not None:
        samples = table[np.frombuffer(frame, dtype=np.uint8)]
    else:
        samples = np.frombuffer(frame[: len(frame) & ~1], dtype="<i2").astype(np.int32)
    if samples.size == 0:
        return None
    peak = int(np.abs(samples).max())
    if peak == 0:
        return SILENCE_DBOV
    return max(SILENCE_DBOV, round(20 * math.log10(peak / 32768), 1))
