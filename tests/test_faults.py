"""Faults under live calls with audio: what each does to the call, and that nothing is left.

Already covered elsewhere: the simulator restarting mid-call (tests/test_gateway_calls.py)
and ESL wire faults (tests/test_sim_faults.py). Here: the inbound ESL connection drops and
comes back, the outbound socket of a call dies, the unicast audio goes through a relay that
loses and reorders datagrams, and the browser's WebSocket flaps while ringing and in a call.
After each: no call, no busy number, no unicast port, no channel, and the next call works.

The browsers are aiortc peers with WebSocket clients (benchmarks/soak.py's ``Browser``) on
their own event loop in a thread; this (main) thread runs the gateway's gevent hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from support.gateway_support import wait_until
from support.netns import loopback_only
from support.ports_and_waits import free_port

from esl_bridge import config
from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimConfig, SimulatorThread

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import soak
from soak import ACCEPTED, Browser, Harness

ECHO = "2000"  # answers at once, echoes the audio


@contextlib.contextmanager
def gateway_and_sim(presence_grace: float = 0.5) -> Iterator[tuple[Gateway, SimulatorThread]]:
    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(socket_target=("127.0.0.1", socket_port), extensions=soak.extensions(2))
    ).start()
    web_port = free_port()
    while web_port in (socket_port, sim.esl_port):
        web_port = free_port()
    text = soak.settings_text(sim.esl_port, socket_port, web_port, 2, presence_grace)
    gateway = Gateway(config.from_text(text, "<faults>"))
    try:
        gateway.start()
        wait_until(
            lambda: gateway.controller is not None and gateway.controller.esl_state == "connected",
            20,
            "ESL connected",
        )
        yield gateway, sim
    finally:
        gateway.stop(drain=2.0)
        sim.stop()


def in_browsers(
    gateway: Gateway, sim: SimulatorThread, script: Callable[[Harness], Coroutine[Any, Any, Any]]
) -> Any:
    """Run ``script`` on a browser event loop in a thread; the gevent hub keeps running."""
    harness = Harness(gateway, sim, None)  # type: ignore[arg-type]
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = asyncio.run(script(harness))
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="browsers", daemon=True)
    thread.start()
    wait_until(lambda: not thread.is_alive(), 150, "the browsers' script")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


async def rtc_call(h: Harness, uid: str, number: str = ECHO) -> tuple[Browser, str, str]:
    """A browser calls ``number``; answered, audio flowing. Returns browser, ChanId, uuid."""
    b = await Browser(h.web, uid).open()
    chan = f"ch-{uid}"
    body = json.dumps({"Mode": 1, "Conference": False, "ChanId": chan})
    await b.request(
        {"type": "invite", "ref": chan, "callee": number, "content": body, "channel_id": chan}
    )
    await b.local_state(chan, (ACCEPTED,), 20)
    uuid = await h._channel_of(chan)
    await b.media(number, chan, 20)
    return b, chan, uuid


async def hang_up_and_check(h: Harness, b: Browser, number: str, uuid: str) -> None:
    await b.peer(number, Cmd="EndCall")
    await h._channel_gone(uuid)
    await b.close()
    await h.quiet(20)


async def next_call_works(h: Harness, uid: str) -> None:
    b, _, uuid = await rtc_call(h, uid)
    await hang_up_and_check(h, b, ECHO, uuid)


# -- ESL connections ----------------------------------------------------------------------


@loopback_only(timeout=200)
def test_inbound_esl_drop_mid_call_ends_the_call_and_the_next_call_works() -> None:
    """README (ESL: reconnect): the calls live on the lost connection are ended; the
    gateway reconnects; the channel the switch still had is hung up, nothing is left."""
    with gateway_and_sim() as (gateway, sim):

        async def script(h: Harness) -> None:
            b, _, uuid = await rtc_call(h, "alice")
            assert await h.on_sim(_async(sim.sim.drop_inbound_connections)) == 1
            await b.peer_cmd(ECHO, "EndCall", 15)
            await h._channel_gone(uuid)
            await b.close()
            status = await h.quiet(30)  # also waits for ESL to be connected again
            assert status["ended"], status
            await next_call_works(h, "alice2")

        in_browsers(gateway, sim, script)
        assert not sim.crashed


@loopback_only(timeout=200)
def test_outbound_socket_dying_mid_call_ends_the_call_on_both_sides() -> None:
    """The socket of a SIP -> browser call is reset: FreeSWITCH hangs the channel up (the
    socket application ended), the browser is told EndCall, nothing is left."""
    with gateway_and_sim() as (gateway, sim):

        async def script(h: Harness) -> None:
            b = await Browser(h.web, "bob").open()
            phone = await h.on_sim(sim.sim.place_call(caller="1001", dest="0bob"))
            invitation = await b.wait(lambda m: m.get("type") == "invitation", 10, "invitation")
            chan = json.loads(invitation["content"])["ChanId"]
            await b.request({"type": "accept", "inv": invitation["inv"]})
            await b.media("gateway", chan, 20)
            assert await h.on_sim(_async(sim.sim.drop_outbound_socket, phone.uuid))
            await b.peer_cmd("gateway", "EndCall", 15)
            await h.until(lambda: _value(phone.finished.is_set()), 15, "the phone hung up")
            await b.close()
            await h.quiet(20)
            # The next SIP call gets a fresh socket and works.
            b = await Browser(h.web, "bob2").open()
            phone = await h.on_sim(sim.sim.place_call(caller="1001", dest="0bob2"))
            invitation = await b.wait(lambda m: m.get("type") == "invitation", 10, "invitation")
            chan = json.loads(invitation["content"])["ChanId"]
            await b.request({"type": "accept", "inv": invitation["inv"]})
            await b.media("gateway", chan, 20)
            await b.peer("gateway", Cmd="EndCall", ChanId=chan)
            await h.until(lambda: _value(phone.finished.is_set()), 15, "the phone hung up")
            await b.close()
            await h.quiet(20)

        in_browsers(gateway, sim, script)


# -- unicast audio through a lossy relay ----------------------------------------------------


class LossyRelay:
    """A UDP relay on loopback that takes the simulated channel's place in front of the
    gateway's endpoint.

    Its app side binds the FreeSWITCH port of the unicast pair (the gateway takes audio
    only from there), its channel side a port of its own, where the simulated channel now
    sends. Every ``drop_every``-th datagram each way is lost and every ``swap_every``-th is
    held back and sent after the next one (reordered).
    """

    def __init__(self, drop_every: int = 10, swap_every: int = 7) -> None:
        self.drop_every = drop_every
        self.swap_every = swap_every
        self.sides: dict[str, asyncio.DatagramTransport] = {}  # way -> the socket it leaves by
        self.app: tuple[str, int] | None = None  # the gateway's endpoint
        self.channel: tuple[str, int] | None = None  # the simulated channel's socket
        self.seen = {"to_app": 0, "to_channel": 0}
        self.lost = {"to_app": 0, "to_channel": 0}
        self.swapped = {"to_app": 0, "to_channel": 0}
        self._held: dict[str, tuple[bytes, tuple[str, int]] | None] = {
            "to_app": None,
            "to_channel": None,
        }

    async def take_place(
        self, fs_local: tuple[str, int], app: tuple[str, int]
    ) -> tuple[tuple[str, int], tuple[str, int]]:
        """The sim's unicast_redirect hook: (where the channel binds, where it sends)."""
        loop = asyncio.get_running_loop()
        self.app = app
        relay = self

        class Side(asyncio.DatagramProtocol):
            def __init__(self, way: str) -> None:
                self.way = way

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay.forward(self.way, data, addr)

        app_side, _ = await loop.create_datagram_endpoint(
            lambda: Side("to_channel"), local_addr=fs_local
        )
        channel_side, _ = await loop.create_datagram_endpoint(
            lambda: Side("to_app"), local_addr=("127.0.0.1", 0)
        )
        self.sides = {"to_app": app_side, "to_channel": channel_side}
        return ("127.0.0.1", 0), channel_side.get_extra_info("sockname")[:2]

    def forward(self, way: str, data: bytes, addr: tuple[str, int]) -> None:
        if way == "to_app":
            self.channel = addr
            target = self.app
        else:
            target = self.channel
        if target is None or way not in self.sides:
            return
        self.seen[way] += 1
        n = self.seen[way]
        if n % self.drop_every == 0:
            self.lost[way] += 1
            return
        held = self._held[way]
        if held is None and n % self.swap_every == 0:
            self._held[way] = (data, target)
            return
        self.sides[way].sendto(data, target)
        if held is not None:
            self.sides[way].sendto(*held)
            self._held[way] = None
            self.swapped[way] += 1

    def close(self) -> None:
        for side in self.sides.values():
            side.close()


@loopback_only(timeout=200)
def test_lost_and_reordered_unicast_audio_keeps_the_call() -> None:
    """10 % of the datagrams lost and one in seven reordered, both ways: the call stays up,
    audio keeps reaching the browser, and it ends cleanly when the browser hangs up."""
    with gateway_and_sim() as (gateway, sim):
        relay = LossyRelay()
        sim.run_sync(setattr, sim.sim, "unicast_redirect", relay.take_place)

        async def script(h: Harness) -> None:
            b, _, uuid = await rtc_call(h, "alice")
            heard = b.audio_in

            async def enough() -> bool:
                return min(relay.seen.values()) >= 150 and b.audio_in >= heard + 100

            try:
                await h.until(enough, 60, "150 datagrams each way through the relay")
            except soak.ScenarioFailed as exc:
                raise AssertionError(f"{exc}: {relay.seen} {b.audio_in - heard}") from None
            assert min(relay.lost.values()) >= 10 and min(relay.swapped.values()) >= 10
            assert (await h.gateway_status())["calls"] == 1  # still up: no media timeout
            await hang_up_and_check(h, b, ECHO, uuid)
            sim.run_sync(setattr, sim.sim, "unicast_redirect", None)
            await next_call_works(h, "alice2")

        in_browsers(gateway, sim, script)
        sim.run_sync(relay.close)


# -- the browser's WebSocket flaps ------------------------------------------------------------


@loopback_only(timeout=200)
def test_websocket_flap_while_ringing_keeps_the_invitation() -> None:
    """The callee's socket dies while its browser rings and comes back within
    ``presence_grace`` with its session: the invitation is still there and can be accepted."""
    with gateway_and_sim(presence_grace=10) as (gateway, sim):

        async def script(h: Harness) -> None:
            b = await Browser(h.web, "bob").open()
            phone = await h.on_sim(sim.sim.place_call(caller="1001", dest="0bob"))
            invitation = await b.wait(lambda m: m.get("type") == "invitation", 10, "invitation")
            chan = json.loads(invitation["content"])["ChanId"]
            session = b.session_id
            await b.drop_socket()
            assert not phone.finished.is_set()
            await b.open(resume=session)
            assert b.resumed
            reply = await b.request({"type": "accept", "inv": invitation["inv"]})
            assert reply["type"] == "ok", reply
            await b.media("gateway", chan, 20)
            await h.until(lambda: _value(phone.answered), 10, "the phone answered")
            await b.peer("gateway", Cmd="EndCall", ChanId=chan)
            await h.until(lambda: _value(phone.finished.is_set()), 15, "the phone hung up")
            await b.close()
            await h.quiet(20)

        in_browsers(gateway, sim, script)


@loopback_only(timeout=200)
def test_websocket_flap_during_a_call_keeps_the_call() -> None:
    """The caller's socket dies mid-call and comes back within ``presence_grace``: the
    call and its audio go on; EndCall over the new socket ends it."""
    with gateway_and_sim(presence_grace=10) as (gateway, sim):

        async def script(h: Harness) -> None:
            b, _, uuid = await rtc_call(h, "alice")
            session = b.session_id
            await b.drop_socket()
            heard = b.audio_in
            await h.until(lambda: _value(b.audio_in > heard + 25), 10, "audio during the flap")
            await b.open(resume=session)
            assert b.resumed
            assert (await h.gateway_status())["calls"] == 1
            await hang_up_and_check(h, b, ECHO, uuid)
            await next_call_works(h, "alice2")

        in_browsers(gateway, sim, script)


async def _async(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(*args)


async def _value(value: bool) -> bool:
    return value
