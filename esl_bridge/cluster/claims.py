"""acc_rule numbers claimed cluster-wide: one call per number in the whole cluster.

``claim:<number>`` holds the owner's token (``<member>:<invitation>``), set with
``SET NX PX claim_ttl``: of any number of simultaneous claims exactly one succeeds. The
owner's heartbeat refreshes its claims (``refresh``); a process that dies stops
refreshing and its numbers are free again at most ``claim_ttl`` after its last
heartbeat. Release is compare-and-delete, so a late release never frees a claim that
expired and was taken by another process meanwhile.
"""

from __future__ import annotations

from typing import Any

from esl_bridge.cluster.keys import Keys

# KEYS[1] claim key; ARGV[1] token. Delete only our own claim.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""

# KEYS: claim keys; ARGV[1] ttl ms, ARGV[2..] tokens (same order). Extend our claims;
# take back one that vanished (Redis restarted); report the ones another holds (lost).
_REFRESH = """
local lost = {}
for i, key in ipairs(KEYS) do
    local token = ARGV[i + 1]
    local held = redis.call('get', key)
    if held == token then
        redis.call('pexpire', key, ARGV[1])
    elseif not held then
        redis.call('set', key, token, 'PX', ARGV[1])
    else
        table.insert(lost, key)
    end
end
return lost
"""


class NumberClaims:
    def __init__(self, redis: Any, keys: Keys, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl_ms = max(1, round(ttl * 1000))
        self._release = redis.register_script(_RELEASE)
        self._refresh = redis.register_script(_REFRESH)

    async def claim(self, number: str, token: str) -> bool:
        """True if ``number`` is ours now (or was already, under this token)."""
        key = self._keys.claim(number)
        if await self._redis.set(key, token, nx=True, px=self._ttl_ms):
            return True
        return bool(await self._redis.get(key) == token)

    async def release(self, number: str, token: str) -> bool:
        """Free ``number`` if ``token`` holds it; False if it did not (nothing changes)."""
        return bool(await self._release(keys=[self._keys.claim(number)], args=[token]))

    async def holder(self, number: str) -> str | None:
        value = await self._redis.get(self._keys.claim(number))
        return None if value is None else str(value)

    async def refresh(self, held: dict[str, str]) -> list[str]:
        """Extend every claim of ``held`` (number -> token); the numbers now held by
        another token (lost while Redis was away)."""
        if not held:
            return []
        numbers = sorted(held)
        keys = [self._keys.claim(n) for n in numbers]
        lost_keys = await self._refresh(keys=keys, args=[self._ttl_ms, *(held[n] for n in numbers)])
        by_key = dict(zip(keys, numbers, strict=True))
        return [by_key[k] for k in lost_keys]
