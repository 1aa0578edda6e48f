"""Unicast UDP media of a simulated channel (ESL `sendmsg` call-command `unicast`).

What FreeSWITCH 1.10.12 was seen to do (docs/freeswitch.rst):
* one datagram per 20 ms from the channel's `local-port` to the app's `remote-port`, raw L16,
  little-endian, at the channel's read rate, interleaved stereo for opus stereo=1;
* all-0xFF frames (CNG filler): sometimes as the first datagram, 2 around each DTMF digit,
  2 when answer follows pre_answer, and every frame while the far end sends no RTP;
* every datagram received from the app goes straight to the far end (no pacing, no buffer);
* with ``flags: native`` on a PCMU/PCMA channel (recorded, docs/freeswitch.rst): the codec
  payload instead of L16, 160 bytes per 20 ms, while the 0xFF filler keeps the L16 size
  (320 bytes); what the app sends is taken as bytes of that codec.

Not simulated: RTP, jitter, the DTMF-induced extra delay (docs/freeswitch.rst, fact 4),
codec distortion.
"""

from __future__ import annotations

import array
import asyncio
import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from esl_bridge.logs import get_logger

from . import g711
from .codecs import Codec

log = get_logger(__name__)

FRAME_S = 0.020


def tone_frame(freq: float, codec: Codec, index: int, amplitude: int = 8000) -> bytes:
    """Frame `index` of a continuous sine, little-endian int16, interleaved if stereo."""
    n = codec.rate // 50
    start = index * n
    w = 2 * math.pi * freq / codec.rate
    samples = array.array("h")
    for i in range(n):
        v = int(amplitude * math.sin(w * (start + i)))
        samples.extend([v] * codec.channels)
    if sys.byteorder != "little":
        samples.byteswap()
    return samples.tobytes()


def is_ff_frame(frame: bytes) -> bool:
    return len(frame) > 0 and frame.count(0xFF) == len(frame)


@dataclass
class AudioSource:
    """What the far end (phone) sends into the channel.

    kind: "tone" (sine at `freq`), "silence" (zeros), "none" (no RTP: every unicast frame is
    0xFF), "echo" (returns what the app sent, one frame later), "custom" (`producer`), or
    "unicast_fails" (fault: the unicast command is taken but its port is never bound, as
    after FreeSWITCH's "Failure creating unicast connection": nothing sent or received).
    """

    kind: str = "tone"
    freq: float = 440.0
    amplitude: int = 8000
    producer: Callable[[int, Codec], bytes] | None = None

    @classmethod
    def parse(cls, spec: str | AudioSource | None) -> AudioSource:
        """'tone440', 'tone2000', 'silence', 'none', 'echo', 'unicast_fails' -> AudioSource."""
        if isinstance(spec, AudioSource):
            return spec
        if spec is None:
            return cls("tone", 440.0)
        if spec.startswith("tone"):
            return cls("tone", float(spec[4:] or 440))
        if spec in ("silence", "none", "echo", "unicast_fails"):
            return cls(spec)
        raise ValueError(
            f"unknown audio spec {spec!r} (tone<Hz>, silence, none, echo, unicast_fails)"
        )


@dataclass
class Datagram:
    monotonic: float
    data: bytes


@dataclass
class UnicastStream:
    """One activated unicast (one UDP port pair) of a channel."""

    codec: Codec
    local: tuple[str, int]
    remote: tuple[str, int]
    source: AudioSource
    first_frame_ff: bool = True
    received: list[Datagram] = field(default_factory=list)
    sent: list[Datagram] = field(default_factory=list)
    keep_sent: bool = True
    native: bool = False  # flags: native: G.711 payload bytes, not L16
    frames_sent: int = 0
    frames_received: int = 0
    error: str | None = None
    started: bool = False
    stopped: bool = False
    _ff_pending: int = 0
    _echo: deque[bytes] = field(default_factory=lambda: deque(maxlen=50))
    _transport: asyncio.DatagramTransport | None = None
    _task: asyncio.Task[None] | None = None
    _index: int = 0

    # ---- control (event loop only) ---------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        stream = self

        class _Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                stream._on_datagram(data)

            def error_received(self, exc: Exception) -> None:
                # ICMP port unreachable while the app is not listening yet: keep sending.
                host, port = stream.local
                log.debug("sim.unicast_send_failed", local=f"{host}:{port}", error=str(exc))

        if self.native and self.codec.name not in g711.SILENCE:
            # The real switch would send raw G.722 / Opus payloads: not simulated.
            self.error = f"native unicast of {self.codec.name} is not simulated"
            log.warning("sim.unicast_failed", error=self.error)
            return
        try:
            if self.source.kind == "unicast_fails":
                raise OSError("fault: unicast_fails")
            transport, _ = await loop.create_datagram_endpoint(_Proto, local_addr=self.local)
        except OSError as exc:
            # FreeSWITCH logs "Failure creating unicast connection" (CRIT) and nothing else.
            self.error = f"bind {self.local[0]}:{self.local[1]} failed: {exc}"
            log.warning("sim.unicast_failed", error=self.error)
            return
        self._transport = transport
        self.started = True
        if self.first_frame_ff:
            self._ff_pending = 1
        self._task = loop.create_task(self._pace())

    def stop(self) -> None:
        self.stopped = True
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def inject_ff(self, frames: int) -> None:
        """Queue all-0xFF frames (DTMF, pre_answer -> answer), as FreeSWITCH does."""
        self._ff_pending += frames

    # ---- observation (any thread) ------------------------------------------------------------
    def received_bytes(self, include_ff: bool = False) -> bytes:
        frames = list(self.received)
        return b"".join(d.data for d in frames if include_ff or not is_ff_frame(d.data))

    @property
    def audio_frame_bytes(self) -> int:
        """Size of one 20 ms audio datagram: L16, or one byte per sample when native."""
        if self.native:
            return self.codec.rate // 50 * self.codec.channels
        return self.codec.frame_bytes

    def received_samples(self, include_ff: bool = False) -> array.array[int]:
        """What the app sent, as int16 samples (0xFF filler frames dropped by default);
        decoded from the channel's codec when native."""
        raw = self.received_bytes(include_ff)
        if self.native:
            return g711.decode(self.codec.name, raw)
        out = array.array("h")
        out.frombytes(raw[: len(raw) // 2 * 2])
        if sys.byteorder != "little":
            out.byteswap()
        return out

    # ---- internals ---------------------------------------------------------------------------
    def _on_datagram(self, data: bytes) -> None:
        self.frames_received += 1
        self.received.append(Datagram(time.monotonic(), data))
        if self.source.kind == "echo":
            self._echo.append(data)

    def _next_frame(self) -> bytes:
        if self._ff_pending > 0:
            self._ff_pending -= 1
            self._index += 1
            return b"\xff" * self.codec.frame_bytes  # the L16 size, native or not (recorded)
        src = self.source
        idx = self._index
        self._index += 1
        if src.kind == "none":
            return b"\xff" * self.codec.frame_bytes
        if src.kind == "echo":
            size = self.audio_frame_bytes
            if self._echo:
                frame = self._echo.popleft()
                if len(frame) == size:
                    return frame
                return (frame + self._silence(size))[:size]
            return self._silence(size)
        if src.kind == "tone":
            frame = tone_frame(src.freq, self.codec, idx, src.amplitude)
        elif src.kind == "custom" and src.producer is not None:
            frame = src.producer(idx, self.codec)
        else:
            frame = bytes(self.codec.frame_bytes)
        return g711.encode(self.codec.name, frame) if self.native else frame

    def _silence(self, size: int) -> bytes:
        return bytes([g711.SILENCE[self.codec.name]]) * size if self.native else bytes(size)

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        n = 0
        try:
            while not self.stopped:
                transport = self._transport
                if transport is None:
                    return
                frame = self._next_frame()
                transport.sendto(frame, self.remote)
                self.frames_sent += 1
                if self.keep_sent:
                    self.sent.append(Datagram(time.monotonic(), frame))
                n += 1
                target = t0 + n * FRAME_S
                delay = target - loop.time()
                if delay < -0.2:
                    # The loop stalled (debugger, overloaded CI): re-anchor instead of bursting.
                    t0, n = loop.time(), 0
                    delay = FRAME_S
                await asyncio.sleep(max(delay, 0.0))
        except asyncio.CancelledError:
            pass
