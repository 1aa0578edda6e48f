"""The Redis key and pub/sub channel names of a cluster, all under one prefix.

The appid is part of the prefix, so two gateways with different appids can share one
Redis without seeing each other (nothing crosses appids, as in the hub).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "esl-bridge"


@dataclass(frozen=True)
class Keys:
    appid: str

    @property
    def base(self) -> str:
        return f"{PREFIX}:{self.appid}:"

    @property
    def members(self) -> str:
        """Set of member ids that registered (dead ones are removed by whoever sees them)."""
        return self.base + "members"

    def node(self, member: str) -> str:
        """A member's liveness key, with the claim TTL, refreshed by its heartbeat."""
        return self.base + f"node:{member}"

    def obituary(self, member: str) -> str:
        """Which live process reports a dead member's users offline (first writer wins)."""
        return self.base + f"obituary:{member}"

    def sessions(self, member: str) -> str:
        """Hash uid -> session stamp of the web users logged in on ``member``."""
        return self.base + f"sessions:{member}"

    def calls(self, member: str) -> str:
        """Hash call id -> JSON of the live calls of ``member`` (cluster/calls.py)."""
        return self.base + f"calls:{member}"

    def claim(self, number: str) -> str:
        return self.base + f"claim:{number}"

    def room(self, name: str) -> str:
        """Hash of a conference room (cluster/rooms.py): moderator, ChanId, dial-in code."""
        return self.base + f"room:{name}"

    def room_legs(self, name: str) -> str:
        """Sorted set of a room's legs (``<member>:<leg id>``), scored by their deadline."""
        return self.base + f"room-legs:{name}"

    def room_who(self, name: str) -> str:
        """Hash channel uuid -> number of the phones gateways put in a room (their caller id
        on the switch is not their number)."""
        return self.base + f"room-who:{name}"

    @property
    def rooms(self) -> str:
        """Sorted set of the live rooms' names, scored by their deadline."""
        return self.base + "rooms"

    @property
    def room_code_prefix(self) -> str:
        """``room-code:<code>`` holds the name of the live room that has dial-in ``code``."""
        return self.base + "room-code:"

    @property
    def broadcast(self) -> str:
        return self.base + "bus"

    def inbox(self, member: str) -> str:
        return self.base + f"bus:{member}"
