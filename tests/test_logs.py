"""Logging from [log]: levels, masking, rotation, bound call context."""

from __future__ import annotations

import io
import json
import logging
import re
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


# -- masking where secrets stand as values, not inside unrelated text (sip_pwd = 1234)

SHORT = "1234"  # FreeSWITCH's vanilla user password, a usual [proxy] sip_pwd


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_short_secret_leaves_timestamps_ports_and_uuids_alone(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging(settings(tmp_path, 2, file=""), secrets=[SHORT], stream=stream)
    untouched = {
        "seen_at": "2026-11-27T10:07:55.771234Z",
        "clock": "10:12:34.1234",
        "port": "31234",
        "uuid": "c0ffee00-1234-4abc-9def-001234000000",
        "version": "1.1234.0",
        "count": "12345",
        "call_id": "call-1234",
    }
    logs.get_logger("x").info(
        "media_port 31234 bound at 2026-11-27T10:07:55.771234Z", port_number=31234, **untouched
    )
    (line,) = json_lines(stream)
    for key, value in untouched.items():
        assert line[key] == value
    assert line["port_number"] == 31234
    assert line["event"] == "media_port 31234 bound at 2026-11-27T10:07:55.771234Z"


def test_the_timestamp_field_is_never_masked() -> None:
    redactor = logs.Redactor(secrets=[SHORT, "2026-11-27T10:07:55.771234Z"])
    event = redactor(None, "info", {"event": "x", "timestamp": "2026-11-27T10:07:55.771234Z"})
    assert event["timestamp"] == "2026-11-27T10:07:55.771234Z"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("password=1234", "password=***"),
        ("login with passwd: 1234 refused", "login with passwd: *** refused"),
        (
            "originate {origination_uuid=u-1,sip_auth_password=1234,sip_auth_username=1000}"
            "user/1000@127.0.0.1 &park()",
            "originate {origination_uuid=u-1,sip_auth_password=***,sip_auth_username=1000}"
            "user/1000@127.0.0.1 &park()",
        ),
        ("[sip_auth_password=1234]sofia/gw/1000", "[sip_auth_password=***]sofia/gw/1000"),
        ("X-Pass: 1234\nX-Other: 31234", "X-Pass: ***\nX-Other: 31234"),
        ('{"password": "1234", "port": 31234}', '{"password": "***", "port": 31234}'),
        ("uuid_setvar c0ffee00-1234-4abc sip_auth_password 1234", None),
        ("auth 1234", "auth ***"),
        ("esl --password=1234 --port 31234", "esl --password=*** --port 31234"),
        ("sip://1000:1234@127.0.0.1", "sip://1000:***@127.0.0.1"),
        ("refused: the secret 1234 is wrong", "refused: the secret *** is wrong"),
        ("value '1234' given", "value '***' given"),
    ],
)
def test_short_secret_is_masked_where_it_is_a_value(text: str, masked: str | None) -> None:
    redactor = logs.Redactor(secrets=[SHORT])
    result = redactor.scrub(text)
    if masked is None:
        assert result == "uuid_setvar c0ffee00-1234-4abc sip_auth_password ***"
    else:
        assert result == masked


def test_secret_like_keys_mask_any_value_even_unregistered() -> None:
    redactor = logs.Redactor()
    assert redactor.scrub("sip_auth_password=ab,x=1") == "sip_auth_password=***,x=1"
    assert redactor.scrub("escaped: sip_auth_password=a\\,b}") == (
        "escaped: sip_auth_password=***}"
    )
    assert redactor.scrub("token_ttl=86400 passive=1") == "token_ttl=86400 passive=1"


def test_a_traceback_showing_a_secret_is_masked(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure_logging(
        settings(tmp_path, 2, json=False), secrets=[SHORT, "ClueConSecret"], stream=stream
    )
    try:
        raise ValueError("auth failed for password 1234 with ClueConSecret")
    except ValueError:
        logs.get_logger("esl").exception("esl_failed")
        # a library logging through the standard library, with its own traceback
        logging.getLogger("aiohttp").exception("handler failed")
    written = stream.getvalue() + (tmp_path / "gw.log").read_text()
    # two loggers, each to the console and to the file
    assert written.count("ValueError: auth failed for password *** with ***") == 4
    assert not re.search(r"(?<![0-9])1234(?![0-9])", written)
    assert "ClueConSecret" not in written


def test_long_secret_is_masked_even_inside_other_text() -> None:
    redactor = logs.Redactor(secrets=["ClueConSecret", "tok.ABCDEF.123"])
    assert redactor.scrub("xClueConSecretx /ws?t=tok.ABCDEF.1234") == "x***x /ws?t=***4"


# -- peer data is bounded in log lines


def test_bounded_keeps_short_values_and_cuts_long_ones() -> None:
    assert logs.bounded("short reply") == "short reply"
    long = "é" * 300
    cut = logs.bounded(long)
    assert cut == "é" * 200 + "...(600 bytes)"
    assert logs.bounded({"a": "b"}) == "{'a': 'b'}"
    assert (logs.bounded(None), logs.bounded(7)) == (None, 7)


def test_bounded_masks_before_it_cuts(tmp_path: Path) -> None:
    logs.configure_logging(settings(tmp_path, 2, file=""), secrets=["ClueConSecret"])
    value = "x" * 195 + "ClueConSecret" + "y" * 100
    cut = logs.bounded(value)
    assert "ClueCo" not in cut and cut.startswith("x" * 195 + "***")
