"""How long ``esl-bridge run`` takes to exit on SIGTERM, and how much of it comes after
``gateway.stopped`` is logged (the product's code is done then; what follows is the
interpreter's exit: threads it joins, atexit handlers, finalizers).

Each run starts ``python -m esl_bridge run`` against a simulated FreeSWITCH (in this
process), optionally sets up answered calls with audio (aiortc browsers here, so the
gateway has peer connections, decoder threads and executor work when the signal comes),
sends SIGTERM and timestamps the gateway's log lines as they arrive::

    python3 benchmarks/exit_time.py --runs 15 --calls 2

The last line is ``exit_time: runs=.. stop_p50_s=.. stop_max_s=.. after_stopped_p50_s=..
after_stopped_max_s=..``. It re-executes itself in a loopback-only network namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import soak

from esl_bridge.gateway.demo import free_port
from esl_bridge.sim import SimConfig, SimulatorThread


class Lines:
    """The child's stderr, each line with the monotonic time it arrived."""

    def __init__(self, stream: object) -> None:
        self.lines: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append((time.monotonic(), line))

    def first(self, text: str) -> float | None:
        return next((t for t, line in list(self.lines) if text in line), None)

    def wait(self, text: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while (found := self.first(text)) is None:
            if time.monotonic() > deadline:
                tail = "".join(line for _, line in self.lines[-20:])
                raise RuntimeError(f"no {text!r} in the gateway's output:\n{tail}")
            time.sleep(0.01)
        return found

    def join(self) -> None:
        self._thread.join(5)


async def open_calls(web: tuple[str, int], calls: int) -> list[soak.Browser]:
    browsers = []
    for n in range(calls):
        b = await soak.Browser(web, f"u{n}").open()
        chan, number = f"c{n}", f"2{n:02d}0"
        body = json.dumps({"Mode": 1, "Conference": False, "ChanId": chan})
        await b.request(
            {"type": "invite", "ref": chan, "callee": number, "content": body, "channel_id": chan}
        )
        await b.local_state(chan, (soak.ACCEPTED,), 20)
        await b.media(number, chan, 20)
        browsers.append(b)
    return browsers


def healthy(port: int, timeout: float) -> None:
    """Wait until /healthz says 200 (FreeSWITCH connected)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the gateway never became healthy")
        time.sleep(0.1)


@dataclass
class Run:
    stop_s: float  # SIGTERM -> gateway_stopped logged
    after_stopped_s: float  # gateway_stopped logged -> process gone
    returncode: int
    output: list[str]  # the gateway's log lines


def one_run(sim: SimulatorThread, socket_port: int, calls: int, tmp: Path) -> Run:
    web = free_port()
    while web == socket_port:  # a port just freed may come back
        web = free_port()
    conf = tmp / "rtx.conf"
    conf.write_text(
        soak.settings_text(sim.esl_port, socket_port, web, max(calls, 1)) + "[log]\nlevel = 2\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "esl_bridge", "run", str(conf)],
        cwd=soak.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = Lines(child.stderr)
    loop = asyncio.new_event_loop()
    browsers: list[soak.Browser] = []
    try:
        lines.wait("gateway running", 30)
        healthy(web, 30)
        if calls:
            browsers = loop.run_until_complete(open_calls(("127.0.0.1", web), calls))
        sent = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.wait(60)
        exited = time.monotonic()
        lines.join()
        stopped = lines.wait("gateway.stopped", 1)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for b in browsers:
            loop.run_until_complete(b.close())
        loop.close()
    output = [line for _, line in lines.lines]
    return Run(stopped - sent, exited - stopped, child.returncode, output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--calls", type=int, default=2, help="answered calls at SIGTERM")
    args = parser.parse_args()
    soak.enter_loopback_namespace()
    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(socket_target=("127.0.0.1", socket_port), extensions=soak.extensions(99))
    ).start()
    stops, afters = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for run in range(args.runs):
                r = one_run(sim, socket_port, args.calls, Path(tmp))
                stop, after = r.stop_s, r.after_stopped_s
                stops.append(stop)
                afters.append(after)
                print(
                    f"  run {run + 1:2d}: SIGTERM -> gateway_stopped {stop:.2f} s, "
                    f"gateway_stopped -> exit {after:.2f} s",
                    flush=True,
                )
    finally:
        sim.stop()
    print(
        f"exit_time: runs={len(stops)} stop_p50_s={statistics.median(stops):.2f} "
        f"stop_max_s={max(stops):.2f} after_stopped_p50_s={statistics.median(afters):.2f} "
        f"after_stopped_max_s={max(afters):.2f}"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
