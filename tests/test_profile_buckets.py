"""``benchmarks/profile_buckets.py``: py-spy's collapsed stacks into cost buckets."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import profile_buckets
from profile_buckets import LOOP_BUCKET, OTHER, bucket_of

LOOP = "BaseEventLoop._run_once (asyncio/base_events.py:1922);Handle._run (asyncio/events.py:80)"


def test_a_helper_is_charged_to_its_callers_purpose() -> None:
    stack = (
        f"{LOOP};RTCRtpSender._next_encoded_frame (aiortc/rtcrtpsender.py:318);"
        "BaseEventLoop.run_in_executor (asyncio/base_events.py:828);"
        "wrap_future (asyncio/futures.py:411);isfuture (asyncio/base_futures.py:21)"
    )
    assert bucket_of(stack.split(";")).startswith("thread hand-offs")


def test_the_innermost_specific_frame_wins() -> None:
    level = f"{LOOP};RTCRtpSender._next_encoded_frame (aiortc/rtcrtpsender.py:314);"
    level += "compute_audio_level_dbov (aiortc/rtp.py:326)"
    assert bucket_of(level.split(";")).startswith("audio level")
    jitter = f"{LOOP};JitterBuffer.add (aiortc/jitterbuffer.py:38);uint16_add (aiortc/utils.py:17)"
    assert bucket_of(jitter.split(";")).startswith("aiortc")
    reframer = f"{LOOP};_BrowserAudioConsumer.feed (esl_bridge/media/leg.py:363);"
    reframer += "Reframer.convert (esl_bridge/media/leg.py:226)"
    assert bucket_of(reframer.split(";")) == "resampling"


def test_the_loop_only_when_nothing_else_is_on_the_stack() -> None:
    assert bucket_of(LOOP.split(";")) == LOOP_BUCKET
    assert bucket_of(["_start (python3)", "main (python3)"]) == OTHER


def test_shares_add_up_and_bad_lines_are_named() -> None:
    lines = [
        f"{LOOP} 3\n",
        f"{LOOP};Session.protect (pylibsrtp/__init__.py:200) 1\n",
        "\n",
    ]
    counts, total = profile_buckets.shares(lines)
    assert total == 4
    assert counts == {LOOP_BUCKET: 3, "SRTP": 1}
    with pytest.raises(ValueError, match="line 2"):
        profile_buckets.shares([f"{LOOP} 3", "no count here"])
