"""What each call kind of core/call.py starts with and how it moves until it ends (the
endings are tests/test_call_endings.py): the exact first actions and the fields the
adapters read (status, API, CDR variables), the progress messages, the accept texts,
when unicast may start, and the hangup-confirmation timer. No I/O, fake ``now``.
"""

from __future__ import annotations

import pytest
from test_call_endings import GRACE, PATHS, fresh, reach

from esl_bridge.core import call as c

RINGING_TEXT = '{"Cmd":"SipState","State":"ringing"}'
EARLY_TEXT = '{"Cmd":"SipState","State":"early_media"}'
ANSWERED_TEXT = '{"Cmd":"SipState","State":"answered"}'


def test_a_call_to_a_number_dials_it_and_reports_progress_until_the_answer() -> None:
    call = reach("rtc", "originating")
    assert (call.web_uid, call.number, call.chan_id) == ("alice", "1005", "ch-a")
    assert (call.direction, call.started_at) == (c.Direction.RTC_TO_SIP, 0.0)
    assert call.handle(c.ChannelRinging(), 1.0) == [
        c.SendPeerMessage(call.call_id, "1005", "alice", RINGING_TEXT)
    ]
    # Early media opens the browser's leg so that it hears the phone's ringback.
    assert call.handle(c.ChannelEarlyMedia(), 2.0) == [
        c.OpenMedia(call.call_id, "ch-a"),
        c.SendPeerMessage(call.call_id, "1005", "alice", EARLY_TEXT),
    ]
    assert call.state is c.State.EARLY_MEDIA
    response = '{"Mode":1,"Conference":false,"ChanId":"ch-a","SipNumber":"1005","SipData":""}'
    assert call.handle(c.ChannelAnswered(), 3.0) == [
        c.OpenMedia(call.call_id, "ch-a"),
        c.AcceptInvitation(call.call_id, "alice", "1005", response),
    ]
    assert (call.state, call.answered_at) == (c.State.CONNECTED, 3.0)


def test_a_phone_call_starts_with_its_variables_ringback_and_invitation() -> None:
    b = fresh()
    actions = b.sip_call_arrived(
        uuid="u-sip",
        callee="bob",
        caller_number="1001",
        cus_data="k=v",
        callee_online=True,
        now=4.0,
    )
    call = b.by_uuid("u-sip")
    assert call is not None and call.started_at == 4.0 and call.state is c.State.RINGING
    assert (call.web_uid, call.number, call.peer_uid) == ("bob", "1001", "gateway")
    assert call.direction is c.Direction.SIP_TO_RTC
    content = (
        f'{{"Mode":1,"Conference":false,"ChanId":"{call.chan_id}",'
        '"DisplayName":"1001","SipData":"k=v"}'
    )
    assert actions == [
        c.SetChannelVars(
            call.call_id,
            "u-sip",
            {
                c.CALL_ID_VAR: call.call_id,
                c.DIRECTION_VAR: "sip2rtc",
                c.UID_VAR: "bob",
                c.APPID_VAR: "app",
                c.NUMBER_VAR: "1001",
            },
        ),
        c.SetChannelVar(call.call_id, "u-sip", "rtp_autoflush", "true"),
        c.PreAnswer(call.call_id, "u-sip"),
        c.PlayRingback(call.call_id, "u-sip"),
        c.SendInvitation(call.call_id, "bob", content),
    ]
    # Accepted: ringback stops, the leg opens, the channel is answered.
    assert call.handle(c.InvitationAccepted(), 5.0) == [
        c.StopRingback(call.call_id, "u-sip"),
        c.OpenMedia(call.call_id, call.chan_id),
        c.Answer(call.call_id, "u-sip"),
    ]
    assert call.state is c.State.ANSWERING and call.answered_at is None
    assert call.handle(c.ChannelAnswered(), 6.0) == []
    assert (call.state, call.answered_at) == (c.State.CONNECTED, 6.0)


def test_click_to_call_web_first_invites_then_dials_on_accept() -> None:
    call = reach("web_first", "inviting")
    assert isinstance(call, c.ClickToCall) and call.order == "web_first"
    assert (call.web_uid, call.number, call.started_at) == ("carol", "1006", 0.0)
    assert call.direction is c.Direction.RTC_TO_SIP and call.chan_id.startswith("ch-")
    content = f'{{"Mode":1,"Conference":false,"ChanId":"{call.chan_id}","DisplayName":"1006"}}'
    assert call._invite() == c.SendInvitation(call.call_id, "carol", content, sender="1006")
    actions = call.handle(c.InvitationAccepted(), 2.0)
    assert actions == [
        c.OpenMedia(call.call_id, call.chan_id),
        c.Originate(call.call_id, call.uuid, "user/1006@127.0.0.1", dict(call.variables)),
    ]
    assert call.variables["origination_uuid"] == call.uuid
    assert call.variables["origination_caller_id_number"] == "carol"
    assert call.state is c.State.ORIGINATING and call.channel_alive
    assert call.handle(c.ChannelRinging(), 3.0) == [
        c.SendPeerMessage(call.call_id, "1006", "carol", RINGING_TEXT)
    ]
    assert call.handle(c.ChannelEarlyMedia(), 3.5) == [
        c.SendPeerMessage(call.call_id, "1006", "carol", EARLY_TEXT)
    ]
    assert call.handle(c.ChannelAnswered(), 4.0) == [
        c.SendPeerMessage(call.call_id, "1006", "carol", ANSWERED_TEXT)
    ]
    assert (call.state, call.answered_at) == (c.State.CONNECTED, 4.0)


def test_click_to_call_number_first_dials_first_and_tells_the_web_user_nothing() -> None:
    b = fresh()
    call_id, _, actions = b.click_to_call(
        "carol", "1006", callee_online=True, now=2.0, number_first=True
    )
    call = b.get(call_id)
    assert isinstance(call, c.NumberFirstClickToCall) and call.order == "number_first"
    assert actions == [
        c.Originate(call_id, call.uuid, "user/1006@127.0.0.1", dict(call.variables)),
    ]
    assert call.variables["origination_uuid"] == call.uuid
    assert (call.state, call.started_at, call.channel_alive) == (c.State.ORIGINATING, 2.0, True)
    assert call.handle(c.ChannelRinging(), 3.0) == []
    assert call.state is c.State.RINGING
    assert call.handle(c.ChannelEarlyMedia(), 4.0) == []
    assert call.state is c.State.EARLY_MEDIA


@pytest.mark.parametrize("state", ["originating", "ringing"])
def test_number_first_early_media_only_changes_the_stage(state: str) -> None:
    call = reach("number_first", state)
    assert call.handle(c.ChannelEarlyMedia(), 3.0) == []
    assert call.state is c.State.EARLY_MEDIA


@pytest.mark.parametrize("state", ["originating", "ringing", "early_media"])
def test_number_first_answer_plays_ringback_and_invites_the_web_user(state: str) -> None:
    call = reach("number_first", state)
    content = f'{{"Mode":1,"Conference":false,"ChanId":"{call.chan_id}","DisplayName":"1006"}}'
    assert call.handle(c.ChannelAnswered(), 5.0) == [
        c.PlayRingback(call.call_id, call.uuid),
        c.SendInvitation(call.call_id, "carol", content, sender="1006"),
    ]
    assert call.state is c.State.INVITING and call.answered_at is None
    assert call.handle(c.InvitationAccepted(), 6.0) == [
        c.StopRingback(call.call_id, call.uuid),
        c.OpenMedia(call.call_id, call.chan_id),
        c.SendPeerMessage(call.call_id, "1006", "carol", ANSWERED_TEXT),
    ]
    assert (call.state, call.answered_at) == (c.State.CONNECTED, 6.0)


def test_a_number_invited_into_a_room_is_dialled_into_it_and_accepted_as_a_member() -> None:
    b = fresh()
    [originate] = b.invitation_to_number(
        "alice", "1007", '{"ChanId":"r1"}', 3.0, room=("eb-app-r1", "wb")
    )
    assert isinstance(originate, c.Originate)
    call = b.by_uuid(originate.uuid)
    assert isinstance(call, c.ConfSipCall)
    assert originate == c.Originate(
        call.call_id,
        call.uuid,
        "user/1007@127.0.0.1",
        originate.variables,
        app="&conference(eb-app-r1@wb)",
    )
    assert originate.variables["origination_uuid"] == call.uuid
    assert originate.variables["origination_caller_id_name"] == "alice"
    assert (call.web_uid, call.number, call.chan_id, call.started_at) == (
        "alice",
        "1007",
        "r1",
        3.0,
    )
    assert (call.state, call.direction) == (c.State.ORIGINATING, c.Direction.RTC_TO_SIP)
    assert call.handle(c.ChannelRinging(), 4.0) == [
        c.SendPeerMessage(call.call_id, "1007", "alice", RINGING_TEXT)
    ]
    # No media leg: the phone's audio is the room's.
    assert call.handle(c.ChannelEarlyMedia(), 4.5) == [
        c.SendPeerMessage(call.call_id, "1007", "alice", EARLY_TEXT)
    ]
    response = '{"Mode":1,"Conference":true,"ChanId":"r1","SipNumber":"1007"}'
    assert call.handle(c.ChannelAnswered(), 5.0) == [
        c.AcceptInvitation(call.call_id, "alice", "1007", response)
    ]
    assert (call.state, call.answered_at) == (c.State.CONNECTED, 5.0)
    # Once answered, the inviter going away leaves the phone in the room.
    assert call.handle(c.WebUserGone(), 6.0) == [
        c.Ignored(call.call_id, "connected", "WebUserGone")
    ]
    assert call.handle(c.ChannelMediaReady(), 6.0) == [
        c.Ignored(call.call_id, "connected", "ChannelMediaReady")
    ]


def test_a_phone_dialling_a_room_is_marked_and_joined_to_it() -> None:
    call, actions = fresh().conference_dial_in(
        uuid="u-dial", caller_number="1001", chan_id="r1", target="eb-app-r1@wb", now=4.0
    )
    assert isinstance(call, c.ConfDialInCall)
    assert actions == [
        c.SetChannelVars(
            call.call_id,
            "u-dial",
            {
                c.CALL_ID_VAR: call.call_id,
                c.DIRECTION_VAR: "conference",
                c.APPID_VAR: "app",
                c.NUMBER_VAR: "1001",
            },
        ),
        c.JoinRoom(call.call_id, "u-dial", "eb-app-r1@wb"),
    ]
    assert (call.web_uid, call.number, call.started_at, call.answered_at) == ("", "1001", 4.0, 4.0)
    assert (call.state, call.direction) == (c.State.CONNECTED, c.Direction.SIP_TO_RTC)


def test_a_web_member_opens_its_leg_then_dials_its_loopback_pair() -> None:
    call, actions = fresh().conference_join("dave", "r1", "Dave", "eb-app-r1", "wb", 3.0)
    assert isinstance(call, c.ConfWebCall)
    [_, originate] = actions
    assert isinstance(originate, c.Originate)
    assert actions == [
        c.OpenMedia(call.call_id, "r1"),
        c.Originate(
            call.call_id,
            call.uuid,
            "loopback/conference:eb-app-r1@wb/default/inline",
            originate.variables,
        ),
    ]
    assert originate.variables["origination_uuid"] == call.uuid
    assert (call.web_uid, call.number, call.room, call.started_at) == ("dave", "", "eb-app-r1", 3.0)
    assert (call.state, call.direction) == (c.State.ORIGINATING, c.Direction.CONFERENCE)
    assert call.handle(c.ChannelAnswered(), 5.0) == []
    assert (call.state, call.answered_at) == (c.State.CONNECTED, 5.0)


# -- when unicast starts -----------------------------------------------------------------

# The events that take a call from a state to CONNECTED.
TO_CONNECTED: dict[str, dict[str, list[c.Event]]] = {
    "rtc": {s: [c.ChannelAnswered()] for s in ("originating", "ringing", "early_media")},
    "sip": {"ringing": [c.InvitationAccepted(), c.ChannelAnswered()],
            "answering": [c.ChannelAnswered()]},
    "web_first": {s: [c.ChannelAnswered()] for s in ("originating", "ringing", "early_media")},
    "number_first": {
        **{s: [c.ChannelAnswered(), c.InvitationAccepted()]
           for s in ("originating", "ringing", "early_media")},
        "inviting": [c.InvitationAccepted()],
    },
    "conf_web": {"originating": [c.ChannelAnswered()]},
}  # fmt: skip
MEDIA_READY_STATES = [
    (kind, state) for kind, states in TO_CONNECTED.items() for state in [*states, "connected"]
]


@pytest.mark.parametrize(("kind", "state"), MEDIA_READY_STATES)
def test_the_channel_ready_in_any_state_lets_unicast_start_once_the_leg_connects(
    kind: str, state: str
) -> None:
    call = reach(kind, state)
    assert call.handle(c.ChannelMediaReady(), 2.0) == []  # no request yet
    for event in TO_CONNECTED[kind].get(state, []):
        call.handle(event, 3.0)
    assert call.state is c.State.CONNECTED
    assert call.handle(c.MediaConnected(), 4.0) == [c.StartUnicast(call.call_id, call.uuid)]
    assert call.media_connected
    # An ICE restart connects again: unicast is not started twice.
    assert call.handle(c.MediaConnected(), 5.0) == []


MEDIA_CONNECTED_STATES = [
    ("rtc", "early_media"),
    ("rtc", "connected"),
    ("sip", "answering"),
    ("sip", "connected"),
    ("web_first", "originating"),
    ("web_first", "ringing"),
    ("web_first", "early_media"),
    ("web_first", "connected"),
    ("number_first", "connected"),
    ("conf_web", "originating"),
    ("conf_web", "connected"),
]


@pytest.mark.parametrize(("kind", "state"), MEDIA_CONNECTED_STATES)
def test_the_leg_connected_first_waits_for_the_channel(kind: str, state: str) -> None:
    call = reach(kind, state)
    assert call.handle(c.MediaConnected(), 2.0) == []
    assert call.media_connected
    assert call.handle(c.ChannelMediaReady(), 3.0) == [c.StartUnicast(call.call_id, call.uuid)]
    assert call.handle(c.ChannelMediaReady(), 4.0) == []


# -- the hangup-confirmation timer -------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(PATHS))
def test_an_unconfirmed_hangup_is_sent_again_with_its_cause_then_the_call_ends(
    kind: str,
) -> None:
    call = reach(kind, "connected")
    [*_, hangup] = call.handle(c.Shutdown(), 10.0)
    assert hangup == c.Hangup(call.call_id, call.uuid, "SYSTEM_SHUTDOWN")
    assert call.poll(10.0 + GRACE - 0.1) == []
    assert call.poll(10.0 + GRACE) == [c.Hangup(call.call_id, call.uuid, "SYSTEM_SHUTDOWN")]
    assert call.next_deadline() == 10.0 + 2 * GRACE
    assert call.poll(10.0 + 2 * GRACE - 0.1) == []
    assert call.poll(10.0 + 2 * GRACE) == [
        c.CallEnded(call.call_id, "shutdown", "SYSTEM_SHUTDOWN", forced=True)
    ]
    assert call.is_over and call.next_deadline() is None
    assert call.poll(100.0) == []


def test_a_live_call_has_no_timer_to_fire() -> None:
    call = reach("rtc", "connected")
    assert call.next_deadline() is None
    assert call.poll(1000.0) == []
    assert call.state is c.State.CONNECTED


# -- the helpers adapters call ------------------------------------------------------------


def test_a_sip_state_carries_its_cause_when_given() -> None:
    assert c.sip_state_message("ringing") == RINGING_TEXT
    assert c.sip_state_message("ringing", "") == RINGING_TEXT
    assert (
        c.sip_state_message("early_media", "NORMAL_CLEARING")
        == '{"Cmd":"SipState","State":"early_media","Cause":"NORMAL_CLEARING"}'
    )


def test_unsafe_characters_of_a_channel_value_become_one_underscore_each() -> None:
    assert c.channel_var_value("a b{c}${x};d=e'f") == "a_b_c___x__d_e_f"
    assert c.channel_var_value("+1-555.0#*:@x_y") == "+1-555.0#*:@x_y"
    assert c.channel_var_value("é" * 70) == "_" * c.CHANNEL_VAR_MAX
