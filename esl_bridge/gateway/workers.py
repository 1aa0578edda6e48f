"""``esl-bridge run --workers N``: N gateway processes behind one web port and one socket port.

One gateway process is one asyncio loop on one core. With ``--workers N`` a small
supervisor (this module; plain Python, no gevent or asyncio) starts N ordinary gateway
processes ("workers"). Each worker is a whole gateway: it opens the web port and the
outbound socket port itself with ``SO_REUSEPORT``, keeps its own inbound ESL connection(s),
and has its own node id ``<[cluster] node_id>-w<i>`` (i = 1..N), so the channels it tags
(esl/orphans.py) are its own: its watchdog and its start-up cleanup touch nothing of the
other workers. The kernel gives each new connection (a browser's WebSocket, FreeSWITCH's
``socket`` application) to one of the listening workers, so the dialplan
(``esl_bridge_socket``) and the browsers keep one address each.

Why ``SO_REUSEPORT`` and a supervisor, rather than one process that accepts and passes
each connection to a worker (``SCM_RIGHTS``):

* nothing sits in the path of a connection: the kernel balances the accepts, no process
  hands descriptors over and none is a bottleneck or a single point of failure for the
  traffic (the supervisor holds no socket at all);
* a worker is exactly the one-process gateway (same code, same tests), not a second mode
  that receives sockets; a dead worker loses only its own connections and calls;
* FreeSWITCH's outbound socket speaks first after the connect, and a WebSocket is
  long-lived: passing either between processes would need a protocol of its own.

The price: connections still waiting in a dying worker's accept queue are reset (Linux
keeps one queue per listening socket), and a second, unrelated ``esl-bridge`` of the same
user could join the port group. So the supervisor first checks that both ports are free
(a plain bind, no ``SO_REUSEPORT``) and refuses to start otherwise.

Without the cluster state in Redis (``[cluster] redis_url``) the workers would not share
presence: a SIP call landing on worker 1 could not ring a browser connected to worker 2.
So ``--workers`` above 1 requires ``redis_url`` (``workers_problems``).

The supervisor forwards SIGTERM/SIGINT to every worker (each drains its calls as a single
gateway does), restarts a worker that dies unexpectedly after a growing delay
(``RestartPolicy``), and gives up, stopping the others and exiting non-zero, when workers
keep dying.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import esl_bridge
from esl_bridge import config
from esl_bridge.esl.orphans import valid_node_id
from esl_bridge.logs import get_logger

log = get_logger("workers")

MAX_WORKERS = 64
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # a worker that exits with this cannot be helped by a restart


def worker_node_id(node_id: str, index: int) -> str:
    """The node id of worker ``index`` (1-based): stable across its restarts, so a
    restarted worker ends the channels its dead predecessor left (esl/orphans.py)."""
    return f"{node_id}-w{index}"


def worker_log_file(path: str, index: int) -> str:
    """``gateway.log`` -> ``gateway-w1.log``: each process rotates a file of its own."""
    if not path:
        return ""
    file = Path(path)
    return str(file.with_name(f"{file.stem}-w{index}{file.suffix}"))


def worker_settings(settings: config.Settings, index: int) -> config.Settings:
    """The settings worker ``index`` runs with: its node id, its log file and its admin
    socket (``admin.sock`` -> ``admin-w1.sock``, as the log file)."""
    return dataclasses.replace(
        settings,
        cluster=dataclasses.replace(
            settings.cluster, node_id=worker_node_id(settings.cluster.node_id, index)
        ),
        log=dataclasses.replace(settings.log, file=worker_log_file(settings.log.file, index)),
        web=dataclasses.replace(
            settings.web, admin_socket=worker_log_file(settings.web.admin_socket, index)
        ),
    )


def workers_problems(settings: config.Settings, workers: int) -> list[config.ConfigProblem]:
    """What keeps ``run --workers N`` (N > 1) from starting with these settings."""
    source = settings.source
    problems: list[config.ConfigProblem] = []
    if not settings.cluster.redis_url:
        problems.append(
            config.ConfigProblem(
                source,
                "cluster",
                "redis_url",
                settings.cluster.redis_url,
                f"--workers {workers} needs the cluster state in Redis: without it the "
                "worker processes would not share presence, invitations or number claims. "
                "Set redis_url, or run one process (--workers 1).",
            )
        )
    node_id = settings.cluster.node_id
    if not valid_node_id(worker_node_id(node_id, workers)):
        problems.append(
            config.ConfigProblem(
                source,
                "cluster",
                "node_id",
                node_id,
                f"too long for --workers {workers}: worker ids add '-w{workers}' and must "
                "stay within 64 characters",
            )
        )
    return problems


def ports_in_use(settings: config.Settings) -> list[str]:
    """The web and socket addresses that some socket holds already ("host:port: reason").

    A plain bind (no SO_REUSEPORT) fails on a port held by any socket, listening with
    SO_REUSEPORT or not: so a second supervisor, or a one-process gateway, on the same
    ports is refused instead of silently sharing the port group.
    """
    held: list[str] = []
    for host, port in (
        (settings.web.host, settings.web.port),
        (settings.socket.host, settings.socket.port),
    ):
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        except OSError as exc:
            held.append(f"{host}:{port}: {exc.strerror or exc}")
    return held


@dataclass
class RestartPolicy:
    """When to restart a worker that died, or whether to give up. No clock: takes ``now``.

    A worker is restarted after ``base_delay``, doubled for each earlier death within
    ``window`` seconds (at most ``max_delay``); its ``max_restarts + 1``-th death within
    the window means it keeps dying, and the supervisor gives up.
    """

    base_delay: float = 0.5
    max_delay: float = 30.0
    max_restarts: int = 5
    window: float = 300.0
    _deaths: dict[int, deque[float]] = field(default_factory=dict)

    def on_death(self, index: int, now: float) -> float | None:
        """Seconds to wait before restarting worker ``index``; None: give up."""
        deaths = self._deaths.setdefault(index, deque())
        deaths.append(now)
        while deaths and deaths[0] <= now - self.window:
            deaths.popleft()
        if len(deaths) > self.max_restarts:
            return None
        return min(self.base_delay * 2 ** (len(deaths) - 1), self.max_delay)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None  # monotonic time of a scheduled restart
    exit_code: int | None = None
    ready: bool = False  # said READY=1 (to the NotifyRelay) since its start
    pinged: bool = False  # said WATCHDOG=1 since the supervisor's last ping


class NotifyRelay:
    """Under systemd (``Type=notify``) the supervisor is the service's main process: its
    workers send their sd_notify messages here (their ``NOTIFY_SOCKET``) and the supervisor
    speaks for all of them. The sender of each datagram is known from its credentials
    (SO_PASSCRED, set by the kernel), so only the workers' own messages count."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK
        )
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        name = f"esl-bridge-supervisor-{os.getpid()}-{os.urandom(4).hex()}"
        self.sock.bind("\0" + name)
        self.address = "@" + name

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[tuple[int | None, list[str]]]:
        """Every waiting datagram: (sender pid, its KEY=VALUE lines)."""
        received: list[tuple[int | None, list[str]]] = []
        while True:
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except (BlockingIOError, InterruptedError):
                return received
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:12])[0]
            received.append((pid, data.decode("utf-8", "replace").split("\n")))

    def close(self) -> None:
        self.sock.close()


Spawn = Callable[[int], "subprocess.Popen[bytes]"]


class Supervisor:
    """Runs ``count`` workers made by ``spawn(index)`` until SIGTERM/SIGINT or giving up.

    ``run()`` returns the exit status: 0 when every worker drained and exited 0 after a
    stop request, 1 when workers kept dying (or one did not exit cleanly).
    """

    def __init__(
        self,
        count: int,
        spawn: Spawn,
        *,
        policy: RestartPolicy | None = None,
        stop_timeout: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        relay: NotifyRelay | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """``relay``: where the workers' sd_notify messages arrive; with it and
        ``NOTIFY_SOCKET`` in ``environ`` (the process's by default) the supervisor says
        READY=1 once every worker has, WATCHDOG=1 while every running worker pings, and
        STOPPING=1 when it stops them."""
        if not 1 <= count <= MAX_WORKERS:
            raise ValueError(f"workers must be 1-{MAX_WORKERS}, not {count}")
        self.count = count
        self._spawn = spawn
        self.policy = policy or RestartPolicy()
        self.stop_timeout = stop_timeout
        self._clock = clock
        self.workers = [_Worker(i) for i in range(1, count + 1)]
        self._stop_requested = False
        self._stopping_since: float | None = None
        self._killed = False
        self.gave_up = False
        self.restarts = 0
        self._hup_requested = False
        from esl_bridge.service import watchdog_interval

        self._relay = relay
        self._env = dict(os.environ if environ is None else environ)
        self._managed = relay is not None and bool(self._env.get("NOTIFY_SOCKET"))
        self._watchdog = watchdog_interval(self._env) if self._managed else None
        self._next_ping: float | None = None
        self._announced = False
        # SIGHUP, besides forwarding it: the supervisor's own log file reopened.
        self.on_hup: Callable[[], None] = lambda: None

    # -- signals --------------------------------------------------------------------------

    def request_stop(self, signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        self._stop_requested = True

    def request_reload(self, signum: int = signal.SIGHUP, frame: FrameType | None = None) -> None:
        self._hup_requested = True

    def run(self) -> int:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        previous = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGTERM, self.request_stop),
                (signal.SIGINT, self.request_stop),
                (signal.SIGHUP, self.request_reload),
                (signal.SIGCHLD, lambda signum, frame: None),  # only to wake the select
            )
        }
        previous_fd = signal.set_wakeup_fd(write_fd)
        try:
            for worker in self.workers:
                self._start(worker)
            self._loop(read_fd)
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(read_fd)
            os.close(write_fd)
        failed = self.gave_up or self._killed or any(w.exit_code != 0 for w in self.workers)
        code = EXIT_FAILURE if failed else EXIT_OK
        log.info("workers.supervisor_exit", code=code, restarts=self.restarts)
        return code

    def _loop(self, wake_fd: int) -> None:
        while True:
            if self._stop_requested and self._stopping_since is None:
                self._stop_all("signal")
            if self._hup_requested:
                self._hup_requested = False
                self._reload_all()
            self._reap()
            now = self._clock()
            if self._stopping_since is None:
                for worker in self.workers:
                    if worker.restart_at is not None and worker.restart_at <= now:
                        self._start(worker)
            elif all(w.process is None for w in self.workers):
                return
            elif not self._killed and now - self._stopping_since >= self.stop_timeout:
                self._kill_all()
            if self._managed:
                self._relay_messages(now)
            timeout = self._next_timeout(now)
            if self._next_ping is not None:
                wait = max(0.0, self._next_ping - now)
                timeout = wait if timeout is None else min(timeout, wait)
            readable = [wake_fd] if self._relay is None else [wake_fd, self._relay.fileno()]
            with contextlib.suppress(InterruptedError):
                select.select(readable, [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_fd, 512):
                    pass

    def _relay_messages(self, now: float) -> None:
        """The workers' sd_notify messages, and the supervisor's own to systemd."""
        from esl_bridge.service import notify

        assert self._relay is not None
        by_pid = {w.process.pid: w for w in self.workers if w.process is not None}
        for pid, lines in self._relay.receive():
            worker = by_pid.get(pid) if pid is not None else None
            if worker is None:
                continue
            worker.ready = worker.ready or "READY=1" in lines
            worker.pinged = worker.pinged or "WATCHDOG=1" in lines
        if self._stopping_since is not None:
            return
        if not self._announced and all(w.ready for w in self.workers):
            self._announced = True
            notify(
                f"READY=1\nSTATUS={self.count} workers serving\nMAINPID={os.getpid()}",
                self._env,
            )
            log.info("workers.ready", workers=self.count)
        if self._watchdog is not None:
            if self._next_ping is None:
                self._next_ping = now + self._watchdog
            elif now >= self._next_ping:
                running = [w for w in self.workers if w.process is not None]
                if all(w.pinged for w in running):
                    notify("WATCHDOG=1", self._env)
                else:
                    silent = [w.index for w in running if not w.pinged]
                    log.warning("workers.watchdog_skipped", silent_workers=silent)
                for worker in running:
                    worker.pinged = False
                self._next_ping = now + self._watchdog

    def _next_timeout(self, now: float) -> float | None:
        if self._stopping_since is not None:
            return (
                None if self._killed else max(0.0, self._stopping_since + self.stop_timeout - now)
            )
        due = [w.restart_at for w in self.workers if w.restart_at is not None]
        return max(0.0, min(due) - now) if due else None

    # -- workers --------------------------------------------------------------------------

    def _start(self, worker: _Worker) -> None:
        worker.restart_at = None
        worker.exit_code = None
        worker.ready = worker.pinged = False
        try:
            worker.process = self._spawn(worker.index)
        except OSError as exc:
            log.error("workers.spawn_failed", worker=worker.index, error=str(exc))
            self._died(worker, None)
            return
        log.info("workers.worker_started", worker=worker.index, pid=worker.process.pid)

    def _reap(self) -> None:
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            code = process.poll()
            if code is None:
                continue
            worker.process = None
            worker.exit_code = code
            if self._stopping_since is not None:
                log.info("workers.worker_exited", worker=worker.index, pid=process.pid, code=code)
            else:
                self._died(worker, process)

    def _died(self, worker: _Worker, process: subprocess.Popen[bytes] | None) -> None:
        code = process.returncode if process is not None else None
        fields = {"worker": worker.index, "pid": process.pid if process else None, "code": code}
        if code is not None and code < 0:
            fields["signal"] = signal.Signals(-code).name
        if code == EXIT_CONFIG:
            # The configuration cannot be used (changed since the supervisor checked it):
            # restarting the worker would fail the same way.
            log.error("workers.worker_config_failed", **fields)
            self.gave_up = True
            self._stop_all("worker_config_failed")
            return
        delay = self.policy.on_death(worker.index, self._clock())
        if delay is None:
            log.error(
                "workers.giving_up",
                **fields,
                deaths=self.policy.max_restarts + 1,
                window_s=self.policy.window,
            )
            self.gave_up = True
            self._stop_all("workers_keep_dying")
            return
        self.restarts += 1
        log.warning("workers.worker_died", **fields, restart_in_s=round(delay, 3))
        worker.restart_at = self._clock() + delay

    def _stop_all(self, reason: str) -> None:
        self._stopping_since = self._clock()
        self._next_ping = None
        if self._managed:
            from esl_bridge.service import notify

            notify("STOPPING=1\nSTATUS=draining the workers' calls", self._env)
        live = [w for w in self.workers if w.process is not None]
        log.info("workers.stopping", reason=reason, workers=[w.index for w in live])
        for worker in self.workers:
            worker.restart_at = None
            if worker.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)

    def _reload_all(self) -> None:
        """SIGHUP: each worker reloads itself (Gateway.reload)."""
        self.on_hup()
        live = [w for w in self.workers if w.process is not None]
        log.info("workers.reload", workers=[w.index for w in live])
        for worker in live:
            if worker.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGHUP)

    def _kill_all(self) -> None:
        self._killed = True
        for worker in self.workers:
            if worker.process is not None:
                log.error(
                    "workers.stop_timeout",
                    worker=worker.index,
                    pid=worker.process.pid,
                    timeout_s=self.stop_timeout,
                )
                with contextlib.suppress(ProcessLookupError):
                    worker.process.kill()


def spawn_worker(config_path: str, count: int, relay: NotifyRelay | None = None) -> Spawn:
    """The ``spawn`` of ``esl-bridge run --workers N``: ``esl-bridge run CONFIG --worker i``
    with this interpreter and this copy of the package. The workers never talk to systemd
    themselves: with a ``relay`` they tell the supervisor (pinging twice as often as it
    must, so each of its checks sees a ping)."""
    package_root = str(Path(esl_bridge.__file__).resolve().parents[1])
    env = dict(os.environ)
    usec = env.pop("WATCHDOG_USEC", "")
    for name in ("NOTIFY_SOCKET", "WATCHDOG_PID"):
        env.pop(name, None)
    if relay is not None:
        env["NOTIFY_SOCKET"] = relay.address
        if usec.isdigit() and int(usec) > 0:
            env["WATCHDOG_USEC"] = str(max(1, int(usec) // 2))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    supervisor = str(os.getpid())

    def spawn(index: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "esl_bridge", "run", config_path]
        command += ["--worker", f"{index}/{count}", "--supervisor-pid", supervisor]
        # Its own process group: a terminal's Ctrl-C reaches the supervisor only, which
        # forwards one SIGTERM (a second signal during the drain would cut it short).
        return subprocess.Popen(command, env=env, process_group=0)

    return spawn


def die_with_supervisor(supervisor_pid: int) -> bool:
    """In a worker: get SIGTERM (and so drain) when the supervisor dies, even by
    ``kill -9``; False when it is gone already (the worker should not start)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    return os.getppid() == supervisor_pid
