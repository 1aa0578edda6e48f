"""What the ESL command builders accept and the exact refusal for what they do not
(esl/commands.py): socket modes, originate arguments, channel variables, sendmsg.

A refusal names the field that is wrong (the caller logs it); the mutation run showed the
names, the accepted modes and the quoting rule could change with every other test green.
"""

from __future__ import annotations

import pytest

from esl_bridge.esl import commands as cmd


@pytest.mark.parametrize(
    ("mode", "app"),
    [
        ("async full", "'&socket(127.0.0.1:8084 async full)'"),
        ("async", "'&socket(127.0.0.1:8084 async)'"),
        ("full", "'&socket(127.0.0.1:8084 full)'"),
        ("", "'&socket(127.0.0.1:8084)'"),
    ],
)
def test_socket_app_modes(mode: str, app: str) -> None:
    assert cmd.socket_app("127.0.0.1", 8084, mode) == app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("127.0.0.1", 8084, "sync"), "invalid socket mode: 'sync'"),
        (("bad host", 8084), "invalid socket host: 'bad host'"),
        (("127.0.0.1", 0), "invalid socket port: 0"),
        (("127.0.0.1", 65536), "invalid socket port: 65536"),
        (("127.0.0.1", True), "invalid socket port: True"),
    ],
)
def test_socket_app_refusals(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        cmd.socket_app(*args)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_socket_app_port_limits() -> None:
    assert cmd.socket_app("h", 1, "") == "'&socket(h:1)'"
    assert cmd.socket_app("h", 65535, "") == "'&socket(h:65535)'"


def test_originate_arg_variables_endpoint_and_application() -> None:
    assert cmd.originate_arg("user/1001", "&park()") == "user/1001 &park()"
    assert (
        cmd.originate_arg("user/1001", "'&socket(h:1 async full)'", {"a": True, "b": 7, "c": ""})
        == "{a=true,b=7}user/1001 '&socket(h:1 async full)'"
    )
    assert cmd.originate_arg("user/1001", "1000", {"a": False}) == "{a=false}user/1001 1000"


@pytest.mark.parametrize(
    ("endpoint", "application", "error", "message"),
    [
        ("", "&park()", ValueError, "invalid endpoint: ''"),
        ("user/1 x", "&park()", ValueError, "invalid endpoint: 'user/1 x'"),
        ("{a=1}user/1", "&park()", ValueError, "invalid endpoint: '{a=1}user/1'"),
        (
            "user/1\n",
            "&park()",
            ValueError,
            "endpoint contains CR, LF or NUL (ESL command injection)",
        ),
        (
            "user/1",
            "&park()\r",
            ValueError,
            "originate application contains CR, LF or NUL (ESL command injection)",
        ),
        (
            "user/1",
            "&socket(h:1 async)",
            ValueError,
            "an originate application with spaces must be single-quoted",
        ),
        (
            "user/1",
            "'&socket(h:1 async)",
            ValueError,
            "an originate application with spaces must be single-quoted",
        ),
        (
            "user/1",
            "&socket(h:1 async)'",
            ValueError,
            "an originate application with spaces must be single-quoted",
        ),
        (5, "&park()", TypeError, "endpoint must be str, not int"),
    ],
)
def test_originate_arg_refusals(
    endpoint: object, application: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        cmd.originate_arg(endpoint, application)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a${b}", "channel variable value must not contain '${' (variable expansion)"),
        ("a{b", "channel variable value has unbalanced braces (FreeSWITCH cannot escape them)"),
        ("a}b{", "channel variable value has unbalanced braces (FreeSWITCH cannot escape them)"),
        ("a\tb", "channel variable value must not contain a TAB"),
        ("a\nb", "channel variable value contains CR, LF or NUL (ESL command injection)"),
    ],
)
def test_channel_variable_value_refusals(value: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        cmd.escape_var_value(value)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        cmd.channel_vars({"v": value})
    assert str(caught.value) == message


def test_channel_vars_refuses_a_bad_name() -> None:
    with pytest.raises(ValueError) as caught:
        cmd.channel_vars({"a b": "1"})
    assert str(caught.value) == "invalid channel variable name: 'a b'"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"app": "bad app"}, "invalid application name: 'bad app'"),
        (
            {"app": "playback", "arg": "a\nb"},
            "application argument contains CR, LF or NUL (ESL command injection)",
        ),
        ({"app": "playback", "event_uuid": "bad uuid"}, "invalid event uuid: 'bad uuid'"),
        ({"app": "playback", "uuid": "bad uuid"}, "invalid uuid: 'bad uuid'"),
        ({"app": "playback", "loops": 0}, "invalid loops: 0"),
        ({"app": "playback", "loops": True}, "invalid loops: True"),
    ],
)
def test_sendmsg_execute_refusals(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        cmd.sendmsg_execute(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_sendmsg_execute_every_field() -> None:
    assert cmd.sendmsg_execute(
        "playback", "tone.wav", uuid="u-1", event_lock=True, event_uuid="e-1", loops=2
    ) == (
        b"sendmsg u-1\ncall-command: execute\nexecute-app-name: playback\n"
        b"execute-app-arg: tone.wav\nloops: 2\nevent-lock: true\nEvent-UUID: e-1\n\n"
    )
    assert cmd.sendmsg_execute("answer", "") == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: answer\n\n"
    )


def test_uuid_send_dtmf_refuses_a_bad_uuid_by_name() -> None:
    with pytest.raises(ValueError) as caught:
        cmd.uuid_send_dtmf("bad uuid", "1")
    assert str(caught.value) == "invalid uuid: 'bad uuid'"


def test_a_checked_field_names_itself_in_every_refusal() -> None:
    with pytest.raises(ValueError) as caught:
        cmd.myevents("u\n1")
    assert str(caught.value) == "uuid contains CR, LF or NUL (ESL command injection)"
    with pytest.raises(TypeError) as caught_type:
        cmd.myevents(5)  # type: ignore[arg-type]
    assert str(caught_type.value) == "uuid must be str, not int"


def test_linger_seconds_from_one() -> None:
    assert cmd.linger(1) == b"linger 1\n\n"
    assert cmd.linger() == b"linger\n\n"
    with pytest.raises(ValueError) as caught:
        cmd.linger(0)
    assert str(caught.value) == "invalid linger time: 0"


def test_nested_balanced_braces_are_a_valid_channel_variable_value() -> None:
    assert cmd.channel_vars({"v": "a{b{c}}d"}).startswith("{v=")
    with pytest.raises(ValueError):
        cmd.channel_vars({"v": "a{b{c}d"})
