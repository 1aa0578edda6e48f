"""Real-time pacing of the audio sent to FreeSWITCH, judged where it arrives.

FreeSWITCH writes every unicast datagram it receives straight into RTP, with no buffer and
no pacing (esl_bridge/media/unicast.py), so a burst we send reaches the phone as a burst.
The browser's frames come out of aiortc unevenly; ``UnicastEndpoint`` must turn them into
one datagram per 20 ms. Here the browser side writes its frames in bursts of 5 every
100 ms, and the simulated switch (``esl_bridge.sim.media.UnicastStream``, which timestamps
each datagram it receives) is the judge: median spacing about 20 ms, never faster than real
time, and 3 datagrams within 5 ms only rarely (a stall of a loaded machine may cause a
catch-up now and then; a sender without pacing does it at every burst).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import struct

from support.ports_and_waits import free_udp_range

from esl_bridge.media.unicast import FRAME_S, ChannelFormat, PortAllocator, UnicastEndpoint
from esl_bridge.sim.codecs import PCMU
from esl_bridge.sim.media import AudioSource, UnicastStream

FMT = ChannelFormat(8000, 1)
MARK = 0x5A17
FRAMES = 100  # datagrams judged at the switch: 2 s of call
BURST = 5


def tagged(n: int) -> bytes:
    """A browser frame carrying its sequence number (never silence, never 0xFF filler)."""
    return struct.pack("<ii", n, MARK) + bytes(FMT.frame_bytes - 8)


def tag_of(frame: bytes) -> int | None:
    n, marker = struct.unpack_from("<ii", frame)
    return n if marker == MARK else None


async def _arrivals_at_the_switch() -> tuple[list[float], list[int]]:
    """Arrival times (s) of the endpoint's first FRAMES datagrams at the simulated switch,
    and the browser frame numbers among them, in arrival order."""
    allocator = PortAllocator(*free_udp_range(40))
    endpoint = UnicastEndpoint(FMT, allocator, host="127.0.0.1")
    params = await endpoint.open()
    switch = UnicastStream(
        codec=PCMU,
        local=(params.local_ip, params.local_port),
        remote=(params.remote_ip, params.remote_port),
        source=AudioSource("silence"),
        keep_sent=False,
    )
    await switch.start()
    assert switch.started, switch.error

    async def browser() -> None:
        """Bursts of 5 frames every 100 ms: the right rate, the wrong rhythm."""
        n = 0
        while True:
            for _ in range(BURST):
                endpoint.write_frame(tagged(n))
                n += 1
            await asyncio.sleep(BURST * FRAME_S)

    writer = asyncio.create_task(browser())
    try:
        while len(switch.received) < FRAMES:
            await asyncio.sleep(FRAME_S)
    finally:
        writer.cancel()
        switch.stop()
        await endpoint.close()
    assert allocator.in_use == 0
    got = switch.received[:FRAMES]
    tags = [t for t in (tag_of(d.data) for d in got) if t is not None]
    return [d.monotonic for d in got], tags


def test_frames_reach_the_switch_one_per_20ms_whatever_the_browsers_rhythm() -> None:
    times, tags = asyncio.run(asyncio.wait_for(_arrivals_at_the_switch(), 60))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Never faster than real time: a burst sent at once would show up here as a short span.
    span = times[-1] - times[0]
    assert span >= 0.75 * (len(times) - 1) * FRAME_S, span
    median_ms = statistics.median(gaps) * 1000
    assert 15.0 <= median_ms <= 25.0, f"median spacing {median_ms:.1f} ms"
    # 3 datagrams within 5 ms: unpaced bursts of 5 give 3 such triples per burst (36 to 60 here);
    # a paced sender only after a stall of the loop. Loose: a loaded machine may stall.
    triples = sum(1 for i in range(len(times) - 2) if times[i + 2] - times[i] < 0.005)
    assert triples <= 15, f"{triples} triples of datagrams within 5 ms: {gaps}"
    # The browser's audio went out, in order (and not only the sender's silence).
    assert len(tags) > FRAMES // 2, tags
    assert tags == sorted(tags) and len(set(tags)) == len(tags), tags
