"""Opus through the system's libopus (``libopus.so.0``, Debian's libopus0), with ctypes.

Why not PyAV's ``libopus`` codec, which the gateway falls back to when the library is
missing:

* decoding: FFmpeg's libopus wrapper always outputs 48 kHz, so an 8 or 16 kHz channel
  would need a resampler per frame, and it offers no in-band FEC for a lost packet;
* encoding: PyAV sends every frame of a fixed-frame-size codec through a filter graph
  (its ``AudioResampler`` with ``frame_size``) even when nothing needs converting, which
  cost about a sixth of a bridged Opus call's CPU in a profile of ``benchmarks/media_cost.py``.

libopus itself encodes and decodes at 8, 12, 16, 24 and 48 kHz, so a channel at 8000,
16000 or 48000 Hz is coded at its own rate. The numbers below are libopus's API
(opus_defines.h): ``OPUS_APPLICATION_VOIP`` and the ``OPUS_SET_*`` requests.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = [
    "DecodeError",
    "LibOpusDecoder",
    "LibOpusEncoder",
    "load_libopus",
    "opus_backend",
]

OPUS_APPLICATION_VOIP = 2048
OPUS_SET_BITRATE_REQUEST = 4002
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MAX_PACKET = 1500  # bytes; a 20 ms voice packet at telephony bit rates is ~100


class DecodeError(ValueError):
    """libopus refused a packet."""


@functools.cache
def load_libopus() -> ctypes.CDLL | None:
    """The system's libopus (``libopus.so.0``), or None when it is not installed."""
    name = ctypes.util.find_library("opus")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int32,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_encoder_create.restype = ctypes.c_void_p
        lib.opus_encoder_create.argtypes = [
            ctypes.c_int32,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_int),
        ]
        # opus_encoder_ctl is variadic; every request used here takes one opus_int32.
        lib.opus_encoder_ctl.restype = ctypes.c_int
        lib.opus_encoder_ctl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int32]
        lib.opus_encode.restype = ctypes.c_int32
        lib.opus_encode.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_int32,
        ]
        lib.opus_encoder_destroy.restype = None
        lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    return lib


def opus_backend() -> str:
    """ "libopus" when the system's libopus is loadable (Opus encoded and decoded at the
    channel's rate, with FEC on the receive side), else "pyav". The first call looks the
    library up (``ctypes.util``, which may run ``ldconfig``): call it once at start-up
    rather than on the event loop mid-call."""
    return "libopus" if load_libopus() is not None else "pyav"


class LibOpusDecoder:
    """libopus (ctypes) at the channel's rate: PLC and in-band FEC included."""

    def __init__(self, rate: int) -> None:
        lib = load_libopus()
        if lib is None:
            raise RuntimeError("libopus is not available")
        self._lib = lib
        self.out_rate = rate
        error = ctypes.c_int(0)
        handle = lib.opus_decoder_create(rate, 1, ctypes.byref(error))
        if error.value != 0 or not handle:
            raise RuntimeError(f"opus_decoder_create failed ({error.value})")
        self._handle: int | None = handle
        self._max = rate * 120 // 1000  # the longest Opus packet: 120 ms
        self._pcm = ctypes.create_string_buffer(self._max * 2)
        self._last = rate // 50  # samples of the last frame: the size of a concealed one

    def decode(self, payload: bytes) -> bytes:
        n = self._lib.opus_decode(self._handle, payload, len(payload), self._pcm, self._max, 0)
        if n < 0:
            raise DecodeError(f"opus_decode error {n}")
        self._last = n or self._last
        return self._pcm.raw[: n * 2]

    def conceal(self, next_payload: bytes | None) -> bytes:
        if next_payload:  # FEC: the next packet carries a copy of this one, if it has any
            n = self._lib.opus_decode(
                self._handle, next_payload, len(next_payload), self._pcm, self._last, 1
            )
        else:
            n = self._lib.opus_decode(self._handle, None, 0, self._pcm, self._last, 0)
        if n <= 0:
            return bytes(self._last * 2)
        return self._pcm.raw[: n * 2]

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle:
            self._lib.opus_decoder_destroy(handle)

    def __del__(self) -> None:
        self.close()


class LibOpusEncoder:
    """libopus (ctypes), mono, at ``rate``: 20 ms of s16 (host order) in, one packet out."""

    def __init__(self, rate: int, bit_rate: int) -> None:
        if rate not in OPUS_RATES:
            raise ValueError(f"Opus does not encode at {rate} Hz (want one of {OPUS_RATES})")
        lib = load_libopus()
        if lib is None:
            raise RuntimeError("libopus is not available")
        self._lib = lib
        self.rate = rate
        self.samples = rate // 50
        error = ctypes.c_int(0)
        handle = lib.opus_encoder_create(rate, 1, OPUS_APPLICATION_VOIP, ctypes.byref(error))
        if error.value != 0 or not handle:
            raise RuntimeError(f"opus_encoder_create failed ({error.value})")
        self._handle: int | None = handle
        status = lib.opus_encoder_ctl(handle, OPUS_SET_BITRATE_REQUEST, bit_rate)
        if status != 0:
            self.close()
            raise ValueError(f"libopus refused bit rate {bit_rate} ({status})")
        self._out = ctypes.create_string_buffer(MAX_PACKET)

    def encode(self, pcm: bytes) -> bytes:
        if len(pcm) != self.samples * 2:
            raise ValueError(f"want {self.samples * 2} bytes of s16 mono, got {len(pcm)}")
        n = self._lib.opus_encode(self._handle, pcm, self.samples, self._out, MAX_PACKET)
        if n < 0:
            raise RuntimeError(f"opus_encode error {n}")
        return self._out.raw[:n]

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle:
            self._lib.opus_encoder_destroy(handle)

    def __del__(self) -> None:
        self.close()
