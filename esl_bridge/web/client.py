"""The web client (a softphone page built on the SDK), served by the gateway's web server.

Mounting::

    setup_web_client(app, {
        "appid": "myapp",            # [global] appid
        "open_mode": False,          # [auth] open_mode: hides the token field
        "gateway_uid": "10000",      # [proxy] rtm_account: caller uid of SIP -> RTC calls
        "numbers": ["1005", "1006"], # a few callable SIP numbers shown as shortcuts
        "ice_servers": [],           # RTCIceServer dicts; empty: host candidates only
        "demo": False,               # demo hints on the page
    })

adds ``GET /`` (the page), ``/app.js``, ``/app.css`` and ``/config.json`` (the dict above as
JSON). The page imports ``/sdk.js``, which ``setup_signaling`` serves. Nothing on the page
reaches another origin: no CDN, no web font, no public STUN server.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web

from esl_bridge.signaling.origins import cors_headers

__all__ = ["CLIENT_FILES", "DEFAULT_CONFIG", "client_file", "setup_web_client"]

#: The page's static files: name -> content type.
CLIENT_FILES: Mapping[str, str] = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}

#: Keys of config.json and their defaults (the gateway fills them).
DEFAULT_CONFIG: Mapping[str, Any] = {
    "appid": "",
    "open_mode": False,
    "gateway_uid": "",
    "numbers": [],
    "ice_servers": [],
    "demo": False,
}

# Same-origin only: scripts, styles and the WebSocket of this server. Remote audio plays
# from a MediaStream (srcObject), which needs no media-src entry.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": _CSP,
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=()",
}


def client_file(name: str) -> bytes:
    """One of the page's files (esl_bridge/web/<name>) from the installed package."""
    if name not in CLIENT_FILES:
        raise KeyError(name)
    return resources.files("esl_bridge").joinpath("web", name).read_bytes()


def _config_json(client_config: Mapping[str, Any]) -> bytes:
    unknown = sorted(set(client_config) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"unknown web client config keys: {', '.join(unknown)}")
    config = {**DEFAULT_CONFIG, **client_config}
    if not isinstance(config["appid"], str) or not config["appid"]:
        raise ValueError("web client config: appid must be a non-empty string")
    for key in ("open_mode", "demo"):
        if not isinstance(config[key], bool):
            raise ValueError(f"web client config: {key} must be a bool")
    if not isinstance(config["gateway_uid"], str):
        raise ValueError("web client config: gateway_uid must be a string")
    numbers = config["numbers"]
    if not isinstance(numbers, list | tuple) or not all(isinstance(n, str) for n in numbers):
        raise ValueError("web client config: numbers must be a list of strings")
    ice = config["ice_servers"]
    if not isinstance(ice, list | tuple) or not all(
        isinstance(s, Mapping) and "urls" in s for s in ice
    ):
        raise ValueError("web client config: ice_servers must be RTCIceServer dicts with urls")
    config["numbers"] = list(numbers)
    config["ice_servers"] = [dict(s) for s in ice]
    return json.dumps(config, ensure_ascii=False, separators=(",", ":")).encode()


def setup_web_client(
    app: web.Application,
    client_config: dict[str, Any],
    *,
    allowed_origins: tuple[str, ...] = (),
) -> None:
    """Serve the web client at ``/`` (plus ``/app.js``, ``/app.css``, ``/config.json``).

    The files are read once, here, from the package; ``client_config`` is validated and
    frozen into ``/config.json`` (ValueError for a wrong key or type). ``/config.json``
    (which the SDK fetches for its ICE servers) carries CORS headers for the pages of
    ``allowed_origins`` ([web] allowed_origins), as ``/sdk.js`` does.
    """
    config_body = _config_json(client_config)
    bodies = {name: client_file(name) for name in CLIENT_FILES}

    def static(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        body = bodies[name]
        content_type = CLIENT_FILES[name]

        async def handler(_: web.Request) -> web.Response:
            return web.Response(
                body=body, content_type=content_type, charset="utf-8", headers=_HEADERS
            )

        return handler

    async def config_handler(request: web.Request) -> web.Response:
        headers = {**_HEADERS, **cors_headers(request.headers, allowed_origins)}
        return web.Response(
            body=config_body, content_type="application/json", charset="utf-8", headers=headers
        )

    app.router.add_get("/", static("index.html"))
    app.router.add_get("/index.html", static("index.html"))
    app.router.add_get("/app.js", static("app.js"))
    app.router.add_get("/app.css", static("app.css"))
    app.router.add_get("/config.json", config_handler)
