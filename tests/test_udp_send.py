"""DirectDatagrams (esl_bridge/media/udp_send.py): a datagram goes straight to the socket
only when asyncio's transport would have sent it at once; a full socket, a queue behind
it and socket errors are the transport's and the protocol's, as before."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from support.netns import loopback_only

from esl_bridge.media.udp_send import DirectDatagrams, raw_socket


class Collect(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.errors: list[Exception] = []
        self.arrived = asyncio.Event()
        self.expect = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.got.append(data)
        if len(self.got) >= self.expect:
            self.arrived.set()

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)


@loopback_only
def test_datagrams_reach_the_peer_in_order_through_the_socket_itself() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        peer_transport, peer = await loop.create_datagram_endpoint(
            Collect, local_addr=("127.0.0.1", 0)
        )
        transport, protocol = await loop.create_datagram_endpoint(
            Collect, local_addr=("127.0.0.1", 0)
        )
        try:
            assert raw_socket(transport) is not None
            handed: list[bytes] = []
            original = transport.sendto

            def counting(data: bytes, addr: Any = None) -> None:
                handed.append(data)
                original(data, addr)

            transport.sendto = counting  # type: ignore[method-assign]
            direct = DirectDatagrams(transport, protocol)
            addr = peer_transport.get_extra_info("sockname")
            peer.expect = 50
            for i in range(50):
                direct.send(b"%03d" % i, addr)
            await asyncio.wait_for(peer.arrived.wait(), 30)
            assert peer.got == [b"%03d" % i for i in range(50)]
            assert handed == [] and direct.queued == 0  # never through asyncio's sendto
        finally:
            transport.close()
            peer_transport.close()

    asyncio.run(scenario())


class FullSocket(socket.socket):
    """A real socket whose sendto says "would block" while ``full`` is set."""

    full = False
    sent: list[bytes]

    def sendto(self, data: Any, *args: Any) -> int:  # type: ignore[override]
        if self.full:
            raise BlockingIOError
        self.sent.append(bytes(data))
        return len(data)


class FakeTransport:
    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self.queue: list[bytes] = []
        self.protocol = Collect.__new__(Collect)
        self.protocol.errors = []

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.queue.append(data)

    def get_write_buffer_size(self) -> int:
        return len(self.queue)

    def get_protocol(self) -> Any:
        return self.protocol


def test_a_full_socket_queues_in_the_transport_and_keeps_the_order() -> None:
    sock = FullSocket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.sent = []
    try:
        transport = FakeTransport(sock)
        direct = DirectDatagrams(transport)  # type: ignore[arg-type]
        addr = ("127.0.0.1", 9)
        direct.send(b"1", addr)
        sock.full = True
        direct.send(b"2", addr)  # would block: the transport queues it
        sock.full = False
        direct.send(b"3", addr)  # behind the queue, not past it
        assert sock.sent == [b"1"] and transport.queue == [b"2", b"3"]
        transport.queue.clear()  # the transport drained its queue
        direct.send(b"4", addr)
        assert sock.sent == [b"1", b"4"] and direct.queued == 2
    finally:
        sock.close()


def test_a_socket_error_goes_to_the_protocol_and_sending_goes_on() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    transport = FakeTransport(sock)
    direct = DirectDatagrams(transport)  # type: ignore[arg-type]
    sock.close()  # what a late datagram meets once asyncio closed the socket
    direct.send(b"late", ("127.0.0.1", 9))
    assert [type(e) for e in transport.protocol.errors] == [OSError]
    assert transport.queue == []


def test_a_transport_without_a_plain_socket_sends_everything_itself() -> None:
    transport = FakeTransport(None)
    direct = DirectDatagrams(transport)  # type: ignore[arg-type]
    direct.send(b"a", ("127.0.0.1", 9))
    direct.send(b"b", ("127.0.0.1", 9))
    assert transport.queue == [b"a", b"b"]
