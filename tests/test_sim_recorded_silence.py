"""The simulator's muted phone against what the real switch sent for a muted baresip.

tests/fixtures/freeswitch/oneway/ holds the unicast datagrams FreeSWITCH 1.10.12 sent
while its PCMU phone was muted (recorded by tests/test_freeswitch_one_way.py): with
``flags: native`` 160 bytes of 0xFF (mu-law's zero, passed on), without flags 320 bytes
of L16 zeros; never the 320-byte 0xFF filler the switch sends when no RTP comes. The
simulator's ``silence`` source must send the same, or the gateway's ``switch_silent``
would be tested against frames the real switch does not send.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from esl_bridge.sim.codecs import PCMU
from esl_bridge.sim.media import AudioSource, UnicastStream

FIXTURES = Path(__file__).parent / "fixtures" / "freeswitch" / "oneway"


def recorded(name: str) -> list[tuple[int, str, str]]:
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        if line and not line.startswith("#"):
            size, kind, head = line.split()
            out.append((int(size), kind, head))
    return out


def simulated(native: bool, count: int) -> list[tuple[int, str, str]]:
    stream = UnicastStream(
        codec=PCMU,
        local=("127.0.0.1", 0),
        remote=("127.0.0.1", 0),
        source=AudioSource("silence"),
        native=native,
        first_frame_ff=False,
    )
    out = []
    for _ in range(count):
        frame = stream._next_frame()
        kind = (
            "filler"
            if frame.count(0xFF) == len(frame)
            else "zeros"
            if frame.count(0) == len(frame)
            else "audio"
        )
        out.append((len(frame), kind, frame[:8].hex()))
    return out


@pytest.mark.parametrize(
    ("name", "native"),
    [("unicast_phone_muted_fast.txt", True), ("unicast_phone_muted_transcode.txt", False)],
)
def test_a_muted_phone_sends_what_the_real_switch_sent(name: str, native: bool) -> None:
    real = recorded(name)
    assert len(real) == 100
    assert simulated(native, len(real)) == real
