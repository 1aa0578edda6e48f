"""The SDK in Firefox ESR (Debian's ``firefox-esr``), tested without a WebDriver.

No geckodriver can be installed, so the test drives nothing: it starts the demo gateway,
serves a self-test page (here, in the test; not part of the product) from its own origin,
and starts headless Firefox on it with a fresh profile. The page imports the SDK from the
gateway (another origin: ``[web] allowed_origins`` lists the test's), calls 1000 and
measures the tone it hears with an AnalyserNode, then answers a call from phone 1001 (the
demo's call-me route, which the test server asks for when the page says it is ready) and
measures that tone too, and POSTs each verdict to the test's server. The test ends Firefox
by its process group.

Network: everything runs in the test's own loopback-only namespace. With only ``lo``
Firefox gathers no ICE candidate at all, so the test adds a veth pair inside that namespace
(192.0.2.1 <-> 192.0.2.2, documentation addresses; both ends stay in it) and the gateway
offers its media on 192.0.2.1 (``[media] host_addresses``). Firefox's background
services are off by profile prefs; no packet can leave the namespace anyway.

Without firefox-esr the test is skipped with the reason; with ``CI=true`` that is a
failure (.ci/run and scripts/test.sh install it).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from support.netns import interfaces, loopback_only

from esl_bridge import __version__
from esl_bridge.gateway.demo import free_port

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
FIREFOX = shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
VETH = ("esl-ff0", "esl-ff1")
MEDIA_HOST = "192.0.2.1"
PEER_HOST = "192.0.2.2"
UID = "2001"
TONE_HZ = 440.0  # the demo's 1000 and its call-me route both play a 440 Hz tone
WAIT = 120.0  # bound of the whole self-test; never an assertion on elapsed time

# Profile prefs: a fake microphone without a prompt, autoplay, real host candidates
# instead of mDNS names, and no background connection.
PREFS: dict[str, bool | int | str] = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    "media.peerconnection.ice.loopback": True,
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": False,
    # Audio output through ALSA to its null device (HOME/.asoundrc): without a sound
    # device an AudioContext never runs.
    "media.cubeb.backend": "alsa",
    "network.dns.disableIPv6": True,
    "network.proxy.type": 0,
    "app.update.enabled": False,
    "app.update.auto": False,
    "extensions.update.enabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.prefetch-next": False,
    "network.dns.disablePrefetch": True,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.ping-centre.telemetry": False,
}

# The self-test page: ?gw=<gateway origin>&uid=<login>.
PAGE = """<!doctype html>
<meta charset="utf-8"><title>esl-bridge SDK self-test</title>
<audio id="remote" autoplay></audio>
<script type="module">
const params = new URL(location.href).searchParams;
const gw = params.get("gw");
const uid = params.get("uid");
const report = (step, body) => fetch("/verdict", {
  method: "POST", headers: { "Content-Type": "application/json" },
  body: JSON.stringify({ step, ...body }),
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
async function until(what, check) {
  report("progress", { what });
  for (let i = 0; i < 600; i++) {  // a bound, not a measure: 60 s
    if (check()) return;
    await sleep(100);
  }
  throw new Error(`never: ${what}`);
}
// The dominant frequency of `stream` in windows 0.25 s apart, read by an AnalyserNode. Headless
// Firefox with no sound device never runs a realtime AudioContext, so the page records
// 4 s of the stream (MediaRecorder), decodes it and plays it through the analyser in an
// OfflineAudioContext, which needs no device.
async function measure(stream) {
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  recorder.ondataavailable = (ev) => { if (ev.data.size) chunks.push(ev.data); };
  const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
  recorder.start(500);
  report("progress", { what: "recording" });
  await sleep(4000);
  recorder.stop();
  await stopped;
  const data = await new Blob(chunks, { type: recorder.mimeType }).arrayBuffer();
  report("progress", { what: `decoding ${data.byteLength} bytes` });
  const decoded = await new OfflineAudioContext(1, 128, 48000).decodeAudioData(data);
  // One short offline rendering per reading: the analyser holds the last 8192 samples of
  // the window that starts at `t` (Firefox has no OfflineAudioContext.suspend).
  const readings = [];
  const rate = decoded.sampleRate;
  for (let t = 0.5; t + 0.4 < decoded.duration; t += 0.25) {
    const ctx = new OfflineAudioContext(1, 16384, rate);
    const source = ctx.createBufferSource();
    source.buffer = decoded;
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    analyser.smoothingTimeConstant = 0;
    source.connect(analyser);
    analyser.connect(ctx.destination);
    source.start(0, t);
    await ctx.startRendering();
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    let best = 1;
    for (let k = 1; k < bins.length; k++) if (bins[k] > bins[best]) best = k;
    readings.push({ hz: best * rate / analyser.fftSize, db: bins[best], t });
  }
  return readings;
}
async function heard(call) {
  document.getElementById("remote").srcObject = call.remoteAudio;
  await until("connected", () => call.state === "connected");
  await until("media", () => call.pc && call.pc.connectionState === "connected");
  const readings = await measure(call.remoteAudio);
  const stats = await call.getStats();
  const ended = new Promise((resolve) => call.on("ended", resolve));
  call.hangup();
  return { readings, stats, ended: (await ended).reason };
}
try {
  const sdk = await import(`${gw}/sdk.js`);
  const client = sdk.createClient({ appId: "demo" });
  await client.login(uid);
  const outgoing = await heard(await client.call("1000"));
  await report("outgoing", { ...outgoing, version: sdk.VERSION, agent: navigator.userAgent });
  const incoming = new Promise((resolve, reject) => {
    client.on("RemoteInvitationReceived", (ri) => ri.accept({}).then(resolve, reject));
  });
  await report("ready_for_incoming", {});
  await report("incoming", await heard(await incoming));
  await client.logout();
  await report("done", {});
} catch (err) {
  await report("error", { message: String(err && (err.code || err.message || err)),
                          stack: String(err && err.stack) });
}
</script>
"""

# The demo (`esl-bridge demo`) with its media offered on the veth address and the test
# server's origin allowed: argv = web port, media host, allowed origin.
GATEWAY = """
import dataclasses, sys
from esl_bridge import cli
from esl_bridge.gateway import demo

port, media_host, origin = sys.argv[1:4]
base = demo.demo_settings

def settings(*args, **kwargs):
    s = base(*args, **kwargs)
    return dataclasses.replace(
        s,
        media=dataclasses.replace(s.media, host_addresses=(media_host,)),
        web=dataclasses.replace(s.web, allowed_origins=(origin,)),
    )

demo.demo_settings = settings
sys.exit(cli.main(["demo", "--port", port]))
"""


@pytest.fixture
def firefox() -> str:
    if os.path.exists(FIREFOX):
        return FIREFOX
    reason = f"{FIREFOX} is missing (Debian package firefox-esr)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"the Firefox self-test cannot run in CI: {reason}")
    pytest.skip(reason)


def add_veth() -> None:
    """A veth pair inside this (the test's own) namespace: Firefox needs an interface
    besides ``lo`` to gather a candidate. Both ends stay here."""
    a, b = VETH
    for cmd in (
        f"ip link add {a} type veth peer name {b}",
        f"ip addr add {MEDIA_HOST}/24 dev {a}",
        f"ip addr add {PEER_HOST}/24 dev {b}",
        f"ip link set {a} up",
        f"ip link set {b} up",
        f"ip route add default via {PEER_HOST} dev {a}",
    ):
        subprocess.run(cmd.split(), check=True, capture_output=True, timeout=20)
    assert interfaces() == sorted(["lo", a, b]), interfaces()


class SelfTestServer:
    """Serves the self-test page and collects the page's verdicts (one event loop in a
    thread); asks the gateway for the call from 1001 when the page is ready for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.gateway = ""
        self.steps: dict[str, dict[str, Any]] = {}
        self.changed = threading.Condition()
        self.call_me: dict[str, Any] | None = None
        self.progress: list[str] = []  # what the page waited for, in order
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()

        async def page(_: web.Request) -> web.Response:
            return web.Response(text=PAGE, content_type="text/html")

        async def verdict(request: web.Request) -> web.Response:
            body = await request.json()
            step = str(body.get("step"))
            if step == "ready_for_incoming":
                async with (
                    ClientSession() as session,
                    session.post(f"{self.gateway}/demo/call-me", json={"uid": UID}) as resp,
                ):
                    self.call_me = {"status": resp.status, **(await resp.json())}
            with self.changed:
                if step == "progress":
                    self.progress.append(str(body.get("what")))
                self.steps[step] = body
                self.changed.notify_all()
            return web.json_response({"ok": True})

        app.router.add_get("/selftest.html", page)
        app.router.add_post("/verdict", verdict)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, *steps: str) -> str:
        """The first of ``steps`` the page reports (bounded)."""
        deadline = time.monotonic() + WAIT
        with self.changed:
            while True:
                for step in steps:
                    if step in self.steps:
                        return step
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"the page reported none of {steps}: {self.steps}; "
                        f"it waited for {self.progress}"
                    )
                self.changed.wait(left)

    def __enter__(self) -> SelfTestServer:
        self._thread.start()
        assert self._ready.wait(30), "test server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(json.loads(response.read())["status"] == "ok")
    except (urllib.error.URLError, ConnectionError):
        return False


def wait_healthy(url: str, gateway: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not healthy(url):
        if gateway.poll() is not None:
            raise AssertionError(f"the demo gateway exited: {gateway.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("the demo gateway never served /healthz")
        time.sleep(0.1)


def _die_with_the_test() -> None:
    """In the child before exec: SIGKILL when the test process dies (its pytest killed on
    a timeout), so neither the gateway nor Firefox outlives it (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def stop_group(process: subprocess.Popen[str], sig: int) -> str:
    """Stop ``process`` (started in its own session) and its children; its stderr."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=30)
    return err or ""


def assert_tone(result: dict[str, Any], what: str) -> None:
    """The tone dominates the recording: at least 5 windows above silence hear it, and
    it is the loudest frequency of 80 % of those windows or more (a window may catch
    the start of the media or a gap of a busy machine)."""
    loud = [r for r in result["readings"] if r["db"] > -70]
    # One FFT bin is 48000 / 8192 = 5.9 Hz wide.
    tone = [r for r in loud if abs(r["hz"] - TONE_HZ) < 12]
    assert len(tone) >= 5, f"{what}: tone in {len(tone)} windows: {result}"
    assert len(tone) >= 0.8 * len(loud), f"{what}: {result}"
    assert result["stats"]["packetsReceived"] > 0, result
    assert result["ended"] == "hangup", result


@pytest.mark.timeout(300)
@loopback_only(timeout=240)
def test_sdk_calls_both_ways_in_firefox(firefox: str) -> None:
    add_veth()
    profile = Path(tempfile.mkdtemp(prefix="esl-bridge-firefox-"))
    (profile / ".asoundrc").write_text("pcm.!default { type null }\n")
    (profile / "user.js").write_text(
        "".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in PREFS.items())
    )
    gw_port = free_port()
    gw = f"http://127.0.0.1:{gw_port}"
    with SelfTestServer() as server:
        server.gateway = gw
        gateway = subprocess.Popen(
            [sys.executable, "-c", GATEWAY, str(gw_port), MEDIA_HOST, server.origin],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_die_with_the_test,
        )
        browser: subprocess.Popen[str] | None = None
        try:
            wait_healthy(gw, gateway)
            url = f"{server.origin}/selftest.html?gw={gw}&uid={UID}"
            browser = subprocess.Popen(
                [firefox, "--headless", "--no-remote", "--profile", str(profile), url],
                env={**os.environ, "HOME": str(profile), "MOZ_HEADLESS": "1"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
                preexec_fn=_die_with_the_test,
            )
            first = server.wait_for("outgoing", "error")
            assert first == "outgoing", server.steps
            outgoing = server.steps["outgoing"]
            assert "Firefox/" in outgoing["agent"], outgoing["agent"]
            assert outgoing["version"] == __version__
            assert_tone(outgoing, "browser -> 1000")

            last = server.wait_for("done", "error")
            assert last == "done", server.steps
            assert server.call_me is not None and server.call_me["placed"], server.call_me
            assert_tone(server.steps["incoming"], "1001 -> browser")
            for step in ("outgoing", "incoming"):
                heard = server.steps[step]
                print(step, json.dumps(heard["readings"]), json.dumps(heard["stats"]))
        finally:
            browser_err = stop_group(browser, signal.SIGKILL) if browser else ""
            gateway_err = stop_group(gateway, signal.SIGTERM)
            shutil.rmtree(profile, ignore_errors=True)
            if sys.exc_info()[0] is not None:
                notable = [
                    line
                    for line in gateway_err.splitlines()
                    if '"level": "warning"' in line or '"level": "error"' in line
                ]
                print("gateway warnings and errors:", "\n".join(notable[-20:])[-3000:])
                print("firefox stderr:", browser_err[-1500:])
