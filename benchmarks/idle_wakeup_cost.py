"""What one packet's work costs right after the process slept, against back to back.

A media gateway's event loop wakes up for each datagram and sleeps again. On a machine
where other work runs in between (other processes, other tenants of the host), the
caches and branch predictors are cold when it wakes, and the first packet's work costs
more than the same work done in a batch. This measures it on one piece of that work: an
SRTP protect of a 160-byte G.711 payload (``esl_bridge.media.srtp_direct.DirectSrtp``, ten
sessions used in turn, as ten calls would), timed by the thread's CPU clock:

* back to back (the baseline, same run);
* one protect after each sleep of ``--gaps`` milliseconds;
* a batch of ten after each sleep (one wake-up shared by ten calls' packets).

The last line::

    idle_wakeup_cost: gap_ms=2 alone_us=.. batch_of_10_us=.. back_to_back_us=.. ratio=..

where ``ratio`` is ``alone_us / back_to_back_us`` at the largest gap. The thread-clock
reads (about 1 us for the pair on the reference machine) are included in every figure.
"""

from __future__ import annotations

import argparse
import os
import struct
import time

import pylibsrtp

from esl_bridge.media.srtp_direct import DirectSrtp

PAYLOAD = b"\xff" * 160
SESSIONS = 10


def make_sessions() -> list[DirectSrtp]:
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    return [
        DirectSrtp(
            pylibsrtp.Session(
                pylibsrtp.Policy(
                    key=os.urandom(30),
                    ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                    srtp_profile=profile,
                )
            )
        )
        for _ in range(SESSIONS)
    ]


class Protector:
    """Protects one packet per call, each session's sequence numbers counting up."""

    def __init__(self) -> None:
        self.sessions = make_sessions()
        self.header = bytearray(struct.pack("!BBHII", 0x80, 0, 0, 0, 0x1234))
        self.sent = 0

    def one(self) -> None:
        index, seq = self.sent % SESSIONS, self.sent // SESSIONS
        struct.pack_into("!HI", self.header, 2, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF)
        self.sessions[index].protect(self.header, PAYLOAD)
        self.sent += 1


def per_protect_us(protector: Protector, gap_s: float, batch: int, rounds: int) -> float:
    clock = time.thread_time
    spent = 0.0
    for _ in range(rounds):
        start = clock()
        for _ in range(batch):
            protector.one()
        spent += clock() - start
        if gap_s:
            time.sleep(gap_s)
    return spent / (rounds * batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gaps", default="1,2", help="sleeps in ms, comma-separated")
    parser.add_argument("--rounds", type=int, default=2000, help="wake-ups per figure")
    args = parser.parse_args()
    gaps = [float(g) for g in args.gaps.split(",")]
    protector = Protector()
    per_protect_us(protector, 0, 10, 200)  # warm-up: imports, first allocations
    back_to_back = per_protect_us(protector, 0, 10, args.rounds)
    print(f"  back to back: {back_to_back:6.2f} us per protect")
    alone = batch = back_to_back
    for gap in gaps:
        alone = per_protect_us(protector, gap / 1000, 1, args.rounds)
        batch = per_protect_us(protector, gap / 1000, 10, args.rounds)
        print(
            f"  after {gap:g} ms asleep: {alone:6.2f} us alone, "
            f"{batch:6.2f} us each in a batch of 10"
        )
    print(
        f"idle_wakeup_cost: gap_ms={gaps[-1]:g} alone_us={alone:.2f} "
        f"batch_of_10_us={batch:.2f} back_to_back_us={back_to_back:.2f} "
        f"ratio={alone / back_to_back:.1f}"
    )


if __name__ == "__main__":
    main()
