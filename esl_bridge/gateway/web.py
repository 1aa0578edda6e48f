"""The gateway's web server: signalling, web client, health, metrics (asyncio thread).

``start_web_server`` serves an application with the limits that keep one peer from
holding the server: a connection must deliver a complete request head within
``[web] header_timeout`` of opening (or of its previous response), and
``ConnectionGuard`` caps open connections in total and per peer address. When the
process runs out of file descriptors, asyncio's accept failures become one rate-limited
warning instead of a line per attempt.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from esl_bridge.config import Settings
from esl_bridge.logs import get_logger

log = get_logger("web")

StatusSource = Callable[[], dict[str, Any]]

#: File descriptors kept free of web connections for FreeSWITCH, media and logs.
FD_RESERVE = 64
#: Seconds between two warnings of the same kind (refused connections, accept failures).
WARN_INTERVAL = 60.0
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n\r\n"
    b"too many connections\n"
)
_ACCEPT_FAILED = "socket.accept() out of system resource"


class GatewayCollector(Collector):
    """Reads the live figures at scrape time; nothing is counted twice or kept stale."""

    def __init__(
        self,
        status: StatusSource,
        hub_stats: Callable[[], dict[str, int]],
        web_stats: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self._status = status
        self._hub_stats = hub_stats
        self._web_stats = web_stats or dict

    def collect(self) -> Iterator[Any]:
        status = self._status()
        yield GaugeMetricFamily(
            "esl_bridge_esl_connected",
            "1 while the inbound ESL connection to FreeSWITCH is up",
            value=1.0 if status["esl"] == "connected" else 0.0,
        )
        yield GaugeMetricFamily("esl_bridge_calls", "calls in progress", value=status["calls"])
        yield GaugeMetricFamily(
            "esl_bridge_numbers_busy",
            "acc_rule numbers carrying a call",
            value=status["numbers_busy"],
        )
        yield GaugeMetricFamily(
            "esl_bridge_unicast_ports_in_use",
            "unicast port pairs in use",
            value=status["unicast_ports_in_use"],
        )
        yield CounterMetricFamily(
            "esl_bridge_unicast_foreign_packets",
            "unicast datagrams dropped: not from the call's FreeSWITCH port",
            value=status.get("unicast_foreign_packets", 0),
        )
        ended = CounterMetricFamily(
            "esl_bridge_calls_ended", "calls ended, by reason", labels=["reason"]
        )
        for reason, count in sorted(status["ended"].items()):
            ended.add_metric([reason], count)
        yield ended
        cluster = status.get("cluster")  # only with [cluster] redis_url
        if cluster is not None:
            yield GaugeMetricFamily(
                "esl_bridge_cluster_up",
                "1 while this process is a member of the cluster (Redis reachable)",
                value=1.0 if cluster["state"] == "up" else 0.0,
            )
        ops = status.get("ops_events") or {}
        sent = CounterMetricFamily(
            "esl_bridge_ops_events_sent", "CUSTOM events sent to FreeSWITCH", labels=["event"]
        )
        for name, count in sorted(ops.get("sent", {}).items()):
            sent.add_metric([name], count)
        yield sent
        dropped = CounterMetricFamily(
            "esl_bridge_ops_events_dropped", "CUSTOM events dropped, by reason", labels=["reason"]
        )
        for reason, count in sorted(ops.get("dropped", {}).items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield from _webhook_metrics(status.get("webhooks") or {})
        for name, value in sorted(self._hub_stats().items()):
            yield GaugeMetricFamily(
                f"esl_bridge_hub_{name}", f"signalling hub: {name}", value=value
            )
        for name, value in sorted(self._web_stats().items()):
            yield GaugeMetricFamily(
                f"esl_bridge_web_{name}", f"web server connections: {name}", value=value
            )


def _webhook_metrics(hooks: dict[str, Any]) -> Iterator[Any]:
    """esl_bridge_webhooks_*: events delivered, attempts failed, events dropped, queued."""
    delivered = CounterMetricFamily(
        "esl_bridge_webhooks_delivered", "webhook events delivered (2xx)", labels=["event"]
    )
    for name, count in sorted(hooks.get("delivered", {}).items()):
        delivered.add_metric([name], count)
    yield delivered
    yield CounterMetricFamily(
        "esl_bridge_webhooks_failed",
        "webhook POSTs that failed (each retry counts)",
        value=hooks.get("failed_attempts", 0),
    )
    dropped = CounterMetricFamily(
        "esl_bridge_webhooks_dropped", "webhook events dropped, by reason", labels=["reason"]
    )
    for reason, count in sorted(hooks.get("dropped", {}).items()):
        dropped.add_metric([reason], count)
    yield dropped
    yield GaugeMetricFamily(
        "esl_bridge_webhooks_queued", "webhook events waiting", value=hooks.get("queued", 0)
    )


def add_operations_routes(
    app: web.Application,
    status: StatusSource,
    hub_stats: Callable[[], dict[str, int]],
    web_stats: Callable[[], dict[str, int]] | None = None,
    node: str | None = None,
    collectors: Sequence[Collector] = (),
) -> None:
    """``/healthz`` (200 when FreeSWITCH is reachable, else 503), ``/status.json``, ``/metrics``.

    ``node``: this process's node id, shown by ``/healthz`` and ``/status.json`` (worker
    processes share one port: the answer says which one served it).

    ``web_stats``: the connection guard's figures (open, addresses, refused, accept
    failures), shown as ``web`` in ``/status.json`` and ``esl_bridge_web_*`` metrics.
    """
    web_figures = web_stats or dict
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GatewayCollector(status, hub_stats, web_figures))
    for collector in collectors:
        registry.register(collector)

    async def healthz(request: web.Request) -> web.Response:
        healthy, body = health(status())
        if node is not None:
            body["node"] = node
        return web.json_response(
            {"status": "ok" if healthy else "degraded", **body},
            status=200 if healthy else 503,
        )

    async def status_json(request: web.Request) -> web.Response:
        extra = {"node": node} if node is not None else {}
        return web.json_response({**status(), "hub": hub_stats(), "web": web_figures(), **extra})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), content_type="text/plain", charset="utf-8"
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status.json", status_json)
    app.router.add_get("/metrics", metrics)


def health(current: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """``/healthz``'s verdict on a status: FreeSWITCH reachable (and the cluster up)."""
    healthy = current["esl"] == "connected"
    body: dict[str, Any] = {"esl": current["esl"]}
    cluster = current.get("cluster")  # only with [cluster] redis_url
    if cluster is not None:
        body["cluster"] = cluster["state"]
        if cluster["state"] != "up":
            healthy = False
            body["reason"] = cluster["reason"]
    return healthy, body


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.web.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.web.tls_cert, settings.web.tls_key)
    return context


def client_config(settings: Settings, *, demo: bool = False) -> dict[str, Any]:
    """What the web client needs to know (served as /config.json); no secrets."""
    ice: list[dict[str, Any]] = []
    for url in settings.media.ice_servers:
        server: dict[str, Any] = {"urls": url}
        if url.startswith(("turn:", "turns:")):
            # Browsers need TURN credentials too; [media] turn_* are meant for sharing.
            server["username"] = settings.media.turn_username
            server["credential"] = settings.media.turn_password
        ice.append(server)
    return {
        "appid": settings.global_.appid,
        "open_mode": settings.auth.open_mode,
        "gateway_uid": settings.proxy.rtm_account,
        "numbers": list(settings.rtm2sip.numbers[:20]),
        "ice_servers": ice,
        "demo": demo,
    }


class _RateLimitedWarning:
    """One warning per ``interval`` for an event; the next one tells how many were held."""

    def __init__(self, event: str, interval: float, clock: Callable[[], float]) -> None:
        self._event = event
        self._interval = interval
        self._clock = clock
        self._last: float | None = None
        self._held = 0

    def __call__(self, **fields: Any) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self._interval:
            self._held += 1
            return
        self._last = now
        log.warning(self._event, suppressed=self._held, **fields)
        self._held = 0


class ConnectionGuard:
    """Caps the web server's open connections, in total and per peer address.

    A connection over a cap is answered ``503`` and closed at once, before anything is
    read, so it holds its file descriptor for no longer than that.
    """

    def __init__(
        self,
        max_total: int,
        max_per_address: int,
        *,
        warn_interval: float = WARN_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.open = 0
        self.refused = 0
        self.accept_failures = 0
        self._by_address: dict[str, int] = {}
        self._warn_refused = _RateLimitedWarning("web.connection_refused", warn_interval, clock)
        self._warn_accept = _RateLimitedWarning("web.accept_failed", warn_interval, clock)

    def stats(self) -> dict[str, int]:
        return {
            "open": self.open,
            "addresses": len(self._by_address),
            "refused": self.refused,
            "accept_failures": self.accept_failures,
        }

    def admit(self, address: str) -> bool:
        held = self._by_address.get(address, 0)
        if self.open >= self.max_total:
            reason = "max_connections"
        elif held >= self.max_per_address:
            reason = "max_connections_per_ip"
        else:
            self.open += 1
            self._by_address[address] = held + 1
            return True
        self.refused += 1
        self._warn_refused(reason=reason, address=address, open=self.open)
        return False

    def release(self, address: str) -> None:
        self.open -= 1
        held = self._by_address.get(address, 0) - 1
        if held > 0:
            self._by_address[address] = held
        else:
            self._by_address.pop(address, None)

    def protocol_factory(
        self, inner: Callable[[], asyncio.BaseProtocol]
    ) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (``runner.server``) with the caps."""
        return lambda: _GuardedProtocol(self, inner)

    def accept_failed(self, context: dict[str, Any]) -> None:
        self.accept_failures += 1
        exc = context.get("exception")
        self._warn_accept(error=str(exc) if exc is not None else context.get("message"))

    def install(self, loop: asyncio.AbstractEventLoop, sockets: list[socket.socket]) -> None:
        """Route asyncio's accept failures on ``sockets`` to the rate-limited warning.

        On EMFILE asyncio reports every failed ``accept()`` (up to the backlog, each time
        the listening socket is retried): tens of thousands of lines a minute.
        """
        ours = {s.fileno() for s in sockets}
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            sock = context.get("socket")
            if context.get("message") == _ACCEPT_FAILED and (sock is None or sock.fileno() in ours):
                self.accept_failed(context)
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's request handler, created only for a connection the guard admits."""

    def __init__(self, guard: ConnectionGuard, factory: Callable[[], asyncio.BaseProtocol]):
        self._guard = guard
        self._factory = factory
        self._inner: Any = None
        self._address: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._guard.admit(address):
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(_REFUSAL)
            transport.close()
            return
        self._address = address
        self._inner = self._factory()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        if self._inner is not None:
            self._inner.connection_lost(exc)


def effective_max_connections(configured: int) -> int:
    """``configured``, lowered to leave ``FD_RESERVE`` descriptors under the soft
    RLIMIT_NOFILE, so that the cap refuses connections before accept() fails."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - FD_RESERVE >= configured:
        return configured
    lowered = max(1, soft - FD_RESERVE)
    log.warning(
        "web.max_connections_lowered",
        configured=configured,
        effective=lowered,
        fd_limit=soft,
    )
    return lowered


class WebServer:
    """The running web server: its runner (cleaned up on stop), guard and address."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server, guard: ConnectionGuard):
        self.runner = runner
        self.server = server
        self.guard = guard
        sockets = list(server.sockets)
        host, port = sockets[0].getsockname()[:2] if sockets else ("", 0)
        self.address = (str(host), int(port))

    async def stop(self) -> None:
        self.server.close()
        await self.runner.cleanup()


async def start_web_server(
    app: web.Application,
    settings: Settings,
    *,
    shutdown_timeout: float = 60.0,
    sock: socket.socket | None = None,
    reuse_port: bool = False,
) -> WebServer:
    """Serve ``app`` on ``[web] host:port`` (or on ``sock``) with the web limits.

    ``reuse_port``: listen with SO_REUSEPORT, beside the other worker processes
    (gateway/workers.py) that serve the same port.
    """
    limits = settings.web
    # aiohttp's keep-alive timer runs from the connection's start and from each response
    # until a complete request head has arrived: it is the header timeout.
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        keepalive_timeout=limits.header_timeout,
    )
    await runner.setup()
    assert runner.server is not None
    guard = ConnectionGuard(
        effective_max_connections(limits.max_connections), limits.max_connections_per_ip
    )
    loop = asyncio.get_running_loop()
    factory = guard.protocol_factory(runner.server)
    context = ssl_context(settings)
    try:
        if sock is not None:
            server = await loop.create_server(
                factory, sock=sock, ssl=context, ssl_handshake_timeout=_handshake(context, limits)
            )
        else:
            server = await loop.create_server(
                factory,
                limits.host,
                limits.port,
                ssl=context,
                ssl_handshake_timeout=_handshake(context, limits),
                reuse_address=True,
                reuse_port=reuse_port,
            )
    except BaseException:
        await runner.cleanup()
        raise
    guard.install(loop, list(server.sockets))
    log.info(
        "web.limits",
        header_timeout=limits.header_timeout,
        max_connections=guard.max_total,
        max_connections_per_ip=guard.max_per_address,
    )
    return WebServer(runner, server, guard)


def _handshake(context: ssl.SSLContext | None, limits: Any) -> float | None:
    return limits.header_timeout if context is not None else None
