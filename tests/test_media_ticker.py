"""The shared pacing tick (esl_bridge/media/ticker.py): the sans-I/O grid on made-up times,
the asyncio adapter by counting its wake-ups (never by measuring time), and its use by the
ChannelTrack."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_bridge.loops import new_event_loop
from esl_bridge.media import ticker as ticker_module
from esl_bridge.media.leg import ChannelTrack
from esl_bridge.media.ticker import TICK_EPS, TICK_S, SharedTicker, TickGrid, shared_ticker


def test_grid_wakes_every_waiter_of_a_slot_together_and_none_early() -> None:
    grid: TickGrid[str] = TickGrid(0.010)
    grid.add(3.0049, "b")
    grid.add(3.0011, "a")
    grid.add(3.0100, "c")  # on a grid point: woken at it, not one tick later
    grid.add(3.0101, "d")
    assert grid.next_wake() == pytest.approx(3.01, abs=1e-9)
    assert grid.pop_due(3.0099) == ["a", "b"]  # a timer firing a hair early wakes no one late
    assert grid.pop_due(3.01) == ["c"]
    assert len(grid) == 1
    assert grid.next_wake() == pytest.approx(3.02, abs=1e-9)
    assert grid.pop_due(3.02) == ["d"]
    assert grid.next_wake() is None


@given(st.lists(st.floats(min_value=0.0, max_value=1e5, allow_nan=False), min_size=1, max_size=40))
@settings(deadline=None)  # about results, not speed: a loaded machine may be slow
def test_grid_adds_at_most_one_tick_and_never_wakes_early(deadlines: list[float]) -> None:
    grid: TickGrid[int] = TickGrid(TICK_S)
    for i, deadline in enumerate(deadlines):
        grid.add(deadline, i)
    woken: list[int] = []
    wakes = 0
    while (wake := grid.next_wake()) is not None:
        due = grid.pop_due(wake)
        assert due, "a wake-up with nobody due"
        wakes += 1
        for i in due:
            assert deadlines[i] <= wake + TICK_EPS  # never before its deadline
            assert wake - deadlines[i] < TICK_S + TICK_EPS  # at most one tick late
        woken.extend(due)
    assert sorted(woken) == list(range(len(deadlines)))
    # One wake-up per occupied grid slot, not one per waiter.
    assert wakes == len({grid.grid_point(d) for d in deadlines})


def test_shared_ticker_one_timer_wakes_all_waiters_of_a_slot() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ticker = SharedTicker(loop, tick=0.010)
        # A grid point comfortably ahead; deadlines inside the slot before the next one.
        base = ticker._grid.grid_point(loop.time() + 0.05)
        deadlines = [base + 0.001 * (i + 1) for i in range(8)]
        woke_at: list[float] = []

        async def waiter(deadline: float) -> None:
            await ticker.wait(deadline)
            woke_at.append(loop.time())

        cancelled = loop.create_task(ticker.wait(base + 0.002))
        tasks = [loop.create_task(waiter(d)) for d in deadlines]
        await asyncio.sleep(0)
        cancelled.cancel()  # a waiter that goes away does not disturb the others
        await asyncio.gather(*tasks)
        assert ticker.wakeups == 1 and ticker.woken == len(deadlines)
        assert all(t >= base + 0.01 - TICK_EPS for t in woke_at)  # the slot's grid point
        assert ticker.waiting == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_shared_ticker_never_wakes_a_sender_before_its_grid_point(kind: str) -> None:
    """uvloop rounds each timer to a whole millisecond and can run it up to 0.5 ms before
    its time; the grid points are whole milliseconds, so every callback still runs at or
    after its grid point, one timer wake-up per grid point (an early one would find
    nothing due and re-arm)."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ticker = SharedTicker(loop)  # the product's grid (TICK_S)
        assert type(loop).__module__.split(".")[0] == kind
        # Deadlines on 30 successive grid points themselves (a sender is often due exactly
        # at one): a timer run early would find its deadline still ahead.
        first = ticker._grid.grid_point(loop.time() + 0.02)
        deadlines = [ticker._grid.grid_point(first + ticker.tick * k) for k in range(30)]
        early: list[float] = []
        done = loop.create_future()

        def callback(k: int) -> None:
            now = loop.time()
            if deadlines[k] - now > TICK_EPS:
                early.append(deadlines[k] - now)
            if k + 1 < len(deadlines):
                ticker.call_at(deadlines[k + 1], lambda: callback(k + 1))
            else:
                done.set_result(None)

        ticker.call_at(deadlines[0], lambda: callback(0))
        await done
        assert early == []
        assert ticker.wakeups == len(deadlines)

    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        runner.run(asyncio.wait_for(scenario(), 30))


def test_shared_ticker_is_one_per_loop() -> None:
    async def get() -> SharedTicker:
        first = shared_ticker()
        assert shared_ticker() is first
        return first

    first = asyncio.run(get())
    second = asyncio.run(get())
    assert first is not second
    assert first not in ticker_module._TICKERS.values()  # its loop closed: let go of


def test_channel_track_paces_on_the_shared_ticker() -> None:
    """Before unicast the track plays silence on its own clock, waiting on the ticker it was
    given (one wait per frame after the first), and returns packets, not frames."""

    async def scenario() -> None:
        ticker = SharedTicker(asyncio.get_running_loop())
        track = ChannelTrack(ticker=ticker)
        track.set_codec("pcmu")
        packets = [await track.recv() for _ in range(6)]
        assert all(isinstance(p, av.Packet) for p in packets)
        assert [bytes(p) for p in packets] == [b"\xff" * 160] * 6
        assert ticker.woken >= 5
        track.stop()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_unicast_sender_uses_the_shared_ticker() -> None:
    """The endpoint's send loop toward FreeSWITCH waits on the loop's shared ticker."""
    from esl_bridge.media.unicast import ChannelFormat, PortAllocator, UnicastEndpoint

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ticker = shared_ticker()
        endpoint = UnicastEndpoint(ChannelFormat(8000), PortAllocator(42000, 42009))
        params = await endpoint.open()
        got: list[bytes] = []

        class Switch(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                got.append(data)

        transport, _ = await loop.create_datagram_endpoint(
            Switch, local_addr=(params.local_ip, params.local_port)
        )
        try:
            cast(asyncio.DatagramTransport, transport).sendto(
                bytes(320), (params.remote_ip, params.remote_port)
            )
            for _ in range(3000):  # wait for the paced frames, not for a time
                if len(got) >= 5:
                    break
                await asyncio.sleep(0.005)
            assert len(got) >= 5
            assert ticker.woken >= 4
        finally:
            transport.close()
            await endpoint.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
