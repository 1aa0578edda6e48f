"""The FreeSWITCH simulator: inbound ESL server, outbound socket sessions, channels, faults.

Everything runs on one asyncio event loop (see `thread.SimulatorThread` to run it next to
pytest or gevent code). The bytes on the wire follow the FreeSWITCH 1.10.12 transcripts in
tests/fixtures/freeswitch/ (tests/test_sim_*.py compare them).

Checked against recordings: auth greeting/accept/failure, api/command replies and error
strings, bgapi + BACKGROUND_JOB, event-plain framing and URL encoding, header names and order
of every recorded event type (variables included for the recorded flows), the connect reply
(async/full and static/single-channel), linger and disconnect notices, hangup bursts,
datagram sizes, byte order and 0xFF frames, the fatal early unicast.

Not recorded, so modelled from FreeSWITCH's documented behaviour (may differ in detail):
`show channels` layout, `uuid_getvar`/`uuid_setvar`/`uuid_break`/`hupall`/`sofia_contact`/
`version` replies, the error text of commands sent before auth (treated like a bad password),
`filter`/`nixevent`/`noevents` reply texts, the originate result when a ringing leg is killed
(`-ERR <kill cause>`), the hangup cause when the socket application cannot connect
(NORMAL_CLEARING), DESTINATION_OUT_OF_ORDER for an application the simulator does not know.

Not simulated at all: SIP and RTP (phones are in-process objects), codecs (audio is generated
as L16 directly), bridging, conferences, recording, `event json|xml` (refused), the a-leg of
`loopback/` (the returned uuid is the b-leg that runs the dialplan), multiple `,`/`|`
destinations (the first is used), the DTMF-induced unicast delay (docs/freeswitch.rst,
fact 4), CHANNEL_DESTROY and the many other event types FreeSWITCH fires (Event-Sequence
still increases per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .channel import (
    Q850,
    SIP_PHRASE,
    SIP_STATUS,
    Channel,
    FiredEvent,
    common_event_headers,
    directory_user_vars,
    new_originated_leg,
    new_phone_leg,
    originated_progress_vars,
)
from .codecs import PCMU, Codec, codec_by_name
from .dialstring import AppSpec, DialString, parse_app, parse_dial_string, parse_socket_args
from .dialstring import split_args as split_originate_args
from .extensions import Extension, default_extensions
from .media import AudioSource, UnicastStream

log = logging.getLogger(__name__)

Address = tuple[str, int]

ALL_EVENT_NAMES = frozenset(
    {
        "CHANNEL_CREATE",
        "CHANNEL_STATE",
        "CHANNEL_PROGRESS",
        "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE",
        "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_PARK",
        "CHANNEL_UNPARK",
        "CHANNEL_HANGUP",
        "CHANNEL_HANGUP_COMPLETE",
        "DTMF",
        "BACKGROUND_JOB",
    }
)

SHOW_CHANNELS_HEADER = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,"
    "application,application_data,dialplan,context,read_codec,read_rate,read_bit_rate,"
    "write_codec,write_rate,write_bit_rate,secure,hostname,presence_id,presence_data,"
    "accountcode,callstate,callee_name,callee_num,callee_direction,call_uuid,sent_callee_name,"
    "sent_callee_num,initial_cid_name,initial_cid_num,initial_ip_addr,initial_dest,"
    "initial_dialplan,initial_context"
)


@dataclass
class SimConfig:
    esl_host: str = "127.0.0.1"
    esl_port: int = 0  # 0: ephemeral
    password: str = "ClueCon"
    domain: str = "127.0.0.1"
    # Where the dialplan `socket` application of `0XXXX` calls connects (the gateway).
    socket_target: tuple[str, int] | None = None
    extensions: dict[str, Extension] = field(default_factory=default_extensions)
    # What answers `sofia/gateway/<gw>/<number>` when <number> is not in `extensions`.
    gateway_extension: Extension = field(
        default_factory=lambda: Extension("echo", audio=AudioSource("echo"))
    )
    default_originate_timeout: float = 60.0
    # The first call after a (re)start may see its events ~0.5 s late in one batch
    # (docs/freeswitch.rst, fact 8).
    first_call_event_delay: float = 0.0
    # Event-Date-Timestamp is cached while idle; > 0 refreshes it only this often
    # (docs/freeswitch.rst, fact 8).
    timestamp_refresh_s: float = 0.0
    crash_delay: float = 0.05  # fatal unicast: "+OK", then everything drops this much later
    first_frame_ff: bool = True  # first unicast datagram is an all-0xFF frame
    hostname: str = "sim"
    ipv4: str = "127.0.0.1"
    ipv6: str = "::1"
    park_event_delay: float = 0.005  # outbound socket: CHANNEL_PARK this long after connect
    app_step_delay: float = 0.02  # time an application takes (answer, pre_answer, ...)


class SimulatorCrashed(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------
# ESL session (one TCP connection, inbound or outbound)
# ------------------------------------------------------------------------------------------


class EslSession:
    def __init__(
        self,
        sim: Simulator,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        outbound: bool,
        channel: Channel | None = None,
    ) -> None:
        self.sim = sim
        self.reader = reader
        self.writer = writer
        self.outbound = outbound
        self.channel = channel
        self.authed = outbound
        self.event_names: set[str] = set()
        self.all_events = False
        self.uuid_filter: str | None = None  # myevents
        self.header_filters: list[tuple[str, str]] = []
        self.linger = False
        self.linger_seconds: float | None = None
        self.socket_async = True
        self.socket_full = True
        self.connected = False  # outbound: `connect` answered
        self.closed = False
        self.exited = False
        self.hold_until: float | None = None  # late-batch fault
        self._held: list[bytes] = []
        self._out: list[bytes] = []
        self.received_commands: list[str] = []
        self.sent_events: list[FiredEvent] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def session_uuid(self) -> str:
        return self.channel.uuid if self.channel else ""

    # ---- output ------------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self.sim._batch_depth > 0:
            self._out.append(data)
            self.sim._dirty.add(self)
            return
        self._write(data)

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(data)
        except (ConnectionError, RuntimeError):
            self.close()

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        try:
            transport = self.writer.transport
            if abort:
                transport.abort()
            else:
                transport.close()
        except Exception:
            pass
        self.sim.sessions.discard(self)

    # ---- events ------------------------------------------------------------------------------
    def wants(self, ev: FiredEvent) -> bool:
        if self.closed or not self.authed:
            return False
        if self.outbound and not self.connected:
            return False
        if ev.name == "BACKGROUND_JOB":
            ok = self.all_events or ev.name in self.event_names
        elif self.uuid_filter is not None:
            # myevents: every event of that one channel.
            ok = ev.get("Unique-ID") == self.uuid_filter
        else:
            ok = self.all_events or ev.name in self.event_names
        return ok and all(ev.get(k) == v for k, v in self.header_filters)

    def deliver(self, ev: FiredEvent, frame: bytes) -> None:
        self.sent_events.append(ev)
        if self.hold_until is not None and time.monotonic() < self.hold_until:
            self._held.append(frame)
            return
        if self._held:
            frame = b"".join(self._held) + frame
            self._held.clear()
        self.send(frame)

    def release_held(self) -> None:
        self.hold_until = None
        if self._held:
            data = b"".join(self._held)
            self._held.clear()
            self.send(data)

    # ---- input loop --------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            if not self.outbound:
                self.send(wire.AUTH_REQUEST)
            while not self.closed:
                cmd = await self._read_command()
                if cmd is None:
                    break
                line, headers, body = cmd
                self.received_commands.append(line)
                if self.sim._drop_next_command > 0:
                    # Fault: the peer vanishes in the middle of this command (no reply).
                    self.sim._drop_next_command -= 1
                    self.close(abort=True)
                    break
                if self.sim.reply_delay > 0:
                    await asyncio.sleep(self.sim.reply_delay)
                await self.handle(line, headers, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator session failed")
        finally:
            was_closed = self.closed
            self.close()
            if self.outbound and not was_closed:
                self.sim._on_outbound_gone(self)

    async def _read_command(self) -> tuple[str, list[tuple[str, str]], bytes] | None:
        lines: list[str] = []
        while True:
            raw = await self.reader.readline()
            if not raw:
                return None
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text == "":
                if lines:
                    break
                continue
            lines.append(text)
        first, rest = lines[0], lines[1:]
        headers: list[tuple[str, str]] = []
        for item in rest:
            k, _, v = item.partition(":")
            headers.append((k.strip(), v.strip()))
        body = b""
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        if length and length.isdigit():
            body = await self.reader.readexactly(int(length))
        return first, headers, body

    # ---- commands ----------------------------------------------------------------------------
    async def handle(self, line: str, headers: list[tuple[str, str]], body: bytes) -> None:
        sim = self.sim
        word, _, arg = line.partition(" ")
        word_l = word.lower()
        arg = arg.strip()
        if not self.authed:
            if word_l == "auth" and arg == sim.config.password:
                self.authed = True
                self.send(wire.command_reply("+OK accepted"))
            else:
                self.send(wire.AUTH_FAIL)
                self.close()
            return
        if self.outbound and word_l == "connect":
            await sim._outbound_connect(self)
            return
        if word_l == "api":
            cmd, _, cmd_arg = arg.partition(" ")
            result = await sim.api(cmd, cmd_arg.strip(), session=self)
            self.send(wire.api_response(result))
        elif word_l == "bgapi":
            cmd, _, cmd_arg = arg.partition(" ")
            job_uuid = next((v for k, v in headers if k.lower() == "job-uuid"), None)
            job_uuid = job_uuid or str(uuidlib.uuid4())
            self.send(wire.command_reply(f"+OK Job-UUID: {job_uuid}", [("Job-UUID", job_uuid)]))
            sim._spawn(sim._bgapi(job_uuid, cmd, cmd_arg.strip()))
        elif word_l == "event":
            fmt, _, names = arg.partition(" ")
            if fmt.lower() != "plain":
                self.send(wire.command_reply("-ERR the simulator speaks only event plain"))
                return
            for name in names.split():
                if name.upper() == "ALL":
                    self.all_events = True
                else:
                    self.event_names.add(name.upper())
            self.send(wire.command_reply("+OK event listener enabled plain"))
        elif word_l == "myevents":
            if self.outbound:
                self.uuid_filter = self.session_uuid
            else:
                target = arg.split()[-1] if arg else ""
                if not target:
                    self.send(wire.command_reply("-ERR Usage: myevents <uuid>"))
                    return
                self.uuid_filter = target
            self.send(wire.command_reply("+OK Events Enabled"))
            if self.outbound and self.hold_until is not None and self.channel:
                # Late batch (first call after start): events from before the socket came up
                # are delivered too, as recorded in esl_outbound_main_call_first_after_fs_start.
                for ev in self.channel.events:
                    if ev.name in ("CHANNEL_STATE", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
                        self._held.append(wire.event_plain(ev.headers, ev.body))
        elif word_l == "noevents":
            self.all_events = False
            self.event_names.clear()
            self.uuid_filter = None
            self.send(wire.command_reply("+OK no longer listening for events"))
        elif word_l == "nixevent":
            for name in arg.split():
                self.event_names.discard(name.upper())
            self.send(wire.command_reply("+OK events nixed"))
        elif word_l == "filter":
            key, _, value = arg.partition(" ")
            if not key:
                self.send(wire.command_reply("-ERR invalid filter"))
                return
            self.header_filters.append((key, value))
            self.send(wire.command_reply(f"+OK filter added. [{key}]=[{value}]"))
        elif word_l == "linger" and self.outbound and self.socket_async:
            self.linger = True
            self.linger_seconds = float(arg) if arg.replace(".", "", 1).isdigit() else None
            self.send(wire.command_reply("+OK will linger"))
        elif word_l == "nolinger" and self.outbound and self.socket_async:
            self.linger = False
            self.send(wire.command_reply("+OK will not linger"))
        elif word_l == "sendmsg":
            await sim._sendmsg(self, arg, headers, body)
        elif word_l == "exit":
            await sim._session_exit(self)
        else:
            self.send(wire.command_reply("-ERR command not found"))


# ------------------------------------------------------------------------------------------
# Phone call handle
# ------------------------------------------------------------------------------------------


class PhoneCall:
    """A simulated phone that dialled a `0XXXX` number (SIP -> gateway).

    Read its attributes from any thread; act on it through the simulator's loop (the thread
    handle wraps these calls).
    """

    def __init__(
        self,
        sim: Simulator,
        channel: Channel,
        *,
        hangup_after: float | None = None,
        dtmf_plan: list[tuple[float, str]] | None = None,
    ) -> None:
        self.sim = sim
        self.channel = channel
        self.hangup_after = hangup_after
        self.dtmf_plan = list(dtmf_plan or [])
        self.session: EslSession | None = None
        self.connect_error: str | None = None
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()

    @property
    def uuid(self) -> str:
        return self.channel.uuid

    @property
    def answered(self) -> bool:
        return self.channel.answered

    @property
    def hangup_cause(self) -> str | None:
        return self.channel.hangup_cause

    @property
    def events(self) -> list[FiredEvent]:
        """Events sent on the gateway's socket for this call."""
        return list(self.session.sent_events) if self.session else []

    @property
    def commands(self) -> list[str]:
        """First lines of the commands the gateway sent on the socket."""
        return list(self.session.received_commands) if self.session else []

    @property
    def unicast(self) -> UnicastStream | None:
        return self.channel.unicast or (
            self.channel.unicast_history[-1] if self.channel.unicast_history else None
        )

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        await self.sim.hangup(self.channel, cause)

    async def send_dtmf(self, digits: str) -> None:
        await self.sim.phone_dtmf(self.channel, digits)


# ------------------------------------------------------------------------------------------
# The simulator
# ------------------------------------------------------------------------------------------


@dataclass
class _Job:
    uuid: str
    command: str
    arg: str


class Simulator:
    """A FreeSWITCH 1.10.12 look-alike for tests and the demo (never on a real call's path)."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.core_uuid = str(uuidlib.uuid4())
        self.hostname = self.config.hostname
        self.ipv4 = self.config.ipv4
        self.ipv6 = self.config.ipv6
        self.domain = self.config.domain
        self.channels: dict[str, Channel] = {}
        self.all_channels: list[Channel] = []  # every channel ever created, for tests
        self.sessions: set[EslSession] = set()
        self.phone_calls: list[PhoneCall] = []
        # Fault hook: given a unicast's (local, remote) addresses, the ones the simulated
        # channel really binds and sends to, e.g. a lossy relay that takes the channel's
        # place in front of the app (it binds `local`, the port the app expects audio from).
        self.unicast_redirect: (
            Callable[[Address, Address], Awaitable[tuple[Address, Address]]] | None
        ) = None
        self.events: list[FiredEvent] = []  # every event fired (bounded)
        self.crashed = False
        self.crash_reason: str | None = None
        self.reply_delay = 0.0
        self._drop_next_command = 0
        self._sched: dict[int, tuple[str, asyncio.Task[Any]]] = {}  # sched_api tasks
        self._sched_next = 0
        self._sequence = 0
        self._session_counter = 0
        self._server: asyncio.base_events.Server | None = None
        self._port = self.config.esl_port
        self._tasks: set[asyncio.Task[Any]] = set()
        self._batch_depth = 0
        self._dirty: set[EslSession] = set()
        self._started_mono = time.monotonic()
        self._started_wall = time.time()
        self._ts_cache = 0
        self._ts_cache_mono = 0.0
        self._late_batch_armed = self.config.first_call_event_delay > 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def esl_port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._on_inbound, self.config.esl_host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await self.stop_listener()
        for ch in list(self.channels.values()):
            self._destroy_silently(ch)
        for s in list(self.sessions):
            s.close(abort=True)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.sleep(0)

    async def stop_listener(self) -> None:
        """Fault hook: stop accepting ESL connections (the port is kept for a restart)."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def start_listener(self) -> None:
        if self._server is None and not self.crashed:
            await self._listen()

    async def restart(self) -> None:
        """Like restarting FreeSWITCH: everything dropped, a new Core-UUID, same port."""
        self.crashed = False
        self.crash_reason = None
        self._drop_everything()
        await self.stop_listener()
        self.core_uuid = str(uuidlib.uuid4())
        self._sequence = 0
        self._started_mono = time.monotonic()
        self._started_wall = time.time()
        self._late_batch_armed = self.config.first_call_event_delay > 0
        await self._listen()

    # ---- Switch protocol (used by channels) ------------------------------------------------
    def next_sequence(self) -> int:
        self._sequence += 1
        return self._sequence

    def event_timestamp_us(self) -> int:
        now = time.monotonic()
        refresh = self.config.timestamp_refresh_s
        if refresh <= 0 or not self._ts_cache or now - self._ts_cache_mono >= refresh:
            self._ts_cache = int(time.time() * 1_000_000)
            self._ts_cache_mono = now
        return self._ts_cache

    # ---- plumbing ----------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("simulator task failed", exc_info=task.exception())

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Everything sent inside goes out in one write per connection (one TCP chunk)."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                dirty, self._dirty = self._dirty, set()
                for s in dirty:
                    s.flush()

    def fire(
        self,
        channel: Channel | None,
        name: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
    ) -> FiredEvent:
        ev = FiredEvent(name, headers, body)
        if channel is not None:
            channel.events.append(ev)
        self.events.append(ev)
        if len(self.events) > 5000:
            del self.events[:1000]
        frame = wire.event_plain(headers, body)
        for s in list(self.sessions):
            if s.wants(ev):
                s.deliver(ev, frame)
        return ev

    def fire_channel(
        self,
        ch: Channel,
        name: str,
        *,
        pre: list[tuple[str, str]] | None = None,
        tail: list[tuple[str, str]] | None = None,
        with_variables: bool | None = None,
    ) -> FiredEvent:
        headers = ch.event_headers(
            name, pre=pre or (), tail=tail or (), with_variables=with_variables
        )
        return self.fire(ch, name, headers)

    def _register(self, ch: Channel) -> None:
        self.channels[ch.uuid] = ch
        self.all_channels.append(ch)

    def _new_session_id(self) -> int:
        self._session_counter += 1
        return self._session_counter

    # ---- inbound ESL ---------------------------------------------------------------------------
    async def _on_inbound(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.crashed:
            writer.transport.abort()
            return
        session = EslSession(self, reader, writer, outbound=False)
        self.sessions.add(session)
        session.task = asyncio.current_task()
        await session.run()

    # ---- api -----------------------------------------------------------------------------------
    async def api(self, cmd: str, arg: str, session: EslSession | None = None) -> str:
        handler = getattr(self, "_api_" + cmd.lower(), None) if cmd else None
        if handler is None:
            return f"-ERR {cmd} Command not found!\n"
        result: str = await handler(arg)
        return result

    async def _bgapi(self, job_uuid: str, cmd: str, arg: str) -> None:
        result = await self.api(cmd, arg)
        headers = common_event_headers(self, "BACKGROUND_JOB")
        headers += [("Job-UUID", job_uuid), ("Job-Command", cmd)]
        if arg:
            headers.append(("Job-Command-Arg", arg))
        self.fire(None, "BACKGROUND_JOB", headers, result.encode())

    async def _api_status(self, arg: str) -> str:
        up = time.monotonic() - self._started_mono
        us = int(up * 1_000_000)
        secs, usec = divmod(us, 1_000_000)
        mins, s = divmod(secs, 60)
        hours, m = divmod(mins, 60)
        days, h = divmod(hours, 24)
        years, d = divmod(days, 365)
        total = self._session_counter
        live = len(self.channels)
        return (
            f"UP {years} years, {d} days, {h} hours, {m} minutes, {s} seconds, "
            f"{usec // 1000} milliseconds, {usec % 1000} microseconds\n"
            "FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
            f"{total} session(s) since startup\n"
            f"{live} session(s) - peak {max(live, 1 if total else 0)}, last 5min {total} \n"
            f"0 session(s) per Sec out of max 30, peak 1, last 5min {total} \n"
            "1000 session(s) max\n"
            "min idle cpu 0.00/99.33\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    async def _api_version(self, arg: str) -> str:
        return "FreeSWITCH Version 1.10.12-release (esl-bridge simulator; 64bit)\n"

    async def _api_reloadxml(self, arg: str) -> str:
        return "+OK [Success]\n"

    async def _api_uuid_exists(self, arg: str) -> str:
        return "true" if arg.split()[:1] and arg.split()[0] in self.channels else "false"

    async def _api_uuid_kill(self, arg: str) -> str:
        parts = arg.split()
        ch = self.channels.get(parts[0]) if parts else None
        if ch is None or ch.hung_up:
            return "-ERR No such channel!\n"
        cause = parts[1] if len(parts) > 1 else "NORMAL_CLEARING"
        self._spawn(self._kill_soon(ch, cause))
        return "+OK\n"

    async def _kill_soon(self, ch: Channel, cause: str) -> None:
        await asyncio.sleep(0.02)  # recorded: the hangup events follow the +OK by ~20 ms
        await self.hangup(ch, cause, by_switch=True)

    async def _api_uuid_send_dtmf(self, arg: str) -> str:
        parts = arg.split()
        ch = self.channels.get(parts[0]) if parts else None
        if ch is None or len(parts) < 2:
            return "-ERR no such channel\n" if ch is None else "-USAGE: <uuid> <dtmf_data>\n"
        digits = parts[1].split("@")[0]
        ch.dtmf_to_phone.extend(digits)
        if ch.unicast:
            ch.unicast.inject_ff(1)
        return f"+OK {ch.uuid} sent DTMF {digits}.\n"

    def _channel_and_args(
        self, arg: str, maxsplit: int, usage: str
    ) -> tuple[Channel, list[str]] | str:
        """`<uuid> <args...>` of a uuid_* api: the channel and the words, or the error reply
        (FreeSWITCH's texts: no such channel first, then the usage)."""
        parts = arg.split(maxsplit=maxsplit)
        ch = self.channels.get(parts[0]) if parts else None
        if ch is None:
            return "-ERR No such channel!\n"
        if len(parts) < 2:
            return f"-USAGE: {usage}\n"
        return ch, parts

    async def _api_uuid_getvar(self, arg: str) -> str:
        found = self._channel_and_args(arg, 2, "<uuid> <var>")
        if isinstance(found, str):
            return found
        ch, parts = found
        # Recorded: the bare value, no newline; `_undef_` for an unset variable.
        return ch.get_var(parts[1]) or "_undef_"

    async def _api_uuid_setvar(self, arg: str) -> str:
        found = self._channel_and_args(arg, 2, "<uuid> <var> [value]")
        if isinstance(found, str):
            return found
        ch, parts = found
        if len(parts) == 3:
            ch.set_var(parts[1], parts[2])
        else:
            ch.unset_var(parts[1])
        return "+OK\n"

    async def _api_uuid_break(self, arg: str) -> str:
        ch = self.channels.get(arg.split()[0]) if arg.split() else None
        if ch is None:
            return "-ERR No such channel!\n"
        ch.break_event.set()
        return "+OK\n"

    async def _api_hupall(self, arg: str) -> str:
        """`hupall [cause] [var value]...`: every channel, or those whose variables match."""
        words = arg.split()
        cause = words[0] if words and words[0] in Q850 else "MANAGER_REQUEST"
        pairs = list(zip(words[1::2], words[2::2], strict=False))
        for ch in list(self.channels.values()):
            if ch.hung_up or any(ch.get_var(k) != v for k, v in pairs):
                continue
            self._spawn(self.hangup(ch, cause, by_switch=True))
        if not pairs:
            return f"+OK hangup all channels with cause {cause}\n"
        more = "" if len(pairs) == 1 else "..."
        k, v = pairs[0]
        return f"+OK hangup all channels matching [{k}]=[{v}]{more} with cause: {cause}\n"

    async def _api_sched_api(self, arg: str) -> str:
        """`sched_api +<secs>|@<secs>|<epoch> <group> <command...>` on the switch's scheduler."""
        parts = arg.split(" ", 2)
        if len(parts) < 3 or not parts[2]:
            return (
                "-ERR Invalid syntax. USAGE: [+@]<time> <group_name> <command_string>[&]\n"
            )
        when, group, command = parts
        try:
            if when[:1] in "+@":
                delay = float(int(when[1:] or "0"))
            else:
                delay = max(0.0, int(when) - time.time())
        except ValueError:
            delay = 0.0
        self._sched_next += 1
        task_id = self._sched_next
        self._sched[task_id] = (group, self._spawn(self._sched_run(task_id, delay, command)))
        return f"+OK Added: {task_id}\n"

    async def _sched_run(self, task_id: int, delay: float, command: str) -> None:
        await asyncio.sleep(delay)
        self._sched.pop(task_id, None)
        name, _, rest = command.rstrip("&").partition(" ")
        await self.api(name, rest)

    async def _api_sched_del(self, arg: str) -> str:
        target = arg.strip()
        if not target:
            return "-ERR Invalid syntax\n"
        if target.isdigit():
            ids = [int(target)] if int(target) in self._sched else []
        else:
            ids = [i for i, (group, _t) in self._sched.items() if group == target]
        for i in ids:
            _group, task = self._sched.pop(i)
            task.cancel()
        return f"+OK Deleted: {len(ids)}\n"

    def scheduled_groups(self) -> list[str]:
        """Test hook: the groups of the scheduler tasks still pending."""
        return [group for group, _t in self._sched.values()]

    async def _api_uuid_setvar_multi(self, arg: str) -> str:
        found = self._channel_and_args(arg, 1, "<uuid> <var>=<value>;<var>=<value>...")
        if isinstance(found, str):
            return found
        ch, parts = found
        for item in parts[1].split(";"):
            name, eq, value = item.partition("=")
            if name and eq:
                ch.set_var(name, value)
            elif name:
                ch.unset_var(name)
        return "+OK\n"

    async def _api_sofia_contact(self, arg: str) -> str:
        target = arg.split()[0] if arg.split() else ""
        user = target.split("/")[-1].split("@")[0]
        ext = self.config.extensions.get(user)
        if ext is None or ext.behaviour == "not_registered":
            return "error/user_not_registered"
        return f"sofia/internal/sip:{user}@127.0.0.1:5071"

    async def _api_show(self, arg: str) -> str:
        words = arg.split()
        what = words[0].lower() if words else ""
        if what not in ("channels", "calls"):
            return "-USAGE: channels|calls [count]\n"
        live = [c for c in self.channels.values() if not c.destroyed]
        if what == "calls":
            # A "call" is a bridged pair; the simulator never bridges.
            live = []
        if len(words) > 1 and words[1].lower() == "count":
            return f"\n{len(live)} total.\n"
        columns = SHOW_CHANNELS_HEADER.split(",")
        if words[1:] == ["as", "json"]:
            # Recorded (orphans/esl_inbound_orphan_api_replies.txt): `{"row_count": 0}` and a
            # newline when empty, else compact JSON without one.
            if not live:
                return '{"row_count": 0}\n'
            rows = [dict(zip(columns, self._show_row(c), strict=True)) for c in live]
            return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
        if not live:
            return f"\n{len(live)} total.\n"
        lines = [SHOW_CHANNELS_HEADER, *(",".join(self._show_row(c)) for c in live)]
        return "\n".join(lines) + f"\n\n{len(live)} total.\n"

    def _show_row(self, c: Channel) -> list[str]:
        """One channel's values in the order of SHOW_CHANNELS_HEADER (from the core's
        channel table: the running application, codecs once media is up)."""
        app = c.running_app or c.current_app or ""
        codec = [c.codec.name, str(c.codec.rate), str(c.codec.bit_rate)]
        codec = codec if c.has_read_codec else ["", "", ""]
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created_us / 1e6))
        cid_name = c.profile.get("Caller-ID-Name") or ""
        cid_num = c.profile.get("Caller-ID-Number") or ""
        dest = c.profile.get("Destination-Number") or c.sip_contact_user or ""
        user = c.sip_contact_user.split("-")[0] if c.sip_contact_user else ""
        presence = c.presence_id or (f"{user}@{self.domain}" if user else "")
        return [
            c.uuid,
            c.direction,
            created,
            str(c.created_us // 1_000_000),
            c.name,
            c.state,
            cid_name,
            cid_num,
            "127.0.0.1",
            dest,
            app,
            "",
            "XML",
            "default",
            *codec,
            *codec,
            "",
            self.hostname,
            presence,
            "",
            user,
            c.call_state,
            "",
            c.profile.get("Callee-ID-Number") or dest,
            "RECV" if c.answered else "",
            c.uuid,
            "",
            "",
            cid_name,
            cid_num or "0000000000",
            "127.0.0.1",
            dest,
            "XML",
            "default",
        ]

    # ---- originate ---------------------------------------------------------------------------
    async def _api_originate(self, arg: str) -> str:
        args = split_originate_args(arg)
        if len(args) < 2:
            return (
                "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] "
                "[<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n"
            )
        ds = parse_dial_string(args[0])
        app = parse_app(args[1])
        timeout = self.config.default_originate_timeout
        if "originate_timeout" in ds.variables:
            with contextlib.suppress(ValueError):
                timeout = float(ds.variables["originate_timeout"])
        elif len(args) > 6:
            with contextlib.suppress(ValueError):
                timeout = float(args[6])
        cid_num = ds.variables.get("origination_caller_id_number") or (
            args[5] if len(args) > 5 else "0000000000"
        )
        cid_name = ds.variables.get("origination_caller_id_name") or (
            args[4] if len(args) > 4 else None
        )
        # Unquoted `&socket(host:port async full)`: FreeSWITCH splits it at the spaces, the
        # socket application only gets `host:port` and runs static (docs/freeswitch.rst, fact 6).
        if ds.endpoint == "error":
            return f"-ERR {ds.target}\n"
        if ds.endpoint == "user":
            ext = self.config.extensions.get(ds.target)
            if ext is None:
                return "-ERR SUBSCRIBER_ABSENT\n"
            if ext.behaviour == "not_registered":
                return "-ERR USER_NOT_REGISTERED\n"
            user = ds.target
        elif ds.endpoint == "gateway":
            ext = self.config.extensions.get(ds.target) or self.config.gateway_extension
            if ext.behaviour == "not_registered":
                return "-ERR USER_NOT_REGISTERED\n"
            user = ds.target
        elif ds.endpoint == "sofia":
            ext = self.config.extensions.get(ds.target) or self.config.gateway_extension
            user = ds.target
        elif ds.endpoint == "loopback":
            return await self._originate_loopback(ds, app, cid_num, cid_name, timeout)
        else:
            return "-ERR CHAN_NOT_IMPLEMENTED\n"
        return await self._originate_sip(ds, app, ext, user, cid_num, cid_name, timeout)

    async def _originate_sip(
        self,
        ds: DialString,
        app: AppSpec,
        ext: Extension,
        user: str,
        cid_num: str,
        cid_name: str | None,
        timeout: float,
    ) -> str:
        if self.crashed:
            return "-ERR NORMAL_TEMPORARY_FAILURE\n"
        uuid = ds.variables.get("origination_uuid") or str(uuidlib.uuid4())
        if uuid in self.channels:
            return "-ERR DESTINATION_OUT_OF_ORDER\n"
        ch = new_originated_leg(
            self,
            uuid,
            user=user,
            cid_number=cid_num,
            cid_name=cid_name,
            codec=ext.codec,
            session_id=self._new_session_id(),
            dial_vars=ds.variables,
            endpoint="sofia",
        )
        self._register(ch)
        ch.audio = ext.audio
        ch.extension = ext
        ch.state, ch.state_number = "CS_INIT", 2
        self.fire_channel(ch, "CHANNEL_CREATE")
        ignore_early = ds.variables.get("ignore_early_media", "").lower() == "true"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hangup_event: asyncio.Event = ch.hangup_event

        async def wait(seconds: float | None) -> bool:
            """Sleep until `seconds` pass (True) or the leg ends / times out (False)."""
            limit = deadline - loop.time()
            if seconds is not None:
                limit = min(limit, seconds)
            try:
                await asyncio.wait_for(hangup_event.wait(), max(limit, 0))
                return False
            except TimeoutError:
                if seconds is None or loop.time() >= deadline - 1e-3:
                    if loop.time() >= deadline - 1e-3:
                        await self.hangup(ch, "NO_ANSWER")
                    return False
                return True

        def failed() -> str:
            return f"-ERR {ch.hangup_cause or 'NORMAL_CLEARING'}\n"

        await asyncio.sleep(0.02)
        if ch.hung_up:
            return failed()
        beh = ext.behaviour
        if beh in ("busy", "reject"):
            await self.hangup(ch, "USER_BUSY" if beh == "busy" else "CALL_REJECTED")
            return failed()
        self._mark_progress(ch, cid_num)
        if beh == "no_answer":
            if await wait(ext.ring_seconds):
                await self.hangup(ch, "NO_ANSWER")
            return failed()
        if beh == "early_media":
            if not await wait(ext.early_after):
                return failed()
            self._mark_progress_media(ch)
            if not ignore_early:
                # docs/freeswitch.rst, fact 7: +OK <uuid> at the 183; the channel parks in EARLY.
                self._after_originate(ch, ds, app, user)
                if ext.answer_after is not None:
                    self._spawn(self._answer_later(ch, ext.answer_after))
                return f"+OK {ch.uuid}\n"
            if ext.answer_after is None or not await wait(ext.answer_after):
                if not ch.hung_up:
                    await self._wait_forever_or_timeout(ch, deadline)
                return failed()
        elif beh == "ringing":
            if ext.answer_after is None or not await wait(ext.answer_after):
                if not ch.hung_up:
                    await self._wait_forever_or_timeout(ch, deadline)
                return failed()
        else:  # echo, tone
            delay = ext.answer_after if ext.answer_after is not None else 0.0
            if delay > 0 and not await wait(delay):
                return failed()
        if ch.hung_up:
            return failed()
        self._mark_answered(ch)
        self._after_originate(ch, ds, app, user)
        return f"+OK {ch.uuid}\n"

    async def _wait_forever_or_timeout(self, ch: Channel, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                ch.hangup_event.wait(),
                max(deadline - loop.time(), 0),
            )
        except TimeoutError:
            await self.hangup(ch, "NO_ANSWER")

    async def _answer_later(self, ch: Channel, delay: float) -> None:
        await asyncio.sleep(delay)
        if not ch.hung_up and not ch.answered:
            with self.batch():
                if ch.unicast:
                    ch.unicast.inject_ff(2)
                self._mark_answered(ch)

    def _mark_progress(self, ch: Channel, cid_num: str) -> None:
        """180 Ringing from the called phone (no SDP): no read codec yet."""
        ch.progress_us = ch.created_us
        ch.state, ch.state_number = "CS_CONSUME_MEDIA", 7
        ch.set_profile(Network_Addr="127.0.0.1")
        ch.set_vars(originated_progress_vars(ch, cid_num))
        self.fire_channel(ch, "CHANNEL_PROGRESS")
        ch.call_state = "RINGING"  # recorded: the event still says DOWN, the channel then rings

    def _mark_progress_media(self, ch: Channel) -> None:
        """183 with SDP: media (and a read codec) exist from here on."""
        ch.progress_media_us = ch.switch.event_timestamp_us()
        ch.call_state = "RINGING"
        ch.answer_state = "early"
        ch.set_var("ep_codec_string", ch.codec.ep_codec_string)
        ch.set_var("switch_r_sdp", ch.remote_sdp(ch.sip_contact_user))
        ch.set_var("endpoint_disposition", "EARLY MEDIA")
        # Recorded: this event has no Channel-Read-Codec-* yet; they appear at CHANNEL_PARK.
        self.fire_channel(ch, "CHANNEL_PROGRESS_MEDIA")
        ch.has_read_codec = True

    def _mark_answered(self, ch: Channel) -> None:
        if ch.answered:
            return
        if not ch.progress_us:
            ch.progress_us = ch.created_us
        if not ch.has_read_codec:
            ch.set_var("switch_r_sdp", ch.remote_sdp(ch.sip_contact_user))
            ch.set_var("ep_codec_string", ch.codec.ep_codec_string)
            ch.set_var("rtp_use_codec_string", "OPUS,G722,PCMU,PCMA,H264,VP8")
            ch.set_vars(ch.media_variables())
            ch.has_read_codec = True
        ch.answered = True
        ch.answered_us = ch.switch.event_timestamp_us()
        ch.answer_state = "answered"
        if ch.kind == "originated" and not ch.parked:
            ch.call_state = "RINGING"
        self.fire_channel(ch, "CHANNEL_ANSWER")
        ch.call_state = "ACTIVE"
        ch.set_var("endpoint_disposition", "ANSWER")
        ext: Extension | None = getattr(ch, "extension", None)
        if ext is not None and ext.hangup_after is not None:
            self._spawn(self._hangup_later(ch, ext.hangup_after))

    async def _hangup_later(self, ch: Channel, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.hangup(ch, "NORMAL_CLEARING")

    def _after_originate(self, ch: Channel, ds: DialString, app: AppSpec, user: str) -> None:
        """The leg is up (answered or early media): flip caller id, run the application."""
        if not any(k == "remote_media_port" for k in ch.variables):
            ch.set_vars(ch.media_variables())
        ch.set_vars(directory_user_vars(user))
        cid = ch.profile.get("Caller-ID-Number") or ""
        # Recorded order after originate: the dial-string variables are set again, then
        # the originate bookkeeping and call_uuid.
        ch.set_vars(ds.variables.items())
        ch.set_var("originate_early_media", "true")
        ch.set_var("originate_endpoint", "user" if ds.endpoint == "user" else "sofia")
        ch.set_var("pre_transfer_caller_id_number", cid)
        ch.set_var("channel_cid_flipped", "yes")
        ch.set_var("call_uuid", ch.uuid)
        # After originate FreeSWITCH swaps caller and callee ids on the a-leg (recorded).
        ch.set_profile(
            **{
                "Caller-ID-Name": "Outbound Call",
                "Caller-ID-Number": ch.sip_contact_user,
                "Callee-ID-Name": None,
                "Callee-ID-Number": cid,
                "Network-Addr": "127.0.0.1",
            }
        )
        ch.state, ch.state_number = "CS_EXECUTE", 4
        ch.hit_dialplan = True
        if ch.answered:
            ch.call_state = "ACTIVE"
        else:
            ch.call_state = "EARLY"
        if app.name == "socket":
            self._spawn(self._run_socket_app(ch, app.args, phone=None))
        elif app.name == "":
            self._spawn(self._run_dialplan(ch, app.extension or "", phone=None))
        else:
            # park and every other application: the channel parks and obeys sendmsg.
            ch.set_var("current_application", app.name or "park")
            ch.current_app = app.name
            ch.last_app = app.name
            if ch.answered:
                self._spawn(self._park_after_originate(ch, app.name or "park"))
            else:
                self._park_originated(ch, app.name or "park")

    async def _park_after_originate(self, ch: Channel, app: str) -> None:
        """Recorded after an answer (orphans/esl_inbound_orphan_originator_killed_ringing_
        observer.txt): the originate's BACKGROUND_JOB comes first, then CHANNEL_EXECUTE park
        and CHANNEL_PARK. After a 183 (esl_inbound_unicast_early_media_originate.txt) the
        channel parks before the BACKGROUND_JOB: two threads of the switch race there."""
        await asyncio.sleep(0)
        if ch.hung_up:
            return
        self._park_originated(ch, app)

    def _park_originated(self, ch: Channel, app: str) -> None:
        with self.batch():
            if app == "park":
                self._exec_start(ch, "park", "", str(uuidlib.uuid4()))
            ch.parked = True
            self.fire_channel(ch, "CHANNEL_PARK")
        self._start_app_runner(ch)

    async def _originate_loopback(
        self,
        ds: DialString,
        app: AppSpec,
        cid_num: str,
        cid_name: str | None,
        timeout: float,
    ) -> str:
        """`loopback/0XXXX/default`: a b-leg runs the dialplan (the `0` route to the socket
        app); the a-leg answers when the b-leg does. Other loopback numbers behave like
        `user/<number>`. Not simulated: the a-leg's own events (only the b-leg is visible)."""
        number = ds.target
        if not re.match(r"^0(.*)$", number):
            ext = self.config.extensions.get(number)
            if ext is None:
                return "-ERR NO_ROUTE_DESTINATION\n"
            return await self._originate_sip(ds, app, ext, number, cid_num, cid_name, timeout)
        call = await self.place_call(
            caller=cid_num,
            dest=number,
            caller_name=cid_name or cid_num,
            loopback=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ch = call.channel
        while loop.time() < deadline:
            if ch.hung_up:
                return f"-ERR {ch.hangup_cause or 'NORMAL_CLEARING'}\n"
            if ch.answered or (
                ch.has_read_codec and ds.variables.get("ignore_early_media", "").lower() != "true"
            ):
                return f"+OK {ch.uuid}\n"
            await asyncio.sleep(0.01)
        await self.hangup(ch, "NO_ANSWER")
        return "-ERR NO_ANSWER\n"

    # ---- phone calls into the gateway (dialplan 0XXXX -> socket) ----------------------------
    async def place_call(
        self,
        caller: str = "1001",
        dest: str = "01002",
        *,
        caller_name: str | None = None,
        cus_data: str | None = None,
        sip_headers: dict[str, str] | None = None,
        codec: str | Codec = PCMU,
        audio: str | AudioSource | None = "tone440",
        hangup_after: float | None = None,
        dtmf: list[tuple[float, str]] | None = None,
        target: tuple[str, int] | None = None,
        loopback: bool = False,
    ) -> PhoneCall:
        """A registered phone `caller` dials `dest`. With `^0(.*)$` the dialplan sets
        `sip_h_X-Number=<sip:$1@domain>` and runs `socket <target> async full`.

        hangup_after: the phone hangs up (BYE) this long after the call is answered.
        dtmf: [(seconds after answer, digits)] the phone sends as RFC 2833 (DTMF events).
        """
        if self.crashed:
            raise SimulatorCrashed(self.crash_reason or "crashed")
        headers = dict(sip_headers or {})
        if cus_data is not None:
            headers["X-CusData"] = cus_data
        uuid = str(uuidlib.uuid4())
        c = codec_by_name(codec)
        ch = new_phone_leg(
            self,
            uuid,
            caller=caller,
            caller_name=caller_name or caller,
            dest=dest,
            codec=c,
            session_id=self._new_session_id(),
            sip_headers=headers,
        )
        if loopback:
            ch.kind = "loopback"
            ch.name = f"loopback/{dest}-b"
            ch.set_var("channel_name", ch.name)
            ch.set_profile(Source="mod_loopback", Network_Addr=None, Username=None)
            ch.presence_id = None
        self._register(ch)
        ch.audio = AudioSource.parse(audio)
        call = PhoneCall(self, ch, hangup_after=hangup_after, dtmf_plan=dtmf)
        ch.phone_call = call
        self.phone_calls.append(call)
        self.fire_channel(ch, "CHANNEL_CREATE")
        ch.state, ch.state_number = "CS_EXECUTE", 4
        ch.call_state = "RINGING"
        ch.hit_dialplan = True
        self.fire_channel(ch, "CHANNEL_STATE")
        self._spawn(self._run_dialplan(ch, dest, phone=call, target=target))
        return call

    async def _run_dialplan(
        self,
        ch: Channel,
        dest: str,
        *,
        phone: PhoneCall | None,
        target: tuple[str, int] | None = None,
    ) -> None:
        """The `^0(.*)$` extension of dialplan/ (set X-Number, socket async full)."""
        m = re.match(r"^0(.*)$", dest)
        tgt = target or self.config.socket_target
        if m is None or tgt is None:
            await self.hangup(ch, "NO_ROUTE_DESTINATION")
            if phone:
                phone.connect_error = "no route" if m is None else "no socket_target configured"
                phone.connected.set()
            return
        ch.set_var("DP_MATCH", f"ARRAY::{dest}|:{m.group(1)}")
        ch.set_var("call_uuid", ch.uuid)
        set_arg = f"sip_h_X-Number=<sip:{m.group(1)}@{self.domain}>"
        self._exec_start(ch, "set", set_arg, str(uuidlib.uuid4()))
        ch.set_var("sip_h_X-Number", f"<sip:{m.group(1)}@{self.domain}>")
        self._exec_complete(ch, "set", set_arg, str(uuidlib.uuid4()))
        ch.after_socket_hangup = "NORMAL_TEMPORARY_FAILURE"  # the route's last action
        await self._run_socket_app(ch, f"{tgt[0]}:{tgt[1]} async full", phone=phone)

    async def _run_socket_app(self, ch: Channel, args: str, *, phone: PhoneCall | None) -> None:
        app_uuid = str(uuidlib.uuid4())
        ch.socket_app = (args, app_uuid)
        self._exec_start(ch, "socket", args, app_uuid)
        # Recorded connect reply: ..., current_application_data, current_application, socket_host.
        ch.set_var("current_application_data", args)
        ch.set_var("current_application", "socket")
        ch.current_app = "socket"
        ch.last_app, ch.last_arg = "socket", args
        try:
            host, port, is_async, full = parse_socket_args(args)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        except (TimeoutError, OSError, ValueError) as exc:
            log.info("socket app of %s could not connect: %s", ch.uuid, exc)
            if phone:
                phone.connect_error = str(exc)
                phone.connected.set()
            self._exec_complete(ch, "socket", args, app_uuid)
            await self.hangup(ch, "NORMAL_CLEARING")
            return
        if ch.hung_up or self.crashed:
            writer.close()
            return
        ch.set_var("socket_host", host)
        session = EslSession(self, reader, writer, outbound=True, channel=ch)
        session.socket_async = is_async
        session.socket_full = full
        if self._late_batch_armed and ch.kind != "originated":
            self._late_batch_armed = False
            session.hold_until = time.monotonic() + self.config.first_call_event_delay
            self._spawn(self._release_later(session, self.config.first_call_event_delay))
        ch.session = session
        self.sessions.add(session)
        if phone:
            phone.session = session
        session.task = self._spawn(session.run())

    async def _release_later(self, session: EslSession, delay: float) -> None:
        await asyncio.sleep(delay)
        session.release_held()

    async def _outbound_connect(self, session: EslSession) -> None:
        ch = session.channel
        if ch is None:
            session.send(wire.command_reply("-ERR no channel"))
            return
        session.connected = True
        mode = "async" if session.socket_async else "static"
        control = "full" if session.socket_full else "single-channel"
        session.send(wire.connect_reply(ch.channel_data(), mode, control))
        phone: PhoneCall | None = getattr(ch, "phone_call", None)
        if phone:
            phone.connected.set()
        if session.socket_async:
            self._spawn(self._park_soon(ch))
        if phone:
            self._spawn(self._phone_script(phone))

    async def _park_soon(self, ch: Channel) -> None:
        await asyncio.sleep(self.config.park_event_delay)
        if ch.hung_up:
            return
        ch.parked = True
        self.fire_channel(ch, "CHANNEL_PARK")
        self._start_app_runner(ch)

    async def _phone_script(self, call: PhoneCall) -> None:
        """hangup_after / dtmf plan of a placed call, counted from the answer."""
        ch = call.channel
        plan = call.dtmf_plan
        hangup_after = call.hangup_after
        if not plan and hangup_after is None:
            return
        while not ch.answered and not ch.hung_up:
            await asyncio.sleep(0.01)
        if ch.hung_up:
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for at, digits in sorted(plan):
            await asyncio.sleep(max(t0 + at - loop.time(), 0))
            if ch.hung_up:
                return
            await self.phone_dtmf(ch, digits)
        if hangup_after is not None:
            await asyncio.sleep(max(t0 + hangup_after - loop.time(), 0))
            await self.hangup(ch, "NORMAL_CLEARING")

    async def phone_dtmf(self, ch: Channel, digits: str) -> None:
        """The far end sends RFC 2833 digits: DTMF events (and 0xFF frames on the unicast)."""
        for i, digit in enumerate(digits):
            if ch.hung_up:
                return
            if i:
                await asyncio.sleep(0.1)
            ch.dtmf_from_phone.append(digit)
            if ch.unicast:
                ch.unicast.inject_ff(2)
            self.fire_channel(
                ch,
                "DTMF",
                tail=[("DTMF-Digit", digit), ("DTMF-Duration", "1440"), ("DTMF-Source", "RTP")],
            )

    # ---- applications ------------------------------------------------------------------------
    def _exec_start(self, ch: Channel, app: str, arg: str, app_uuid: str) -> None:
        ch.set_var("current_application", app)
        if arg:
            ch.set_var("current_application_data", arg)
        else:
            ch.unset_var("current_application_data")
        ch.applications.append((app, arg))
        tail = [("Application", app)]
        if arg:
            tail.append(("Application-Data", arg))
        tail.append(("Application-UUID", app_uuid))
        self.fire_channel(ch, "CHANNEL_EXECUTE", tail=tail)

    def _exec_complete(
        self, ch: Channel, app: str, arg: str, app_uuid: str, response: str = "_none_"
    ) -> None:
        if arg:
            # Recorded: both are set again (data first) when the application had data.
            ch.set_var("current_application_data", arg)
            ch.set_var("current_application", app)
        tail = [("Application", app)]
        if arg:
            tail.append(("Application-Data", arg))
        tail += [("Application-Response", response), ("Application-UUID", app_uuid)]
        self.fire_channel(ch, "CHANNEL_EXECUTE_COMPLETE", tail=tail)

    def _start_app_runner(self, ch: Channel) -> None:
        if getattr(ch, "app_runner", None) is None:
            ch.app_runner = self._spawn(self._app_runner(ch))

    async def _app_runner(self, ch: Channel) -> None:
        """Executes queued sendmsg messages in order, like the park loop of FreeSWITCH."""
        queue: asyncio.Queue[tuple[str, dict[str, str]]] = ch.app_queue
        while not ch.hung_up:
            kind, msg = await queue.get()
            if ch.hung_up:
                return
            if kind == "unicast":
                await self._process_unicast(ch, msg)
            elif kind == "execute":
                ch.running_app = msg.get("execute-app-name", "")
                try:
                    await self._execute(ch, msg)
                finally:
                    ch.running_app = None
            if ch.socket_gone and not ch.hung_up:
                # The socket app returned once that application ended; the dialplan goes on.
                await self._socket_app_returned(ch)
                return

    async def _execute(self, ch: Channel, msg: dict[str, str]) -> None:
        app = msg.get("execute-app-name", "")
        arg = msg.get("execute-app-arg", "")
        app_uuid = msg.get("event-uuid") or str(uuidlib.uuid4())
        loops = 1
        with contextlib.suppress(ValueError):
            loops = max(1, int(msg.get("loops", "1")))
        for _ in range(loops):
            if ch.hung_up:
                return
            await self._execute_once(ch, app, arg, app_uuid)

    async def _execute_once(self, ch: Channel, app: str, arg: str, app_uuid: str) -> None:
        step = self.config.app_step_delay
        known = {
            "answer",
            "pre_answer",
            "ring_ready",
            "set",
            "export",
            "unset",
            "playback",
            "sleep",
            "hangup",
            "send_dtmf",
            "park",
            "echo",
            "log",
            "info",
            "respond",
        }
        if app not in known:
            # FreeSWITCH: "Invalid Application", the channel is hung up.
            log.info("simulator: application %r is not simulated -> hangup", app)
            await self.hangup(ch, "DESTINATION_OUT_OF_ORDER")
            return
        ch.set_var("current_loop", "1")
        ch.set_var("total_loops", "1")
        ch.last_app, ch.last_arg = app, arg
        await asyncio.sleep(step)
        if ch.hung_up:
            return
        self._exec_start(ch, app, arg, app_uuid)
        if app == "answer":
            await asyncio.sleep(step)
            with self.batch():
                if not ch.has_read_codec:
                    self._phone_media_up(ch)
                elif ch.unicast and not ch.answered:
                    ch.unicast.inject_ff(2)  # recorded: 2 x 0xFF at answer after pre_answer
                if not ch.answered:
                    ch.call_state = "EARLY"
                    self._mark_answered(ch)
                self._exec_complete(ch, app, arg, app_uuid)
            return
        if app == "pre_answer":
            await asyncio.sleep(step)
            with self.batch():
                if not ch.has_read_codec:
                    self._phone_media_up(ch)
                ch.call_state = "EARLY" if not ch.answered else ch.call_state
                self._exec_complete(ch, app, arg, app_uuid)
            return
        if app == "ring_ready" or (app == "respond" and arg.startswith("180")):
            if not ch.progress_us:
                ch.progress_us = self.event_timestamp_us()
                self.fire_channel(ch, "CHANNEL_PROGRESS")
        elif app == "respond" and arg.startswith("183"):
            if not ch.has_read_codec:
                self._phone_media_up(ch)
        elif app in ("set", "export"):
            key, _, value = arg.partition("=")
            if key:
                ch.set_var(key, value)
        elif app == "unset":
            ch.unset_var(arg)
        elif app == "sleep":
            with contextlib.suppress(ValueError):
                await self._interruptible(ch, float(arg) / 1000.0)
        elif app == "playback":
            ch.running_exec = (app, arg, app_uuid)
            try:
                await self._interruptible(ch, _playback_seconds(arg))
            finally:
                if ch.running_exec is not None and ch.running_exec[2] == app_uuid:
                    ch.running_exec = None
            if ch.hung_up:
                return
            self._exec_complete(ch, app, arg, app_uuid, response="FILE PLAYED")
            return
        elif app == "echo" or app == "park":
            await self._interruptible(ch, None)
            if ch.hung_up:
                return
        elif app == "send_dtmf":
            digits = arg.split("@")[0]
            ch.dtmf_to_phone.extend(d for d in digits if d not in "wW")
            if ch.unicast:
                ch.unicast.inject_ff(1)
            ch.set_var("last_dtmf_duration", "1500")
        elif app == "hangup":
            cause = arg.strip() or "NORMAL_CLEARING"
            await self._hangup_from_app(ch, cause, app_uuid, arg)
            return
        self._exec_complete(ch, app, arg, app_uuid)

    async def _interruptible(self, ch: Channel, seconds: float | None) -> None:
        """Wait for `seconds` (None: forever) unless uuid_break or hangup comes first."""
        brk: asyncio.Event = ch.break_event
        brk.clear()
        hup: asyncio.Event = ch.hangup_event
        waiters = [asyncio.ensure_future(brk.wait()), asyncio.ensure_future(hup.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _phone_media_up(self, ch: Channel) -> None:
        """The inbound leg sends its 183/200 with SDP: read codec + PROGRESS_MEDIA."""
        ch.progress_media_us = ch.created_us
        media = ch.media_variables()
        ch.set_var("rtp_use_codec_string", "OPUS,G722,PCMU,PCMA,H264,VP8")
        ch.set_vars(media[:3])  # remote_*_media_flow
        ch.set_var("audio_media_flow", "sendrecv")
        ch.set_vars(media[3:])
        ch.set_var("endpoint_disposition", "EARLY MEDIA")
        ch.has_read_codec = True
        ch.answer_state = "early"
        self.fire_channel(ch, "CHANNEL_PROGRESS_MEDIA")
        ch.set_var("rtp_local_sdp_str", ch.local_sdp())

    # ---- sendmsg -----------------------------------------------------------------------------
    async def _sendmsg(
        self, session: EslSession, arg: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        msg = {k.lower(): v for k, v in headers}
        target_uuid = arg.strip() or (session.channel.uuid if session.channel else "")
        ch = self.channels.get(target_uuid)
        if ch is None or ch.hung_up:
            session.send(wire.command_reply(f"-ERR invalid session id [{target_uuid}]"))
            return
        command = msg.get("call-command", "").lower()
        if body and "execute-app-arg" not in msg:
            msg["execute-app-arg"] = body.decode("utf-8", "replace")
        session.send(wire.command_reply("+OK"))
        static = ch.session is not None and not ch.session.socket_async
        if command == "hangup":
            cause = msg.get("hangup-cause", "NORMAL_CLEARING")
            self._spawn(self._kill_soon(ch, cause))
            return
        if command not in ("execute", "unicast"):
            return  # nomedia, xferext, ...: acknowledged, not simulated
        if static:
            # Static single-channel mode: the message is queued but never parsed
            # (docs/freeswitch.rst, fact 6).
            ch.pending_msgs.append((command, msg))
            return
        if command == "unicast" and not ch.parked:
            # A ringing originated leg parses its queued messages in its state machine too
            # (crash 2 of the fixtures): the unicast is handled right away.
            self._spawn(self._process_unicast(ch, msg))
            return
        ch.app_queue.put_nowait((command, msg))

    async def _process_unicast(self, ch: Channel, msg: dict[str, str]) -> None:
        await asyncio.sleep(0.001)
        if ch.hung_up or self.crashed:
            return
        if not ch.has_read_codec:
            # switch_ivr_activate_unicast dereferences a NULL read codec (docs/freeswitch.rst,
            # fact 1).
            reason = (
                f"unicast on channel {ch.uuid} without a read codec "
                f"(Answer-State {ch.answer_state}, Channel-Call-State {ch.call_state}): "
                "FreeSWITCH 1.10.12 segfaults here"
            )
            self._spawn(self._crash_later(reason))
            return
        local = (msg.get("local-ip", "127.0.0.1"), int(msg.get("local-port", "0") or 0))
        remote = (msg.get("remote-ip", "127.0.0.1"), int(msg.get("remote-port", "0") or 0))
        if self.unicast_redirect is not None:
            local, remote = await self.unicast_redirect(local, remote)
        if ch.unicast is not None:
            ch.unicast.stop()
        stream = UnicastStream(
            codec=ch.codec,
            local=local,
            remote=remote,
            source=ch.audio,
            first_frame_ff=self.config.first_frame_ff,
        )
        ch.unicast = stream
        ch.unicast_history.append(stream)
        await stream.start()

    async def _crash_later(self, reason: str) -> None:
        await asyncio.sleep(self.config.crash_delay)
        self.crash(reason)

    # ---- hangup ------------------------------------------------------------------------------
    async def hangup(
        self, ch: Channel, cause: str = "NORMAL_CLEARING", *, by_switch: bool = False
    ) -> None:
        """Hang a channel up from outside the socket (phone BYE, uuid_kill, timeout);
        ``by_switch``: FreeSWITCH ends it (uuid_kill, hupall), not the phone."""
        if ch.hung_up or ch.destroyed:
            return
        ch.hangup_by_switch = by_switch
        with self.batch():
            self._mark_hangup(ch, cause)
            self._teardown(ch)

    async def _hangup_from_app(self, ch: Channel, cause: str, app_uuid: str, arg: str) -> None:
        """The `hangup` application: recorded order is EXECUTE, HANGUP, linger notice,
        EXECUTE_COMPLETE(hangup), then (20 ms later) UNPARK ... HANGUP_COMPLETE."""
        ch.hangup_by_switch = True
        with self.batch():
            self._mark_hangup(ch, cause, notice_now=True)
        with self.batch():
            self._exec_complete(ch, "hangup", arg, app_uuid)
        await asyncio.sleep(self.config.app_step_delay)
        with self.batch():
            self._teardown(ch)

    def _mark_hangup(self, ch: Channel, cause: str, notice_now: bool = False) -> None:
        ch.hung_up = True
        ch.hangup_cause = cause
        ch.hangup_us = self.event_timestamp_us()
        ch.answer_state = "hangup"
        ch.state_number = 10
        ch.unset_var("current_loop")
        ch.unset_var("total_loops")
        if ch.kind == "originated" and not ch.answered:
            # An unanswered INVITE ends with a failure response (or CANCEL -> 487).
            status = SIP_STATUS.get(cause, "487")
            ch.set_var("sip_invite_failure_status", status)
            ch.set_var("sip_invite_failure_phrase", SIP_PHRASE.get(status, "Request Terminated"))
        elif ch.kind != "loopback":
            term = SIP_STATUS.get(cause)
            if term:
                ch.set_var("sip_term_status", term)
                ch.set_var("proto_specific_hangup_cause", f"sip:{term}")
            ch.set_var("sip_term_cause", str(Q850.get(cause, 16)))
        ch.hangup_event.set()
        ch.break_event.set()
        if ch.unicast is not None:
            ch.unicast.stop()
        self.fire_channel(ch, "CHANNEL_HANGUP")
        running, ch.running_exec = ch.running_exec, None
        if running is not None:
            # Recorded: the interrupted application completes right after CHANNEL_HANGUP
            # (playback answers FILE PLAYED).
            app, arg, app_uuid = running
            response = "FILE PLAYED" if app == "playback" else "_none_"
            self._exec_complete(ch, app, arg, app_uuid, response=response)
        session: EslSession | None = ch.session
        ch.notice_sent = False
        if session is not None and not session.closed and session.connected:
            if not session.socket_async or not session.linger:
                # No linger: the socket is told goodbye and closed right after CHANNEL_HANGUP.
                session.send(wire.disconnect_notice_outbound(ch.uuid))
                session.close()
                ch.notice_sent = True
            elif notice_now:
                session.send(wire.linger_notice(ch.uuid, ch.name))
                ch.notice_sent = True

    def _teardown(self, ch: Channel) -> None:
        if ch.destroyed:
            return
        if ch.hangup_by_switch and not ch.answered:
            # Recorded (orphans/): the switch CANCELs a leg it rings, and refuses a caller
            # it has not answered.
            disposition = "send_cancel" if ch.kind == "originated" else "send_refuse"
        else:
            disposition = "recv_bye" if ch.kind == "phone" else "send_bye"
        ch.set_var("sip_hangup_disposition", disposition)
        app = getattr(ch, "current_app", None)
        if ch.parked:
            ch.parked = False
            self.fire_channel(ch, "CHANNEL_UNPARK")
        socket_app = getattr(ch, "socket_app", None)
        if app == "socket" and socket_app is not None:
            self._exec_complete(ch, "socket", socket_app[0], socket_app[1])
        elif app:
            self._exec_complete(ch, app, "", str(uuidlib.uuid4()))
        ch.state = "CS_HANGUP"
        self.fire_channel(ch, "CHANNEL_STATE")
        ch.state, ch.state_number, ch.call_state = "CS_REPORTING", 11, "HANGUP"
        self.fire_channel(ch, "CHANNEL_STATE")
        end = ch.hangup_us or self.event_timestamp_us()
        if ch.kind == "originated" and ch.answered:
            ch.unset_var("call_uuid")  # recorded for the answered originated leg
        ch.set_vars(ch.hangup_variables(end))
        cause = ch.hangup_cause or "NORMAL_CLEARING"
        self.fire_channel(ch, "CHANNEL_HANGUP_COMPLETE", pre=[("Hangup-Cause", cause)])
        session: EslSession | None = ch.session
        if (
            session is not None
            and not session.closed
            and session.connected
            and not getattr(ch, "notice_sent", False)
        ):
            session.send(wire.linger_notice(ch.uuid, ch.name))
            if session.linger_seconds is not None:
                self._spawn(self._linger_timeout(session, session.linger_seconds))
        elif session is not None and not session.connected and not session.closed:
            session.close()
        ch.destroyed = True
        self.channels.pop(ch.uuid, None)
        runner = getattr(ch, "app_runner", None)
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
        phone: PhoneCall | None = getattr(ch, "phone_call", None)
        if phone is not None:
            phone.finished.set()
            phone.connected.set()

    async def _linger_timeout(self, session: EslSession, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not session.closed:
            session.send(wire.disconnect_notice_outbound(session.session_uuid))
            session.close()

    async def _session_exit(self, session: EslSession) -> None:
        session.exited = True
        session.send(wire.command_reply("+OK bye"))
        if session.outbound:
            session.send(wire.disconnect_notice_outbound(session.session_uuid))
        else:
            session.send(wire.disconnect_notice_inbound())
        session.close()
        if session.outbound:
            self._on_outbound_gone(session)

    def _on_outbound_gone(self, session: EslSession) -> None:
        """The app closed or left the socket: the socket app returns, the dialplan ends and
        FreeSWITCH hangs the channel up (NORMAL_CLEARING)."""
        ch = session.channel
        if ch is None or ch.hung_up or self.crashed:
            return
        if ch.running_app is not None:
            # Recorded on FreeSWITCH 1.10.12 (orphans/esl_outbound_orphan_killed_preanswer_
            # ringback.txt): an application running in the park loop (the endless ringback
            # `playback ...;loops=-1`) is not interrupted by the socket's end; the channel
            # stays until that application ends (never, for the ringback) or something else
            # hangs it up.
            ch.socket_gone = True
            return
        self._spawn(self._socket_app_returned(ch))

    async def _socket_app_returned(self, ch: Channel) -> None:
        """The socket app returns (its connection is gone): the park loop ends, and the
        dialplan of dialplan/ goes on with `hangup NORMAL_TEMPORARY_FAILURE` (recorded:
        UNPARK, EXECUTE_COMPLETE socket, EXECUTE hangup, HANGUP, EXECUTE_COMPLETE hangup,
        HANGUP_COMPLETE)."""
        if ch.hung_up or ch.destroyed:
            return
        if ch.after_socket_hangup is None:
            # An originated `&socket(...)` leg: no dialplan after the application.
            await self.hangup(ch, "NORMAL_CLEARING")
            return
        with self.batch():
            if ch.parked:
                ch.parked = False
                self.fire_channel(ch, "CHANNEL_UNPARK")
            socket_app = ch.socket_app
            if socket_app is not None:
                self._exec_complete(ch, "socket", socket_app[0], socket_app[1])
            ch.current_app = None
            ch.session = None
        arg, app_uuid = ch.after_socket_hangup, str(uuidlib.uuid4())
        with self.batch():
            self._exec_start(ch, "hangup", arg, app_uuid)
        await self._hangup_from_app(ch, arg, app_uuid, arg)

    # ---- crash & faults ----------------------------------------------------------------------
    def crash(self, reason: str) -> None:
        """What a FreeSWITCH segfault looks like from outside: every connection and call
        drops at once, and nothing listens until restart()."""
        if self.crashed:
            return
        log.error("simulated FreeSWITCH crash: %s", reason)
        self.crashed = True
        self.crash_reason = reason
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_everything()

    def _drop_everything(self) -> None:
        self._sched.clear()  # the scheduler dies with the switch (its tasks are cancelled below)
        for ch in list(self.channels.values()):
            self._destroy_silently(ch)
        for s in list(self.sessions):
            s.close(abort=True)
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()

    def _destroy_silently(self, ch: Channel) -> None:
        if ch.unicast is not None:
            ch.unicast.stop()
        ch.hung_up = True
        ch.destroyed = True
        if ch.hangup_cause is None:
            ch.hangup_cause = "CRASH"
        ch.hangup_event.set()
        self.channels.pop(ch.uuid, None)
        phone: PhoneCall | None = getattr(ch, "phone_call", None)
        if phone is not None:
            phone.finished.set()
            phone.connected.set()

    def drop_all_connections(self) -> None:
        """Fault hook: every ESL TCP connection (inbound and outbound) is reset now."""
        for s in list(self.sessions):
            s.close(abort=True)

    def drop_inbound_connections(self) -> int:
        """Fault hook: only the inbound ESL connections are reset; channels stay up."""
        dropped = [s for s in list(self.sessions) if not s.outbound]
        for s in dropped:
            s.close(abort=True)
        return len(dropped)

    def drop_outbound_socket(self, uuid: str) -> bool:
        """Fault hook: the outbound socket of channel ``uuid`` is reset. As in FreeSWITCH
        the socket application ends with it and the channel is hung up."""
        for s in list(self.sessions):
            if s.outbound and s.channel is not None and s.channel.uuid == uuid:
                s.close(abort=True)
                self._on_outbound_gone(s)
                return True
        return False

    def drop_next_command(self, count: int = 1) -> None:
        """Fault hook: the next `count` commands (any connection) get no reply; the
        connection is reset right after they arrive."""
        self._drop_next_command += count

    def inject_raw(self, data: bytes, close_after: bool = False, inbound_only: bool = True) -> int:
        """Fault hook: write raw bytes (garbage, a truncated frame) to the ESL connections."""
        n = 0
        for s in list(self.sessions):
            if inbound_only and s.outbound:
                continue
            if s.closed:
                continue
            s.send(data)
            n += 1
            if close_after:
                s.close()
        return n

    def live_channels(self) -> list[Channel]:
        return [c for c in self.channels.values() if not c.destroyed]


def _playback_seconds(arg: str) -> float | None:
    """How long `playback <arg>` runs: forever for looping tone streams (`loops=-1`)."""
    if "loops=-1" in arg or "loops=0" in arg:
        return None
    m = re.search(r"%\(([\d,]+)\)", arg)
    if m:
        nums = [int(x) for x in m.group(1).split(",") if x]
        return sum(nums[:2]) / 1000.0 if nums else 1.0
    return 1.0
