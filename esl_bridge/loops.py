"""The one place where the gevent world (ESL) and the asyncio world (web, media) meet.

The gevent hub owns the main thread and every ESL socket; an asyncio event loop owns one
other OS thread and everything else. Neither may block the other: gevent code waits on an
asyncio coroutine through a gevent ``AsyncResult`` woken by the hub's thread-safe callback
(never ``concurrent.futures.Future.result()``, which would freeze every greenlet), and
asyncio code waits on a greenlet through an ``asyncio.Future`` completed with
``call_soon_threadsafe``. No monkey-patching: aiortc's codec threads must stay threads.

The asyncio loop is uvloop's by default (``[media] event_loop``): media is a few small
datagrams per call every 20 ms, and each one costs a loop wake-up and a transport read,
which uvloop does in C. Measured on the 2-core reference machine
(benchmarks/scale.py, bridged Opus calls): 5 to 9 % less CPU per call. ``asyncio``
keeps the standard library's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.hub

from esl_bridge.logs import get_logger

T = TypeVar("T")
_log = get_logger("loops")

EVENT_LOOPS = ("uvloop", "asyncio")
DEFAULT_EVENT_LOOP = "uvloop"  # as [media] event_loop's default (config.py)
EXECUTOR_THREADS = "esl-bridge-executor"
"""Name prefix of the asyncio loop's executor threads (set by ``Loops`` on either loop, so
they can be found, and waited for at stop, without the loop's private attributes)."""


def new_event_loop(kind: str = DEFAULT_EVENT_LOOP) -> asyncio.AbstractEventLoop:
    """A new asyncio event loop of ``kind``: ``uvloop`` (a dependency; the standard loop,
    with a warning, where it cannot be imported) or ``asyncio``."""
    if kind not in EVENT_LOOPS:
        raise ValueError(f"event loop must be one of {EVENT_LOOPS}, not {kind!r}")
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError as exc:
            _log.warning("loops.uvloop_missing", error=str(exc), using="asyncio")
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopStopped(RuntimeError):
    """The other side is gone; nothing was or will be run."""


class Loops:
    """A running asyncio loop in its own thread, bridged to the calling thread's gevent hub."""

    def __init__(
        self, name: str = "esl-bridge-asyncio", event_loop: str = DEFAULT_EVENT_LOOP
    ) -> None:
        self._hub = gevent.get_hub()
        self._hub_thread = threading.get_ident()
        self._loop = new_event_loop(event_loop)
        self._loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(thread_name_prefix=EXECUTOR_THREADS)
        )
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(self) -> Loops:
        self._thread.start()
        self._ready.wait(timeout=10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            # Join the executor's workers (aiortc encodes there) before saying stopped,
            # so the interpreter has none left to wait for at exit.
            self._loop.run_until_complete(self._loop.shutdown_default_executor())
            self._loop.close()

    # gevent -> asyncio -----------------------------------------------------------------

    def run_coroutine(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """From a greenlet: run ``coro`` on the asyncio loop and wait without blocking the hub.

        On timeout the coroutine is cancelled and gevent.Timeout is raised.
        """
        if self._closed:
            coro.close()
            raise LoopStopped("the asyncio loop is stopped")
        return self._wait_for(coro, timeout)

    def _wait_for(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)

        def done(fut: concurrent.futures.Future[T]) -> None:
            # Runs in the asyncio thread: hand the outcome to the hub's own thread.
            wake = self._hub.loop.run_callback_threadsafe
            if fut.cancelled():
                wake(result.set_exception, LoopStopped("the coroutine was cancelled"))
            elif (exc := fut.exception()) is not None:
                wake(result.set_exception, exc)
            else:
                wake(result.set, fut.result())

        future.add_done_callback(done)
        try:
            return result.get(timeout=timeout)  # type: ignore[no-any-return]
        except gevent.Timeout:
            future.cancel()
            raise

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """From any thread: run a plain function on the asyncio loop, not waiting for it."""
        if not self._closed:
            self._loop.call_soon_threadsafe(fn, *args)

    # asyncio -> gevent -----------------------------------------------------------------

    def call_in_hub(self, fn: Callable[..., Any], *args: Any) -> None:
        """From any thread: run a plain, quick function in the hub's thread, not waiting
        for it. Calls run in the order they were made; an exception is logged there."""
        if not self._closed:
            self._hub.loop.run_callback_threadsafe(_logged, fn, *args)

    def spawn_greenlet(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """From the asyncio thread: run ``fn(*args)`` in a new greenlet; await its result."""
        future: asyncio.Future[T] = self._loop.create_future()

        def settle(greenlet: gevent.Greenlet) -> None:
            # Runs in the hub's thread: hand the outcome to the asyncio thread.
            if greenlet.successful():
                self._loop.call_soon_threadsafe(_set_result, future, greenlet.value)
            else:
                self._loop.call_soon_threadsafe(_set_exception, future, greenlet.exception)

        def start() -> None:
            greenlet = gevent.spawn(fn, *args)
            greenlet.link(settle)

        self._hub.loop.run_callback_threadsafe(start)
        return future

    # lifecycle -------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the asyncio loop and join its thread; pending tasks are cancelled."""
        if self._closed:
            return
        self._closed = True

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            # Stopping anyway if the tasks do not finish in time; the thread is a daemon.
            with contextlib.suppress(gevent.Timeout, LoopStopped):
                self._wait_for(cancel_all(), timeout=timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=timeout)


def _logged(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        _log.exception("loops.hub_call_failed", call=getattr(fn, "__qualname__", repr(fn)))


def _set_result(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException | None) -> None:
    if not future.done():
        future.set_exception(exc or LoopStopped("the greenlet died without an exception"))
