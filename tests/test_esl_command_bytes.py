"""The ESL command builders, byte for byte, and their refusals naming what is wrong: what
mutation testing of ``esl/commands.py`` showed no pure test held (docs/mutation.rst; the
connection tests send these commands but check only the replies). Pure."""

from __future__ import annotations

import pytest

from esl_bridge.esl import commands as cmd

UUID = "5e1f0000-0000-4000-8000-0000000c0f01"


def test_connection_commands() -> None:
    assert cmd.auth("ClueCon") == b"auth ClueCon\n\n"
    assert cmd.api("status") == b"api status\n\n"
    assert cmd.api("show", "channels", "as", "json") == b"api show channels as json\n\n"
    assert cmd.bgapi("status") == b"bgapi status\n\n"
    assert cmd.bgapi("originate", "user/1001", "&park()", job_uuid="job-1") == (
        b"bgapi originate user/1001 &park()\nJob-UUID: job-1\n\n"
    )
    assert cmd.event_plain(["CHANNEL_ANSWER", "BACKGROUND_JOB"]) == (
        b"event plain CHANNEL_ANSWER BACKGROUND_JOB\n\n"
    )
    assert cmd.linger() == b"linger\n\n"
    assert cmd.linger(30) == b"linger 30\n\n"


def test_channel_shortcuts() -> None:
    assert cmd.uuid_kill(UUID) == f"api uuid_kill {UUID}\n\n".encode()
    assert cmd.uuid_kill(UUID, "SYSTEM_SHUTDOWN") == (
        f"api uuid_kill {UUID} SYSTEM_SHUTDOWN\n\n".encode()
    )
    assert cmd.uuid_send_dtmf(UUID, "12#") == f"api uuid_send_dtmf {UUID} 12#\n\n".encode()
    assert cmd.uuid_send_dtmf(UUID, "5", 250) == f"api uuid_send_dtmf {UUID} 5@250\n\n".encode()
    for ms in (10, 10000):
        assert cmd.uuid_send_dtmf(UUID, "5", ms).endswith(f" 5@{ms}\n\n".encode())


def test_unicast_command() -> None:
    assert (
        cmd.sendmsg_unicast("127.0.0.1", 40000, "127.0.0.1", 40001, uuid=UUID)
        == (
            f"sendmsg {UUID}\ncall-command: unicast\nlocal-ip: 127.0.0.1\nlocal-port: 40000\n"
            "remote-ip: 127.0.0.1\nremote-port: 40001\ntransport: udp\n\n"
        ).encode()
    )
    native = cmd.sendmsg_unicast("::1", 1, "::1", 65535, transport="tcp", flags="native")
    assert native == (
        b"sendmsg\ncall-command: unicast\nlocal-ip: ::1\nlocal-port: 1\n"
        b"remote-ip: ::1\nremote-port: 65535\ntransport: tcp\nflags: native\n\n"
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: cmd.auth("two words"), "ESL password must be non-empty and contain no space"),
        (lambda: cmd.auth(""), "ESL password must be non-empty and contain no space"),
        (lambda: cmd.auth("a\nb"), "ESL password contains CR, LF or NUL"),
        (lambda: cmd.api("bad command"), "invalid api command: 'bad command'"),
        (lambda: cmd.api("status", "x\r\ny"), "api argument contains CR, LF or NUL"),
        (lambda: cmd.event_plain([]), "event_plain needs at least one event name"),
        (lambda: cmd.event_plain(["A B"]), "invalid event name: 'A B'"),
        (lambda: cmd.linger(0), "invalid linger time: 0"),
        (lambda: cmd.linger(True), "invalid linger time: True"),
        (lambda: cmd.uuid_kill("bad uuid"), "invalid uuid: 'bad uuid'"),
        (lambda: cmd.uuid_kill(UUID, "bad cause"), "invalid hangup cause: 'bad cause'"),
        (lambda: cmd.uuid_send_dtmf(UUID, "12x"), "invalid DTMF digits: '12x'"),
        (lambda: cmd.uuid_send_dtmf(UUID, "1", 9), "invalid DTMF duration: 9"),
        (lambda: cmd.uuid_send_dtmf(UUID, "1", 10001), "invalid DTMF duration: 10001"),
        (
            lambda: cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 2, transport="sctp"),
            "invalid unicast transport: 'sctp'",
        ),
        (
            lambda: cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 2, flags="native|loud"),
            "invalid unicast flag: 'loud'",
        ),
        (lambda: cmd.sendmsg_unicast("host name", 1, "127.0.0.1", 2), "invalid local ip"),
        (lambda: cmd.sendmsg_unicast("127.0.0.1", 1, "x y", 2), "invalid remote ip"),
        (lambda: cmd.sendmsg_unicast("127.0.0.1", 0, "127.0.0.1", 2), "invalid local port"),
        (lambda: cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 70000), "invalid remote port"),
    ],
)
def test_refusals_name_what_is_wrong(build: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        build()  # type: ignore[operator]
    assert str(caught.value).startswith(message), str(caught.value)
