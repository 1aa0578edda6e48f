"""Headless Chromium for the browser tests, and what they measure in the page.

Every test using it runs inside a loopback-only network namespace (tests/support/netns.py).
"""

from __future__ import annotations

import math
import shutil
import tempfile
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT = 15.0  # script timeout: bound of every in-page wait

MIC_HZ = 1000.0  # the fake microphone's tone


def write_tone_wav(path: Path, freq: float = MIC_HZ, seconds: float = 2.0) -> None:
    """A looped fake microphone: a sine at -12 dBFS, 48 kHz mono 16-bit."""
    rate = 48000
    t = np.arange(int(rate * seconds)) / rate
    samples = (0.25 * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())


@contextmanager
def chromium(*, microphone_hz: float | None = MIC_HZ) -> Iterator[Any]:
    """Headless Chromium for a loopback-only namespace: no background networking, every
    host name but localhost unresolvable, a fake microphone playing ``microphone_hz``
    (None: no media flags). Quit and its profile removed on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="esl-bridge-chromium-")
    media: tuple[str, ...] = ()
    if microphone_hz is not None:
        mic = Path(profile) / "mic.wav"
        write_tone_wav(mic, microphone_hz)
        media = (
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic}",
            "--allow-loopback-in-peer-connection",
            "--autoplay-policy=no-user-gesture-required",
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *media,
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        "--window-size=1280,800",
        # A second tab (two users, takeover) keeps running at full speed in the background.
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


# Measure the dominant frequency of the remote audio with an AnalyserNode in the page.
DOMINANT_HZ_JS = """
const done = arguments[arguments.length - 1];
const stream = window.eslBridgeClient.remoteStream();
if (!stream) { done({error: "no remote stream"}); return; }
const ctx = new AudioContext();
const source = ctx.createMediaStreamSource(stream);
const analyser = ctx.createAnalyser();
analyser.fftSize = 8192;
analyser.smoothingTimeConstant = 0;
source.connect(analyser);
const bins = new Float32Array(analyser.frequencyBinCount);
setTimeout(() => {
  analyser.getFloatFrequencyData(bins);
  let best = 1;
  for (let i = 1; i < bins.length; i++) if (bins[i] > bins[best]) best = i;
  const result = {hz: best * ctx.sampleRate / analyser.fftSize, db: bins[best],
                  state: ctx.state};
  ctx.close();
  done(result);
}, 1200);
"""


OVERLAP_JS = """
(() => {
  const els = [...document.querySelectorAll("button, input, #call-state, #call-peer,"
    + " #call-timer, #call-reason, #conn-state, #message, #caller, #mic-level")]
    .filter((e) => e.offsetParent !== null || e.id === "conn-state");
  const boxes = els.map((e) => [e.id || e.textContent.trim(), e.getBoundingClientRect()]);
  const bad = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const [a, r] = boxes[i], [b, s] = boxes[j];
    if (r.width === 0 || s.width === 0) continue;
    const x = Math.min(r.right, s.right) - Math.max(r.left, s.left);
    const y = Math.min(r.bottom, s.bottom) - Math.max(r.top, s.top);
    if (x > 1 && y > 1) bad.push([a, b]);
  }
  const wide = document.documentElement.scrollWidth > window.innerWidth + 1;
  if (wide) bad.push(["page", "wider than the viewport"]);
  return bad;
})()
"""
