"""Conferences (mod_conference) in the simulator: rooms, their members, the api `conference`,
the CUSTOM `conference::maintenance` events and the mixing of the members' audio.

As recorded on FreeSWITCH 1.10.12 (tests/fixtures/freeswitch/conference/, README "Conference
recordings"):
* `originate {...}loopback/conference:<room>@<profile>/<context>/inline &park()`: `+OK <A uuid>`
  at once; the A leg (`loopback/conference:<room>@<profile>-a`) is answered and parked with L16 at
  8000 Hz, the B leg (`...-b`, `other_loopback_leg_uuid` of the A leg) runs `conference` and is
  the member; when one leg of the pair ends, so does the other;
* `conference list`, `conference <room> list|mute|unmute|kick <id>`: the recorded replies;
* the events `conference-create`, `add-member`, `floor-change`, `start-talking`, `stop-talking`,
  `mute-member`, `unmute-member`, `kick-member`, `del-member`, `conference-destroy` with the
  recorded headers in order; member ids count up across the switch.

Mixing: every 20 ms each member's input frame (the L16 the gateway sends to the A leg's unicast,
or the tone of a simulated phone) is summed; each member gets the sum minus its own frame,
clipped to 16 bits. A loopback member's mix goes out on its A leg's unicast; what a phone member
hears is kept in `Member.heard` (for tests).

Talking (modelled on the recorded talking scenario): energy above the profile's level starts
it, 40 quiet frames end it; a muted member counts as quiet.

Not simulated: the enter/exit sounds (`play-file`, `play-file-done`), the talking statistics of
stop-talking other than gate hits, packets, duration and average energy, `mute-detect`,
`json_list`, other profiles' rates (every room mixes at 8 kHz, as the recorded loopback pairs
ran), members that are not loopback B legs or simulated phones, echo phones in a room (they add
nothing to the mix), `conference <room> kick|mute all|last|non_moderator`.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from esl_bridge.logs import get_logger

from .channel import Channel, common_event_headers
from .codecs import Codec
from .dialstring import AppSpec, DialString
from .media import FRAME_S, AudioSource, UnicastStream, is_ff_frame, tone_frame

if TYPE_CHECKING:
    from .server import Simulator

log = get_logger(__name__)

# A loopback pair's codec (recorded: L16 at 8000 Hz, bit rate 128000, both legs).
L16_8K = Codec("L16", 8000, 1, 128000, 8000, 96, "L16@8000h@20i", "L16/8000")
SAMPLES = L16_8K.rate // 50
Samples = npt.NDArray[np.int32]  # one 20 ms frame of a member, widened for the sum
ROOM_FLAGS = "running|answered|enforce_min|dynamic|exit_sound|enter_sound|json_status"
SUBCLASS = "conference::maintenance"
ENERGY_LEVEL = 100  # the vanilla profiles' energy-level (recorded Energy-Level)
# Quiet frames before stop-talking (recorded: about 0.8 s after the tone ended).
TALK_HANGOVER = 40
# Event-Calling-* of each action, as recorded.
CALLING = {
    "conference-create": ("mod_conference.c", "conference_new", "3848"),
    "add-member": ("conference_member.c", "conference_member_add", "962"),
    "floor-change": ("conference_member.c", "conference_member_set_floor_holder", "1158"),
    "mute-member": ("conference_api.c", "conference_api_sub_mute", "339"),
    "unmute-member": ("conference_api.c", "conference_api_sub_unmute", "492"),
    "kick-member": ("conference_api.c", "conference_api_sub_kick", "902"),
    "start-talking": ("conference_loop.c", "conference_loop_input", "1154"),
    "stop-talking": ("conference_loop.c", "stop_talking_handler", "783"),
    "del-member": ("conference_member.c", "conference_member_del", "1355"),
    "conference-destroy": ("mod_conference.c", "conference_thread_run", "863"),
}


@dataclass
class Member:
    id: int
    channel: Channel  # the member leg: a loopback B leg or a simulated phone's leg
    partner: Channel | None  # a loopback B leg's A leg (carries the unicast to the gateway)
    muted: bool = False
    floor: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    heard: deque[bytes] = field(default_factory=lambda: deque(maxlen=250))  # mixes, 5 s
    _out: deque[bytes] = field(default_factory=lambda: deque(maxlen=5))
    _in_stream: UnicastStream | None = None
    _cursor: int = 0
    _tone_index: int = 0
    talking: bool = False
    energy: int = 0  # Current-Energy: the last frame's, while it was above the level
    _quiet_frames: int = 0
    _talk_hits: int = 0
    _talk_energy: int = 0

    def take_input(self) -> Samples | None:
        """This member's next 20 ms of L16 for the room (None: nothing, or muted)."""
        if self.partner is not None:
            frame = self._next_unicast_frame(self.partner.unicast)
        else:
            frame = self._phone_frame()
        if frame is None or self.muted:
            return None
        return np.frombuffer(frame, dtype="<i2").astype(np.int32)

    def _next_unicast_frame(self, stream: UnicastStream | None) -> bytes | None:
        if stream is None:
            return None
        if stream is not self._in_stream:
            self._in_stream, self._cursor = stream, len(stream.received)
        received = stream.received
        if len(received) - self._cursor > 4:
            self._cursor = len(received) - 2  # fell behind (a busy loop): keep up, not late
        if self._cursor >= len(received):
            return None
        data = received[self._cursor].data
        self._cursor += 1
        if is_ff_frame(data) or len(data) != L16_8K.frame_bytes:
            return None
        return data

    def _phone_frame(self) -> bytes | None:
        audio = self.channel.audio
        if audio.kind != "tone":
            return None
        index = self._tone_index
        self._tone_index += 1
        return tone_frame(audio.freq, L16_8K, index, audio.amplitude)

    def deliver(self, mix: bytes) -> None:
        self.heard.append(mix)
        if self.partner is not None:
            self._out.append(mix)

    def next_out(self, index: int, codec: Codec) -> bytes:
        """The A leg's unicast producer: the next mix, silence when there is none yet."""
        return self._out.popleft() if self._out else bytes(codec.frame_bytes)


@dataclass
class Room:
    name: str
    profile: str
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    members: dict[int, Member] = field(default_factory=dict)  # in joining order
    mixer: asyncio.Task[None] | None = None

    def member(self, text: str) -> Member | None:
        return self.members.get(int(text)) if text.isdigit() else None


def mix(inputs: dict[int, Samples], ids: list[int]) -> dict[int, bytes]:
    """Each id's mix (little-endian L16): the sum of every input minus its own, clipped."""
    total = np.zeros(SAMPLES, dtype=np.int32)
    for samples in inputs.values():
        total += samples
    out: dict[int, bytes] = {}
    for mid in ids:
        own = inputs.get(mid)
        values = total if own is None else total - own
        out[mid] = np.clip(values, -32768, 32767).astype("<i2").tobytes()
    return out


class ConferenceMixin:
    """Part of `server.Simulator`: `self` is the simulator."""

    rooms: dict[str, Room]
    _member_seq: int
    _conference_of: dict[str, tuple[Room, Member]]  # member leg uuid -> its room and member
    _loopback_pair: dict[str, Channel]  # each leg of a conference loopback pair -> the other

    # ---- joining -------------------------------------------------------------------------------
    async def _originate_conference_loopback(
        self: Simulator, ds: DialString, app: AppSpec, cid_num: str, cid_name: str | None
    ) -> str:
        target = ds.target  # conference:<room>@<profile>
        room_name, _, profile = target.partition(":")[2].partition("@")
        if not room_name:
            return "-ERR NO_ROUTE_DESTINATION\n"
        if self.crashed:
            return "-ERR NORMAL_TEMPORARY_FAILURE\n"
        a_uuid = ds.variables.get("origination_uuid") or str(uuidlib.uuid4())
        if a_uuid in self.channels:
            return "-ERR DESTINATION_OUT_OF_ORDER\n"
        name = cid_name or ""
        a = Channel(
            self,
            a_uuid,
            kind="loopback",
            name=f"loopback/{target}-a",
            direction="outbound",
            codec=L16_8K,
            session_id=self._new_session_id(),
        )
        b = Channel(
            self,
            str(uuidlib.uuid4()),
            kind="loopback",
            name=f"loopback/{target}-b",
            direction="inbound",
            codec=L16_8K,
            session_id=self._new_session_id(),
        )
        for leg, direction in ((a, "outbound"), (b, "inbound")):
            leg.set_profile(
                Direction=direction,
                Logical_Direction=direction,
                Dialplan="inline",
                Caller_ID_Name=name,
                Caller_ID_Number=cid_num,
                Orig_Caller_ID_Name=name,
                Orig_Caller_ID_Number=cid_num,
                Callee_ID_Name="Outbound Call",
                Callee_ID_Number=room_name,
                ANI=cid_num,
                Destination_Number=target if leg is a else None,
                Source="mod_loopback",
                Context="default",
            )
            leg.has_read_codec = True
            leg.progress_media_us = leg.created_us
            leg.audio = AudioSource("silence")
            self._register(leg)
        a.set_vars([("direction", "outbound"), ("is_outbound", "true")])
        a.set_vars(_codec_vars(a))
        a.set_vars([("uuid", a.uuid), ("call_uuid", a.uuid), *ds.variables.items()])
        a.set_vars(
            [
                ("originate_early_media", "true"),
                ("originate_endpoint", "loopback"),
                ("other_loopback_leg_uuid", b.uuid),
                ("loopback_leg", "A"),
                ("endpoint_disposition", "EARLY MEDIA"),
            ]
        )
        b.set_vars([("direction", "inbound"), ("uuid", b.uuid), ("session_id", str(b.session_id))])
        b.set_var("channel_name", b.name)
        b.set_vars(_codec_vars(b)[1:5])
        b.set_vars(ds.variables.items())
        b.set_vars(
            [
                ("other_loopback_leg_uuid", a.uuid),
                ("loopback_leg", "B"),
                ("call_uuid", b.uuid),
                ("endpoint_disposition", "EARLY MEDIA"),
            ]
        )
        self._loopback_pair[a.uuid] = b
        self._loopback_pair[b.uuid] = a
        self._spawn(self._conference_pair_up(a, b, room_name, profile or "default"))
        return f"+OK {a.uuid}\n"

    async def _conference_pair_up(
        self: Simulator, a: Channel, b: Channel, room: str, profile: str
    ) -> None:
        """Recorded order: conference-create, the A leg's CHANNEL_ANSWER, the B leg's (which
        already runs `conference`), add-member; then the A leg parks (`&park()`)."""
        await asyncio.sleep(0)
        if a.hung_up or b.hung_up:
            return
        with self.batch():
            found = self._room(room, profile)
            app_data = f"{room}@{profile}"
            a.state, a.state_number, a.call_state = "CS_CONSUME_MEDIA", 7, "EARLY"
            self._answer_leg(a)
            b.state, b.state_number, b.call_state = "CS_EXECUTE", 4, "EARLY"
            b.hit_dialplan = True
            b.set_vars(
                [
                    ("current_application_data", app_data),
                    ("current_application", "conference"),
                    ("conference_name", room),
                    ("app_session_uuid", found.uuid),
                ]
            )
            b.current_app = "conference"
            b.applications.append(("conference", app_data))
            self._answer_leg(b)
            b.call_state = "ACTIVE"
            member = self._add_member(found, b, partner=a)
            a.audio = AudioSource("custom", producer=member.next_out)
            # After the originate (recorded uuid_dump of the A leg): caller ids flipped.
            a.set_var("endpoint_disposition", "ANSWER")
            a.set_vars(
                [
                    ("pre_transfer_caller_id_name", a.profile.get("Caller-ID-Name") or ""),
                    ("pre_transfer_caller_id_number", a.profile.get("Caller-ID-Number") or ""),
                    ("channel_cid_flipped", "yes"),
                    ("call_uuid", a.uuid),
                ]
            )
            a.set_profile(
                Caller_ID_Name="Outbound Call",
                Caller_ID_Number=room,
                Callee_ID_Name=a.profile.get("Caller-ID-Name"),
                Callee_ID_Number=a.profile.get("Caller-ID-Number"),
            )
            a.state, a.state_number, a.call_state = "CS_EXECUTE", 4, "ACTIVE"
            a.hit_dialplan = True
            a.set_var("current_application", "park")
            a.current_app = a.last_app = "park"
        self._park_originated(a, "park")

    def _answer_leg(self: Simulator, ch: Channel) -> None:
        ch.answered = True
        ch.answered_us = ch.created_us
        ch.answer_state = "answered"
        self.fire_channel(ch, "CHANNEL_ANSWER")

    async def _conference_app(self: Simulator, ch: Channel, arg: str) -> None:
        """The `conference <room>@<profile>` application on a channel (a simulated phone's
        originated leg, or a channel told by sendmsg): it joins and stays until kicked or
        hung up. Answers the channel first, like mod_conference."""
        room_name, _, profile = arg.strip().partition("@")
        if not room_name:
            log.info("sim.conference_no_room", uuid=ch.uuid)
            return
        if not ch.answered:
            self._mark_answered(ch)
        with self.batch():
            ch.set_var("conference_name", room_name)
            member = self._add_member(self._room(room_name, profile or "default"), ch, None)
        waiters = [
            asyncio.ensure_future(member.gone.wait()),
            asyncio.ensure_future(ch.hangup_event.wait()),
        ]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def _conference_originated(self: Simulator, ch: Channel, arg: str) -> None:
        """`originate <phone> &conference(<room>@<profile>)`: nothing follows the application,
        so the leg hangs up once it returns (kicked)."""
        app_uuid = str(uuidlib.uuid4())
        self._exec_start(ch, "conference", arg, app_uuid)
        ch.current_app = ch.last_app = "conference"
        await self._conference_app(ch, arg)
        if not ch.hung_up:
            self._exec_complete(ch, "conference", arg, app_uuid)
            await self.hangup(ch, "NORMAL_CLEARING")

    def _room(self: Simulator, name: str, profile: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = Room(name, profile)
            self.rooms[name] = room
            self._fire_conference(room, "conference-create")
            room.mixer = self._spawn(self._mix_room(room))
        return room

    def _add_member(self: Simulator, room: Room, ch: Channel, partner: Channel | None) -> Member:
        self._member_seq += 1
        member = Member(self._member_seq, ch, partner)
        room.members[member.id] = member
        self._conference_of[ch.uuid] = (room, member)
        self._fire_conference(room, "add-member", member)
        if not any(m.floor for m in room.members.values()):
            member.floor = True
            self._fire_conference(
                room,
                "floor-change",
                tail=[
                    ("Old-ID", "none"),
                    *self._conference_headers(room),
                    *self._member_headers(member),
                    ("New-ID", str(member.id)),
                ],
            )
        return member

    # ---- leaving -------------------------------------------------------------------------------
    def _conference_leg_hangup(self: Simulator, ch: Channel) -> None:
        """A channel hangs up (server._mark_hangup, after CHANNEL_HANGUP): its member leaves,
        and the other leg of a conference loopback pair ends too."""
        found = self._conference_of.get(ch.uuid)
        if found is not None:
            self._remove_member(*found)
        other = self._loopback_pair.pop(ch.uuid, None)
        if other is not None:
            self._loopback_pair.pop(other.uuid, None)
            if not other.hung_up:
                self._spawn(self.hangup(other, ch.hangup_cause or "NORMAL_CLEARING"))

    def _remove_member(self: Simulator, room: Room, member: Member) -> None:
        if member.id not in room.members:
            return
        if member.floor:
            # Recorded when the floor holder leaves: floor-change first (Old-ID and New-ID
            # `none`, the size still counting it), then del-member.
            member.floor = False
            tail = [("Old-ID", "none"), ("New-ID", "none")]
            self._fire_conference(room, "floor-change", tail=tail)
        del room.members[member.id]
        self._conference_of.pop(member.channel.uuid, None)
        member.gone.set()
        self._fire_conference(room, "del-member", member)
        if not room.members:
            self.rooms.pop(room.name, None)
            if room.mixer is not None:
                room.mixer.cancel()
            self._fire_conference(room, "conference-destroy")

    # ---- api -----------------------------------------------------------------------------------
    async def _api_conference(self: Simulator, arg: str) -> str:
        words = arg.split()
        if words == ["list"] or not words:
            if not self.rooms:
                return "+OK No active conferences.\n"
            out = []
            for room in self.rooms.values():
                n = len(room.members)
                out.append(
                    f"+OK Conference {room.name} ({n} member{'' if n == 1 else 's'} rate: "
                    f"{L16_8K.rate} flags: {ROOM_FLAGS})\n"
                )
                out.append(_list_lines(room))
            return "".join(out)
        room = self.rooms.get(words[0])
        if room is None:
            return f"-ERR Conference {words[0]} not found\n"
        sub = words[1].lower() if len(words) > 1 else "list"
        if sub == "list":
            return _list_lines(room)
        if sub not in ("kick", "mute", "unmute"):
            known = "list|kick|mute|unmute"
            return f"-ERR the simulator knows only conference <room> {known}, not {sub}\n"
        if len(words) < 3:
            return f"-USAGE: conference <room> {sub} <member_id>\n"
        member = room.member(words[2])
        if member is None:
            return f"-ERR Non-Existant ID {words[2]}\n"
        if sub == "kick":
            self._fire_conference(room, "kick-member", member)
            self._remove_member(room, member)
            self._spawn(self._kick_legs(member))
            return f"+OK kicked {member.id}\n"
        member.muted = sub == "mute"
        self._fire_conference(room, f"{sub}-member", member)
        return f"+OK {sub} {member.id}\n"

    async def _kick_legs(self: Simulator, member: Member) -> None:
        """Recorded: the kicked member's leg ends first (NORMAL_CLEARING), then its A leg. A
        channel that runs `conference` from a socket's sendmsg only leaves the room."""
        await asyncio.sleep(0)
        ch = member.channel
        if member.partner is not None and not ch.hung_up:
            await self.hangup(ch, "NORMAL_CLEARING", by_switch=True)

    # ---- events --------------------------------------------------------------------------------
    def _conference_headers(self: Simulator, room: Room) -> list[tuple[str, str]]:
        return [
            ("Conference-Name", room.name),
            ("Conference-Domain", self.domain),
            ("Conference-Size", str(len(room.members))),
            ("Conference-Ghosts", "0"),
            ("Conference-Profile-Name", room.profile),
            ("Conference-Unique-ID", room.uuid),
        ]

    def _member_headers(self: Simulator, member: Member) -> list[tuple[str, str]]:
        ch = member.channel
        return [
            ("Floor", "true" if member.floor else "false"),
            *ch.basic_headers(),
            ("Video", "false"),
            ("Hear", "true"),
            ("See", "true"),
            ("Speak", "false" if member.muted else "true"),
            ("Talking", "true" if member.talking else "false"),
            ("Mute-Detect", "false"),
            ("Hold", "false"),
            ("Member-ID", str(member.id)),
            ("Member-Type", "member"),
            ("Member-Ghost", "false"),
            ("Energy-Level", "100"),
            ("Current-Energy", str(member.energy)),
        ]

    def _fire_conference(
        self: Simulator,
        room: Room,
        action: str,
        member: Member | None = None,
        *,
        tail: list[tuple[str, str]] | None = None,
        before_action: list[tuple[str, str]] | None = None,
    ) -> None:
        """One CUSTOM conference::maintenance event, headers in the recorded order."""
        common = common_event_headers(self, "CUSTOM")
        file_, func, line = CALLING[action]
        common = [
            (
                k,
                {
                    "Event-Calling-File": file_,
                    "Event-Calling-Function": func,
                    "Event-Calling-Line-Number": line,
                }.get(k, v),
            )
            for k, v in common
        ]
        headers = [("Event-Subclass", SUBCLASS), *common, *self._conference_headers(room)]
        if member is not None:
            headers += self._member_headers(member)
        headers += before_action or []
        headers.append(("Action", action))
        headers += tail or []
        self.fire(member.channel if member else None, "CUSTOM", headers)

    # ---- mixing --------------------------------------------------------------------------------
    async def _mix_room(self: Simulator, room: Room) -> None:
        loop = asyncio.get_running_loop()
        t0, n = loop.time(), 0
        while room.members and not self.crashed:
            members = list(room.members.values())
            inputs: dict[int, Samples] = {}
            with self.batch():
                for m in members:
                    samples = m.take_input()
                    if samples is not None:
                        inputs[m.id] = samples
                    self._detect_talking(room, m, samples)
            mixes = mix(inputs, [m.id for m in members])
            for m in members:
                m.deliver(mixes[m.id])
            n += 1
            delay = t0 + n * FRAME_S - loop.time()
            if delay < -0.2:
                t0, n, delay = loop.time(), 0, FRAME_S  # stalled: re-anchor, no burst
            await asyncio.sleep(max(delay, 0.0))

    def _detect_talking(self: Simulator, room: Room, m: Member, samples: Samples | None) -> None:
        """Energy detection, modelled on the recorded talking scenario: a frame whose energy
        (mean absolute sample) is above the profile's energy level (100) makes the member talk
        (start-talking; the talker takes the floor); TALK_HANGOVER quiet frames end it
        (stop-talking, with the talking statistics before Action)."""
        energy = int(np.abs(samples).mean()) if samples is not None else 0
        if energy > ENERGY_LEVEL:
            m.energy = energy
            m._quiet_frames = 0
            m._talk_hits += 1
            m._talk_energy += energy
            if not m.talking:
                m.talking = True
                self._fire_conference(room, "start-talking", m)
                holder = next((x for x in room.members.values() if x.floor), None)
                if holder is not m:
                    if holder is not None:
                        holder.floor = False
                    m.floor = True
                    old = str(holder.id) if holder is not None else "none"
                    tail = [
                        ("Old-ID", old),
                        *self._conference_headers(room),
                        *self._member_headers(m),
                        ("New-ID", str(m.id)),
                    ]
                    self._fire_conference(room, "floor-change", tail=tail)
            return
        if not m.talking:
            return
        m._quiet_frames += 1
        if m._quiet_frames < TALK_HANGOVER:
            return
        m.talking = False
        hits = m._talk_hits
        stats = [
            ("talking-gate-hits", str(hits)),
            ("talking-total-packets", str(hits)),
            ("talking-duration-ms", str(hits * 20)),
            ("talking-average-energy", f"{m._talk_energy / max(hits, 1):.6f}"),
        ]
        m._talk_hits = m._talk_energy = m._quiet_frames = 0
        self._fire_conference(room, "stop-talking", m, before_action=stats)

    def _conference_reset(self: Simulator) -> None:
        """The switch is gone (crash): its rooms and members with it, no events."""
        for room in self.rooms.values():
            for m in room.members.values():
                m.gone.set()
        self.rooms.clear()
        self._conference_of.clear()
        self._loopback_pair.clear()

    # ---- for tests -----------------------------------------------------------------------------
    def conference_member(self: Simulator, uuid: str) -> Member | None:
        """The member whose leg (or loopback A leg) has this uuid."""
        found = self._conference_of.get(uuid)
        if found is None and uuid in self._loopback_pair:
            found = self._conference_of.get(self._loopback_pair[uuid].uuid)
        return found[1] if found else None


def _codec_vars(ch: Channel) -> list[tuple[str, str]]:
    return [
        ("session_id", str(ch.session_id)),
        ("read_codec", "L16"),
        ("read_rate", "8000"),
        ("write_codec", "L16"),
        ("write_rate", "8000"),
        ("channel_name", ch.name),
    ]


def _list_lines(room: Room) -> str:
    """`conference <room> list`: one line per member, newest first (recorded)."""
    lines = []
    for m in reversed(room.members.values()):
        pairs = (("hear", True), ("speak", not m.muted), ("talking", m.talking), ("floor", m.floor))
        flags = "|".join(f for f, on in pairs if on)
        name = m.channel.profile.get("Caller-ID-Name") or ""
        number = m.channel.profile.get("Caller-ID-Number") or ""
        lines.append(f"{m.id};{m.channel.name};{m.channel.uuid};{name};{number};{flags};0;0;100\n")
    return "".join(lines)
