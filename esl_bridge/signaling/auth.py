"""Login tokens: HMAC-SHA256 over appid, uid and expiry, keyed with the app certificate.

Token text: ``1.<payload>.<signature>``, both parts base64url without padding. The payload
is the JSON ``{"a": appid, "u": uid, "e": expiry}`` (expiry: integer Unix seconds); the
signature covers a fixed label, the appid, the uid and the expiry joined by newlines, so a
token minted for one appid or uid cannot be replayed for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from enum import Enum

from esl_bridge.core import peer_json

__all__ = ["TokenError", "TokenInfo", "mask_secret", "mint_token", "verify_token"]

_VERSION = "1"
_LABEL = b"esl-bridge-token-v1"
MAX_TOKEN_CHARS = 2048


class TokenError(Enum):
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad signature"
    WRONG_APPID = "wrong appid"
    WRONG_UID = "wrong uid"
    EXPIRED = "expired"


@dataclass(frozen=True)
class TokenInfo:
    appid: str
    uid: str
    expires_at: int


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(cert: str | bytes) -> bytes:
    return cert.encode("utf-8") if isinstance(cert, str) else cert


def _signature(appid: str, uid: str, expiry: int, cert: str | bytes) -> bytes:
    msg = b"\n".join([_LABEL, appid.encode(), uid.encode(), str(expiry).encode()])
    return hmac.new(_key(cert), msg, hashlib.sha256).digest()


def mint_token(appid: str, uid: str, cert: str | bytes, ttl: float, now: float) -> str:
    """Return a token for ``uid`` in ``appid`` valid until ``now + ttl`` (Unix seconds)."""
    if not cert:
        raise ValueError("an app certificate is needed to mint tokens")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if "\n" in appid or "\n" in uid:
        raise ValueError("appid and uid cannot contain a newline")
    expiry = int(now + ttl)
    payload = json.dumps({"a": appid, "u": uid, "e": expiry}, separators=(",", ":"))
    sig = _signature(appid, uid, expiry, cert)
    return f"{_VERSION}.{_b64e(payload.encode())}.{_b64e(sig)}"


def _parse(token: str) -> tuple[TokenInfo, bytes] | None:
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
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
    return TokenInfo(appid, uid, expiry), sig


def verify_token(
    token: str, appid: str, uid: str, cert: str | bytes, now: float
) -> TokenInfo | TokenError:
    """Check ``token`` for ``uid`` in ``appid`` at ``now``: the info, or why it fails.

    The signature is checked before any field, with a constant-time comparison, so a
    forged token learns nothing but "bad signature".
    """
    parsed = _parse(token)
    if parsed is None:
        return TokenError.MALFORMED
    info, sig = parsed
    expected = _signature(info.appid, info.uid, info.expires_at, cert)
    if not cert or not hmac.compare_digest(sig, expected):
        return TokenError.BAD_SIGNATURE
    if not hmac.compare_digest(info.appid.encode(), appid.encode()):
        return TokenError.WRONG_APPID
    if not hmac.compare_digest(info.uid.encode(), uid.encode()):
        return TokenError.WRONG_UID
    if now >= info.expires_at:
        return TokenError.EXPIRED
    return info


def mask_secret(secret: str | None) -> str:
    """What a log line may show of a token or certificate: its length only."""
    if not secret:
        return "<none>"
    return f"<{len(secret)} chars>"
