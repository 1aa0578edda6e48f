"""The SDK names its version: ``VERSION`` exported by ``/sdk.js`` (and declared in
``sdk.d.ts``) is the package's version, so a page can tell which gateway release it runs
against (README "Use the SDK in your page": the compatibility promise)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from esl_bridge import __version__
from esl_bridge.signaling.server import setup_signaling
from esl_bridge.signaling.settings import SignalingSettings

WEB = Path(__file__).resolve().parent.parent / "esl_bridge" / "web"
JS_VERSION = re.compile(r'^export const VERSION = "([^"]+)";$', re.M)


def test_sdk_js_exports_the_package_version() -> None:
    assert JS_VERSION.findall((WEB / "sdk.js").read_text()) == [__version__]


def test_sdk_d_ts_declares_it_and_names_the_release() -> None:
    dts = (WEB / "sdk.d.ts").read_text()
    assert re.search(r"^export declare const VERSION: string;$", dts, re.M)
    first = dts.splitlines()[0]
    assert f"esl-bridge {__version__}" in first, first


def test_the_served_sdk_carries_it() -> None:
    async def main() -> str:
        app = web.Application()
        setup_signaling(app, SignalingSettings(appid="a", open_mode=True))
        client = TestClient(TestServer(app))
        await client.start_server()
        try:
            return await (await client.get("/sdk.js")).text()
        finally:
            await client.close()

    assert JS_VERSION.findall(asyncio.run(main())) == [__version__]
