"""The SDK's Call object (esl_bridge/web/sdk.js) in headless Chromium against the gateway
and the FreeSWITCH simulator, both directions, with the audio checked.

The page is any page of the gateway's origin (``/config.json``) into which the test imports
``/sdk.js``: exactly what an integrator's page does, without the web client. Chromium runs
with the flags of tests/support/browser.py (a fake microphone playing 1 kHz, loopback-only
peer connections, no DNS) inside a loopback-only network namespace.

Threads as in test_e2e_browser: the gevent hub (the gateway's ESL side) owns this thread,
so every WebDriver call runs in gevent's thread pool (``blocking``) and waits poll with
``wait_until``. Every wait is bounded and waits for an event, never for the clock.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from support.browser import CHROMEDRIVER, CHROMIUM, DOMINANT_HZ_JS, chromium
from support.gateway_support import APPID, assert_nothing_left, running_gateway, wait_until
from support.netns import assert_loopback_only, loopback_only
from test_e2e_browser import blocking, only_channel, unicast_of

from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimulatorThread, g711
from esl_bridge.sim.extensions import Extension
from esl_bridge.sim.media import AudioSource, UnicastStream

pytestmark = pytest.mark.browser

WEB_UID = "2001"
PHONE_HZ = 440.0  # extension 1000 and the simulated phones
EARLY_HZ = 600.0  # extension 1011's early media
WAIT = 15.0

# Import the SDK, log in, and record what the client and its calls emit.
SETUP_JS = """
const [appId, uid] = arguments;
const done = arguments[arguments.length - 1];
import("/sdk.js").then(async (sdk) => {
  window.sdk = sdk;
  window.events = [];
  const rec = (name, detail) => window.events.push({name, detail: detail ?? null});
  // As the README's page does: the call's remoteAudio in an <audio> element at once
  // (Chromium feeds a remote track to Web Audio only while an element plays it).
  const audio = document.createElement("audio");
  audio.autoplay = true;
  document.body.append(audio);
  window.watch = (call) => {
    window.call = call;
    audio.srcObject = call.remoteAudio;
    call.on("state", (s) => rec("state", s));
    call.on("remoteTrack", (t) => rec("remoteTrack", t.kind));
    call.on("ended", (why) => rec("ended", why));
    call.on("dtmf", (d) => rec("dtmf", d));
    call.on("mediaProblem", (p) => rec("mediaProblem", p));
    return call.state;
  };
  // DOMINANT_HZ_JS (tests/support/browser.py) listens to this stream.
  window.eslBridgeClient = {remoteStream: () => window.call ? window.call.remoteAudio : null};
  const client = sdk.createClient({appId});
  window.client = client;
  client.on("RemoteInvitationReceived", (ri) => {
    window.ri = ri;
    rec("invitation", ri.callerId);
  });
  await client.login(uid);
  done("ok");
}).catch((e) => done("error: " + (e.code ?? e)));
"""

# Run a promise-returning expression; resolve to its value or {error, name, code}.
RUN_JS = """
const done = arguments[arguments.length - 1];
Promise.resolve().then(() => (%s)).then(
  (v) => done(v === undefined ? null : v),
  (e) => done({error: String(e.message ?? e), name: e.name ?? null, code: e.code ?? null}));
"""


class SdkPage:
    def __init__(self, driver: Any, gateway: Gateway) -> None:
        self.driver = driver
        host, port = gateway.web_address  # type: ignore[misc]
        self.base = f"http://{host}:{port}"

    def open(self) -> None:
        blocking(self.driver.get, f"{self.base}/config.json")
        result = blocking(self.driver.execute_async_script, SETUP_JS, APPID, WEB_UID)
        assert result == "ok", result

    def js(self, expression: str) -> Any:
        return blocking(self.driver.execute_script, f"return {expression};")

    def run(self, expression: str) -> Any:
        return blocking(self.driver.execute_async_script, RUN_JS % expression)

    def events(self, name: str) -> list[Any]:
        found = self.js(f"window.events.filter(e => e.name === {json.dumps(name)})")
        return [e["detail"] for e in found]

    def wait_event(self, name: str, detail: Any = None) -> Any:
        def seen() -> bool:
            return any(detail is None or d == detail for d in self.events(name))

        try:
            wait_until(seen, WAIT, f"{name} {detail!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; events: {self.js('window.events')}") from None
        return next(d for d in self.events(name) if detail is None or d == detail)

    def media_up(self) -> None:
        wait_until(
            lambda: (
                self.js("window.call && window.call.pc && window.call.pc.connectionState")
                == "connected"
            ),
            WAIT,
            "the call's peer connection",
        )

    def hears(self) -> dict[str, Any]:
        return cast(dict[str, Any], blocking(self.driver.execute_async_script, DOMINANT_HZ_JS))

    def assert_hears(self, hz: float) -> None:
        measured = self.hears()
        assert measured.get("hz") == pytest.approx(hz, abs=12), measured
        assert measured["db"] > -70, measured

    def stats(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.run("window.call.getStats()"))


@contextlib.contextmanager
def sdk_page(gateway: Gateway) -> Iterator[SdkPage]:
    manager = chromium()
    driver = blocking(manager.__enter__)
    try:
        page = SdkPage(driver, gateway)
        page.open()
        yield page
    finally:
        blocking(manager.__exit__, None, None, None)


def recent_rms(stream: UnicastStream, frames: int = 10) -> float:
    """RMS of the last ``frames`` datagrams the simulated channel received (a muted PCMU
    browser sends mu-law silence, 0xFF bytes: decoded, they are zeros)."""
    data = [d.data for d in list(stream.received)][-frames:]
    if len(data) < frames:
        return -1.0
    raw = b"".join(data)
    if stream.native:
        raw = g711.decode(stream.codec.name, raw)
    samples = np.frombuffer(raw, dtype="<i2").astype(float)
    return float(np.sqrt(np.mean(samples**2)))


# ---- tests ---------------------------------------------------------------------------


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_sdk_call_to_a_phone_in_chromium() -> None:
    """client.call(): the phone's tone heard, stats, DTMF to the phone, mute heard as
    silence at the phone, early media heard before the answer on the same connection,
    and a refused microphone as a CallError before anything is sent."""
    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim), sdk_page(gateway) as page:
        run_call_to_phone(page, gateway, sim)
        run_early_media(page, gateway, sim)
        run_microphone_refused(page, gateway, sim)


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_sdk_call_from_a_phone_in_chromium() -> None:
    """remoteInvitation.accept({}) gives a Call: the phone's tone heard, the page's tone at
    the phone, DTMF from the phone as a dtmf event, the phone hanging up as ended."""
    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim), sdk_page(gateway) as page:
        phone = blocking(sim.place_call, caller="1001", dest=f"0{WEB_UID}", audio="tone440")
        assert page.wait_event("invitation") == "gateway"
        assert page.run("ri.accept({}).then(watch)") == "connected"
        again = page.run("ri.accept({})")
        assert (again["name"], again["code"]) == ("RtmError", "ALREADY_ACCEPT"), again
        wait_until(lambda: phone.answered, WAIT, "the phone answered")
        page.media_up()
        assert page.js("window.call.direction") == "incoming"
        assert page.js("window.call.state") == "connected"
        page.assert_hears(PHONE_HZ)
        stream = unicast_of(sim, phone.uuid)
        wait_until(lambda: recent_rms(stream) > 500, WAIT, "the page's microphone at the phone")
        blocking(phone.send_dtmf, "7")
        assert page.wait_event("dtmf") == "7"
        blocking(phone.hangup, "NORMAL_CLEARING")
        ended = page.wait_event("ended")
        assert ended["reason"] == "remote_hangup", ended
        assert page.js("window.call.pc.connectionState") == "closed"
        assert_nothing_left(gateway, sim)

        # The microphone refused while a phone calls: a CallError, and the phone's call is
        # refused rather than left ringing.
        page.js(
            "(navigator.mediaDevices.getUserMedia = () => Promise.reject("
            "new DOMException('Permission denied', 'NotAllowedError')), true)"
        )
        phone = blocking(sim.place_call, caller="1001", dest=f"0{WEB_UID}")
        wait_until(lambda: len(page.events("invitation")) == 2, WAIT, "the second invitation")
        error = page.run("ri.accept({})")
        assert (error["name"], error["code"]) == ("CallError", "MICROPHONE_DENIED"), error
        wait_until(lambda: phone.finished, WAIT, "the phone's call refused")
        assert not phone.answered
        assert_nothing_left(gateway, sim)


# ---- scenarios -----------------------------------------------------------------------


def run_call_to_phone(page: SdkPage, gateway: Gateway, sim: SimulatorThread) -> None:
    state = page.run('client.call("1000", {userData: "order-42"}).then(watch)')
    assert state in ("calling", "ringing", "connected"), state
    page.wait_event("state", "connected")
    page.media_up()
    assert page.js("window.call.direction") == "outgoing"
    assert page.js("window.call.remoteAudio instanceof MediaStream") is True
    page.wait_event("remoteTrack", "audio")
    page.assert_hears(PHONE_HZ)
    uuid = only_channel(sim)
    stream = unicast_of(sim, uuid)

    # Stats from the peer connection: every field there once audio flowed both ways.
    def stats_complete() -> bool:
        s = page.stats()
        return (
            all(
                s[k] is not None
                for k in ("rttMs", "jitterMs", "audioLevel", "codec", "packetsLost")
            )
            and (s["packetsReceived"] or 0) > 0
        )

    wait_until(stats_complete, WAIT, "complete stats")
    stats = page.stats()
    assert stats["codec"].lower() in ("pcmu/8000", "opus/48000"), stats
    assert stats["rttMs"] >= 0 and stats["jitterMs"] >= 0 and 0 <= stats["audioLevel"] <= 1
    assert stats["connectionState"] == "connected"

    # DTMF reaches the phone.
    assert page.run('call.sendDtmf("123#")') == {"delivered": True}
    channel = sim.get_channel(uuid)
    assert channel is not None
    wait_until(lambda: "".join(channel.dtmf_to_phone) == "123#", WAIT, "DTMF at the phone")
    bad = page.run('call.sendDtmf("12x")')
    assert (bad["name"], bad["code"]) == ("CallError", "INVALID_ARGUMENT"), bad

    # Mute: the phone's side of the call hears silence, then the tone again.
    wait_until(lambda: recent_rms(stream) > 500, WAIT, "the microphone at the phone")
    page.js("(call.mute(true), true)")
    assert page.js("call.muted") is True
    wait_until(lambda: 0 <= recent_rms(stream) < 50, WAIT, "silence at the phone while muted")
    page.js("(call.mute(false), true)")
    wait_until(lambda: recent_rms(stream) > 500, WAIT, "the microphone again after unmute")

    assert page.run("call.hangup()") is None
    ended = page.wait_event("ended")
    assert ended["reason"] == "hangup", ended
    assert page.js("call.state") == "ended"
    assert page.js("call.localStream.getAudioTracks()[0].readyState") == "ended"
    assert_nothing_left(gateway, sim)
    gone = sim.get_channel(uuid)
    assert gone is not None and gone.hangup_cause == "NORMAL_CLEARING"


def run_early_media(page: SdkPage, gateway: Gateway, sim: SimulatorThread) -> None:
    """1011 sends a 183 with a tone; here it answers only when the test says so."""
    sim.set_extension(
        "1011", Extension("early_media", answer_after=None, audio=AudioSource("tone", EARLY_HZ))
    )
    page.js("(window.events.length = 0, true)")  # this call's events only
    page.run('client.call("1011").then(watch)')
    page.wait_event("state", "early_media")
    page.media_up()
    uuid = only_channel(sim)
    channel = sim.get_channel(uuid)
    assert channel is not None
    early = unicast_of(sim, uuid)  # started during early media
    wait_until(lambda: early.frames_sent > 25, WAIT, "early media sent by the phone")
    page.assert_hears(EARLY_HZ)
    # Heard before the answer: the phone has not answered, the invitation is not accepted.
    assert not channel.answered and channel.answer_state == "early"
    assert page.js("call.state") == "early_media"
    assert page.js("call.invitation.getState()") == 2  # RECEIVED_BY_REMOTE
    assert "connected" not in page.events("state")
    page.js("(window.earlyPc = call.pc, true)")

    blocking(sim.answer, uuid)
    page.wait_event("state", "connected")
    # The same connection carries on: no second offer, the tone is still heard.
    assert page.js("call.pc === window.earlyPc") is True
    assert page.js("call.pc.connectionState") == "connected"
    page.assert_hears(EARLY_HZ)
    assert len(channel.unicast_history) == 1
    assert not sim.crashed, sim.crash_reason
    page.run("call.hangup()")
    page.wait_event("ended", {"reason": "hangup", "detail": "", "cause": ""})
    assert_nothing_left(gateway, sim)


def run_microphone_refused(page: SdkPage, gateway: Gateway, sim: SimulatorThread) -> None:
    page.js(
        "(window.realGetUserMedia = navigator.mediaDevices.getUserMedia.bind("
        "navigator.mediaDevices), navigator.mediaDevices.getUserMedia = () => Promise.reject("
        "new DOMException('Permission denied', 'NotAllowedError')), true)"
    )
    channels_before = len(sim.all_channels())
    error = page.run('client.call("1000")')
    assert (error["name"], error["code"]) == ("CallError", "MICROPHONE_DENIED"), error
    assert len(sim.all_channels()) == channels_before  # nothing was sent
    assert gateway.controller is not None and gateway.controller.status()["calls"] == 0
    page.js("(navigator.mediaDevices.getUserMedia = window.realGetUserMedia, true)")


# ---- the README's page ---------------------------------------------------------------

README = Path(__file__).resolve().parent.parent / "README.rst"


def readme_page() -> str:
    """The complete page of README "Use the SDK in your page", with this gateway's appid."""
    text = README.read_text()
    start = text.index("A complete page that calls a")
    block = text[text.index("::\n\n", start) + 4 :]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    page = "\n".join(lines).strip() + "\n"
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</script>")
    assert 'appId: "demo"' in page
    return page.replace('appId: "demo"', f'appId: "{APPID}"')


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_the_readme_page_calls_and_answers_in_chromium() -> None:
    """The README's page as written: Call 1000 is heard, Hang up ends it; a phone's call is
    answered (confirm() says yes) and heard."""
    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim):
        manager = chromium()
        driver = blocking(manager.__enter__)
        try:
            run_readme_page(driver, gateway, sim)
        finally:
            blocking(manager.__exit__, None, None, None)


def run_readme_page(driver: Any, gateway: Gateway, sim: SimulatorThread) -> None:
    from selenium.webdriver.common.by import By

    page = SdkPage(driver, gateway)
    # A page of the gateway's origin without the web client's Content-Security-Policy (which
    # forbids inline scripts): the README's page as an integrator serves it beside the SDK.
    blocking(driver.get, f"{page.base}/healthz")
    blocking(
        driver.execute_script,
        "document.open(); document.write(arguments[0]); document.close();"
        "window.confirm = () => true;"
        "window.eslBridgeClient = {remoteStream: () => document.getElementById('remote')"
        ".srcObject};",
        readme_page(),
    )

    def state() -> str:
        return str(page.js("document.getElementById('state').value"))

    try:
        wait_until(lambda: state() == "ready", WAIT, "the page logged in")
    except AssertionError:
        logs = blocking(driver.get_log, "browser")
        raise AssertionError(f"state {state()!r}; console: {logs}") from None
    blocking(lambda: driver.find_element(By.ID, "dial").click())
    wait_until(lambda: state() == "connected", WAIT, "the call to 1000")
    wait_until(
        lambda: page.js("document.getElementById('remote').srcObject.getAudioTracks().length") == 1,
        WAIT,
        "the remote track",
    )
    page.assert_hears(PHONE_HZ)
    blocking(lambda: driver.find_element(By.ID, "hangup").click())
    wait_until(lambda: state() == "ended: hangup ", WAIT, "ended")
    assert_nothing_left(gateway, sim)

    phone = blocking(sim.place_call, caller="1001", dest=f"0{WEB_UID}", audio="tone440")
    wait_until(lambda: phone.answered, WAIT, "the page answered the phone")
    wait_until(lambda: state() == "connected", WAIT, "the incoming call connected")
    # "connected" is the signalling; the new call's track comes with its media, and until
    # then the page's stream is the ended call's, with no audio track (seen in CI).
    wait_until(
        lambda: page.js("document.getElementById('remote').srcObject.getAudioTracks().length") == 1,
        WAIT,
        "the incoming call's remote track",
    )
    page.assert_hears(PHONE_HZ)
    blocking(phone.hangup, "NORMAL_CLEARING")
    wait_until(lambda: state() == "ended: remote_hangup ", WAIT, "ended by the phone")
    assert_nothing_left(gateway, sim)


# ---- the web client on the Call object -----------------------------------------------


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_the_web_client_plays_early_media_in_chromium() -> None:
    """The page at ``/`` (built on the Call): a phone's early media is heard while the page
    says it rings, the answer keeps the audio; hanging up during early media cancels the
    phone's call."""
    from test_e2e_browser import Page

    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim):
        manager = chromium()
        driver = blocking(manager.__enter__)
        try:
            sim.set_extension(
                "1011",
                Extension("early_media", answer_after=None, audio=AudioSource("tone", EARLY_HZ)),
            )
            page = Page(driver, gateway)
            page.open()
            page.login(WEB_UID)
            page.dial("1011")
            page.state_is("early_media")
            assert page.text("call-state") == "Ringing… (you hear the line)"
            page.media_up()
            uuid = only_channel(sim)
            page.assert_hears(EARLY_HZ)
            channel = sim.get_channel(uuid)
            assert channel is not None and not channel.answered
            blocking(sim.answer, uuid)
            page.state_is("connected")
            page.media_up()
            page.assert_hears(EARLY_HZ)
            page.click("hangup")
            page.ended_with("You hung up.")
            assert_nothing_left(gateway, sim)

            page.dial("1011")
            page.state_is("early_media")
            page.media_up()
            uuid = only_channel(sim)
            page.click("hangup")
            page.ended_with("You hung up.")
            assert_nothing_left(gateway, sim)
            gone = sim.get_channel(uuid)
            assert gone is not None and not gone.answered
            assert gone.hangup_cause == "ORIGINATOR_CANCEL"
        finally:
            blocking(manager.__exit__, None, None, None)
