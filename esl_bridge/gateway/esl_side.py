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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.queue

from esl_bridge.config import EslSettings, SocketSettings
from esl_bridge.esl import commands as cmd
from esl_bridge.esl.control import (
    ConnectionState,
    EslDisconnected,
    EslError,
    InboundClient,
    OutboundServer,
    OutboundSession,
)
from esl_bridge.esl.protocol import ChannelRecord, DisconnectNotice, Event
from esl_bridge.logs import get_logger

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
_WORKER_IDLE = 30.0  # seconds a channel's worker waits for more work before it ends


class EventSink(Protocol):
    """Where FreeSWITCH's news goes (the asyncio side, reached through the handoff)."""

    def channel_event(self, uuid: str, name: str, headers: Mapping[str, str]) -> None: ...

    def originate_failed(self, call_id: str, uuid: str, cause: str) -> None: ...

    def operation_failed(self, call_id: str, uuid: str, kind: str, error: str) -> None: ...

    def esl_state(self, state: str) -> None: ...

    def calls_lost(self, uuids: list[str]) -> None: ...

    def sip_call(self, record: ChannelRecord) -> bool:
        """A SIP -> RTC channel arrived; blocks this greenlet until the call logic decided."""
        ...


@dataclass(frozen=True)
class Operation:
    call_id: str
    kind: str  # set_var, pre_answer, play_ringback, stop_ringback, answer, hangup, ...
    args: tuple[Any, ...] = ()


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
        originate_timeout: float = 60.0,
    ) -> None:
        self.sink = sink
        self.originate_timeout = originate_timeout
        self.inbound = InboundClient(
            esl.host,
            esl.port,
            esl.password,
            command_timeout=esl.command_timeout,
            connect_timeout=esl.connect_timeout,
            backoff_max=esl.reconnect_max_delay,
            on_event=self._on_inbound_event,
            on_state=self._on_state,
            on_calls_lost=self._calls_lost,
        )
        self.outbound = OutboundServer(
            self._on_session, socket.host, socket.port, command_timeout=esl.command_timeout
        )
        self._sessions: dict[str, OutboundSession] = {}
        self._queues: dict[str, gevent.queue.Queue[Operation]] = {}
        self._originating: set[str] = set()
        self._killed_while_originating: dict[str, str] = {}
        # Channels of calls ended because the inbound connection dropped: FreeSWITCH may
        # still have them (only the connection was lost), so they are killed on reconnect.
        self._orphans: set[str] = set()

    # -- life ---------------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        self.inbound.start()
        return self.outbound.start()

    def stop(self) -> None:
        self.outbound.stop(timeout=2.0)
        self.inbound.stop()

    @property
    def connected(self) -> bool:
        return self.inbound.state is ConnectionState.CONNECTED

    def _on_state(self, state: ConnectionState) -> None:
        self.sink.esl_state(state.value)
        if state is ConnectionState.CONNECTED and self._orphans:
            orphans, self._orphans = sorted(self._orphans), set()
            gevent.spawn(self._kill_orphans, orphans)

    def _calls_lost(self, uuids: list[str]) -> None:
        self._orphans.update(uuids)
        self.sink.calls_lost(uuids)

    def _kill_orphans(self, uuids: list[str]) -> None:
        for uuid in uuids:
            try:
                reply = self.inbound.api("uuid_kill", uuid, "NORMAL_TEMPORARY_FAILURE")
            except EslError as exc:
                log.warning("orphan_kill_failed", uuid=uuid, error=str(exc))
                continue
            if reply.ok:  # else it ended with the connection (FreeSWITCH restarted)
                log.info("orphan_channel_killed", uuid=uuid)

    # -- operations (called in the hub's thread through the handoff) ---------------------

    def originate(
        self, call_id: str, uuid: str, destination: str, variables: dict[str, str]
    ) -> None:
        """Start ``originate`` in its own greenlet; failures reach ``originate_failed``."""
        gevent.spawn(self._originate, call_id, uuid, destination, variables)

    def submit(self, uuid: str, operation: Operation) -> None:
        """Queue an operation on a channel; the channel's operations run in order."""
        queue = self._queues.get(uuid)
        if queue is None:
            queue = self._queues[uuid] = gevent.queue.Queue()
            gevent.spawn(self._worker, uuid, queue)
        queue.put(operation)

    def _originate(
        self, call_id: str, uuid: str, destination: str, variables: dict[str, str]
    ) -> None:
        self._originating.add(uuid)
        self.inbound.track_call(uuid)
        try:
            arg = cmd.originate_arg(destination, cmd.park_app(), variables)
            result = self.inbound.originate(arg, timeout=self.originate_timeout + 10)
        except (EslError, ValueError) as exc:
            log.warning("originate_error", call_id=call_id, uuid=uuid, error=str(exc))
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
            self.submit(uuid, Operation(call_id, "hangup", (cause,)))

    def _worker(self, uuid: str, queue: gevent.queue.Queue[Operation]) -> None:
        try:
            while True:
                try:
                    operation = queue.get(timeout=_WORKER_IDLE)
                except gevent.queue.Empty:
                    return
                try:
                    self._run(uuid, operation)
                except EslDisconnected as exc:
                    # The channel or its connection is gone: its hangup reaches the call
                    # anyway (event, socket end or lost-calls report); not a call failure.
                    log.info(
                        "channel_operation_moot",
                        call_id=operation.call_id,
                        uuid=uuid,
                        operation=operation.kind,
                        reason=str(exc),
                    )
                except (EslError, ValueError) as exc:
                    log.warning(
                        "channel_operation_failed",
                        call_id=operation.call_id,
                        uuid=uuid,
                        operation=operation.kind,
                        error=str(exc),
                    )
                    self.sink.operation_failed(operation.call_id, uuid, operation.kind, str(exc))
        finally:
            if self._queues.get(uuid) is queue:
                del self._queues[uuid]

    def _run(self, uuid: str, op: Operation) -> None:
        session = self._sessions.get(uuid)
        kind = op.kind
        if kind == "hangup":
            self._hangup(uuid, session, op)
        elif kind == "set_var":
            name, value = op.args
            if session is not None:
                session.set_var(name, value)
            else:
                self._api_ok("uuid_setvar", uuid, name, value)
        elif kind == "unicast":
            params = op.args[0]
            if session is not None:
                session.start_unicast(
                    params.local_ip, params.local_port, params.remote_ip, params.remote_port
                )
            else:
                self.inbound.unicast(
                    uuid, params.local_ip, params.local_port, params.remote_ip, params.remote_port
                )
        elif kind == "send_dtmf":
            (digits,) = op.args
            if session is not None:
                session.send_dtmf(digits)
            else:
                self.inbound.uuid_send_dtmf(uuid, digits)
        elif kind in ("pre_answer", "play_ringback", "stop_ringback", "answer"):
            if session is None:
                raise EslError(f"{kind} needs the channel's socket session; {uuid} has none")
            getattr(session, kind)()
        else:
            raise ValueError(f"unknown channel operation {kind!r}")

    def _hangup(self, uuid: str, session: OutboundSession | None, op: Operation) -> None:
        (cause,) = op.args
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
        self.sink.channel_event(uuid, "CHANNEL_HANGUP_COMPLETE", {"Hangup-Cause": cause})

    def _api_ok(self, command: str, *args: str) -> None:
        reply = self.inbound.api(command, *args)
        if not reply.ok:
            raise EslError(f"api {command}: {reply.text.strip()}")

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
                self.sink.sip_call(session.channel)
            except Exception as exc:  # the call logic could not take it: fail loudly
                log.error("sip_call_not_taken", uuid=uuid, error=str(exc))
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
            if not hung_up:
                # The socket went away without the hangup events: the call logic must
                # still learn the channel is gone for us.
                cause = session.hangup_cause or "NORMAL_CLEARING"
                self.sink.channel_event(uuid, "CHANNEL_HANGUP_COMPLETE", {"Hangup-Cause": cause})
