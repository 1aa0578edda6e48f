"""A throwaway Redis for the cluster tests: Debian's ``redis-server`` on a free loopback
port, no persistence (``--save '' --appendonly no``), in a temporary directory.

``RedisServer`` can be stopped and started again on the same port (the "Redis down"
tests). The ``redis_server`` fixture gives a running one and stops it afterwards. Tests
that run in a loopback-only namespace (``@loopback_only``) start theirs inside the test
body instead, since the namespace has its own loopback.

Without the binary the tests are skipped, except in CI (``CI=true``), where a missing
``redis-server`` is a failure: ``.ci/run`` installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.ports_and_waits import free_port

REDIS_SERVER = "/usr/bin/redis-server"


def redis_server_binary() -> str:
    """The redis-server to run; skips (or fails in CI) when there is none."""
    path = REDIS_SERVER if os.path.exists(REDIS_SERVER) else shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (Debian package redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI must install it (.ci/run)", pytrace=False)
        pytest.skip(message)
    return path


class RedisServer:
    """One redis-server process on 127.0.0.1:``port``."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = redis_server_binary()
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="esl-bridge-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> RedisServer:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                "--protected-mode",
                "no",
            ],
            cwd=self._dir.name,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None:
                error = self.proc.stderr.read() if self.proc.stderr else b""
                raise AssertionError(f"redis-server exited: {error!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL); its data is gone (no persistence)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    @property
    def directory(self) -> Path:
        return Path(self._dir.name)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()
