"""Where each web user's session lives, cluster-wide.

In Redis: a hash ``sessions:<member>`` (uid -> login stamp) per process, with the same
TTL as its liveness key, so a dead process's sessions vanish with it. Changes are also
broadcast on the bus (``online``/``offline``) so the others learn them at once.

``RemotePresence`` is this process's copy of the other processes' sessions: the hub
asks it "is this uid online elsewhere, and where?" without waiting on Redis. It is
rebuilt from the hashes when this process (re)connects, and kept current by the bus
messages and the heartbeat's census of members.

The login stamp (wall-clock time of the login) orders two logins of one uid on two
processes: the later one takes the session over, and both processes agree which is
later because they compare the same (stamp, member) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esl_bridge.cluster.keys import Keys


@dataclass(frozen=True)
class SessionInfo:
    member: str
    stamp: float

    def later_than(self, other: SessionInfo) -> bool:
        return (self.stamp, self.member) > (other.stamp, other.member)


class RemotePresence:
    """uid -> the session it has on another member. No I/O: the hub reads it directly."""

    def __init__(self) -> None:
        self._by_uid: dict[str, SessionInfo] = {}
        self._by_member: dict[str, set[str]] = {}

    def __len__(self) -> int:
        return len(self._by_uid)

    def where(self, uid: str) -> SessionInfo | None:
        return self._by_uid.get(uid)

    def online(self, uid: str, info: SessionInfo) -> bool:
        """Record ``uid`` on ``info.member``; True when it was not online elsewhere
        before. An older login than the one known is ignored (messages can cross)."""
        known = self._by_uid.get(uid)
        if known is not None:
            if not info.later_than(known) and known != info:
                return False
            self._forget(uid, known)
        self._by_uid[uid] = info
        self._by_member.setdefault(info.member, set()).add(uid)
        return known is None

    def offline(self, uid: str, info: SessionInfo) -> bool:
        """``uid``'s session ``info`` ended; True when that was the one known."""
        if self._by_uid.get(uid) != info:
            return False
        self._forget(uid, info)
        return True

    def drop_member(self, member: str) -> list[str]:
        """Forget every session of ``member`` (it died or left); the uids it had."""
        uids = sorted(self._by_member.pop(member, set()))
        for uid in uids:
            if self._by_uid.get(uid, SessionInfo("", 0.0)).member == member:
                del self._by_uid[uid]
        return uids

    def members(self) -> set[str]:
        return set(self._by_member)

    def sessions_of(self, member: str) -> dict[str, SessionInfo]:
        return {uid: self._by_uid[uid] for uid in self._by_member.get(member, ())}

    def replace(self, snapshot: dict[str, SessionInfo]) -> tuple[list[str], list[str]]:
        """Take ``snapshot`` as the whole truth; the uids that came online and went
        offline compared with what was known."""
        before = set(self._by_uid)
        after = set(snapshot)
        self._by_uid = {}
        self._by_member = {}
        for uid, info in snapshot.items():
            self.online(uid, info)
        return sorted(after - before), sorted(before - after)

    def _forget(self, uid: str, info: SessionInfo) -> None:
        del self._by_uid[uid]
        uids = self._by_member.get(info.member)
        if uids is not None:
            uids.discard(uid)
            if not uids:
                del self._by_member[info.member]


class PresenceStore:
    """The Redis side: this member's hash, and reading the others'."""

    def __init__(self, redis: Any, keys: Keys, member: str, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self.member = member
        self._ttl_ms = max(1, round(ttl * 1000))

    def write_ops(self, pipe: Any, uid: str, stamp: float | None) -> None:
        """Queue on ``pipe`` the write of one change (``stamp`` None: logged out)."""
        key = self._keys.sessions(self.member)
        if stamp is None:
            pipe.hdel(key, uid)
        else:
            pipe.hset(key, uid, repr(stamp))
            pipe.pexpire(key, self._ttl_ms)

    async def publish_all(self, sessions: dict[str, float]) -> None:
        """Replace our hash with ``sessions`` (after a (re)connect)."""
        key = self._keys.sessions(self.member)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if sessions:
                pipe.hset(key, mapping={uid: repr(stamp) for uid, stamp in sessions.items()})
                pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def refresh(self) -> None:
        await self._redis.pexpire(self._keys.sessions(self.member), self._ttl_ms)

    async def read(self, members: set[str] | frozenset[str]) -> dict[str, SessionInfo]:
        """The sessions of ``members`` (our own excluded), latest login per uid."""
        found: dict[str, SessionInfo] = {}
        others = sorted(m for m in members if m != self.member)
        if not others:
            return found
        async with self._redis.pipeline(transaction=False) as pipe:
            for member in others:
                pipe.hgetall(self._keys.sessions(member))
            hashes = await pipe.execute()
        for member, fields in zip(others, hashes, strict=True):
            for uid, raw in (fields or {}).items():
                try:
                    info = SessionInfo(member, float(raw))
                except ValueError:
                    continue
                known = found.get(uid)
                if known is None or info.later_than(known):
                    found[uid] = info
        return found

    async def forget(self) -> None:
        await self._redis.delete(self._keys.sessions(self.member))
