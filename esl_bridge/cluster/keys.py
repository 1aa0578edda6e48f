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

    @property
    def broadcast(self) -> str:
        return self.base + "bus"

    def inbox(self, member: str) -> str:
        return self.base + f"bus:{member}"
