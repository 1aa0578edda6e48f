"""The gevent <-> asyncio handoff: neither side blocks the other."""

from __future__ import annotations

import asyncio
import threading

import gevent
import pytest

from esl_bridge.loops import Loops, LoopStopped, new_event_loop


@pytest.fixture(params=["uvloop", "asyncio"])
def loops(request: pytest.FixtureRequest):
    bridge = Loops(event_loop=request.param).start()
    assert type(bridge.loop).__module__.split(".")[0] == request.param
    yield bridge
    bridge.stop()


def test_the_default_loop_is_uvloop_and_others_are_refused() -> None:
    bridge = Loops()
    try:
        assert type(bridge.loop).__module__.split(".")[0] == "uvloop"
    finally:
        bridge.loop.close()
    with pytest.raises(ValueError, match="uvloop"):
        new_event_loop("trio")


def test_greenlet_waits_for_coroutine_without_freezing_other_greenlets(loops: Loops) -> None:
    """The coroutine finishes only once another greenlet has run while the caller waits.

    A handoff that blocks the hub (waiting on the concurrent future in the hub's thread)
    lets no greenlet run, so the coroutine sees no tick and says so: the test fails
    instead of passing once the wait is over.
    """
    ticks: list[int] = []
    ticked = threading.Event()

    def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            gevent.sleep(0.01)
        ticked.set()

    async def waits_for_the_ticker() -> tuple[str, bool, list[int]]:
        # Waits in a worker thread so this loop stays free; the bound is only there so a
        # frozen hub ends the test with a failure rather than a hang.
        seen = await asyncio.to_thread(ticked.wait, 30)
        return threading.current_thread().name, seen, list(ticks)

    other = gevent.spawn(ticker)
    name, seen, ticks_meanwhile = loops.run_coroutine(waits_for_the_ticker(), timeout=60)
    other.join(timeout=5)
    assert name == "esl-bridge-asyncio"
    assert seen, "no greenlet ran while a greenlet waited for the coroutine: the hub froze"
    assert ticks_meanwhile == [0, 1, 2, 3, 4]  # ticked before the coroutine returned


def test_coroutine_exception_reaches_the_greenlet(loops: Loops) -> None:
    async def fail() -> None:
        raise ValueError("from asyncio")

    with pytest.raises(ValueError, match="from asyncio"):
        loops.run_coroutine(fail(), timeout=5)


def test_timeout_cancels_the_coroutine(loops: Loops) -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(gevent.Timeout):
        loops.run_coroutine(forever(), timeout=0.05)
    assert cancelled.wait(timeout=5)


def test_coroutine_awaits_a_greenlet(loops: Loops) -> None:
    hub_thread = threading.get_ident()

    def in_gevent(x: int) -> tuple[int, bool]:
        gevent.sleep(0.01)
        return x * 2, threading.get_ident() == hub_thread

    async def caller() -> tuple[int, bool]:
        return await loops.spawn_greenlet(in_gevent, 21)

    assert loops.run_coroutine(caller(), timeout=5) == (42, True)


def test_greenlet_exception_reaches_the_coroutine(loops: Loops) -> None:
    def boom() -> None:
        raise KeyError("from gevent")

    async def caller() -> str:
        try:
            await loops.spawn_greenlet(boom)
        except KeyError as exc:
            return str(exc)
        return "no error"

    assert loops.run_coroutine(caller(), timeout=5) == "'from gevent'"


def test_stop_cancels_tasks_and_refuses_new_work() -> None:
    loops = Loops().start()
    cancelled = threading.Event()
    running = threading.Event()

    async def background() -> None:
        try:
            running.set()
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loops.call_soon(lambda: loops.loop.create_task(background()))
    # Stopped once the task runs (waited for: a loaded machine may take its time), so its
    # cancellation is what is judged, not a task cancelled before it ever started.
    assert running.wait(30)
    loops.stop()
    assert cancelled.is_set()

    async def nothing() -> None:
        return None

    with pytest.raises(LoopStopped):
        loops.run_coroutine(nothing())


def test_calls_into_the_hub_run_there_in_order_and_a_failure_is_logged(loops: Loops) -> None:
    from structlog.testing import capture_logs

    seen: list[tuple[int, str]] = []
    hub_thread = threading.current_thread().name

    def record(i: int) -> None:
        seen.append((i, threading.current_thread().name))

    def broken() -> None:
        raise RuntimeError("bug in the hub callback")

    async def post() -> None:
        for i in range(50):
            loops.call_in_hub(record, i)
            if i == 10:
                loops.call_in_hub(broken)

    with capture_logs() as logs:
        loops.run_coroutine(post(), timeout=5)
        with gevent.Timeout(5):
            while len(seen) < 50:
                gevent.sleep(0.01)
    assert seen == [(i, hub_thread) for i in range(50)]  # one hop, FIFO, in the hub's thread
    assert [e["event"] for e in logs if e.get("log_level") == "error"] == ["loops.hub_call_failed"]
