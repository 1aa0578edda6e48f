"""The call controller, on the asyncio thread: the call core wired to its three sides.

* the signalling hub, where the gateway is a participant serving the acc_rule numbers and
  [proxy] rtm_account (invitations, peer messages, presence of web users in calls);
* FreeSWITCH, through a ``ChannelPort`` (the gevent side, reached through the handoff);
* the media legs (aiortc + unicast), one per call, keyed by ChanId.

Every input becomes a call event for ``CallBook``; every action it returns is carried out
here. Peer messages between a web user and the gateway uid of its call (``Call.peer_uid``)
are the ``core/peer_messages.py`` dataclasses: EndCall, CallState -> CallStateResult,
Offer -> Answer / MediaError (SDP of the call's ChanId, non-trickle), Dtmf (both ways),
SipState (ringing, early media).

What ties a call to the hub and the media side (its invitation ids, media leg, channel
variables) is kept per call id in ``_links``, with the invitation ids indexed in
``_by_inv`` / ``_by_ref``; all three are filled only for calls the book holds and
emptied together when the call ends (``_forget``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from esl_bridge.config import Settings
from esl_bridge.core import call as c
from esl_bridge.core import ids, peer_json
from esl_bridge.core import peer_messages as pm
from esl_bridge.core.browser_hold import BROWSER_LOST, ICE, WS, BrowserHolds
from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.core.invitations import LocalState, RemoteState
from esl_bridge.core.media_verdict import OK, Change, HopCounters, OneWayJudge
from esl_bridge.core.unicast_gate import GateInput, classify_event
from esl_bridge.gateway.conference import DIAL_IN_VAR, ConferenceDesk
from esl_bridge.gateway.esl_side import ChannelOp, ConferenceApi, SendDtmf, Unicast
from esl_bridge.gateway.ops_metrics import OpsMetrics
from esl_bridge.logs import bound_contextvars, get_logger
from esl_bridge.media.codec_choice import sip_side_codec
from esl_bridge.media.leg import LegConfig, MediaLeg, hold_tone
from esl_bridge.media.unicast import (
    ChannelFormat,
    MediaCounters,
    PortAllocator,
    UnicastParams,
    bind_probe,
    channel_codec_name,
)
from esl_bridge.numbers import NumberPool
from esl_bridge.signaling.hub import Hub, ParticipantHandle

log = get_logger("gateway.calls")


class NumberClaims(Protocol):
    """The cluster's side of the numbers (esl_bridge/cluster/node.py ClusterNode)."""

    member: str

    @property
    def healthy(self) -> bool: ...

    async def claim(self, number: str, token: str) -> bool | None: ...

    def release(self, number: str, token: str) -> None: ...

    def status(self) -> dict[str, Any]: ...


#: The refusal a web caller gets while the cluster's Redis cannot be reached.
CLUSTER_UNAVAILABLE = c.refusal("cluster_unavailable")


class ChannelPort(Protocol):
    """What the controller asks of FreeSWITCH; the calls return at once."""

    def originate(self, action: c.Originate) -> None: ...

    def operate(self, op: ChannelOp) -> None: ...


@dataclass
class _CallLinks:
    """What ties one call to the hub and the media side."""

    inv: str | None = None  # the web caller's invitation (RTC -> SIP)
    ref: str | None = None  # the gateway's own invitation (SIP -> RTC)
    leg: MediaLeg | None = None
    headers: dict[str, str] = field(default_factory=dict)  # latest channel variables
    watch: OneWayJudge | None = None  # the one-way audio verdicts, once media flows
    # Set when a channel event brings new headers: unicast of early media waits on it for
    # the read rate, which a 183 (CHANNEL_PROGRESS_MEDIA) does not carry yet.
    headers_changed: asyncio.Event = field(default_factory=asyncio.Event)


class CallController:
    """Owns the CallBook; every method runs on the asyncio loop."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        channels: ChannelPort,
        *,
        clock: Callable[[], float] = time.monotonic,
        kick_hub: Callable[[], None] = lambda: None,
        cluster: NumberClaims | None = None,
        emit: Callable[[str, dict[str, object]], None] = lambda name, fields: None,
        ops_stats: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        self.settings = settings
        # In a cluster each acc_rule number is also claimed in Redis before its call is
        # made: the one await on a call's path (_claim_then_take).
        self.cluster = cluster
        self._claiming: dict[str, bool] = {}  # invitation id -> canceled meanwhile
        self._claims: dict[str, tuple[str, str]] = {}  # call id -> (number, token)
        self.clock = clock
        # CUSTOM events for fs_cli (gateway/ops_events.py); returns at once.
        self._emit = emit
        self._ops_stats = ops_stats
        self.channels = channels
        self._kick_hub = kick_hub
        self.gateway_uid = settings.proxy.rtm_account
        self.appid = settings.global_.appid
        self.pool = NumberPool(settings.rtm2sip.numbers)
        pstn = settings.pstn
        self.book = CallBook(
            BookSettings(
                rtm2sip_on=settings.rtm2sip.on,
                proxy_on=settings.proxy.on,
                sip_domain=settings.global_.sip_domain,
                gateway_uid=self.gateway_uid,
                max_calls=settings.limits.max_calls,
                max_call_rate=settings.limits.max_call_rate,
                call_burst=settings.limits.call_burst,
                originate_timeout=settings.limits.originate_timeout,
                pstn_ip=pstn.ip,
                pstn_prefix=pstn.prefix,
                pstn_gateway=pstn.gateway,
                appid=self.appid,
            ),
            self.pool,
        )
        self.leg_config = LegConfig.from_settings(settings.media)
        self.ports = self._port_allocator()
        self.media_counters = MediaCounters()  # shared by every call's unicast endpoint
        # Connected calls whose browser path is lost, waiting for it (core/browser_hold.py).
        self.holds = BrowserHolds(settings.media.browser_hold)
        self.handle: ParticipantHandle = hub.register_participant(self.appid, self)
        hub.on_presence = self._presence_changed
        # What call_ended reports, per live call: its fields, start and answer times, and
        # the media figures once its leg has closed (kept until both the end and the
        # figures are in; _closing: legs whose figures are still being read).
        self._ops_calls: dict[str, dict[str, Any]] = {}
        self._ops_figures: dict[str, dict[str, object]] = {}
        self._ops_ended: dict[str, dict[str, object]] = {}
        self._closing: set[str] = set()
        self._links: dict[str, _CallLinks] = {}  # call id -> links, live calls only
        self._by_inv: dict[str, str] = {}  # web caller's invitation id -> call id
        self._by_ref: dict[str, str] = {}  # the gateway's invitation ref -> call id
        self._watched: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self.esl_state = "disconnected"
        self.ended_total: dict[str, int] = {}
        self.metrics = OpsMetrics()  # setup latency, causes, media losses (ops_metrics.py)
        self._retired: set[str] = set()  # numbers a reload removed, still on a call
        # Conference rooms (issue 14): gateway/conference.py.
        self.conference = ConferenceDesk(self)
        # Told of every call's start, change of state and end (None: ended); in a
        # cluster the API publishes the calls through it (gateway/api.py).
        self.call_watchers: list[Callable[[str, c.Call | None], None]] = []

    # -- life ---------------------------------------------------------------------------

    async def start(self) -> None:
        served = [*self.pool, self.gateway_uid]
        # Shown online only while FreeSWITCH is reachable (esl_state below).
        self.handle.register(served, self.clock(), present=False)
        self._timer = asyncio.create_task(self._timers(), name="call-timers")
        log.info("calls.ready", numbers=len(self.pool), gateway_uid=self.gateway_uid)

    async def stop(self, drain: float = 5.0) -> None:
        """End every call, wait up to ``drain`` seconds for them to end, close media."""
        self._run(self.book.shutdown(self.clock()))
        deadline = self.clock() + drain
        while len(self.book) and self.clock() < deadline:
            await asyncio.sleep(0.05)
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        for links in list(self._links.values()):
            if links.leg is not None:
                await links.leg.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A leg whose figures were never read (its task cancelled): its call_ended goes
        # without them rather than not at all.
        for fields in self._ops_ended.values():
            self._emit("call_ended", fields)
        self._ops_ended.clear()
        self._closing.clear()

    async def _timers(self) -> None:
        while True:
            deadline = min(
                (
                    d
                    for d in (self.book.next_deadline(), self.holds.next_deadline())
                    if d is not None
                ),
                default=None,
            )
            # Wake at least every second to check media timeouts.
            delay = 1.0 if deadline is None else min(1.0, max(0.0, deadline - self.clock()))
            # asyncio.timeout, not wait_for (see SignalingService._timers).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            try:
                self._run(self.book.poll(self.clock()))
                for call_id in self.holds.expired(self.clock()):
                    log.info("calls.browser_lost", call_id=call_id)
                    self.event(call_id, c.MediaFailed(BROWSER_LOST))
                self._check_media_timeouts()
            except Exception:  # keep the timers alive whatever a bug does
                log.exception("calls.timers_failed")

    def _port_allocator(self) -> PortAllocator:
        """Unicast port pairs: random within the range, quarantined after use, and probed
        (both ports bound for an instant) when FreeSWITCH's unicast address is ours."""
        media = self.settings.media
        fs_host = self.leg_config.fs_unicast_host or self.leg_config.unicast_host
        probe = bind_probe(self.leg_config.unicast_host, fs_host)
        if probe is None:
            log.warning(
                "media.unicast_probe_off", fs_host=fs_host, reason="not an address of this host"
            )
        return PortAllocator(
            media.unicast_port_min,
            media.unicast_port_max,
            quarantine=media.unicast_port_quarantine,
            probe=probe,
        )

    def _check_media_timeouts(self) -> None:
        media = self.settings.media
        now = asyncio.get_running_loop().time()
        for call in list(self.book):
            links = self._links.get(call.call_id)
            if links is None or links.leg is None or links.leg.endpoint is None:
                continue
            endpoint = links.leg.endpoint
            waiting = endpoint.not_started_for(now)
            if waiting is not None and waiting > media.unicast_start_timeout:
                # No datagram from the switch's port since the unicast command: it failed
                # there ("Failure creating unicast connection" is only in its log).
                pair = endpoint.pair
                log.warning(
                    "media.unicast_not_started",
                    call_id=call.call_id,
                    uuid=call.uuid,
                    fs_port=None if pair is None else pair.fs_port,
                    port=None if pair is None else pair.local_port,
                    foreign_packets=endpoint.foreign_packets,
                    waited=round(waiting, 3),
                )
                self.event(call.call_id, c.MediaFailed("unicast_not_started"))
                continue
            silent = endpoint.seconds_since_rx(now)
            if silent is not None and silent > media.media_timeout:
                self.event(call.call_id, c.MediaFailed("media_timeout"))
                continue
            self._watch_media(call, links, now)

    def _watch_media(self, call: c.Call, links: _CallLinks, now: float) -> None:
        """One-way audio: each direction's verdict (core/media_verdict.py); a direction
        gone bad is a media_problem (event, log) and every change is told to the web user."""
        leg = links.leg
        endpoint = None if leg is None else leg.endpoint
        if leg is None or endpoint is None or call.state is not c.State.CONNECTED:
            return
        if endpoint.fs_addr is None:
            return  # unicast not flowing yet: the start timeout's business
        if self.holds.held(call.call_id):
            return  # the browser's path is gone (core/browser_hold.py): nothing to judge
        # After an ICE restart the new leg's counters start at zero: a count unlike the last
        # snapshot's is movement to the judge, so the new path is judged from there.
        counters = leg.hop_counters()
        if links.watch is None:
            if not counters.browser_connected:
                return  # no media path to judge yet: the browser's ICE/DTLS is not up
            # A conference's mix is silent whenever nobody speaks: not a problem.
            conference = isinstance(call, c.ConfWebCall)
            media = self.settings.media
            links.watch = OneWayJudge(
                now,
                window=media.media_problem_after,
                floor_dbov=media.silence_floor_dbov,
                switch_level=not conference,
            )
        for change in links.watch.update(now, counters):
            self._media_verdict(call, change, counters)

    def _media_verdict(self, call: c.Call, change: Change, counters: HopCounters) -> None:
        if change.verdict == OK:
            log.info("calls.media_ok", call_id=call.call_id, direction=change.direction)
        else:
            log.warning(
                "calls.media_problem",
                call_id=call.call_id,
                direction=change.direction,
                verdict=change.verdict,
                seconds=change.seconds,
            )
            self._emit(
                "media_problem",
                {
                    **self._ops_calls.get(call.call_id, {}).get("fields", {}),
                    "silent": _SILENT_NAMES[change.direction],
                    "silent_seconds": round(change.seconds, 1),
                    "packets_from_switch": counters.audio_from_switch,
                    "packets_from_browser": counters.rtp_from_browser,
                    "verdict": change.verdict,
                },
            )
        try:
            msg = pm.MediaProblem(
                chan_id=call.chan_id, direction=change.direction, verdict=change.verdict
            )
        except pm.PeerMessageError as exc:  # a ChanId the message cannot carry
            log.warning("calls.media_problem_not_told", call_id=call.call_id, error=str(exc))
            return
        self.handle.send_message(call.peer_uid, call.web_uid, pm.serialise(msg), self.clock())

    # -- inputs from FreeSWITCH (via the handoff) ----------------------------------------

    def channel_event(self, uuid: str, name: str, headers: Mapping[str, str]) -> None:
        call = self.book.by_uuid(uuid)
        if call is None:
            if classify_event(name, headers) is GateInput.HANGUP:
                self.conference.channel_gone(uuid)  # a dial-in still being admitted
            return
        links = self._links_of(call.call_id)
        links.headers.update(headers)
        links.headers_changed.set()
        events: list[c.Event] = []
        if name == "CHANNEL_PROGRESS":
            events.append(c.ChannelRinging())
        elif name == "CHANNEL_PROGRESS_MEDIA":
            events.append(c.ChannelEarlyMedia())
        elif name == "CHANNEL_ANSWER":
            events.append(c.ChannelAnswered())
            if isinstance(call, c.ConfWebCall):
                self.conference.channel_answered(call, headers)
        elif name == "DTMF":
            self._dtmf_to_web(call, headers.get("DTMF-Digit", ""))
        # The one rule of when unicast is safe (docs/freeswitch.rst, fact 1).
        gate_input = classify_event(name, headers)
        if gate_input is GateInput.MEDIA_READY:
            events.append(c.ChannelMediaReady())
        elif gate_input is GateInput.HANGUP:
            events.append(c.ChannelHungUp(headers.get("Hangup-Cause") or "NORMAL_CLEARING"))
        for event in events:
            self.event(call.call_id, event)

    def originate_failed(self, call_id: str, uuid: str, cause: str) -> None:
        self.event(call_id, c.OriginateFailed(cause))

    def conference_event(self, headers: Mapping[str, str]) -> None:
        """A ``CUSTOM conference::maintenance`` event from FreeSWITCH."""
        try:
            self.conference.maintenance(headers)
        except Exception:  # a bug here must not stop the next events
            log.exception("conference.event_failed", action=headers.get("Action"))

    def operation_failed(self, op: ChannelOp, error: str) -> None:
        if isinstance(op, ConferenceApi):
            self.conference.api_failed(op, error)
            return
        call_id = op.call_id
        if isinstance(op, c.Hangup):
            # Killing failed for another reason than "no such channel": the grace timer
            # of the call retries and then gives up.
            return
        self.event(call_id, c.GatewayError(f"esl {type(op).__name__} failed"))

    def set_esl_state(self, state: str) -> None:
        was_up = self.esl_state == "connected"
        self.esl_state = state
        self.metrics.esl_state(state)
        up = state == "connected"
        if up != was_up:
            now = self.clock()
            for uid in [*self.pool, self.gateway_uid]:
                self.handle.set_present(uid, up, now)
            self._kick_hub()

    def channel_lost(self, uuid: str, cause: str) -> None:
        """The channel is gone for us without its hangup events (EslSide says why)."""
        call = self.book.by_uuid(uuid)
        if call is not None:
            self.event(call.call_id, c.ChannelLost(cause))
        else:
            self.conference.channel_gone(uuid)

    def sip_call_arrived(self, record: Any) -> None:
        """A phone dialled 0<uid>: a call, or the hangup that refuses it. Nothing waits for
        this (the channel's events come after it, in order); a bug here must still not
        leave the caller ringing."""
        try:
            self._sip_call_arrived(record)
        except Exception:
            log.exception("calls.sip_call_failed", uuid=record.uuid)
            self.channels.operate(c.Hangup("", record.uuid, "NORMAL_TEMPORARY_FAILURE"))

    def _sip_call_arrived(self, record: Any) -> None:
        code = record.headers.get(f"variable_{DIAL_IN_VAR}")
        if code is not None:
            self.conference.dial_in(record, code)  # dialplan/: a room's dial-in number
            return
        callee = record.callee_uid
        if self.cluster is not None and not self.cluster.healthy:
            # Where the callee is cannot be known: refuse rather than guess.
            log.warning("calls.refused_cluster_down", uuid=record.uuid, callee=callee or "")
            self.channels.operate(c.Hangup("", record.uuid, "NORMAL_TEMPORARY_FAILURE"))
            return
        online = bool(callee) and self.handle.hub.is_online(self.appid, callee)
        with bound_contextvars(uuid=record.uuid, uid=callee or ""):
            log.info(
                "calls.sip_call_arrived",
                caller=record.caller_number,
                callee=callee,
                online=online,
            )
        actions = self.book.sip_call_arrived(
            uuid=record.uuid,
            callee=callee,
            caller_number=record.caller_number or "",
            cus_data=record.cus_data or "",
            callee_online=online,
            now=self.clock(),
        )
        call = self.book.by_uuid(record.uuid)
        if call is not None:
            self._links_of(call.call_id).headers.update(record.headers)
            self._call_started(call)
        self._run(actions)

    # -- inputs from the hub (Participant) ------------------------------------------------

    def on_event(self, uid: str, message: dict[str, Any]) -> None:
        kind = message.get("type")
        try:
            if kind == "invitation":
                self._invitation(uid, message)
            elif kind == "remote_state":
                self._remote_state(message)
            elif kind == "local_state":
                self._local_state(message)
            elif kind == "message":
                self._peer_message(uid, str(message.get("from", "")), str(message.get("text", "")))
            elif kind == "peer_status":
                self._peer_status(message.get("peers") or {})
        except Exception:  # a bug here must not break the hub's delivery loop
            log.exception("calls.hub_event_failed", type=kind, uid=uid)

    def _invitation(self, number: str, message: dict[str, Any]) -> None:
        inv = str(message["inv"])
        caller = str(message["caller"])
        content = str(message.get("content") or "")
        channel_id = str(message.get("channel_id") or "")
        if channel_id and content:
            content = _with_chan_id(content, channel_id)
        elif channel_id:
            content = json.dumps({"ChanId": channel_id})
        if self.cluster is not None and number in self.pool:
            self._claiming[inv] = False
            self._spawn(self._claim_then_take(number, inv, caller, content))
            return
        self._take_invitation(number, inv, caller, content)

    async def _claim_then_take(self, number: str, inv: str, caller: str, content: str) -> None:
        """Claim ``number`` cluster-wide, then give the invitation to the book."""
        assert self.cluster is not None
        token = f"{self.cluster.member}:{inv}"
        claimed = await self.cluster.claim(number, token)
        canceled = self._claiming.pop(inv, True)
        if claimed is not True:
            response = CLUSTER_UNAVAILABLE if claimed is None else c.BUSY_REFUSAL
            log.info("calls.invitation_refused", caller=caller, number=number, response=response)
            self.handle.refuse(number, inv, self.clock(), response)
            self._kick_hub()
            return
        if canceled:
            self.cluster.release(number, token)
            return
        # Into a conference room: the room admits the number's leg cluster-wide first.
        leg = None
        if self.conference.shared is not None:
            self._claiming[inv] = False
            leg = await self.conference.admit_invitation(caller, content)
            canceled = self._claiming.pop(inv, True)
        if isinstance(leg, str) or canceled:
            self.cluster.release(number, token)
            if isinstance(leg, str):
                refused = CLUSTER_UNAVAILABLE if leg == "cluster_unavailable" else c.refusal(leg)
                log.info("calls.invitation_refused", caller=caller, number=number, response=refused)
                self.handle.refuse(number, inv, self.clock(), refused)
                self._kick_hub()
            elif leg is not None:
                self.conference.release_leg(leg)
            return
        call_id = self._take_invitation(number, inv, caller, content, leg)
        if call_id is None:
            self.cluster.release(number, token)
            if leg is not None:
                self.conference.release_leg(leg)
        else:
            self._claims[call_id] = (number, token)
        self._kick_hub()

    def _take_invitation(
        self, number: str, inv: str, caller: str, content: str, leg: Any = None
    ) -> str | None:
        """The book's answer to an invitation: the new call's id, or None (refused).
        ``leg``: in a cluster, a conference invitation's admission (gateway/conference.py)."""
        now = self.clock()
        conference = self.conference
        room = conference.room_for_invitation(caller, content, leg) if number in self.pool else None
        if isinstance(room, str):
            response = c.refusal(room)
            log.info("calls.invitation_refused", caller=caller, number=number, response=response)
            self.handle.refuse(number, inv, now, response)
            return None
        where = None if room is None else (room[0].room.name, self.settings.conference.profile)
        actions = self.book.invitation_to_number(caller, number, content, now, room=where)
        created = next((a for a in actions if isinstance(a, c.Originate)), None)
        if created is not None and room is not None:
            self.conference.invitee_added(room[0], created.call_id, created.uuid, number, leg)
        if created is not None:
            self._links_of(created.call_id).inv = inv
            self._by_inv[inv] = created.call_id
            self.handle.ack(number, inv, now)  # RECEIVED_BY_REMOTE
            self._watch(caller)
        else:
            for action in actions:
                if isinstance(action, c.RefuseInvitation):
                    log.info(
                        "calls.invitation_refused",
                        caller=caller,
                        number=number,
                        response=action.response,
                    )
                    self.handle.refuse(number, inv, now, action.response)
            return None
        self._run(actions)
        return created.call_id

    def _remote_state(self, message: dict[str, Any]) -> None:
        """A web caller's invitation to a number changed state (canceled, failed)."""
        inv = str(message.get("inv", ""))
        if inv in self._claiming:
            self._claiming[inv] = True  # ended while its number was being claimed
        call = self.book.get(self._by_inv.get(inv, ""))
        if call is None:
            return
        state = message.get("state")
        if state == RemoteState.CANCELED:
            self.event(call.call_id, c.InvitationCanceled())
        elif state == RemoteState.FAILURE:
            self.event(call.call_id, c.WebUserGone())

    def _local_state(self, message: dict[str, Any]) -> None:
        """The gateway's own invitation to a web user changed state (accepted...)."""
        call = self.book.get(self._by_ref.get(str(message.get("ref", "")), ""))
        if call is None:
            return
        state = message.get("state")
        response = str(message.get("response") or "")
        if state == LocalState.ACCEPTED_BY_REMOTE:
            self.event(call.call_id, c.InvitationAccepted(response))
        elif state == LocalState.REFUSED_BY_REMOTE:
            self.event(call.call_id, c.InvitationRefused(response))
        elif state == LocalState.FAILURE:
            self.event(call.call_id, c.InvitationFailed(str(message.get("reason_name", ""))))

    def _peer_status(self, peers: Mapping[str, str]) -> None:
        for uid, status in peers.items():
            for call in self.book.calls_of(uid):
                if status != "OFFLINE":
                    self._browser_back(call.call_id, WS)
                elif not self._hold(call.call_id, WS):
                    self.event(call.call_id, c.WebUserGone())

    def _peer_message(self, to: str, sender: str, text: str) -> None:
        if self.conference.peer_message(to, sender, text):
            return
        try:
            msg = pm.parse(text)
        except pm.NotACommand:
            return  # free text (or garbage): not for the gateway
        except pm.UnknownCommand:
            log.debug("calls.peer_message_unknown", uid=to, sender=sender)
            return
        except pm.PeerMessageError as exc:
            log.info(
                "calls.peer_message_rejected", uid=to, sender=sender, cmd=exc.cmd, error=str(exc)
            )
            if exc.cmd == pm.Offer.CMD:
                # The browser waits for an answer to its offer: tell it there is none.
                self._media_error(to, sender, None, "bad_message")
            return
        now = self.clock()
        if isinstance(msg, pm.CallState):
            result = pm.CallStateResult(state=self.book.call_state_of(sender), mode=1)
            self.handle.send_message(to, sender, pm.serialise(result), now)
            return
        call = self._call_between(sender, to, msg.chan_id)
        if call is None:
            if isinstance(msg, pm.Offer):
                self._media_error(to, sender, msg.chan_id, "no_such_call")
            return
        if isinstance(msg, pm.EndCall):
            self.event(call.call_id, c.PeerEndCall())
        elif isinstance(msg, pm.Offer):
            self._spawn(self._answer_offer(call, sender, msg.sdp))
        elif isinstance(msg, pm.Dtmf):
            self.channels.operate(SendDtmf(call.call_id, call.uuid, msg.digits))

    def _call_between(self, web_uid: str, peer_uid: str, chan_id: str | None) -> c.Call | None:
        """The live call of ``web_uid`` with ``peer_uid`` (and that ChanId, when given)."""
        for call in self.book.calls_of(web_uid):
            if chan_id and call.chan_id != chan_id:
                continue
            if call.peer_uid == peer_uid:
                return call
        return None

    # -- media ----------------------------------------------------------------------------

    async def _answer_offer(self, call: c.Call, web_uid: str, sdp: str) -> None:
        links = self._links.get(call.call_id)
        if links is None or links.leg is None or not sdp:
            self._media_error(call.peer_uid, web_uid, call.chan_id, "not_ready")
            return
        if links.leg.has_offer:
            await self._restart_media(call, links, web_uid, sdp)  # an ICE restart
            return
        try:
            sdp_answer = await links.leg.handle_offer(sdp, sip_side_codec(links.headers))
            answer = pm.Answer(chan_id=call.chan_id, sdp=sdp_answer)
        except Exception as exc:
            log.warning("media.offer_failed", call_id=call.call_id, error=str(exc))
            self._media_error(call.peer_uid, web_uid, call.chan_id, "bad_offer")
            self.event(call.call_id, c.MediaFailed("bad_offer"))
            return
        self.handle.send_message(call.peer_uid, web_uid, pm.serialise(answer), self.clock())
        self._kick_hub()

    def _media_error(self, me: str, web_uid: str, chan_id: str | None, reason: str) -> None:
        text = pm.serialise(pm.MediaError(chan_id=chan_id, reason=reason))
        self.handle.send_message(me, web_uid, text, self.clock())

    def _open_media(self, call: c.Call) -> None:
        links = self._links_of(call.call_id)
        if links.leg is None:
            links.leg = self._new_leg(call.call_id, links)

    def _new_leg(self, call_id: str, links: _CallLinks) -> MediaLeg:
        def on_state(state: str) -> None:
            if links.leg is not leg:
                return  # a leg an ICE restart replaced (or not yet in place)
            if state == "connected":
                self._browser_back(call_id, ICE)
                self.event(call_id, c.MediaConnected())
            elif state in LOST_STATES and not leg.closed and self._hold(call_id, ICE):
                return  # held: the browser may come back with an ICE restart
            elif state == "failed":
                self.event(call_id, c.MediaFailed("ice_failed"))

        leg = MediaLeg(
            self.leg_config,
            self.ports,
            call_id=call_id,
            on_state=on_state,
            counters=self.media_counters,
        )
        return leg

    async def _restart_media(self, call: c.Call, links: _CallLinks, web_uid: str, sdp: str) -> None:
        """A second offer for the call: the browser restarted ICE (its network changed).
        aiortc cannot restart ICE on a leg, so a new leg takes the offer and the unicast
        endpoint (same FreeSWITCH channel, same ports); the old leg is closed. The call is
        held (core/browser_hold.py) until the new leg is connected."""
        old = links.leg
        assert old is not None
        self._hold(call.call_id, ICE)  # the browser's old path is gone by its own account
        new = self._new_leg(call.call_id, links)
        try:
            sdp_answer = await new.handle_offer(sdp, sip_side_codec(links.headers))
            if links.leg is not old or self._links.get(call.call_id) is not links:
                raise RuntimeError("the call changed meanwhile")
            old.hand_over(new)
        except Exception as exc:
            # The old leg stays; the hold ends the call if no good offer comes in time.
            log.warning("media.ice_restart_failed", call_id=call.call_id, error=str(exc))
            await new.close()
            self._media_error(call.peer_uid, web_uid, call.chan_id, "bad_offer")
            return
        links.leg = new
        log.info("media.ice_restart", call_id=call.call_id, path=new.path, codec=new.codec)
        self._spawn(old.close())
        answer = pm.Answer(chan_id=call.chan_id, sdp=sdp_answer)
        self.handle.send_message(call.peer_uid, web_uid, pm.serialise(answer), self.clock())
        self._kick_hub()

    def _hold(self, call_id: str, reason: str) -> bool:
        """Hold a connected call whose browser path is lost for ``reason``; False when
        the call is not one that is held (not connected, its media never up, a
        conference member)."""
        call = self.book.get(call_id)
        if (
            call is None
            or call.state is not c.State.CONNECTED
            or not call.media_connected
            or call.direction is c.Direction.CONFERENCE
        ):
            return False
        if self.holds.lost(call_id, reason, self.clock()):
            log.info(
                "calls.browser_held",
                call_id=call_id,
                reason=reason,
                hold_time=self.holds.hold_time,
            )
            self._wake.set()
            self._hold_filler(call_id, self.settings.media.browser_hold_tone)
        return True

    def _hold_filler(self, call_id: str, hz: float) -> None:
        """The comfort tone (``hz`` > 0) the phone hears while the browser sends nothing;
        0: silence again."""
        links = self._links.get(call_id)
        endpoint = None if links is None or links.leg is None else links.leg.endpoint
        if endpoint is not None:
            endpoint.tx.filler = hold_tone(endpoint.fmt, hz) if hz > 0 else None

    def _browser_back(self, call_id: str, reason: str) -> None:
        held = self.holds.back(call_id, reason, self.clock())
        if held is not None:
            log.info("calls.browser_back", call_id=call_id, held_seconds=round(held, 3))
            self._hold_filler(call_id, 0.0)

    async def _start_unicast(self, call_id: str, uuid: str) -> None:
        links = self._links.get(call_id)
        leg = None if links is None else links.leg
        try:
            if links is None or leg is None:
                raise RuntimeError("no media leg")
            await self._read_rate_known(links)
            params: UnicastParams = await leg.start_unicast(
                ChannelFormat.from_channel(links.headers), channel_codec_name(links.headers)
            )
        except Exception as exc:
            log.warning("media.unicast_setup_failed", call_id=call_id, error=str(exc))
            self.event(call_id, c.GatewayError("unicast setup failed"))
            return
        if links.leg is not None and links.leg is not leg:
            leg.hand_over(links.leg)  # an ICE restart replaced the leg meanwhile
            leg = links.leg
        self.channels.operate(Unicast(call_id, uuid, params))
        if leg.endpoint is not None:
            # The start timeout (_check_media_timeouts) counts from here.
            leg.endpoint.unicast_requested(asyncio.get_running_loop().time())

    async def _read_rate_known(self, links: _CallLinks) -> None:
        """Early media: the 183 has no read rate yet (recorded, it comes with CHANNEL_PARK
        right after); wait for it, at most ``unicast_start_timeout``."""
        timeout = self.settings.media.unicast_start_timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not (
                    links.headers.get("variable_read_rate")
                    or links.headers.get("Channel-Read-Codec-Rate")
                ):
                    links.headers_changed.clear()
                    await links.headers_changed.wait()

    async def _close_leg(self, call_id: str, leg: MediaLeg) -> None:
        """Log the call's media figures, then close its leg (peer connection, ports)."""
        figures: dict[str, object] = {}
        try:
            stats = await leg.stats()
            unicast = stats.unicast
            log.info(
                "media.stats",
                call_id=call_id,
                codec=stats.codec,
                path=stats.path,
                connection=stats.connection_state,
                frames_to_browser=stats.track_frames,
                frames_from_browser=stats.browser_frames_in,
                receive=stats.receive,
                unicast=None if unicast is None else vars(unicast),
            )
            figures = _media_figures(stats)
            self.metrics.media(stats)
        except Exception as exc:  # figures are a nicety; closing is not
            log.warning("media.stats_failed", call_id=call_id, error=str(exc))
        finally:
            self._media_figures_in(call_id, figures)
        await leg.close()

    def _dtmf_to_web(self, call: c.Call, digit: str) -> None:
        try:
            msg = pm.Dtmf(chan_id=call.chan_id, digits=digit)
        except pm.PeerMessageError as exc:
            log.warning("calls.dtmf_dropped", call_id=call.call_id, error=str(exc))
            return
        self.handle.send_message(call.peer_uid, call.web_uid, pm.serialise(msg), self.clock())

    # -- events and actions ----------------------------------------------------------------

    def event(self, call_id: str, event: c.Event) -> None:
        call = self.book.get(call_id)
        was = None if call is None else call.state
        was_connected = call is not None and call.state is c.State.CONNECTED
        self._run(self.book.handle(call_id, event, self.clock()))
        if call is not None and not was_connected and call.state is c.State.CONNECTED:
            self._call_answered(call)
        if call is not None and call.state is not was and not call.is_over:
            self._state_changed(call)

    def _run(self, actions: list[c.Action]) -> None:
        for action in actions:
            try:
                self._apply(action)
            except Exception:
                log.exception(
                    "calls.action_failed", call_id=action.call_id, action=type(action).__name__
                )
        if actions:
            self._kick_hub()
            self._wake.set()

    def _apply(self, action: c.Action) -> None:
        now = self.clock()
        call = self.book.get(action.call_id)
        if isinstance(action, c.Originate):
            log.info(
                "calls.originate",
                call_id=action.call_id,
                uuid=action.uuid,
                destination=action.destination,
            )
            if call is not None and call.call_id not in self._ops_calls:
                self._call_started(call)  # (a click-to-call's started at its invitation)
            self.channels.originate(action)
        elif isinstance(
            action,
            c.SetChannelVar
            | c.SetChannelVars
            | c.PreAnswer
            | c.PlayRingback
            | c.StopRingback
            | c.Answer
            | c.JoinRoom,
        ):
            self.channels.operate(action)
        elif isinstance(action, c.Hangup):
            log.info("calls.hangup", call_id=action.call_id, uuid=action.uuid, cause=action.cause)
            self.channels.operate(action)
        elif isinstance(action, c.StartUnicast):
            self._spawn(self._start_unicast(action.call_id, action.uuid))
        elif isinstance(action, c.SendInvitation):
            self._send_invitation(action, now)
        elif isinstance(action, c.CancelInvitation):
            links = self._links.get(action.call_id)
            if links is not None and links.ref:
                self.handle.cancel(action.sender or self.gateway_uid, links.ref, now)
        elif isinstance(action, c.AcceptInvitation):
            links = self._links.get(action.call_id)
            if links is not None and links.inv:
                self.handle.accept(action.number, links.inv, now, action.response)
        elif isinstance(action, c.RefuseInvitation):
            links = self._links.get(action.call_id)
            if links is not None and links.inv:
                self.handle.refuse(action.number, links.inv, now, action.response)
        elif isinstance(action, c.SendPeerMessage):
            self.handle.send_message(action.sender, action.to, action.text, now)
        elif isinstance(action, c.OpenMedia):
            if call is not None:
                self._open_media(call)
        elif isinstance(action, c.CloseMedia):
            links = self._links.get(action.call_id)
            if links is not None and links.leg is not None:
                leg, links.leg = links.leg, None
                self._closing.add(action.call_id)
                self._spawn(self._close_leg(action.call_id, leg))
        elif isinstance(action, c.CallEnded):
            self._ended(action)
        elif isinstance(action, c.Ignored):
            log.debug(
                "calls.event_ignored",
                call_id=action.call_id,
                state=action.state,
                ignored=action.event,
            )

    def _send_invitation(self, action: c.SendInvitation, now: float) -> None:
        call = self.book.get(action.call_id)
        chan_id = call.chan_id if call is not None else ""
        sender = action.sender or self.gateway_uid
        reply = self.handle.invite(
            sender, action.callee, now, content=action.content, channel_id=chan_id
        )
        if reply.get("type") == "ok":
            ref = str(reply.get("ref"))
            self._links_of(action.call_id).ref = ref
            self._by_ref[ref] = action.call_id
            self._watch(action.callee)
        else:
            log.warning("calls.invite_failed", call_id=action.call_id, reply=reply)
            self.event(action.call_id, c.InvitationFailed("PEER_OFFLINE"))

    def _links_of(self, call_id: str) -> _CallLinks:
        """The links of a call the book holds (created on first use)."""
        links = self._links.get(call_id)
        if links is None:
            links = self._links[call_id] = _CallLinks()
        return links

    def _forget(self, call_id: str) -> _CallLinks | None:
        """Drop a call's links and its invitation ids from the indexes, together."""
        links = self._links.pop(call_id, None)
        if links is not None:
            if links.inv is not None:
                self._by_inv.pop(links.inv, None)
            if links.ref is not None:
                self._by_ref.pop(links.ref, None)
        return links

    def links_held(self) -> dict[str, int]:
        """How many entries the per-call link tables hold (0 each when no call is live)."""
        return {"links": len(self._links), "by_inv": len(self._by_inv), "by_ref": len(self._by_ref)}

    def _ended(self, action: c.CallEnded) -> None:
        claim = self._claims.pop(action.call_id, None)
        if claim is not None and self.cluster is not None:
            self.cluster.release(*claim)
        links = self._forget(action.call_id)
        self.holds.forget(action.call_id)
        self.conference.call_ended(action.call_id)
        if links is not None and links.leg is not None:
            self._closing.add(action.call_id)
            self._spawn(self._close_leg(action.call_id, links.leg))
        self._tell_watchers(action.call_id, None)
        self.ended_total[action.reason] = self.ended_total.get(action.reason, 0) + 1
        self.metrics.call_ended(action.cause)
        self._retire_idle()
        self._call_ended(action)
        # The first one-way audio problem of each direction (ok: none), when media flowed.
        judged = {} if links is None or links.watch is None else links.watch.first_problem
        for direction, verdict in judged.items():
            self.metrics.media_verdict(direction, verdict)
        log.info(
            "calls.ended",
            call_id=action.call_id,
            reason=action.reason,
            cause=action.cause,
            forced=action.forced,
            **{f"verdict_{direction}": verdict for direction, verdict in judged.items()},
        )
        self._unwatch_idle()

    def _watch(self, uid: str) -> None:
        if uid not in self._watched:
            self._watched.add(uid)
            self.handle.subscribe(self.gateway_uid, [uid], self.clock())

    def _unwatch_idle(self) -> None:
        idle = [uid for uid in self._watched if not self.book.calls_of(uid)]
        if idle:
            self._watched.difference_update(idle)
            self.handle.unsubscribe(self.gateway_uid, idle, self.clock())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        # Nobody awaits these tasks: a failure is logged here, or asyncio would only say
        # "Task exception was never retrieved" when the task is collected.
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error(
                "gateway.task_failed",
                task=task.get_coro().__qualname__,
                error=repr(exc),
                exc_info=exc,
            )

    # -- the HTTP API (gateway/api.py) ------------------------------------------------------

    def click_to_call(
        self,
        uid: str,
        number: str,
        *,
        number_first: bool = False,
        claim: tuple[str, str] | None = None,
    ) -> tuple[str, str]:
        """Ring web user ``uid``, then dial ``number`` (``number_first``: the reverse):
        ``(call id, "")`` or ``("", why)``. In a cluster ``claim`` is the number's
        (number, token) claimed by ``click_to_call_claimed``; released with the call."""
        if self.esl_state != "connected":
            return "", "switch_unavailable"
        if self.cluster is not None and claim is None and number in self.pool:
            return "", "cluster_unavailable"  # the number must be claimed first
        online = self.handle.hub.is_online(self.appid, uid)
        call_id, refusal, actions = self.book.click_to_call(
            uid, number, callee_online=online, now=self.clock(), number_first=number_first
        )
        call = self.book.get(call_id)
        if call is not None:
            log.info(
                "calls.click_to_call",
                call_id=call_id,
                uid=uid,
                number=number,
                order="number_first" if number_first else "web_first",
            )
            if claim is not None:
                self._claims[call_id] = claim
            self._call_started(call)
            self._watch(uid)  # gone before it is rung: the call ends
        self._run(actions)
        return call_id, refusal

    async def click_to_call_claimed(
        self, uid: str, number: str, *, number_first: bool = False
    ) -> tuple[str, str]:
        """``click_to_call``, in a cluster with ``number`` claimed cluster-wide first, as
        for a web user's invitation (``_claim_then_take``)."""
        cluster = self.cluster
        if cluster is None or self.esl_state != "connected" or number not in self.pool:
            return self.click_to_call(uid, number, number_first=number_first)
        token = f"{cluster.member}:{ids.new_id('api')}"
        claimed = await cluster.claim(number, token)
        if claimed is not True:
            return "", "cluster_unavailable" if claimed is None else "number_busy"
        call_id, refusal = self.click_to_call(
            uid, number, number_first=number_first, claim=(number, token)
        )
        if not call_id:
            cluster.release(number, token)
        return call_id, refusal

    def hang_up(self, call_id: str) -> bool:
        """End a live call from the API; False when there is no such call."""
        if self.book.get(call_id) is None:
            return False
        self.event(call_id, c.ApiHangup())
        return True

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "esl": self.esl_state,
            "calls": len(self.book),
            "numbers_busy": len(self.pool.busy()),
            "unicast_ports_in_use": self.ports.in_use,
            "unicast_foreign_packets": self.media_counters.foreign_packets,
            "ended": dict(self.ended_total),
            "conference_rooms": len(self.conference.table),
            **({} if self.cluster is None else {"cluster": self.cluster.status()}),
            "ops_events": self._ops_stats(),
        }

    async def live_calls(self) -> list[dict[str, Any]]:
        """Each live call as ``esl-bridge status`` shows it."""
        now = self.clock()
        calls: list[dict[str, Any]] = []
        for call in list(self.book):
            row: dict[str, Any] = {
                "call_id": call.call_id,
                "direction": c.direction_word(call.direction),
                "uid": call.web_uid,
                "number": call.number,
                "state": call.state.value,
                "duration": round(max(0.0, now - call.started_at), 1),
                "codec": None,
                "lost": None,
            }
            links = self._links.get(call.call_id)
            if links is not None and links.leg is not None:
                try:
                    stats = await links.leg.stats()
                except Exception as exc:  # a leg closing meanwhile
                    log.debug("status.leg_stats_failed", call_id=call.call_id, error=str(exc))
                else:
                    row["codec"] = stats.codec
                    row["lost"] = (stats.receive or {}).get("lost")
            calls.append(row)
        return calls

    def reload(self, numbers: tuple[str, ...], limits: Any) -> dict[str, Any]:
        """SIGHUP: take new acc_rule numbers and call limits; live calls keep theirs.

        A removed number that is on a call stays served (its session) until that call
        ends; new calls to it are refused at once.
        """
        from dataclasses import replace

        from esl_bridge.core.callbook import CallRate

        now = self.clock()
        old = set(self.pool)
        self.pool.replace(numbers)
        added = [n for n in numbers if n not in old]
        removed = sorted(old - set(numbers))
        if added:
            self.handle.register(added, now, present=self.esl_state == "connected")
        self._retired.update(removed)
        self._retire_idle()
        book = self.book.settings
        self.book.settings = replace(
            book,
            max_calls=limits.max_calls,
            max_call_rate=limits.max_call_rate,
            call_burst=limits.call_burst,
            originate_timeout=limits.originate_timeout,
        )
        if (book.max_call_rate, book.call_burst) != (limits.max_call_rate, limits.call_burst):
            self.book.rate = CallRate(limits.max_call_rate, limits.call_burst)
        self._kick_hub()
        return {"numbers_added": len(added), "numbers_removed": len(removed)}

    def _retire_idle(self) -> None:
        busy = self.pool.busy()
        for number in [n for n in self._retired if n not in busy]:
            self._retired.discard(number)
            if number not in self.pool:
                self.handle.unregister(number, self.clock())

    # -- CUSTOM events (gateway/ops_events.py) -------------------------------------------------

    def _call_started(self, call: c.Call) -> None:
        fields: dict[str, object] = {
            "call_id": call.call_id,
            "direction": c.direction_word(call.direction),
            "uid": call.web_uid,
            "number": call.number,
            "uuid": call.uuid,
            "appid": self.appid,
        }
        if isinstance(call, c.ClickToCall):
            fields["order"] = call.order
        self._ops_calls[call.call_id] = {
            "fields": fields,
            "started": self.clock(),
            "answered": None,
        }
        self._emit("call_started", fields)
        self._tell_watchers(call.call_id, call)

    def _state_changed(self, call: c.Call) -> None:
        """A live call's state changed: the watchers, and for a click-to-call the
        ``call_progress`` event (its stage, for the app's backend)."""
        self._tell_watchers(call.call_id, call)
        info = self._ops_calls.get(call.call_id)
        if (
            info is not None
            and isinstance(call, c.ClickToCall)
            and call.state is not c.State.ENDING
        ):
            self._emit("call_progress", {**info["fields"], "state": call.state.value})

    def _tell_watchers(self, call_id: str, call: c.Call | None) -> None:
        for watcher in self.call_watchers:
            try:
                watcher(call_id, call)
            except Exception:  # a watcher's bug must not break the call
                log.exception("calls.watcher_failed", call_id=call_id)

    def _call_answered(self, call: c.Call) -> None:
        info = self._ops_calls.get(call.call_id)
        if info is None:
            return
        info["answered"] = self.clock()
        setup = self._since(call)
        self.metrics.call_answered(str(info["fields"]["direction"]), setup)
        self._emit("call_answered", {**info["fields"], "setup_seconds": setup})

    def _since(self, call: c.Call) -> float:
        return round(max(0.0, self.clock() - call.started_at), 3)

    def _call_ended(self, action: c.CallEnded) -> None:
        info = self._ops_calls.pop(action.call_id, None)
        if info is None:
            return
        now = self.clock()
        answered = info["answered"]
        fields = {
            **info["fields"],
            "reason": action.reason,
            "cause": action.cause,
            "forced": action.forced,
            "duration": round(now - info["started"], 3),
            "talk_seconds": 0.0 if answered is None else round(now - answered, 3),
        }
        figures = self._ops_figures.pop(action.call_id, None)
        if figures is None and action.call_id in self._closing:
            self._ops_ended[action.call_id] = fields  # sent once its figures are in
            return
        self._emit("call_ended", {**fields, **(figures or {})})

    def _media_figures_in(self, call_id: str, figures: dict[str, object]) -> None:
        self._closing.discard(call_id)
        ended = self._ops_ended.pop(call_id, None)
        if ended is not None:
            self._emit("call_ended", {**ended, **figures})
        elif call_id in self._ops_calls:
            self._ops_figures[call_id] = figures

    def _presence_changed(self, appid: str, uid: str, online: bool, here: bool) -> None:
        """A web user logged in or went away (not the uids the gateway serves itself).
        In a cluster only the process that holds (or reports for) the session tells."""
        if not here or uid == self.gateway_uid or uid in self.pool:
            return
        self._emit("user_online" if online else "user_offline", {"uid": uid, "appid": appid})


# The media_problem event's ``silent`` field names a direction by where its audio comes from.
_SILENT_NAMES = {"browser_to_switch": "from_browser", "switch_to_browser": "from_switch"}

# A leg's connection states that mean its browser path is lost. aiortc 1.16 has no
# "disconnected", and when aioice's consent checks expire its DTLS transport closes and
# the peer connection shuts itself down: "closed" without "failed" (a leg the gateway
# closes itself is marked closed first).
LOST_STATES = ("disconnected", "failed", "closed")


def _media_figures(stats: Any) -> dict[str, object]:
    """What call_ended says of a call's media (from its leg's LegStats)."""
    figures: dict[str, object] = {
        "codec": stats.codec,
        "media_path": stats.path,
        "packets_from_browser": stats.browser_frames_in,
        "frames_to_browser": stats.track_frames,
    }
    unicast = stats.unicast
    if unicast is not None:
        figures["packets_from_switch"] = unicast.rx_packets - unicast.rx_cng_frames
        figures["packets_to_switch"] = unicast.tx_packets
        figures["underruns"] = unicast.rx_underruns + unicast.tx_underruns
    receive = stats.receive or {}
    for key in ("lost", "late", "concealed"):
        if key in receive:
            figures[f"browser_{key}"] = receive[key]
    return figures


def _with_chan_id(content: str, channel_id: str) -> str:
    """The invitation's channelId fills in a content JSON that has no ChanId."""
    try:
        body = peer_json.loads(content)
    except ValueError:
        return content
    if isinstance(body, dict) and not body.get("ChanId"):
        body["ChanId"] = channel_id
        return json.dumps(body)
    return content
