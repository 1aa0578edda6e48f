"""``scripts/freeswitch.sh check`` (esl_bridge/switch_check.py) against the simulator.

The simulator answers the api commands the check asks as FreeSWITCH 1.10.12 does
(tests/test_sim_recorded_ops.py); here it is set up well, then wrong in one way at a time,
and the check must say OK, or FAIL with the fix, and exit 0 or 1.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.esl_transcripts import FIXTURES
from support.ports_and_waits import free_port
from support.sim_wire import fs_frames

from esl_bridge.sim import Extension, SimConfig, SimulatorThread
from esl_bridge.sim.ops_api import DEFAULT_CODECS, DEFAULT_MODULES, default_dialplan
from esl_bridge.switch_check import route_for

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "freeswitch.sh"
SOCKET = ("127.0.0.1", 8084)


def conf(tmp_path: Path, esl_port: int, *, password: str = "ClueCon", extra: str = "") -> Path:
    path = tmp_path / "rtx.conf"
    path.write_text(
        f"""
[rtm2sip]
on = 1
acc_rule = 10[00-03]
[esl]
port = {esl_port}
password = {password}
[socket]
host = {SOCKET[0]}
port = {SOCKET[1]}
[auth]
open_mode = 1
{extra}
""",
        encoding="utf-8",
    )
    return path


def run_check(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "check", "--conf", str(path), "--timeout", "3", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """check name -> its whole line."""
    out = {}
    for line in result.stdout.splitlines():
        _status, _, rest = line.partition(" ")
        out[rest.strip().split(":", 1)[0]] = line
    return out


@pytest.fixture
def sim_factory() -> Iterator[type]:
    started: list[SimulatorThread] = []

    def make(**changes: object) -> SimulatorThread:
        config = SimConfig(socket_target=SOCKET, **changes)  # type: ignore[arg-type]
        sim = SimulatorThread(config).start()
        started.append(sim)
        return sim

    yield make  # type: ignore[misc]
    for sim in started:
        sim.stop()


def test_a_switch_set_up_as_the_readme_says_passes_every_check(
    sim_factory: type, tmp_path: Path
) -> None:
    sim = sim_factory()
    result = run_check(conf(tmp_path, sim.esl_port))
    assert result.returncode == 0, result.stdout + result.stderr
    found = lines(result)
    assert all(line.startswith("OK") for line in found.values()), result.stdout
    assert set(found) == {
        "event socket",
        *(f"module {m}" for m in ("mod_event_socket", "mod_sofia", "mod_commands")),
        *(f"module {m}" for m in ("mod_dptools", "mod_loopback", "mod_conference")),
        "esl_bridge_socket",
        "0 route",
        "socket mode",
        "rtp_autoflush",
        "codec opus",
        "codec PCMU",
        "codec PCMA",
        "acc_rule users",
    }
    assert "4 registered now (1000, 1001, 1002, 1003)" in found["acc_rule users"]
    # The password is never shown.
    assert "ClueCon" not in result.stdout + result.stderr


def test_each_misconfiguration_is_one_fail_line_with_its_fix(
    sim_factory: type, tmp_path: Path
) -> None:
    socket = f"{SOCKET[0]}:{SOCKET[1]}"
    operator_first = default_dialplan(socket).replace(
        'expression="^(operator|0)$"', 'expression="^0"'
    )
    sim = sim_factory(
        modules=DEFAULT_MODULES - {"mod_conference"},
        global_vars={"esl_bridge_socket": "127.0.0.1:9999"},
        codecs=tuple(c for c in DEFAULT_CODECS if c[1] != "mod_opus"),
        dialplan_xml=operator_first,
        extensions={"1000": Extension("echo"), "1001": Extension("not_registered")},
    )
    result = run_check(conf(tmp_path, sim.esl_port), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    failed = {c["name"]: c for c in report["checks"] if not c["ok"]}
    assert set(failed) == {
        "module mod_conference",
        "esl_bridge_socket",
        "0 route",
        "codec opus",
        "acc_rule users",
    }
    assert "load mod_conference" in failed["module mod_conference"]["fix"]
    assert failed["esl_bridge_socket"]["detail"] == (
        "127.0.0.1:9999, [socket] of rtx.conf is 127.0.0.1:8084"
    )
    assert "esl_bridge_socket=127.0.0.1:8084" in failed["esl_bridge_socket"]["fix"]
    assert "extension 'operator' (number 1" in failed["0 route"]["detail"]
    assert "00_esl_bridge.xml" in failed["0 route"]["fix"]
    assert "mod_opus" in failed["codec opus"]["fix"]
    assert failed["acc_rule users"]["detail"].startswith(
        "2 of 4 not in the directory of 127.0.0.1: 1002, 1003"
    )
    # The text form: the same verdicts, one line each, FAIL lines with "-- fix:".
    text = run_check(conf(tmp_path, sim.esl_port))
    assert text.returncode == 1
    fails = [line for line in text.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) == 5 and all(" -- fix: " in line for line in fails)


def test_a_route_without_autoflush_or_async_full_fails_those_checks(
    sim_factory: type, tmp_path: Path
) -> None:
    socket = f"{SOCKET[0]}:{SOCKET[1]}"
    plain = (
        default_dialplan(socket)
        .replace('<action application="set" data="rtp_autoflush=true"></action>', "")
        .replace(f"{socket} async full", socket)
    )
    sim = sim_factory(dialplan_xml=plain)
    result = run_check(conf(tmp_path, sim.esl_port))
    assert result.returncode == 1
    found = lines(result)
    assert found["0 route"].startswith("OK")
    assert found["socket mode"].startswith("FAIL")
    assert found["rtp_autoflush"].startswith("FAIL")


def test_no_event_socket_or_a_wrong_password_fails_at_once(
    sim_factory: type, tmp_path: Path
) -> None:
    sim = sim_factory()
    wrong = run_check(conf(tmp_path, sim.esl_port, password="NotTheOne"))
    assert wrong.returncode == 1
    assert wrong.stdout.startswith("FAIL event socket: 127.0.0.1:")
    assert "refused the [esl] password" in wrong.stdout
    assert "NotTheOne" not in wrong.stdout + wrong.stderr
    nobody = run_check(conf(tmp_path, free_port()))
    assert nobody.returncode == 1
    assert nobody.stdout.startswith("FAIL event socket: cannot connect to 127.0.0.1:")


def test_an_unusable_conf_is_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("[esl]\nport = nope\n", encoding="utf-8")
    result = run_check(bad)
    assert result.returncode == 2
    assert "port" in result.stderr


def test_the_route_rule_on_the_recorded_vanilla_dialplan() -> None:
    """The recorded switch: vanilla dialplan with the 0 route included near the end."""
    [body] = [
        f.body
        for f in fs_frames("ops/esl_inbound_check_api_replies.txt")
        if f.body.startswith(b'<context name="default">')
    ]
    assert (FIXTURES / "ops").is_dir()
    for number in ("01000", "0alice"):
        route = route_for(body.decode(), number)
        assert route is not None
        assert (route.name, route.socket) == ("esl_bridge", "127.0.0.1:8084 async full")
        assert route.autoflush_before_socket
    operator = route_for(body.decode(), "0")  # the vanilla operator route takes plain 0
    assert operator is not None and operator.name == "operator"
