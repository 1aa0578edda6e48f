"""Logging from [log]: levels, masking, rotation, bound call context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from esl_bridge import logs
from esl_bridge.config import LogSettings

SECRETS = ["ClueConSecret", "app-cert-0123456789", "tok.ABCDEF.123"]


def settings(tmp_path: Path, level: int, **overrides: object) -> LogSettings:
    values: dict[str, object] = {
        "level": level,
        "file": str(tmp_path / "gw.log"),
        "max_file_size": 1,
        "backup_count": 3,
        "json": True,
        "console": "on",
    }
    values.update(overrides)
    return LogSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
        handler.close()


def emit_everything() -> None:
    """One line of each kind a gateway writes, carrying every secret somewhere."""
    log = logs.get_logger("esl")
    with logs.bound_contextvars(call_id="call-1", uuid="uuid-1", uid="alice"):
        for method in (log.debug, log.info, log.warning, log.error, log.critical):
            method(
                "esl_command",
                command="auth ClueConSecret",
                password="ClueConSecret",
                token="tok.ABCDEF.123",
                url="/ws?token=tok.ABCDEF.123",
                detail="signed with app-cert-0123456789",
                sdp="v=0 o=- private",
                content='{"UserData":"private"}',
            )
        try:
            raise RuntimeError("login failed for token tok.ABCDEF.123")
        except RuntimeError:
            log.exception("login_error")
    logging.getLogger("greenswitch").error("sending auth ClueConSecret")


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
def test_no_secret_or_sensitive_value_at_levels_1_to_5(tmp_path: Path, level: int) -> None:
    stream = io.StringIO()
    logs.configure_logging(settings(tmp_path, level), secrets=SECRETS, stream=stream)
    emit_everything()
    written = stream.getvalue() + (tmp_path / "gw.log").read_text()
    for secret in (*SECRETS, "private"):
        assert secret not in written
    if level == 5:
        assert written == ""
    else:
        assert "esl_command" in written or level >= 4  # error lines exist at 4
        assert "login_error" in written


def test_level_0_shows_sensitive_values_but_still_masks_secrets(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging(settings(tmp_path, 0), secrets=SECRETS, stream=stream)
    emit_everything()
    written = stream.getvalue()
    assert "v=0 o=- private" in written
    for secret in SECRETS:
        assert secret not in written


def test_levels_filter_lines(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging(settings(tmp_path, 3, file=""), stream=stream)
    log = logs.get_logger("x")
    log.info("not_shown")
    log.warning("shown")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["shown"]


def test_json_lines_carry_bound_call_context(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging(settings(tmp_path, 2, file=""), stream=stream)
    with logs.bound_contextvars(call_id="c-9", uuid="u-9", uid="bob"):
        logs.get_logger("call").info("answered")
    logs.get_logger("call").info("idle")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (first["call_id"], first["uuid"], first["uid"]) == ("c-9", "u-9", "bob")
    assert "call_id" not in second
    assert first["level"] == "info" and first["timestamp"].endswith("Z")


def test_secret_added_at_run_time_is_masked(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging(settings(tmp_path, 2, file=""), stream=stream)
    logs.add_secret("late-token-value")
    logs.get_logger("x").info("seen late-token-value here")
    assert "late-token-value" not in stream.getvalue()


def test_file_rotates_at_the_configured_size(tmp_path: Path) -> None:
    logs.configure_logging(
        settings(tmp_path, 2, console="off", max_file_size=1, backup_count=2), stream=io.StringIO()
    )
    log = logs.get_logger("x")
    filler = "x" * 1000
    for i in range(3500):  # about 3.5 MB of lines into a 1 MB file with 2 backups
        log.info("filler", n=i, filler=filler)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["gw.log", "gw.log.1", "gw.log.2"]
    limit = 1024 * 1024
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert size <= limit
    for name in ("gw.log.1", "gw.log.2"):
        assert (tmp_path / name).stat().st_size > limit - 2000  # rotated because it was full
    newest = json.loads((tmp_path / "gw.log").read_text().splitlines()[-1])
    assert newest["n"] == 3499


def test_console_off_without_file_still_logs_json_to_stream(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging(settings(tmp_path, 2, file="", console="off", json=False), stream=stream)
    logs.get_logger("x").info("hello")
    assert json.loads(stream.getvalue())["event"] == "hello"


def test_plain_file_format_when_json_is_off(tmp_path: Path) -> None:
    logs.configure_logging(settings(tmp_path, 2, console="off", json=False), stream=io.StringIO())
    logs.get_logger("x").info("plain_line", key="value")
    text = (tmp_path / "gw.log").read_text()
    assert "plain_line" in text and "key=value" in text
    assert not text.startswith("{")
