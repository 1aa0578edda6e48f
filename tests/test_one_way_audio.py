"""One-way audio explained per call, end to end: the real gateway, the simulator's phone and
an aiortc peer standing in for the browser. Each fault is provoked mid-call on a healthy
call, and the web user must be told the right verdict (the ``MediaProblem`` peer message,
which the gateway sends with the ``media_problem`` event), then ``ok`` when the fault is
undone. The verdict window is cut to 1 s here (``[media] media_problem_after`` in the
gateway's configuration); the tests wait for the messages, never for the clock.

Faults: the browser's track muted (digital silence); the browser's RTP dropped before it
leaves the peer (ICE, DTLS and RTCP stay up); the phone sending only FreeSWITCH's 0xFF
filler, or real frames of silence; the gateway's RTP toward the browser disabled; our RTP
dropped as it reaches the browser (its RTCP reports stop counting our packets).

Everything runs in a loopback-only network namespace (tests/support/netns.py).
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.browser import CHROMEDRIVER, CHROMIUM
from support.gateway_support import WebUser, assert_nothing_left, running_gateway, wait_until
from support.netns import assert_loopback_only, loopback_only
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import AudioSource, SimulatorThread
from esl_bridge.sim.media import UnicastStream

WINDOW = 1.0  # seconds a hop must stay broken (production: 5 s)
SHORT_WINDOW = f"[media]\nmedia_problem_after = {WINDOW}\n"


class Call:
    """One connected call: alice (web user, an aiortc peer) -> phone 1000 (a 440 Hz tone)."""

    def __init__(self, gateway: Gateway, sim: SimulatorThread) -> None:
        self.gateway, self.sim = gateway, sim
        self.alice = WebUser(gateway, "alice").connect()
        self.peer = WebPeer(self.alice)
        self.alice.invite("1000", "ch-1")
        self.alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        self.peer.offer("1000", "ch-1")
        [channel] = sim.channels()
        wait_until(lambda: channel.unicast is not None, 20, "the unicast command")
        stream = channel.unicast
        assert stream is not None
        self.stream: UnicastStream = stream
        controller = gateway.controller
        assert controller is not None
        self.controller = controller
        [call] = list(controller.book)
        self.links = controller._links[call.call_id]
        # Healthy first: the judge runs and has seen three windows' worth of snapshots.
        wait_until(
            lambda: self.links.watch is not None and self.links.watch.snapshots >= 4,
            30,
            "the one-way judge running for 3 windows",
        )
        # The judge takes its window from the configuration.
        assert self.links.watch is not None and self.links.watch.window == WINDOW

    def problems(self) -> list[tuple[str, str]]:
        """Every MediaProblem the web user got so far (kept in its inbox)."""
        out = []
        for m in self.alice.inbox:
            if m.get("type") == "message":
                body = json.loads(m["text"])
                if body.get("Cmd") == "MediaProblem":
                    out.append((body["Direction"], body["Verdict"]))
        return out

    def told(self, direction: str, verdict: str, what: str) -> None:
        """Wait for the MediaProblem (direction, verdict); it is taken from the inbox."""
        message = self.alice.wait(
            lambda m: (
                m.get("type") == "message"
                and json.loads(m["text"]).get("Cmd") == "MediaProblem"
                and json.loads(m["text"]).get("Direction") == direction
            ),
            30,
            what,
        )
        body = json.loads(message["text"])
        assert message["from"] == "1000"  # the call's peer, as the gateway's other Cmds
        assert (body["Direction"], body["Verdict"], body["ChanId"]) == (
            direction,
            verdict,
            "ch-1",
        ), (body, what)

    def end(self) -> None:
        self.alice.peer("1000", Cmd="EndCall")
        assert_nothing_left(self.gateway, self.sim)
        self.peer.close()
        self.alice.close()


def verdict_counts(gateway: Gateway) -> dict[tuple[str, str], float]:
    assert gateway.web_address is not None
    host, port = gateway.web_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.labels["direction"], s.labels["verdict"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "esl_bridge_media_verdicts_total"
    }


def _drop_rtp(dtls: Any, method: str) -> None:
    """Drop every RTP packet a peer's DTLS transport sends (``_send_rtp``) or receives
    (``_handle_rtp_data``); DTLS, ICE and RTCP go on."""

    async def drop(*_args: Any, **_kwargs: Any) -> None:
        return None

    setattr(dtls, method, drop)


@loopback_only(timeout=180)
def test_the_browser_side_faults_are_named_and_a_healthy_call_is_ok_both_ways() -> None:
    with running_gateway(SHORT_WINDOW) as (gateway, sim):
        call = Call(gateway, sim)
        # A healthy call: nothing was told, ok both ways.
        assert call.problems() == []
        watch = call.links.watch
        assert watch is not None
        assert watch.verdicts == {"browser_to_switch": "ok", "switch_to_browser": "ok"}

        # The microphone muted: packets keep coming, with digital silence in them.
        call.peer.track.freq = 0.0
        call.told("browser_to_switch", "browser_silent", "browser_silent after muting")
        call.peer.track.freq = 1000.0
        call.told("browser_to_switch", "ok", "ok after unmuting")

        # The browser's RTP dropped before it leaves (a filter on the peer's DTLS transport).
        assert call.peer.pc is not None
        [transceiver] = call.peer.pc.getTransceivers()
        _drop_rtp(transceiver.sender.transport, "_send_rtp")
        call.told("browser_to_switch", "browser_rtp_missing", "browser_rtp_missing")
        assert [d for d, _v in call.problems()] == []  # the other direction stayed ok

        call.end()
        counts = verdict_counts(gateway)
        # The call's first problem per direction, counted once at its end.
        assert counts[("browser_to_switch", "browser_silent")] == 1
        assert counts[("switch_to_browser", "ok")] == 1
        assert sum(counts.values()) == 2


@loopback_only(timeout=180)
def test_the_switch_side_faults_are_named() -> None:
    floor = "silence_floor_dbov = -60\n"  # the phone's tone peaks far above it, silence below
    with running_gateway(SHORT_WINDOW + floor) as (gateway, sim):
        call = Call(gateway, sim)
        assert call.links.watch is not None and call.links.watch.floor_dbov == -60.0
        tone = call.stream.source
        # The phone sends no RTP: FreeSWITCH sends only its 0xFF filler.
        call.stream.source = AudioSource("none")
        call.told("switch_to_browser", "switch_filler_only", "switch_filler_only")
        call.stream.source = tone
        call.told("switch_to_browser", "ok", "ok after the tone came back")
        # The phone sends frames of silence (muted on the phone).
        call.stream.source = AudioSource("silence")
        call.told("switch_to_browser", "switch_silent", "switch_silent")
        call.stream.source = tone
        call.told("switch_to_browser", "ok", "ok after the tone came back")
        assert [d for d, _v in call.problems() if d == "browser_to_switch"] == []
        call.end()
        counts = verdict_counts(gateway)
        assert counts[("switch_to_browser", "switch_filler_only")] == 1
        assert counts[("browser_to_switch", "ok")] == 1


@loopback_only(timeout=180)
def test_the_faults_toward_the_browser_are_named() -> None:
    with running_gateway(SHORT_WINDOW) as (gateway, sim):
        call = Call(gateway, sim)
        leg = call.links.leg
        assert leg is not None and leg.direct_sender is not None
        sender_state = leg.direct_sender.sender.__dict__
        # The gateway stops sending RTP to the browser (its sender disabled).
        sender_state["_enabled"] = False
        call.told("switch_to_browser", "gateway_not_sending", "gateway_not_sending")
        sender_state["_enabled"] = True
        call.told("switch_to_browser", "ok", "ok after sending again")
        # Our RTP is dropped as it reaches the browser: its RTCP reports keep coming, on a
        # sequence number that no longer moves.
        assert call.peer.pc is not None
        [transceiver] = call.peer.pc.getTransceivers()
        _drop_rtp(transceiver.receiver.transport, "_handle_rtp_data")
        call.told("switch_to_browser", "browser_not_playing", "browser_not_playing")
        call.end()
        counts = verdict_counts(gateway)
        assert counts[("switch_to_browser", "gateway_not_sending")] == 1


def _media_problem_from(sender: str) -> Any:
    def match(m: dict[str, Any]) -> bool:
        if m.get("type") != "message" or m.get("from") != sender:
            return False
        try:
            return bool(json.loads(m["text"]).get("Cmd") == "MediaProblem")
        except ValueError:
            return False

    return match


@loopback_only(timeout=180)
def test_a_conference_member_is_told_when_its_microphone_sends_silence() -> None:
    """A web member of a room is judged as a call is: its muted track is ``browser_silent``
    (told by the gateway uid, with the room's ChanId), then ``ok``; the room's mix, silent
    while nobody else speaks, is no problem toward it."""
    with running_gateway(SHORT_WINDOW) as (gateway, sim):
        controller = gateway.controller
        assert controller is not None
        alice = WebUser(gateway, "alice").connect()
        alice.peer("gateway", Cmd="ConfJoin", ChanId="room-1", DisplayName="Alice")
        alice.wait_peer_cmd("ConfJoined", timeout=20)
        peer = WebPeer(alice)
        peer.offer("gateway", "room-1")

        def judges() -> list[Any]:
            return [links.watch for links in controller._links.values() if links.watch]

        wait_until(
            lambda: len(judges()) == 1 and judges()[0].snapshots >= 4,
            30,
            "the member's one-way judge running for 3 windows",
        )
        [judge] = judges()
        assert (judge.window, judge.switch_level) == (WINDOW, False)
        assert not [m for m in alice.inbox if _media_problem_from("gateway")(m)]

        told = _media_problem_from("gateway")
        peer.track.freq = 0.0  # muted: digital silence
        body = json.loads(alice.wait(told, 30, "browser_silent in the room")["text"])
        assert body == {
            "Cmd": "MediaProblem",
            "ChanId": "room-1",
            "Direction": "browser_to_switch",
            "Verdict": "browser_silent",
        }
        peer.track.freq = 1000.0
        body = json.loads(alice.wait(told, 30, "ok after unmuting")["text"])
        assert (body["Direction"], body["Verdict"]) == ("browser_to_switch", "ok")
        assert judge.verdicts == {"browser_to_switch": "ok", "switch_to_browser": "ok"}

        alice.peer("gateway", Cmd="EndCall", ChanId="room-1")
        wait_until(lambda: not controller._links, 10, "the member's leg gone")
        assert_nothing_left(gateway, sim)
        peer.close()
        alice.close()


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=150)
def test_a_muted_chromium_and_a_phone_sending_filler_reach_the_sdk() -> None:
    """Chromium's own muted track (the SDK's ``mute``) is digital silence to the gateway,
    and the SDK's ``mediaProblem`` event carries each verdict and its recovery."""
    from test_e2e_browser import only_channel, unicast_of
    from test_sdk_calls_browser import sdk_page

    assert_loopback_only()
    with (
        running_gateway(SHORT_WINDOW, presence_grace=1.0) as (gateway, sim),
        sdk_page(gateway) as page,
    ):
        page.run('client.call("1000").then(watch)')
        page.wait_event("state", "connected")
        page.media_up()
        controller = gateway.controller
        assert controller is not None
        [call] = list(controller.book)
        links = controller._links[call.call_id]
        wait_until(
            lambda: links.watch is not None and links.watch.snapshots >= 4,
            30,
            "the one-way judge running for 3 windows",
        )
        assert page.events("mediaProblem") == []  # healthy: nothing said
        page.js("(call.mute(true), true)")
        silent = {"direction": "browser_to_switch", "verdict": "browser_silent"}
        page.wait_event("mediaProblem", silent)
        page.js("(call.mute(false), true)")
        page.wait_event("mediaProblem", {"direction": "browser_to_switch", "verdict": "ok"})
        stream = unicast_of(sim, only_channel(sim))
        stream.source = AudioSource("none")
        page.wait_event(
            "mediaProblem", {"direction": "switch_to_browser", "verdict": "switch_filler_only"}
        )
        assert page.run("call.hangup()") is None
        assert_nothing_left(gateway, sim)

        # The README's way to try it in the demo: call the echo phone 1001 and mute. The
        # phone hears the page's silence, and the echo sends that silence back.
        page.js("(window.events.length = 0, true)")  # the first call's events are gone
        page.run('client.call("1001").then(watch)')
        page.wait_event("state", "connected")
        page.media_up()
        page.js("(call.mute(true), true)")
        page.wait_event("mediaProblem", silent)
        page.wait_event(
            "mediaProblem", {"direction": "switch_to_browser", "verdict": "switch_silent"}
        )
        assert page.run("call.hangup()") is None
        assert_nothing_left(gateway, sim)
