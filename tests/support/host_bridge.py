"""Reach a real FreeSWITCH on the host's loopback from a loopback-only namespace.

A test that opens a peer connection runs in a namespace with only ``lo``
(tests/support/netns.py), whose ``127.0.0.1`` is not the host's, where the real switch
listens. Both namespaces share the filesystem, so this bridge carries, over UNIX sockets in
a temporary directory:

* the inbound ESL connection: the gateway connects to ``127.0.0.1:<esl>`` in the namespace,
  the host side connects to the switch's ``127.0.0.1:<esl>``;
* the unicast datagrams of a port range: FreeSWITCH (host) sends from its ``local-port`` to
  the gateway's ``remote-port``; the host side holds every gateway port of the range and
  hands each datagram over; the namespace side sends it on from the same ``local-port``
  (bound when the first datagram of that pair arrives, so the gateway's allocator still
  finds the port free when it probes), and carries the gateway's datagrams back the same
  way. Both sides count the datagrams by direction and keep their payloads for the test.

Nothing here leaves loopback: every socket is bound to 127.0.0.1 or is a UNIX socket.
Use ``@bridged_to_host(esl_port, port_min, port_max)`` instead of ``@loopback_only``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import struct
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.netns import in_netns, loopback_only

ENV_DIR = "ESL_BRIDGE_HOST_BRIDGE_DIR"
HOST = "127.0.0.1"
_HEADER = struct.Struct("!HH")  # fs_port, gateway port


@dataclass
class UnicastLog:
    """Datagrams seen by one side of the bridge: (fs_port, gateway port, payload)."""

    from_switch: list[tuple[int, int, bytes]] = field(default_factory=list)
    to_switch: list[tuple[int, int, bytes]] = field(default_factory=list)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for sock in (src, dst):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _splice(a: socket.socket, b: socket.socket) -> None:
    for src, dst in ((a, b), (b, a)):
        threading.Thread(target=_pump, args=(src, dst), daemon=True).start()


class _Side:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.log = UnicastLog()
        self.running = True
        self.sockets: list[socket.socket] = []

    def thread(self, target: Callable[..., None], *args: Any) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    def close(self) -> None:
        self.running = False
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


class HostSide(_Side):
    """In the host's namespace: ESL toward the switch, the gateway ports of the range."""

    def __init__(self, directory: Path, esl_port: int, port_min: int, port_max: int) -> None:
        super().__init__(directory)
        self.esl_port = esl_port
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(directory / "esl.sock"))
        listener.listen(8)
        self.sockets.append(listener)
        self.thread(self._accept, listener)
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dgram.bind(str(directory / "host.dgram"))
        self.sockets.append(self.dgram)
        self.udp: dict[int, socket.socket] = {}
        first = port_min + (port_min % 2)
        for fs_port in range(first, port_max, 2):  # the allocator's (even, odd) pairs
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((HOST, fs_port + 1))
            self.udp[fs_port + 1] = sock
            self.sockets.append(sock)
            self.thread(self._from_switch, sock, fs_port + 1)
        self.thread(self._to_switch)

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while self.running:
                conn, _ = listener.accept()
                upstream = socket.create_connection((HOST, self.esl_port), timeout=5)
                upstream.settimeout(None)
                _splice(conn, upstream)

    def _from_switch(self, sock: socket.socket, gw_port: int) -> None:
        with contextlib.suppress(OSError):
            while self.running:
                data, (host, fs_port) = sock.recvfrom(65536)
                if host != HOST:
                    continue
                self.log.from_switch.append((fs_port, gw_port, data))
                with contextlib.suppress(OSError):
                    self.dgram.sendto(
                        _HEADER.pack(fs_port, gw_port) + data, str(self.dir / "netns.dgram")
                    )

    def _to_switch(self) -> None:
        with contextlib.suppress(OSError):
            while self.running:
                packet = self.dgram.recv(65536)
                fs_port, gw_port = _HEADER.unpack_from(packet)
                data = packet[_HEADER.size :]
                self.log.to_switch.append((fs_port, gw_port, data))
                sock = self.udp.get(gw_port)
                if sock is not None:
                    sock.sendto(data, (HOST, fs_port))


class NetnsSide(_Side):
    """In the loopback-only namespace: the switch's ESL port and its unicast ports."""

    def __init__(self, directory: Path, esl_port: int) -> None:
        super().__init__(directory)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, esl_port))
        listener.listen(8)
        self.sockets.append(listener)
        self.thread(self._accept, listener)
        self.dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.dgram.bind(str(directory / "netns.dgram"))
        self.sockets.append(self.dgram)
        self.fs_sockets: dict[int, socket.socket] = {}
        self.thread(self._from_switch)

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while self.running:
                conn, _ = listener.accept()
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                upstream.connect(str(self.dir / "esl.sock"))
                _splice(conn, upstream)

    def _from_switch(self) -> None:
        with contextlib.suppress(OSError):
            while self.running:
                packet = self.dgram.recv(65536)
                fs_port, gw_port = _HEADER.unpack_from(packet)
                data = packet[_HEADER.size :]
                self.log.from_switch.append((fs_port, gw_port, data))
                sock = self.fs_sockets.get(fs_port)
                if sock is None:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sock.bind((HOST, fs_port))
                    self.fs_sockets[fs_port] = sock
                    self.sockets.append(sock)
                    self.thread(self._to_switch, sock, fs_port)
                sock.sendto(data, (HOST, gw_port))

    def _to_switch(self, sock: socket.socket, fs_port: int) -> None:
        with contextlib.suppress(OSError):
            while self.running:
                data, (host, gw_port) = sock.recvfrom(65536)
                if host != HOST:
                    continue
                self.log.to_switch.append((fs_port, gw_port, data))
                self.dgram.sendto(
                    _HEADER.pack(fs_port, gw_port) + data, str(self.dir / "host.dgram")
                )


_CURRENT: list[NetnsSide] = []


def netns_log() -> UnicastLog:
    """In the namespace: the datagrams the bridge carried so far (for the test's checks)."""
    assert _CURRENT, "not inside a @bridged_to_host test"
    return _CURRENT[-1].log


@contextlib.contextmanager
def _host_side(esl_port: int, port_min: int, port_max: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="esl-bridge-host-") as tmp:
        side = HostSide(Path(tmp), esl_port, port_min, port_max)
        old = os.environ.get(ENV_DIR)
        os.environ[ENV_DIR] = tmp  # the namespace's pytest inherits the environment
        try:
            yield
        finally:
            side.close()
            if old is None:
                os.environ.pop(ENV_DIR, None)
            else:
                os.environ[ENV_DIR] = old


def bridged_to_host(
    esl_port: int, port_min: int, port_max: int, *, timeout: float = 150.0
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Like ``@loopback_only``, with the switch's ESL port and the unicast port range of
    the host's loopback bridged into the namespace."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def in_namespace(*args: Any, **kwargs: Any) -> Any:
            side = NetnsSide(Path(os.environ[ENV_DIR]), esl_port)
            _CURRENT.append(side)
            try:
                return func(*args, **kwargs)
            finally:
                _CURRENT.remove(side)
                side.close()

        isolated = loopback_only(timeout=timeout)(in_namespace)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if in_netns():
                return isolated(*args, **kwargs)
            with _host_side(esl_port, port_min, port_max):
                return isolated(*args, **kwargs)

        return wrapper

    return decorate
