"""One pacing tick for every call: a single asyncio timer wakes all waiting senders at once.

Every call paces two streams on a 20 ms clock: the ``ChannelTrack`` toward the browser and
the unicast endpoint's sender toward FreeSWITCH. One ``asyncio.sleep`` per stream per frame
costs a timer handle, a heap push/pop and, with the calls' phases spread over the 20 ms,
one event-loop turn (a ``select`` wake-up) per stream per frame. Here the waiters share a
grid: a waiter with deadline ``d`` is woken at the first grid point ``k * tick`` (loop time)
at or after ``d``, together with every other waiter due by then, by one timer callback.
With ``tick`` = 10 ms that is at most 100 timer wake-ups per second for the whole process,
whatever the number of calls.

What it adds to latency: each stream keeps its own playout phase (its ``Schedule``: the
receive side's anchor on FreeSWITCH's first datagram plus the margin, the send side's on
the same datagram), and the grid only delays the moment it acts on a deadline, by
``ceil(d / tick) * tick - d``: between 0 and ``tick`` (10 ms), constant for a call (both
its phase and the grid are fixed), uniform over calls, so 5 ms on average and at most
``tick`` in each direction. No frame is dropped or reordered by it: a waiter only ever
wakes late, never early, and the schedules are absolute, so nothing drifts.

The grid points are whole milliseconds of loop time, which keeps this true on uvloop too
(the gateway's default loop, esl_bridge/loops.py): libuv rounds each timer to a whole
millisecond of its millisecond clock, so a timer for any other instant may run up to
0.5 ms early, but one for a whole millisecond runs at it or after it.

``TickGrid`` is the sans-I/O core (deadlines in, due waiters out, ``now`` given);
``SharedTicker`` is the asyncio adapter; ``shared_ticker()`` is the one of the running loop.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TICK_EPS", "TICK_S", "SharedTicker", "TickGrid", "shared_ticker"]

TICK_S = 0.010  # the grid period: the most the shared tick adds to a frame's delay
# A deadline within this of ``now`` counts as due: the grid point computed in floating
# point can sit a few nanoseconds before the deadline it was rounded up from.
TICK_EPS = 1e-6

T = TypeVar("T")


class TickGrid(Generic[T]):
    """Waiters keyed by deadline; ``next_wake`` is the grid point at or after the earliest
    deadline, ``pop_due(now)`` returns every waiter due at ``now`` (earliest first)."""

    def __init__(self, tick: float = TICK_S) -> None:
        if tick <= 0:
            raise ValueError(f"tick must be positive, not {tick}")
        self.tick = tick
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, item: T) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), item))

    def grid_point(self, deadline: float) -> float:
        """The first grid point at or after ``deadline`` (within ``TICK_EPS``)."""
        return math.ceil((deadline - TICK_EPS) / self.tick) * self.tick

    def next_wake(self) -> float | None:
        if not self._heap:
            return None
        return self.grid_point(self._heap[0][0])

    def pop_due(self, now: float) -> list[T]:
        due: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now + TICK_EPS:
            due.append(heapq.heappop(heap)[2])
        return due


class SharedTicker:
    """``await ticker.wait(deadline)`` returns at the first grid point at or after
    ``deadline`` (loop time), woken with every other waiter due by then by one timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = TICK_S) -> None:
        self._loop = loop
        # A waiter is a future (``wait``) or a plain callback (``call_at``).
        self._grid: TickGrid[asyncio.Future[None] | Callable[[], None]] = TickGrid(tick)
        self._handle: asyncio.TimerHandle | None = None
        self._armed_for: float | None = None
        self._firing = False
        self.wakeups = 0  # timer callbacks run
        self.woken = 0  # waiters woken by them

    @property
    def tick(self) -> float:
        return self._grid.tick

    @property
    def waiting(self) -> int:
        return len(self._grid)

    async def wait(self, deadline: float) -> None:
        future: asyncio.Future[None] = self._loop.create_future()
        self._grid.add(deadline, future)
        self._arm()
        await future  # a cancelled waiter's future is skipped when its tick comes

    def call_at(self, deadline: float, callback: Callable[[], None]) -> None:
        """Call ``callback()`` at the first grid point at or after ``deadline``, inside the
        timer callback itself (no task, no future): for senders that do their work
        synchronously on the tick (media/rtp_send.py). An exception it raises goes to the
        loop's exception handler and does not stop the other callbacks of the tick."""
        self._grid.add(deadline, callback)
        if not self._firing:
            self._arm()  # while firing, _fire arms once for all the callbacks re-adding

    def _arm(self) -> None:
        wake = self._grid.next_wake()
        if wake is None:
            return
        if self._handle is not None and self._armed_for is not None:
            if self._armed_for <= wake:
                return  # the armed timer comes first; it re-arms for the rest
            self._handle.cancel()
        self._armed_for = wake
        self._handle = self._loop.call_at(wake, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._armed_for = None
        self.wakeups += 1
        due = self._grid.pop_due(self._loop.time())
        self._firing = True
        try:
            for item in due:
                if isinstance(item, asyncio.Future):
                    if not item.done():
                        item.set_result(None)
                        self.woken += 1
                    continue
                self.woken += 1
                try:
                    item()
                except Exception as exc:
                    self._loop.call_exception_handler(
                        {"message": "shared ticker callback failed", "exception": exc}
                    )
        finally:
            self._firing = False
        self._arm()


# A plain dict: a ticker refers to its loop (futures, timer handles), so a weak-keyed one
# would never let go of either; tickers of closed loops are dropped when a new one is made.
_TICKERS: dict[asyncio.AbstractEventLoop, SharedTicker] = {}


def shared_ticker() -> SharedTicker:
    """The ticker of the running event loop (one per loop, made on first use)."""
    loop = asyncio.get_running_loop()
    ticker = _TICKERS.get(loop)
    if ticker is None:
        for old in [old for old in _TICKERS if old.is_closed()]:
            del _TICKERS[old]
        ticker = _TICKERS[loop] = SharedTicker(loop)
    return ticker
