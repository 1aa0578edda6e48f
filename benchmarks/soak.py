"""Soak: many calls through the gateway and the simulator, then count what was left behind.

One process holds the whole set-up, as in production: the gateway (gevent hub in the main
thread, asyncio in its own thread), the FreeSWITCH simulator (its own thread) and the
"browsers" (aiortc peers and aiohttp WebSocket clients on a harness thread's event loop).
Calls run in rounds of ``--concurrency`` calls at once, both directions, every ending:

* browser -> phone: answered then hung up by the browser, busy, no answer, cancelled while
  ringing, browser vanishes (socket dropped without a word), phone hangs up;
* phone -> browser: answered then hung up by the browser, refused (busy), never answered
  (the invitation expires), the phone gives up while the browser rings, browser vanishes,
  phone hangs up;
* every ``--restart-every`` rounds, a round of answered calls in both directions during
  which the switch drops (the simulator restarts: every connection and channel gone).

Answered calls carry audio both ways (aiortc peer <-> gateway <-> simulator unicast)
until each side has received some. After a warm-up (the first rounds) and again after
the last call, the harness waits until the gateway has no call and the simulator no
channel (it waits for that state, it does not sleep), then measures the process: open
file descriptors, UDP sockets, tasks on the gateway's event loop, threads (idle thread-pool
workers are reused, not leaked, and are not counted) and resident memory. The simulator's
own records of finished calls (kept for tests) are dropped after each round so that the
memory figure is the gateway's.

Run it as root (it re-executes itself in a loopback-only network namespace)::

    python3 benchmarks/soak.py                  # 1000 calls
    python3 benchmarks/soak.py --calls 200 --concurrency 8

The last line is ``soak: calls=.. failed=.. leaked_fds=.. leaked_udp=.. leaked_tasks=..
leaked_threads=.. rss_growth_mb=.. channels_left=..``; the exit status is 0 when nothing
failed and nothing leaked.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import gevent  # noqa: E402
import loopback_namespace  # noqa: E402
from aiortc import (  # noqa: E402
    AudioStreamTrack,
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from esl_bridge import config  # noqa: E402
from esl_bridge.gateway.demo import free_port  # noqa: E402
from esl_bridge.gateway.process import Gateway  # noqa: E402
from esl_bridge.media.leg import use_host_addresses  # noqa: E402
from esl_bridge.sim import Extension, SimConfig, SimulatorThread  # noqa: E402
from esl_bridge.sim.media import AudioSource  # noqa: E402

T = TypeVar("T")
APPID = "soak"
RECEIVED, ACCEPTED, REFUSED, CANCELED = 2, 3, 4, 5
BUSY_RESPONSE = json.dumps({"Cmd": "Calling", "Reason": "calling"})

RTC_ENDINGS = ("answer", "busy", "no_answer", "cancel", "vanish", "phone_hangup")
SIP_ENDINGS = ("answer", "busy", "no_answer", "cancel", "vanish", "phone_hangup")
SCENARIOS = [("rtc", e) for e in RTC_ENDINGS] + [("sip", e) for e in SIP_ENDINGS]


class ScenarioFailed(Exception):
    pass


# --------------------------------------------------------------------------- process figures


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def udp_socket_count() -> int:
    """This process's open UDP sockets (its socket inodes found in /proc/net/udp{,6})."""
    inodes: set[str] = set()
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{name}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    udp: set[str] = set()
    for table in ("/proc/self/net/udp", "/proc/self/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if len(parts) > 9:
                    udp.add(parts[9])
    return len(inodes & udp)


def thread_count() -> int:
    """Threads, not counting thread-pool workers (reused, bounded by the pool's size)."""
    return sum(
        1
        for t in threading.enumerate()
        if not t.name.startswith(("ThreadPoolExecutor", "asyncio_"))
    )


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Figures:
    fds: int
    udp: int
    tasks: int
    threads: int
    rss_mb: float


# --------------------------------------------------------------------------- the harness


class Browser:
    """One browser tab: a WebSocket speaking the signalling protocol, and aiortc media."""

    def __init__(self, web: tuple[str, int], uid: str) -> None:
        self.web = web
        self.uid = uid
        self.inbox: list[dict[str, Any]] = []
        self._arrived = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._next_id = 0
        self.pc: RTCPeerConnection | None = None
        self.session_id = ""
        self.resumed = False
        self._drains: list[asyncio.Task[None]] = []
        self.audio_in = 0

    async def open(self, resume: str | None = None) -> Browser:
        """Connect and log in; ``resume``: the session id of a dropped socket."""
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(f"http://{self.web[0]}:{self.web[1]}/ws")
        self._reader = asyncio.create_task(self._read())
        login = {"type": "login", "appid": APPID, "uid": self.uid}
        if resume:
            login["session"] = resume
        reply = await self.request(login)
        if reply.get("type") != "ok":
            raise ScenarioFailed(f"login refused: {reply}")
        self.session_id = str(reply.get("session") or "")
        self.resumed = bool(reply.get("resumed"))
        return self

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.inbox.append(json.loads(msg.data))
                self._arrived.set()

    async def send(self, message: dict[str, Any]) -> int:
        assert self._ws is not None
        self._next_id += 1
        await self._ws.send_str(json.dumps({"v": 1, "id": self._next_id, **message}))
        return self._next_id

    async def request(self, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        msg_id = await self.send(message)
        return await self.wait(lambda m: m.get("re") == msg_id, timeout, f"reply to {message}")

    async def wait(
        self, match: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for m in self.inbox:
                        if match(m):
                            self.inbox.remove(m)
                            return m
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            raise ScenarioFailed(f"{self.uid}: no {what} within {timeout} s") from None

    async def local_state(self, ref: str, states: tuple[int, ...], timeout: float) -> dict:
        return await self.wait(
            lambda m: (
                m.get("type") == "local_state" and m.get("ref") == ref and m.get("state") in states
            ),
            timeout,
            f"local_state {states} of {ref}",
        )

    async def peer_cmd(self, sender: str, cmd: str, timeout: float) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            if m.get("type") != "message" or m.get("from") != sender:
                return False
            try:
                return bool(json.loads(m["text"]).get("Cmd") == cmd)
            except ValueError:
                return False

        found = await self.wait(match, timeout, f"{cmd} from {sender}")
        return dict(json.loads(found["text"]))

    async def peer(self, to: str, **body: Any) -> None:
        reply = await self.request({"type": "message", "to": to, "text": json.dumps(body)})
        if reply.get("type") != "ok":
            raise ScenarioFailed(f"peer message refused: {reply}")

    # -- media ---------------------------------------------------------------------------

    async def media(self, to: str, chan_id: str, timeout: float) -> None:
        """Offer, get the gateway's answer, and wait until audio arrives from the far end."""
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(AudioStreamTrack())
        got_audio = asyncio.Event()

        async def drain(track: MediaStreamTrack) -> None:
            with contextlib.suppress(Exception):
                while True:
                    await track.recv()
                    self.audio_in += 1
                    got_audio.set()

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._drains.append(asyncio.create_task(drain(track)))

        with use_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createOffer())
        await self.peer(to, Cmd="Offer", ChanId=chan_id, Sdp=pc.localDescription.sdp)
        answer = await self.peer_cmd(to, "Answer", timeout)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["Sdp"], type="answer"))
        try:
            async with asyncio.timeout(timeout):
                await got_audio.wait()
        except TimeoutError:
            raise ScenarioFailed(f"{self.uid}: no audio ({pc.connectionState})") from None

    async def close_media(self) -> None:
        if self.pc is not None:
            await self.pc.close()
            self.pc = None
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        self._drains = []

    # -- leaving ---------------------------------------------------------------------------

    async def close(self) -> None:
        await self.close_media()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    async def drop_socket(self) -> None:
        """The network flaps: the WebSocket dies without a close frame; media stays."""
        if self._ws is not None:
            connection = self._ws._response.connection  # type: ignore[union-attr]
            if connection is not None and connection.transport is not None:
                connection.transport.abort()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await self._reader
        if self._session is not None:
            await self._session.close()
        self._ws = self._session = self._reader = None

    async def vanish(self) -> None:
        """The tab is killed: media and socket gone without an EndCall or a close frame."""
        await self.close_media()
        if self._ws is not None:
            transport = self._ws._response.connection  # type: ignore[union-attr]
            if transport is not None and transport.transport is not None:
                transport.transport.abort()
        await self.close()


class Harness:
    """Runs on its own event loop thread; talks to the simulator through its loop."""

    def __init__(self, gateway: Gateway, sim: SimulatorThread, args: argparse.Namespace):
        self.gateway = gateway
        self.sim = sim
        self.args = args
        self.web: tuple[str, int] = gateway.web_address  # type: ignore[assignment]
        self.calls = 0
        self.failed = 0
        self.failures: dict[str, int] = {}
        self.samples: list[str] = []
        self.seq = 0
        self.ready = 0  # calls of a restart round with media flowing

    # -- the other threads ---------------------------------------------------------------

    async def on_sim(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.sim._loop
        assert loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def on_gateway(self, fn: Callable[[], T]) -> T:
        async def run() -> T:
            return fn()

        loop = self.gateway.loops.loop
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run(), loop))

    async def gateway_status(self) -> dict[str, Any]:
        controller = self.gateway.controller
        assert controller is not None
        return await self.on_gateway(controller.status)

    async def gateway_tasks(self) -> int:
        async def count() -> int:
            return len(asyncio.all_tasks()) - 1  # not this one

        loop = self.gateway.loops.loop
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(count(), loop))

    async def live_channels(self) -> int:
        async def count() -> int:
            return len(self.sim.sim.live_channels())

        return await self.on_sim(count())

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise ScenarioFailed(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def quiet(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until no call and no channel is left anywhere (the event, not a delay)."""
        status: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal status
            status = await self.gateway_status()
            return (
                status["calls"] == 0
                and status["numbers_busy"] == 0
                and status["unicast_ports_in_use"] == 0
                and status["esl"] == "connected"
                and await self.live_channels() == 0
            )

        await self.until(check, timeout, "no call and no channel")
        return status

    async def forget_finished_sim_calls(self) -> None:
        async def trim() -> None:
            sim = self.sim.sim
            sim.all_channels[:] = [c for c in sim.all_channels if not c.hung_up]
            sim.phone_calls[:] = [p for p in sim.phone_calls if not p.finished.is_set()]
            sim.events.clear()
            for session in sim.sessions:  # the inbound session records all it ever sent
                session.sent_events.clear()
                session.received_commands.clear()

        await self.on_sim(trim())

    async def figures(self) -> Figures:
        gc.collect()
        return Figures(
            fds=fd_count(),
            udp=udp_socket_count(),
            tasks=await self.gateway_tasks(),
            threads=thread_count(),
            rss_mb=rss_mb(),
        )

    # -- one call ------------------------------------------------------------------------

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def _number(self, slot: int, kind: int) -> str:
        return f"2{slot:02d}{kind}"

    async def _channel_of(self, chan_id: str) -> str:
        controller = self.gateway.controller
        assert controller is not None

        def uuid() -> str:
            call = controller.book.by_chan(chan_id)
            return call.uuid if call is not None else ""

        found = await self.on_gateway(uuid)
        if not found:
            raise ScenarioFailed(f"no call for {chan_id}")
        return found

    async def _hangup_channel(self, uuid: str) -> None:
        async def kill() -> None:
            for ch in reversed(self.sim.sim.all_channels):
                if ch.uuid == uuid:
                    await self.sim.sim.hangup(ch, "NORMAL_CLEARING")
                    return

        await self.on_sim(kill())

    async def _channel_gone(self, uuid: str, timeout: float = 15.0) -> None:
        async def gone() -> bool:
            async def check() -> bool:
                return not any(c.uuid == uuid and not c.hung_up for c in self.sim.sim.all_channels)

            return await self.on_sim(check())

        await self.until(gone, timeout, f"channel {uuid} gone")

    async def rtc_call(self, slot: int, ending: str, restart: asyncio.Event | None) -> None:
        n = self._next()
        b = await Browser(self.web, f"u{n}").open()
        try:
            kind = {"busy": 1, "no_answer": 2, "cancel": 3}.get(ending, 0)
            number = self._number(slot, kind)
            chan = f"c{n}"
            body = {"Mode": 1, "Conference": False, "ChanId": chan}
            reply = await b.request(
                {
                    "type": "invite",
                    "ref": chan,
                    "callee": number,
                    "content": json.dumps(body),
                    "channel_id": chan,
                }
            )
            if reply.get("type") != "ok":
                raise ScenarioFailed(f"invite refused: {reply}")
            if ending in ("busy", "no_answer"):
                state = await b.local_state(chan, (ACCEPTED, REFUSED), 20)
                reason = json.loads(state.get("response") or "{}").get("Reason")
                if state["state"] != REFUSED or reason != ending:
                    raise ScenarioFailed(f"{ending}: got {state}")
                return
            if ending == "cancel":
                await b.peer_cmd(number, "SipState", 10)
                await b.request({"type": "cancel", "ref": chan})
                await b.local_state(chan, (CANCELED,), 10)
                return
            await b.local_state(chan, (ACCEPTED,), 15)
            uuid = await self._channel_of(chan)
            await b.media(number, chan, 20)
            if restart is not None:  # the switch drops during the call
                self.ready += 1
                await restart.wait()
                await b.peer_cmd(number, "EndCall", 30)
                await self._channel_gone(uuid)
            elif ending == "answer":
                await b.peer(number, Cmd="EndCall")
                await self._channel_gone(uuid)
            elif ending == "vanish":
                await b.vanish()
                await self._channel_gone(uuid)
            elif ending == "phone_hangup":
                await self._hangup_channel(uuid)
                await b.peer_cmd(number, "EndCall", 10)
        finally:
            await b.close()

    async def sip_call(self, slot: int, ending: str, restart: asyncio.Event | None) -> None:
        uid = f"u{self._next()}"
        b = await Browser(self.web, uid).open()
        try:
            phone = await self.on_sim(
                self.sim.sim.place_call(caller="1001", dest=f"0{uid}", audio="tone440")
            )
            invitation = await b.wait(lambda m: m.get("type") == "invitation", 10, "invitation")
            chan = json.loads(invitation["content"])["ChanId"]

            async def finished() -> bool:
                return phone.finished.is_set()

            async def phone_finished(cause: str | None) -> None:
                await self.until(finished, 15, "the phone hung up")
                if cause is not None and phone.channel.hangup_cause != cause:
                    raise ScenarioFailed(f"phone hung up with {phone.channel.hangup_cause}")

            if ending == "busy":
                await b.request(
                    {"type": "refuse", "inv": invitation["inv"], "response": BUSY_RESPONSE}
                )
                await phone_finished("USER_BUSY")
                return
            if ending == "no_answer":
                await b.request({"type": "ack", "inv": invitation["inv"]})
                await phone_finished("NO_ANSWER")
                return
            if ending == "cancel":
                await self.on_sim(phone.hangup("NORMAL_CLEARING"))
                await b.wait(
                    lambda m: (
                        m.get("type") == "remote_state"
                        and m.get("inv") == invitation["inv"]
                        and m.get("state") == CANCELED
                    ),
                    10,
                    "the invitation cancelled",
                )
                return
            reply = await b.request(
                {"type": "accept", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})}
            )
            if reply.get("type") != "ok":
                raise ScenarioFailed(f"accept refused: {reply}")
            await self.until(lambda: _true(phone.answered), 10, "the phone answered")
            await b.media("gateway", chan, 20)
            if restart is not None:
                self.ready += 1
                await restart.wait()
                await b.peer_cmd("gateway", "EndCall", 30)
                await phone_finished(None)
            elif ending == "answer":
                await b.peer("gateway", Cmd="EndCall", ChanId=chan)
                await phone_finished(None)
            elif ending == "vanish":
                await b.vanish()
                await phone_finished(None)
            elif ending == "phone_hangup":
                await self.on_sim(phone.hangup("NORMAL_CLEARING"))
                await b.peer_cmd("gateway", "EndCall", 10)
        finally:
            await b.close()

    async def one(
        self, slot: int, direction: str, ending: str, restart: asyncio.Event | None = None
    ) -> None:
        name = f"{direction}:{'switch_drops' if restart is not None else ending}"
        run = self.rtc_call if direction == "rtc" else self.sip_call
        try:
            await asyncio.wait_for(run(slot, ending, restart), 90)
        except Exception as exc:
            self.failed += 1
            self.failures[name] = self.failures.get(name, 0) + 1
            if len(self.samples) < 10:
                self.samples.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            self.calls += 1

    # -- rounds --------------------------------------------------------------------------

    async def round(self, index: int, size: int) -> None:
        k = self.args.concurrency
        if (
            self.args.restart_every
            and index % self.args.restart_every == self.args.restart_every - 1
        ):
            await self.restart_round(size)
            return
        jobs = []
        for slot in range(size):
            direction, ending = SCENARIOS[(index * k + slot) % len(SCENARIOS)]
            jobs.append(self.one(slot, direction, ending))
        await asyncio.gather(*jobs)

    async def restart_round(self, size: int) -> None:
        """Answered calls in both directions, then the switch drops under them."""
        restart = asyncio.Event()
        self.ready = 0
        jobs = [
            asyncio.create_task(self.one(slot, "rtc" if slot % 2 else "sip", "answer", restart))
            for slot in range(size)
        ]

        async def all_up() -> bool:
            return self.ready + sum(j.done() for j in jobs) >= size

        with contextlib.suppress(ScenarioFailed):  # a call that failed is counted by one()
            await self.until(all_up, 60, "every call of the round with media")
        await self.on_sim(self.sim.sim.restart())
        restart.set()
        await asyncio.gather(*jobs)

    async def run(self, log: Callable[[str], None]) -> dict[str, Any]:
        args = self.args
        total, k = args.calls, args.concurrency
        warm = min(args.warmup, total)
        done = 0
        index = 0
        baseline: Figures | None = None
        started = time.monotonic()
        while done < total:
            size = min(k, total - done)
            await self.round(index, size)
            index += 1
            done += size
            await self.forget_finished_sim_calls()
            await self.quiet()
            if baseline is None and done >= warm:
                baseline = await self.figures()
                log(f"soak: warm-up done after {done} calls: {baseline}")
            if done % max(k, 100) < k:
                log(
                    f"soak: {done}/{total} calls, {self.failed} failed, "
                    f"{time.monotonic() - started:.0f} s, rss {rss_mb():.1f} MB"
                )
        status = await self.quiet()
        end = await self.figures()
        assert baseline is not None
        return {
            "calls": self.calls,
            "failed": self.failed,
            "leaked_fds": end.fds - baseline.fds,
            "leaked_udp": end.udp - baseline.udp,
            "leaked_tasks": end.tasks - baseline.tasks,
            "leaked_threads": end.threads - baseline.threads,
            "rss_growth_mb": round(end.rss_mb - baseline.rss_mb, 1),
            "channels_left": await self.live_channels(),
            "gateway": status,
            "baseline": baseline,
            "end": end,
            "failures": self.failures,
            "samples": self.samples,
            "seconds": round(time.monotonic() - started, 1),
        }


async def _true(value: bool) -> bool:
    return value


# --------------------------------------------------------------------------- set-up


def extensions(concurrency: int) -> dict[str, Extension]:
    """Per slot: 2SS0 answers (echo), 2SS1 busy, 2SS2 rings then no answer, 2SS3 rings."""
    table: dict[str, Extension] = {}
    for slot in range(concurrency):
        table[f"2{slot:02d}0"] = Extension("echo", audio=AudioSource("echo"))
        table[f"2{slot:02d}1"] = Extension("busy")
        table[f"2{slot:02d}2"] = Extension("no_answer", answer_after=None, ring_seconds=0.3)
        table[f"2{slot:02d}3"] = Extension("ringing", answer_after=None)
    return table


def settings_text(
    esl_port: int, socket_port: int, web_port: int, concurrency: int, presence_grace: float = 0.5
) -> str:
    return f"""
[global]
appid = {APPID}
[rtm2sip]
on = 1
acc_rule = 2[000-{concurrency - 1:02d}9]
[proxy]
on = 1
rtm_account = gateway
[esl]
port = {esl_port}
command_timeout = 5
reconnect_max_delay = 1
[socket]
port = {socket_port}
[web]
port = {web_port}
[auth]
open_mode = 1
[media]
# One port pair per call, and each pair rests 60 s (unicast_port_quarantine) after its
# call: room for max_calls and for a minute of calls at the soak's pace.
unicast_port_min = 30000
unicast_port_max = 31999
# A vanished browser's call is held this long for its return (README, When the
# browser's network changes), then ends as browser_lost.
browser_hold = 1.0
[limits]
max_calls = 1000
max_call_rate = 1000
call_burst = 1000
originate_timeout = 20
invite_expire_timeout = 1
presence_grace = {presence_grace}
max_pending_invitations = 100
"""


def run_soak(
    calls: int = 1000,
    concurrency: int = 8,
    warmup: int = 28,
    restart_every: int = 25,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole soak in this process; call from the main thread (it runs the gevent hub)."""
    if not 1 <= concurrency <= 99:
        raise ValueError("concurrency must be 1-99")
    args = argparse.Namespace(
        calls=calls, concurrency=concurrency, warmup=warmup, restart_every=restart_every
    )
    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(
            socket_target=("127.0.0.1", socket_port),
            extensions=extensions(concurrency),
            first_call_event_delay=0.0,
        )
    ).start()
    web_port = free_port()
    while web_port in (socket_port, sim.esl_port):  # a port just freed may come back
        web_port = free_port()
    gateway = Gateway(
        config.from_text(settings_text(sim.esl_port, socket_port, web_port, concurrency), "<soak>")
    )
    result: dict[str, Any] = {}
    errors: list[BaseException] = []
    try:
        gateway.start()
        with gevent.Timeout(20, False):
            while gateway.controller is None or gateway.controller.esl_state != "connected":
                gevent.sleep(0.05)
        harness = Harness(gateway, sim, args)

        def harness_thread() -> None:
            try:
                result.update(asyncio.run(harness.run(log)))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=harness_thread, name="soak-harness")
        thread.start()
        while thread.is_alive():  # the gevent hub keeps the ESL side running meanwhile
            gevent.sleep(0.05)
        thread.join()
    finally:
        gateway.stop(drain=2.0)
        sim.stop()
    if errors:
        raise errors[0]
    return result


def soak_line(r: dict[str, Any]) -> str:
    return (
        f"soak: calls={r['calls']} failed={r['failed']} leaked_fds={r['leaked_fds']} "
        f"leaked_udp={r['leaked_udp']} leaked_tasks={r['leaked_tasks']} "
        f"leaked_threads={r['leaked_threads']} rss_growth_mb={r['rss_growth_mb']} "
        f"channels_left={r['channels_left']}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8, help="calls at once (1-99)")
    parser.add_argument("--warmup", type=int, default=28, help="calls before the baseline")
    parser.add_argument(
        "--restart-every", type=int, default=25, help="every Nth round the switch drops (0: never)"
    )
    args = parser.parse_args()
    loopback_namespace.enter("soak")
    from esl_bridge.config import LogSettings
    from esl_bridge.logs import configure_logging

    configure_logging(
        LogSettings(level=3, file="", max_file_size=100, backup_count=5, json=False, console="on")
    )
    logging.getLogger("aioice").setLevel(logging.ERROR)
    logging.getLogger("aiortc").setLevel(logging.ERROR)
    r = run_soak(args.calls, args.concurrency, args.warmup, args.restart_every)
    print(f"soak: {r['seconds']} s; gateway at the end {r['gateway']}")
    print(f"soak: figures after warm-up {r['baseline']}")
    print(f"soak: figures at the end    {r['end']}")
    if r["failures"]:
        print(f"soak: failures by scenario {r['failures']}")
        for sample in r["samples"]:
            print(f"  {sample}")
    line = soak_line(r)
    print(line, flush=True)
    clean = r["failed"] == 0 and all(
        r[k] == 0
        for k in ("leaked_fds", "leaked_udp", "leaked_tasks", "leaked_threads", "channels_left")
    )
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
