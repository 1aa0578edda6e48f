"""The gateway's web server: signalling, web client, health, metrics (asyncio thread)."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from esl_bridge.config import Settings

StatusSource = Callable[[], dict[str, Any]]


class GatewayCollector(Collector):
    """Reads the live figures at scrape time; nothing is counted twice or kept stale."""

    def __init__(self, status: StatusSource, hub_stats: Callable[[], dict[str, int]]) -> None:
        self._status = status
        self._hub_stats = hub_stats

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
        for name, value in sorted(self._hub_stats().items()):
            yield GaugeMetricFamily(
                f"esl_bridge_hub_{name}", f"signalling hub: {name}", value=value
            )


def add_operations_routes(
    app: web.Application, status: StatusSource, hub_stats: Callable[[], dict[str, int]]
) -> None:
    """``/healthz`` (200 when FreeSWITCH is reachable, else 503), ``/status.json``, ``/metrics``."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(GatewayCollector(status, hub_stats))

    async def healthz(request: web.Request) -> web.Response:
        current = status()
        healthy = current["esl"] == "connected"
        return web.json_response(
            {"status": "ok" if healthy else "degraded", "esl": current["esl"]},
            status=200 if healthy else 503,
        )

    async def status_json(request: web.Request) -> web.Response:
        return web.json_response({**status(), "hub": hub_stats()})

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), content_type="text/plain", charset="utf-8"
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status.json", status_json)
    app.router.add_get("/metrics", metrics)


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
