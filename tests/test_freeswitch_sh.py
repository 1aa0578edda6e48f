"""scripts/freeswitch.sh (directory user provisioning) and the dialplan/ XML.

The script runs against temporary directories with a PATH holding only the
tools it needs, so whether fs_cli is "installed" is decided by each test.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "freeswitch.sh"
DIALPLAN = ROOT / "dialplan" / "default" / "00_esl_bridge.xml"
VARS = ROOT / "dialplan" / "esl_bridge_vars.xml"
FIXTURE = ROOT / "tests" / "fixtures" / "freeswitch" / "dialplan_webrtc_gw_socket.xml"
MARKER = "esl-bridge:managed"

TOOLS = (
    "bash",
    "cat",
    "chgrp",
    "chmod",
    "chown",
    "grep",
    "head",
    "mktemp",
    "mv",
    "od",
    "rm",
    "sed",
    "sort",
    "tr",
)

VANILLA_1000 = """\
<include>
  <user id="1000">
    <params>
      <param name="password" value="$${default_password}"/>
      <param name="vm-password" value="1000"/>
    </params>
    <variables>
      <variable name="toll_allow" value="domestic,international,local"/>
      <variable name="accountcode" value="1000"/>
      <variable name="user_context" value="default"/>
      <variable name="effective_caller_id_name" value="Extension 1000"/>
      <variable name="effective_caller_id_number" value="1000"/>
      <variable name="outbound_caller_id_name" value="$${outbound_caller_name}"/>
      <variable name="outbound_caller_id_number" value="$${outbound_caller_id}"/>
      <variable name="callgroup" value="techsupport"/>
      <variable name="note" value="10000 21000 1000,1000,1000 x1000"/>
    </variables>
  </user>
</include>
"""

FOREIGN = """\
<include>
  <user id="{n}">
    <params><param name="password" value="mine"/></params>
  </user>
</include>
"""


# ------------------------------------------------------------------ helpers --


@pytest.fixture
def tools_bin(tmp_path: Path) -> Path:
    """A directory with just the tools the script uses (no fs_cli)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run the script"
        (bin_dir / tool).symlink_to(found)
    return bin_dir


@pytest.fixture
def users(tmp_path: Path) -> Path:
    d = tmp_path / "directory" / "default"
    d.mkdir(parents=True)
    return d


@pytest.fixture
def fake_fs_cli(tmp_path: Path) -> tuple[Path, Path]:
    """A fake fs_cli that appends its arguments to a log; returns (bin dir, log)."""
    fake_dir = tmp_path / "fakebin"
    fake_dir.mkdir()
    log = tmp_path / "fs_cli.log"
    script = fake_dir / "fs_cli"
    script.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\necho "+OK [Success]"\n')
    script.chmod(0o755)
    return fake_dir, log


def run(
    tools_bin: Path, *args: str, extra_path: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    path = str(tools_bin) if extra_path is None else f"{extra_path}{os.pathsep}{tools_bin}"
    full_env = {"PATH": path, "LC_ALL": "C"}
    full_env.update(env or {})
    bash = str(tools_bin / "bash")
    return subprocess.run(
        [bash, str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def snapshot(d: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every entry below d (dotfiles too): bytes, mode and mtime."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(d))] = (p.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return out


def credentials(stdout: str) -> dict[str, str]:
    pairs = dict(line.split(" ", 1) for line in stdout.splitlines() if line.strip())
    for ext, pw in pairs.items():
        assert re.fullmatch(r"[1-9]\d*", ext)
        assert re.fullmatch(r"[0-9a-f]{24}", pw)
    return pairs


def fs_preprocess(text: str, variables: dict[str, str]) -> str:
    """What FreeSWITCH's XML preprocessor does with a file, line by line:
    expands $${var} (unknown -> empty), runs cmd="set", drops <include> lines."""
    out = []
    for line in text.splitlines():
        line = re.sub(r"\$\$\{([^}]*)\}", lambda m: variables.get(m.group(1), ""), line)
        if "<include>" in line or "</include>" in line or "<?" in line:
            continue
        if "x-pre-process" in line.lower():
            m = re.search(r'<X-PRE-PROCESS cmd="set" data="([^=]+)=([^"]*)"', line)
            if m:
                variables[m.group(1).strip()] = m.group(2).strip()
            continue
        out.append(line)
    return "\n".join(out)


def user_xml(path: Path) -> ET.Element:
    text = path.read_text()
    assert text.splitlines()[0].startswith("<!--") and MARKER in text.splitlines()[0]
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "include"
    # The preprocessed form, as FreeSWITCH sees it inside <users>, must parse too.
    ET.fromstring("<users>" + fs_preprocess(text, {}) + "</users>")
    user = root.find("user")
    assert user is not None
    return user


def password_of(path: Path) -> str:
    param = user_xml(path).find("params/param[@name='password']")
    assert param is not None
    return param.get("value", "")


# ----------------------------------------------------------------- creating --


def test_range_and_list(tools_bin: Path, users: Path) -> None:
    r = run(tools_bin, "--dir", str(users), "--range", "1020-1022", "--ext", "1005,1006")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in users.iterdir())
    assert names == ["1005.xml", "1006.xml", "1020.xml", "1021.xml", "1022.xml"]
    creds = credentials(r.stdout)
    assert sorted(creds) == ["1005", "1006", "1020", "1021", "1022"]
    assert len(set(creds.values())) == 5
    for ext, pw in creds.items():
        f = users / f"{ext}.xml"
        user = user_xml(f)
        assert user.get("id") == ext
        assert password_of(f) == pw
        ctx = user.find("variables/variable[@name='user_context']")
        assert ctx is not None and ctx.get("value") == "default"
        assert stat.S_IMODE(f.stat().st_mode) == 0o640
    assert "created 5" in r.stderr
    assert pw not in r.stderr  # passwords only on stdout


def test_overlapping_selection_is_deduplicated(tools_bin: Path, users: Path) -> None:
    r = run(tools_bin, "-d", str(users), "-r", "1020-1021", "-r", "1021-1022", "-e", "1020")
    assert r.returncode == 0, r.stderr
    assert len(credentials(r.stdout)) == 3


def test_second_run_changes_nothing(tools_bin: Path, users: Path) -> None:
    args = ("--dir", str(users), "--range", "1020-1024", "--ext", "1005")
    assert run(tools_bin, *args).returncode == 0
    before = snapshot(users)
    r = run(tools_bin, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # no new credentials
    assert snapshot(users) == before  # same bytes, modes and mtimes, no temp files left
    assert "unchanged 6" in r.stderr


def test_generated_passwords_are_stable(tools_bin: Path, users: Path) -> None:
    first = credentials(run(tools_bin, "--dir", str(users), "--range", "1020-1021").stdout)
    r = run(tools_bin, "--dir", str(users), "--range", "1020-1023")
    assert r.returncode == 0, r.stderr
    assert sorted(credentials(r.stdout)) == ["1022", "1023"]  # only the new users
    for ext, pw in first.items():
        assert password_of(users / f"{ext}.xml") == pw


def test_given_password_is_escaped_and_applied(tools_bin: Path, users: Path) -> None:
    pw = "a&b<c>\"d'e|f\\g"
    args = ("--dir", str(users), "--ext", "1005", "--password", pw)
    r = run(tools_bin, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # a given password is never echoed
    assert password_of(users / "1005.xml") == pw
    before = snapshot(users)
    assert run(tools_bin, *args).returncode == 0
    assert snapshot(users) == before
    r = run(tools_bin, "--dir", str(users), "--ext", "1005", "--password", "other")
    assert r.returncode == 0 and "updated 1" in r.stderr
    assert password_of(users / "1005.xml") == "other"


def test_password_variable_reference_is_kept(tools_bin: Path, users: Path) -> None:
    r = run(tools_bin, "-d", str(users), "-e", "1005", "-p", "$${default_password}")
    assert r.returncode == 0, r.stderr
    assert 'value="$${default_password}"' in (users / "1005.xml").read_text()


@pytest.mark.parametrize(
    "pw", ["", "with$dollar", "$${a}b", "line\nbreak", "tab\there", "x-PRE-process"]
)
def test_bad_password_is_rejected(tools_bin: Path, users: Path, pw: str) -> None:
    r = run(tools_bin, "--dir", str(users), "--ext", "1005", "--password", pw)
    assert r.returncode == 2
    assert "error" in r.stderr
    assert list(users.iterdir()) == []


def test_passwords_file(tools_bin: Path, users: Path, tmp_path: Path) -> None:
    out = tmp_path / "secrets" / "creds.txt"
    out.parent.mkdir()
    args = ("--dir", str(users), "--range", "1020-1021", "--passwords-file", str(out))
    r = run(tools_bin, *args)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    creds = credentials(out.read_text())
    assert sorted(creds) == ["1020", "1021"]
    assert all(pw not in r.stderr for pw in creds.values())
    text = out.read_text()
    assert run(tools_bin, *args).returncode == 0
    assert out.read_text() == text  # nothing new, nothing appended
    assert (
        run(tools_bin, "--dir", str(users), "--range", "1020-1022", "-o", str(out)).returncode == 0
    )
    assert sorted(credentials(out.read_text())) == ["1020", "1021", "1022"]


def test_unwritable_passwords_file_changes_nothing(
    tools_bin: Path, users: Path, tmp_path: Path
) -> None:
    out = tmp_path / "missing-dir" / "creds.txt"
    r = run(tools_bin, "--dir", str(users), "--ext", "1005", "--passwords-file", str(out))
    assert r.returncode == 1
    assert "passwords-file" in r.stderr
    assert list(users.iterdir()) == []


def test_custom_context(tools_bin: Path, users: Path) -> None:
    assert run(tools_bin, "-d", str(users), "-e", "1005", "--context", "webrtc").returncode == 0
    ctx = user_xml(users / "1005.xml").find("variables/variable[@name='user_context']")
    assert ctx is not None and ctx.get("value") == "webrtc"


# ----------------------------------------------------------------- template --


def test_template_rewrites_only_the_template_number(tools_bin: Path, users: Path) -> None:
    (users / "1000.xml").write_text(VANILLA_1000)
    r = run(tools_bin, "--dir", str(users), "--ext", "1021", "--template", "1000")
    assert r.returncode == 0, r.stderr
    f = users / "1021.xml"
    user = user_xml(f)
    assert user.get("id") == "1021"
    values = {v.get("name"): v.get("value") for v in user.iter() if v.tag in ("param", "variable")}
    assert values["vm-password"] == "1021"
    assert values["accountcode"] == "1021"
    assert values["effective_caller_id_name"] == "Extension 1021"
    assert values["effective_caller_id_number"] == "1021"
    assert values["callgroup"] == "techsupport"
    assert values["outbound_caller_id_name"] == "$${outbound_caller_name}"
    # 10000 / 21000 / x1000 are not the template number; 1000,1000,1000 is, three times.
    assert values["note"] == "10000 21000 1021,1021,1021 x1021"
    assert values["password"] == credentials(r.stdout)["1021"]
    assert (users / "1000.xml").read_text() == VANILLA_1000  # template untouched
    before = snapshot(users)
    assert (
        run(tools_bin, "--dir", str(users), "--ext", "1021", "--template", "1000").returncode == 0
    )
    assert snapshot(users) == before


def test_template_problems(tools_bin: Path, users: Path) -> None:
    r = run(tools_bin, "--dir", str(users), "--ext", "1021", "--template", "1000")
    assert r.returncode == 1 and "1000.xml" in r.stderr  # missing template
    (users / "1000.xml").write_text(VANILLA_1000)
    r = run(tools_bin, "--dir", str(users), "--range", "1000-1001", "--template", "1000")
    assert r.returncode == 2 and "template" in r.stderr
    (users / "1001.xml").write_text(FOREIGN.format(n="9999"))
    r = run(tools_bin, "--dir", str(users), "--ext", "1021", "--template", "1001")
    assert r.returncode == 1 and 'user id="1001"' in r.stderr
    assert not (users / "1021.xml").exists()
    r = run(tools_bin, "-d", str(users), "-e", "1021", "-t", "1000", "--context", "other")
    assert r.returncode == 2 and "--context" in r.stderr


# ---------------------------------------------------- foreign files, remove --


def test_refuses_foreign_file_without_force(tools_bin: Path, users: Path) -> None:
    (users / "1021.xml").write_text(FOREIGN.format(n="1021"))
    before = snapshot(users)
    r = run(tools_bin, "--dir", str(users), "--range", "1020-1022")
    assert r.returncode == 3
    assert "1021.xml" in r.stderr and "--force" in r.stderr
    assert snapshot(users) == before  # nothing at all was written, not even 1020
    r = run(tools_bin, "--dir", str(users), "--range", "1020-1022", "--force")
    assert r.returncode == 0, r.stderr
    assert sorted(credentials(r.stdout)) == ["1020", "1021", "1022"]
    assert MARKER in (users / "1021.xml").read_text()


def test_refuses_user_defined_in_another_file(tools_bin: Path, users: Path) -> None:
    (users / "people.xml").write_text(FOREIGN.format(n="1020"))
    r = run(tools_bin, "--dir", str(users), "--range", "1020-1021")
    assert r.returncode == 3
    assert "people.xml" in r.stderr
    assert sorted(p.name for p in users.iterdir()) == ["people.xml"]


def test_remove_undoes_exactly_what_was_created(tools_bin: Path, users: Path) -> None:
    (users / "1000.xml").write_text(VANILLA_1000)
    (users / "1099.xml").write_text(FOREIGN.format(n="1099"))
    original = snapshot(users)
    assert run(tools_bin, "--dir", str(users), "--range", "1020-1029", "-t", "1000").returncode == 0
    assert run(tools_bin, "--dir", str(users), "--ext", "1005").returncode == 0
    r = run(tools_bin, "--dir", str(users), "--range", "1020-1099", "--remove")
    assert r.returncode == 0, r.stderr
    assert "1099.xml" in r.stderr  # reported as not ours, and kept
    assert "removed 10" in r.stderr
    assert sorted(p.name for p in users.iterdir()) == ["1000.xml", "1005.xml", "1099.xml"]
    assert run(tools_bin, "--dir", str(users), "--ext", "1005", "--remove").returncode == 0
    assert snapshot(users) == original


def test_remove_with_force_is_refused(tools_bin: Path, users: Path) -> None:
    (users / "1021.xml").write_text(FOREIGN.format(n="1021"))
    r = run(tools_bin, "--dir", str(users), "--ext", "1021", "--remove", "--force")
    assert r.returncode == 2
    assert (users / "1021.xml").exists()


# ------------------------------------------------------------------ dry run --


def test_dry_run_changes_nothing(tools_bin: Path, users: Path, fake_fs_cli) -> None:
    fake_dir, log = fake_fs_cli
    (users / "1000.xml").write_text(VANILLA_1000)
    before = snapshot(users)
    r = run(tools_bin, "-n", "-d", str(users), "-r", "1020-1021", "-t", "1000", extra_path=fake_dir)
    assert r.returncode == 0, r.stderr
    assert "would create" in r.stdout and "1021.xml" in r.stdout
    assert snapshot(users) == before
    assert run(tools_bin, "-d", str(users), "-r", "1020-1021", "-t", "1000").returncode == 0
    created = snapshot(users)
    r = run(
        tools_bin, "--dry-run", "-d", str(users), "-r", "1020-1021", "--remove", extra_path=fake_dir
    )
    assert r.returncode == 0, r.stderr
    assert "would remove" in r.stdout
    assert snapshot(users) == created
    assert not log.exists()


# --------------------------------------------------------------------- json --


def test_json_for_create_dry_run_and_remove(tools_bin: Path, users: Path, fake_fs_cli) -> None:
    fake_dir, log = fake_fs_cli
    (users / "1099.xml").write_text(FOREIGN.format(n="1099"))
    dry = run(tools_bin, "--json", "-n", "-d", str(users), "-r", "1020-1021", extra_path=fake_dir)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout) == {
        "mode": "create",
        "dry_run": True,
        "directory": str(users),
        "users": [
            {"extension": "1020", "action": "create"},
            {"extension": "1021", "action": "create"},
        ],
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "skipped": 0,
        "reloaded": None,
    }
    assert not (users / "1020.xml").exists()

    made = run(tools_bin, "--json", "-d", str(users), "-r", "1020-1021", extra_path=fake_dir)
    assert made.returncode == 0, made.stderr
    result = json.loads(made.stdout)  # the whole stdout: no credential lines besides it
    assert result["reloaded"] is True and result["created"] == 2
    # The generated passwords are in the JSON, as the users' files hold them.
    for user in result["users"]:
        assert user["action"] == "create"
        assert user["password"] == password_of(users / f"{user['extension']}.xml")

    again = json.loads(run(tools_bin, "--json", "-d", str(users), "-r", "1020-1021").stdout)
    assert [u["action"] for u in again["users"]] == ["unchanged", "unchanged"]
    assert again["reloaded"] is None

    gone = run(tools_bin, "--json", "--remove", "-d", str(users), "-e", "1021,1022,1099")
    assert gone.returncode == 0, gone.stderr
    removed = json.loads(gone.stdout)
    assert removed["mode"] == "remove" and removed["removed"] == 1 and removed["skipped"] == 2
    assert removed["users"] == [
        {"extension": "1021", "action": "remove"},
        {"extension": "1022", "action": "skipped_absent"},
        {"extension": "1099", "action": "skipped_foreign"},
    ]
    assert removed["reloaded"] is False  # fs_cli is not on PATH in this run
    assert log.read_text().splitlines() == ["-x reloadxml"]


def test_json_with_a_passwords_file_keeps_them_out(
    tools_bin: Path, users: Path, tmp_path: Path
) -> None:
    pw_file = tmp_path / "pw.txt"
    r = run(tools_bin, "--json", "-d", str(users), "-e", "1030", "--passwords-file", str(pw_file))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["users"] == [{"extension": "1030", "action": "create"}]
    assert pw_file.read_text().split() == ["1030", password_of(users / "1030.xml")]


# ----------------------------------------------------------------- reloadxml --


def test_fs_cli_runs_after_a_change_only(tools_bin: Path, users: Path, fake_fs_cli) -> None:
    fake_dir, log = fake_fs_cli
    args = ("--dir", str(users), "--range", "1020-1021")
    assert run(tools_bin, *args, extra_path=fake_dir).returncode == 0
    assert log.read_text().splitlines() == ["-x reloadxml"]
    assert run(tools_bin, *args, extra_path=fake_dir).returncode == 0  # nothing changed
    assert log.read_text().splitlines() == ["-x reloadxml"]
    r = run(tools_bin, "--dir", str(users), "--ext", "1022", "--no-reload", extra_path=fake_dir)
    assert r.returncode == 0
    assert log.read_text().splitlines() == ["-x reloadxml"]
    assert run(tools_bin, *args, "--remove", extra_path=fake_dir).returncode == 0
    assert log.read_text().splitlines() == ["-x reloadxml"] * 2


def test_fs_cli_absent(tools_bin: Path, users: Path) -> None:
    r = run(tools_bin, "--dir", str(users), "--ext", "1005")
    assert r.returncode == 0, r.stderr
    assert "reloadxml" in r.stderr  # tells the operator what to run


def test_fs_cli_failure_is_a_warning(tools_bin: Path, users: Path, tmp_path: Path) -> None:
    fake_dir = tmp_path / "failbin"
    fake_dir.mkdir()
    (fake_dir / "fs_cli").write_text("#!/bin/sh\necho 'connection refused' >&2\nexit 1\n")
    (fake_dir / "fs_cli").chmod(0o755)
    r = run(tools_bin, "--dir", str(users), "--ext", "1005", extra_path=fake_dir)
    assert r.returncode == 0
    assert "warning" in r.stderr
    assert (users / "1005.xml").exists()


# -------------------------------------------------------------- bad input --


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--range", "1099-1020"], "greater"),
        (["--range", "10a0-1030"], "not a number"),
        (["--range", "1020"], "FROM-TO"),
        (["--range", "1020-"], "empty"),
        (["--range", "1-20000"], "more than"),
        (["--ext", "1005,,1006"], "empty"),
        (["--ext", "1005,"], "empty"),
        (["--ext", "abc"], "not a number"),
        (["--ext", "0123"], "starts with 0"),
        (["--ext", "1234567890"], "9 digits"),
        (["--ext", "-5"], "not a number"),
        ([], "--range"),
        (["--ext", "1005", "--bogus"], "unknown option"),
        (["--ext", "1005", "stray"], "unexpected argument"),
        (["--ext"], "needs a value"),
        (["--ext", "1005", "--context", "a b"], "--context"),
    ],
)
def test_bad_input(tools_bin: Path, users: Path, args: list[str], message: str) -> None:
    r = run(tools_bin, "--dir", str(users), *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert list(users.iterdir()) == []


def test_missing_directory(tools_bin: Path, tmp_path: Path) -> None:
    r = run(tools_bin, "--dir", str(tmp_path / "nope"), "--ext", "1005")
    assert r.returncode == 1
    assert "does not exist" in r.stderr


def test_directory_from_environment(tools_bin: Path, users: Path) -> None:
    r = run(tools_bin, "--ext", "1005", env={"FREESWITCH_USER_DIR": str(users)})
    assert r.returncode == 0, r.stderr
    assert (users / "1005.xml").exists()


@pytest.mark.skipif(
    any(
        Path(d).exists()
        for d in (
            "/usr/local/freeswitch/conf/directory/default",
            "/etc/freeswitch/directory/default",
        )
    ),
    reason="a FreeSWITCH user directory exists on this machine",
)
def test_no_directory_found(tools_bin: Path) -> None:
    r = run(tools_bin, "--ext", "1005")
    assert r.returncode == 1
    assert "--dir" in r.stderr


def test_help(tools_bin: Path) -> None:
    r = run(tools_bin, "--help")
    assert r.returncode == 0
    for word in (
        "--range",
        "--ext",
        "--dir",
        "--password",
        "--template",
        "--dry-run",
        "--remove",
        "--no-reload",
        "--force",
    ):
        assert word in r.stdout


# ------------------------------------------------------------- shell hygiene --


def test_bash_syntax() -> None:
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck() -> None:
    r = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_script_is_executable() -> None:
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/usr/bin/env bash\n")


# ---------------------------------------------------------------- dialplan --


def _extension(root: ET.Element) -> ET.Element:
    ext = root.find(".//extension")
    assert ext is not None
    return ext


def test_dialplan_parses_and_routes_to_the_gateway() -> None:
    root = ET.parse(DIALPLAN).getroot()
    assert root.tag == "include"
    cond = _extension(root).find("condition")
    assert cond is not None
    assert cond.get("field") == "destination_number"
    assert cond.get("expression") == "^0(.*)$"
    actions = [(a.get("application"), a.get("data")) for a in cond.findall("action")]
    apps = [app for app, _ in actions]
    assert ("set", "sip_h_X-Number=<sip:$1@${domain_name}>") in actions
    assert ("set", "rtp_autoflush=true") in actions
    assert ("socket", "$${esl_bridge_socket} async full") in actions
    # Both variables are set before the socket application runs.
    assert apps.index("socket") > max(i for i, a in enumerate(apps) if a == "set")


def test_gateway_address_comes_from_one_variable() -> None:
    text = VARS.read_text()
    ET.fromstring(text)
    sets = re.findall(r'<X-PRE-PROCESS cmd="set" data="([^"=]+)=([^"]*)"/>', text)
    assert sets == [("esl_bridge_socket", "127.0.0.1:8084")]
    # The dialplan names no address of its own.
    assert not re.search(r"\d+\.\d+\.\d+\.\d+|:8084", DIALPLAN.read_text())


def test_dialplan_survives_the_freeswitch_preprocessor() -> None:
    """vars.xml first, then the dialplan: what FreeSWITCH ends up executing."""
    variables: dict[str, str] = {}
    fs_preprocess(VARS.read_text(), variables)
    expanded = fs_preprocess(DIALPLAN.read_text(), variables)
    context = ET.fromstring(f'<context name="default">{expanded}</context>')
    socket = context.find(".//action[@application='socket']")
    assert socket is not None
    assert socket.get("data") == "127.0.0.1:8084 async full"
    # Lines the preprocessor would act on or drop must not hide in comments.
    dialplan = DIALPLAN.read_text()
    assert "x-pre-process" not in dialplan.lower()
    assert "<!--#" not in dialplan and "<?" not in dialplan
    for line in dialplan.splitlines():
        if "<include>" in line or "</include>" in line:
            assert line.strip() in ("<include>", "</include>")


@pytest.mark.skipif(not FIXTURE.exists(), reason="recorded FreeSWITCH fixture not present")
def test_dialplan_matches_the_recorded_extension() -> None:
    """Same route and X-Number as the extension a real FreeSWITCH 1.10.12 ran."""
    recorded = ET.fromstring(FIXTURE.read_text())
    ours = _extension(ET.parse(DIALPLAN).getroot())
    rc, oc = recorded.find("condition"), ours.find("condition")
    assert rc is not None and oc is not None
    assert (rc.get("field"), rc.get("expression")) == (oc.get("field"), oc.get("expression"))

    def data(cond: ET.Element, app: str) -> list[str | None]:
        return [a.get("data") for a in cond.findall("action") if a.get("application") == app]

    assert data(rc, "set")[0] in data(oc, "set")
    variables: dict[str, str] = {}
    fs_preprocess(VARS.read_text(), variables)
    ours_socket = fs_preprocess(oc.find("action[@application='socket']").get("data"), variables)
    assert [ours_socket] == data(rc, "socket")
