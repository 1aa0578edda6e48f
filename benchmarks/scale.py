"""Scaling out: bridged calls per core with 1 and 2 gateway processes, and the call-setup
latency cross-process signalling adds.

**Bridged calls.** For ``workers`` = 1, then 2, with ``[cluster] redis_url`` set (one
throwaway redis-server, ``--save ''``). By default (``--layout workers``) as deployed on one
host: one ``esl-bridge run --workers N`` (a supervisor and N worker processes sharing one
web port and one outbound socket port through ``SO_REUSEPORT``), ready when the supervisor
says ``READY=1`` on a ``NOTIFY_SOCKET`` of the benchmark's. The kernel gives each browser's
WebSocket and each call's outbound socket to a worker, so about half the calls have their
browser on one worker and their media on the other (the signalling relayed through Redis,
the media on the socket's worker), as in production. ``--layout processes``: N separate
``esl-bridge run`` processes, each with its own ports, every call's browser on the worker
its socket lands on (round robin): no relayed signalling. The simulator (in this process)
places the SIP calls, each to its own web user. Each web user is an aiortc peer in
this process, built as benchmarks/media_cost.py builds its far end
(``PacketTrack``: pre-encoded Opus packets, so aiortc only packs them; ears through the
gateway's own receive tap, ``tap_receiver``, counting packets: no jitter buffer, no
decoder), so the far end stays cheap; it is not measured. Once
every call carries audio both ways, the CPU time of the gateway processes (utime + stime
of /proc/<pid>/stat, all threads; the supervisor and its workers) is read over
``--window`` seconds, less what the same processes spent in a window of the same length
before any call (heartbeats, timers), as benchmarks/media_cost.py does:

    calls_per_core = calls / ((gateway CPU seconds - idle CPU seconds) / window seconds)
    speedup = 2 * calls_per_core(workers=2) / calls_per_core(workers=1)

(``speedup``: the capacity of two workers, one core each, over one worker on one core.)
Each worker carries the same load in both runs: ``--calls`` calls per worker (10; 4 with
``--quick``), so one worker bridges ``--calls`` calls and two bridge twice as many. That is
what capacity means: a second worker is added to take as many calls again, not to halve
the first one's; and an event loop's cost per call falls as it carries more calls (its
wake-ups grow more slowly than its calls), so splitting a fixed number of calls over two
loops would charge the second worker for carrying less. The same-total comparison is
printed too (one worker with the two workers' calls, ``same_total``), so both are seen.
A run is invalid (and says why) when a browser received fewer than 80 % of the packets
due in the window, or when a worker was restarted during it. ``--repeat N`` alternates N
rounds of the three runs and uses the median ``calls_per_core`` of each kind's valid
runs: on two cores shared with the far end, one pair of runs varies by +-10 %.

**Signalling** (``--simulate-hosts N``, N >= 2): N processes on loopback stand for N
hosts. A web user invites another that auto-accepts; the setup time is from sending
``invite`` to receiving ``local_state`` ACCEPTED_BY_REMOTE. Pairs on the same process,
then on different processes, ``--samples`` each, one at a time:

    added_setup_p99_ms = p99(cross-process) - p99(same process)

Run it in a loopback-only network namespace (it re-executes itself under ``unshare -n``
when the host has other interfaces; run as root)::

    python3 benchmarks/scale.py --quick --simulate-hosts 3

The last lines::

    scale: same_total calls=.. workers=1 calls_per_core=.. | workers=2 calls_per_core=.. speedup=..
    scale: workers=1 calls_per_core=.. | workers=2 calls_per_core=.. speedup=..
    scale: simulate_hosts=3 setup_p99_ms local=.. cross=.. added=..
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
import loopback_namespace  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from media_cost import PacketTrack, encoded_cycle, offer_only  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

from esl_bridge.gateway.demo import free_port  # noqa: E402
from esl_bridge.media.leg import use_host_addresses  # noqa: E402
from esl_bridge.media.rtp_receive import tap_receiver  # noqa: E402
from esl_bridge.sim import SimConfig, SimulatorThread  # noqa: E402

APPID = "scale"
TICKS = os.sysconf("SC_CLK_TCK")


class Worker:
    """``esl-bridge run``: one gateway process, or with ``workers`` > 1 the supervisor of
    ``run --workers N`` and its workers (one web port and one socket port for all)."""

    def __init__(
        self, tmp: Path, index: int, sim: SimulatorThread, redis_url: str, workers: int = 1
    ) -> None:
        self.web_port = free_port()
        self.socket_port = free_port()
        self.workers = workers
        self.pids: list[int] = []  # the processes measured, once ready
        conf = tmp / f"worker-{index}.conf"
        conf.write_text(
            textwrap.dedent(
                f"""\
                [global]
                appid = {APPID}
                [rtm2sip]
                on = 1
                acc_rule = 10[00-19]
                [proxy]
                on = 1
                [esl]
                port = {sim.esl_port}
                password = {sim.password}
                [socket]
                port = {self.socket_port}
                [web]
                port = {self.web_port}
                max_connections_per_ip = 1000
                [auth]
                open_mode = 1
                [log]
                level = 1
                console = off
                [media]
                unicast_port_min = {30000 + index * 2000}
                unicast_port_max = {31999 + index * 2000}
                [limits]
                max_calls = 500
                max_call_rate = 1000
                call_burst = 1000
                messages_per_second = 1000
                [cluster]
                node_id = scale-{index}
                redis_url = {redis_url}
                """
            )
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        command = [sys.executable, "-m", "esl_bridge", "run", str(conf)]
        self._notify: socket.socket | None = None
        if workers > 1:
            # The supervisor says READY=1 here once every worker has.
            self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._notify.bind(str(tmp / f"notify-{index}.sock"))
            self._notify.setblocking(False)
            env["NOTIFY_SOCKET"] = str(tmp / f"notify-{index}.sock")
            command += ["--workers", str(workers)]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    async def healthy(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(90):
            while True:
                if self.proc.poll() is not None:
                    raise SystemExit(f"scale: worker exited with {self.proc.returncode}")
                if self._notify is not None:
                    with contextlib.suppress(BlockingIOError):
                        if b"READY=1" in self._notify.recv(4096):
                            break
                else:
                    with contextlib.suppress(aiohttp.ClientError):
                        url = f"http://127.0.0.1:{self.web_port}/healthz"
                        async with session.get(url) as reply:
                            if reply.status == 200:
                                break
                await asyncio.sleep(0.1)
        self.pids = [self.proc.pid, *children(self.proc.pid)]
        if len(self.pids) != 1 + (self.workers if self.workers > 1 else 0):
            raise SystemExit(f"scale: expected {self.workers} workers, found {self.pids[1:]}")

    def restarted(self) -> bool:
        """A worker was replaced since it became ready (its measure would be wrong)."""
        return self.workers > 1 and sorted(children(self.proc.pid)) != sorted(self.pids[1:])

    def cpu_seconds(self) -> float:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(FileNotFoundError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
        return total / TICKS

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._notify is not None:
            self._notify.close()


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    for tasks in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError):
            found += [int(c) for c in tasks.read_text().split()]
    return found


class User:
    """One web user's WebSocket; ``auto_accept`` answers every invitation at once."""

    def __init__(self, uid: str, auto_accept: bool = False) -> None:
        self.uid = uid
        self.auto_accept = auto_accept
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    async def connect(self, session: aiohttp.ClientSession, port: int) -> User:
        self.ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws")
        self._task = asyncio.create_task(self._read())
        await self.send({"type": "login", "appid": APPID, "uid": self.uid})
        await self.expect(lambda m: m.get("type") == "ok")
        return self

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            if self.auto_accept and message.get("type") == "invitation":
                await self.send({"type": "accept", "inv": message["inv"], "response": ""})
                continue
            self.inbox.put_nowait(message)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        self._next += 1
        await self.ws.send_str(json.dumps({"v": 1, "id": self._next, **message}))

    async def expect(self, match: Any, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.inbox.get()
                if match(message):
                    return message

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.ws is not None:
            await self.ws.close()


class Browser:
    """The web user's media: pre-encoded Opus out, RTP packets counted in."""

    def __init__(self, cycle: list[bytes]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        offer_only(self.pc, PacketTrack("opus", cycle), "opus")
        tap_receiver(self.pc.getTransceivers()[0].receiver, self._on_packet)
        self.heard = 0

    def _on_packet(self, packet: Any, arrival: float) -> None:
        if packet.payload:
            self.heard += 1

    async def answer_call(self, user: User) -> None:
        invitation = await user.expect(lambda m: m.get("type") == "invitation")
        chan_id = json.loads(invitation["content"])["ChanId"]
        await user.send({"type": "accept", "inv": invitation["inv"], "response": '{"Mode":1}'})
        with use_host_addresses(["127.0.0.1"]):
            await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = {"Cmd": "Offer", "ChanId": chan_id, "Sdp": self.pc.localDescription.sdp}
        await user.send({"type": "message", "to": "gateway", "text": json.dumps(offer)})

        def is_answer(m: dict[str, Any]) -> bool:
            return m.get("type") == "message" and '"Answer"' in m.get("text", "")

        answer = json.loads((await user.expect(is_answer))["text"])
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["Sdp"], "answer"))

    async def close(self) -> None:
        await self.pc.close()


async def bridged_run(
    tmp: Path,
    sim: SimulatorThread,
    redis_url: str,
    workers: int,
    calls: int,
    window: float,
    layout: str = "workers",
) -> tuple[float, list[str]]:
    if layout == "workers":  # one supervisor; every call to its one pair of ports
        procs = [Worker(tmp, workers, sim, redis_url, workers=workers)]
    else:
        procs = [Worker(tmp, i, sim, redis_url) for i in range(workers)]
    ports = len(procs)
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:
        try:
            for w in procs:
                await w.healthy(session)
            idle0 = [w.cpu_seconds() for w in procs]
            t_idle = time.monotonic()
            await asyncio.sleep(window)
            idle_rate = sum(w.cpu_seconds() - c for w, c in zip(procs, idle0, strict=True)) / (
                time.monotonic() - t_idle
            )
            users = [
                await User(f"u{workers}x{k}").connect(session, procs[k % ports].web_port)
                for k in range(calls)
            ]
            cycle = encoded_cycle("opus")
            browsers = [Browser(cycle) for _ in range(calls)]
            phones = []
            for k, (user, browser) in enumerate(zip(users, browsers, strict=True)):
                target = ("127.0.0.1", procs[k % ports].socket_port)
                phones.append(
                    await asyncio.to_thread(
                        sim.place_call, f"2{k:03d}", f"0{user.uid}", target=target
                    )
                )
                await browser.answer_call(user)
            async with asyncio.timeout(60):
                while any(b.heard < 50 for b in browsers):  # 1 s of audio each
                    await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # settle
            heard = [b.heard for b in browsers]
            cpu0 = [w.cpu_seconds() for w in procs]
            t0 = time.monotonic()
            await asyncio.sleep(window)
            elapsed = time.monotonic() - t0
            cpu = sum(w.cpu_seconds() - c for w, c in zip(procs, cpu0, strict=True))
            for b, before in zip(browsers, heard, strict=True):
                if b.heard - before < 0.8 * elapsed * 50:
                    problems.append(f"a browser got {b.heard - before} packets in {elapsed:.1f}s")
            if any(w.restarted() for w in procs):
                problems.append("a worker was restarted during the run")
            for phone in phones:
                await asyncio.to_thread(phone.hangup)
            for b in browsers:
                await b.close()
            for u in users:
                await u.close()
        finally:
            for w in procs:
                await asyncio.to_thread(w.stop)
    cores = cpu / elapsed - idle_rate
    verdict = "VALID" if not problems else "INVALID: " + "; ".join(problems)
    print(
        f"  workers={workers} layout={layout} calls={calls} "
        f"gateway_cpu={cpu:.2f}s over {elapsed:.1f}s "
        f"idle_cores={idle_rate:.3f} call_cores={cores:.2f} {verdict}",
        flush=True,
    )
    return calls / cores, problems


async def signalling_run(
    tmp: Path, sim: SimulatorThread, redis_url: str, hosts: int, samples: int
) -> tuple[float, float]:
    procs = [Worker(tmp, 10 + i, sim, redis_url) for i in range(hosts)]
    async with aiohttp.ClientSession() as session:
        try:
            for w in procs:
                await w.healthy(session)
            callers = [
                await User(f"caller{i}").connect(session, w.web_port) for i, w in enumerate(procs)
            ]
            callees = [
                await User(f"callee{i}", auto_accept=True).connect(session, w.web_port)
                for i, w in enumerate(procs)
            ]
            # Every callee online for every caller before measuring.
            for caller in callers:
                for callee in callees:
                    while True:
                        await caller.send({"type": "query", "uids": [callee.uid]})
                        reply = await caller.expect(lambda m: m.get("type") == "ok")
                        if reply["peers"][callee.uid]:
                            break
                        await asyncio.sleep(0.05)
            results: dict[str, list[float]] = {"local": [], "cross": []}
            n = 0
            for kind in ("local", "cross"):
                for s in range(samples):
                    i = s % hosts
                    j = i if kind == "local" else (i + 1 + s // hosts % (hosts - 1)) % hosts
                    n += 1
                    ref = f"r{n}"
                    t0 = time.perf_counter()
                    await callers[i].send(
                        {"type": "invite", "ref": ref, "callee": callees[j].uid, "content": ""}
                    )
                    await callers[i].expect(
                        lambda m, ref=ref: (
                            m.get("type") == "local_state"
                            and m.get("ref") == ref
                            and m.get("state_name") == "ACCEPTED_BY_REMOTE"
                        )
                    )
                    results[kind].append((time.perf_counter() - t0) * 1000)
            for u in (*callers, *callees):
                await u.close()
        finally:
            for w in procs:
                await asyncio.to_thread(w.stop)
    print(
        f"  setup p50_ms local={pct(results['local'], 50):.2f} "
        f"cross={pct(results['cross'], 50):.2f} (n={samples} each)",
        flush=True,
    )
    return pct(results["local"], 99), pct(results["cross"], 99)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def main_async(args: argparse.Namespace) -> None:
    redis = RedisServer().start()
    sim = SimulatorThread(SimConfig(first_call_event_delay=0.0)).start()
    try:
        with tempfile.TemporaryDirectory(prefix="esl-bridge-scale-") as tmp:
            # The runs alternate, so a slow spell of the machine weighs on all of them;
            # the medians of the valid runs make the lines. Kinds: (workers, calls).
            per_worker, total = args.calls, 2 * args.calls
            kinds = [(1, per_worker), (2, total), (1, total)]
            valid: dict[tuple[int, int], list[float]] = {kind: [] for kind in kinds}
            for run in range(args.repeat):
                for workers, calls in kinds:
                    where = Path(tmp) / f"run{run}-{workers}-{calls}"  # its sockets and files
                    where.mkdir()
                    value, problems = await bridged_run(
                        where, sim, redis.url, workers, calls, args.window, args.layout
                    )
                    if not problems:
                        valid[(workers, calls)].append(value)
            cpc = {kind: statistics.median(v) for kind, v in valid.items() if v}
            counts = " and ".join(str(len(valid[kind])) for kind in kinds)
            runs = f" (medians of {counts} valid runs)" if args.repeat > 1 else ""

            def compared(one: tuple[int, int], two: tuple[int, int]) -> str:
                return (
                    f"workers=1 calls_per_core={cpc[one]:.1f} | workers=2 "
                    f"calls_per_core={cpc[two]:.1f} speedup={2 * cpc[two] / cpc[one]:.2f}"
                )

            if (2, total) in cpc and (1, total) in cpc:
                same = compared((1, total), (2, total))
                print(f"scale: same_total calls={total} {same}", flush=True)
            if (1, per_worker) in cpc and (2, total) in cpc:
                print(
                    f"scale: {compared((1, per_worker), (2, total))}"
                    f" (calls per worker={per_worker}){runs}",
                    flush=True,
                )
            else:
                print("scale: NOT VALID: no valid run of 1 or of 2 workers", flush=True)
            if args.simulate_hosts >= 2:
                local, cross = await signalling_run(
                    Path(tmp), sim, redis.url, args.simulate_hosts, args.samples
                )
                print(
                    f"scale: simulate_hosts={args.simulate_hosts} setup_p99_ms "
                    f"local={local:.2f} cross={cross:.2f} added={cross - local:.2f}",
                    flush=True,
                )
    finally:
        sim.stop()
        redis.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few calls, short window")
    parser.add_argument(
        "--calls", type=int, default=None, help="bridged calls per worker (10; --quick 4)"
    )
    parser.add_argument("--window", type=float, default=None, help="measured seconds")
    parser.add_argument(
        "--simulate-hosts", type=int, default=0, help="processes standing for hosts"
    )
    parser.add_argument("--samples", type=int, default=None, help="setups per kind")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of the runs (medians are used)"
    )
    parser.add_argument(
        "--layout",
        choices=("workers", "processes"),
        default="workers",
        help="run --workers N on shared ports (default), or N processes with ports of their own",
    )
    args = parser.parse_args()
    args.calls = args.calls or (4 if args.quick else 10)
    args.window = args.window or (5.0 if args.quick else 15.0)
    args.samples = args.samples or (60 if args.quick else 300)
    loopback_namespace.enter("scale")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
