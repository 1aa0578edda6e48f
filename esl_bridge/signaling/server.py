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
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from esl_bridge.logs import get_logger
from esl_bridge.signaling import protocol as p
from esl_bridge.signaling.hub import Hub
from esl_bridge.signaling.origins import cors_headers, origin_allowed
from esl_bridge.signaling.settings import SignalingSettings

log = get_logger("signaling")


#: Seconds a connection the hub closed gets to take its last frames and the close
#: handshake; a peer that reads nothing is cut off (transport aborted) after it.
CLOSE_TIMEOUT = 5.0


class _WsConn:
    """The hub's ``Conn`` for one WebSocket: a queue drained by a writer task.

    The queue is bounded in frames and in bytes of UTF-8; past either bound the
    connection is closed as a slow consumer (4005): what is queued is dropped, the
    ``closing`` frame goes out, and a peer that does not read even that is cut off after
    ``close_timeout``. Frames are encoded when queued, so an encoding problem surfaces
    here, for one message, and never stops the writer.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        max_queue: int,
        max_queue_bytes: int = 1024 * 1024,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        abort: Callable[[], None] | None = None,
    ) -> None:
        self._ws = ws
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._max_queue = max_queue
        self._max_queue_bytes = max_queue_bytes
        self._close_timeout = close_timeout
        self._abort = abort
        self._abort_handle: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self.close_request: tuple[int, str] | None = None
        self.failed = False  # the writer stopped on an error (logged, socket aborted)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def send(self, message: dict[str, Any]) -> None:
        if self.close_request is not None:
            return
        data = _encode(message)
        # One frame is always taken into an empty queue, whatever its size.
        if self._queue and (
            len(self._queue) >= self._max_queue
            or self._queued_bytes + len(data) > self._max_queue_bytes
        ):
            log.info(
                "signaling.slow_consumer",
                queued_frames=len(self._queue),
                queued_bytes=self._queued_bytes,
            )
            self._queue.clear()
            self._queued_bytes = 0
            self._queue.append(_encode(p.closing(p.Close.SLOW_CONSUMER)))
            self.close(*p.Close.SLOW_CONSUMER)
            return
        self._queue.append(data)
        self._queued_bytes += len(data)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
            self._wake.set()
            if self._abort is not None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop: nothing can be written either
                    return
                self._abort_handle = loop.call_later(self._close_timeout, self._cut_off)

    def _cut_off(self) -> None:
        self._abort_handle = None
        if self._abort is not None:
            log.info("signaling.close_timeout", reason=(self.close_request or (0, ""))[1])
            self._abort()

    def stopped(self) -> None:
        """The socket is gone: no cut-off is needed any more."""
        if self._abort_handle is not None:
            self._abort_handle.cancel()
            self._abort_handle = None

    async def run(self) -> None:
        """Write queued frames; close the socket once the hub asked for it."""
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    data = self._queue.popleft()
                    self._queued_bytes -= len(data)
                    await self._ws.send_frame(data, WSMsgType.TEXT)
                if self.close_request is not None:
                    code, reason = self.close_request
                    await self._ws.close(code=code, message=reason.encode())
                    self.stopped()
                    return
        except (ConnectionError, RuntimeError):
            return  # the peer is gone; the reader side reports the disconnect
        except Exception as exc:
            # Never a silent stall: say so (no frame content) and drop the socket, so
            # the reader side sees the disconnect and the session takes its course.
            self.failed = True
            log.error("signaling.send_failed", error=type(exc).__name__)
            if self._abort is not None:
                self._abort()


def _encode(message: dict[str, Any]) -> bytes:
    """A server frame as UTF-8. Text the door let through cannot fail; should a string
    ever hold a lone surrogate, it goes out escaped rather than breaking the socket."""
    try:
        return p.encode(message).encode("utf-8")
    except UnicodeEncodeError:
        log.warning("signaling.unencodable_frame", type=str(message.get("type"))[:32])
        return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")


class _SignalingWebSocket(web.WebSocketResponse):
    """aiohttp answers a frame over its size limit with a bare 1009 close. This socket
    first lets the hub send its ``MESSAGE_TOO_LARGE`` error and ``closing`` frame and
    close with 4003, as for any frame over the limit."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_too_big: Callable[[], Awaitable[None]] | None = None

    async def close(
        self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True
    ) -> bool:
        hook = self.on_too_big
        if code == WSCloseCode.MESSAGE_TOO_BIG and hook is not None and not self.closed:
            self.on_too_big = None
            await hook()
            if self.closed:
                return True
        return await super().close(code=code, message=message, drain=drain)


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
        self.close_timeout = CLOSE_TIMEOUT

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
        # aiohttp checks a frame's length from its header, before reading the payload;
        # its limit is ours, and _SignalingWebSocket turns its 1009 into our 4003.
        ws = _SignalingWebSocket(
            heartbeat=self.settings.heartbeat,
            max_msg_size=self.settings.max_message_bytes + 1,
        )
        await ws.prepare(request)
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.host, self.settings.allowed_origins):
            return await self._refuse_origin(ws, origin)
        transport = request.transport

        def abort() -> None:
            if transport is not None and not transport.is_closing():
                transport.abort()

        conn = _WsConn(
            ws,
            self.settings.max_send_queue,
            self.settings.max_send_queue_bytes,
            close_timeout=self.close_timeout,
            abort=abort,
        )
        writer = asyncio.create_task(conn.run())
        cid = self.hub.connect(conn, self.now())
        self._sockets.add(ws)

        async def too_big() -> None:
            self.hub.oversized(cid, self.now())
            self.kick()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.close_timeout):
                    await asyncio.shield(writer)

        ws.on_too_big = too_big
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    try:
                        self.hub.receive(cid, msg.data, self.now())
                    except Exception as exc:  # the hub is built never to raise
                        # No traceback: its frames would hold what the peer sent.
                        log.error("signaling.receive_failed", error=type(exc).__name__)
                    self.kick()
                if conn.close_request is not None or conn.failed:
                    break
        finally:
            ws.on_too_big = None
            self._sockets.discard(ws)
            self.hub.disconnect(cid, self.now())
            self.kick()
            if conn.close_request is None:
                writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            conn.stopped()
            if not ws.closed:
                await ws.close()
        return ws

    async def _refuse_origin(
        self, ws: web.WebSocketResponse, origin: str | None
    ) -> web.WebSocketResponse:
        """A page of an origin not in ``allowed_origins``: the ``closing`` frame, then close
        4008, before any frame of the page is read (a browser shows the page the close
        code; it hides an HTTP status of a refused handshake)."""
        log.info("signaling.origin_refused", origin=str(origin)[:200])
        code, reason = p.Close.ORIGIN_NOT_ALLOWED
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_frame(
                _encode(p.closing(p.Close.ORIGIN_NOT_ALLOWED, "add it to [web] allowed_origins")),
                WSMsgType.TEXT,
            )
        # aiohttp's close waits for the peer's close frame at most its own timeout (10 s).
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.close(code=code, message=reason.encode())
        return ws

    async def handle_sdk(self, request: web.Request) -> web.Response:
        return web.Response(
            body=sdk_source(),
            content_type="text/javascript",
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                **cors_headers(request.headers, self.settings.allowed_origins),
            },
        )

    async def handle_sdk_types(self, request: web.Request) -> web.Response:
        return web.Response(
            body=sdk_types(),
            content_type="application/typescript",
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                **cors_headers(request.headers, self.settings.allowed_origins),
            },
        )


def sdk_source() -> bytes:
    """The browser SDK (esl_bridge/web/sdk.js), an ES module with no build step."""
    return resources.files("esl_bridge").joinpath("web/sdk.js").read_bytes()


def sdk_types() -> bytes:
    """The SDK's TypeScript declarations (esl_bridge/web/sdk.d.ts)."""
    return resources.files("esl_bridge").joinpath("web/sdk.d.ts").read_bytes()


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
    """Add the endpoint and the SDK (and its types, ``/sdk.d.ts``) to ``app``; start/stop
    ride on its signals."""
    service = SignalingService(settings, clock=clock, wall_clock=wall_clock)
    app[SIGNALING_KEY] = service
    app.router.add_get(ws_path, service.handle_ws)
    app.router.add_get(sdk_path, service.handle_sdk)
    if sdk_path.endswith(".js"):
        app.router.add_get(sdk_path[: -len(".js")] + ".d.ts", service.handle_sdk_types)

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
