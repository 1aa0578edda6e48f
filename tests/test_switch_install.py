"""``scripts/freeswitch.sh check --install [--dry-run]``: the README's three set-up steps
on a FreeSWITCH conf directory (here a temporary one), then the checks (against the
simulator). Running it again changes nothing.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from esl_bridge.sim import SimConfig, SimulatorThread

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "freeswitch.sh"
VANILLA_VARS = """<include>
  <X-PRE-PROCESS cmd="set" data="default_password=1234"/>
  <X-PRE-PROCESS cmd="set" data="domain=$${local_ip_v4}"/>
</include>
"""


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    thread = SimulatorThread(SimConfig(socket_target=("127.0.0.1", 8084))).start()
    yield thread
    thread.stop()


def _conf_dir(tmp: Path, vars_xml: str = VANILLA_VARS) -> Path:
    conf = tmp / "fsconf"
    (conf / "dialplan" / "default").mkdir(parents=True)
    (conf / "vars.xml").write_text(vars_xml)
    return conf


def _rtx(tmp: Path, esl_port: int) -> Path:
    path = tmp / "rtx.conf"
    path.write_text(
        f"[esl]\nport = {esl_port}\n[socket]\nhost = 127.0.0.1\nport = 8084\n"
        "[auth]\nopen_mode = 1\n"
    )
    return path


def _install(rtx: Path, conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT), "check", "--install", "--conf", str(rtx), "--conf-dir", str(conf)]
    return subprocess.run(
        [*command, "--timeout", "3", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_install_does_the_three_steps_once_then_checks(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    conf = _conf_dir(tmp_path)
    rtx = _rtx(tmp_path, sim.esl_port)

    dry = _install(rtx, conf, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.splitlines() == [
        f"would add esl_bridge_socket=127.0.0.1:8084 to {conf}/vars.xml",
        f"would copy {ROOT}/dialplan/default/00_esl_bridge.xml to "
        f"{conf}/dialplan/default/00_esl_bridge.xml",
        f"would copy {ROOT}/dialplan/default/01_esl_bridge_conference.xml to "
        f"{conf}/dialplan/default/01_esl_bridge_conference.xml",
        "would run: reloadxml",
    ]
    assert (conf / "vars.xml").read_text() == VANILLA_VARS
    assert not (conf / "dialplan" / "default" / "00_esl_bridge.xml").exists()

    done = _install(rtx, conf)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[:4] == [
        f"done: add esl_bridge_socket=127.0.0.1:8084 to {conf}/vars.xml",
        f"done: copy {ROOT}/dialplan/default/00_esl_bridge.xml to "
        f"{conf}/dialplan/default/00_esl_bridge.xml",
        f"done: copy {ROOT}/dialplan/default/01_esl_bridge_conference.xml to "
        f"{conf}/dialplan/default/01_esl_bridge_conference.xml",
        "done: reloadxml (+OK [Success])",
    ]
    assert any(line.startswith("OK   0 route:") for line in out[4:]), done.stdout
    assert (conf / "vars.xml").read_text() == VANILLA_VARS.replace(
        "</include>",
        '  <X-PRE-PROCESS cmd="set" data="esl_bridge_socket=127.0.0.1:8084"/>\n</include>',
    )
    assert (conf / "dialplan" / "default" / "00_esl_bridge.xml").read_bytes() == (
        ROOT / "dialplan" / "default" / "00_esl_bridge.xml"
    ).read_bytes()

    again = _install(rtx, conf)
    assert again.returncode == 0
    assert again.stdout.splitlines()[:3] == [
        f"unchanged: {conf}/vars.xml",
        f"unchanged: {conf}/dialplan/default/00_esl_bridge.xml",
        f"unchanged: {conf}/dialplan/default/01_esl_bridge_conference.xml",
    ]
    assert "reloadxml" not in again.stdout


def test_the_dial_in_route_follows_the_prefix_and_is_left_out_when_off(
    tmp_path: Path,
) -> None:
    from esl_bridge import switch_install as si

    conf = _conf_dir(tmp_path)
    dialplan = ROOT / "dialplan"
    socket = "127.0.0.1:8084"
    assert len(si.plan(conf, socket, dialplan, "")) == 2  # dial-in off: no route
    route = si.plan(conf, socket, dialplan, "77")[2]
    assert route.path == conf / "dialplan" / "default" / "01_esl_bridge_conference.xml"
    assert 'expression="^77([0-9]{4,8})$"' in route.text and "^9(" not in route.text
    assert route.changed and route.what.endswith("(prefix 77)")
    edited = tmp_path / "dialplan" / "default"
    edited.mkdir(parents=True)
    (edited / "00_esl_bridge.xml").write_text("<include/>")
    (edited / "01_esl_bridge_conference.xml").write_text("<include/>")  # no expression
    with pytest.raises(si.InstallError, match="edited by hand"):
        si.plan(conf, socket, tmp_path / "dialplan", "9")


def test_install_corrects_a_wrong_socket_line_even_one_inside_a_comment(
    sim: SimulatorThread, tmp_path: Path
) -> None:
    wrong = VANILLA_VARS.replace(
        "</include>",
        '  <!-- <X-PRE-PROCESS cmd="set" data="esl_bridge_socket=127.0.0.1:9999"/> -->\n</include>',
    )
    conf = _conf_dir(tmp_path, wrong)
    done = _install(_rtx(tmp_path, sim.esl_port), conf)
    assert done.returncode == 0, done.stdout + done.stderr
    text = (conf / "vars.xml").read_text()
    assert "9999" not in text
    assert text.count("esl_bridge_socket=") == 1
    assert f"done: set esl_bridge_socket=127.0.0.1:8084 in {conf}/vars.xml" in done.stdout


def test_install_without_a_freeswitch_conf_changes_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "nothing"
    empty.mkdir()
    done = _install(_rtx(tmp_path, 1), empty)
    assert done.returncode == 1
    assert "vars.xml does not exist" in done.stderr
    assert list(empty.iterdir()) == []
    plain = subprocess.run(
        [str(SCRIPT), "check", "--dry-run"], capture_output=True, text=True, check=False
    )
    assert plain.returncode == 2 and "--dry-run goes with --install" in plain.stderr
