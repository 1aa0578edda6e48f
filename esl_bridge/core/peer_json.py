"""Bounded JSON decoding for everything a peer sends (frames, tokens, content, messages).

``json.loads`` alone is not safe on hostile text: nesting a few thousand levels deep
raises ``RecursionError`` (not a ``ValueError``), a shallower but still deep value can
make later code that walks or re-encodes it recurse, ``NaN``/``Infinity`` are accepted
although they are not JSON, and a lone surrogate escape (``"\\ud800"``) decodes to a
string that cannot be encoded to UTF-8 again. ``loads`` turns all of these into one
``PeerJsonError`` (a ``ValueError``), so a caller's existing ``except ValueError`` keeps
working and nothing a peer sends can raise anything else.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_DEPTH", "PeerJsonError", "has_lone_surrogate", "loads"]

#: Deepest nesting of arrays and objects accepted. The protocol needs 2 levels; ARCall
#: content a few more.
MAX_DEPTH = 32

_SURROGATE = re.compile("[\ud800-\udfff]")


class PeerJsonError(ValueError):
    """Peer text that is not acceptable JSON; the message says why (never the text)."""


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a surrogate code point, which UTF-8 cannot encode.

    ``json.loads`` joins a valid escaped pair into one character, so any surrogate left
    in a decoded string is a lone one.
    """
    return not text.isascii() and _SURROGATE.search(text) is not None


def _no_constant(name: str) -> Any:
    raise PeerJsonError(f"{name} is not JSON")


def _depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers deeper than ``limit`` (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def loads(raw: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode peer-supplied JSON, or raise ``PeerJsonError`` saying why not.

    Bytes must be UTF-8. Strings in the result may still hold lone surrogates: callers
    that pass strings on check them with ``has_lone_surrogate`` and name the field.
    """
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise PeerJsonError("not UTF-8") from None
    elif isinstance(raw, str):
        text = raw
    else:
        raise PeerJsonError("not text")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise PeerJsonError(f"nested deeper than {max_depth} levels") from None
    except PeerJsonError:
        raise
    except ValueError:
        # JSONDecodeError, or an integer of more digits than Python converts.
        raise PeerJsonError("not JSON") from None
    # Only text with that many brackets can nest that deep: most values skip the walk.
    if text.count("[") + text.count("{") > max_depth and _depth_over(value, max_depth):
        raise PeerJsonError(f"nested deeper than {max_depth} levels")
    return value
