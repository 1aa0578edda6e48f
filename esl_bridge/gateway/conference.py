"""Conference rooms on the controller's loop: the room table (core/conference.py) wired to
the hub (the Conf* peer messages between web users and the gateway uid), to the call book
(a web member's leg is a ``ConfWebCall``, a SIP invitee a ``ConfSipCall``) and to
FreeSWITCH (``conference`` api commands, ``conference::maintenance`` events).

The controller owns one ``ConferenceDesk`` and calls it at a few points: a peer message
to the gateway uid whose ``Cmd`` is a conference one, an invitation whose content says
``"Conference":true``, a call that ended, an A leg that answered, a room event, a failed
``conference`` command.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from esl_bridge.core import call as c
from esl_bridge.core import conference as conf
from esl_bridge.core import peer_json
from esl_bridge.core.invitations import CHANNEL_ID_MAX_BYTES
from esl_bridge.gateway.esl_side import ConferenceApi
from esl_bridge.logs import get_logger

if TYPE_CHECKING:
    from esl_bridge.gateway.controller import CallController

log = get_logger("gateway.conference")

COMMANDS = frozenset({"ConfJoin", "ConfMute", "ConfKick", "ConfEnd"})
#: The channel variable in which dialplan/'s dial-in route hands the room's code over.
DIAL_IN_VAR = "esl_bridge_conf_code"


class ConfRequestError(ValueError):
    """A Conf* message with a missing or wrong field."""


class ConferenceDesk:
    """The rooms of one gateway (its appid) and their glue to the controller."""

    def __init__(self, controller: CallController) -> None:
        self.controller = controller
        self.settings = controller.settings.conference
        self.table = conf.RoomTable(self.settings)
        self.appid = controller.appid

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
                self._run(self.table.end(self.appid, chan_id, sender))
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
        room_name = joined.room.name
        call, actions = ctl.book.conference_join(
            uid, chan_id, name, room_name, self.settings.profile, now
        )
        if call is None:
            log.info("conference.join_refused", uid=uid, chan_id=chan_id, reason="capacity")
            self._tell(uid, conf.refused_message(chan_id, conf.SWITCH_ERROR))
            return
        room = self.table.seat(joined, uid, name, call.call_id, call.uuid)
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
        self, caller: str, content: str
    ) -> tuple[conf.Joined, str] | str | None:
        """None: not a conference invitation. Else ``(joined, chan_id)``, or the refusal
        reason (room_full, too_many_rooms, conference_off, bad_channel_id)."""
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
            return "bad_channel_id"
        joined = self.table.invite(self.appid, chan_id, caller, self.controller.clock())
        if isinstance(joined, str):
            return joined
        return joined, chan_id

    def invitee_added(self, joined: conf.Joined, call_id: str, uuid: str, number: str) -> None:
        room = self.table.add_invitee(joined, call_id, uuid, number)
        log.info("conference.number_invited", room=room.name, call_id=call_id, number=number)

    # -- dial-in ------------------------------------------------------------------------

    def dial_in(self, record: Any, code: str) -> None:
        """A phone dialled ``<dialin_prefix><code>`` and the dialplan brought its channel to
        the socket: into the room, or hung up (unknown room NO_ROUTE_DESTINATION, full
        CALL_REJECTED)."""
        ctl = self.controller
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
                ctl.channels.operate(
                    ConferenceApi("", action.room, action.words, action.requester, action.chan_id)
                )
            elif isinstance(action, conf.ToCall):
                ctl.event(action.call_id, c.RoomRemoved(action.reason))


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
