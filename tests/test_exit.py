"""A prompt exit: once ``gateway.stopped`` is logged nothing of the gateway keeps running,
and ``esl-bridge run`` ends the process at once instead of the interpreter's slow teardown.

Never timed: the tests check what is left (threads, executor workers, the asyncio thread)
and that the process left through ``exit_now`` (its ``process.exit`` line).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.netns import loopback_only

from esl_bridge import cli

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import exit_time
import soak


def test_exit_now_names_threads_that_would_hold_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exited(Exception):
        pass

    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise Exited

    monkeypatch.setattr(cli.os, "_exit", fake_exit)
    release = threading.Event()
    holder = threading.Thread(target=release.wait, name="stubborn-worker")
    holder.start()
    try:
        # structlog's capture, not the console: an earlier test may have set up logging.
        with capture_logs() as logs, pytest.raises(Exited):
            cli.exit_now(0)
    finally:
        release.set()
        holder.join()
    assert codes == [0]
    exits = [e for e in logs if e["event"] == "process.exit"]
    assert [(e["log_level"], e["lingering_threads"]) for e in exits] == [
        ("warning", ["stubborn-worker"])
    ]


@loopback_only(timeout=200)
def test_after_stop_no_gateway_thread_or_executor_work_remains() -> None:
    """A call with audio both ways (decoder threads, encodes in the executor), then stop."""
    import gevent
    from support.ports_and_waits import free_port

    from esl_bridge import config
    from esl_bridge.gateway.process import Gateway
    from esl_bridge.loops import EXECUTOR_THREADS
    from esl_bridge.sim import SimConfig, SimulatorThread

    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(socket_target=("127.0.0.1", socket_port), extensions=soak.extensions(1))
    ).start()
    web_port = free_port()
    while web_port in (socket_port, sim.esl_port):  # a port just freed may come back
        web_port = free_port()
    gateway = Gateway(
        config.from_text(soak.settings_text(sim.esl_port, socket_port, web_port, 1), "<t>")
    )
    state: dict[str, Any] = {}
    try:
        gateway.start()
        with gevent.Timeout(20):
            while gateway.controller is None or gateway.controller.esl_state != "connected":
                gevent.sleep(0.02)
        web = gateway.web_address
        assert web is not None

        async def browser() -> None:
            b = await soak.Browser(web, "alice").open()
            body = json.dumps({"Mode": 1, "ChanId": "c1"})
            await b.request(
                {
                    "type": "invite",
                    "ref": "c1",
                    "callee": "2000",
                    "content": body,
                    "channel_id": "c1",
                }
            )
            await b.local_state("c1", (soak.ACCEPTED,), 20)
            await b.media("2000", "c1", 20)
            state["up"] = True
            while not state.get("stopped"):
                await asyncio.sleep(0.02)
            await b.close()

        harness = threading.Thread(target=lambda: asyncio.run(browser()), daemon=True)
        harness.start()
        with gevent.Timeout(60):
            while not state.get("up"):
                assert harness.is_alive(), "the browser failed"
                gevent.sleep(0.02)
        loop = gateway.loops.loop
        assert type(loop).__module__.split(".")[0] == "uvloop"  # the default event_loop
        workers = [t for t in threading.enumerate() if t.name.startswith(EXECUTOR_THREADS)]
        # aiortc's decoder threads get the loop of their peer connection as first argument.
        decoders = [
            t
            for t in threading.enumerate()
            if t.name.endswith("decoder") and getattr(t, "_args", (None,))[0] is loop
        ]
        # The media path no longer uses the executor (encoding and decoding run inline), but
        # aiortc still starts an (idle) decoder thread per receiver: that one must go too.
        assert decoders, "no aiortc decoder thread: the test checks nothing"
        gateway.stop(drain=2.0)
        # What gateway_stopped promises: the asyncio thread, its executor workers and
        # aiortc's decoder threads are gone, and no thread is left that the interpreter
        # would wait for at exit.
        assert loop.is_closed()
        assert not gateway.loops._thread.is_alive()  # type: ignore[attr-defined]
        assert [t.name for t in workers + decoders if t.is_alive()] == []
        main = threading.main_thread()
        waited_for = [t.name for t in threading.enumerate() if t is not main and not t.daemon]
        assert waited_for == [], waited_for
        state["stopped"] = True
        harness.join(10)
    finally:
        state["stopped"] = True
        gateway.stop(drain=0)
        sim.stop()


@loopback_only(timeout=200)
def test_run_on_sigterm_leaves_through_exit_now_with_nothing_lingering(tmp_path: Path) -> None:
    from support.ports_and_waits import free_port

    from esl_bridge.sim import SimConfig, SimulatorThread

    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(socket_target=("127.0.0.1", socket_port), extensions=soak.extensions(99))
    ).start()
    try:
        run = exit_time.one_run(sim, socket_port, 2, tmp_path)
    finally:
        sim.stop()
    text = "".join(run.output)
    assert run.returncode == 0, text[-3000:]
    assert text.index("gateway.stopped") < text.index("process.exit"), text[-3000:]
    assert "lingering_threads" not in text
