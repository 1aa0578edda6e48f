"""Calls held while the browser's network path is lost (issue 16, part 1), without I/O.

A connected call whose browser path goes away is not ended at once: the SIP side keeps its
channel (hearing the unicast sender's silence) and the call is *held* for ``hold_time``
seconds, waiting for the browser to come back with a new media path (an ICE restart, a new
media leg: gateway/controller.py). The path is lost for one or more reasons:

* ``"ice"``: the media leg's peer connection went ``disconnected`` or ``failed``, or the
  browser sent an ICE-restart offer (its old path is gone by its own account);
* ``"ws"``: the web user went offline past the hub's grace (``[limits] presence_grace``).

The hold starts with the first reason and its deadline does not move when another reason
comes; the call is back when every reason is cleared (the new leg connected, the user
online again). Past the deadline the call ends with ``BROWSER_LOST`` / ``BROWSER_LOST_CAUSE``.
The table takes ``now`` and returns what happened; the controller owns the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The end reason of a call whose browser did not come back in time, and its hangup cause
#: toward the SIP side (README.rst, When the browser's network changes).
BROWSER_LOST = "browser_lost"
BROWSER_LOST_CAUSE = "NORMAL_TEMPORARY_FAILURE"

#: Why a browser path is lost.
ICE = "ice"
WS = "ws"
REASONS = (ICE, WS)


@dataclass
class _Hold:
    since: float
    deadline: float
    reasons: set[str] = field(default_factory=set)


class BrowserHolds:
    """The held calls, by call id. ``hold_time`` > 0 seconds."""

    def __init__(self, hold_time: float) -> None:
        if not hold_time > 0:
            raise ValueError(f"hold_time must be positive, not {hold_time!r}")
        self.hold_time = hold_time
        self._holds: dict[str, _Hold] = {}

    def __len__(self) -> int:
        return len(self._holds)

    def held(self, call_id: str) -> bool:
        return call_id in self._holds

    def reasons(self, call_id: str) -> frozenset[str]:
        hold = self._holds.get(call_id)
        return frozenset() if hold is None else frozenset(hold.reasons)

    def lost(self, call_id: str, reason: str, now: float) -> bool:
        """The browser path of ``call_id`` is lost for ``reason``; True when this starts
        the hold (False: it was already held, its deadline unchanged)."""
        if reason not in REASONS:
            raise ValueError(f"unknown reason {reason!r}")
        hold = self._holds.get(call_id)
        if hold is not None:
            hold.reasons.add(reason)
            return False
        self._holds[call_id] = _Hold(now, now + self.hold_time, {reason})
        return True

    def back(self, call_id: str, reason: str, now: float) -> float | None:
        """``reason`` no longer holds ``call_id``: the seconds it was held when this ends
        the hold, else None (not held, or another reason still holds it)."""
        hold = self._holds.get(call_id)
        if hold is None:
            return None
        hold.reasons.discard(reason)
        if hold.reasons:
            return None
        del self._holds[call_id]
        return max(0.0, now - hold.since)

    def expired(self, now: float) -> list[str]:
        """The calls whose hold is over at ``now`` (removed from the table): end them."""
        due = [call_id for call_id, hold in self._holds.items() if now >= hold.deadline]
        for call_id in due:
            del self._holds[call_id]
        return due

    def next_deadline(self) -> float | None:
        return min((hold.deadline for hold in self._holds.values()), default=None)

    def forget(self, call_id: str) -> None:
        """The call ended for another reason."""
        self._holds.pop(call_id, None)
