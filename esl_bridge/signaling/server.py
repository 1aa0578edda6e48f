"""aiohttp adapter of the hub: the ``/ws`` WebSocket endpoint and ``/sdk.js``.

The hub is synchronous; this module turns WebSocket frames into ``Hub.receive`` calls,
hub output into frames (one writer task per socket, so the hub never waits on a slow
reader), and runs the single timer task that sleeps until ``Hub.next_deadline()``.

Mounting into the gateway's web application::

    service = setup_signaling(app, settings)        # adds /ws and /sdk.js
    handle = service.hub.register_participant(appid, my_participant)

or ``create_app(settings)`` for a standalone application.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from esl_bridge.signaling import protocol as p
from esl_bridge.signaling.hub import Hub
from esl_bridge.signaling.settings import SignalingSettings

log = structlog.get_logger("esl_bridge.signaling")


class _WsConn:
    """The hub's ``Conn`` for one WebSocket: a bounded queue drained by a writer task."""

    def __init__(self, ws: web.WebSocketResponse, max_queue: int) -> None:
        self._ws = ws
        self._queue: deque[str] = deque()
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self.close_request: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        if self.close_request is not None:
            return
        if len(self._queue) >= self._max_queue:
            self.close(*p.Close.SLOW_CONSUMER)
            return
        self._queue.append(p.encode(message))
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
            self._wake.set()

    async def run(self) -> None:
        """Write queued frames; close the socket once the hub asked for it."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    await self._ws.send_str(self._queue.popleft())
                if self.close_request is not None:
                    code, reason = self.close_request
                    await self._ws.close(code=code, message=reason.encode())
                    return
        except (ConnectionError, RuntimeError):
            return  # the peer is gone; the reader side reports the disconnect


class SignalingService:
    """The hub plus its asyncio plumbing; one per process."""

    def __init__(
        self,
        settings: SignalingSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        hub: Hub | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.hub = hub or Hub(settings, wall_clock=wall_clock)
        self._wake = asyncio.Event()
        self._timer_task: asyncio.Task[None] | None = None
        self._sockets: set[web.WebSocketResponse] = set()

    def now(self) -> float:
        return self.clock()

    def kick(self) -> None:
        """Re-read the next deadline (after any hub call, or after a test moved the clock)."""
        self._wake.set()

    async def start(self) -> None:
        if self.settings.open_mode:
            log.warning("signaling.open_mode", detail="logins need no token: demo use only")
        elif not self.settings.app_certificate:
            log.warning("signaling.no_certificate", detail="no app certificate: logins fail")
        log.info(
            "signaling.started",
            appid=self.settings.appid or "<any>",
            open_mode=self.settings.open_mode,
        )
        self._timer_task = asyncio.create_task(self._timers())

    async def stop(self) -> None:
        self.hub.shutdown(self.now())
        if self._timer_task is not None:
            self._timer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer_task
            self._timer_task = None

    async def _timers(self) -> None:
        while True:
            deadline = self.hub.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - self.now())
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel
            # that lands as the event is set, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self.hub.poll(self.now())
            except Exception:  # keep the timers alive whatever a bug does
                log.exception("signaling.poll_failed")

    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        # aiohttp's own limit sits above ours, so an oversize frame normally gets the
        # protocol's error reply and close reason instead of a bare 1009.
        ws = web.WebSocketResponse(
            heartbeat=self.settings.heartbeat,
            max_msg_size=self.settings.max_message_bytes * 4 + 1024,
        )
        await ws.prepare(request)
        conn = _WsConn(ws, self.settings.max_send_queue)
        writer = asyncio.create_task(conn.run())
        cid = self.hub.connect(conn, self.now())
        self._sockets.add(ws)
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    try:
                        self.hub.receive(cid, msg.data, self.now())
                    except Exception:  # the hub is built never to raise; belt and braces
                        log.exception("signaling.receive_failed")
                    self.kick()
                if conn.close_request is not None:
                    break
        finally:
            self._sockets.discard(ws)
            self.hub.disconnect(cid, self.now())
            self.kick()
            if conn.close_request is None:
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if not ws.closed:
                await ws.close()
        return ws

    async def handle_sdk(self, request: web.Request) -> web.Response:
        return web.Response(
            body=sdk_source(),
            content_type="text/javascript",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )


def sdk_source() -> bytes:
    """The browser SDK (esl_bridge/web/sdk.js), an ES module with no build step."""
    return resources.files("esl_bridge").joinpath("web/sdk.js").read_bytes()


SIGNALING_KEY = web.AppKey("esl_bridge.signaling", SignalingService)


def setup_signaling(
    app: web.Application,
    settings: SignalingSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    ws_path: str = "/ws",
    sdk_path: str = "/sdk.js",
) -> SignalingService:
    """Add the endpoint and the SDK to ``app``; start/stop ride on its signals."""
    service = SignalingService(settings, clock=clock, wall_clock=wall_clock)
    app[SIGNALING_KEY] = service
    app.router.add_get(ws_path, service.handle_ws)
    app.router.add_get(sdk_path, service.handle_sdk)

    async def on_startup(_: web.Application) -> None:
        await service.start()

    async def on_shutdown(_: web.Application) -> None:
        await service.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return service


def create_app(
    settings: SignalingSettings,
    *,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> web.Application:
    """A standalone application serving ``/ws`` and ``/sdk.js``."""
    app = web.Application()
    setup_signaling(app, settings, clock=clock, wall_clock=wall_clock)
    return app
