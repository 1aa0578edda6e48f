"""A page on another origin uses the SDK in headless Chromium ([web] allowed_origins).

Inside a loopback-only namespace (tests/support/netns.py) three servers run on 127.0.0.1,
three origins for the browser: the gateway (signalling, ``/sdk.js``, ``/config.json``), a
site that ``allowed_origins`` lists, and one it does not. The listed site's page imports
the SDK from the gateway, logs in and reads the gateway's ``/config.json``; the other
site's page cannot load the SDK (no CORS for it) and its WebSocket is closed with 4008.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from aiohttp import web
from support.browser import CHROMEDRIVER, CHROMIUM, chromium
from support.netns import assert_loopback_only, loopback_only

from esl_bridge import __version__
from esl_bridge.signaling.server import SIGNALING_KEY, create_app, sdk_source
from esl_bridge.signaling.settings import SignalingSettings
from esl_bridge.web.client import setup_web_client

pytestmark = pytest.mark.browser

APPID = "app1"
WAIT = 15.0  # bound of every in-page wait; never an assertion on elapsed time

# ?gw=<gateway origin>&uid=<login>; the verdict lands in window.result.
PAGE = """<!doctype html>
<meta charset="utf-8"><title>a shop on another origin</title>
<script type="module">
const gw = new URL(location.href).searchParams.get("gw");
const result = { imported: false };
let sdk = null;
try {
  sdk = await import(`${gw}/sdk.js`);
  result.imported = true;
} catch (err) {
  result.importError = String(err.name);
  // A copy of the SDK on this site's own origin, pointed at the gateway's /ws.
  sdk = await import("/sdk.js");
}
const client = sdk.createClient({
  appId: "app1",
  url: result.imported ? undefined : `${gw.replace("http", "ws")}/ws`,
});
try {
  await client.login(new URL(location.href).searchParams.get("uid"));
  result.login = client.connectionState;
} catch (err) {
  result.login = `error:${err.code}`;
}
result.wsUrl = client.url;
result.version = sdk.VERSION;
result.state = client.connectionState;
try {
  const resp = await fetch(`${gw}/config.json`);
  result.configAppid = (await resp.json()).appid;
} catch (err) {
  result.configError = String(err.name);
}
// The WebSocket as any page could open it, without the SDK.
result.closeCode = await new Promise((resolve) => {
  const ws = new WebSocket(`${gw.replace("http", "ws")}/ws`);
  ws.onopen = () => ws.send(JSON.stringify({ v: 1, type: "ping", id: 1 }));
  ws.onclose = (ev) => resolve(ev.code);
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "pong") { resolve("pong"); ws.close(); } else { result.closing = msg; }
  };
});
window.result = result;
</script>
"""


class Servers:
    """The gateway and the two sites, on one event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.runners: list[web.AppRunner] = []
        self.ports: dict[str, int] = {}
        self.gateway: web.Application | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self, name: str, app: web.Application) -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.runners.append(runner)
        self.ports[name] = runner.addresses[0][1]

    async def _start(self) -> None:
        for name in ("shop", "other"):
            site = web.Application()

            async def page(_: web.Request) -> web.Response:
                return web.Response(text=PAGE, content_type="text/html")

            async def own_sdk(_: web.Request) -> web.Response:
                return web.Response(body=sdk_source(), content_type="text/javascript")

            site.router.add_get("/page.html", page)
            site.router.add_get("/sdk.js", own_sdk)
            await self._serve(name, site)
        shop = f"http://127.0.0.1:{self.ports['shop']}"
        settings = SignalingSettings(appid=APPID, open_mode=True, allowed_origins=(shop,))
        app = create_app(settings)
        setup_web_client(app, {"appid": APPID}, allowed_origins=(shop,))
        self.gateway = app
        await self._serve("gateway", app)

    def origin(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def online(self, uid: str) -> bool:
        assert self.gateway is not None
        hub = self.gateway[SIGNALING_KEY].hub

        async def ask() -> bool:
            return hub.is_online(APPID, uid)

        return asyncio.run_coroutine_threadsafe(ask(), self.loop).result(WAIT)

    def __enter__(self) -> Servers:
        self._thread.start()
        assert self._ready.wait(30), "servers did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            for runner in reversed(self.runners):
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)


def page_result(driver: Any, url: str) -> dict[str, Any]:
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(url)
    result: dict[str, Any] = WebDriverWait(driver, WAIT, poll_frequency=0.05).until(
        lambda d: d.execute_script("return window.result || false")
    )
    return result


@loopback_only(requires=[CHROMIUM, CHROMEDRIVER], timeout=110)
def test_a_page_of_an_allowed_origin_uses_the_sdk_and_another_is_refused() -> None:
    assert_loopback_only()
    with Servers() as servers, chromium(microphone_hz=None) as driver:
        gw = servers.origin("gateway")
        shop = page_result(driver, f"{servers.origin('shop')}/page.html?gw={gw}&uid=shopper")
        assert shop["imported"] is True, shop
        assert shop["version"] == __version__, shop
        assert shop["login"] == "CONNECTED", shop
        assert shop["wsUrl"] == f"ws://127.0.0.1:{servers.ports['gateway']}/ws", shop
        assert shop["configAppid"] == APPID, shop
        assert shop["closeCode"] == "pong", shop  # a plain WebSocket of it is accepted too
        assert servers.online("shopper")

        other = page_result(driver, f"{servers.origin('other')}/page.html?gw={gw}&uid=intruder")
        assert other["imported"] is False, other  # no CORS header: the browser refuses it
        assert other["importError"] == "TypeError", other
        assert other["configError"] == "TypeError", other
        # The SDK (its own copy) says why it cannot log in, and does not retry.
        assert other["login"] == "error:ORIGIN_NOT_ALLOWED", other
        assert other["state"] == "DISCONNECTED", other
        assert not servers.online("intruder")
        assert other["closeCode"] == 4008, other
        assert other["closing"]["reason"] == "ORIGIN_NOT_ALLOWED", other
