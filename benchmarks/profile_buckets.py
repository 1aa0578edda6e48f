"""Where a profiled gateway's CPU goes, in cost buckets (thread hand-offs, aiortc, codecs...).

Reads the collapsed stacks that ``py-spy record --format raw`` writes (one line per
distinct stack: frames root first, separated by ``;``, then a space and the sample count)
and prints each bucket's share of the samples::

    py-spy record --gil --native --rate 200 --duration 30 --format raw \\
        --output /tmp/gateway.txt --pid PID
    python3 benchmarks/profile_buckets.py /tmp/gateway.txt

A stack goes to the first bucket one of its frames matches, walking from the frame that
was running toward the root, so a helper is charged to its caller's purpose (``isfuture``
called by ``run_in_executor`` is a thread hand-off, not the event loop). The event loop's
own frames only count when nothing more specific is on the stack. Kernel time (the
context switches behind the hand-offs) is not in py-spy's samples: ``perf`` shows it.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable

# (bucket, substrings of a frame). Order only matters for a frame matching two buckets.
BUCKETS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "thread hand-offs (executor, decoder thread, locks)",
        (
            "sem_post",
            "sem_wait",
            "sem_trywait",
            "sem_timedwait",
            "futex",
            "PyThread_acquire_lock",
            "PyThread_release_lock",
            "Condition.",
            "ThreadPoolExecutor",
            "_queue_SimpleQueue",
            "(queue.py:",
            "run_in_executor",
            "wrap_future",
            "_chain_future",
            "run_coroutine_threadsafe",
            "concurrent/futures/",
            "decoder_worker",
        ),
    ),
    ("audio level (RFC 6465, per sent frame)", ("compute_audio_level_dbov",)),
    ("resampling", ("Reframer", "AudioResampler", "resample", "swr_", "libswresample")),
    ("SRTP", ("pylibsrtp", "libsrtp", "srtp_")),
    (
        "codecs and PyAV frames (Opus, G.711)",
        ("opus", "Opus", "PcmEncoder", "PcmDecoder", "avcodec", "libav", "(av/", "frame.c"),
    ),
    ("UDP send/receive", ("sendto", "recvfrom", "sock_send", "sock_recv")),
    ("aiortc RTP/RTCP/jitter buffer, aioice", ("aiortc/", "aioice/")),
    ("esl_bridge's own code", ("esl_bridge/",)),
    ("garbage collector", ("gc_collect",)),
    (
        "benchmark harness (not the gateway's work)",
        ("detect_track", "OnsetDetector", "BurstTrack", "LoopLag", "thread_ticks"),
    ),
)
LOOP_BUCKET = "asyncio loop and timers"
LOOP_MARKS = ("asyncio/", "_asynciomodule", "selectors.py", "epoll", "select (")
OTHER = "other"


def bucket_of(frames: list[str]) -> str:
    """The bucket of one stack (frames root first)."""
    weak = False
    for frame in reversed(frames):
        for name, marks in BUCKETS:
            if any(mark in frame for mark in marks):
                return name
        if any(mark in frame for mark in LOOP_MARKS):
            weak = True
    return LOOP_BUCKET if weak else OTHER


def shares(lines: Iterable[str]) -> tuple[Counter[str], int]:
    """Samples per bucket and the total, from py-spy's raw (collapsed) lines."""
    counts: Counter[str] = Counter()
    total = 0
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"line {number}: not 'frame;frame;... count': {line[:80]!r}")
        counts[bucket_of(stack.split(";"))] += int(count)
        total += int(count)
    return counts, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", help="py-spy record --format raw output")
    args = parser.parse_args()
    try:
        with open(args.raw, encoding="utf-8") as f:
            counts, total = shares(f)
    except (OSError, ValueError) as exc:
        sys.exit(f"profile_buckets: {exc}")
    if not total:
        sys.exit("profile_buckets: no samples in the file")
    print(f"{total} samples")
    for name, n in counts.most_common():
        print(f"  {100 * n / total:5.1f} %  {name}")


if __name__ == "__main__":
    main()
