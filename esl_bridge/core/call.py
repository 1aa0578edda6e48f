"""One bridged call, web <-> SIP, as a state machine without I/O (docs/architecture.rst).

A call takes events (from FreeSWITCH, from the signalling hub, from the media leg) with
the current time ``now`` and returns actions for the adapters to carry out. Its
transitions live in one table per direction (``rtc_to_sip_table()``, ``sip_to_rtc_table()``, ...):
state x event type -> handler. An event that the table does not list for the current
state changes nothing (it is reported as ``Ignored`` so adapters can log it); a call never
raises on an unexpected event, because FreeSWITCH and browsers send events late, twice
and out of order.

Both directions end the same way (``_finish``): the media leg is closed, the channel is
hung up unless FreeSWITCH already did, the web side is told, the number is released, and
the call waits in ENDING for FreeSWITCH's confirmation; if none comes within
``hangup_grace`` it kills the channel once more and ends anyway, so nothing is left
waiting.

SRProxy's defects fixed here: an RTC -> SIP invitation is accepted only when the SIP side
answers; a SIP caller hears ringback (pre_answer + tone), not an answered call, while the
browser rings; the SIP caller hanging up while the browser rings cancels the invitation.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from esl_bridge.core import peer_messages as pm
from esl_bridge.core.browser_hold import BROWSER_LOST, BROWSER_LOST_CAUSE
from esl_bridge.core.unicast_gate import GateAction, GateInput, SendUnicast, UnicastGate

# ---------------------------------------------------------------------------------------
# Events: what happened. Adapters build them from ESL events, hub callbacks, media leg.


@dataclass(frozen=True)
class Event:
    """Base of every call event."""


@dataclass(frozen=True)
class OriginateFailed(Event):
    """``bgapi originate`` answered ``-ERR <cause>`` (e.g. USER_NOT_REGISTERED)."""

    cause: str


@dataclass(frozen=True)
class ChannelRinging(Event):
    """CHANNEL_PROGRESS: the SIP callee rings (180 without SDP)."""


@dataclass(frozen=True)
class ChannelEarlyMedia(Event):
    """CHANNEL_PROGRESS_MEDIA: 183 with SDP; the channel has a read codec."""


@dataclass(frozen=True)
class ChannelAnswered(Event):
    """CHANNEL_ANSWER."""


@dataclass(frozen=True)
class ChannelMediaReady(Event):
    """The channel can take ``unicast`` (the adapter's unicast gate says so)."""


@dataclass(frozen=True)
class ChannelHungUp(Event):
    """CHANNEL_HANGUP / CHANNEL_HANGUP_COMPLETE from FreeSWITCH."""

    cause: str


@dataclass(frozen=True)
class ChannelLost(ChannelHungUp):
    """The channel is gone for the gateway without its hangup events: its socket session
    closed, the inbound connection that tracked it dropped, or a kill found no such
    channel. The call ends as on a hangup; ``cause`` says which."""


@dataclass(frozen=True)
class InvitationAccepted(Event):
    """The web callee accepted (SIP -> RTC)."""

    response: str = ""


@dataclass(frozen=True)
class InvitationRefused(Event):
    """The web callee refused (SIP -> RTC)."""

    response: str = ""


@dataclass(frozen=True)
class InvitationCanceled(Event):
    """The web caller canceled before the SIP side answered (RTC -> SIP)."""


@dataclass(frozen=True)
class InvitationFailed(Event):
    """The invitation failed: PEER_OFFLINE, PEER_NO_RESPONSE, INVITATION_EXPIRE..."""

    reason: str


@dataclass(frozen=True)
class PeerEndCall(Event):
    """``{"Cmd":"EndCall"}`` from the web user of this call."""


@dataclass(frozen=True)
class WebUserGone(Event):
    """The web user went offline past the grace period (tab closed, network lost)."""


@dataclass(frozen=True)
class MediaConnected(Event):
    """The browser's peer connection is up and its unicast endpoint is bound."""


@dataclass(frozen=True)
class MediaFailed(Event):
    """The media leg could not be set up, or it timed out (no audio for too long)."""

    reason: str


@dataclass(frozen=True)
class Shutdown(Event):
    """The gateway is stopping: end the call cleanly."""


@dataclass(frozen=True)
class ApiHangup(Event):
    """The app's backend ended the call (``DELETE /api/v1/calls/{id}``, gateway/api.py)."""


@dataclass(frozen=True)
class RoomRemoved(Event):
    """A conference member's room removed it: ``reason`` kicked or room_ended."""

    reason: str


@dataclass(frozen=True)
class GatewayError(Event):
    """Something the call needs failed on the gateway's side (an ESL command, the media
    endpoint): end the call rather than leave it half set up."""

    reason: str


# ---------------------------------------------------------------------------------------
# Actions: what the adapters must do. Each names the call it belongs to.


@dataclass(frozen=True)
class Action:
    call_id: str


@dataclass(frozen=True)
class Originate(Action):
    """``bgapi originate {variables}<destination> &park()`` with a uuid chosen here."""

    uuid: str
    destination: str
    variables: Mapping[str, str]
    app: str = "&park()"  # what the channel runs once answered (a conference invitee's room)


@dataclass(frozen=True)
class SetChannelVar(Action):
    uuid: str
    name: str
    value: str


@dataclass(frozen=True)
class SetChannelVars(Action):
    """Several channel variables at once (``uuid_setvar_multi``): the gateway's own
    ``esl_bridge_*`` variables (``call_variables``), values already made safe."""

    uuid: str
    variables: Mapping[str, str]


@dataclass(frozen=True)
class PreAnswer(Action):
    uuid: str


@dataclass(frozen=True)
class PlayRingback(Action):
    uuid: str


@dataclass(frozen=True)
class StopRingback(Action):
    uuid: str


@dataclass(frozen=True)
class Answer(Action):
    uuid: str


@dataclass(frozen=True)
class StartUnicast(Action):
    """Start unicast on the channel toward the call's media endpoint.

    Emitted only after ChannelMediaReady: unicast on a channel without a read codec
    crashes FreeSWITCH 1.10.12 (docs/freeswitch.rst, fact 1).
    """

    uuid: str


@dataclass(frozen=True)
class JoinRoom(Action):
    """Run ``conference <target>`` on a channel the gateway's socket session holds (a
    phone that dialled a room's dial-in number)."""

    uuid: str
    target: str


@dataclass(frozen=True)
class Hangup(Action):
    """Hang the channel up with a FreeSWITCH cause (uuid_kill or sendmsg hangup)."""

    uuid: str
    cause: str


@dataclass(frozen=True)
class SendInvitation(Action):
    """Invite a web user, from the gateway's own identity (SIP -> RTC), or from
    ``sender`` when given (click-to-call: the number that will be dialled)."""

    callee: str
    content: str
    sender: str = ""


@dataclass(frozen=True)
class CancelInvitation(Action):
    callee: str
    sender: str = ""  # as SendInvitation's


@dataclass(frozen=True)
class AcceptInvitation(Action):
    """Accept the web caller's invitation to ``number`` (RTC -> SIP)."""

    caller: str
    number: str
    response: str


@dataclass(frozen=True)
class RefuseInvitation(Action):
    caller: str
    number: str
    response: str


@dataclass(frozen=True)
class SendPeerMessage(Action):
    """A peer message from ``sender`` (a gateway-served uid) to the web user."""

    sender: str
    to: str
    text: str


@dataclass(frozen=True)
class OpenMedia(Action):
    """Prepare the media leg for ChanId: the browser's offer for it will be answered."""

    chan_id: str


@dataclass(frozen=True)
class CloseMedia(Action):
    chan_id: str


@dataclass(frozen=True)
class ReleaseNumber(Action):
    number: str


@dataclass(frozen=True)
class CallEnded(Action):
    """The call is over on every side; the owner forgets it."""

    reason: str
    cause: str
    forced: bool = False


@dataclass(frozen=True)
class Ignored(Action):
    """The event does not apply in this state; nothing was done."""

    state: str
    event: str


# ---------------------------------------------------------------------------------------
# Causes and reasons.

# FreeSWITCH hangup cause -> the reason a web caller is shown (RTC -> SIP failures).
SIP_FAILURE_REASONS: Mapping[str, str] = {
    "USER_BUSY": "busy",
    "NO_ANSWER": "no_answer",
    "NO_USER_RESPONSE": "no_answer",
    "ALLOTTED_TIMEOUT": "no_answer",
    "PROGRESS_TIMEOUT": "no_answer",
    "CALL_REJECTED": "rejected",
    "USER_NOT_REGISTERED": "not_registered",
    "SUBSCRIBER_ABSENT": "not_registered",
    "UNALLOCATED_NUMBER": "unknown_number",
    "NO_ROUTE_DESTINATION": "unknown_number",
    "INVALID_NUMBER_FORMAT": "unknown_number",
    "ORIGINATOR_CANCEL": "canceled",
}
UNREACHABLE = "unreachable"  # every other cause: network, timeout, switch errors

# Invitation failure reason (README.rst, Invitation states and reasons) -> hangup cause
# toward the SIP caller.
INVITATION_FAILURE_CAUSES: Mapping[str, str] = {
    "PEER_OFFLINE": "USER_NOT_REGISTERED",
    "PEER_NO_RESPONSE": "NO_USER_RESPONSE",
    "INVITATION_EXPIRE": "NO_ANSWER",
    "NOT_LOGGEDIN": "USER_NOT_REGISTERED",
    "ACCEPT_FAILURE": "NORMAL_TEMPORARY_FAILURE",
}


def sip_failure_reason(cause: str) -> str:
    return SIP_FAILURE_REASONS.get(cause, UNREACHABLE)


def refusal(reason: str, cause: str | None = None) -> str:
    """The JSON refusal a web caller receives (never a bare word, unlike SRProxy)."""
    return pm.serialise(pm.Refused(reason=reason, cause=cause or None))


BUSY_REFUSAL = pm.serialise(pm.Calling())
END_CALL = pm.serialise(pm.EndCall())


def sip_state_message(state: str, cause: str | None = None) -> str:
    """A peer message telling the web caller what the SIP side does (ringing...)."""
    return pm.serialise(pm.SipState(state=state, cause=cause or None))


# ---------------------------------------------------------------------------------------
# The call.


class State(StrEnum):
    INVITING = "inviting"  # click-to-call: the web user's browser rings (the number is
    # not dialled yet; in the reverse order it has answered and hears ringback)
    ORIGINATING = "originating"  # RTC -> SIP: originate sent, nothing heard yet
    RINGING = "ringing"  # RTC -> SIP: the phone rings; SIP -> RTC: the browser rings
    EARLY_MEDIA = "early_media"  # RTC -> SIP: 183 with SDP
    ANSWERING = "answering"  # SIP -> RTC: accepted, channel answer requested
    CONNECTED = "connected"  # both sides answered
    ENDING = "ending"  # hangup sent, waiting for FreeSWITCH's confirmation
    ENDED = "ended"


class Direction(StrEnum):
    RTC_TO_SIP = "rtc_to_sip"
    SIP_TO_RTC = "sip_to_rtc"
    CONFERENCE = "conference"  # a web user's leg in a conference room (ConfWebCall)


@dataclass(frozen=True)
class CallSettings:
    """What a call needs from the configuration."""

    gateway_uid: str  # [proxy] rtm_account: sender of SIP -> RTC invitations
    hangup_grace: float = 5.0  # seconds to wait for FreeSWITCH to confirm a hangup
    appid: str = ""  # [global] appid, shown on the channel as esl_bridge_appid


# ---------------------------------------------------------------------------------------
# The channel variables every channel of the gateway carries (README.rst, Operating
# esl-bridge): what an admin sees in uuid_dump and CDRs to tell a gateway call apart.

CALL_ID_VAR = "esl_bridge_call_id"
DIRECTION_VAR = "esl_bridge_direction"
UID_VAR = "esl_bridge_uid"
APPID_VAR = "esl_bridge_appid"
NUMBER_VAR = "esl_bridge_number"
CHANNEL_VAR_MAX = 64  # characters kept of a value
# Kept as they are; any other character becomes "_": the values travel in an originate's
# {...} block and in uuid_setvar_multi's "a=1;b=2", and a caller number is the SIP side's.
_VAR_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.@+#*:\-]")


_DIRECTION_WORDS = {
    Direction.RTC_TO_SIP: "rtc2sip",
    Direction.SIP_TO_RTC: "sip2rtc",
    Direction.CONFERENCE: "conference",
}


def direction_word(direction: Direction) -> str:
    """How a direction is shown: channel variable, status, CUSTOM events."""
    return _DIRECTION_WORDS[direction]


def channel_var_value(value: str) -> str:
    """A value as the channel gets it: safe characters only, at most CHANNEL_VAR_MAX."""
    return _VAR_VALUE_UNSAFE.sub("_", value)[:CHANNEL_VAR_MAX]


def call_variables(
    call_id: str, direction: Direction, web_uid: str, appid: str, number: str
) -> dict[str, str]:
    """The ``esl_bridge_*`` variables of one call's channel (empty values left out)."""
    values = {
        CALL_ID_VAR: call_id,
        DIRECTION_VAR: _DIRECTION_WORDS[direction],
        UID_VAR: web_uid,
        APPID_VAR: appid,
        NUMBER_VAR: number,
    }
    safe = {name: channel_var_value(value) for name, value in values.items()}
    return {name: value for name, value in safe.items() if value}


Handler = Callable[["Call", Any, float], list[Action]]


@dataclass
class Call:
    """State shared by both directions. Use ``RtcToSipCall`` / ``SipToRtcCall``."""

    call_id: str
    uuid: str  # the FreeSWITCH channel
    chan_id: str  # the web side's channel id (media leg key)
    web_uid: str  # the web user on this call
    number: str  # the SIP side: acc_rule number (RTC -> SIP) or caller number
    settings: CallSettings
    started_at: float
    state: State = State.RINGING
    direction: Direction = Direction.RTC_TO_SIP
    channel_alive: bool = True
    media_connected: bool = False
    # When unicast may start: the channel has media (ChannelMediaReady) and our end is
    # connected (MediaConnected, the request); it fires once (core/unicast_gate.py).
    unicast: UnicastGate = field(default_factory=UnicastGate, repr=False)
    answered_at: float | None = None
    ended_reason: str = ""
    ended_cause: str = ""
    _ending_deadline: float | None = field(default=None, repr=False)
    _kill_retried: bool = field(default=False, repr=False)

    TABLE: Mapping[tuple[State, type[Event]], Handler] = field(default_factory=dict, repr=False)

    # -- driving --------------------------------------------------------------------

    def handle(self, event: Event, now: float) -> list[Action]:
        """Apply one event; returns the actions to carry out, in order."""
        # A lost channel takes the hangup's transitions (one table row, not two).
        kind = ChannelHungUp if isinstance(event, ChannelHungUp) else type(event)
        handler = self.TABLE.get((self.state, kind))
        if handler is None:
            handler = _COMMON.get((self.state, kind))
        if handler is None:
            return [Ignored(self.call_id, self.state.value, type(event).__name__)]
        return handler(self, event, now)

    def next_deadline(self) -> float | None:
        return self._ending_deadline if self.state is State.ENDING else None

    def poll(self, now: float) -> list[Action]:
        """Fire the hangup-confirmation timer if due."""
        if self.state is not State.ENDING or self._ending_deadline is None:
            return []
        if now < self._ending_deadline:
            return []
        if not self._kill_retried:
            # FreeSWITCH did not confirm: kill once more, then give it one more grace.
            self._kill_retried = True
            self._ending_deadline = now + self.settings.hangup_grace
            return [Hangup(self.call_id, self.uuid, self.ended_cause or "NORMAL_CLEARING")]
        self.channel_alive = False
        return self._ended(forced=True)

    @property
    def is_over(self) -> bool:
        return self.state is State.ENDED

    @property
    def peer_uid(self) -> str:
        """The gateway-served uid the web user talks to in this call: the number it
        invited (RTC -> SIP), or ``gateway_uid``, which invited it (SIP -> RTC)."""
        if self.direction is Direction.RTC_TO_SIP:
            return self.number
        return self.settings.gateway_uid

    def tell_web(self, text: str) -> SendPeerMessage:
        """A peer message to the web user, from ``peer_uid``."""
        return SendPeerMessage(self.call_id, sender=self.peer_uid, to=self.web_uid, text=text)

    # -- shared pieces ----------------------------------------------------------------

    def _start_unicast(self, gate_actions: list[GateAction]) -> list[Action]:
        return [StartUnicast(self.call_id, self.uuid) for a in gate_actions if a == SendUnicast()]

    def _on_media_ready(self, event: ChannelMediaReady, now: float) -> list[Action]:
        return self._start_unicast(self.unicast.on_input(GateInput.MEDIA_READY))

    def _on_media_connected(self, event: MediaConnected, now: float) -> list[Action]:
        # A second MediaConnected (an ICE restart) asks again; the gate refuses a repeat.
        if self.media_connected:
            return []
        self.media_connected = True
        return self._start_unicast([self.unicast.request_unicast()])

    def _finish(
        self,
        now: float,
        reason: str,
        cause: str,
        web_side: list[Action],
        hang_up: bool = True,
    ) -> list[Action]:
        """End the call on every side; ``web_side`` says how the web user is told."""
        actions: list[Action] = [CloseMedia(self.call_id, self.chan_id), *web_side]
        self.ended_reason = reason
        self.ended_cause = cause
        if self.direction is Direction.RTC_TO_SIP:
            actions.append(ReleaseNumber(self.call_id, self.number))
        if hang_up and self.channel_alive:
            actions.append(Hangup(self.call_id, self.uuid, cause))
            self.state = State.ENDING
            self._ending_deadline = now + self.settings.hangup_grace
            return actions
        return actions + self._ended()

    def _ended(self, forced: bool = False) -> list[Action]:
        self.state = State.ENDED
        self._ending_deadline = None
        return [CallEnded(self.call_id, self.ended_reason, self.ended_cause, forced)]

    def _on_gateway_error(self, event: GatewayError, now: float) -> list[Action]:
        return self._finish(now, event.reason, "NORMAL_TEMPORARY_FAILURE", self._tell_web_end())

    def _tell_web_end(self) -> list[Action]:
        """How the web user learns the call is over, in the current state (per direction)."""
        return []

    def _on_hangup_while_ending(self, event: ChannelHungUp, now: float) -> list[Action]:
        self.channel_alive = False
        return self._ended()

    # Shared by the directions: the SIP side ringing toward a web user who called, and
    # how a connected call ends (told to the web side alike, whoever started the call).

    def on_ringing(self, event: ChannelRinging, now: float) -> list[Action]:
        self.state = State.RINGING
        return [self.tell_web(sip_state_message("ringing"))]

    def on_hangup_connected(self, event: ChannelHungUp, now: float) -> list[Action]:
        self.channel_alive = False
        return self._finish(now, "sip_hangup", event.cause, [self.tell_web(END_CALL)])

    def on_end_call(self, event: PeerEndCall, now: float) -> list[Action]:
        return self._finish(now, "web_hangup", "NORMAL_CLEARING", [])

    def on_web_user_gone(self, event: WebUserGone, now: float) -> list[Action]:
        return self._finish(now, "web_gone", "NORMAL_CLEARING", [])

    def on_media_failed(self, event: MediaFailed, now: float) -> list[Action]:
        # browser_lost: held past [media] browser_hold (core/browser_hold.py).
        cause = BROWSER_LOST_CAUSE if event.reason == BROWSER_LOST else "MEDIA_TIMEOUT"
        return self._finish(now, event.reason, cause, [self.tell_web(END_CALL)])

    def on_shutdown_connected(self, event: Shutdown, now: float) -> list[Action]:
        return self._finish(now, "shutdown", "SYSTEM_SHUTDOWN", [self.tell_web(END_CALL)])


# ---------------------------------------------------------------------------------------
# RTC -> SIP: a web user invited an acc_rule number; the gateway originated the SIP leg.


class RtcToSipCall(Call):
    """Created when the admission checks passed and the number was acquired."""

    @classmethod
    def start(
        cls,
        *,
        call_id: str,
        uuid: str,
        chan_id: str,
        caller: str,
        number: str,
        destination: str,
        variables: Mapping[str, str],
        settings: CallSettings,
        now: float,
    ) -> tuple[RtcToSipCall, list[Action]]:
        call = cls(
            call_id=call_id,
            uuid=uuid,
            chan_id=chan_id,
            web_uid=caller,
            number=number,
            settings=settings,
            started_at=now,
            state=State.ORIGINATING,
            direction=Direction.RTC_TO_SIP,
            TABLE=rtc_to_sip_table(),
        )
        return call, [Originate(call_id, uuid, destination, dict(variables))]

    def _refuse(self, reason: str, cause: str) -> RefuseInvitation:
        return RefuseInvitation(self.call_id, self.web_uid, self.number, refusal(reason, cause))

    def on_early_media(self, event: ChannelEarlyMedia, now: float) -> list[Action]:
        # A 183 with SDP: the phone plays ringback or an announcement. The media leg opens
        # now so that the browser hears it; its offer follows the SipState, and unicast
        # waits for the gate as always. The answer later keeps this leg (no renegotiation).
        self.state = State.EARLY_MEDIA
        return [
            OpenMedia(self.call_id, self.chan_id),
            self.tell_web(sip_state_message("early_media")),
        ]

    def on_answered(self, event: ChannelAnswered, now: float) -> list[Action]:
        # Accepted only now that the SIP side answered (SRProxy accepted at once).
        self.state = State.CONNECTED
        self.answered_at = now
        response = json.dumps(
            {
                "Mode": 1,
                "Conference": False,
                "ChanId": self.chan_id,
                "SipNumber": self.number,
                "SipData": "",
            },
            separators=(",", ":"),
        )
        return [
            OpenMedia(self.call_id, self.chan_id),
            AcceptInvitation(self.call_id, self.web_uid, self.number, response),
        ]

    def on_originate_failed(self, event: OriginateFailed, now: float) -> list[Action]:
        self.channel_alive = False
        reason = sip_failure_reason(event.cause)
        return self._finish(now, reason, event.cause, [self._refuse(reason, event.cause)])

    def on_hangup_before_answer(self, event: ChannelHungUp, now: float) -> list[Action]:
        self.channel_alive = False
        reason = sip_failure_reason(event.cause)
        return self._finish(now, reason, event.cause, [self._refuse(reason, event.cause)])

    def on_canceled(self, event: InvitationCanceled, now: float) -> list[Action]:
        # The web caller gave up: the SIP side gets a CANCEL through uuid_kill.
        return self._finish(now, "canceled", "ORIGINATOR_CANCEL", [])

    def on_caller_gone_before_answer(self, event: Event, now: float) -> list[Action]:
        return self._finish(now, "caller_gone", "ORIGINATOR_CANCEL", [])

    def on_media_failed_early(self, event: MediaFailed, now: float) -> list[Action]:
        # The invitation is still open: the web caller gets a refusal, not an EndCall.
        return self._finish(now, event.reason, "MEDIA_TIMEOUT", [self._refuse(UNREACHABLE, "")])

    def on_shutdown_before_answer(self, event: Shutdown, now: float) -> list[Action]:
        return self._finish(now, "shutdown", "SYSTEM_SHUTDOWN", [self._refuse(UNREACHABLE, "")])

    def _tell_web_end(self) -> list[Action]:
        if self.state is State.CONNECTED:
            return [self.tell_web(END_CALL)]
        return [self._refuse(UNREACHABLE, "")]


_BEFORE_ANSWER = (State.ORIGINATING, State.RINGING, State.EARLY_MEDIA)


def _dialling_rows(c: type[RtcToSipCall]) -> dict[tuple[State, type[Event]], Handler]:
    """The rows of a call that dials a number for a web caller, until the number answers
    (a two-party call's and a conference invitee's)."""
    table: dict[tuple[State, type[Event]], Handler] = {}
    for state in _BEFORE_ANSWER:
        table[(state, ChannelAnswered)] = c.on_answered
        table[(state, OriginateFailed)] = c.on_originate_failed
        table[(state, ChannelHungUp)] = c.on_hangup_before_answer
        table[(state, InvitationCanceled)] = c.on_canceled
        table[(state, PeerEndCall)] = c.on_canceled
        table[(state, WebUserGone)] = c.on_caller_gone_before_answer
        table[(state, Shutdown)] = c.on_shutdown_before_answer
        table[(state, GatewayError)] = Call._on_gateway_error
    table[(State.ORIGINATING, ChannelRinging)] = c.on_ringing
    table[(State.ORIGINATING, ChannelEarlyMedia)] = c.on_early_media
    table[(State.RINGING, ChannelEarlyMedia)] = c.on_early_media
    return table


def _rtc_to_sip_table() -> dict[tuple[State, type[Event]], Handler]:
    c = RtcToSipCall
    table = _dialling_rows(c)
    for state in _BEFORE_ANSWER:
        table[(state, ChannelMediaReady)] = Call._on_media_ready
    table[(State.CONNECTED, GatewayError)] = Call._on_gateway_error
    # Early media: the browser's leg may connect (and fail) before the answer.
    table[(State.EARLY_MEDIA, MediaConnected)] = Call._on_media_connected
    table[(State.EARLY_MEDIA, MediaFailed)] = c.on_media_failed_early
    table[(State.CONNECTED, ChannelHungUp)] = c.on_hangup_connected
    table[(State.CONNECTED, PeerEndCall)] = c.on_end_call
    table[(State.CONNECTED, WebUserGone)] = c.on_web_user_gone
    table[(State.CONNECTED, MediaFailed)] = c.on_media_failed
    table[(State.CONNECTED, Shutdown)] = c.on_shutdown_connected
    table[(State.CONNECTED, ChannelMediaReady)] = Call._on_media_ready
    table[(State.CONNECTED, MediaConnected)] = Call._on_media_connected
    return table


# ---------------------------------------------------------------------------------------
# SIP -> RTC: a phone dialled 0<uid>; the dialplan's socket app brought the channel here.


class SipToRtcCall(Call):
    """Created when the outbound socket session arrived and the callee is online."""

    @classmethod
    def start(
        cls,
        *,
        call_id: str,
        uuid: str,
        chan_id: str,
        callee: str,
        caller_number: str,
        cus_data: str,
        settings: CallSettings,
        now: float,
    ) -> tuple[SipToRtcCall, list[Action]]:
        call = cls(
            call_id=call_id,
            uuid=uuid,
            chan_id=chan_id,
            web_uid=callee,
            number=caller_number,
            settings=settings,
            started_at=now,
            state=State.RINGING,
            direction=Direction.SIP_TO_RTC,
            TABLE=sip_to_rtc_table(),
        )
        content = json.dumps(
            {
                "Mode": 1,
                "Conference": False,
                "ChanId": chan_id,
                "DisplayName": caller_number,
                "SipData": cus_data,
            },
            separators=(",", ":"),
        )
        variables = call_variables(
            call_id, Direction.SIP_TO_RTC, callee, settings.appid, caller_number
        )
        return call, [
            # First, so that an admin sees whose call it is from the start.
            SetChannelVars(call_id, uuid, variables),
            # Before answer: DTMF otherwise adds a lasting delay (docs/freeswitch.rst, fact 4).
            SetChannelVar(call_id, uuid, "rtp_autoflush", "true"),
            # Ringback while the browser rings, not an answered call (SRProxy's defect).
            PreAnswer(call_id, uuid),
            PlayRingback(call_id, uuid),
            SendInvitation(call_id, callee, content),
        ]

    def on_accepted(self, event: InvitationAccepted, now: float) -> list[Action]:
        self.state = State.ANSWERING
        return [
            StopRingback(self.call_id, self.uuid),
            OpenMedia(self.call_id, self.chan_id),
            Answer(self.call_id, self.uuid),
        ]

    def on_answered(self, event: ChannelAnswered, now: float) -> list[Action]:
        # Unicast is the gate's business: CHANNEL_ANSWER also comes as ChannelMediaReady.
        self.state = State.CONNECTED
        self.answered_at = now
        return []

    def on_refused(self, event: InvitationRefused, now: float) -> list[Action]:
        cause = "USER_BUSY" if _is_busy_response(event.response) else "CALL_REJECTED"
        return self._finish(now, "refused", cause, [])

    def on_failed(self, event: InvitationFailed, now: float) -> list[Action]:
        cause = INVITATION_FAILURE_CAUSES.get(event.reason, "NO_ANSWER")
        return self._finish(now, event.reason.lower(), cause, [])

    def on_caller_hangup_while_ringing(self, event: ChannelHungUp, now: float) -> list[Action]:
        # The phone gave up while the browser rang: cancel the invitation (SRProxy did not).
        self.channel_alive = False
        cancel = CancelInvitation(self.call_id, self.web_uid)
        return self._finish(now, "sip_canceled", event.cause, [cancel])

    def on_callee_gone_while_ringing(self, event: WebUserGone, now: float) -> list[Action]:
        cancel = CancelInvitation(self.call_id, self.web_uid)
        return self._finish(now, "web_gone", "USER_NOT_REGISTERED", [cancel])

    def on_shutdown_while_ringing(self, event: Shutdown, now: float) -> list[Action]:
        cancel = CancelInvitation(self.call_id, self.web_uid)
        return self._finish(now, "shutdown", "SYSTEM_SHUTDOWN", [cancel])

    def _tell_web_end(self) -> list[Action]:
        if self.state is State.RINGING:
            return [CancelInvitation(self.call_id, self.web_uid)]
        return [self.tell_web(END_CALL)]


def _is_busy_response(response: str) -> bool:
    try:
        return isinstance(pm.parse(response), pm.Calling)
    except pm.PeerMessageError:
        return False


def _sip_to_rtc_table() -> dict[tuple[State, type[Event]], Handler]:
    c = SipToRtcCall
    table: dict[tuple[State, type[Event]], Handler] = {
        (State.RINGING, InvitationAccepted): c.on_accepted,
        (State.RINGING, InvitationRefused): c.on_refused,
        (State.RINGING, InvitationFailed): c.on_failed,
        (State.RINGING, ChannelHungUp): c.on_caller_hangup_while_ringing,
        (State.RINGING, WebUserGone): c.on_callee_gone_while_ringing,
        (State.RINGING, Shutdown): c.on_shutdown_while_ringing,
        (State.ANSWERING, ChannelAnswered): c.on_answered,
        (State.ANSWERING, ChannelHungUp): c.on_hangup_connected,
        (State.ANSWERING, PeerEndCall): c.on_end_call,
        (State.ANSWERING, WebUserGone): c.on_web_user_gone,
        (State.ANSWERING, MediaFailed): c.on_media_failed,
        (State.ANSWERING, Shutdown): c.on_shutdown_connected,
        (State.CONNECTED, ChannelHungUp): c.on_hangup_connected,
        (State.CONNECTED, PeerEndCall): c.on_end_call,
        (State.CONNECTED, WebUserGone): c.on_web_user_gone,
        (State.CONNECTED, MediaFailed): c.on_media_failed,
        (State.CONNECTED, Shutdown): c.on_shutdown_connected,
    }
    for state in (State.RINGING, State.ANSWERING, State.CONNECTED):
        # pre_answer completes while ringing: the channel can take unicast from then on.
        table[(state, ChannelMediaReady)] = Call._on_media_ready
    for state in (State.ANSWERING, State.CONNECTED):
        table[(state, MediaConnected)] = Call._on_media_connected
    for state in (State.RINGING, State.ANSWERING, State.CONNECTED):
        table[(state, GatewayError)] = Call._on_gateway_error
    return table


# ---------------------------------------------------------------------------------------
# Click-to-call: the app's backend asked for a call (gateway/api.py). The web user is
# invited first, from the acc_rule number it will talk to; once it accepts, that number
# is originated as for an RTC -> SIP call, whose states and media path the call then
# follows (ORIGINATING, RINGING, EARLY_MEDIA, CONNECTED).


@dataclass
class ClickToCall(Call):
    """Created by ``CallBook.click_to_call``: the number is held, nothing is dialled yet."""

    destination: str = ""
    variables: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def start(
        cls,
        *,
        call_id: str,
        uuid: str,
        chan_id: str,
        callee: str,
        number: str,
        destination: str,
        variables: Mapping[str, str],
        settings: CallSettings,
        now: float,
    ) -> tuple[ClickToCall, list[Action]]:
        call = cls(
            call_id=call_id,
            uuid=uuid,
            chan_id=chan_id,
            web_uid=callee,
            number=number,
            settings=settings,
            started_at=now,
            state=State.INVITING,
            direction=Direction.RTC_TO_SIP,
            # No channel until the web user accepts: nothing to hang up before that.
            channel_alive=False,
            TABLE=click_to_call_table(),
            destination=destination,
            variables=dict(variables),
        )
        return call, call._opening()

    def _opening(self) -> list[Action]:
        """The first action: the web user's invitation (web first)."""
        return [self._invite()]

    @property
    def order(self) -> str:
        """Who is rung first (the API's ``order``)."""
        return "web_first"

    def _invite(self) -> SendInvitation:
        """The web user's invitation, from the number it will talk to."""
        content = json.dumps(
            {"Mode": 1, "Conference": False, "ChanId": self.chan_id, "DisplayName": self.number},
            separators=(",", ":"),
        )
        return SendInvitation(self.call_id, self.web_uid, content, sender=self.number)

    def _cancel(self) -> CancelInvitation:
        return CancelInvitation(self.call_id, self.web_uid, sender=self.number)

    def on_accepted(self, event: InvitationAccepted, now: float) -> list[Action]:
        # The browser's offer to the number follows its accept: the leg opens first.
        self.state = State.ORIGINATING
        self.channel_alive = True
        return [
            OpenMedia(self.call_id, self.chan_id),
            Originate(self.call_id, self.uuid, self.destination, dict(self.variables)),
        ]

    def on_refused(self, event: InvitationRefused, now: float) -> list[Action]:
        return self._finish(now, "refused", "CALL_REJECTED", [])

    def on_failed(self, event: InvitationFailed, now: float) -> list[Action]:
        cause = INVITATION_FAILURE_CAUSES.get(event.reason, "NO_ANSWER")
        return self._finish(now, event.reason.lower(), cause, [])

    def on_gone_while_inviting(self, event: WebUserGone, now: float) -> list[Action]:
        return self._finish(now, "web_gone", "USER_NOT_REGISTERED", [self._cancel()])

    def on_shutdown_while_inviting(self, event: Shutdown, now: float) -> list[Action]:
        return self._finish(now, "shutdown", "SYSTEM_SHUTDOWN", [self._cancel()])

    def on_early_media(self, event: ChannelEarlyMedia, now: float) -> list[Action]:
        self.state = State.EARLY_MEDIA
        return [self.tell_web(sip_state_message("early_media"))]

    def on_answered(self, event: ChannelAnswered, now: float) -> list[Action]:
        self.state = State.CONNECTED
        self.answered_at = now
        return [self.tell_web(sip_state_message("answered"))]

    def on_sip_failed(self, event: OriginateFailed | ChannelHungUp, now: float) -> list[Action]:
        self.channel_alive = False
        reason = sip_failure_reason(event.cause)
        return self._finish(now, reason, event.cause, [self.tell_web(END_CALL)])

    def on_end_call_before_answer(self, event: PeerEndCall, now: float) -> list[Action]:
        return self._finish(now, "web_hangup", "ORIGINATOR_CANCEL", [])

    def _tell_web_end(self) -> list[Action]:
        if self.state is State.INVITING:
            return [self._cancel()]
        return [self.tell_web(END_CALL)]


def _click_to_call_table() -> dict[tuple[State, type[Event]], Handler]:
    c = ClickToCall
    table: dict[tuple[State, type[Event]], Handler] = {
        (State.INVITING, InvitationAccepted): c.on_accepted,
        (State.INVITING, InvitationRefused): c.on_refused,
        (State.INVITING, InvitationFailed): c.on_failed,
        (State.INVITING, WebUserGone): c.on_gone_while_inviting,
        (State.INVITING, Shutdown): c.on_shutdown_while_inviting,
        (State.INVITING, GatewayError): Call._on_gateway_error,
        (State.ORIGINATING, ChannelRinging): c.on_ringing,
        (State.ORIGINATING, ChannelEarlyMedia): c.on_early_media,
        (State.RINGING, ChannelEarlyMedia): c.on_early_media,
    }
    dialled = (State.ORIGINATING, State.RINGING, State.EARLY_MEDIA, State.CONNECTED)
    for state in dialled:
        table[(state, ChannelMediaReady)] = Call._on_media_ready
        table[(state, MediaConnected)] = Call._on_media_connected
        table[(state, MediaFailed)] = c.on_media_failed
        table[(state, WebUserGone)] = c.on_web_user_gone
        table[(state, Shutdown)] = c.on_shutdown_connected
        table[(state, GatewayError)] = Call._on_gateway_error
    for state in dialled[:-1]:
        table[(state, ChannelAnswered)] = c.on_answered
        table[(state, OriginateFailed)] = c.on_sip_failed
        table[(state, ChannelHungUp)] = c.on_sip_failed
        table[(state, PeerEndCall)] = c.on_end_call_before_answer
    table[(State.CONNECTED, ChannelHungUp)] = c.on_hangup_connected
    table[(State.CONNECTED, PeerEndCall)] = c.on_end_call
    return table


# ---------------------------------------------------------------------------------------
# Conference calls (issue 14; core/conference.py keeps the rooms). A web participant is a
# loopback pair: ``loopback/conference:<room>@<profile>/default/inline &park()``; its B leg
# runs ``conference`` and is the member, its A leg is answered and parked with a read
# codec, so it takes the unicast stream exactly as a two-party call's channel does (and
# only after answer). Hanging the A leg up ends the B leg too. A SIP invitee is an
# acc_rule number originated straight into the room (``&conference(<room>@<profile>)``):
# the phone is the member and there is no media leg.


def conference_end_message(chan_id: str, reason: str) -> str:
    """EndCall to a web member, with the reason (kicked, room_ended, left...)."""
    return json.dumps(
        {"Cmd": "EndCall", "ChanId": chan_id, "Reason": reason}, separators=(",", ":")
    )


@dataclass
class ConfWebCall(Call):
    """A web user's leg in a room: created at its ConfJoin; ``uuid`` is the A leg."""

    room: str = ""

    @classmethod
    def start(
        cls,
        *,
        call_id: str,
        uuid: str,
        chan_id: str,
        uid: str,
        room: str,
        destination: str,
        variables: Mapping[str, str],
        settings: CallSettings,
        now: float,
    ) -> tuple[ConfWebCall, list[Action]]:
        call = cls(
            call_id=call_id,
            uuid=uuid,
            chan_id=chan_id,
            web_uid=uid,
            number="",
            settings=settings,
            started_at=now,
            state=State.ORIGINATING,
            direction=Direction.CONFERENCE,
            TABLE=conf_web_table(),
            room=room,
        )
        # The leg first: the browser's offer follows ConfJoined, maybe before the answer.
        return call, [
            OpenMedia(call_id, chan_id),
            Originate(call_id, uuid, destination, dict(variables)),
        ]

    @property
    def peer_uid(self) -> str:
        return self.settings.gateway_uid

    def _end(self, now: float, reason: str, cause: str) -> list[Action]:
        tell = [self.tell_web(conference_end_message(self.chan_id, reason))]
        return self._finish(now, reason, cause, tell)

    def on_answered(self, event: ChannelAnswered, now: float) -> list[Action]:
        self.state = State.CONNECTED
        self.answered_at = now
        return []

    def on_originate_failed(self, event: OriginateFailed, now: float) -> list[Action]:
        self.channel_alive = False
        return self._end(now, "switch_error", event.cause)

    def on_hangup(self, event: ChannelHungUp, now: float) -> list[Action]:
        # The switch ended the pair (fs_cli hupall, a crash): the member is gone.
        self.channel_alive = False
        return self._end(now, "switch_error", event.cause)

    def on_left(self, event: PeerEndCall, now: float) -> list[Action]:
        return self._finish(now, "left", "NORMAL_CLEARING", [])

    def on_gone(self, event: WebUserGone, now: float) -> list[Action]:
        return self._finish(now, "web_gone", "NORMAL_CLEARING", [])

    def on_media_failed(self, event: MediaFailed, now: float) -> list[Action]:
        return self._end(now, "media_timeout", "MEDIA_TIMEOUT")

    def on_shutdown(self, event: Shutdown, now: float) -> list[Action]:
        return self._end(now, "shutdown", "SYSTEM_SHUTDOWN")

    def on_gateway_error(self, event: GatewayError, now: float) -> list[Action]:
        return self._end(now, "switch_error", "NORMAL_TEMPORARY_FAILURE")

    def on_removed(self, event: RoomRemoved, now: float) -> list[Action]:
        return self._end(now, event.reason, "NORMAL_CLEARING")

    def _tell_web_end(self) -> list[Action]:
        # Only an API hangup gets here: an operator removed the member, which the
        # protocol's EndCall reasons call ``kicked`` (``left`` is the browser's own EndCall).
        return [self.tell_web(conference_end_message(self.chan_id, "kicked"))]


def _conf_web_table() -> dict[tuple[State, type[Event]], Handler]:
    c = ConfWebCall
    table: dict[tuple[State, type[Event]], Handler] = {
        (State.ORIGINATING, ChannelAnswered): c.on_answered,
        (State.ORIGINATING, OriginateFailed): c.on_originate_failed,
    }
    for state in (State.ORIGINATING, State.CONNECTED):
        table[(state, ChannelMediaReady)] = Call._on_media_ready
        table[(state, MediaConnected)] = Call._on_media_connected
        table[(state, ChannelHungUp)] = c.on_hangup
        table[(state, PeerEndCall)] = c.on_left
        table[(state, WebUserGone)] = c.on_gone
        table[(state, MediaFailed)] = c.on_media_failed
        table[(state, Shutdown)] = c.on_shutdown
        table[(state, GatewayError)] = c.on_gateway_error
        table[(state, RoomRemoved)] = c.on_removed
    return table


class ConfSipCall(RtcToSipCall):
    """An acc_rule number a web user invited into a room: ringing, refusals and cancels as
    an RTC -> SIP call's; accepted on answer with ``"Conference":true``; no media leg. Once
    answered it ends when its member leaves (the channel hangs up) or the room ends."""

    @classmethod
    def start_in_room(
        cls,
        *,
        call_id: str,
        uuid: str,
        chan_id: str,
        caller: str,
        number: str,
        destination: str,
        variables: Mapping[str, str],
        app: str,
        settings: CallSettings,
        now: float,
    ) -> tuple[ConfSipCall, list[Action]]:
        call = cls(
            call_id=call_id,
            uuid=uuid,
            chan_id=chan_id,
            web_uid=caller,
            number=number,
            settings=settings,
            started_at=now,
            state=State.ORIGINATING,
            direction=Direction.RTC_TO_SIP,
            TABLE=conf_sip_table(),
        )
        return call, [Originate(call_id, uuid, destination, dict(variables), app=app)]

    def on_early_media(self, event: ChannelEarlyMedia, now: float) -> list[Action]:
        self.state = State.EARLY_MEDIA  # no media leg: the phone's audio is the room's
        return [self.tell_web(sip_state_message("early_media"))]

    def on_answered(self, event: ChannelAnswered, now: float) -> list[Action]:
        self.state = State.CONNECTED
        self.answered_at = now
        response = json.dumps(
            {"Mode": 1, "Conference": True, "ChanId": self.chan_id, "SipNumber": self.number},
            separators=(",", ":"),
        )
        return [AcceptInvitation(self.call_id, self.web_uid, self.number, response)]

    def on_member_gone(self, event: ChannelHungUp, now: float) -> list[Action]:
        # The room tells its web members (ConfMembers leave); no EndCall to the inviter.
        self.channel_alive = False
        return self._finish(now, "sip_hangup", event.cause, [])

    def on_removed(self, event: RoomRemoved, now: float) -> list[Action]:
        return self._finish(now, event.reason, "NORMAL_CLEARING", [])

    def on_removed_before_answer(self, event: RoomRemoved, now: float) -> list[Action]:
        refuse = [self._refuse(event.reason, "")]
        return self._finish(now, event.reason, "ORIGINATOR_CANCEL", refuse)

    def on_shutdown_member(self, event: Shutdown, now: float) -> list[Action]:
        return self._finish(now, "shutdown", "SYSTEM_SHUTDOWN", [])

    def on_error_member(self, event: GatewayError, now: float) -> list[Action]:
        return self._finish(now, event.reason, "NORMAL_TEMPORARY_FAILURE", [])

    def on_inviter_ends(self, event: PeerEndCall, now: float) -> list[Action]:
        return self._finish(now, "web_hangup", "NORMAL_CLEARING", [])

    def _tell_web_end(self) -> list[Action]:
        if self.state is State.CONNECTED:
            return []
        return [self._refuse(UNREACHABLE, "")]


def _conf_sip_table() -> dict[tuple[State, type[Event]], Handler]:
    c = ConfSipCall
    table = _dialling_rows(c)
    for state in _BEFORE_ANSWER:
        table[(state, RoomRemoved)] = c.on_removed_before_answer
    # Connected: the inviter going away leaves the phone in the room (WebUserGone ignored).
    table[(State.CONNECTED, ChannelHungUp)] = c.on_member_gone
    table[(State.CONNECTED, RoomRemoved)] = c.on_removed
    table[(State.CONNECTED, Shutdown)] = c.on_shutdown_member
    table[(State.CONNECTED, GatewayError)] = c.on_error_member
    table[(State.CONNECTED, PeerEndCall)] = c.on_inviter_ends
    return table


class ConfDialInCall(Call):
    """A phone that dialled ``<dialin_prefix><code>``: the dialplan handed its channel to the
    gateway's socket, which runs ``conference`` on it. It ends when the phone hangs up, is
    kicked (the conference application returns and the channel is hung up) or the room
    ends."""

    @classmethod
    def start(
        cls,
        *,
        call_id: str,
        uuid: str,
        chan_id: str,
        caller_number: str,
        target: str,
        settings: CallSettings,
        now: float,
    ) -> tuple[ConfDialInCall, list[Action]]:
        call = cls(
            call_id=call_id,
            uuid=uuid,
            chan_id=chan_id,
            web_uid="",
            number=caller_number,
            settings=settings,
            started_at=now,
            state=State.CONNECTED,
            direction=Direction.SIP_TO_RTC,
            answered_at=now,
            TABLE=conf_dial_in_table(),
        )
        variables = call_variables(call_id, Direction.CONFERENCE, "", settings.appid, caller_number)
        return call, [
            SetChannelVars(call_id, uuid, variables),
            JoinRoom(call_id, uuid, target),
        ]

    def on_hangup(self, event: ChannelHungUp, now: float) -> list[Action]:
        self.channel_alive = False
        return self._finish(now, "sip_hangup", event.cause, [])

    def on_removed(self, event: RoomRemoved, now: float) -> list[Action]:
        return self._finish(now, event.reason, "NORMAL_CLEARING", [])

    def on_shutdown(self, event: Shutdown, now: float) -> list[Action]:
        return self._finish(now, "shutdown", "SYSTEM_SHUTDOWN", [])

    def on_error(self, event: GatewayError, now: float) -> list[Action]:
        return self._finish(now, event.reason, "NORMAL_TEMPORARY_FAILURE", [])


def _conf_dial_in_table() -> dict[tuple[State, type[Event]], Handler]:
    c = ConfDialInCall
    return {
        (State.CONNECTED, ChannelHungUp): c.on_hangup,
        (State.CONNECTED, RoomRemoved): c.on_removed,
        (State.CONNECTED, Shutdown): c.on_shutdown,
        (State.CONNECTED, GatewayError): c.on_error,
    }


# ---------------------------------------------------------------------------------------
# Click-to-call, the reverse order (``"order": "number_first"``): the number is originated
# first (ORIGINATING, RINGING, EARLY_MEDIA: the web user knows nothing yet); once it
# answers, it hears ringback while the web user is invited from it (INVITING, the channel
# up); the web user accepting connects the call (CONNECTED), with the media path of the
# other order. The web user is told nothing until invited; a failure of the number ends
# the call before that.


@dataclass
class NumberFirstClickToCall(ClickToCall):
    """Created by ``CallBook.click_to_call(order="number_first")``: the number is dialled."""

    @property
    def order(self) -> str:
        return "number_first"

    def _opening(self) -> list[Action]:
        """The number is dialled first: the web user is invited once it answered."""
        self.state, self.channel_alive, self.TABLE = State.ORIGINATING, True, number_first_table()
        return [Originate(self.call_id, self.uuid, self.destination, dict(self.variables))]

    def on_number_progress(
        self, event: ChannelRinging | ChannelEarlyMedia, now: float
    ) -> list[Action]:
        # Only the stage changes: nobody is on the web side yet.
        self.state = State.RINGING if isinstance(event, ChannelRinging) else State.EARLY_MEDIA
        return []

    def on_number_answered(self, event: ChannelAnswered, now: float) -> list[Action]:
        # The number hears ringback, as a phone calling a web user does, while the
        # web user's browser rings.
        self.state = State.INVITING
        return [PlayRingback(self.call_id, self.uuid), self._invite()]

    def on_number_failed(self, event: OriginateFailed | ChannelHungUp, now: float) -> list[Action]:
        self.channel_alive = False
        return self._finish(now, sip_failure_reason(event.cause), event.cause, [])

    def on_gone_before_invited(self, event: WebUserGone, now: float) -> list[Action]:
        return self._finish(now, "web_gone", "ORIGINATOR_CANCEL", [])

    def on_shutdown_before_invited(self, event: Shutdown, now: float) -> list[Action]:
        return self._finish(now, "shutdown", "SYSTEM_SHUTDOWN", [])

    def on_web_accepted(self, event: InvitationAccepted, now: float) -> list[Action]:
        # Both sides have answered: the browser's offer to the number follows.
        self.state = State.CONNECTED
        self.answered_at = now
        return [
            StopRingback(self.call_id, self.uuid),
            OpenMedia(self.call_id, self.chan_id),
            self.tell_web(sip_state_message("answered")),
        ]

    def on_number_hangup_while_inviting(self, event: ChannelHungUp, now: float) -> list[Action]:
        self.channel_alive = False
        return self._finish(now, "sip_hangup", event.cause, [self._cancel()])

    def _tell_web_end(self) -> list[Action]:
        if self.state in (State.ORIGINATING, State.RINGING, State.EARLY_MEDIA):
            return []  # not invited yet
        return super()._tell_web_end()


def _number_first_table() -> dict[tuple[State, type[Event]], Handler]:
    c = NumberFirstClickToCall
    table: dict[tuple[State, type[Event]], Handler] = {
        (State.ORIGINATING, ChannelRinging): c.on_number_progress,
        (State.ORIGINATING, ChannelEarlyMedia): c.on_number_progress,
        (State.RINGING, ChannelEarlyMedia): c.on_number_progress,
        # The web user's answers to the invitation, as in the other order (the channel is
        # up now: ending hangs it up with the cause those handlers give).
        (State.INVITING, InvitationAccepted): c.on_web_accepted,
        (State.INVITING, InvitationRefused): c.on_refused,
        (State.INVITING, InvitationFailed): c.on_failed,
        (State.INVITING, WebUserGone): c.on_gone_while_inviting,
        (State.INVITING, Shutdown): c.on_shutdown_while_inviting,
        (State.INVITING, ChannelHungUp): c.on_number_hangup_while_inviting,
        (State.CONNECTED, MediaConnected): Call._on_media_connected,
        (State.CONNECTED, MediaFailed): c.on_media_failed,
        (State.CONNECTED, ChannelHungUp): c.on_hangup_connected,
        (State.CONNECTED, PeerEndCall): c.on_end_call,
        (State.CONNECTED, WebUserGone): c.on_web_user_gone,
        (State.CONNECTED, Shutdown): c.on_shutdown_connected,
    }
    for state in (State.ORIGINATING, State.RINGING, State.EARLY_MEDIA):
        table[(state, ChannelAnswered)] = c.on_number_answered
        table[(state, OriginateFailed)] = c.on_number_failed
        table[(state, ChannelHungUp)] = c.on_number_failed
        table[(state, WebUserGone)] = c.on_gone_before_invited
        table[(state, Shutdown)] = c.on_shutdown_before_invited
    for state in (State.ORIGINATING, State.RINGING, State.EARLY_MEDIA, State.INVITING):
        table[(state, ChannelMediaReady)] = Call._on_media_ready
        table[(state, GatewayError)] = Call._on_gateway_error
    table[(State.CONNECTED, ChannelMediaReady)] = Call._on_media_ready
    table[(State.CONNECTED, GatewayError)] = Call._on_gateway_error
    return table


def _on_api_hangup(call: Call, event: ApiHangup, now: float) -> list[Action]:
    """Any live call, either direction: ended as the web side would be told in its state."""
    return call._finish(now, "api_hangup", "NORMAL_CLEARING", call._tell_web_end())


# Events every call treats alike, whatever its direction.
_COMMON: dict[tuple[State, type[Event]], Handler] = {
    (State.ENDING, ChannelHungUp): Call._on_hangup_while_ending,
    **{
        (state, ApiHangup): _on_api_hangup
        for state in State
        if state not in (State.ENDING, State.ENDED)
    },
}


# The tables are built on first use, not at import: the same dict from then on (one cached
# call), and mutation testing sees each builder run under the mutant (docs/mutation.rst).


@functools.cache
def rtc_to_sip_table() -> Mapping[tuple[State, type[Event]], Handler]:
    return _rtc_to_sip_table()


@functools.cache
def sip_to_rtc_table() -> Mapping[tuple[State, type[Event]], Handler]:
    return _sip_to_rtc_table()


@functools.cache
def click_to_call_table() -> Mapping[tuple[State, type[Event]], Handler]:
    return _click_to_call_table()


@functools.cache
def number_first_table() -> Mapping[tuple[State, type[Event]], Handler]:
    return _number_first_table()


@functools.cache
def conf_web_table() -> Mapping[tuple[State, type[Event]], Handler]:
    return _conf_web_table()


@functools.cache
def conf_sip_table() -> Mapping[tuple[State, type[Event]], Handler]:
    return _conf_sip_table()


@functools.cache
def conf_dial_in_table() -> Mapping[tuple[State, type[Event]], Handler]:
    return _conf_dial_in_table()
