"""Run a test inside a network namespace that has only ``lo``.

House rule: a test that starts Chromium or opens a peer connection runs where no packet
can leave loopback (no ICE candidate, no DNS query). The mechanism: the outer test
re-executes its own pytest node id (parameters included) under ``unshare -n`` (after
``ip link set lo up``) with ``ESL_BRIDGE_IN_NETNS=1`` set; inside, the same test sees the
flag, checks that the namespace really has only ``lo``, and does the work. The outer test
passes or fails with the inner run and shows its output when it fails. Without ``unshare``
or ``ip``, or without the right to make a namespace, the test is skipped, never run
outside.

Use ``@loopback_only`` (or ``@loopback_only(requires=[...], timeout=...)``) on a test.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, overload

import pytest

ENV_FLAG = "ESL_BRIDGE_IN_NETNS"
# The child pytest stops the test at its own timeout and reports where it was; the
# subprocess is killed CHILD_GRACE seconds later if it does not end; the outer test's
# own timeout comes OUTER_GRACE seconds after the child's, so it never cuts the report.
CHILD_GRACE = 30
OUTER_GRACE = 60
F = TypeVar("F", bound=Callable[..., Any])
ROOT = Path(__file__).resolve().parents[2]


def in_netns() -> bool:
    """True in the re-executed child (the flag is only set by ``run_pytest_in_netns``)."""
    return os.environ.get(ENV_FLAG) == "1"


def interfaces() -> list[str]:
    """Interfaces of the current network namespace (if_nameindex asks the kernel for the
    caller's namespace; /sys/class/net would show the namespace sysfs was mounted in)."""
    return sorted(name for _, name in socket.if_nameindex())


def assert_loopback_only() -> None:
    names = interfaces()
    if names != ["lo"]:
        raise AssertionError(f"not in a loopback-only network namespace: {names}")


@functools.cache
def unavailable_reason() -> str | None:
    """Why the namespace cannot be made here, or None when ``unshare -n`` works."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (util-linux / iproute2)"
    try:
        probe = subprocess.run(
            ["unshare", "-n", "sh", "-c", "ip link set lo up"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -n failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -n does not work here (needs root): {probe.stderr.strip()}"
    return None


def run_pytest_in_netns(
    nodeid: str, *, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``pytest <nodeid>`` in a fresh loopback-only namespace; return the result."""
    child_env = {**os.environ, **(env or {}), ENV_FLAG: "1"}
    cmd = [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-x",
        "-p",
        "no:cacheprovider",
        "-o",
        f"timeout={int(timeout)}",
        nodeid,
    ]
    return subprocess.run(
        cmd, cwd=ROOT, env=child_env, capture_output=True, text=True, timeout=timeout + CHILD_GRACE
    )


def failure_report(stdout: str, stderr: str) -> str:
    """What the outer test shows of a failed child: the child's tracebacks (its FAILURES
    section up to the captured output, where the assertion is), then the end of the rest
    (the gateway's log). A test's log alone can push the assertion out of a tail."""
    head = ""
    start = stdout.find("= FAILURES =")
    if start == -1:
        start = stdout.find("= ERRORS =")
    if start != -1:
        start = stdout.rfind("\n", 0, start) + 1
        end = stdout.find("- Captured ", start)
        head = stdout[start : end if end != -1 else None][:8000] + "\n...\n"
    return f"{head}{stdout[-6000:]}\n{stderr[-3000:]}"


def _run_here_or_in_netns(
    func: Callable[..., Any], requires: tuple[str, ...], timeout: float
) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if in_netns():
            assert_loopback_only()
            return func(*args, **kwargs)
        for path in requires:
            if not os.path.exists(path):
                pytest.skip(f"{path} is missing")
        reason = unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        nodeid = os.environ["PYTEST_CURRENT_TEST"].rsplit(" ", 1)[0]
        try:
            result = run_pytest_in_netns(nodeid, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            out, err = (
                b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
                for b in (exc.stdout, exc.stderr)
            )
            pytest.fail(
                f"the child pytest did not end {CHILD_GRACE} s after its own timeout"
                f" ({timeout:g} s):\n{failure_report(out, err)}",
                pytrace=False,
            )
        if result.returncode != 0:
            pytest.fail(
                "inside the loopback-only namespace:\n"
                + failure_report(result.stdout, result.stderr),
                pytrace=False,
            )
        if " passed" not in result.stdout:
            pytest.fail(f"the child pytest ran nothing:\n{result.stdout[-3000:]}", pytrace=False)
        return None

    # pytest-timeout's bound for this test: in the child the test's own; outside, the
    # child's run and its grace.
    limit = timeout if in_netns() else timeout + OUTER_GRACE
    return pytest.mark.timeout(limit)(wrapper)


@overload
def loopback_only(func: F) -> F: ...


@overload
def loopback_only(*, requires: Iterable[str] = (), timeout: float = 110.0) -> Callable[[F], F]: ...


def loopback_only(
    func: Callable[..., Any] | None = None,
    *,
    requires: Iterable[str] = (),
    timeout: float = 110.0,
) -> Any:
    """Decorate a test so that its body runs only in a loopback-only namespace.

    ``requires``: files that must exist (e.g. /usr/bin/chromium), else the test is
    skipped with their name. ``timeout``: bound of the child pytest run, in seconds.
    """
    needed = tuple(requires)
    if func is not None:
        return _run_here_or_in_netns(func, needed, timeout)
    return lambda f: _run_here_or_in_netns(f, needed, timeout)
