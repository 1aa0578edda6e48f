"""Pages of other origins and the SDK: ``[web] allowed_origins``, CORS on ``/sdk.js``,
``/sdk.d.ts`` and ``/config.json``, and the WebSocket's refusal (close 4008) of a page
whose origin is not allowed. aiohttp's test client sends the ``Origin`` headers."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import WSMsgType, web
from structlog.testing import capture_logs
from support.signaling_support import APPID, CERT, Env, Ws, env, run, token

from esl_bridge import config
from esl_bridge.signaling.origins import (
    normalize_origin,
    origin_allowed,
    parse_allowed_origins,
)
from esl_bridge.signaling.settings import SignalingSettings, signaling_settings
from esl_bridge.web.client import setup_web_client

SITE = "https://shop.example"


def settings(*origins: str) -> SignalingSettings:
    return SignalingSettings(appid="", app_certificate=CERT, allowed_origins=origins)


async def connect(e: Env, origin: str | None) -> Ws:
    if origin is None:
        return await e.ws()
    return Ws(await e.client.ws_connect("/ws", origin=origin))


def own_origin(e: Env) -> str:
    return f"http://{e.client.host}:{e.client.port}"


# ---- the rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("https://Shop.Example", "https://shop.example"),
        ("https://shop.example:443", "https://shop.example"),
        ("http://shop.example:80", "http://shop.example"),
        ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
        ("http://[::1]:8081", "http://[::1]:8081"),
        ("null", None),
        ("file://", None),
        ("https://shop.example/", None),
        ("https://shop.example/app", None),
        ("https://user@shop.example", None),
        ("https://shop.example?x=1", None),
        ("https://shop.example:99999", None),
        ("ws://shop.example", None),
        ("", None),
    ],
)
def test_origins_are_normalized_or_refused(origin: str, expected: str | None) -> None:
    assert normalize_origin(origin) == expected


def test_the_same_origin_is_the_host_the_request_names() -> None:
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080", ())
    assert origin_allowed("https://voice.example", "voice.example", ())  # a TLS proxy in front
    assert origin_allowed("https://voice.example", "VOICE.example:443", ())
    assert not origin_allowed("http://127.0.0.1:8081", "127.0.0.1:8080", ())
    assert not origin_allowed("http://localhost:8080", "127.0.0.1:8080", ())
    assert not origin_allowed("http://127.0.0.1:8080", None, ())
    assert not origin_allowed("null", "127.0.0.1:8080", ())
    assert origin_allowed(None, "127.0.0.1:8080", ())  # not a page: no Origin header
    assert origin_allowed("https://shop.example:443", "127.0.0.1:8080", (SITE,))
    assert origin_allowed("http://anything.example", "127.0.0.1:8080", ("*",))


def test_config_key_is_parsed_and_reaches_the_hub_settings() -> None:
    loaded = config.from_text(
        "[web]\nallowed_origins = https://Shop.Example:443, http://127.0.0.1:9000\n"
    )
    assert loaded.web.allowed_origins == (SITE, "http://127.0.0.1:9000")
    assert signaling_settings(loaded).allowed_origins == (SITE, "http://127.0.0.1:9000")
    assert config.defaults().web.allowed_origins == ()
    again = config.from_text(config.render(loaded, mask=False))
    assert again.web.allowed_origins == loaded.web.allowed_origins


@pytest.mark.parametrize("value", ["shop.example", "https://shop.example/app", "null"])
def test_a_wrong_entry_is_a_config_problem(value: str) -> None:
    with pytest.raises(config.ConfigError) as info:
        config.from_text(f"[web]\nallowed_origins = {value}\n")
    (problem,) = info.value.problems
    assert (problem.section, problem.key) == ("web", "allowed_origins")
    assert "scheme://host[:port]" in problem.reason
    with pytest.raises(ValueError, match="not an origin"):
        parse_allowed_origins([value])


# ---- the WebSocket -----------------------------------------------------------------------


def test_a_page_of_another_origin_is_refused_with_4008_by_default() -> None:
    async def main() -> None:
        async with env(settings()) as e:
            with capture_logs() as logs:
                ws = await connect(e, SITE)
                closing = await ws.recv()
                assert closing is not None
                assert closing["type"] == "closing"
                assert (closing["code"], closing["reason"]) == (4008, "ORIGIN_NOT_ALLOWED")
                assert "allowed_origins" in closing["message"]
                assert await ws.closed() == 4008
            assert any(
                rec["event"] == "signaling.origin_refused" and rec["origin"] == SITE for rec in logs
            ), logs
            # The hub never saw it: nothing to clean up, nothing leaked.
            assert e.hub.stats()["connections"] == 0
            # The gateway's own pages and clients without Origin still log in.
            for origin in (own_origin(e), None):
                ws = await connect(e, origin)
                reply = await ws.request("login", appid=APPID, uid="alice", token=token("alice"))
                assert reply["type"] == "ok", reply
                assert (await ws.request("logout"))["type"] == "ok"
                await e.dropped(ws)

    run(main())


def test_a_refused_page_cannot_log_in_even_if_it_tries() -> None:
    async def main() -> None:
        async with env(settings()) as e:
            raw = await e.client.ws_connect("/ws", origin="null")
            # Sent at once, as a page would; the server reads no frame of it.
            login = {"v": 1, "type": "login", "id": 1, "appid": APPID, "uid": "eve"}
            await raw.send_json({**login, "token": token("eve")})
            seen: list[Any] = []
            while True:
                msg = await raw.receive(timeout=5)
                if msg.type != WSMsgType.TEXT:
                    break
                seen.append(msg.json())
            assert [m["type"] for m in seen] == ["closing"], seen
            assert raw.close_code == 4008
            assert not e.hub.is_online(APPID, "eve")
            assert e.hub.stats()["sessions"] == 0

    run(main())


def test_listed_and_wildcard_origins_are_accepted() -> None:
    async def main() -> None:
        for allowed, origin in ((SITE, "https://shop.example:443"), ("*", "http://x.example")):
            async with env(settings(allowed)) as e:
                ws = await connect(e, origin)
                reply = await ws.request("login", appid=APPID, uid="bob", token=token("bob"))
                assert reply["type"] == "ok", reply
                assert e.hub.is_online(APPID, "bob")
            async with env(settings(allowed)) as e:
                if allowed != "*":
                    ws = await connect(e, "https://other.example")
                    assert await ws.closed() == 4008

    run(main())


# ---- CORS on what the SDK loads ----------------------------------------------------------


def _with_web_client(origins: tuple[str, ...]) -> Any:
    def setup(app: web.Application) -> None:
        setup_web_client(app, {"appid": APPID}, allowed_origins=origins)

    return setup


@pytest.mark.parametrize("path", ["/sdk.js", "/sdk.d.ts", "/config.json"])
def test_cors_headers_only_for_allowed_origins(path: str) -> None:
    async def main() -> None:
        async with env(settings(SITE), setup=_with_web_client((SITE,))) as e:
            allowed = await e.client.get(path, headers={"Origin": SITE})
            assert allowed.status == 200
            assert allowed.headers["Access-Control-Allow-Origin"] == SITE
            assert "Origin" in allowed.headers["Vary"]
            other = await e.client.get(path, headers={"Origin": "https://evil.example"})
            assert other.status == 200  # the browser, not the server, withholds the body
            assert "Access-Control-Allow-Origin" not in other.headers
            assert "Origin" in other.headers["Vary"]
            plain = await e.client.get(path)
            assert "Access-Control-Allow-Origin" not in plain.headers
            own = await e.client.get(path, headers={"Origin": own_origin(e)})
            assert own.headers["Access-Control-Allow-Origin"] == own_origin(e)

    run(main())


def test_cors_wildcard_echoes_the_page() -> None:
    async def main() -> None:
        async with env(settings("*"), setup=_with_web_client(("*",))) as e:
            for path in ("/sdk.js", "/config.json"):
                resp = await e.client.get(path, headers={"Origin": "http://x.example:81"})
                assert resp.headers["Access-Control-Allow-Origin"] == "http://x.example:81"

    run(main())
