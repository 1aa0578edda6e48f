"""Running under systemd: the sd_notify protocol and ``esl-bridge install-service``.

``notify`` writes one datagram to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace), as sd_notify(3) describes: newline-separated ``KEY=VALUE``
assignments. Without ``NOTIFY_SOCKET`` (not started by systemd) it does nothing.

``ServiceNotifier`` (a greenlet in the gateway's main thread) says ``READY=1`` once the
gateway is healthy as ``/healthz`` says, ``WATCHDOG=1`` every half ``WATCHDOG_USEC``
while the asyncio thread answers too, and ``STOPPING=1`` when the stop begins.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import gevent

from esl_bridge.logs import get_logger

log = get_logger("service")

UNIT_NAME = "esl-bridge.service"
SYSUSERS_NAME = "esl-bridge.conf"
DEFAULT_CONFIG = "/etc/esl-bridge/rtx.conf"
UNIT_DIR = "/etc/systemd/system"
SYSUSERS_DIR = "/etc/sysusers.d"
# How often the notifier looks whether the gateway has become healthy.
_READY_POLL = 0.2


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to the service manager; False if there is none
    or the datagram could not be sent (logged: the gateway runs on either way)."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # Linux abstract namespace
    elif not address.startswith("/"):
        log.warning("service.notify_failed", reason="NOTIFY_SOCKET is neither a path nor @name")
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as exc:
        log.warning("service.notify_failed", state=state.split("\n", 1)[0], error=str(exc))
        return False
    return True


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between two WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), or None when no
    watchdog is asked for (or it is meant for another process: ``WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


class ServiceNotifier:
    """Tells systemd how the gateway is doing (runs as greenlets of the main thread).

    ``healthy``: the ``/healthz`` verdict; ``alive``: True while the asyncio thread answers
    (it is asked with a timeout), so a stuck loop stops the watchdog pings.
    """

    def __init__(
        self,
        healthy: Callable[[], bool],
        alive: Callable[[float], bool],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._healthy = healthy
        self._alive = alive
        self._env = dict(os.environ if environ is None else environ)
        self._greenlets: list[gevent.Greenlet] = []
        self.ready = False
        self._stopping = False

    @property
    def managed(self) -> bool:
        return bool(self._env.get("NOTIFY_SOCKET"))

    def start(self) -> None:
        if not self.managed:
            return
        self._greenlets.append(gevent.spawn(self._until_ready))
        interval = watchdog_interval(self._env)
        if interval is not None:
            self._greenlets.append(gevent.spawn(self._watchdog, interval))

    def _until_ready(self) -> None:
        said_waiting = False
        while not self._healthy():
            if not said_waiting:
                notify("STATUS=waiting for FreeSWITCH (see /healthz)", self._env)
                said_waiting = True
            gevent.sleep(_READY_POLL)
        if self._stopping:
            return  # as for the pings: nothing after STOPPING=1
        self.ready = True
        notify(f"READY=1\nSTATUS=serving\nMAINPID={os.getpid()}", self._env)
        log.info("service.ready")

    def _watchdog(self, interval: float) -> None:
        while True:
            alive = self._alive(interval)
            # The stop may have begun while the loop was asked: its kill of this greenlet
            # is queued behind the answer's wake-up, and no ping may follow STOPPING=1.
            if self._stopping:
                return
            if alive:
                notify("WATCHDOG=1", self._env)
            else:
                log.warning("service.watchdog_skipped", reason="the asyncio loop did not answer")
            gevent.sleep(interval)

    def stopping(self) -> None:
        """The stop has begun: no more pings; systemd waits for the exit."""
        self._stopping = True
        gevent.killall(self._greenlets, block=False)
        self._greenlets.clear()
        if self.managed:
            notify("STOPPING=1\nSTATUS=draining calls", self._env)


# -- install-service ------------------------------------------------------------------------


@dataclass(frozen=True)
class InstallStep:
    what: str  # one line for the operator
    path: Path | None = None
    text: str | None = None  # the file's content, for a write step
    command: tuple[str, ...] | None = None


def unit_text(executable: str, config_path: str) -> str:
    template = resources.files("esl_bridge").joinpath("data", UNIT_NAME).read_text("utf-8")
    return template.replace("@ESL_BRIDGE@", executable).replace("@CONFIG@", config_path)


def sysusers_text() -> str:
    return resources.files("esl_bridge").joinpath("data", "esl-bridge.sysusers").read_text("utf-8")


def find_executable() -> str:
    """The absolute path of this installation's ``esl-bridge`` command."""
    found = shutil.which("esl-bridge")
    if found:
        return str(Path(found).resolve())
    candidate = Path(sys.executable).parent / "esl-bridge"
    return str(candidate)


def install_plan(
    executable: str, config_path: str, unit_dir: str, sysusers_dir: str, run_commands: bool
) -> list[InstallStep]:
    unit = Path(unit_dir) / UNIT_NAME
    users = Path(sysusers_dir) / SYSUSERS_NAME
    steps = [
        InstallStep(f"write {users} (the esl-bridge system user)", users, sysusers_text()),
        InstallStep(f"write {unit}", unit, unit_text(executable, config_path)),
    ]
    if run_commands:
        steps.append(
            InstallStep("create the esl-bridge user", command=("systemd-sysusers", str(users)))
        )
        steps.append(InstallStep("reload systemd", command=("systemctl", "daemon-reload")))
    return steps


def run_plan(steps: list[InstallStep], dry_run: bool, out: Callable[[str], None]) -> bool:
    """Carry out (or with ``dry_run`` only print) each step; False at the first failure."""
    for step in steps:
        if step.path is not None and step.text is not None:
            current = step.path.read_text("utf-8") if step.path.is_file() else None
            if current == step.text:
                out(f"unchanged: {step.path}")
                continue
            if dry_run:
                out(f"would {step.what}:")
                out(step.text.rstrip("\n"))
                continue
            try:
                step.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = step.path.with_name(step.path.name + ".tmp")
                tmp.write_text(step.text, "utf-8")
                tmp.chmod(0o644)
                tmp.replace(step.path)
            except OSError as exc:
                out(f"FAILED to {step.what}: {exc.strerror or exc}")
                return False
            out(f"done: {step.what}")
        elif step.command is not None:
            shown = " ".join(step.command)
            if dry_run:
                out(f"would run: {shown}")
                continue
            if shutil.which(step.command[0]) is None:
                out(f"FAILED to {step.what}: {step.command[0]} not found (is this systemd?)")
                return False
            done = subprocess.run(step.command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                out(f"FAILED: {shown}: {done.stderr.strip() or done.returncode}")
                return False
            out(f"done: {shown}")
    return True
