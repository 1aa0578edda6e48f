"""Benchmarks that open peer connections run where no packet can leave loopback.

``enter(name)`` re-executes the running script under ``unshare -n`` (after ``ip link set
lo up``) unless only ``lo`` is visible already; it needs root. The same rule as the tests'
``tests/support/netns.py``, for scripts that are run directly.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

_MARKER = "ESL_BRIDGE_BENCH_NETNS"


def enter(name: str) -> None:
    """Return inside a namespace that has only ``lo``; exit with a message if impossible."""
    names = [n for _, n in socket.if_nameindex()]
    if names == ["lo"]:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        return
    if os.environ.get(_MARKER):
        sys.exit(f"{name}: still see interfaces {names} inside the namespace")
    argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "netns"]
    argv += [sys.executable, *sys.argv]
    os.environ[_MARKER] = "1"
    try:
        os.execvp("unshare", argv)
    except OSError as exc:
        sys.exit(f"{name}: cannot enter a loopback-only namespace ({exc}); run as root")
