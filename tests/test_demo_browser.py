"""The demo as the README starts it, driven through its page in headless Chromium.

``esl-bridge run`` without a config file (the README's quick-start command) inside a
fresh loopback-only network namespace, where its fixed port 8080 is free; the page logs
in, calls simulated extension 1000 and hears its 440 Hz tone, then has simulated phone
1001 call back with the demo button, accepts, hangs up; SIGTERM stops the process.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from support.browser import CHROMEDRIVER, CHROMIUM, DOMINANT_HZ_JS, chromium
from support.netns import loopback_only

URL = "http://127.0.0.1:8080"
WAIT = 20.0  # bound of every wait; never an assertion on elapsed time


def wait_for(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.1)


def healthy() -> bool:
    try:
        with urllib.request.urlopen(f"{URL}/healthz", timeout=2) as response:
            return bool(json.loads(response.read())["status"] == "ok")
    except (urllib.error.URLError, ConnectionError):
        return False


def readme_command() -> list[str]:
    exe = shutil.which("esl-bridge")
    return [exe, "run"] if exe else [sys.executable, "-m", "esl_bridge", "run"]


@pytest.mark.browser
@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_demo_through_its_page() -> None:
    process = subprocess.Popen(
        readme_command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(healthy, "the demo to serve /healthz")
        with chromium() as driver:
            driver.get(f"{URL}/")
            state = lambda: driver.execute_script(  # noqa: E731
                "return window.eslBridgeClient && window.eslBridgeClient.state()"
            )
            uid = driver.find_element("id", "uid")
            uid.clear()
            uid.send_keys("2001")
            driver.find_element("id", "login").click()
            wait_for(lambda: state() == "idle", "logged in")

            driver.find_element("id", "contact").send_keys("1000")
            driver.find_element("id", "call").click()
            wait_for(lambda: state() == "connected", "connected to 1000")
            media = lambda: driver.execute_script(  # noqa: E731
                "return window.eslBridgeClient.peerConnectionState()"
            )
            wait_for(lambda: media() == "connected", "the media to flow")
            heard = driver.execute_async_script(DOMINANT_HZ_JS)
            assert heard.get("hz") == pytest.approx(440, abs=12), heard
            driver.find_element("id", "hangup").click()
            wait_for(lambda: state() in ("ended", "idle"), "the call ended")

            button = driver.find_element("id", "demo-call-me")
            wait_for(button.is_enabled, "the demo button")
            button.click()
            wait_for(lambda: state() == "incoming", "the call from phone 1001")
            assert "1001" in driver.find_element("id", "caller").text
            driver.find_element("id", "accept").click()
            wait_for(lambda: state() == "connected", "connected with phone 1001")
            wait_for(lambda: media() == "connected", "the media to flow")
            heard = driver.execute_async_script(DOMINANT_HZ_JS)
            assert heard.get("hz") == pytest.approx(440, abs=12), heard  # the phone's tone
            driver.find_element("id", "hangup").click()
            wait_for(lambda: state() in ("ended", "idle"), "the call ended")
            status = json.loads(urllib.request.urlopen(f"{URL}/status.json", timeout=5).read())
            wait_for(
                lambda: (
                    json.loads(urllib.request.urlopen(f"{URL}/status.json", timeout=5).read())[
                        "calls"
                    ]
                    == 0
                ),
                "no call left in the gateway",
            )
            assert status["esl"] == "connected"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-3000:]
    assert "no rtx.conf given" in err
