"""Small helpers shared by the tests: free loopback ports (the demo's ``free_port``) and
cooperative waits."""

from __future__ import annotations

import random
import socket
from collections.abc import Callable

import gevent

from esl_bridge.gateway.demo import free_port


def free_udp_port() -> int:
    return free_port(kind=socket.SOCK_DGRAM)


def free_udp_range(size: int) -> tuple[int, int]:
    """An even-based block of ``size`` loopback UDP ports that are all free right now."""
    rng = random.Random()
    for _ in range(50):
        base = rng.randrange(20000, 60000, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base, base + size - 1
    raise RuntimeError("no free block of UDP ports")


def gevent_wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` while the gevent hub keeps running; False on timeout."""
    with gevent.Timeout(timeout, False):
        while not predicate():
            gevent.sleep(0.01)
        return True
    return False
