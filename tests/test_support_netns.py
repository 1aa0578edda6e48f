"""The loopback-only namespace helper (tests/support/netns.py) tells why a child failed:
its assertion is shown even when the test's log is long, the outer timeout leaves the
child time to report its own, and a child that hangs past its grace is reported with
what it printed. (Seen on a loaded machine: a 6000-character tail showed only the
gateway's log, and the outer 120 s timeout cut a child that had 180 s.)"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from support import netns

TRACEBACK = """\
=================================== FAILURES ===================================
_____________________________ test_something ___________________________________
    def test_something() -> None:
>       assert page.hook("connection()")["state"] == "connected"
E       AssertionError: assert 'connecting' == 'connected'

tests/test_web_client.py:759: AssertionError
"""
LOG = "".join(
    f"2026-11-28 13:26:{i % 60:02d} [info     ] media.stats call_id=c{i}\n" for i in range(600)
)
CHILD_OUT = (
    "F" + " " * 71 + "[100%]\n" + TRACEBACK + "----------------------------- Captured stdout call"
    " -----------------------------\n" + LOG + "=== short test summary info ===\n"
    "FAILED tests/test_web_client.py::test_something - Asser...\n1 failed in 3.00s\n"
)


def test_the_report_shows_the_assertion_before_a_long_log() -> None:
    assert len(LOG) > 20000
    report = netns.failure_report(CHILD_OUT, "a warning on stderr")
    assert report.startswith("=================================== FAILURES")
    assert "E       AssertionError: assert 'connecting' == 'connected'" in report
    assert "tests/test_web_client.py:759: AssertionError" in report
    assert report.index("AssertionError") < report.index("media.stats")
    assert "1 failed in 3.00s" in report  # the end of the output is still there
    assert report.endswith("a warning on stderr")
    assert len(report) < 8000 + 6000 + 3000 + 10


def test_a_report_without_a_failures_section_is_the_tail() -> None:
    out = "x" * 10000 + "ERROR: file or directory not found: tests/nothing.py\n"
    report = netns.failure_report(out, "")
    assert report.startswith("x")
    assert report.rstrip().endswith("not found: tests/nothing.py")
    assert len(report) == 6000 + 1


def _timeout_mark(test: Any) -> float:
    [mark] = [m for m in test.pytestmark if m.name == "timeout"]
    return float(mark.args[0])


def test_the_outer_timeout_leaves_the_child_its_own_and_a_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def body() -> None:
        pass

    monkeypatch.delenv(netns.ENV_FLAG, raising=False)
    assert _timeout_mark(netns.loopback_only(timeout=180)(body)) == 180 + netns.OUTER_GRACE
    assert _timeout_mark(netns.loopback_only(body)) == 110 + netns.OUTER_GRACE
    assert netns.OUTER_GRACE > netns.CHILD_GRACE > 0
    monkeypatch.setenv(netns.ENV_FLAG, "1")  # in the child: the test's own bound
    assert _timeout_mark(netns.loopback_only(timeout=180)(body)) == 180


def test_a_child_that_hangs_past_its_grace_is_reported_with_its_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def hangs(nodeid: str, *, timeout: float) -> Any:
        raise subprocess.TimeoutExpired(
            ["pytest", nodeid], timeout, output=CHILD_OUT.encode(), stderr=b"still running"
        )

    def body() -> None:
        raise AssertionError("the body runs in the child only")

    monkeypatch.delenv(netns.ENV_FLAG, raising=False)
    monkeypatch.setattr(netns, "unavailable_reason", lambda: None)
    monkeypatch.setattr(netns, "run_pytest_in_netns", hangs)
    with pytest.raises(pytest.fail.Exception) as failed:
        netns.loopback_only(timeout=42)(body)()
    message = str(failed.value)
    assert message.startswith(
        f"the child pytest did not end {netns.CHILD_GRACE} s after its own timeout (42 s)"
    )
    assert "E       AssertionError: assert 'connecting' == 'connected'" in message
    assert message.endswith("still running")
