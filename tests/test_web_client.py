"""The web client (esl_bridge/web: index.html, app.js, app.css, client.py) in headless
Chromium against the signalling hub and a scripted fake gateway.

The browser tests re-execute themselves inside a loopback-only network namespace
(tests/support/netns.py). There an aiohttp server on 127.0.0.1 (in a thread) carries the hub, the
page and a fake gateway registered as an in-process participant. The fake gateway plays the
gateway's part of the call protocol: 1005 rings then answers (its media is an aiortc peer
connection sending a 440 Hz tone), 1003 is busy, 1004 rings and is not answered, 1006 rings
forever, and it can call the page from its own uid with DisplayName 1001.

Screenshots of every state at desktop (1280x800) and phone (390x844) size go to the test's
temporary directory and are copied to /tmp/esl-bridge-screens/ for a human to look at.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import shutil
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from support.browser import CHROMEDRIVER, CHROMIUM, DOMINANT_HZ_JS, MIC_HZ, OVERLAP_JS, chromium
from support.netns import assert_loopback_only, loopback_only
from support.tone_windows import TONE_WINDOWS, describe, tone_windows
from support.tones import ToneTrack

from esl_bridge.core.invitations import InvitationTimeouts
from esl_bridge.media.leg import use_host_addresses
from esl_bridge.signaling.auth import mint_token
from esl_bridge.signaling.server import SignalingService, setup_signaling
from esl_bridge.signaling.settings import SignalingSettings
from esl_bridge.web.client import setup_web_client

APPID = "app1"
CERT = "web-client-test-certificate"
GATEWAY_UID = "10000"
NUMBERS = ["1005", "1003", "1004"]
SERVED = [*NUMBERS, "1006", GATEWAY_UID]
WEB_UID = "2001"
WAIT = 15.0  # bound of every wait; never an assertion on elapsed time
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
SCREENS = Path("/tmp/esl-bridge-screens")
T = TypeVar("T")


# ---- tests that need no browser ------------------------------------------------------


def test_routes_serve_the_page_and_the_config() -> None:
    async def main() -> None:
        from aiohttp.test_utils import TestClient, TestServer

        app = web.Application()
        setup_signaling(app, SignalingSettings(appid=APPID, open_mode=True))
        config = {"appid": APPID, "open_mode": True, "gateway_uid": GATEWAY_UID}
        setup_web_client(app, config)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        try:
            page = await client.get("/")
            assert page.status == 200 and page.content_type == "text/html"
            html = await page.text()
            assert 'src="/app.js"' in html and 'href="/app.css"' in html
            assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
            for path, ctype in (("/app.js", "text/javascript"), ("/app.css", "text/css")):
                resp = await client.get(path)
                assert resp.status == 200 and resp.content_type == ctype
            js = await (await client.get("/app.js")).text()
            assert 'from "/sdk.js"' in js
            resp = await client.get("/config.json")
            assert resp.content_type == "application/json"
            assert await resp.json() == {
                "appid": APPID,
                "open_mode": True,
                "gateway_uid": GATEWAY_UID,
                "numbers": [],
                "ice_servers": [],
                "demo": False,
            }
            # Nothing on the page may reach another origin.
            for path in ("/", "/app.js", "/app.css"):
                text = await (await client.get(path)).text()
                assert "http://" not in text and "https://" not in text and "stun:" not in text
        finally:
            await client.close()

    asyncio.run(main())


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"appid": ""},
        {"appid": APPID, "open_mode": "yes"},
        {"appid": APPID, "numbers": "1005"},
        {"appid": APPID, "ice_servers": [{"url": "turn:x"}]},
        {"appid": APPID, "color": "red"},
    ],
)
def test_config_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        setup_web_client(web.Application(), bad)


# ---- browser tests: their bodies run only inside the namespace -----------------------


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_calls_in_chromium(tmp_path: Path) -> None:
    assert_loopback_only()
    with Server(open_mode=True) as server, chromium() as driver:
        run_calls(Page(driver, server, tmp_path))


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_login_and_network_in_chromium(tmp_path: Path) -> None:
    assert_loopback_only()
    with Server(open_mode=False) as server, chromium() as driver:
        run_login_and_network(Page(driver, server, tmp_path))


# ---- the fake gateway ----------------------------------------------------------------


class FakeGateway:
    """The gateway's side of the call protocol, scripted per number (runs on the loop)."""

    RING_S: ClassVar[dict[str, float]] = {
        "1005": 2.0,
        "1004": 1.5,
    }  # how long the SIP side rings before its outcome

    def __init__(self, service: SignalingService) -> None:
        self.service = service
        self.handle = service.hub.register_participant(APPID, self)
        self.invitations: list[tuple[str, dict[str, Any]]] = []  # (callee, invitation)
        self.messages: list[tuple[str, str, dict[str, Any]]] = []  # (to, from, command)
        self.local_states: list[dict[str, Any]] = []  # of the calls it placed
        self.remote_states: list[tuple[str, dict[str, Any]]] = []
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.frames_heard: dict[str, int] = {}
        self.audio_heard: dict[str, list[Any]] = {}
        self.audio_rate: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def now(self) -> float:
        return self.service.now()

    def _after(self, delay: float, func: Callable[[], Any]) -> None:
        def run() -> None:
            func()
            self.service.kick()

        asyncio.get_running_loop().call_later(delay, run)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def send(self, me: str, to: str, body: dict[str, Any]) -> bool:
        reply = self.handle.send_message(me, to, json.dumps(body), self.now())
        self.service.kick()
        return bool(reply.get("delivered"))

    # Participant
    def on_event(self, uid: str, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "invitation":
            self.invitations.append((uid, message))
            self._on_invitation(uid, message)
        elif kind == "message":
            try:
                command = json.loads(message["text"])
            except ValueError:
                return
            self.messages.append((uid, message["from"], command))
            self._on_command(uid, message["from"], command)
        elif kind == "local_state":
            self.local_states.append(message)
        elif kind == "remote_state":
            self.remote_states.append((uid, message))

    def _on_invitation(self, number: str, inv: dict[str, Any]) -> None:
        caller, inv_id = inv["caller"], inv["inv"]
        if number == "1003":  # busy: refuse at once, as the gateway does
            self.handle.refuse(number, inv_id, self.now(), '{"Cmd":"Calling","Reason":"calling"}')
            return
        self.handle.ack(number, inv_id, self.now())
        if number == "1006":
            return  # acknowledged; the SIP side has not even started ringing
        self.send(number, caller, {"Cmd": "SipState", "State": "ringing"})
        if number == "1005":
            chan = json.loads(inv["content"])["ChanId"]
            response = {"Mode": 1, "Conference": False, "ChanId": chan, "SipNumber": number}
            self._after(
                self.RING_S[number],
                lambda: self.handle.accept(number, inv_id, self.now(), json.dumps(response)),
            )
        elif number == "1004":
            refusal = '{"Cmd":"Refused","Reason":"no_answer","Cause":"NO_ANSWER"}'
            self._after(
                self.RING_S[number], lambda: self.handle.refuse(number, inv_id, self.now(), refusal)
            )

    def _on_command(self, me: str, peer: str, command: dict[str, Any]) -> None:
        cmd = command.get("Cmd")
        if cmd == "Offer":
            self._spawn(self._answer(me, peer, str(command["ChanId"]), str(command["Sdp"])))
        elif cmd == "EndCall":
            for chan, pc in list(self.pcs.items()):
                self.pcs.pop(chan)
                self._spawn(pc.close())
        elif cmd == "CallState":
            self.send(
                me, peer, {"Cmd": "CallStateResult", "state": 2 if self.pcs else 0, "Mode": 1}
            )

    async def _answer(self, me: str, peer: str, chan: str, sdp: str) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs[chan] = pc
        self.frames_heard[chan] = 0

        async def drain(track: Any) -> None:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    return
                self.frames_heard[chan] += 1
                if 25 <= self.frames_heard[chan] < 525:  # 10 s after the first half second
                    audio = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                    self.audio_heard.setdefault(chan, []).append(audio)
                    self.audio_rate[chan] = frame.sample_rate

        @pc.on("track")
        def _on_track(track: Any) -> None:
            self._spawn(drain(track))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        pc.addTrack(ToneTrack(440.0))
        with use_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createAnswer())
        answer = pc.localDescription.sdp
        self.send(me, peer, {"Cmd": "Answer", "ChanId": chan, "Sdp": answer})

    def place_call(self, callee: str, display: str = "1001") -> str:
        """Call the page from the gateway's uid, as a SIP phone dialling 0<uid> does."""
        chan = f"gw-{time.monotonic_ns()}"
        content = {
            "Mode": 1,
            "Conference": False,
            "ChanId": chan,
            "DisplayName": display,
            "SipData": "",
        }
        reply = self.handle.invite(
            GATEWAY_UID, callee, self.now(), content=json.dumps(content), channel_id=chan
        )
        assert reply["type"] == "ok", reply
        self.service.kick()
        return chan

    def end_call(self, me: str, peer: str) -> None:
        """The SIP side hangs up: EndCall to the page, close the media."""
        self.send(me, peer, {"Cmd": "EndCall"})
        for chan, pc in list(self.pcs.items()):
            self.pcs.pop(chan)
            self._spawn(pc.close())

    def heard_tone(self, chan: str, hz: float) -> bool:
        """The page's microphone sent ``hz`` on ``chan`` for TONE_WINDOWS windows of 100 ms
        (support/tone_windows.py: why not one FFT)."""
        heard = self.audio_heard.get(chan)
        if not heard:
            return False
        audio = np.concatenate(heard)
        return tone_windows([audio], self.audio_rate[chan], hz) >= TONE_WINDOWS

    def describe_heard(self, chan: str) -> str:
        heard = self.audio_heard.get(chan)
        return describe(np.concatenate(heard), self.audio_rate[chan]) if heard else "nothing"

    def commands(self, cmd: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [m for m in self.messages if m[2].get("Cmd") == cmd]

    async def close(self) -> None:
        for pc in list(self.pcs.values()):
            await pc.close()
        self.pcs.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# ---- the server ----------------------------------------------------------------------


class Server:
    """Hub + web client + fake gateway on 127.0.0.1, with its own loop in a thread."""

    def __init__(self, open_mode: bool) -> None:
        self.settings = SignalingSettings(
            appid=APPID,
            app_certificate="" if open_mode else CERT,
            open_mode=open_mode,
            invitation_timeouts=InvitationTimeouts(peer_offline=1.5, no_response=5.0, answer=20.0),
            grace_period=15.0,
        )
        self.config = {
            "appid": APPID,
            "open_mode": open_mode,
            "gateway_uid": GATEWAY_UID,
            "numbers": NUMBERS,
            "ice_servers": [],
            "demo": open_mode,
        }
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.block_ws = False  # the WebSocket endpoint answers 503 while set
        self.ws_gate: asyncio.Event | None = None  # cleared: WebSocket upgrades wait
        self.gateway: FakeGateway | None = None
        self.service: SignalingService | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        @web.middleware
        async def gate(
            request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
        ) -> web.StreamResponse:
            if self.block_ws and request.path == "/ws":
                raise web.HTTPServiceUnavailable()
            if request.path == "/ws" and self.ws_gate is not None:
                await self.ws_gate.wait()
            return await handler(request)

        self.ws_gate = asyncio.Event()
        self.ws_gate.set()
        app = web.Application(middlewares=[gate])
        self.service = setup_signaling(app, self.settings)
        setup_web_client(app, self.config)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.gateway = FakeGateway(self.service)
        self.gateway.handle.register(SERVED, self.service.now())

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self.gateway is not None:
                await self.gateway.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` on the server's loop and return its result."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(func(*args))
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(WAIT)

    @property
    def gw(self) -> FakeGateway:
        assert self.gateway is not None
        return self.gateway

    def drop_socket(self, uid: str) -> None:
        """Close ``uid``'s WebSocket from the server side, as a network failure would."""

        def drop() -> None:
            assert self.service is not None
            session = self.service.hub._sessions[(APPID, uid)]
            assert session.conn is not None
            session.conn.conn.close(1012, "test drop")

        self.call(drop)


# ---- the browser ---------------------------------------------------------------------


class Page:
    """The page in the current tab, with screenshot and wait helpers."""

    def __init__(self, driver: Any, server: Server, tmp: Path) -> None:
        self.driver = driver
        self.server = server
        self.shots = tmp / "screens"
        self.shots.mkdir(parents=True, exist_ok=True)
        self.saved: list[Path] = []

    def open(self) -> None:
        self.driver.get(f"{self.server.base}/")
        self.until("window.eslBridgeClient && window.eslBridgeClient.ready === true")

    def js(self, expression: str) -> Any:
        return self.driver.execute_script(f"return {expression.strip()};")

    def hook(self, call: str) -> Any:
        return self.js(f"window.eslBridgeClient.{call}")

    def el(self, element_id: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def click(self, element_id: str) -> None:
        button = self.el(element_id)
        assert button.is_enabled(), f"#{element_id} is disabled"
        button.click()

    def text(self, element_id: str) -> str:
        return str(self.js(f"document.getElementById({element_id!r}).textContent")).strip()

    def type(self, element_id: str, value: str) -> None:
        field = self.el(element_id)
        field.clear()
        field.send_keys(value)

    def until(self, expression: str, what: str | None = None) -> Any:
        return wait_for(lambda: self.js(expression), what or expression, self.debug)

    def state_is(self, state: str) -> None:
        wait_for(
            lambda: self.hook("state()") == state,
            f"state {state}",
            self.debug,
        )

    def debug(self) -> str:
        try:
            return (
                f"state={self.hook('state()')!r} reason={self.hook('lastReason()')!r} "
                f"history={self.hook('history()')} conn={self.hook('connection()')} "
                f"message={self.text('message')!r}"
            )
        except Exception as exc:  # the page itself may be the problem
            return f"(page unreadable: {exc})"

    def login(self, uid: str, token: str | None = None) -> None:
        self.type("uid", uid)
        if token is not None:
            self.type("token", token)
        self.click("login")

    def dial(self, number: str) -> None:
        """Type ``number`` on the dial pad and press Call."""
        self.type("contact", "")
        for digit in number:
            self.click({"*": "key-star", "#": "key-hash"}.get(digit, f"key-{digit}"))
        assert self.el("contact").get_attribute("value") == number
        self.click("call")

    def shot(self, name: str) -> None:
        """Screenshots at both sizes, from the top of the page (plus the whole page on the
        phone); at each size no two controls may overlap."""
        SCREENS.mkdir(parents=True, exist_ok=True)
        taken: list[Path] = []
        for label, (width, height) in SIZES.items():
            self.driver.set_window_size(width, height)
            self.until(f"window.innerWidth === {width}", f"viewport {width}")
            self.assert_no_overlap(f"{name}-{label}")
            self.js("window.scrollTo(0, 0)")
            path = self.shots / f"{name}-{label}.png"
            assert self.driver.save_screenshot(str(path))
            taken.append(path)
            if label == "phone":  # the whole page: a window as tall as the document
                chrome = self.js("window.outerHeight - window.innerHeight")
                page_height = self.js("document.documentElement.scrollHeight")
                self.driver.set_window_size(width, page_height + chrome)
                self.until(f"window.innerHeight >= {page_height}", "a tall window")
                path = self.shots / f"{name}-{label}-full.png"
                assert self.driver.save_screenshot(str(path))
                taken.append(path)
        self.driver.set_window_size(*SIZES["desktop"])
        for path in taken:
            shutil.copy(path, SCREENS / path.name)
        self.saved.extend(taken)

    def assert_no_overlap(self, name: str) -> None:
        """No two visible controls of the page overlap (at the current size)."""
        overlaps = self.js(OVERLAP_JS)
        assert overlaps == [], f"{name}: overlapping elements {overlaps}"

    def check_console(self) -> None:
        """The page logged no error (CSP violation, failed request, uncaught exception)."""
        severe = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], severe

    def check_screens(self) -> None:
        for path in self.saved:
            assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (SCREENS / path.name).exists()


def wait_for(check: Callable[[], Any], what: str, debug: Callable[[], str] | None = None) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; {debug() if debug else ''}")
        time.sleep(0.05)


# ---- scenarios -----------------------------------------------------------------------


def run_calls(page: Page) -> None:
    gw = page.server.gw
    page.open()
    assert page.hook("state()") == "offline"
    assert not page.el("token-row").is_displayed()  # open mode: no token field
    assert page.text("numbers").replace(" ", "") == "100510031004"
    page.shot("01-logged-out")

    page.login(WEB_UID)
    page.state_is("idle")
    assert page.text("conn-state") == f"Connected as {WEB_UID}"
    assert page.text("call-state").startswith("Idle")
    page.shot("02-idle")

    # Calling: the gateway acknowledges, the SIP side has not rung yet; hang up cancels.
    page.dial("1006")
    page.state_is("calling")
    wait_for(lambda: any(n == "1006" for n, _ in gw.invitations), "the invitation to 1006")
    assert page.text("call-state") == "Calling…" and page.text("call-peer") == "to 1006"
    page.shot("03-calling")
    page.click("hangup")
    page.state_is("ended")
    assert page.hook("lastReason()") == "You hung up."
    wait_for(
        lambda: any(n == "1006" and m["state_name"] == "CANCELED" for n, m in gw.remote_states),
        "the cancel of 1006",
    )
    wait_for(lambda: [m for m in gw.commands("EndCall") if m[0] == "1006"], "EndCall to 1006")

    # 1005: calling -> ringing -> connected with a running timer, 440 Hz heard.
    page.dial("1005")
    page.state_is("ringing")
    assert page.text("call-state") == "Ringing…"
    invitation = next(m for n, m in reversed(gw.invitations) if n == "1005")
    content = json.loads(invitation["content"])
    assert content == {
        "Mode": 1,
        "Conference": False,
        "ChanId": content["ChanId"],
        "UserData": "",
        "SipData": "",
    }
    assert invitation["channel_id"] == content["ChanId"] and invitation["caller"] == WEB_UID
    page.shot("04-ringing")
    page.state_is("connected")
    history = page.hook("history()")
    assert history.index("calling") < history.index("ringing") < history.index("connected")
    wait_for(lambda: page.hook("peerConnectionState()") == "connected", "peer connection")
    offer = gw.commands("Offer")[-1]
    assert offer[:2] == ("1005", WEB_UID) and offer[2]["ChanId"] == content["ChanId"]
    assert "a=candidate" in offer[2]["Sdp"]  # non-trickle: gathered before sending
    wait_for(lambda: page.hook("callSeconds()") >= 2, "the timer")
    assert page.el("call-timer").is_displayed()
    assert page.text("call-timer") in {"00:02", "00:03", "00:04"}
    measured = page.driver.execute_async_script(DOMINANT_HZ_JS)
    assert "hz" in measured, measured
    assert measured["hz"] == pytest.approx(440, abs=12), measured
    assert measured["db"] > -70, measured
    # The page's microphone reaches the gateway.
    chan = content["ChanId"]
    wait_for(
        lambda: gw.heard_tone(chan, MIC_HZ),
        "the page's 1 kHz at the gateway",
        lambda: f"each 100 ms as Hz/rms: {gw.describe_heard(chan)}",
    )
    # DTMF both ways, mute.
    page.click("key-1")
    wait_for(lambda: gw.commands("Dtmf"), "DTMF at the gateway")
    assert gw.commands("Dtmf")[-1][2] == {"Cmd": "Dtmf", "ChanId": content["ChanId"], "Digits": "1"}
    assert page.el("contact").get_attribute("value") == "1005"  # keypad sent a tone, no digit
    page.server.call(
        gw.send, "1005", WEB_UID, {"Cmd": "Dtmf", "ChanId": content["ChanId"], "Digit": "5"}
    )
    wait_for(lambda: page.hook("dtmfReceived()") == "5", "DTMF at the page")
    # One-way audio: the gateway's MediaProblem shows a banner until the direction is ok;
    # a verdict the SDK does not know is ignored.
    assert page.hook("mediaProblem()") == "" and not page.el("media-problem").is_displayed()
    problem = {"Cmd": "MediaProblem", "ChanId": content["ChanId"]}
    for direction, verdict in (
        ("browser_to_switch", "no_such_verdict"),
        ("browser_to_switch", "browser_silent"),
    ):
        page.server.call(
            gw.send, "1005", WEB_UID, {**problem, "Direction": direction, "Verdict": verdict}
        )
    silent = "They may not hear you: your microphone sends silence."
    wait_for(lambda: page.hook("mediaProblem()") == silent, "the one-way audio banner")
    assert page.el("media-problem").is_displayed()
    page.shot("05a-one-way-audio")
    for direction, verdict in (
        ("switch_to_browser", "switch_filler_only"),
        ("browser_to_switch", "ok"),
    ):
        page.server.call(
            gw.send, "1005", WEB_UID, {**problem, "Direction": direction, "Verdict": verdict}
        )
    filler = "You may not hear them: no audio comes from their side."
    wait_for(lambda: page.hook("mediaProblem()") == filler, "the banner of the other direction")
    page.server.call(
        gw.send, "1005", WEB_UID, {**problem, "Direction": "switch_to_browser", "Verdict": "ok"}
    )
    wait_for(lambda: page.hook("mediaProblem()") == "", "the banner gone")
    assert not page.el("media-problem").is_displayed()
    page.server.call(gw.send, "1005", WEB_UID, {"Cmd": "CallState"})
    wait_for(lambda: gw.commands("CallStateResult"), "CallStateResult from the page")
    assert gw.commands("CallStateResult")[-1] == (
        "1005",
        WEB_UID,
        {"Cmd": "CallStateResult", "state": 2, "Mode": 1},
    )
    page.click("mute")
    assert page.hook("muted()") is True
    assert page.el("mute").get_attribute("aria-pressed") == "true"
    assert page.js("eslBridgeClient.localStream().getAudioTracks()[0].enabled") is False
    page.shot("05-connected-muted")
    page.click("mute")
    assert page.hook("muted()") is False
    wait_for(
        lambda: (
            int(page.js("document.getElementById('mic-level').getAttribute('aria-valuenow')")) > 0
        ),
        "mic level",
    )
    page.shot("06-connected")
    page.click("hangup")
    page.state_is("ended")
    assert page.hook("lastReason()") == "You hung up."
    wait_for(lambda: [m for m in gw.commands("EndCall") if m[0] == "1005"], "EndCall to 1005")
    wait_for(lambda: not gw.pcs, "the gateway's peer connection closed")
    page.shot("07-ended-hung-up")

    # Busy and no answer.
    page.dial("1003")
    page.state_is("ended")
    assert page.hook("lastReason()") == "The line is busy."
    assert page.text("call-reason") == "The line is busy."
    page.shot("08-ended-busy")
    page.dial("1004")
    page.state_is("ringing")
    page.state_is("ended")
    assert page.hook("lastReason()") == "No answer."
    page.shot("09-ended-no-answer")

    # Nobody logged in as 9999: PEER_OFFLINE (shortened to 1.5 s here).
    page.dial("9999")
    page.state_is("ended")
    assert page.hook("lastReason()") == "The callee is offline."

    # Incoming call: shows the SIP caller, Accept connects, the SIP side hangs up.
    chan = page.server.call(gw.place_call, WEB_UID)
    page.state_is("incoming")
    assert page.text("caller") == "1001"
    assert page.el("accept").is_displayed() and page.el("refuse").is_displayed()
    assert "ringing" in (page.el("incoming").get_attribute("class") or "")
    assert page.js("document.title").startswith("Incoming call from 1001")
    page.shot("10-incoming")
    page.click("accept")
    page.state_is("connected")
    wait_for(
        lambda: [m for m in gw.local_states if m["state_name"] == "ACCEPTED_BY_REMOTE"], "accepted"
    )
    wait_for(lambda: [m for m in gw.commands("Offer") if m[2]["ChanId"] == chan], "offer")
    offer = next(m for m in gw.commands("Offer") if m[2]["ChanId"] == chan)
    assert offer[:2] == (GATEWAY_UID, WEB_UID)
    wait_for(lambda: page.hook("peerConnectionState()") == "connected", "incoming media")
    assert page.text("call-peer") == "with 1001"
    page.server.call(gw.end_call, GATEWAY_UID, WEB_UID)
    page.state_is("ended")
    assert page.hook("lastReason()") == "The other side hung up."
    assert page.hook("peerConnectionState()") is None
    page.shot("11-ended-remote-hangup")
    wait_for(lambda: not gw.pcs, "the gateway's peer connection closed")

    # Incoming call refused.
    refused_before = len([m for m in gw.local_states if m["state_name"] == "REFUSED_BY_REMOTE"])
    page.server.call(gw.place_call, WEB_UID)
    page.state_is("incoming")
    page.click("refuse")
    page.state_is("ended")
    assert page.hook("lastReason()") == "You refused the call from 1001."
    wait_for(
        lambda: (
            len([m for m in gw.local_states if m["state_name"] == "REFUSED_BY_REMOTE"])
            > refused_before
        ),
        "the refusal",
    )
    page.shot("12-ended-refused")

    # Microphone denied: nothing is sent, the reason says what to do.
    invitations_before = len(gw.invitations)
    page.js(
        "(navigator.mediaDevices.getUserMedia = () => Promise.reject("
        "new DOMException('Permission denied', 'NotAllowedError')), true)"
    )
    page.dial("1005")
    page.state_is("ended")
    assert page.hook("lastReason()").startswith("Microphone access was denied.")
    assert len(gw.invitations) == invitations_before
    page.shot("13-ended-microphone-denied")

    # Log out.
    page.click("logout")
    page.state_is("offline")
    assert page.text("conn-state") == "Offline: logged out"
    page.check_screens()
    page.check_console()


def run_login_and_network(page: Page) -> None:
    server = page.server
    page.open()
    assert page.el("token-row").is_displayed()
    bad = mint_token(APPID, "someone-else", CERT, 3600, time.time())
    page.login(WEB_UID, bad)
    page.until("document.getElementById('message').hidden === false", "the login error")
    assert page.text("message").startswith("Login failed: the token was not accepted")
    assert page.hook("state()") == "offline"
    assert page.text("conn-state") == "Offline: login failed"
    page.shot("20-login-failed")

    # While the login is on its way the page is not ready to call: a call placed then
    # would fail. The server holds the WebSocket until the page has shown it.
    assert server.ws_gate is not None
    server.call(server.ws_gate.clear)
    page.login(WEB_UID, mint_token(APPID, WEB_UID, CERT, 3600, time.time()))
    wait_for(lambda: page.hook("connection()")["state"] == "connecting", "connecting")
    assert page.hook("state()") == "offline"
    assert page.text("conn-state") == "Connecting\u2026"
    assert not page.el("call").is_enabled()
    assert not page.el("key-1").is_enabled()
    server.call(server.ws_gate.set)
    wait_for(lambda: page.hook("connection()")["state"] == "connected", "logged in")
    page.state_is("idle")
    assert page.el("call").is_enabled()

    # Network lost: the page says so while reconnecting, then resumes.
    server.block_ws = True
    server.drop_socket(WEB_UID)
    wait_for(lambda: page.hook("connection()")["state"] == "reconnecting", "reconnecting")
    assert page.text("conn-state").startswith("Network lost")
    assert page.text("message").startswith("Network lost")
    page.shot("21-reconnecting")
    server.block_ws = False
    wait_for(lambda: page.hook("connection()")["state"] == "connected", "reconnected", page.debug)
    assert page.el("message").get_attribute("hidden") is not None
    page.state_is("idle")

    # A call still works after the reconnection.
    page.dial("1003")
    page.state_is("ended")
    assert page.hook("lastReason()") == "The line is busy."

    # A network loss in a call: after the reconnection the page asks the gateway whether
    # the call is still there (CallState) and keeps it.
    page.dial("1005")
    page.state_is("connected")
    wait_for(lambda: page.hook("peerConnectionState()") == "connected", "media")
    server.drop_socket(WEB_UID)
    wait_for(lambda: page.hook("connection()")["state"] == "reconnecting", "reconnecting")
    wait_for(lambda: page.hook("connection()")["state"] == "connected", "reconnected")
    wait_for(lambda: [m for m in server.gw.commands("CallState") if m[1] == WEB_UID], "CallState")
    assert page.hook("state()") == "connected"
    server.call(server.gw.end_call, "1005", WEB_UID)
    page.state_is("ended")
    assert page.hook("lastReason()") == "The other side hung up."

    # Taken over by a login of the same uid elsewhere.
    first = page.driver.current_window_handle
    page.driver.switch_to.new_window("tab")
    other_tab = page.driver.current_window_handle
    other = Page(page.driver, server, page.shots.parent / "other")
    other.open()
    other.login(WEB_UID, mint_token(APPID, WEB_UID, CERT, 3600, time.time()))
    other.state_is("idle")
    page.driver.switch_to.window(first)
    page.state_is("offline")
    assert page.text("conn-state") == "Offline: this user id logged in somewhere else"
    assert "logged in somewhere else" in page.text("message")
    page.shot("22-taken-over")
    # Logging in again here takes the line back.
    page.login(WEB_UID, mint_token(APPID, WEB_UID, CERT, 3600, time.time()))
    page.state_is("idle")
    page.driver.switch_to.window(other_tab)
    other.state_is("offline")
    page.check_screens()
