"""``benchmarks/idle_wakeup_cost.py``: the packets it protects are real SRTP, one per call
in turn with each call's sequence numbers counting up (a replayed index would be refused by
libsrtp, and a session used out of turn would not be the ten calls it stands for)."""

from __future__ import annotations

import sys
from pathlib import Path

import pylibsrtp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import idle_wakeup_cost


def test_each_protect_is_the_next_packet_of_the_next_call() -> None:
    protector = idle_wakeup_cost.Protector()
    seen: list[tuple[int, int]] = []
    for index, session in enumerate(protector.sessions):
        original = session.protect

        def spy(header: bytes, payload: bytes, index: int = index, original=original) -> bytes:
            seen.append((index, int.from_bytes(header[2:4], "big")))
            return original(header, payload)

        session.protect = spy  # type: ignore[method-assign]
    for _ in range(25):
        protector.one()
    assert seen == [(n % 10, n // 10) for n in range(25)]


def test_a_figure_is_the_cpu_time_of_the_protects() -> None:
    protector = idle_wakeup_cost.Protector()
    assert idle_wakeup_cost.per_protect_us(protector, 0, 10, 3) > 0
    assert protector.sent == 30
    # The sessions are libsrtp's: a packet protected twice at one index is refused.
    protector.sent = 0
    with pytest.raises(pylibsrtp.Error):
        protector.one()
