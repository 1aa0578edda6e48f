"""Helpers for the signalling tests (no tests here): a fake clock and a protocol client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient as _Client
from aiohttp.test_utils import TestServer as _Server

from esl_bridge.signaling.auth import mint_token
from esl_bridge.signaling.server import SIGNALING_KEY, SignalingService, create_app
from esl_bridge.signaling.settings import SignalingSettings

CERT = "test-certificate-0123456789abcdef"  # 32+ bytes, as HS256 keys should be
WALL = 1_700_000_000.0
APPID = "app1"
T = TypeVar("T")


def token(uid: str, appid: str = APPID, ttl: float = 3600.0, cert: str = CERT) -> str:
    return mint_token(appid, uid, cert, ttl, WALL)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def run(coro: Awaitable[T], timeout: float = 60.0) -> T:
    """Run one test coroutine on a fresh loop, bounded in time."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


class Ws:
    """One protocol client over aiohttp's test client."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 1
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None

    async def send(self, kind: str, **fields: Any) -> int:
        msg_id = self.next_id
        self.next_id += 1
        await self.ws.send_str(
            json.dumps({"v": 1, "type": kind, "id": msg_id, **fields}, ensure_ascii=False)
        )
        return msg_id

    async def send_raw(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            await self.ws.send_bytes(raw)
        else:
            await self.ws.send_str(raw)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next frame, or None when the socket closed."""
        msg = await self.ws.receive(timeout=timeout)
        if msg.type == WSMsgType.TEXT:
            data: dict[str, Any] = json.loads(msg.data)
            return data
        # The code in the close frame itself: ws.close_code may already read 1006 when the
        # server dropped the transport right after the closing handshake.
        self.close_code = msg.data if msg.type == WSMsgType.CLOSE else self.ws.close_code
        return None

    async def reply(self, msg_id: int | None) -> dict[str, Any]:
        """Wait for the reply to ``msg_id``, keeping other frames as events."""
        while True:
            msg = await self.recv()
            assert msg is not None, "socket closed before the reply"
            if msg["type"] in ("ok", "error", "pong") and msg.get("re") == msg_id:
                return msg
            self.events.append(msg)

    async def request(self, kind: str, **fields: Any) -> dict[str, Any]:
        return await self.reply(await self.send(kind, **fields))

    async def event(self, kind: str, **match: Any) -> dict[str, Any]:
        """The first event of ``kind`` whose fields match, from the buffer or the socket."""
        while True:
            for i, msg in enumerate(self.events):
                if msg["type"] == kind and all(msg.get(k) == v for k, v in match.items()):
                    return self.events.pop(i)
            msg = await self.recv()
            assert msg is not None, f"socket closed while waiting for {kind} {match}"
            self.events.append(msg)

    async def closed(self) -> int | None:
        """Read until the socket closes; return its close code."""
        while True:
            msg = await self.recv()
            if msg is None:
                return self.close_code
            self.events.append(msg)

    async def quiet(self, timeout: float = 0.2) -> list[dict[str, Any]]:
        """Frames that arrive within ``timeout`` (used to show that nothing was sent)."""
        got: list[dict[str, Any]] = []
        while True:
            try:
                msg = await self.recv(timeout=timeout)
            except TimeoutError:
                return got
            if msg is None:
                return got
            got.append(msg)


class Env:
    def __init__(self, client: _Client[Any, Any], app: web.Application, clock: FakeClock):
        self.client = client
        self.app = app
        self.clock = clock
        self.service: SignalingService = app[SIGNALING_KEY]
        self.hub = self.service.hub
        self._sockets: list[Ws] = []

    async def ws(self) -> Ws:
        raw = await self.client.ws_connect("/ws")
        ws = Ws(raw)
        self._sockets.append(ws)
        return ws

    async def login(self, uid: str, appid: str = APPID, **extra: Any) -> Ws:
        ws = await self.ws()
        fields: dict[str, Any] = {"appid": appid, "uid": uid, "token": token(uid, appid)}
        fields.update(extra)
        reply = await ws.request("login", **fields)
        assert reply["type"] == "ok", reply
        ws.session = reply["session"]  # type: ignore[attr-defined]
        return ws

    async def until(self, condition: Callable[[], bool], limit: float = 5.0) -> None:
        """Wait (bounded) until the server side reached ``condition``."""
        for _ in range(int(limit / 0.01)):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("condition not reached")

    async def dropped(self, ws: Ws) -> None:
        """Close ``ws`` from the client side and wait until the hub saw it go."""
        before = self.hub.stats()["connections"]
        await ws.ws.close()
        await self.until(lambda: self.hub.stats()["connections"] < before)

    async def advance(self, seconds: float) -> None:
        """Move the fake clock and let the timer task fire what is due."""
        self.clock.t += seconds
        self.service.hub.poll(self.clock())
        self.service.kick()
        await asyncio.sleep(0.01)


@asynccontextmanager
async def env(
    settings: SignalingSettings | None = None,
    setup: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[Env]:
    settings = settings or SignalingSettings(appid="", app_certificate=CERT)
    clock = FakeClock()
    app = create_app(settings, clock=clock, wall_clock=lambda: WALL)
    if setup is not None:
        setup(app)
    client: _Client[Any, Any] = _Client(_Server(app))
    await client.start_server()
    try:
        yield Env(client, app, clock)
    finally:
        await client.close()
