"""A conference room on a real FreeSWITCH 1.10 with mod_conference (issue 14).

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set (see
tests/test_freeswitch_calls.py for the switch's setup). ``ESL_BRIDGE_FREESWITCH_USER``
(default 1001) is a registered phone that answers automatically and plays a 1 kHz tone
(the fixtures' setup, tests/fixtures/freeswitch/README.md).

Two web users (aiortc peers, each sending its own tone) join one room and the moderator
invites the phone into it: the member list reaches both, with who talks (mod_conference's
``start-talking``); each web member hears the other and the phone and not itself; a kick
done over ESL as an fs_cli admin would (``conference <room> kick <id>``) is noticed by the
web members (the kicked one gets ``EndCall`` ``kicked``); the moderator ends the room; then
nothing is left on the switch: no room in ``conference list``, none of the room's channels
(A and B legs of the web members' loopback pairs, the phone's leg) in ``uuid_exists`` nor
in ``show channels``.

The peer connections run in a loopback-only namespace; the switch on the host's loopback
is reached through tests/support/host_bridge.py (its ESL port and the unicast ports of the
test's ``[media]`` range), as the G.711 fast-path test does.
"""

from __future__ import annotations

import json
import os

import pytest
from support.gateway_support import WebUser, wait_until
from support.host_bridge import bridged_to_host
from support.web_peer import WebPeer
from test_conference_gateway import fresh_audio, hears, join, members, uids, wait_conf
from test_freeswitch_calls import assert_switch_clean, channels_of, exists, gateway_on_freeswitch

from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.process import Gateway

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_PHONE = os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")
_ESL_PORT = int(_TARGET.split(":")[1]) if _TARGET.count(":") >= 2 else 8021
# Two web members: two unicast pairs; room to spare for a leg still closing.
_CONF_PORTS = (31360, 31379)
GATEWAY = "gateway"
CHAN_ID = "fs-conf-1"
WEB_HZ = {"alice": 700.0, "bob": 1500.0}
PHONE_HZ = 1000.0

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(320),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]


def api(gateway: Gateway, command: str) -> str:
    assert gateway.esl is not None
    cmd, _, arg = command.partition(" ")
    return str(gateway.esl.inbound.api(cmd, arg).text)


def member_uuids(listing: str) -> dict[str, str]:
    """Caller id number -> channel uuid, from ``conference <room> list`` (id;name;uuid;
    caller id name;caller id number;flags;...)."""
    out = {}
    for line in listing.splitlines():
        fields = line.split(";")
        if len(fields) >= 9:
            out[fields[4]] = fields[2]
    return out


@bridged_to_host(_ESL_PORT, *_CONF_PORTS, timeout=300)
def test_two_web_users_and_a_phone_talk_a_kick_from_esl_is_noticed_nothing_left() -> None:
    extra = (
        f"max_calls = 10\n[media]\nunicast_port_min = {_CONF_PORTS[0]}\n"
        f"unicast_port_max = {_CONF_PORTS[1]}\n"
    )
    with gateway_on_freeswitch(extra, esl_host="127.0.0.1") as gateway:
        users = {uid: WebUser(gateway, uid).connect() for uid in WEB_HZ}
        alice, bob = users["alice"], users["bob"]
        peers: dict[str, WebPeer] = {}
        room = ""
        for uid, user in users.items():
            joined = join(user, CHAN_ID, DisplayName=uid.title())
            room = joined["Room"]
            assert room == f"eb-e2e-{CHAN_ID}", joined
            assert joined["Moderator"] is (uid == "alice"), joined
            wait_conf(user, "ConfMembers", lambda b: b["Event"] == "list")
            peers[uid] = WebPeer(user, hz=WEB_HZ[uid])
            peers[uid].offer(GATEWAY, CHAN_ID)
        alice.invite(_PHONE, CHAN_ID, Conference=True)
        accepted = alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=40)
        response = json.loads(accepted["response"])
        assert response["Conference"] is True and response["SipNumber"] == _PHONE, response

        everyone = {*WEB_HZ, _PHONE}
        for user in users.values():
            full = members(user, lambda ms: uids(ms) == everyone, timeout=30)
            kinds = {m["Uid"]: m["Kind"] for m in full["Members"]}
            assert kinds == {"alice": "web", "bob": "web", _PHONE: "sip"}, full
            assert [m["Uid"] for m in full["Members"] if m["Self"]] == [user.uid], full
            assert [m["Uid"] for m in full["Members"] if m["Moderator"]] == ["alice"], full
        ids = {m["Uid"]: m["Id"] for m in full["Members"]}
        # The switch's own view: the room under its documented name, with the three members.
        # The phone's line carries what FreeSWITCH puts in an originated leg's caller id
        # (name "Outbound Call", number its contact user "<number>-0x...", recorded in
        # tests/fixtures/freeswitch/conference/esl_inbound_conference_phone.txt), not the
        # number: it is found by its uuid, the one the gateway originated it with.
        listing = api(gateway, f"conference {room} list")
        on_switch = member_uuids(listing)
        assert len(on_switch) == 3 and {"alice", "bob"} <= set(on_switch), listing
        [phone_line] = [n for n in on_switch if n not in WEB_HZ]
        assert on_switch[phone_line] in channels_of(gateway), (listing, channels_of(gateway))
        # Talking events: the phone plays its tone file, the web members their tones. Every
        # list so far showed nobody talking; one list (the last talking event's, whoever
        # it is about) shows all three.
        for user in users.values():
            talking = members(
                user, lambda ms: len(ms) == 3 and all(m["Talking"] for m in ms), timeout=30
            )
            assert talking["Event"] == "talking", talking
        # The switch mixes: each web member hears the other and the phone, never itself.
        freqs = [*WEB_HZ.values(), PHONE_HZ]
        for uid, peer in peers.items():
            audio, rate = fresh_audio(peer)
            got = hears(audio, rate, freqs)
            assert got == {f: f != WEB_HZ[uid] for f in freqs}, (uid, got)

        # An fs_cli admin kicks bob over ESL: the gateway notices, bob's leg ends.
        reply = api(gateway, f"conference {room} kick {ids['bob']}")
        assert reply.startswith("+OK"), reply
        end = wait_conf(bob, "EndCall", timeout=20)
        assert end["Reason"] == "kicked" and end["ChanId"] == CHAN_ID, end
        told = wait_conf(alice, "ConfMembers", lambda b: b["Event"] == "kick", timeout=20)
        assert told["Member"] == ids["bob"], told
        members(alice, lambda ms: uids(ms) == {"alice", _PHONE}, timeout=20)

        # The moderator ends the room: her leg and the phone's end, nothing stays.
        alice.peer(GATEWAY, Cmd="ConfEnd", ChanId=CHAN_ID)
        assert wait_conf(alice, "EndCall", timeout=20)["Reason"] == "room_ended"
        assert_switch_clean(gateway, tuple(on_switch.values()))
        controller = gateway.controller
        assert controller is not None
        wait_until(lambda: len(controller.conference.table) == 0, 15, "the room forgotten")
        wait_until(
            lambda: room not in api(gateway, "conference list"), 15, "the room gone on the switch"
        )
        # `show channels` is written asynchronously: wait for it to drop the room's legs.
        legs = (*on_switch.values(), *channels_of(gateway))
        wait_until(
            lambda: not any(u in api(gateway, "show channels") for u in legs),
            15,
            "no channel of the room in show channels",
        )
        assert not any(exists(gateway, u) for u in legs)
        for uid, peer in peers.items():
            peer.close()
            users[uid].close()
