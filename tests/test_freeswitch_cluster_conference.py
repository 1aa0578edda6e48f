"""A conference room across two gateway processes on a real FreeSWITCH 1.10 (issue 12's gap).

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set (the switch's setup is in
tests/test_freeswitch_calls.py, the phone's in tests/test_freeswitch_conference.py).

Two ``esl-bridge run`` processes (tests/support/gateway_process.py) share one Redis of the
test's own and the one switch, each with its own unicast ports: alice (on A) makes the
room, bob (on B) joins it; each hears the other's tone through the switch's mixer; both
see one moderator (alice) and the same member list; alice invites the phone into the
room and both list it under its number; alice kicks bob (B's member) from A; alice ends
the room; then nothing is left on the switch: no room in ``conference list``, none of the
room's channels (the web members' loopback A and B legs, the phone's leg) in
``uuid_exists``, and no room key in Redis.

An ESL connection of the test's own (tests/tools/record_esl.py's recorder, raw sockets, no
esl_bridge code) asks the switch for the room's list and its legs and listens to
``conference::maintenance``, as the gateways do. With ``ESL_BRIDGE_RECORD_FIXTURES`` set to a
directory its transcript is written there, the password starred out
(tests/fixtures/freeswitch/conference/esl_inbound_cluster_conference_observer.txt is the one
recorded; tests/test_sim_recorded_cluster_conference.py holds the simulator to it).

Everything runs in a loopback-only namespace, the switch reached through
tests/support/host_bridge.py (its ESL port and the unicast ports of both processes).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from support.gateway_process import GatewayProcess
from support.gateway_support import APPID, WebUser, wait_until
from support.host_bridge import bridged_to_host
from support.ports_and_waits import free_port
from support.redis_server import RedisServer
from support.web_peer import WebPeer
from test_conference_gateway import fresh_audio, hears, invite_phone, members, uids, wait_conf

from esl_bridge.loops import Loops

sys.path.insert(0, str(Path(__file__).parent / "tools"))
import record_esl
import record_ops  # noqa: F401  (its redact(): the install prefix too)

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_PHONE = os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")
_ESL_PORT = int(_TARGET.split(":")[1]) if _TARGET.count(":") >= 2 else 8021
_RECORD = os.environ.get("ESL_BRIDGE_RECORD_FIXTURES", "")
# Two processes, a range each (A: the first half, B: the second).
_PORTS = (31440, 31479)
GATEWAY = "gateway"
ROOM = "fs-cluster-1"
ROOM_NAME = f"eb-{APPID}-{ROOM}"
HZ = {"alice": 700.0, "bob": 1500.0}

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]


@contextlib.contextmanager
def two_processes(tmp: Path) -> Iterator[tuple[list[GatewayProcess], Loops]]:
    host, port, password = _TARGET.split(":", 2)
    redis_server = RedisServer().start()
    loops = Loops().start()
    gateways: list[GatewayProcess] = []
    half = (_PORTS[1] - _PORTS[0] + 1) // 2
    try:
        for i in range(2):
            low = _PORTS[0] + i * half
            gateways.append(
                GatewayProcess(
                    tmp,
                    esl=("127.0.0.1", int(port), password),
                    socket=("127.0.0.1", free_port()),
                    orphan_timeout=3,
                    acc_rule=_PHONE,
                    sip_svr=f"{host}:5060",
                    node_id=f"fs-node-{i}",
                    originate_timeout=20,
                    limits_lines="max_calls = 10",
                    cluster=(
                        f"redis_url = {redis_server.url}\nheartbeat_interval = 0.2\n"
                        "claim_ttl = 1.0\nredis_timeout = 2.0\n"
                    ),
                    sections=(
                        f"[media]\nunicast_port_min = {low}\nunicast_port_max = {low + half - 1}\n"
                    ),
                )
            )
        yield gateways, loops
    finally:
        for gateway in gateways:
            gateway.stop()
        loops.stop()
        redis_server.close()


def join(user: WebUser) -> dict[str, Any]:
    user.peer(GATEWAY, Cmd="ConfJoin", ChanId=ROOM)
    return wait_conf(user, "ConfJoined", lambda b: b["ChanId"] == ROOM, timeout=30)


def summary(member_list: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((m["Id"], m["Uid"], m["Kind"], m["Moderator"]) for m in member_list)


def listed(listing: str) -> dict[str, tuple[str, str]]:
    """``conference <room> list``: member id -> (channel uuid, caller id number)."""
    out = {}
    for line in listing.splitlines():
        fields = line.split(";")
        if len(fields) >= 9:
            out[fields[0]] = (fields[2], fields[4])
    return out


@bridged_to_host(_ESL_PORT, *_PORTS, timeout=400)
def test_one_room_across_two_processes_on_the_real_switch(tmp_path: Path) -> None:
    out = Path(_RECORD) if _RECORD else tmp_path
    esl = record_esl.inbound(
        out / "esl_inbound_cluster_conference_observer.txt",
        "observer of a room across two gateway processes",
    )
    esl.command("event plain CUSTOM conference::maintenance")
    with two_processes(tmp_path) as (gateways, loops):
        alice = gateways[0].web_user(loops, "alice")
        bob = gateways[1].web_user(loops, "bob")
        first = join(alice)
        assert first["Moderator"] is True and first["Room"] == ROOM_NAME, first
        second = join(bob)
        assert (second["Moderator"], second["Room"]) == (False, ROOM_NAME), second
        peers = {uid: WebPeer(user, hz=HZ[uid]) for uid, user in (("alice", alice), ("bob", bob))}
        for peer in peers.values():
            peer.offer(GATEWAY, ROOM)

        # One member list on both processes, alice the moderator, each one itself.
        lists = {}
        for user in (alice, bob):
            found = members(user, lambda ms: uids(ms) == {"alice", "bob"}, timeout=40)
            [me] = [m for m in found["Members"] if m["Self"]]
            assert me["Uid"] == user.uid, found
            lists[user.uid] = summary(found["Members"])
        assert lists["alice"] == lists["bob"], lists
        assert [m[1] for m in lists["alice"] if m[3]] == ["alice"], lists
        ids = {m[1]: m[0] for m in lists["alice"]}

        # Each hears the other through the switch's mixer, never itself.
        freqs = list(HZ.values())
        for uid, peer in peers.items():
            audio, rate = fresh_audio(peer)
            got = hears(audio, rate, freqs)
            assert got == {f: f != peer.hz for f in freqs}, (uid, got)

        # alice (on A) invites the phone: both list it under its number.
        response = invite_phone(alice, _PHONE, ROOM)
        assert response["Conference"] is True and response["SipNumber"] == _PHONE, response
        everyone = {"alice", "bob", _PHONE}
        for user in (alice, bob):
            found = members(user, lambda ms: uids(ms) == everyone, timeout=40)
            lists[user.uid] = summary(found["Members"])
        assert lists["alice"] == lists["bob"], lists
        assert [m[2] for m in lists["alice"] if m[1] == _PHONE] == ["sip"], lists
        # The switch's own view: three members, their ids those the web users were given.
        on_switch = listed(esl.api(f"conference {ROOM_NAME} list"))
        assert set(on_switch) == {str(m[0]) for m in lists["alice"]}, on_switch
        members_legs = [uuid for uuid, _number in on_switch.values()]
        legs = list(members_legs)
        for uuid in members_legs:  # the web members' A legs too (their loopback pairs)
            other = esl.api(f"uuid_getvar {uuid} other_loopback_leg_uuid").strip()
            if other and not other.startswith("-ERR") and other != "_undef_":
                legs.append(other)
        assert len(legs) == 5, legs

        # alice (on A) kicks bob (on B): B ends his leg and tells him; A's list drops him.
        alice.peer(GATEWAY, Cmd="ConfKick", ChanId=ROOM, Member=ids["bob"])
        end = wait_conf(bob, "EndCall", timeout=20)
        assert (end["Reason"], end["ChanId"]) == ("kicked", ROOM), end
        members(alice, lambda ms: uids(ms) == {"alice", _PHONE}, timeout=20)

        # alice ends the room: nothing of it stays on the switch nor in Redis.
        alice.peer(GATEWAY, Cmd="ConfEnd", ChanId=ROOM)
        assert wait_conf(alice, "EndCall", timeout=20)["Reason"] == "room_ended"

        def exists(uuid: str) -> bool:
            reply = esl.api(f"uuid_exists {uuid}").strip()
            assert reply in ("true", "false"), reply
            return reply == "true"

        for uuid in legs:
            wait_until(lambda uuid=uuid: not exists(uuid), 20, f"channel {uuid} gone")
        wait_until(
            lambda: ROOM_NAME not in esl.api("conference list"), 20, "the room gone on the switch"
        )
        client = redis.Redis.from_url(_redis_url(gateways[0]))
        wait_until(lambda: not client.keys("*room*"), 20, "no room key left in Redis")
        client.close()
        for peer in peers.values():
            peer.close()
        for user in (alice, bob):
            user.close()
    esl.command("exit")
    esl.close()
    if _RECORD:  # the password out, its length kept (the record's len= stays right)
        path = out / "esl_inbound_cluster_conference_observer.txt"
        data = path.read_bytes()
        secret = f"auth {record_esl.PASSWORD}".encode()
        path.write_bytes(data.replace(secret, b"auth " + b"*" * len(record_esl.PASSWORD)))


def _redis_url(gateway: GatewayProcess) -> str:
    for line in gateway.conf.read_text().splitlines():
        if line.startswith("redis_url = "):
            return line.split(" = ", 1)[1]
    raise AssertionError("no redis_url")
