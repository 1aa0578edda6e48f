"""Login tokens at their edges: what mutation testing of ``signaling/auth.py`` showed no
test held (docs/mutation.rst). The clock is the ``now`` passed in, never the wall clock;
the legacy format is checked against its documented recipe, not only against our minter;
malformed legacy payloads are refused, never a crash. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any

import jwt
import pytest

from esl_bridge.signaling.auth import (
    MAX_TOKEN_CHARS,
    TokenError,
    TokenInfo,
    mint_legacy_token,
    mint_token,
    verify_token,
)

APPID = "app-edges"
CERT = "edges-certificate-0123456789abcdef0123"
# Far from today's wall clock on both sides: a check made against the wall clock instead
# of ``now`` refuses these.
PAST = 1_000_000_000  # 2001
FUTURE = 4_000_000_000  # 2096
BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def legacy_by_recipe(payload: Any, appid: str, uid: str, expiry: Any, cert: str = CERT) -> str:
    """A legacy token made as the module documents it (what a backend does), not with
    ``mint_legacy_token``: ``1.<base64url JSON>.<base64url HMAC-SHA256>`` over the label,
    appid, uid and expiry joined by newlines."""
    msg = "\n".join(["esl-bridge-token-v1", appid, uid, str(expiry)]).encode()
    sig = hmac.new(cert.encode(), msg, hashlib.sha256).digest()
    return f"1.{_b64(json.dumps(payload).encode())}.{_b64(sig)}"


def test_claims_are_judged_against_the_callers_clock_not_the_wall_clock() -> None:
    for now in (PAST, FUTURE):
        token = mint_token(APPID, "alice", CERT, 600, now, not_before=now)
        info = verify_token(token, APPID, "alice", CERT, now)
        assert isinstance(info, TokenInfo) and info.expires_at == now + 600, now
        assert verify_token(token, APPID, "alice", CERT, now + 10_000) is TokenError.EXPIRED


def refusal(mint: Any, *args: Any) -> str:
    with pytest.raises(ValueError) as caught:
        mint(*args)
    return str(caught.value)


def test_mint_token_refuses_what_cannot_be_a_token() -> None:
    assert refusal(mint_token, APPID, "alice", "", 60, PAST) == (
        "an app certificate is needed to mint tokens"
    )
    assert refusal(mint_token, APPID, "alice", CERT, 0, PAST) == "ttl must be positive"
    assert refusal(mint_token, APPID, "", CERT, 60, PAST) == "uid cannot be empty"
    # A ttl under a second is still a ttl.
    short = mint_token(APPID, "alice", CERT, 0.5, PAST)
    assert jwt.decode(short, options={"verify_signature": False})["exp"] == PAST


def test_mint_legacy_token_refuses_what_cannot_be_signed() -> None:
    assert refusal(mint_legacy_token, APPID, "alice", "", 60, PAST) == (
        "an app certificate is needed to mint tokens"
    )
    assert refusal(mint_legacy_token, APPID, "alice", CERT, 0, PAST) == "ttl must be positive"
    for appid, uid in ((APPID, "al\nice"), ("app\n", "alice")):
        assert refusal(mint_legacy_token, appid, uid, CERT, 60, PAST) == (
            "appid and uid cannot contain a newline"
        )
    assert isinstance(mint_legacy_token(APPID, "alice", CERT, 0.5, PAST), str)


def test_legacy_tokens_are_unpadded_base64url_and_round_trip_for_many_uids() -> None:
    """Tokens travel in URLs and JSON: no ``=`` padding, only base64url characters; every
    length of payload and signature decodes back."""
    for n in range(120):
        uid = "u" * (n % 7) + f"user-{n}" + "é" * (n % 3)
        token = mint_legacy_token(APPID, uid, CERT, 60 + n, PAST)
        version, payload, sig = token.split(".")
        assert version == "1" and BASE64URL.fullmatch(payload) and BASE64URL.fullmatch(sig)
        info = verify_token(token, APPID, uid, CERT, PAST)
        assert isinstance(info, TokenInfo) and (info.uid, info.legacy) == (uid, True), uid


def test_a_legacy_token_made_by_the_documented_recipe_is_accepted() -> None:
    expiry = PAST + 60
    token = legacy_by_recipe({"a": APPID, "u": "alice", "e": expiry}, APPID, "alice", expiry)
    info = verify_token(token, APPID, "alice", CERT, PAST)
    assert info == TokenInfo(APPID, "alice", expiry, legacy=True)


@pytest.mark.parametrize(
    "payload",
    [
        {"a": APPID, "u": 42, "e": PAST + 60},
        {"a": 42, "u": "alice", "e": PAST + 60},
        {"a": APPID, "u": "alice", "e": "later"},
        {"a": APPID, "u": "alice", "e": True},
        {"a": APPID, "u": "al\nice", "e": PAST + 60},
        {"a": "app\nx", "u": "alice", "e": PAST + 60},
        {"a": APPID, "u": "al\ud800ice", "e": PAST + 60},
        {"a": "app\udc00", "u": "alice", "e": PAST + 60},
    ],
    ids=[
        "uid-number",
        "appid-number",
        "expiry-text",
        "expiry-bool",
        "newline-uid",
        "newline-appid",
        "surrogate-uid",
        "surrogate-appid",
    ],
)
def test_malformed_legacy_payloads_are_refused_not_a_crash(payload: dict[str, Any]) -> None:
    # Signed over what the fields say, so only the payload's shape can refuse it.
    def text(value: Any) -> str:
        return value if isinstance(value, str) else str(value)

    appid, uid, expiry = text(payload["a"]), text(payload["u"]), payload["e"]
    try:
        token = legacy_by_recipe(payload, appid, uid, expiry)
    except UnicodeEncodeError:  # a lone surrogate cannot be signed: any signature will do
        token = f"1.{_b64(json.dumps(payload).encode())}.{_b64(b'x' * 32)}"
    assert verify_token(token, APPID, uid, CERT, PAST) is TokenError.MALFORMED


def test_a_token_of_the_maximum_length_is_read_one_more_is_not() -> None:
    # A legacy token of exactly MAX_TOKEN_CHARS: the uid's length sets the payload's.
    for n in range(1000, 2000):
        uid = "x" * n
        token = mint_legacy_token(APPID, uid, CERT, 60, PAST)
        if len(token) == MAX_TOKEN_CHARS:
            break
    else:
        pytest.fail("no uid length gives a token of exactly MAX_TOKEN_CHARS")
    assert isinstance(verify_token(token, APPID, uid, CERT, PAST), TokenInfo)
    longer = mint_legacy_token(APPID, uid + "xxx", CERT, 60, PAST)
    assert len(longer) > MAX_TOKEN_CHARS
    assert verify_token(longer, APPID, uid + "xxx", CERT, PAST) is TokenError.MALFORMED


def test_a_token_that_is_not_text_is_malformed() -> None:
    for bad in (None, 42, b"1.abc.def", ["1", "a", "b"]):
        assert verify_token(bad, APPID, "alice", CERT, PAST) is TokenError.MALFORMED  # type: ignore[arg-type]


def test_the_certificate_may_be_given_as_bytes() -> None:
    """``cert`` is ``str | bytes``: the same key either way, for both formats."""
    for mint in (mint_token, mint_legacy_token):
        token = mint(APPID, "alice", CERT.encode(), 60, PAST)
        assert isinstance(verify_token(token, APPID, "alice", CERT, PAST), TokenInfo)
        assert isinstance(verify_token(token, APPID, "alice", CERT.encode(), PAST), TokenInfo)
        other = mint(APPID, "alice", CERT, 60, PAST)
        assert isinstance(verify_token(other, APPID, "alice", CERT.encode(), PAST), TokenInfo)
