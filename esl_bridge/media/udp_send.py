"""One datagram sent straight on an asyncio datagram transport's socket.

A call sends 100 datagrams a second (50 to FreeSWITCH, 50 to the browser). asyncio's
``DatagramTransport.sendto`` checks the type, the address and the connection state and
then calls ``socket.sendto`` in Python: on the G.711 fast path those checks cost more than
any other single step of a frame (profiled on the reference machine). ``DirectDatagrams``
does the socket call itself and leaves every other case to the transport:

* when the socket is full (``BlockingIOError``), ``transport.sendto`` queues the datagram
  and waits for the socket to drain, as it would have done; until its queue is empty
  (``get_write_buffer_size()``) every datagram goes the same way, so the order is kept;
* another ``OSError`` (an ICMP port unreachable from a peer not up yet, a socket closed
  under a call that is ending) goes to the protocol's ``error_received``, as asyncio
  does;
* a transport without a socket we can use gets ``transport.sendto`` for everything.

The socket is asyncio's own (``_sock`` of the selector event loop's datagram transport,
checked to be a ``socket.socket``). asyncio closes it with the transport; a closed Python
socket has no descriptor any more (``sendto`` raises ``OSError``), so a late datagram can
never reach another socket that reused the number.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

__all__ = ["DirectDatagrams", "raw_socket"]


def raw_socket(transport: asyncio.BaseTransport) -> socket.socket | None:
    """The socket under an asyncio datagram transport, when it is a plain one."""
    sock = getattr(transport, "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


class DirectDatagrams:
    """``send(data, addr)``: ``socket.sendto`` when the transport would do just that."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: Any = None) -> None:
        self._transport = transport
        self._protocol = protocol if protocol is not None else transport.get_protocol()
        sock = raw_socket(transport)
        self._sendto = None if sock is None else sock.sendto
        self._behind = False  # datagrams wait in the transport's queue
        self.queued = 0  # datagrams handed to the transport's queue
        if sock is None:
            self.send = transport.sendto  # type: ignore[method-assign]

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._behind:
            if self._transport.get_write_buffer_size():
                self.queued += 1
                self._transport.sendto(data, addr)
                return
            self._behind = False
        try:
            self._sendto(data, addr)  # type: ignore[misc]
        except (BlockingIOError, InterruptedError):
            self._behind = True
            self.queued += 1
            self._transport.sendto(data, addr)  # queued, sent when the socket drains
        except OSError as exc:
            self._protocol.error_received(exc)
