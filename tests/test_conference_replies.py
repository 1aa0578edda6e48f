"""What the conference room table answers, message for message (core/conference.py).

README.rst (Conference rooms) documents the messages: ``ConfJoined``, ``ConfRefused``,
``ConfError`` with a reason, ``ConfMembers`` with ``Event`` and ``Member``, ``EndCall``
with a reason. tests/test_conference_core.py checks the reasons; here each reply is
compared whole (who gets it, its ChanId, its fields), so a reply sent to the wrong user or
for the wrong room fails.
"""

from __future__ import annotations

import json
from typing import Any

from esl_bridge.core import conference as conf

APPID = "app"


def table(**settings: Any) -> conf.RoomTable:
    return conf.RoomTable(conf.ConferenceSettings(**settings))


def seat(t: conf.RoomTable, uid: str, chan: str = "r1") -> conf.Room:
    joined = t.join(APPID, chan, uid, 0.0)
    assert isinstance(joined, conf.Joined), joined
    return t.seat(joined, uid, uid.title(), f"call-{uid}", f"a-{uid}")


def add(room: str, member: int, uuid: str, number: str) -> dict[str, str]:
    return {
        "Event-Subclass": conf.SUBCLASS,
        "Conference-Name": room,
        "Action": "add-member",
        "Member-ID": str(member),
        "Unique-ID": uuid,
        "Channel-Name": f"loopback/conference:{room}@wideband-b",
        "Caller-Caller-ID-Number": number,
        "Caller-Caller-ID-Name": number,
        "Speak": "true",
    }


def member_event(room: str, action: str, member: int) -> dict[str, str]:
    return {
        "Event-Subclass": conf.SUBCLASS,
        "Conference-Name": room,
        "Action": action,
        "Member-ID": str(member),
    }


def error(uid: str, chan: str, reason: str) -> conf.Tell:
    return conf.Tell(uid, json.dumps({"Cmd": "ConfError", "ChanId": chan, "Reason": reason}))


def test_the_message_texts_are_the_documented_json() -> None:
    assert json.loads(conf.joined_message("r1", "eb-app-r1", "91234", True)) == {
        "Cmd": "ConfJoined",
        "ChanId": "r1",
        "Room": "eb-app-r1",
        "DialIn": "91234",
        "Moderator": True,
    }
    assert conf.joined_message("r1", "eb-app-r1", "", False) == (
        '{"Cmd":"ConfJoined","ChanId":"r1","Room":"eb-app-r1","DialIn":"","Moderator":false}'
    )
    assert conf.refused_message("r1", "room_full") == (
        '{"Cmd":"ConfRefused","ChanId":"r1","Reason":"room_full"}'
    )
    assert conf.error_message("r1", "not_in_room") == (
        '{"Cmd":"ConfError","ChanId":"r1","Reason":"not_in_room"}'
    )
    assert conf.end_call_message("r1", "kicked") == (
        '{"Cmd":"EndCall","ChanId":"r1","Reason":"kicked"}'
    )


def _two_in_room() -> tuple[conf.RoomTable, conf.Room]:
    t = table()
    room = seat(t, "alice")
    seat(t, "bob")
    t.maintenance(add(room.name, 7, "b-alice", "alice"))
    t.maintenance(add(room.name, 8, "b-bob", "bob"))
    return t, room


def _same(actions: list[conf.ConfAction], expected: list[conf.Tell]) -> None:
    assert [(a.to, json.loads(a.text)) for a in actions if isinstance(a, conf.Tell)] == [
        (e.to, json.loads(e.text)) for e in expected
    ]
    assert len(actions) == len(expected)


def test_mute_refusals_go_to_the_asker_for_its_room() -> None:
    t, _ = _two_in_room()
    _same(t.mute(APPID, "r1", "carol", True, None), [error("carol", "r1", conf.NOT_IN_ROOM)])
    _same(t.mute(APPID, "r9", "alice", True, None), [error("alice", "r9", conf.NOT_IN_ROOM)])
    _same(t.mute(APPID, "r1", "bob", True, 7), [error("bob", "r1", conf.NOT_MODERATOR)])
    _same(t.mute(APPID, "r1", "alice", True, 99), [error("alice", "r1", conf.NO_SUCH_MEMBER)])


def test_self_mute_before_the_switch_added_the_member_is_not_in_room() -> None:
    t = table()
    seat(t, "alice")  # seated, but no add-member yet
    _same(t.mute(APPID, "r1", "alice", True, None), [error("alice", "r1", conf.NOT_IN_ROOM)])


def test_kick_and_end_refusals_go_to_the_asker_for_its_room() -> None:
    t, _ = _two_in_room()
    _same(t.kick(APPID, "r1", "carol", 8), [error("carol", "r1", conf.NOT_IN_ROOM)])
    _same(t.kick(APPID, "r1", "bob", 7), [error("bob", "r1", conf.NOT_MODERATOR)])
    _same(t.kick(APPID, "r1", "alice", 99), [error("alice", "r1", conf.NO_SUCH_MEMBER)])
    _same(t.end(APPID, "r1", "carol"), [error("carol", "r1", conf.NOT_IN_ROOM)])
    _same(t.end(APPID, "r1", "bob"), [error("bob", "r1", conf.NOT_MODERATOR)])


def test_a_member_leaving_is_told_to_everyone_seated_as_leave() -> None:
    t, room = _two_in_room()
    out = t.maintenance(member_event(room.name, "del-member", 8))
    bodies = {a.to: json.loads(a.text) for a in out if isinstance(a, conf.Tell)}
    assert set(bodies) == {"alice", "bob"}
    for body in bodies.values():
        assert (body["Cmd"], body["ChanId"], body["Event"], body["Member"]) == (
            "ConfMembers",
            "r1",
            "leave",
            8,
        )
        assert [m["Id"] for m in body["Members"]] == [7]
    # bob's seat has no member any more: muting himself is refused.
    _same(t.mute(APPID, "r1", "bob", True, None), [error("bob", "r1", conf.NOT_IN_ROOM)])


def test_a_kicked_member_is_told_to_everyone_as_kick_with_its_id() -> None:
    t, room = _two_in_room()
    out = t.maintenance(member_event(room.name, "kick-member", 8))
    assert conf.ToCall("call-bob", "kicked") in out
    bodies = {a.to: json.loads(a.text) for a in out if isinstance(a, conf.Tell)}
    assert {uid: (b["Event"], b["Member"]) for uid, b in bodies.items()} == {
        "alice": ("kick", 8),
        "bob": ("kick", 8),
    }


def test_held_names_each_index() -> None:
    t = table()
    assert t.held() == {"rooms": 0, "names": 0, "codes": 0, "seats": 0, "invitees": 0}
    seat(t, "alice")
    held = t.held()
    assert (held["rooms"], held["names"], held["seats"], held["invitees"]) == (1, 1, 1, 0)


def test_the_loopback_partner_is_taken_once_and_only_for_a_known_seat() -> None:
    t = table()
    room = seat(t, "alice")
    t.loopback_partner("call-nobody", "b-x")  # not a seat: nothing
    t.loopback_partner("call-alice", "")  # no B leg named: nothing
    assert room.seats["alice"].b_uuid in (None, "")
    t.loopback_partner("call-alice", "b-alice")
    assert room.seats["alice"].b_uuid == "b-alice"
    t.loopback_partner("call-alice", "b-other")  # the first one stays
    assert room.seats["alice"].b_uuid == "b-alice"
