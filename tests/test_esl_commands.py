"""Command builders: exact bytes as recorded, dial-string escaping, injection refusal."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from support.budget import examples
from support.esl_transcripts import all_transcripts, read_transcript

from esl_bridge.esl import commands as cmd
from esl_bridge.sim.dialstring import parse_dial_string, split_args

UUID = "664e6576-b42e-49ab-95e9-0e0a20170d42"
OUT_UUID = "255574a3-d361-44e5-bc5a-1b9f4df22e02"


def _sent_by_app() -> set[bytes]:
    sent: set[bytes] = set()
    for path in all_transcripts():
        sent.update(read_transcript(path).app_chunks())
    return sent


APP_SENT = _sent_by_app()


@pytest.mark.parametrize(
    "built",
    [
        cmd.auth("ClueCon"),
        cmd.auth("WrongPassword"),
        cmd.api("status"),
        cmd.api("nosuchcommand", "foo"),
        cmd.event_plain(
            [
                "CHANNEL_CREATE",
                "CHANNEL_ANSWER",
                "CHANNEL_HANGUP_COMPLETE",
                "BACKGROUND_JOB",
                "DTMF",
            ]
        ),
        cmd.event_plain(["CHANNEL_ANSWER", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB"]),
        cmd.bgapi(
            "originate",
            cmd.originate_arg(
                cmd.user_endpoint("1001"), cmd.park_app(), {"origination_caller_id_number": "1005"}
            ),
        ),
        cmd.bgapi(
            "originate",
            cmd.originate_arg(
                cmd.user_endpoint("1002"),
                cmd.park_app(),
                {"ignore_early_media": True, "origination_caller_id_number": 1005},
            ),
        ),
        cmd.bgapi(
            "originate",
            cmd.originate_arg(
                cmd.user_endpoint("1001"),
                cmd.socket_app("127.0.0.1", 8084),
                {"origination_caller_id_number": "1005"},
            ),
        ),
        cmd.bgapi(
            "originate",
            cmd.originate_arg(
                cmd.user_endpoint("1001"),
                cmd.park_app(),
                {
                    "origination_uuid": "5e1f0000-0000-4000-8000-0000000ea21e",
                    "origination_caller_id_number": "1005",
                },
            ),
        ),
        cmd.api("originate", cmd.originate_arg(cmd.user_endpoint("1019"), cmd.park_app())),
        cmd.bgapi("originate", cmd.originate_arg(cmd.user_endpoint("1019"), cmd.park_app())),
        cmd.sendmsg_unicast("127.0.0.1", 9200, "127.0.0.1", 9201, uuid=UUID),
        cmd.sendmsg_unicast("127.0.0.1", 9102, "127.0.0.1", 9103),
        cmd.uuid_send_dtmf(UUID, "12"),
        cmd.uuid_send_dtmf(OUT_UUID, "789"),
        cmd.sendmsg_execute("send_dtmf", "56", uuid=UUID),
        cmd.sendmsg_execute("send_dtmf", "456"),
        cmd.sendmsg_execute("answer"),
        cmd.sendmsg_execute("pre_answer"),
        cmd.sendmsg_execute("hangup", "NORMAL_CLEARING"),
        cmd.sendmsg_execute("set", "rtp_autoflush=true"),
        cmd.uuid_kill(UUID),
        cmd.CONNECT,
        cmd.myevents(),
        cmd.linger(),
        cmd.EXIT,
    ],
)
def test_builders_match_recorded_bytes(built: bytes) -> None:
    assert built in APP_SENT


def test_quoted_socket_app_exact() -> None:
    arg = cmd.originate_arg(
        "user/1001", cmd.socket_app("127.0.0.1", 8084), {"origination_caller_id_number": "1005"}
    )
    assert (
        arg == "{origination_caller_id_number=1005}user/1001 '&socket(127.0.0.1:8084 async full)'"
    )
    with pytest.raises(ValueError, match="single-quoted"):
        cmd.originate_arg("user/1001", "&socket(127.0.0.1:8084 async full)")


def test_other_builders() -> None:
    assert cmd.bgapi("status", job_uuid="abc-1") == b"bgapi status\nJob-UUID: abc-1\n\n"
    assert cmd.linger(30) == b"linger 30\n\n"
    assert cmd.myevents(UUID) == f"myevents {UUID}\n\n".encode()
    assert cmd.uuid_kill(UUID, "USER_BUSY") == f"api uuid_kill {UUID} USER_BUSY\n\n".encode()
    assert cmd.uuid_send_dtmf(UUID, "1#", 200) == f"api uuid_send_dtmf {UUID} 1#@200\n\n".encode()
    assert cmd.sendmsg_hangup("USER_NOT_REGISTERED") == (
        b"sendmsg\ncall-command: hangup\nhangup-cause: USER_NOT_REGISTERED\n\n"
    )
    assert cmd.sendmsg_hangup(uuid=UUID).startswith(f"sendmsg {UUID}\n".encode())
    assert cmd.sendmsg_execute("playback", "x", event_lock=True, event_uuid="e-1", loops=2) == (
        b"sendmsg\ncall-command: execute\nexecute-app-name: playback\nexecute-app-arg: x\n"
        b"loops: 2\nevent-lock: true\nEvent-UUID: e-1\n\n"
    )
    assert cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 2, flags="native").endswith(
        b"transport: udp\nflags: native\n\n"
    )
    assert cmd.user_endpoint("1001", "127.0.0.1") == "user/1001@127.0.0.1"
    assert cmd.loopback_endpoint("01002") == "loopback/01002/default"
    assert cmd.pstn_endpoint("5551234", ip="192.0.2.7", prefix="9") == (
        "sofia/external/95551234@192.0.2.7"
    )
    assert cmd.pstn_endpoint("5551234", gateway="carrier1") == "sofia/gateway/carrier1/5551234"
    assert cmd.channel_vars({}) == ""


@pytest.mark.parametrize(
    "build",
    [
        lambda v: cmd.auth(v),
        lambda v: cmd.api("status", v),
        lambda v: cmd.bgapi("originate", v),
        lambda v: cmd.sendmsg_execute("playback", v),
        lambda v: cmd.sendmsg_execute("playback", "x", uuid=v),
        lambda v: cmd.sendmsg_unicast(v, 1, "127.0.0.1", 2),
        lambda v: cmd.sendmsg_hangup(v),
        lambda v: cmd.uuid_kill(v),
        lambda v: cmd.uuid_kill(UUID, v),
        lambda v: cmd.uuid_send_dtmf(UUID, v),
        lambda v: cmd.event_plain(["DTMF", v]),
        lambda v: cmd.escape_var_value(v),
        lambda v: cmd.channel_vars({"sip_h_X-ArInfo": v}),
        lambda v: cmd.channel_vars({v: "1"}),
        lambda v: cmd.user_endpoint(v),
        lambda v: cmd.user_endpoint("1001", v),
        lambda v: cmd.originate_arg(v, "&park()"),
        lambda v: cmd.originate_arg("user/1", v),
    ],
)
@pytest.mark.parametrize("bad", ["x\napi shutdown", "x\r\nexit", "\n", "a\x00b"])
def test_cr_lf_injection_refused(build, bad: str) -> None:
    with pytest.raises(ValueError):
        build(bad)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: cmd.escape_var_value("${system(id)}"), "expansion"),
        (lambda: cmd.escape_var_value("a}b"), "unbalanced"),
        (lambda: cmd.escape_var_value("{a"), "unbalanced"),
        (lambda: cmd.sendmsg_unicast("127.0.0.1", 0, "127.0.0.1", 2), "local port"),
        (lambda: cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 70000), "remote port"),
        (
            lambda: cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 2, transport="sctp"),
            "transport",
        ),
        (lambda: cmd.sendmsg_unicast("127.0.0.1", 1, "127.0.0.1", 2, flags="evil"), "flag"),
        (lambda: cmd.sendmsg_execute("bad app"), "application name"),
        (lambda: cmd.uuid_kill("a b"), "uuid"),
        (lambda: cmd.sendmsg_hangup("normal clearing"), "hangup cause"),
        (lambda: cmd.uuid_send_dtmf(UUID, "12x"), "DTMF"),
        (lambda: cmd.event_plain([]), "at least one"),
        (lambda: cmd.auth(""), "password"),
        (lambda: cmd.auth("a b"), "password"),
        (lambda: cmd.linger(0), "linger"),
        (lambda: cmd.socket_app("127.0.0.1", 8084, "async full; evil"), "socket mode"),
        (lambda: cmd.pstn_endpoint("1"), "ip or gateway"),
        (lambda: cmd.channel_vars({"a=b": "1"}), "variable name"),
    ],
)
def test_bad_values_refused(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


# ------------------------------------------------------------ FreeSWITCH 1.10 reader model
# How FreeSWITCH reads an originate argument: the simulator's model (sim/dialstring.py, checked
# against the recorded originates in tests/test_sim_originate_quoting.py).


def fs_read_originate(arg: str) -> tuple[dict[str, str], str, list[str]]:
    argv = split_args(arg)
    ds = parse_dial_string(argv[0])
    return ds.variables, ds.leg, argv[1:]


def test_model_reads_the_recorded_forms() -> None:
    assert fs_read_originate(
        "{origination_caller_id_number=1005}user/1001 '&socket(127.0.0.1:8084 async full)'"
    ) == (
        {"origination_caller_id_number": "1005"},
        "user/1001",
        ["&socket(127.0.0.1:8084 async full)"],
    )
    # Unquoted: split at the spaces (docs/freeswitch.rst, fact 6).
    assert fs_read_originate("user/1001 &socket(127.0.0.1:8084 async full)")[2] == [
        "&socket(127.0.0.1:8084",
        "async",
        "full)",
    ]
    # The documented forms: \, keeps a comma, '' keeps spaces, ^^: changes the separator.
    assert fs_read_originate("{a=x\\,y,b='p q'}user/1 &park()")[0] == {"a": "x,y", "b": "p q"}
    assert fs_read_originate("{^^:a=x,y:b=z}user/1 &park()")[0] == {"a": "x,y", "b": "z"}


@pytest.mark.parametrize(
    "value",
    [
        "1005",
        "John Doe",
        "a,b,c",
        "O'Brien",
        '"Bob" <sip:1002@host>',
        "{balanced}",
        "back\\slash",
        "tab\\t-looking",
        " edges ",
        "x=y=z",
        "^^:a",
        "\\,",
        "''",
        '{"Cmd":"Calling","UserData":"a, b"}',
        "中文 名字",
        "",
    ],
)
def test_escaped_values_roundtrip(value: str) -> None:
    arg = cmd.originate_arg("user/1001", "&park()", {"v": value, "w": "1"})
    variables, endpoint, rest = fs_read_originate(arg)
    assert variables == ({"v": value, "w": "1"} if value else {"w": "1"})
    assert endpoint == "user/1001" and rest == ["&park()"]


_SAFE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\n\x00\t", blacklist_categories=("Cs",)),
    max_size=40,
)


@settings(max_examples=examples(300), deadline=None)
@given(
    st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), _SAFE_TEXT, max_size=4)
)
def test_escaping_roundtrips_any_value(variables: dict[str, str]) -> None:
    for value in variables.values():
        assume("${" not in value and cmd._braces_balanced(value))
    arg = cmd.originate_arg("user/1001@127.0.0.1", cmd.socket_app("127.0.0.1", 8084), variables)
    parsed, endpoint, rest = fs_read_originate(arg)
    assert parsed == {k: v for k, v in variables.items() if v}
    assert endpoint == "user/1001@127.0.0.1"
    assert rest == ["&socket(127.0.0.1:8084 async full)"]


@settings(max_examples=examples(200), deadline=None)
@given(st.text(max_size=30), st.sampled_from(["\r", "\n", "\r\n"]), st.text(max_size=30))
def test_any_line_break_is_refused(head: str, brk: str, tail: str) -> None:
    value = head + brk + tail
    for build in (
        lambda: cmd.escape_var_value(value),
        lambda: cmd.sendmsg_execute("set", value),
        lambda: cmd.api("status", value),
    ):
        with pytest.raises(ValueError):
            build()
