"""The unicast gate's snapshot rule and the session secret (core/unicast_gate.py, core/ids.py).

``classify_channel`` judges a channel from the outbound socket's connect reply: media is
ready when the channel is answered or in early media *and* its read codec is known.
``new_secret`` makes the session resume ids: 128 random bits by default, URL-safe.
"""

from __future__ import annotations

import base64
import re

import pytest

from esl_bridge.core import ids
from esl_bridge.core.unicast_gate import GateInput, classify_channel


@pytest.mark.parametrize(
    ("answer_state", "has_codec", "expected"),
    [
        ("answered", True, GateInput.MEDIA_READY),
        ("early", True, GateInput.MEDIA_READY),
        ("answered", False, None),
        ("early", False, None),
        ("ringing", True, None),
        ("ANSWERED", True, None),
        (None, True, None),
        ("", True, None),
    ],
)
def test_a_snapshot_is_media_ready_only_when_answered_or_early_with_a_codec(
    answer_state: str | None, has_codec: bool, expected: GateInput | None
) -> None:
    assert classify_channel(answer_state, has_codec) is expected


def test_session_secrets_hold_128_random_bits_by_default() -> None:
    secret = ids.new_secret()
    raw = base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
    assert len(raw) == 16
    assert len(base64.urlsafe_b64decode(ids.new_secret(32) + "=")) == 32
    assert ids.new_secret() != ids.new_secret()


def test_ids_are_prefix_counter_and_64_random_bits() -> None:
    first, second = ids.new_id("inv"), ids.new_id("inv")
    pattern = re.compile(r"inv-([0-9a-f]+)-[0-9a-f]{16}")
    m1, m2 = pattern.fullmatch(first), pattern.fullmatch(second)
    assert m1 is not None and m2 is not None
    assert int(m2.group(1), 16) > int(m1.group(1), 16)  # the process-wide counter
    assert re.fullmatch(r"[0-9a-f]+-[0-9a-f]{16}", ids.new_id())
    assert re.fullmatch(r"ch-[0-9a-f]+-[0-9a-f]{16}", ids.new_channel_id())
