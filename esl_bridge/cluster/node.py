"""``ClusterNode``: this process's membership of the cluster, on the asyncio loop.

It owns the Redis client and three tasks:

* the heartbeat: joins (register, publish our sessions, read everyone's, refresh our
  claims), then every ``heartbeat_interval`` refreshes our keys and claims and takes
  the census of members (a dead one's users go offline here);
* the writer: one pipeline at a time of what the hub handed over (session changes,
  messages to other members), in order; the hub never waits for it;
* the listener: the bus (pub/sub), each message handed to the hub on this loop.

When Redis cannot be reached the node is *down* (``healthy`` False, ``reason`` says
why): calls in progress go on, new calls are refused by the controller (no number can
be claimed), and the heartbeat keeps trying; once Redis answers again the node joins
again, republishes its state (a restarted Redis is empty) and sends the messages to
other members that waited meanwhile (``HELD_MAX``, ``HELD_MAX_AGE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from esl_bridge.cluster.bus import Message, MessageBus
from esl_bridge.cluster.calls import CallRecords, Record
from esl_bridge.cluster.claims import NumberClaims
from esl_bridge.cluster.keys import Keys
from esl_bridge.cluster.nodes import NodeRegistry
from esl_bridge.cluster.presence import PresenceStore, RemotePresence, SessionInfo
from esl_bridge.cluster.rooms import Admission, HeldRoom, RoomByCode, RoomShares
from esl_bridge.config import ClusterSettings, masked_redis_url
from esl_bridge.logs import get_logger

log = get_logger("cluster")

#: Pending writes kept while Redis is slow; past it, messages are dropped (and counted).
MAX_PENDING = 10_000
#: While Redis is away, messages to one member (a call's signalling relayed between the
#: browser's process and the call's: EndCall, DTMF, invitation answers) wait, at most
#: this many and at most this many seconds, and go out in order once the node has joined
#: again. Broadcasts are not kept: presence is reread on joining.
HELD_MAX = 1000
HELD_MAX_AGE = 60.0
#: Every this many heartbeats the whole presence directory is read again, repairing
#: anything a lost pub/sub message left wrong.
RESYNC_EVERY = 10

_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


class ClusterHub(Protocol):
    """What the node tells the hub (esl_bridge/signaling/hub.py); each call is
    synchronous and made on the loop, like a WebSocket frame."""

    def remote_session_started(
        self, uid: str, member: str, stamp: float, new: bool, now: float
    ) -> None: ...

    def remote_session_ended(self, uid: str, now: float, *, report: bool = False) -> None: ...

    def remote_member_gone(self, member: str, now: float) -> None: ...

    def cluster_message(self, sender: str, message: Message, now: float) -> None: ...

    def cluster_down(self, now: float) -> None: ...


class ClusterNode:
    def __init__(
        self,
        settings: ClusterSettings,
        appid: str,
        member: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        redis_client: Any = None,
    ) -> None:
        self.settings = settings
        self.appid = appid
        self.member = member
        self.clock = clock
        self.keys = Keys(appid)
        self.presence = RemotePresence()
        self._redis = redis_client or aioredis.Redis.from_url(
            settings.redis_url,
            decode_responses=True,
            socket_timeout=settings.redis_timeout,
            socket_connect_timeout=settings.redis_timeout,
            # One immediate retry on a refused or closed connection only: a pooled
            # connection that a restarted Redis closed fails once, then a fresh one
            # works. No retry on a timeout: the heartbeat is the retry; never stall a claim.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
        ttl = settings.claim_ttl
        self.registry = NodeRegistry(self._redis, self.keys, member, ttl)
        self.store = PresenceStore(self._redis, self.keys, member, ttl)
        self.claims = NumberClaims(self._redis, self.keys, ttl)
        self.bus = MessageBus(self._redis, self.keys, member)
        self.calls = CallRecords(self._redis, self.keys, member, ttl)
        self.rooms = RoomShares(self._redis, self.keys, ttl)
        self._rooms: dict[str, HeldRoom] = {}  # room name -> our legs in it
        # A refresh never puts back a leg whose release was under way: one at a time.
        self._room_lock = asyncio.Lock()
        self._calls: dict[str, Record] = {}  # call id -> record, our live calls
        self._live: frozenset[str] = frozenset()  # the other live members, last census
        # Bus message types handled outside the hub (the API's "api_hangup").
        self.handlers: dict[str, Callable[[str, Message], None]] = {}
        self._hub: ClusterHub | None = None
        self._kick: Callable[[], None] = lambda: None
        self._local: dict[str, float] = {}  # uid -> login stamp of our web sessions
        self._held: dict[str, str] = {}  # number -> claim token, our live claims
        self._pending: deque[tuple[str, Any, Any]] = deque()
        self._waiting: deque[tuple[float, str, Message]] = deque()  # held while down
        self._wake_writer = asyncio.Event()
        # Writes queued so far, and those the writer has finished (sent, or failed with
        # Redis): written() waits for the second to reach the first.
        self._writes_queued = 0
        self._writes_done = 0
        self._writes_done_changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._releases: set[asyncio.Task[None]] = set()
        self._joined = False
        self._resync = False
        self._beats = 0
        self._grace_until = 0.0  # after a (re)join: members not back yet are kept till then
        self._stopping = False
        self.reason = "not connected to Redis yet"
        self.dropped = 0  # messages dropped (Redis down or too slow)

    # -- life ----------------------------------------------------------------------------

    def attach(self, hub: ClusterHub, kick: Callable[[], None]) -> None:
        self._hub = hub
        self._kick = kick

    async def start(self, wait: float | None = None) -> None:
        """Start the tasks; with ``wait``, give the first join that long (a gateway
        starts even when Redis is down: it is then unhealthy until Redis answers)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._heartbeat_loop(), name="cluster-heartbeat"),
            loop.create_task(self._writer_loop(), name="cluster-writer"),
            loop.create_task(self._listen_loop(), name="cluster-listener"),
        ]
        log.info(
            "cluster.starting",
            member=self.member,
            redis=masked_redis_url(self.settings.redis_url),
            heartbeat_interval=self.settings.heartbeat_interval,
            claim_ttl=self.settings.claim_ttl,
        )
        if wait:
            deadline = self.clock() + wait
            while not self._joined and self.clock() < deadline:
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        """Leave cleanly: tell the others, delete our keys, release our claims."""
        self._stopping = True
        # Releases under way finish first (bounded by their own timeout).
        await asyncio.gather(*self._releases, return_exceptions=True)
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()  # again for a task whose cancel was turned into a failure
            _, pending = await asyncio.wait(pending, timeout=1.0)
        if self._joined:
            try:
                async with asyncio.timeout(self.settings.redis_timeout * 2):
                    await self.bus.publish(None, {"t": "bye"})
                    for number, token in list(self._held.items()):
                        await self.claims.release(number, token)
                    for name, room in list(self._rooms.items()):
                        for token in sorted(room.tokens):
                            await self.rooms.release(name, token)
                    await self.calls.drop()
                    await self.store.forget()
                    await self.registry.deregister()
                log.info("cluster.left", member=self.member)
            except _FAILURES as exc:
                log.warning("cluster.leave_failed", member=self.member, error=_describe(exc))
        self._joined = False
        with contextlib.suppress(*_FAILURES):
            await self._redis.aclose()

    @property
    def healthy(self) -> bool:
        return self._joined

    def status(self) -> dict[str, Any]:
        return {
            "state": "up" if self._joined else "down",
            "member": self.member,
            "reason": None if self._joined else self.reason,
            "remote_sessions": len(self.presence),
            "members": len(self.presence.members()),
            "claims": len(self._held),
            "room_legs": sum(len(r.tokens) for r in self._rooms.values()),
            "dropped_messages": self.dropped,
            "held_messages": len(self._waiting),
        }

    # -- the hub's side (synchronous, never waits) -----------------------------------------

    def where(self, uid: str) -> str | None:
        info = self.presence.where(uid)
        return None if info is None else info.member

    def session_started(self, uid: str, stamp: float) -> None:
        self._local[uid] = stamp
        self._queue("session", uid, stamp)
        self._queue("publish", None, {"t": "online", "uid": uid, "stamp": stamp})

    def session_ended(self, uid: str, stamp: float, *, broadcast: bool = True) -> None:
        if self._local.get(uid) != stamp:
            return  # a newer session of this uid is ours now
        del self._local[uid]
        self._queue("session", uid, None)
        if broadcast:
            self._queue("publish", None, {"t": "offline", "uid": uid, "stamp": stamp})

    def send(self, member: str, message: Message) -> None:
        self._queue("publish", member, message)

    def _queue(self, kind: str, a: Any, b: Any) -> None:
        if kind == "publish" and not self._joined:
            self._hold(a, b)
            return
        if len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            log.warning("cluster.queue_full", pending=len(self._pending))
            return
        self._enqueue(kind, a, b)
        self._wake_writer.set()

    def _enqueue(self, kind: str, a: Any, b: Any) -> None:
        """The one way into the writer's queue: written() counts what went in here."""
        self._pending.append((kind, a, b))
        self._writes_queued += 1

    async def written(self) -> None:
        """Wait until every write queued before this call has gone to Redis (or failed
        with it): a call the API just created is then listed on every process."""
        target = self._writes_queued
        async with self._writes_done_changed:
            await self._writes_done_changed.wait_for(lambda: self._writes_done >= target)

    def _hold(self, member: str | None, message: Message) -> None:
        """Keep a message Redis could not take (HELD_MAX); a broadcast is dropped: the
        session state it carried is republished on joining."""
        if member is None:
            self.dropped += 1
            return
        if len(self._waiting) >= HELD_MAX:
            self._waiting.popleft()
            self.dropped += 1
        self._waiting.append((self.clock(), member, message))

    async def _release_held(self, live: frozenset[str]) -> None:
        """Joined: what waited goes out, in order per member, to each member that is
        listening again (pub/sub keeps nothing for a member still resubscribing); a
        message too old, or to a member gone meanwhile, is dropped."""
        if not self._waiting:
            return
        now = self.clock()
        # Right after Redis restarted, members not registered again yet get the grace.
        gone = set() if now < self._grace_until else {m for _, m, _ in self._waiting} - live
        listening: dict[str, bool] = {}
        for member in {m for _, m, _ in self._waiting} - gone:
            [(_, count)] = await self._redis.pubsub_numsub(self.keys.inbox(member))
            listening[member] = int(count) > 0
        keep: deque[tuple[float, str, Message]] = deque()
        for since, member, message in self._waiting:
            if now - since > HELD_MAX_AGE or member in gone:
                self.dropped += 1
            elif listening[member]:
                self._enqueue("publish", member, message)
            else:
                keep.append((since, member, message))
        self._waiting = keep
        self._wake_writer.set()

    # -- the API's side (gateway/api.py) ------------------------------------------------------

    def call_changed(self, call_id: str, record: Record | None) -> None:
        """A live call of ours, as the API shows it (None: it ended); written in order."""
        if record is None:
            self._calls.pop(call_id, None)
        else:
            self._calls[call_id] = record
        if self._joined:  # else the whole table is written at the next join
            self._queue("call", call_id, record)

    async def cluster_calls(self) -> dict[str, tuple[str, Record]] | None:
        """Every live call of the cluster: call id -> (member, record); None when Redis
        cannot be asked."""
        if not self._joined:
            return None
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                return await self.calls.everyone()
        except _FAILURES as exc:
            log.warning("cluster.calls_read_failed", error=_describe(exc))
            return None

    # -- the controller's side --------------------------------------------------------------

    async def claim(self, number: str, token: str) -> bool | None:
        """True: ``number`` is ours; False: another call holds it; None: Redis cannot be
        asked (the call must be refused: nobody can say the number is free)."""
        if not self._joined:
            return None
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                ok = await self.claims.claim(number, token)
        except _FAILURES as exc:
            log.warning("cluster.claim_failed", number=number, error=_describe(exc))
            return None
        if ok:
            self._held[number] = token
        return ok

    def release(self, number: str, token: str) -> None:
        """Free ``number`` (in the background; if Redis is away its TTL frees it)."""
        if self._held.get(number) == token:
            del self._held[number]
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self._release(number, token))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release(self, number: str, token: str) -> None:
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                await self.claims.release(number, token)
        except _FAILURES as exc:
            log.info("cluster.release_deferred", number=number, error=_describe(exc))

    # -- conference rooms (gateway/conference.py; cluster/rooms.py) -------------------------

    def broadcast(self, message: Message) -> None:
        """A bus message to every other member (dropped while Redis is away)."""
        self._queue("publish", None, message)

    async def room_admit(
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
    ) -> Admission | str | None:
        """Admit a leg into a room cluster-wide: an ``Admission``, the refusal reason, or
        None when Redis cannot be asked (the leg must be refused)."""
        if not self._joined:
            return None
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                admitted = await self.rooms.admit(
                    name,
                    chan_id,
                    uid,
                    token,
                    max_members=max_members,
                    max_rooms=max_rooms,
                    code_seed=code_seed,
                    join_only=join_only,
                )
        except _FAILURES as exc:
            log.warning("cluster.room_admit_failed", room=name, error=_describe(exc))
            return None
        if isinstance(admitted, Admission):
            held = self._rooms.get(name)
            if held is None:
                held = self._rooms[name] = HeldRoom(
                    chan_id, admitted.moderator, admitted.code, set()
                )
            held.moderator, held.code = admitted.moderator, admitted.code
            held.tokens.add(token)
        return admitted

    def room_release(self, name: str, token: str) -> None:
        """Our leg ``token`` left room ``name`` (in the background; if Redis is away, the
        leg's deadline passes by itself)."""
        held = self._rooms.get(name)
        if held is None or token not in held.tokens:
            return
        held.tokens.discard(token)
        if not held.tokens:
            del self._rooms[name]
        if self._stopping:
            return
        self._background(self._room_release(name, token))

    async def _refresh_rooms(self) -> None:
        async with self._room_lock:
            await self.rooms.refresh(
                {
                    name: HeldRoom(r.chan_id, r.moderator, r.code, set(r.tokens))
                    for name, r in self._rooms.items()
                }
            )

    async def _room_release(self, name: str, token: str) -> None:
        try:
            async with asyncio.timeout(self.settings.redis_timeout), self._room_lock:
                await self.rooms.release(name, token)
        except _FAILURES as exc:
            log.info("cluster.room_release_deferred", room=name, error=_describe(exc))

    def room_phone(self, name: str, uuid: str, number: str) -> None:
        """Our phone channel ``uuid`` in room ``name`` is ``number``: kept in Redis for
        processes that seat someone later, told now to those with members there."""
        self._queue("publish", None, {"t": "conf_who", "room": name, "uuid": uuid, "uid": number})
        if not self._stopping:
            self._background(self._room_phone(name, uuid, number))

    async def _room_phone(self, name: str, uuid: str, number: str) -> None:
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                await self.rooms.set_who(name, uuid, number)
        except _FAILURES as exc:
            log.info("cluster.room_phone_failed", room=name, error=_describe(exc))

    async def room_phones(self, name: str) -> dict[str, str]:
        """Channel uuid -> number of the phones in room ``name`` ({} when Redis cannot be
        asked: they are then listed as the switch shows them)."""
        if not self._joined:
            return {}
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                return await self.rooms.who(name)
        except _FAILURES as exc:
            log.info("cluster.room_phones_failed", room=name, error=_describe(exc))
            return {}

    def room_ending(self, name: str) -> None:
        """ConfEnd of room ``name``: no process admits a new leg into it any more."""
        if not self._stopping:
            self._background(self._room_ending(name))

    async def _room_ending(self, name: str) -> None:
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                await self.rooms.mark_ending(name)
        except _FAILURES as exc:
            log.info("cluster.room_ending_failed", room=name, error=_describe(exc))

    async def room_by_code(self, code: str) -> RoomByCode | bool | None:
        """The live room of dial-in ``code`` (None: no such room), False when Redis
        cannot be asked."""
        if not self._joined:
            return False
        try:
            async with asyncio.timeout(self.settings.redis_timeout):
                return await self.rooms.by_code(code)
        except _FAILURES as exc:
            log.warning("cluster.room_code_failed", error=_describe(exc))
            return False

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    # -- tasks ---------------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.redis_timeout * 4):
                    if not self._joined:
                        await self._join()
                    else:
                        await self._beat()
            except _FAILURES as exc:
                _reraise_cancel()
                self._down(exc)
            except Exception:  # keep beating whatever a bug does
                log.exception("cluster.heartbeat_failed")
            await asyncio.sleep(self.settings.heartbeat_interval)

    async def _join(self) -> None:
        if self._beats:
            # Joining again: idle connections of before the outage may be dead (a Redis
            # restart closes them) and would fail the next claim once; drop them.
            await self._redis.connection_pool.disconnect(inuse_connections=False)
        await self._redis.ping()
        await self.registry.register({"appid": self.appid, "started": time.time()})
        await self.store.publish_all(dict(self._local))
        await self.calls.rewrite(dict(self._calls))
        lost = await self.claims.refresh(dict(self._held))
        self._lost_claims(lost)
        await self._refresh_rooms()
        census = await self.registry.census()
        self._live = census.live
        # A restarted Redis knows nobody: the others get claim_ttl to join again before
        # their users are taken for gone.
        self._grace_until = self.clock() + self.settings.claim_ttl
        await self._snapshot(census.live)
        await self.bus.publish(None, {"t": "hello"})  # the others read our sessions
        was_down = self.reason if self._beats else None
        self._joined = True
        self._resync = False
        await self._release_held(census.live)
        self._beats += 1
        log.info(
            "cluster.joined",
            member=self.member,
            members=len(census.live) + 1,
            remote_sessions=len(self.presence),
            after=was_down,
        )

    async def _beat(self) -> None:
        if not await self.registry.heartbeat():
            # Our key is gone: Redis restarted, or we were silent past the TTL.
            log.warning("cluster.registration_lost", member=self.member)
            self._joined = False
            await self._join()
            return
        await self.store.refresh()
        await self.calls.keep_alive()
        self._lost_claims(await self.claims.refresh(dict(self._held)))
        await self._refresh_rooms()
        census = await self.registry.census()
        self._live = census.live
        now = self.clock()
        missing = set() if now < self._grace_until else self.presence.members() - census.live
        await self._release_held(census.live)
        for member in sorted(census.dead | missing):
            # Every live process finds the dead one; the first to write its obituary
            # reports its users offline (webhooks, CUSTOM events), once for the cluster.
            report = await self.registry.obituary(member)
            reason = "expired" if member in census.dead else "gone"
            self._member_gone(member, now, reason=reason, report=report)
        self._beats += 1
        if self._resync or self._beats % RESYNC_EVERY == 0:
            self._resync = False
            await self._snapshot(census.live)

    async def _snapshot(self, live: frozenset[str]) -> None:
        sessions = await self.store.read(live)
        if self.clock() < self._grace_until:
            for member in self.presence.members() - live:
                for uid, info in self.presence.sessions_of(member).items():
                    sessions.setdefault(uid, info)
        came, went = self.presence.replace(sessions)
        hub = self._hub
        if hub is None:
            return
        now = self.clock()
        for uid in went:
            hub.remote_session_ended(uid, now)
        for uid in came:
            info = self.presence.where(uid)
            if info is not None:
                hub.remote_session_started(uid, info.member, info.stamp, True, now)
        if came or went:
            self._kick()

    def _member_gone(self, member: str, now: float, *, reason: str, report: bool = False) -> None:
        uids = self.presence.drop_member(member)
        log.info("cluster.member_gone", member=member, reason=reason, sessions=len(uids))
        hub = self._hub
        if hub is not None:
            for uid in uids:
                hub.remote_session_ended(uid, now, report=report)
            hub.remote_member_gone(member, now)
            self._kick()

    def _lost_claims(self, lost: list[str]) -> None:
        for number in lost:
            # Held by another process after Redis lost ours: that call is not ours to end
            # from here; the number stays with whoever holds it now.
            log.warning("cluster.claim_lost", number=number, member=self.member)
            self._held.pop(number, None)

    def _down(self, exc: BaseException) -> None:
        reason = f"Redis unreachable: {_describe(exc)}"
        if self._joined or reason != self.reason:
            log.warning("cluster.down", member=self.member, reason=reason)
        was_joined, self._joined = self._joined, False
        self.reason = reason
        if was_joined and self._hub is not None:
            self._hub.cluster_down(self.clock())

    async def _writer_loop(self) -> None:
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._pending:
                batch = list(self._pending)
                self._pending.clear()
                try:
                    async with asyncio.timeout(self.settings.redis_timeout):
                        async with self._redis.pipeline(transaction=False) as pipe:
                            for kind, a, b in batch:
                                if kind == "session":
                                    self.store.write_ops(pipe, a, b)
                                elif kind == "call":
                                    self.calls.queue_change(pipe, a, b)
                                else:
                                    self.bus.publish_op(pipe, a, b)
                            await pipe.execute()
                except _FAILURES as exc:
                    _reraise_cancel()
                    # Messages wait for the next join (_hold); session changes are
                    # republished from _local when the node joins again.
                    for kind, a, b in batch:
                        if kind == "publish":
                            self._hold(a, b)
                    self._down(exc)
                finally:
                    self._writes_done += len(batch)
                    async with self._writes_done_changed:
                        self._writes_done_changed.notify_all()

    async def _listen_loop(self) -> None:
        first = True

        def subscribed() -> None:
            nonlocal first
            if not first:
                self._resync = True  # messages may have been missed meanwhile
            first = False

        while True:
            try:
                async for message in self.bus.listen(subscribed):
                    try:
                        self._dispatch(message)
                    except Exception:
                        log.exception("cluster.dispatch_failed", type=message.get("t"))
            except _FAILURES as exc:
                _reraise_cancel()
                self._down(exc)
            await asyncio.sleep(self.settings.heartbeat_interval)

    def _dispatch(self, message: Message) -> None:
        hub = self._hub
        sender = str(message["from"])
        kind = message["t"]
        now = self.clock()
        if kind in ("online", "offline"):
            uid = message.get("uid")
            stamp = message.get("stamp")
            if not isinstance(uid, str) or not isinstance(stamp, int | float):
                return
            info = SessionInfo(sender, float(stamp))
            if kind == "online":
                known = self.presence.where(uid)
                new = self.presence.online(uid, info)
                if hub is not None and self.presence.where(uid) == info and known != info:
                    hub.remote_session_started(uid, sender, info.stamp, new, now)
            elif self.presence.offline(uid, info) and hub is not None:
                hub.remote_session_ended(uid, now)
        elif kind == "bye":
            self._member_gone(sender, now, reason="left")
        elif kind == "hello":
            self._resync = True  # a member (re)joined: read its sessions at the next beat
        elif kind in self.handlers:
            self.handlers[kind](sender, message)
        elif hub is not None:
            hub.cluster_message(sender, message, now)
        self._kick()


def _reraise_cancel() -> None:
    """Inside a loop's ``except _FAILURES``: a cancel of this task that reached it as a
    timeout or connection error (a redis call interrupted while its own deadline passed)
    is a cancel still, not an outage to retry after. Seen as a node whose stop() waited
    forever for its heartbeat task."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:200]
