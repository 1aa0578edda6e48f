"""Messages between gateway processes over Redis pub/sub.

Two kinds of channel: ``bus`` (to every member: presence changes, a member leaving) and
``bus:<member>`` (to one member: invitations, their answers, peer messages). A message
is a JSON object with ``t`` (its type) and ``from`` (the sender member). Pub/sub keeps
no history: what is published while a member is disconnected is lost to it, which is
why a member rereads the presence hashes after every reconnect (node.py).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from esl_bridge.cluster.keys import Keys
from esl_bridge.logs import get_logger

log = get_logger("cluster")

Message = dict[str, Any]


def encode(sender: str, message: Message) -> str:
    return json.dumps({**message, "from": sender}, separators=(",", ":"))


def decode(data: str | bytes) -> Message | None:
    try:
        message = json.loads(data)
    except ValueError:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        return None
    if not isinstance(message.get("from"), str):
        return None
    return message


class MessageBus:
    def __init__(self, redis: Any, keys: Keys, member: str) -> None:
        self._redis = redis
        self._keys = keys
        self.member = member

    def channel_of(self, target: str | None) -> str:
        return self._keys.broadcast if target is None else self._keys.inbox(target)

    def publish_op(self, pipe: Any, target: str | None, message: Message) -> None:
        """Queue on ``pipe`` the publication of ``message`` to ``target`` (None: all)."""
        pipe.publish(self.channel_of(target), encode(self.member, message))

    async def publish(self, target: str | None, message: Message) -> int:
        return int(await self._redis.publish(self.channel_of(target), encode(self.member, message)))

    async def listen(self, subscribed: Any = None) -> AsyncIterator[Message]:
        """Messages to us and to all (our own broadcasts skipped), until the connection
        fails (the exception propagates: the caller reconnects). ``subscribed`` is
        called once the subscription is in place."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._keys.broadcast, self._keys.inbox(self.member))
            if subscribed is not None:
                subscribed()
            while True:
                raw = await pubsub.get_message(timeout=1.0)
                if raw is None:
                    continue
                message = decode(raw.get("data", ""))
                if message is None:
                    log.warning("cluster.bad_message", channel=str(raw.get("channel"))[:80])
                    continue
                if message["from"] == self.member:
                    continue
                yield message
        finally:
            # A broken connection has nothing left to close.
            with contextlib.suppress(Exception):
                await pubsub.aclose()
