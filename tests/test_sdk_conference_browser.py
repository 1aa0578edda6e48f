"""The SDK's conference API (client.joinConference / acceptConference, Conference) in headless
Chromium, against the signalling hub and a scripted gateway uid.

The gateway side of the conference protocol is not on this branch yet: the gateway uid here is
tests/support/conf_gateway_script.py, which STANDS IN FOR THE GATEWAY SIDE until the two
branches meet (the end-to-end test with the real gateway and the simulator's mod_conference
then comes on top of this one, not instead of it). It answers ConfJoin with ConfJoined and
ConfMembers, the browser's Offer with a real aiortc answer (so the page's media really
connects and its tone is heard), and records the ConfMute / ConfKick / ConfEnd / EndCall it
gets.

Two tabs of one Chromium (users alice and bob) run inside a loopback-only network namespace.
Every wait waits for an event (bounded), never for the clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from support.browser import CHROMEDRIVER, CHROMIUM, DOMINANT_HZ_JS, chromium
from support.conf_gateway_script import ConfServer
from support.netns import assert_loopback_only, loopback_only

pytestmark = pytest.mark.browser

APPID = "app1"
GATEWAY_UID = "gateway"
ROOM = "room-1"
WAIT = 15.0  # bound of every wait; never an assertion on elapsed time

# Import the SDK, log in, and record what the client and its conference emit.
SETUP_JS = """
const [appId, uid] = arguments;
const done = arguments[arguments.length - 1];
import("/sdk.js").then(async (sdk) => {
  window.sdk = sdk;
  window.events = [];
  const rec = (name, detail) => window.events.push({name, detail: detail ?? null});
  const audio = document.createElement("audio");
  audio.autoplay = true;
  document.body.append(audio);
  window.watch = (conf) => {
    window.conf = conf;
    audio.srcObject = conf.remoteAudio;
    conf.on("members", (members, event, member) => rec("members", {members, event, member}));
    conf.on("error", (reason) => rec("error", reason));
    conf.on("ended", (why) => rec("ended", why));
    return {chanId: conf.chanId, room: conf.room, dialIn: conf.dialIn,
            moderator: conf.moderator, state: conf.state};
  };
  window.eslBridgeClient = {remoteStream: () => window.conf ? window.conf.remoteAudio : null};
  const client = sdk.createClient({appId, reconnect: {initialDelay: 100, maxDelay: 400}});
  window.client = client;
  client.on("ConnectionStateChanged", (state, reason) => rec("connection", [state, reason]));
  client.on("RemoteInvitationReceived", (ri) => {
    window.ri = ri;
    rec("invitation", {caller: ri.callerId, content: ri.content});
  });
  await client.login(uid);
  done("ok");
}).catch((e) => done("error: " + (e.code ?? e)));
"""

# Run a promise-returning expression; resolve to its value or {error, name, code, reason}.
RUN_JS = """
const done = arguments[arguments.length - 1];
Promise.resolve().then(() => (%s)).then(
  (v) => done(v === undefined ? null : v),
  (e) => done({error: String(e.message ?? e), name: e.name ?? null, code: e.code ?? null,
               reason: e.reason ?? null}));
"""


def wait_for(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Tab:
    """One tab = one user of the SDK."""

    def __init__(self, driver: Any, server: ConfServer, uid: str, first: bool) -> None:
        self.driver = driver
        self.uid = uid
        if not first:
            driver.switch_to.new_window("tab")
        self.handle = driver.current_window_handle
        driver.get(f"{server.base}/config.json")
        assert self.driver.execute_async_script(SETUP_JS, APPID, uid) == "ok"

    def _focus(self) -> None:
        if self.driver.current_window_handle != self.handle:
            self.driver.switch_to.window(self.handle)

    def js(self, expression: str) -> Any:
        self._focus()
        return self.driver.execute_script(f"return {expression};")

    def run(self, expression: str) -> Any:
        self._focus()
        return self.driver.execute_async_script(RUN_JS % expression)

    def events(self, name: str) -> list[Any]:
        found = self.js(f"window.events.filter(e => e.name === {json.dumps(name)})")
        return [e["detail"] for e in found]

    def wait_event(self, name: str, match: Callable[[Any], bool] = lambda _: True) -> Any:
        def seen() -> Any:
            return next((d for d in self.events(name) if match(d)), None)

        try:
            return wait_for(seen, f"{self.uid}: {name}")
        except AssertionError:
            events = self.js("window.events")
            raise AssertionError(f"{self.uid}: no {name}; events {events}") from None

    def members_event(self, event: str, member: int | None = None) -> dict[str, Any]:
        return dict(
            self.wait_event(
                "members",
                lambda d: d["event"] == event and (member is None or d["member"] == member),
            )
        )


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_sdk_conference_in_chromium() -> None:
    """joinConference resolves on ConfJoined and its media connects; the member list and
    members events follow the ConfMembers sent; ConfRefused rejects with its reason; bad
    arguments are refused before anything is sent; mute/kick/end/leave send their messages;
    a conference invitation accepted with acceptConference joins the inviter's room."""
    assert_loopback_only()
    with ConfServer(APPID, GATEWAY_UID) as server, chromium() as driver:
        gw = server.gw
        alice = Tab(driver, server, "alice", first=True)
        bob = Tab(driver, server, "bob", first=False)

        # Bad arguments: clear errors, nothing sent.
        for bad in ('"x".repeat(65)', '"\\u00e9".repeat(33)', '""', "42"):
            error = alice.run(f"client.joinConference({bad})")
            assert (error["name"], error["code"]) == ("RtmError", "INVALID_ARGUMENT"), (bad, error)
        error = alice.run('client.joinConference("r", {displayName: "n".repeat(65)})')
        assert error["code"] == "INVALID_ARGUMENT", error
        assert gw.commands("ConfJoin") == []
        assert alice.js("client._calls.size") == 0

        # ConfRefused rejects the join with the reason; nothing is left behind.
        server.call(gw.refuse.__setitem__, "full-room", "room_full")
        error = alice.run('client.joinConference("full-room")')
        assert (error["name"], error["code"], error["reason"]) == (
            "RtmError",
            "CONF_REFUSED",
            "room_full",
        ), error
        assert gw.commands("ConfJoin") == [("alice", {"Cmd": "ConfJoin", "ChanId": "full-room"})]
        assert alice.js("client._calls.size") == 0

        # Join: ConfJoined's fields, then the Offer/Answer of a call; the media connects.
        joined = alice.run(f'client.joinConference("{ROOM}", {{displayName: "Alice"}}).then(watch)')
        assert joined == {
            "chanId": ROOM,
            "room": f"eb-{APPID}-{ROOM}",
            "dialIn": "90001",
            "moderator": True,
            "state": "connected",
        }, joined
        assert gw.commands("ConfJoin")[-1] == (
            "alice",
            {"Cmd": "ConfJoin", "ChanId": ROOM, "DisplayName": "Alice"},
        )
        offer = wait_for(lambda: gw.commands("Offer"), "the page's Offer")[-1]
        assert offer[0] == "alice" and offer[1]["ChanId"] == ROOM
        listed = alice.members_event("list")
        assert [(m["Uid"], m["Name"], m["Self"], m["Moderator"]) for m in listed["members"]] == [
            ("alice", "Alice", True, True)
        ]
        wait_for(lambda: alice.js("conf.pc && conf.pc.connectionState") == "connected", "media")
        wait_for(lambda: gw.heard(ROOM, "alice") > 25, "the page's audio at the gateway")
        heard = alice.driver.execute_async_script(DOMINANT_HZ_JS)
        assert heard.get("hz") == pytest.approx(440.0, abs=12), heard
        # The same room twice from one client: refused locally.
        again = alice.run(f'client.joinConference("{ROOM}")')
        assert again["code"] == "ALREADY_JOINED", again

        # A phone joins; the list is always the last ConfMembers.
        phone = server.call(gw.add_phone, ROOM, "1000")
        event = alice.members_event("join", phone)
        assert [m["Kind"] for m in event["members"]] == ["web", "sip"]
        assert alice.js("conf.members.map(m => m.Uid)") == ["alice", "1000"]
        server.call(gw.set_talking, ROOM, phone, True)
        alice.members_event("talking", phone)
        assert alice.js(f"conf.members.find(m => m.Id === {phone}).Talking") is True
        server.call(gw.set_talking, ROOM, phone, False)
        alice.members_event("silent", phone)
        assert alice.js(f"conf.members.find(m => m.Id === {phone}).Talking") is False

        # Mute: ConfMute to the gateway, the microphone track off, the list says muted.
        assert alice.run("conf.mute(true)") is None
        me = gw.member_id(ROOM, "alice")
        assert gw.commands("ConfMute")[-1] == (
            "alice",
            {"Cmd": "ConfMute", "ChanId": ROOM, "Mute": True},
        )
        alice.members_event("mute", me)
        assert alice.js("conf.muted") is True
        assert alice.js("conf.localStream.getAudioTracks()[0].enabled") is False

        # Invite bob; bob accepts in one step and joins the same room, not as moderator.
        content = alice.run('conf.invite("bob").then(li => li.content)')
        assert json.loads(content) == {"Mode": 1, "Conference": True, "ChanId": ROOM}
        bad_invite = alice.run('conf.invite("two words")')
        assert bad_invite["code"] == "INVALID_ARGUMENT", bad_invite
        bob.wait_event("invitation")
        bob_joined = bob.run("client.acceptConference(window.ri).then(watch)")
        assert bob_joined["chanId"] == ROOM and bob_joined["moderator"] is False, bob_joined
        assert gw.commands("ConfJoin")[-1] == ("bob", {"Cmd": "ConfJoin", "ChanId": ROOM})
        assert bob.js("ri.getState()") == 4  # ACCEPTED
        bob_id = gw.member_id(ROOM, "bob")
        alice.members_event("join", bob_id)
        bob_list = bob.members_event("list")
        assert [m["Self"] for m in bob_list["members"]] == [False, False, True]
        wait_for(lambda: gw.heard(ROOM, "bob") > 25, "bob's audio at the gateway")

        # A network loss: the SDK reconnects, asks CallState (counted over all of alice's
        # calls, her room's leg too) and, told she is in a call, the room carries on.
        server.drop_socket("alice")
        back = ["CONNECTED", "LOGIN_SUCCESS"]
        alice.wait_event("connection", lambda d: d == ["RECONNECTING", "INTERRUPTED"])
        wait_for(lambda: alice.events("connection").count(back) == 2, "alice back online")
        assert alice.js("conf.ended") is False
        # A marker on the same WebSocket: once the gateway has it, anything the SDK sent on
        # reconnecting has arrived before it.
        marker = 'client.sendMessageToPeer({text: \'{"Cmd":"Marker","ChanId":"m"}\'}, "gateway")'
        assert alice.run(marker) == {"hasPeerReceived": True}
        wait_for(lambda: gw.commands("Marker"), "the marker")
        assert gw.commands("CallState") == [("alice", {"Cmd": "CallState"})]
        assert alice.js("conf.ended") is False

        # Moderator-only calls: refused locally for bob; the gateway's ConfError is an event.
        for call in (f"conf.kick({phone})", "conf.end()", f"conf.muteMember({phone}, true)"):
            error = bob.run(call)
            assert error["code"] == "NOT_MODERATOR", (call, error)
        assert gw.commands("ConfKick") == [] and gw.commands("ConfEnd") == []
        bob.run(f'conf._send({{Cmd: "ConfKick", ChanId: "{ROOM}", Member: {phone}}})')
        assert bob.wait_event("error") == "not_moderator"
        error = alice.run('conf.kick("1000")')
        assert error["code"] == "INVALID_ARGUMENT", error

        # Kick (the phone) and leave (bob): the lists follow on the other pages.
        assert alice.run(f"conf.kick({phone})") is None
        kick = {"Cmd": "ConfKick", "ChanId": ROOM, "Member": phone}
        assert gw.commands("ConfKick")[-1] == ("alice", kick)
        bob.members_event("kick", phone)
        assert alice.members_event("kick", phone)["members"][-1]["Uid"] == "bob"
        assert bob.run("conf.leave()") is None
        assert bob.wait_event("ended")["reason"] == "left"
        wait_for(lambda: gw.commands("EndCall"), "bob's EndCall")
        assert gw.commands("EndCall")[-1] == ("bob", {"Cmd": "EndCall", "ChanId": ROOM})
        alice.members_event("leave", bob_id)
        assert alice.js("conf.members.map(m => m.Uid)") == ["alice"]
        assert bob.js("conf.pc.connectionState") == "closed"

        # End: ConfEnd, then the gateway's EndCall room_ended ends the page's leg.
        assert alice.run("conf.end()") is None
        assert gw.commands("ConfEnd")[-1] == ("alice", {"Cmd": "ConfEnd", "ChanId": ROOM})
        ended = alice.wait_event("ended")
        assert (ended["reason"], ended["detail"]) == ("room_ended", "room_ended"), ended
        assert alice.js("conf.pc.connectionState") == "closed"
        assert alice.js("conf.localStream.getAudioTracks()[0].readyState") == "ended"
        assert alice.js("client._calls.size") == 0
        error = alice.run("conf.mute(false)")
        assert error["code"] == "CALL_ENDED", error
