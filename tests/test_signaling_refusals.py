"""Every refusal of the signalling decoder as the client receives it: the error code, the
message naming the field, and the ``re`` that ties it to the request (signaling/protocol.py).
tests/test_signaling_protocol.py checks what decodes; tests/test_signaling_replies.py
the size limits and the server frames.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_signaling_replies import dec

from esl_bridge.signaling import protocol as p

SURROGATE = "'{}' holds a lone surrogate (\\ud800-\\udfff escape): not valid Unicode"


def refusal(out: p.ClientMessage | p.ProtocolError) -> tuple[str, str, p.MsgId]:
    assert isinstance(out, p.ProtocolError), out
    assert not out.fatal and out.close is None
    return out.code, out.message, out.re


# ---------------------------------------------------------------- fields of each message

# (message without the field, field, what the refusal calls a value of it)
MATCHED = [
    ({"type": "login", "uid": "u"}, "appid", "appid"),
    ({"type": "login", "appid": "a"}, "uid", "uid"),
    ({"type": "message", "text": "hi"}, "to", "uid"),
    ({"type": "invite", "callee": "b"}, "ref", "ref"),
    ({"type": "invite", "ref": "r"}, "callee", "uid"),
    ({"type": "cancel"}, "ref", "ref"),
    ({"type": "ack"}, "inv", "invitation id"),
    ({"type": "accept"}, "inv", "invitation id"),
    ({"type": "refuse"}, "inv", "invitation id"),
]


@pytest.mark.parametrize(("base", "key", "what"), MATCHED)
def test_an_invalid_name_is_refused_naming_the_field(
    base: dict[str, Any], key: str, what: str
) -> None:
    for bad in ("", "a b", "x" * 65):
        out = dec({"v": 1, "id": 3, **base, key: bad})
        assert refusal(out) == (p.Err.INVALID_ARGUMENT, f"'{key}' is not a valid {what}", 3)


@pytest.mark.parametrize(("base", "key", "what"), MATCHED)
def test_a_missing_or_non_string_name_is_a_bad_message(
    base: dict[str, Any], key: str, what: str
) -> None:
    del what
    for bad in (None, 5, ["a"]):
        obj = {"v": 1, "id": "q", **base}
        if bad is not None:
            obj[key] = bad
        out = dec(obj)
        assert refusal(out) == (p.Err.BAD_MESSAGE, f"'{key}' must be a string", "q")


@pytest.mark.parametrize("kind", ["accept", "refuse"])
def test_the_callee_response_is_carried_and_limited(kind: str) -> None:
    out = dec({"v": 1, "type": kind, "inv": "i", "response": "yes"})
    assert isinstance(out, p.ClientMessage)
    assert out.body.response == "yes"  # type: ignore[union-attr]
    over = "r" * (p.RESPONSE_MAX_BYTES + 1)
    out = dec({"v": 1, "id": 9, "type": kind, "inv": "i", "response": over})
    assert refusal(out) == (
        p.Err.INVALID_ARGUMENT,
        f"'response' is over {p.RESPONSE_MAX_BYTES} bytes of UTF-8",
        9,
    )


def test_an_unknown_type_is_refused_with_its_id() -> None:
    out = dec({"v": 1, "id": 4, "type": "dance"})
    assert refusal(out) == (p.Err.UNKNOWN_TYPE, "unknown message type", 4)


# ----------------------------------------------------------------------------- uid lists


@pytest.mark.parametrize("kind", ["query", "subscribe", "unsubscribe"])
def test_uid_lists_are_refused_with_the_reason(kind: str) -> None:
    for bad in (None, "a", [1], ["a", None]):
        obj = {"v": 1, "id": 1, "type": kind}
        if bad is not None:
            obj["uids"] = bad
        out = dec(obj)
        assert refusal(out) == (p.Err.BAD_MESSAGE, "'uids' must be a list of strings", 1)
    for uids, limit in (([], 256), (["a", "b", "c"], 2)):
        out = dec({"v": 1, "id": 2, "type": kind, "uids": uids}, max_uids_per_request=limit)
        assert refusal(out) == (
            p.Err.INVALID_ARGUMENT,
            f"'uids' must hold 1 to {limit} uids",
            2,
        )
    out = dec({"v": 1, "id": 3, "type": kind, "uids": ["a", "b c"]})
    assert refusal(out) == (p.Err.INVALID_ARGUMENT, "'uids' holds an invalid uid", 3)


def test_uid_list_limit_is_inclusive() -> None:
    out = dec({"v": 1, "type": "query", "uids": ["a", "b"]}, max_uids_per_request=2)
    assert isinstance(out, p.ClientMessage) and out.body == p.Query(("a", "b"))


# ----------------------------------------------------------------------- the frame itself


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{", "not JSON"),
        (b"\xff", "not UTF-8"),
        ("[1]", "not a JSON object"),
        ('"v"', "not a JSON object"),
        ("null", "not a JSON object"),
    ],
)
def test_a_frame_that_is_not_an_object_is_a_bad_message(raw: str | bytes, message: str) -> None:
    assert refusal(p.decode_client(raw)) == (p.Err.BAD_MESSAGE, message, None)


@pytest.mark.parametrize("msg_id", [0, -(2**53), 2**53, "", "x" * 64])
def test_ids_at_their_limits_are_echoed(msg_id: int | str) -> None:
    out = dec({"v": 1, "type": "ping", "id": msg_id})
    assert out == p.ClientMessage(msg_id, p.Ping())


@pytest.mark.parametrize(
    "msg_id", [True, False, 1.5, [], {}, ["a"], 2**53 + 1, -(2**53) - 1, "x" * 65]
)
def test_an_id_that_cannot_be_echoed_is_a_bad_message(msg_id: Any) -> None:
    out = dec({"v": 1, "type": "ping", "id": msg_id})
    assert refusal(out) == (
        p.Err.BAD_MESSAGE,
        "'id' must be an integer or a short string",
        None,
    )


@pytest.mark.parametrize("version", [2, 0, "1", True, None])
def test_another_version_is_refused_with_the_id(version: Any) -> None:
    obj: dict[str, Any] = {"id": 11, "type": "ping"}
    if version is not None:
        obj["v"] = version
    assert refusal(dec(obj)) == (
        p.Err.UNSUPPORTED_VERSION,
        "protocol version 1 is required",
        11,
    )


@pytest.mark.parametrize("kind", [None, 1, ["ping"]])
def test_a_type_that_is_not_a_string_is_refused_with_the_id(kind: Any) -> None:
    obj: dict[str, Any] = {"v": 1, "id": "t"}
    if kind is not None:
        obj["type"] = kind
    assert refusal(dec(obj)) == (p.Err.BAD_MESSAGE, "'type' must be a string", "t")


# ------------------------------------------------------------------------ lone surrogates


def _raw(fields: str) -> str:
    """A frame as JSON text, so that ``\\ud800`` escapes reach the decoder as they are."""
    return '{"v":1,' + fields + "}"


def test_an_id_with_a_lone_surrogate_is_not_echoed() -> None:
    out = p.decode_client(_raw('"type":"ping","id":"a\\ud800"'))
    assert refusal(out) == (p.Err.INVALID_ARGUMENT, SURROGATE.format("id"), None)


def test_a_field_with_a_lone_surrogate_is_refused_by_name() -> None:
    out = p.decode_client(_raw('"id":5,"type":"message","to":"b","text":"hi \\udc00"'))
    assert refusal(out) == (p.Err.INVALID_ARGUMENT, SURROGATE.format("text"), 5)
    # An unknown field too: nothing the hub forwards may hold one.
    key = "k" * p.MAX_ID_CHARS
    out = p.decode_client(_raw(f'"id":6,"type":"ping","{key}":"\\ud83d"'))
    assert refusal(out) == (p.Err.INVALID_ARGUMENT, SURROGATE.format(key), 6)


@pytest.mark.parametrize("key", ["k" * (p.MAX_ID_CHARS + 1), "k\\ud800"])
def test_a_field_name_that_cannot_be_echoed_is_a_question_mark(key: str) -> None:
    out = p.decode_client(_raw(f'"id":7,"type":"ping","{key}":"\\ud800"'))
    assert refusal(out) == (p.Err.INVALID_ARGUMENT, SURROGATE.format("?"), 7)


def test_a_refusal_message_is_utf8_json_on_the_wire() -> None:
    out = p.decode_client(_raw('"id":8,"type":"ping","x":"\\udfff"'))
    assert isinstance(out, p.ProtocolError)
    wire = p.encode(out.to_wire())
    assert json.loads(wire.encode("utf-8")) == {
        "v": 1,
        "type": "error",
        "re": 8,
        "code": p.Err.INVALID_ARGUMENT,
        "message": SURROGATE.format("x"),
        "errno": p.API_ERRNO[p.Err.INVALID_ARGUMENT],
    }


# ----------------------------------------------------------------------- the error frame


def test_error_frame_carries_re_code_and_message() -> None:
    assert p.error(7, "BAD_MESSAGE", "why") == {
        "v": 1,
        "type": "error",
        "re": 7,
        "code": "BAD_MESSAGE",
        "message": "why",
    }
    assert p.error("x", "ALREADY_SENT", "m") == {
        "v": 1,
        "type": "error",
        "re": "x",
        "code": "ALREADY_SENT",
        "message": "m",
        "errno": p.API_ERRNO["ALREADY_SENT"],
    }


def test_protocol_error_to_wire_keeps_its_re() -> None:
    err = p.ProtocolError(p.Err.UNKNOWN_TYPE, "unknown message type", re="r1")
    assert err.to_wire() == {
        "v": 1,
        "type": "error",
        "re": "r1",
        "code": p.Err.UNKNOWN_TYPE,
        "message": "unknown message type",
    }
