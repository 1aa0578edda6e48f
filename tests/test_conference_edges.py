"""The conference room table where its rules meet: places held by legs the switch has not
reported, members whose headers are missing, phones known by their invitation, a cluster's
other web members, late ends and the dial-in codes once the four digits are used up
(core/conference.py). Helpers from tests/test_conference_core.py.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from support.esl_transcripts import FIXTURES, read_transcript
from test_conference_core import APPID, add, event, seat, table, told

from esl_bridge.core import conference as conf
from esl_bridge.esl.protocol import ApiResponse, FrameParser, decode


def members(actions: list[conf.ConfAction], uid: str) -> list[dict[str, Any]]:
    return told(actions)[uid]["Members"]


# ------------------------------------------------------------------------------- places


def test_legs_not_reported_yet_hold_a_place_and_reported_ones_count_once() -> None:
    t = table(max_members=3)
    room = seat(t, "alice")
    assert room.occupancy() == 1  # her seat, before the switch reports her member
    joined = t.invite(APPID, "r1", "alice", 1.0)
    assert isinstance(joined, conf.Joined) and joined.created is False
    t.add_invitee(joined, "call-p", "phone-p", "1000")
    assert room.occupancy() == 2  # the phone being dialled
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    t.maintenance(add(room.name, 8, "phone-p", "1000", loopback=False))
    assert room.occupancy() == 2  # each is now its member, counted once
    t.maintenance(add(room.name, 9, "fscli", "5555", loopback=False))
    assert room.occupancy() == 3
    assert t.join(APPID, "r1", "bob", 2.0) == conf.ROOM_FULL
    assert t.dial_in_check(room.dial_code) == "CALL_REJECTED"
    # Her member leaves but her call is still up: her seat holds the place again.
    t.maintenance(event(room.name, "del-member", 7))
    assert room.seats["alice"].member_id is None
    assert room.occupancy() == 3
    t.maintenance(event(room.name, "del-member", 9))
    assert room.occupancy() == 2
    assert isinstance(t.join(APPID, "r1", "bob", 3.0), conf.Joined)


def test_a_destroyed_room_s_seats_hold_their_places() -> None:
    t = table()
    room = seat(t, "alice")
    seat(t, "bob")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    t.maintenance(add(room.name, 8, "b-bob", "bob"))
    t.maintenance(event(room.name, "conference-destroy"))
    assert [s.member_id for s in room.seats.values()] == [None, None]
    assert room.occupancy() == 2


def test_a_room_invited_into_first_is_kept_with_its_inviter_as_moderator() -> None:
    t = table()
    joined = t.invite(APPID, "r2", "carol", 5.0)
    assert isinstance(joined, conf.Joined) and joined.created is True
    room = t.add_invitee(joined, "call-p", "phone-p", "1000")
    assert t.get(APPID, "r2") is room and room.moderator == "carol"
    assert t.by_name(room.name) is room and t.by_code(room.dial_code) is room
    assert list(t) == [room]
    assert room.invitees == {"phone-p": conf.Invitee("call-p", "phone-p", "1000")}


# ------------------------------------------------------------------- members and headers


def test_seat_names_and_uids_reach_the_member_list() -> None:
    t = table()
    joined = t.join(APPID, "r1", "alice", 0.0)
    assert isinstance(joined, conf.Joined)
    room = t.seat(joined, "alice", "Alice A.", "call-alice", "a-alice")
    joined = t.join(APPID, "r1", "bob", 0.0)
    assert isinstance(joined, conf.Joined)
    t.seat(joined, "bob", "", "call-bob", "a-bob")
    assert room.seats["alice"] == conf.Seat("alice", "call-alice", "a-alice", "Alice A.")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    listed = members(t.maintenance(add(room.name, 8, "b-bob", "bob")), "alice")
    assert listed == [
        {
            "Id": 7,
            "Uid": "alice",
            "Kind": "web",
            "Name": "Alice A.",
            "Talking": False,
            "Muted": False,
            "Moderator": True,
            "Self": True,
        },
        {
            "Id": 8,
            "Uid": "bob",
            "Kind": "web",
            "Name": "bob",  # no display name given: the uid
            "Talking": False,
            "Muted": False,
            "Moderator": False,
            "Self": False,
        },
    ]


def test_a_phone_without_caller_id_headers_is_listed_with_empty_fields() -> None:
    t = table()
    room = seat(t, "alice")
    bare = event(room.name, "add-member", 5, **{"Unique-ID": "p", "Channel-Name": "sofia/x"})
    (member,) = members(t.maintenance(bare), "alice")
    assert (member["Uid"], member["Name"], member["Kind"]) == ("", "", "sip")
    named = event(
        room.name,
        "add-member",
        6,
        **{"Unique-ID": "q", "Channel-Name": "sofia/y", "Caller-Caller-ID-Number": "1001"},
    )
    listed = members(t.maintenance(named), "alice")
    assert (listed[1]["Uid"], listed[1]["Name"]) == ("1001", "1001")  # name: the number
    shown = {**add(room.name, 7, "r", "1002", loopback=False), "Caller-Caller-ID-Name": "Reception"}
    listed = members(t.maintenance(shown), "alice")
    assert (listed[2]["Uid"], listed[2]["Name"]) == ("1002", "Reception")
    nameless = event(room.name, "add-member", 8, **{"Unique-ID": "s"})  # no Channel-Name
    listed = members(t.maintenance(nameless), "alice")
    assert (listed[3]["Id"], listed[3]["Kind"]) == (8, "sip")


def test_a_phone_is_listed_by_the_number_the_gateway_dialled_or_took() -> None:
    t = table()
    room = seat(t, "alice")
    joined = t.invite(APPID, "r1", "alice", 0.0)
    assert isinstance(joined, conf.Joined)
    t.add_invitee(joined, "call-out", "phone-out", "1000")
    t.add_dial_in(room, "call-in", "phone-in", "2000")
    t.maintenance(add(room.name, 5, "phone-out", "anonymous", loopback=False))
    listed = members(t.maintenance(add(room.name, 6, "phone-in", "x", loopback=False)), "alice")
    assert [(m["Uid"], m["Name"], m["Kind"]) for m in listed] == [
        ("1000", "1000", "sip"),
        ("2000", "2000", "sip"),
    ]
    # Removed by a kick, the dial-in phone's call is ended (its socket would stay up).
    assert conf.ToCall("call-in", "kicked") in t.maintenance(event(room.name, "kick-member", 6))


def test_a_dial_in_phone_that_creates_the_room_registers_it() -> None:
    t = table()
    joined = t.invite(APPID, "r3", "1000", 0.0)
    assert isinstance(joined, conf.Joined) and joined.created
    t.add_dial_in(joined, "call-in", "phone-in", "1000")
    room = t.get(APPID, "r3")
    assert room is joined.room and t.dial_in_check(room.dial_code) is room
    assert room.invitees["phone-in"] == conf.Invitee("call-in", "phone-in", "1000")
    t.call_ended("call-in")
    assert len(t) == 0 and set(t.held().values()) == {0}


def test_a_loopback_member_is_a_seat_only_if_that_seat_has_no_member_or_partner() -> None:
    t = table()
    room = seat(t, "alice")
    seat(t, "bob")
    t.loopback_partner("call-bob", "b-bob")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    # Another loopback leg with alice's number (a second originate, fs_cli): not her seat.
    listed = members(t.maintenance(add(room.name, 8, "b-other", "alice")), "alice")
    assert room.seats["alice"].member_id == 7 and room.seats["alice"].b_uuid == "b-alice"
    assert [(m["Id"], m["Kind"], m["Self"]) for m in listed] == [
        (7, "web", True),
        (8, "sip", False),
    ]
    # bob's B leg is known: a loopback leg with his number and another uuid is not him.
    t.maintenance(add(room.name, 9, "b-stranger", "bob"))
    assert room.seats["bob"].member_id is None and room.members[9].kind == "sip"
    t.maintenance(add(room.name, 10, "b-bob", "bob"))
    assert room.seats["bob"].member_id == 10 and room.members[10].kind == "web"


def test_a_member_list_for_someone_not_seated_marks_nobody_self() -> None:
    t = table()
    room = seat(t, "alice")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    body = json.loads(t.members_message(room, "list", None, "visitor"))
    assert [m["Self"] for m in body["Members"]] == [False]
    assert body["Event"] == "list" and body["Member"] is None and body["ChanId"] == "r1"


# ------------------------------------------------------------------------------ cluster


def test_another_process_s_web_member_is_web_and_may_moderate() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    # The moderator's uid as its channel carries it: '!' is not a channel value character.
    joined = t.adopt(APPID, "r1", "carol!", "1234", 0.0)
    assert isinstance(joined, conf.Joined)
    room = t.seat(joined, "alice", "Alice", "call-alice", "a-alice")
    listed = members(t.maintenance(add(room.name, 4, "b-carol", "carol_")), "alice")
    assert listed == [
        {
            "Id": 4,
            "Uid": "carol_",
            "Kind": "web",
            "Name": "carol_",
            "Talking": False,
            "Muted": False,
            "Moderator": True,
            "Self": False,
        }
    ]
    assert room.members[4].foreign
    # A foreign member is not the gateway's to end: the room's end kicks it, later.
    t.maintenance(add(room.name, 5, "b-alice", "alice"))
    ended = t.ended_elsewhere(room.name)
    assert ended == [conf.ToCall("call-alice", "room_ended")]


def test_ending_a_room_kicks_another_process_s_web_member_later() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    joined = t.adopt(APPID, "r1", "alice", "1234", 0.0)
    assert isinstance(joined, conf.Joined)
    room = t.seat(joined, "alice", "Alice", "call-alice", "a-alice")
    t.maintenance(add(room.name, 4, "b-carol", "carol"))
    t.maintenance(add(room.name, 5, "b-alice", "alice"))
    t.maintenance(add(room.name, 6, "fscli", "5555", loopback=False))
    assert t.end(APPID, "r1", "alice") == [
        conf.ToCall("call-alice", "room_ended"),
        conf.ConfApi(room.name, ("kick", "4"), later=True),
        conf.ConfApi(room.name, ("kick", "6")),
    ]


def test_a_phone_another_process_dialled_is_listed_by_its_number() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    joined = t.adopt(APPID, "r1", "alice", "1234", 0.0)
    assert isinstance(joined, conf.Joined)
    room = t.seat(joined, "alice", "Alice", "call-alice", "a-alice")
    assert t.phone_elsewhere(room.name, "phone-x", "1000") == []
    listed = members(t.maintenance(add(room.name, 3, "phone-x", "anon", loopback=False)), "alice")
    assert [(m["Uid"], m["Name"], m["Kind"]) for m in listed] == [("1000", "1000", "sip")]


def test_a_code_the_cluster_gave_to_a_newer_room_stays_with_it() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    old = t.adopt(APPID, "r1", "alice", "1234", 0.0)
    assert isinstance(old, conf.Joined)
    t.seat(old, "alice", "Alice", "call-alice", "a-alice")
    new = t.adopt(APPID, "r2", "bob", "1234", 1.0)  # the cluster reused the code
    assert isinstance(new, conf.Joined)
    room2 = t.seat(new, "bob", "Bob", "call-bob", "a-bob")
    t.call_ended("call-alice")  # the old room empties and is forgotten
    assert t.get(APPID, "r1") is None
    assert t.dial_in_check("1234") is room2 and t.by_code("1234") is room2


# -------------------------------------------------------------------- control and events


def test_a_moderator_who_left_may_no_longer_mute_others() -> None:
    t = table()
    room = seat(t, "alice")
    seat(t, "bob")
    t.maintenance(add(room.name, 8, "b-bob", "bob"))
    t.call_ended("call-alice")
    assert room.moderator == "alice"
    assert told(t.mute(APPID, "r1", "alice", True, 8)) == {
        "alice": {"Cmd": "ConfError", "ChanId": "r1", "Reason": conf.NOT_IN_ROOM}
    }
    assert told(t.kick(APPID, "r1", "alice", 8))["alice"]["Reason"] == conf.NOT_IN_ROOM


def test_ending_a_room_kicks_only_members_the_gateway_does_not_own() -> None:
    t = table()
    room = seat(t, "alice")
    t.loopback_partner("call-alice", "b-alice")
    joined = t.invite(APPID, "r1", "alice", 0.0)
    assert isinstance(joined, conf.Joined)
    t.add_invitee(joined, "call-p", "phone-p", "1000")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    t.maintenance(add(room.name, 8, "phone-p", "1000", loopback=False))
    t.maintenance(add(room.name, 9, "fscli", "5555", loopback=False))
    assert t.end(APPID, "r1", "alice") == [
        conf.ToCall("call-alice", "room_ended"),
        conf.ToCall("call-p", "room_ended"),
        conf.ConfApi(room.name, ("kick", "9")),
    ]
    assert t.dial_in_check(room.dial_code) == "NO_ROUTE_DESTINATION"
    # The kicks that follow are the room ending, not a kick.
    assert conf.ToCall("call-alice", "room_ended") in t.maintenance(
        event(room.name, "kick-member", 7)
    )
    assert conf.ToCall("call-p", "room_ended") in t.maintenance(event(room.name, "kick-member", 8))


def test_mute_talk_and_kick_events_tell_their_own_event() -> None:
    t = table()
    room = seat(t, "alice")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))

    def said(action: str) -> tuple[str, bool, bool] | None:
        out = t.maintenance(event(room.name, action, 7))
        if not out:
            return None
        body = told(out)["alice"]
        assert body["Member"] == 7
        (me,) = body["Members"]
        return body["Event"], me["Muted"], me["Talking"]

    assert said("unmute-member") is None  # not muted: no change
    assert said("mute-member") == ("mute", True, False)
    assert said("mute-member") is None
    assert said("unmute-member") == ("unmute", False, False)
    assert said("stop-talking") is None
    assert said("start-talking") == ("talking", False, True)
    assert said("stop-talking") == ("silent", False, False)
    assert said("something-else") is None
    kicked = t.maintenance(event(room.name, "kick-member", 7))
    assert kicked[0] == conf.ToCall("call-alice", "kicked")
    assert told(kicked)["alice"]["Event"] == "kick"


def test_an_older_call_s_late_end_leaves_the_newer_seat() -> None:
    # Two joins of one uid in flight: the second seat replaces the first.
    t = table()
    first = t.join(APPID, "r1", "alice", 0.0)
    second = t.join(APPID, "r1", "alice", 0.0)
    assert isinstance(first, conf.Joined) and isinstance(second, conf.Joined)
    room = t.seat(first, "alice", "Alice", "call-1", "a-1")
    second = conf.Joined(room, False)
    t.seat(second, "alice", "Alice", "call-2", "a-2")
    assert t.call_ended("call-1") == []
    assert room.seats["alice"].call_id == "call-2" and t.get(APPID, "r1") is room
    assert t.call_ended("call-unknown") == []
    t.call_ended("call-2")
    assert len(t) == 0 and set(t.held().values()) == {0}


# --------------------------------------------------------------------------- dial-in codes


def test_the_code_seed_is_the_first_32_bits_of_the_name_s_sha256() -> None:
    # Every process of a cluster computes it alike: the recipe is the contract.
    for name in ("eb-app-r1", "eb-app-h0123456789abcdef", "eb-é-x"):
        digest = hashlib.sha256(name.encode()).digest()
        assert conf.code_seed(name) == int.from_bytes(digest[:4], "big")


def _code(chan_id: str, digits: int = 4) -> str:
    return f"{conf.code_seed(conf.room_name(APPID, chan_id)) % 10**digits:0{digits}d}"


def test_a_code_is_four_digits_from_the_name_then_the_next_free_one() -> None:
    t = table()
    first = seat(t, "alice", "r0")
    assert first.dial_code == _code("r0")
    # A ChanId whose name gives the same code: its room gets the next one.
    clash = next(f"c{n}" for n in range(1, 100_000) if _code(f"c{n}") == first.dial_code)
    second = seat(t, "bob", clash)
    assert second.dial_code == f"{(int(first.dial_code) + 1) % 10_000:04d}"
    assert t.by_code(second.dial_code) is second and t.by_code(first.dial_code) is first


def test_codes_grow_a_digit_once_four_are_used_up() -> None:
    # Every 4-digit code live (rooms a cluster handed over with their codes: adopting one
    # does not count the others, so 10,000 of them are quick to make).
    t = conf.RoomTable(conf.ConferenceSettings(max_rooms_per_appid=10_001), shared=True)
    for n in range(10_000):
        joined = t.adopt(APPID, f"r{n}", "u", f"{n:04d}", 0.0)
        assert isinstance(joined, conf.Joined)
        t.seat(joined, "u", "U", f"call-{n}", f"a-{n}")
    room = seat(t, "v", "last")
    assert room.dial_code == _code("last", 5)
    assert t.dial_in_check(room.dial_code) is room


# ------------------------------------------------------------ the switch's member list


def _recorded_list() -> str:
    """The reply of ``conference eb-app-room1 list`` from a recorded session (two web
    members, bob the newer, both speaking, neither talking)."""
    transcript = read_transcript(FIXTURES / "conference" / "esl_inbound_conference_control.txt")
    parser = FrameParser()
    for chunk in transcript.freeswitch_chunks():
        for frame in parser.feed(chunk):
            message = decode(frame)
            if isinstance(message, ApiResponse) and ";loopback/conference:" in message.body:
                return message.body
    raise AssertionError("no list reply in the transcript")


def _listed(t: conf.RoomTable, room: conf.Room, text: str) -> list[conf.ConfAction]:
    headers = event(room.name, conf.LIST_ACTION, **{conf.LIST_HEADER: text})
    return t.maintenance(headers)


def test_the_recorded_member_list_seats_each_web_member() -> None:
    t = table()
    room = seat(t, "alice", "room1")
    seat(t, "bob", "room1")
    actions = _listed(t, room, _recorded_list())
    assert len(actions) == 4  # each member added is told to both
    body = told(actions)["bob"]
    assert body["Event"] == "list" and body["Member"] == 4
    assert [(m["Id"], m["Uid"], m["Kind"], m["Name"]) for m in body["Members"]] == [
        (3, "alice", "web", "Alice"),
        (4, "bob", "web", "Bob"),
    ]
    assert [(m["Talking"], m["Muted"], m["Self"]) for m in body["Members"]] == [
        (False, False, False),
        (False, False, True),
    ]
    assert room.seats["alice"].member_id == 3 and room.seats["bob"].member_id == 4
    assert room.seats["alice"].b_uuid == "16d80996-2a41-4701-8444-7414ec6b279d"
    assert _listed(t, room, _recorded_list()) == []  # known already: nothing to tell


def test_a_listed_member_s_flags_say_talking_and_muted() -> None:
    t = table()
    room = seat(t, "alice", "room1")
    # alice talking, bob muted (no "speak" flag), as the switch writes its flags.
    recorded = _recorded_list()
    text = recorded.replace("hear|speak|floor;", "hear|speak|talking|floor;")
    text = text.replace("hear|speak;", "hear;")
    assert text.count("talking") == 1 and text != recorded
    listed = members(_listed(t, room, text), "alice")
    assert [(m["Id"], m["Talking"], m["Muted"]) for m in listed] == [
        (3, True, False),
        (4, False, True),
    ]


def test_an_added_member_s_speak_header_says_muted_and_talking_waits() -> None:
    t = table()
    room = seat(t, "alice")
    quiet = {**add(room.name, 5, "p5", "1005", loopback=False), "Speak": "false"}
    quiet["Talking"] = "true"  # only a list reply says who talks; events follow
    (member,) = members(t.maintenance(quiet), "alice")
    assert (member["Muted"], member["Talking"]) == (True, False)
    assert (
        told(t.maintenance(add(room.name, 6, "p6", "1006", loopback=False)))["alice"]["Event"]
        == "join"
    )


def test_lines_of_a_list_that_are_not_members_are_skipped() -> None:
    t = table()
    room = seat(t, "alice", "room1")
    # Newest first: a phone above the recorded two, odd lines between, one at the end.
    text = (
        "5;sofia/internal/1005@127.0.0.1;p5;Pat;1005;hear|speak\n"  # six fields: enough
        + "x5;sofia/internal/1006;p6;Ann;1006;hear|speak;0;0;100\n"  # no member id
        + "7;sofia/internal/1007;p7;Bo\n"  # cut short
        + _recorded_list()
        + "+OK\n"
    )
    listed = members(_listed(t, room, text), "alice")
    assert [(m["Id"], m["Uid"], m["Name"], m["Kind"]) for m in listed] == [
        (3, "alice", "Alice", "web"),
        (4, "bob", "bob", "sip"),  # bob has no seat here: his leg is listed as it is
        (5, "1005", "Pat", "sip"),
    ]


# ------------------------------------------------------------------------ a cluster's room


def test_adopting_a_room_takes_the_cluster_s_moderator_and_code() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    joined = t.adopt(APPID, "r1", "carol", "4321", 1.0)
    assert isinstance(joined, conf.Joined) and joined.created is True
    room = joined.room
    assert (room.appid, room.chan_id, room.name, room.moderator, room.dial_code) == (
        APPID,
        "r1",
        "eb-app-r1",
        "carol",
        "4321",
    )
    assert t.get(APPID, "r1") is None  # kept only once a leg is seated
    t.seat(joined, "alice", "Alice", "call-alice", "a-alice")
    assert t.by_code("4321") is room and t.by_name("eb-app-r1") is room
    again = t.adopt(APPID, "r1", "dave", "9999", 2.0)
    assert isinstance(again, conf.Joined) and again.room is room and again.created is False
    assert room.moderator == "carol" and room.dial_code == "4321"
    assert t.ended_elsewhere("eb-app-nosuch") == []
    assert t.ended_elsewhere(room.name) == [conf.ToCall("call-alice", "room_ended")]
    assert t.adopt(APPID, "r1", "carol", "4321", 3.0) == conf.ROOM_FULL
    off = conf.RoomTable(conf.ConferenceSettings(on=False), shared=True)
    assert off.adopt(APPID, "r1", "carol", "4321", 0.0) == conf.CONFERENCE_OFF


def test_a_room_ended_elsewhere_ends_our_seats_and_phones_and_takes_nobody() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    joined = t.adopt(APPID, "r1", "carol", "4321", 1.0)
    assert isinstance(joined, conf.Joined)
    room = t.seat(joined, "alice", "Alice", "call-alice", "a-alice")
    t.add_invitee(conf.Joined(room, False), "call-p", "phone-p", "1000")
    assert t.ended_elsewhere(room.name) == [
        conf.ToCall("call-alice", "room_ended"),
        conf.ToCall("call-p", "room_ended"),
    ]
    assert t.join(APPID, "r1", "bob", 2.0) == conf.ROOM_FULL
    assert t.dial_in_check("4321") == "NO_ROUTE_DESTINATION"


def test_a_listed_phone_is_renamed_once_its_number_is_known() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    joined = t.adopt(APPID, "r1", "alice", "4321", 0.0)
    assert isinstance(joined, conf.Joined)
    room = t.seat(joined, "alice", "Alice", "call-alice", "a-alice")
    t.maintenance(add(room.name, 5, "b-alice", "alice"))
    t.maintenance(add(room.name, 6, "phone-x", "anon", loopback=False))
    assert t.phone_elsewhere("eb-app-nosuch", "phone-x", "1000") == []
    assert t.phone_elsewhere(room.name, "phone-x", "") == []
    assert t.phone_elsewhere(room.name, "b-alice", "1000") == []  # a web member: no
    actions = t.phone_elsewhere(room.name, "phone-x", "1000")
    body = told(actions)["alice"]
    assert (body["Event"], body["Member"]) == ("list", 6)
    assert [(m["Id"], m["Uid"], m["Name"]) for m in body["Members"]] == [
        (5, "alice", "Alice"),
        (6, "1000", "1000"),
    ]
    assert room.phones == {"b-alice": "1000", "phone-x": "1000"}
    assert t.phone_elsewhere(room.name, "phone-x", "1000") == []  # already so
