"""Conference rooms through the whole gateway and the simulator (issue 14).

Three web users (aiortc peers, each sending its own tone) join one room with ConfJoin, the
moderator invites two acc_rule numbers with ``"Conference":true`` (simulated phones, each
with its own tone): every member hears every other member and not itself; a mute removes
one tone; leave, kick (from the moderator and from fs_cli's api) and the end update the
member lists; afterwards nothing is left (channels, calls, ports, numbers, rooms). And
the limits' refusals. Everything waits for events (messages, channel states), never the
clock; tests that open peer connections run in a loopback-only namespace.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
from support.gateway_support import WebUser, assert_nothing_left, running_gateway, wait_until
from support.netns import loopback_only
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.esl_side import ConferenceApi
from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimulatorThread

GATEWAY = "gateway"
ROOM = "room1"
WEB_HZ = {"alice": 700.0, "bob": 1100.0, "carol": 1500.0}
PHONE_HZ = {"1000": 440.0, "1002": 2000.0}  # the simulator's default tone extensions


def level(samples: np.ndarray, freq: float, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    k = round(freq * len(samples) / rate)
    return float(spectrum[max(k - 2, 0) : k + 3].max())


def hears(samples: np.ndarray, rate: int, freqs: list[float]) -> dict[float, bool]:
    """Which of ``freqs`` are present: above a tenth of the loudest of them."""
    levels = {f: level(samples, f, rate) for f in freqs}
    top = max(levels.values())
    assert top > 0, "silence"
    return {f: v > top / 10 for f, v in levels.items()}


def fresh_audio(peer: WebPeer, frames: int = 100) -> tuple[np.ndarray, int]:
    """The next ``frames`` frames the peer hears (20 ms each), from now on."""
    peer.heard.clear()
    wait_until(lambda: len(peer.heard) >= frames, 30, "audio at the web user")
    audio, rate = peer.audio()
    return audio[len(audio) // 5 :], rate  # skip the first fifth: the mix settling


def peer_msg(cmd: str, pred: Callable[[dict[str, Any]], bool] = lambda b: True) -> Any:
    def match(m: dict[str, Any]) -> bool:
        if m.get("type") != "message":
            return False
        try:
            body = json.loads(m["text"])
        except ValueError:
            return False
        return bool(body.get("Cmd") == cmd and pred(body))

    return match


def wait_conf(
    user: WebUser,
    cmd: str,
    pred: Callable[[dict[str, Any]], bool] = lambda b: True,
    timeout: float = 20,
) -> dict[str, Any]:
    message = user.wait(peer_msg(cmd, pred), timeout, f"{cmd} at {user.uid}")
    return {"from": message["from"], **json.loads(message["text"])}


def members(
    user: WebUser, pred: Callable[[list[dict[str, Any]]], bool], timeout: float = 20
) -> dict[str, Any]:
    """The first ConfMembers at ``user`` whose list satisfies ``pred`` (earlier ones are
    dropped with it... only the matching one is removed; the inbox keeps the rest)."""
    return wait_conf(user, "ConfMembers", lambda b: pred(b["Members"]), timeout)


def uids(member_list: list[dict[str, Any]]) -> set[str]:
    return {m["Uid"] for m in member_list}


def join(user: WebUser, chan_id: str = ROOM, **extra: Any) -> dict[str, Any]:
    user.peer(GATEWAY, Cmd="ConfJoin", ChanId=chan_id, **extra)
    return wait_conf(user, "ConfJoined", lambda b: b["ChanId"] == chan_id)


def invite_phone(user: WebUser, number: str, chan_id: str = ROOM) -> dict[str, Any]:
    user.invite(number, chan_id, Conference=True)
    accepted = user.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=20)
    return json.loads(accepted["response"])


def controller_of(gateway: Gateway) -> Any:
    controller = gateway.controller
    assert controller is not None
    return controller


def assert_no_room_left(gateway: Gateway, sim: SimulatorThread) -> None:
    controller = controller_of(gateway)
    assert_nothing_left(gateway, sim)
    table = controller.conference.table
    wait_until(lambda: len(table) == 0, 8, "no room in the gateway")
    assert set(table.held().values()) == {0}, table.held()
    assert sim.api("conference list").startswith("+OK No active conferences")
    assert controller.links_held() == {"links": 0, "by_inv": 0, "by_ref": 0}


@loopback_only(timeout=400)
def test_three_web_users_and_two_phones_hear_each_other_mute_kick_leave_end() -> None:
    with running_gateway() as (gateway, sim):
        users = {uid: WebUser(gateway, uid).connect() for uid in WEB_HZ}
        peers: dict[str, WebPeer] = {}
        for uid, user in users.items():
            joined = join(user, DisplayName=uid.title())
            assert joined["Room"] == f"eb-e2e-{ROOM}", joined
            assert joined["Moderator"] is (uid == "alice"), joined
            assert joined["DialIn"].startswith("9") and joined["DialIn"][1:].isdigit(), joined
            listing = wait_conf(user, "ConfMembers", lambda b: b["Event"] == "list")
            assert listing["from"] == GATEWAY
            peers[uid] = WebPeer(user, hz=WEB_HZ[uid])
            peers[uid].offer(GATEWAY, ROOM)
        alice = users["alice"]
        for number in PHONE_HZ:
            response = invite_phone(alice, number)
            assert response["Conference"] is True and response["SipNumber"] == number
        everyone = {**WEB_HZ, **PHONE_HZ}
        for user in users.values():
            full = members(user, lambda ms: uids(ms) == set(everyone))
            mine = [m for m in full["Members"] if m["Self"]]
            assert [m["Uid"] for m in mine] == [user.uid], full
            kinds = {m["Uid"]: m["Kind"] for m in full["Members"]}
            assert kinds == {**{u: "web" for u in WEB_HZ}, **{n: "sip" for n in PHONE_HZ}}
            moderators = [m["Uid"] for m in full["Members"] if m["Moderator"]]
            assert moderators == ["alice"], full
        ids = {m["Uid"]: m["Id"] for m in full["Members"]}
        freqs = list(everyone.values())
        # Everyone sends a tone: each web member is told who talks (start-talking events),
        # up to a list in which all five talk.
        for user in users.values():
            members(user, lambda ms: len(ms) == 5 and all(m["Talking"] for m in ms))

        # Every web member hears the four others and never itself.
        for uid, peer in peers.items():
            audio, rate = fresh_audio(peer)
            got = hears(audio, rate, freqs)
            assert got == {f: f != WEB_HZ[uid] for f in freqs}, (uid, got)
        # Each phone hears the four others and not its own tone (the simulator's record).
        phone_legs = {
            ch.profile.get("Caller-ID-Number") or "": ch.uuid
            for ch in sim.channels()
            if not ch.name.startswith("loopback/")
        }
        for number, hz in PHONE_HZ.items():
            got = phone_hears(sim, ids[number], freqs)
            assert got == {f: f != hz for f in freqs}, (number, got, phone_legs)

        # Bob mutes himself: the others stop hearing his tone, and everyone is told.
        users["bob"].peer(GATEWAY, Cmd="ConfMute", ChanId=ROOM, Mute=True)
        for user in users.values():
            told = wait_conf(user, "ConfMembers", lambda b: b["Event"] == "mute")
            assert told["Member"] == ids["bob"]
            assert [m["Muted"] for m in told["Members"] if m["Uid"] == "bob"] == [True]
        audio, rate = fresh_audio(peers["alice"])
        got = hears(audio, rate, freqs)
        assert got[WEB_HZ["bob"]] is False and got[PHONE_HZ["1000"]] is True, got
        # A non-moderator may not mute someone else, nor kick, nor end.
        users["bob"].peer(GATEWAY, Cmd="ConfMute", ChanId=ROOM, Mute=True, Member=ids["carol"])
        assert wait_conf(users["bob"], "ConfError")["Reason"] == "not_moderator"
        users["carol"].peer(GATEWAY, Cmd="ConfKick", ChanId=ROOM, Member=ids["alice"])
        assert wait_conf(users["carol"], "ConfError")["Reason"] == "not_moderator"
        users["carol"].peer(GATEWAY, Cmd="ConfEnd", ChanId=ROOM)
        assert wait_conf(users["carol"], "ConfError")["Reason"] == "not_moderator"
        alice.peer(GATEWAY, Cmd="ConfKick", ChanId=ROOM, Member=999999)
        assert wait_conf(alice, "ConfError")["Reason"] == "no_such_member"
        # The moderator unmutes bob.
        alice.peer(GATEWAY, Cmd="ConfMute", ChanId=ROOM, Mute=False, Member=ids["bob"])
        wait_conf(users["bob"], "ConfMembers", lambda b: b["Event"] == "unmute")

        # The moderator kicks carol: her leg ends with EndCall kicked, the others see it.
        alice.peer(GATEWAY, Cmd="ConfKick", ChanId=ROOM, Member=ids["carol"])
        end = wait_conf(users["carol"], "EndCall")
        assert end["Reason"] == "kicked" and end["ChanId"] == ROOM, end
        for uid in ("alice", "bob"):
            told = wait_conf(users[uid], "ConfMembers", lambda b: b["Event"] == "kick")
            assert told["Member"] == ids["carol"]
            members(users[uid], lambda ms: "carol" not in uids(ms) and len(ms) == 4)
        # fs_cli kicks phone 1000: noticed, the web members told, its number freed.
        reply = sim.api(f"conference eb-e2e-{ROOM} kick {ids['1000']}")
        assert reply.startswith(f"+OK kicked {ids['1000']}"), reply
        for uid in ("alice", "bob"):
            told = wait_conf(users[uid], "ConfMembers", lambda b: b["Event"] == "kick")
            assert told["Member"] == ids["1000"]
            members(users[uid], lambda ms: "1000" not in uids(ms))
        wait_until(lambda: "1000" not in controller_of(gateway).pool.busy(), 10, "1000 freed")
        # bob leaves with EndCall.
        users["bob"].peer(GATEWAY, Cmd="EndCall", ChanId=ROOM)
        members(alice, lambda ms: uids(ms) == {"alice", "1002"})
        # The moderator ends the room: its own leg and the phone's end.
        alice.peer(GATEWAY, Cmd="ConfEnd", ChanId=ROOM)
        assert wait_conf(alice, "EndCall")["Reason"] == "room_ended"
        assert_no_room_left(gateway, sim)
        for uid, peer in peers.items():
            peer.close()
            users[uid].close()


def phone_hears(sim: SimulatorThread, member_id: int, freqs: list[float]) -> dict[float, bool]:
    def heard() -> list[bytes]:
        for room in sim.sim.rooms.values():
            member = room.members.get(member_id)
            if member is not None:
                return list(member.heard)[-50:]
        return []

    frames = sim.run_sync(heard)
    assert len(frames) >= 25, len(frames)
    samples = np.frombuffer(b"".join(frames), dtype="<i2").astype(np.float64)
    return hears(samples, 8000, freqs)


LIMITS = "[conference]\nmax_members = 2\nmax_rooms_per_appid = 1\n"


def test_limits_refuse_joins_and_invitations_and_shutdown_ends_every_leg() -> None:
    # No peer connection here (nobody offers): the legs are the switch's alone.
    with running_gateway(LIMITS) as (gateway, sim):
        alice, bob, carol = (WebUser(gateway, uid).connect() for uid in ("alice", "bob", "carol"))
        assert join(alice)["Moderator"] is True
        assert join(bob)["Moderator"] is False
        for user in (alice, bob):
            members(user, lambda ms: uids(ms) == {"alice", "bob"})

        def refused(user: WebUser, **body: Any) -> str:
            user.peer(GATEWAY, Cmd="ConfJoin", **body)
            return str(wait_conf(user, "ConfRefused")["Reason"])

        assert refused(carol, ChanId=ROOM) == "room_full"
        assert refused(carol, ChanId="room2") == "too_many_rooms"
        assert refused(alice, ChanId=ROOM) == "already_joined"
        assert refused(carol) == "bad_request"  # no ChanId
        assert refused(carol, ChanId=ROOM, DisplayName="x" * 65) == "bad_request"
        # Invitations of numbers into a full room, or a new room past the rooms limit.
        for user, chan_id, reason in (
            (alice, ROOM, "room_full"),
            (carol, "room2", "too_many_rooms"),
        ):
            user.invite("1000", chan_id, Conference=True)
            state = user.wait_local_state(LocalState.REFUSED_BY_REMOTE)
            assert json.loads(state["response"]) == {"Cmd": "Refused", "Reason": reason}
        assert controller_of(gateway).pool.busy() == {}
        # Control of a room one is not in.
        carol.peer(GATEWAY, Cmd="ConfMute", ChanId=ROOM, Mute=True)
        assert wait_conf(carol, "ConfError")["Reason"] == "not_in_room"
        carol.peer(GATEWAY, Cmd="ConfMute", ChanId=ROOM, Mute="yes")
        assert wait_conf(carol, "ConfError")["Reason"] == "bad_request"
        # A conference command the switch refused is answered to whoever asked.
        refused_op = ConferenceApi("", f"eb-e2e-{ROOM}", ("kick", "1"), "bob", ROOM)

        async def report() -> None:
            controller_of(gateway).operation_failed(refused_op, "-ERR Non-Existant ID 1")

        gateway.loops.run_coroutine(report(), timeout=10)
        assert wait_conf(bob, "ConfError")["Reason"] == "switch_error"
        # esl-bridge status shows the web members' legs as conference legs.
        rows = gateway.loops.run_coroutine(controller_of(gateway).live_calls(), timeout=10)
        assert sorted((r["uid"], r["direction"]) for r in rows) == [
            ("alice", "conference"),
            ("bob", "conference"),
        ]
        # The room's legs (two loopback pairs) end with the gateway, the web users told.
        assert sim.live_channel_count() == 4
        gateway.stop(drain=3.0)
        for user in (alice, bob):
            assert wait_conf(user, "EndCall")["Reason"] == "shutdown"
        wait_until(lambda: sim.live_channel_count() == 0, 8, "channels ended by shutdown")
        assert sim.api("conference list").startswith("+OK No active conferences")
        assert len(controller_of(gateway).conference.table) == 0
        assert not sim.crashed


def test_conference_off_refuses_and_a_web_user_gone_leaves_the_room() -> None:
    with running_gateway("[conference]\non = 0\n") as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        alice.peer(GATEWAY, Cmd="ConfJoin", ChanId=ROOM)
        assert wait_conf(alice, "ConfRefused")["Reason"] == "conference_off"
        assert sim.live_channel_count() == 0
    with running_gateway() as (gateway, sim):
        alice, bob = (WebUser(gateway, uid).connect() for uid in ("alice", "bob"))
        join(alice)
        join(bob)
        members(alice, lambda ms: uids(ms) == {"alice", "bob"})
        bob.close()  # the tab closed: gone past presence_grace
        wait_conf(alice, "ConfMembers", lambda b: b["Event"] == "leave")
        assert controller_of(gateway).book.calls_of("bob") == []
        alice.peer(GATEWAY, Cmd="EndCall", ChanId=ROOM)
        assert_no_room_left(gateway, sim)
        alice.close()


def test_phones_dial_in_by_the_rooms_number_and_are_refused_when_unknown_or_full() -> None:
    with running_gateway("[conference]\nmax_members = 2\n") as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        dial_in = join(alice)["DialIn"]
        members(alice, lambda ms: uids(ms) == {"alice"})
        # A number of no live room: the dialplan's socket hands it over, the gateway refuses.
        code = dial_in[1:]
        other = f"9{(int(code) + 1) % 10000:04d}"
        lost = sim.place_call("1001", other, audio="silence")
        wait_until(lambda: lost.finished, 10, "lost call ended")
        assert lost.hangup_cause == "NO_ROUTE_DESTINATION"
        phone = sim.place_call("1001", dial_in, audio="silence")
        joined = members(alice, lambda ms: "1001" in uids(ms))
        [sip] = [m for m in joined["Members"] if m["Uid"] == "1001"]
        assert sip["Kind"] == "sip" and joined["Event"] == "join"
        full = sim.place_call("1003", dial_in, audio="silence")
        wait_until(lambda: full.finished, 10, "full call ended")
        assert full.hangup_cause == "CALL_REJECTED"
        # The moderator kicks the phone: its channel (held by the socket) is hung up.
        alice.peer(GATEWAY, Cmd="ConfKick", ChanId=ROOM, Member=sip["Id"])
        wait_until(lambda: phone.finished, 10, "phone call ended")
        members(alice, lambda ms: uids(ms) == {"alice"})
        alice.peer(GATEWAY, Cmd="EndCall", ChanId=ROOM)
        assert_no_room_left(gateway, sim)
        alice.close()


def test_an_invited_number_rings_can_be_canceled_and_is_busy_meanwhile() -> None:
    with running_gateway() as (gateway, sim):
        alice, bob = (WebUser(gateway, uid).connect() for uid in ("alice", "bob"))
        # The invitation creates the room (alice its moderator) before anyone joined.
        alice.invite("1007", ROOM, Conference=True)  # rings 2 s, then answers
        ringing = alice.wait_peer_cmd("SipState")
        assert ringing == {"from": "1007", "Cmd": "SipState", "State": "ringing"}
        assert controller_of(gateway).conference.table.get("e2e", ROOM) is not None
        assert join(alice)["Moderator"] is True
        # The same number into another room meanwhile: busy, as in two-party calls.
        bob.invite("1007", "room2", Conference=True)
        busy = bob.wait_local_state(LocalState.REFUSED_BY_REMOTE)
        assert json.loads(busy["response"]) == {"Cmd": "Calling", "Reason": "calling"}
        reply = alice.request({"type": "cancel", "ref": ROOM})
        assert reply["type"] == "ok"
        alice.wait_local_state(LocalState.CANCELED)
        wait_until(lambda: "1007" not in controller_of(gateway).pool.busy(), 10, "1007 freed")
        alice.peer(GATEWAY, Cmd="EndCall", ChanId=ROOM)
        assert_no_room_left(gateway, sim)
        kills = [ch for ch in sim.all_channels() if ch.hangup_cause == "ORIGINATOR_CANCEL"]
        assert kills, [ch.hangup_cause for ch in sim.all_channels()]
        alice.close()
        bob.close()


def test_a_switch_restart_ends_the_rooms_legs_and_forgets_the_rooms() -> None:
    with running_gateway() as (gateway, sim):
        controller = controller_of(gateway)
        alice, bob = (WebUser(gateway, uid).connect() for uid in ("alice", "bob"))
        join(alice)
        join(bob)
        invite_phone(alice, "1000")
        members(alice, lambda ms: uids(ms) == {"alice", "bob", "1000"})
        sim.restart()  # every connection, call and room dropped; no del-member is heard
        for user in (alice, bob):
            assert wait_conf(user, "EndCall", timeout=10)["Reason"] == "switch_error"
        wait_until(lambda: controller.status()["calls"] == 0, 10, "the calls ended")
        wait_until(lambda: len(controller.conference.table) == 0, 10, "the room forgotten")
        wait_until(lambda: controller.esl_state == "connected", 10, "ESL back")
        assert controller.status()["numbers_busy"] == 0
        # The same room can be joined again (the switch makes it anew).
        assert join(alice)["Moderator"] is True
        members(alice, lambda ms: uids(ms) == {"alice"})
        alice.peer(GATEWAY, Cmd="EndCall", ChanId=ROOM)
        assert_no_room_left(gateway, sim)
        alice.close()
        bob.close()
