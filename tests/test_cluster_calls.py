"""The cluster's table of live calls (esl_bridge/cluster/calls.py, ClusterNode) against a
real, throwaway redis-server: what the HTTP API of any process reads.

A node's calls are seen by the others as they change and vanish as they end; those of a
node that stops beating vanish within the TTL; a Redis that lost its data gets them back
when the node joins again; a message of a type given to ``handlers`` reaches its handler,
not the hub. Every wait is for the event itself (bounded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from support.redis_server import RedisServer, redis_server  # noqa: F401
from test_cluster_redis import (  # noqa: F401
    APPID,
    BOUND,
    FakeHub,
    client,
    cluster_settings,
    fast,
    kill_9,
    node,
    until,
)

from esl_bridge import config
from esl_bridge.cluster.node import ClusterNode


def _call(state: str) -> dict[str, Any]:
    return {"call_id": "call-1", "uid": "alice", "number": "1000", "state": state}


def _sees(by: ClusterNode, expected: dict[str, tuple[str, str]]) -> Callable[[], Awaitable[bool]]:
    """A check: ``by`` reads exactly ``expected`` (call id -> (member, state))."""

    async def check() -> bool:
        found = await by.cluster_calls()
        seen = {} if found is None else {i: (m, r["state"]) for i, (m, r) in found.items()}
        return seen == expected

    return check


def test_calls_are_seen_by_the_others_as_they_change_and_end(
    redis_server: RedisServer,  # noqa: F811
    fast: config.ClusterSettings,  # noqa: F811
) -> None:
    async def main() -> None:
        async with node(fast, "a") as (a, _), node(fast, "b") as (b, _):
            await until(_sees(b, {}), "nothing yet")
            a.call_changed("call-1", _call("inviting"))
            await until(_sees(b, {"call-1": ("a", "inviting")}), "the call seen")
            a.call_changed("call-1", _call("connected"))
            await until(_sees(b, {"call-1": ("a", "connected")}), "its new state")
            b.call_changed("call-2", {**_call("ringing"), "call_id": "call-2"})
            await until(
                _sees(b, {"call-1": ("a", "connected"), "call-2": ("b", "ringing")}),
                "b's own call listed too",
            )
            a.call_changed("call-1", None)
            await until(_sees(b, {"call-2": ("b", "ringing")}), "the ended call gone")

    asyncio.run(main())


def test_written_waits_for_the_call_to_be_in_redis(redis_server: RedisServer) -> None:  # noqa: F811
    """What the API awaits before its 201 (seen in CI: a DELETE through the other process
    right after the 201 got 404, the call's record still queued). Redis is made to hold
    every write, so the write cannot have landed while ``written()`` is checked; the
    nodes' redis_timeout is longer than any wait here, so the held write never fails."""
    patient = cluster_settings(redis_server, redis_timeout="60")

    async def main() -> None:
        async with node(patient, "a") as (a, _), node(patient, "b") as (b, _):
            admin = client(redis_server)
            try:
                await admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
                a.call_changed("call-1", _call("ringing"))
                written = asyncio.ensure_future(a.written())
                assert await b.cluster_calls() == {}  # reads go on; the write waits
                assert not written.done()
            finally:
                await admin.execute_command("CLIENT", "UNPAUSE")
                await admin.aclose()
            await asyncio.wait_for(written, BOUND)
            found = await b.cluster_calls()  # at once: no waiting for it to show
            assert found is not None and found["call-1"][0] == "a", found
            await a.written()  # nothing queued since: returns at once

    asyncio.run(main())


def test_a_node_that_joined_since_the_last_heartbeat_is_read_at_once(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    """Seen in CI: B started, a call was made on it, and a DELETE for it through A got
    404: A read the calls of the members of its last census, taken before B joined.
    Here A's next heartbeat is a minute away, so only a fresh read can find B's call."""
    slow = cluster_settings(redis_server, heartbeat_interval="30", claim_ttl="60")

    async def main() -> None:
        async with node(slow, "a") as (a, _):
            assert await a.cluster_calls() == {}  # a's census: nobody else
            async with node(slow, "b") as (b, _):
                b.call_changed("call-b", {**_call("ringing"), "call_id": "call-b"})
                await b.written()
                found = await a.cluster_calls()  # at once: no heartbeat of a since b joined
                assert found is not None and found["call-b"][0] == "b", found

    asyncio.run(main())


def test_a_silent_nodes_calls_vanish_and_a_wiped_redis_gets_them_back(
    redis_server: RedisServer,  # noqa: F811
    fast: config.ClusterSettings,  # noqa: F811
) -> None:
    async def main() -> None:
        async with node(fast, "b") as (b, _), node(fast, "c") as (c, _):
            c.call_changed("call-c", {**_call("connected"), "call_id": "call-c"})
            only_c = {"call-c": ("c", "connected")}
            await until(_sees(b, only_c), "c's call seen")
            # Redis loses everything: c writes its calls again when it joins again.
            r = client(redis_server)
            await r.flushall()  # done once awaited: c's call is seen again only if rewritten
            await until(_sees(b, only_c), "c's call written again")

            a = ClusterNode(fast, APPID, "a")
            a.attach(FakeHub(), lambda: None)
            await a.start(wait=20)
            a.call_changed("call-1", _call("inviting"))
            await until(_sees(b, {**only_c, "call-1": ("a", "inviting")}), "a's call seen")
            await kill_9(a)  # no heartbeat, no goodbye
            await until(_sees(b, only_c), "a's calls gone with it")
            await a._redis.aclose()
            await r.aclose()

    asyncio.run(main())


def test_a_handled_message_type_reaches_its_handler_not_the_hub(
    redis_server: RedisServer,  # noqa: F811
    fast: config.ClusterSettings,  # noqa: F811
) -> None:
    async def main() -> None:
        async with node(fast, "a") as (a, hub_a), node(fast, "b") as (b, _):
            got: list[tuple[str, Any]] = []
            a.handlers["api_hangup"] = lambda sender, m: got.append((sender, m["call_id"]))
            b.send("a", {"t": "api_hangup", "call_id": "call-1"})
            await until(lambda: got == [("b", "call-1")], "the hangup handled at a")
            assert not [e for e in hub_a.events if e[0] == "message"]

    asyncio.run(main())
