"""One model of how FreeSWITCH splits an originate argument (sim/dialstring.py), checked
against the originate commands recorded in tests/fixtures/freeswitch/ and what FreeSWITCH
made of them: the channel variables its events carry, the socket application's data, and
the uuid in the result."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

import pytest
from support.esl_transcripts import FIXTURES
from support.sim_wire import fs_frames, read_transcript

from esl_bridge.sim.dialstring import parse_app, parse_dial_string, split_args, split_char

_COMMAND = re.compile(r"^(?:api|bgapi) originate (.+)$", re.MULTILINE)


@dataclass
class Recorded:
    commands: list[str]  # the originate arguments the app sent
    variables: dict[str, set[str]]  # variable_* values in FreeSWITCH's events, decoded
    socket_data: set[str]  # what the socket application got as its data
    results: set[str]  # +OK/-ERR lines of api replies and BACKGROUND_JOB bodies


def _recorded(name: str) -> Recorded:
    sent = b"".join(r.data for r in read_transcript(name) if not r.from_freeswitch)
    commands = _COMMAND.findall(sent.decode("utf-8", "replace"))
    variables: dict[str, set[str]] = {}
    socket_data: set[str] = set()
    results: set[str] = set()
    for frame in fs_frames(name):
        if frame.content_type == "text/event-plain":
            ev = frame.event()
            for key, value in ev.headers:
                if key.startswith("variable_"):
                    variables.setdefault(key[9:], set()).add(urllib.parse.unquote(value))
            if ev.get("Application") == "socket":
                socket_data.add(ev.get("Application-Data") or "")
            if ev.name == "BACKGROUND_JOB":
                results.add(ev.body.decode().strip())
        elif frame.content_type == "api/response":
            results.add(frame.body.decode().strip())
    return Recorded(commands, variables, socket_data, results)


TRANSCRIPTS = sorted(
    str(p.relative_to(FIXTURES))
    for p in [*FIXTURES.glob("esl_inbound_*.txt"), *FIXTURES.glob("orphans/esl_inbound_*.txt")]
    if _COMMAND.search(p.read_bytes().decode("utf-8", "replace"))
)


def _check(name: str) -> int:
    """Read each recorded originate with the model; compare with what FreeSWITCH did, where
    the transcript shows it (some recorded no events or no result). Returns the checks made."""
    rec = _recorded(name)
    checks = 0
    for arg in rec.commands:
        args = split_args(arg)
        ds = parse_dial_string(args[0])
        app = parse_app(args[1])
        assert ds.endpoint == "user" and ds.target.isdigit(), arg
        if rec.variables:
            for key, value in ds.variables.items():
                assert value in rec.variables.get(key, set()), (arg, key, value)
                checks += 1
        uuid = ds.variables.get("origination_uuid")
        if uuid and rec.results:
            assert f"+OK {uuid}" in rec.results, (arg, rec.results)
            checks += 1
        if app.name == "socket" and rec.socket_data:
            assert app.args in rec.socket_data, (arg, rec.socket_data)
            checks += 1
    return checks


def test_recorded_originates_found() -> None:
    assert len(TRANSCRIPTS) >= 8
    assert sum(len(_recorded(n).commands) for n in TRANSCRIPTS) >= 15
    assert sum(_check(n) for n in TRANSCRIPTS) >= 20


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_model_reads_recorded_originates_as_freeswitch_did(name: str) -> None:
    _check(name)


def test_socket_app_data_quoted_and_unquoted() -> None:
    """The recorded pair: quoted, the socket app gets all three words (async full);
    unquoted, FreeSWITCH split at the blanks and it got only host:port (static mode)."""
    quoted = _recorded("esl_inbound_originate_socket_quoted.txt")
    assert "127.0.0.1:8084 async full" in quoted.variables["current_application_data"]
    (arg,) = [a for a in quoted.commands if "socket" in a]
    assert parse_app(split_args(arg)[1]).args == "127.0.0.1:8084 async full"
    unquoted_arg = next(a for a in _recorded("esl_inbound_main.txt").commands if "socket" in a)
    assert split_args(unquoted_arg)[1:] == ["&socket(127.0.0.1:8084", "async", "full)"]
    static = _recorded("esl_outbound_originate_socket_unquoted_static_mode.txt")
    assert parse_app(split_args(unquoted_arg)[1]).args in static.variables[
        "current_application_data"
    ] | {"127.0.0.1:8084"}
    assert static.variables["current_application_data"] == {"127.0.0.1:8084"}


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        # switch_separate_string: a quote toggles at the blanks even without a closing one;
        # inside the pieces, an unpaired quote is kept.
        ("a 'b c", ["a", "'b c"]),
        ("O'Brien x", ["O'Brien x"]),
        ("a  b ", ["a", "b"]),
    ],
)
def test_blank_split_follows_freeswitch(text: str, pieces: list[str]) -> None:
    assert split_args(text) == pieces


def test_char_split_makes_no_empty_last_piece() -> None:
    # FreeSWITCH stops at the end of the buffer: `x=` is one piece, so `{x=}` sets nothing.
    assert split_char("x=", "=", 2) == ["x"]
    assert split_char("a=1,", ",", 1024) == ["a=1"]
    assert parse_dial_string("{x=,y=1}user/1").variables == {"y": "1"}
