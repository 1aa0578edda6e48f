"""The simulator under a room across two gateway processes, against the real switch's recording.

tests/test_freeswitch_cluster_conference.py recorded what an ESL observer of
``conference::maintenance`` got from FreeSWITCH 1.10.12 while two gateway processes ran one
room (alice on A, bob on B, the phone invited by A, bob kicked from A, the room ended):
tests/fixtures/freeswitch/conference/esl_inbound_cluster_conference_observer.txt. The same
flow runs here on the simulator (tests/test_cluster_gateways.py's ``cluster_of``) with an
observer of its own: the same member actions in the same order (the enter/exit sounds,
talking and the floor depend on audio and timing and are left out), with the same header
names, the same caller id numbers for the web members and, for the phone, the same shape
(its contact user ``<number>-0x...``); the room's ``conference <room> list`` line for the
phone in the recorded shape (caller id name ``Outbound Call``).
"""

from __future__ import annotations

import difflib
import re
import time
from pathlib import Path

from support.gateway_support import APPID, wait_until
from support.netns import loopback_only
from support.sim_wire import Event, auth, fs_events
from support.web_peer import WebPeer
from test_cluster_gateways import cluster_of
from test_conference_gateway import invite_phone, members, uids, wait_conf

RECORDED = "conference/esl_inbound_cluster_conference_observer.txt"
GATEWAY = "gateway"
ROOM = "fs-cluster-1"  # as recorded
ROOM_NAME = f"eb-{APPID}-{ROOM}"
TIMING = ("play-file", "play-file-done", "start-talking", "stop-talking", "floor-change")
PHONE_NUMBER = re.compile(r"^(\d+)-0x[0-9a-f]+$")


def member_actions(events: list[Event], phone: str) -> list[tuple[str, str]]:
    """(action, who) per member event, the phone's contact user as its number."""
    out = []
    for e in events:
        action = e.get("Action") or ""
        if e.name != "CUSTOM" or action in TIMING:
            continue
        who = e.get("Caller-Caller-ID-Number") or ""
        match = PHONE_NUMBER.match(who)
        out.append((action, "phone" if match and match.group(1) == phone else who))
    return out


def ended_in_any_order(actions: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], set]:
    """The room's end: its last del-members come in the order the gateway's hangups reach
    the switch, a race; everything before them in order."""
    head = list(actions)
    tail = set()
    assert head[-1][0] == "conference-destroy", head
    head.pop()
    while head and head[-1][0] == "del-member":
        tail.add(head.pop())
    return head, tail


@loopback_only(timeout=300)
def test_the_simulator_sends_the_recorded_member_events(tmp_path: Path) -> None:
    recorded = fs_events(RECORDED)
    [rec_phone] = {
        PHONE_NUMBER.match(e.get("Caller-Caller-ID-Number") or "").group(1)  # type: ignore[union-attr]
        for e in recorded
        if PHONE_NUMBER.match(e.get("Caller-Caller-ID-Number") or "")
    }
    phone = "1000"  # a simulated phone sending a tone
    with cluster_of(tmp_path, 2, redis_timeout=2.0) as cluster:
        sim = cluster.sim
        observer = auth(sim.esl_port)
        reply = observer.command("event plain CUSTOM conference::maintenance")
        assert reply.get("Reply-Text") == "+OK event listener enabled plain"
        alice = cluster.user(0, "alice")
        bob = cluster.user(1, "bob")
        for user in (alice, bob):
            user.peer(GATEWAY, Cmd="ConfJoin", ChanId=ROOM)
            wait_conf(user, "ConfJoined", lambda b: b["ChanId"] == ROOM, timeout=30)
            if user is alice:
                # alice is a member before bob joins, as in the recording: each ConfJoin's
                # originate runs on its own process after ConfJoined, so which add-member
                # came first would be a race.
                members(alice, lambda ms: uids(ms) == {"alice"}, timeout=30)
        peers = [WebPeer(alice, hz=700.0), WebPeer(bob, hz=1500.0)]
        for peer in peers:
            peer.offer(GATEWAY, ROOM)
        for user in (alice, bob):
            members(user, lambda ms: uids(ms) == {"alice", "bob"}, timeout=30)
        invite_phone(alice, phone, ROOM)
        found = {}
        for user in (alice, bob):
            found = members(user, lambda ms: uids(ms) == {"alice", "bob", phone}, timeout=30)
        ids = {m["Uid"]: m["Id"] for m in found["Members"]}
        listing = observer.command(f"api conference {ROOM_NAME} list").body.decode()
        [phone_line] = [line for line in listing.splitlines() if "Outbound Call" in line]
        fields = phone_line.split(";")
        assert len(fields) == 9 and fields[3] == "Outbound Call", phone_line
        assert PHONE_NUMBER.match(fields[4]) and fields[4].startswith(f"{phone}-"), phone_line
        alice.peer(GATEWAY, Cmd="ConfKick", ChanId=ROOM, Member=ids["bob"])
        assert wait_conf(bob, "EndCall", timeout=20)["Reason"] == "kicked"
        members(alice, lambda ms: uids(ms) == {"alice", phone}, timeout=20)
        alice.peer(GATEWAY, Cmd="ConfEnd", ChanId=ROOM)
        assert wait_conf(alice, "EndCall", timeout=20)["Reason"] == "room_ended"
        wait_until(lambda: sim.live_channel_count() == 0, 20, "no channel left")
        observed: list[Event] = []
        deadline = time.monotonic() + 20
        while not any(e.get("Action") == "conference-destroy" for e in observed):
            observed += observer.drain_events(quiet=0.5)
            assert time.monotonic() < deadline, member_actions(observed, phone)
        for peer in peers:
            peer.close()
        observer.close()

    real = ended_in_any_order(member_actions(recorded, rec_phone))
    simulated = ended_in_any_order(member_actions(observed, phone))
    assert simulated == real

    # The same header names, in order, event by event (paired by action and member).
    def who(e: Event, phone_number: str) -> tuple[str, str]:
        [pair] = member_actions([e], phone_number)
        return pair

    wanted = {
        who(e, rec_phone): e.names
        for e in recorded
        if e.name == "CUSTOM" and e.get("Action") not in TIMING
    }
    compared = 0
    for e in observed:
        if e.get("Action") in TIMING:
            continue
        key = who(e, phone)
        diff = difflib.unified_diff(wanted[key], e.names, "recorded", "simulated", n=1)
        assert e.names == wanted[key], f"{key}:\n" + "\n".join(diff)
        compared += 1
    assert compared == len(wanted) == len(simulated[0]) + len(simulated[1]) + 1
