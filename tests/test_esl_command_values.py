"""Values the ESL command builders accept and how they write them: a space inside a
channel variable value, the smallest ``loops``, each unicast flag, an api command name in
capitals (esl/commands.py; tests/test_esl_command_refusals.py has what they refuse)."""

from __future__ import annotations

import pytest

from esl_bridge.esl import commands as cmd


@pytest.mark.parametrize(
    ("value", "written"),
    [
        # Pass 1 (the space-separated originate argument) writes a space as \s once; the
        # inner passes leave it alone, so no backslash of theirs doubles it.
        ("a b", r"a\sb"),
        ("x, y", r"x\\,\sy"),
        ("a  b", r"a\s\sb"),
    ],
)
def test_a_space_inside_a_value_is_escaped_once(value: str, written: str) -> None:
    assert cmd.escape_var_value(value) == written
    assert cmd.channel_vars({"v": value}) == "{v=" + written + "}"


def test_one_loop_is_a_loop() -> None:
    assert cmd.sendmsg_execute("playback", "tone.wav", loops=1) == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
        b"execute-app-arg: tone.wav\nloops: 1\n\n"
    )


@pytest.mark.parametrize("flags", ["native", "native_write", "native_read", "native_read|native"])
def test_each_unicast_flag_is_written(flags: str) -> None:
    out = cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 2, flags=flags)
    assert out.endswith(f"flags: {flags}\n\n".encode())


def test_an_api_command_name_may_have_capitals() -> None:
    assert cmd.api("Status_2") == b"api Status_2\n\n"
