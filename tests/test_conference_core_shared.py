"""The room table in a cluster (``RoomTable(shared=True)``), without I/O: the room as
Redis admitted it (``adopt``), another process's members learnt from the switch's events
and from ``conference <room> list``, a phone of another process renamed to its number,
and ConfEnd asked on another process.
"""

from __future__ import annotations

from test_conference_core import APPID, add, event, told

from esl_bridge.core import conference as conf

# `conference <room> list` as recorded (newest first): bob is another process's web
# member, 1001-0x... a phone another process dialled (its contact, not its number).
LISTING = (
    "9;sofia/internal/1001@127.0.0.1;p-1;Outbound Call;1001-0x557d65a13620;"
    "hear|speak|talking;0;0;100\n"
    "8;loopback/conference:eb-app-r1@wideband-b;b-bob;Bob;bob;hear;0;0;100\n"
)


def shared_seat(t: conf.RoomTable, uid: str, moderator: str) -> conf.Room:
    joined = t.adopt(APPID, "r1", moderator, "4711", 0.0)
    assert isinstance(joined, conf.Joined), joined
    return t.seat(joined, uid, uid.title(), f"call-{uid}", f"a-{uid}")


def summary(message: dict[str, object]) -> list[tuple[object, ...]]:
    members = message["Members"]
    assert isinstance(members, list)
    return [(m["Id"], m["Uid"], m["Kind"], m["Moderator"], m["Muted"]) for m in members]


def test_the_room_of_the_cluster_and_the_members_of_other_processes() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    room = shared_seat(t, "alice", moderator="bob")  # bob (another process) made it
    assert (room.moderator, room.dial_code, t.dial_in(room)) == ("bob", "4711", "94711")
    assert t.by_code("4711") is room
    # The switch's list: bob, a loopback member not ours, is a web member and moderator;
    # the phone is listed under its caller id until its number is known.
    listed = told(
        t.maintenance(
            {**event(room.name, conf.LIST_ACTION), conf.LIST_HEADER: LISTING},
        )
    )
    assert summary(listed["alice"]) == [
        (8, "bob", "web", True, True),
        (9, "1001-0x557d65a13620", "sip", False, False),
    ]
    assert listed["alice"]["Event"] == "list"
    assert [m["Talking"] for m in listed["alice"]["Members"]] == [False, True]
    # Its own member comes by event, after the listing; nothing twice.
    t.loopback_partner("call-alice", "b-alice")
    joined = told(t.maintenance(add(room.name, 10, "b-alice", "alice")))
    assert [m[1] for m in summary(joined["alice"])] == ["bob", "1001-0x557d65a13620", "alice"]
    assert told(t.maintenance(add(room.name, 8, "b-bob", "bob"))) == {}
    assert told(t.maintenance({**event(room.name, conf.LIST_ACTION), "List": LISTING})) == {}
    # The other process says which number the phone is: renamed, the list sent again.
    renamed = told(t.phone_elsewhere(room.name, "p-1", "1001"))
    assert [m[1] for m in summary(renamed["alice"])] == ["bob", "1001", "alice"]
    assert t.phone_elsewhere(room.name, "p-1", "1001") == []
    # A phone known before its add-member is listed under its number at once.
    t.phone_elsewhere(room.name, "p-2", "1002")
    later = told(t.maintenance(add(room.name, 11, "p-2", "1002-0x1", loopback=False)))
    assert summary(later["alice"])[-1] == (11, "1002", "sip", False, False)
    # alice is no moderator here: she may not kick bob.
    [refused] = told(t.kick(APPID, "r1", "alice", 8)).values()
    assert refused["Reason"] == conf.NOT_MODERATOR


def test_conf_end_on_another_process_ends_our_legs_only() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    room = shared_seat(t, "alice", moderator="bob")
    t.maintenance({**event(room.name, conf.LIST_ACTION), conf.LIST_HEADER: LISTING})
    actions = t.ended_elsewhere(room.name)
    assert actions == [conf.ToCall("call-alice", "room_ended")]
    assert room.ending
    assert t.adopt(APPID, "r1", "bob", "4711", 0.0) == conf.ROOM_FULL
    assert t.ended_elsewhere("eb-app-nosuch") == []


def test_conf_end_here_kicks_other_processes_web_members_only_later() -> None:
    t = conf.RoomTable(conf.ConferenceSettings(), shared=True)
    room = shared_seat(t, "alice", moderator="alice")
    t.maintenance({**event(room.name, conf.LIST_ACTION), conf.LIST_HEADER: LISTING})
    actions = t.end(APPID, "r1", "alice")
    assert conf.ToCall("call-alice", "room_ended") in actions
    kicks = {a.words[1]: a.later for a in actions if isinstance(a, conf.ConfApi)}
    # bob (a web member of another process, which ends him itself) later; the phone now.
    assert kicks == {"8": True, "9": False}


def test_one_process_rooms_are_unchanged() -> None:
    """Without a cluster a loopback member that is not ours stays a sip member (as
    before), and ``adopt`` is never needed: ``join`` decides."""
    t = conf.RoomTable(conf.ConferenceSettings())
    joined = t.join(APPID, "r1", "alice", 0.0)
    assert isinstance(joined, conf.Joined)
    room = t.seat(joined, "alice", "Alice", "call-alice", "a-alice")
    listed = told(t.maintenance(add(room.name, 8, "b-bob", "bob")))
    assert summary(listed["alice"]) == [(8, "bob", "sip", False, False)]
