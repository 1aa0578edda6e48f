"""The short soak: 50 calls of every kind through the gateway and the simulator, nothing left.

``benchmarks/soak.py`` run small: both directions, every ending (answered, busy, no answer,
cancelled, browser vanished, phone hung up, switch dropped), aiortc peers carrying audio.
After a warm-up and after the last call it waits until no call and no channel is left (the
event, not a delay) and compares open file descriptors, UDP sockets, tasks on the gateway's
loop and threads: every figure must be back where it was. RSS is printed, not asserted (50
calls are too few to tell growth from the allocator's noise); the 1000-call run is the
benchmark's job.
"""

from __future__ import annotations

import sys
from pathlib import Path

from support.netns import loopback_only

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import soak


@loopback_only(timeout=400)
def test_fifty_calls_of_every_kind_leave_nothing_behind() -> None:
    result = soak.run_soak(calls=50, concurrency=7, warmup=14, restart_every=4)
    print(soak.soak_line(result), result["baseline"], result["end"])
    assert result["calls"] == 50
    assert result["failed"] == 0, (result["failures"], result["samples"])
    for figure in ("leaked_fds", "leaked_udp", "leaked_tasks", "leaked_threads"):
        assert result[figure] == 0, (figure, result["baseline"], result["end"])
    assert result["channels_left"] == 0
    status = result["gateway"]
    assert (status["calls"], status["numbers_busy"], status["unicast_ports_in_use"]) == (0, 0, 0)
    # Every ending really happened (the gateway's own count of how calls ended).
    # A vanished browser: held for browser_hold, then browser_lost.
    assert {"web_hangup", "sip_hangup", "browser_lost", "busy", "no_answer", "canceled"} <= set(
        status["ended"]
    ), status["ended"]
