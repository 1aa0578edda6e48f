"""A login token cannot be relabelled: its payload re-encoded for another uid or another
appid (or a later expiry), the signature kept, is refused with ``bad signature``, the reason
README.rst documents for an altered token. Both formats: the JWT and the legacy
``1.<payload>.<signature>`` still accepted for one release. Pure: ``now`` is passed in."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from esl_bridge.signaling.auth import (
    TokenError,
    TokenInfo,
    mint_legacy_token,
    mint_token,
    verify_token,
)

APPID = "app-forged"
OTHER_APPID = "app-other"
CERT = "forged-tokens-certificate-0123456789abcdef"
NOW = 1_800_000_000
README = Path(__file__).resolve().parent.parent / "README.rst"


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _reencode(token: str, changes: dict[str, Any]) -> str:
    """The token with its payload (the middle part) decoded, changed and re-encoded; the
    first and last parts (header or version, and the signature) kept byte for byte."""
    first, payload, sig = token.split(".")
    claims = json.loads(_b64d(payload))
    claims.update(changes)
    forged = _b64e(json.dumps(claims, separators=(",", ":")).encode())
    assert forged != payload
    return f"{first}.{forged}.{sig}"


# (changes to the payload, the uid and appid the forger logs in as)
JWT_FORGERIES = [
    pytest.param({"sub": "bob"}, "bob", APPID, id="uid"),
    pytest.param({"aud": OTHER_APPID}, "alice", OTHER_APPID, id="appid"),
    pytest.param({"sub": "bob", "aud": OTHER_APPID}, "bob", OTHER_APPID, id="uid-and-appid"),
    pytest.param({"exp": NOW + 10**7}, "alice", APPID, id="expiry"),
]
LEGACY_FORGERIES = [
    pytest.param({"u": "bob"}, "bob", APPID, id="uid"),
    pytest.param({"a": OTHER_APPID}, "alice", OTHER_APPID, id="appid"),
    pytest.param({"u": "bob", "a": OTHER_APPID}, "bob", OTHER_APPID, id="uid-and-appid"),
    pytest.param({"e": NOW + 10**7}, "alice", APPID, id="expiry"),
]


def test_the_genuine_tokens_log_in() -> None:
    """The baseline the forgeries are measured against: unchanged, both are accepted."""
    jwt_info = verify_token(mint_token(APPID, "alice", CERT, 600, NOW), APPID, "alice", CERT, NOW)
    assert isinstance(jwt_info, TokenInfo) and (jwt_info.uid, jwt_info.appid) == ("alice", APPID)
    legacy = mint_legacy_token(APPID, "alice", CERT, 600, NOW)
    legacy_info = verify_token(legacy, APPID, "alice", CERT, NOW)
    assert isinstance(legacy_info, TokenInfo) and legacy_info.legacy
    assert (legacy_info.uid, legacy_info.appid) == ("alice", APPID)


@pytest.mark.parametrize(("changes", "uid", "appid"), JWT_FORGERIES)
def test_relabelled_jwt_is_refused(changes: dict[str, Any], uid: str, appid: str) -> None:
    genuine = mint_token(APPID, "alice", CERT, 600, NOW)
    forged = _reencode(genuine, changes)
    assert verify_token(forged, appid, uid, CERT, NOW) is TokenError.BAD_SIGNATURE


@pytest.mark.parametrize(("changes", "uid", "appid"), LEGACY_FORGERIES)
def test_relabelled_legacy_token_is_refused(changes: dict[str, Any], uid: str, appid: str) -> None:
    genuine = mint_legacy_token(APPID, "alice", CERT, 600, NOW)
    forged = _reencode(genuine, changes)
    assert verify_token(forged, appid, uid, CERT, NOW) is TokenError.BAD_SIGNATURE


def test_the_refusal_is_the_documented_one() -> None:
    """What the client reads in AUTH_FAILED is the value README.rst lists for an altered
    token."""
    assert TokenError.BAD_SIGNATURE.value == "bad signature"
    assert "``bad signature``" in README.read_text()
