"""The cluster modules (esl_bridge/cluster) against a real, throwaway redis-server.

Claims: one winner among 50 simultaneous claimants, compare-and-delete release, expiry
of a dead owner's claim, refresh taking back what a restarted Redis lost. Registry: a
member that stops beating is reported dead. Presence: the in-memory copy orders logins,
a snapshot replaces it with a diff. Bus: messages reach one member or all, never the
sender. ClusterNode: two nodes see each other's sessions, a leaving node is dropped at
once, a silent one within the TTL, and Redis going away and coming back is reported and
repaired.

Nothing here waits on the clock: each wait is for the event itself (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.redis_server import RedisServer, redis_server  # noqa: F401

from esl_bridge import config
from esl_bridge.cluster.bus import MessageBus
from esl_bridge.cluster.claims import NumberClaims
from esl_bridge.cluster.keys import Keys
from esl_bridge.cluster.node import HELD_MAX_AGE, ClusterNode
from esl_bridge.cluster.nodes import NodeRegistry
from esl_bridge.cluster.presence import PresenceStore, RemotePresence, SessionInfo

APPID = "unit"
BOUND = 20.0  # seconds any awaited event may take on a busy machine


async def until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait for ``check`` (each check of a node's Redis is bounded by its redis_timeout);
    fails naming ``what`` once BOUND has passed. A deadline read from the loop's clock,
    not an ``asyncio.timeout``: a cancel that a Redis call under its own timeout turns
    into an error is swallowed by the node (which reports Redis unreachable), and the
    wait would then go on until pytest's timeout, with no word of what it waited for."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + BOUND
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not within {BOUND:g} s: {what}")
        await asyncio.sleep(0.02)


async def kill_9(member: ClusterNode) -> None:
    """Stop ``member``'s tasks as kill -9 would: no heartbeat, no goodbye. A task still
    running BOUND seconds after its cancel fails the test with its stack (a node whose
    task ignores a cancel would never stop)."""
    for task in member._tasks:
        task.cancel()
    _, pending = await asyncio.wait(member._tasks, timeout=BOUND)
    if pending:
        stacks = []
        for task in pending:
            out = io.StringIO()
            task.print_stack(file=out)
            stacks.append(out.getvalue())
        raise AssertionError(f"{len(pending)} task(s) ignored their cancel:\n" + "\n".join(stacks))


def client(server: RedisServer) -> Any:
    return aioredis.Redis.from_url(server.url, decode_responses=True)


def cluster_settings(server: RedisServer, **extra: str) -> config.ClusterSettings:
    lines = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return config.from_text(f"[cluster]\nredis_url = {server.url}\n{lines}").cluster


# -- claims ---------------------------------------------------------------------------


def test_fifty_simultaneous_claims_have_exactly_one_winner(redis_server: RedisServer) -> None:  # noqa: F811
    async def main() -> list[bool]:
        clients = [client(redis_server) for _ in range(5)]
        claims = [NumberClaims(r, Keys(APPID), ttl=30) for r in clients]
        try:
            return list(
                await asyncio.gather(
                    *(claims[i % 5].claim("1000", f"member{i % 5}:inv{i}") for i in range(50))
                )
            )
        finally:
            for r in clients:
                await r.aclose()

    results = asyncio.run(main())
    assert results.count(True) == 1, results


def test_release_is_compare_and_delete(redis_server: RedisServer) -> None:  # noqa: F811
    async def main() -> None:
        r = client(redis_server)
        claims = NumberClaims(r, Keys(APPID), ttl=30)
        assert await claims.claim("1000", "a:1")
        assert not await claims.claim("1000", "b:2")
        assert await claims.claim("1000", "a:1")  # the same token: still ours
        assert not await claims.release("1000", "b:2")  # not b's to free
        assert await claims.holder("1000") == "a:1"
        assert await claims.release("1000", "a:1")
        assert await claims.holder("1000") is None
        assert await claims.claim("1000", "b:2")
        await r.aclose()

    asyncio.run(main())


def test_a_claim_nobody_refreshes_expires(redis_server: RedisServer) -> None:  # noqa: F811
    async def main() -> None:
        r = client(redis_server)
        dead_owner = NumberClaims(r, Keys(APPID), ttl=0.5)
        other = NumberClaims(r, Keys(APPID), ttl=30)
        assert await dead_owner.claim("1001", "dead:1")
        assert not await other.claim("1001", "live:1")
        await until(lambda: other.claim("1001", "live:1"), "the dead owner's claim expired")
        assert await other.holder("1001") == "live:1"
        await r.aclose()

    asyncio.run(main())


def test_refresh_keeps_ours_retakes_vanished_and_reports_lost(redis_server: RedisServer) -> None:  # noqa: F811
    async def main() -> None:
        r = client(redis_server)
        claims = NumberClaims(r, Keys(APPID), ttl=30)
        assert await claims.claim("1000", "a:1")
        assert await claims.claim("1001", "a:2")
        await r.flushdb()  # as a restarted Redis: everything gone
        assert await claims.claim("1001", "b:9")  # another process took one meanwhile
        lost = await claims.refresh({"1000": "a:1", "1001": "a:2"})
        assert lost == ["1001"]
        assert await claims.holder("1000") == "a:1"  # taken back
        assert await claims.holder("1001") == "b:9"
        ttl = await r.pttl(Keys(APPID).claim("1000"))
        assert 0 < ttl <= 30_000
        await r.aclose()

    asyncio.run(main())


# -- registry ---------------------------------------------------------------------------


def test_census_reports_a_member_that_stopped_beating(redis_server: RedisServer) -> None:  # noqa: F811
    async def main() -> None:
        r = client(redis_server)
        keys = Keys(APPID)
        silent = NodeRegistry(r, keys, "silent", ttl=0.5)
        watcher = NodeRegistry(r, keys, "watcher", ttl=30)
        await silent.register({})
        await watcher.register({})
        first = await watcher.census()
        assert first.live == {"silent"} and not first.dead
        census: list[Any] = []

        async def dead() -> bool:
            census.append(await watcher.census())
            return "silent" in census[-1].dead

        await until(dead, "the silent member reported dead")
        assert not await r.sismember(keys.members, "silent")  # removed from the set
        assert (await watcher.census()).dead == frozenset()  # reported once
        assert await watcher.heartbeat()
        await watcher.deregister()
        assert not await watcher.heartbeat()  # gone: must register again
        await r.aclose()

    asyncio.run(main())


# -- presence ---------------------------------------------------------------------------


def test_remote_presence_keeps_the_latest_login() -> None:
    presence = RemotePresence()
    early, late = SessionInfo("a", 10.0), SessionInfo("b", 20.0)
    assert presence.online("alice", late) is True
    assert presence.online("alice", early) is False  # older: ignored
    assert presence.where("alice") == late
    assert presence.offline("alice", early) is False  # not the known one
    assert presence.where("alice") == late
    assert presence.offline("alice", late) is True
    assert presence.where("alice") is None
    presence.online("bob", early)
    presence.online("carol", early)
    presence.online("dave", late)
    assert presence.drop_member("a") == ["bob", "carol"]
    assert presence.where("bob") is None and presence.where("dave") == late
    came, went = presence.replace({"erin": early, "dave": late})
    assert (came, went) == (["erin"], [])
    came, went = presence.replace({})
    assert (came, went) == ([], ["dave", "erin"])
    assert len(presence) == 0 and presence.members() == set()


def test_presence_store_reads_other_members_latest_login(redis_server: RedisServer) -> None:  # noqa: F811
    async def main() -> None:
        r = client(redis_server)
        keys = Keys(APPID)
        a = PresenceStore(r, keys, "a", ttl=30)
        b = PresenceStore(r, keys, "b", ttl=30)
        await a.publish_all({"alice": 10.0, "bob": 10.0})
        await b.publish_all({"alice": 20.0})
        async with r.pipeline(transaction=False) as pipe:
            b.write_ops(pipe, "carol", 21.0)
            await pipe.execute()
        seen_by_c = await PresenceStore(r, keys, "c", ttl=30).read({"a", "b"})
        assert seen_by_c == {
            "alice": SessionInfo("b", 20.0),
            "bob": SessionInfo("a", 10.0),
            "carol": SessionInfo("b", 21.0),
        }
        assert await a.read({"a", "b"}) == {
            "alice": SessionInfo("b", 20.0),
            "carol": SessionInfo("b", 21.0),
        }
        await r.aclose()

    asyncio.run(main())


# -- bus ----------------------------------------------------------------------------------


def test_bus_delivers_to_one_or_all_never_back_to_the_sender(redis_server: RedisServer) -> None:  # noqa: F811
    async def main() -> None:
        r = client(redis_server)
        keys = Keys(APPID)
        buses = {m: MessageBus(r, keys, m) for m in ("a", "b", "c")}
        got: dict[str, list[dict[str, Any]]] = {m: [] for m in buses}
        ready: set[str] = set()

        async def listen(member: str) -> None:
            async for message in buses[member].listen(lambda: ready.add(member)):
                got[member].append(message)

        tasks = [asyncio.create_task(listen(m)) for m in buses]
        await until(lambda: ready == set(buses), "all subscribed")
        await buses["a"].publish(None, {"t": "hello"})
        await buses["a"].publish("b", {"t": "direct", "n": 1})
        await until(lambda: len(got["b"]) == 2 and len(got["c"]) == 1, "messages delivered")
        assert [m["t"] for m in got["b"]] == ["hello", "direct"]
        assert got["b"][1] == {"t": "direct", "n": 1, "from": "a"}
        assert [m["t"] for m in got["c"]] == ["hello"]
        await buses["c"].publish(None, {"t": "last"})  # ordered after the ones above
        await until(lambda: len(got["a"]) == 1, "c's broadcast reached a")
        assert got["a"] == [{"t": "last", "from": "c"}]  # its own two were skipped
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await r.aclose()

    asyncio.run(main())


# -- ClusterNode --------------------------------------------------------------------------


class FakeHub:
    """Records what a node tells the hub."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def remote_session_started(
        self, uid: str, member: str, stamp: float, new: bool, now: float
    ) -> None:
        self.events.append(("started", uid, member, new))

    def remote_session_ended(self, uid: str, now: float, *, report: bool = False) -> None:
        self.events.append(("ended", uid))
        if report:
            self.events.append(("reported_offline", uid))

    def remote_member_gone(self, member: str, now: float) -> None:
        self.events.append(("gone", member))

    def cluster_message(self, sender: str, message: dict[str, Any], now: float) -> None:
        self.events.append(("message", sender, message["t"]))

    def cluster_down(self, now: float) -> None:
        self.events.append(("down",))


@contextlib.asynccontextmanager
async def node(settings: config.ClusterSettings, member: str) -> Any:
    hub = FakeHub()
    n = ClusterNode(settings, APPID, member)
    n.attach(hub, lambda: None)
    await n.start(wait=BOUND)
    assert n.healthy, n.reason
    try:
        yield n, hub
    finally:
        await n.stop()


@pytest.fixture
def fast(redis_server: RedisServer) -> Iterator[config.ClusterSettings]:  # noqa: F811
    yield cluster_settings(redis_server, heartbeat_interval="0.1", claim_ttl="0.5")


def test_nodes_share_sessions_messages_and_leave_cleanly(
    redis_server: RedisServer,  # noqa: F811
    fast: config.ClusterSettings,
) -> None:
    async def main() -> None:
        async with node(fast, "a") as (a, hub_a), node(fast, "b") as (b, hub_b):
            a.session_started("alice", 100.0)
            await until(lambda: b.where("alice") == "a", "b learns alice is on a")
            assert ("started", "alice", "a", True) in hub_b.events
            b.send("a", {"t": "deliver", "inv": "inv-1"})
            await until(lambda: ("message", "b", "deliver") in hub_a.events, "direct message")
            a.session_ended("alice", 100.0)
            await until(lambda: ("ended", "alice") in hub_b.events, "alice's logout")
            assert b.where("alice") is None
            a.session_started("bob", 101.0)
            await until(lambda: b.where("bob") == "a", "bob on a")
            assert await a.claim("1000", "a:inv-2") is True
            assert await b.claim("1000", "b:inv-3") is False
            await a.stop()  # leaves: "bye", keys and claims deleted
            await until(lambda: ("gone", "a") in hub_b.events, "a's departure")
            assert b.where("bob") is None
            assert await b.claim("1000", "b:inv-4") is True  # a released it on leaving

    asyncio.run(main())


def test_a_silent_node_is_dropped_within_the_ttl(
    redis_server: RedisServer,  # noqa: F811
    fast: config.ClusterSettings,
) -> None:
    async def main() -> None:
        async with node(fast, "b") as (b, hub_b):
            a = ClusterNode(fast, APPID, "a")
            a.attach(FakeHub(), lambda: None)
            await a.start(wait=BOUND)
            a.session_started("alice", 100.0)
            assert await a.claim("1000", "a:inv-1") is True
            await until(lambda: b.where("alice") == "a", "b learns alice is on a")
            await kill_9(a)  # no heartbeat, no goodbye
            await until(lambda: ("gone", "a") in hub_b.events, "a found dead")
            assert ("ended", "alice") in hub_b.events
            await until(lambda: b.claim("1000", "b:inv-2"), "a's claim expired")
            await a._redis.aclose()

    asyncio.run(main())


def test_one_survivor_reports_a_dead_nodes_users_offline(
    redis_server: RedisServer,  # noqa: F811
    fast: config.ClusterSettings,
) -> None:
    """Every survivor drops the dead node's users; exactly one reports them offline (so a
    webhook receiver hears user.offline once, not once per process); a clean logout is
    reported by its own node, by none of the others."""

    async def main() -> None:
        async with node(fast, "b") as (b, hub_b), node(fast, "c") as (c, hub_c):
            a = ClusterNode(fast, APPID, "a")
            a.attach(FakeHub(), lambda: None)
            await a.start(wait=BOUND)
            a.session_started("alice", 100.0)
            a.session_started("dave", 100.0)
            a.session_ended("dave", 100.0)  # a clean logout, told by a itself
            await until(lambda: b.where("alice") == "a" and c.where("alice") == "a", "alice on a")
            await kill_9(a)  # no heartbeat, no goodbye
            await until(
                lambda: ("gone", "a") in hub_b.events and ("gone", "a") in hub_c.events,
                "a found dead by both",
            )
            reports = [
                e for hub in (hub_b, hub_c) for e in hub.events if e[0] == "reported_offline"
            ]
            assert reports == [("reported_offline", "alice")]
            assert ("ended", "alice") in hub_b.events and ("ended", "alice") in hub_c.events
            await a._redis.aclose()

    asyncio.run(main())


def test_redis_down_then_back(redis_server: RedisServer) -> None:  # noqa: F811
    settings = cluster_settings(
        redis_server, heartbeat_interval="0.1", claim_ttl="0.5", redis_timeout="0.5"
    )

    async def main() -> None:
        async with node(settings, "a") as (a, _), node(settings, "b") as (b, hub_b):
            a.session_started("alice", 100.0)
            assert await a.claim("1000", "a:inv-1") is True
            await until(lambda: b.where("alice") == "a", "b learns alice is on a")
            await asyncio.to_thread(redis_server.stop)
            await until(lambda: not a.healthy and not b.healthy, "both report Redis down")
            assert a.status()["reason"].startswith("Redis unreachable")
            assert await a.claim("1001", "a:inv-2") is None  # refused, not guessed
            assert b.where("alice") == "a"  # what was known stays while down
            await asyncio.to_thread(redis_server.start)  # empty: no persistence
            await until(lambda: a.healthy and b.healthy, "both joined again")
            # a republished its session and claim into the empty Redis.
            await until(lambda: b.where("alice") == "a", "alice still on a")
            assert await b.claim("1000", "b:inv-3") is False
            assert hub_b.events.count(("ended", "alice")) == 0

    asyncio.run(main())


def test_messages_to_a_member_wait_while_redis_is_down(redis_server: RedisServer) -> None:  # noqa: F811
    """A call's relayed signalling (EndCall, DTMF...) sent while Redis is away goes out,
    in order, once it is back; a message older than HELD_MAX_AGE by then is dropped and
    counted, as is a broadcast (presence is reread on joining)."""
    settings = cluster_settings(
        redis_server, heartbeat_interval="0.1", claim_ttl="0.5", redis_timeout="0.5"
    )
    clock = [1000.0]

    async def main() -> None:
        async with node(settings, "b") as (b, hub_b):
            a = ClusterNode(settings, APPID, "a", clock=lambda: clock[0])
            a.attach(FakeHub(), lambda: None)
            await a.start(wait=BOUND)
            await until(lambda: b.healthy and a.healthy, "both up")
            await asyncio.to_thread(redis_server.stop)
            await until(lambda: not a.healthy, "a finds Redis down")
            a.send("b", {"t": "too-old"})
            clock[0] += HELD_MAX_AGE + 1
            a.send("b", {"t": "end-call"})
            a.send("b", {"t": "dtmf"})
            a.send(None, {"t": "broadcast"})  # type: ignore[arg-type]
            assert a.status()["held_messages"] == 3
            await asyncio.to_thread(redis_server.start)
            await until(lambda: a.healthy and b.healthy, "both joined again")
            await until(lambda: ("message", "a", "dtmf") in hub_b.events, "the held ones")
            got = [e[2] for e in hub_b.events if e[0] == "message" and e[1] == "a"]
            assert got == ["end-call", "dtmf"]  # in order; the old one and the broadcast not
            assert a.status()["held_messages"] == 0 and a.dropped >= 2
            await a.stop()

    asyncio.run(main())
