"""The member registry: which gateway processes are alive.

Each process (a *member*: ``<node_id>-<instance id>``, new at every start) holds
``node:<member>`` with a TTL of ``claim_ttl`` and refreshes it every heartbeat; the set
``members`` lists who registered. A member whose key expired is dead: the first process
to notice removes it from the set, and every process drops what it knew of it (its web
users go offline, its invitations fail). A dead member is so noticed at most
``claim_ttl + heartbeat_interval`` after its last heartbeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from esl_bridge.cluster.keys import Keys


@dataclass(frozen=True)
class Census:
    """One look at the registry: the live members (ours excluded) and the dead ones."""

    live: frozenset[str]
    dead: frozenset[str]


class NodeRegistry:
    def __init__(self, redis: Any, keys: Keys, member: str, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self.member = member
        self._ttl_ms = max(1, round(ttl * 1000))

    async def register(self, info: dict[str, Any]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._keys.node(self.member), json.dumps(info), px=self._ttl_ms)
            pipe.sadd(self._keys.members, self.member)
            await pipe.execute()

    async def heartbeat(self) -> bool:
        """Refresh our key; False when it was gone (Redis restarted, or we were silent
        past the TTL): the caller must register again and republish its state."""
        refreshed = await self._redis.pexpire(self._keys.node(self.member), self._ttl_ms)
        return bool(refreshed)

    async def census(self) -> Census:
        members = sorted(m for m in await self._redis.smembers(self._keys.members))
        others = [m for m in members if m != self.member]
        if not others:
            return Census(frozenset(), frozenset())
        alive = await self._redis.mget([self._keys.node(m) for m in others])
        live = frozenset(m for m, v in zip(others, alive, strict=True) if v is not None)
        dead = frozenset(others) - live
        if dead:
            await self._redis.srem(self._keys.members, *dead)
        return Census(live, dead)

    async def obituary(self, member: str) -> bool:
        """True for exactly one of the processes that find ``member`` dead: that one
        reports its users offline. Member ids are new at every start, so the key is
        never reused; it expires after an hour."""
        written = await self._redis.set(self._keys.obituary(member), self.member, nx=True, ex=3600)
        return bool(written)

    async def deregister(self) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._keys.node(self.member))
            pipe.srem(self._keys.members, self.member)
            await pipe.execute()
