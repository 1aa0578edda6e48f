"""ESL adapters on the gevent hub: the outbound socket server and the inbound client.

Why not greenswitch's own classes (0.0.19, read in site-packages):

* ``OutboundESLServer.listen()`` polls a non-blocking ``accept`` every 100 ms, which adds
  up to 100 ms to every call setup; ``gevent.server.StreamServer`` waits on the hub's
  accept watcher instead.
* ``ESLProtocol.receive_events`` reads line by line, URL-decodes whole blocks and loses
  event bodies (a BACKGROUND_JOB's ``+OK <uuid>`` lands inside its Content-Length value),
  and ``send()`` waits forever when FreeSWITCH drops mid-command. Overriding the read
  loop, ``handle_event`` and ``send`` would replace all of ``ESLProtocol``, so each
  connection here is driven directly on a gevent socket (the same primitive greenswitch
  uses) with the project's sans-I/O parser (:mod:`esl_bridge.esl.protocol`) and builders
  (:mod:`esl_bridge.esl.commands`). greenswitch stays the baseline of the benchmark.

Rules kept here: never monkey-patch; every command runs under a timeout and raises
:class:`EslTimeout`; a timed-out command poisons its connection (a late reply could be
taken for the next command's), so the connection is closed; a dropped connection fails
every waiting command at once with :class:`EslDisconnected`; the ESL password is never
logged.
"""

from __future__ import annotations

import contextlib
import enum
import random
import socket as _stdsocket
import time
import uuid as _uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event
import gevent.lock
import gevent.queue
import gevent.server
import gevent.socket

from esl_bridge.core.unicast_gate import GateInput, UnicastGate, classify_channel, classify_event
from esl_bridge.esl import commands as cmd
from esl_bridge.esl.protocol import (
    ApiResponse,
    AuthRequest,
    ChannelRecord,
    CommandReply,
    DisconnectNotice,
    EslProtocolError,
    Event,
    EventDecodeError,
    FrameParser,
    Message,
    RudeRejection,
    decode,
)
from esl_bridge.logs import bounded, get_logger

__all__ = [
    "DEFAULT_INBOUND_EVENTS",
    "ConnectionState",
    "EslAuthError",
    "EslCommandError",
    "EslDisconnected",
    "EslError",
    "EslNotSent",
    "EslTimeout",
    "InboundClient",
    "OriginateResult",
    "OutboundServer",
    "OutboundSession",
    "UnicastNotSafe",
]

log = get_logger("esl")

# Only what the call logic uses (docs/architecture.rst): job results, progress/early media, answer,
# hangup and DTMF. CHANNEL_PARK: after a 183 it is the first event with the channel's read
# rate (recorded), which unicast of early media needs. CHANNEL_CREATE is not needed.
DEFAULT_INBOUND_EVENTS: tuple[str, ...] = (
    "BACKGROUND_JOB",
    "CHANNEL_PROGRESS",
    "CHANNEL_PROGRESS_MEDIA",
    "CHANNEL_PARK",
    "CHANNEL_ANSWER",
    "CHANNEL_HANGUP_COMPLETE",
    "DTMF",
)

DEFAULT_COMMAND_TIMEOUT = 5.0
_RECV_BYTES = 65536


#: The ringback a SIP caller hears while the web user's browser rings (US ring cadence).
RINGBACK_TONE = "%(2000,4000,440,480)"


class EslError(Exception):
    """Base of every ESL control error."""


class EslTimeout(EslError):
    """A command got no answer in time (its connection is closed)."""


class EslDisconnected(EslError):
    """The connection is closed, or dropped while a command waited."""


class EslNotSent(EslDisconnected):
    """Not connected: the command was not sent, so the switch did nothing of it."""


class EslAuthError(EslError):
    """FreeSWITCH refused the ESL password (``-ERR invalid``) or the ACL refused us."""


class EslCommandError(EslError):
    """FreeSWITCH answered ``-ERR ...``."""

    def __init__(self, command: str, reply: str) -> None:
        super().__init__(f"{command}: {reply}")
        self.command = command
        self.reply = reply


class UnicastNotSafe(EslError):
    """``unicast`` before the channel has a read codec would crash FreeSWITCH 1.10.12
    (docs/freeswitch.rst, fact 1); wait for CHANNEL_ANSWER, pre_answer's completion or
    early media."""


def _describe(data: bytes) -> str:
    """First line of a command for logs; the auth password is never shown."""
    first = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    if first.startswith("auth "):
        return "auth ***"
    return first[:120]


# --------------------------------------------------------------------------- connection


class _Connection:
    """One ESL TCP connection: a reader greenlet feeding the sans-I/O parser, and
    commands answered in FIFO order (ESL replies in the order commands were sent).

    ``on_message`` runs in the reader greenlet for every message that is not a command
    reply and must not block.
    """

    def __init__(
        self,
        sock: gevent.socket.socket,
        *,
        name: str,
        on_message: Callable[[Message], None],
        on_closed: Callable[[BaseException | None], None] | None = None,
        logger: Any = None,
    ) -> None:
        self._sock = sock
        self.name = name
        self._on_message = on_message
        self._on_closed = on_closed
        self._parser = FrameParser()
        self._pending: deque[gevent.event.AsyncResult] = deque()
        self._send_lock = gevent.lock.Semaphore()
        self._closed = gevent.event.Event()
        self.close_reason: BaseException | None = None
        self._log = logger if logger is not None else log.bind(conn=name)
        self._reader: gevent.Greenlet | None = None

    @property
    def closed(self) -> bool:
        return bool(self._closed.is_set())

    def start(self) -> None:
        self._reader = gevent.spawn(self._read_loop)

    def wait_closed(self, timeout: float | None = None) -> bool:
        return bool(self._closed.wait(timeout))

    def _read_loop(self) -> None:
        reason: BaseException | None = None
        try:
            while True:
                data = self._sock.recv(_RECV_BYTES)
                if not data:
                    self._parser.eof()
                    reason = EslDisconnected(f"{self.name}: closed by FreeSWITCH")
                    break
                for frame in self._parser.feed(data):
                    try:
                        message = decode(frame)
                    except EventDecodeError as exc:
                        self._log.warning("esl.bad_event_skipped", error=bounded(str(exc)))
                        continue
                    self._dispatch(message)
        except EslProtocolError as exc:
            self._log.error("esl.protocol_error", error=bounded(str(exc)))
            reason = EslDisconnected(f"{self.name}: protocol error: {exc}")
        except OSError as exc:
            reason = EslDisconnected(f"{self.name}: connection lost: {exc}")
        except gevent.GreenletExit:
            reason = EslDisconnected(f"{self.name}: closed")
        finally:
            self._finish(reason)

    def _dispatch(self, message: Message) -> None:
        if isinstance(message, CommandReply | ApiResponse):
            while self._pending:
                waiter = self._pending.popleft()
                if not waiter.ready():
                    waiter.set(message)
                    return
            self._log.warning("esl.unexpected_reply", reply=bounded(getattr(message, "text", "")))
            return
        try:
            self._on_message(message)
        except Exception:  # a handler bug must not kill the reader
            self._log.exception("esl.message_handler_failed")

    def _finish(self, reason: BaseException | None) -> None:
        if self._closed.is_set():
            return
        self.close_reason = reason or EslDisconnected(f"{self.name}: closed")
        self._closed.set()
        failure = self.close_reason
        while self._pending:
            waiter = self._pending.popleft()
            if not waiter.ready():
                waiter.set_exception(failure)
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._on_closed is not None:
            try:
                self._on_closed(self.close_reason)
            except Exception:
                self._log.exception("esl.close_handler_failed")

    def close(self, reason: BaseException | None = None) -> None:
        """Close now; waiting commands fail with ``reason`` (or EslDisconnected)."""
        if self._closed.is_set():
            return
        current = gevent.getcurrent()
        if self._reader is not None and self._reader is not current and not self._reader.dead:
            self._finish(reason)
            self._reader.kill(block=False)
        else:
            self._finish(reason)

    def send_only(self, data: bytes, timeout: float) -> None:
        """Send without expecting a reply (``exit`` after a disconnect, tests)."""
        with self._send_lock, gevent.Timeout(timeout, EslTimeout(f"{self.name}: send timed out")):
            self._sock.sendall(data)

    def command(self, data: bytes, timeout: float) -> CommandReply | ApiResponse:
        """Send one command and wait for its reply, at most ``timeout`` seconds."""
        if self._closed.is_set():
            raise EslDisconnected(f"{self.name}: not connected ({self.close_reason})")
        what = _describe(data)
        waiter = gevent.event.AsyncResult()
        timer = gevent.Timeout(timeout)
        timer.start()
        try:
            with self._send_lock:
                self._pending.append(waiter)
                self._sock.sendall(data)
            result: CommandReply | ApiResponse = waiter.get()
            return result
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            timed_out = EslTimeout(f"{self.name}: no reply to {what!r} within {timeout:g} s")
            self._log.error("esl.command_timeout", command=what, timeout_s=timeout)
            self.close(timed_out)
            raise timed_out from None
        except OSError as exc:
            dropped = EslDisconnected(f"{self.name}: send of {what!r} failed: {exc}")
            self.close(dropped)
            raise dropped from None
        finally:
            timer.close()


def _tcp_nodelay(sock: gevent.socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)


# ------------------------------------------------------------------------ outbound side


@dataclass
class _ExecWaiter:
    app: str
    arg: str | None
    event_uuid: str
    result: gevent.event.AsyncResult


@dataclass
class _Ringback:
    """The ringback playback of a session: whether it began and whether it ended.

    ``uuid_break`` only stops a playback that is running: sent before FreeSWITCH has
    started the queued app, it does nothing and the tone then plays forever, holding the
    ``answer`` queued behind it. So stopping waits for the start first.
    """

    event_uuid: str
    data: str
    started: gevent.event.Event
    ended: gevent.event.Event

    def matches(self, event: Event) -> bool:
        if event.get("Application-UUID") == self.event_uuid:
            return True
        # A switch that ignores Event-UUID: the same application and argument.
        return event.application == "playback" and event.get("Application-Data") == self.data


class OutboundSession:
    """One call handed over by the dialplan ``socket`` application (async full).

    ``channel`` is the typed record from the connect reply, updated by every channel
    event. Events (and disconnect notices) are put on ``events``, a gevent queue the
    application reads; ``None`` is put last when the socket closes.
    """

    def __init__(
        self,
        sock: gevent.socket.socket,
        peer: tuple[str, int],
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    ) -> None:
        self.peer = peer
        self.command_timeout = command_timeout
        self.events: gevent.queue.Queue[Event | DisconnectNotice | None] = gevent.queue.Queue()
        self._channel: ChannelRecord | None = None
        self._log = log.bind(side="outbound", peer=f"{peer[0]}:{peer[1]}")
        self._conn = _Connection(
            sock,
            name=f"outbound {peer[0]}:{peer[1]}",
            on_message=self._on_message,
            on_closed=self._on_closed,
            logger=self._log,
        )
        self._exec_waiters: list[_ExecWaiter] = []
        self._gate = UnicastGate()  # the one rule of when unicast is safe
        self._hangup = gevent.event.Event()
        self.hangup_cause: str | None = None
        self.lingering = False
        self._ringback: _Ringback | None = None

    # -- state

    @property
    def channel(self) -> ChannelRecord:
        if self._channel is None:
            raise EslError("outbound session has no channel data yet (connect not done)")
        return self._channel

    @property
    def uuid(self) -> str:
        return self.channel.uuid

    @property
    def closed(self) -> bool:
        return self._conn.closed

    @property
    def media_ready(self) -> bool:
        """The channel has a read codec (answered / early media): unicast is safe."""
        return self._gate.media_ready

    @property
    def hung_up(self) -> bool:
        return bool(self._hangup.is_set())

    # -- events

    def _on_message(self, message: Message) -> None:
        if isinstance(message, Event):
            self._on_event(message)
            self.events.put(message)
        elif isinstance(message, DisconnectNotice):
            if message.linger:
                self.lingering = True
                self._log.info("esl.outbound.linger_notice")
            self.events.put(message)
        elif isinstance(message, RudeRejection):
            self._conn.close(EslAuthError(f"rude rejection: {bounded(message.body.strip())}"))

    def _on_event(self, event: Event) -> None:
        name = event.name
        ringback = self._ringback
        if (
            ringback is not None
            and name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE")
            and ringback.matches(event)
        ):
            ringback.started.set()
            if name == "CHANNEL_EXECUTE_COMPLETE":
                ringback.ended.set()
        if self._channel is not None and event.uuid == self._channel.uuid:
            self._channel = self._channel.merged(event.headers)
        gate_input = classify_event(name, event.headers)
        if gate_input is not None:
            self._gate.on_input(gate_input)
        if name == "CHANNEL_EXECUTE_COMPLETE":
            self._complete_exec(event)
        elif name in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self.hangup_cause = event.get("Hangup-Cause") or self.hangup_cause
            self._hangup.set()
            if self._ringback is not None:
                self._ringback.started.set()
                self._ringback.ended.set()
            self._fail_exec_waiters(EslDisconnected("the channel hung up"))

    def _complete_exec(self, event: Event) -> None:
        app_uuid = event.get("Application-UUID")
        for waiter in self._exec_waiters:
            if app_uuid is not None and app_uuid == waiter.event_uuid:
                break
        else:
            # Fallback (a switch that ignores Event-UUID): same application and argument.
            data = event.get("Application-Data") or None
            for waiter in self._exec_waiters:
                if waiter.app == event.application and (waiter.arg or None) == data:
                    break
            else:
                return
        self._exec_waiters.remove(waiter)
        waiter.result.set(event)

    def _fail_exec_waiters(self, error: BaseException) -> None:
        waiters, self._exec_waiters = self._exec_waiters, []
        for waiter in waiters:
            if not waiter.result.ready():
                waiter.result.set_exception(error)

    def _on_closed(self, reason: BaseException | None) -> None:
        self._fail_exec_waiters(reason or EslDisconnected("outbound socket closed"))
        self._hangup.set()
        self.events.put(None)

    # -- handshake (done by the server before the application sees the session)

    def handshake(self, *, linger: bool = True) -> ChannelRecord:
        self._conn.start()
        _tcp_nodelay(self._conn._sock)
        reply = self._conn.command(cmd.CONNECT, self.command_timeout)
        if not isinstance(reply, CommandReply) or not reply.is_channel_data:
            raise EslError(f"unexpected connect reply: {bounded(reply)}")
        self._channel = reply.channel()
        # An originated leg handed over after answer already has its read codec.
        if classify_channel(self._channel.answer_state, self._channel.has_media) is not None:
            self._gate.on_input(GateInput.MEDIA_READY)
        self._log = self._log.bind(uuid=self._channel.uuid)
        self._conn._log = self._log
        if not self._channel.async_full:
            # Unquoted &socket(...) in originate: static mode, no media
            # (docs/freeswitch.rst, fact 6).
            self._log.warning(
                "esl.outbound.not_async_full",
                socket_mode=bounded(self._channel.socket_mode),
                control=bounded(self._channel.control),
            )
        self._expect_ok(cmd.MYEVENTS, "myevents")
        if linger:
            reply = self._conn.command(cmd.linger(), self.command_timeout)
            if isinstance(reply, CommandReply) and not reply.ok:
                self._log.warning("esl.outbound.linger_refused", reply=bounded(reply.text))
        return self._channel

    # -- commands

    def _expect_ok(self, data: bytes, what: str, timeout: float | None = None) -> CommandReply:
        reply = self._conn.command(data, self.command_timeout if timeout is None else timeout)
        if not isinstance(reply, CommandReply):
            raise EslError(f"{what}: expected command/reply, got {type(reply).__name__}")
        if not reply.ok:
            raise EslCommandError(what, reply.text)
        return reply

    def execute(
        self,
        app: str,
        arg: str | None = None,
        *,
        wait: bool = False,
        timeout: float | None = None,
        event_uuid: str | None = None,
    ) -> Event | None:
        """``sendmsg execute``. With ``wait`` return its CHANNEL_EXECUTE_COMPLETE event
        (``timeout`` bounds the wait; default: the command timeout). ``event_uuid``
        becomes the execution's Application-UUID (a new one when not given)."""
        event_uuid = event_uuid or str(_uuid.uuid4())
        data = cmd.sendmsg_execute(app, arg, event_uuid=event_uuid)
        waiter: _ExecWaiter | None = None
        if wait:
            waiter = _ExecWaiter(app, arg, event_uuid, gevent.event.AsyncResult())
            self._exec_waiters.append(waiter)
        try:
            self._expect_ok(data, f"execute {app}")
            if waiter is None:
                return None
            limit = self.command_timeout if timeout is None else timeout
            try:
                event: Event = waiter.result.get(timeout=limit)
            except gevent.Timeout:
                raise EslTimeout(f"{app} did not complete within {limit:g} s") from None
            return event
        finally:
            if waiter is not None and waiter in self._exec_waiters:
                self._exec_waiters.remove(waiter)

    def set_var(self, name: str, value: str) -> None:
        """``set name=value`` on the channel (e.g. ``rtp_autoflush=true`` before answer)."""
        if "=" in name:
            raise ValueError(f"invalid channel variable name: {name!r}")
        self.execute("set", f"{name}={value}")

    def set_vars(self, variables: Mapping[str, str]) -> None:
        for name, value in variables.items():
            self.set_var(name, value)

    def pre_answer(self, *, timeout: float | None = None) -> None:
        """183 with SDP; returns once done, so unicast is then safe (docs/freeswitch.rst,
        fact 1)."""
        self.execute("pre_answer", wait=True, timeout=timeout)
        # Completed: the channel has its read codec (its event told the gate already).
        self._gate.on_input(GateInput.MEDIA_READY)

    def answer(self, *, timeout: float | None = None) -> None:
        """Stop the ringback if any, answer and wait for completion."""
        if self._ringback:
            self.stop_ringback()
        self.execute("answer", wait=True, timeout=timeout)
        # Completed: the channel has its read codec (its event told the gate already).
        self._gate.on_input(GateInput.MEDIA_READY)

    def play_ringback(self, tone: str = RINGBACK_TONE) -> None:
        """Ring tone to the SIP caller (after :meth:`pre_answer`); stopped by
        :meth:`stop_ringback` or :meth:`answer`. It blocks the channel's queue until
        broken, so media (unicast) starts only after it stops."""
        data = f"tone_stream://{tone};loops=-1"
        event_uuid = str(_uuid.uuid4())
        self._ringback = _Ringback(event_uuid, data, gevent.event.Event(), gevent.event.Event())
        self.execute("playback", data, event_uuid=event_uuid)

    def stop_ringback(self) -> None:
        """Break the ringback and return once it has really ended (bounded waits)."""
        ringback = self._ringback
        if ringback is None:
            return
        try:
            # The tracker stays in place meanwhile: its start and end events may still come.
            if not ringback.ended.is_set():
                if not ringback.started.wait(timeout=self.command_timeout):
                    raise EslTimeout(f"the ringback on {self.uuid} never started")
                self.api("uuid_break", self.uuid, "all")
                if not ringback.ended.wait(timeout=self.command_timeout):
                    raise EslTimeout(f"the ringback on {self.uuid} did not stop")
        finally:
            self._ringback = None

    def start_unicast(
        self,
        local_ip: str,
        local_port: int,
        remote_ip: str,
        remote_port: int,
        *,
        flags: str | None = None,
    ) -> None:
        """Start unicast; refuses before the channel has media (docs/freeswitch.rst, fact 1).

        FreeSWITCH has no ESL command to stop unicast: it ends when the channel leaves
        park or hangs up; the media side just closes its UDP socket.
        """
        if not self.media_ready:
            raise UnicastNotSafe(
                f"unicast on {self.uuid} before answer/pre_answer/early media "
                "would crash FreeSWITCH"
            )
        data = cmd.sendmsg_unicast(local_ip, local_port, remote_ip, remote_port, flags=flags)
        self._expect_ok(data, "unicast")

    def send_dtmf(self, digits: str) -> None:
        """Digits toward the SIP side (``send_dtmf`` app, as recorded)."""
        self.execute("send_dtmf", digits)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """Hang up with a cause name (``hangup`` app, as recorded)."""
        if self.hung_up or self.closed:
            return
        self.execute("hangup", cause)

    def api(self, command: str, *args: str) -> ApiResponse:
        reply = self._conn.command(cmd.api(command, *args), self.command_timeout)
        if not isinstance(reply, ApiResponse):
            raise EslError(f"api {command}: expected api/response")
        return reply

    def wait_hangup(self, timeout: float) -> bool:
        """Wait for CHANNEL_HANGUP[_COMPLETE] or the socket closing."""
        return bool(self._hangup.wait(timeout))

    def exit(self, *, timeout: float | None = None) -> None:
        """``exit`` (ends a lingering socket) and close; never raises."""
        if self._conn.closed:
            return
        try:
            self._conn.command(cmd.EXIT, self.command_timeout if timeout is None else timeout)
        except EslError as exc:
            self._log.debug("esl.outbound.exit_failed", error=str(exc))
        # FreeSWITCH closes after its disconnect notice; do not wait for it.
        self._conn.close()

    def close(self) -> None:
        self._conn.close()


OutboundHandler = Callable[[OutboundSession], None]
_BACKLOG = 256


def reuse_port_listener(host: str, port: int, *, backlog: int) -> gevent.socket.socket:
    """A listening TCP socket with SO_REUSEPORT: several processes of the same user may
    each open one on ``host:port`` and the kernel gives each new connection to one of
    them. Raises OSError when the address is held by a socket without SO_REUSEPORT."""
    family, kind, proto, _, address = _stdsocket.getaddrinfo(
        host, port, type=_stdsocket.SOCK_STREAM, flags=_stdsocket.AI_PASSIVE
    )[0]
    sock = gevent.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class OutboundServer:
    """TCP server for the dialplan ``socket <host:port> async full`` application.

    Each call: ``connect`` -> :class:`ChannelRecord`, ``myevents``, ``linger``, then
    ``handler(session)`` in the connection's greenlet. When the handler returns the
    session is ended with ``exit``.
    """

    def __init__(
        self,
        handler: OutboundHandler,
        host: str = "127.0.0.1",
        port: int = 8084,
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        max_connections: int = 1000,
        linger: bool = True,
        reuse_port: bool = False,
    ) -> None:
        self._handler = handler
        self._command_timeout = command_timeout
        self._linger = linger
        self._max_connections = max_connections
        self._active: set[OutboundSession] = set()
        if reuse_port:
            # Worker processes (gateway/workers.py) each listen on the same port: the
            # kernel spreads FreeSWITCH's socket connections over them.
            listener = reuse_port_listener(host, port, backlog=_BACKLOG)
            self._server = gevent.server.StreamServer(listener, self._handle)
        else:
            self._server = gevent.server.StreamServer((host, port), self._handle, backlog=_BACKLOG)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address[:2]
        return str(host), int(port)

    @property
    def active_sessions(self) -> int:
        return len(self._active)

    def start(self) -> tuple[str, int]:
        self._server.start()
        log.info("esl.outbound.listening", address="{}:{}".format(*self.address))
        return self.address

    def stop(self, timeout: float = 5.0) -> None:
        self._server.stop(timeout=timeout)
        for session in list(self._active):
            session.close()

    def _handle(self, sock: gevent.socket.socket, peer: tuple[str, int]) -> None:
        session = OutboundSession(sock, peer, command_timeout=self._command_timeout)
        self._active.add(session)
        try:
            session.handshake(linger=self._linger)
            if len(self._active) > self._max_connections:
                session._log.warning("esl.outbound.over_capacity", limit=self._max_connections)
                session.hangup("NORMAL_TEMPORARY_FAILURE")
                return
            self._handler(session)
        except EslError as exc:
            session._log.warning("esl.outbound.session_failed", error=bounded(str(exc)))
        except Exception:
            session._log.exception("esl.outbound.handler_failed")
        finally:
            self._active.discard(session)
            session.exit(timeout=min(self._command_timeout, 2.0))


# ------------------------------------------------------------------------- inbound side


class ConnectionState(enum.Enum):
    DISCONNECTED = "disconnected"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    AUTH_FAILED = "auth_failed"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class OriginateResult:
    """Outcome of ``bgapi originate``: ``+OK <uuid>`` or ``-ERR CAUSE``."""

    ok: bool
    uuid: str | None
    cause: str | None
    body: str

    @classmethod
    def from_body(cls, body: str) -> OriginateResult:
        text = body.strip()
        if text.startswith("+OK"):
            parts = text.split()
            return cls(True, parts[1] if len(parts) > 1 else None, None, text)
        cause = text[4:].strip().split()[0] if text.startswith("-ERR") and len(text) > 4 else text
        return cls(False, None, cause or "UNKNOWN", text)


_ORPHAN_JOBS = 256


class InboundClient:
    """Inbound ESL client (FreeSWITCH's ``event_socket``, default port 8021).

    ``start()`` connects in the background and keeps reconnecting with capped
    exponential backoff; every (re)connection authenticates and re-subscribes to
    ``events``. ``on_state(state)`` reports changes; ``on_event(event)`` runs in a
    dispatcher greenlet (it may issue commands); ``on_calls_lost(uuids)`` gets the
    channels that were live when a connection dropped, so the application ends them.
    """

    def __init__(
        self,
        host: str,
        port: int,
        password: str,
        *,
        events: Iterable[str] = DEFAULT_INBOUND_EVENTS,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        connect_timeout: float = 5.0,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        reconnect_probe: float = 0.5,
        on_event: Callable[[Event], None] | None = None,
        on_state: Callable[[ConnectionState], None] | None = None,
        on_calls_lost: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._password = password
        self.events = tuple(events)
        cmd.event_plain(self.events)  # validate early
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.reconnect_probe = reconnect_probe
        self._sleep: Callable[[float], None] = gevent.sleep  # between attempts; tests watch it
        self._on_event = on_event
        self._on_state = on_state
        self._on_calls_lost = on_calls_lost
        self._log = log.bind(side="inbound", esl=f"{host}:{port}")
        self._state = ConnectionState.DISCONNECTED
        self._state_changed = gevent.event.Event()
        self._conn: _Connection | None = None
        self._greeting: gevent.event.AsyncResult | None = None
        self._supervisor: gevent.Greenlet | None = None
        self._dispatcher: gevent.Greenlet | None = None
        self._event_queue: gevent.queue.Queue[Event] = gevent.queue.Queue()
        self._jobs: dict[str, gevent.event.AsyncResult] = {}
        self._orphan_jobs: OrderedDict[str, Event] = OrderedDict()
        self._live: set[str] = set()
        self._stopping = False
        self.connections = 0
        self.last_error: str | None = None

    def __repr__(self) -> str:  # never show the password
        return f"InboundClient({self.host}:{self.port}, state={self._state.value})"

    # -- lifecycle

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    @property
    def live_calls(self) -> frozenset[str]:
        return frozenset(self._live)

    def start(self) -> None:
        if self._supervisor is not None:
            return
        self._stopping = False
        self._dispatcher = gevent.spawn(self._dispatch_events)
        self._supervisor = gevent.spawn(self._run)

    def connect(self, timeout: float | None = None) -> None:
        """Start and wait for the first connection; raises EslAuthError / EslTimeout."""
        self.start()
        self.wait_connected(self.connect_timeout if timeout is None else timeout)

    def wait_connected(self, timeout: float) -> None:
        with gevent.Timeout(timeout, False):
            while True:
                changed = self._state_changed  # replaced (not cleared) on every change
                if self._state is ConnectionState.CONNECTED:
                    return
                if self._state is ConnectionState.AUTH_FAILED:
                    raise EslAuthError(self.last_error or "ESL authentication failed")
                if self._state is ConnectionState.STOPPED:
                    raise EslDisconnected("inbound client stopped")
                changed.wait()
        raise EslTimeout(
            f"no ESL connection to {self.host}:{self.port} within {timeout:g} s"
            + (f" (last error: {self.last_error})" if self.last_error else "")
        )

    def stop(self) -> None:
        self._stopping = True
        conn = self._conn
        if conn is not None and not conn.closed:
            with contextlib.suppress(EslError):
                conn.command(cmd.EXIT, min(self.command_timeout, 1.0))
            conn.close()
        for greenlet in (self._supervisor, self._dispatcher):
            if greenlet is not None:
                greenlet.kill(block=True, timeout=2.0)
        self._supervisor = self._dispatcher = None
        self._set_state(ConnectionState.STOPPED)

    def _set_state(self, state: ConnectionState, **info: Any) -> None:
        if state is self._state:
            return
        self._state = state
        changed, self._state_changed = self._state_changed, gevent.event.Event()
        changed.set()
        level = "error" if state is ConnectionState.AUTH_FAILED else "info"
        getattr(self._log, level)("esl.inbound.state", state=state.value, **info)
        if self._on_state is not None:
            try:
                self._on_state(state)
            except Exception:
                self._log.exception("esl.inbound.state_callback_failed")

    def _run(self) -> None:
        delay = self.backoff_initial
        probing = False  # asking a port that refused: stay DISCONNECTED, log nothing new
        while not self._stopping:
            if not probing:
                self._set_state(ConnectionState.CONNECTING)
            try:
                conn = self._open()
            except EslAuthError as exc:
                self.last_error = str(exc)
                self._set_state(ConnectionState.AUTH_FAILED, error=str(exc))
                return
            except ConnectionRefusedError as exc:
                # Nothing listens (the switch is down or starting): asking again costs one
                # SYN and its RST, so ask often and reconnect within ``reconnect_probe`` of
                # the switch coming back, instead of after a backoff grown meanwhile.
                self.last_error = str(exc)
                self._set_state(
                    ConnectionState.DISCONNECTED, error=str(exc), retry_in_s=self.reconnect_probe
                )
                probing = True
                self._sleep(self.reconnect_probe)
                continue
            except (EslError, OSError) as exc:
                probing = False
                self.last_error = str(exc)
                self._set_state(ConnectionState.DISCONNECTED, error=str(exc), retry_in_s=delay)
            else:
                probing = False
                delay = self.backoff_initial
                self.connections += 1
                self._set_state(ConnectionState.CONNECTED, connection=self.connections)
                conn.wait_closed()
                self.last_error = str(conn.close_reason)
                self._connection_lost(conn)
                if self._stopping:
                    return
                self._set_state(
                    ConnectionState.DISCONNECTED, error=self.last_error, retry_in_s=delay
                )
            self._sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.backoff_max)

    def _open(self) -> _Connection:
        sock = gevent.socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        sock.settimeout(None)
        _tcp_nodelay(sock)
        with contextlib.suppress(OSError):
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_KEEPALIVE, 1)
        greeting = gevent.event.AsyncResult()
        self._greeting = greeting
        conn = _Connection(
            sock,
            name=f"inbound {self.host}:{self.port}",
            on_message=self._on_message,
            logger=self._log,
        )
        conn.start()
        try:
            try:
                first = greeting.get(timeout=self.command_timeout)
            except gevent.Timeout:
                raise EslTimeout("no auth/request greeting from FreeSWITCH") from None
            if isinstance(first, RudeRejection):
                raise EslAuthError(
                    f"ESL access denied by FreeSWITCH: {bounded(first.body.strip())}"
                )
            reply = conn.command(cmd.auth(self._password), self.command_timeout)
            if not isinstance(reply, CommandReply) or not reply.ok:
                text = bounded(reply.text if isinstance(reply, CommandReply) else reply)
                raise EslAuthError(
                    f"ESL authentication failed at {self.host}:{self.port} ({text}); "
                    "check the ESL password"
                )
            reply = conn.command(cmd.event_plain(self.events), self.command_timeout)
            if not isinstance(reply, CommandReply) or not reply.ok:
                raise EslCommandError("event plain", getattr(reply, "text", repr(reply)))
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _connection_lost(self, conn: _Connection) -> None:
        if self._conn is conn:
            self._conn = None
        reason = conn.close_reason or EslDisconnected("connection closed")
        jobs, self._jobs = self._jobs, {}
        for waiter in jobs.values():
            if not waiter.ready():
                waiter.set_exception(EslDisconnected(f"connection lost while waiting: {reason}"))
        lost = sorted(self._live)
        self._live.clear()
        if lost:
            self._log.warning("esl.inbound.calls_lost", uuids=lost, count=len(lost))
            if self._on_calls_lost is not None:
                try:
                    self._on_calls_lost(lost)
                except Exception:
                    self._log.exception("esl.inbound.calls_lost_callback_failed")

    # -- incoming

    def _on_message(self, message: Message) -> None:
        if isinstance(message, AuthRequest | RudeRejection):
            if self._greeting is not None and not self._greeting.ready():
                self._greeting.set(message)
            return
        if isinstance(message, DisconnectNotice):
            self._log.info("esl.inbound.disconnect_notice", disposition=message.disposition)
            return
        if not isinstance(message, Event):
            return
        if message.name == "BACKGROUND_JOB":
            job = message.job_uuid
            if job is not None:
                waiter = self._jobs.pop(job, None)
                if waiter is not None:
                    waiter.set(message)
                else:
                    self._orphan_jobs[job] = message
                    while len(self._orphan_jobs) > _ORPHAN_JOBS:
                        self._orphan_jobs.popitem(last=False)
        elif message.name == "CHANNEL_HANGUP_COMPLETE" and message.uuid:
            self._live.discard(message.uuid)
        self._event_queue.put(message)

    def _dispatch_events(self) -> None:
        while True:
            event = self._event_queue.get()
            if self._on_event is None:
                continue
            try:
                self._on_event(event)
            except Exception:
                self._log.exception("esl.inbound.event_callback_failed", event=event.name)

    # -- commands

    def _connection(self) -> _Connection:
        conn = self._conn
        if conn is None or conn.closed or self._state is not ConnectionState.CONNECTED:
            raise EslNotSent(f"ESL {self.host}:{self.port} not connected ({self._state.value})")
        return conn

    def command(self, data: bytes, timeout: float | None = None) -> CommandReply | ApiResponse:
        """Send raw builder bytes (from :mod:`esl_bridge.esl.commands`)."""
        return self._connection().command(
            data, self.command_timeout if timeout is None else timeout
        )

    def api(self, command: str, *args: str, timeout: float | None = None) -> ApiResponse:
        """``api ...``; the response may be ``-ERR ...`` (see ``ApiResponse.ok``)."""
        reply = self.command(cmd.api(command, *args), timeout)
        if not isinstance(reply, ApiResponse):
            raise EslError(f"api {command}: expected api/response, got {type(reply).__name__}")
        return reply

    def bgapi(self, command: str, *args: str, timeout: float = 65.0) -> Event:
        """``bgapi ...`` and wait (at most ``timeout``) for its BACKGROUND_JOB event."""
        conn = self._connection()
        job = str(_uuid.uuid4())
        waiter = gevent.event.AsyncResult()
        self._jobs[job] = waiter
        try:
            reply = conn.command(cmd.bgapi(command, *args, job_uuid=job), self.command_timeout)
            if not isinstance(reply, CommandReply) or not reply.ok:
                raise EslCommandError(f"bgapi {command}", getattr(reply, "text", repr(reply)))
            actual = reply.job_uuid or job
            if actual != job:
                # A switch that ignores our Job-UUID header: wait for the one it chose.
                self._jobs.pop(job, None)
                early = self._orphan_jobs.pop(actual, None)
                if early is not None:
                    return early
                self._jobs[actual] = waiter
                job = actual
            try:
                event: Event = waiter.get(timeout=timeout)
            except gevent.Timeout:
                raise EslTimeout(
                    f"no BACKGROUND_JOB for bgapi {command} within {timeout:g} s"
                ) from None
            return event
        finally:
            self._jobs.pop(job, None)

    def originate(self, originate_arg: str, *, timeout: float = 65.0) -> OriginateResult:
        """``bgapi originate <arg>`` (build the arg with ``commands.originate_arg``).

        ``+OK <uuid>`` arrives at answer, or at a 183 with SDP (docs/freeswitch.rst, fact 7);
        the uuid is then tracked as a live call until its CHANNEL_HANGUP_COMPLETE.
        """
        event = self.bgapi("originate", originate_arg, timeout=timeout)
        result = OriginateResult.from_body(event.body)
        if result.ok and result.uuid:
            self._live.add(result.uuid)
        self._log.info(
            "esl.inbound.originate_result", ok=result.ok, uuid=result.uuid, cause=result.cause
        )
        return result

    def track_call(self, uuid: str) -> None:
        """Count ``uuid`` as live (e.g. with ``origination_uuid`` before the job ends)."""
        self._live.add(uuid)

    def untrack_call(self, uuid: str) -> None:
        self._live.discard(uuid)

    def uuid_kill(self, uuid: str, cause: str | None = None) -> ApiResponse:
        reply = self.command(cmd.uuid_kill(uuid, cause))
        assert isinstance(reply, ApiResponse)
        return reply

    def uuid_send_dtmf(self, uuid: str, digits: str, duration_ms: int | None = None) -> ApiResponse:
        reply = self.command(cmd.uuid_send_dtmf(uuid, digits, duration_ms))
        if not isinstance(reply, ApiResponse):
            raise EslError("uuid_send_dtmf: expected api/response")
        if not reply.ok:
            raise EslCommandError("uuid_send_dtmf", reply.text)
        return reply

    def unicast(
        self,
        uuid: str,
        local_ip: str,
        local_port: int,
        remote_ip: str,
        remote_port: int,
        *,
        flags: str | None = None,
    ) -> None:
        """``sendmsg <uuid>`` unicast on a parked, originated channel. Call it only after
        the job said ``+OK`` (answer or 183 with SDP): earlier crashes FreeSWITCH."""
        data = cmd.sendmsg_unicast(
            local_ip, local_port, remote_ip, remote_port, uuid=uuid, flags=flags
        )
        reply = self.command(data)
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise EslCommandError("sendmsg unicast", getattr(reply, "text", repr(reply)))

    def execute(self, uuid: str, app: str, arg: str | None = None) -> None:
        """``sendmsg <uuid>`` execute (e.g. ``send_dtmf``, ``hangup``)."""
        reply = self.command(cmd.sendmsg_execute(app, arg, uuid=uuid))
        if not isinstance(reply, CommandReply) or not reply.ok:
            raise EslCommandError(f"sendmsg execute {app}", getattr(reply, "text", repr(reply)))

    def play_ringback(self, uuid: str, tone: str = RINGBACK_TONE) -> None:
        """Ring tone to a parked, originated channel (click-to-call with the number
        first: it answered and waits for the web user), until :meth:`stop_ringback`."""
        self.execute(uuid, "playback", f"tone_stream://{tone};loops=-1")

    def stop_ringback(self, uuid: str) -> None:
        """Break the ringback of :meth:`play_ringback` once it runs: a break that came
        before the playback started would be lost, and the endless playback would then
        hold every message queued behind it (the unicast). A gone channel is no error
        here: its hangup ends the call."""
        deadline = time.monotonic() + self.command_timeout
        while time.monotonic() < deadline:
            running = self.api("uuid_getvar", uuid, "current_application")
            if not running.ok or running.text.strip() == "playback":
                break
            gevent.sleep(0.02)
        self.api("uuid_break", uuid, "all")
