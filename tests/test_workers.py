"""``esl-bridge run --workers N``: worker processes sharing the web and socket ports.

The supervisor and its workers run as a user runs them (subprocesses of the CLI) against
the simulator; the restart policy is checked alone with a fake clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gateway_support import wait_until
from support.ports_and_waits import free_port

from esl_bridge.gateway.workers import (
    RestartPolicy,
    Supervisor,
    worker_log_file,
    worker_node_id,
)
from esl_bridge.sim import SimConfig, SimulatorThread

ROOT = Path(__file__).resolve().parents[1]
NODE = "node-t"
START_TIMEOUT = 90  # two gateways importing aiortc on a busy 2-core machine


# -- the restart policy ------------------------------------------------------------------


def test_restart_delay_doubles_per_recent_death_and_is_capped() -> None:
    policy = RestartPolicy(base_delay=0.5, max_delay=3.0, max_restarts=10, window=100.0)
    delays = [policy.on_death(1, now=float(t)) for t in range(5)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]
    # another worker has its own count
    assert policy.on_death(2, now=5.0) == 0.5


def test_a_worker_that_keeps_dying_makes_the_policy_give_up() -> None:
    policy = RestartPolicy(base_delay=1.0, max_delay=8.0, max_restarts=3, window=60.0)
    assert [policy.on_death(1, now=t) for t in (0.0, 1.0, 2.0)] == [1.0, 2.0, 4.0]
    assert policy.on_death(1, now=3.0) is None


def test_deaths_older_than_the_window_are_forgotten() -> None:
    policy = RestartPolicy(base_delay=1.0, max_delay=8.0, max_restarts=2, window=60.0)
    assert policy.on_death(1, now=0.0) == 1.0
    assert policy.on_death(1, now=10.0) == 2.0
    # 0.0 and 10.0 are out of the window at 70.5: a fresh start, not a give-up
    assert policy.on_death(1, now=70.5) == 1.0


def test_worker_names_and_files() -> None:
    assert worker_node_id("gw-8084", 2) == "gw-8084-w2"
    assert worker_log_file("/var/log/esl/gateway.log", 1) == "/var/log/esl/gateway-w1.log"
    assert worker_log_file("", 1) == ""


def test_each_worker_has_an_admin_socket_of_its_own() -> None:
    from esl_bridge import config
    from esl_bridge.gateway.workers import worker_settings

    settings = config.from_text("[web]\nadmin_socket = /run/esl-bridge/admin.sock\n", "<t>")
    assert worker_settings(settings, 2).web.admin_socket == "/run/esl-bridge/admin-w2.sock"
    assert worker_settings(config.defaults(), 1).web.admin_socket == ""


def test_supervisor_gives_up_on_workers_that_keep_dying() -> None:
    """Real child processes that exit at once: restarted with back-off, then given up on;
    the supervisor's status is non-zero. (run() installs signal handlers: main thread.)"""
    spawned: list[int] = []

    def spawn(index: int) -> subprocess.Popen[bytes]:
        spawned.append(index)
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    policy = RestartPolicy(base_delay=0.01, max_delay=0.02, max_restarts=2, window=3600.0)
    supervisor = Supervisor(2, spawn, policy=policy, stop_timeout=30)
    assert supervisor.run() == 1
    assert supervisor.gave_up
    # The first worker to die a third time ends it; each had its first start and up to two
    # restarts, and the one that gave up had exactly two.
    assert spawned.count(1) <= 3 and spawned.count(2) <= 3
    assert 3 in (spawned.count(1), spawned.count(2))
    assert supervisor.restarts == len(spawned) - 2


def test_a_worker_whose_configuration_fails_is_not_restarted() -> None:
    spawned: list[int] = []

    def spawn(index: int) -> subprocess.Popen[bytes]:
        spawned.append(index)
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"])

    supervisor = Supervisor(1, spawn, policy=RestartPolicy(base_delay=0.01), stop_timeout=30)
    assert supervisor.run() == 1
    assert spawned == [1] and supervisor.restarts == 0


def test_the_supervisor_passes_sighup_to_every_worker_and_reopens_its_own_log(
    tmp_path: Path,
) -> None:
    """Workers that note each SIGHUP in a file; the supervisor gets one SIGHUP, then
    SIGTERM. (run() installs signal handlers: main thread; the signals come from a
    helper thread once both workers are up.)"""
    import threading
    import time

    def wait_for(check: Any, timeout: float) -> bool:  # a plain thread: no gevent here
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    child = textwrap.dedent(
        """\
        import pathlib, signal, sys
        index = sys.argv[1]
        base = pathlib.Path(sys.argv[2])
        signal.signal(signal.SIGHUP, lambda *a: (base / f"hup-{index}").touch())
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        (base / f"ready-{index}").touch()
        while True:
            signal.pause()
        """
    )

    def spawn(index: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", child, str(index), str(tmp_path)])

    supervisor = Supervisor(2, spawn, policy=RestartPolicy(base_delay=0.01), stop_timeout=30)
    reopened: list[bool] = []
    supervisor.on_hup = lambda: reopened.append(True)
    outcome: list[str] = []

    def signals() -> None:
        def exist(*names: str) -> bool:
            return all((tmp_path / n).exists() for n in names)

        if not wait_for(lambda: exist("ready-1", "ready-2"), 60):
            outcome.append("workers never ready")
        else:
            os.kill(os.getpid(), signal.SIGHUP)
            if not wait_for(lambda: exist("hup-1", "hup-2"), 30):
                outcome.append("SIGHUP not passed on")
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=signals)
    helper.start()
    code = supervisor.run()
    helper.join()
    assert outcome == []
    assert code == 0
    assert reopened == [True]


def test_under_systemd_the_supervisor_says_ready_once_every_worker_has_and_relays_pings(
    tmp_path: Path,
) -> None:
    """Fake workers speak sd_notify to the supervisor's relay (as ``run --worker`` does);
    a test-owned datagram socket stands in for systemd's. Worker 2 says READY=1 only once
    the test lets it: the supervisor must not say it before."""
    import socket as sockets
    import threading
    import time

    from esl_bridge.gateway.workers import NotifyRelay, spawn_worker

    child = textwrap.dedent(
        """\
        import os, pathlib, signal, socket, sys, time
        index, base = sys.argv[1], pathlib.Path(sys.argv[2])
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        address = "\\0" + os.environ["NOTIFY_SOCKET"][1:]
        interval = int(os.environ["WATCHDOG_USEC"]) / 2e6
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if index == "2":
            while not (base / "go").exists():
                sock.sendto(b"WATCHDOG=1", address)
                time.sleep(interval)
        sock.sendto(f"READY=1\\nMAINPID={os.getpid()}".encode(), address)
        while True:
            sock.sendto(b"WATCHDOG=1", address)
            time.sleep(interval)
        """
    )
    systemd = sockets.socket(sockets.AF_UNIX, sockets.SOCK_DGRAM)
    systemd.bind(str(tmp_path / "notify.sock"))
    systemd.settimeout(0.05)
    heard: list[list[str]] = []

    def listen(until: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                return False
            with contextlib.suppress(TimeoutError):
                heard.append(systemd.recv(4096).decode().split("\n"))
        return True

    def said(key: str) -> int:
        return sum(key in lines for lines in heard)

    relay = NotifyRelay()
    # What spawn_worker gives a worker: the relay as NOTIFY_SOCKET, half the watchdog time.
    os.environ.update({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"})
    try:
        real_spawn = spawn_worker(str(tmp_path / "unused.conf"), 2, relay)
        env_seen: dict[str, str] = {}

        def spawn(index: int) -> subprocess.Popen[bytes]:
            import unittest.mock

            with unittest.mock.patch.object(subprocess, "Popen") as popen:
                real_spawn(index)
            env_seen.update(popen.call_args.kwargs["env"])
            return subprocess.Popen(
                [sys.executable, "-c", child, str(index), str(tmp_path)], env=env_seen
            )

        supervisor = Supervisor(2, spawn, policy=RestartPolicy(base_delay=0.01), relay=relay)
    finally:
        os.environ.pop("NOTIFY_SOCKET")
        os.environ.pop("WATCHDOG_USEC")
    outcome: list[str] = []

    def drive() -> None:
        # Pings from the supervisor while worker 2 is not ready yet...
        if not listen(lambda: said("WATCHDOG=1") >= 3, 60):
            outcome.append("no WATCHDOG=1 from the supervisor")
        elif said("READY=1"):
            outcome.append("READY=1 before every worker was ready")
        (tmp_path / "go").touch()
        if not listen(lambda: said("READY=1") == 1, 30):
            outcome.append("no READY=1")
        os.kill(os.getpid(), signal.SIGTERM)
        if not listen(lambda: said("STOPPING=1") == 1, 30):
            outcome.append("no STOPPING=1")

    helper = threading.Thread(target=drive)
    helper.start()
    code = supervisor.run()
    helper.join()
    systemd.close()
    relay.close()
    assert outcome == [], (outcome, heard)
    assert code == 0
    assert env_seen["NOTIFY_SOCKET"] == relay.address
    assert env_seen["WATCHDOG_USEC"] == "200000" and "WATCHDOG_PID" not in env_seen
    ready = next(lines for lines in heard if "READY=1" in lines)
    assert f"MAINPID={os.getpid()}" in ready


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A Redis server of this test (loopback, no persistence), for ``[cluster] redis_url``."""
    import redis

    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    server = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until(answers, 30, "redis-server answering")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        server.terminate()
        server.wait(timeout=10)


def write_conf(
    tmp: Path, *, web: int, sock: int, esl: tuple[int, str], redis_url: str = ""
) -> Path:
    path = tmp / "rtx.conf"
    path.write_text(
        textwrap.dedent(
            f"""\
            [global]
            appid = workers
            [rtm2sip]
            on = 1
            acc_rule = 10[00-19]
            [proxy]
            on = 1
            [esl]
            port = {esl[0]}
            password = {esl[1]}
            command_timeout = 3
            [socket]
            port = {sock}
            [web]
            port = {web}
            [auth]
            open_mode = 1
            [log]
            file = {tmp / "gateway.log"}
            json = 1
            console = off
            [cluster]
            node_id = {NODE}
            redis_url = {redis_url}
            [limits]
            invite_offline_timeout = 0.5
            """
        )
    )
    return path


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esl_bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def log_events(path: Path, name: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == name:
            found.append(entry)
    return found


def healthz(port: int) -> tuple[int, dict[str, Any]] | None:
    """One request on a new connection (the kernel picks a worker for each)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, OSError):
        return None


def test_more_than_one_worker_needs_redis(tmp_path: Path) -> None:
    path = write_conf(tmp_path, web=free_port(), sock=free_port(), esl=(free_port(), "x"))
    result = run_cli("run", str(path), "--workers", "2")
    assert result.returncode == 2
    assert "[cluster] redis_url = '': --workers 2 needs the cluster state in Redis" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    bad = run_cli("run", str(path), "--workers", "0")
    assert bad.returncode == 2 and "must be 1-64, not 0" in bad.stderr


def test_workers_refuse_a_port_someone_holds(tmp_path: Path, redis_url: str) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        web = holder.getsockname()[1]
        path = write_conf(
            tmp_path, web=web, sock=free_port(), esl=(free_port(), "x"), redis_url=redis_url
        )
        result = run_cli("run", str(path), "--workers", "2")
    assert result.returncode == 1
    assert f"cannot start: in use already: 127.0.0.1:{web}" in result.stderr
    assert not log_events(tmp_path / "gateway.log", "workers.worker_started")


class Workers:
    """``esl-bridge run CONF --workers 2`` in a subprocess."""

    def __init__(
        self,
        tmp: Path,
        sim: SimulatorThread,
        sock: int,
        redis_url: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.tmp = tmp
        self.web = free_port()
        conf = write_conf(
            tmp, web=self.web, sock=sock, esl=(sim.esl_port, sim.password), redis_url=redis_url
        )
        self.log = tmp / "gateway.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esl_bridge", "run", str(conf), "--workers", "2"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def worker_log(self, index: int) -> Path:
        return self.tmp / f"gateway-w{index}.log"

    def nodes_answering(self, want: set[str], attempts: int = 400) -> set[str]:
        """Node ids that answered /healthz 200, asking on new connections until all of
        ``want`` did (or ``attempts`` connections were made)."""
        seen: set[str] = set()
        for _ in range(attempts):
            if self.proc.poll() is not None:
                raise AssertionError(f"supervisor exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            answer = healthz(self.web)
            if answer is not None and answer[0] == 200:
                seen.add(answer[1]["node"])
            if want <= seen:
                break
        return seen

    def pids(self) -> dict[int, int]:
        """Worker index -> pid of its latest start, from the supervisor's log."""
        return {e["worker"]: e["pid"] for e in log_events(self.log, "workers.worker_started")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for pid in self.pids().values():  # a worker must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def test_run_workers_under_systemd_is_ready_once_both_workers_serve(
    tmp_path: Path, redis_url: str
) -> None:
    """The real ``run --workers 2`` with a test-owned NOTIFY_SOCKET: one READY=1, from the
    supervisor, once both workers are healthy; STOPPING=1 at SIGTERM; exit 0."""
    import socket as sockets

    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_DGRAM)
    listener.bind(str(tmp_path / "notify.sock"))
    listener.setblocking(False)
    heard: list[list[str]] = []

    def said(key: str) -> int:
        while True:
            try:
                heard.append(listener.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return sum(key in lines for lines in heard)

    sock = free_port()
    with SimulatorThread(SimConfig(socket_target=("127.0.0.1", sock))) as sim:
        env = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}
        workers = Workers(tmp_path, sim, sock, redis_url, env=env)
        try:
            wait_until(lambda: said("READY=1") == 1, START_TIMEOUT, "READY=1")
            ready = next(lines for lines in heard if "READY=1" in lines)
            assert f"MAINPID={workers.proc.pid}" in ready
            # Both workers had said they serve (each logs it just after telling).
            for index in (1, 2):
                log = workers.worker_log(index)
                wait_until(lambda p=log: log_events(p, "service.ready"), 30, f"worker {index}")
            assert workers.nodes_answering({f"{NODE}-w1", f"{NODE}-w2"}) == {
                f"{NODE}-w1",
                f"{NODE}-w2",
            }
            wait_until(lambda: said("WATCHDOG=1") >= 1, 30, "a WATCHDOG=1 relayed")
            workers.proc.send_signal(signal.SIGTERM)
            assert workers.proc.wait(timeout=60) == 0
            assert said("STOPPING=1") == 1
            assert said("READY=1") == 1
        finally:
            workers.stop()
            listener.close()


def test_two_workers_share_the_ports_restart_and_drain(tmp_path: Path, redis_url: str) -> None:
    sock = free_port()
    both = {f"{NODE}-w1", f"{NODE}-w2"}
    with SimulatorThread(SimConfig(socket_target=("127.0.0.1", sock))) as sim:
        workers = Workers(tmp_path, sim, sock, redis_url)
        try:
            # Both serve the one web port: new connections land on each of them.
            wait_until(
                lambda: workers.nodes_answering(both, attempts=50) == both,
                START_TIMEOUT,
                "both workers answering /healthz 200 on the shared web port",
            )

            # Both accept FreeSWITCH's socket connections on the one socket port: each
            # claims the channels it takes with its own node id.
            claimed: set[str] = set()
            for _ in range(60):
                call = sim.place_call(caller="1001", dest="0alice", audio=None)
                assert call.wait_connected(10), call.connect_error
                assert call.wait_finished(15)  # alice is offline: refused, after the claim
                variables = sim.run_sync(dict, call.channel.variables)
                claimed.add(variables.get("esl_bridge_node", "?"))
                if claimed >= both:
                    break
            assert claimed == both

            # A worker killed with -9 is restarted, with the same node id.
            before = workers.pids()
            assert sorted(before) == [1, 2]
            os.kill(before[2], signal.SIGKILL)
            wait_until(
                lambda: workers.pids().get(2) not in (None, before[2]),
                START_TIMEOUT,
                "worker 2 restarted",
            )
            died = log_events(workers.log, "workers.worker_died")
            assert [(e["worker"], e["pid"], e["signal"]) for e in died] == [
                (2, before[2], "SIGKILL")
            ]
            assert workers.pids()[1] == before[1]
            # Same node id, new instance: the restarted worker's start-up cleanup ends the
            # channels its dead predecessor left (esl/orphans.py), and no other worker's.
            wait_until(
                lambda: len(log_events(workers.worker_log(2), "gateway.started")) == 2,
                START_TIMEOUT,
                "worker 2 started again",
            )
            starts = log_events(workers.worker_log(2), "gateway.started")
            assert [e["node"] for e in starts] == [f"{NODE}-w2"] * 2
            assert starts[0]["instance"] != starts[1]["instance"]
            wait_until(
                lambda: f"{NODE}-w2" in workers.nodes_answering({f"{NODE}-w2"}, attempts=50),
                START_TIMEOUT,
                "the restarted worker 2 answering",
            )

            # SIGTERM to the supervisor: both workers drain and stop, and it exits 0.
            workers.proc.send_signal(signal.SIGTERM)
            assert workers.proc.wait(timeout=60) == 0, workers.proc.stderr.read()  # type: ignore[union-attr]
            for index in (1, 2):
                assert log_events(workers.worker_log(index), "gateway.stopped")
            exited = log_events(workers.log, "workers.worker_exited")
            assert sorted((e["worker"], e["code"]) for e in exited) == [(1, 0), (2, 0)]
            assert log_events(workers.log, "workers.supervisor_exit")[-1]["code"] == 0
            wait_until(lambda: sim.live_channel_count() == 0, 10, "no channel left")
        finally:
            workers.stop()


def _gone(pid: int) -> bool:
    """Exited (a zombie nobody reaped counts as exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_workers_drain_and_exit_when_the_supervisor_is_killed(
    tmp_path: Path, redis_url: str
) -> None:
    sock = free_port()
    both = {f"{NODE}-w1", f"{NODE}-w2"}
    with SimulatorThread(SimConfig(socket_target=("127.0.0.1", sock))) as sim:
        workers = Workers(tmp_path, sim, sock, redis_url)
        try:
            wait_until(
                lambda: workers.nodes_answering(both, attempts=50) == both,
                START_TIMEOUT,
                "both workers answering",
            )
            pids = workers.pids()
            workers.proc.kill()
            workers.proc.wait(timeout=10)
            wait_until(lambda: all(_gone(pid) for pid in pids.values()), 60, "both workers exited")
            for index in (1, 2):
                assert log_events(workers.worker_log(index), "gateway.stopped")
        finally:
            workers.stop()
