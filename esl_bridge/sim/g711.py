"""ITU-T G.711 mu-law (PCMU) and A-law (PCMA) for the simulated switch's native unicast.

The simulator encodes its tone source into codec bytes when the app asked for
``flags: native`` and decodes what the app sent back for its echo and analysis. Plain
tables, no dependency: 256 entries to decode, 65536 to encode (built on first use).
"""

from __future__ import annotations

import array
import sys
from functools import cache

__all__ = ["SILENCE", "decode", "encode"]

# The byte each codec encodes zero with.
SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}


_ULAW_SEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_ALAW_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for seg, end in enumerate(ends):
        if value <= end:
            return seg
    return len(ends)


def _ulaw_encode(sample: int) -> int:
    """The ITU reference (14-bit, bias 33): what FreeSWITCH's own G.711 does."""
    pcm = sample >> 2
    mask = 0xFF
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    pcm = min(pcm, 8159) + 0x21
    seg = _segment(pcm, _ULAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


def _ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    magnitude = ((((byte & 0x0F) << 3) + 0x84) << ((byte >> 4) & 0x07)) - 0x84
    return -magnitude if byte & 0x80 else magnitude


def _alaw_encode(sample: int) -> int:
    """The ITU reference (13-bit)."""
    pcm = sample >> 3
    mask = 0xD5
    if pcm < 0:
        pcm, mask = -pcm - 1, 0x55
    seg = _segment(pcm, _ALAW_SEG_END)
    if seg >= 8:
        return 0x7F ^ mask
    shift = 1 if seg < 2 else seg
    return ((seg << 4) | ((pcm >> shift) & 0x0F)) ^ mask


def _alaw_decode(byte: int) -> int:
    byte ^= 0x55
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    step = (mantissa << 4) + (8 if exponent == 0 else 0x108)
    magnitude = step << (exponent - 1) if exponent else step
    return magnitude if byte & 0x80 else -magnitude


@cache
def _decode_table(codec: str) -> tuple[int, ...]:
    fn = {"PCMU": _ulaw_decode, "PCMA": _alaw_decode}[codec]
    return tuple(fn(b) for b in range(256))


@cache
def _encode_table(codec: str) -> bytes:
    """Index: the int16 sample as unsigned (sample & 0xFFFF)."""
    fn = {"PCMU": _ulaw_encode, "PCMA": _alaw_encode}[codec]
    return bytes(fn(v - 65536 if v >= 32768 else v) for v in range(65536))


def encode(codec: str, l16_le: bytes) -> bytes:
    """Little-endian int16 mono samples -> one codec byte per sample."""
    samples = array.array("h")
    samples.frombytes(l16_le[: len(l16_le) // 2 * 2])
    if sys.byteorder != "little":
        samples.byteswap()
    table = _encode_table(codec)
    return bytes(table[s & 0xFFFF] for s in samples)


def decode(codec: str, data: bytes) -> array.array[int]:
    """Codec bytes -> int16 samples (host order)."""
    table = _decode_table(codec)
    return array.array("h", (table[b] for b in data))
