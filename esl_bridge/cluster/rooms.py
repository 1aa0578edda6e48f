"""Conference rooms shared by the processes of a cluster (issue 12 with issue 14's rooms).

A room is ``room_name(appid, ChanId)`` on every process (core/conference.py), so the
switch mixes the members of all processes in one ``mod_conference`` room. What each
process's room table decided alone before is decided here, in Redis, atomically (Lua):

* ``room:<name>``, a hash: the moderator (the uid of the first leg), the ChanId, the
  dial-in code and ``ending`` (ConfEnd was asked);
* ``room-legs:<name>``, a sorted set: one entry per leg a gateway put in the room (a web
  member, an invited number, a dial-in phone), ``<member>:<leg id>``, scored by its
  deadline in Redis's own milliseconds (``TIME``, so processes' clocks never matter). The
  owner's heartbeat pushes the deadline ``claim_ttl`` ahead; a dead process's legs drop
  out when their deadline passes, as its number claims do (claims.py). The count of live
  entries is what ``[conference] max_members`` limits, cluster-wide;
* ``rooms``, a sorted set of the live rooms' names scored the same way: what
  ``max_rooms_per_appid`` limits;
* ``room-who:<name>``, a hash: channel uuid -> number of each phone a gateway dialled or
  took into the room (the switch shows an invited phone's contact, not its number), so
  that every process lists it under its number;
* ``room-code:<code>`` -> the room's name, set with ``SET NX``: a dial-in code is never
  given to two live rooms. The first code tried is the room name's hash (as a single
  process does), so a room usually keeps one number whichever process makes it.

The keys carry a TTL of ``claim_ttl`` too, refreshed with the legs: whatever the last
process leaves behind when it dies expires. Releasing a room's last leg deletes it all.

These scripts touch keys they derive from arguments (the code keys), so they assume one
Redis, not Redis Cluster; the rest of cluster/ does too (pipelines over several keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from esl_bridge.cluster.keys import Keys

# KEYS: room, legs, rooms, who. ARGV: 1 name, 2 chan id, 3 uid, 4 leg token, 5 max members,
# 6 max rooms, 7 ttl ms, 8 code seed ('' : dial-in off), 9 code key prefix,
# 10 '1': join only (a dial-in: never create the room).
# Returns {'ok', moderator, code, created '1'/'0'} or {reason}.
_ADMIT = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[7])
local deadline = now + ttl
redis.call('zremrangebyscore', KEYS[3], '-inf', now)
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
local live = redis.call('zcard', KEYS[2])
if live > 0 and redis.call('exists', KEYS[1]) == 1 then
    if redis.call('hget', KEYS[1], 'ending') == '1' then
        return {'room_full'}
    end
    if not redis.call('zscore', KEYS[2], ARGV[4]) and live >= tonumber(ARGV[5]) then
        return {'room_full'}
    end
    redis.call('zadd', KEYS[2], deadline, ARGV[4])
    redis.call('pexpire', KEYS[2], ttl)
    redis.call('pexpire', KEYS[1], ttl)
    redis.call('pexpire', KEYS[4], ttl)
    redis.call('zadd', KEYS[3], 'GT', deadline, ARGV[1])
    local room = redis.call('hmget', KEYS[1], 'moderator', 'code')
    if room[2] and room[2] ~= '' then
        redis.call('pexpire', ARGV[9] .. room[2], ttl)
    end
    return {'ok', room[1] or '', room[2] or '', '0'}
end
if ARGV[10] == '1' then
    return {'no_room'}
end
-- A new room, or one whose every leg expired (the processes that held it died).
local old = redis.call('hget', KEYS[1], 'code')
if old and old ~= '' and redis.call('get', ARGV[9] .. old) == ARGV[1] then
    redis.call('del', ARGV[9] .. old)
end
redis.call('del', KEYS[1], KEYS[2], KEYS[4])
redis.call('zrem', KEYS[3], ARGV[1])
if redis.call('zcard', KEYS[3]) >= tonumber(ARGV[6]) then
    return {'too_many_rooms'}
end
local code = ''
if ARGV[8] ~= '' then
    local seed = tonumber(ARGV[8])
    local digits = 4
    while code == '' do
        local space = 10 ^ digits
        for step = 0, space - 1 do
            local candidate = string.format('%0' .. digits .. 'd', (seed + step) % space)
            if redis.call('set', ARGV[9] .. candidate, ARGV[1], 'NX', 'PX', ttl) then
                code = candidate
                break
            end
        end
        digits = digits + 1
    end
end
redis.call('hset', KEYS[1], 'moderator', ARGV[3], 'chan_id', ARGV[2], 'code', code,
           'ending', '0')
redis.call('pexpire', KEYS[1], ttl)
redis.call('zadd', KEYS[2], deadline, ARGV[4])
redis.call('pexpire', KEYS[2], ttl)
redis.call('zadd', KEYS[3], deadline, ARGV[1])
return {'ok', ARGV[3], code, '1'}
"""

# KEYS: room, legs, rooms, who. ARGV: 1 name, 2 leg token, 3 code key prefix.
# Drops the leg; the room's last live leg takes the room (and its code) with it.
_RELEASE = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('zrem', KEYS[2], ARGV[2])
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
if redis.call('zcard', KEYS[2]) > 0 then
    return 0
end
local code = redis.call('hget', KEYS[1], 'code')
if code and code ~= '' and redis.call('get', ARGV[3] .. code) == ARGV[1] then
    redis.call('del', ARGV[3] .. code)
end
redis.call('del', KEYS[1], KEYS[2], KEYS[4])
redis.call('zrem', KEYS[3], ARGV[1])
return 1
"""

# KEYS: room, legs, rooms, who. ARGV: 1 ttl ms, 2 name, 3 chan id, 4 moderator, 5 code,
# 6 code key prefix, 7.. our leg tokens in the room. Pushes our legs' deadlines ahead;
# puts back what a restarted (emptied) Redis lost: the room as we know it, its code if
# no other room took it meanwhile.
_REFRESH = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local deadline = now + ttl
for i = 7, #ARGV do
    redis.call('zadd', KEYS[2], deadline, ARGV[i])
end
redis.call('pexpire', KEYS[2], ttl)
if redis.call('exists', KEYS[1]) == 0 then
    redis.call('hset', KEYS[1], 'moderator', ARGV[4], 'chan_id', ARGV[3], 'code', ARGV[5],
               'ending', '0')
end
redis.call('pexpire', KEYS[1], ttl)
redis.call('pexpire', KEYS[4], ttl)
redis.call('zadd', KEYS[3], 'GT', deadline, ARGV[2])
if ARGV[5] ~= '' then
    local key = ARGV[6] .. ARGV[5]
    local holder = redis.call('get', key)
    if not holder then
        redis.call('set', key, ARGV[2], 'PX', ttl)
    elseif holder == ARGV[2] then
        redis.call('pexpire', key, ttl)
    end
end
return 1
"""


@dataclass(frozen=True)
class Admission:
    """A leg was admitted into a room: the room's moderator and code, cluster-wide."""

    moderator: str
    code: str
    created: bool


@dataclass(frozen=True)
class RoomByCode:
    name: str
    chan_id: str


@dataclass
class HeldRoom:
    """What this process keeps in a room: its legs' tokens, and the room as known."""

    chan_id: str
    moderator: str
    code: str
    tokens: set[str]


class RoomShares:
    def __init__(self, redis: Any, keys: Keys, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = max(1, round(ttl * 1000))
        self._admit = redis.register_script(_ADMIT)
        self._release = redis.register_script(_RELEASE)
        self._refresh = redis.register_script(_REFRESH)

    def _room_keys(self, name: str) -> list[str]:
        keys = self._keys
        return [keys.room(name), keys.room_legs(name), keys.rooms, keys.room_who(name)]

    async def admit(
        self,
        name: str,
        chan_id: str,
        uid: str,
        token: str,
        *,
        max_members: int,
        max_rooms: int,
        code_seed: int | None,
        join_only: bool = False,
    ) -> Admission | str:
        """Admit leg ``token`` of ``uid`` into room ``name`` (creating it, ``uid`` its
        moderator, unless ``join_only``): an ``Admission`` or the refusal reason
        (room_full, too_many_rooms, no_room)."""
        reply = await self._admit(
            keys=self._room_keys(name),
            args=[
                name,
                chan_id,
                uid,
                token,
                max_members,
                max_rooms,
                self._ttl_ms,
                "" if code_seed is None else str(code_seed),
                self._keys.room_code_prefix,
                "1" if join_only else "0",
            ],
        )
        words = [str(w) for w in reply]
        if words[0] != "ok":
            return words[0]
        return Admission(moderator=words[1], code=words[2], created=words[3] == "1")

    async def release(self, name: str, token: str) -> bool:
        """Drop leg ``token``; True when it was the room's last (the room is gone)."""
        args = [name, token, self._keys.room_code_prefix]
        return bool(await self._release(keys=self._room_keys(name), args=args))

    async def refresh(self, held: dict[str, HeldRoom]) -> None:
        for name, room in sorted(held.items()):
            if not room.tokens:
                continue
            await self._refresh(
                keys=self._room_keys(name),
                args=[
                    self._ttl_ms,
                    name,
                    room.chan_id,
                    room.moderator,
                    room.code,
                    self._keys.room_code_prefix,
                    *sorted(room.tokens),
                ],
            )

    async def by_code(self, code: str) -> RoomByCode | None:
        """The live room whose dial-in code is ``code``, if any."""
        name = await self._redis.get(self._keys.room_code_prefix + code)
        if name is None:
            return None
        chan_id = await self._redis.hget(self._keys.room(str(name)), "chan_id")
        if chan_id is None:
            return None
        return RoomByCode(str(name), str(chan_id))

    async def set_who(self, name: str, uuid: str, number: str) -> None:
        """Phone channel ``uuid`` in room ``name`` is ``number``."""
        key = self._keys.room_who(name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, uuid, number)
            pipe.pexpire(key, self._ttl_ms)
            await pipe.execute()

    async def who(self, name: str) -> dict[str, str]:
        """Channel uuid -> number of the phones in room ``name``."""
        found = await self._redis.hgetall(self._keys.room_who(name))
        return {str(k): str(v) for k, v in (found or {}).items()}

    async def mark_ending(self, name: str) -> None:
        """ConfEnd: no new leg is admitted (the room goes once its last leg is released)."""
        key = self._keys.room(name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, "ending", "1")
            pipe.pexpire(key, self._ttl_ms)  # never outlives its legs' last refresh
            await pipe.execute()
