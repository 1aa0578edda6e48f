"""The WebSocket writer: a slow reader is closed instead of growing memory."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from support.signaling_support import run

from esl_bridge.signaling.server import _WsConn


class StuckWs:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: tuple[int, bytes] | None = None
        self.release = asyncio.Event()

    async def send_frame(self, data: bytes, opcode: Any) -> None:
        await self.release.wait()
        self.sent.append(data.decode("utf-8"))

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
        assert len(ws.sent) <= 5  # the queue never grew past its bound
        # The client is told why before the close.
        assert json.loads(ws.sent[-1])["type"] == "closing"
        assert json.loads(ws.sent[-1])["code"] == 4005

    run(main())


def test_the_byte_bound_holds_whatever_the_frame_count() -> None:
    async def main() -> None:
        ws = StuckWs()
        conn = _WsConn(ws, max_queue=1024, max_queue_bytes=10_000)  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.run())
        big: dict[str, Any] = {"v": 1, "type": "message", "text": "x" * 3000}
        for _ in range(4):
            conn.send(big)
            assert conn.queued_bytes <= 10_000
        assert conn.close_request == (4005, "SLOW_CONSUMER")
        ws.release.set()
        await asyncio.wait_for(writer, 5)
        assert ws.closed_with == (4005, b"SLOW_CONSUMER")

    run(main())


def test_a_reader_that_never_reads_is_cut_off_after_the_close_timeout() -> None:
    async def main() -> None:
        ws = StuckWs()  # never released: every write blocks, like a full TCP window
        aborted = asyncio.Event()
        conn = _WsConn(ws, max_queue=2, close_timeout=0.01, abort=aborted.set)  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.run())
        for _ in range(5):
            conn.send({"v": 1, "type": "pong"})
        await asyncio.wait_for(aborted.wait(), 30)
        writer.cancel()

    run(main())


def test_peer_gone_ends_the_writer_quietly() -> None:
    class GoneWs(StuckWs):
        async def send_frame(self, data: bytes, opcode: Any) -> None:
            raise ConnectionResetError

    async def main() -> None:
        conn = _WsConn(GoneWs(), max_queue=3)  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.run())
        conn.send({"v": 1, "type": "pong"})
        await asyncio.wait_for(writer, 5)
        assert not conn.failed

    run(main())


def test_any_other_send_failure_is_logged_and_drops_the_socket() -> None:
    from structlog.testing import capture_logs

    class BrokenWs(StuckWs):
        async def send_frame(self, data: bytes, opcode: Any) -> None:
            raise ValueError("broken")

    async def main() -> None:
        aborted: list[bool] = []
        conn = _WsConn(BrokenWs(), max_queue=3, abort=lambda: aborted.append(True))  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.run())
        with capture_logs() as logs:
            conn.send({"v": 1, "type": "pong"})
            await asyncio.wait_for(writer, 5)
        assert conn.failed and aborted == [True]
        assert [e["event"] for e in logs] == ["signaling.send_failed"]
        assert logs[0]["error"] == "ValueError"

    run(main())


def test_one_frame_larger_than_the_byte_bound_still_goes_out() -> None:
    async def main() -> None:
        ws = StuckWs()
        ws.release.set()
        conn = _WsConn(ws, max_queue=8, max_queue_bytes=1000)  # type: ignore[arg-type]
        writer = asyncio.create_task(conn.run())
        conn.send({"v": 1, "type": "message", "text": "z" * 5000})
        assert conn.close_request is None
        conn.close(1000, "done")
        await asyncio.wait_for(writer, 5)
        assert json.loads(ws.sent[0])["text"] == "z" * 5000

    run(main())
