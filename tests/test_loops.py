"""The gevent <-> asyncio handoff: neither side blocks the other."""

from __future__ import annotations

import asyncio
import threading

import gevent
import pytest

from esl_bridge.loops import Loops, LoopStopped


@pytest.fixture
def loops():
    bridge = Loops().start()
    yield bridge
    bridge.stop()


def test_greenlet_waits_for_coroutine_without_freezing_other_greenlets(loops: Loops) -> None:
    ticks: list[int] = []

    def ticker() -> None:
        for i in range(5):
            ticks.append(i)
            gevent.sleep(0.01)

    async def slow() -> str:
        await asyncio.sleep(0.1)
        return threading.current_thread().name

    other = gevent.spawn(ticker)
    name = loops.run_coroutine(slow(), timeout=5)
    other.join(timeout=5)
    assert name == "esl-bridge-asyncio"
    assert ticks == [0, 1, 2, 3, 4]  # the hub kept running while we waited


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

    async def background() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    loops.call_soon(lambda: loops.loop.create_task(background()))
    gevent.sleep(0.05)
    loops.stop()
    assert cancelled.is_set()

    async def nothing() -> None:
        return None

    with pytest.raises(LoopStopped):
        loops.run_coroutine(nothing())
