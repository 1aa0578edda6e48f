"""The SDK's side of a network change (issue 16, part 1) in headless Chromium against the
gateway and the FreeSWITCH simulator.

Chromium's peer connection restarts ICE (``createOffer({iceRestart: true})``) on the same
RTCPeerConnection; the gateway answers from a new aiortc leg with a new DTLS certificate,
so Chromium also restarts DTLS (a changed remote fingerprint). The call emits
``reconnecting`` then ``reconnected``, stays ``connected``, the page keeps hearing the
phone and the phone the page's microphone, and the SIP channel is the same one.

Two causes: the peer connection's state going ``disconnected`` (made here by dispatching
that transition to the SDK's listener, as Chromium's own ICE does when the network goes:
the namespace cannot take Chromium's loopback candidates away), and the WebSocket dropped
(closed under the client, which reconnects, resumes and then restarts ICE).
"""

from __future__ import annotations

from typing import Any

import pytest
from support.browser import CHROMEDRIVER, CHROMIUM
from support.gateway_support import assert_nothing_left, running_gateway, wait_until
from support.netns import assert_loopback_only, loopback_only
from test_e2e_browser import only_channel, unicast_of
from test_sdk_calls_browser import PHONE_HZ, WAIT, SdkPage, recent_rms, sdk_page

from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimulatorThread

pytestmark = pytest.mark.browser

WATCH_JS = """(call.on("reconnecting",
  (w) => window.events.push({name: "reconnecting", detail: w})),
call.on("reconnected", () => window.events.push({name: "reconnected", detail: null})),
call.on("media", (s) => window.events.push({name: "media", detail: s})), true)"""

# What Chromium's ICE does when the network goes: connectionState "disconnected". The SDK's
# listeners read pc.connectionState: it answers "disconnected" while the event is
# dispatched (synchronously), and Chromium's own value again after.
DISCONNECT_JS = """(() => {
  const pc = call.pc;
  Object.defineProperty(pc, "connectionState", {configurable: true, get: () => "disconnected"});
  pc.dispatchEvent(new Event("connectionstatechange"));
  delete pc.connectionState;
  return true;
})()"""


def call_up(page: SdkPage, gateway: Gateway, sim: SimulatorThread) -> tuple[str, object]:
    page.js("(window.events.length = 0, true)")
    page.run('client.call("1000").then(watch)')
    page.wait_event("state", "connected")
    page.media_up()
    page.js(WATCH_JS)
    page.assert_hears(PHONE_HZ)
    uuid = only_channel(sim)
    stream = unicast_of(sim, uuid)
    wait_until(lambda: recent_rms(stream) > 500, WAIT, "the microphone at the phone")
    controller = gateway.controller
    assert controller is not None
    [call] = list(controller.book)
    return uuid, controller._links[call.call_id].leg


def assert_restarted(
    page: SdkPage, gateway: Gateway, sim: SimulatorThread, uuid: str, old_leg: object
) -> None:
    """A new leg carries the same channel; audio both ways; reconnected, still connected."""
    page.wait_event("reconnecting")
    page.wait_event("reconnected")
    controller = gateway.controller
    assert controller is not None
    [call] = list(controller.book)
    leg = controller._links[call.call_id].leg
    assert leg is not None and leg is not old_leg
    assert only_channel(sim) == uuid
    # The new leg hears the page (its own counter, from zero) and the page the phone.
    wait_until(lambda: leg.browser_packets > 50, WAIT, "the page's RTP on the new leg")
    stream = unicast_of(sim, uuid)
    wait_until(lambda: recent_rms(stream) > 500, WAIT, "the microphone at the phone again")
    page.assert_hears(PHONE_HZ)
    assert page.js("call.state") == "connected"
    assert page.js("call.reconnecting") is False
    assert "ended" not in [e["name"] for e in page.js("window.events")]
    wait_until(lambda: not controller.holds.held(call.call_id), WAIT, "the hold ended")


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=150)
def test_chromium_restarts_ice_and_the_call_carries_on() -> None:
    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim), sdk_page(gateway) as page:
        uuid, leg = call_up(page, gateway, sim)
        page.js(DISCONNECT_JS)
        assert_restarted(page, gateway, sim, uuid, leg)
        print("events:", page.js("window.events.map(e => e.name + ':' + e.detail)"))

        # The WebSocket drops under the client: it resumes, then restarts ICE.
        leg = _leg_of(gateway)
        page.js("(window.events.length = 0, client._ws.close(), true)")
        assert_restarted(page, gateway, sim, uuid, leg)

        # The application asks for it (call.restartIce(), e.g. on its own network event).
        leg = _leg_of(gateway)
        page.js("(window.events.length = 0, true)")
        assert page.run("call.restartIce()") is None
        assert_restarted(page, gateway, sim, uuid, leg)

        page.run("call.hangup()")
        page.wait_event("ended")
        assert_nothing_left(gateway, sim)


# The SDK's timers of RECONNECTED_CHECK_MS (3 s) are kept, not run, until the test runs
# them: a restart's leftover check is then seen without waiting for the clock.
HOLD_CHECKS_JS = """(() => {
  window.checks = new Map();
  window.realTimers = [window.setTimeout.bind(window), window.clearTimeout.bind(window)];
  let next = -1;
  window.setTimeout = (f, ms, ...args) => {
    if (ms !== 3000) return window.realTimers[0](f, ms, ...args);
    window.checks.set(next, f);
    return next--;
  };
  window.clearTimeout = (id) => (window.checks.delete(id) || window.realTimers[1](id));
  return true;
})()"""

# The WebSocket drops and the client's next login waits until window.goOnline().
DROP_AND_HOLD_JS = """(() => {
  const connect = client._connectAndLogin.bind(client);
  window.backOnline = new Promise((go) => { window.goOnline = go; });
  client._connectAndLogin = () => window.backOnline.then(connect);
  window.events.length = 0;
  client._ws.close();
  return true;
})()"""


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=150)
def test_a_restarts_leftover_check_does_not_end_a_later_reconnection() -> None:
    """Seen on a loaded machine: the check set by an ICE restart's answer ("still connected
    3 s later: reconnected") fired during the next episode, a WebSocket drop, and the call
    said "reconnected" while the WebSocket was still down and before its new ICE restart."""
    assert_loopback_only()
    with running_gateway(presence_grace=30.0) as (gateway, sim), sdk_page(gateway) as page:
        uuid, leg = call_up(page, gateway, sim)
        page.js(HOLD_CHECKS_JS)
        page.js(DISCONNECT_JS)
        assert_restarted(page, gateway, sim, uuid, leg)
        # Any check the restart's answer left is still held (the SDK may have cleared it).

        leg = _leg_of(gateway)
        page.js(DROP_AND_HOLD_JS)
        page.wait_event("reconnecting", "websocket")
        page.js("(window.checks.forEach((f) => f()), window.checks.clear(), true)")
        assert page.events("reconnected") == [], page.js("window.events")
        assert page.js("call.reconnecting") is True

        page.js("([window.setTimeout, window.clearTimeout] = window.realTimers, true)")
        page.js("(window.goOnline(), true)")
        assert_restarted(page, gateway, sim, uuid, leg)
        page.run("call.hangup()")
        page.wait_event("ended")
        assert_nothing_left(gateway, sim)


def _leg_of(gateway: Gateway) -> object:
    controller = gateway.controller
    assert controller is not None
    [call] = list(controller.book)
    return controller._links[call.call_id].leg


# Every text the web client's media line shows, in order (a MutationObserver: the
# "Reconnecting..." line lasts only as long as the restart, too short to poll for).
MEDIA_LINES_JS = """(() => {
  const el = document.getElementById("media-state");
  window.mediaLines = [el.textContent];
  new MutationObserver(() => window.mediaLines.push(el.textContent))
    .observe(el, {childList: true, characterData: true, subtree: true});
  return true;
})()"""


def login(page: Any, uid: str) -> None:
    """Page.login of test_e2e_browser, waiting for the connection line too."""
    page.js(f"(document.getElementById('uid').value = {uid!r}, true)")
    page.click("login")
    page.state_is("idle")
    page.until(
        f"document.getElementById('conn-state').textContent.trim() === 'Connected as {uid}'",
        "logged in",
    )


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=150)
def test_the_web_client_shows_reconnecting_and_keeps_the_call_and_its_timer() -> None:
    from test_e2e_browser import Page, browser

    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim), browser() as driver:
        page = Page(driver, gateway)
        page.open()
        login(page, "2001")
        page.dial("1000")
        page.state_is("connected")
        page.media_up()
        page.assert_hears(PHONE_HZ)
        uuid = only_channel(sim)
        wait_until(lambda: page.hook("callSeconds()") >= 1, WAIT, "the call timer")
        leg = _leg_of(gateway)
        page.js(MEDIA_LINES_JS)

        page.js(DISCONNECT_JS.replace("call.pc", "window.eslBridgeClient.call().pc"))
        new_leg = lambda: _leg_of(gateway) is not leg  # noqa: E731
        wait_until(new_leg, WAIT, "the gateway's new leg")
        page.until("window.eslBridgeClient.call().reconnecting === false", "reconnected")
        page.until(
            "document.getElementById('media-state').textContent === 'Audio connected'",
            "Audio connected again",
        )
        lines = page.js("window.mediaLines")
        assert "Reconnecting\u2026" in lines, lines
        # Still the same call, connected all along, its timer running on.
        assert page.hook("state()") == "connected"
        seconds = page.hook("callSeconds()")
        wait_until(lambda: page.hook("callSeconds()") > seconds, WAIT, "the timer runs on")
        assert only_channel(sim) == uuid
        page.assert_hears(PHONE_HZ)
        page.click("hangup")
        page.ended_with("You hung up.")
        assert_nothing_left(gateway, sim)
