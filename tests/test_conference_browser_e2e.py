"""A conference call end to end: the web client in two Chromium tabs, the real gateway and
the FreeSWITCH simulator's mod_conference (issue 14), no stand-in on either side.

alice starts a room in her tab and adds bob (he accepts in his tab) and the simulator's
tone phones 1000 (440 Hz) and 1002 (2 kHz). Both tabs list the four members with their
kinds and alice as the moderator, both hear the two phones (the page's own audio, an
AnalyserNode on what its conference <audio> plays), alice mutes bob (the SDK's
muteMember) and kicks 1002 from the page, both lists follow, and "End for all" ends both
views with nothing left on the simulator or in the gateway.

Threads as in test_sdk_calls_browser: the gevent hub (the gateway's ESL side) owns this
thread, so every WebDriver call runs in gevent's thread pool (``blocking``) and waits poll
cooperatively with ``wait_until``. Every wait is bounded and waits for an event.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from support.browser import CHROMEDRIVER, CHROMIUM, MIC_HZ
from support.gateway_support import APPID, assert_nothing_left, running_gateway, wait_until
from support.netns import assert_loopback_only, loopback_only
from test_e2e_browser import blocking, browser

from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimulatorThread

pytestmark = pytest.mark.browser

WAIT = 20.0  # bound of every wait; never an assertion on elapsed time
PHONE_HZ = {"1000": 440.0, "1002": 2000.0}  # the simulator's default tone extensions

# Levels (dB) of a few frequencies in what the page's conference audio plays, averaged
# over a second of FFT frames (an AnalyserNode on its remote stream, as DOMINANT_HZ_JS).
LEVELS_JS = """
const [freqs] = arguments;
const done = arguments[arguments.length - 1];
const stream = window.eslBridgeClient.remoteStream();
if (!stream || !stream.getAudioTracks().length) { done({error: "no remote stream"}); return; }
const ctx = new AudioContext();
const analyser = ctx.createAnalyser();
analyser.fftSize = 4096;
analyser.smoothingTimeConstant = 0;
ctx.createMediaStreamSource(stream).connect(analyser);
const bins = new Float32Array(analyser.frequencyBinCount);
const sums = freqs.map(() => 0);
let frames = 0;
const timer = setInterval(() => {
  analyser.getFloatFrequencyData(bins);
  freqs.forEach((f, i) => {
    const k = Math.round(f * analyser.fftSize / ctx.sampleRate);
    sums[i] += Math.max(bins[k - 1], bins[k], bins[k + 1]);
  });
  frames += 1;
  if (frames === 10) {
    clearInterval(timer);
    ctx.close();
    done({levels: sums.map((s) => s / frames), state: ctx.state});
  }
}, 100);
"""
HEARD_DB = -60.0  # a tone at least this loud in the mix is heard; silence is near -100


class Tab:
    """The web client in one tab of the shared Chromium, logged in as ``uid``."""

    def __init__(self, driver: Any, base: str, uid: str, first: bool) -> None:
        self.driver = driver
        self.uid = uid
        if not first:
            blocking(driver.switch_to.new_window, "tab")
        self.handle = driver.current_window_handle
        blocking(driver.get, f"{base}/")
        self.until("window.eslBridgeClient && window.eslBridgeClient.ready === true")
        self.type("uid", uid)
        self.click("login")
        self.until("window.eslBridgeClient.connection().state === 'connected'", "logged in")

    def focus(self) -> None:
        if self.driver.current_window_handle != self.handle:
            blocking(self.driver.switch_to.window, self.handle)

    def js(self, expression: str) -> Any:
        self.focus()
        return blocking(self.driver.execute_script, f"return {expression};")

    def el(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        self.focus()
        return blocking(self.driver.find_element, By.ID, element_id)

    def click(self, element_id: str) -> None:
        """A real click; found again if the page re-rendered it meanwhile (the member list
        is redrawn on every ConfMembers, talking changes included)."""
        from selenium.common.exceptions import StaleElementReferenceException

        for _ in range(5):
            try:
                button = self.el(element_id)
                assert blocking(button.is_displayed) and blocking(button.is_enabled), element_id
                blocking(button.click)
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"#{element_id} redrawn under every click; {self.debug()}")

    def type(self, element_id: str, value: str) -> None:
        field = self.el(element_id)
        blocking(field.clear)
        blocking(field.send_keys, value)

    def text(self, element_id: str) -> str:
        return str(self.js(f"document.getElementById({element_id!r})?.textContent ?? ''")).strip()

    def debug(self) -> str:
        return (
            f"{self.uid}: conference={self.js('window.eslBridgeClient.conferenceState()')!r} "
            f"note={self.js('window.eslBridgeClient.conferenceNote()')!r} "
            f"message={self.text('message')!r} "
            f"members={self.members()!r}"
        )

    def until(self, expression: str, what: str | None = None) -> Any:
        found: list[Any] = []

        def check() -> bool:
            found[:] = [self.js(expression)]
            return bool(found[0])

        try:
            wait_until(check, WAIT, what or expression)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.debug()}") from None
        return found[0]

    def members(self) -> list[dict[str, Any]]:
        """The SDK Conference's member list (the gateway's last ConfMembers), or []."""
        found = self.js(
            "(window.eslBridgeClient && window.eslBridgeClient.conference()?.members) ?? []"
        )
        return cast(list[dict[str, Any]], found)

    def by_uid(self) -> dict[str, dict[str, Any]]:
        return {m["Uid"]: m for m in self.members()}

    def levels(self, freqs: list[float]) -> dict[float, float]:
        self.focus()
        got = blocking(self.driver.execute_async_script, LEVELS_JS, freqs)
        assert "levels" in got, got
        return dict(zip(freqs, got["levels"], strict=True))


def assert_no_room_left(gateway: Gateway, sim: SimulatorThread) -> None:
    controller = gateway.controller
    assert controller is not None
    assert_nothing_left(gateway, sim)
    table = controller.conference.table
    wait_until(lambda: len(table) == 0, 8, "no room in the gateway")
    assert set(table.held().values()) == {0}, table.held()
    assert sim.api("conference list").startswith("+OK No active conferences")
    assert controller.links_held() == {"links": 0, "by_inv": 0, "by_ref": 0}


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=200)
def test_a_four_way_conference_in_two_tabs_of_the_web_client() -> None:
    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim), browser() as driver:
        host, port = gateway.web_address  # type: ignore[misc]
        base = f"http://{host}:{port}"
        alice = Tab(driver, base, "alice", first=True)
        bob = Tab(driver, base, "bob", first=False)

        # alice starts a room: she is its moderator; the page shows the dial-in digits.
        alice.click("conf-start")
        alice.until("window.eslBridgeClient.conferenceState() === 'in'", "alice in the room")
        chan = str(alice.js("window.eslBridgeClient.conference().chanId"))
        room = str(alice.js("window.eslBridgeClient.conference().room"))
        assert room == f"eb-{APPID}-{chan}", room
        assert alice.js("window.eslBridgeClient.conference().moderator") is True
        dial_in = str(alice.js("window.eslBridgeClient.conference().dialIn"))
        assert dial_in.isdigit(), dial_in
        assert dial_in in alice.text("conf-dialin")
        alice.until("(window.eslBridgeClient.conference().members ?? []).length === 1")

        # bob is added and accepts in his tab: his ConfJoin names alice's room.
        alice.type("conf-add", "bob")
        alice.click("conf-add-button")
        bob.until("window.eslBridgeClient.conferenceState() === 'invited'", "bob invited")
        assert bob.text("conf-inviter") == "alice"
        bob.click("conf-accept")
        bob.until("window.eslBridgeClient.conferenceState() === 'in'", "bob in the room")
        assert bob.js("window.eslBridgeClient.conference().chanId") == chan
        assert bob.js("window.eslBridgeClient.conference().room") == room
        assert bob.js("window.eslBridgeClient.conference().moderator") is False
        alice.until(
            "document.getElementById('conf-invites').textContent.includes('accepted')",
            "bob's invitation accepted in alice's list",
        )

        # The two phones are added from alice's page.
        for number in PHONE_HZ:
            alice.type("conf-add", number)
            alice.click("conf-add-button")
        everyone = {"alice": "web", "bob": "web", "1000": "sip", "1002": "sip"}
        for tab in (alice, bob):
            wait_until(lambda t=tab: set(t.by_uid()) == set(everyone), WAIT, f"{tab.uid}: 4")
            listed = tab.by_uid()
            assert {u: m["Kind"] for u, m in listed.items()} == everyone, listed
            assert [u for u, m in listed.items() if m["Moderator"]] == ["alice"], listed
            assert [u for u, m in listed.items() if m["Self"]] == [tab.uid], listed
            for uid, member in listed.items():
                row = tab.text(f"member-{member['Id']}")
                assert ("Phone" if everyone[uid] == "sip" else "Web") in row, row
                assert ("Moderator" in row) is (uid == "alice"), row
        ids = {u: m["Id"] for u, m in alice.by_uid().items()}
        assert {u: m["Id"] for u, m in bob.by_uid().items()} == ids
        assert sim.api(f"conference {room} list").count(";") > 0  # fs_cli sees the room

        # Each browser hears both phones' tones.
        freqs = list(PHONE_HZ.values())
        for tab in (alice, bob):
            tab.until(
                "window.eslBridgeClient.conference().pc?.connectionState === 'connected'",
                f"{tab.uid}'s media",
            )

            def hears_both(t: Tab = tab) -> bool:
                return all(level > HEARD_DB for level in t.levels(freqs).values())

            wait_until(hears_both, WAIT, f"{tab.uid} hearing 440 Hz and 2 kHz")

        # The moderator mutes bob (the SDK's muteMember): both lists show him muted.
        alice.js(f"window.eslBridgeClient.conference().muteMember({ids['bob']}, true), true")
        for tab in (alice, bob):
            wait_until(
                lambda t=tab: t.by_uid().get("bob", {}).get("Muted") is True, WAIT, "bob muted"
            )
            tab.until(
                f"document.getElementById('member-{ids['bob']}').className.includes('muted')",
                f"{tab.uid}: bob's row muted",
            )
        assert bob.text("conf-mute") == "Unmute"
        # A malformed request (Mute not a boolean) gets the gateway's ConfError bad_request,
        # which the page words for a person; the room carries on.
        alice.js(
            "window.eslBridgeClient.conference()._send({Cmd: 'ConfMute', ChanId:"
            f" {chan!r}, Mute: 'yes'}}), true"
        )
        alice.until(
            "window.eslBridgeClient.conferenceNote() !== ''", "the bad_request shown to alice"
        )
        assert alice.text("conf-status") == "The gateway did not understand that request."

        # alice kicks phone 1002 from her page: it leaves both lists, its number is free.
        alice.click(f"kick-{ids['1002']}")
        for tab in (alice, bob):
            tab.until(f"!document.getElementById('member-{ids['1002']}')", f"{tab.uid}: 1002 gone")
            wait_until(lambda t=tab: set(t.by_uid()) == {"alice", "bob", "1000"}, WAIT, "3 left")
        controller = gateway.controller
        assert controller is not None
        wait_until(lambda: "1002" not in controller.pool.busy(), WAIT, "1002 freed")

        # "End for all": both views end, and nothing is left anywhere.
        alice.click("conf-end")
        for tab in (alice, bob):
            tab.until("window.eslBridgeClient.conferenceState() === 'idle'", f"{tab.uid} ended")
            assert tab.text("conf-status") == "The conference has ended.", tab.debug()
            assert tab.js("window.eslBridgeClient.conference()") is None
            assert blocking(tab.el("conf-start").is_enabled)
        assert_no_room_left(gateway, sim)
        assert MIC_HZ not in PHONE_HZ.values()  # the phones' tones are not the microphones'

        # A second room; bob's network drops for longer than [limits] presence_grace, so
        # the gateway ends his leg meanwhile (web_gone: nobody to tell). Back online, his
        # SDK asks CallState (docs/protocol.rst) and, told 0, ends his view as lost.
        alice.click("conf-start")
        alice.until("window.eslBridgeClient.conferenceState() === 'in'", "a second room")
        alice.type("conf-add", "bob")
        alice.click("conf-add-button")
        bob.until("window.eslBridgeClient.conferenceState() === 'invited'", "bob invited again")
        bob.click("conf-accept")
        bob.until("window.eslBridgeClient.conferenceState() === 'in'", "bob in the second room")
        wait_until(lambda: set(alice.by_uid()) == {"alice", "bob"}, WAIT, "bob in alice's list")
        bob.until(  # his Offer was answered: nothing of the join still needs the WebSocket
            "window.eslBridgeClient.conference().pc?.connectionState === 'connected'",
            "bob's media in the second room",
        )
        bob.js(
            "(() => { const client = window.eslBridgeClient.conference()._client;"
            " const connect = client._connectAndLogin.bind(client);"
            " window.backOnline = new Promise((go) => { window.goOnline = go; });"
            " client._connectAndLogin = () => window.backOnline.then(connect);"
            " client._ws.close(3000); return true; })()"
        )
        wait_until(lambda: not controller.book.calls_of("bob"), WAIT, "bob's leg ended offline")
        wait_until(lambda: set(alice.by_uid()) == {"alice"}, WAIT, "bob gone from alice's list")
        assert bob.js("window.eslBridgeClient.conferenceState()") == "in", bob.debug()
        bob.js("window.goOnline(), true")
        bob.until("window.eslBridgeClient.conferenceState() === 'idle'", "bob's view ended")
        assert bob.text("conf-status") == "The conference was lost while the network was down."
        alice.click("conf-leave")
        alice.until("window.eslBridgeClient.conferenceState() === 'idle'", "alice left")
        assert_no_room_left(gateway, sim)
