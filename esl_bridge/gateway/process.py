"""One gateway process: the gevent hub (ESL) in the main thread, asyncio in another.

``Gateway.start()`` brings up, in order: the asyncio thread with the web server, the
signalling hub and the call controller; then FreeSWITCH's side (inbound connection and
outbound socket server), so that nothing FreeSWITCH says can arrive before there is a
controller to hear it. ``stop()`` ends every call (up to a drain time), then stops the
FreeSWITCH side, the web server and the asyncio thread.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from typing import Any

import gevent
import gevent.event
import gevent.lock
from aiohttp import web

from esl_bridge.config import Settings
from esl_bridge.core.call import Originate
from esl_bridge.esl.orphans import GatewayIdentity
from esl_bridge.esl.protocol import ChannelRecord
from esl_bridge.gateway.api import setup_api
from esl_bridge.gateway.controller import CallController
from esl_bridge.gateway.esl_side import ChannelOp, EslSide
from esl_bridge.gateway.ops_events import OpsEventSender
from esl_bridge.gateway.ops_metrics import OpsMetricsCollector
from esl_bridge.gateway.web import (
    WebServer,
    add_operations_routes,
    client_config,
    health,
    start_web_server,
)
from esl_bridge.gateway.webhooks import WebhookSender
from esl_bridge.logs import get_logger
from esl_bridge.loops import Loops, LoopStopped
from esl_bridge.media.libopus import opus_backend
from esl_bridge.signaling.server import setup_signaling
from esl_bridge.signaling.settings import signaling_settings

log = get_logger("gateway")

# [media] keys a reload takes: the one-way audio thresholds (core/media_verdict.py).
_MEDIA_LIVE_KEYS = ("media_problem_after", "silence_floor_dbov")
_MEDIA_LIVE = tuple(f"media.{key}" for key in _MEDIA_LIVE_KEYS)

_WEB_SHUTDOWN = 3.0  # seconds open web connections get to finish when stopping


class _ToController:
    """EventSink of the ESL side: hands each report to the controller's thread, one hop,
    in order (``Loops.call_soon``).

    The controller is set before the ESL side starts; a report without one (a start that
    failed half-way and is being undone) is dropped.
    """

    def __init__(self, loops: Loops) -> None:
        self._loops = loops
        self.controller: CallController | None = None

    def _post(self, pick: Callable[[CallController], Callable[..., None]], *args: Any) -> bool:
        controller = self.controller
        if controller is None:
            return False
        self._loops.call_soon(pick(controller), *args)
        return True

    def channel_event(self, uuid: str, name: str, headers: Mapping[str, str]) -> None:
        self._post(lambda c: c.channel_event, uuid, name, dict(headers))

    def channel_lost(self, uuid: str, cause: str) -> None:
        self._post(lambda c: c.channel_lost, uuid, cause)

    def originate_failed(self, call_id: str, uuid: str, cause: str) -> None:
        self._post(lambda c: c.originate_failed, call_id, uuid, cause)

    def operation_failed(self, op: ChannelOp, error: str) -> None:
        self._post(lambda c: c.operation_failed, op, error)

    def esl_state(self, state: str) -> None:
        self._post(lambda c: c.set_esl_state, state)

    def sip_call(self, record: ChannelRecord) -> bool:
        return self._post(lambda c: c.sip_call_arrived, record)

    def conference_event(self, headers: Mapping[str, str]) -> None:
        self._post(lambda c: c.conference_event, dict(headers))


class _ToEsl:
    """ChannelPort of the controller: hands each request to the gevent hub, one hop, in
    order (``Loops.call_in_hub``); the ESL side reports failures through its sink."""

    def __init__(self, loops: Loops, esl: EslSide) -> None:
        self._loops = loops
        self._esl = esl

    def originate(self, action: Originate) -> None:
        self._loops.call_in_hub(
            self._esl.originate,
            action.call_id,
            action.uuid,
            action.destination,
            dict(action.variables),
            action.app,
        )

    def operate(self, op: ChannelOp) -> None:
        self._loops.call_in_hub(self._esl.submit, op)


class Gateway:
    """The whole gateway in this process. ``extra_routes`` adds routes (the demo's)."""

    def __init__(
        self,
        settings: Settings,
        *,
        demo: bool = False,
        extra_routes: Callable[[web.Application], None] | None = None,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        self.demo = demo
        # One of several worker processes (gateway/workers.py): the web and socket ports
        # are opened with SO_REUSEPORT, beside the other workers'.
        self.reuse_port = reuse_port
        self.loops = Loops(event_loop=settings.media.event_loop)
        self._extra_routes = extra_routes
        self.controller: CallController | None = None
        self.esl: EslSide | None = None
        self._web: WebServer | None = None
        self.web_address: tuple[str, int] | None = None
        self.socket_address: tuple[str, int] | None = None
        self._stopped = gevent.event.Event()
        self._stop_signals: list[Any] = []  # gevent signal handlers (stop_on_signals)
        self._stopping = False
        self._admin: Any = None  # gateway/admin.py AdminServer with [web] admin_socket
        self._hub: Any = None
        # SIGHUP: how a freshly loaded rtx.conf becomes this process's (a worker's own
        # node id and log file, gateway/workers.py).
        self.prepare_reload: Callable[[Settings], Settings] = lambda settings: settings
        # Called once the stop begins (systemd's STOPPING=1, esl_bridge/service.py).
        self.on_stopping: Callable[[], None] = lambda: None
        self._reload_lock = gevent.lock.BoundedSemaphore()
        self.cluster: Any = None  # esl_bridge.cluster.node.ClusterNode with [cluster] redis_url

    def start(self) -> None:
        self.loops.start()
        sink = _ToController(self.loops)
        self.identity = GatewayIdentity.new(self.settings.cluster.node_id)
        self.esl = EslSide(
            self.settings.esl,
            self.settings.socket,
            sink,
            identity=self.identity,
            orphan_timeout=self.settings.esl.orphan_timeout,
            originate_timeout=self.settings.limits.originate_timeout,
            reuse_port=self.reuse_port,
            conference=self.settings.conference.on,
        )
        identity = {"node": self.identity.node_id, "instance": self.identity.instance_id}
        self.ops_events = OpsEventSender(self.esl.inbound, common=identity)
        self.ops_events.start()
        self.loops.run_coroutine(self._start_web(self.esl), timeout=30)
        sink.controller = self.controller
        self.socket_address = self.esl.start()
        log.info(
            "gateway.started",
            web="{}:{}".format(*self.web_address) if self.web_address else None,
            socket="{}:{}".format(*self.socket_address),
            esl=", ".join(f"{host}:{port}" for host, port in self.settings.esl.endpoints),
            node=self.identity.node_id,
            instance=self.identity.instance_id,
            # looked up here, once, not on the event loop mid-call (media/libopus.py)
            opus=opus_backend(),
        )
        self.ops_events.emit("gateway_started", {"socket": "{}:{}".format(*self.socket_address)})

    async def _start_web(self, esl: EslSide) -> None:
        from esl_bridge.web.client import setup_web_client

        app = web.Application()
        service = setup_signaling(app, signaling_settings(self.settings))
        cluster = None
        if self.settings.cluster.enabled:
            # Imported only here: a single-process gateway never loads redis.
            from esl_bridge.cluster.node import ClusterNode

            appid = self.settings.global_.appid
            member = f"{self.identity.node_id}-{self.identity.instance_id}"
            cluster = ClusterNode(self.settings.cluster, appid, member)
            service.hub.attach_cluster(appid, cluster)
            cluster.attach(service.hub, service.kick)
            self.cluster = cluster
        ops = self.ops_events
        # Webhooks (gateway/webhooks.py) hear the same events, on this loop.
        hooks = self.webhooks = WebhookSender(self.settings.webhooks, common=ops.common)
        await hooks.start()

        def emit(name: str, fields: dict[str, object]) -> None:
            hooks.emit(name, fields)
            self.loops.call_in_hub(ops.emit, name, fields)

        controller = CallController(
            self.settings,
            service.hub,
            _ToEsl(self.loops, esl),
            kick_hub=service.kick,
            cluster=cluster,
            emit=emit,
            ops_stats=ops.stats,
        )
        self.controller = controller
        setup_api(app, self.settings.api, controller, cluster)
        setup_web_client(
            app,
            client_config(self.settings, demo=self.demo),
            allowed_origins=self.settings.web.allowed_origins,
        )

        def status() -> dict[str, Any]:
            return {
                **controller.status(),
                "switches": esl.switch_states(),
                "webhooks": hooks.stats(),
            }

        add_operations_routes(
            app,
            status,
            service.hub.stats,
            self._web_stats,
            self.identity.node_id,
            collectors=[OpsMetricsCollector(controller.metrics)],
        )
        self._hub = service.hub
        if self._extra_routes is not None:
            self._extra_routes(app)
        # Calls are drained before the web server stops; past that, a lingering browser
        # connection must not hold the shutdown for aiohttp's default minute.
        server = await start_web_server(
            app, self.settings, shutdown_timeout=_WEB_SHUTDOWN, reuse_port=self.reuse_port
        )
        await controller.start()
        if cluster is not None:
            # A first join within the timeout; else it goes on trying (/healthz says why).
            await cluster.start(wait=self.settings.cluster.redis_timeout)
        self._web = server
        self.web_address = server.address
        if self.settings.web.admin_socket:
            from esl_bridge.gateway.admin import start_admin_server

            try:
                self._admin = await start_admin_server(
                    self.settings.web.admin_socket, self.admin_status
                )
            except BaseException:
                await server.stop()
                self._web = None
                raise

    async def admin_status(self) -> dict[str, Any]:
        """What ``esl-bridge status`` shows (asyncio thread)."""
        from esl_bridge import __version__

        controller = self.controller
        assert controller is not None and self.esl is not None and self._hub is not None
        current = controller.status()
        healthy, _ = health(current)
        return {
            "version": __version__,
            "node": self.identity.node_id,
            "healthy": healthy,
            "esl": current["esl"],
            "switches": self.esl.switch_states(),
            "calls": await controller.live_calls(),
            "users_online": [uid for _, uid in self._hub.users_online()],
            "ended": current["ended"],
        }

    def healthy(self) -> bool:
        """``/healthz``'s verdict, read from the main thread."""
        controller = self.controller
        if controller is None or self._web is None:
            return False
        return health(controller.status())[0]

    def loop_alive(self, timeout: float) -> bool:
        """True when the asyncio thread runs a trivial coroutine within ``timeout``."""

        async def nothing() -> None:
            return None

        try:
            self.loops.run_coroutine(nothing(), timeout=timeout)
        except (gevent.Timeout, LoopStopped):
            return False
        return True

    def _web_stats(self) -> dict[str, int]:
        return self._web.guard.stats() if self._web is not None else {}

    def stop_on_signals(self) -> None:
        """From now on SIGINT and SIGTERM ask for the stop (``wait`` returns). Called before
        ``start`` (esl-bridge run), so a SIGTERM while the gateway starts, when its web
        port may already answer, is a clean stop, not a kill by the default action."""
        if not self._stop_signals:
            self._stop_signals = [
                gevent.signal_handler(signal.SIGINT, self.request_stop),
                gevent.signal_handler(signal.SIGTERM, self.request_stop),
            ]

    def wait(self) -> None:
        """Block (cooperatively) until SIGINT/SIGTERM or ``request_stop``."""
        self.stop_on_signals()
        # A greenlet: a reload waits on the asyncio thread, which a signal handler must not.
        reload = gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self._reload_once))
        try:
            self._stopped.wait()
        finally:
            for handler in [*self._stop_signals, reload]:
                handler.cancel()
            self._stop_signals = []

    def request_stop(self) -> None:
        self._stopped.set()

    def stop(self, drain: float = 5.0) -> None:
        """Drain and stop everything; a second call does nothing."""
        if self._stopping:
            return
        self._stopping = True
        self.on_stopping()
        log.info("gateway.stopping", drain_seconds=drain)
        ops = getattr(self, "ops_events", None)
        if ops is not None:
            ops.emit("gateway_stopping", {"drain_seconds": drain})
        if self.controller is not None:
            try:
                self.loops.run_coroutine(self.controller.stop(drain), timeout=drain + 5)
            except Exception as exc:
                log.warning("gateway.drain_incomplete", error=str(exc))
        hooks = getattr(self, "webhooks", None)
        if hooks is not None:  # after the drain: the calls' call.ended events go out
            try:
                self.loops.run_coroutine(hooks.stop(flush_timeout=2.0), timeout=10)
            except Exception as exc:
                log.warning("gateway.webhooks_stop_failed", error=str(exc))
        if self.cluster is not None:
            # After the drain (its calls released their numbers), before the web side:
            # the others drop this process's sessions at once ("bye").
            try:
                self.loops.run_coroutine(self.cluster.stop(), timeout=15)
            except Exception as exc:
                log.warning("gateway.cluster_leave_failed", error=str(exc))
        if ops is not None:
            ops.stop(flush_timeout=1.0)  # gateway_stopping and the last call_ended go out
        if self.esl is not None:
            self.esl.stop()
        if self._admin is not None:
            try:
                self.loops.run_coroutine(self._admin.stop(), timeout=5)
            except Exception as exc:
                log.warning("gateway.admin_stop_failed", error=str(exc))
        if self._web is not None:
            try:
                self.loops.run_coroutine(self._web.stop(), timeout=10)
            except Exception as exc:
                log.warning("gateway.web_stop_failed", error=str(exc))
        self.loops.stop()
        log.info("gateway.stopped")

    # -- SIGHUP -------------------------------------------------------------------------

    def _reload_once(self) -> None:
        """One reload at a time: a second SIGHUP meanwhile waits for the first."""
        with self._reload_lock:
            self.reload()

    def reload(self) -> dict[str, list[str]]:
        """Reopen the log file and take what can change without dropping calls.

        Reloaded: ``[log]`` (level, file: reopened, so logrotate can move it away),
        ``[rtm2sip] acc_rule``, ``[limits]`` max_calls, max_call_rate, call_burst,
        originate_timeout, and ``[media]`` media_problem_after and silence_floor_dbov (the
        one-way audio judge of the calls whose media starts next). Anything else that
        differs is named as needing a restart. A file that cannot be used changes nothing
        (the log says why).
        """
        from esl_bridge.config import ConfigError, load
        from esl_bridge.logs import configure_logging

        old = self.settings

        def reopen_old() -> None:  # logrotate moved the file away even so
            with contextlib.suppress(OSError):
                configure_logging(old.log, secrets=old.secrets())

        try:
            new = self.prepare_reload(load(old.source))
        except ConfigError as exc:
            reopen_old()
            log.error(
                "gateway.reload_failed",
                source=old.source,
                reason="the configuration cannot be used; the running one is kept",
                problems=[str(p) for p in exc.problems],
            )
            return {"reloaded": [], "not_reloaded": [], "failed": [str(p) for p in exc.problems]}
        try:
            signaling_settings(new)
        except ValueError as exc:
            reopen_old()
            log.error("gateway.reload_failed", source=old.source, problems=[str(exc)])
            return {"reloaded": [], "not_reloaded": [], "failed": [str(exc)]}
        try:
            configure_logging(new.log, secrets=new.secrets())
        except OSError as exc:
            configure_logging(old.log, secrets=old.secrets())  # the old file, reopened
            problem = f"[log] file {new.log.file!r} cannot be opened: {exc.strerror or exc}"
            log.error("gateway.reload_failed", source=old.source, problems=[problem])
            return {"reloaded": [], "not_reloaded": [], "failed": [problem]}
        before = old.as_sections(mask=False)
        after = new.as_sections(mask=False)
        changed = sorted(
            f"{section}.{key}"
            for section, values in after.items()
            for key, value in values.items()
            if before.get(section, {}).get(key) != value
        )
        live = {f"log.{k}" for k in after["log"]} | {
            "rtm2sip.acc_rule",
            "limits.max_calls",
            "limits.max_call_rate",
            "limits.call_burst",
            "limits.originate_timeout",
            *_MEDIA_LIVE,
        }
        reloaded = [k for k in changed if k in live]
        not_reloaded = [k for k in changed if k not in live]
        numbers: dict[str, Any] = {}
        controller = self.controller
        if controller is not None and any(k.startswith(("rtm2sip.", "limits.")) for k in reloaded):

            async def apply() -> dict[str, Any]:
                return controller.reload(new.rtm2sip.numbers, new.limits)

            numbers = self.loops.run_coroutine(apply(), timeout=10)
            if self.esl is not None:
                self.esl.originate_timeout = new.limits.originate_timeout
        media = replace(old.media, **{k: getattr(new.media, k) for k in _MEDIA_LIVE_KEYS})
        if controller is not None and media != old.media:

            async def apply_media() -> None:  # read by the controller on its loop
                controller.settings = replace(controller.settings, media=media)

            self.loops.run_coroutine(apply_media(), timeout=10)
        # What was not taken stays as it runs, so the next reload compares with that.
        kept = {f.name: getattr(old, f.name) for f in fields(old)}
        kept.update(log=new.log, warnings=new.warnings)
        kept["rtm2sip"] = replace(
            old.rtm2sip, acc_rule=new.rtm2sip.acc_rule, numbers=new.rtm2sip.numbers
        )
        kept["media"] = media
        kept["limits"] = replace(
            old.limits,
            max_calls=new.limits.max_calls,
            max_call_rate=new.limits.max_call_rate,
            call_burst=new.limits.call_burst,
            originate_timeout=new.limits.originate_timeout,
        )
        self.settings = type(old)(**kept)
        log.info(
            "gateway.reloaded",
            source=old.source,
            log_file_reopened=bool(new.log.file),
            reloaded=reloaded,
            not_reloaded=not_reloaded,
            reason="these need a restart" if not_reloaded else None,
            **numbers,
        )
        return {"reloaded": reloaded, "not_reloaded": not_reloaded, "failed": []}
