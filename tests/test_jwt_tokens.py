"""Login tokens as JWTs (HS256): minted by PyJWT and by Node's jsonwebtoken, accepted;
tampered, expired, wrong-aud, ``alg: none`` and HS/RS-confusion tokens refused with the
reasons README.rst documents. The clock is the ``now`` passed in (no wall time)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from support.signaling_support import APPID, CERT, WALL, env, run

from esl_bridge.signaling.auth import (
    CLOCK_SKEW,
    MAX_TOKEN_CHARS,
    TokenError,
    TokenInfo,
    mint_legacy_token,
    mint_token,
    verify_token,
)

NOW = 1_800_000_000


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(uid: str = "alice", appid: str = APPID, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": uid, "aud": appid, "iat": NOW, "exp": NOW + 3600}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def pyjwt(payload: dict[str, Any], key: str = CERT) -> str:
    """What the README's Python example does."""
    return jwt.encode(payload, key, algorithm="HS256")


def hs256_by_hand(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    """A JWT signed without PyJWT (which refuses some of the keys these tests need)."""
    signing_input = (
        b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    ).encode()
    return signing_input.decode() + "." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())


def check(tok: str, uid: str = "alice", now: float = NOW, cert: str = CERT) -> Any:
    return verify_token(tok, APPID, uid, cert, now)


# ---- accepted ----------------------------------------------------------------------------


def test_pyjwt_token_is_accepted() -> None:
    info = check(pyjwt(claims(jti="t-1", nbf=NOW)))
    assert info == TokenInfo(APPID, "alice", NOW + 3600, legacy=False, token_id="t-1")


def test_audience_may_be_a_list_holding_the_appid() -> None:
    assert isinstance(check(pyjwt(claims(aud=["other", APPID]))), TokenInfo)
    assert check(pyjwt(claims(aud=["other", "third"]))) is TokenError.WRONG_APPID


def test_our_minted_token_is_a_standard_jwt() -> None:
    tok = mint_token(APPID, "alice", CERT, 600, NOW, not_before=NOW, token_id="abc")
    assert jwt.get_unverified_header(tok)["alg"] == "HS256"
    decoded = jwt.decode(
        tok,
        CERT,
        algorithms=["HS256"],
        audience=APPID,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decoded == {
        "sub": "alice",
        "aud": APPID,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 600,
        "jti": "abc",
    }
    assert isinstance(check(tok), TokenInfo)
    # a random jti unless one is given
    assert jwt.decode(mint_token(APPID, "a", CERT, 60, NOW), options={"verify_signature": False})[
        "jti"
    ]


def test_clock_skew_allowance() -> None:
    # nbf or iat 100 s ahead of us: refused until we are within the allowance of them
    early = pyjwt(claims(exp=NOW + 1000, nbf=NOW + 100, iat=NOW))
    assert check(early, now=NOW + 100 - CLOCK_SKEW - 1) is TokenError.NOT_YET_VALID
    assert isinstance(check(early, now=NOW + 100 - CLOCK_SKEW), TokenInfo)
    future_iat = pyjwt(claims(exp=NOW + 1000, iat=NOW + 100))
    assert check(future_iat, now=NOW + 100 - CLOCK_SKEW - 1) is TokenError.NOT_YET_VALID
    assert isinstance(check(future_iat, now=NOW + 100 - CLOCK_SKEW), TokenInfo)
    # exp: accepted until exp + allowance
    late = pyjwt(claims(exp=NOW))
    assert isinstance(check(late, now=NOW + CLOCK_SKEW - 0.5), TokenInfo)
    assert check(late, now=NOW + CLOCK_SKEW) is TokenError.EXPIRED
    assert check(late, now=NOW + 10 * CLOCK_SKEW) is TokenError.EXPIRED


# ---- refused -----------------------------------------------------------------------------


def test_uid_binding() -> None:
    """A token for alice cannot log in bob, nor the other way round."""
    alice = pyjwt(claims("alice"))
    assert check(alice, uid="bob") is TokenError.WRONG_UID
    assert isinstance(check(alice, uid="alice"), TokenInfo)
    assert check(pyjwt(claims("bob")), uid="alice") is TokenError.WRONG_UID
    assert check(pyjwt(claims("Alice")), uid="alice") is TokenError.WRONG_UID


def test_tampered_tokens_are_refused() -> None:
    tok = pyjwt(claims("alice"))
    head, payload, sig = tok.split(".")
    for changed in ({"sub": "bob"}, {"exp": NOW + 10**6}, {"aud": "app2"}):
        forged = b64(json.dumps({**claims("alice"), **changed}).encode())
        uid = changed.get("sub", "alice")
        assert check(f"{head}.{forged}.{sig}", uid=uid) is TokenError.BAD_SIGNATURE
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert check(f"{head}.{payload}.{flipped}") is TokenError.BAD_SIGNATURE
    assert check(f"{head}.{payload}.") is TokenError.BAD_SIGNATURE
    assert check(pyjwt(claims(), key="another-certificate-0123456789")) is (
        TokenError.BAD_SIGNATURE
    )
    assert check(tok, cert="") is TokenError.BAD_SIGNATURE


def test_expired_and_not_yet_valid() -> None:
    assert check(pyjwt(claims(exp=NOW - CLOCK_SKEW))) is TokenError.EXPIRED
    assert check(pyjwt(claims(nbf=NOW + CLOCK_SKEW + 1))) is TokenError.NOT_YET_VALID


def test_wrong_audience() -> None:
    assert check(pyjwt(claims(appid="app2"))) is TokenError.WRONG_APPID
    assert verify_token(pyjwt(claims()), "app2", "alice", CERT, NOW) is TokenError.WRONG_APPID


@pytest.mark.parametrize("missing", ["sub", "aud", "exp", "iat"])
def test_missing_claim(missing: str) -> None:
    payload = claims()
    del payload[missing]
    assert check(pyjwt(payload)) is TokenError.MISSING_CLAIM


@pytest.mark.parametrize(
    "bad",
    [
        {"exp": "tomorrow"},
        {"exp": True},
        {"iat": None, "exp": NOW + 60, "extra": 1, "nbf": "x"},
        {"sub": 42},
        {"jti": 7},
    ],
)
def test_claims_of_the_wrong_type_are_malformed(bad: dict[str, Any]) -> None:
    payload = {**claims(), **bad}
    if "iat" in bad and bad["iat"] is None:
        payload["iat"] = NOW
    assert check(pyjwt(payload)) is TokenError.MALFORMED


def test_infinite_expiry_is_malformed() -> None:
    """JSON numbers like 1e999 decode to infinity: such a token must not live forever."""
    raw = json.dumps(claims()).replace(str(NOW + 3600), "1e999")
    assert "1e999" in raw
    head = b64(b'{"alg":"HS256","typ":"JWT"}')
    signing_input = f"{head}.{b64(raw.encode())}".encode()
    sig = b64(hmac.new(CERT.encode(), signing_input, hashlib.sha256).digest())
    assert check(f"{signing_input.decode()}.{sig}") is TokenError.MALFORMED


def test_alg_none_is_refused() -> None:
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"typ": "JWT"}):
        tok = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims()).encode()) + "."
        assert check(tok) is TokenError.BAD_ALGORITHM
        # even with a valid HS256 signature appended, the header's algorithm is not taken
        signed = hs256_by_hand(header, claims(), CERT.encode())
        assert check(signed) is TokenError.BAD_ALGORITHM


def test_other_hmac_algorithms_are_refused() -> None:
    for alg in ("HS384", "HS512"):
        assert check(jwt.encode(claims(), CERT, algorithm=alg)) is TokenError.BAD_ALGORITHM


def test_hs_rs_confusion_is_refused() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # An RS256 token: never checked as RSA, whatever key the gateway has.
    rs = jwt.encode(claims(), private, algorithm="RS256")
    assert check(rs) is TokenError.BAD_ALGORITHM
    assert check(rs, cert=public_pem.decode()) is TokenError.BAD_ALGORITHM
    # The classic confusion: HS256 "signed" with the public key as the HMAC secret. Refused
    # against the certificate, and refused even if the certificate were that public key
    # (PyJWT will not use a PEM public key as an HMAC secret).
    confused = hs256_by_hand({"alg": "HS256", "typ": "JWT"}, claims(), public_pem)
    assert check(confused) is TokenError.BAD_SIGNATURE
    assert check(confused, cert=public_pem.decode()) is TokenError.BAD_SIGNATURE


def test_malformed_and_oversized() -> None:
    for bad in ("", "x", "a.b", "a.b.c", "eyJ.eyJ.", "....", "eyJhbGciOiJIUzI1NiJ9.!!.x"):
        assert check(bad) is TokenError.MALFORMED, bad
    # a correctly signed payload nested deeper than the JSON decoder goes
    deep = "[" * 1200 + "]" * 1200
    head = b64(b'{"alg":"HS256"}')
    signing_input = f"{head}.{b64(deep.encode())}".encode()
    sig = b64(hmac.new(CERT.encode(), signing_input, hashlib.sha256).digest())
    assert check(f"{signing_input.decode()}.{sig}") is TokenError.MALFORMED
    # the size limit is kept: a valid token padded past it is not even parsed
    big = pyjwt(claims(pad="x" * MAX_TOKEN_CHARS))
    assert len(big) > MAX_TOKEN_CHARS
    assert check(big) is TokenError.MALFORMED
    fits = pyjwt(claims(pad="x" * 1000))
    assert len(fits) <= MAX_TOKEN_CHARS and isinstance(check(fits), TokenInfo)


def test_legacy_tokens_still_accepted_and_flagged() -> None:
    info = check(mint_legacy_token(APPID, "alice", CERT, 60, NOW))
    assert isinstance(info, TokenInfo) and info.legacy
    assert check(mint_legacy_token(APPID, "alice", CERT, 60, NOW), uid="bob") is (
        TokenError.WRONG_UID
    )


# ---- minted by Node's jsonwebtoken --------------------------------------------------------

NODE_MINT = """
const jwt = require("jsonwebtoken");
const [cert, uid, appid, iat] = process.argv.slice(2);
// As README.rst's Node example, with iat given so the test needs no wall clock.
const token = jwt.sign({ iat: Number(iat) }, cert, {
  algorithm: "HS256", subject: uid, audience: appid, expiresIn: "1h", jwtid: "node-1",
});
process.stdout.write(token);
"""


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must have them (.ci/run installs them)", pytrace=False)
    pytest.skip(reason)


# Installed by scripts/test.sh (the README's test command) before the tests run: the tests
# never reach the npm registry themselves.
NODE_MODULES = Path(__file__).resolve().parents[1] / ".test-deps" / "node" / "node_modules"


@pytest.fixture(scope="module")
def node_jsonwebtoken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp dir with the minting script; jsonwebtoken from ``NODE_MODULES``."""
    if shutil.which("node") is None:
        _skip_or_fail("node is not installed")
    if not (NODE_MODULES / "jsonwebtoken").is_dir():
        _skip_or_fail(f"jsonwebtoken is not installed in {NODE_MODULES} (scripts/test.sh does it)")
    root = tmp_path_factory.mktemp("node-jwt")
    (root / "mint.js").write_text(NODE_MINT)
    yield root


def node_mint(root: Path, uid: str, appid: str, iat: int, cert: str = CERT) -> str:
    result = subprocess.run(
        ["node", "mint.js", cert, uid, appid, str(iat)],
        cwd=root,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.timeout(120)
def test_node_jsonwebtoken_token_is_accepted(node_jsonwebtoken: Path) -> None:
    tok = node_mint(node_jsonwebtoken, "alice", APPID, NOW)
    info = check(tok)
    assert info == TokenInfo(APPID, "alice", NOW + 3600, token_id="node-1")
    assert check(tok, uid="bob") is TokenError.WRONG_UID
    assert check(tok, now=NOW + 3600 + CLOCK_SKEW) is TokenError.EXPIRED
    assert check(node_mint(node_jsonwebtoken, "alice", "app2", NOW)) is TokenError.WRONG_APPID
    other = node_mint(node_jsonwebtoken, "alice", APPID, NOW, cert="not-the-certificate")
    assert check(other) is TokenError.BAD_SIGNATURE


@pytest.mark.timeout(120)
def test_node_token_logs_in_through_the_hub(node_jsonwebtoken: Path) -> None:
    tok = node_mint(node_jsonwebtoken, "alice", APPID, int(WALL))

    async def main() -> None:
        async with env() as e:
            ws = await e.ws()
            reply = await ws.request("login", appid=APPID, uid="bob", token=tok)
            assert (reply["type"], reply["message"]) == ("error", "wrong uid"), reply
            reply = await ws.request("login", appid=APPID, uid="alice", token=tok)
            assert reply["type"] == "ok", reply

    run(main())


def test_pyjwt_token_logs_in_through_the_hub() -> None:
    tok = pyjwt(claims("alice", iat=int(WALL), exp=int(WALL) + 60))

    async def main() -> None:
        async with env() as e:
            ws = await e.ws()
            reply = await ws.request("login", appid=APPID, uid="alice", token=tok)
            assert reply["type"] == "ok", reply

    run(main())


def test_readme_python_example_mints_an_accepted_token() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
    start = text.index("Python (PyJWT)::") + len("Python (PyJWT)::")
    block = []
    for line in text[start:].split("\n")[2:]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    namespace: dict[str, Any] = {"uid": "alice", "appid": APPID, "app_certificate": CERT}
    exec("\n".join(block), namespace)
    tok = namespace["token"]
    # the example reads the wall clock: check at the token's own iat
    iat = jwt.decode(tok, options={"verify_signature": False})["iat"]
    assert isinstance(check(tok, now=iat), TokenInfo)
    assert check(tok, uid="bob", now=iat) is TokenError.WRONG_UID
