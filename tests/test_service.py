"""Running as a systemd service: the unit file, install-service, and sd_notify.

The notify protocol is checked around a real ``esl-bridge run`` process, with a datagram
socket owned by the test as its ``NOTIFY_SOCKET``: READY=1 only once the gateway is
healthy (FreeSWITCH reachable, as /healthz says), WATCHDOG=1 pings while it runs,
STOPPING=1 at SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import gevent
import gevent.event
import pytest
from support.gateway_process import GatewayProcess
from support.gateway_support import wait_until
from support.ports_and_waits import free_port

from esl_bridge.service import ServiceNotifier, notify, watchdog_interval
from esl_bridge.sim import SimConfig, SimulatorThread

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esl_bridge", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _install(tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    executable = tmp / "bin" / "esl-bridge"
    if not executable.exists():
        executable.parent.mkdir(parents=True, exist_ok=True)
        executable.write_text(f'#!/bin/sh\nexec {sys.executable} -m esl_bridge "$@"\n')
        executable.chmod(0o755)
    return _cli(
        "install-service",
        "--executable",
        str(executable),
        "--unit-dir",
        str(tmp / "units"),
        "--sysusers-dir",
        str(tmp / "sysusers"),
        *extra,
    )


def test_the_installed_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing in CI (Debian package systemd)")
        pytest.skip("systemd-analyze not installed (Debian package systemd)")
    done = _install(tmp_path, "--no-reload")
    assert done.returncode == 0, done.stdout + done.stderr
    unit = tmp_path / "units" / "esl-bridge.service"
    text = unit.read_text()
    assert f"ExecStart={tmp_path}/bin/esl-bridge run /etc/esl-bridge/rtx.conf" in text
    for line in (
        "Type=notify",
        "User=esl-bridge",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/log/esl-bridge",
    ):
        assert line in text.splitlines(), line
    verify = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 even for an unknown key or a bad value, but says so: silence is a pass.
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.strip() == "" and verify.stderr.strip() == "", verify.stderr


def test_verify_would_see_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: the same verify complains about a misspelt key."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    assert _install(tmp_path, "--no-reload").returncode == 0
    unit = tmp_path / "units" / "esl-bridge.service"
    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("NoNewPrivileges=", "NoNewPrivilegez="))
    verify = subprocess.run(
        [tool, "verify", str(broken)], capture_output=True, text=True, timeout=60, check=False
    )
    assert "NoNewPrivilegez" in verify.stderr


def test_install_service_dry_run_changes_nothing_and_a_second_install_is_a_no_op(
    tmp_path: Path,
) -> None:
    dry = _install(tmp_path, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would write" in dry.stdout
    assert "would run: systemd-sysusers" in dry.stdout
    assert "would run: systemctl daemon-reload" in dry.stdout
    assert not (tmp_path / "units").exists() and not (tmp_path / "sysusers").exists()

    first = _install(tmp_path, "--no-reload")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "sysusers" / "esl-bridge.conf").read_text().startswith("#")
    assert (tmp_path / "units" / "esl-bridge.service").stat().st_mode & 0o777 == 0o644
    again = _install(tmp_path, "--no-reload")
    assert again.returncode == 0
    assert again.stdout.count("unchanged:") == 2, again.stdout


def test_install_service_refuses_a_relative_config_path(tmp_path: Path) -> None:
    done = _install(tmp_path, "--no-reload", "--conf", "rtx.conf")
    assert done.returncode == 1
    assert "absolute" in done.stderr
    assert not (tmp_path / "units").exists()


class _NotifyListener:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, tmp: Path, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"esl-bridge-test-{uuid.uuid4().hex}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            path = tmp / "notify.sock"
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def poll(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def has(self, assignment: str) -> bool:
        return any(assignment in m.split("\n") for m in self.poll())

    def count(self, assignment: str) -> int:
        return sum(assignment in m.split("\n") for m in self.poll())

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_writes_one_datagram_to_a_path_or_abstract_socket(
    tmp_path: Path, abstract: bool
) -> None:
    listener = _NotifyListener(tmp_path, abstract)
    try:
        assert notify("READY=1\nSTATUS=x", {"NOTIFY_SOCKET": listener.address})
        wait_until(lambda: bool(listener.poll()), 5, "the datagram")
        assert listener.messages == ["READY=1\nSTATUS=x"]
    finally:
        listener.close()
    assert not notify("READY=1", {})  # not under systemd: nothing to do
    assert not notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})


@pytest.mark.parametrize("waiting", ["WATCHDOG=1", "READY=1"])
def test_nothing_follows_stopping_when_an_answer_was_already_on_its_way(
    tmp_path: Path, waiting: str
) -> None:
    """The stop can begin while a notifier greenlet waits for an answer (the watchdog's
    from the asyncio thread, the ready poll's from the health check), with that answer
    already queued to wake it: the stop's kill comes behind it. A loaded full-suite run saw
    a WATCHDOG=1 after STOPPING=1 this way. What the greenlet was about to say is not said."""
    listener = _NotifyListener(tmp_path, abstract=True)
    env = {
        "NOTIFY_SOCKET": listener.address,
        "WATCHDOG_USEC": "400000",
        "WATCHDOG_PID": str(os.getpid()),
    }
    asked, answer = gevent.event.Event(), gevent.event.Event()

    def slow_yes(*_: object) -> bool:
        asked.set()
        answer.wait()
        return True

    def no(*_: object) -> bool:
        return False

    try:
        if waiting == "WATCHDOG=1":
            notifier = ServiceNotifier(no, slow_yes, env)
        else:
            notifier = ServiceNotifier(slow_yes, no, env)
        notifier.start()
        assert asked.wait(timeout=10), "the notifier never asked"
        greenlets = list(notifier._greenlets)
        answer.set()  # the answer's wake-up is queued first...
        notifier.stopping()  # ...then the stop begins, before the hub runs either
        gevent.joinall(greenlets, timeout=10)
        assert all(g.dead for g in greenlets)
        messages = listener.poll()
        [stop] = [i for i, m in enumerate(messages) if "STOPPING=1" in m.split("\n")]
        assert not any(waiting in m.split("\n") for m in messages[stop:]), messages
    finally:
        listener.close()


def test_watchdog_interval_is_half_of_watchdog_usec_and_only_for_this_process() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(mine) == 1.0


def test_run_says_ready_only_once_freeswitch_is_up_pings_the_watchdog_and_says_stopping(
    tmp_path: Path,
) -> None:
    listener = _NotifyListener(tmp_path, abstract=True)
    esl_port = free_port()  # nothing listens there yet: the gateway cannot be healthy
    socket_port = free_port()
    sim: SimulatorThread | None = None
    gateway: GatewayProcess | None = None
    try:
        gateway = GatewayProcess(
            tmp_path,
            esl=("127.0.0.1", esl_port, "ClueCon"),
            socket=("127.0.0.1", socket_port),
            orphan_timeout=3600,
            esl_lines="reconnect_max_delay = 0.5",
            env={"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "400000"},
            wait_healthy=False,
        )
        wait_until(
            lambda: listener.has("STATUS=waiting for FreeSWITCH (see /healthz)"),
            30,
            "the gateway saying it waits for FreeSWITCH",
        )
        # Three pings: the process has been running (unhealthy) for a while...
        wait_until(lambda: listener.count("WATCHDOG=1") >= 3, 30, "watchdog pings")
        # ...and has not said it is ready.
        assert not listener.has("READY=1")
        assert gateway.health()[0] == 503

        sim = SimulatorThread(SimConfig(esl_port=esl_port)).start()
        wait_until(lambda: listener.has("READY=1"), 30, "READY=1 once FreeSWITCH is up")
        assert gateway.health()[0] == 200
        ready = next(m for m in listener.messages if "READY=1" in m.split("\n"))
        assert f"MAINPID={gateway.proc.pid}" in ready.split("\n")
        assert not listener.has("STOPPING=1")

        gateway.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: listener.has("STOPPING=1"), 30, "STOPPING=1 at SIGTERM")
        assert gateway.proc.wait(timeout=30) == 0
        pings = listener.count("WATCHDOG=1")
        # No ping after STOPPING=1.
        stopping_at = next(
            i for i, m in enumerate(listener.messages) if "STOPPING=1" in m.split("\n")
        )
        assert all("WATCHDOG=1" not in m for m in listener.messages[stopping_at:])
        assert pings >= 3
    finally:
        if gateway is not None:
            gateway.stop()
        if sim is not None:
            sim.stop()
        listener.close()
