"""Signalling frames the hub writes, and the errors it answers, text for text
(signaling/protocol.py). tests/test_signaling_protocol.py checks what decodes; here the
exact error codes and messages of the refusals, the compact UTF-8 JSON the hub sends, and
the two helpers the gateway uses to check names are held on their own.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from esl_bridge.signaling import protocol as p


def dec(obj: Any, **limits: int) -> p.ClientMessage | p.ProtocolError:
    return p.decode_client(json.dumps(obj), p.Limits(**limits) if limits else None)


def test_encode_is_compact_and_keeps_non_ascii_as_itself() -> None:
    assert p.encode({"type": "message", "text": "héllo ✓", "n": [1, 2]}) == (
        '{"type":"message","text":"héllo ✓","n":[1,2]}'
    )


def test_busy_refusal_and_call_state_result_are_compact_json() -> None:
    assert p.busy_refusal() == '{"Cmd":"Calling","Reason":"calling"}'
    assert p.call_state_result(2, 1) == '{"Cmd":"CallStateResult","state":2,"Mode":1}'
    assert p.call_state_result(0, None) == '{"Cmd":"CallStateResult","state":0}'


def test_a_frame_over_the_limit_is_a_fatal_message_too_large() -> None:
    err = p.too_large(p.Limits(max_message_bytes=99))
    assert (err.code, err.message, err.fatal) == (
        p.Err.MESSAGE_TOO_LARGE,
        "frame over 99 bytes",
        True,
    )


@pytest.mark.parametrize(("key", "limit"), [("token", p.MAX_TOKEN_CHARS), ("session", 64)])
def test_login_token_and_session_lengths(key: str, limit: int) -> None:
    login = {"v": 1, "type": "login", "appid": "a", "uid": "u"}
    ok = dec({**login, key: "t" * limit})
    assert isinstance(ok, p.ClientMessage)
    assert getattr(ok.body, key) == "t" * limit
    for bad in ("t" * (limit + 1), 5):
        err = dec({**login, key: bad})
        assert isinstance(err, p.ProtocolError)
        assert (err.code, err.message) == (
            p.Err.BAD_MESSAGE,
            f"'{key}' must be a string of at most {limit}",
        )


def test_a_peer_message_over_its_limit_says_so() -> None:
    err = dec({"v": 1, "type": "message", "to": "b", "text": "é" * 6}, max_peer_message_bytes=11)
    assert isinstance(err, p.ProtocolError)
    assert (err.code, err.message) == (p.Err.INVALID_ARGUMENT, "'text' is over 11 bytes of UTF-8")


def test_valid_uid_and_appid() -> None:
    assert p.valid_uid("alice") and p.valid_uid("x" * 64) and p.valid_uid("a!~")
    assert not p.valid_uid("") and not p.valid_uid("a b") and not p.valid_uid("x" * 65)
    assert p.valid_appid("app-1_v.2") and p.valid_appid("a" * 64)
    assert not p.valid_appid("") and not p.valid_appid("a!b") and not p.valid_appid("a" * 65)
