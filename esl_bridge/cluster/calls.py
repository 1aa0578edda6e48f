"""Every live call of the cluster, for the HTTP API (gateway/api.py) on any process.

A call lives in one process (where its channel is), but with ``run --workers N`` or a load
balancer an API request lands on any process. Each process keeps its live calls in Redis:
the hash ``calls:<member>`` (call id -> the call as the API shows it, JSON), with the same
TTL as the member's liveness key, refreshed by its heartbeat, so a dead process's calls
vanish with it. The writes go through the node's writer (they never hold a call up); a
process that (re)joins writes the whole hash again.

Reading is the member set, then one pipeline of ``EXISTS`` and ``HGETALL`` per member; a
hangup of a call held elsewhere is a bus message to its member (``api_hangup``, node.py).
"""

from __future__ import annotations

import json
from typing import Any

from esl_bridge.cluster.keys import Keys

Record = dict[str, Any]


class CallRecords:
    """This member's calls in Redis, and reading everyone's."""

    def __init__(self, redis: Any, keys: Keys, member: str, ttl: float) -> None:
        self._redis = redis
        self._key = keys.calls(member)
        self._keys = keys
        self.member = member
        self._ttl_ms = max(1, round(ttl * 1000))

    def queue_change(self, pipe: Any, call_id: str, record: Record | None) -> None:
        """Queue on ``pipe`` one call's new record (None: the call ended)."""
        if record is None:
            pipe.hdel(self._key, call_id)
            return
        pipe.hset(self._key, call_id, json.dumps(record, separators=(",", ":")))
        pipe.pexpire(self._key, self._ttl_ms)

    async def rewrite(self, records: dict[str, Record]) -> None:
        """Our hash becomes exactly ``records`` (after a (re)join: Redis may be empty)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key)
            for call_id, record in records.items():
                self.queue_change(pipe, call_id, record)
            await pipe.execute()

    async def keep_alive(self) -> None:
        await self._redis.pexpire(self._key, self._ttl_ms)

    async def everyone(self) -> dict[str, tuple[str, Record]]:
        """call id -> (member, record) of the calls of every live member, ours included.

        The members are read here, not taken from the last heartbeat's census: a process
        that joined since that census would be missed, and a request about its call that
        lands here would get 404 (seen in CI: a call made on B right after B started,
        hung up through A). Live is as for the census (nodes.py): registered and its key
        not expired; read without removing the dead, which the heartbeat does (and reports).
        """
        registered = await self._redis.smembers(self._keys.members)
        owners = sorted({*registered, self.member})
        async with self._redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.exists(self._keys.node(owner))
                pipe.hgetall(self._keys.calls(owner))
            found = await pipe.execute()
        calls: dict[str, tuple[str, Record]] = {}
        for index, owner in enumerate(owners):
            alive, rows = found[2 * index], found[2 * index + 1]
            if not alive and owner != self.member:
                continue
            for call_id, raw in (rows or {}).items():
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    calls[str(call_id)] = (owner, record)
        return calls

    async def drop(self) -> None:
        await self._redis.delete(self._key)
