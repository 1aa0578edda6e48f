"""Conference rooms on the controller's loop: the room table (core/conference.py) wired to
the hub (the Conf* peer messages between web users and the gateway uid), to the call book
(a web member's leg is a ``ConfWebCall``, a SIP invitee a ``ConfSipCall``) and to
FreeSWITCH (``conference`` api commands, ``conference::maintenance`` events).

The controller owns one ``ConferenceDesk`` and calls it at a few points: a peer message
to the gateway uid whose ``Cmd`` is a conference one, an invitation whose content says
``"Conference":true``, a call that ended, an A leg that answered, a room event, a failed
``conference`` command.

In a cluster (``[cluster] redis_url``) a room is one across the processes: each leg this
process puts in a room (a web member on its WebSockets, a number it dials, a phone whose
socket reached it) is admitted in Redis first (cluster/rooms.py: moderator, dial-in code,
``max_members``, ``max_rooms_per_appid``, all cluster-wide) and released when its call
ends; the table learns the others' members from the switch's events, and moderator
commands go to the switch from whichever process the moderator is on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from esl_bridge.core import call as c
from esl_bridge.core import conference as conf
from esl_bridge.core import ids, peer_json
from esl_bridge.core.invitations import CHANNEL_ID_MAX_BYTES
from esl_bridge.gateway.esl_side import ConferenceApi
from esl_bridge.logs import get_logger

if TYPE_CHECKING:
    from esl_bridge.gateway.controller import CallController

log = get_logger("gateway.conference")

COMMANDS = frozenset({"ConfJoin", "ConfMute", "ConfKick", "ConfEnd"})
#: The channel variable in which dialplan/'s dial-in route hands the room's code over.
DIAL_IN_VAR = "esl_bridge_conf_code"


#: At ConfEnd in a cluster, the other processes end their own members when the bus tells
#: them (``conf_end``); a kick of those still in the room this long after is the fallback.
END_FALLBACK = 2.0


class ConfRequestError(ValueError):
    """A Conf* message with a missing or wrong field."""


class SharedRooms(Protocol):
    """The cluster's side of the rooms (esl_bridge/cluster/node.py ClusterNode)."""

    member: str
    handlers: dict[str, Callable[[str, dict[str, Any]], None]]

    async def room_admit(
        self,
        name: str,
        chan_id: str,
        uid: str,
        token: str,
        *,
        max_members: int,
        max_rooms: int,
        code_seed: int | None,
        join_only: bool = False,
    ) -> Any: ...

    def room_release(self, name: str, token: str) -> None: ...

    def room_ending(self, name: str) -> None: ...

    def room_phone(self, name: str, uuid: str, number: str) -> None: ...

    async def room_phones(self, name: str) -> dict[str, str]: ...

    async def room_by_code(self, code: str) -> Any: ...

    def broadcast(self, message: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class SharedLeg:
    """A leg Redis admitted into room ``name`` (token ``token``), not yet a call."""

    name: str
    chan_id: str
    token: str
    moderator: str
    code: str


class ConferenceDesk:
    """The rooms of one gateway (its appid) and their glue to the controller."""

    def __init__(self, controller: CallController) -> None:
        self.controller = controller
        self.settings = controller.settings.conference
        self.appid = controller.appid
        cluster = controller.cluster
        self.shared: SharedRooms | None = (
            cluster if cluster is not None and hasattr(cluster, "room_admit") else None
        )
        self.table = conf.RoomTable(self.settings, shared=self.shared is not None)
        self._legs: dict[str, tuple[str, str]] = {}  # call id -> (room, leg token)
        # In a cluster: dial-in channels waiting for Redis -> hung up meanwhile.
        self._dialling_in: dict[str, bool] = {}
        if self.shared is not None:
            self.shared.handlers["conf_end"] = self._ended_elsewhere
            self.shared.handlers["conf_who"] = self._phone_elsewhere

    # -- peer messages ------------------------------------------------------------------

    def peer_message(self, to: str, sender: str, text: str) -> bool:
        """Handle a Conf* message to the gateway uid; False when it is not one."""
        ctl = self.controller
        if to != ctl.gateway_uid:
            return False
        try:
            body = peer_json.loads(text)
        except ValueError:
            return False
        if not isinstance(body, dict) or body.get("Cmd") not in COMMANDS:
            return False
        cmd = str(body["Cmd"])
        try:
            chan_id = _chan_id(body)
            if cmd == "ConfJoin":
                self.join(sender, chan_id, _display_name(body))
            elif cmd == "ConfMute":
                mute = body.get("Mute")
                if not isinstance(mute, bool):
                    raise ConfRequestError("ConfMute: Mute must be true or false")
                target = _member(body, required=False)
                self._run(self.table.mute(self.appid, chan_id, sender, mute, target))
            elif cmd == "ConfKick":
                target = _member(body, required=True)
                assert target is not None
                self._run(self.table.kick(self.appid, chan_id, sender, target))
            else:
                self._end(sender, chan_id)
        except ConfRequestError as exc:
            log.info("conference.request_rejected", uid=sender, cmd=cmd, error=str(exc))
            chan = body.get("ChanId") if isinstance(body.get("ChanId"), str) else ""
            if cmd == "ConfJoin":
                self._tell(sender, conf.refused_message(chan, "bad_request"))
            else:
                self._tell(sender, conf.error_message(chan, "bad_request"))
        return True

    def join(self, uid: str, chan_id: str, name: str) -> None:
        ctl = self.controller
        now = ctl.clock()
        if ctl.esl_state != "connected":
            self._tell(uid, conf.refused_message(chan_id, conf.SWITCH_ERROR))
            return
        joined = self.table.join(self.appid, chan_id, uid, now)
        if isinstance(joined, str):
            log.info("conference.join_refused", uid=uid, chan_id=chan_id, reason=joined)
            self._tell(uid, conf.refused_message(chan_id, joined))
            return
        if self.shared is not None:
            ctl._spawn(self._join_shared(uid, chan_id, name))
            return
        self._seat(uid, chan_id, name, joined, None)

    async def _join_shared(self, uid: str, chan_id: str, name: str) -> None:
        """In a cluster: the room admits the leg in Redis first, then the join goes on
        as in one process, with the cluster's moderator and dial-in code."""
        ctl = self.controller
        leg = await self._admit(chan_id, uid, join_only=False)
        if isinstance(leg, str):
            log.info("conference.join_refused", uid=uid, chan_id=chan_id, reason=leg)
            reason = conf.SWITCH_ERROR if leg == "cluster_unavailable" else leg
            self._tell(uid, conf.refused_message(chan_id, reason))
            return
        joined = self.table.adopt(self.appid, chan_id, leg.moderator, leg.code, ctl.clock())
        if not isinstance(joined, str) and uid in joined.room.seats:
            joined = conf.ALREADY_JOINED  # a second ConfJoin of the same user meanwhile
        if isinstance(joined, str) or ctl.esl_state != "connected":
            reason = joined if isinstance(joined, str) else conf.SWITCH_ERROR
            self.release_leg(leg)
            log.info("conference.join_refused", uid=uid, chan_id=chan_id, reason=reason)
            self._tell(uid, conf.refused_message(chan_id, reason))
            return
        self._seat(uid, chan_id, name, joined, leg)
        ctl._kick_hub()

    def _seat(
        self, uid: str, chan_id: str, name: str, joined: conf.Joined, leg: SharedLeg | None
    ) -> None:
        ctl = self.controller
        now = ctl.clock()
        room_name = joined.room.name
        call, actions = ctl.book.conference_join(
            uid, chan_id, name, room_name, self.settings.profile, now
        )
        if call is None:
            if leg is not None:
                self.release_leg(leg)
            log.info("conference.join_refused", uid=uid, chan_id=chan_id, reason="capacity")
            self._tell(uid, conf.refused_message(chan_id, conf.SWITCH_ERROR))
            return
        room = self.table.seat(joined, uid, name, call.call_id, call.uuid)
        self._keep_leg(call.call_id, leg, joined)
        moderator = room.moderator == uid
        log.info(
            "conference.joined",
            uid=uid,
            room=room.name,
            call_id=call.call_id,
            created=joined.created,
            moderator=moderator,
        )
        self._tell(
            uid, conf.joined_message(chan_id, room.name, self.table.dial_in(room), moderator)
        )
        self._tell(uid, self.table.members_message(room, "list", None, uid))
        ctl._watch(uid)
        ctl._run(actions)

    # -- invitations to numbers -----------------------------------------------------------

    def room_for_invitation(
        self, caller: str, content: str, leg: SharedLeg | None = None
    ) -> tuple[conf.Joined, str] | str | None:
        """None: not a conference invitation. Else ``(joined, chan_id)``, or the refusal
        reason (room_full, too_many_rooms, conference_off, bad_channel_id). In a cluster
        ``leg`` is the invitation's admission (``admit_invitation``)."""
        chan_id = _conference_chan_id(content)
        if chan_id is None or chan_id == "":
            return None if chan_id is None else "bad_channel_id"
        now = self.controller.clock()
        if leg is not None:
            joined = self.table.adopt(self.appid, chan_id, leg.moderator, leg.code, now)
        else:
            joined = self.table.invite(self.appid, chan_id, caller, now)
        if isinstance(joined, str):
            return joined
        return joined, chan_id

    async def admit_invitation(self, caller: str, content: str) -> SharedLeg | str | None:
        """In a cluster, before a number is dialled into a room: its leg admitted in Redis
        (a ``SharedLeg``), or the refusal reason; None when no admission is needed (no
        cluster, not a conference invitation, or one the table refuses anyway)."""
        chan_id = _conference_chan_id(content)
        if self.shared is None or not chan_id:
            return None
        if isinstance(self.table.invite(self.appid, chan_id, caller, self.controller.clock()), str):
            return None  # refused here already: room_for_invitation says why
        return await self._admit(chan_id, caller, join_only=False)

    def invitee_added(
        self,
        joined: conf.Joined,
        call_id: str,
        uuid: str,
        number: str,
        leg: SharedLeg | None = None,
    ) -> None:
        room = self.table.add_invitee(joined, call_id, uuid, number)
        self._keep_leg(call_id, leg, joined, (uuid, number))
        log.info("conference.number_invited", room=room.name, call_id=call_id, number=number)

    # -- dial-in ------------------------------------------------------------------------

    def dial_in(self, record: Any, code: str) -> None:
        """A phone dialled ``<dialin_prefix><code>`` and the dialplan brought its channel to
        the socket: into the room, or hung up (unknown room NO_ROUTE_DESTINATION, full
        CALL_REJECTED)."""
        ctl = self.controller
        if self.shared is not None:
            ctl._spawn(self._dial_in_shared(record, code))
            return
        uuid = record.uuid
        number = record.caller_number or ""
        found = self.table.dial_in_check(code) if code.isdigit() else "NO_ROUTE_DESTINATION"
        if isinstance(found, str):
            log.info("conference.dial_in_refused", uuid=uuid, caller=number, cause=found)
            ctl.channels.operate(c.Hangup("", uuid, found))
            return
        target = f"{found.name}@{self.settings.profile}"
        call, actions = ctl.book.conference_dial_in(
            uuid=uuid, caller_number=number, chan_id=found.chan_id, target=target, now=ctl.clock()
        )
        if call is not None:
            self.table.add_dial_in(found, call.call_id, uuid, number)
            ctl._links_of(call.call_id).headers.update(record.headers)
            log.info("conference.dial_in", uuid=uuid, caller=number, room=found.name)
        ctl._run(actions)

    async def _dial_in_shared(self, record: Any, code: str) -> None:
        """In a cluster: the code's room is looked up in Redis (it may have been made on
        another process) and the phone's leg admitted there before it joins."""
        uuid = record.uuid
        self._dialling_in[uuid] = False
        try:
            await self._dial_in_admitted(record, code)
        except Exception:
            log.exception("conference.dial_in_failed", uuid=uuid)
            self.controller.channels.operate(c.Hangup("", uuid, "NORMAL_TEMPORARY_FAILURE"))
        finally:
            self._dialling_in.pop(uuid, None)

    def channel_gone(self, uuid: str) -> None:
        """A channel the book does not know hung up: a dial-in still waiting for Redis
        must not become a call."""
        if uuid in self._dialling_in:
            self._dialling_in[uuid] = True

    async def _dial_in_admitted(self, record: Any, code: str) -> None:
        ctl = self.controller
        uuid = record.uuid
        number = record.caller_number or ""
        found = await self._room_of_code(code)
        leg: SharedLeg | str = found if isinstance(found, str) else ""
        if not isinstance(found, str):
            leg = await self._admit(found[1], number, join_only=True, name=found[0])
        if isinstance(leg, str):
            cause = found if isinstance(found, str) else _DIAL_IN_CAUSES.get(leg, "")
            log.info("conference.dial_in_refused", uuid=uuid, caller=number, cause=cause)
            ctl.channels.operate(c.Hangup("", uuid, cause or "NO_ROUTE_DESTINATION"))
            return
        if self._dialling_in.get(uuid):
            self.release_leg(leg)  # the caller hung up meanwhile: no call to make
            log.info("conference.dial_in_gone", uuid=uuid, caller=number)
            return
        joined = self.table.adopt(self.appid, leg.chan_id, leg.moderator, leg.code, ctl.clock())
        if isinstance(joined, str):
            self.release_leg(leg)
            cause = "CALL_REJECTED" if joined == conf.ROOM_FULL else "NO_ROUTE_DESTINATION"
            log.info("conference.dial_in_refused", uuid=uuid, caller=number, cause=cause)
            ctl.channels.operate(c.Hangup("", uuid, cause))
            return
        target = f"{joined.room.name}@{self.settings.profile}"
        call, actions = ctl.book.conference_dial_in(
            uuid=uuid, caller_number=number, chan_id=leg.chan_id, target=target, now=ctl.clock()
        )
        if call is None:
            self.release_leg(leg)
        else:
            self.table.add_dial_in(joined, call.call_id, uuid, number)
            self._keep_leg(call.call_id, leg, joined, (uuid, number))
            ctl._links_of(call.call_id).headers.update(record.headers)
            log.info("conference.dial_in", uuid=uuid, caller=number, room=joined.room.name)
        ctl._run(actions)

    async def _room_of_code(self, code: str) -> tuple[str, str] | str:
        """(room name, ChanId) of a dial-in code, or the hangup cause."""
        assert self.shared is not None
        if not code.isdigit() or not self.settings.on or not self.settings.dialin_prefix:
            return "NO_ROUTE_DESTINATION"
        found = await self.shared.room_by_code(code)
        if found is False:
            return "NORMAL_TEMPORARY_FAILURE"  # Redis cannot be asked
        if found is None:
            return "NO_ROUTE_DESTINATION"
        return str(found.name), str(found.chan_id)

    # -- the cluster's share of a room ----------------------------------------------------

    async def _admit(
        self, chan_id: str, uid: str, *, join_only: bool, name: str = ""
    ) -> SharedLeg | str:
        """A leg of ``uid`` admitted into room ``chan_id`` in Redis, or the refusal reason
        (cluster_unavailable when Redis cannot be asked)."""
        assert self.shared is not None
        name = name or conf.room_name(self.appid, chan_id)
        token = f"{self.shared.member}:{ids.new_id('leg')}"
        admitted = await self.shared.room_admit(
            name,
            chan_id,
            uid,
            token,
            max_members=self.settings.max_members,
            max_rooms=self.settings.max_rooms_per_appid,
            code_seed=conf.code_seed(name) if self.settings.dialin_prefix else None,
            join_only=join_only,
        )
        if admitted is None:
            return "cluster_unavailable"
        if isinstance(admitted, str):
            return admitted
        return SharedLeg(name, chan_id, token, admitted.moderator, admitted.code)

    def release_leg(self, leg: SharedLeg) -> None:
        if self.shared is not None:
            self.shared.room_release(leg.name, leg.token)

    def _keep_leg(
        self,
        call_id: str,
        leg: SharedLeg | None,
        joined: conf.Joined,
        phone: tuple[str, str] | None = None,
    ) -> None:
        """The call ``call_id`` holds ``leg`` until it ends; ``phone``: its channel uuid
        and number, told to the other processes. A room new to this process in a
        cluster: who is in it already (other processes' members) is read from the switch,
        after the numbers of the phones others put there (Redis)."""
        if leg is None or self.shared is None:
            return
        self._legs[call_id] = (leg.name, leg.token)
        if phone is not None:
            self.shared.room_phone(leg.name, *phone)
        if joined.created:
            self.controller._spawn(self._read_room(leg.name))

    async def _read_room(self, name: str) -> None:
        assert self.shared is not None
        phones = await self.shared.room_phones(name)
        for uuid, number in phones.items():
            self._run(self.table.phone_elsewhere(name, uuid, number))
        self.controller.channels.operate(ConferenceApi("", name, ("list",)))

    def _phone_elsewhere(self, sender: str, message: dict[str, Any]) -> None:
        name, uuid, number = (message.get(k) for k in ("room", "uuid", "uid"))
        if isinstance(name, str) and isinstance(uuid, str) and isinstance(number, str):
            self._run(self.table.phone_elsewhere(name, uuid, number))

    def _end(self, uid: str, chan_id: str) -> None:
        actions = self.table.end(self.appid, chan_id, uid)
        room = self.table.get(self.appid, chan_id)
        if self.shared is not None and room is not None and room.ending:
            log.info("conference.ended", room=room.name, uid=uid)
            self.shared.room_ending(room.name)
            self.shared.broadcast({"t": "conf_end", "room": room.name})
        self._run(actions)

    def _ended_elsewhere(self, sender: str, message: dict[str, Any]) -> None:
        """Another process's moderator ended a room: our legs in it end (room_ended)."""
        name = message.get("room")
        if isinstance(name, str):
            actions = self.table.ended_elsewhere(name)
            if actions:
                log.info("conference.ended_elsewhere", room=name, member=sender)
            self._run(actions)

    # -- FreeSWITCH -----------------------------------------------------------------------

    def maintenance(self, headers: Mapping[str, str]) -> None:
        self._run(self.table.maintenance(headers))

    def channel_answered(self, call: c.Call, headers: Mapping[str, str]) -> None:
        """A web member's A leg answered: its B leg (the member) is named there."""
        self.table.loopback_partner(
            call.call_id, headers.get("variable_other_loopback_leg_uuid", "")
        )

    def api_failed(self, op: ConferenceApi, error: str) -> None:
        log.info("conference.command_failed", room=op.uuid, words=op.words, error=error)
        self._run(self.table.api_failed(conf.ConfApi(op.uuid, op.words, op.requester, op.chan_id)))

    def call_ended(self, call_id: str) -> None:
        leg = self._legs.pop(call_id, None)
        if leg is not None and self.shared is not None:
            self.shared.room_release(*leg)
        self._run(self.table.call_ended(call_id))

    def status(self) -> dict[str, Any]:
        return {"rooms": len(self.table)}

    # -- actions --------------------------------------------------------------------------

    def _tell(self, uid: str, text: str) -> None:
        ctl = self.controller
        ctl.handle.send_message(ctl.gateway_uid, uid, text, ctl.clock())
        ctl._kick_hub()

    def _run(self, actions: list[conf.ConfAction]) -> None:
        ctl = self.controller
        for action in actions:
            if isinstance(action, conf.Tell):
                self._tell(action.to, action.text)
            elif isinstance(action, conf.ConfApi):
                op = ConferenceApi("", action.room, action.words, action.requester, action.chan_id)
                if action.later:
                    asyncio.get_running_loop().call_later(END_FALLBACK, ctl.channels.operate, op)
                else:
                    ctl.channels.operate(op)
            elif isinstance(action, conf.ToCall):
                ctl.event(action.call_id, c.RoomRemoved(action.reason))


#: A dial-in refused by Redis: the hangup cause.
_DIAL_IN_CAUSES = {
    "cluster_unavailable": "NORMAL_TEMPORARY_FAILURE",
    "no_room": "NO_ROUTE_DESTINATION",
    "room_full": "CALL_REJECTED",
    "too_many_rooms": "CALL_REJECTED",
}


def _conference_chan_id(content: str) -> str | None:
    """The ChanId of a conference invitation's content; "" when it has none usable, None
    when the content is not a conference invitation."""
    try:
        body = peer_json.loads(content) if content else {}
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("Conference") is not True:
        return None
    chan_id = body.get("ChanId")
    if (
        not isinstance(chan_id, str)
        or not chan_id
        or len(chan_id.encode("utf-8")) > CHANNEL_ID_MAX_BYTES
    ):
        return ""
    return chan_id


def _chan_id(body: Mapping[str, Any]) -> str:
    chan_id = body.get("ChanId")
    if not isinstance(chan_id, str) or not chan_id:
        raise ConfRequestError("ChanId must be a non-empty string")
    if len(chan_id.encode("utf-8")) > CHANNEL_ID_MAX_BYTES:
        raise ConfRequestError(f"ChanId longer than {CHANNEL_ID_MAX_BYTES} bytes")
    if peer_json.has_lone_surrogate(chan_id):
        raise ConfRequestError("ChanId holds a lone surrogate")
    return chan_id


def _display_name(body: Mapping[str, Any]) -> str:
    name = body.get("DisplayName")
    if name is None:
        return ""
    if not isinstance(name, str) or len(name) > conf.DISPLAY_NAME_MAX:
        raise ConfRequestError(f"DisplayName must be a string of <= {conf.DISPLAY_NAME_MAX}")
    if peer_json.has_lone_surrogate(name):
        raise ConfRequestError("DisplayName holds a lone surrogate")
    return name


def _member(body: Mapping[str, Any], *, required: bool) -> int | None:
    member = body.get("Member")
    if member is None and not required:
        return None
    if not isinstance(member, int) or isinstance(member, bool) or member < 0:
        raise ConfRequestError("Member must be a member id (a whole number)")
    return member
