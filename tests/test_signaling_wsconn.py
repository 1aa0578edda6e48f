"""The WebSocket writer: a slow reader is closed instead of growing memory."""

from __future__ import annotations

import asyncio
from typing import Any

from signaling_support import run

from esl_bridge.signaling.server import _WsConn


class StuckWs:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, bytes] | None = None
        self.release = asyncio.Event()

    async def send_str(self, data: str) -> None:
        await self.release.wait()
        self.sent.append(data)

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed_with = (code, message)


def test_slow_consumer_is_closed() -> None:
    async def main() -> None:
        ws = StuckWs()
        conn = _WsConn(ws, max_queue=3)  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.run())
        msg: dict[str, Any] = {"v": 1, "type": "message", "text": "x"}
        for _ in range(10):
            conn.send(msg)
            await asyncio.sleep(0)
        assert conn.close_request == (4005, "SLOW_CONSUMER")
        ws.release.set()
        await asyncio.wait_for(writer, 5)
        assert ws.closed_with == (4005, b"SLOW_CONSUMER")
        assert len(ws.sent) <= 4  # the queue never grew past its bound

    run(main())


def test_peer_gone_ends_the_writer_quietly() -> None:
    class GoneWs(StuckWs):
        async def send_str(self, data: str) -> None:
            raise ConnectionResetError

    async def main() -> None:
        conn = _WsConn(GoneWs(), max_queue=3)  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.run())
        conn.send({"v": 1, "type": "pong"})
        await asyncio.wait_for(writer, 5)

    run(main())
