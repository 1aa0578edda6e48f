"""A scripted stand-in for the gateway's side of the conference protocol (issue 14), for the
browser tests of the SDK and the web client.

It stands in for the gateway side until the conference branches of the client and the server
meet: the end-to-end test (browser, gateway, simulator's mod_conference) then comes on top of
the tests that use it, not instead of them.

``ConfGatewayScript`` is an in-process participant of the signalling hub, registered as the
gateway uid, on the loop of the server that carries the hub (every method but the thread-safe
``*_threadsafe`` ones runs on that loop). It speaks the README's conference messages: ConfJoin
-> ConfJoined (or ConfRefused for a ChanId the test listed) and ConfMembers; the browser's
Offer gets a real aiortc answer (its peer connection sends ``tone_hz`` and counts what it
hears, so the browser's media really connects); ConfMute / ConfKick / ConfEnd / EndCall are
recorded and acted on as the protocol says (moderator checks, ConfError, EndCall with a
Reason). Phones (``Kind`` sip) and talking changes are added by the test.
``ConfServer`` runs it with the hub and the web client's pages on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from esl_bridge.media.leg import use_host_addresses
from esl_bridge.signaling.server import SignalingService, setup_signaling
from esl_bridge.signaling.settings import SignalingSettings
from esl_bridge.web.client import setup_web_client
from support.tones import ToneTrack

T = TypeVar("T")


@dataclass
class Member:
    id: int
    uid: str
    kind: str  # "web" | "sip"
    name: str
    moderator: bool = False
    talking: bool = False
    muted: bool = False

    def wire(self, for_uid: str | None) -> dict[str, Any]:
        return {
            "Id": self.id,
            "Uid": self.uid,
            "Kind": self.kind,
            "Name": self.name,
            "Talking": self.talking,
            "Muted": self.muted,
            "Moderator": self.moderator,
            "Self": self.kind == "web" and self.uid == for_uid,
        }


@dataclass
class Room:
    chan_id: str
    name: str
    members: list[Member] = field(default_factory=list)

    def web(self, uid: str) -> Member | None:
        return next((m for m in self.members if m.kind == "web" and m.uid == uid), None)

    def by_id(self, member_id: object) -> Member | None:
        return next((m for m in self.members if m.id == member_id), None)


class ConfGatewayScript:
    """The gateway uid's conference behaviour, scripted (see the module docstring)."""

    def __init__(
        self,
        service: SignalingService,
        appid: str,
        gateway_uid: str,
        *,
        tone_hz: float = 440.0,
        dial_in_prefix: str = "9",
    ) -> None:
        self.service = service
        self.appid = appid
        self.uid = gateway_uid
        self.tone_hz = tone_hz
        self.dial_in_prefix = dial_in_prefix
        self.refuse: dict[str, str] = {}  # ChanId -> ConfRefused reason
        self.refuse_next: str | None = None  # ConfRefused reason for the next ConfJoin
        self.rooms: dict[str, Room] = {}
        self.received: list[tuple[str, dict[str, Any]]] = []  # (from uid, command)
        self.sent: list[tuple[str, dict[str, Any]]] = []  # (to uid, command)
        self.pcs: dict[tuple[str, str], RTCPeerConnection] = {}  # (ChanId, uid)
        self.frames_heard: dict[tuple[str, str], int] = {}
        self._next_id = 1
        self._tasks: set[asyncio.Task[Any]] = set()
        self.handle = service.hub.register_participant(appid, self)
        self.handle.register([gateway_uid], service.now())

    # ---- what the test reads (plain reads of lists: safe from the test's thread) -----------

    def commands(self, cmd: str) -> list[tuple[str, dict[str, Any]]]:
        return [(who, c) for who, c in list(self.received) if c.get("Cmd") == cmd]

    def sent_to(self, uid: str, cmd: str) -> list[dict[str, Any]]:
        return [c for to, c in list(self.sent) if to == uid and c.get("Cmd") == cmd]

    def heard(self, chan_id: str, uid: str) -> int:
        """Audio frames the gateway's peer connection received from ``uid`` in ``chan_id``."""
        return self.frames_heard.get((chan_id, uid), 0)

    # ---- what the test does (on the loop) ---------------------------------------------------

    def add_phone(self, chan_id: str, number: str) -> int:
        """A phone joins the room (as a dial-in or an answered invitation would)."""
        room = self.rooms[chan_id]
        member = Member(self._new_id(), number, "sip", number)
        room.members.append(member)
        self._broadcast(room, "join", member.id)
        return member.id

    def set_talking(self, chan_id: str, member_id: int, talking: bool) -> None:
        room = self.rooms[chan_id]
        member = room.by_id(member_id)
        assert member is not None, member_id
        member.talking = talking
        self._broadcast(room, "talking" if talking else "silent", member_id)

    def end_leg(self, chan_id: str, uid: str, reason: str) -> None:
        """The gateway ends ``uid``'s leg (EndCall with ``reason``), as fs_cli's kick would."""
        room = self.rooms[chan_id]
        member = room.web(uid)
        assert member is not None, uid
        self._remove(room, member, "kick" if reason == "kicked" else "leave", reason)

    def member_id(self, chan_id: str, uid: str) -> int:
        member = self.rooms[chan_id].web(uid) if chan_id in self.rooms else None
        assert member is not None, (chan_id, uid)
        return member.id

    def member(self, chan_id: str, member_id: int) -> Member | None:
        room = self.rooms.get(chan_id)
        return room.by_id(member_id) if room is not None else None

    async def close(self) -> None:
        for pc in list(self.pcs.values()):
            await pc.close()
        self.pcs.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- Participant ------------------------------------------------------------------------

    def on_event(self, uid: str, message: dict[str, Any]) -> None:
        if uid != self.uid or message.get("type") != "message":
            return
        try:
            command = json.loads(message["text"])
        except ValueError:
            return
        if not isinstance(command, dict):
            return
        sender = str(message.get("from", ""))
        self.received.append((sender, command))
        self._on_command(sender, command)

    # ---- the protocol -----------------------------------------------------------------------

    def _on_command(self, sender: str, command: dict[str, Any]) -> None:
        cmd = command.get("Cmd")
        if cmd == "CallState":  # as the gateway: over all of the sender's calls, rooms too
            joined = any(room.web(sender) for room in self.rooms.values())
            self._send(sender, {"Cmd": "CallStateResult", "state": 2 if joined else 0, "Mode": 1})
            return
        chan = command.get("ChanId")
        if not isinstance(chan, str):
            return
        room = self.rooms.get(chan)
        if cmd == "ConfJoin":
            self._join(sender, chan, str(command.get("DisplayName") or sender))
        elif cmd == "Offer":
            self._spawn(self._answer(sender, chan, str(command.get("Sdp", ""))))
        elif cmd == "ConfMute":
            self._mute(sender, room, command)
        elif cmd in ("ConfKick", "ConfEnd"):
            me = room.web(sender) if room else None
            if room is None or me is None:
                self._send(sender, {"Cmd": "ConfError", "ChanId": chan, "Reason": "not_in_room"})
            elif not me.moderator:
                self._send(sender, {"Cmd": "ConfError", "ChanId": chan, "Reason": "not_moderator"})
            elif cmd == "ConfEnd":
                for member in list(room.members):
                    self._remove(room, member, None, "room_ended")
                self.rooms.pop(chan, None)
            else:
                target = room.by_id(command.get("Member"))
                if target is None:
                    self._send(
                        sender, {"Cmd": "ConfError", "ChanId": chan, "Reason": "no_such_member"}
                    )
                else:
                    self._remove(room, target, "kick", "kicked")
        elif cmd == "EndCall" and room is not None:
            me = room.web(sender)
            if me is not None:
                self._remove(room, me, "leave", None)

    def _join(self, uid: str, chan: str, name: str) -> None:
        if self.refuse_next is not None:
            reason, self.refuse_next = self.refuse_next, None
            self._send(uid, {"Cmd": "ConfRefused", "ChanId": chan, "Reason": reason})
            return
        if chan in self.refuse:
            self._send(uid, {"Cmd": "ConfRefused", "ChanId": chan, "Reason": self.refuse[chan]})
            return
        room = self.rooms.get(chan)
        if room is None:
            room = self.rooms[chan] = Room(chan, f"eb-{self.appid}-{chan}")
        if room.web(uid) is not None:
            self._send(uid, {"Cmd": "ConfRefused", "ChanId": chan, "Reason": "already_joined"})
            return
        moderator = not room.members
        member = Member(self._new_id(), uid, "web", name, moderator=moderator)
        room.members.append(member)
        dial_in = f"{self.dial_in_prefix}{len(self.rooms):04d}" if self.dial_in_prefix else ""
        self._send(
            uid,
            {
                "Cmd": "ConfJoined",
                "ChanId": chan,
                "Room": room.name,
                "DialIn": dial_in,
                "Moderator": moderator,
            },
        )
        self._send_members(room, member.uid, "list", member.id)
        for other in room.members:
            if other.kind == "web" and other is not member:
                self._send_members(room, other.uid, "join", member.id)

    def _mute(self, uid: str, room: Room | None, command: dict[str, Any]) -> None:
        chan = str(command["ChanId"])
        me = room.web(uid) if room else None
        if room is None or me is None:
            self._send(uid, {"Cmd": "ConfError", "ChanId": chan, "Reason": "not_in_room"})
            return
        target = me
        if "Member" in command:
            found = room.by_id(command["Member"])
            if found is None:
                self._send(uid, {"Cmd": "ConfError", "ChanId": chan, "Reason": "no_such_member"})
                return
            if found is not me and not me.moderator:
                self._send(uid, {"Cmd": "ConfError", "ChanId": chan, "Reason": "not_moderator"})
                return
            target = found
        target.muted = command.get("Mute") is True
        self._broadcast(room, "mute" if target.muted else "unmute", target.id)

    def _remove(self, room: Room, member: Member, event: str | None, reason: str | None) -> None:
        if member in room.members:
            room.members.remove(member)
        if member.kind == "web":
            if reason is not None:
                self._send(member.uid, {"Cmd": "EndCall", "ChanId": room.chan_id, "Reason": reason})
            pc = self.pcs.pop((room.chan_id, member.uid), None)
            if pc is not None:
                self._spawn(pc.close())
        if event is not None:
            self._broadcast(room, event, member.id)

    async def _answer(self, uid: str, chan: str, sdp: str) -> None:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        key = (chan, uid)
        self.pcs[key] = pc
        self.frames_heard[key] = 0

        async def drain(track: Any) -> None:
            while True:
                try:
                    await track.recv()
                except MediaStreamError:
                    return
                self.frames_heard[key] = self.frames_heard.get(key, 0) + 1

        @pc.on("track")
        def _on_track(track: Any) -> None:
            self._spawn(drain(track))

        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        pc.addTrack(ToneTrack(self.tone_hz))
        with use_host_addresses(["127.0.0.1"]):
            await pc.setLocalDescription(await pc.createAnswer())
        self._send(uid, {"Cmd": "Answer", "ChanId": chan, "Sdp": pc.localDescription.sdp})

    # ---- sending ----------------------------------------------------------------------------

    def _broadcast(self, room: Room, event: str, member_id: int | None) -> None:
        for member in room.members:
            if member.kind == "web":
                self._send_members(room, member.uid, event, member_id)

    def _send_members(self, room: Room, uid: str, event: str, member_id: int | None) -> None:
        members = [m.wire(uid) for m in room.members]
        self._send(
            uid,
            {
                "Cmd": "ConfMembers",
                "ChanId": room.chan_id,
                "Members": members,
                "Event": event,
                "Member": member_id,
            },
        )

    def send(self, to: str, body: dict[str, Any]) -> None:
        """A peer message from the gateway uid, on the test's word (e.g. a MediaProblem)."""
        self._send(to, body)

    def _send(self, to: str, body: dict[str, Any]) -> None:
        self.sent.append((to, body))
        text = json.dumps(body, separators=(",", ":"))
        self.handle.send_message(self.uid, to, text, self.service.now())
        self.service.kick()

    def _new_id(self) -> int:
        member_id = self._next_id
        self._next_id += 1
        return member_id

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class ConfServer:
    """The signalling hub, the web client's files and a ``ConfGatewayScript`` on 127.0.0.1,
    with their own loop in a thread (open mode: logins need no token)."""

    def __init__(self, appid: str, gateway_uid: str) -> None:
        self.appid = appid
        self.gateway_uid = gateway_uid
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.script: ConfGatewayScript | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gw(self) -> ConfGatewayScript:
        assert self.script is not None
        return self.script

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        service = setup_signaling(app, SignalingSettings(appid=self.appid, open_mode=True))
        config = {"appid": self.appid, "open_mode": True, "gateway_uid": self.gateway_uid}
        setup_web_client(app, config)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.script = ConfGatewayScript(service, self.appid, self.gateway_uid)

    def __enter__(self) -> ConfServer:
        self._thread.start()
        assert self._ready.wait(30), "server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self.script is not None:
                await self.script.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def drop_socket(self, uid: str) -> None:
        """Close ``uid``'s WebSocket from the server side, as a network failure would."""
        service = self.gw.service

        def drop() -> None:
            session = service.hub._sessions[(self.appid, uid)]
            assert session.conn is not None
            session.conn.conn.close(1012, "test drop")

        self.call(drop)

    def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(*args)`` on the server's loop; its result (bounded wait)."""
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(func(*args))
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(30)
