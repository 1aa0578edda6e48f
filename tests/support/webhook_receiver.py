"""A webhook receiver for tests: the app's backend, recording every POST it gets
(tests/test_webhooks.py, the cluster tests)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from support.gateway_support import wait_until
from support.ports_and_waits import free_port


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


@dataclass
class Receiver:
    """The backend: records every request; ``answer`` picks the status of each."""

    got: list[Received] = field(default_factory=list)
    answer: Callable[[Received], int] = lambda r: 200
    arrived: asyncio.Event | None = None

    def app(self) -> web.Application:
        async def hook(request: web.Request) -> web.Response:
            got = Received(await request.read(), dict(request.headers))
            self.got.append(got)
            if self.arrived is not None:
                self.arrived.set()
            return web.Response(status=self.answer(got))

        app = web.Application()
        app.router.add_post("/hook", hook)
        return app


class ThreadReceiver:
    """The backend in a thread of its own (its own loop), on a loopback port."""

    def __init__(self, answer: Callable[[Received], int] = lambda r: 200) -> None:
        self.receiver = Receiver(answer=answer)
        self.port = free_port()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        runner = web.AppRunner(self.receiver.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> ThreadReceiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def events(self) -> list[dict[str, Any]]:
        return [r.event for r in list(self.receiver.got)]

    def wait_event(self, kind: str, **match: Any) -> dict[str, Any]:
        def found() -> list[dict[str, Any]]:
            return [
                e
                for e in self.events()
                if e["type"] == kind and all(e["data"].get(k) == v for k, v in match.items())
            ]

        wait_until(lambda: bool(found()), 10, f"webhook {kind} {match}")
        return found()[0]
