"""Socket-connect-to-application latency of the outbound ESL server.

A client that acts like FreeSWITCH's ``socket`` application connects, answers
``connect`` with the connect reply recorded from FreeSWITCH 1.10.12
(tests/fixtures/freeswitch/esl_outbound_main_call.txt), ``myevents`` and ``linger``
with the recorded replies, and ``exit`` with ``+OK bye``. The time measured runs from
just before the TCP connect to the moment the application callback holds a session
that has done connect + myevents + linger, for:

* ``esl_bridge.esl.control.OutboundServer`` (gevent StreamServer, hands the session
  over after the handshake), and
* greenswitch's stock ``OutboundESLServer`` (accept polled every 100 ms), whose
  application does myevents + linger itself, in the same run.

Run: ``python benchmarks/esl_connect.py [--calls N]``. The last line is
``esl_connect: p50_ms=.. p99_ms=.. stock_p99_ms=..``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gevent
import gevent.event
import gevent.socket
import greenswitch
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from esl_bridge.esl.control import OutboundServer, OutboundSession  # noqa: E402
from esl_bridge.gateway.demo import free_port  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "freeswitch" / "esl_outbound_main_call.txt"


def _recorded_connect_reply() -> bytes:
    """Record 2 of the main call: FreeSWITCH's connect reply, verbatim."""
    raw = FIXTURE.read_bytes()
    marker = b"### 2 "
    start = raw.index(marker)
    header_end = raw.index(b"\n", start)
    length = int(raw[start:header_end].rsplit(b"len=", 1)[1])
    return raw[header_end + 1 : header_end + 1 + length]


CONNECT_REPLY = _recorded_connect_reply()
REPLIES = {
    b"connect": CONNECT_REPLY,
    b"myevents": b"Content-Type: command/reply\nReply-Text: +OK Events Enabled\n\n",
    b"linger": b"Content-Type: command/reply\nReply-Text: +OK will linger\n\n",
    b"exit": b"Content-Type: command/reply\nReply-Text: +OK bye\n\n",
}


def fake_freeswitch(address: tuple[str, int], started: list[float]) -> None:
    """Connect like the dialplan socket app and answer until ``exit`` (bounded)."""
    started.append(time.perf_counter())
    sock = gevent.socket.create_connection(address, timeout=5)
    sock.settimeout(None)
    buf = b""
    try:
        with gevent.Timeout(10, False):
            while True:
                while b"\n\n" not in buf:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                command, buf = buf.split(b"\n\n", 1)
                word = command.split(b"\n", 1)[0].split(b" ", 1)[0]
                sock.sendall(REPLIES.get(word, b"Content-Type: command/reply\nReply-Text: +OK\n\n"))
                if word == b"exit":
                    return
    finally:
        sock.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def measure(
    address: tuple[str, int], arrived: Callable[[], gevent.event.AsyncResult], calls: int
) -> list[float]:
    latencies: list[float] = []
    for _ in range(calls):
        waiter = arrived()
        started: list[float] = []
        client = gevent.spawn(fake_freeswitch, address, started)
        at = waiter.get(timeout=5)
        latencies.append((at - started[0]) * 1000.0)
        client.join(timeout=5)
    return latencies


def run_ours(calls: int) -> list[float]:
    slot: dict[str, gevent.event.AsyncResult] = {}

    def handler(session: OutboundSession) -> None:
        slot["result"].set(time.perf_counter())

    server = OutboundServer(handler, "127.0.0.1", 0, command_timeout=5)
    address = server.start()

    def arrived() -> gevent.event.AsyncResult:
        slot["result"] = gevent.event.AsyncResult()
        return slot["result"]

    try:
        measure(address, arrived, 5)  # warm-up
        return measure(address, arrived, calls)
    finally:
        server.stop(timeout=2)


def run_stock(calls: int) -> list[float]:
    slot: dict[str, gevent.event.AsyncResult] = {}

    class Application:
        def __init__(self, session: greenswitch.esl.OutboundSession) -> None:
            self.session = session

        def run(self) -> None:
            # Same handshake as ours before the application proper.
            self.session.myevents()
            self.session.linger()
            slot["result"].set(time.perf_counter())

    port = free_port()
    server = greenswitch.OutboundESLServer(
        bind_address="127.0.0.1", bind_port=port, application=Application, max_connections=1000
    )
    listener = gevent.spawn(server.listen)
    gevent.sleep(0.2)  # let listen() bind

    def arrived() -> gevent.event.AsyncResult:
        slot["result"] = gevent.event.AsyncResult()
        return slot["result"]

    try:
        measure(("127.0.0.1", port), arrived, 5)
        return measure(("127.0.0.1", port), arrived, calls)
    finally:
        server.stop()
        listener.join(timeout=5)
        listener.kill(block=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="calls per server (default 200)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    ours = run_ours(args.calls)
    stock = run_stock(args.calls)
    for name, values in (("esl_bridge OutboundServer", ours), ("greenswitch stock", stock)):
        print(
            f"{name:28s} n={len(values)} p50={_percentile(values, 0.5):.3f} ms "
            f"p99={_percentile(values, 0.99):.3f} ms mean={statistics.fmean(values):.3f} ms"
        )
    p50, p99 = _percentile(ours, 0.5), _percentile(ours, 0.99)
    stock_p50, stock_p99 = _percentile(stock, 0.5), _percentile(stock, 0.99)
    print(f"ratio stock/ours: p50 x{stock_p50 / p50:.0f}, p99 x{stock_p99 / p99:.0f}")
    print(f"esl_connect: p50_ms={p50:.3f} p99_ms={p99:.3f} stock_p99_ms={stock_p99:.3f}")


if __name__ == "__main__":
    main()
