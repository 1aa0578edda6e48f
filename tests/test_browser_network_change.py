"""A call survives the browser's network change (issue 16, part 1).

The browser is an aiortc peer in the test's loopback-only namespace, gathering on one of
two addresses added on ``lo`` (127.0.0.2, 127.0.0.3; 127.0.0.1 is narrowed to a /32 so
that an address removed is really unreachable, not caught by the 127/8 local route).
Mid-call its address is removed and it "restarts ICE" from the other one: aiortc cannot
restart ICE on a peer connection either, so the stand-in makes a new one and sends its
offer as a browser's ``restartIce()`` offer goes, a second Offer of the same call. It sends
another tone from the new path, so the switch hearing that tone proves the new path carries
the call. The SIP channel (uuid, unicast stream) must be the same before and after.

Then the same with the WebSocket killed only (past the hub's grace, so the web user is
offline for a moment), and a browser gone for good: the call ends after ``browser_hold``
as ``browser_lost`` with nothing left (no channel, no port, no socket).
"""

from __future__ import annotations

import socket
import subprocess
import time
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection
from support.gateway_support import WebUser, assert_nothing_left, running_gateway, wait_until
from support.netns import loopback_only
from support.tones import ToneTrack
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState

PHONE_HZ = 440.0  # extension 1000 of the simulator
FIRST_HZ = 1000.0  # the browser's tone on its first path
SECOND_HZ = 1300.0  # ... and on its new path
HOLD_HZ = 600.0  # [media] browser_hold_tone in the gone-for-good test
OLD, NEW = "127.0.0.2", "127.0.0.3"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def two_addresses() -> None:
    """127.0.0.1/8 becomes /32 (keeps the gateway and the simulator where they are), and
    the browser's two addresses are added, each its own /32 local route."""
    ip("addr", "del", "127.0.0.1/8", "dev", "lo")
    ip("addr", "add", "127.0.0.1/32", "dev", "lo")
    ip("addr", "add", f"{OLD}/32", "dev", "lo")
    ip("addr", "add", f"{NEW}/32", "dev", "lo")


def remove_address(address: str) -> None:
    ip("addr", "del", f"{address}/32", "dev", "lo")
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((address, 0))
    except OSError:
        return  # gone: nothing can be bound there, nothing reaches it
    finally:
        probe.close()
    raise AssertionError(f"{address} is still an address of this namespace")


def udp_sockets() -> int:
    """UDP sockets open in this namespace (the gateway, the simulator, the peers)."""
    with open("/proc/self/net/udp") as f:
        return len(f.readlines()) - 1


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


class MovingPeer(WebPeer):
    """A WebPeer whose offer gathers on ``address``; ``restart`` makes a new peer
    connection (its old one left as the network left it) and offers again."""

    def __init__(self, user: WebUser, hz: float) -> None:
        super().__init__(user, hz=hz)
        self.old_pcs: list[RTCPeerConnection] = []
        self.connected_at: float | None = None

    def _new_pc(self) -> RTCPeerConnection:
        if self.pc is not None:
            self.old_pcs.append(self.pc)  # left as the network left it
        self.heard = []
        pc = super()._new_pc()

        @pc.on("connectionstatechange")
        def _on_state() -> None:
            if pc.connectionState == "connected" and pc is self.pc:
                self.connected_at = time.monotonic()

        return pc

    def offer_from(self, address: str, to: str, chan_id: str) -> None:
        self.offer(to, chan_id, address)

    def restart(self, address: str, hz: float, to: str, chan_id: str) -> None:
        self.hz, self.track = hz, ToneTrack(hz)
        self.connected_at = None
        self.offer(to, chan_id, address)

    def close(self) -> None:
        async def close_old() -> None:
            for pc in self.old_pcs:
                await pc.close()

        self.user._run(close_old(), timeout=20)
        super().close()


def assert_tones_both_ways(stream: Any, peer: WebPeer, browser_hz: float) -> None:
    """The switch hears ``browser_hz`` (its last second), the browser the phone."""
    start = len(stream.received_samples())
    wait_until(lambda: len(stream.received_samples()) - start >= 16000, 40, "2 s of browser audio")
    wait_until(lambda: len(peer.heard) >= 100, 40, "2 s of phone audio at the browser")
    sent = np.array(stream.received_samples()[-8000:], dtype=float)
    assert abs(dominant_hz(sent, 8000) - browser_hz) < 15, dominant_hz(sent, 8000)
    heard, rate = peer.audio()
    assert abs(dominant_hz(heard[-rate:], rate) - PHONE_HZ) < 15


def until_tone_at_switch(stream: Any, hz: float) -> float:
    """Wait until the last 100 ms the switch got is the tone ``hz``; when it was seen."""

    def heard() -> bool:
        samples = stream.received_samples()
        if len(samples) < 800:
            return False
        return abs(dominant_hz(np.array(samples[-800:], dtype=float), 8000) - hz) < 30

    wait_until(heard, 30, f"the {hz} Hz tone at the switch")
    return time.monotonic()


def connected_call(gateway: Any, sim: Any, peer: MovingPeer, alice: WebUser) -> tuple[Any, Any]:
    alice.invite("1000", "ch-move")
    alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
    peer.offer_from(OLD, "1000", "ch-move")
    [channel] = sim.channels()
    wait_until(lambda: channel.unicast is not None, 20, "the unicast command")
    stream = channel.unicast
    assert_tones_both_ways(stream, peer, FIRST_HZ)
    return channel, stream


@loopback_only(timeout=240)
def test_the_browser_changes_address_mid_call_and_the_call_continues() -> None:
    two_addresses()
    with running_gateway() as (gateway, sim):
        controller = gateway.controller
        assert controller is not None
        alice = WebUser(gateway, "alice").connect()
        peer = MovingPeer(alice, FIRST_HZ)
        channel, stream = connected_call(gateway, sim, peer, alice)
        uuid = channel.uuid
        [call] = list(controller.book)
        first_leg = controller._links[call.call_id].leg

        remove_address(OLD)  # the laptop left its Wi-Fi
        peer.restart(NEW, SECOND_HZ, "1000", "ch-move")  # restartIce() from the hotspot
        wait_until(lambda: peer.connected_at is not None, 30, "the new path connected")
        heard_at = until_tone_at_switch(stream, SECOND_HZ)
        assert peer.connected_at is not None
        print(f"new path up -> its tone at the switch: {heard_at - peer.connected_at:.2f} s")
        assert_tones_both_ways(stream, peer, SECOND_HZ)

        # The same SIP channel and unicast stream; a new media leg; the hold is over.
        assert [c.uuid for c in sim.channels()] == [uuid]
        assert channel.unicast is stream and stream.error is None
        leg = controller._links[call.call_id].leg
        assert leg is not None and leg is not first_leg and first_leg is not None
        assert first_leg.closed and first_leg.endpoint is None
        wait_until(lambda: not controller.holds.held(call.call_id), 10, "the hold ended")
        assert controller.status()["unicast_ports_in_use"] == 1

        alice.peer("1000", Cmd="EndCall")
        assert_nothing_left(gateway, sim)
        assert controller.ended_total == {"web_hangup": 1}
        peer.close()
        alice.close()


@loopback_only(timeout=240)
def test_the_websocket_drops_past_the_grace_and_the_call_is_held_until_it_is_back() -> None:
    two_addresses()
    with running_gateway() as (gateway, sim):  # presence_grace 0.5 s
        controller = gateway.controller
        assert controller is not None
        alice = WebUser(gateway, "alice").connect()
        peer = MovingPeer(alice, FIRST_HZ)
        channel, stream = connected_call(gateway, sim, peer, alice)
        uuid = channel.uuid
        [call] = list(controller.book)

        alice.close()  # the WebSocket only; the media path stays
        wait_until(lambda: controller.holds.held(call.call_id), 20, "the call held (user gone)")
        assert controller.holds.reasons(call.call_id) == {"ws"}
        assert [c.uuid for c in sim.channels()] == [uuid]

        back = WebUser(gateway, "alice").connect()  # a new session: the old one expired
        wait_until(lambda: not controller.holds.held(call.call_id), 20, "the hold ended")
        peer.user = back  # the SDK restarts ICE after it is back
        peer.restart(NEW, SECOND_HZ, "1000", "ch-move")
        wait_until(lambda: peer.connected_at is not None, 30, "the new path connected")
        until_tone_at_switch(stream, SECOND_HZ)
        assert_tones_both_ways(stream, peer, SECOND_HZ)
        assert [c.uuid for c in sim.channels()] == [uuid]
        assert channel.unicast is stream

        back.peer("1000", Cmd="EndCall")
        assert_nothing_left(gateway, sim)
        assert controller.ended_total == {"web_hangup": 1}
        peer.close()
        back.close()


@loopback_only(timeout=240)
def test_a_browser_gone_for_good_ends_the_call_after_the_hold_with_nothing_left() -> None:
    two_addresses()
    sockets_before = udp_sockets()
    hold = f"[media]\nbrowser_hold = 1.0\nbrowser_hold_tone = {HOLD_HZ}\n"
    with running_gateway(hold) as (gateway, sim):
        controller = gateway.controller
        assert controller is not None
        idle_sockets = udp_sockets()
        alice = WebUser(gateway, "alice").connect()
        peer = MovingPeer(alice, FIRST_HZ)
        channel, stream = connected_call(gateway, sim, peer, alice)
        [call] = list(controller.book)

        remove_address(OLD)
        alice.close()  # the laptop is closed: no media, no WebSocket
        heard_before = len(stream.received_samples())
        wait_until(lambda: controller.holds.held(call.call_id), 20, "the call held")
        wait_until(lambda: controller.status()["calls"] == 0, 20, "the call ended")
        assert controller.ended_total == {"browser_lost": 1}
        assert channel.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
        # While held the phone heard the comfort tone's beep (browser_hold_tone).
        held = np.array(stream.received_samples()[heard_before:], dtype=float)
        beeps = [
            dominant_hz(held[i : i + 800], 8000)
            for i in range(0, len(held) - 800, 400)
            if np.abs(held[i : i + 800]).mean() > 300
        ]
        assert any(abs(hz - HOLD_HZ) < 30 for hz in beeps), beeps
        assert len(controller.holds) == 0
        assert_nothing_left(gateway, sim)
        assert controller.links_held() == {"links": 0, "by_inv": 0, "by_ref": 0}
        peer.close()
        # Every socket of the call is closed again (the gateway's leg, the peer's).
        wait_until(lambda: udp_sockets() == idle_sockets, 20, "the call's UDP sockets closed")
    wait_until(lambda: udp_sockets() == sockets_before, 20, "every UDP socket closed")


@loopback_only(timeout=240)
def test_ice_lost_with_the_websocket_up_is_held_then_ends_as_browser_lost(
    monkeypatch: Any,
) -> None:
    """Only the media path dies and the browser never restarts ICE: the gateway learns it
    from aioice's consent checks (its leg goes ``failed``), holds the call instead of
    ending it as ice_failed, and ends it after browser_hold. aioice checks consent every
    5 s (6 failures); here every 0.2 s, so the test does not wait half a minute."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    two_addresses()
    with running_gateway("[media]\nbrowser_hold = 1.0\n") as (gateway, sim):
        controller = gateway.controller
        assert controller is not None
        alice = WebUser(gateway, "alice").connect()
        peer = MovingPeer(alice, FIRST_HZ)
        channel, _ = connected_call(gateway, sim, peer, alice)
        [call] = list(controller.book)

        remove_address(OLD)  # the WebSocket (on 127.0.0.1) stays up
        wait_until(lambda: controller.holds.held(call.call_id), 30, "the call held (ICE)")
        assert controller.holds.reasons(call.call_id) == {"ice"}
        end = alice.wait_peer_cmd("EndCall", timeout=30)  # the browser still listens
        assert end["from"] == "1000"
        assert_nothing_left(gateway, sim)
        assert controller.ended_total == {"browser_lost": 1}
        assert channel.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
        peer.close()
        alice.close()
