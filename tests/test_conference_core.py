"""The conference room table and the two conference call kinds, without I/O (issue 14).

Events are fed as FreeSWITCH sends them (the recorded conference::maintenance headers),
including late, twice and out of order; every request takes ``now``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from esl_bridge.core import call as c
from esl_bridge.core import conference as conf
from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.numbers import NumberPool

APPID = "app"


def table(**settings: Any) -> conf.RoomTable:
    return conf.RoomTable(conf.ConferenceSettings(**settings))


def seat(t: conf.RoomTable, uid: str, chan: str = "r1", n: int = 0) -> conf.Room:
    joined = t.join(APPID, chan, uid, 0.0)
    assert isinstance(joined, conf.Joined), joined
    return t.seat(joined, uid, uid.title(), f"call-{uid}", f"a-{uid}-{n}")


def event(room: str, action: str, member: int | None = None, **headers: str) -> dict[str, str]:
    out = {"Event-Subclass": conf.SUBCLASS, "Conference-Name": room, "Action": action}
    if member is not None:
        out["Member-ID"] = str(member)
    return {**out, **headers}


def add(room: str, member: int, uuid: str, number: str, loopback: bool = True) -> dict[str, str]:
    name = f"loopback/conference:{room}@wideband-b" if loopback else f"sofia/internal/{number}"
    return event(
        room,
        "add-member",
        member,
        **{
            "Unique-ID": uuid,
            "Channel-Name": name,
            "Caller-Caller-ID-Number": number,
            "Caller-Caller-ID-Name": number,
            "Speak": "true",
        },
    )


def told(actions: list[conf.ConfAction]) -> dict[str, dict[str, Any]]:
    return {a.to: json.loads(a.text) for a in actions if isinstance(a, conf.Tell)}


def test_room_names_follow_the_protocol() -> None:
    assert conf.room_name("app", "room-1_A") == "eb-app-room-1_A"
    odd = "a room/with spaces"
    digest = __import__("hashlib").sha256(odd.encode()).hexdigest()[:16]
    assert conf.room_name("app", odd) == f"eb-app-h{digest}"
    assert conf.room_name("app", "x" * 41).startswith("eb-app-h")
    assert conf.room_name("app", "x" * 40) == "eb-app-" + "x" * 40


def test_the_creator_is_moderator_and_members_come_from_the_switch() -> None:
    t = table()
    room = seat(t, "alice")
    assert room.moderator == "alice" and room.name == "eb-app-r1"
    seat(t, "bob")
    t.loopback_partner("call-alice", "b-alice")
    # alice's member by its B leg; bob's by the caller number of a loopback B leg.
    first = told(t.maintenance(add(room.name, 7, "b-alice", "alice")))
    assert set(first) == {"alice", "bob"}
    second = told(t.maintenance(add(room.name, 8, "b-bob", "bob")))
    members = second["alice"]["Members"]
    assert [(m["Id"], m["Uid"], m["Kind"], m["Moderator"], m["Self"]) for m in members] == [
        (7, "alice", "web", True, True),
        (8, "bob", "web", False, False),
    ]
    assert second["bob"]["Event"] == "join" and second["bob"]["Member"] == 8
    assert [m["Self"] for m in second["bob"]["Members"]] == [False, True]
    # A phone (not a loopback leg) with a web uid's number is a sip member, not that seat.
    third = told(t.maintenance(add(room.name, 9, "phone-1", "alice", loopback=False)))
    assert third["alice"]["Members"][-1]["Kind"] == "sip"


def test_duplicate_and_late_events_change_nothing() -> None:
    t = table()
    room = seat(t, "alice")
    seat(t, "bob")
    assert t.maintenance(add(room.name, 7, "b-alice", "alice"))
    assert t.maintenance(add(room.name, 7, "b-alice", "alice")) == []  # twice
    assert t.maintenance(add(room.name, 8, "b-bob", "bob"))
    assert t.maintenance(event(room.name, "del-member", 8))
    assert t.maintenance(event(room.name, "del-member", 8)) == []  # twice
    assert t.maintenance(add(room.name, 8, "b-bob", "bob")) == []  # late, after its end
    assert list(room.members) == [7]
    # Events of unknown members, of unknown rooms, without ids or of another subclass.
    assert t.maintenance(event(room.name, "mute-member", 99)) == []
    assert t.maintenance(event("eb-app-nosuch", "add-member", 5)) == []
    assert t.maintenance(event(room.name, "start-talking")) == []
    assert t.maintenance({**event(room.name, "add-member", 11), "Event-Subclass": "x::y"}) == []
    # Talking and mute only tell on a change.
    assert told(t.maintenance(event(room.name, "start-talking", 7)))["alice"]["Event"] == "talking"
    assert t.maintenance(event(room.name, "start-talking", 7)) == []
    assert told(t.maintenance(event(room.name, "stop-talking", 7)))["alice"]["Event"] == "silent"
    assert told(t.maintenance(event(room.name, "mute-member", 7)))["alice"]["Members"][0]["Muted"]
    assert t.maintenance(event(room.name, "mute-member", 7)) == []


def test_limits_refuse_with_the_protocol_reasons() -> None:
    t = table(max_members=2, max_rooms_per_appid=2)
    seat(t, "alice", "r1")
    seat(t, "bob", "r1")
    assert t.join(APPID, "r1", "carol", 0.0) == conf.ROOM_FULL
    assert t.invite(APPID, "r1", "alice", 0.0) == conf.ROOM_FULL
    assert t.join(APPID, "r1", "alice", 0.0) == conf.ALREADY_JOINED
    seat(t, "carol", "r2")
    assert t.join(APPID, "r3", "dave", 0.0) == conf.TOO_MANY_ROOMS
    assert t.invite(APPID, "r3", "dave", 0.0) == conf.TOO_MANY_ROOMS
    # Another appid has its own rooms (and the same ChanId there is another room).
    other = t.join("other", "r1", "erin", 0.0)
    assert isinstance(other, conf.Joined) and other.created
    assert table(on=False).join(APPID, "r1", "alice", 0.0) == conf.CONFERENCE_OFF


def test_moderator_rules_for_mute_kick_and_end() -> None:
    t = table()
    room = seat(t, "alice")
    seat(t, "bob")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    t.maintenance(add(room.name, 8, "b-bob", "bob"))
    # Self-mute by anyone; muting another only by the moderator.
    assert t.mute(APPID, "r1", "bob", True, None) == [
        conf.ConfApi(room.name, ("mute", "8"), "bob", "r1")
    ]
    assert t.mute(APPID, "r1", "bob", True, 8) == [
        conf.ConfApi(room.name, ("mute", "8"), "bob", "r1")
    ]
    assert told(t.mute(APPID, "r1", "bob", True, 7))["bob"]["Reason"] == conf.NOT_MODERATOR
    assert t.mute(APPID, "r1", "alice", False, 8) == [
        conf.ConfApi(room.name, ("unmute", "8"), "alice", "r1")
    ]
    assert told(t.kick(APPID, "r1", "bob", 7))["bob"]["Reason"] == conf.NOT_MODERATOR
    assert told(t.kick(APPID, "r1", "alice", 99))["alice"]["Reason"] == conf.NO_SUCH_MEMBER
    assert t.kick(APPID, "r1", "alice", 8) == [
        conf.ConfApi(room.name, ("kick", "8"), "alice", "r1")
    ]
    assert told(t.end(APPID, "r1", "bob"))["bob"]["Reason"] == conf.NOT_MODERATOR
    assert told(t.end(APPID, "r1", "carol"))["carol"]["Reason"] == conf.NOT_IN_ROOM
    assert told(t.mute(APPID, "nosuch", "alice", True, None))["alice"]["Reason"] == (
        conf.NOT_IN_ROOM
    )
    # A failed command is answered to whoever asked.
    failed = t.api_failed(conf.ConfApi(room.name, ("kick", "8"), "alice", "r1"))
    assert told(failed)["alice"] == {"Cmd": "ConfError", "ChanId": "r1", "Reason": "switch_error"}
    assert t.api_failed(conf.ConfApi(room.name, ("kick", "8"))) == []


def test_a_kick_ends_the_web_members_call_and_the_end_every_leg() -> None:
    t = table()
    room = seat(t, "alice")
    seat(t, "bob")
    joined = t.invite(APPID, "r1", "alice", 0.0)
    assert isinstance(joined, conf.Joined) and not joined.created
    t.add_invitee(joined, "call-1000", "phone-1000", "1000")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    t.maintenance(add(room.name, 8, "b-bob", "bob"))
    t.maintenance(add(room.name, 9, "phone-1000", "alice", loopback=False))
    assert room.members[9].uid == "1000" and room.members[9].kind == "sip"
    t.maintenance(add(room.name, 10, "fscli-phone", "5555", loopback=False))
    kicked = t.maintenance(event(room.name, "kick-member", 8))
    assert conf.ToCall("call-bob", "kicked") in kicked
    assert told(kicked)["alice"]["Event"] == "kick"
    t.maintenance(event(room.name, "del-member", 8))
    t.call_ended("call-bob")
    ended = t.end(APPID, "r1", "alice")
    assert conf.ToCall("call-alice", "room_ended") in ended
    assert conf.ToCall("call-1000", "room_ended") in ended
    # The member the gateway does not own (added from fs_cli) is kicked.
    assert conf.ConfApi(room.name, ("kick", "10")) in ended
    assert t.join(APPID, "r1", "carol", 0.0) == conf.ROOM_FULL  # ending: nobody joins
    for member in (7, 9, 10):
        t.maintenance(event(room.name, "del-member", member))
    t.call_ended("call-alice")
    t.call_ended("call-1000")
    assert len(t) == 0 and set(t.held().values()) == {0}


def test_a_room_the_switch_destroyed_is_forgotten_once_its_calls_end() -> None:
    t = table()
    room = seat(t, "alice")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    assert t.maintenance(event(room.name, "conference-destroy")) == []
    assert room.members == {} and len(t) == 1  # alice's call still holds its seat
    assert t.maintenance(add(room.name, 7, "b-alice", "alice")) == []  # late
    t.call_ended("call-alice")
    assert len(t) == 0 and set(t.held().values()) == {0}
    assert t.maintenance(event(room.name, "del-member", 7)) == []


def test_dial_in_codes_are_unique_among_live_rooms_and_freed() -> None:
    t = table()
    codes = {seat(t, f"u{i}", f"room{i}").dial_code for i in range(15)}
    assert len(codes) == 15 and all(len(code) == 4 and code.isdigit() for code in codes)
    room = t.get(APPID, "room0")
    assert room is not None and t.dial_in(room) == f"9{room.dial_code}"
    assert t.dial_in_check(room.dial_code) is room
    assert t.dial_in_check("99999") == "NO_ROUTE_DESTINATION"
    t.call_ended("call-u0")
    assert t.dial_in_check(room.dial_code) == "NO_ROUTE_DESTINATION"
    full = table(max_members=2)
    r = seat(full, "a")
    seat(full, "b")
    assert full.dial_in_check(r.dial_code) == "CALL_REJECTED"
    off = table(dialin_prefix="")
    quiet = seat(off, "a")
    assert quiet.dial_code == "" and off.dial_in(quiet) == ""


# ---------------------------------------------------------------------------------------
# The call kinds.

SETTINGS = c.CallSettings(gateway_uid="gateway", hangup_grace=5.0, appid=APPID)


def book(max_calls: int = 10, **settings: float) -> CallBook:
    return CallBook(
        BookSettings(
            rtm2sip_on=True,
            proxy_on=True,
            sip_domain="example.invalid",
            gateway_uid="gateway",
            max_calls=max_calls,
            appid=APPID,
            **settings,  # type: ignore[arg-type]
        ),
        NumberPool(["1000", "1001"]),
    )


def test_web_member_leg_originates_a_loopback_pair_and_unicasts_only_after_answer() -> None:
    b = book()
    call, actions = b.conference_join("alice", "r1", "Alice", "eb-app-r1", "wideband", 0.0)
    assert call is not None
    originate = actions[1]
    assert isinstance(actions[0], c.OpenMedia) and isinstance(originate, c.Originate)
    assert originate.destination == "loopback/conference:eb-app-r1@wideband/default/inline"
    assert originate.app == "&park()"
    assert originate.variables["origination_caller_id_number"] == "alice"
    assert originate.variables["origination_uuid"] == call.uuid
    assert originate.variables["esl_bridge_direction"] == "conference"
    assert call.peer_uid == "gateway"
    # The browser connects before the A leg answered: no unicast yet (the crash rule).
    assert b.handle(call.call_id, c.MediaConnected(), 1.0) == []
    assert b.handle(call.call_id, c.ChannelAnswered(), 1.1) == []
    started = b.handle(call.call_id, c.ChannelMediaReady(), 1.1)
    assert started == [c.StartUnicast(call.call_id, call.uuid)]
    # Kicked: EndCall with the reason, the A leg hung up (its B leg goes with it).
    ended = b.handle(call.call_id, c.RoomRemoved("kicked"), 2.0)
    tell = [a for a in ended if isinstance(a, c.SendPeerMessage)]
    assert json.loads(tell[0].text) == {"Cmd": "EndCall", "ChanId": "r1", "Reason": "kicked"}
    assert tell[0].sender == "gateway"
    assert c.Hangup(call.call_id, call.uuid, "NORMAL_CLEARING") in ended
    assert not any(isinstance(a, c.ReleaseNumber) for a in ended)
    done = b.handle(call.call_id, c.ChannelHungUp("NORMAL_CLEARING"), 2.1)
    assert isinstance(done[-1], c.CallEnded) and len(b) == 0


@pytest.mark.parametrize(
    ("event", "reason", "told"),
    [
        (c.PeerEndCall(), "left", False),
        (c.WebUserGone(), "web_gone", False),
        (c.MediaFailed("media_timeout"), "media_timeout", True),
        (c.Shutdown(), "shutdown", True),
        (c.ChannelHungUp("NORMAL_CLEARING"), "switch_error", True),
        (c.OriginateFailed("NORMAL_TEMPORARY_FAILURE"), "switch_error", True),
    ],
)
def test_every_way_a_web_member_leg_ends(event: c.Event, reason: str, told: bool) -> None:
    b = book()
    call, _ = b.conference_join("alice", "r1", "", "eb-app-r1", "wideband", 0.0)
    assert call is not None
    actions = b.handle(call.call_id, event, 1.0)
    assert any(isinstance(a, c.CloseMedia) for a in actions)
    tells = [json.loads(a.text) for a in actions if isinstance(a, c.SendPeerMessage)]
    assert tells == ([{"Cmd": "EndCall", "ChanId": "r1", "Reason": reason}] if told else [])
    if not isinstance(event, c.ChannelHungUp | c.OriginateFailed):
        assert any(isinstance(a, c.Hangup) for a in actions)
        b.poll(100.0)
        b.poll(200.0)  # no confirmation: killed again, then forgotten
    assert len(b) == 0


def test_a_web_member_hung_up_from_the_api_is_told_a_documented_reason() -> None:
    """DELETE /calls/<id> of a web member's leg: EndCall ``kicked`` (an operator removed
    it; docs/protocol.rst's reasons), never ``left``, which the SDK reads as the user's own
    leaving; the call still ends as ``api_hangup`` for webhooks."""
    b = book()
    call, _ = b.conference_join("alice", "r1", "", "eb-app-r1", "wideband", 0.0)
    assert call is not None
    actions = b.handle(call.call_id, c.ApiHangup(), 1.0)
    tells = [json.loads(a.text) for a in actions if isinstance(a, c.SendPeerMessage)]
    assert tells == [{"Cmd": "EndCall", "ChanId": "r1", "Reason": "kicked"}]
    assert call.ended_reason == "api_hangup"
    assert any(isinstance(a, c.Hangup) for a in actions)


def test_a_sip_invitee_is_dialled_into_the_room_and_accepted_on_answer() -> None:
    b = book()
    content = json.dumps({"Mode": 1, "Conference": True, "ChanId": "r1"})
    actions = b.invitation_to_number("alice", "1000", content, 0.0, room=("eb-app-r1", "wb"))
    [originate] = actions
    assert isinstance(originate, c.Originate)
    assert originate.app == "&conference(eb-app-r1@wb)"
    assert originate.variables["origination_caller_id_number"] == "alice"
    assert "1000" in b.pool.busy()
    # A second invitation into the same room (same ChanId) is not a bad channel id.
    again = b.invitation_to_number("alice", "1001", content, 0.0, room=("eb-app-r1", "wb"))
    assert isinstance(again[0], c.Originate)
    call = b.by_uuid(originate.uuid)
    assert call is not None
    early = b.handle(call.call_id, c.ChannelEarlyMedia(), 0.5)
    assert not any(isinstance(a, c.OpenMedia) for a in early)  # no media leg of its own
    [accept] = b.handle(call.call_id, c.ChannelAnswered(), 1.0)
    assert isinstance(accept, c.AcceptInvitation)
    assert json.loads(accept.response) == {
        "Mode": 1,
        "Conference": True,
        "ChanId": "r1",
        "SipNumber": "1000",
    }
    assert b.handle(call.call_id, c.WebUserGone(), 2.0)[0].__class__ is c.Ignored
    # Kicked from fs_cli: its conference application returns and the channel hangs up.
    ended = b.handle(call.call_id, c.ChannelHungUp("NORMAL_CLEARING"), 3.0)
    assert not any(isinstance(a, c.SendPeerMessage) for a in ended)
    assert isinstance(ended[-1], c.CallEnded) and "1000" not in b.pool.busy()


def test_a_room_ending_before_the_invitee_answered_refuses_the_invitation() -> None:
    b = book()
    content = json.dumps({"Conference": True, "ChanId": "r1"})
    [originate] = b.invitation_to_number("alice", "1000", content, 0.0, room=("eb-app-r1", "wb"))
    call = b.by_uuid(originate.uuid)
    assert call is not None
    actions = b.handle(call.call_id, c.RoomRemoved("room_ended"), 1.0)
    [refuse] = [a for a in actions if isinstance(a, c.RefuseInvitation)]
    assert json.loads(refuse.response)["Reason"] == "room_ended"
    assert c.Hangup(call.call_id, call.uuid, "ORIGINATOR_CANCEL") in actions
    assert "1000" not in b.pool.busy()


def test_a_web_member_leg_counts_toward_max_calls() -> None:
    b = book(max_calls=1)
    first, _ = b.conference_join("alice", "r1", "", "eb-app-r1", "wb", 0.0)
    assert first is not None
    second, actions = b.conference_join("bob", "r1", "", "eb-app-r1", "wb", 0.0)
    assert second is None and actions == []


def test_a_kicked_phone_s_call_is_ended_too() -> None:
    # A dial-in phone's channel stays in the gateway's socket once it left the room.
    t = table()
    room = seat(t, "alice")
    t.add_dial_in(room, "call-dial", "phone-dial", "1001")
    t.maintenance(add(room.name, 5, "phone-dial", "1001", loopback=False))
    assert room.members[5].kind == "sip" and room.members[5].uid == "1001"
    kicked = t.maintenance(event(room.name, "kick-member", 5))
    assert conf.ToCall("call-dial", "kicked") in kicked


def test_a_dial_in_call_joins_the_room_and_hangs_up_when_removed() -> None:
    b = book()
    call, actions = b.conference_dial_in(
        uuid="u-1", caller_number="1001", chan_id="r1", target="eb-app-r1@wb", now=0.0
    )
    assert call is not None
    assert actions[-1] == c.JoinRoom(call.call_id, "u-1", "eb-app-r1@wb")
    again = b.conference_dial_in(
        uuid="u-1", caller_number="1001", chan_id="r1", target="eb-app-r1@wb", now=0.0
    )
    assert again == (None, [])
    ended = b.handle(call.call_id, c.RoomRemoved("kicked"), 1.0)
    assert c.Hangup(call.call_id, "u-1", "NORMAL_CLEARING") in ended
    b.handle(call.call_id, c.ChannelHungUp("NORMAL_CLEARING"), 1.1)
    assert len(b) == 0
    full = book(max_calls=0 + 1)
    full.conference_dial_in(uuid="u-2", caller_number="1", chan_id="r", target="t", now=0.0)
    _, refused = full.conference_dial_in(
        uuid="u-3", caller_number="1", chan_id="r", target="t", now=0.0
    )
    assert [type(a) for a in refused] == [c.Hangup]


def test_a_room_is_forgotten_when_the_gateway_has_nobody_left_in_it() -> None:
    # The ESL connection dropped: the legs' calls ended (channel lost) and the switch's
    # del-members were never heard. The room, its name and its code must not stay held.
    t = table(max_rooms_per_appid=1)
    room = seat(t, "alice")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    t.maintenance(add(room.name, 8, "fscli-phone", "5555", loopback=False))
    t.call_ended("call-alice")
    assert len(t) == 0 and set(t.held().values()) == {0}
    assert t.dial_in_check(room.dial_code) == "NO_ROUTE_DESTINATION"
    assert isinstance(t.join(APPID, "r2", "bob", 1.0), conf.Joined)


def test_any_display_name_and_uid_make_a_valid_originate_and_are_recognised() -> None:
    from esl_bridge.esl import commands as cmd

    b = book()
    uid, name = "a{b}c,d", "Eve ${x} {"
    call, actions = b.conference_join(uid, "r1", name, "eb-app-r1", "wideband", 0.0)
    assert call is not None
    originate = actions[1]
    assert isinstance(originate, c.Originate)
    # It failed with "unbalanced braces" before: the join would have ended at once.
    cmd.originate_arg(originate.destination, cmd.park_app(), originate.variables)
    t = table()
    room = seat(t, uid)
    number = originate.variables["origination_caller_id_number"]
    joined = told(t.maintenance(add(room.name, 3, "b-x", number)))
    assert [(m["Uid"], m["Kind"], m["Self"]) for m in joined[uid]["Members"]] == [
        (uid, "web", True)
    ]
