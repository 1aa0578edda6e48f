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
    DEFAULT_INBOUND_EVENTS,
    ConnectionState,
    EslCommandError,
    EslDisconnected,
    EslError,
    EslNotSent,
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
    # A conference member's loopback A leg names its B leg, the member (CHANNEL_ANSWER).
    "variable_other_loopback_leg_uuid",
)
# What a CUSTOM conference::maintenance event brings the room table (core/conference.py).
CONFERENCE_HEADERS = (
    "Event-Subclass",
    "Action",
    "Conference-Name",
    "Conference-Size",
    "Member-ID",
    "Unique-ID",
    "Channel-Name",
    "Caller-Caller-ID-Number",
    "Caller-Caller-ID-Name",
    "Speak",
    "Talking",
)
CONFERENCE_SUBCLASS = "conference::maintenance"
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


@dataclass(frozen=True)
class ConferenceApi:
    """``api conference <room> <words>`` (mute, unmute, kick); ``uuid`` is the room's name,
    so that the commands of one room run in order in one worker."""

    call_id: str
    uuid: str
    words: tuple[str, ...]
    # Who asked (a web uid and its room's ChanId), told when the command fails.
    requester: str = ""
    chan_id: str = ""


# What the call logic may ask of a channel: the call core's channel actions, plus the two
# that the gateway adds (unicast needs the media leg's ports, DTMF comes from a peer message).
ChannelOp = (
    (c.SetChannelVar | c.SetChannelVars)
    | (c.PreAnswer | c.PlayRingback | c.StopRingback | c.Answer | c.Hangup | c.JoinRoom)
    | SendDtmf
    | Unicast
    | ConferenceApi
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

    def conference_event(self, headers: Mapping[str, str]) -> None:
        """A ``CUSTOM conference::maintenance`` event (``CONFERENCE_HEADERS`` of it)."""
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


class _Switch:
    """One FreeSWITCH of ``[esl]``: its inbound connection, its watchdog, its cleanup."""

    def __init__(self, index: int, inbound: InboundClient, watchdog: Watchdog) -> None:
        self.index = index
        self.inbound = inbound
        self.address = f"{inbound.host}:{inbound.port}"
        self.watchdog = watchdog
        self.cleaned = False  # the predecessor's leftovers are gone (once per process)
        self.ready = False  # connected, cleaned up, watchdog armed: takes originates
        self.orphans_ended = 0
        # Channels of calls ended because this inbound connection dropped: the switch may
        # still have them (only the connection was lost), so they are killed on reconnect.
        self.lost_channels: set[str] = set()

    @property
    def active_calls(self) -> int:
        """This process's originated channels live on this switch."""
        return len(self.inbound.live_calls)


# The gateway's ESL state when no switch is ready: the most hopeful of the switches'.
_STATE_ORDER = ("connecting", "disconnected", "auth_failed", "stopped")


class EslSide:
    """Inbound client(s), outbound socket server, and one ordered worker per channel.

    ``[esl]`` may name several switches (``EslSettings.endpoints``; one is the usual
    case, the same code with a list of one). Each has its own inbound connection,
    watchdog and start-up cleanup; originates go to the ready switch with the fewest of
    this process's calls (ties in turn) and move on to another when the chosen one did
    not take the command; every later operation on an originated channel goes to the
    switch that owns it. A SIP -> RTC call needs no choice: its socket session carries
    its operations to its own switch.
    """

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
        conference: bool = False,
    ) -> None:
        self.sink = sink
        # [conference] on: the inbound connections also hear the rooms' events.
        self._events = DEFAULT_INBOUND_EVENTS + (
            ("CUSTOM", CONFERENCE_SUBCLASS) if conference else ()
        )
        self.originate_timeout = originate_timeout
        self.identity = identity
        self._watchdog_loop: gevent.Greenlet | None = None
        self._reported_state: str | None = None
        self.switches = [
            self._switch(index, host, port, esl, orphan_timeout)
            for index, (host, port) in enumerate(esl.endpoints)
        ]
        # The first switch's, for callers that know of one switch only.
        self.inbound = self.switches[0].inbound
        self.watchdog = self.switches[0].watchdog
        self._last_pick = -1
        # Originated channel -> its switch; ended ones kept a while (bounded), so a late
        # operation still goes where the channel was.
        self._owner: dict[str, _Switch] = {}
        self._ended_owner: OrderedDict[str, _Switch] = OrderedDict()
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

    def _switch(
        self, index: int, host: str, port: int, esl: EslSettings, orphan_timeout: float
    ) -> _Switch:
        holder: list[_Switch] = []
        inbound = InboundClient(
            host,
            port,
            esl.password,
            command_timeout=esl.command_timeout,
            connect_timeout=esl.connect_timeout,
            backoff_max=esl.reconnect_max_delay,
            on_event=self._on_inbound_event,
            on_state=lambda state: self._on_state(holder[0], state),
            reconnect_probe=esl.reconnect_probe_interval,
            on_calls_lost=lambda uuids: self._calls_lost(holder[0], uuids),
            events=self._events,
        )
        switch = _Switch(index, inbound, Watchdog(self.identity, orphan_timeout))
        holder.append(switch)
        return switch

    # -- life ---------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        for switch in self.switches:
            switch.inbound.start()
        self._watchdog_loop = gevent.spawn(self._keep_watchdog_armed)
        return self.outbound.start()

    def stop(self) -> None:
        if self._watchdog_loop is not None:
            self._watchdog_loop.kill(block=True, timeout=1.0)
            self._watchdog_loop = None
        for switch in self.switches:
            self._end_own_channels(switch)
        self.outbound.stop(timeout=2.0)
        for switch in self.switches:
            switch.inbound.stop()

    @property
    def connected(self) -> bool:
        return any(s.inbound.state is ConnectionState.CONNECTED for s in self.switches)

    @property
    def orphans_ended(self) -> int:
        return sum(s.orphans_ended for s in self.switches)

    def switch_states(self) -> list[dict[str, Any]]:
        """Each switch's address, connection state, readiness and calls (for status)."""
        return [
            {
                "switch": s.address,
                "state": s.inbound.state.value,
                "ready": s.ready,
                "calls": s.active_calls,
            }
            for s in self.switches
        ]

    def _on_state(self, switch: _Switch, state: ConnectionState) -> None:
        if state is ConnectionState.CONNECTED:
            # Numbers are served (presence, calls) only once the predecessor's leftovers
            # are gone, so a new call never meets a leftover's unicast ports.
            gevent.spawn(self._connected, switch)
            return
        switch.ready = False
        self._report_state()

    def _report_state(self) -> None:
        """Tell the call logic the gateway's ESL state: connected while any switch is
        ready; else the most hopeful state of the others (one switch: its own)."""
        if any(s.ready for s in self.switches):
            state: str | None = ConnectionState.CONNECTED.value
        else:
            states = {
                s.inbound.state.value
                for s in self.switches
                if s.inbound.state is not ConnectionState.CONNECTED  # cleanup still running
            }
            state = next((name for name in _STATE_ORDER if name in states), None)
        if state is not None and state != self._reported_state:
            self._reported_state = state
            self.sink.esl_state(state)

    def _kill_lost_channels(self, switch: _Switch) -> None:
        """After a reconnect: the channels whose calls ended with the lost connection."""
        uuids, switch.lost_channels = sorted(switch.lost_channels), set()
        for uuid in uuids:
            try:
                reply = switch.inbound.api("uuid_kill", uuid, "NORMAL_TEMPORARY_FAILURE")
            except EslError as exc:
                log.warning("esl.lost_channel_kill_failed", uuid=uuid, error=str(exc))
                continue
            if reply.ok:  # else it ended with the connection (FreeSWITCH restarted)
                log.info("esl.lost_channel_killed", uuid=uuid)

    # -- orphans: cleanup at start, watchdog (esl/orphans.py says why) --------------------

    def _connected(self, switch: _Switch) -> None:
        if not switch.cleaned:
            try:
                self._end_predecessors_channels(switch)
                switch.cleaned = True
            except EslError as exc:
                # Not fatal: the predecessor's own watchdog still ends them within the bound.
                log.warning("esl.orphans.cleanup_failed", error=str(exc))
        self._kill_lost_channels(switch)
        self._arm_watchdog(switch)
        if switch.inbound.state is ConnectionState.CONNECTED:
            switch.ready = True
            self._report_state()

    def _end_predecessors_channels(self, switch: _Switch) -> None:
        def api_text(command: str, *args: str) -> str:
            return switch.inbound.api(command, *args).body

        listing = api_text("show", "channels as json")
        ended = 0
        for uuid in orphans.channel_uuids(listing):
            node = orphans.getvar_value(api_text("uuid_getvar", uuid, orphans.NODE_VAR))
            if node != self.identity.node_id:
                continue
            instance = orphans.getvar_value(api_text("uuid_getvar", uuid, orphans.INSTANCE_VAR))
            if not self.identity.is_predecessor(node, instance or ""):
                continue
            if switch.inbound.uuid_kill(uuid, orphans.ORPHAN_CAUSE).ok:
                ended += 1
                log.warning("esl.orphans.channel_ended", uuid=uuid, instance=instance)
        switch.orphans_ended += ended
        log.info(
            "esl.orphans.cleanup_done",
            node=self.identity.node_id,
            instance=self.identity.instance_id,
            ended=ended,
            cause=orphans.ORPHAN_CAUSE,
            **self._switch_field(switch),
        )

    def _switch_field(self, switch: _Switch) -> dict[str, str]:
        """``switch=host:port`` in log lines, when there is more than one."""
        return {"switch": switch.address} if len(self.switches) > 1 else {}

    def _keep_watchdog_armed(self) -> None:
        while True:
            gevent.sleep(self.watchdog.period)
            for switch in self.switches:
                self._arm_watchdog(switch)

    def _arm_watchdog(self, switch: _Switch) -> None:
        """Arm the next watchdog task, then delete the previous one (never none armed)."""
        api = self._any_api(switch)
        if api is None:
            return  # nothing reaches the switch; the armed task keeps its time
        try:
            command, arg = switch.watchdog.arm_args()
            reply = api(command, arg)
            if not reply.ok:
                log.error("esl.orphans.watchdog_refused", reply=bounded(reply.text))
                return
            previous = switch.watchdog.armed_ok()
            if previous is not None:
                api("sched_del", previous)
        except EslError as exc:
            log.warning(
                "esl.orphans.watchdog_not_armed", error=str(exc), **self._switch_field(switch)
            )

    def _any_api(self, switch: _Switch) -> Any:
        """A way to run an api command on ``switch``: its inbound connection, else (with
        one switch, where every socket session comes from it) any socket session."""
        if switch.inbound.connected:
            return switch.inbound.api
        if len(self.switches) == 1:
            for session in list(self._sessions.values()):
                if not session.closed:
                    return session.api
        return None

    def _end_own_channels(self, switch: _Switch) -> None:
        """On a clean stop, after the drain: nothing of this process stays on the switch."""
        api = self._any_api(switch)
        if api is None:
            return
        try:
            api(
                "hupall",
                f"{orphans.ORPHAN_CAUSE} {orphans.INSTANCE_VAR} {self.identity.instance_id}",
            )
            group = switch.watchdog.disarm()
            if group is not None:
                api("sched_del", group)
        except EslError as exc:
            log.warning("esl.orphans.stop_cleanup_failed", error=str(exc))

    # -- operations (called in the hub's thread through the handoff) ---------------------

    def originate(
        self,
        call_id: str,
        uuid: str,
        destination: str,
        variables: dict[str, str],
        app: str = "&park()",
    ) -> None:
        """Start ``originate`` in its own greenlet; failures reach ``originate_failed``.
        ``app``: ``&park()`` (the call's channel waits for the gateway), or a conference
        invitee's ``&conference(<room>@<profile>)``."""
        gevent.spawn(self._originate, call_id, uuid, destination, variables, app)

    def submit(self, op: ChannelOp) -> None:
        """Queue an operation on its channel; the channel's operations run in order."""
        queue = self._queues.get(op.uuid)
        if queue is None:
            queue = self._queues[op.uuid] = gevent.queue.Queue()
            gevent.spawn(self._worker, op.uuid, queue)
        queue.put(op)

    def _originate(
        self,
        call_id: str,
        uuid: str,
        destination: str,
        variables: dict[str, str],
        app: str = "&park()",
    ) -> None:
        self._originating.add(uuid)
        try:
            self._originate_on_a_switch(call_id, uuid, destination, variables, app)
        finally:
            self._originating.discard(uuid)

    def _originate_on_a_switch(
        self,
        call_id: str,
        uuid: str,
        destination: str,
        variables: dict[str, str],
        app: str = "&park()",
    ) -> None:
        try:
            arg = cmd.originate_arg(
                destination,
                cmd.park_app() if app == "&park()" else app,
                {**variables, **self.identity.channel_vars()},
            )
        except ValueError as exc:
            log.warning("esl.originate_error", call_id=call_id, uuid=uuid, error=bounded(str(exc)))
            self.sink.originate_failed(call_id, uuid, "NORMAL_TEMPORARY_FAILURE")
            return
        tried: list[_Switch] = []
        while True:
            switch = self._pick_switch(tried)
            if switch is None:
                log.warning(
                    "esl.originate_error",
                    call_id=call_id,
                    uuid=uuid,
                    error="no FreeSWITCH connected"
                    + (f" (tried {', '.join(s.address for s in tried)})" if tried else ""),
                )
                self.sink.originate_failed(call_id, uuid, "NORMAL_TEMPORARY_FAILURE")
                return
            tried.append(switch)
            self._owner[uuid] = switch
            switch.inbound.track_call(uuid)
            try:
                result = switch.inbound.originate(arg, timeout=self.originate_timeout + 10)
            except EslNotSent as exc:
                # The switch never got the command: no channel can exist there, so
                # another switch may take the call.
                switch.inbound.untrack_call(uuid)
                self._owner.pop(uuid, None)
                log.warning(
                    "esl.originate_failover",
                    call_id=call_id,
                    uuid=uuid,
                    switch=switch.address,
                    error=bounded(str(exc)),
                )
                continue
            except EslError as exc:
                log.warning(
                    "esl.originate_error", call_id=call_id, uuid=uuid, error=bounded(str(exc))
                )
                switch.inbound.untrack_call(uuid)
                self._forget_owner(uuid)
                self.sink.originate_failed(call_id, uuid, "NORMAL_TEMPORARY_FAILURE")
                return
            break
        if not result.ok:
            switch.inbound.untrack_call(uuid)
            self._forget_owner(uuid)
            self.sink.originate_failed(call_id, uuid, result.cause or "UNKNOWN")
            return
        cause = self._killed_while_originating.pop(uuid, None)
        if cause is not None:
            # The call was ended while FreeSWITCH was still setting the channel up, when
            # uuid_kill found nothing to kill: kill the channel that now exists.
            self.submit(c.Hangup(call_id, uuid, cause))

    def _pick_switch(self, tried: list[_Switch]) -> _Switch | None:
        """The switch for a new originate: among the ready ones not tried yet (else the
        connected ones), the one with the fewest of this process's calls; ties in turn."""
        left = [s for s in self.switches if s not in tried]
        candidates = [s for s in left if s.ready] or [s for s in left if s.inbound.connected]
        if not candidates:
            return None
        fewest = min(s.active_calls for s in candidates)
        tied = [s for s in candidates if s.active_calls == fewest]
        count = len(self.switches)
        # The first tied switch after the one picked last, round the list.
        choice = min(tied, key=lambda s: (s.index - self._last_pick - 1) % count)
        self._last_pick = choice.index
        return choice

    def _inbound_of(self, uuid: str) -> InboundClient:
        """The inbound connection of the switch that owns an originated channel."""
        switch = self._owner.get(uuid) or self._ended_owner.get(uuid)
        return (switch or self.switches[0]).inbound

    def _forget_owner(self, uuid: str) -> None:
        """The channel has ended: keep where it was a while (late operations), bounded."""
        switch = self._owner.pop(uuid, None)
        if switch is None:
            return
        self._ended_owner[uuid] = switch
        while len(self._ended_owner) > _ENDED_SESSIONS_KEPT:
            self._ended_owner.popitem(last=False)

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
                    self._api_ok(uuid, "uuid_setvar", uuid, name, value)
            case c.SetChannelVars(variables=variables):
                arg = cmd.setvar_multi_arg(variables)
                reply = (session or self._inbound_of(uuid)).api("uuid_setvar_multi", uuid, arg)
                if not reply.ok:
                    raise EslCommandError("api uuid_setvar_multi", reply.text.strip())
            case Unicast(params=p):
                if session is not None:
                    session.start_unicast(
                        p.local_ip, p.local_port, p.remote_ip, p.remote_port, flags=p.flags
                    )
                else:
                    self._inbound_of(uuid).unicast(
                        uuid, p.local_ip, p.local_port, p.remote_ip, p.remote_port, flags=p.flags
                    )
            case ConferenceApi(words=words):
                reply = self._inbound_of(uuid).api("conference", uuid, *words)
                if not reply.ok:
                    raise EslCommandError("api conference", reply.text.strip())
                if words == ("list",):  # the room table reads the members (a cluster)
                    self.sink.conference_event(
                        {
                            "Event-Subclass": CONFERENCE_SUBCLASS,
                            "Action": "esl-bridge-list",
                            "Conference-Name": uuid,
                            "List": reply.text,
                        }
                    )
            case SendDtmf(digits=digits):
                if session is not None:
                    session.send_dtmf(digits)
                else:
                    self._inbound_of(uuid).uuid_send_dtmf(uuid, digits)
            case c.PreAnswer():
                self._session_of(op, session).pre_answer()
            case c.PlayRingback():
                if session is None and uuid in self._owner:  # an originated channel
                    self._inbound_of(uuid).play_ringback(uuid)
                else:
                    self._session_of(op, session).play_ringback()
            case c.StopRingback():
                if session is None and uuid in self._owner:
                    self._inbound_of(uuid).stop_ringback(uuid)
                else:
                    self._session_of(op, session).stop_ringback()
            case c.Answer():
                self._session_of(op, session).answer()
            case c.JoinRoom(target=target):
                self._session_of(op, session).execute("conference", target)

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
            reply = self._inbound_of(uuid).uuid_kill(uuid, cause)
        if reply.ok:
            return
        if uuid in self._originating:
            self._killed_while_originating[uuid] = cause
            return
        # "-ERR No such channel!": it is gone already; say so, the call must end.
        self.sink.channel_lost(uuid, cause)

    def _calls_lost(self, switch: _Switch, uuids: list[str]) -> None:
        """A switch's inbound connection dropped: the channels it tracked are gone for us
        (and killed on reconnect, if the switch still has them)."""
        switch.lost_channels.update(uuids)
        for uuid in uuids:
            self._forget_owner(uuid)
            self.sink.channel_lost(uuid, "NORMAL_TEMPORARY_FAILURE")

    def _claim(self, session: OutboundSession) -> None:
        reply: ApiResponse = session.api(
            "uuid_setvar_multi", session.uuid, self.identity.setvar_multi_arg()
        )
        if not reply.ok:
            raise EslError(f"uuid_setvar_multi: {bounded(reply.text)}")

    def _api_ok(self, uuid: str, command: str, *args: str) -> None:
        """An api command about channel ``uuid``, on the switch that owns it."""
        reply = self._inbound_of(uuid).api(command, *args)
        if not reply.ok:
            raise EslCommandError(f"api {command}", reply.text.strip())

    # -- events ---------------------------------------------------------------------------

    def _on_inbound_event(self, event: Event) -> None:
        if event.name == "CUSTOM":
            headers = event.headers
            if headers.get("Event-Subclass") == CONFERENCE_SUBCLASS:
                self.sink.conference_event(
                    {k: headers[k] for k in CONFERENCE_HEADERS if k in headers}
                )
            return
        uuid = event.uuid
        # A channel with a socket session reports through it (myevents); the inbound
        # connection sees the same events, which would arrive twice.
        if not uuid or uuid in self._sessions or event.name == "BACKGROUND_JOB":
            return
        if event.name == "CHANNEL_HANGUP_COMPLETE":
            self._forget_owner(uuid)
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
