"""What a conference leg's admission in Redis costs (issue 12 with issue 14's rooms).

In a cluster every join, conference invitation and dial-in waits for one admission
script (esl_bridge/cluster/rooms.py) before its call is made, and every leg's end runs the
release script. This starts its own throwaway redis-server on loopback
(tests/support/redis_server.py), then admits and releases ``--n`` legs one after the other
over 20 rooms (each cycle makes the room, with its dial-in code, and deletes it again:
the dearer path) and prints::

    cluster_rooms: admit p50_ms=.. p99_ms=.. | release p50_ms=.. p99_ms=.. (n=..)

Run from the repository root: ``python3 benchmarks/cluster_rooms.py [--n 500]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import redis.asyncio as aioredis  # noqa: E402
from support.redis_server import RedisServer  # noqa: E402

from esl_bridge.cluster.keys import Keys  # noqa: E402
from esl_bridge.cluster.rooms import RoomShares  # noqa: E402
from esl_bridge.core.conference import code_seed, room_name  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(len(ordered) * share) - 1)]


async def measure(url: str, n: int) -> str:
    redis = aioredis.Redis.from_url(url, decode_responses=True)
    rooms = RoomShares(redis, Keys("bench"), ttl=30)
    admits: list[float] = []
    releases: list[float] = []
    try:
        for i in range(n):
            chan_id = f"room{i % 20}"
            name = room_name("bench", chan_id)
            token = f"bench:{i}"
            start = time.perf_counter()
            admitted = await rooms.admit(
                name,
                chan_id,
                "alice",
                token,
                max_members=50,
                max_rooms=20,
                code_seed=code_seed(name),
            )
            middle = time.perf_counter()
            await rooms.release(name, token)
            end = time.perf_counter()
            assert not isinstance(admitted, str), admitted
            admits.append((middle - start) * 1000)
            releases.append((end - middle) * 1000)
    finally:
        await redis.aclose()
    return (
        f"cluster_rooms: admit p50_ms={statistics.median(admits):.2f} "
        f"p99_ms={percentile(admits, 0.99):.2f} | release "
        f"p50_ms={statistics.median(releases):.2f} p99_ms={percentile(releases, 0.99):.2f} "
        f"(n={n})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="legs admitted and released")
    args = parser.parse_args()
    server = RedisServer().start()
    try:
        print(asyncio.run(measure(server.url, args.n)))
    finally:
        server.close()


if __name__ == "__main__":
    main()
