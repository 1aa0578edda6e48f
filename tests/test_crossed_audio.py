"""Audio can never cross between calls.

A gateway killed with kill -9 leaves FreeSWITCH legs behind that keep their unicast port
bound and keep sending to the gateway's old port. Here a "leftover" socket stands for such
a leg: bound to a pair's FreeSWITCH port (``fs_port``), sending a 1500 Hz tone to the
pair's gateway port (``local_port``), like the real leftover sends phone 1001's voice. A
new call through the real gateway and the simulator must not be given that pair, must
never play the leftover's tone to the web user, and must never send it a datagram.

And a unicast stream that never starts (FreeSWITCH's "Failure creating unicast
connection", which it reports only in its log) ends the call as ``unicast_not_started``
instead of carrying on in silence.

The web user is an aiortc peer on the gateway's loop; everything runs in a loopback-only
network namespace (tests/support/netns.py).
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from support.gateway_support import WebUser, assert_nothing_left, running_gateway, wait_until
from support.netns import loopback_only
from support.ports_and_waits import free_udp_range
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.web import GatewayCollector
from esl_bridge.sim import AudioSource, Extension

LEFTOVER_HZ = 1500.0  # the leftover leg's "voice"
PHONE_HZ = 440.0  # extension 1000 of the simulator


def free_block(size: int) -> int:
    """A base port such that base .. base+size-1 are all free UDP ports on loopback."""
    return free_udp_range(size)[0]


class Leftover:
    """A FreeSWITCH unicast leg that outlived its gateway: bound to ``fs_port``, sending
    8 kHz L16 frames of a tone to ``local_port`` every 20 ms, counting what it receives."""

    def __init__(self, fs_port: int, local_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", fs_port))
        self.sock.settimeout(0.02)
        self.target = ("127.0.0.1", local_port)
        self.received = 0
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Leftover:
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            t = (np.arange(160) + n * 160) / 8000
            frame = (9000 * np.sin(2 * math.pi * LEFTOVER_HZ * t)).astype("<i2").tobytes()
            try:
                self.sock.sendto(frame, self.target)
                self.sent += 1
            except OSError:
                pass
            n += 1
            try:  # doubles as the 20 ms pause
                while True:
                    self.sock.recvfrom(8192)
                    self.received += 1
            except (TimeoutError, BlockingIOError, OSError):
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def band_energy(audio: np.ndarray, rate: int, hz: float, width: float = 40.0) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio)))) ** 2
    freqs = np.fft.rfftfreq(len(audio), 1 / rate)
    return float(spectrum[(freqs > hz - width) & (freqs < hz + width)].sum())


def windows(audio: np.ndarray, rate: int) -> Iterator[np.ndarray]:
    """Quarter-second windows: a short burst of the leftover's tone cannot hide in an
    average over the whole call."""
    size = rate // 4
    for start in range(0, len(audio) - size + 1, size):
        yield audio[start : start + size]


def media_settings(base: int, pairs: int, extra: str = "") -> str:
    """``pairs`` unicast port pairs from ``base`` (and max_calls to match: the range must
    hold one pair per call); the first line still belongs to running_gateway's [limits]."""
    ports = f"unicast_port_min = {base}\nunicast_port_max = {base + 2 * pairs - 1}\n"
    return f"max_calls = {pairs}\n[media]\n{ports}{extra}"


@loopback_only(timeout=150)
def test_a_leftover_stream_on_a_pair_is_never_heard_nor_fed() -> None:
    # Four pairs; the first three are held by leftovers (the gateway's old port of each is
    # free, as after kill -9), so the new call can only be safe on the fourth.
    base = free_block(8)
    leftovers = [Leftover(base + 2 * i, base + 2 * i + 1).start() for i in range(3)]
    clean = (base + 6, base + 7)
    try:
        with running_gateway(media_settings(base, 4)) as (gateway, sim):
            controller = gateway.controller
            assert controller is not None
            alice = WebUser(gateway, "alice").connect()
            peer = WebPeer(alice)
            alice.invite("1000", "ch-x")
            alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
            peer.offer("1000", "ch-x")
            [channel] = sim.channels()
            wait_until(lambda: channel.unicast is not None, 20, "the unicast command")
            stream = channel.unicast
            assert stream is not None
            wait_until(lambda: len(peer.heard) >= 150, 30, "audio at the web user")
            peer.heard.clear()
            wait_until(lambda: len(peer.heard) >= 100, 20, "2 s more audio at the web user")
            audio, rate = peer.audio()
            problems = []
            # (a) the call got the one pair nobody holds, and FreeSWITCH's side bound it.
            if (stream.local[1], stream.remote[1]) != clean or stream.error is not None:
                problems.append(f"pair {stream.local[1]}/{stream.remote[1]}: {stream.error}")
            # (b) the web user hears the phone, never the leftover, in any quarter second.
            for window in windows(audio, rate):
                phone = band_energy(window, rate, PHONE_HZ)
                stray = band_energy(window, rate, LEFTOVER_HZ)
                if not stray < phone / 100:
                    problems.append(f"leftover tone heard: {stray:.3g} vs phone {phone:.3g}")
                    break
            # (c) not one datagram went to a leftover (they kept sending all along).
            fed = [leftover.received for leftover in leftovers]
            if fed != [0, 0, 0]:
                problems.append(f"datagrams sent to the leftovers: {fed}")
            assert not problems, problems
            assert stream.frames_received > 0  # and the switch got the browser's audio
            alice.peer("1000", Cmd="EndCall")
            assert_nothing_left(gateway, sim)
            peer.close()
            alice.close()
        assert [leftover.received for leftover in leftovers] == [0, 0, 0]
        assert all(leftover.sent > 0 for leftover in leftovers)
    finally:
        for leftover in leftovers:
            leftover.stop()


@loopback_only(timeout=150)
def test_a_unicast_stream_that_never_starts_ends_the_call() -> None:
    base = free_block(8)
    extra = media_settings(base, 4, "unicast_start_timeout = 1.0\n")
    with running_gateway(extra) as (gateway, sim):
        controller = gateway.controller
        assert controller is not None
        # The switch takes the unicast command and never binds its port (its CRIT log line).
        sim.set_extension("1000", Extension("tone", audio=AudioSource("unicast_fails")))
        alice = WebUser(gateway, "alice").connect()
        peer = WebPeer(alice)
        alice.invite("1000", "ch-n")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        peer.offer("1000", "ch-n")
        [channel] = sim.channels()
        wait_until(lambda: channel.unicast is not None, 20, "the unicast command")
        stream = channel.unicast
        assert stream is not None and not stream.started and stream.error
        end = alice.wait_peer_cmd("EndCall", timeout=20)
        assert end["from"] == "1000"
        assert_nothing_left(gateway, sim)
        assert controller.ended_total == {"unicast_not_started": 1}
        assert channel.hangup_cause == "MEDIA_TIMEOUT"
        peer.close()
        alice.close()


def test_dropped_foreign_datagrams_and_the_cause_are_in_the_metrics() -> None:
    status = {
        "esl": "connected",
        "calls": 0,
        "numbers_busy": 0,
        "unicast_ports_in_use": 0,
        "unicast_foreign_packets": 7,
        "ended": {"unicast_not_started": 2},
    }
    registry = CollectorRegistry()
    registry.register(GatewayCollector(lambda: status, dict))
    text = generate_latest(registry).decode()
    assert "esl_bridge_unicast_foreign_packets_total 7.0" in text
    assert 'esl_bridge_calls_ended_total{reason="unicast_not_started"} 2.0' in text
