"""Conference rooms in Redis (esl_bridge/cluster/rooms.py) against a real, throwaway
redis-server: one moderator and one dial-in code per room whoever asks first, max_members
exactly under a race of admissions from several clients, max_rooms_per_appid, a code
never given to two live rooms, a dead process's legs dropping out once their deadline
passes (its room with them when it was alone), release of the last leg deleting the
room, a join-only admission (a dial-in) never making a room, ConfEnd refusing new legs,
and a refresh putting back what an emptied Redis lost.

Nothing waits on the clock: an expiry is awaited as the admission it allows (bounded).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from support.redis_server import RedisServer, redis_server  # noqa: F401
from test_cluster_redis import client, until

from esl_bridge.cluster.keys import Keys
from esl_bridge.cluster.rooms import Admission, HeldRoom, RoomShares
from esl_bridge.core.conference import code_seed, room_name

APPID = "unit"
KEYS = Keys(APPID)
NAME = room_name(APPID, "room1")


def admit(
    rooms: RoomShares,
    token: str,
    uid: str = "alice",
    name: str = NAME,
    *,
    max_members: int = 50,
    max_rooms: int = 20,
    join_only: bool = False,
) -> Any:
    return rooms.admit(
        name,
        name.rsplit("-", 1)[-1],
        uid,
        token,
        max_members=max_members,
        max_rooms=max_rooms,
        code_seed=code_seed(name),
        join_only=join_only,
    )


def test_a_race_of_admissions_keeps_max_members_and_one_moderator(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async def main() -> list[Any]:
        clients = [client(redis_server) for _ in range(4)]
        shares = [RoomShares(r, KEYS, ttl=30) for r in clients]
        try:
            return list(
                await asyncio.gather(
                    *(
                        admit(shares[i % 4], f"m{i % 4}:leg{i}", f"user{i}", max_members=5)
                        for i in range(40)
                    )
                )
            )
        finally:
            for r in clients:
                await r.aclose()

    results = asyncio.run(main())
    admitted = [r for r in results if isinstance(r, Admission)]
    assert len(admitted) == 5, results
    assert [r for r in results if not isinstance(r, Admission)] == ["room_full"] * 35
    assert sum(a.created for a in admitted) == 1, admitted
    assert len({(a.moderator, a.code) for a in admitted}) == 1, admitted
    [creator] = [a for a in admitted if a.created]
    assert creator.code.isdigit() and len(creator.code) == 4, creator


def test_rooms_per_appid_codes_unique_release_and_join_only(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async def main() -> None:
        r = client(redis_server)
        rooms = RoomShares(r, KEYS, ttl=30)
        try:
            # A dial-in never makes a room.
            assert await admit(rooms, "a:1", "1001", join_only=True) == "no_room"
            first = await admit(rooms, "a:1", max_rooms=2)
            assert isinstance(first, Admission) and first.created
            assert (await rooms.by_code(first.code)).name == NAME  # type: ignore[union-attr]
            # Another room whose name hashes to the same first code gets another code.
            other = room_name(APPID, "room2")
            await r.set(KEYS.room_code_prefix + f"{code_seed(other) % 10000:04d}", "someone")
            second = await admit(rooms, "b:1", "bob", other, max_rooms=2)
            assert isinstance(second, Admission)
            assert second.code != f"{code_seed(other) % 10000:04d}"
            assert second.code != first.code
            third = room_name(APPID, "room3")
            assert await admit(rooms, "c:1", "carol", third, max_rooms=2) == "too_many_rooms"
            # A second leg joins the first room; the room stays until its last leg goes.
            joined = await admit(rooms, "b:2", "1002", join_only=True)
            assert joined == Admission("alice", first.code, False), joined
            assert await rooms.release(NAME, "a:1") is False
            assert await rooms.by_code(first.code) is not None
            assert await rooms.release(NAME, "b:2") is True
            assert await rooms.by_code(first.code) is None
            assert not await r.exists(KEYS.room(NAME), KEYS.room_legs(NAME))
            # Now a room of room3 fits.
            assert isinstance(await admit(rooms, "c:1", "carol", third, max_rooms=2), Admission)
            # ConfEnd: no leg is admitted any more.
            await rooms.mark_ending(third)
            assert await admit(rooms, "c:2", "dave", third) == "room_full"
        finally:
            await r.aclose()

    asyncio.run(main())


def test_a_dead_process_legs_expire_and_a_refresh_restores_an_emptied_redis(
    redis_server: RedisServer,  # noqa: F811
) -> None:
    async def main() -> None:
        r = client(redis_server)
        short = RoomShares(r, KEYS, ttl=0.3)  # the process that dies: never refreshed
        rooms = RoomShares(r, KEYS, ttl=30)
        try:
            dead = await admit(short, "dead:1", "bob", max_members=2)
            assert isinstance(dead, Admission) and dead.created
            assert isinstance(await admit(rooms, "live:1", "alice", max_members=2), Admission)
            assert await admit(rooms, "live:2", "carol", max_members=2) == "room_full"
            # bob's process stopped refreshing: his place frees once its deadline passed.

            async def carol_in() -> bool:
                got = await admit(rooms, "live:2", "carol", max_members=2)
                return isinstance(got, Admission)

            await until(carol_in, "the dead process's leg dropped out")
            # The room went on: same moderator (bob: not replaced), same code.
            again = await admit(rooms, "live:2", "carol", max_members=2)
            assert again == Admission("bob", dead.code, False), again
            # A room whose only legs were the dead process's is made anew by the next one.
            lone = room_name(APPID, "lone")
            assert isinstance(await admit(short, "dead:2", "bob", lone), Admission)

            tries = itertools.count()

            async def made_anew() -> bool:
                token = f"live:try{next(tries)}"
                got = await admit(rooms, token, "dave", lone)
                if isinstance(got, Admission) and not got.created:
                    await rooms.release(lone, token)  # bob's leg still there: try again
                return isinstance(got, Admission) and got.created

            await until(made_anew, "a room of a dead process only made anew")
            # Redis emptied (a restart without persistence): the refresh puts it back.
            await r.flushall()
            held = {NAME: HeldRoom("room1", "bob", dead.code, {"live:1", "live:2"})}
            await rooms.refresh(held)
            back = await admit(rooms, "live:4", "erin", max_members=3)
            assert back == Admission("bob", dead.code, False), back
            assert await admit(rooms, "live:5", "fred", max_members=3) == "room_full"
            assert (await rooms.by_code(dead.code)).name == NAME  # type: ignore[union-attr]
        finally:
            await r.aclose()

    asyncio.run(main())
