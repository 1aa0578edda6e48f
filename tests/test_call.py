"""The call core: both directions of docs/architecture.rst, driven with a fake clock."""

from __future__ import annotations

import json
from itertools import count

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.budget import examples

from esl_bridge.core import call as c
from esl_bridge.core.callbook import (
    CALL_STATE_CALLING,
    CALL_STATE_IDLE,
    CALL_STATE_IN_CALL,
    BookSettings,
    CallBook,
)
from esl_bridge.numbers import NumberPool

SETTINGS = BookSettings(
    rtm2sip_on=True,
    proxy_on=True,
    sip_domain="127.0.0.1",
    gateway_uid="gateway",
    max_calls=3,
    originate_timeout=45,
    hangup_grace=5.0,
)


def book(**overrides: object) -> CallBook:
    ids = count(1)
    values = {**SETTINGS.__dict__, **overrides}
    return CallBook(
        BookSettings(**values),  # type: ignore[arg-type]
        NumberPool.from_rule("1005;10[06-09]"),
        new_id=lambda prefix: f"{prefix}-{next(ids)}",
    )


def kinds(actions: list[c.Action]) -> list[str]:
    return [type(a).__name__ for a in actions]


def only(actions: list[c.Action], kind: type[c.Action]) -> c.Action:
    found = [a for a in actions if isinstance(a, kind)]
    assert len(found) == 1, actions
    return found[0]


def invite(
    b: CallBook,
    content: dict | str | None = None,
    number: str = "1005",
    caller: str = "alice",
    now: float = 0.0,
) -> list[c.Action]:
    text = content if isinstance(content, str) else json.dumps(content or {"ChanId": "ch-a"})
    return b.invitation_to_number(caller, number, text, now)


def refusal_of(actions: list[c.Action]) -> dict:
    refuse = only(actions, c.RefuseInvitation)
    assert isinstance(refuse, c.RefuseInvitation)
    return json.loads(refuse.response)


# -- RTC -> SIP -------------------------------------------------------------------------


def test_rtc_to_sip_originates_with_caller_id_header_and_own_uuid() -> None:
    b = book()
    actions = invite(b, {"ChanId": "ch-a", "UserData": "ticket 42", "Mode": 1})
    originate = only(actions, c.Originate)
    assert isinstance(originate, c.Originate)
    assert originate.destination == "user/1005@127.0.0.1"
    assert originate.variables["origination_uuid"] == originate.uuid
    assert originate.variables["origination_caller_id_number"] == "alice"
    assert originate.variables["sip_h_X-ArInfo"] == "ticket 42"
    assert originate.variables["originate_timeout"] == "45"
    assert originate.variables["rtp_autoflush"] == "true"
    call = b.by_uuid(originate.uuid)
    assert call is not None and call.chan_id == "ch-a" and call.state is c.State.ORIGINATING
    assert b.pool.holder("1005") == call.call_id


def test_sip_data_becomes_the_caller_id_like_srproxy() -> None:
    originate = only(invite(b := book(), {"SipData": "5551234"}), c.Originate)
    assert isinstance(originate, c.Originate)
    assert originate.variables["origination_caller_id_number"] == "5551234"
    assert originate.destination == "user/1005@127.0.0.1"
    assert len(b) == 1


@pytest.mark.parametrize(
    ("pstn", "expected"),
    [
        ({"pstn_gateway": "carrier"}, "sofia/gateway/carrier/95551234"),
        ({"pstn_ip": "127.0.0.9"}, "sofia/internal/95551234@127.0.0.9"),
    ],
)
def test_pstn_mode_dials_prefix_and_sip_data(pstn: dict, expected: str) -> None:
    b = book(pstn_prefix="9", **pstn)
    originate = only(invite(b, {"SipData": "5551234", "Pstn": True}), c.Originate)
    assert isinstance(originate, c.Originate)
    assert originate.destination == expected


def test_pstn_flag_without_pstn_config_dials_the_number() -> None:
    originate = only(invite(book(), {"SipData": "5551234", "Pstn": True}), c.Originate)
    assert isinstance(originate, c.Originate)
    assert originate.destination == "user/1005@127.0.0.1"


@pytest.mark.parametrize(
    ("overrides", "number", "content", "reason"),
    [
        ({"rtm2sip_on": False}, "1005", None, "rtm2sip_off"),
        ({}, "2000", None, "not_in_acc_rule"),
        ({}, "1005", "not json", "bad_content"),
        ({}, "1005", "[1, 2]", "bad_content"),
        ({}, "1005", {"ChanId": "x" * 65}, "bad_channel_id"),
        ({"max_calls": 0}, "1005", None, "capacity"),
    ],
)
def test_admission_refusals_are_json_with_a_reason(
    overrides: dict, number: str, content: object, reason: str
) -> None:
    b = book(**overrides)
    actions = invite(b, content, number=number)  # type: ignore[arg-type]
    assert kinds(actions) == ["RefuseInvitation"]
    assert refusal_of(actions) == {"Cmd": "Refused", "Reason": reason}
    assert len(b) == 0 and b.pool.busy() == {}


def test_second_invitation_to_a_busy_number_gets_the_calling_refusal() -> None:
    b = book()
    invite(b, {"ChanId": "ch-a"})
    actions = invite(b, {"ChanId": "ch-b"}, caller="bob")
    assert refusal_of(actions) == {"Cmd": "Calling", "Reason": "calling"}
    assert len(b) == 1


def start_rtc_call(b: CallBook) -> c.Call:
    originate = only(invite(b), c.Originate)
    assert isinstance(originate, c.Originate)
    call = b.by_uuid(originate.uuid)
    assert call is not None
    return call


def test_ringing_and_early_media_are_reported_and_accept_waits_for_answer() -> None:
    b = book()
    call = start_rtc_call(b)
    actions = b.handle(call.call_id, c.ChannelRinging(), 1.0)
    message = only(actions, c.SendPeerMessage)
    assert isinstance(message, c.SendPeerMessage)
    assert (message.sender, message.to) == ("1005", "alice")
    assert json.loads(message.text) == {"Cmd": "SipState", "State": "ringing"}
    actions = b.handle(call.call_id, c.ChannelEarlyMedia(), 2.0)
    assert json.loads(only(actions, c.SendPeerMessage).text)["State"] == "early_media"  # type: ignore[attr-defined]
    assert not any(isinstance(a, c.AcceptInvitation) for a in actions)
    actions = b.handle(call.call_id, c.ChannelAnswered(), 3.0)
    accept = only(actions, c.AcceptInvitation)
    assert isinstance(accept, c.AcceptInvitation)
    assert json.loads(accept.response) == {
        "Mode": 1,
        "Conference": False,
        "ChanId": "ch-a",
        "SipNumber": "1005",
        "SipData": "",
    }
    assert call.state is c.State.CONNECTED and call.answered_at == 3.0
    assert b.call_state_of("alice") == CALL_STATE_IN_CALL


@pytest.mark.parametrize("order", [("ready", "media"), ("media", "ready")])
def test_unicast_starts_once_when_channel_and_media_are_both_ready(order: tuple) -> None:
    b = book()
    call = start_rtc_call(b)
    b.handle(call.call_id, c.ChannelAnswered(), 1.0)
    events = {"ready": c.ChannelMediaReady(), "media": c.MediaConnected()}
    first = b.handle(call.call_id, events[order[0]], 2.0)
    second = b.handle(call.call_id, events[order[1]], 3.0)
    assert not any(isinstance(a, c.StartUnicast) for a in first)
    assert kinds(second) == ["StartUnicast"]
    again = b.handle(call.call_id, c.ChannelMediaReady(), 4.0)
    assert not any(isinstance(a, c.StartUnicast) for a in again)


@pytest.mark.parametrize(
    ("cause", "reason"),
    [
        ("USER_BUSY", "busy"),
        ("NO_ANSWER", "no_answer"),
        ("CALL_REJECTED", "rejected"),
        ("USER_NOT_REGISTERED", "not_registered"),
        ("SUBSCRIBER_ABSENT", "not_registered"),
        ("NETWORK_OUT_OF_ORDER", "unreachable"),
        ("RECOVERY_ON_TIMER_EXPIRE", "unreachable"),
    ],
)
def test_sip_failures_refuse_with_reason_and_cause(cause: str, reason: str) -> None:
    for event in (c.OriginateFailed(cause), c.ChannelHungUp(cause)):
        b = book()
        call = start_rtc_call(b)
        b.handle(call.call_id, c.ChannelRinging(), 1.0)
        actions = b.handle(call.call_id, event, 2.0)
        assert refusal_of(actions) == {"Cmd": "Refused", "Reason": reason, "Cause": cause}
        assert kinds(actions)[-1] == "CallEnded"
        assert not any(isinstance(a, c.Hangup) for a in actions)  # already gone
        assert len(b) == 0 and b.pool.busy() == {}


def test_caller_cancel_kills_the_sip_leg_and_frees_the_number_at_once() -> None:
    b = book()
    call = start_rtc_call(b)
    actions = b.handle(call.call_id, c.InvitationCanceled(), 1.0)
    hangup = only(actions, c.Hangup)
    assert isinstance(hangup, c.Hangup)
    assert (hangup.uuid, hangup.cause) == (call.uuid, "ORIGINATOR_CANCEL")
    assert call.state is c.State.ENDING
    assert b.pool.busy() == {}  # free before FreeSWITCH confirms
    assert b.call_state_of("alice") == CALL_STATE_IDLE
    ended = b.handle(call.call_id, c.ChannelHungUp("ORIGINATOR_CANCEL"), 1.2)
    assert kinds(ended) == ["CallEnded"]
    assert len(b) == 0


def test_sip_hangup_in_call_sends_end_call_and_closes_media() -> None:
    b = book()
    call = start_rtc_call(b)
    b.handle(call.call_id, c.ChannelAnswered(), 1.0)
    actions = b.handle(call.call_id, c.ChannelHungUp("NORMAL_CLEARING"), 9.0)
    assert kinds(actions) == ["CloseMedia", "SendPeerMessage", "CallEnded"]
    assert json.loads(actions[1].text) == {"Cmd": "EndCall"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("event", "cause"),
    [
        (c.PeerEndCall(), "NORMAL_CLEARING"),
        (c.WebUserGone(), "NORMAL_CLEARING"),
        (c.MediaFailed("media_timeout"), "MEDIA_TIMEOUT"),
        (c.Shutdown(), "SYSTEM_SHUTDOWN"),
    ],
)
def test_web_side_endings_hang_up_the_channel(event: c.Event, cause: str) -> None:
    b = book()
    call = start_rtc_call(b)
    b.handle(call.call_id, c.ChannelAnswered(), 1.0)
    actions = b.handle(call.call_id, event, 2.0)
    assert kinds(actions)[0] == "CloseMedia"
    hangup = only(actions, c.Hangup)
    assert isinstance(hangup, c.Hangup) and hangup.cause == cause
    assert b.handle(call.call_id, c.ChannelHungUp(cause), 2.1)[-1] == c.CallEnded(
        call.call_id, call.ended_reason, cause
    )


def test_unconfirmed_hangup_is_retried_once_then_the_call_ends_anyway() -> None:
    b = book()
    call = start_rtc_call(b)
    b.handle(call.call_id, c.ChannelAnswered(), 1.0)
    b.handle(call.call_id, c.PeerEndCall(), 10.0)
    assert b.next_deadline() == 15.0
    assert b.poll(14.9) == []
    retry = b.poll(15.0)
    assert kinds(retry) == ["Hangup"]
    assert b.next_deadline() == 20.0
    final = b.poll(20.0)
    assert len(final) == 1 and isinstance(final[0], c.CallEnded) and final[0].forced
    assert len(b) == 0 and b.next_deadline() is None


def test_events_that_do_not_apply_are_ignored_without_change() -> None:
    b = book()
    call = start_rtc_call(b)
    actions = b.handle(call.call_id, c.InvitationAccepted(), 1.0)
    assert kinds(actions) == ["Ignored"]
    assert call.state is c.State.ORIGINATING
    assert b.handle("no-such-call", c.PeerEndCall(), 1.0) == []


# -- SIP -> RTC -------------------------------------------------------------------------


def arrive(b: CallBook, callee: str | None = "bob", online: bool = True) -> list[c.Action]:
    return b.sip_call_arrived(
        uuid="uuid-1",
        callee=callee,
        caller_number="1001",
        cus_data="order=7",
        callee_online=online,
        now=0.0,
    )


@pytest.mark.parametrize(
    ("overrides", "callee", "online", "cause"),
    [
        ({"proxy_on": False}, "bob", True, "CALL_REJECTED"),
        ({}, None, True, "UNALLOCATED_NUMBER"),
        ({}, "bob", False, "USER_NOT_REGISTERED"),
        ({"max_calls": 0}, "bob", True, "NORMAL_CIRCUIT_CONGESTION"),
    ],
)
def test_sip_admission_hangs_up_with_a_fitting_cause(
    overrides: dict, callee: str | None, online: bool, cause: str
) -> None:
    b = book(**overrides)
    # The refused phone's own channel, with the call id the book gave it.
    assert arrive(b, callee, online) == [c.Hangup("call-1", "uuid-1", cause)]
    assert len(b) == 0


def test_sip_call_rings_back_and_invites_with_the_caller_shown() -> None:
    b = book()
    actions = arrive(b)
    assert kinds(actions) == [
        "SetChannelVars",
        "SetChannelVar",
        "PreAnswer",
        "PlayRingback",
        "SendInvitation",
    ]
    assert (actions[1].name, actions[1].value) == ("rtp_autoflush", "true")  # type: ignore[attr-defined]
    invitation = actions[4]
    assert isinstance(invitation, c.SendInvitation) and invitation.callee == "bob"
    content = json.loads(invitation.content)
    call = b.by_uuid("uuid-1")
    assert call is not None
    assert content == {
        "Mode": 1,
        "Conference": False,
        "ChanId": call.chan_id,
        "DisplayName": "1001",
        "SipData": "order=7",
    }
    assert not any(isinstance(a, c.Answer) for a in actions)  # not answered while ringing
    assert b.call_state_of("bob") == CALL_STATE_CALLING


def test_sip_call_ids_are_unique_even_for_calls_in_the_same_instant() -> None:
    b = book(max_calls=100, call_burst=100)
    chans = set()
    for i in range(50):
        b.sip_call_arrived(
            uuid=f"u{i}",
            callee="bob",
            caller_number="1001",
            cus_data="",
            callee_online=True,
            now=0.0,
        )
        chans.add(b.by_uuid(f"u{i}").chan_id)  # type: ignore[union-attr]
    assert len(chans) == 50


def test_accept_answers_then_media_flows() -> None:
    b = book()
    arrive(b)
    call = b.by_uuid("uuid-1")
    assert call is not None
    b.handle(call.call_id, c.ChannelMediaReady(), 0.5)  # pre_answer completed
    actions = b.handle(call.call_id, c.InvitationAccepted("{}"), 3.0)
    assert kinds(actions) == ["StopRingback", "OpenMedia", "Answer"]
    assert b.handle(call.call_id, c.ChannelAnswered(), 3.1) == []
    assert kinds(b.handle(call.call_id, c.MediaConnected(), 3.5)) == ["StartUnicast"]
    assert b.call_state_of("bob") == CALL_STATE_IN_CALL


@pytest.mark.parametrize(
    ("event", "cause"),
    [
        (c.InvitationRefused('{"Cmd":"Calling","Reason":"calling"}'), "USER_BUSY"),
        (c.InvitationRefused("no thanks"), "CALL_REJECTED"),
        (c.InvitationFailed("PEER_OFFLINE"), "USER_NOT_REGISTERED"),
        (c.InvitationFailed("PEER_NO_RESPONSE"), "NO_USER_RESPONSE"),
        (c.InvitationFailed("INVITATION_EXPIRE"), "NO_ANSWER"),
    ],
)
def test_refusal_and_failures_hang_up_with_matching_cause(event: c.Event, cause: str) -> None:
    b = book()
    arrive(b)
    call = b.by_uuid("uuid-1")
    assert call is not None
    actions = b.handle(call.call_id, event, 5.0)
    hangup = only(actions, c.Hangup)
    assert isinstance(hangup, c.Hangup) and hangup.cause == cause
    assert not any(isinstance(a, c.CancelInvitation) for a in actions)


def test_caller_hanging_up_while_browser_rings_cancels_the_invitation() -> None:
    b = book()
    arrive(b)
    call = b.by_uuid("uuid-1")
    assert call is not None
    actions = b.handle(call.call_id, c.ChannelHungUp("ORIGINATOR_CANCEL"), 4.0)
    assert kinds(actions) == ["CloseMedia", "CancelInvitation", "CallEnded"]
    assert len(b) == 0


def test_sip_hangup_in_call_tells_the_browser_from_the_gateway_identity() -> None:
    b = book()
    arrive(b)
    call = b.by_uuid("uuid-1")
    assert call is not None
    b.handle(call.call_id, c.InvitationAccepted(), 1.0)
    b.handle(call.call_id, c.ChannelAnswered(), 1.1)
    actions = b.handle(call.call_id, c.ChannelHungUp("NORMAL_CLEARING"), 9.0)
    message = only(actions, c.SendPeerMessage)
    assert isinstance(message, c.SendPeerMessage)
    assert (message.sender, message.to, message.text) == ("gateway", "bob", '{"Cmd":"EndCall"}')


@pytest.mark.parametrize(
    ("connected", "expected"), [(False, "RefuseInvitation"), (True, "SendPeerMessage")]
)
def test_gateway_error_ends_an_rtc_call_and_tells_the_caller(
    connected: bool, expected: str
) -> None:
    b = book()
    call = start_rtc_call(b)
    if connected:
        b.handle(call.call_id, c.ChannelAnswered(), 1.0)
    actions = b.handle(call.call_id, c.GatewayError("esl unicast failed"), 2.0)
    assert kinds(actions) == ["CloseMedia", expected, "Hangup"]
    assert actions[2].cause == "NORMAL_TEMPORARY_FAILURE"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("accepted", "expected"), [(False, "CancelInvitation"), (True, "SendPeerMessage")]
)
def test_gateway_error_ends_a_sip_call_and_tells_the_callee(accepted: bool, expected: str) -> None:
    b = book()
    arrive(b)
    call = b.by_uuid("uuid-1")
    assert call is not None
    if accepted:
        b.handle(call.call_id, c.InvitationAccepted(), 1.0)
    actions = b.handle(call.call_id, c.GatewayError("esl answer failed"), 2.0)
    assert kinds(actions) == ["CloseMedia", expected, "Hangup"]


def test_shutdown_ends_every_call() -> None:
    b = book()
    arrive(b)
    start_rtc_call(b)
    actions = b.shutdown(1.0)
    assert sum(isinstance(a, c.Hangup) for a in actions) == 2
    assert all(call.state is c.State.ENDING for call in b)
    assert b.pool.busy() == {}


# -- every state x event ----------------------------------------------------------------

EVENTS: list[c.Event] = [
    c.OriginateFailed("USER_BUSY"),
    c.ChannelRinging(),
    c.ChannelEarlyMedia(),
    c.ChannelAnswered(),
    c.ChannelMediaReady(),
    c.ChannelHungUp("NORMAL_CLEARING"),
    c.InvitationAccepted(),
    c.InvitationRefused(),
    c.InvitationCanceled(),
    c.InvitationFailed("PEER_OFFLINE"),
    c.PeerEndCall(),
    c.WebUserGone(),
    c.MediaConnected(),
    c.MediaFailed("media_timeout"),
    c.Shutdown(),
    c.GatewayError("esl answer failed"),
]


def new_call(direction: str) -> tuple[CallBook, c.Call]:
    b = book()
    if direction == "rtc":
        return b, start_rtc_call(b)
    arrive(b)
    found = b.by_uuid("uuid-1")
    assert found is not None
    return b, found


@pytest.mark.parametrize("direction", ["rtc", "sip"])
@pytest.mark.parametrize("state", list(c.State))
@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_state_event_pair_is_handled_or_ignored(
    direction: str, state: c.State, event: c.Event
) -> None:
    _book, call = new_call(direction)
    call.state = state
    table = call.TABLE
    actions = call.handle(event, 1.0)
    listed = (state, type(event)) in table or (state, type(event)) in c._COMMON
    if listed:
        assert not any(isinstance(a, c.Ignored) for a in actions)
    else:
        assert actions == [c.Ignored(call.call_id, state.value, type(event).__name__)]
        assert call.state is state


@settings(max_examples=examples(300), deadline=None)
@given(
    direction=st.sampled_from(["rtc", "sip"]),
    events=st.lists(st.sampled_from(EVENTS), max_size=12),
)
def test_any_event_sequence_ends_cleanly(direction: str, events: list[c.Event]) -> None:
    """Whatever arrives, in any order: unicast never before the channel is ready, never
    twice; after FreeSWITCH's hangup and the grace timers the call is gone and its
    number free."""
    b, call = new_call(direction)
    now = 0.0
    media_ready = False
    unicasts = 0
    for event in events:
        now += 1.0
        media_ready = media_ready or isinstance(event, c.ChannelMediaReady)
        for action in b.handle(call.call_id, event, now):
            if isinstance(action, c.StartUnicast):
                assert media_ready
                unicasts += 1
    assert unicasts <= 1
    b.handle(call.call_id, c.Shutdown(), now + 1)
    b.handle(call.call_id, c.ChannelHungUp("NORMAL_CLEARING"), now + 2)
    b.poll(now + 100)
    b.poll(now + 200)
    assert len(b) == 0
    assert b.pool.busy() == {}
    assert b.call_state_of("alice") == CALL_STATE_IDLE
    assert b.call_state_of("bob") == CALL_STATE_IDLE
