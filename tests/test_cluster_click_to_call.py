"""Click-to-call in a cluster: two ``esl-bridge run`` processes sharing a test Redis
(tests/test_cluster_gateways.py sets them up), the API on each.

Checked: a call posted to A for a web user on B rings her (the invitation relayed), its
audio flows both ways (the media leg on A, where the channel is), and B lists, reads and
hangs it up; the reverse order across the two processes; the number claimed once when
calls to it are posted to both processes at once; Redis down: 503 cluster_unavailable.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import redis
from support.gateway_process import GatewayProcess, _Remote
from support.gateway_support import WebUser, wait_until
from support.netns import loopback_only
from support.web_peer import WebPeer
from test_api import FAST, TOKEN, Backend, assert_tones_both_ways, error_code
from test_cluster_gateways import Cluster, cluster_of, online

from esl_bridge.core.invitations import LocalState


def backend(cluster: Cluster, index: int) -> Backend:
    """The app's backend, its requests to process ``index``."""
    gateway = cluster.gateways[index]
    return Backend(_Remote(cluster.loops, ("127.0.0.1", gateway.web_port)))  # type: ignore[arg-type]


def listed(api: Backend) -> dict[str, dict[str, Any]]:
    return {row["call_id"]: row for row in api.ok("GET", "/calls")["calls"]}


def _accept(user: WebUser, caller: str) -> str:
    """The web user accepts the invitation from ``caller``; its ChanId."""
    invitation = user.wait(lambda m: m.get("type") == "invitation", 15, f"{caller} rings")
    assert invitation["caller"] == caller
    user.request({"type": "ack", "inv": invitation["inv"]})
    reply = user.request(
        {"type": "accept", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})}
    )
    assert reply["type"] == "ok", reply
    return str(json.loads(invitation["content"])["ChanId"])


def _wait_answered(user: WebUser, number: str) -> None:
    """SipState answered from ``number`` (after ringing or early media, if any)."""

    def answered(m: dict[str, Any]) -> bool:
        if m.get("type") != "message" or m.get("from") != number:
            return False
        text = json.loads(m["text"])
        return bool(text.get("Cmd") == "SipState" and text.get("State") == "answered")

    user.wait(answered, 15, f"SipState answered from {number}")


def _claims(cluster: Cluster) -> dict[str, str]:
    client = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
    try:
        return {key: str(client.get(key)) for key in client.keys("esl-bridge:*:claim:*")}
    finally:
        client.close()


@loopback_only(timeout=300)
def test_a_call_posted_to_a_rings_a_web_user_on_b_with_audio_and_b_manages_it(
    tmp_path: Path,
) -> None:
    with cluster_of(tmp_path, 2, sections=FAST) as cluster:
        sim = cluster.sim
        api_a, api_b = backend(cluster, 0), backend(cluster, 1)
        alice = cluster.user(1, "alice")  # on B
        bob = cluster.user(0, "bob")  # on A
        wait_until(lambda: online(bob, "alice"), 10, "alice (B) online for A")
        assert api_a.ok("GET", "/users/alice")["online"] is True

        created = api_a.ok("POST", "/calls", {"uid": "alice", "number": "1000"}, status=201)
        call_id = created["call_id"]
        assert created["state"] == "inviting"
        # B lists it, and shows it as A does, once A has published it.
        wait_until(lambda: call_id in listed(api_b), 10, "the call listed by B")
        assert listed(api_b)[call_id]["uid"] == "alice"
        assert api_b.ok("GET", f"/calls/{call_id}")["state"] == "inviting"
        assert api_b.ok("GET", "/users/alice")["calls"] == [call_id]
        [claim] = _claims(cluster).values()
        assert claim.startswith("node-0-")  # A holds the number

        chan_id = _accept(alice, "1000")
        _wait_answered(alice, "1000")
        peer = WebPeer(alice)
        peer.offer("1000", chan_id)  # relayed B -> A, where the media leg is
        [channel] = sim.channels()
        assert channel.variables.get("esl_bridge_call_id") == call_id
        assert_tones_both_ways(channel, peer)
        wait_until(
            lambda: api_b.ok("GET", f"/calls/{call_id}")["state"] == "connected",
            10,
            "B shows the call connected",
        )
        assert api_b.ok("GET", f"/calls/{call_id}")["answered"] is True

        # B hangs up A's call (over the bus).
        ended = api_b.ok("DELETE", f"/calls/{call_id}", status=202)
        assert ended == {"call_id": call_id, "state": "ending"}
        assert alice.wait_peer_cmd("EndCall", timeout=15)["from"] == "1000"
        wait_until(lambda: channel.hangup_cause is not None, 15, "the phone hung up")
        assert channel.hangup_cause == "NORMAL_CLEARING"
        for api in (api_a, api_b):
            wait_until(
                lambda api=api: api.request("GET", f"/calls/{call_id}")[0] == 404,  # type: ignore[misc]
                10,
                "the call gone",
            )
            assert listed(api) == {}
        wait_until(lambda: _claims(cluster) == {}, 10, "the number released")
        peer.close()

        # The reverse order, posted to B for bob on A: the phone first, then bob rings.
        reverse = api_b.ok(
            "POST", "/calls", {"uid": "bob", "number": "1001", "order": "number_first"}, 201
        )
        assert (reverse["state"], reverse["order"]) == ("originating", "number_first")
        _accept(bob, "1001")
        _wait_answered(bob, "1001")
        wait_until(
            lambda: api_a.ok("GET", f"/calls/{reverse['call_id']}")["state"] == "connected",
            10,
            "A shows B's call connected",
        )
        api_a.ok("DELETE", f"/calls/{reverse['call_id']}", status=202)
        assert bob.wait_peer_cmd("EndCall", timeout=15)["from"] == "1001"
        wait_until(lambda: sim.live_channel_count() == 0, 15, "no channel left")
        wait_until(lambda: _claims(cluster) == {}, 10, "the number released")


def test_a_number_is_claimed_once_when_calls_to_it_race_on_both_processes(
    tmp_path: Path,
) -> None:
    with cluster_of(tmp_path, 2, sections=FAST) as cluster:
        users = [cluster.user(i % 2, f"agent{i}") for i in range(8)]
        wait_until(lambda: online(users[0], "agent1"), 10, "agent1 (B) online for A")
        ports = [gateway.web_port for gateway in cluster.gateways]

        async def all_at_once() -> list[tuple[int, Any]]:
            async with aiohttp.ClientSession() as session:

                async def post(i: int) -> tuple[int, Any]:
                    url = f"http://127.0.0.1:{ports[i % 2]}/api/v1/calls"
                    body = {"uid": f"agent{i}", "number": "1004"}  # 1004 never answers
                    headers = {"Authorization": f"Bearer {TOKEN}"}
                    async with session.post(url, json=body, headers=headers) as response:
                        return response.status, await response.json()

                return await asyncio.gather(*(post(i) for i in range(8)))

        answers = cluster.loops.run_coroutine(all_at_once(), timeout=30)
        created = [body for status, body in answers if status == 201]
        assert len(created) == 1, answers
        assert (
            sorted(error_code(body) for status, body in answers if status != 201)
            == ["number_busy"] * 7
        )
        # A web user's own invitation to the number is refused busy too.
        users[1].invite("1004", "ch-busy")
        refused = users[1].wait_local_state(LocalState.REFUSED_BY_REMOTE, timeout=15)
        assert json.loads(refused["response"])["Cmd"] == "Calling"
        [token] = _claims(cluster).values()
        winner = int(created[0]["uid"].removeprefix("agent")) % 2
        assert token.startswith(f"node-{winner}-")

        # DELETE through the other process frees the number for the next call.
        other = backend(cluster, 1 - winner)
        other.ok("DELETE", f"/calls/{created[0]['call_id']}", status=202)
        wait_until(lambda: _claims(cluster) == {}, 10, "the number released")
        again = other.ok("POST", "/calls", {"uid": "agent0", "number": "1004"}, status=201)
        other.ok("DELETE", f"/calls/{again['call_id']}", status=202)
        wait_until(lambda: _claims(cluster) == {}, 10, "the number released again")


def test_redis_down_the_api_answers_503_cluster_unavailable(tmp_path: Path) -> None:
    with cluster_of(tmp_path, 2, sections=FAST) as cluster:
        a: GatewayProcess = cluster.gateways[0]
        api = backend(cluster, 0)
        cluster.user(0, "alice")
        assert listed(api) == {}
        cluster.redis.stop()
        wait_until(lambda: a.health()[0] == 503, 20, "A unhealthy")
        for method, path, body in (
            ("POST", "/calls", {"uid": "alice", "number": "1000"}),
            ("GET", "/calls", None),
            ("GET", "/calls/call-elsewhere", None),
            ("DELETE", "/calls/call-elsewhere", None),
            ("GET", "/users/alice", None),
        ):
            status, answer, _ = api.request(method, path, body)
            assert (status, error_code(answer)) == (503, "cluster_unavailable"), (method, path)
        assert cluster.sim.channels() == []  # nothing was dialled
