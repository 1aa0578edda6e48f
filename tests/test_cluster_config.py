"""``[cluster]``: checked like every other section; a single process never imports redis."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from esl_bridge import config

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(config.ConfigError) as caught:
        config.from_text(text, "rtx.conf")
    return [str(p) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:6379", "expected redis://host[:port][/db]"),
        ("redis://", "needs a host"),
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("redis://127.0.0.1:6379/zero", "database 'zero' is not a number"),
        ("redis://127.0.0.1:6379/0?ssl=1", "query and fragment are not read here"),
        ("unix://relative/path", "absolute path"),
    ],
)
def test_a_bad_redis_url_is_refused_with_its_reason(url: str, reason: str) -> None:
    [problem] = problems(f"[cluster]\nredis_url = {url}\n")
    assert problem.startswith("rtx.conf: [cluster] redis_url = ")
    assert reason in problem


def test_claim_ttl_must_cover_two_heartbeats() -> None:
    [problem] = problems("[cluster]\nheartbeat_interval = 2\nclaim_ttl = 3\n")
    assert "[cluster] claim_ttl = 3.0: must be at least twice heartbeat_interval" in problem


def test_defaults_and_the_password_masked() -> None:
    plain = config.defaults().cluster
    assert (plain.redis_url, plain.enabled) == ("", False)
    assert (plain.heartbeat_interval, plain.claim_ttl, plain.redis_timeout) == (1.0, 5.0, 2.0)
    settings = config.from_text("[cluster]\nredis_url = redis://:s3cret@192.0.2.5:6380/2\n")
    assert settings.cluster.enabled
    assert "s3cret" in settings.secrets()  # masked in every log line
    rendered = config.render(settings)
    assert "redis_url = redis://:***@192.0.2.5:6380/2" in rendered
    assert "s3cret" not in rendered


def test_check_config_refuses_a_bad_url(tmp_path: Path) -> None:
    conf = tmp_path / "rtx.conf"
    conf.write_text("[auth]\nopen_mode = 1\n[cluster]\nredis_url = redis//127.0.0.1\n")
    result = subprocess.run(
        [sys.executable, "-m", "esl_bridge", "check-config", str(conf)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result
    assert "[cluster] redis_url = 'redis//127.0.0.1'" in result.stderr


def test_a_single_process_never_imports_redis() -> None:
    code = (
        "import sys\n"
        "from esl_bridge import cli, config\n"
        "from esl_bridge.gateway import process\n"
        "settings = config.from_text('[auth]\\nopen_mode = 1\\n')\n"
        "assert not cli.run_problems(settings)\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
