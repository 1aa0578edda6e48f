"""The per-call UDP endpoint of ESL ``unicast``: raw L16 (or, with ``flags: native``, G.711)
frames to and from FreeSWITCH.

What a real FreeSWITCH 1.10.12 does (docs/freeswitch.rst, facts 2 and 3):

* one datagram per 20 ms read frame, raw L16 **little-endian**, at the channel's read rate
  (``variable_read_rate``: 8000 for PCMU/PCMA, 16000 for G.722, 48000 for Opus), interleaved
  stereo (3840 B) for Opus ``stereo=1`` -- and then it expects stereo back;
* frames of all 0xFF bytes are its comfort-noise filler: silence, never audio;
* its datagrams arrive 20 ms +-5 ms apart, from its ``local-port``;
* every datagram it receives goes straight into RTP with no buffer and no pacing, so **we**
  pace: one frame per 20 ms on an absolute schedule;
* with ``flags: native`` on a PCMU/PCMA channel: 160 bytes of codec payload per 20 ms both
  ways, while its filler stays 320 bytes of 0xFF (``ChannelFormat.filler_bytes``).

The timing logic is sans-I/O (``FrameQueue``, ``Schedule``, ``ReceiveBuffer``, ``SendPacer``:
plain classes that take ``now`` and return frames) so a fake clock can drive an hour of call
in milliseconds. ``UnicastEndpoint`` is the thin asyncio adapter around them.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import random
import socket
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from esl_bridge.logs import get_logger

from .ticker import TICK_EPS, SharedTicker, shared_ticker
from .udp_send import DirectDatagrams

__all__ = [
    "FRAME_S",
    "ChannelFormat",
    "FrameQueue",
    "JitterSettings",
    "MediaCounters",
    "NoFreePorts",
    "PairProbe",
    "PortAllocator",
    "PortPair",
    "ReceiveBuffer",
    "Schedule",
    "SendPacer",
    "UnicastEndpoint",
    "UnicastParams",
    "UnicastStats",
    "bind_probe",
    "channel_codec_name",
    "is_cng_frame",
    "is_local_address",
    "le16_to_native",
    "native_to_le16",
]

log = get_logger("media")

FRAME_S = 0.020  # FreeSWITCH's unicast frame: 20 ms
SUPPORTED_RATES = (8000, 16000, 48000)


# --------------------------------------------------------------------------- format


NATIVE_CODECS = ("PCMU", "PCMA")
# One byte per sample; the byte a codec encodes zero with (mu-law 0xFF, A-law 0xD5).
CODEC_SILENCE = {"PCMU": 0xFF, "PCMA": 0xD5}


@dataclass(frozen=True)
class ChannelFormat:
    """Format of a channel's unicast stream.

    ``codec`` "L16": FreeSWITCH's default, raw L16 little-endian at the channel's read rate.
    "PCMU"/"PCMA": ``flags: native`` (the G.711 fast path): FreeSWITCH sends each read
    frame's codec payload as it came off RTP (160 bytes per 20 ms, 8 kHz mono) and takes
    back datagrams of the same codec (docs/freeswitch.rst, native unicast).
    """

    rate: int
    channels: int = 1
    codec: str = "L16"

    def __post_init__(self) -> None:
        if self.codec != "L16" and self.codec not in NATIVE_CODECS:
            raise ValueError(f"unsupported unicast codec {self.codec!r} (want L16, PCMU or PCMA)")
        if self.rate not in SUPPORTED_RATES:
            raise ValueError(f"unsupported unicast rate {self.rate} (want {SUPPORTED_RATES})")
        if self.channels not in (1, 2):
            raise ValueError(f"unsupported channel count {self.channels} (want 1 or 2)")
        if self.codec != "L16" and (self.rate, self.channels) != (8000, 1):
            raise ValueError(f"{self.codec} is 8000 Hz mono, not {self.rate} Hz x{self.channels}")

    @classmethod
    def native(cls, codec: str) -> ChannelFormat:
        """The format of ``flags: native`` for a G.711 channel (``codec`` any case)."""
        name = codec.upper()
        if name not in NATIVE_CODECS:
            raise ValueError(f"no native unicast for codec {codec!r} (want PCMU or PCMA)")
        return cls(8000, 1, name)

    @property
    def is_native(self) -> bool:
        return self.codec != "L16"

    @property
    def samples_per_frame(self) -> int:
        return self.rate // 50

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.is_native else 2

    @property
    def frame_bytes(self) -> int:
        return self.samples_per_frame * self.channels * self.bytes_per_sample

    @property
    def filler_bytes(self) -> int:
        """Size of FreeSWITCH's all-0xFF CNG filler: the *decoded* (L16) frame size, in
        native mode too (recorded: 320 bytes on a native PCMU stream)."""
        return self.samples_per_frame * self.channels * 2

    @property
    def layout(self) -> str:
        return "stereo" if self.channels == 2 else "mono"

    def silence(self) -> bytes:
        if self.is_native:
            return bytes([CODEC_SILENCE[self.codec]]) * self.frame_bytes
        return bytes(self.frame_bytes)

    @classmethod
    def from_channel(cls, headers: Mapping[str, str]) -> ChannelFormat:
        """From the channel's variables (an event or the connect reply, after answer).

        ``variable_read_rate`` is the L16 rate FreeSWITCH uses (16000 for G.722, whose
        ``rtp_use_codec_rate`` says 8000); ``variable_rtp_use_codec_channels`` is 2 for Opus
        stereo=1. ``Channel-Read-Codec-Rate`` is a fallback for the rate.
        """
        raw_rate = headers.get("variable_read_rate") or headers.get("Channel-Read-Codec-Rate")
        if not raw_rate:
            raise ValueError("channel has no read rate yet (unicast needs an answered channel)")
        raw_channels = headers.get("variable_rtp_use_codec_channels") or "1"
        return cls(rate=int(raw_rate), channels=int(raw_channels))


def channel_codec_name(headers: Mapping[str, str]) -> str | None:
    """The channel's read codec, upper-case ("PCMU", "PCMA", "G722", "OPUS"), or None.

    Recorded (a PCMU call, every event after answer): ``Channel-Read-Codec-Name: PCMU`` and
    ``variable_read_codec: PCMU``; Opus says ``opus``. A CHANNEL_PROGRESS_MEDIA of early
    media carries neither, so None there: the caller takes the L16 path.
    """
    for key in ("Channel-Read-Codec-Name", "variable_read_codec"):
        value = (headers.get(key) or "").strip()
        if value:
            return value.upper()
    return None


def is_cng_frame(data: bytes) -> bool:
    """FreeSWITCH's no-audio filler: every byte 0xFF."""
    return len(data) > 0 and data.count(0xFF) == len(data)


def le16_to_native(data: bytes) -> bytes:
    """Unicast L16 is little-endian; PyAV's s16 is host order."""
    if sys.byteorder == "little":
        return data
    import array

    samples = array.array("h", data)
    samples.byteswap()
    return samples.tobytes()


native_to_le16 = le16_to_native  # the swap is its own inverse


# --------------------------------------------------------------------------- timing core


@dataclass(frozen=True)
class JitterSettings:
    """Buffer tuning, shared by both directions.

    target_depth: frames kept ready in front of the clock; the queue is trimmed back to it
    when, for ``window`` ticks in a row, it held more (so delay cannot creep up, and a
    burst after a stall is gone within ``window`` x 20 ms).
    max_depth: hard bound; the oldest frame is dropped on overflow.
    margin_s: receive side only: play a frame this long after FreeSWITCH's datagram phase,
    which absorbs its +-5 ms arrival jitter.
    max_catchup: after a stall of the event loop, at most this many overdue ticks are
    served at once; older ticks are skipped (counted as late) with their frames, so the
    delay after the stall is the delay before it, and the schedule keeps its phase.
    """

    target_depth: int = 1
    max_depth: int = 6
    margin_s: float = 0.010
    window: int = 25
    max_catchup: int = 10


class Schedule:
    """Tick k is at ``start + k * period``: computed, never accumulated, so no drift."""

    def __init__(self, start: float, period: float = FRAME_S) -> None:
        self.start = start
        self.period = period
        self.index = 0

    def deadline(self) -> float:
        return self.start + self.index * self.period

    def due(self, now: float) -> bool:
        return now >= self.deadline()

    def advance(self) -> None:
        self.index += 1

    def skip_to(self, now: float, keep: int) -> int:
        """Skip overdue ticks so that at most ``keep`` remain due; returns how many."""
        due = int((now - self.start) / self.period) + 1 - self.index
        skipped = max(0, due - keep)
        self.index += skipped
        return skipped


class FrameQueue:
    """Bounded FIFO of equal-size frames with delay control.

    ``pop`` is called once per tick. Depth at a tick above ``target_depth`` is slack; when
    every one of the last ``window`` ticks had slack, the smallest slack seen in that run is
    pure added delay (a burst after a stall, a faster far clock) and is dropped at once.
    One tick at or below target restarts the run, so jitter the buffer really needs to
    absorb is never trimmed away.
    """

    def __init__(self, settings: JitterSettings) -> None:
        self.settings = settings
        self._frames: deque[bytes] = deque()
        self._run_ticks = 0  # consecutive ticks with depth above target
        self._run_min = 0  # smallest depth during that run
        self.pushed = 0
        self.popped = 0
        self.underruns = 0
        self.overflow_drops = 0
        self.trimmed = 0
        self.late_drops = 0

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, frame: bytes) -> None:
        if len(self._frames) >= self.settings.max_depth:
            self._frames.popleft()  # drop oldest: delay never grows past max_depth
            self.overflow_drops += 1
        self._frames.append(frame)
        self.pushed += 1

    def pop(self) -> bytes | None:
        """One tick: the next frame, or None on underrun (the caller conceals)."""
        depth = len(self._frames)
        target = self.settings.target_depth
        if depth > target:
            self._run_min = depth if self._run_ticks == 0 else min(self._run_min, depth)
            self._run_ticks += 1
        else:
            self._run_ticks = 0
        frame = self._frames.popleft() if self._frames else None
        if frame is None:
            self.underruns += 1
        else:
            self.popped += 1
        if self._run_ticks >= self.settings.window:
            for _ in range(min(self._run_min - target, len(self._frames))):
                self._frames.popleft()
                self.trimmed += 1
            self._run_ticks = 0
        return frame

    def drop_oldest(self, count: int) -> int:
        """Discard the frames of ticks that were skipped (a stalled loop): they are late,
        and playing them later would add their delay for good."""
        dropped = max(0, min(count, len(self._frames)))
        for _ in range(dropped):
            self._frames.popleft()
        self.late_drops += dropped
        return dropped

    def clear(self) -> None:
        self._frames.clear()


class ReceiveBuffer:
    """FreeSWITCH -> browser: jitter buffer plus playout clock.

    Frames are sequenced by arrival (unicast has no sequence numbers). The playout clock
    runs from ``created_at``; the first datagram re-anchors it to ``arrival + margin`` so the
    playout phase sits in the middle of FreeSWITCH's 20 ms +-5 ms arrival spread. Missing
    frames are concealed with silence; 0xFF frames become silence.
    """

    def __init__(
        self, fmt: ChannelFormat, created_at: float, settings: JitterSettings | None = None
    ) -> None:
        self.fmt = fmt
        self.settings = settings or JitterSettings()
        self.queue = FrameQueue(self.settings)
        self.schedule = Schedule(created_at)
        self._silence = fmt.silence()
        self._frame_bytes = fmt.frame_bytes  # per datagram: a plain int, not a property
        self._filler_bytes = fmt.filler_bytes
        self.started = False
        self.packets = 0
        self.bytes = 0
        self.cng_frames = 0
        self.size_mismatches = 0
        self.late_frames = 0
        self.late_ticks = 0
        self.jitter_s = 0.0
        self.last_arrival: float | None = None
        self.last_audio: bytes | None = None  # the last frame that was not filler
        self._underrun_since_arrival = False

    def push(self, data: bytes, now: float) -> None:
        self.packets += 1
        self.bytes += len(data)
        # FreeSWITCH's filler is all 0xFF at the L16 size; in native mode that is twice a
        # frame, and a 160-byte frame of 0xFF bytes is codec audio (mu-law silence).
        filler = len(data) == self._filler_bytes and is_cng_frame(data)
        if len(data) != self._frame_bytes and not filler:
            self.size_mismatches += 1
            return
        if self.last_arrival is None:
            self.schedule = Schedule(now + self.settings.margin_s)
            self.started = True
        else:
            # RFC 3550 interarrival jitter against the nominal 20 ms spacing.
            deviation = abs((now - self.last_arrival) - FRAME_S)
            self.jitter_s += (deviation - self.jitter_s) / 16
        if self._underrun_since_arrival:
            self.late_frames += 1
            self._underrun_since_arrival = False
        self.last_arrival = now
        if filler:
            self.cng_frames += 1
            data = self._silence  # keeps its 20 ms slot, never played as audio
        else:
            self.last_audio = data  # its level is read once a second (media/levels.py)
        self.queue.push(data)

    def next_deadline(self) -> float:
        return self.schedule.deadline()

    def pop(self, now: float) -> bytes:
        """The frame for the tick that is due at ``now`` (call at ``next_deadline()``; a
        call up to ``TICK_EPS`` before it takes that tick)."""
        schedule = self.schedule
        skipped = schedule.skip_to(max(now, schedule.deadline()), self.settings.max_catchup)
        schedule.advance()
        self.late_ticks += skipped
        if not self.started:
            return self._silence
        if skipped:  # the common tick skips nothing: no call
            self.queue.drop_oldest(skipped)
        frame = self.queue.pop()
        if frame is None:
            self._underrun_since_arrival = True
            return self._silence
        return frame


class SendPacer:
    """Browser -> FreeSWITCH: a small buffer in front of an absolute 20 ms clock.

    ``start(now)`` when FreeSWITCH's first datagram arrived (only then do we know where to
    send, like the recorded app). ``poll(now)`` returns the frames due; at a tick with no
    frame it sends silence, so FreeSWITCH (which writes each datagram straight into RTP)
    always gets exactly one frame per 20 ms.
    """

    def __init__(self, fmt: ChannelFormat, settings: JitterSettings | None = None) -> None:
        self.fmt = fmt
        self.settings = settings or JitterSettings()
        self.queue = FrameQueue(self.settings)
        self.schedule: Schedule | None = None
        self._silence = fmt.silence()
        self._frame_bytes = fmt.frame_bytes
        self.source_started = False
        self.last_frame: bytes | None = None  # the last frame pushed (not a silence tick)
        self.packets = 0
        self.bytes = 0
        self.silence_frames = 0
        self.late_ticks = 0
        self.size_mismatches = 0
        # What a tick with no browser frame sends instead of silence (a held call's
        # comfort tone, [media] browser_hold_tone); None: silence.
        self.filler: Callable[[], bytes] | None = None

    def push(self, frame: bytes) -> None:
        if len(frame) != self._frame_bytes:
            self.size_mismatches += 1
            return
        self.source_started = True
        self.last_frame = frame  # its level is read once a second (media/levels.py)
        self.queue.push(frame)

    def start(self, now: float) -> None:
        if self.schedule is None:
            self.schedule = Schedule(now)
            # What the browser said while FreeSWITCH was not listening yet is stale; keep
            # only the newest target_depth frames so the call does not start with a delay.
            self.queue.drop_oldest(len(self.queue) - self.settings.target_depth)

    @property
    def started(self) -> bool:
        return self.schedule is not None

    def next_deadline(self) -> float | None:
        return None if self.schedule is None else self.schedule.deadline()

    def poll(self, now: float) -> list[bytes]:
        if self.schedule is None:
            return []
        skipped = self.schedule.skip_to(now, self.settings.max_catchup)
        self.late_ticks += skipped
        self.queue.drop_oldest(skipped)
        out: list[bytes] = []
        while self.schedule.due(now):
            self.schedule.advance()
            frame = self.queue.pop() if self.source_started else None
            if frame is None:
                # Before the browser's audio starts this is plain silence, not an underrun
                # (the queue counts underruns only once the source has started).
                self.silence_frames += 1
                frame = self._silence if self.filler is None else self.filler()
            out.append(frame)
            self.packets += 1
            self.bytes += len(frame)
        return out


# --------------------------------------------------------------------------- ports


@dataclass(frozen=True)
class PortPair:
    """``fs_port``: FreeSWITCH's ``local-port``; ``local_port``: ours (its ``remote-port``)."""

    fs_port: int
    local_port: int


class NoFreePorts(RuntimeError):
    pass


PairProbe = Callable[[PortPair], bool]


class PortAllocator:
    """Hands out (FreeSWITCH, ours) port pairs from ``[port_min, port_max]``; sans-I/O.

    Pairs are (even, odd) neighbours like the recorded app's. A port still bound on the
    switch must never be handed out: a FreeSWITCH leg that outlived a killed gateway keeps
    its ``local-port`` and keeps sending to our old port, and a new call on that pair fails
    to bind on the switch and hears the old call. Three defences:

    * the choice is random within the range, so a restarted gateway does not start at the
      bottom of it again, where the leftovers of the one before sit;
    * a pair whose call ended stays out of use for ``quarantine`` seconds (a leg may
      outlive its call on the switch for a while), and so does a pair found busy;
    * ``probe`` (the only I/O, injected: ``bind_probe``), when given, must say that both
      ports of a pair are free before it is handed out.

    Every method takes ``now`` (any monotonic clock, the same for all calls).
    """

    def __init__(
        self,
        port_min: int,
        port_max: int,
        *,
        quarantine: float = 60.0,
        probe: PairProbe | None = None,
        rng: random.Random | None = None,
        max_probes: int = 64,
    ) -> None:
        first = port_min + (port_min % 2)
        self._pairs = [PortPair(p, p + 1) for p in range(first, port_max, 2)]
        if not self._pairs:
            raise ValueError(f"port range {port_min}-{port_max} holds no port pair")
        if quarantine < 0:
            raise ValueError("quarantine must not be negative")
        self.quarantine = quarantine
        self.probe = probe
        self.max_probes = max_probes
        self._rng = rng or random.Random()
        self._in_use: set[PortPair] = set()
        self._until: dict[PortPair, float] = {}  # pair -> end of its quarantine
        self.rejected = 0  # pairs the probe found bound

    @property
    def capacity(self) -> int:
        return len(self._pairs)

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    def quarantined(self, now: float) -> int:
        self._expire(now)
        return len(self._until)

    def _expire(self, now: float) -> None:
        for pair in [p for p, until in self._until.items() if until <= now]:
            del self._until[pair]

    def allocate(self, now: float) -> PortPair:
        self._expire(now)
        free = [p for p in self._pairs if p not in self._in_use and p not in self._until]
        if not free:
            raise NoFreePorts(
                f"no free unicast port pair: {len(self._in_use)} in use, "
                f"{len(self._until)} in quarantine, of {len(self._pairs)}"
            )
        probes = 0
        while free:
            # A random pick (swap-remove): no pair is tried twice, none is favoured.
            index = self._rng.randrange(len(free))
            free[index], free[-1] = free[-1], free[index]
            pair = free.pop()
            if self.probe is not None:
                if probes >= self.max_probes:
                    break
                probes += 1
                if not self.probe(pair):
                    self.reject(pair, now)
                    log.warning(
                        "media.unicast_pair_busy", fs_port=pair.fs_port, port=pair.local_port
                    )
                    continue
            self._in_use.add(pair)
            return pair
        raise NoFreePorts(
            f"no unicast port pair is free on this host ({probes} probed and found bound; "
            f"{len(self._until)} in quarantine, {len(self._in_use)} in use)"
        )

    def release(self, pair: PortPair, now: float) -> None:
        """The call of ``pair`` ended: back in the pool after the quarantine."""
        self._in_use.discard(pair)
        if self.quarantine > 0:
            self._until[pair] = now + self.quarantine

    def reject(self, pair: PortPair, now: float) -> None:
        """``pair`` was found bound by someone else: kept out for a quarantine."""
        self.rejected += 1
        self._in_use.discard(pair)
        self._until[pair] = now + max(self.quarantine, 1.0)


def is_local_address(address: str) -> bool:
    """True when ``address`` is loopback or one of this host's addresses (so a socket can
    be bound to it); False for anything else, names included."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))  # EADDRNOTAVAIL unless the address is ours
    except OSError:
        return False
    return True


def _port_free(address: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, port))  # no SO_REUSEADDR: any holder makes this fail
    except OSError:
        return False
    return True


def bind_probe(host: str, fs_host: str) -> PairProbe | None:
    """A probe that binds both ports of a pair for an instant: ``fs_port`` on ``fs_host``
    (FreeSWITCH's ``local-ip``) and ``local_port`` on ``host`` (ours). None when
    ``fs_host`` is not an address of this host: then nobody here can see its ports."""
    if not is_local_address(fs_host):
        return None

    def probe(pair: PortPair) -> bool:
        return _port_free(fs_host, pair.fs_port) and _port_free(host, pair.local_port)

    return probe


# --------------------------------------------------------------------------- endpoint


@dataclass(frozen=True)
class UnicastParams:
    """The headers of ``sendmsg`` call-command ``unicast`` (FreeSWITCH's point of view)."""

    local_ip: str
    local_port: int
    remote_ip: str
    remote_port: int
    transport: str = "udp"
    flags: str | None = None  # "native": G.711 payload bytes instead of L16

    def headers(self) -> dict[str, str]:
        headers = {
            "local-ip": self.local_ip,
            "local-port": str(self.local_port),
            "remote-ip": self.remote_ip,
            "remote-port": str(self.remote_port),
            "transport": self.transport,
        }
        if self.flags is not None:
            headers["flags"] = self.flags
        return headers


@dataclass
class MediaCounters:
    """Totals over every call of a gateway (for /metrics), shared by its endpoints."""

    foreign_packets: int = 0  # datagrams dropped: not from the call's switch port


@dataclass
class UnicastStats:
    """A snapshot of one call's unicast media."""

    rate: int
    channels: int
    codec: str = "L16"
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_cng_frames: int = 0
    rx_size_mismatches: int = 0
    rx_foreign_packets: int = 0
    rx_underruns: int = 0
    rx_overflow_drops: int = 0
    rx_trimmed: int = 0
    rx_late_drops: int = 0
    rx_late_frames: int = 0
    rx_late_ticks: int = 0
    rx_jitter_ms: float = 0.0
    rx_depth: int = 0
    tx_packets: int = 0
    tx_bytes: int = 0
    tx_silence_frames: int = 0
    tx_underruns: int = 0
    tx_overflow_drops: int = 0
    tx_trimmed: int = 0
    tx_late_drops: int = 0
    tx_late_ticks: int = 0
    tx_depth: int = 0
    tx_size_mismatches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: UnicastEndpoint) -> None:
        self.endpoint = endpoint
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.endpoint._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable while FreeSWITCH's side is not up yet, or already gone.
        log.debug("media.unicast_socket_error", error=str(exc))


class UnicastEndpoint:
    """One call's unicast UDP socket, receive buffer and paced sender.

    Life: ``await open()`` -> send ``params`` to FreeSWITCH as the unicast command (only when
    the call's ``UnicastGate``, core/unicast_gate.py, says so) -> ``read_frame`` /
    ``write_frame`` -> ``await close()``.
    """

    #: Seconds close() waits for asyncio to really close the socket.
    close_wait = 1.0

    def __init__(
        self,
        fmt: ChannelFormat,
        allocator: PortAllocator,
        *,
        host: str = "127.0.0.1",
        fs_host: str | None = None,
        settings: JitterSettings | None = None,
        counters: MediaCounters | None = None,
    ) -> None:
        if host in ("0.0.0.0", "::", "") or fs_host in ("0.0.0.0", "::"):
            # FreeSWITCH is told remote-ip = host: it must be an address it can send to.
            raise ValueError("unicast needs concrete addresses, not a wildcard")
        self.fmt = fmt
        self.host = host
        self.fs_host = fs_host or host
        self.settings = settings or JitterSettings()
        self._allocator = allocator
        self.pair: PortPair | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self._datagrams: DirectDatagrams | None = None  # sends on the transport's socket
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ticker: SharedTicker | None = None
        self.sending = False  # the paced sender's tick callback is scheduled
        self._expected: tuple[str, int] | None = None
        self.fs_addr: tuple[str, int] | None = None
        self.rx: ReceiveBuffer | None = None
        self.tx = SendPacer(fmt, self.settings)
        self.foreign_packets = 0
        self.counters = counters
        self._opened_at: float | None = None
        self._requested_at: float | None = None
        self.closed = False

    # -- life

    async def open(self, bind_attempts: int = 8) -> UnicastParams:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.rx = ReceiveBuffer(self.fmt, loop.time(), self.settings)
        self._opened_at = loop.time()
        last_error: OSError | None = None
        for _ in range(bind_attempts):
            pair = self._allocator.allocate(loop.time())
            try:
                transport, protocol = await loop.create_datagram_endpoint(
                    lambda: _Protocol(self), local_addr=(self.host, pair.local_port)
                )
            except OSError as exc:
                # Someone else holds the port: that pair sits out a quarantine; try another.
                self._allocator.reject(pair, loop.time())
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                last_error = exc
                continue
            self.pair = pair
            self._expected = (self.fs_host, pair.fs_port)
            self._transport = transport
            self._protocol = protocol
            self._datagrams = DirectDatagrams(transport, protocol)
            # One timer for every call's sender (media/ticker.py); it starts on
            # FreeSWITCH's first datagram (only then is it known where to send).
            self._ticker = shared_ticker()
            log.info(
                "media.unicast_open",
                host=self.host,
                fs_port=pair.fs_port,
                port=pair.local_port,
                rate=self.fmt.rate,
                channels=self.fmt.channels,
                codec=self.fmt.codec,
            )
            return self.params
        raise NoFreePorts(f"no bindable unicast port after {bind_attempts} tries: {last_error}")

    @property
    def params(self) -> UnicastParams:
        if self.pair is None:
            raise RuntimeError("endpoint is not open")
        return UnicastParams(
            local_ip=self.fs_host,
            local_port=self.pair.fs_port,
            remote_ip=self.host,
            remote_port=self.pair.local_port,
            flags="native" if self.fmt.is_native else None,
        )

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.sending = False  # the next tick callback sees it and is not rescheduled
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            self._datagrams = None
            if self._protocol is not None:
                # asyncio closes the socket one loop turn later; wait, so the port is
                # really free when close() returns. A starved loop can take longer: that
                # is no reason to keep the pair or skip the rest of the call's teardown
                # (the pair is quarantined, and open() skips a port still bound).
                try:
                    await asyncio.wait_for(asyncio.shield(self._protocol.lost), self.close_wait)
                except TimeoutError:
                    log.warning("media.unicast_close_slow", waited=self.close_wait)
        if self.pair is not None:
            self._allocator.release(self.pair, self._now())
            log.info("media.unicast_closed", fs_port=self.pair.fs_port, port=self.pair.local_port)
        if self.rx is not None:
            self.rx.queue.clear()
        self.tx.queue.clear()

    def _now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    # -- FreeSWITCH -> us

    @property
    def expected_source(self) -> tuple[str, int] | None:
        """Where the channel's datagrams come from: FreeSWITCH sends from its
        ``local-port`` on its ``local-ip``, and from nowhere else."""
        return self._expected

    def _on_datagram(self, data: bytes, addr: tuple[Any, int]) -> None:
        if self.closed or self.rx is None or self._loop is None:
            return
        if addr != self._expected and (addr[0], addr[1]) != self._expected:
            # Another call's leg, a leftover of a killed gateway, a stranger: never
            # played, never answered (we learn nothing from it).
            self.foreign_packets += 1
            if self.counters is not None:
                self.counters.foreign_packets += 1
            if self.foreign_packets == 1:  # once per call; the count goes into media_stats
                log.warning(
                    "media.unicast_foreign_datagram",
                    source=f"{addr[0]}:{addr[1]}",
                    expected=f"{self.fs_host}:{self.pair.fs_port if self.pair else None}",
                    port=self.pair.local_port if self.pair else None,
                )
            return
        now = self._loop.time()
        if self.fs_addr is None:
            self.fs_addr = self._expected
            self._start_sending(now)
        self.rx.push(data, now)

    def next_playout(self) -> float:
        """Loop time at which the next frame toward the browser is due."""
        assert self.rx is not None, "endpoint is not open"
        return self.rx.next_deadline()

    def read_frame(self, now: float) -> bytes:
        """The frame for the playout tick due at ``now`` (or just before it, within
        ``TICK_EPS``): L16 little-endian, or the native codec's bytes (``fmt.frame_bytes``
        either way)."""
        assert self.rx is not None, "endpoint is not open"
        return self.rx.pop(now)

    # -- us -> FreeSWITCH

    def write_frame(self, frame: bytes) -> None:
        """Queue one exact 20 ms frame in the endpoint's format (L16 little-endian, or the
        native codec's 160 bytes) for the paced sender."""
        self.tx.push(frame)

    def _start_sending(self, now: float) -> None:
        self.tx.start(now)
        self.sending = True
        self._on_send_tick()

    def _on_send_tick(self) -> None:
        """The paced sender, run in the shared tick's callback: every frame due goes out,
        then the callback is scheduled for the next deadline (no task per call)."""
        datagrams, loop, ticker = self._datagrams, self._loop, self._ticker
        if not self.sending or datagrams is None or loop is None or ticker is None:
            self.sending = False
            return
        deadline = self.tx.next_deadline()
        assert deadline is not None and self.fs_addr is not None
        now = loop.time()
        if deadline - now <= TICK_EPS:
            for frame in self.tx.poll(max(now, deadline)):
                datagrams.send(frame, self.fs_addr)
            deadline = self.tx.next_deadline()
            assert deadline is not None
        ticker.call_at(deadline, self._on_send_tick)

    # -- stats

    def stats(self) -> UnicastStats:
        rx, tx = self.rx, self.tx
        s = UnicastStats(rate=self.fmt.rate, channels=self.fmt.channels, codec=self.fmt.codec)
        if rx is not None:
            s.rx_packets = rx.packets
            s.rx_bytes = rx.bytes
            s.rx_cng_frames = rx.cng_frames
            s.rx_size_mismatches = rx.size_mismatches
            s.rx_underruns = rx.queue.underruns
            s.rx_overflow_drops = rx.queue.overflow_drops
            s.rx_trimmed = rx.queue.trimmed
            s.rx_late_drops = rx.queue.late_drops
            s.rx_late_frames = rx.late_frames
            s.rx_late_ticks = rx.late_ticks
            s.rx_jitter_ms = round(rx.jitter_s * 1000, 3)
            s.rx_depth = len(rx.queue)
        s.rx_foreign_packets = self.foreign_packets
        s.tx_packets = tx.packets
        s.tx_bytes = tx.bytes
        s.tx_silence_frames = tx.silence_frames
        s.tx_underruns = tx.queue.underruns
        s.tx_overflow_drops = tx.queue.overflow_drops
        s.tx_trimmed = tx.queue.trimmed
        s.tx_late_drops = tx.queue.late_drops
        s.tx_late_ticks = tx.late_ticks
        s.tx_depth = len(tx.queue)
        s.tx_size_mismatches = tx.size_mismatches
        return s

    def unicast_requested(self, now: float) -> None:
        """The ``unicast`` command was sent now: the start timeout counts from here."""
        if self._requested_at is None:
            self._requested_at = now

    def not_started_for(self, now: float) -> float | None:
        """Seconds since the ``unicast`` command while no datagram came from the switch's
        port yet; None before the command and once the stream has started."""
        if self._requested_at is None or self.fs_addr is not None:
            return None
        return now - self._requested_at

    def seconds_since_rx(self, now: float) -> float | None:
        """For the media timeout: seconds since FreeSWITCH's last datagram, or since the
        endpoint opened when none came yet (a channel that never sends must time out
        too); None while the endpoint is not open."""
        if self.rx is None or self._opened_at is None:
            return None
        last = self.rx.last_arrival
        return now - (last if last is not None else self._opened_at)
