"""ESL commands byte for byte, the ones tests/test_esl_command_bytes.py leaves out:
``sendevent``, ``uuid_setvar_multi``'s argument, the dial strings (user, PSTN, loopback),
``bgapi`` with a Job-UUID, ``myevents <uuid>``, ``sendmsg`` hangup (esl/commands.py).

Each refusal is checked with its exact message: the message names what is wrong.
"""

from __future__ import annotations

import pytest

from esl_bridge.esl import commands as cmd


def test_sendevent_is_one_line_per_header_with_url_encoded_values() -> None:
    out = cmd.sendevent(
        "CUSTOM",
        [("Event-Subclass", "esl_bridge::ping"), ("X-Text", "50% off\r\nä; ok")],
    )
    assert out == (
        b"sendevent CUSTOM\nEvent-Subclass: esl_bridge::ping\nX-Text: 50%25 off%0D%0A%C3%A4; ok\n\n"
    )


def test_sendevent_keeps_the_safe_characters_readable() -> None:
    safe = " !#$&'()*+,/:;<=>?@[]^_`{|}~-."
    out = cmd.sendevent("CUSTOM", [("X-Safe", safe), ("X-Mixed", 'a\\b"c')])
    assert out == (b"sendevent CUSTOM\nX-Safe: " + safe.encode() + b"\nX-Mixed: a%5Cb%22c\n\n")


def test_sendevent_without_headers_is_the_bare_command() -> None:
    assert cmd.sendevent("HEARTBEAT", []) == b"sendevent HEARTBEAT\n\n"


@pytest.mark.parametrize(
    ("event", "headers", "error", "message"),
    [
        ("BAD EVENT", [], ValueError, "invalid event name: 'BAD EVENT'"),
        ("CUSTOM", [("1x", "v")], ValueError, "invalid event header name: '1x'"),
        ("CUSTOM", [("X" * 65, "v")], ValueError, "invalid event header name: '" + "X" * 65 + "'"),
        (
            "CUSTOM",
            [("Content-Length", "5")],
            ValueError,
            "sendevent: a Content-Length header would announce a body",
        ),
        (
            "CUSTOM",
            [("content-LENGTH", "5")],
            ValueError,
            "sendevent: a Content-Length header would announce a body",
        ),
        ("CUSTOM", [("X-N", 5)], TypeError, "event header X-N must be str, not int"),
    ],
)
def test_sendevent_refusals(
    event: str, headers: list[tuple[str, object]], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        cmd.sendevent(event, headers)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_sendevent_header_names_up_to_64_characters() -> None:
    name = "X" + "a" * 63
    assert cmd.sendevent("CUSTOM", [(name, "v")]) == (
        b"sendevent CUSTOM\n" + name.encode() + b": v\n\n"
    )


def test_setvar_multi_arg_joins_name_value_pairs_in_order() -> None:
    assert cmd.setvar_multi_arg({"a": "1"}) == "a=1"
    assert cmd.setvar_multi_arg({"b_2": "x-y", "a.c": "+1@host:5060"}) == "b_2=x-y;a.c=+1@host:5060"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({}, "uuid_setvar_multi needs at least one variable"),
        ({"a b": "1"}, "invalid channel variable name: 'a b'"),
        ({"a": "x;y"}, "invalid uuid_setvar_multi value: 'x;y'"),
        ({"a": "x=y"}, "invalid uuid_setvar_multi value: 'x=y'"),
        ({"a": "x y"}, "invalid uuid_setvar_multi value: 'x y'"),
        ({"a": ""}, "invalid uuid_setvar_multi value: ''"),
        ({"a": "${x}"}, "invalid uuid_setvar_multi value: '${x}'"),
    ],
)
def test_setvar_multi_arg_refusals(variables: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        cmd.setvar_multi_arg(variables)
    assert str(caught.value) == message


def test_setvar_multi_arg_value_length_limit() -> None:
    assert cmd.setvar_multi_arg({"a": "v" * 1024}) == "a=" + "v" * 1024
    with pytest.raises(ValueError):
        cmd.setvar_multi_arg({"a": "v" * 1025})


def test_user_endpoint() -> None:
    assert cmd.user_endpoint("1001") == "user/1001"
    assert cmd.user_endpoint("1001", "example.org") == "user/1001@example.org"
    with pytest.raises(ValueError) as caught:
        cmd.user_endpoint("10 01")
    assert str(caught.value) == "invalid number: '10 01'"
    with pytest.raises(ValueError) as caught:
        cmd.user_endpoint("1001", "bad domain")
    assert str(caught.value) == "invalid SIP domain: 'bad domain'"


def test_pstn_endpoint_through_a_gateway_or_to_an_ip() -> None:
    assert cmd.pstn_endpoint("5551234", gateway="carrier") == "sofia/gateway/carrier/5551234"
    assert (
        cmd.pstn_endpoint("5551234", gateway="carrier", prefix="9", ip="192.0.2.1")
        == "sofia/gateway/carrier/95551234"
    )
    assert cmd.pstn_endpoint("5551234", ip="192.0.2.1") == "sofia/external/5551234@192.0.2.1"
    assert (
        cmd.pstn_endpoint("5551234", ip="192.0.2.1:5080", prefix="00", profile="internal")
        == "sofia/internal/005551234@192.0.2.1:5080"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"number": "555 1"}, "invalid PSTN number: '555 1'"),
        ({"number": "1", "prefix": "9 "}, "invalid PSTN number: '9 1'"),
        ({"number": "1"}, "pstn_endpoint needs ip or gateway"),
        ({"number": "1", "gateway": "a/b"}, "invalid gateway: 'a/b'"),
        ({"number": "1", "ip": "a b"}, "invalid PSTN ip: 'a b'"),
        ({"number": "1", "ip": "192.0.2.1", "profile": "a/b"}, "invalid profile: 'a/b'"),
    ],
)
def test_pstn_endpoint_refusals(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        cmd.pstn_endpoint(**kwargs)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_loopback_endpoint() -> None:
    assert cmd.loopback_endpoint("1001") == "loopback/1001/default"
    assert cmd.loopback_endpoint("1001", "public") == "loopback/1001/public"
    with pytest.raises(ValueError) as caught:
        cmd.loopback_endpoint("1 001")
    assert str(caught.value) == "invalid number: '1 001'"
    with pytest.raises(ValueError) as caught:
        cmd.loopback_endpoint("1001", "a/b")
    assert str(caught.value) == "invalid context: 'a/b'"


def test_park_app() -> None:
    assert cmd.park_app() == "&park()"


def test_bgapi_with_and_without_a_job_uuid() -> None:
    assert cmd.bgapi("status") == b"bgapi status\n\n"
    assert cmd.bgapi("uuid_kill", "u-1", job_uuid="job-1") == (
        b"bgapi uuid_kill u-1\nJob-UUID: job-1\n\n"
    )
    with pytest.raises(ValueError) as caught:
        cmd.bgapi("status", job_uuid="bad uuid")
    assert str(caught.value) == "invalid Job-UUID: 'bad uuid'"


def test_myevents_for_a_channel() -> None:
    assert cmd.myevents() == b"myevents\n\n"
    assert cmd.myevents("u-1") == b"myevents u-1\n\n"
    with pytest.raises(ValueError) as caught:
        cmd.myevents("bad uuid")
    assert str(caught.value) == "invalid uuid: 'bad uuid'"


def test_sendmsg_hangup() -> None:
    assert cmd.sendmsg_hangup() == (
        b"sendmsg\ncall-command: hangup\nhangup-cause: NORMAL_CLEARING\n\n"
    )
    assert cmd.sendmsg_hangup("USER_BUSY", uuid="u-1") == (
        b"sendmsg u-1\ncall-command: hangup\nhangup-cause: USER_BUSY\n\n"
    )
    with pytest.raises(ValueError) as caught:
        cmd.sendmsg_hangup("busy")
    assert str(caught.value) == "invalid hangup cause: 'busy'"
