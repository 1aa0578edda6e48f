"""``esl-bridge run`` in a subprocess, for tests that kill it (SIGKILL), stop it (SIGTERM)
or restart it.

The gateway logs JSON lines to a file the test reads; its web users are WebUser clients
running on a ``Loops`` of the test process (``web_user``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from esl_bridge.loops import Loops
from esl_bridge.sim import SimConfig, SimulatorThread
from support.gateway_support import APPID, WebUser, wait_until
from support.ports_and_waits import free_port

ROOT = Path(__file__).resolve().parents[2]


class _Remote:
    """What WebUser needs of a gateway: a loop to run its client on and the web address."""

    def __init__(self, loops: Loops, web_address: tuple[str, int]) -> None:
        self.loops = loops
        self.web_address = web_address


class GatewayProcess:
    """One gateway process; ``esl`` is (host, port, password), ``socket`` (host, port)."""

    def __init__(
        self,
        tmp: Path,
        *,
        esl: tuple[str, int, str],
        socket: tuple[str, int],
        orphan_timeout: float,
        acc_rule: str = "10[00-19]",
        sip_svr: str = "127.0.0.1:5060",
        node_id: str = "node-under-test",
        originate_timeout: int = 120,
        cluster: str = "",
        esl_lines: str = "",
        web_lines: str = "",
        limits_lines: str = "",
        sections: str = "",
        env: dict[str, str] | None = None,
        wait_healthy: bool = True,
    ) -> None:
        """``cluster``: more lines of the [cluster] section (redis_url...); ``esl_lines``,
        ``web_lines``, ``limits_lines``: of [esl], of [web], of [limits]; ``sections``:
        more sections at the end;
        ``env``: added to the environment; ``wait_healthy``: return only once /healthz
        says 200."""
        self.web_port = free_port()
        self.log_file = tmp / f"gateway-{self.web_port}.log"
        conf = tmp / f"rtx-{self.web_port}.conf"
        conf.write_text(
            textwrap.dedent(
                f"""\
                [global]
                appid = {APPID}
                sip_svr = {sip_svr}
                [rtm2sip]
                on = 1
                acc_rule = {acc_rule}
                [proxy]
                on = 1
                [esl]
                host = {esl[0]}
                port = {esl[1]}
                password = {esl[2]}
                command_timeout = 3
                orphan_timeout = {orphan_timeout}
                {{esl_lines}}
                [socket]
                host = {socket[0]}
                port = {socket[1]}
                [web]
                port = {self.web_port}
                {{web_lines}}
                [auth]
                open_mode = 1
                [log]
                file = {self.log_file}
                json = 1
                console = off
                [limits]
                originate_timeout = {originate_timeout}
                {{limits_lines}}
                [cluster]
                node_id = {node_id}
                """
            )
            .replace("{esl_lines}", textwrap.dedent(esl_lines).strip())
            .replace("{web_lines}", textwrap.dedent(web_lines).strip())
            .replace("{limits_lines}", textwrap.dedent(limits_lines).strip())
            + textwrap.dedent(cluster)
            + textwrap.dedent(sections)
        )
        self.conf = conf
        full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "esl_bridge", "run", str(conf)],
            cwd=ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if wait_healthy:
            self.wait_healthy()

    def wait_healthy(self) -> None:
        wait_until(self._healthy, 30, "the gateway process serving (ESL connected)")

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            error = self.proc.stderr.read() if self.proc.stderr else b""
            raise AssertionError(f"gateway exited: {error!r}")
        try:
            url = f"http://127.0.0.1:{self.web_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def health(self) -> tuple[int, dict[str, Any]]:
        """``/healthz``: its status and body."""
        url = f"http://127.0.0.1:{self.web_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def web_user(self, loops: Loops, uid: str, session: str | None = None) -> WebUser:
        remote = _Remote(loops, ("127.0.0.1", self.web_port))
        return WebUser(remote, uid).connect(session)  # type: ignore[arg-type]

    def log_events(self, name: str) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        found = []
        for line in self.log_file.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("event") == name:
                found.append(entry)
        return found

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, as a service manager stops it; the exit status once it has exited."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextmanager
def gateway_on_simulator(
    tmp_path: Path, **options: Any
) -> Iterator[tuple[SimulatorThread, Loops, GatewayProcess]]:
    """A simulator, a ``Loops`` for web users, and ``esl-bridge run`` against them
    (``options`` go to ``GatewayProcess``); all three stopped afterwards, in that order
    reversed."""
    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(socket_target=("127.0.0.1", socket_port), first_call_event_delay=0.0)
    ).start()
    loops = Loops().start()
    gateway: GatewayProcess | None = None
    try:
        gateway = GatewayProcess(
            tmp_path,
            esl=("127.0.0.1", sim.esl_port, sim.password),
            socket=("127.0.0.1", socket_port),
            **options,
        )
        yield sim, loops, gateway
    finally:
        if gateway is not None:
            gateway.stop()
        loops.stop()
        sim.stop()
