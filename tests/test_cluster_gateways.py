"""Several ``esl-bridge run`` processes sharing one Redis act as one gateway.

Each test starts its own redis-server (tests/support/redis_server.py), the simulator
and 2-3 gateway processes, each with its own web and socket port; web users are
WebSocket clients of the test's loop, browsers aiortc peers (inside a loopback-only
namespace). The SIP side picks the process its outbound socket lands on with the
simulator's ``target``.

Checked: presence and invitations across processes, a later login on another process
taking the session over, peer messages; one call per number under 50 simultaneous
invitations spread over three processes; a SIP call landing on B ringing a browser on A
with audio both ways; kill -9 of a process ending only its own calls and freeing its
numbers; Redis stopped and restarted under a live call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from support.gateway_process import GatewayProcess
from support.gateway_support import APPID, WebUser, wait_until
from support.netns import loopback_only
from support.ports_and_waits import free_port
from support.redis_server import RedisServer
from support.web_peer import WebPeer
from support.webhook_receiver import ThreadReceiver
from test_api import assert_tones_both_ways

from esl_bridge.core.invitations import LocalState, RemoteState
from esl_bridge.loops import Loops
from esl_bridge.sim import SimConfig, SimulatorThread

HEARTBEAT = 0.2
CLAIM_TTL = 1.0


class Cluster:
    def __init__(self, tmp: Path, sim: SimulatorThread, redis: RedisServer, loops: Loops):
        self.tmp = tmp
        self.sim = sim
        self.redis = redis
        self.loops = loops
        self.gateways: list[GatewayProcess] = []
        self.socket_ports: list[int] = []
        self.users: list[WebUser] = []

    def start_gateway(
        self, index: int, sections: str = "", redis_timeout: float = 0.5
    ) -> GatewayProcess:
        port = free_port()
        gateway = GatewayProcess(
            self.tmp,
            esl=("127.0.0.1", self.sim.esl_port, self.sim.password),
            socket=("127.0.0.1", port),
            orphan_timeout=3,
            node_id=f"node-{index}",
            cluster=(
                f"redis_url = {self.redis.url}\nheartbeat_interval = {HEARTBEAT}\n"
                f"claim_ttl = {CLAIM_TTL}\nredis_timeout = {redis_timeout}\n"
            ),
            sections=sections,
        )
        self.gateways.append(gateway)
        self.socket_ports.append(port)
        return gateway

    def user(self, gateway: int, uid: str, session: str | None = None) -> WebUser:
        user = self.gateways[gateway].web_user(self.loops, uid, session)
        self.users.append(user)
        return user


@contextlib.contextmanager
def cluster_of(
    tmp: Path, n: int, sections: str = "", redis_timeout: float = 0.5
) -> Iterator[Cluster]:
    """``n`` gateway processes; ``sections``: more rtx.conf sections for each.
    ``redis_timeout``: short by default, so that the tests that stop Redis see it
    down at once; a test that must not take a slow answer for a dead Redis (a loaded
    machine) sets it longer."""
    redis = RedisServer().start()
    sim = SimulatorThread(SimConfig(first_call_event_delay=0.0)).start()
    loops = Loops().start()
    cluster = Cluster(tmp, sim, redis, loops)
    try:
        for i in range(n):
            cluster.start_gateway(i, sections, redis_timeout)
        yield cluster
    finally:
        for user in cluster.users:
            with contextlib.suppress(Exception):
                user.close()
        for gateway in cluster.gateways:
            gateway.stop()
        loops.stop()
        sim.stop()
        redis.close()


def online(user: WebUser, uid: str) -> bool:
    reply = user.request({"type": "query", "uids": [uid]})
    return bool(reply["peers"][uid])


def test_presence_invitations_messages_and_takeover_across_processes(tmp_path: Path) -> None:
    with cluster_of(tmp_path, 2) as cluster:
        alice = cluster.user(0, "alice")
        bob = cluster.user(1, "bob")
        wait_until(lambda: online(bob, "alice"), 10, "alice (on A) online for bob (on B)")
        wait_until(lambda: online(alice, "bob"), 10, "bob (on B) online for alice (on A)")
        assert bob.request({"type": "subscribe", "uids": ["alice"]})["peers"] == {"alice": True}

        # A -> B: invitation, acknowledgement, acceptance.
        alice.request(
            {"type": "invite", "ref": "r1", "callee": "bob", "content": "hi", "channel_id": "c1"}
        )
        invitation = bob.wait(lambda m: m.get("type") == "invitation", 10, "the invitation on B")
        assert (invitation["caller"], invitation["content"]) == ("alice", "hi")
        assert bob.request({"type": "ack", "inv": invitation["inv"]})["type"] == "ok"
        alice.wait_local_state(LocalState.RECEIVED_BY_REMOTE)
        reply = bob.request({"type": "accept", "inv": invitation["inv"], "response": "yes"})
        assert reply["type"] == "ok"
        accepted = alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        assert accepted["response"] == "yes"
        bob.wait(
            lambda m: m.get("type") == "remote_state" and m.get("state") == RemoteState.ACCEPTED,
            10,
            "bob's side confirmed",
        )

        # B -> A: invitation refused; another canceled by its caller.
        bob.request({"type": "invite", "ref": "r2", "callee": "alice", "content": ""})
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 10, "on A")
        alice.request({"type": "refuse", "inv": invitation["inv"], "response": "busy"})
        refused = bob.wait_local_state(LocalState.REFUSED_BY_REMOTE)
        assert refused["response"] == "busy"
        bob.request({"type": "invite", "ref": "r3", "callee": "alice", "content": ""})
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 10, "on A")
        assert bob.request({"type": "cancel", "ref": "r3"})["type"] == "ok"
        alice.wait(
            lambda m: (
                m.get("type") == "remote_state"
                and m.get("inv") == invitation["inv"]
                and m.get("state") == RemoteState.CANCELED
            ),
            10,
            "the cancel reached A",
        )

        # Peer messages both ways.
        assert alice.request({"type": "message", "to": "bob", "text": "ping"})["delivered"]
        got = bob.wait(lambda m: m.get("type") == "message", 10, "alice's message")
        assert (got["from"], got["text"]) == ("alice", "ping")
        bob.request({"type": "message", "to": "alice", "text": "pong"})
        got = alice.wait(lambda m: m.get("type") == "message", 10, "bob's message")
        assert (got["from"], got["text"]) == ("bob", "pong")

        # alice logs in again on B: her session on A is taken over, bob sees no flap.
        alice_again = cluster.user(1, "alice")
        closing = alice.wait(lambda m: m.get("type") == "closing", 10, "A's takeover")
        assert closing["reason"] == "TAKEOVER"
        assert online(bob, "alice")
        alice_again.request({"type": "logout"})
        status = bob.wait(lambda m: m.get("type") == "peer_status", 10, "alice offline")
        assert status["peers"] == {"alice": "OFFLINE"}
        assert not [m for m in bob.inbox if m.get("type") == "peer_status"]  # no flap before


def test_each_login_and_logout_is_posted_once_by_the_cluster(tmp_path: Path) -> None:
    """user.online/user.offline webhooks come from the process holding the session, and
    a dead process's users are reported offline by exactly one survivor: the app's
    backend hears each change once, however many processes there are."""
    with ThreadReceiver() as backend:
        hooks = f"[webhooks]\nurl = {backend.url}\nsecret = whsec-cluster-test\n"
        with cluster_of(tmp_path, 3, hooks) as cluster:
            alice = cluster.user(0, "alice")
            bob = cluster.user(1, "bob")
            for user in (alice, bob):  # every process knows both before the logout
                for gateway in (0, 1, 2):
                    watcher = cluster.user(gateway, f"w{gateway}-{user.uid}")
                    wait_until(lambda w=watcher, u=user.uid: online(w, u), 10, "online")
            alice.request({"type": "logout"})
            backend.wait_event("user.offline", uid="alice")
            cluster.gateways[1].kill()  # bob's process, kill -9: no offline of its own
            backend.wait_event("user.offline", uid="bob")
            # Markers: a login on each survivor, posted after anything they queued before.
            for gateway in (0, 2):
                cluster.user(gateway, f"marker{gateway}")
                backend.wait_event("user.online", uid=f"marker{gateway}")
            got = [(e["type"], e["data"]["uid"]) for e in backend.events()]
            for uid in ("alice", "bob"):
                assert got.count(("user.online", uid)) == 1, got
                assert got.count(("user.offline", uid)) == 1, got


def test_a_reconnect_landing_on_another_process_resumes_the_session(tmp_path: Path) -> None:
    """With run --workers N a browser's reconnect lands on any process: it resumes its
    session there (served through the bus by the process holding it), with what was
    queued for it, instead of becoming a new login that ends its invitations."""
    with cluster_of(tmp_path, 2) as cluster:
        a = cluster.gateways[0]
        alice = cluster.user(0, "alice")
        session = alice.login_reply["session"]
        bob = cluster.user(1, "bob")
        wait_until(lambda: online(bob, "alice"), 10, "alice (on A) online for bob (on B)")
        bob.request({"type": "subscribe", "uids": ["alice"]})
        alice.close()  # her network drops: A keeps the session for the grace period
        wait_until(lambda: bool(a.log_events("signaling.detached")), 10, "A saw her go")
        bob.request({"type": "message", "to": "alice", "text": "while you were away"})
        again = cluster.user(1, "alice", session)  # B, not A
        assert again.login_reply["resumed"] is True
        assert again.login_reply["session"] == session
        queued = again.wait(lambda m: m.get("type") == "message", 10, "the queued message")
        assert (queued["from"], queued["text"]) == ("bob", "while you were away")
        assert a.log_events("signaling.resumed_through")
        bob.request({"type": "message", "to": "alice", "text": "live"})
        again.wait(lambda m: m.get("text") == "live", 10, "a message after the resume")
        assert again.request({"type": "message", "to": "bob", "text": "hi"})["delivered"]
        bob.wait(lambda m: m.get("text") == "hi", 10, "her message through B and A")
        assert not [m for m in bob.inbox if m.get("type") == "peer_status"]  # no flap


def test_fifty_simultaneous_invitations_claim_a_number_once(tmp_path: Path) -> None:
    # 50 claims at once on a loaded 2-core machine: a slow Redis answer is not a down one.
    with cluster_of(tmp_path, 3, redis_timeout=5.0) as cluster:
        users = [cluster.user(i % 3, f"caller{i}") for i in range(50)]
        frames = [
            json.dumps(
                {
                    "v": 1,
                    "id": 1000,
                    "type": "invite",
                    "ref": f"race-{i}",
                    "callee": "1000",
                    "content": json.dumps({"Mode": 1, "ChanId": f"race-{i}"}),
                    "channel_id": f"race-{i}",
                }
            )
            for i in range(50)
        ]

        async def all_at_once() -> None:
            await asyncio.gather(
                *(user._ws.send_str(frame) for user, frame in zip(users, frames, strict=True))  # type: ignore[union-attr]
            )

        cluster.loops.run_coroutine(all_at_once(), timeout=30)

        def answered(user: WebUser) -> dict[str, Any] | None:
            for m in user.inbox:
                if m.get("type") == "local_state" and m.get("state") in (
                    LocalState.ACCEPTED_BY_REMOTE,
                    LocalState.REFUSED_BY_REMOTE,
                ):
                    return m
            return None

        wait_until(lambda: all(answered(u) for u in users), 60, "every invitation answered")
        outcomes = [answered(u) for u in users]
        accepted = [o for o in outcomes if o and o["state"] == LocalState.ACCEPTED_BY_REMOTE]
        refused = [o for o in outcomes if o and o["state"] == LocalState.REFUSED_BY_REMOTE]
        assert len(accepted) == 1, outcomes
        assert len(refused) == 49
        assert {json.loads(r["response"])["Cmd"] for r in refused} == {"Calling"}, [
            r["response"] for r in refused if "Calling" not in r["response"]
        ]
        assert len(cluster.sim.channels()) == 1  # one originate in the whole cluster


def _answer_sip_call(user: WebUser) -> tuple[WebPeer, str]:
    """The browser accepts the gateway's invitation and sends its offer."""
    invitation = user.wait(lambda m: m.get("type") == "invitation", 15, "the SIP call rings")
    assert invitation["caller"] == "gateway"
    chan_id = json.loads(invitation["content"])["ChanId"]
    user.request({"type": "ack", "inv": invitation["inv"]})
    user.request({"type": "accept", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})})
    peer = WebPeer(user)
    peer.offer("gateway", chan_id)
    return peer, chan_id


def _assert_audio_both_ways(sim: SimulatorThread, uuid: str, peer: WebPeer) -> None:
    channel = sim.get_channel(uuid)
    assert channel is not None
    assert_tones_both_ways(channel, peer)


@loopback_only(timeout=240)
def test_calls_both_ways_carry_audio_in_a_cluster(tmp_path: Path) -> None:
    """SIP -> web with the socket on A and the browser on B; web -> SIP from B."""
    with cluster_of(tmp_path, 2) as cluster:
        sim = cluster.sim
        bob = cluster.user(1, "bob")
        alice = cluster.user(1, "alice")
        phone = sim.place_call(
            caller="1001", dest="0bob", target=("127.0.0.1", cluster.socket_ports[0])
        )
        bob_peer, chan_id = _answer_sip_call(bob)
        wait_until(lambda: phone.answered, 15, "the phone answered")
        _assert_audio_both_ways(sim, phone.uuid, bob_peer)

        alice.invite("1000", "ch-out")  # the simulator's 1000 answers with a 440 Hz tone
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=15)
        alice_peer = WebPeer(alice)
        alice_peer.offer("1000", "ch-out")
        [out] = [ch for ch in sim.channels() if ch.uuid != phone.uuid]
        _assert_audio_both_ways(sim, out.uuid, alice_peer)

        # The browser ends the SIP call through its process (B -> A over the bus).
        bob.peer("gateway", Cmd="EndCall", ChanId=chan_id)
        wait_until(lambda: phone.finished, 15, "the phone hung up")
        alice.peer("1000", Cmd="EndCall", ChanId="ch-out")
        wait_until(lambda: sim.live_channel_count() == 0, 15, "no channel left")
        bob_peer.close()
        alice_peer.close()


@loopback_only(timeout=240)
def test_sip_call_on_b_rings_a_browser_on_a_and_kill_9_ends_only_b_calls(tmp_path: Path) -> None:
    with cluster_of(tmp_path, 2) as cluster:
        a, b = cluster.gateways
        sim = cluster.sim
        bob = cluster.user(0, "bob")  # on A
        carol = cluster.user(0, "carol")  # on A too, her call on A
        alice = cluster.user(1, "alice")  # on B: her web -> SIP call is B's

        # SIP -> web across processes: the socket lands on B, the browser is on A.
        phone = sim.place_call(
            caller="1001", dest="0bob", target=("127.0.0.1", cluster.socket_ports[1])
        )
        bob_peer, _ = _answer_sip_call(bob)
        wait_until(lambda: phone.answered, 15, "the phone answered")
        _assert_audio_both_ways(sim, phone.uuid, bob_peer)
        assert b.log_events("calls.sip_call_arrived") and not a.log_events("calls.sip_call_arrived")

        # A call held by A (socket on A) and a web -> SIP call held by B.
        phone_a = sim.place_call(
            caller="1002", dest="0carol", target=("127.0.0.1", cluster.socket_ports[0])
        )
        carol_peer, _ = _answer_sip_call(carol)
        wait_until(lambda: phone_a.answered, 15, "carol's phone answered")
        alice.invite("1001", "ch-alice")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=15)

        b.kill()  # kill -9: B's calls end (its channels by the orphan watchdog)

        # bob hears from A that the gateway side of his call is gone.
        end = bob.wait_peer_cmd("EndCall", timeout=20)
        assert end["from"] == "gateway"
        wait_until(lambda: phone.finished, 30, "B's SIP call ended by the switch")
        # 1001 is free again within the claim TTL: a caller on A gets it.
        dave = cluster.user(0, "dave")
        tries = itertools.count()

        def claim_free() -> bool:
            dave.inbox.clear()
            dave.invite("1001", f"ch-dave-{next(tries)}")
            reply = dave.wait(
                lambda m: (
                    m.get("type") == "local_state"
                    and m.get("state")
                    in (LocalState.ACCEPTED_BY_REMOTE, LocalState.REFUSED_BY_REMOTE)
                ),
                20,
                "dave's answer",
            )
            return bool(reply["state"] == LocalState.ACCEPTED_BY_REMOTE)

        wait_until(claim_free, 30, "1001 claimable again after B died")
        # A's call went on: still up, audio still flowing.
        assert not phone_a.finished
        channel_a = sim.get_channel(phone_a.uuid)
        assert channel_a is not None and channel_a.unicast is not None
        before = len(channel_a.unicast.received_samples())
        wait_until(
            lambda: len(channel_a.unicast.received_samples()) > before + 8000,  # type: ignore[union-attr]
            20,
            "carol's audio still reaching the switch",
        )
        bob_peer.close()
        carol_peer.close()


@loopback_only(timeout=240)
def test_redis_stopped_and_restarted_under_a_live_call(tmp_path: Path) -> None:
    with cluster_of(tmp_path, 2) as cluster:
        a, b = cluster.gateways
        sim = cluster.sim
        bob = cluster.user(0, "bob")
        alice = cluster.user(1, "alice")
        phone = sim.place_call(
            caller="1001", dest="0bob", target=("127.0.0.1", cluster.socket_ports[1])
        )
        peer, _ = _answer_sip_call(bob)
        wait_until(lambda: phone.answered, 15, "the phone answered")
        _assert_audio_both_ways(sim, phone.uuid, peer)

        cluster.redis.stop()
        wait_until(lambda: a.health()[0] == 503, 20, "A unhealthy")
        _status, body = a.health()
        assert body["cluster"] == "down" and body["reason"].startswith("Redis unreachable")
        # A new call is refused with the documented error; the live call goes on.
        alice.invite("1000", "ch-down")
        refused = alice.wait_local_state(LocalState.REFUSED_BY_REMOTE, timeout=15)
        assert json.loads(refused["response"]) == {
            "Cmd": "Refused",
            "Reason": "cluster_unavailable",
        }
        # A new SIP call is refused too (where its callee is cannot be known).
        refused_call = sim.place_call(
            caller="1002", dest="0alice", target=("127.0.0.1", cluster.socket_ports[0])
        )
        wait_until(lambda: refused_call.finished, 15, "the new SIP call refused")
        assert refused_call.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
        channel = sim.get_channel(phone.uuid)
        assert channel is not None and channel.unicast is not None
        before = len(channel.unicast.received_samples())
        wait_until(
            lambda: len(channel.unicast.received_samples()) > before + 8000,  # type: ignore[union-attr]
            20,
            "the live call's audio still flowing",
        )
        assert not phone.finished

        cluster.redis.start()
        wait_until(lambda: a.health()[0] == 200, 30, "A healthy again")
        wait_until(lambda: b.health()[0] == 200, 30, "B healthy again")
        wait_until(lambda: online(alice, "bob"), 20, "bob (A) online again for alice (B)")
        alice.invite("1000", "ch-up")
        answer = alice.wait(
            lambda m: (
                m.get("type") == "local_state"
                and m.get("ref") == "ch-up"
                and m["state"]
                in (LocalState.ACCEPTED_BY_REMOTE, LocalState.REFUSED_BY_REMOTE, LocalState.FAILURE)
            ),
            15,
            "the answer to the call after Redis came back",
        )
        assert answer["state"] == LocalState.ACCEPTED_BY_REMOTE, (answer, b.health())
        assert not phone.finished
        peer.close()


def test_sigterm_leaves_the_cluster_cleanly(tmp_path: Path) -> None:
    with cluster_of(tmp_path, 2) as cluster:
        a, b = cluster.gateways
        bob = cluster.user(0, "bob")
        alice = cluster.user(1, "alice")
        wait_until(lambda: online(alice, "bob"), 10, "bob (A) online for alice (B)")
        alice.request({"type": "subscribe", "uids": ["bob"]})
        # a web -> SIP call on A holds number 1000 in Redis
        bob.invite("1000", "ch-term")
        bob.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=15)
        client = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
        [claim] = client.keys("esl-bridge:*:claim:1000")
        holder = client.get(claim)
        assert holder is not None and holder.startswith("node-0-")

        assert a.terminate() == 0

        status = alice.wait(lambda m: m.get("type") == "peer_status", 10, "bob offline")
        assert status["peers"] == {"bob": "OFFLINE"}
        # B heard A leave (not its registration expiring), and A left nothing behind.
        wait_until(
            lambda: any(e["reason"] == "left" for e in b.log_events("cluster.member_gone")),
            10,
            "B logged A's departure",
        )
        assert [k for k in client.keys("esl-bridge:*") if "node-0-" in k] == []
        assert not [m for m in client.smembers(f"esl-bridge:{APPID}:members") if "node-0" in m]
        assert client.get(claim) is None
        assert a.log_events("cluster.left")
        client.close()
