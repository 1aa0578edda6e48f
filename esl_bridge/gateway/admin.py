"""The local admin endpoint: ``GET /status`` over a unix socket (``[web] admin_socket``).

Only processes that may open the socket file reach it (mode 0660: the gateway's user and
group), nothing on the network does, so it needs no token. ``esl-bridge status`` asks it
(``fetch_status``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from esl_bridge.logs import get_logger

log = get_logger("admin")

StatusReader = Callable[[], Awaitable[dict[str, Any]]]
_MAX_REPLY = 16 * 1024 * 1024


class AdminServer:
    def __init__(self, runner: web.AppRunner, server: asyncio.AbstractServer, path: str):
        self._runner = runner
        self._server = server
        self.path = path

    async def stop(self) -> None:
        self._server.close()
        await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def _clear_stale(path: str) -> None:
    """Remove a socket file left by a process that is gone; refuse one still served or a
    file that is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"admin_socket {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left over
        return
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"admin_socket {path} is served by another process")


async def start_admin_server(path: str, read_status: StatusReader) -> AdminServer:
    async def status(request: web.Request) -> web.Response:
        return web.json_response(await read_status())

    app = web.Application()
    app.router.add_get("/status", status)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    assert runner.server is not None
    try:
        _clear_stale(path)
        old_umask = os.umask(0o117)  # the socket file is born 0660
        try:
            server = await asyncio.get_running_loop().create_unix_server(runner.server, path)
        finally:
            os.umask(old_umask)
    except BaseException:
        await runner.cleanup()
        raise
    log.info("admin.listening", socket=path)
    return AdminServer(runner, server, path)


class AdminUnreachable(Exception):
    """No gateway answers on the socket (with the reason)."""


def fetch_status(path: str, timeout: float = 5.0) -> dict[str, Any]:
    """``GET /status`` from the gateway's admin socket (blocking; for the CLI)."""
    if not Path(path).exists():
        raise AdminUnreachable(f"{path} does not exist (is the gateway running?)")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(b"GET /status HTTP/1.0\r\nHost: esl-bridge\r\n\r\n")
            chunks: list[bytes] = []
            size = 0
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                size += len(chunk)
                if size > _MAX_REPLY:
                    raise AdminUnreachable(f"{path}: reply larger than {_MAX_REPLY} bytes")
    except OSError as exc:
        raise AdminUnreachable(f"{path}: {exc.strerror or exc}") from exc
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    if " 200 " not in f"{status_line} ":
        raise AdminUnreachable(f"{path}: the gateway answered {status_line!r}")
    try:
        reply = json.loads(body)
    except ValueError as exc:
        raise AdminUnreachable(f"{path}: not JSON: {exc}") from exc
    if not isinstance(reply, dict):
        raise AdminUnreachable(f"{path}: not a JSON object")
    return reply
