"""CPU per member of a conference room (issue 14): the gateway's, and the switch's.

One ``esl-bridge run`` process (the gateway) drives a FreeSWITCH: the simulator (in this
process) unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` names a real one. For each
room size (3, then 10 members) web members join one room (``ConfJoin``, then their Offer)
and the first of them, the moderator, invites phones by number (``"Conference":true``).
Against the simulator the phones are simulated tone phones (``PHONES``: each its own
tone); against a real switch the one registered phone ``ESL_BRIDGE_FREESWITCH_USER``
(default 1001, an auto-answering phone that plays a file).

Web members are aiortc peers built as benchmarks/media_cost.py builds its far end: they
send pre-encoded Opus packets (``PacketTrack``: 100 ms 1 kHz bursts every 500 ms; aiortc
only packs them) and hear through the gateway's own receive tap (``tap_receiver``), each
payload decoded inline with PyAV's libopus (no jitter buffer, no decoder thread). They run
in this process, which is not measured.

Once every member hears audio, the CPU time (utime + stime of /proc/<pid>/stat, all
threads) of the gateway process is read over ``--window`` seconds, less what the same
process spent in a window of the same length before any room (``idle``), as
benchmarks/scale.py does; with a real switch on this host, the FreeSWITCH process's too
(its pid from ``ESL_BRIDGE_FREESWITCH_PID``, else the one process named ``freeswitch``):

    gateway_cpu_per_member_pct = 100 * (gateway CPU s / window s - idle) / members
    switch_cpu_per_member_pct  = 100 * (switch CPU s / window s - its idle) / members

A point is valid only when every member heard audio during the window: each web member
received >= 80 % of the packets due and sound (a frame louder than ``LOUD``) in >= 10 %
of them (a room always holds a phone's continuous tone or another web member's bursts);
each phone heard sound (the simulator keeps what each member hears; a real switch records
the phone's leg for 1.5 s with ``uuid_record``, ``RECORD_STEREO``: the written side).
A room that could not be made (a join or an invitation refused) is INVALID too.
Otherwise the line says INVALID and why.

Everything runs in a loopback-only network namespace: the script re-executes itself under
``unshare -n`` (run as root). A real switch on the host's loopback is reached from there
through tests/support/host_bridge.py (its ESL port and the unicast ports of ``[media]``,
``UNICAST_PORTS``), as the ``freeswitch``-marked tests do::

    python3 benchmarks/conference_cost.py --quick
    ESL_BRIDGE_FREESWITCH=127.0.0.1:8021:ClueCon python3 benchmarks/conference_cost.py --quick

The last lines::

    conference_cost: members=3 gateway_cpu_per_member_pct=.. switch_cpu_per_member_pct=..
    conference_cost: members=10 gateway_cpu_per_member_pct=.. switch_cpu_per_member_pct=..
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
import wave
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
import av  # noqa: E402
import loopback_namespace  # noqa: E402
import numpy as np  # noqa: E402
import structlog  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription  # noqa: E402
from media_cost import PacketTrack, encoded_cycle, offer_only  # noqa: E402

from esl_bridge.gateway.demo import free_port  # noqa: E402
from esl_bridge.media.leg import use_host_addresses  # noqa: E402
from esl_bridge.media.rtp_receive import tap_receiver  # noqa: E402
from esl_bridge.sim import SimConfig, SimulatorThread  # noqa: E402
from esl_bridge.sim.extensions import Extension, default_extensions  # noqa: E402
from esl_bridge.sim.media import AudioSource  # noqa: E402

APPID = "confbench"
GATEWAY_UID = "gateway"
TICKS = os.sysconf("SC_CLK_TCK")
FRAMES_PER_S = 50
LOUD = 1000  # a 20 ms frame whose peak exceeds this carries sound (int16)
MIN_PACKETS = 0.8  # share of the packets due a web member must receive in the window
MIN_LOUD = 0.1  # share of the packets due that must carry sound
#: Simulated tone phones (number, Hz): the simulator's 1000 and 1002, and more made here.
PHONES: tuple[tuple[str, float], ...] = (
    ("1000", 440.0),
    ("1002", 2000.0),
    ("1012", 600.0),
    ("1013", 1300.0),
)
#: The unicast ports of [media] when the switch is real (bridged into the namespace).
UNICAST_PORTS = (31400, 31459)
_FS_ENV = "ESL_BRIDGE_FREESWITCH"


# --------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class SwitchTarget:
    host: str
    port: int
    password: str


def parse_target(text: str) -> SwitchTarget | None:
    """``host:port:password`` (the password may hold colons); empty: the simulator."""
    if not text:
        return None
    parts = text.split(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[0] or not parts[2]:
        raise ValueError(f"{_FS_ENV} wants host:port:password, got {text.split(':')[0]}:...")
    return SwitchTarget(parts[0], int(parts[1]), parts[2])


def member_plan(members: int, phones: Sequence[str]) -> tuple[int, list[str]]:
    """How many web members and which phones make a room of ``members``: about a quarter
    phones (at least one, at most those available), the rest web members (at least one)."""
    if members < 2:
        raise ValueError("a room needs at least 2 members")
    if not phones:
        raise ValueError("no phone to invite")
    n_phones = min(len(phones), max(1, members // 4), members - 1)
    return members - n_phones, list(phones[:n_phones])


def stat_cpu_seconds(stat: str, ticks: int = TICKS) -> float:
    """utime + stime of a /proc/<pid>/stat line, in seconds (the command name may hold
    spaces and parentheses: fields are counted after the last ')')."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def cpu_per_member_pct(cpu_s: float, elapsed_s: float, idle_share: float, members: int) -> float:
    """Percent of one core per member: the process's share of a core over the window less
    its idle share, divided by the members (never below 0)."""
    return max(0.0, cpu_s / elapsed_s - idle_share) * 100 / members


def find_pid(name: str, proc: Path = Path("/proc")) -> int | None:
    """The one process whose ``comm`` is ``name``; None when none or several."""
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == name:
            found.append(int(entry.name))
    return found[0] if len(found) == 1 else None


class Ear:
    """A web member's ear on the tap: RTP payloads decoded inline (Opus, libopus), counting
    packets and frames louder than ``LOUD``."""

    def __init__(self) -> None:
        self.packets = 0
        self.loud = 0
        self.repeats = 0  # packets whose sequence number came already (not counted)
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self.decoder = av.CodecContext.create("libopus", "r")
        self.decoder.format = "s16"
        self.decoder.layout = "mono"
        self.decoder.sample_rate = 48000

    def on_packet(self, packet: Any, arrival: float = 0.0) -> None:
        if not packet.payload:
            return
        seq = getattr(packet, "sequence_number", None)
        if seq is not None:
            if seq in self._seen:
                self.repeats += 1
                return
            self._seen.add(seq)
            self._order.append(seq)
            if len(self._order) > 2000:
                self._seen.discard(self._order.popleft())
        self.packets += 1
        for frame in self.decoder.decode(av.Packet(packet.payload)):
            if int(np.abs(frame.to_ndarray()).max()) > LOUD:
                self.loud += 1
                break

    def count(self) -> tuple[int, int]:
        return self.packets, self.loud


def web_problems(
    name: str, before: tuple[int, int], after: tuple[int, int], elapsed: float
) -> list[str]:
    """Why a web member did not hear the room during the window (empty: it did)."""
    due = elapsed * FRAMES_PER_S
    packets, loud = after[0] - before[0], after[1] - before[1]
    why = []
    if packets < MIN_PACKETS * due:
        why.append(f"{name} received {packets} of {due:.0f} packets due")
    if loud < MIN_LOUD * due:
        why.append(f"{name} heard sound in {loud} of {due:.0f} frames")
    return why


def loud_frames(pcm: bytes, frame_bytes: int = 320) -> int:
    """20 ms frames (L16 little-endian, 8 kHz by default) whose peak exceeds ``LOUD``."""
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int32)
    per = frame_bytes // 2
    n = len(samples) // per
    if n == 0:
        return 0
    return int((np.abs(samples[: n * per].reshape(n, per)).max(axis=1) > LOUD).sum())


def list_number(caller_id_number: str) -> str:
    """The phone's number in a line of ``conference <room> list``: a real switch shows an
    originated phone leg's contact user there (``1001-0x557d65a13620``), not its number
    (tests/fixtures/freeswitch/conference/esl_inbound_conference_phone.txt)."""
    return caller_id_number.split("-0x", 1)[0]


def result_line(members: int, gateway_pct: float, switch_pct: float | None, why: list[str]) -> str:
    switch = "n/a" if switch_pct is None else f"{switch_pct:.2f}"
    tail = "" if not why else " INVALID: " + "; ".join(why)
    return (
        f"conference_cost: members={members} gateway_cpu_per_member_pct={gateway_pct:.2f} "
        f"switch_cpu_per_member_pct={switch}{tail}"
    )


# --------------------------------------------------------------------------- processes


class GatewayProcess:
    """``esl-bridge run`` on a configuration written here."""

    def __init__(
        self, tmp: Path, esl: SwitchTarget, socket_port: int, phones: Sequence[str], real: bool
    ) -> None:
        self.web_port = free_port()
        media = (
            f"unicast_port_min = {UNICAST_PORTS[0]}\nunicast_port_max = {UNICAST_PORTS[1]}"
            if real
            else "unicast_port_min = 33000\nunicast_port_max = 33999"
        )
        conf = tmp / "gateway.conf"
        lines = f"""\
            [global]
            appid = {APPID}
            [rtm2sip]
            on = 1
            acc_rule = {";".join(phones)}
            [proxy]
            on = 1
            rtm_account = {GATEWAY_UID}
            [esl]
            host = 127.0.0.1
            port = {esl.port}
            password = {esl.password}
            [socket]
            port = {socket_port}
            [web]
            port = {self.web_port}
            max_connections_per_ip = 1000
            [auth]
            open_mode = 1
            [log]
            level = 1
            console = off
            [media]
            {{media}}
            [limits]
            max_calls = 30
            max_call_rate = 1000
            call_burst = 1000
            messages_per_second = 1000
            originate_timeout = 20
            """
        conf.write_text(textwrap.dedent(lines).replace("{media}", media))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esl_bridge", "run", str(conf)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=(tmp / "gateway.err").open("wb"),
        )
        self.err = tmp / "gateway.err"

    async def healthy(self, session: aiohttp.ClientSession) -> None:
        async with asyncio.timeout(60):
            while True:
                if self.proc.poll() is not None:
                    tail = self.err.read_text(errors="replace")[-1500:]
                    raise SystemExit(
                        f"conference_cost: gateway exited ({self.proc.returncode}):\n{tail}"
                    )
                with contextlib.suppress(aiohttp.ClientError):
                    url = f"http://127.0.0.1:{self.web_port}/healthz"
                    async with session.get(url) as reply:
                        if reply.status == 200:
                            return
                await asyncio.sleep(0.2)

    def cpu_seconds(self) -> float:
        return stat_cpu_seconds(Path(f"/proc/{self.proc.pid}/stat").read_text())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class User:
    """A web user's WebSocket (the signalling protocol, as scale.py speaks it)."""

    def __init__(self, uid: str) -> None:
        self.uid = uid
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
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.inbox.put_nowait(json.loads(msg.data))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        self._next += 1
        await self.ws.send_str(json.dumps({"v": 1, "id": self._next, **message}))

    async def peer(self, **body: Any) -> None:
        await self.send({"type": "message", "to": GATEWAY_UID, "text": json.dumps(body)})

    async def expect(self, match: Any, timeout: float = 30) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.inbox.get()
                if match(message):
                    return message

    async def expect_cmd(self, cmd: str, timeout: float = 30) -> dict[str, Any]:
        def match(m: dict[str, Any]) -> bool:
            if m.get("type") != "message":
                return False
            with contextlib.suppress(ValueError):
                return bool(json.loads(m["text"]).get("Cmd") == cmd)
            return False

        return dict(json.loads((await self.expect(match, timeout))["text"]))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.ws is not None:
            await self.ws.close()


@dataclass
class WebMember:
    user: User
    pc: RTCPeerConnection
    ear: Ear = field(default_factory=Ear)


async def join_web(user: User, chan_id: str, cycle: list[bytes]) -> WebMember:
    """ConfJoin, then the Offer/Answer of the member's leg."""
    await user.peer(Cmd="ConfJoin", ChanId=chan_id, DisplayName=user.uid)
    joined = await user.expect_cmd("ConfJoined")
    if joined.get("ChanId") != chan_id:
        raise RuntimeError(f"unexpected ConfJoined {joined}")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    offer_only(pc, PacketTrack("opus", cycle), "opus")
    member = WebMember(user, pc)
    tap_receiver(pc.getTransceivers()[0].receiver, member.ear.on_packet)
    with use_host_addresses(["127.0.0.1"]):
        await pc.setLocalDescription(await pc.createOffer())
    await user.peer(Cmd="Offer", ChanId=chan_id, Sdp=pc.localDescription.sdp)
    answer = await user.expect_cmd("Answer")
    await pc.setRemoteDescription(RTCSessionDescription(answer["Sdp"], "answer"))
    return member


async def invite_phone(user: User, number: str, chan_id: str) -> None:
    ref = f"{chan_id}-{number}"
    content = {"Mode": 1, "Conference": True, "ChanId": chan_id}
    await user.send(
        {
            "type": "invite",
            "ref": ref,
            "callee": number,
            "content": json.dumps(content),
            "channel_id": chan_id,
        }
    )
    state = await user.expect(
        lambda m: (
            m.get("type") == "local_state"
            and m.get("ref") == ref
            and m.get("state_name") in ("ACCEPTED_BY_REMOTE", "REFUSED_BY_REMOTE", "FAILURE")
        ),
        timeout=60,
    )
    if state["state_name"] != "ACCEPTED_BY_REMOTE":
        raise RuntimeError(f"phone {number} not in the room: {state}")


class Switch:
    """What the benchmark asks of the switch: the phones' ears, its CPU, the room gone."""

    def __init__(self, sim: SimulatorThread | None, target: SwitchTarget, pid: int | None):
        self.sim = sim
        self.target = target
        self.pid = pid
        #: Unicast datagrams the host bridge carried from a real switch so far (None: sim).
        self.from_switch: Callable[[], int] | None = None

    def cpu_seconds(self) -> float | None:
        if self.pid is None:
            return None
        return stat_cpu_seconds(Path(f"/proc/{self.pid}/stat").read_text())

    async def api(self, command: str) -> str:
        if self.sim is not None:
            return await asyncio.to_thread(self.sim.api, command)
        return await asyncio.to_thread(esl_api, self.target, command)

    async def phone_heard(self, number: str, room: str) -> int:
        """Loud 20 ms frames the phone heard lately (the simulator's last second, or a 1.5 s
        recording on a real switch)."""
        if self.sim is not None:
            sim = self.sim

            def frames() -> list[bytes]:
                for r in sim.sim.rooms.values():
                    for m in r.members.values():
                        presence = getattr(m.channel, "presence_id", "") or ""
                        if m.partner is None and presence.split("@")[0] == number:
                            return list(m.heard)[-FRAMES_PER_S:]
                return []

            return loud_frames(b"".join(sim.run_sync(frames)))
        return await self._record_phone(number, room)

    async def _record_phone(self, number: str, room: str) -> int:
        listing = await self.api(f"conference {room} list")
        uuids = [
            fields[2]
            for fields in (line.split(";") for line in listing.splitlines())
            if len(fields) >= 9 and list_number(fields[4]) == number
        ]
        if not uuids:
            return 0
        path = Path(tempfile.gettempdir()) / f"conference_cost-{uuid.uuid4().hex}.wav"
        try:
            # A stereo recording holds what the channel read (left) and what it wrote to
            # the phone (right): the right channel is what the phone heard.
            await self.api(f"uuid_setvar {uuids[0]} RECORD_STEREO true")
            # With a limit of 1 s FreeSWITCH 1.10.12 kept 20 ms only: a longer limit, then
            # stop after about a second, then read once the file holds it.
            await self.api(f"uuid_record {uuids[0]} start {path} 10")
            await asyncio.sleep(1.5)
            await self.api(f"uuid_record {uuids[0]} stop {path}")
            rate, channels, pcm = 0, 0, b""
            async with asyncio.timeout(15):
                while True:
                    await asyncio.sleep(0.5)
                    with (
                        contextlib.suppress(OSError, wave.Error, EOFError),
                        wave.open(str(path), "rb") as w,
                    ):
                        rate, channels = w.getframerate(), w.getnchannels()
                        pcm = w.readframes(w.getnframes())
                        if w.getsampwidth() != 2:
                            return 0
                    if rate and len(pcm) >= rate * channels * 2 * 0.8:
                        break
            if channels != 2:
                return 0
            pcm = np.frombuffer(pcm, dtype="<i2").reshape(-1, 2)[:, 1].tobytes()
            return loud_frames(pcm, rate // FRAMES_PER_S * 2)
        except TimeoutError:
            return 0
        finally:
            path.unlink(missing_ok=True)


def esl_api(target: SwitchTarget, command: str) -> str:
    """One ``api`` command on a fresh inbound ESL connection (127.0.0.1 of this namespace:
    the bridged port of a real switch). Short and blocking; the password never printed."""
    with socket.create_connection(("127.0.0.1", target.port), timeout=10) as sock:
        reader = sock.makefile("rb")

        def read_message() -> tuple[dict[str, str], bytes]:
            headers: dict[str, str] = {}
            while (line := reader.readline().decode().rstrip("\n")) != "":
                key, _, value = line.partition(": ")
                headers[key] = value
            body = reader.read(int(headers.get("Content-Length", "0") or 0))
            return headers, body

        read_message()  # auth/request
        sock.sendall(f"auth {target.password}\n\n".encode())
        headers, _ = read_message()
        if not headers.get("Reply-Text", "").startswith("+OK"):
            raise RuntimeError("ESL authentication refused")
        sock.sendall(f"api {command}\n\n".encode())
        while True:
            headers, body = read_message()
            if headers.get("Content-Type") == "api/response":
                return body.decode(errors="replace")


# --------------------------------------------------------------------------- one room


@dataclass
class Point:
    members: int
    gateway_pct: float
    switch_pct: float | None
    why: list[str]


async def room_run(
    session: aiohttp.ClientSession,
    gateway: GatewayProcess,
    switch: Switch,
    members: int,
    phones: Sequence[str],
    idle: tuple[float, float | None],
    warmup: float,
    window: float,
) -> Point:
    chan_id = f"bench{members}"
    room = f"eb-{APPID}-{chan_id}"
    n_web, invited = member_plan(members, phones)
    cycle = encoded_cycle("opus")
    users = [await User(f"w{members}x{k}").connect(session, gateway.web_port) for k in range(n_web)]
    web: list[WebMember] = []
    why: list[str] = []
    try:
        try:
            for user in users:
                web.append(await join_web(user, chan_id, cycle))
            for number in invited:
                await invite_phone(users[0], number, chan_id)
        except (RuntimeError, TimeoutError) as exc:
            return Point(members, math.nan, None, [f"the room was not made: {exc!r}"])
        # Measured even when someone hears nothing after a minute: the point is INVALID.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(60):
                while any(m.ear.count()[1] < FRAMES_PER_S // 2 for m in web):
                    await asyncio.sleep(0.2)
        await asyncio.sleep(warmup)
        before = [m.ear.count() for m in web]
        dgrams0 = switch.from_switch() if switch.from_switch else 0
        gw0, sw0, t0 = gateway.cpu_seconds(), switch.cpu_seconds(), time.monotonic()
        await asyncio.sleep(window)
        gw1, sw1, t1 = gateway.cpu_seconds(), switch.cpu_seconds(), time.monotonic()
        dgrams1 = switch.from_switch() if switch.from_switch else 0
        elapsed = t1 - t0
        after = [m.ear.count() for m in web]
        for m, b, a in zip(web, before, after, strict=True):
            why += web_problems(m.user.uid, b, a, elapsed)
        phone_ears: dict[str, int] = {}
        for number in invited:
            phone_ears[number] = heard = await switch.phone_heard(number, room)
            if heard == 0:
                why.append(f"phone {number} heard no sound")
        ears = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
        gw_pct = cpu_per_member_pct(gw1 - gw0, elapsed, idle[0], members)
        sw_pct = None
        if sw0 is not None and sw1 is not None and idle[1] is not None:
            sw_pct = cpu_per_member_pct(sw1 - sw0, elapsed, idle[1], members)
        print(
            f"  members={members} ({n_web} web, phones {invited}) room {room}: gateway "
            f"{(gw1 - gw0) / elapsed * 100:.1f}% of a core, switch "
            + ("n/a" if sw0 is None or sw1 is None else f"{(sw1 - sw0) / elapsed * 100:.1f}%")
            + f" over {elapsed:.1f} s; web ears (packets, loud frames) "
            f"{ears}, repeated packets {[m.ear.repeats for m in web]}; loud frames the phones "
            f"heard lately {phone_ears}"
            + (
                f"; unicast from the switch {(dgrams1 - dgrams0) / elapsed / n_web:.1f} "
                "datagrams/s per web member"
                if switch.from_switch
                else ""
            ),
            flush=True,
        )
        return Point(members, gw_pct, sw_pct, why)
    finally:
        if users:
            with contextlib.suppress(Exception):
                await users[0].peer(Cmd="ConfEnd", ChanId=chan_id)
                await users[0].expect_cmd("EndCall", timeout=15)
        await asyncio.gather(*(m.pc.close() for m in web), return_exceptions=True)
        for user in users:
            await user.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                while room in await switch.api("conference list"):
                    await asyncio.sleep(0.3)


async def main_async(
    args: argparse.Namespace,
    target: SwitchTarget | None,
    from_switch: Callable[[], int] | None = None,
) -> list[str]:
    sim: SimulatorThread | None = None
    if target is None:
        extensions = default_extensions()
        for number, hz in PHONES:
            extensions[number] = Extension("tone", audio=AudioSource("tone", hz))
        socket_port = free_port()
        sim = SimulatorThread(
            SimConfig(
                socket_target=("127.0.0.1", socket_port),
                extensions=extensions,
                first_call_event_delay=0.0,
            )
        ).start()
        esl = SwitchTarget("127.0.0.1", sim.esl_port, sim.password)
        phones = [n for n, _ in PHONES]
        pid = None
    else:
        socket_port = free_port()
        esl = target
        phones = [os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")]
        pid_text = os.environ.get("ESL_BRIDGE_FREESWITCH_PID", "")
        pid = int(pid_text) if pid_text.isdigit() else find_pid("freeswitch")
        if pid is None:
            print("  no single freeswitch process on this host: switch CPU not measured")
    switch = Switch(sim, esl, pid)
    switch.from_switch = from_switch
    lines: list[str] = []
    try:
        with tempfile.TemporaryDirectory(prefix="esl-bridge-confbench-") as tmp:
            gateway = GatewayProcess(Path(tmp), esl, socket_port, phones, target is not None)
            try:
                async with aiohttp.ClientSession() as session:
                    await gateway.healthy(session)
                    await asyncio.sleep(1.0)
                    g0, s0, t0 = gateway.cpu_seconds(), switch.cpu_seconds(), time.monotonic()
                    await asyncio.sleep(args.window)
                    g1, s1, t1 = gateway.cpu_seconds(), switch.cpu_seconds(), time.monotonic()
                    idle = (
                        (g1 - g0) / (t1 - t0),
                        None if s0 is None or s1 is None else (s1 - s0) / (t1 - t0),
                    )
                    print(
                        f"  idle: gateway {idle[0] * 100:.2f}% of a core, switch "
                        + ("n/a" if idle[1] is None else f"{idle[1] * 100:.2f}%"),
                        flush=True,
                    )
                    for members in args.members:
                        point = await room_run(
                            session,
                            gateway,
                            switch,
                            members,
                            phones,
                            idle,
                            args.warmup,
                            args.window,
                        )
                        lines.append(
                            result_line(
                                point.members, point.gateway_pct, point.switch_pct, point.why
                            )
                        )
            finally:
                await asyncio.to_thread(gateway.stop)
    finally:
        if sim is not None:
            sim.stop()
    return lines


# --------------------------------------------------------------------------- namespace


def enter_namespace(target: SwitchTarget | None) -> None:
    """Return inside a loopback-only namespace. With a real switch on this host, the host
    side of tests/support/host_bridge.py stays here (bridging its ESL port and the unicast
    ports) while a child runs the benchmark in the namespace; this process exits with it."""
    if target is None:
        loopback_namespace.enter("conference_cost")
        return
    from support import host_bridge

    names = [n for _, n in socket.if_nameindex()]
    if names == ["lo"]:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
        if host_bridge.ENV_DIR not in os.environ:
            sys.exit("conference_cost: a real switch is reached only through the host bridge")
        return
    if target.host not in ("127.0.0.1", "localhost"):
        sys.exit("conference_cost: a real switch must listen on this host's 127.0.0.1")
    argv = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "netns"]
    argv += [sys.executable, *sys.argv]
    with host_bridge._host_side(target.port, *UNICAST_PORTS):
        code = subprocess.run(argv, check=False).returncode
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short windows")
    parser.add_argument("--members", default="3,10", help="room sizes (default 3,10)")
    parser.add_argument("--window", type=float, help="seconds measured per room")
    parser.add_argument("--warmup", type=float, help="seconds before each window")
    args = parser.parse_args()
    try:
        args.members = [int(m) for m in args.members.split(",")]
        target = parse_target(os.environ.get(_FS_ENV, ""))
    except ValueError as exc:
        parser.error(str(exc))
    if any(m < 2 for m in args.members):
        parser.error("--members: each room needs at least 2 members")
    args.window = args.window or (4.0 if args.quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)
    enter_namespace(target)
    if target is not None:
        from support.host_bridge import ENV_DIR, NetnsSide

        bridge = NetnsSide(Path(os.environ[ENV_DIR]), target.port)
    print(
        f"conference_cost: rooms {args.members}, window {args.window:g} s, warm-up "
        f"{args.warmup:g} s, switch {'simulator' if target is None else 'real'}, cores "
        f"{os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (a shared machine: "
        "figures are noisy)",
        flush=True,
    )
    try:
        counter = None if target is None else (lambda: len(bridge.log.from_switch))
        lines = asyncio.run(main_async(args, target, counter))
    finally:
        if target is not None:
            bridge.close()
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
