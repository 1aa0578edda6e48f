"""Every way each call kind of core/call.py ends, action by action (no I/O, fake ``now``).

For each kind (a web user calling a number, a phone calling a web user, click-to-call in
both orders, a number dialled into a room, a phone that dialled a room, a web member of a
room), in each state a call can be in, every event that ends it: the exact actions the
adapters carry out (the media leg closed, what the web side is told and by whom, the number
released, the channel hung up with which cause), the reason and cause the call ends with,
and the hangup-confirmation timer. tests/test_call.py drives the two-party directions
through their main paths; mutation testing found these rows held by no test
(docs/mutation.rst).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from test_call import book

from esl_bridge.core import call as c
from esl_bridge.core.browser_hold import BROWSER_LOST, BROWSER_LOST_CAUSE
from esl_bridge.core.callbook import CallBook

GRACE = 2.5  # the book's hangup_grace: the confirmation timer is ``now + GRACE``
NOW = 7.0
END_CALL = '{"Cmd":"EndCall"}'
ROOM = ("eb-app-r1", "wb")


def fresh() -> CallBook:
    return book(hangup_grace=GRACE, appid="app", max_calls=10)


# -- the call kinds, each created through the call book --------------------------------


def rtc() -> c.Call:
    b = fresh()
    [originate] = b.invitation_to_number("alice", "1005", '{"ChanId":"ch-a"}', 0.0)
    return _found(b, originate)


def sip() -> c.Call:
    b = fresh()
    b.sip_call_arrived(
        uuid="u-sip", callee="bob", caller_number="1001", cus_data="", callee_online=True, now=0.0
    )
    found = b.by_uuid("u-sip")
    assert found is not None
    return found


def number_first() -> c.Call:
    b = fresh()
    call_id, refused, _ = b.click_to_call(
        "carol", "1006", callee_online=True, now=0.0, number_first=True
    )
    assert refused == ""
    found = b.get(call_id)
    assert found is not None
    return found


def conf_sip() -> c.Call:
    b = fresh()
    [originate] = b.invitation_to_number("alice", "1007", '{"ChanId":"r1"}', 0.0, room=ROOM)
    return _found(b, originate)


def dial_in() -> c.Call:
    call, _ = fresh().conference_dial_in(
        uuid="u-dial", caller_number="1001", chan_id="r1", target="eb-app-r1@wb", now=0.0
    )
    assert call is not None
    return call


def conf_web() -> c.Call:
    call, _ = fresh().conference_join("dave", "r1", "Dave", "eb-app-r1", "wb", 0.0)
    assert call is not None
    return call


def _found(b: CallBook, originate: c.Action) -> c.Call:
    assert isinstance(originate, c.Originate)
    found = b.by_uuid(originate.uuid)
    assert found is not None
    return found


def _web_first() -> c.Call:
    b = fresh()
    call_id, refused, _ = b.click_to_call("carol", "1006", callee_online=True, now=0.0)
    assert refused == ""
    found = b.get(call_id)
    assert found is not None
    return found


KINDS: dict[str, Callable[[], c.Call]] = {
    "rtc": rtc,
    "sip": sip,
    "web_first": _web_first,
    "number_first": number_first,
    "conf_sip": conf_sip,
    "dial_in": dial_in,
    "conf_web": conf_web,
}
# The kinds that hold an acc_rule number, released when the call ends.
HOLD_A_NUMBER = {"rtc", "web_first", "number_first", "conf_sip"}

# How each kind reaches a state: the events fed after its start.
PATHS: dict[str, dict[str, list[c.Event]]] = {
    "rtc": {
        "originating": [],
        "ringing": [c.ChannelRinging()],
        "early_media": [c.ChannelEarlyMedia()],
        "connected": [c.ChannelAnswered()],
    },
    "sip": {
        "ringing": [],
        "answering": [c.InvitationAccepted()],
        "connected": [c.InvitationAccepted(), c.ChannelAnswered()],
    },
    "web_first": {
        "inviting": [],
        "originating": [c.InvitationAccepted()],
        "ringing": [c.InvitationAccepted(), c.ChannelRinging()],
        "early_media": [c.InvitationAccepted(), c.ChannelEarlyMedia()],
        "connected": [c.InvitationAccepted(), c.ChannelAnswered()],
    },
    "number_first": {
        "originating": [],
        "ringing": [c.ChannelRinging()],
        "early_media": [c.ChannelEarlyMedia()],
        "inviting": [c.ChannelAnswered()],
        "connected": [c.ChannelAnswered(), c.InvitationAccepted()],
    },
    "conf_sip": {
        "originating": [],
        "ringing": [c.ChannelRinging()],
        "early_media": [c.ChannelEarlyMedia()],
        "connected": [c.ChannelAnswered()],
    },
    "dial_in": {"connected": []},
    "conf_web": {"originating": [], "connected": [c.ChannelAnswered()]},
}


def reach(kind: str, state: str) -> c.Call:
    call = KINDS[kind]()
    for i, event in enumerate(PATHS[kind][state]):
        actions = call.handle(event, 1.0 + i)
        assert not [a for a in actions if isinstance(a, c.Ignored | c.CallEnded)], actions
    assert call.state.value == state
    return call


# -- what the web side is told ---------------------------------------------------------


def end_call_from(sender: str) -> Callable[[c.Call], c.Action]:
    return lambda call: c.SendPeerMessage(call.call_id, sender, call.web_uid, END_CALL)


def refused(reason: str, cause: str = "") -> Callable[[c.Call], c.Action]:
    body = {"Cmd": "Refused", "Reason": reason, **({"Cause": cause} if cause else {})}
    text = json.dumps(body, separators=(",", ":"))
    return lambda call: c.RefuseInvitation(call.call_id, call.web_uid, call.number, text)


def cancel(sender: str = "") -> Callable[[c.Call], c.Action]:
    return lambda call: c.CancelInvitation(call.call_id, call.web_uid, sender)


def room_end(reason: str) -> Callable[[c.Call], c.Action]:
    def told(call: c.Call) -> c.Action:
        text = f'{{"Cmd":"EndCall","ChanId":"{call.chan_id}","Reason":"{reason}"}}'
        return c.SendPeerMessage(call.call_id, "gateway", call.web_uid, text)

    return told


@dataclass(frozen=True)
class Ending:
    kind: str
    state: str
    event: c.Event
    web: tuple[Callable[[c.Call], c.Action], ...]
    reason: str
    cause: str
    hangs_up: bool  # False: the channel is already gone (or was never dialled)

    def __str__(self) -> str:
        return f"{self.kind}-{self.state}-{type(self.event).__name__}"


def E(
    kind: str,
    state: str,
    event: c.Event,
    web: list[Callable[[c.Call], c.Action]],
    reason: str,
    cause: str,
    hangs_up: bool = True,
) -> Ending:
    return Ending(kind, state, event, tuple(web), reason, cause, hangs_up)


NUMBER = end_call_from("1005")
CLICK = end_call_from("1006")
GATEWAY = end_call_from("gateway")
BEFORE_ANSWER = ("originating", "ringing", "early_media")

# fmt: off
ENDINGS: list[Ending] = [
    # A web user called a number (RTC -> SIP).
    E("rtc", "originating", c.OriginateFailed("USER_BUSY"), [refused("busy", "USER_BUSY")],
      "busy", "USER_BUSY", hangs_up=False),
    E("rtc", "ringing", c.ChannelHungUp("NO_ANSWER"), [refused("no_answer", "NO_ANSWER")],
      "no_answer", "NO_ANSWER", hangs_up=False),
    E("rtc", "originating", c.InvitationCanceled(), [], "canceled", "ORIGINATOR_CANCEL"),
    E("rtc", "ringing", c.PeerEndCall(), [], "canceled", "ORIGINATOR_CANCEL"),
    E("rtc", "early_media", c.WebUserGone(), [], "caller_gone", "ORIGINATOR_CANCEL"),
    E("rtc", "early_media", c.MediaFailed("media_timeout"), [refused("unreachable")],
      "media_timeout", "MEDIA_TIMEOUT"),
    E("rtc", "ringing", c.Shutdown(), [refused("unreachable")], "shutdown", "SYSTEM_SHUTDOWN"),
    E("rtc", "originating", c.GatewayError("esl failed"), [refused("unreachable")],
      "esl failed", "NORMAL_TEMPORARY_FAILURE"),
    E("rtc", "early_media", c.ApiHangup(), [refused("unreachable")], "api_hangup",
      "NORMAL_CLEARING"),
    E("rtc", "connected", c.ChannelHungUp("NORMAL_CLEARING"), [NUMBER], "sip_hangup",
      "NORMAL_CLEARING", hangs_up=False),
    # A channel the gateway lost without its hangup events ends as on a hangup.
    E("rtc", "connected", c.ChannelLost("ESL_SESSION_CLOSED"), [NUMBER], "sip_hangup",
      "ESL_SESSION_CLOSED", hangs_up=False),
    E("rtc", "connected", c.PeerEndCall(), [], "web_hangup", "NORMAL_CLEARING"),
    E("rtc", "connected", c.WebUserGone(), [], "web_gone", "NORMAL_CLEARING"),
    E("rtc", "connected", c.MediaFailed("media_timeout"), [NUMBER], "media_timeout",
      "MEDIA_TIMEOUT"),
    E("rtc", "connected", c.MediaFailed(BROWSER_LOST), [NUMBER], BROWSER_LOST,
      BROWSER_LOST_CAUSE),
    E("rtc", "connected", c.Shutdown(), [NUMBER], "shutdown", "SYSTEM_SHUTDOWN"),
    E("rtc", "connected", c.GatewayError("esl failed"), [NUMBER], "esl failed",
      "NORMAL_TEMPORARY_FAILURE"),
    E("rtc", "connected", c.ApiHangup(), [NUMBER], "api_hangup", "NORMAL_CLEARING"),
    # A phone called a web user (SIP -> RTC).
    E("sip", "ringing", c.InvitationRefused('{"Cmd":"Calling","Reason":"calling"}'), [],
      "refused", "USER_BUSY"),
    E("sip", "ringing", c.InvitationRefused("no"), [], "refused", "CALL_REJECTED"),
    E("sip", "ringing", c.InvitationFailed("PEER_OFFLINE"), [], "peer_offline",
      "USER_NOT_REGISTERED"),
    E("sip", "ringing", c.InvitationFailed("ACCEPT_FAILURE"), [], "accept_failure",
      "NORMAL_TEMPORARY_FAILURE"),
    E("sip", "ringing", c.InvitationFailed("SOMETHING_NEW"), [], "something_new", "NO_ANSWER"),
    E("sip", "ringing", c.ChannelHungUp("ORIGINATOR_CANCEL"), [cancel()], "sip_canceled",
      "ORIGINATOR_CANCEL", hangs_up=False),
    E("sip", "ringing", c.WebUserGone(), [cancel()], "web_gone", "USER_NOT_REGISTERED"),
    E("sip", "ringing", c.Shutdown(), [cancel()], "shutdown", "SYSTEM_SHUTDOWN"),
    E("sip", "ringing", c.GatewayError("esl failed"), [cancel()], "esl failed",
      "NORMAL_TEMPORARY_FAILURE"),
    E("sip", "ringing", c.ApiHangup(), [cancel()], "api_hangup", "NORMAL_CLEARING"),
    *[
        ending
        for state in ("answering", "connected")
        for ending in (
            E("sip", state, c.ChannelHungUp("NORMAL_CLEARING"), [GATEWAY], "sip_hangup",
              "NORMAL_CLEARING", hangs_up=False),
            E("sip", state, c.PeerEndCall(), [], "web_hangup", "NORMAL_CLEARING"),
            E("sip", state, c.WebUserGone(), [], "web_gone", "NORMAL_CLEARING"),
            E("sip", state, c.MediaFailed("media_timeout"), [GATEWAY], "media_timeout",
              "MEDIA_TIMEOUT"),
            E("sip", state, c.Shutdown(), [GATEWAY], "shutdown", "SYSTEM_SHUTDOWN"),
            E("sip", state, c.GatewayError("esl failed"), [GATEWAY], "esl failed",
              "NORMAL_TEMPORARY_FAILURE"),
            E("sip", state, c.ApiHangup(), [GATEWAY], "api_hangup", "NORMAL_CLEARING"),
        )
    ],
    # Click-to-call, the web user first: nothing is dialled until it accepts.
    E("web_first", "inviting", c.InvitationRefused(), [], "refused", "CALL_REJECTED",
      hangs_up=False),
    E("web_first", "inviting", c.InvitationFailed("PEER_NO_RESPONSE"), [], "peer_no_response",
      "NO_USER_RESPONSE", hangs_up=False),
    E("web_first", "inviting", c.WebUserGone(), [cancel("1006")], "web_gone",
      "USER_NOT_REGISTERED", hangs_up=False),
    E("web_first", "inviting", c.Shutdown(), [cancel("1006")], "shutdown", "SYSTEM_SHUTDOWN",
      hangs_up=False),
    E("web_first", "inviting", c.GatewayError("api failed"), [cancel("1006")], "api failed",
      "NORMAL_TEMPORARY_FAILURE", hangs_up=False),
    E("web_first", "inviting", c.ApiHangup(), [cancel("1006")], "api_hangup",
      "NORMAL_CLEARING", hangs_up=False),
    *[
        ending
        for state in BEFORE_ANSWER
        for ending in (
            E("web_first", state, c.OriginateFailed("USER_BUSY"), [CLICK], "busy", "USER_BUSY",
              hangs_up=False),
            E("web_first", state, c.ChannelHungUp("NO_ANSWER"), [CLICK], "no_answer",
              "NO_ANSWER", hangs_up=False),
            E("web_first", state, c.PeerEndCall(), [], "web_hangup", "ORIGINATOR_CANCEL"),
        )
    ],
    *[
        ending
        for state in (*BEFORE_ANSWER, "connected")
        for ending in (
            E("web_first", state, c.MediaFailed("media_timeout"), [CLICK], "media_timeout",
              "MEDIA_TIMEOUT"),
            E("web_first", state, c.WebUserGone(), [], "web_gone", "NORMAL_CLEARING"),
            E("web_first", state, c.Shutdown(), [CLICK], "shutdown", "SYSTEM_SHUTDOWN"),
            E("web_first", state, c.GatewayError("esl failed"), [CLICK], "esl failed",
              "NORMAL_TEMPORARY_FAILURE"),
            E("web_first", state, c.ApiHangup(), [CLICK], "api_hangup", "NORMAL_CLEARING"),
        )
    ],
    E("web_first", "connected", c.ChannelHungUp("NORMAL_CLEARING"), [CLICK], "sip_hangup",
      "NORMAL_CLEARING", hangs_up=False),
    E("web_first", "connected", c.PeerEndCall(), [], "web_hangup", "NORMAL_CLEARING"),
    # Click-to-call, the number first: the web user hears of nothing until invited.
    *[
        ending
        for state in BEFORE_ANSWER
        for ending in (
            E("number_first", state, c.OriginateFailed("USER_BUSY"), [], "busy", "USER_BUSY",
              hangs_up=False),
            E("number_first", state, c.ChannelHungUp("NO_ANSWER"), [], "no_answer",
              "NO_ANSWER", hangs_up=False),
            E("number_first", state, c.WebUserGone(), [], "web_gone", "ORIGINATOR_CANCEL"),
            E("number_first", state, c.Shutdown(), [], "shutdown", "SYSTEM_SHUTDOWN"),
            E("number_first", state, c.GatewayError("esl failed"), [], "esl failed",
              "NORMAL_TEMPORARY_FAILURE"),
            E("number_first", state, c.ApiHangup(), [], "api_hangup", "NORMAL_CLEARING"),
        )
    ],
    # Invited: the number is up and hears ringback, so every ending hangs it up.
    E("number_first", "inviting", c.InvitationRefused(), [], "refused", "CALL_REJECTED"),
    E("number_first", "inviting", c.InvitationFailed("INVITATION_EXPIRE"), [],
      "invitation_expire", "NO_ANSWER"),
    E("number_first", "inviting", c.WebUserGone(), [cancel("1006")], "web_gone",
      "USER_NOT_REGISTERED"),
    E("number_first", "inviting", c.Shutdown(), [cancel("1006")], "shutdown",
      "SYSTEM_SHUTDOWN"),
    E("number_first", "inviting", c.ChannelHungUp("ORIGINATOR_CANCEL"), [cancel("1006")],
      "sip_hangup", "ORIGINATOR_CANCEL", hangs_up=False),
    E("number_first", "inviting", c.GatewayError("esl failed"), [cancel("1006")],
      "esl failed", "NORMAL_TEMPORARY_FAILURE"),
    E("number_first", "inviting", c.ApiHangup(), [cancel("1006")], "api_hangup",
      "NORMAL_CLEARING"),
    E("number_first", "connected", c.MediaFailed("media_timeout"), [CLICK], "media_timeout",
      "MEDIA_TIMEOUT"),
    E("number_first", "connected", c.ChannelHungUp("NORMAL_CLEARING"), [CLICK], "sip_hangup",
      "NORMAL_CLEARING", hangs_up=False),
    E("number_first", "connected", c.PeerEndCall(), [], "web_hangup", "NORMAL_CLEARING"),
    E("number_first", "connected", c.WebUserGone(), [], "web_gone", "NORMAL_CLEARING"),
    E("number_first", "connected", c.Shutdown(), [CLICK], "shutdown", "SYSTEM_SHUTDOWN"),
    E("number_first", "connected", c.GatewayError("esl failed"), [CLICK], "esl failed",
      "NORMAL_TEMPORARY_FAILURE"),
    E("number_first", "connected", c.ApiHangup(), [CLICK], "api_hangup", "NORMAL_CLEARING"),
    # A number dialled into a room: refusals as a two-party call's until it answers.
    *[
        ending
        for state in BEFORE_ANSWER
        for ending in (
            E("conf_sip", state, c.RoomRemoved("room_ended"), [refused("room_ended")],
              "room_ended", "ORIGINATOR_CANCEL"),
            E("conf_sip", state, c.ChannelHungUp("USER_BUSY"), [refused("busy", "USER_BUSY")],
              "busy", "USER_BUSY", hangs_up=False),
            E("conf_sip", state, c.ApiHangup(), [refused("unreachable")], "api_hangup",
              "NORMAL_CLEARING"),
        )
    ],
    # Answered, it is a member: the room tells the others; the inviter is told nothing.
    E("conf_sip", "connected", c.ChannelHungUp("NORMAL_CLEARING"), [], "sip_hangup",
      "NORMAL_CLEARING", hangs_up=False),
    E("conf_sip", "connected", c.RoomRemoved("kicked"), [], "kicked", "NORMAL_CLEARING"),
    E("conf_sip", "connected", c.Shutdown(), [], "shutdown", "SYSTEM_SHUTDOWN"),
    E("conf_sip", "connected", c.GatewayError("esl failed"), [], "esl failed",
      "NORMAL_TEMPORARY_FAILURE"),
    E("conf_sip", "connected", c.PeerEndCall(), [], "web_hangup", "NORMAL_CLEARING"),
    E("conf_sip", "connected", c.ApiHangup(), [], "api_hangup", "NORMAL_CLEARING"),
    # A phone that dialled a room.
    E("dial_in", "connected", c.ChannelHungUp("NORMAL_CLEARING"), [], "sip_hangup",
      "NORMAL_CLEARING", hangs_up=False),
    E("dial_in", "connected", c.RoomRemoved("kicked"), [], "kicked", "NORMAL_CLEARING"),
    E("dial_in", "connected", c.Shutdown(), [], "shutdown", "SYSTEM_SHUTDOWN"),
    E("dial_in", "connected", c.GatewayError("esl failed"), [], "esl failed",
      "NORMAL_TEMPORARY_FAILURE"),
    E("dial_in", "connected", c.ApiHangup(), [], "api_hangup", "NORMAL_CLEARING"),
    # A web member of a room: told with the room's EndCall, which names the reason.
    E("conf_web", "originating", c.OriginateFailed("DESTINATION_OUT_OF_ORDER"),
      [room_end("switch_error")], "switch_error", "DESTINATION_OUT_OF_ORDER", hangs_up=False),
    *[
        ending
        for state in ("originating", "connected")
        for ending in (
            E("conf_web", state, c.ChannelHungUp("NORMAL_CLEARING"), [room_end("switch_error")],
              "switch_error", "NORMAL_CLEARING", hangs_up=False),
            E("conf_web", state, c.PeerEndCall(), [], "left", "NORMAL_CLEARING"),
            E("conf_web", state, c.WebUserGone(), [], "web_gone", "NORMAL_CLEARING"),
            E("conf_web", state, c.MediaFailed("media_timeout"), [room_end("media_timeout")],
              "media_timeout", "MEDIA_TIMEOUT"),
            E("conf_web", state, c.Shutdown(), [room_end("shutdown")], "shutdown",
              "SYSTEM_SHUTDOWN"),
            E("conf_web", state, c.GatewayError("esl failed"), [room_end("switch_error")],
              "switch_error", "NORMAL_TEMPORARY_FAILURE"),
            E("conf_web", state, c.RoomRemoved("kicked"), [room_end("kicked")], "kicked",
              "NORMAL_CLEARING"),
            # An operator removed the member through the API: "kicked" to the browser.
            E("conf_web", state, c.ApiHangup(), [room_end("kicked")], "api_hangup",
              "NORMAL_CLEARING"),
        )
    ],
]
# fmt: on


@pytest.mark.parametrize("ending", ENDINGS, ids=str)
def test_each_ending_tells_each_side_and_hangs_up_with_its_cause(ending: Ending) -> None:
    call = reach(ending.kind, ending.state)
    actions = call.handle(ending.event, NOW)

    expected: list[c.Action] = [c.CloseMedia(call.call_id, call.chan_id)]
    expected += [told(call) for told in ending.web]
    if ending.kind in HOLD_A_NUMBER:
        expected.append(c.ReleaseNumber(call.call_id, call.number))
    final = c.CallEnded(call.call_id, ending.reason, ending.cause)
    if ending.hangs_up:
        expected.append(c.Hangup(call.call_id, call.uuid, ending.cause))
        assert actions == expected
        assert call.state is c.State.ENDING
        assert call.next_deadline() == NOW + GRACE
        # FreeSWITCH confirms (a lost channel counts as confirmed): the call is over.
        assert call.handle(c.ChannelLost("NORMAL_CLEARING"), NOW + 1) == [final]
    else:
        assert actions == [*expected, final]
    assert call.state is c.State.ENDED and call.is_over
    assert call.next_deadline() is None
    assert (call.ended_reason, call.ended_cause) == (ending.reason, ending.cause)
    # Over is over: nothing more happens, whatever comes late.
    assert call.handle(ending.event, NOW + 2) == [
        c.Ignored(call.call_id, "ended", type(ending.event).__name__)
    ]
