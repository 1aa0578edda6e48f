"""One ESL connection to the simulator, inbound (a client logs in) or outbound (the dialplan's
`socket` application connected to the gateway): reading commands, dispatching them by their
first word (`COMMANDS`), and writing replies and events in FreeSWITCH's framing.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid as uuidlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from esl_bridge.logs import get_logger

from . import wire
from .channel import Channel, FiredEvent, common_event_headers

if TYPE_CHECKING:
    from .server import Simulator

log = get_logger(__name__)

Headers = list[tuple[str, str]]


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
        self.custom_subclasses: set[str] = set()  # `event plain CUSTOM a::b c::d`
        self.all_events = False
        self.uuid_filter: str | None = None  # myevents
        self.header_filters: Headers = []
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
        elif ev.name == "CUSTOM" and not self.all_events:
            # Recorded (ops/): a CUSTOM subscription with subclasses gets those subclasses
            # and every CUSTOM event that has no subclass at all.
            subclass = ev.get("Event-Subclass")
            ok = "CUSTOM" in self.event_names and (
                subclass is None or subclass in self.custom_subclasses
            )
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
            log.exception("sim.session_failed", outbound=self.outbound, uuid=self.session_uuid)
        finally:
            was_closed = self.closed
            self.close()
            if self.outbound and not was_closed:
                self.sim._on_outbound_gone(self)

    async def _read_command(self) -> tuple[str, Headers, bytes] | None:
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
        headers: Headers = []
        for item in rest:
            k, _, v = item.partition(":")
            headers.append((k.strip(), v.strip()))
        body = b""
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        if length and length.isdigit():
            body = await self.reader.readexactly(int(length))
        return first, headers, body

    # ---- commands ----------------------------------------------------------------------------
    async def handle(self, line: str, headers: Headers, body: bytes) -> None:
        word, _, arg = line.partition(" ")
        arg = arg.strip()
        if not self.authed:
            if word.lower() == "auth" and arg == self.sim.config.password:
                self.authed = True
                self.send(wire.command_reply("+OK accepted"))
            else:
                self.send(wire.AUTH_FAIL)
                self.close()
            return
        handler = COMMANDS.get(word.lower())
        if handler is None:
            self._not_found()
            return
        await handler(self, arg, headers, body)

    def _not_found(self) -> None:
        self.send(wire.command_reply("-ERR command not found"))

    async def _cmd_connect(self, arg: str, headers: Headers, body: bytes) -> None:
        if not self.outbound:
            self._not_found()
            return
        await self.sim._outbound_connect(self)

    async def _cmd_api(self, arg: str, headers: Headers, body: bytes) -> None:
        cmd, _, cmd_arg = arg.partition(" ")
        result = await self.sim.api(cmd, cmd_arg.strip(), session=self)
        self.send(wire.api_response(result))

    async def _cmd_bgapi(self, arg: str, headers: Headers, body: bytes) -> None:
        cmd, _, cmd_arg = arg.partition(" ")
        job_uuid = next((v for k, v in headers if k.lower() == "job-uuid"), None)
        job_uuid = job_uuid or str(uuidlib.uuid4())
        self.send(wire.command_reply(f"+OK Job-UUID: {job_uuid}", [("Job-UUID", job_uuid)]))
        self.sim._spawn(self.sim._bgapi(job_uuid, cmd, cmd_arg.strip()))

    async def _cmd_event(self, arg: str, headers: Headers, body: bytes) -> None:
        fmt, _, names = arg.partition(" ")
        if fmt.lower() != "plain":
            self.send(wire.command_reply("-ERR the simulator speaks only event plain"))
            return
        custom = False
        for name in names.split():
            if custom:
                # FreeSWITCH takes every word after CUSTOM as a subclass name.
                self.custom_subclasses.add(name)
            elif name.upper() == "ALL":
                self.all_events = True
            else:
                self.event_names.add(name.upper())
                custom = name.upper() == "CUSTOM"
        self.send(wire.command_reply("+OK event listener enabled plain"))

    async def _cmd_myevents(self, arg: str, headers: Headers, body: bytes) -> None:
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

    async def _cmd_noevents(self, arg: str, headers: Headers, body: bytes) -> None:
        self.all_events = False
        self.event_names.clear()
        self.uuid_filter = None
        self.send(wire.command_reply("+OK no longer listening for events"))

    async def _cmd_nixevent(self, arg: str, headers: Headers, body: bytes) -> None:
        for name in arg.split():
            self.event_names.discard(name.upper())
        self.send(wire.command_reply("+OK events nixed"))

    async def _cmd_filter(self, arg: str, headers: Headers, body: bytes) -> None:
        key, _, value = arg.partition(" ")
        if not key:
            self.send(wire.command_reply("-ERR invalid filter"))
            return
        self.header_filters.append((key, value))
        self.send(wire.command_reply(f"+OK filter added. [{key}]=[{value}]"))

    async def _cmd_linger(self, arg: str, headers: Headers, body: bytes) -> None:
        if not (self.outbound and self.socket_async):
            self._not_found()
            return
        self.linger = True
        self.linger_seconds = float(arg) if arg.replace(".", "", 1).isdigit() else None
        self.send(wire.command_reply("+OK will linger"))

    async def _cmd_nolinger(self, arg: str, headers: Headers, body: bytes) -> None:
        if not (self.outbound and self.socket_async):
            self._not_found()
            return
        self.linger = False
        self.send(wire.command_reply("+OK will not linger"))

    async def _cmd_sendmsg(self, arg: str, headers: Headers, body: bytes) -> None:
        await self.sim._sendmsg(self, arg, headers, body)

    async def _cmd_sendevent(self, arg: str, headers: Headers, body: bytes) -> None:
        """`sendevent CUSTOM` + headers (+ body), as recorded in ops/esl_inbound_sendevent.txt
        and its observer: the reply is `+OK <Event-UUID>`; the event carries Event-Subclass
        first, then `Command: sendevent CUSTOM`, the sent headers in order with their values
        URL-decoded, Event-UUID, then the usual common headers."""
        name = arg.split()[0].upper() if arg.split() else ""
        if name != "CUSTOM":
            # FreeSWITCH fires any event type (an unknown name as MESSAGE); not simulated.
            self.send(wire.command_reply("-ERR the simulator fires only CUSTOM events"))
            return
        event_uuid = str(uuidlib.uuid4())
        decoded = [(k, urllib.parse.unquote(v)) for k, v in headers]
        subclass = [(k, v) for k, v in decoded if k.lower() == "event-subclass"]
        rest = [(k, v) for k, v in decoded if k.lower() != "event-subclass"]
        event_headers = [
            *subclass[:1],
            ("Command", f"sendevent {arg}"),
            *rest,
            ("Event-UUID", event_uuid),
            *common_event_headers(self.sim, "CUSTOM"),
        ]
        self.send(wire.command_reply(f"+OK {event_uuid}"))
        self.sim.fire(None, "CUSTOM", event_headers, body)

    async def _cmd_exit(self, arg: str, headers: Headers, body: bytes) -> None:
        await self.sim._session_exit(self)


# The commands a logged-in session understands, by first word (lower case); any other word
# gets "-ERR command not found". `auth` is handled before login only.
COMMANDS: dict[str, Callable[[EslSession, str, Headers, bytes], Awaitable[None]]] = {
    "connect": EslSession._cmd_connect,
    "api": EslSession._cmd_api,
    "bgapi": EslSession._cmd_bgapi,
    "event": EslSession._cmd_event,
    "myevents": EslSession._cmd_myevents,
    "noevents": EslSession._cmd_noevents,
    "nixevent": EslSession._cmd_nixevent,
    "filter": EslSession._cmd_filter,
    "linger": EslSession._cmd_linger,
    "nolinger": EslSession._cmd_nolinger,
    "sendmsg": EslSession._cmd_sendmsg,
    "sendevent": EslSession._cmd_sendevent,
    "exit": EslSession._cmd_exit,
}
