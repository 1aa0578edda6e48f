"""``scripts/freeswitch.sh --list`` and ``--acc-rule`` (esl_bridge/provisioning.py).

--list reads registrations with ``fs_cli -x 'show registrations'``: the fake fs_cli here
answers what FreeSWITCH 1.10.12 answered with one phone registered
(tests/fixtures/freeswitch/ops/esl_inbound_registrations.txt).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.sim_wire import fs_frames

from esl_bridge.numbers import AccRuleError, parse_acc_rule
from esl_bridge.provisioning import acc_rule_for, compare
from esl_bridge.sim import Extension, SimConfig, SimulatorThread

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "freeswitch.sh"
REGISTRATIONS = "ops/esl_inbound_registrations.txt"


def recorded_replies() -> list[bytes]:
    return [f.body for f in fs_frames(REGISTRATIONS) if f.content_type == "api/response"]


# -- the rule ----------------------------------------------------------------------------


def test_runs_become_ranges_with_the_longest_shared_prefix() -> None:
    assert acc_rule_for(["1020", "1021", "1022"]) == "102[0-2]"
    assert acc_rule_for([str(n) for n in range(1020, 1100)]) == "10[20-99]"
    assert acc_rule_for(["1005", "999", "1000", "1001", "1005"]) == "999;100[0-1];1005"
    assert acc_rule_for(["1095", "1105", *map(str, range(1096, 1105))]) == "1[095-105]"
    assert acc_rule_for(["998", "999", "1000"]) == "99[8-9];1000"  # lengths split a run
    for bad in ([], ["10a"], ["١٢"]):
        with pytest.raises(AccRuleError):
            acc_rule_for(bad)


@given(st.sets(st.integers(min_value=1, max_value=99_999), min_size=1, max_size=300))
@settings(deadline=None)  # about results, not speed: a loaded machine may be slow
def test_the_rule_expands_to_exactly_its_numbers(numbers: set[int]) -> None:
    texts = [str(n) for n in numbers]
    assert sorted(parse_acc_rule(acc_rule_for(texts))) == sorted(texts)


def test_compare_names_each_side() -> None:
    diff = compare(["1000", "1001", "1005"], ["1000", "1001", "1002", "1003"])
    assert (diff.not_in_rule, diff.not_provisioned, diff.same) == (
        ("1005",),
        ("1002", "1003"),
        False,
    )
    assert compare(["1000"], ["1000"]).same


# -- the script ---------------------------------------------------------------------------


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    d = tmp_path / "users"
    d.mkdir()
    return d


def script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {"PATH": os.environ["PATH"], "LC_ALL": "C", **(env or {})}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=60, check=False
    )


def provision(directory: Path, *selection: str) -> None:
    done = script("--dir", str(directory), "--password", "pw", "--no-reload", *selection)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def fs_cli(tmp_path: Path) -> Path:
    """A fake fs_cli answering `show registrations` as the recorded switch did (1017)."""
    [plain] = [r for r in recorded_replies() if r.startswith(b"reg_user,")]
    body = tmp_path / "registrations.txt"
    body.write_bytes(plain)
    fake = tmp_path / "fs_cli"
    fake.write_text(
        '#!/bin/sh\n[ "$1 $2" = "-x show registrations" ] && cat "'
        + str(body)
        + '" && exit 0\nexit 1\n'
    )
    fake.chmod(0o755)
    return fake


def test_list_says_which_managed_users_are_registered(directory: Path, fs_cli: Path) -> None:
    provision(directory, "--range", "1016-1018")
    (directory / "1019.xml").write_text('<include><user id="1019"/></include>\n')  # not ours
    result = script("--dir", str(directory), "--list", env={"FS_CLI": str(fs_cli)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "1016 not registered",
        "1017 registered",
        "1018 not registered",
    ]
    as_json = script("--dir", str(directory), "--list", "--json", env={"FS_CLI": str(fs_cli)})
    assert json.loads(as_json.stdout) == {
        "directory": str(directory),
        "users": [
            {"extension": "1016", "registered": False},
            {"extension": "1017", "registered": True},
            {"extension": "1018", "registered": False},
        ],
    }


def test_list_without_fs_cli_says_unknown(directory: Path, tmp_path: Path) -> None:
    provision(directory, "--ext", "1016")
    missing = tmp_path / "no-such-fs_cli"
    result = script("--dir", str(directory), "--list", "--json", env={"FS_CLI": str(missing)})
    assert result.returncode == 0
    assert json.loads(result.stdout)["users"] == [{"extension": "1016", "registered": None}]
    assert "registration state unknown" in result.stderr


def test_acc_rule_prints_and_checks_rtx_conf(directory: Path, tmp_path: Path) -> None:
    provision(directory, "--range", "1020-1099", "--ext", "1005")
    printed = script("--dir", str(directory), "--acc-rule")
    assert (printed.returncode, printed.stdout) == (0, "1005;10[20-99]\n")
    conf = tmp_path / "rtx.conf"
    conf.write_text("[rtm2sip]\non = 1\nacc_rule = 1005;10[20-99]\n[auth]\nopen_mode = 1\n")
    same = script("--dir", str(directory), "--acc-rule", "--conf", str(conf))
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout.startswith("OK ")
    conf.write_text("[rtm2sip]\non = 1\nacc_rule = 10[20-98];1100\n[auth]\nopen_mode = 1\n")
    differs = script("--dir", str(directory), "--acc-rule", "--conf", str(conf), "--json")
    assert differs.returncode == 1
    assert json.loads(differs.stdout) == {
        "acc_rule": "1005;10[20-99]",
        "users": 81,
        "ok": False,
        "not_in_rule": ["1005", "1099"],
        "not_provisioned": ["1100"],
    }


@pytest.mark.parametrize(
    "args",
    [
        ("--list", "--ext", "1000"),
        ("--acc-rule", "--remove"),
        ("--list", "--conf", "x.conf"),
        ("--range", "1000-1001", "--conf", "x.conf"),
    ],
)
def test_mixed_modes_are_usage_errors(directory: Path, args: tuple[str, ...]) -> None:
    result = script("--dir", str(directory), *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert list(directory.iterdir()) == []


def test_acc_rule_of_an_empty_directory_is_an_error(directory: Path) -> None:
    result = script("--dir", str(directory), "--acc-rule")
    assert result.returncode == 1
    assert "no user" in result.stderr


# -- the simulator's registrations against the recording ------------------------------------


def test_the_simulator_lists_registrations_as_recorded() -> None:
    plain, as_json = recorded_replies()[:2]
    recorded_row = json.loads(as_json)["rows"][0]
    config = SimConfig(extensions={"1017": Extension("echo"), "1019": Extension("not_registered")})
    with SimulatorThread(config) as sim:
        mine = json.loads(sim.api("show registrations as json"))
        text = sim.api("show registrations")
    assert mine["row_count"] == 1
    [row] = mine["rows"]
    assert list(row) == list(recorded_row)
    assert (row["reg_user"], row["realm"], row["network_proto"]) == ("1017", "127.0.0.1", "udp")
    assert text.split("\n")[0] == plain.decode().split("\n")[0]
    assert text.endswith("\n\n1 total.\n") and plain.endswith(b"\n\n1 total.\n")
