"""The product end to end: the web client page in headless Chromium, the real gateway
process and the FreeSWITCH simulator (docs/architecture.rst, issue 6 "How it will be checked").

The page is served by the gateway at ``/``; Chromium runs with the flags of
tests/support/browser.py (its ``chromium()``: a fake microphone playing a 1 kHz tone,
loopback-only peer connections, no DNS). Audio is checked both ways by FFT: what the page
hears (an AnalyserNode on the remote stream) and what the simulated channel received from
the gateway on its unicast socket (at the channel's own rate: 8 kHz PCMU, 16 kHz G.722,
48 kHz opus stereo interleaved).

Threads: the gevent hub (the gateway's ESL side) owns this thread, so nothing here may
block it. Every WebDriver call and every simulator call that waits on the simulator's loop
runs in gevent's thread pool (``blocking``), and waits poll with ``wait_until``.

After every scenario: no live channel in the simulator, no call in the gateway, no busy
number, no unicast port in use, and the simulator never crashed (a unicast sent too early
"crashes" it, as it does FreeSWITCH).

Screenshots of the page (connected, incoming, ended...) go to /tmp/esl-bridge-e2e/.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import gevent
import numpy as np
import pytest
from support.browser import CHROMEDRIVER, CHROMIUM, DOMINANT_HZ_JS, OVERLAP_JS, chromium
from support.gateway_support import assert_nothing_left, running_gateway, wait_until
from support.netns import assert_loopback_only, loopback_only
from support.tone_windows import TONE_WINDOWS, describe, tone_windows

from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimulatorThread, g711
from esl_bridge.sim.codecs import G722, OPUS_STEREO
from esl_bridge.sim.extensions import Extension
from esl_bridge.sim.media import AudioSource, UnicastStream, is_ff_frame

WEB_UID = "2001"
MIC_HZ = 1000.0  # the fake microphone's tone (test_web_client.write_tone_wav)
PHONE_HZ = 440.0  # extension 1000 and the simulated phones send this tone
WAIT = 15.0
# Screenshots for a human, kept after the run: under TMPDIR, each written whole
# (a run beside it, as in scripts/test-under-load.sh, may be writing the same name).
SHOTS = Path(tempfile.gettempdir()) / "esl-bridge-e2e"
T = TypeVar("T")


# ---- threads -------------------------------------------------------------------------


def blocking(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call in a real thread while the gevent hub keeps running here."""
    call = functools.partial(func, *args, **kwargs)
    return cast(T, gevent.get_hub().threadpool.apply(call))


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """test_web_client's Chromium, started and stopped off the hub."""
    manager = chromium()
    driver = blocking(manager.__enter__)
    try:
        yield driver
    finally:
        blocking(manager.__exit__, None, None, None)


# ---- the page ------------------------------------------------------------------------


class Page:
    """The gateway's web client in the browser's current tab."""

    def __init__(self, driver: Any, gateway: Gateway) -> None:
        self.driver = driver
        host, port = gateway.web_address  # type: ignore[misc]
        self.base = f"http://{host}:{port}"

    def open(self) -> None:
        blocking(self.driver.get, f"{self.base}/")
        self.until("window.eslBridgeClient && window.eslBridgeClient.ready === true", "page")

    def js(self, expression: str) -> Any:
        return blocking(self.driver.execute_script, f"return {expression.strip()};")

    def hook(self, call: str) -> Any:
        return self.js(f"window.eslBridgeClient.{call}")

    def text(self, element_id: str) -> str:
        return str(self.js(f"document.getElementById({element_id!r}).textContent")).strip()

    def visible(self, element_id: str) -> bool:
        return bool(self.js(f"document.getElementById({element_id!r}).offsetParent !== null"))

    def until(self, expression: str, what: str, timeout: float = WAIT) -> None:
        self._wait(lambda: bool(self.js(expression)), what, timeout)

    def state_is(self, state: str, timeout: float = WAIT) -> None:
        self._wait(lambda: self.hook("state()") == state, f"page state {state}", timeout)

    def _wait(self, check: Callable[[], bool], what: str, timeout: float) -> None:
        try:
            wait_until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; {self.debug()}") from None

    def debug(self) -> str:
        try:
            return (
                f"state={self.hook('state()')!r} reason={self.hook('lastReason()')!r} "
                f"history={self.hook('history()')} conn={self.hook('connection()')}"
            )
        except Exception as exc:  # the page itself may be the problem
            return f"(page unreadable: {exc})"

    def click(self, element_id: str) -> None:
        def click() -> None:
            from selenium.webdriver.common.by import By

            button = self.driver.find_element(By.ID, element_id)
            assert button.is_enabled(), f"#{element_id} is disabled"
            button.click()

        blocking(click)

    def login(self, uid: str) -> None:
        def type_uid() -> None:
            from selenium.webdriver.common.by import By

            field = self.driver.find_element(By.ID, "uid")
            field.clear()
            field.send_keys(uid)

        blocking(type_uid)
        self.click("login")
        # The connection line says the gateway took the login; "idle" follows from it.
        self._wait(lambda: self.text("conn-state") == f"Connected as {uid}", "login", WAIT)
        self.state_is("idle")

    def dial(self, number: str) -> None:
        """Clear the contact field, type ``number`` on the dial pad, press Call."""
        self.js("(document.getElementById('contact').value = '', true)")
        for digit in number:
            self.click(f"key-{digit}")
        assert self.js("document.getElementById('contact').value") == number
        self.click("call")

    def ended_with(self, reason: str) -> None:
        self.state_is("ended")
        assert self.hook("lastReason()") == reason, self.debug()
        assert self.text("call-reason") == reason

    def media_up(self) -> None:
        self._wait(
            lambda: self.hook("peerConnectionState()") == "connected", "peer connection", WAIT
        )

    def hears(self) -> dict[str, Any]:
        """Dominant frequency and level of the remote audio (AnalyserNode, 1.2 s)."""
        return cast(dict[str, Any], blocking(self.driver.execute_async_script, DOMINANT_HZ_JS))

    def assert_hears(self, hz: float) -> None:
        measured = self.hears()
        assert "hz" in measured, measured
        assert measured["hz"] == pytest.approx(hz, abs=12), measured
        assert measured["db"] > -70, measured

    def shot(self, name: str) -> None:
        """A screenshot for a human to look at; no two controls may overlap."""
        overlaps = self.js(OVERLAP_JS)
        assert overlaps == [], f"{name}: overlapping elements {overlaps}"
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        partial = SHOTS / f".{name}.{os.getpid()}.png"
        assert blocking(self.driver.save_screenshot, str(partial))
        assert partial.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        partial.replace(path)


# ---- the simulator's side ------------------------------------------------------------


def unicast_of(sim: SimulatorThread, uuid: str) -> UnicastStream:
    """The unicast stream the gateway activated on channel ``uuid``."""
    found: list[UnicastStream] = []

    def check() -> bool:
        channel = sim.get_channel(uuid)
        stream = None if channel is None else channel.unicast
        if stream is not None and stream.started:
            found.append(stream)
        return bool(found)

    wait_until(check, WAIT, f"the unicast of {uuid}")
    return found[0]


def assert_received_tone(
    stream: UnicastStream, hz: float, rate: int, channels: int, native: bool
) -> None:
    """The gateway sent ``stream`` the browser's tone of ``hz`` at ``rate`` Hz, ``channels``
    interleaved: after the first half second, TONE_WINDOWS windows of 100 ms carry it on
    every channel (support/tone_windows.py: why not one FFT). ``native``: the call took the
    G.711 fast path (``flags: native``, 160 bytes of the phone's own codec per 20 ms:
    nothing decoded or encoded in the gateway), else 20 ms of L16."""
    assert (stream.codec.rate, stream.codec.channels) == (rate, channels)
    assert stream.native == native, f"native unicast {stream.native}, expected {native}"
    frame_bytes = rate // 50 * channels * (1 if native else 2)
    skip = 25  # the first half second: the browser's audio processing settles

    def samples() -> np.ndarray:
        frames = [d.data for d in list(stream.received) if not is_ff_frame(d.data)][skip:]
        sizes = {len(f) for f in frames}
        assert sizes <= {frame_bytes}, sizes
        if native:
            decoded = g711.decode(stream.codec.name, b"".join(frames))
            return np.frombuffer(decoded, dtype=np.int16).reshape(-1, channels)
        return np.frombuffer(b"".join(frames), dtype="<i2").reshape(-1, channels)

    def heard() -> bool:
        audio = samples()
        return tone_windows([audio[:, ch] for ch in range(channels)], rate, hz) >= TONE_WINDOWS

    try:
        wait_until(heard, WAIT, f"{TONE_WINDOWS} windows of {hz:.0f} Hz at the simulator")
    except AssertionError as exc:
        audio = samples()
        found = [describe(audio[:, ch], rate) for ch in range(channels)]
        raise AssertionError(f"{exc}; each 100 ms as Hz/rms, by channel: {found}") from None


def only_channel(sim: SimulatorThread) -> str:
    channels = sim.channels()
    assert len(channels) == 1, [c.uuid for c in channels]
    return channels[0].uuid


def wait_ringback(sim: SimulatorThread, uuid: str) -> None:
    """The phone hears ringback (pre_answer: 183), not an answered call."""
    channel = sim.get_channel(uuid)
    assert channel is not None
    wait_until(lambda: channel.answer_state == "early", WAIT, "ringback (pre_answer)")
    assert not channel.answered


def sim_api(sim: SimulatorThread, command: str) -> str:
    return blocking(sim.api, command)


def kill_browser(driver: Any) -> None:
    """SIGKILL the Chromium that our chromedriver started: no pagehide, no goodbye."""
    driver_pid = driver.service.process.pid
    children = [
        pid
        for task in Path(f"/proc/{driver_pid}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]
    killed = False
    for pid in map(int, children):
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        if comm.startswith("chrom"):
            os.kill(pid, signal.SIGKILL)
            killed = True
    assert killed, f"no Chromium under chromedriver {driver_pid}: {children}"


# ---- tests ---------------------------------------------------------------------------


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_web_to_phone_calls_in_chromium() -> None:
    """RTC -> SIP: audio both ways, busy, rejected, no answer, cancel while ringing, SIP
    hangup, G.722 and opus stereo at the right rates, then the browser dies mid-call."""
    assert_loopback_only()
    hold = "[media]\nbrowser_hold = 1.0\n"  # a dead browser's call is held this long
    with running_gateway(hold, presence_grace=1.0) as (gateway, sim), browser() as driver:
        page = Page(driver, gateway)
        page.open()
        page.login(WEB_UID)
        run_web_to_phone(page, gateway, sim)
        run_browser_dies(page, driver, gateway, sim)


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_phone_to_web_calls_in_chromium() -> None:
    """SIP -> RTC: incoming call accepted with audio both ways, refused, canceled by the
    caller while ringing, busy while in a call, hung up by the phone."""
    assert_loopback_only()
    with running_gateway(presence_grace=1.0) as (gateway, sim), browser() as driver:
        page = Page(driver, gateway)
        page.open()
        page.login(WEB_UID)
        run_phone_to_web(page, gateway, sim)


# ---- scenarios -----------------------------------------------------------------------


def run_web_to_phone(page: Page, gateway: Gateway, sim: SimulatorThread) -> None:
    # 1. 1000 answers with a 440 Hz tone; the page's 1 kHz microphone reaches the channel.
    page.dial("1000")
    page.state_is("connected")
    assert page.text("call-peer") == "with 1000"
    page.media_up()
    uuid = only_channel(sim)
    page.assert_hears(PHONE_HZ)
    # A PCMU phone: the browser leg is PCMU too ([media] codecs 'sip'), the fast path.
    assert_received_tone(unicast_of(sim, uuid), MIC_HZ, rate=8000, channels=1, native=True)
    wait_until(lambda: page.hook("callSeconds()") >= 1, WAIT, "the call timer")
    page.shot("rtc-to-sip-connected")
    page.click("hangup")
    page.ended_with("You hung up.")
    page.shot("rtc-to-sip-ended-hung-up")
    assert_nothing_left(gateway, sim)
    ended = sim.get_channel(uuid)
    assert ended is not None and ended.hung_up and ended.hangup_cause == "NORMAL_CLEARING"

    # 2. Failures, each in words. 1004 rings longer than the gateway's originate_timeout
    # (5 s in gateway_support), so it is the gateway's dial string that ends it: NO_ANSWER.
    sim.set_extension("1004", Extension("no_answer", answer_after=None, ring_seconds=60.0))
    for number, reason in (
        ("1003", "The line is busy."),
        ("1005", "The call was declined."),
        ("1004", "No answer."),
    ):
        page.dial(number)
        page.ended_with(reason)
        page.shot(f"rtc-to-sip-ended-{number}")
        assert_nothing_left(gateway, sim)

    # 3. Cancel: hanging up while 1007 rings kills the SIP leg. 1007 rings until then (it
    # answered after 2 s by default, which a loaded machine could reach before the click);
    # the gateway's originate_timeout (5 s) is the only bound left.
    sim.set_extension("1007", Extension("ringing", answer_after=None, audio=AudioSource("echo")))
    page.dial("1007")
    page.state_is("ringing")
    assert page.text("call-state") == "Ringing…"
    assert sim.live_channel_count() == 1
    uuid = only_channel(sim)
    page.shot("rtc-to-sip-ringing")
    page.click("hangup")
    page.ended_with("You hung up.")
    assert_nothing_left(gateway, sim)
    channel = sim.get_channel(uuid)
    assert channel is not None and channel.hangup_cause == "ORIGINATOR_CANCEL"
    assert not channel.answered  # killed before 1007 answered

    # 4. The SIP side hangs up mid-call.
    page.dial("1000")
    page.state_is("connected")
    page.media_up()
    uuid = only_channel(sim)
    assert sim_api(sim, f"uuid_kill {uuid} NORMAL_CLEARING").startswith("+OK")
    page.ended_with("The other side hung up.")
    page.shot("rtc-to-sip-ended-remote-hangup")
    assert_nothing_left(gateway, sim)

    # 8. Codecs toward FreeSWITCH: the 1 kHz arrives at 16 kHz (G.722, 1008) and at 48 kHz
    # stereo interleaved (opus stereo=1, 1010). Those two echo, and the page's echo
    # canceller (on, as for any user) removes a tone it hears back from its own microphone,
    # so the way back is checked with two more phones of the same codecs sending a 600 Hz
    # tone (12 and 13): a rate mistake in either direction would move the tone.
    sim.set_extension("1012", Extension("tone", codec=G722, audio=AudioSource("tone", 600.0)))
    sim.set_extension(
        "1013", Extension("tone", codec=OPUS_STEREO, audio=AudioSource("tone", 600.0))
    )
    for number, rate, channels, hears in (
        ("1008", 16000, 1, None),
        ("1010", 48000, 2, None),
        ("1012", 16000, 1, 600.0),
        ("1013", 48000, 2, 600.0),
    ):
        page.dial(number)
        page.state_is("connected")
        page.media_up()
        uuid = only_channel(sim)
        if hears is not None:
            page.assert_hears(hears)
        # G.722 and Opus phones: the browser leg is Opus, decoded and encoded here.
        assert_received_tone(
            unicast_of(sim, uuid), MIC_HZ, rate=rate, channels=channels, native=False
        )
        page.click("hangup")
        page.ended_with("You hung up.")
        assert_nothing_left(gateway, sim)


def run_browser_dies(page: Page, driver: Any, gateway: Gateway, sim: SimulatorThread) -> None:
    """7. The browser goes away mid-call without a word: past the presence grace (1 s) the
    call is held for browser_hold (1 s here), then the gateway ends it and the channel."""
    controller = gateway.controller
    assert controller is not None
    gone_before = controller.status()["ended"].get("browser_lost", 0)
    page.dial("1001")
    page.state_is("connected")
    page.media_up()
    only_channel(sim)
    blocking(kill_browser, driver)
    assert_nothing_left(gateway, sim)
    assert controller.status()["ended"].get("browser_lost", 0) == gone_before + 1


def run_phone_to_web(page: Page, gateway: Gateway, sim: SimulatorThread) -> None:
    # 5. A phone calls 0<uid>: the page rings, Accept connects, audio both ways.
    phone = blocking(sim.place_call, caller="1001", dest=f"0{WEB_UID}", audio="tone440")
    page.state_is("incoming")
    assert page.text("caller") == "1001"
    assert page.visible("accept") and page.visible("refuse")
    wait_ringback(sim, phone.uuid)
    assert not phone.answered
    page.shot("sip-to-rtc-incoming")
    page.click("accept")
    page.state_is("connected")
    wait_until(lambda: phone.answered, WAIT, "the phone answered")
    page.media_up()
    assert page.text("call-peer") == "with 1001"
    page.assert_hears(PHONE_HZ)
    assert_received_tone(unicast_of(sim, phone.uuid), MIC_HZ, rate=8000, channels=1, native=True)
    page.shot("sip-to-rtc-connected")
    # A second phone calling meanwhile finds the web user busy.
    second = blocking(sim.place_call, caller="1002", dest=f"0{WEB_UID}")
    wait_until(lambda: second.finished, WAIT, "the second phone hung up")
    assert second.hangup_cause == "USER_BUSY"
    assert page.hook("state()") == "connected"
    page.click("hangup")
    page.ended_with("You hung up.")
    wait_until(lambda: phone.finished, WAIT, "the phone's call finished")
    page.shot("sip-to-rtc-ended-hung-up")
    assert_nothing_left(gateway, sim)

    # 6a. Refused on the page.
    phone = blocking(sim.place_call, caller="1001", dest=f"0{WEB_UID}")
    page.state_is("incoming")
    page.click("refuse")
    page.ended_with("You refused the call from 1001.")
    wait_until(lambda: phone.finished, WAIT, "the phone hung up")
    assert phone.hangup_cause in {"CALL_REJECTED", "USER_BUSY"}, phone.hangup_cause
    page.shot("sip-to-rtc-ended-refused")
    assert_nothing_left(gateway, sim)

    # 6b. The caller hangs up while the page rings.
    phone = blocking(sim.place_call, caller="1001", dest=f"0{WEB_UID}")
    page.state_is("incoming")
    wait_ringback(sim, phone.uuid)
    blocking(phone.hangup, "NORMAL_CLEARING")
    page.ended_with("Missed call from 1001: the caller hung up.")
    assert not page.visible("incoming")
    page.shot("sip-to-rtc-ended-caller-gave-up")
    assert_nothing_left(gateway, sim)

    # The phone hangs up mid-call.
    phone = blocking(sim.place_call, caller="1001", dest=f"0{WEB_UID}")
    page.state_is("incoming")
    page.click("accept")
    page.state_is("connected")
    page.media_up()
    blocking(phone.hangup, "NORMAL_CLEARING")
    page.ended_with("The other side hung up.")
    page.shot("sip-to-rtc-ended-remote-hangup")
    assert_nothing_left(gateway, sim)
