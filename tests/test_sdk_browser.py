"""The JS SDK in headless Chromium (Debian packages chromium, chromium-driver): two pages
log in and call each other.

Each scenario re-executes itself inside a loopback-only network namespace (tests/support/netns.py):
there it starts the signalling server on 127.0.0.1 in a thread, one Chromium with two
tabs (the two users), and checks the states on both sides through the SDK's own events.
Invitation timers are shortened so that the timeout scenarios take a second or two.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from aiohttp import web
from support.browser import CHROMEDRIVER, CHROMIUM, chromium
from support.netns import assert_loopback_only, loopback_only

from esl_bridge.core.invitations import (
    InvitationTimeouts,
    LocalFailureReason,
    LocalState,
    RemoteState,
)
from esl_bridge.signaling.auth import mint_token
from esl_bridge.signaling.server import SIGNALING_KEY, SignalingService, create_app
from esl_bridge.signaling.settings import SignalingSettings

pytestmark = pytest.mark.browser

APPID = "app1"
CERT = "browser-test-certificate"
WAIT = 15.0  # upper bound for any awaited event; never an assertion on elapsed time

SCENARIOS = [
    "accept",
    "refuse",
    "cancel",
    "expire",
    "peer_offline",
    "presence_and_messages",
    "reconnect",
    "takeover",
]

PAGE = """<!doctype html>
<meta charset="utf-8"><title>esl-bridge SDK test</title>
<script type="module">
import * as sdk from "/sdk.js";
window.sdk = sdk;
window.events = [];
window.record = (name, detail) => window.events.push({name, detail: detail ?? null});
window.sdkReady = true;
</script>
"""

LOGIN_JS = """
const [appId, uid, token] = arguments;
const done = arguments[arguments.length - 1];
const c = sdk.createClient({appId, reconnect: {initialDelay: 100, maxDelay: 400}});
window.client = c;
c.on("ConnectionStateChanged", (s, r) => record("ConnectionStateChanged", [s, r]));
c.on("Reconnecting", (info) => record("Reconnecting", info));
c.on("MessageFromPeer", (m, peer) => record("MessageFromPeer", [m.text, peer]));
c.on("PeersOnlineStatusChanged", (m) => record("PeersOnlineStatusChanged", m));
c.on("RemoteInvitationReceived", (ri) => {
  window.ri = ri;
  record("RemoteInvitationReceived", {caller: ri.callerId, content: ri.content,
    channelId: ri.channelId, state: ri.getState()});
  for (const n of ["RemoteInvitationAccepted", "RemoteInvitationRefused",
                   "RemoteInvitationCanceled", "RemoteInvitationFailure"]) {
    ri.on(n, (x) => record(n, {arg: x ?? null, state: ri.getState()}));
  }
});
c.login(uid, token).then(() => done("ok"), (e) => done("error:" + e.code));
"""

INVITE_JS = """
const [callee, content, channelId] = arguments;
const done = arguments[arguments.length - 1];
const li = client.createLocalInvitation(callee);
li.content = content;
li.channelId = channelId;
window.li = li;
for (const n of ["LocalInvitationReceivedByPeer", "LocalInvitationAccepted",
                 "LocalInvitationRefused", "LocalInvitationCanceled",
                 "LocalInvitationFailure"]) {
  li.on(n, (x) => record(n, {arg: x ?? null, state: li.getState()}));
}
li.send().then(() => done({state: li.getState()}), (e) => done({error: e.code,
  state: li.getState()}));
"""

# Run a promise-returning expression; resolve to its value or {error: code}.
CALL_JS = """
const done = arguments[arguments.length - 1];
Promise.resolve().then(() => (%s)).then(
  (v) => done(v === undefined ? null : v), (e) => done({error: e.code ?? String(e)}));
"""


# ---- the test: its body runs only inside the namespace (tests/support/netns.py) --------------


@pytest.mark.parametrize("scenario", SCENARIOS)
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_sdk_in_chromium(scenario: str) -> None:
    run_scenario(scenario)


# ---- inside the namespace ------------------------------------------------------------


class ServerThread:
    """The signalling app on 127.0.0.1 with its own event loop in a thread."""

    def __init__(self, settings: SignalingSettings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.service: SignalingService | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = create_app(self.settings)

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        app.router.add_get("/page.html", page)
        self.service = app[SIGNALING_KEY]
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def drop_socket(self, uid: str) -> None:
        """Close ``uid``'s WebSocket from the server side, as a network failure would."""
        assert self.service is not None
        hub = self.service.hub

        def drop() -> None:
            session = hub._sessions[(APPID, uid)]
            assert session.conn is not None
            session.conn.conn.close(1012, "test drop")

        self.loop.call_soon_threadsafe(drop)


class Page:
    """One tab = one user."""

    def __init__(self, driver: Any, handle: str, uid: str) -> None:
        self.driver = driver
        self.handle = handle
        self.uid = uid

    def _focus(self) -> None:
        if self.driver.current_window_handle != self.handle:
            self.driver.switch_to.window(self.handle)

    def run_async(self, script: str, *args: Any) -> Any:
        self._focus()
        return self.driver.execute_async_script(script, *args)

    def call(self, expression: str) -> Any:
        return self.run_async(CALL_JS % expression)

    def js(self, expression: str) -> Any:
        self._focus()
        return self.driver.execute_script(f"return {expression};")

    def event(self, name: str, index: int = 0) -> Any:
        """The detail of the ``index``-th event ``name``, waiting for it (bounded)."""
        from selenium.webdriver.support.wait import WebDriverWait

        def found(_: Any) -> Any:
            self._focus()
            events = self.driver.execute_script(
                "return window.events.filter(e => e.name === arguments[0])", name
            )
            return events[index] if len(events) > index else False

        try:
            hit = WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(found)
        except Exception as exc:
            raise AssertionError(f"{self.uid}: no {name} event; saw {self.names()}") from exc
        return hit["detail"]

    def names(self) -> list[str]:
        self._focus()
        return [e["name"] for e in self.driver.execute_script("return window.events")]


def open_page(driver: Any, base: str, uid: str, first: bool) -> Page:
    from selenium.webdriver.support.wait import WebDriverWait

    if not first:
        driver.switch_to.new_window("tab")
    driver.get(f"{base}/page.html")
    WebDriverWait(driver, WAIT, poll_frequency=0.05).until(
        lambda d: d.execute_script("return window.sdkReady === true")
    )
    page = Page(driver, driver.current_window_handle, uid)
    token = mint_token(APPID, uid, CERT, 3600, __import__("time").time())
    assert page.run_async(LOGIN_JS, APPID, uid, token) == "ok"
    assert page.event("ConnectionStateChanged", 1) == ["CONNECTED", "LOGIN_SUCCESS"]
    return page


def run_scenario(scenario: str) -> None:
    assert_loopback_only()
    settings = SignalingSettings(
        appid=APPID,
        app_certificate=CERT,
        invitation_timeouts=InvitationTimeouts(peer_offline=1.0, no_response=1.0, answer=2.0),
        grace_period=10.0,
    )
    with ServerThread(settings) as server, chromium(microphone_hz=None) as driver:
        base = f"http://127.0.0.1:{server.port}"
        alice = open_page(driver, base, "alice", first=True)
        bob = open_page(driver, base, "bob", first=False)
        SCENARIO_FUNCS[scenario](alice, bob, server, base)


def invite_bob(alice: Page, bob: Page) -> dict[str, Any]:
    content = json.dumps({"Mode": 1, "Conference": False, "ChanId": "ch-1"})
    sent = alice.run_async(INVITE_JS, "bob", content, "ch-1")
    assert sent == {"state": LocalState.SENT_TO_REMOTE}, sent
    got = bob.event("RemoteInvitationReceived")
    assert got == {
        "caller": "alice",
        "content": content,
        "channelId": "ch-1",
        "state": RemoteState.INVITATION_RECEIVED,
    }
    alice.event("LocalInvitationReceivedByPeer")
    assert alice.js("li.getState()") == LocalState.RECEIVED_BY_REMOTE
    return got


def scenario_accept(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    invite_bob(alice, bob)
    response = json.dumps({"Mode": 1, "Conference": False, "ChanId": "ch-1"})
    assert bob.call(f"ri.accept({json.dumps(response)})") is None
    assert bob.event("RemoteInvitationAccepted") == {"arg": None, "state": RemoteState.ACCEPTED}
    assert alice.event("LocalInvitationAccepted") == {
        "arg": response,
        "state": LocalState.ACCEPTED_BY_REMOTE,
    }
    assert alice.js("li.response") == response
    assert alice.call("li.cancel()") == {"error": "ALREADY_ACCEPT"}
    assert bob.call("ri.refuse()") == {"error": "ALREADY_ACCEPT"}


def scenario_refuse(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    invite_bob(alice, bob)
    busy = '{"Cmd":"Calling","Reason":"calling"}'
    assert bob.call(f"ri.refuse({json.dumps(busy)})") is None
    assert bob.event("RemoteInvitationRefused") == {"arg": None, "state": RemoteState.REFUSED}
    assert alice.event("LocalInvitationRefused") == {
        "arg": busy,
        "state": LocalState.REFUSED_BY_REMOTE,
    }
    assert bob.call("ri.accept()") == {"error": "ALREADY_END"}


def scenario_cancel(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    invite_bob(alice, bob)
    assert alice.call("li.cancel()") is None
    assert alice.event("LocalInvitationCanceled") == {"arg": None, "state": LocalState.CANCELED}
    assert bob.event("RemoteInvitationCanceled") == {"arg": None, "state": RemoteState.CANCELED}
    assert alice.call("li.cancel()") == {"error": "ALREADY_END"}
    assert alice.call("li.send()") == {"error": "ALREADY_END"}
    assert bob.call("ri.accept()") == {"error": "ALREADY_END"}


def scenario_expire(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    invite_bob(alice, bob)  # acknowledged, never answered: the 2 s answer timer fires
    assert alice.event("LocalInvitationFailure") == {
        "arg": "INVITATION_EXPIRE",
        "state": LocalState.FAILURE,
    }
    assert bob.event("RemoteInvitationFailure") == {
        "arg": "INVITATION_EXPIRE",
        "state": RemoteState.FAILURE,
    }
    assert alice.js("li.failureReason") == LocalFailureReason.INVITATION_EXPIRE


def scenario_peer_offline(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    # Limits are checked before anything is sent.
    too_big = alice.run_async(INVITE_JS, "nobody", "x" * 8193, "")
    assert too_big == {"error": "INVALID_ARGUMENT", "state": LocalState.IDLE}
    too_long = alice.run_async(INVITE_JS, "nobody", "", "c" * 65)
    assert too_long == {"error": "INVALID_ARGUMENT", "state": LocalState.IDLE}
    assert alice.call("li.cancel()") == {"error": "NOT_STARTED"}
    sent = alice.run_async(INVITE_JS, "nobody", "x" * 8192, "c" * 64)
    assert sent == {"state": LocalState.SENT_TO_REMOTE}
    assert alice.call("li.send()") == {"error": "ALREADY_SENT"}
    assert alice.event("LocalInvitationFailure") == {
        "arg": "PEER_OFFLINE",
        "state": LocalState.FAILURE,
    }
    assert "RemoteInvitationReceived" not in bob.names()


def scenario_presence_and_messages(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    assert alice.call('client.queryPeersOnlineStatus(["bob", "carol"])') == {
        "bob": True,
        "carol": False,
    }
    assert alice.call('client.subscribePeersOnlineStatus(["carol"])') == {"carol": False}
    sent = alice.call('client.sendMessageToPeer({text: \'{"Cmd":"EndCall"}\'}, "bob")')
    assert sent == {"hasPeerReceived": True}
    assert bob.event("MessageFromPeer") == ['{"Cmd":"EndCall"}', "alice"]
    assert alice.call('client.sendMessageToPeer({text: "x"}, "carol")') == {
        "hasPeerReceived": False
    }
    carol = open_page(alice.driver, base, "carol", first=False)
    assert alice.event("PeersOnlineStatusChanged") == {"carol": "ONLINE"}
    assert carol.call("client.logout()") is None
    assert carol.event("ConnectionStateChanged", 2) == ["DISCONNECTED", "LOGOUT"]
    assert alice.event("PeersOnlineStatusChanged", 1) == {"carol": "OFFLINE"}


def scenario_reconnect(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    assert alice.call('client.subscribePeersOnlineStatus(["bob"])') == {"bob": True}
    server.drop_socket("bob")
    assert bob.event("ConnectionStateChanged", 2) == ["RECONNECTING", "INTERRUPTED"]
    reconnecting = bob.event("Reconnecting")
    assert reconnecting["attempt"] == 1
    assert 50 <= reconnecting["delayMs"] <= 100  # initialDelay 100 ms with jitter
    assert bob.event("ConnectionStateChanged", 3) == ["CONNECTED", "LOGIN_SUCCESS"]
    # Resumed within the grace period: bob never looked offline, calls still work.
    assert "PeersOnlineStatusChanged" not in alice.names()
    invite_bob(alice, bob)
    assert bob.call("ri.accept()") is None
    assert alice.event("LocalInvitationAccepted")["state"] == LocalState.ACCEPTED_BY_REMOTE


def scenario_takeover(alice: Page, bob: Page, server: ServerThread, base: str) -> None:
    invite_bob(alice, bob)
    open_page(alice.driver, base, "bob", first=False)  # the same uid logs in elsewhere
    assert bob.event("ConnectionStateChanged", 2) == ["ABORTED", "REMOTE_LOGIN"]
    assert bob.event("RemoteInvitationFailure")["state"] == RemoteState.FAILURE
    assert "Reconnecting" not in bob.names()


SCENARIO_FUNCS = {
    "accept": scenario_accept,
    "refuse": scenario_refuse,
    "cancel": scenario_cancel,
    "expire": scenario_expire,
    "peer_offline": scenario_peer_offline,
    "presence_and_messages": scenario_presence_and_messages,
    "reconnect": scenario_reconnect,
    "takeover": scenario_takeover,
}
assert set(SCENARIO_FUNCS) == set(SCENARIOS)
