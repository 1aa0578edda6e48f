"""Conference rooms (issue 14) as a table without I/O: who is in which room, and what to tell.

A room is keyed by (appid, ChanId) and lives in FreeSWITCH's mod_conference under the name
``room_name(appid, chan_id)``. Its members are what the switch says they are: the table
learns them from the ``CUSTOM conference::maintenance`` events (``maintenance``), which come
late and sometimes twice, so every event is checked against what is known (a member id
that left stays gone; a second add-member changes nothing).

Besides the switch's members the table keeps what the gateway itself put in the room:

* a **seat** per web user that joined (ConfJoin): its call (a ``ConfWebCall``: the loopback
  pair's A leg, which carries the unicast stream) and, once known, the B leg that is the
  member (``other_loopback_leg_uuid`` of the A leg's CHANNEL_ANSWER, or the add-member's
  caller id number, which is the web uid);
* an **invitee** per SIP number dialled into the room (a ``ConfSipCall``), whose channel
  uuid is the member's;
* dial-in phones (``dial_in``): their channel is the member.

In a cluster (``shared``) the room is one across the gateway processes: its moderator, its
dial-in code and its limits are decided in Redis (cluster/rooms.py) and handed to ``adopt``;
each process keeps the members it hears of from the switch (every process's inbound
connection gets every room's events), recognising another process's web member by its
loopback channel, and asks the switch for the list (``LIST_ACTION``) when it seats its
first member in a room that other processes made.

Requests (join, mute, kick, end) come with ``now`` and return actions: peer messages to web
members (``Tell``), ``conference`` api commands (``ConfApi``) and events for calls
(``ToCall``). The table never hangs up a channel itself: each leg belongs to a call, whose
table ends it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from esl_bridge.core.call import channel_var_value

SUBCLASS = "conference::maintenance"
NAME_PREFIX = "eb-"
_PLAIN_CHAN_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DISPLAY_NAME_MAX = 64
MEMBER_EVENTS = ("join", "leave", "kick", "mute", "unmute", "talking", "silent", "list")
#: Not the switch's: the reply of ``conference <room> list``, handed to ``maintenance`` as an
#: event of this action with the reply in ``LIST_HEADER`` (gateway/esl_side.py).
LIST_ACTION = "esl-bridge-list"
LIST_HEADER = "List"

# ConfRefused / ConfError / EndCall reasons (docs/protocol.rst, Conference calls).
ROOM_FULL = "room_full"
TOO_MANY_ROOMS = "too_many_rooms"
CONFERENCE_OFF = "conference_off"
SWITCH_ERROR = "switch_error"
ALREADY_JOINED = "already_joined"
NOT_MODERATOR = "not_moderator"
NO_SUCH_MEMBER = "no_such_member"
NOT_IN_ROOM = "not_in_room"


def room_name(appid: str, chan_id: str) -> str:
    """The FreeSWITCH conference name of a room: ``eb-<appid>-<ChanId>`` when the ChanId is
    1-40 of ``[A-Za-z0-9_-]``, else ``eb-<appid>-h<first 16 hex of sha256(ChanId)>``."""
    if _PLAIN_CHAN_ID.match(chan_id):
        return f"{NAME_PREFIX}{appid}-{chan_id}"
    digest = hashlib.sha256(chan_id.encode("utf-8")).hexdigest()[:16]
    return f"{NAME_PREFIX}{appid}-h{digest}"


def code_seed(name: str) -> int:
    """Where the search for a room's dial-in code starts: its name's hash (a room gets the
    same code on every process of a cluster unless another live room holds it)."""
    return int(hashlib.sha256(name.encode("utf-8")).hexdigest()[:8], 16)


@dataclass(frozen=True)
class ConferenceSettings:
    """``[conference]`` of rtx.conf."""

    on: bool = True
    profile: str = "wideband"
    max_members: int = 50
    max_rooms_per_appid: int = 20
    dialin_prefix: str = "9"


# ---------------------------------------------------------------------------------------
# Actions.


@dataclass(frozen=True)
class Tell:
    """A peer message from the gateway uid to web user ``to``."""

    to: str
    text: str


@dataclass(frozen=True)
class ConfApi:
    """``api conference <room> <words>``; a failure is answered to ``requester`` with
    ConfError switch_error (an empty requester: nobody waits for it)."""

    room: str
    words: tuple[str, ...]
    requester: str = ""
    chan_id: str = ""
    # A kick of another process's web member at ConfEnd: that process ends its own
    # members (room_ended) when told over the bus; this kick is the fallback, sent later.
    later: bool = False


@dataclass(frozen=True)
class ToCall:
    """Tell call ``call_id`` that the room removed it: ``reason`` kicked or room_ended."""

    call_id: str
    reason: str


ConfAction = Tell | ConfApi | ToCall


# ---------------------------------------------------------------------------------------
# Messages (the protocol's gateway -> browser side).


def _dumps(body: Mapping[str, object]) -> str:
    return json.dumps(body, separators=(",", ":"))


def joined_message(chan_id: str, room: str, dial_in: str, moderator: bool) -> str:
    return _dumps(
        {
            "Cmd": "ConfJoined",
            "ChanId": chan_id,
            "Room": room,
            "DialIn": dial_in,
            "Moderator": moderator,
        }
    )


def refused_message(chan_id: str, reason: str) -> str:
    return _dumps({"Cmd": "ConfRefused", "ChanId": chan_id, "Reason": reason})


def error_message(chan_id: str, reason: str) -> str:
    return _dumps({"Cmd": "ConfError", "ChanId": chan_id, "Reason": reason})


def end_call_message(chan_id: str, reason: str) -> str:
    return _dumps({"Cmd": "EndCall", "ChanId": chan_id, "Reason": reason})


# ---------------------------------------------------------------------------------------
# The table.

Kind = Literal["web", "sip"]


@dataclass
class Member:
    """A member as the switch reported it."""

    id: int
    uuid: str  # the member channel (a loopback B leg, a phone's leg)
    uid: str  # the web uid, or the phone's number
    kind: Kind
    name: str
    talking: bool = False
    muted: bool = False
    foreign: bool = False  # in a cluster: another process's web member


@dataclass
class Seat:
    """A web user in a room: its call and, once the switch reported it, its member."""

    uid: str
    call_id: str
    a_uuid: str
    name: str
    b_uuid: str = ""
    member_id: int | None = None


@dataclass
class Invitee:
    """A SIP number the gateway dialled into the room (or a phone that dialled in)."""

    call_id: str
    uuid: str
    number: str


@dataclass
class Room:
    appid: str
    chan_id: str
    name: str
    moderator: str
    created_at: float
    dial_code: str = ""
    members: dict[int, Member] = field(default_factory=dict)  # in joining order
    seats: dict[str, Seat] = field(default_factory=dict)  # web uid -> seat
    invitees: dict[str, Invitee] = field(default_factory=dict)  # channel uuid -> invitee
    gone: set[int] = field(default_factory=set)  # member ids that left: late events
    # In a cluster: channel uuid -> number of the phones other processes put in the room.
    phones: dict[str, str] = field(default_factory=dict)
    ending: bool = False  # ConfEnd: kicks that follow are the room ending

    def occupancy(self) -> int:
        """Places taken: members, plus seats and invitees the switch has not reported."""
        counted = {m.uuid for m in self.members.values()}
        extra = sum(1 for s in self.seats.values() if s.member_id is None)
        extra += sum(1 for uuid in self.invitees if uuid not in counted)
        return len(self.members) + extra

    def empty(self) -> bool:
        """Nobody of the gateway's is in it: forgotten then, whatever members the switch
        may still report (added from fs_cli; or missed del-members while the ESL
        connection was down, which would otherwise hold the room and its code forever)."""
        return not (self.seats or self.invitees)

    def seat_of_member(self, member_id: int) -> Seat | None:
        return next((s for s in self.seats.values() if s.member_id == member_id), None)


@dataclass(frozen=True)
class Joined:
    """``RoomTable.join`` said yes: the room (created or not) and the actions so far."""

    room: Room
    created: bool


class RoomTable:
    """Every room of this gateway. ``appid`` scopes rooms: one gateway serves one appid, but
    a key is (appid, ChanId) all the same, so two tenants can never share a room."""

    def __init__(self, settings: ConferenceSettings, *, shared: bool = False) -> None:
        self.settings = settings
        self.shared = shared  # a cluster: rooms are decided in Redis (``adopt``)
        self._rooms: dict[tuple[str, str], Room] = {}
        self._by_name: dict[str, Room] = {}
        self._by_code: dict[str, Room] = {}
        self._seat_by_call: dict[str, tuple[Room, str]] = {}  # call id -> (room, uid)
        self._invitee_by_call: dict[str, tuple[Room, str]] = {}  # call id -> (room, uuid)

    # -- lookups ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._rooms)

    def __iter__(self) -> Iterator[Room]:
        return iter(list(self._rooms.values()))

    def get(self, appid: str, chan_id: str) -> Room | None:
        return self._rooms.get((appid, chan_id))

    def by_name(self, name: str) -> Room | None:
        return self._by_name.get(name)

    def by_code(self, code: str) -> Room | None:
        return self._by_code.get(code)

    def rooms_of(self, appid: str) -> int:
        return sum(1 for key in self._rooms if key[0] == appid)

    def dial_in(self, room: Room) -> str:
        """What a phone dials for ``room`` (empty: no dial-in)."""
        if not room.dial_code:
            return ""
        return f"{self.settings.dialin_prefix}{room.dial_code}"

    def held(self) -> dict[str, int]:
        """Entries of each index (all 0 when no room is live): for leak checks."""
        return {
            "rooms": len(self._rooms),
            "names": len(self._by_name),
            "codes": len(self._by_code),
            "seats": len(self._seat_by_call),
            "invitees": len(self._invitee_by_call),
        }

    # -- creating and joining -------------------------------------------------------------

    def _admit(self, appid: str, chan_id: str, uid: str, now: float) -> Joined | str:
        if not self.settings.on:
            return CONFERENCE_OFF
        room = self._rooms.get((appid, chan_id))
        if room is not None:
            if room.ending:
                return ROOM_FULL
            if room.occupancy() >= self.settings.max_members:
                return ROOM_FULL
            return Joined(room, False)
        if self.rooms_of(appid) >= self.settings.max_rooms_per_appid:
            return TOO_MANY_ROOMS
        name = room_name(appid, chan_id)
        if name in self._by_name:
            # Two ChanIds with one hash prefix: never mix two rooms.
            return SWITCH_ERROR
        room = Room(appid, chan_id, name, moderator=uid, created_at=now)
        room.dial_code = self._new_code(name)
        return Joined(room, True)

    def _new_code(self, name: str) -> str:
        """A short numeric code unique among live rooms: 4 digits from the name's hash,
        the next free one when taken, longer once 4 digits are crowded."""
        if not self.settings.dialin_prefix:
            return ""  # dial-in off
        seed = code_seed(name)
        digits = 4
        while True:
            space = 10**digits
            for step in range(space):
                code = f"{(seed + step) % space:0{digits}d}"
                if code not in self._by_code:
                    return code
            digits += 1

    def _register(self, room: Room) -> None:
        self._rooms[(room.appid, room.chan_id)] = room
        self._by_name[room.name] = room
        if room.dial_code:
            self._by_code[room.dial_code] = room

    def join(self, appid: str, chan_id: str, uid: str, now: float) -> Joined | str:
        """May ``uid`` join (creating it when there is none) the room ``chan_id``? A
        ``Joined``, or the ConfRefused reason. Nothing is kept until ``seat``."""
        room = self._rooms.get((appid, chan_id))
        if room is not None and uid in room.seats:
            return ALREADY_JOINED
        return self._admit(appid, chan_id, uid, now)

    def adopt(
        self, appid: str, chan_id: str, moderator: str, code: str, now: float
    ) -> Joined | str:
        """In a cluster: the room ``chan_id`` as Redis admitted a leg into it (its
        moderator and dial-in code are the cluster's). This process's room when it has
        one, else a new one (kept once a leg is added), or the refusal reason."""
        if not self.settings.on:
            return CONFERENCE_OFF
        room = self._rooms.get((appid, chan_id))
        if room is not None:
            return ROOM_FULL if room.ending else Joined(room, False)
        name = room_name(appid, chan_id)
        if name in self._by_name:
            return SWITCH_ERROR
        room = Room(appid, chan_id, name, moderator=moderator, created_at=now)
        room.dial_code = code
        return Joined(room, True)

    def seat(self, joined: Joined, uid: str, name: str, call_id: str, a_uuid: str) -> Room:
        """Keep the web user's seat (its call was created)."""
        room = joined.room
        if joined.created:
            self._register(room)
        room.seats[uid] = Seat(uid, call_id, a_uuid, name or uid)
        self._seat_by_call[call_id] = (room, uid)
        return room

    def invite(self, appid: str, chan_id: str, inviter: str, now: float) -> Joined | str:
        """May ``inviter`` dial a number into room ``chan_id``? (The first invitation for a
        ChanId creates the room, its inviter the moderator.)"""
        return self._admit(appid, chan_id, inviter, now)

    def add_invitee(self, joined: Joined, call_id: str, uuid: str, number: str) -> Room:
        room = joined.room
        if joined.created:
            self._register(room)
        room.invitees[uuid] = Invitee(call_id, uuid, number)
        self._invitee_by_call[call_id] = (room, uuid)
        return room

    def dial_in_check(self, code: str) -> Room | str:
        """A phone dialled ``<prefix><code>``: its room, or the hangup cause."""
        room = self._by_code.get(code)
        if room is None or room.ending or not self.settings.on:
            return "NO_ROUTE_DESTINATION"
        if room.occupancy() >= self.settings.max_members:
            return "CALL_REJECTED"
        return room

    def add_dial_in(self, room: Room | Joined, call_id: str, uuid: str, number: str) -> None:
        if isinstance(room, Joined):
            if room.created:
                self._register(room.room)
            room = room.room
        room.invitees[uuid] = Invitee(call_id, uuid, number)
        self._invitee_by_call[call_id] = (room, uuid)

    def loopback_partner(self, call_id: str, b_uuid: str) -> None:
        """The A leg of a web seat answered naming its B leg (``other_loopback_leg_uuid``)."""
        found = self._seat_by_call.get(call_id)
        if found is None or not b_uuid:
            return
        room, uid = found
        seat = room.seats.get(uid)
        if seat is not None and not seat.b_uuid:
            seat.b_uuid = b_uuid

    def call_ended(self, call_id: str) -> list[ConfAction]:
        """A seat's or invitee's call is over: forget it (its member leaves through the
        switch's del-member); a room nobody is in any more is forgotten."""
        found = self._seat_by_call.pop(call_id, None)
        if found is not None:
            room, uid = found
            seat = room.seats.get(uid)
            if seat is not None and seat.call_id == call_id:
                del room.seats[uid]
            self._forget_if_empty(room)
            return []
        invited = self._invitee_by_call.pop(call_id, None)
        if invited is not None:
            room, uuid = invited
            room.invitees.pop(uuid, None)
            self._forget_if_empty(room)
        return []

    def _forget_if_empty(self, room: Room) -> None:
        if not room.empty():
            return
        key = (room.appid, room.chan_id)
        if self._rooms.get(key) is room:
            del self._rooms[key]
        if self._by_name.get(room.name) is room:
            del self._by_name[room.name]
        if room.dial_code and self._by_code.get(room.dial_code) is room:
            del self._by_code[room.dial_code]

    # -- control --------------------------------------------------------------------------

    def _member_of(self, room: Room, uid: str) -> Member | None:
        seat = room.seats.get(uid)
        if seat is None or seat.member_id is None:
            return None
        return room.members.get(seat.member_id)

    def mute(
        self, appid: str, chan_id: str, uid: str, mute: bool, target: int | None
    ) -> list[ConfAction]:
        room = self._rooms.get((appid, chan_id))
        error = self._in_room(room, uid, chan_id)
        if error is not None or room is None:
            return error or []
        if target is None:
            me = self._member_of(room, uid)
            if me is None:
                return [Tell(uid, error_message(chan_id, NOT_IN_ROOM))]
            target = me.id
        elif not self._is_moderator(room, uid, target):
            return [Tell(uid, error_message(chan_id, NOT_MODERATOR))]
        if target not in room.members:
            return [Tell(uid, error_message(chan_id, NO_SUCH_MEMBER))]
        word = "mute" if mute else "unmute"
        return [ConfApi(room.name, (word, str(target)), uid, chan_id)]

    def kick(self, appid: str, chan_id: str, uid: str, target: int) -> list[ConfAction]:
        room = self._rooms.get((appid, chan_id))
        error = self._in_room(room, uid, chan_id)
        if error is not None or room is None:
            return error or []
        if room.moderator != uid:
            return [Tell(uid, error_message(chan_id, NOT_MODERATOR))]
        if target not in room.members:
            return [Tell(uid, error_message(chan_id, NO_SUCH_MEMBER))]
        return [ConfApi(room.name, ("kick", str(target)), uid, chan_id)]

    def end(self, appid: str, chan_id: str, uid: str) -> list[ConfAction]:
        room = self._rooms.get((appid, chan_id))
        error = self._in_room(room, uid, chan_id)
        if error is not None or room is None:
            return error or []
        if room.moderator != uid:
            return [Tell(uid, error_message(chan_id, NOT_MODERATOR))]
        return self._end_room(room)

    def _end_room(self, room: Room) -> list[ConfAction]:
        """Every leg of the room ends: the gateway's calls through their tables, members
        the gateway does not own (a phone added from fs_cli) by a kick."""
        room.ending = True
        actions: list[ConfAction] = []
        owned: set[str] = set()
        for seat in list(room.seats.values()):
            actions.append(ToCall(seat.call_id, "room_ended"))
            owned.update(u for u in (seat.a_uuid, seat.b_uuid) if u)
        for invitee in list(room.invitees.values()):
            actions.append(ToCall(invitee.call_id, "room_ended"))
            owned.add(invitee.uuid)
        for member in list(room.members.values()):
            if member.uuid not in owned and room.seat_of_member(member.id) is None:
                later = member.foreign
                actions.append(ConfApi(room.name, ("kick", str(member.id)), later=later))
        return actions

    def phone_elsewhere(self, name: str, uuid: str, number: str) -> list[ConfAction]:
        """In a cluster: phone channel ``uuid`` in room ``name`` is ``number`` (another
        process dialled or took it). A member already listed under its caller id is
        renamed and the list sent again."""
        room = self._by_name.get(name)
        if room is None or not number:
            return []
        room.phones[uuid] = number
        member = next((m for m in room.members.values() if m.uuid == uuid), None)
        if member is None or member.kind != "sip" or member.uid == number:
            return []
        member.uid = member.name = number
        return self._broadcast(room, "list", member.id)

    def ended_elsewhere(self, name: str) -> list[ConfAction]:
        """In a cluster, another process's moderator ended room ``name``: our own legs
        end (``room_ended``); the others are that process's and their own processes'."""
        room = self._by_name.get(name)
        if room is None:
            return []
        room.ending = True
        actions: list[ConfAction] = [ToCall(s.call_id, "room_ended") for s in room.seats.values()]
        actions += [ToCall(i.call_id, "room_ended") for i in room.invitees.values()]
        return actions

    def _in_room(self, room: Room | None, uid: str, chan_id: str) -> list[ConfAction] | None:
        if room is None or uid not in room.seats:
            return [Tell(uid, error_message(chan_id, NOT_IN_ROOM))]
        return None

    def _is_moderator(self, room: Room, uid: str, target: int) -> bool:
        me = self._member_of(room, uid)
        return room.moderator == uid or (me is not None and me.id == target)

    def api_failed(self, action: ConfApi) -> list[ConfAction]:
        """A ``conference`` command answered -ERR (the member left meanwhile...)."""
        if not action.requester:
            return []
        return [Tell(action.requester, error_message(action.chan_id, SWITCH_ERROR))]

    # -- the switch's events ----------------------------------------------------------------

    def maintenance(self, headers: Mapping[str, str]) -> list[ConfAction]:
        """One ``CUSTOM conference::maintenance`` event (headers decoded)."""
        if headers.get("Event-Subclass", SUBCLASS) != SUBCLASS:
            return []
        room = self._by_name.get(headers.get("Conference-Name", ""))
        if room is None:
            return []  # not one of ours (another gateway's, fs_cli's), or forgotten
        action = headers.get("Action", "")
        member_id = _int(headers.get("Member-ID"))
        if action == "conference-destroy":
            return self._destroyed(room)
        if action == LIST_ACTION:
            return self._listed(room, headers.get(LIST_HEADER, ""))
        if member_id is None:
            return []
        if action == "add-member":
            return self._added(room, member_id, headers)
        member = room.members.get(member_id)
        if member is None:
            return []  # left already, or an event about a member we never saw join
        if action == "del-member":
            return self._deleted(room, member)
        if action == "kick-member":
            return self._kicked(room, member)
        if action in ("mute-member", "unmute-member"):
            muted = action == "mute-member"
            if member.muted == muted:
                return []
            member.muted = muted
            return self._broadcast(room, "mute" if muted else "unmute", member.id)
        if action in ("start-talking", "stop-talking"):
            talking = action == "start-talking"
            if member.talking == talking:
                return []
            member.talking = talking
            return self._broadcast(room, "talking" if talking else "silent", member.id)
        return []

    def _added(self, room: Room, member_id: int, headers: Mapping[str, str]) -> list[ConfAction]:
        if member_id in room.members or member_id in room.gone:
            return []  # twice, or after its del-member
        uuid = headers.get("Unique-ID", "")
        number = headers.get("Caller-Caller-ID-Number", "")
        name = headers.get("Caller-Caller-ID-Name", "") or number
        channel = headers.get("Channel-Name", "")
        seat = self._seat_for(room, uuid, number, channel)
        if seat is not None:
            seat.member_id = member_id
            seat.b_uuid = seat.b_uuid or uuid
            member = Member(member_id, uuid, seat.uid, "web", seat.name)
        elif self.shared and channel.startswith("loopback/") and uuid not in room.invitees:
            # Another process's web member: its uid as the originate carried it.
            member = Member(member_id, uuid, number, "web", name, foreign=True)
        else:
            invitee = room.invitees.get(uuid)
            known = invitee.number if invitee is not None else room.phones.get(uuid)
            uid = number if known is None else known
            member = Member(member_id, uuid, uid, "sip", name if known is None else uid)
        member.muted = headers.get("Speak") == "false"
        if headers.get(LIST_HEADER):
            member.talking = headers.get("Talking") == "true"
        room.members[member_id] = member
        return self._broadcast(room, "list" if headers.get(LIST_HEADER) else "join", member_id)

    def _listed(self, room: Room, text: str) -> list[ConfAction]:
        """``conference <room> list``: one line per member, newest first, ``<id>;<channel
        name>;<uuid>;<caller id name>;<caller id number>;<flags>;...`` (recorded). Each
        member not known yet is added as its add-member would; the events that follow keep
        the list current (a member that left meanwhile is in ``gone``)."""
        actions: list[ConfAction] = []
        for line in reversed(text.splitlines()):
            fields = line.split(";")
            if len(fields) < 6 or not fields[0].isdigit():
                continue
            flags = fields[5].split("|")
            headers = {
                "Unique-ID": fields[2],
                "Channel-Name": fields[1],
                "Caller-Caller-ID-Name": fields[3],
                "Caller-Caller-ID-Number": fields[4],
                "Speak": "true" if "speak" in flags else "false",
                "Talking": "true" if "talking" in flags else "false",
                LIST_HEADER: "1",
            }
            actions += self._added(room, int(fields[0]), headers)
        return actions

    def _seat_for(self, room: Room, uuid: str, number: str, channel: str) -> Seat | None:
        for seat in room.seats.values():
            if seat.b_uuid and seat.b_uuid == uuid:
                return seat
        if not channel.startswith("loopback/"):
            return None
        # The caller id number is the uid as the originate could carry it.
        for seat in room.seats.values():
            if seat.member_id is None and not seat.b_uuid and channel_var_value(seat.uid) == number:
                return seat
        return None

    def _deleted(self, room: Room, member: Member) -> list[ConfAction]:
        del room.members[member.id]
        room.gone.add(member.id)
        seat = room.seat_of_member(member.id)
        if seat is not None:
            seat.member_id = None
        actions = self._broadcast(room, "leave", member.id)
        self._forget_if_empty(room)
        return actions

    def _kicked(self, room: Room, member: Member) -> list[ConfAction]:
        """kick-member comes before its del-member (recorded): the kicked web member's call
        ends with EndCall kicked (room_ended when the room is ending); a phone's call is
        ended too (an originated one would end by itself as its conference application
        returns, a dial-in one stays in the gateway's socket)."""
        actions: list[ConfAction] = []
        reason = "room_ended" if room.ending else "kicked"
        seat = room.seat_of_member(member.id)
        invitee = room.invitees.get(member.uuid)
        if seat is not None:
            actions.append(ToCall(seat.call_id, reason))
        elif invitee is not None:
            # A dial-in phone's socket channel would stay up after leaving: hang it up.
            actions.append(ToCall(invitee.call_id, reason))
        return actions + self._broadcast(room, "kick", member.id)

    def _destroyed(self, room: Room) -> list[ConfAction]:
        """The switch destroyed the room: nobody is a member any more. Seats and invitees
        still held end with their calls (their hangups follow)."""
        room.gone.update(room.members)
        room.members.clear()
        for seat in room.seats.values():
            seat.member_id = None
        self._forget_if_empty(room)
        return []

    def _broadcast(self, room: Room, event: str, member_id: int | None) -> list[ConfAction]:
        """The member list to every web user seated in the room, ``Self`` per copy."""
        return [
            Tell(seat.uid, self.members_message(room, event, member_id, seat.uid))
            for seat in room.seats.values()
        ]

    def members_message(self, room: Room, event: str, member_id: int | None, uid: str) -> str:
        seat = room.seats.get(uid)
        mine = None if seat is None else seat.member_id
        members = [
            {
                "Id": m.id,
                "Uid": m.uid,
                "Kind": m.kind,
                "Name": m.name,
                "Talking": m.talking,
                "Muted": m.muted,
                "Moderator": m.kind == "web" and _moderates(room, m),
                "Self": m.id == mine,
            }
            for m in room.members.values()
        ]
        return _dumps(
            {
                "Cmd": "ConfMembers",
                "ChanId": room.chan_id,
                "Members": members,
                "Event": event,
                "Member": member_id,
            }
        )


def _moderates(room: Room, member: Member) -> bool:
    """Another process's web member is known by its uid as the channel carries it."""
    if member.foreign:
        return member.uid == channel_var_value(room.moderator)
    return member.uid == room.moderator


def _int(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None
    return int(text)
