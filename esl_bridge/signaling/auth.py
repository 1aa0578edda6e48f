"""Login tokens: JWTs (HS256) signed with the app certificate; the old format for one release.

A login token is a standard JSON Web Token (RFC 7519) signed with HMAC-SHA256, the key being
``[auth] app_certificate`` as UTF-8 bytes. Claims:

* ``sub`` (required): the uid that logs in; a token for alice cannot log in bob;
* ``aud`` (required): the appid (a string, or a list holding it);
* ``exp`` and ``iat`` (required), ``nbf`` (optional): NumericDate, Unix seconds;
* ``jti`` (optional): a string, the token's id.

The algorithm is pinned: only ``HS256`` is accepted, whatever the token's header says (no
``none``, no ``RS256`` checked against the certificate as if it were a key). The signature is
checked (by PyJWT) before any claim. ``exp``, ``nbf`` and ``iat`` are checked against the
``now`` the caller passes, allowing ``CLOCK_SKEW`` seconds between the backend's clock and
ours: a token is refused as expired from ``exp + CLOCK_SKEW`` on, and as not yet valid while
``now + CLOCK_SKEW`` is before its ``nbf`` or its ``iat``.

The old format (``1.<payload>.<signature>``: base64url JSON ``{"a": appid, "u": uid, "e":
expiry}`` and an HMAC-SHA256 over a label, appid, uid and expiry joined by newlines) is still
accepted, with no skew allowance as before, and marked ``legacy`` so the caller logs a warning:
backends that mint it have one release to move to JWTs.

The reasons a token is refused (``TokenError``'s values) are what the client sees in its
``AUTH_FAILED`` error; README.rst ("Integrate with your app") lists them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
from dataclasses import dataclass
from enum import Enum
from typing import Any

import jwt

from esl_bridge.core import peer_json

__all__ = [
    "ALGORITHM",
    "CLOCK_SKEW",
    "MAX_TOKEN_CHARS",
    "TokenError",
    "TokenInfo",
    "mask_secret",
    "mint_legacy_token",
    "mint_token",
    "verify_token",
]

ALGORITHM = "HS256"
CLOCK_SKEW = 30  # seconds allowed between the minting backend's clock and the gateway's
MAX_TOKEN_CHARS = 2048
REQUIRED_CLAIMS = ("sub", "aud", "exp", "iat")

_LEGACY_VERSION = "1"
_LEGACY_LABEL = b"esl-bridge-token-v1"


class TokenError(Enum):
    MALFORMED = "malformed"
    BAD_ALGORITHM = "algorithm not allowed"
    BAD_SIGNATURE = "bad signature"
    MISSING_CLAIM = "missing claim"
    WRONG_APPID = "wrong appid"
    WRONG_UID = "wrong uid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not yet valid"


@dataclass(frozen=True)
class TokenInfo:
    appid: str
    uid: str
    expires_at: int
    legacy: bool = False  # the old format: accepted for one release, with a warning
    token_id: str | None = None  # the JWT's jti, if it has one


def _key(cert: str | bytes) -> bytes:
    return cert.encode("utf-8") if isinstance(cert, str) else cert


# ---- JWT ---------------------------------------------------------------------------------


def mint_token(
    appid: str,
    uid: str,
    cert: str | bytes,
    ttl: float,
    now: float,
    *,
    not_before: float | None = None,
    token_id: str | None = None,
) -> str:
    """A JWT for ``uid`` in ``appid``, issued at ``now``, valid until ``now + ttl`` (Unix
    seconds); ``token_id`` (the jti) is random unless given."""
    if not cert:
        raise ValueError("an app certificate is needed to mint tokens")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if not uid:
        raise ValueError("uid cannot be empty")
    claims: dict[str, Any] = {
        "sub": uid,
        "aud": appid,
        "iat": int(now),
        "exp": int(now + ttl),
        "jti": token_id if token_id is not None else secrets.token_urlsafe(12),
    }
    if not_before is not None:
        claims["nbf"] = int(not_before)
    return jwt.encode(claims, _key(cert), algorithm=ALGORITHM)


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """The claim as a finite number; None when absent; raises ValueError when not a number
    (JSON lets ``1e999`` through as infinity, which would never expire)."""
    if name not in claims:
        return None
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(name)
    if not math.isfinite(value):
        raise ValueError(name)
    return float(value)


def _verify_jwt(
    token: str, appid: str, uid: str, cert: str | bytes, now: float, skew: float
) -> TokenInfo | TokenError:
    if not cert:
        return TokenError.BAD_SIGNATURE  # an empty key would verify a token signed with one
    try:
        claims = jwt.decode(
            token,
            _key(cert),
            algorithms=[ALGORITHM],
            audience=appid,
            options={
                "require": list(REQUIRED_CLAIMS),
                # checked below against the caller's clock, not PyJWT's
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidAlgorithmError:
        return TokenError.BAD_ALGORITHM
    except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
        return TokenError.BAD_SIGNATURE
    except jwt.MissingRequiredClaimError:
        return TokenError.MISSING_CLAIM
    except jwt.InvalidAudienceError:
        return TokenError.WRONG_APPID
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        return TokenError.MALFORMED
    subject = claims["sub"]  # PyJWT checked it is a string
    if not isinstance(subject, str) or subject != uid:
        return TokenError.WRONG_UID
    try:
        expiry = _numeric_date(claims, "exp")
        issued = _numeric_date(claims, "iat")
        not_before = _numeric_date(claims, "nbf")
    except ValueError:
        return TokenError.MALFORMED
    assert expiry is not None and issued is not None  # required above
    if now >= expiry + skew:
        return TokenError.EXPIRED
    if (not_before is not None and now + skew < not_before) or now + skew < issued:
        return TokenError.NOT_YET_VALID
    jti = claims.get("jti")
    return TokenInfo(appid, uid, int(expiry), token_id=jti if isinstance(jti, str) else None)


# ---- the old format (one more release) ---------------------------------------------------


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _legacy_signature(appid: str, uid: str, expiry: int, cert: str | bytes) -> bytes:
    msg = b"\n".join([_LEGACY_LABEL, appid.encode(), uid.encode(), str(expiry).encode()])
    return hmac.new(_key(cert), msg, hashlib.sha256).digest()


def mint_legacy_token(appid: str, uid: str, cert: str | bytes, ttl: float, now: float) -> str:
    """A token of the old format (for tests of the transition; ``mint_token`` mints JWTs)."""
    if not cert:
        raise ValueError("an app certificate is needed to mint tokens")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if "\n" in appid or "\n" in uid:
        raise ValueError("appid and uid cannot contain a newline")
    expiry = int(now + ttl)
    payload = json.dumps({"a": appid, "u": uid, "e": expiry}, separators=(",", ":"))
    sig = _legacy_signature(appid, uid, expiry, cert)
    return f"{_LEGACY_VERSION}.{_b64e(payload.encode())}.{_b64e(sig)}"


def _parse_legacy(token: str) -> tuple[TokenInfo, bytes] | None:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _LEGACY_VERSION:
        return None
    try:
        # Bounded: a payload nested thousands deep is malformed, not a RecursionError.
        payload = peer_json.loads(_b64d(parts[1]))
        sig = _b64d(parts[2])
    except (ValueError, binascii.Error):
        return None
    if not isinstance(payload, dict):
        return None
    appid, uid, expiry = payload.get("a"), payload.get("u"), payload.get("e")
    if not isinstance(appid, str) or not isinstance(uid, str):
        return None
    if not isinstance(expiry, int) or isinstance(expiry, bool):
        return None
    if "\n" in appid or "\n" in uid:
        return None  # the signed message joins fields with newlines
    if peer_json.has_lone_surrogate(appid) or peer_json.has_lone_surrogate(uid):
        return None  # cannot be encoded to be signed
    return TokenInfo(appid, uid, expiry, legacy=True), sig


def _verify_legacy(
    token: str, appid: str, uid: str, cert: str | bytes, now: float
) -> TokenInfo | TokenError:
    parsed = _parse_legacy(token)
    if parsed is None:
        return TokenError.MALFORMED
    info, sig = parsed
    expected = _legacy_signature(info.appid, info.uid, info.expires_at, cert)
    if not cert or not hmac.compare_digest(sig, expected):
        return TokenError.BAD_SIGNATURE
    if not hmac.compare_digest(info.appid.encode(), appid.encode()):
        return TokenError.WRONG_APPID
    if not hmac.compare_digest(info.uid.encode(), uid.encode()):
        return TokenError.WRONG_UID
    if now >= info.expires_at:
        return TokenError.EXPIRED
    return info


# ---- both --------------------------------------------------------------------------------


def verify_token(
    token: str,
    appid: str,
    uid: str,
    cert: str | bytes,
    now: float,
    *,
    skew: float = CLOCK_SKEW,
) -> TokenInfo | TokenError:
    """Check ``token`` for ``uid`` in ``appid`` at ``now`` (Unix seconds): the info, or why
    it is refused. The signature is checked before any claim; a token longer than
    ``MAX_TOKEN_CHARS`` is malformed unread."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        return TokenError.MALFORMED
    if token.startswith(_LEGACY_VERSION + "."):  # a JWT starts with a base64url JSON object
        return _verify_legacy(token, appid, uid, cert, now)
    return _verify_jwt(token, appid, uid, cert, now, skew)


def mask_secret(secret: str | None) -> str:
    """What a log line may show of a token or certificate: its length only."""
    if not secret:
        return "<none>"
    return f"<{len(secret)} chars>"
