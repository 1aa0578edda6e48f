"""Why ``core/peer_json.loads`` refuses a text: each reason exactly as the refusal carries it
(the signalling hub sends it back as the error message; tests/test_peer_json_depth.py has
the nesting limit)."""

from __future__ import annotations

from typing import Any

import pytest

from esl_bridge.core import peer_json
from esl_bridge.core.peer_json import PeerJsonError


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff{}", "not UTF-8"),
        (bytearray(b'"\xc3"'), "not UTF-8"),
        (5, "not text"),
        (None, "not text"),
        ("{", "not JSON"),
        ("1" * 5000, "not JSON"),  # more digits than Python converts to an int
        ("NaN", "NaN is not JSON"),
        ("[-Infinity]", "-Infinity is not JSON"),
    ],
)
def test_each_refusal_says_why(raw: Any, reason: str) -> None:
    with pytest.raises(PeerJsonError) as caught:
        peer_json.loads(raw)
    assert str(caught.value) == reason


def test_utf8_bytes_and_text_read_alike() -> None:
    text = '{"Cmd":"Calling","Name":"Zoë ✓"}'
    assert (
        peer_json.loads(text.encode())
        == peer_json.loads(text)
        == {
            "Cmd": "Calling",
            "Name": "Zoë ✓",
        }
    )
    assert peer_json.loads(bytearray(b"[1]")) == [1]
