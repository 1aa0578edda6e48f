"""Decoder, tokens and ARCall helpers; hypothesis fuzzing of the decoder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.budget import examples

from esl_bridge.signaling import protocol as p
from esl_bridge.signaling.auth import (
    TokenError,
    TokenInfo,
    mask_secret,
    mint_legacy_token,
    mint_token,
    verify_token,
)

CERT = "cert"


def dec(obj: Any, **limits: int) -> p.ClientMessage | p.ProtocolError:
    raw = obj if isinstance(obj, str | bytes) else json.dumps(obj, ensure_ascii=False)
    return p.decode_client(raw, p.Limits(**limits) if limits else None)


@pytest.mark.parametrize(
    ("obj", "body"),
    [
        (
            {"v": 1, "type": "login", "appid": "a", "uid": "u", "token": "t"},
            p.Login("a", "u", "t", None),
        ),
        (
            {"v": 1, "type": "login", "appid": "a", "uid": "u", "session": "s"},
            p.Login("a", "u", None, "s"),
        ),
        ({"v": 1, "type": "logout"}, p.Logout()),
        ({"v": 1, "type": "ping"}, p.Ping()),
        ({"v": 1, "type": "query", "uids": ["a", "b", "a"]}, p.Query(("a", "b"))),
        ({"v": 1, "type": "subscribe", "uids": ["a"]}, p.Subscribe(("a",))),
        ({"v": 1, "type": "unsubscribe", "uids": ["a"]}, p.Unsubscribe(("a",))),
        ({"v": 1, "type": "message", "to": "b", "text": "hi"}, p.PeerMessage("b", "hi")),
        ({"v": 1, "type": "invite", "ref": "r", "callee": "b"}, p.Invite("r", "b", "", "")),
        (
            {
                "v": 1,
                "type": "invite",
                "ref": "r",
                "callee": "b",
                "content": "c",
                "channel_id": "ch",
            },
            p.Invite("r", "b", "c", "ch"),
        ),
        ({"v": 1, "type": "cancel", "ref": "r"}, p.Cancel("r")),
        ({"v": 1, "type": "ack", "inv": "i"}, p.Ack("i")),
        ({"v": 1, "type": "accept", "inv": "i"}, p.Accept("i", "")),
        ({"v": 1, "type": "refuse", "inv": "i", "response": "x"}, p.Refuse("i", "x")),
    ],
)
def test_every_client_message(obj: dict[str, Any], body: p.Body) -> None:
    for msg_id in (None, 7, "abc"):
        out = dec({**obj, "id": msg_id} if msg_id is not None else obj)
        assert out == p.ClientMessage(msg_id, body)


@pytest.mark.parametrize(
    ("field", "limit"),
    [("content", 8192), ("channel_id", 64)],
)
def test_invite_limits_at_the_boundary(field: str, limit: int) -> None:
    base = {"v": 1, "type": "invite", "ref": "r", "callee": "b"}
    assert isinstance(dec({**base, field: "x" * limit}), p.ClientMessage)
    err = dec({**base, field: "x" * (limit + 1)})
    assert isinstance(err, p.ProtocolError)
    assert err.code == "INVALID_ARGUMENT"
    assert err.to_wire()["errno"] == 1
    assert not err.fatal


def test_frame_limit_counts_utf8_bytes() -> None:
    raw = json.dumps({"v": 1, "type": "ping", "pad": "a"})  # odd length: 33 bytes
    pad = 100 - len(raw)
    exact = json.dumps({"v": 1, "type": "ping", "pad": "a" + "é" * (pad // 2)}, ensure_ascii=False)
    assert len(exact.encode()) == 100
    assert isinstance(p.decode_client(exact, p.Limits(max_message_bytes=100)), p.ClientMessage)
    err = p.decode_client(exact, p.Limits(max_message_bytes=99))
    assert isinstance(err, p.ProtocolError)
    assert err.fatal
    assert err.close == (4003, "MESSAGE_TOO_LARGE")


def test_uid_rules() -> None:
    good = ["a", "1005", "x" * 64, "a!#$%&()+-:;<=.>?@[]^_{}|~"]
    bad = ["", " ", "a b", "x" * 65, "é", "a\n"]
    for uid in good:
        assert isinstance(dec({"v": 1, "type": "query", "uids": [uid]}), p.ClientMessage), uid
    for uid in bad:
        out = dec({"v": 1, "type": "query", "uids": [uid]})
        assert isinstance(out, p.ProtocolError), uid
        assert out.code == "INVALID_ARGUMENT"


def test_server_messages() -> None:
    assert p.ok(1, a=2) == {"v": 1, "type": "ok", "re": 1, "a": 2}
    err = p.error(None, "ALREADY_SENT", "m")
    assert err["errno"] == 5
    assert "errno" not in p.error(None, "BAD_MESSAGE", "m")
    assert p.closing(p.Close.TAKEOVER) == {
        "v": 1,
        "type": "closing",
        "code": 4001,
        "reason": "TAKEOVER",
        "message": "",
    }
    assert json.loads(p.encode({"t": "é"})) == {"t": "é"}


def test_arcall_helpers() -> None:
    assert p.peer_command('{"Cmd":"EndCall"}') == {"Cmd": "EndCall"}
    assert p.peer_command("hello") is None
    assert p.peer_command('{"Cmd":1}') is None
    assert json.loads(p.busy_refusal()) == {"Cmd": "Calling", "Reason": "calling"}
    assert json.loads(p.call_state_result(2, 1)) == {
        "Cmd": "CallStateResult",
        "state": 2,
        "Mode": 1,
    }


# ---- tokens --------------------------------------------------------------------------


def test_legacy_token_round_trip_and_reasons() -> None:
    """The old format, still accepted for one release (flagged legacy), with no skew."""
    tok = mint_legacy_token("app", "u:1", CERT, 60, 1000.0)
    assert verify_token(tok, "app", "u:1", CERT, 1059.9) == TokenInfo(
        "app", "u:1", 1060, legacy=True
    )
    assert verify_token(tok, "app", "u:1", CERT, 1060.0) is TokenError.EXPIRED
    assert verify_token(tok, "app2", "u:1", CERT, 1000.0) is TokenError.WRONG_APPID
    assert verify_token(tok, "app", "u", CERT, 1000.0) is TokenError.WRONG_UID
    assert verify_token(tok, "app", "u:1", "other", 1000.0) is TokenError.BAD_SIGNATURE
    assert verify_token(tok, "app", "u:1", "", 1000.0) is TokenError.BAD_SIGNATURE
    head, payload, sig = tok.split(".")
    forged = json.dumps({"a": "app", "u": "u:1", "e": 99999})
    import base64

    forged_b64 = base64.urlsafe_b64encode(forged.encode()).rstrip(b"=").decode()
    assert verify_token(f"{head}.{forged_b64}.{sig}", "app", "u:1", CERT, 1000.0) is (
        TokenError.BAD_SIGNATURE
    )
    for bad in ("", "x", "1.2", "2." + payload + "." + sig, "1.!!.!!", "1.e30.", tok + ".x"):
        assert verify_token(bad, "app", "u:1", CERT, 1000.0) is TokenError.MALFORMED


@pytest.mark.parametrize("mint", [mint_token, mint_legacy_token])
def test_mint_rejects_bad_input(mint: Any) -> None:
    with pytest.raises(ValueError):
        mint("a", "u", "", 60, 0)
    with pytest.raises(ValueError):
        mint("a", "u", CERT, 0, 0)
    with pytest.raises(ValueError):
        mint_legacy_token("a", "u\n", CERT, 60, 0)
    with pytest.raises(ValueError):
        mint_token("a", "", CERT, 60, 0)


def test_mask_secret_shows_no_secret() -> None:
    assert CERT not in mask_secret(CERT)
    assert mask_secret(None) == "<none>"


@given(st.text(max_size=300))
@settings(max_examples=examples(300), deadline=None)
def test_verify_never_raises(text: str) -> None:
    assert isinstance(verify_token(text, "a", "u", CERT, 0.0), TokenError)


# ---- decoder fuzzing -----------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "v",
    "type",
    "id",
    "appid",
    "uid",
    "token",
    "session",
    "uids",
    "to",
    "text",
    "ref",
    "callee",
    "content",
    "channel_id",
    "inv",
    "response",
]
TYPES = [
    "login",
    "logout",
    "ping",
    "query",
    "subscribe",
    "unsubscribe",
    "message",
    "invite",
    "cancel",
    "ack",
    "accept",
    "refuse",
    "nope",
]
messages = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1", None, True]), "type": st.sampled_from(TYPES)},
    optional={k: json_values | st.text(max_size=70) for k in FIELDS if k not in ("v", "type")},
)


def check(out: object) -> None:
    assert isinstance(out, p.ClientMessage | p.ProtocolError)
    if isinstance(out, p.ProtocolError):
        wire = out.to_wire()
        json.dumps(wire)
        assert wire["type"] == "error"


@given(st.binary(max_size=400))
@settings(max_examples=examples(400), deadline=None)
def test_decoder_never_raises_on_bytes(raw: bytes) -> None:
    check(p.decode_client(raw))


@given(st.text(max_size=400))
@settings(max_examples=examples(400), deadline=None)
def test_decoder_never_raises_on_text(raw: str) -> None:
    check(p.decode_client(raw))


@given(messages)
@settings(max_examples=examples(1000), deadline=None)
def test_decoder_never_raises_on_near_valid_messages(obj: dict[str, Any]) -> None:
    out = p.decode_client(json.dumps(obj))
    check(out)
    if isinstance(out, p.ClientMessage):
        assert obj["v"] == 1 and obj["type"] != "nope"


def test_settings_reject_nonsense() -> None:
    from esl_bridge.core.invitations import InvitationTimeouts
    from esl_bridge.signaling.settings import SignalingSettings

    SignalingSettings(login_timeout=None, heartbeat=None)
    for bad in (
        {"rate_burst": 0},
        {"grace_period": -1.0},
        {"login_timeout": 0.0},
        {"invitation_timeouts": InvitationTimeouts(answer=0.0)},
    ):
        with pytest.raises(ValueError):
            SignalingSettings(**bad)  # type: ignore[arg-type]
    assert SignalingSettings(appid="a").accepts_appid("a")
    assert not SignalingSettings(appid="a").accepts_appid("b")
    assert SignalingSettings(appid="a", extra_appids=("b",)).accepts_appid("b")
    assert SignalingSettings().accepts_appid("anything")
