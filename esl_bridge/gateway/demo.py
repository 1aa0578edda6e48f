"""``esl-bridge demo``: the gateway with the built-in FreeSWITCH simulator, all on 127.0.0.1.

Web users log in without a token (open mode, demo only) and may call the simulated
extensions 1000-1019 (echo, tones, busy, no answer...: see README "FreeSWITCH simulator");
a simulated phone can call a web user back (the page's demo button, or
``POST /demo/call-me`` with ``{"uid": ..., "caller": "1001"}``).
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from aiohttp import web

from esl_bridge import config
from esl_bridge.gateway.process import Gateway
from esl_bridge.signaling.protocol import valid_uid
from esl_bridge.sim import SimConfig, SimulatorThread

DEMO_APPID = "demo"
DEMO_RULE = "10[00-19]"
_CALLER = "1001"


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port nobody uses right now (TCP by default, UDP with SOCK_DGRAM): the demo's
    simulator must know the socket address before the gateway listens. The tests and
    benchmarks use this one too."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def demo_settings(
    web_host: str, web_port: int, esl_port: int, socket_port: int, log_level: int = 2
) -> config.Settings:
    text = f"""
[global]
appid = {DEMO_APPID}
sip_svr = 127.0.0.1:5060
[rtm2sip]
on = 1
acc_rule = {DEMO_RULE}
[proxy]
on = 1
rtm_account = gateway
[esl]
host = 127.0.0.1
port = {esl_port}
[socket]
host = 127.0.0.1
port = {socket_port}
[web]
host = {web_host}
port = {web_port}
[auth]
open_mode = 1
[log]
level = {log_level}
"""
    return config.from_text(text, "<demo>", base_dir=Path.cwd())


class Demo:
    """The simulator and the gateway, started and stopped together."""

    def __init__(
        self, web_host: str = "127.0.0.1", web_port: int = 8080, log_level: int = 2
    ) -> None:
        socket_port = free_port()
        self.sim = SimulatorThread(SimConfig(socket_target=("127.0.0.1", socket_port)))
        self._web = (web_host, web_port)
        self._socket_port = socket_port
        self._log_level = log_level
        self.gateway: Gateway | None = None

    def start(self) -> Gateway:
        self.sim.start()
        settings = demo_settings(
            self._web[0], self._web[1], self.sim.esl_port, self._socket_port, self._log_level
        )
        self.gateway = Gateway(settings, demo=True, extra_routes=self._routes)
        self.gateway.start()
        return self.gateway

    def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        self.sim.stop()

    def _routes(self, app: web.Application) -> None:
        async def call_me(request: web.Request) -> web.Response:
            try:
                body = await request.json()
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return web.json_response({"error": "send a JSON object"}, status=400)
            uid = str(body.get("uid") or "")
            caller = str(body.get("caller") or _CALLER)
            if not valid_uid(uid) or not caller.isdigit() or len(caller) > 16:
                return web.json_response({"error": "bad uid or caller"}, status=400)
            # The simulator's handle waits briefly for its own loop: not on this one.
            call = await asyncio.to_thread(
                self.sim.place_call, caller=caller, dest=f"0{uid}", audio="tone440"
            )
            return web.json_response({"placed": True, "caller": caller, "uuid": call.uuid})

        app.router.add_post("/demo/call-me", call_me)
