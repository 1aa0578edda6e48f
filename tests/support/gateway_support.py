"""A whole gateway against the simulator, and web users speaking the WebSocket protocol.

The gateway runs as in production: the gevent hub in this (main) thread, asyncio in its
own. Web users are aiohttp WebSocket clients whose coroutines run on the gateway's loop,
driven from here through the handoff, so the test code stays plain and sequential.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp

from esl_bridge import config
from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimConfig, SimulatorThread
from support.ports_and_waits import free_port, gevent_wait

APPID = "e2e"


def gateway_settings(
    esl_port: int,
    socket_port: int,
    web_port: int,
    extra: str = "",
    *,
    presence_grace: float = 0.5,
    esl_extra: str = "",
) -> Any:
    """``extra``: more lines of the [limits] section (or further sections);
    ``esl_extra``: more lines of the [esl] section."""
    text = f"""
[global]
appid = {APPID}
[rtm2sip]
on = 1
acc_rule = 10[00-19]
[proxy]
on = 1
rtm_account = gateway
[esl]
port = {esl_port}
command_timeout = 3
{esl_extra}
[socket]
port = {socket_port}
[web]
port = {web_port}
[auth]
open_mode = 1
[limits]
originate_timeout = 5
presence_grace = {presence_grace}
{extra}
"""
    return config.from_text(text, "<e2e>")


@contextlib.contextmanager
def running_gateway(
    extra: str = "", *, presence_grace: float = 0.5, esl_extra: str = ""
) -> Iterator[tuple[Gateway, SimulatorThread]]:
    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(socket_target=("127.0.0.1", socket_port), first_call_event_delay=0.0)
    ).start()
    gateway = Gateway(
        gateway_settings(
            sim.esl_port,
            socket_port,
            free_port(),
            extra,
            presence_grace=presence_grace,
            esl_extra=esl_extra,
        )
    )
    try:
        gateway.start()
        wait_until(
            lambda: gateway.controller is not None and gateway.controller.esl_state == "connected",
            10,
            "ESL connected",
        )
        yield gateway, sim
    finally:
        gateway.stop(drain=2.0)
        sim.stop()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll cooperatively (the gevent hub keeps running the ESL side meanwhile)."""
    if not gevent_wait(check, timeout):
        raise AssertionError(f"timed out waiting for: {what}")


class WebUser:
    """One browser's signalling, as the SDK would speak it."""

    def __init__(self, gateway: Gateway, uid: str) -> None:
        self.gateway = gateway
        self.uid = uid
        self.inbox: list[dict[str, Any]] = []
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0

    def _run(self, coro: Any, timeout: float = 10.0) -> Any:
        return self.gateway.loops.run_coroutine(coro, timeout=timeout)

    def connect(self, session: str | None = None) -> WebUser:
        """Open the WebSocket and log in (resuming ``session`` when given); the reply is
        kept in ``login_reply``."""
        self._run(self._connect())
        login = {"type": "login", "appid": APPID, "uid": self.uid}
        if session is not None:
            login["session"] = session
        reply = self.request(login)
        assert reply["type"] == "ok", reply
        self.login_reply = reply
        return self

    async def _connect(self) -> None:
        host, port = self.gateway.web_address  # type: ignore[misc]
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(f"http://{host}:{port}/ws")
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.inbox.append(json.loads(msg.data))

    def send(self, message: dict[str, Any]) -> int:
        self._next_id += 1
        frame = {"v": 1, "id": self._next_id, **message}

        async def send() -> None:
            assert self._ws is not None
            await self._ws.send_str(json.dumps(frame))

        self._run(send())
        return self._next_id

    def request(self, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        msg_id = self.send(message)
        return self.wait(lambda m: m.get("re") == msg_id, timeout, f"reply to {message['type']}")

    def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 8.0, what: str = ""
    ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def check() -> bool:
            for m in self.inbox:
                if match(m):
                    found.append(m)
                    return True
            return False

        wait_until(check, timeout, what or "a message")
        self.inbox.remove(found[0])
        return found[0]

    def wait_local_state(self, state: LocalState, timeout: float = 8.0) -> dict[str, Any]:
        return self.wait(
            lambda m: m.get("type") == "local_state" and m.get("state") == state,
            timeout,
            f"local_state {state.name}",
        )

    def wait_peer_cmd(self, cmd: str, timeout: float = 8.0) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            if m.get("type") != "message":
                return False
            try:
                return bool(json.loads(m["text"]).get("Cmd") == cmd)
            except ValueError:
                return False

        message = self.wait(match, timeout, f"peer message {cmd}")
        return {"from": message["from"], **json.loads(message["text"])}

    def invite(self, callee: str, chan_id: str, **content: Any) -> dict[str, Any]:
        body = {"Mode": 1, "Conference": False, "ChanId": chan_id, **content}
        reply = self.request(
            {
                "type": "invite",
                "ref": chan_id,
                "callee": callee,
                "content": json.dumps(body),
                "channel_id": chan_id,
            }
        )
        assert reply["type"] == "ok", reply
        return reply

    def peer(self, to: str, **body: Any) -> None:
        reply = self.request({"type": "message", "to": to, "text": json.dumps(body)})
        assert reply["type"] == "ok", reply

    def close(self) -> None:
        async def close() -> None:
            # The reader first: aiohttp's close() would otherwise wait for a close frame
            # that the reader's own receive() consumes.
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                    await self._reader
            if self._ws is not None:
                await self._ws.close()
            if self._session is not None:
                await self._session.close()

        self._run(close())


def assert_nothing_left(gateway: Gateway, sim: SimulatorThread) -> None:
    """No live channel in FreeSWITCH, no call, no busy number, no unicast port."""
    controller = gateway.controller
    assert controller is not None
    wait_until(lambda: sim.live_channel_count() == 0, 8, "no live channel in the simulator")
    wait_until(lambda: controller.status()["calls"] == 0, 8, "no call in the gateway")
    # A leg frees its ports as it closes, just after the call is gone: wait for that too
    # (bounded, so a port that is never freed still fails here).
    wait_until(lambda: controller.status()["unicast_ports_in_use"] == 0, 8, "unicast ports freed")
    status = controller.status()
    assert status["numbers_busy"] == 0, status
    assert status["unicast_ports_in_use"] == 0, status
    assert not sim.crashed, sim.crash_reason
