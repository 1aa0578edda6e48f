"""Every live call, the admission rules that create them, and routing of events to them.

No I/O: the owner feeds web invitations, SIP arrivals and events with ``now`` and carries
out the returned actions. Admission (docs/architecture.rst, the first steps of each call):

* RTC -> SIP: rtm2sip must be on, the number must be in acc_rule, the content must be a
  JSON object, there must be room, and the number must be free (else the busy refusal
  ``{"Cmd":"Calling","Reason":"calling"}``).
* SIP -> RTC: [proxy] must be on, X-Number must name a uid, that uid must be online, and
  there must be room; otherwise the channel is hung up with a fitting cause at once.

"Room" is two limits that protect the switch: at most ``max_calls`` calls at once, and
new calls at most ``max_call_rate`` per second with bursts of ``call_burst`` (one token
bucket for both directions). A call over either limit is refused before anything is
originated (``capacity``; SIP callers hear NORMAL_CIRCUIT_CONGESTION or SWITCH_CONGESTION).
A refusal for any other reason costs no token.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

from esl_bridge.core import ids, peer_json
from esl_bridge.core.call import (
    BUSY_REFUSAL,
    Action,
    Call,
    CallEnded,
    CallSettings,
    ClickToCall,
    ConfDialInCall,
    ConfSipCall,
    ConfWebCall,
    Direction,
    Event,
    Hangup,
    NumberFirstClickToCall,
    RefuseInvitation,
    ReleaseNumber,
    RtcToSipCall,
    Shutdown,
    SipToRtcCall,
    State,
    call_variables,
    channel_var_value,
    refusal,
)
from esl_bridge.core.invitations import CHANNEL_ID_MAX_BYTES
from esl_bridge.numbers import NumberBusy, NumberPool, NumberUnknown

# CallStateResult "state" values (docs/protocol.rst).
CALL_STATE_IDLE = 0
CALL_STATE_CALLING = 1
CALL_STATE_IN_CALL = 2


@dataclass(frozen=True)
class BookSettings:
    """What admission and dial strings need from rtx.conf."""

    rtm2sip_on: bool
    proxy_on: bool
    sip_domain: str
    gateway_uid: str
    max_calls: int = 200
    max_call_rate: float = 20.0  # new calls per second, both directions together
    call_burst: int = 10
    originate_timeout: int = 60
    hangup_grace: float = 5.0
    pstn_ip: str = ""
    pstn_prefix: str = ""
    pstn_gateway: str = ""
    pstn_profile: str = "internal"
    # Custom data of the web caller travels to the SIP callee in this header.
    user_data_header: str = "X-ArInfo"
    appid: str = ""  # [global] appid (the esl_bridge_appid channel variable)

    @property
    def pstn_enabled(self) -> bool:
        return bool(self.pstn_ip or self.pstn_gateway)


class CallRate:
    """Token bucket of new calls: ``burst`` at once, then ``per_second`` on average."""

    def __init__(self, per_second: float, burst: int) -> None:
        if not per_second > 0 or burst < 1:
            raise ValueError(
                f"call rate and burst must be positive, not {per_second!r} and {burst!r}"
            )
        self.per_second = per_second
        self.burst = burst
        self._tokens = float(burst)
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(
                float(self.burst), self._tokens + (now - self._last) * self.per_second
            )
        if self._last is None or now > self._last:
            self._last = now

    def ready(self, now: float) -> bool:
        """Whether a call may start at ``now`` (takes nothing)."""
        self._refill(now)
        return self._tokens >= 1.0

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False when over the rate."""
        if not self.ready(now):
            return False
        self._tokens -= 1.0
        return True


class CallBook:
    """The gateway's calls, keyed by call id, FreeSWITCH uuid and web channel id."""

    def __init__(
        self,
        settings: BookSettings,
        pool: NumberPool,
        new_id: Callable[[str], str] = ids.new_id,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self._new_id = new_id
        self._calls: dict[str, Call] = {}
        self._by_uuid: dict[str, str] = {}
        self._by_chan: dict[str, str] = {}
        self._call_settings = CallSettings(
            gateway_uid=settings.gateway_uid,
            hangup_grace=settings.hangup_grace,
            appid=settings.appid,
        )
        self.rate = CallRate(settings.max_call_rate, settings.call_burst)

    # -- lookups ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._calls)

    def __iter__(self) -> Iterator[Call]:
        return iter(list(self._calls.values()))

    def get(self, call_id: str) -> Call | None:
        return self._calls.get(call_id)

    def by_uuid(self, uuid: str) -> Call | None:
        call_id = self._by_uuid.get(uuid)
        return self._calls.get(call_id) if call_id else None

    def by_chan(self, chan_id: str) -> Call | None:
        call_id = self._by_chan.get(chan_id)
        return self._calls.get(call_id) if call_id else None

    def calls_of(self, uid: str) -> list[Call]:
        """The live calls in which ``uid`` is the web user."""
        return [c for c in self._calls.values() if c.web_uid == uid and not c.is_over]

    def call_state_of(self, uid: str) -> int:
        """What CallStateResult reports for ``uid``: idle, calling or in call."""
        states = [c.state for c in self.calls_of(uid)]
        if any(s is State.CONNECTED for s in states):
            return CALL_STATE_IN_CALL
        if any(s is not State.ENDING for s in states):
            return CALL_STATE_CALLING
        return CALL_STATE_IDLE

    # -- RTC -> SIP ---------------------------------------------------------------------

    def invitation_to_number(
        self,
        caller: str,
        number: str,
        content: str,
        now: float,
        room: tuple[str, str] | None = None,
    ) -> list[Action]:
        """A web user invited ``number``: refuse at once, or create the call and originate.
        With ``room`` (its FreeSWITCH name and profile) the number is dialled into that
        conference room (a ``ConfSipCall``) rather than bridged to the caller."""
        call_id = self._new_id("call")

        def refuse(response: str) -> list[Action]:
            return [RefuseInvitation(call_id, caller, number, response)]

        if not self.settings.rtm2sip_on:
            return refuse(refusal("rtm2sip_off"))
        if number not in self.pool:
            return refuse(refusal("not_in_acc_rule"))
        body = _json_object(content)
        if body is None:
            return refuse(refusal("bad_content"))
        chan_id = str(body.get("ChanId") or "") or ids.new_channel_id()
        if len(chan_id.encode("utf-8")) > CHANNEL_ID_MAX_BYTES or (
            room is None and chan_id in self._by_chan
        ):
            return refuse(refusal("bad_channel_id"))
        if len(self._calls) >= self.settings.max_calls or not self.rate.ready(now):
            return refuse(refusal("capacity"))
        try:
            self.pool.acquire(number, call_id)
        except NumberBusy:
            return refuse(BUSY_REFUSAL)
        except NumberUnknown:  # the pool changed under us; same answer as above
            return refuse(refusal("not_in_acc_rule"))
        self.rate.take(now)  # ready() just said there is a token

        channel_uuid = str(uuid4())
        destination, variables = self._dial(caller, number, body, channel_uuid)
        variables.update(
            call_variables(call_id, Direction.RTC_TO_SIP, caller, self.settings.appid, number)
        )
        if room is not None:
            name, profile = room
            call, actions = ConfSipCall.start_in_room(
                call_id=call_id,
                uuid=channel_uuid,
                chan_id=chan_id,
                caller=caller,
                number=number,
                destination=destination,
                variables=variables,
                app=f"&conference({name}@{profile})",
                settings=self._call_settings,
                now=now,
            )
            self._add(call)
            return actions
        call, actions = RtcToSipCall.start(
            call_id=call_id,
            uuid=channel_uuid,
            chan_id=chan_id,
            caller=caller,
            number=number,
            destination=destination,
            variables=variables,
            settings=self._call_settings,
            now=now,
        )
        self._add(call)
        return actions

    # -- conference rooms (core/conference.py decides who may join) ------------------------

    def conference_join(
        self, uid: str, chan_id: str, name: str, room: str, profile: str, now: float
    ) -> tuple[ConfWebCall | None, list[Action]]:
        """A web user's leg into ``room``: a loopback pair whose A leg is ours. None when
        the gateway is at ``max_calls`` or over its call rate."""
        if len(self._calls) >= self.settings.max_calls or not self.rate.take(now):
            return None, []
        call_id = self._new_id("call")
        a_uuid = str(uuid4())
        variables = {
            "origination_uuid": a_uuid,
            # The member's caller id: the web uid and its display name (fs_cli's list).
            # Safe characters only: a name with braces or "${" would break the originate.
            "origination_caller_id_number": channel_var_value(uid),
            "origination_caller_id_name": channel_var_value(name or uid),
            **call_variables(call_id, Direction.CONFERENCE, uid, self.settings.appid, ""),
        }
        call, actions = ConfWebCall.start(
            call_id=call_id,
            uuid=a_uuid,
            chan_id=chan_id,
            uid=uid,
            room=room,
            destination=f"loopback/conference:{room}@{profile}/default/inline",
            variables=variables,
            settings=self._call_settings,
            now=now,
        )
        self._add(call)
        return call, actions

    def _dial(
        self, caller: str, number: str, body: dict[str, Any], channel_uuid: str
    ) -> tuple[str, dict[str, str]]:
        """Destination and channel variables of the SIP leg."""
        sip_data = _text(body.get("SipData"))
        user_data = _text(body.get("UserData"))
        # SRProxy: the SIP callee sees SipData when given, else the caller's uid.
        call_number = sip_data or caller
        s = self.settings
        if body.get("Pstn") is True and s.pstn_enabled and sip_data:
            target = f"{s.pstn_prefix}{sip_data}"
            if s.pstn_gateway:
                destination = f"sofia/gateway/{s.pstn_gateway}/{target}"
            else:
                destination = f"sofia/{s.pstn_profile}/{target}@{s.pstn_ip}"
        else:
            destination = f"user/{number}@{s.sip_domain}"
        variables = {
            # Chosen here so the call can be killed even before originate answers.
            "origination_uuid": channel_uuid,
            "origination_caller_id_number": call_number,
            "origination_caller_id_name": caller,
            "originate_timeout": str(s.originate_timeout),
            # Before answer, or DTMF adds a lasting delay (docs/freeswitch.rst, fact 4).
            "rtp_autoflush": "true",
        }
        if user_data:
            variables[f"sip_h_{s.user_data_header}"] = user_data
        return destination, variables

    # -- click-to-call (the app's backend, gateway/api.py) -------------------------------

    def click_to_call(
        self,
        callee: str,
        number: str,
        *,
        callee_online: bool,
        now: float,
        number_first: bool = False,
    ) -> tuple[str, str, list[Action]]:
        """Ring web user ``callee``; once it accepts, dial acc_rule ``number`` (with
        ``number_first``, the reverse: dial, and ring ``callee`` once the number answered).

        Returns ``(call_id, "", actions)``, or ``("", refusal, [])`` with refusal one of
        rtm2sip_off, not_in_acc_rule, user_offline, capacity, number_busy. The checks are
        those of a web user's invitation to ``number``, and the call counts toward the
        same limits.
        """
        if not self.settings.rtm2sip_on:
            return "", "rtm2sip_off", []
        if number not in self.pool:
            return "", "not_in_acc_rule", []
        if not callee_online:
            return "", "user_offline", []
        if len(self._calls) >= self.settings.max_calls or not self.rate.ready(now):
            return "", "capacity", []
        call_id = self._new_id("call")
        try:
            self.pool.acquire(number, call_id)
        except NumberBusy:
            return "", "number_busy", []
        except NumberUnknown:
            return "", "not_in_acc_rule", []
        self.rate.take(now)
        channel_uuid = str(uuid4())
        destination, variables = self._dial(callee, number, {}, channel_uuid)
        variables.update(
            call_variables(call_id, Direction.RTC_TO_SIP, callee, self.settings.appid, number)
        )
        start = NumberFirstClickToCall.start if number_first else ClickToCall.start
        call, actions = start(
            call_id=call_id,
            uuid=channel_uuid,
            chan_id=ids.new_channel_id(),
            callee=callee,
            number=number,
            destination=destination,
            variables=variables,
            settings=self._call_settings,
            now=now,
        )
        self._add(call)
        return call_id, "", actions

    # -- SIP -> RTC ---------------------------------------------------------------------

    def sip_call_arrived(
        self,
        *,
        uuid: str,
        callee: str | None,
        caller_number: str,
        cus_data: str,
        callee_online: bool,
        now: float,
    ) -> list[Action]:
        """The dialplan's socket app brought a channel: hang it up, or invite the callee."""
        call_id = self._new_id("call")
        if not self.settings.proxy_on:
            return [Hangup(call_id, uuid, "CALL_REJECTED")]
        if not callee:
            return [Hangup(call_id, uuid, "UNALLOCATED_NUMBER")]
        if not callee_online:
            return [Hangup(call_id, uuid, "USER_NOT_REGISTERED")]
        refused = self._refuse_arriving(call_id, uuid, now)
        if refused is not None:
            return refused
        call, actions = SipToRtcCall.start(
            call_id=call_id,
            uuid=uuid,
            chan_id=ids.new_channel_id(),
            callee=callee,
            caller_number=caller_number,
            cus_data=cus_data,
            settings=self._call_settings,
            now=now,
        )
        self._add(call)
        return actions

    def _refuse_arriving(self, call_id: str, uuid: str, now: float) -> list[Action] | None:
        """What a channel the switch brought gets when the call limits refuse it (no
        action for the same channel twice: the first session owns it); None: admitted."""
        if uuid in self._by_uuid:
            return []
        if len(self._calls) >= self.settings.max_calls:
            return [Hangup(call_id, uuid, "NORMAL_CIRCUIT_CONGESTION")]
        if not self.rate.take(now):
            return [Hangup(call_id, uuid, "SWITCH_CONGESTION")]
        return None

    def conference_dial_in(
        self, *, uuid: str, caller_number: str, chan_id: str, target: str, now: float
    ) -> tuple[ConfDialInCall | None, list[Action]]:
        """A phone dialled a room's number (its socket session brought the channel): the
        call that puts it into ``target`` (``<room>@<profile>``), or the hangup that
        refuses it (the gateway's call limits, as for any SIP call)."""
        call_id = self._new_id("call")
        refused = self._refuse_arriving(call_id, uuid, now)
        if refused is not None:
            return None, refused
        call, actions = ConfDialInCall.start(
            call_id=call_id,
            uuid=uuid,
            chan_id=chan_id,
            caller_number=caller_number,
            target=target,
            settings=self._call_settings,
            now=now,
        )
        self._add(call)
        return call, actions

    # -- events, timers, shutdown -------------------------------------------------------

    def handle(self, call_id: str, event: Event, now: float) -> list[Action]:
        """Apply an event to a call; a call that ended is forgotten here."""
        call = self._calls.get(call_id)
        if call is None:
            return []
        return self._after(call, call.handle(event, now))

    def next_deadline(self) -> float | None:
        deadlines = [d for c in self._calls.values() if (d := c.next_deadline()) is not None]
        return min(deadlines, default=None)

    def poll(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for call in list(self._calls.values()):
            actions.extend(self._after(call, call.poll(now)))
        return actions

    def shutdown(self, now: float) -> list[Action]:
        """End every call (gateway stopping)."""
        actions: list[Action] = []
        for call in list(self._calls.values()):
            if call.state is not State.ENDING:
                actions.extend(self._after(call, call.handle(Shutdown(), now)))
        return actions

    def _add(self, call: Call) -> None:
        self._calls[call.call_id] = call
        self._by_uuid[call.uuid] = call.call_id
        if not isinstance(call, ConfWebCall | ConfSipCall | ConfDialInCall):
            # A room's ChanId is every member's: not one call's key.
            self._by_chan[call.chan_id] = call.call_id

    def _after(self, call: Call, actions: list[Action]) -> list[Action]:
        """Carry out the book's own actions (numbers, forgetting); pass the rest on."""
        passed: list[Action] = []
        for action in actions:
            if isinstance(action, ReleaseNumber):
                # Free as soon as the call ends, not when FreeSWITCH confirms the hangup:
                # the next caller of this number must not see it busy meanwhile.
                self.pool.release(action.number, action.call_id)
                continue
            if isinstance(action, CallEnded):
                self._calls.pop(call.call_id, None)
                self._by_uuid.pop(call.uuid, None)
                if self._by_chan.get(call.chan_id) == call.call_id:
                    self._by_chan.pop(call.chan_id, None)
            passed.append(action)
        return passed


def _json_object(content: str) -> dict[str, Any] | None:
    if not content:
        return {}
    try:
        body = peer_json.loads(content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
