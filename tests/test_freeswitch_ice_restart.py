"""An ICE restart (issue 16 part 1) on a real FreeSWITCH 1.10 with a real phone.

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set (the switch's setup is in
tests/test_freeswitch_calls.py; ``ESL_BRIDGE_FREESWITCH_USER``, default 1001, a registered
baresip that answers automatically and plays a 1 kHz tone).

A web user (an aiortc peer) calls the phone on the G.711 fast path, then restarts ICE as a
browser whose network changed does: a new peer connection's offer sent as a second
``Offer`` of the call, with another tone. What must hold on the real switch: it never sees
the restart (the one channel the gateway touched stays the same, no other channel is made,
and the unicast stream keeps flowing from the same switch port to the same gateway port),
the switch hears the new tone and the browser the phone again, and nothing is left after.

The peer runs in a loopback-only namespace; the switch is reached through
tests/support/host_bridge.py.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from support.gateway_support import WebUser, wait_until
from support.host_bridge import bridged_to_host, netns_log
from test_browser_network_change import MovingPeer
from test_freeswitch_calls import (
    _dominant_hz,
    _ulaw_decode,
    assert_switch_clean,
    channels_of,
    exists,
    gateway_on_freeswitch,
)

from esl_bridge.core.invitations import LocalState

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_PHONE = os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")
_ESL_PORT = int(_TARGET.split(":")[1]) if _TARGET.count(":") >= 2 else 8021
_PORTS = (31500, 31519)  # apart from the other freeswitch-marked tests' ranges
PHONE_HZ = 1000.0  # the phone's microphone (the fixtures' setup)
FIRST_HZ, SECOND_HZ = 440.0, 700.0  # the browser's tone before and after the restart
CHAN_ID = "fs-restart-1"

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(200),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]


def switch_hears(log: object, hz: float) -> None:
    """The last second of PCMU the gateway sent the switch is the tone ``hz``."""

    def heard() -> bool:
        frames = [d for _f, _g, d in log.to_switch[-50:]]  # type: ignore[attr-defined]
        return (
            len(frames) == 50 and abs(_dominant_hz(_ulaw_decode(b"".join(frames)), 8000) - hz) < 10
        )

    wait_until(heard, 30, f"the browser's {hz} Hz at the switch")


def browser_hears_the_phone(peer: MovingPeer) -> None:
    wait_until(lambda: len(peer.heard) >= 100, 30, "2 s of the phone at the browser")
    audio, rate = peer.audio()
    assert _dominant_hz(np.asarray(audio[-rate:], dtype=float), rate) == pytest.approx(
        PHONE_HZ, abs=10
    )


@bridged_to_host(_ESL_PORT, *_PORTS, timeout=180)
def test_an_ice_restart_is_not_seen_by_the_switch_and_audio_resumes_both_ways() -> None:
    extra = (
        f"max_calls = 10\n[media]\nunicast_port_min = {_PORTS[0]}\nunicast_port_max = {_PORTS[1]}\n"
    )
    with gateway_on_freeswitch(extra, esl_host="127.0.0.1") as gateway:
        controller = gateway.controller
        assert controller is not None
        alice = WebUser(gateway, "alice").connect()
        peer = MovingPeer(alice, FIRST_HZ)
        try:
            alice.invite(_PHONE, CHAN_ID)
            alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=30)
            peer.offer_from("127.0.0.1", _PHONE, CHAN_ID)
            log = netns_log()
            switch_hears(log, FIRST_HZ)
            browser_hears_the_phone(peer)
            [uuid] = channels_of(gateway)
            [call] = list(controller.book)
            first_leg = controller._links[call.call_id].leg
            assert first_leg is not None and first_leg.path == "fast"
            ports_before = {(f, g) for f, g, _d in log.from_switch[-50:]}

            peer.restart("127.0.0.1", SECOND_HZ, _PHONE, CHAN_ID)  # restartIce()
            wait_until(lambda: peer.connected_at is not None, 30, "the new path connected")
            switch_hears(log, SECOND_HZ)
            browser_hears_the_phone(peer)

            # A new leg on the gateway; on the switch, the same one channel, the same
            # unicast stream between the same ports, and no hold left.
            leg = controller._links[call.call_id].leg
            assert leg is not None and leg is not first_leg and first_leg.closed
            assert leg.path == "fast"
            assert channels_of(gateway) == [uuid] and exists(gateway, uuid)
            assert {(f, g) for f, g, _d in log.from_switch[-50:]} == ports_before
            wait_until(lambda: not controller.holds.held(call.call_id), 10, "the hold over")

            alice.peer(_PHONE, Cmd="EndCall")
            assert_switch_clean(gateway)
            assert controller.ended_total == {"web_hangup": 1}
        finally:
            peer.close()
            alice.close()
