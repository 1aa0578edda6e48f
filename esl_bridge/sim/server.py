"""The FreeSWITCH simulator: its state, the events it fires, and its channels' life (hangup and
teardown). The rest is split by responsibility: session.py (an ESL connection and its
commands), api.py (`api`/`bgapi` commands), originate.py (originate and dial strings),
phone.py (phones that dial the gateway), apps.py (dialplan applications, the socket app and
the park loop), faults.py (the crash and the fault hooks).

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
as L16 directly), bridging, recording, `event json|xml` (refused), the a-leg of
`loopback/` other than the conference pair of conference.py (the returned uuid is the b-leg
that runs the dialplan), multiple `,`/`|` destinations (the first is used), the DTMF-induced
unicast delay (docs/freeswitch.rst, fact 4), CHANNEL_DESTROY and the many other event types
FreeSWITCH fires (Event-Sequence still increases per event).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from esl_bridge.logs import get_logger

from . import wire
from .api import ApiMixin
from .apps import AppsMixin
from .channel import EVENT_NAMES, Q850, SIP_PHRASE, SIP_STATUS, Channel, FiredEvent
from .conference import ConferenceMixin, Member, Room
from .extensions import Extension, default_extensions
from .faults import FaultsMixin, SimulatorCrashed, UnicastRedirect
from .media import AudioSource
from .ops_api import DEFAULT_CODECS, DEFAULT_MODULES
from .originate import OriginateMixin
from .phone import PhoneCall, PhoneMixin
from .session import EslSession

__all__ = ["EslSession", "PhoneCall", "SimConfig", "Simulator", "SimulatorCrashed"]

log = get_logger(__name__)


@dataclass
class SimConfig:
    esl_host: str = "127.0.0.1"
    esl_port: int = 0  # 0: ephemeral
    password: str = "ClueCon"
    domain: str = "127.0.0.1"
    # Where the dialplan `socket` application of `0<uid>` calls connects (the gateway).
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
    # What `freeswitch.sh check` finds (sim/ops_api.py): loaded modules, global variables
    # (besides esl_bridge_socket from socket_target, and domain), `show codec`, the default
    # context's XML (None: the 0 route of dialplan/ first for 0<uid>).
    modules: frozenset[str] = DEFAULT_MODULES
    global_vars: dict[str, str] = field(default_factory=dict)
    codecs: tuple[tuple[str, str], ...] = DEFAULT_CODECS
    dialplan_xml: str | None = None


class Simulator(ApiMixin, OriginateMixin, PhoneMixin, AppsMixin, FaultsMixin, ConferenceMixin):
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
        self.rooms: dict[str, Room] = {}  # conferences (conference.py)
        self._member_seq = 0
        self._conference_of: dict[str, tuple[Room, Member]] = {}
        self._loopback_pair: dict[str, Channel] = {}
        # Fault hook: given a unicast's (local, remote) addresses, the ones the simulated
        # channel really binds and sends to, e.g. a lossy relay that takes the channel's
        # place in front of the app (it binds `local`, the port the app expects audio from).
        self.unicast_redirect: UnicastRedirect | None = None
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
            log.error("sim.task_failed", exc_info=task.exception())

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
        if name not in EVENT_NAMES:
            raise ValueError(f"not an event the simulator knows: {name!r} (channel.EVENT_NAMES)")
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
        self._conference_leg_hangup(ch)
        running, ch.running_exec = ch.running_exec, None
        if running is not None:
            # Recorded: the interrupted application completes right after CHANNEL_HANGUP
            # (playback answers FILE PLAYED).
            app, arg, app_uuid = running
            response = "FILE PLAYED" if app == "playback" else "_none_"
            self._exec_complete(ch, app, arg, app_uuid, response=response)
        session = ch.session
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
        app = ch.current_app
        if ch.parked:
            ch.parked = False
            self.fire_channel(ch, "CHANNEL_UNPARK")
        socket_app = ch.socket_app
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
        session = ch.session
        if session is not None and not session.closed and session.connected and not ch.notice_sent:
            session.send(wire.linger_notice(ch.uuid, ch.name))
            if session.linger_seconds is not None:
                self._spawn(self._linger_timeout(session, session.linger_seconds))
        elif session is not None and not session.connected and not session.closed:
            session.close()
        ch.destroyed = True
        self.channels.pop(ch.uuid, None)
        runner = ch.app_runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
        phone = ch.phone_call
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

    def live_channels(self) -> list[Channel]:
        return [c for c in self.channels.values() if not c.destroyed]
