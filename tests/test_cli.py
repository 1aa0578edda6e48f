"""The esl-bridge command as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esl_bridge import __version__

FIXTURES = Path(__file__).parent / "fixtures" / "rtx"


def esl_bridge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esl_bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_version() -> None:
    result = esl_bridge("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"esl-bridge {__version__}"


def test_console_script_is_installed() -> None:
    exe = shutil.which("esl-bridge")
    if exe is None:
        pytest.skip("package not installed with pip (console script missing)")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == f"esl-bridge {__version__}"


def runnable_copy(fixture: str, tmp_path: Path) -> Path:
    """An SRProxy sample plus the [auth] section run needs (SRProxy has none)."""
    path = tmp_path / fixture
    text = (FIXTURES / fixture).read_text()
    path.write_text(text + "\n[auth]\napp_certificate = cert-0123456789abcdef\n")
    return path


def test_check_config_prints_effective_settings_with_secrets_masked(tmp_path: Path) -> None:
    result = esl_bridge("check-config", str(runnable_copy("seed_guide.conf", tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "sip_pwd = ***" in result.stdout
    assert "password = ***" in result.stdout
    assert "1234" not in result.stdout
    assert "ClueCon" not in result.stdout
    assert "acc_rule = 1005;10[06-19]" in result.stdout
    assert "# acc_rule: 15 numbers (1005, 1006, 1007, 1008, 1009, ...)" in result.stdout
    assert "cert-0123456789abcdef" not in result.stdout
    assert "OK" in result.stdout.splitlines()[-1]


def test_check_config_reports_legacy_keys_as_warnings(tmp_path: Path) -> None:
    result = esl_bridge("check-config", str(runnable_copy("srproxy_old.conf", tmp_path)))
    assert result.returncode == 0
    assert "warning:" in result.stderr and "[ivr] on" in result.stderr


def test_bad_file_exits_2_naming_file_section_key_value_reason(tmp_path: Path) -> None:
    path = tmp_path / "rtx.conf"
    path.write_text("[esl]\nport=abc ## the ESL port\npassword=NotShown1\n[log]\nlevel=9\n")
    result = esl_bridge("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: [esl] port = 'abc': not a whole number" in result.stderr
    assert f"{path}: [log] level = '9': is above the maximum 5" in result.stderr
    assert "NotShown1" not in result.stderr + result.stdout


def test_a_bad_one_way_audio_threshold_stops_the_start_with_status_2(tmp_path: Path) -> None:
    path = tmp_path / "rtx.conf"
    path.write_text(
        "[auth]\nopen_mode = 1\n[media]\nmedia_problem_after = 0\nsilence_floor_dbov = 3\n"
    )
    for command in ("check-config", "run"):
        result = esl_bridge(command, str(path))
        assert result.returncode == 2, (command, result.stderr)
        assert f"{path}: [media] media_problem_after = '0': is below the minimum 1" in (
            result.stderr
        )
        assert f"{path}: [media] silence_floor_dbov = '3': is above the maximum -20" in (
            result.stderr
        )


def test_missing_file_exits_2() -> None:
    result = esl_bridge("check-config", "/nonexistent/rtx.conf")
    assert result.returncode == 2
    assert "file not found" in result.stderr


def test_run_refuses_a_config_without_any_way_to_log_in() -> None:
    """An unchanged SRProxy file has no [auth]: nobody could log in, so run says so,
    and check-config says the same."""
    result = esl_bridge("run", str(FIXTURES / "seed_guide.conf"))
    assert result.returncode == 2
    assert "[auth] app_certificate is empty" in result.stderr
    checked = esl_bridge("check-config", str(FIXTURES / "seed_guide.conf"))
    assert checked.returncode == 2
    assert (checked.stdout, checked.stderr) == ("", result.stderr)


# Files check-config used to pass and run then choked on (a traceback, NaN timers, a
# refusal of its own). Each: (text, what the one problem line says).
_RUNNABLE = "[auth]\nopen_mode = 1\n"
BAD_FILES: dict[str, tuple[str, str]] = {
    "nan_grace": (_RUNNABLE + "[limits]\npresence_grace = nan\n", "not a finite number"),
    "nan_media_timeout": (_RUNNABLE + "[media]\nmedia_timeout = nan\n", "not a finite number"),
    "nan_command_timeout": (_RUNNABLE + "[esl]\ncommand_timeout = nan\n", "not a finite"),
    "log_file_is_a_directory": (_RUNNABLE + "[log]\nfile = {tmp}\n", "is a directory"),
    "appid_with_space": (_RUNNABLE + "[global]\nappid = 'my app'\n", "A-Z a-z 0-9 _ . -"),
    "appid_not_ascii": (_RUNNABLE + "[global]\nappid = ü\n", "A-Z a-z 0-9 _ . -"),
    "appid_with_nul": (_RUNNABLE + "[global]\nappid = 'a\x00b'\n", "control character"),
    "esl_password_with_newline": (
        _RUNNABLE + "[esl]\npassword = '''ClueCon\nevent plain ALL'''\n",
        "[esl] password = '***': contains a control character",
    ),
    "sip_svr_interpolation": (_RUNNABLE + "[global]\nsip_svr = %(foo)s\n", "interpolation"),
    "empty_file": ("", "[auth] app_certificate is empty"),
    "unicast_range_reversed": (
        _RUNNABLE + "[media]\nunicast_port_min = 31000\nunicast_port_max = 30000\n",
        "no (even, odd) port pairs",
    ),
    "max_calls_over_port_pairs": (_RUNNABLE + "[limits]\nmax_calls = 501\n", "max_calls"),
    "tls_files_not_pem": (
        _RUNNABLE + "[web]\ntls_cert = {tmp}/junk.pem\ntls_key = {tmp}/junk.pem\n",
        "cannot load it with tls_key",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_run_refuses_at_once_what_check_config_refuses(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.ports_and_waits import free_port

    from esl_bridge.cli import main

    text, fragment = BAD_FILES[name]
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    path = tmp_path / "rtx.conf"
    # Free loopback ports: if run wrongly started, it would not collide with anything.
    ports = f"[web]\nport = {free_port()}\n[socket]\nport = {free_port()}\n"
    if "[web]" in text:
        ports = f"[socket]\nport = {free_port()}\n"
    path.write_text(text.format(tmp=tmp_path) + ports, encoding="utf-8")

    assert main(["check-config", str(path)]) == 2
    checked = capsys.readouterr()
    assert checked.out == ""
    header, problem = checked.err.splitlines()
    assert header == "esl-bridge: 1 problem(s) in the configuration:"
    assert problem.startswith(f"  {path}: ") and fragment in problem

    # run refuses before starting anything; were it to start, the timeout fails the test.
    result = esl_bridge("run", str(path))
    assert result.returncode == 2
    assert result.stderr == checked.err
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_no_command_prints_help_and_fails() -> None:
    result = esl_bridge()
    assert result.returncode == 1
    assert "check-config" in result.stderr


def test_token_is_minted_for_the_configured_appid_and_verifies(tmp_path: Path) -> None:

    from esl_bridge.signaling.auth import TokenError, TokenInfo, verify_token

    path = tmp_path / "rtx.conf"
    cert = "cert-0123456789abcdef"
    path.write_text(f"[global]\nappid=acme\n[auth]\napp_certificate={cert}\ntoken_ttl=600\n")
    result = esl_bridge("token", str(path), "--uid", "alice")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    info = verify_token(token, "acme", "alice", cert, time.time())
    assert isinstance(info, TokenInfo) and info.uid == "alice"
    assert 590 <= info.expires_at - time.time() <= 600
    assert verify_token(token, "acme", "bob", cert, time.time()) is TokenError.WRONG_UID
    assert cert not in result.stdout + result.stderr
    # a standard JWT (HS256) any library can read
    import jwt

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    decoded = jwt.decode(token, cert, algorithms=["HS256"], audience="acme")
    assert decoded["sub"] == "alice" and decoded["exp"] - decoded["iat"] == 600


def test_token_needs_a_certificate_and_a_valid_uid(tmp_path: Path) -> None:
    result = esl_bridge("token", str(FIXTURES / "seed_guide.conf"), "--uid", "alice")
    assert result.returncode == 2
    assert "app_certificate is empty" in result.stderr
    path = tmp_path / "rtx.conf"
    path.write_text("[auth]\napp_certificate=cert-0123456789abcdef\n")
    result = esl_bridge("token", str(path), "--uid", "a b")
    assert result.returncode == 1
    assert "not a valid uid" in result.stderr


def test_hub_settings_come_from_rtx_conf() -> None:
    from esl_bridge import config
    from esl_bridge.signaling.settings import signaling_settings

    settings = config.from_text(
        "[global]\nappid=acme\n[auth]\nopen_mode=1\n[limits]\ninvite_offline_timeout=5\n"
        "invite_no_response_timeout=6\ninvite_expire_timeout=7\npresence_grace=3\n"
        "messages_per_second=4\nmax_pending_invitations=2\n"
    )
    hub = signaling_settings(settings)
    assert hub.appid == "acme" and hub.open_mode
    timeouts = hub.invitation_timeouts
    assert (timeouts.peer_offline, timeouts.no_response, timeouts.answer) == (5, 6, 7)
    assert (hub.grace_period, hub.rate_per_second, hub.rate_burst) == (3, 4, 8)
    assert hub.max_pending_invitations == 2


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "esl_bridge", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _get_json(url: str, timeout: float = 20.0) -> tuple[int, dict]:
    """Poll until the server answers; returns (status, body)."""
    import json
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    import signal

    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def test_demo_runs_serves_and_stops_cleanly_on_sigterm() -> None:
    from support.gateway_support import wait_until
    from support.ports_and_waits import free_port

    port = free_port()
    process = _start(["demo", "--port", str(port)])
    try:
        # The web port can answer before the ESL connection to the built-in simulator is
        # up (healthz then says 503, disconnected: right, and seen in CI): wait for it.
        url = f"http://127.0.0.1:{port}/healthz"
        wait_until(lambda: _get_json(url)[1]["esl"] == "connected", 30, "ESL connected")
        status, health = _get_json(url)
        assert (status, health["esl"]) == (200, "connected")
        status, client = _get_json(f"http://127.0.0.1:{port}/config.json")
        assert client["demo"] is True and client["open_mode"] is True
        assert "1000" in client["numbers"] and client["ice_servers"] == []
    finally:
        code, err = _stop(process)
    assert code == 0, err
    assert "gateway.stopped" in err


def _conf_with_no_switch(tmp_path: Path) -> tuple[Path, int]:
    """An rtx.conf whose FreeSWITCH port has nobody behind it; the path and the web port."""
    from support.ports_and_waits import free_port

    web, esl, sock = free_port(), free_port(), free_port()
    path = tmp_path / "rtx.conf"
    path.write_text(
        f"[esl]\nport={esl}\n[socket]\nport={sock}\n[web]\nport={web}\n"
        "[auth]\napp_certificate=cert-0123456789abcdef\n"
    )
    return path, web


def test_run_reports_freeswitch_unreachable_and_keeps_trying(tmp_path: Path) -> None:
    path, web = _conf_with_no_switch(tmp_path)
    process = _start(["run", str(path)])
    try:
        status, health = _get_json(f"http://127.0.0.1:{web}/healthz")
        assert status == 503 and health["status"] == "degraded"
        assert process.poll() is None  # still running, reconnecting
    finally:
        code, err = _stop(process)
    assert code == 0, err
    assert "cert-0123456789abcdef" not in err


def test_sigterm_while_starting_is_a_clean_stop(tmp_path: Path) -> None:
    """SIGTERM at the first line the gateway logs, deep inside its start (its web port may
    already answer then, as the test above saw): the stop is clean, exit status 0, not a
    kill by the default action (-15) because the handler came only after the start."""
    import signal

    path, _ = _conf_with_no_switch(tmp_path)
    process = _start(["run", str(path)])
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # blocks until the gateway logs: no clock
        assert '"event"' in first, f"not a log line of the start: {first!r}"
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, first + rest
    assert "gateway.stopped" in rest


def test_run_connects_to_freeswitch_from_rtx_conf(tmp_path: Path) -> None:
    from support.gateway_support import wait_until
    from support.ports_and_waits import free_port

    from esl_bridge.sim import SimConfig, SimulatorThread

    web, sock = free_port(), free_port()
    with SimulatorThread(SimConfig(socket_target=("127.0.0.1", sock))) as sim:
        path = tmp_path / "rtx.conf"
        path.write_text(
            f"[esl]\nport={sim.esl_port}\npassword={sim.password}\n[socket]\nport={sock}\n"
            f"[web]\nport={web}\n[auth]\napp_certificate=cert-0123456789abcdef\n"
            "[log]\nlevel=1\n"
        )
        process = _start(["run", str(path)])
        try:
            # The web server may answer before the ESL connection is up (503 "connecting"
            # on a busy machine): wait for the connection, then check what healthz says.
            url = f"http://127.0.0.1:{web}/healthz"
            wait_until(lambda: _get_json(url)[1]["esl"] == "connected", 30, "ESL connected")
            status, health = _get_json(url)
            assert (status, health["esl"]) == (200, "connected")
        finally:
            code, err = _stop(process)
        assert code == 0, err
        assert sim.password not in err  # the ESL password never reaches the log
