"""The web server's own limits, with real sockets against the real aiohttp server
(issue 11, item 2): header timeout, connection caps, no log flood on EMFILE."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.ports_and_waits import free_port
from support.signaling_support import run

from esl_bridge import config
from esl_bridge.gateway.web import WebServer, start_web_server
from esl_bridge.signaling.server import setup_signaling
from esl_bridge.signaling.settings import SignalingSettings

BOUND = 60.0  # a failing test ends here instead of hanging; nothing waits for it


def web_settings(**web: Any) -> config.Settings:
    lines = "\n".join(f"{key} = {value}" for key, value in web.items())
    return config.from_text(f"[web]\nport = {free_port()}\n{lines}\n", "<web-limits>")


def app() -> Any:
    from aiohttp import web

    application = web.Application()

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    application.router.add_get("/healthz", healthz)
    setup_signaling(application, SignalingSettings(open_mode=True))
    return application


@asynccontextmanager
async def serving(
    settings: config.Settings, sock: socket.socket | None = None
) -> AsyncIterator[WebServer]:
    server = await start_web_server(app(), settings, shutdown_timeout=1.0, sock=sock)
    try:
        yield server
    finally:
        await server.stop()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND):
        while not condition():
            await asyncio.sleep(0.01)


async def connect(server: WebServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*server.address)


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    got = b""
    async with asyncio.timeout(BOUND):
        while True:
            try:
                chunk = await reader.read(4096)
            except (ConnectionResetError, ssl.SSLError):  # closed without ceremony
                return got
            if not chunk:
                return got
            got += chunk


async def healthz(server: WebServer) -> bytes:
    reader, writer = await connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    reply = await closed_by_server(reader)
    writer.close()
    return reply


def test_half_sent_and_silent_connections_are_closed_after_the_header_timeout() -> None:
    async def main() -> None:
        async with serving(web_settings(header_timeout=0.3)) as server:
            half_r, half_w = await connect(server)
            half_w.write(b"GET /heal")  # half a request line, then nothing
            silent_r, silent_w = await connect(server)
            assert await closed_by_server(half_r) == b""
            assert await closed_by_server(silent_r) == b""
            await until(lambda: server.guard.open == 0)
            assert (await healthz(server)).startswith(b"HTTP/1.1 200")
            for w in (half_w, silent_w):
                w.close()

    run(main(), timeout=2 * BOUND)


def test_the_header_timeout_spares_an_open_websocket() -> None:
    import aiohttp

    async def main() -> None:
        async with (
            serving(web_settings(header_timeout=0.3)) as server,
            aiohttp.ClientSession() as session,
        ):
            url = "http://{}:{}/ws".format(*server.address)
            ws = await session.ws_connect(url, autoping=True)
            # Opened later with the same timeout: once the server closed this one,
            # the websocket's own timer would have fired too.
            late_r, late_w = await connect(server)
            assert await closed_by_server(late_r) == b""
            await ws.send_str('{"v":1,"type":"ping","id":1}')
            reply = await ws.receive(timeout=BOUND)
            assert reply.type == aiohttp.WSMsgType.TEXT and '"pong"' in reply.data
            await ws.close()
            late_w.close()

    run(main(), timeout=2 * BOUND)


@pytest.mark.parametrize(
    "limits",
    [
        {"max_connections_per_ip": 3},
        {"max_connections": 3, "max_connections_per_ip": 100},
    ],
)
def test_the_connection_over_the_cap_is_refused_at_once(limits: dict[str, int]) -> None:
    async def main() -> None:
        async with serving(web_settings(header_timeout=600, **limits)) as server:
            held = [await connect(server) for _ in range(3)]
            await until(lambda: server.guard.open == 3)
            with capture_logs() as logs:
                refused = [await connect(server) for _ in range(5)]
                for reader, _ in refused:
                    reply = await closed_by_server(reader)
                    assert reply.startswith(b"HTTP/1.1 503"), reply
            assert server.guard.refused == 5
            # One warning, not one per refused connection.
            assert [e["event"] for e in logs].count("web.connection_refused") == 1
            # Freeing one place lets the next connection in.
            held[0][1].close()
            await until(lambda: server.guard.open == 2)
            assert (await healthz(server)).startswith(b"HTTP/1.1 200")
            await until(lambda: server.guard.open == 2)
            for _, writer in held[1:] + refused:
                writer.close()
            await until(lambda: server.guard.open == 0)

    run(main(), timeout=2 * BOUND)


class EmfileSocket(socket.socket):
    """A listening socket whose accept() fails as it does when the process has no file
    descriptor left (EMFILE): asyncio's own accept loop meets the real error path."""

    def accept(self) -> tuple[socket.socket, Any]:
        raise OSError(errno.EMFILE, "Too many open files")


def test_accept_failures_give_one_warning_not_a_flood(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        sock = EmfileSocket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        async with serving(web_settings(), sock=sock) as server:
            with capture_logs() as logs:
                pending = [await connect(server) for _ in range(3)]  # queued, never accepted
                # asyncio retries up to the backlog (100) on one readiness: many failures.
                await until(lambda: server.guard.accept_failures >= 100)
            warnings = [e for e in logs if e["event"] == "web.accept_failed"]
            assert len(warnings) == 1, warnings
            assert "Too many open files" in warnings[0]["error"]
            for _, writer in pending:
                writer.close()

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        run(main(), timeout=2 * BOUND)
    flood = [r for r in caplog.records if "out of system resource" in r.getMessage()]
    assert flood == []


def test_the_cap_leaves_file_descriptors_under_the_process_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import resource

    from esl_bridge.gateway import web as web_module

    monkeypatch.setattr(resource, "getrlimit", lambda _: (160, 4096))
    with capture_logs() as logs:
        assert web_module.effective_max_connections(512) == 160 - web_module.FD_RESERVE
    assert [e["event"] for e in logs] == ["web.max_connections_lowered"]
    monkeypatch.setattr(resource, "getrlimit", lambda _: (65536, 65536))
    assert web_module.effective_max_connections(512) == 512


def test_the_signalling_limits_come_from_rtx_conf() -> None:
    from esl_bridge.signaling.settings import signaling_settings

    settings = config.from_text(
        "[limits]\nlogin_timeout = 5.5\nsend_queue_bytes = 70000\n", "<limits>"
    )
    hub = signaling_settings(settings)
    assert (hub.login_timeout, hub.max_send_queue_bytes) == (5.5, 70000)
    defaults = signaling_settings(config.defaults())
    assert (defaults.login_timeout, defaults.max_send_queue_bytes) == (30.0, 1048576)
    web = config.defaults().web
    assert (web.header_timeout, web.max_connections, web.max_connections_per_ip) == (
        10.0,
        512,
        100,
    )


def _self_signed(tmp: Any) -> tuple[str, str]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_over_tls_a_stalled_handshake_or_head_is_closed_and_requests_work(tmp_path: Any) -> None:
    cert, key = _self_signed(tmp_path)
    settings = web_settings(header_timeout=0.3, tls_cert=cert, tls_key=key)
    client_context = ssl.create_default_context()
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE

    async def main() -> None:
        async with serving(settings) as server:
            no_hello_r, no_hello_w = await connect(server)  # TCP only, never a ClientHello
            half_r, half_w = await asyncio.open_connection(*server.address, ssl=client_context)
            half_w.write(b"GET /heal")
            assert await closed_by_server(no_hello_r) == b""
            assert await closed_by_server(half_r) == b""
            reader, writer = await asyncio.open_connection(*server.address, ssl=client_context)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await closed_by_server(reader)).startswith(b"HTTP/1.1 200")
            for w in (no_hello_w, half_w, writer):
                w.close()
            await until(lambda: server.guard.open == 0)

    run(main(), timeout=2 * BOUND)


def test_the_connection_figures_are_in_status_and_metrics() -> None:
    from aiohttp import web

    from esl_bridge.gateway.web import add_operations_routes

    async def main() -> None:
        holder: list[WebServer] = []
        application = web.Application()
        add_operations_routes(
            application,
            lambda: {
                "esl": "connected",
                "calls": 0,
                "numbers_busy": 0,
                "unicast_ports_in_use": 0,
                "ended": {},
            },
            lambda: {"connections": 0},
            lambda: holder[0].guard.stats() if holder else {},
        )
        settings = web_settings(header_timeout=600, max_connections_per_ip=2)
        server = await start_web_server(application, settings, shutdown_timeout=1.0)
        holder.append(server)
        try:
            held = [await connect(server) for _ in range(2)]
            await until(lambda: server.guard.open == 2)
            third_r, third_w = await connect(server)
            assert (await closed_by_server(third_r)).startswith(b"HTTP/1.1 503")
            for _, w in held:
                w.close()
            await until(lambda: server.guard.open == 0)
            reader, writer = await connect(server)
            writer.write(b"GET /status.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply = await closed_by_server(reader)
            body = json.loads(reply.split(b"\r\n\r\n", 1)[1])
            assert body["web"] == {"open": 1, "addresses": 1, "refused": 1, "accept_failures": 0}
            reader, writer = await connect(server)
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            metrics = (await closed_by_server(reader)).decode()
            assert "esl_bridge_web_refused 1.0" in metrics
            third_w.close()
        finally:
            await server.stop()

    run(main(), timeout=2 * BOUND)
