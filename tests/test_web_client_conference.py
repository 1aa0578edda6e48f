"""The web client's conference view (esl_bridge/web: index.html, app.js, app.css) in headless
Chromium, two tabs as two users, against the signalling hub and a scripted gateway uid.

The gateway uid is tests/support/conf_gateway_script.py, which STANDS IN FOR THE GATEWAY SIDE
of the conference protocol until the client and server branches meet (the end-to-end test
with the real gateway and the simulator's mod_conference then comes on top of this one, not
instead of it). It answers ConfJoin, answers the page's Offer with a real aiortc peer, sends
ConfMembers (phones and talking changes on the test's word) and records what the page sends.

Screenshots of the conference view (desktop and phone size) are copied to
/tmp/esl-bridge-screens/ for a human to look at. Every wait waits for an event (bounded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.browser import CHROMEDRIVER, CHROMIUM, chromium
from support.conf_gateway_script import ConfServer
from support.netns import assert_loopback_only, loopback_only

pytestmark = pytest.mark.browser

APPID = "app1"
GATEWAY_UID = "gateway"
WAIT = 15.0  # bound of every wait; never an assertion on elapsed time
SCREENS = Path("/tmp/esl-bridge-screens")


def wait_for(check: Callable[[], Any], what: str, debug: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; {debug() if debug else ''}")
        time.sleep(0.05)


class Tab:
    """The web client in one tab, logged in as ``uid``."""

    def __init__(self, driver: Any, server: ConfServer, uid: str, first: bool) -> None:
        self.driver = driver
        self.uid = uid
        if not first:
            driver.switch_to.new_window("tab")
        self.handle = driver.current_window_handle
        driver.get(f"{server.base}/")
        self.until("window.eslBridgeClient && window.eslBridgeClient.ready === true")
        self.type("uid", uid)
        self.click("login")
        self.until("window.eslBridgeClient.connection().state === 'connected'")

    def focus(self) -> None:
        if self.driver.current_window_handle != self.handle:
            self.driver.switch_to.window(self.handle)

    def js(self, expression: str) -> Any:
        self.focus()
        return self.driver.execute_script(f"return {expression};")

    def el(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        self.focus()
        return self.driver.find_element(By.ID, element_id)

    def click(self, element_id: str) -> None:
        button = self.el(element_id)
        assert button.is_displayed() and button.is_enabled(), f"#{element_id} not clickable"
        button.click()

    def type(self, element_id: str, value: str) -> None:
        field = self.el(element_id)
        field.clear()
        field.send_keys(value)

    def text(self, element_id: str) -> str:
        return str(self.js(f"document.getElementById({element_id!r}).textContent")).strip()

    def shown(self, element_id: str) -> bool:
        return bool(self.js(f"!!document.getElementById({element_id!r})?.offsetParent"))

    def conf_state(self) -> str:
        return str(self.js("window.eslBridgeClient.conferenceState()"))

    def debug(self) -> str:
        return (
            f"{self.uid}: conference={self.conf_state()!r} "
            f"note={self.js('window.eslBridgeClient.conferenceNote()')!r} "
            f"message={self.text('message')!r}"
        )

    def until(self, expression: str, what: str | None = None) -> Any:
        return wait_for(lambda: self.js(expression), what or expression, self.debug)

    def member_classes(self, member_id: int) -> list[str]:
        found = self.js(f"document.getElementById('member-{member_id}')?.className ?? ''")
        return str(found).split()

    def shot(self, name: str) -> None:
        """Screenshots at desktop and phone size; the page never wider than the viewport."""
        SCREENS.mkdir(parents=True, exist_ok=True)
        for label, (width, height) in {"desktop": (1280, 800), "phone": (390, 844)}.items():
            self.driver.set_window_size(width, height)
            self.until(f"window.innerWidth === {width}", f"viewport {width}")
            assert self.js("document.documentElement.scrollWidth <= window.innerWidth + 1")
            self.js("window.scrollTo(0, 0)")
            path = SCREENS / f"conference-{name}-{label}.png"
            assert self.driver.save_screenshot(str(path))
        self.driver.set_window_size(1280, 800)


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_web_client_conference_view_in_chromium() -> None:
    """Start a conference, see the members (You, moderator, phone), the talking highlight
    and the muted icon; Mute sends ConfMute; an invited web user accepts in its own tab and
    its ConfJoin names the room's ChanId; Kick and End are the moderator's only; a member
    kicked (EndCall Reason kicked) sees why; the two-party phone is back afterwards."""
    assert_loopback_only()
    with ConfServer(APPID, GATEWAY_UID) as server, chromium() as driver:
        gw = server.gw
        alice = Tab(driver, server, "alice", first=True)
        bob = Tab(driver, server, "bob", first=False)

        # alice starts a conference: a ChanId is made for her; she is its moderator.
        alice.click("conf-start")
        alice.until("window.eslBridgeClient.conferenceState() === 'in'", "alice in the room")
        chan = str(alice.js("window.eslBridgeClient.conference().chanId"))
        assert chan.startswith("web-") and len(chan) <= 40, chan
        assert gw.commands("ConfJoin") == [
            ("alice", {"Cmd": "ConfJoin", "ChanId": chan, "DisplayName": "alice"})
        ]
        me = gw.member_id(chan, "alice")
        alice.until(f"document.getElementById('member-{me}')", "alice's own entry")
        assert alice.text(f"member-{me}").startswith("You")
        assert "Moderator" in alice.text(f"member-{me}")
        assert alice.text("conf-dialin") == "Phones dial 90001 to join"
        assert not alice.shown("phone-panel")  # the room takes the phone's place
        assert alice.shown("conf-end")
        alice.until(
            "window.eslBridgeClient.conference().pc?.connectionState === 'connected'", "media"
        )

        # A phone joins; talking lights its row up, silence turns it off.
        phone = server.call(gw.add_phone, chan, "1000")
        alice.until(f"document.getElementById('member-{phone}')", "the phone's entry")
        assert "Phone" in alice.text(f"member-{phone}")
        assert alice.shown(f"kick-{phone}")
        assert alice.js(f"document.getElementById('kick-{me}')") is None  # never oneself
        server.call(gw.set_talking, chan, phone, True)
        wait_for(lambda: "talking" in alice.member_classes(phone), "talking highlight")
        assert alice.js(
            f"getComputedStyle(document.getElementById('member-{phone}')).borderColor"
        ) != alice.js(f"getComputedStyle(document.getElementById('member-{me}')).borderColor")
        server.call(gw.set_talking, chan, phone, False)
        wait_for(lambda: "talking" not in alice.member_classes(phone), "the highlight off")

        # Mute: ConfMute to the gateway; the page shows it muted.
        alice.click("conf-mute")
        wait_for(lambda: gw.commands("ConfMute"), "ConfMute")
        assert gw.commands("ConfMute") == [
            ("alice", {"Cmd": "ConfMute", "ChanId": chan, "Mute": True})
        ]
        wait_for(lambda: "muted" in alice.member_classes(me), "the muted icon")
        assert alice.text("conf-mute") == "Unmute"
        server.call(gw.set_talking, chan, phone, True)
        wait_for(lambda: "talking" in alice.member_classes(phone), "talking again")

        # One-way audio: the gateway's MediaProblem for the member's own microphone, then
        # for the room's audio toward the page, shows a banner in the room until ok; a
        # verdict the SDK does not know is ignored.
        assert alice.js("window.eslBridgeClient.conferenceMediaProblem()") == ""
        assert not alice.shown("conf-media-problem")
        problem = {"Cmd": "MediaProblem", "ChanId": chan}
        for direction, verdict in (
            ("browser_to_switch", "no_such_verdict"),
            ("browser_to_switch", "browser_silent"),
        ):
            server.call(gw.send, "alice", {**problem, "Direction": direction, "Verdict": verdict})
        silent = "They may not hear you: your microphone sends silence."
        alice.until(f"window.eslBridgeClient.conferenceMediaProblem() === {silent!r}", "the banner")
        assert alice.shown("conf-media-problem") and alice.text("conf-media-problem") == silent
        alice.shot("one-way-audio")
        for direction, verdict in (
            ("switch_to_browser", "switch_filler_only"),
            ("browser_to_switch", "ok"),
        ):
            server.call(gw.send, "alice", {**problem, "Direction": direction, "Verdict": verdict})
        filler = "You may not hear them: no audio comes from their side."
        alice.until(
            f"window.eslBridgeClient.conferenceMediaProblem() === {filler!r}",
            "the banner of the other direction",
        )
        server.call(
            gw.send, "alice", {**problem, "Direction": "switch_to_browser", "Verdict": "ok"}
        )
        alice.until("window.eslBridgeClient.conferenceMediaProblem() === ''", "the banner gone")
        assert not alice.shown("conf-media-problem")

        # A two-party call to alice while she is in the room: refused as busy.
        bob.type("contact", "alice")
        bob.click("call")
        bob.until("window.eslBridgeClient.lastReason() === 'The line is busy.'", "busy")
        assert alice.text("message") == "Missed call from bob: you were in another call."
        assert alice.conf_state() == "in"

        # Add bob: his tab shows the invitation; Accept sends ConfJoin for alice's room.
        alice.type("conf-add", "bob")
        alice.click("conf-add-button")
        bob.until("window.eslBridgeClient.conferenceState() === 'invited'", "bob invited")
        assert bob.text("conf-inviter") == "alice"
        assert bob.shown("conf-accept") and bob.shown("conf-decline")
        bob.shot("invitation")
        bob.click("conf-accept")
        bob.until("window.eslBridgeClient.conferenceState() === 'in'", "bob in the room")
        assert gw.commands("ConfJoin")[-1] == (
            "bob",
            {"Cmd": "ConfJoin", "ChanId": chan, "DisplayName": "bob"},
        )
        bob_id = gw.member_id(chan, "bob")
        alice.until(f"document.getElementById('member-{bob_id}')", "bob in alice's list")
        alice.until("document.getElementById('conf-invites').textContent.includes('accepted')")
        bob.until(f"document.getElementById('member-{me}')", "alice in bob's list")
        # Not the moderator: no Kick, no End for bob.
        assert bob.js("document.querySelectorAll('#conf-members button').length") == 0
        assert not bob.shown("conf-end")
        assert "Moderator" in bob.text(f"member-{me}")
        assert bob.text(f"member-{bob_id}").startswith("You")
        alice.shot("4-way")
        bob.shot("member")

        # Kick the phone: ConfKick, and it leaves both lists.
        alice.click(f"kick-{phone}")
        wait_for(lambda: gw.commands("ConfKick"), "ConfKick")
        assert gw.commands("ConfKick") == [
            ("alice", {"Cmd": "ConfKick", "ChanId": chan, "Member": phone})
        ]
        bob.until(f"!document.getElementById('member-{phone}')", "the phone gone for bob")

        # Kick bob: the gateway's EndCall Reason kicked ends his view with the reason.
        alice.click(f"kick-{bob_id}")
        bob.until("window.eslBridgeClient.conferenceState() === 'idle'", "bob's view ended")
        assert bob.text("conf-status") == "The moderator removed you from the conference."
        assert gw.sent_to("bob", "EndCall")[-1]["Reason"] == "kicked"
        assert bob.shown("phone-panel") and bob.el("call").is_enabled()
        assert bob.js("window.eslBridgeClient.conference()") is None

        # End for all: ConfEnd, the room is over for alice too; her phone is back.
        alice.click("conf-end")
        alice.until("window.eslBridgeClient.conferenceState() === 'idle'", "alice's view ended")
        assert gw.commands("ConfEnd") == [("alice", {"Cmd": "ConfEnd", "ChanId": chan})]
        assert alice.text("conf-status") == "The conference has ended."
        assert alice.shown("phone-panel") and alice.el("call").is_enabled()
        assert alice.el("conf-start").is_enabled()

        # A refused start is shown in the page, and nothing is left joining.
        server.call(setattr, gw, "refuse_next", "too_many_rooms")
        alice.click("conf-start")
        alice.until("window.eslBridgeClient.conferenceNote().startsWith('Too many')", "the refusal")
        assert alice.conf_state() == "idle"
        assert alice.text("conf-status") == (
            "Too many conferences are open on this gateway. Try again later."
        )
        assert gw.commands("ConfJoin")[-1][1]["ChanId"] != chan
        assert alice.el("conf-start").is_enabled()

        # A second room; bob declines this time: alice's invitation shows it, nothing joins.
        alice.click("conf-start")
        alice.until("window.eslBridgeClient.conferenceState() === 'in'", "a new room")
        joins = len(gw.commands("ConfJoin"))
        alice.type("conf-add", "bob")
        alice.click("conf-add-button")
        bob.until("window.eslBridgeClient.conferenceState() === 'invited'", "bob invited again")
        bob.click("conf-decline")
        assert bob.conf_state() == "idle"
        assert bob.text("conf-status") == "You declined the conference invitation from alice."
        alice.until(
            "document.getElementById('conf-invites').textContent.includes('declined')",
            "the refusal in alice's list",
        )
        assert len(gw.commands("ConfJoin")) == joins
        alice.click("conf-leave")
        alice.until("window.eslBridgeClient.conferenceState() === 'idle'", "alice left")
        assert alice.text("conf-status") == "You left the conference."
        assert gw.commands("EndCall")[-1][0] == "alice"
