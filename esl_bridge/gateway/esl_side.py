"""The gateway's FreeSWITCH side, on the gevent hub: channel operations and channel events.

The call logic (asyncio thread) asks for operations on a channel (``submit``) and for
originates (``originate``); this side carries them out over the outbound socket session
that owns the channel (SIP -> RTC calls) or over the inbound connection (originated
calls), and reports what FreeSWITCH says through an ``EventSink``. Operations on one
channel run strictly in order in that channel's worker greenlet (pre_answer must finish
before the ringback starts), while an originate, which may ring for a minute, runs in its
own greenlet so that a cancel is never queued behind it.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.queue

from esl_bridge.config import EslSettings, SocketSettings
from esl_bridge.core import call as c
from esl_bridge.esl import commands as cmd
from esl_bridge.esl import orphans
from esl_bridge.esl.control import (
    ConnectionState,
    EslCommandError,
    EslDisconnected,
    EslError,
    InboundClient,
    OutboundServer,
    OutboundSession,
)
from esl_bridge.esl.orphans import GatewayIdentity, Watchdog
from esl_bridge.esl.protocol import ApiResponse, ChannelRecord, DisconnectNotice, Event
from esl_bridge.logs import bounded, get_logger
from esl_bridge.media.unicast import UnicastParams

log = get_logger("gateway.esl")

# Headers the call logic reads; only these cross to the asyncio thread.
FORWARDED_HEADERS = (
    "Event-Name",
    "Unique-ID",
    "Hangup-Cause",
    "Application",
    "Application-Response",
    "Answer-State",
    "DTMF-Digit",
    "Channel-Read-Codec-Name",
    "Channel-Read-Codec-Rate",
    "variable_read_rate",
    "variable_rtp_use_codec_channels",
)
_ENDED_SESSIONS_KEPT = 4096  # far more than the operations a call can have in flight
_WORKER_IDLE = 30.0  # seconds a channel's worker waits for more work before it ends


@dataclass(frozen=True)
class SendDtmf:
    """Digits toward the SIP side (from the web user's keypad)."""

    call_id: str
    uuid: str
    digits: str


@dataclass(frozen=True)
class Unicast:
    """The ``unicast`` command; only once the channel has media (the call core's gate)."""

    call_id: str
    uuid: str
    params: UnicastParams


# What the call logic may ask of a channel: the call core's channel actions, plus the two
# that the gateway adds (unicast needs the media leg's ports, DTMF comes from a peer message).
ChannelOp = (
    (c.SetChannelVar | c.PreAnswer | c.PlayRingback | c.StopRingback | c.Answer | c.Hangup)
    | SendDtmf
    | Unicast
)


class EventSink(Protocol):
    """Where FreeSWITCH's news goes (the asyncio side, reached through the handoff)."""

    def channel_event(self, uuid: str, name: str, headers: Mapping[str, str]) -> None: ...

    def channel_lost(self, uuid: str, cause: str) -> None:
        """The channel is gone for us without its hangup events (socket closed, the
        connection that tracked it dropped, "no such channel")."""
        ...

    def originate_failed(self, call_id: str, uuid: str, cause: str) -> None: ...

    def operation_failed(self, op: ChannelOp, error: str) -> None: ...

    def esl_state(self, state: str) -> None: ...

    def sip_call(self, record: ChannelRecord) -> bool:
        """A SIP -> RTC channel arrived; False when nobody could take it (hang it up)."""
        ...


# FreeSWITCH's answers to a command on a channel that has just gone (the phone hung up
# while the command was on its way): "-ERR invalid session id [<uuid>]" to a sendmsg,
# "-ERR No such channel!" to an api.
_CHANNEL_GONE = re.compile(r"invalid session id|no such channel", re.IGNORECASE)


def channel_gone(reply: str) -> bool:
    """True when an ``-ERR`` reply says the channel no longer exists."""
    return bool(_CHANNEL_GONE.search(reply))


def forwarded(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: headers[k] for k in FORWARDED_HEADERS if k in headers}


class EslSide:
    """Inbound client, outbound socket server, and one ordered worker per channel."""

    def __init__(
        self,
        esl: EslSettings,
        socket: SocketSettings,
        sink: EventSink,
        *,
        identity: GatewayIdentity,
        orphan_timeout: float = 30.0,
        originate_timeout: float = 60.0,
        reuse_port: bool = False,
    ) -> None:
        self.sink = sink
        self.originate_timeout = originate_timeout
        self.identity = identity
        self.watchdog = Watchdog(identity, orphan_timeout)
        self._watchdog_loop: gevent.Greenlet | None = None
        self._cleaned = False  # the predecessor's leftovers are gone (once per process)
        self._ready_reported = False
        self.orphans_ended = 0
        self.inbound = InboundClient(
            esl.host,
            esl.port,
            esl.password,
            command_timeout=esl.command_timeout,
            connect_timeout=esl.connect_timeout,
            backoff_max=esl.reconnect_max_delay,
            on_event=self._on_inbound_event,
            on_state=self._on_state,
            reconnect_probe=esl.reconnect_probe_interval,
            on_calls_lost=self._calls_lost,
        )
        self.outbound = OutboundServer(
            self._on_session,
            socket.host,
            socket.port,
            command_timeout=esl.command_timeout,
            reuse_port=reuse_port,
        )
        self._sessions: dict[str, OutboundSession] = {}
        # Sessions that have ended, newest last (bounded): an operation still queued for one
        # of them is moot, not a failure of the call.
        self._ended_sessions: OrderedDict[str, None] = OrderedDict()
        self._queues: dict[str, gevent.queue.Queue[ChannelOp]] = {}
        self._originating: set[str] = set()
        self._killed_while_originating: dict[str, str] = {}
        # Channels of calls ended because the inbound connection dropped: FreeSWITCH may
        # still have them (only the connection was lost), so they are killed on reconnect.
        self._lost_channels: set[str] = set()

    # -- life ---------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        self.inbound.start()
        self._watchdog_loop = gevent.spawn(self._keep_watchdog_armed)
        return self.outbound.start()

    def stop(self) -> None:
        if self._watchdog_loop is not None:
            self._watchdog_loop.kill(block=True, timeout=1.0)
            self._watchdog_loop = None
        self._end_own_channels()
        self.outbound.stop(timeout=2.0)
        self.inbound.stop()

    @property
    def connected(self) -> bool:
        return self.inbound.state is ConnectionState.CONNECTED

    def _on_state(self, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            # Numbers are served (presence, calls) only once the predecessor's leftovers
            # are gone, so a new call never meets a leftover's unicast ports.
            gevent.spawn(self._connected)
            return
        self._ready_reported = False
        self.sink.esl_state(state.value)

    def _kill_lost_channels(self) -> None:
        """After a reconnect: the channels whose calls ended with the lost connection."""
        uuids, self._lost_channels = sorted(self._lost_channels), set()
        for uuid in uuids:
            try:
                reply = self.inbound.api("uuid_kill", uuid, "NORMAL_TEMPORARY_FAILURE")
            except EslError as exc:
                log.warning("esl.lost_channel_kill_failed", uuid=uuid, error=str(exc))
                continue
            if reply.ok:  # else it ended with the connection (FreeSWITCH restarted)
                log.info("esl.lost_channel_killed", uuid=uuid)

    # -- orphans: cleanup at start, watchdog (esl/orphans.py says why) --------------------

    def _connected(self) -> None:
        if not self._cleaned:
            try:
                self._end_predecessors_channels()
                self._cleaned = True
            except EslError as exc:
                # Not fatal: the predecessor's own watchdog still ends them within the bound.
                log.warning("esl.orphans.cleanup_failed", error=str(exc))
        self._kill_lost_channels()
        self._arm_watchdog()
        if self.inbound.state is ConnectionState.CONNECTED and not self._ready_reported:
            self._ready_reported = True
            self.sink.esl_state(ConnectionState.CONNECTED.value)

    def _end_predecessors_channels(self) -> None:
        listing = self._api_text("show", "channels as json")
        ended = 0
        for uuid in orphans.channel_uuids(listing):
            node = orphans.getvar_value(self._api_text("uuid_getvar", uuid, orphans.NODE_VAR))
            if node != self.identity.node_id:
                continue
            instance = orphans.getvar_value(
                self._api_text("uuid_getvar", uuid, orphans.INSTANCE_VAR)
            )
            if not self.identity.is_predecessor(node, instance or ""):
                continue
            if self.inbound.uuid_kill(uuid, orphans.ORPHAN_CAUSE).ok:
                ended += 1
                log.warning("esl.orphans.channel_ended", uuid=uuid, instance=instance)
        self.orphans_ended += ended
        log.info(
            "esl.orphans.cleanup_done",
            node=self.identity.node_id,
            instance=self.identity.instance_id,
            ended=ended,
            cause=orphans.ORPHAN_CAUSE,
        )

    def _api_text(self, command: str, *args: str) -> str:
        return self.inbound.api(command, *args).body

    def _keep_watchdog_armed(self) -> None:
        while True:
            gevent.sleep(self.watchdog.period)
            self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        """Arm the next watchdog task, then delete the previous one (never none armed)."""
        api = self._any_api()
        if api is None:
            return  # nothing reaches the switch; the armed task keeps its time
        try:
            command, arg = self.watchdog.arm_args()
            reply = api(command, arg)
            if not reply.ok:
                log.error("esl.orphans.watchdog_refused", reply=bounded(reply.text))
                return
            previous = self.watchdog.armed_ok()
            if previous is not None:
                api("sched_del", previous)
        except EslError as exc:
            log.warning("esl.orphans.watchdog_not_armed", error=str(exc))

    def _any_api(self) -> Any:
        """A way to run an api command: the inbound connection, else any socket session."""
        if self.inbound.connected:
            return self.inbound.api
        for session in list(self._sessions.values()):
            if not session.closed:
                return session.api
        return None

    def _end_own_channels(self) -> None:
        """On a clean stop, after the drain: nothing of this process stays on the switch."""
        api = self._any_api()
        if api is None:
            return
        try:
            api(
                "hupall",
                f"{orphans.ORPHAN_CAUSE} {orphans.INSTANCE_VAR} {self.identity.instance_id}",
            )
            group = self.watchdog.disarm()
            if group is not None:
                api("sched_del", group)
        except EslError as exc:
            log.warning("esl.orphans.stop_cleanup_failed", error=str(exc))

    # -- operations (called in the hub's thread through the handoff) ---------------------

    def originate(
        self, call_id: str, uuid: str, destination: str, variables: dict[str, str]
    ) -> None:
        """Start ``originate`` in its own greenlet; failures reach ``originate_failed``."""
        gevent.spawn(self._originate, call_id, uuid, destination, variables)

    def submit(self, op: ChannelOp) -> None:
        """Queue an operation on its channel; the channel's operations run in order."""
        queue = self._queues.get(op.uuid)
        if queue is None:
            queue = self._queues[op.uuid] = gevent.queue.Queue()
            gevent.spawn(self._worker, op.uuid, queue)
        queue.put(op)

    def _originate(
        self, call_id: str, uuid: str, destination: str, variables: dict[str, str]
    ) -> None:
        self._originating.add(uuid)
        self.inbound.track_call(uuid)
        try:
            arg = cmd.originate_arg(
                destination, cmd.park_app(), {**variables, **self.identity.channel_vars()}
            )
            result = self.inbound.originate(arg, timeout=self.originate_timeout + 10)
        except (EslError, ValueError) as exc:
            log.warning("esl.originate_error", call_id=call_id, uuid=uuid, error=bounded(str(exc)))
            self.inbound.untrack_call(uuid)
            self.sink.originate_failed(call_id, uuid, "NORMAL_TEMPORARY_FAILURE")
            return
        finally:
            self._originating.discard(uuid)
        if not result.ok:
            self.inbound.untrack_call(uuid)
            self.sink.originate_failed(call_id, uuid, result.cause or "UNKNOWN")
            return
        cause = self._killed_while_originating.pop(uuid, None)
        if cause is not None:
            # The call was ended while FreeSWITCH was still setting the channel up, when
            # uuid_kill found nothing to kill: kill the channel that now exists.
            self.submit(c.Hangup(call_id, uuid, cause))

    def _worker(self, uuid: str, queue: gevent.queue.Queue[ChannelOp]) -> None:
        try:
            while True:
                try:
                    op = queue.get(timeout=_WORKER_IDLE)
                except gevent.queue.Empty:
                    return
                try:
                    self._run(op)
                except (EslDisconnected, EslCommandError) as exc:
                    if isinstance(exc, EslCommandError) and not channel_gone(exc.reply):
                        self._failed(op, exc)
                        continue
                    # The channel or its connection is gone: its hangup reaches the call
                    # anyway (event, socket end or lost-calls report); not a call failure.
                    log.info(
                        "esl.channel_operation_moot",
                        call_id=op.call_id,
                        uuid=uuid,
                        operation=type(op).__name__,
                        reason=str(exc),
                    )
                except (EslError, ValueError) as exc:
                    self._failed(op, exc)
        finally:
            if self._queues.get(uuid) is queue:
                del self._queues[uuid]

    def _failed(self, op: ChannelOp, exc: Exception) -> None:
        log.warning(
            "esl.channel_operation_failed",
            call_id=op.call_id,
            uuid=op.uuid,
            operation=type(op).__name__,
            error=bounded(str(exc)),
        )
        self.sink.operation_failed(op, str(exc))

    def _run(self, op: ChannelOp) -> None:
        uuid = op.uuid
        session = self._sessions.get(uuid)
        match op:
            case c.Hangup(cause=cause):
                self._hangup(op, session, cause)
            case c.SetChannelVar(name=name, value=value):
                if session is not None:
                    session.set_var(name, value)
                else:
                    self._api_ok("uuid_setvar", uuid, name, value)
            case Unicast(params=p):
                if session is not None:
                    session.start_unicast(
                        p.local_ip, p.local_port, p.remote_ip, p.remote_port, flags=p.flags
                    )
                else:
                    self.inbound.unicast(
                        uuid, p.local_ip, p.local_port, p.remote_ip, p.remote_port, flags=p.flags
                    )
            case SendDtmf(digits=digits):
                if session is not None:
                    session.send_dtmf(digits)
                else:
                    self.inbound.uuid_send_dtmf(uuid, digits)
            case c.PreAnswer():
                self._session_of(op, session).pre_answer()
            case c.PlayRingback():
                self._session_of(op, session).play_ringback()
            case c.StopRingback():
                self._session_of(op, session).stop_ringback()
            case c.Answer():
                self._session_of(op, session).answer()

    def _session_of(self, op: ChannelOp, session: OutboundSession | None) -> OutboundSession:
        if session is None:
            name = type(op).__name__
            if op.uuid in self._ended_sessions:
                raise EslDisconnected(f"{name}: the socket session of {op.uuid} has ended")
            raise EslError(f"{name} needs the channel's socket session; {op.uuid} has none")
        return session

    def _hangup(self, op: c.Hangup, session: OutboundSession | None, cause: str) -> None:
        uuid = op.uuid
        # uuid_kill, not "sendmsg hangup": a sendmsg waits in the channel's queue behind a
        # running application (the ringback), uuid_kill acts at once.
        if session is not None and not session.closed:
            if session.hung_up:
                return
            reply = session.api("uuid_kill", uuid, cause)
        else:
            reply = self.inbound.uuid_kill(uuid, cause)
        if reply.ok:
            return
        if uuid in self._originating:
            self._killed_while_originating[uuid] = cause
            return
        # "-ERR No such channel!": it is gone already; say so, the call must end.
        self.sink.channel_lost(uuid, cause)

    def _calls_lost(self, uuids: list[str]) -> None:
        """The inbound connection dropped: the channels it tracked are gone for us (and
        killed on reconnect, if FreeSWITCH still has them)."""
        self._lost_channels.update(uuids)
        for uuid in uuids:
            self.sink.channel_lost(uuid, "NORMAL_TEMPORARY_FAILURE")

    def _claim(self, session: OutboundSession) -> None:
        reply: ApiResponse = session.api(
            "uuid_setvar_multi", session.uuid, self.identity.setvar_multi_arg()
        )
        if not reply.ok:
            raise EslError(f"uuid_setvar_multi: {bounded(reply.text)}")

    def _api_ok(self, command: str, *args: str) -> None:
        reply = self.inbound.api(command, *args)
        if not reply.ok:
            raise EslCommandError(f"api {command}", reply.text.strip())

    # -- events ---------------------------------------------------------------------------

    def _on_inbound_event(self, event: Event) -> None:
        uuid = event.uuid
        # A channel with a socket session reports through it (myevents); the inbound
        # connection sees the same events, which would arrive twice.
        if not uuid or uuid in self._sessions or event.name == "BACKGROUND_JOB":
            return
        self.sink.channel_event(uuid, event.name, forwarded(event.headers))

    def _on_session(self, session: OutboundSession) -> None:
        """One SIP -> RTC call, for its whole life (the server sends ``exit`` after)."""
        uuid = session.uuid
        self._sessions[uuid] = session
        hung_up = False
        try:
            try:
                # First of all: mark the channel as this process's, for the watchdog.
                self._claim(session)
                taken = self.sink.sip_call(session.channel)
            except EslError as exc:
                log.error("esl.sip_call_not_claimed", uuid=uuid, error=bounded(str(exc)))
                taken = False
            if not taken:
                session.hangup("NORMAL_TEMPORARY_FAILURE")
            while True:
                item = session.events.get()
                if item is None:
                    break
                if isinstance(item, DisconnectNotice):
                    if not item.linger:
                        break
                    continue
                self.sink.channel_event(uuid, item.name, forwarded(item.headers))
                if item.name == "CHANNEL_HANGUP_COMPLETE":
                    hung_up = True
                    break
        except EslDisconnected:
            pass
        finally:
            self._sessions.pop(uuid, None)
            self._ended_sessions[uuid] = None
            while len(self._ended_sessions) > _ENDED_SESSIONS_KEPT:
                self._ended_sessions.popitem(last=False)
            if not hung_up:
                # The socket went away without the hangup events: the call logic must
                # still learn the channel is gone for us.
                self.sink.channel_lost(uuid, session.hangup_cause or "NORMAL_CLEARING")
