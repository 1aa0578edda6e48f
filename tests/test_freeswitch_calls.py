"""Calls through the whole gateway against a real FreeSWITCH 1.10 (docs/architecture.rst).

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set. The switch runs the
vanilla configuration plus ``dialplan/`` (the ``0`` route with ``esl_bridge_socket``
pointing at ``ESL_BRIDGE_FREESWITCH_SOCKET``, default 127.0.0.1:8084, where this test's
gateway listens) and users from ``scripts/freeswitch.sh`` or the vanilla 1000-1019.

Phones: ``ESL_BRIDGE_FREESWITCH_USER`` (default 1001) must be a registered phone that
answers automatically (baresip with ``answermode=auto``, as in the fixtures' setup) and
sends audio; ``ESL_BRIDGE_FREESWITCH_UNREGISTERED`` (default 1019) a directory user that is
not registered. The SIP -> web direction needs no phone: ``originate loopback/0<uid>``
sends a leg through the default context, the ``0`` route and the socket application.

Web users speak the WebSocket protocol (tests/support/gateway_support.py); media is set up only
in the browser tests, so these check the signalling and FreeSWITCH's side: answered,
refused with the right cause, and no channel left on the switch afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
from support.gateway_support import APPID, WebUser, wait_until
from support.host_bridge import bridged_to_host, netns_log
from support.ports_and_waits import free_port
from support.web_peer import WebPeer

from esl_bridge.config import from_text
from esl_bridge.core.call import Originate
from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.process import Gateway

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_SOCKET = os.environ.get("ESL_BRIDGE_FREESWITCH_SOCKET", "127.0.0.1:8084")
_PHONE = os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")
_UNREGISTERED = os.environ.get("ESL_BRIDGE_FREESWITCH_UNREGISTERED", "1019")

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]


@contextlib.contextmanager
def gateway_on_freeswitch(extra: str = "", esl_host: str | None = None) -> Iterator[Gateway]:
    """A gateway on the switch; ``channels_of(gateway)`` lists every channel it touched.
    ``extra``: more configuration sections; ``esl_host``: where the gateway finds ESL (the
    bridge's end in a namespace) when it is not the switch's own address."""
    host, port, password = _TARGET.split(":", 2)
    esl = esl_host or host
    socket_host, socket_port = _SOCKET.rsplit(":", 1)
    settings = from_text(
        f"""
[global]
appid = {APPID}
sip_svr = {host}:5060
[rtm2sip]
on = 1
acc_rule = {_PHONE};{_UNREGISTERED}
[proxy]
on = 1
rtm_account = gateway
[esl]
host = {esl}
port = {port}
password = {password}
[socket]
host = {socket_host}
port = {socket_port}
[web]
port = {free_port()}
[auth]
open_mode = 1
[limits]
originate_timeout = 20
presence_grace = 1
{extra}""",
        "<freeswitch test>",
    )
    gateway = Gateway(settings)
    try:
        gateway.start()
        wait_until(
            lambda: gateway.controller is not None and gateway.controller.esl_state == "connected",
            10,
            "ESL connected to FreeSWITCH",
        )
        _watch_channels(gateway)
        yield gateway
    finally:
        gateway.stop(drain=5.0)


_TOUCHED: dict[int, list[str]] = {}


def _watch_channels(gateway: Gateway) -> None:
    """Note the uuid of every channel the gateway originates or is handed by the socket.

    The switch's ``show channels`` reads its core database, which FreeSWITCH writes
    asynchronously (right after CHANNEL_ANSWER it may still count 0; right after a hangup
    it may still count the old channel), so these tests ask ``uuid_exists`` about the very
    channels of the test instead: that reads the live session table.
    """
    controller = gateway.controller
    assert controller is not None
    touched: list[str] = []
    _TOUCHED[id(gateway)] = touched
    port = controller.channels
    originate = port.originate
    arrived = controller.sip_call_arrived

    def noting_originate(action: Originate) -> None:
        touched.append(action.uuid)
        originate(action)

    def noting_arrival(record: Any) -> None:
        touched.append(record.uuid)
        arrived(record)

    port.originate = noting_originate  # type: ignore[method-assign]
    controller.sip_call_arrived = noting_arrival  # type: ignore[method-assign]


def channels_of(gateway: Gateway) -> list[str]:
    return list(_TOUCHED.get(id(gateway), []))


def exists(gateway: Gateway, uuid: str) -> bool:
    """``uuid_exists``: "true" or "false" from the switch's live session table."""
    assert gateway.esl is not None
    reply = gateway.esl.inbound.api("uuid_exists", uuid).text.strip()
    assert reply in ("true", "false"), f"unexpected uuid_exists reply: {reply!r}"
    return reply == "true"


def assert_switch_clean(gateway: Gateway, extra: tuple[str, ...] = ()) -> None:
    """No call in the gateway, no busy number, and none of the test's channels left."""
    controller = gateway.controller
    assert controller is not None
    wait_until(lambda: controller.status()["calls"] == 0, 15, "no call in the gateway")
    uuids = [*channels_of(gateway), *extra]
    assert uuids, "the test touched no channel: nothing was checked"
    for uuid in uuids:
        wait_until(lambda uuid=uuid: not exists(gateway, uuid), 15, f"channel {uuid} gone")
    assert controller.status()["numbers_busy"] == 0


def test_web_user_calls_a_registered_phone_and_hangs_up() -> None:
    """A registered auto-answer phone: accepted only at answer, EndCall hangs it up."""
    with gateway_on_freeswitch() as gateway:
        alice = WebUser(gateway, "alice").connect()
        alice.invite(_PHONE, "fs-ch-1", UserData="from the freeswitch test")
        alice.wait_local_state(LocalState.RECEIVED_BY_REMOTE, timeout=10)
        accepted = alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=30)
        assert json.loads(accepted["response"])["SipNumber"] == _PHONE
        # Not `show channels`: its list lags the channels by a fraction of a second
        # (tests/fixtures/freeswitch/orphans), so a count can still hold a finished call.
        [uuid] = channels_of(gateway)
        assert exists(gateway, uuid)  # answered: the channel is live on the switch
        alice.peer(_PHONE, Cmd="EndCall")
        assert_switch_clean(gateway)
        alice.close()


def test_unregistered_user_is_refused_with_its_cause() -> None:
    with gateway_on_freeswitch() as gateway:
        alice = WebUser(gateway, "alice").connect()
        alice.invite(_UNREGISTERED, "fs-ch-2")
        refused = alice.wait_local_state(LocalState.REFUSED_BY_REMOTE, timeout=20)
        assert json.loads(refused["response"]) == {
            "Cmd": "Refused",
            "Reason": "not_registered",
            "Cause": "USER_NOT_REGISTERED",
        }
        assert_switch_clean(gateway)
        alice.close()


def ring_through_zero_route(gateway: Gateway, user: WebUser, caller: str = "1005") -> str:
    """``originate loopback/0<uid>/default &park()`` from ``caller``: the dialplan's 0 route
    hands the leg to the gateway's socket. Returns the A leg's uuid once the user has
    its invitation (the next message ``user.wait`` gives)."""
    assert gateway.esl is not None
    a_leg = str(uuid4())
    job = gateway.esl.inbound.bgapi(
        "originate",
        f"{{origination_uuid={a_leg},origination_caller_id_number={caller}}}"
        f"loopback/0{user.uid}/default &park()",
        timeout=30,
    )
    assert job.body.startswith("+OK"), job.body
    return a_leg


def test_sip_leg_through_the_dialplan_route_rings_the_web_user() -> None:
    """``originate loopback/0bob/default &park()``: the 0 route hands the leg to the
    gateway's socket; bob is invited with the caller shown; accept answers it."""
    with gateway_on_freeswitch() as gateway:
        bob = WebUser(gateway, "bob").connect()
        a_leg = ring_through_zero_route(gateway, bob)
        invitation = bob.wait(lambda m: m.get("type") == "invitation", timeout=15)
        content = json.loads(invitation["content"])
        assert content["Mode"] == 1 and content["ChanId"] == invitation["channel_id"]
        assert bob.request({"type": "accept", "inv": invitation["inv"]})["type"] == "ok"
        controller = gateway.controller
        assert controller is not None
        wait_until(lambda: controller.status()["calls"] == 1, 10, "call connected")
        [b_leg] = channels_of(gateway)
        assert exists(gateway, b_leg)
        bob.peer("gateway", Cmd="EndCall", ChanId=content["ChanId"])
        assert_switch_clean(gateway, (a_leg,))
        bob.close()


def test_web_user_offline_hangs_the_sip_leg_up_at_once() -> None:
    with gateway_on_freeswitch() as gateway:
        assert gateway.esl is not None
        a_leg = str(uuid4())
        job = gateway.esl.inbound.bgapi(
            "originate",
            f"{{origination_uuid={a_leg}}}loopback/0nobody-here/default &park()",
            timeout=30,
        )
        # The loopback a-leg may answer before the b-leg is refused; either way the
        # b-leg is hung up by the gateway and nothing stays on the switch.
        assert job.body.startswith(("+OK", "-ERR")), job.body
        wait_until(lambda: bool(channels_of(gateway)), 15, "the leg reached the gateway")
        assert_switch_clean(gateway, (a_leg,))


# --------------------------------------------------------------------------- G.711 fast path

# The unicast pairs the gateway may use in this test: the host side of the bridge holds
# their gateway ports (tests/support/host_bridge.py), FreeSWITCH binds their switch ports.
_FAST_PORTS = (31240, 31259)
_ESL_PORT = int(_TARGET.split(":")[1]) if _TARGET.count(":") >= 2 else 8021
BROWSER_TONE_HZ = 440.0
PHONE_TONE_HZ = 1000.0  # the phone's microphone (the fixtures' setup)


def _ulaw_decode(data: bytes) -> np.ndarray:
    """G.711 mu-law to int16 (the test's own analysis of what crossed the bridge)."""
    b = ~np.frombuffer(data, dtype=np.uint8) & 0xFF
    magnitude = ((((b & 0x0F).astype(np.int32) << 3) + 0x84) << ((b >> 4) & 0x07)) - 0x84
    return np.where(b & 0x80, -magnitude, magnitude).astype(float)


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


@bridged_to_host(_ESL_PORT, *_FAST_PORTS, timeout=170)
def test_pcmu_browser_to_pcmu_phone_takes_the_native_fast_path() -> None:
    """A browser offering PCMU only calls the PCMU phone: the leg asks FreeSWITCH for
    ``flags: native``, the unicast carries 160-byte PCMU frames both ways (the 0xFF filler
    stays 320 bytes, tests/fixtures/freeswitch/native_unicast), the browser hears the
    phone's 1 kHz and the switch gets the browser's 440 Hz as PCMU bytes."""
    # Continues [limits]: the range must hold one pair per call.
    extra = (
        f"max_calls = 10\n[media]\nunicast_port_min = {_FAST_PORTS[0]}\n"
        f"unicast_port_max = {_FAST_PORTS[1]}\n"
    )
    with gateway_on_freeswitch(extra, esl_host="127.0.0.1") as gateway:
        alice = WebUser(gateway, "alice").connect()
        browser = WebPeer(alice, hz=BROWSER_TONE_HZ, codecs=("PCMU",))
        alice.invite(_PHONE, "fs-fast-1")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=30)
        answer = browser.offer(_PHONE, "fs-fast-1")
        assert "PCMU/8000" in answer
        log = netns_log()
        wait_until(lambda: len(log.from_switch) >= 150, 30, "3 s of unicast from the switch")
        wait_until(lambda: len(log.to_switch) >= 150, 30, "3 s of unicast to the switch")
        wait_until(lambda: len(browser.heard) >= 150, 30, "3 s of audio at the browser")
        from_switch = [d for _f, _g, d in log.from_switch]
        to_switch = [d for _f, _g, d in log.to_switch]
        kinds = {(len(d), d.count(0xFF) == len(d)) for d in from_switch}
        assert kinds <= {(160, False), (320, True)}, kinds  # native PCMU, not 320-byte L16
        assert (160, False) in kinds
        assert {len(d) for d in to_switch} == {160}
        # The browser's tone, as PCMU bytes the gateway moved without decoding them.
        sent = _ulaw_decode(b"".join(to_switch[-100:]))
        assert _dominant_hz(sent, 8000) == pytest.approx(BROWSER_TONE_HZ, abs=10)
        heard, rate = browser.audio()
        assert _dominant_hz(heard[-rate:], rate) == pytest.approx(PHONE_TONE_HZ, abs=10)
        controller = gateway.controller
        assert controller is not None
        legs = [links.leg for links in controller._links.values() if links.leg is not None]
        assert [leg.path for leg in legs] == ["fast"]
        [uuid] = channels_of(gateway)
        alice.peer(_PHONE, Cmd="EndCall")
        assert_switch_clean(gateway)
        assert not exists(gateway, uuid)
        browser.close()
        alice.close()
