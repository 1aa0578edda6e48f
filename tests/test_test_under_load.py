"""scripts/test-under-load.sh: the suite beside four CPU hogs, in lanes side by side.

Run here on one fast pure test file instead of the whole suite, and without the script's
install step (``TEST_UNDER_LOAD_INSTALL=0``: the package is installed already, and tests
never reach a registry).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.netns import unavailable_reason

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test-under-load.sh"
FAST = "tests/test_call_kinds.py"


def run(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The script, its clone and logs under ``tmp`` (TMPDIR): nothing left in /tmp."""
    env = {**os.environ, "TEST_UNDER_LOAD_INSTALL": "0", "TMPDIR": str(tmp)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


needs_git = pytest.mark.skipif(
    not (ROOT / ".git").exists() or shutil.which("git") is None,
    reason="the script tests the checked-out commit: needs a git checkout",
)


@needs_git
def test_two_lanes_of_two_runs_each_are_counted_and_the_hogs_stop(tmp_path: Path) -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    r = run(tmp_path, "2", "2", FAST)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"logs in {tmp_path}/esl-bridge-load." in r.stdout.splitlines()[0], r.stdout
    lines = [line for line in r.stdout.splitlines() if line.startswith("lane ")]
    assert sorted(line.split(" commit ")[0] for line in lines) == [
        "lane 1 run 1",
        "lane 1 run 2",
        "lane 2 run 1",
        "lane 2 run 2",
    ], r.stdout
    assert all(" exit=0 " in line and " passed" in line for line in lines), r.stdout
    assert r.stdout.splitlines()[-1] == "under load: runs=4 passed=4 failed=0 lanes=2 hogs=4"
    [hog_line] = [
        line for line in r.stdout.splitlines() if line.startswith("test-under-load: hogs ")
    ]
    pids = [int(pid) for pid in hog_line.split()[2:]]
    assert len(pids) == 4, hog_line
    # Its own hogs, by pid: other runs of the script may have hogs of their own meanwhile.
    alive = [
        pid
        for pid in pids
        if Path(f"/proc/{pid}/cmdline").exists()
        and Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == b"yes"
    ]
    assert alive == [], f"the script's `yes` hogs outlived it: {alive}"


@needs_git
def test_a_run_that_fails_fails_the_script(tmp_path: Path) -> None:
    # pytest's exit status 5 (no test collected) is a failed run too.
    r = run(tmp_path, "1", "1", FAST, "-k", "no_test_has_this_name")
    assert r.returncode == 1, r.stdout + r.stderr
    assert " exit=5 " in r.stdout, r.stdout
    assert r.stdout.splitlines()[-1] == "under load: runs=1 passed=0 failed=1 lanes=1 hogs=4"


@pytest.mark.parametrize("args", [["x"], ["0"], ["1", "0"], ["1", "-2"]])
def test_bad_counts_are_refused_before_anything_starts(args: list[str], tmp_path: Path) -> None:
    r = run(tmp_path, *args)
    assert r.returncode == 2
    assert "usage:" in r.stderr and r.stdout == ""


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck() -> None:
    r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
