"""Unique identifiers for invitations, sessions and channels.

SRProxy seeded ``rand`` with the clock on every call, so two calls in the same second got
the same channel id. Here every id joins a process-wide counter (never repeats inside a
process) with 64 random bits from the OS (never repeats across processes or restarts in
practice), so ids are unique without any clock.
"""

from __future__ import annotations

import itertools
import secrets
import threading

_counter = itertools.count(1)
_lock = threading.Lock()  # itertools.count is not documented as thread-safe


def new_id(prefix: str = "") -> str:
    """Return a new unique, URL-safe id such as ``inv-1b-9f3c0a...``."""
    with _lock:
        n = next(_counter)
    body = f"{n:x}-{secrets.token_hex(8)}"
    return f"{prefix}-{body}" if prefix else body


def new_secret(nbytes: int = 16) -> str:
    """Return an unguessable token (session resume ids): 128 random bits by default."""
    return secrets.token_urlsafe(nbytes)


def new_channel_id() -> str:
    """Return a unique channel id, well under the 64-byte channelId limit."""
    return new_id("ch")
