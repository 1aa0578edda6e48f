"""MediaLeg end to end on loopback: a "browser" aiortc peer playing 1 kHz, the gateway's
MediaLeg, and a tiny fake FreeSWITCH playing 440 Hz over unicast. Every test here runs in a
network namespace that has only ``lo`` (tests/support/netns.py)."""

from __future__ import annotations

import asyncio
import math
import os
import socket
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from support.netns import loopback_only
from support.tones import ToneTrack

from esl_bridge.loops import new_event_loop
from esl_bridge.media.leg import (
    LegConfig,
    MediaLeg,
    Reframer,
    codec_capabilities,
    use_host_addresses,
)
from esl_bridge.media.unicast import FRAME_S, ChannelFormat, PortAllocator

AUDIO_S = 1.2  # seconds of audio each way; the first 0.5 s are ignored (start-up)


class FakeFreeSwitch(asyncio.DatagramProtocol):
    """FreeSWITCH's unicast side: binds local-port, sends 440 Hz L16 frames paced at 20 ms
    to remote-port, records every datagram it gets."""

    def __init__(self, fmt: ChannelFormat, target: tuple[str, int], freq: float = 440.0) -> None:
        self.fmt = fmt
        self.target = target
        self.freq = freq
        self.received: list[bytes] = []
        self.sources: set[tuple[str, int]] = set()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)
        self.sources.add(addr)

    def frame(self, n: int) -> bytes:
        k = self.fmt.samples_per_frame
        t = (np.arange(k) + n * k) / self.fmt.rate
        mono = (9000 * np.sin(2 * math.pi * self.freq * t)).astype("<i2")
        return (np.repeat(mono, 2) if self.fmt.channels == 2 else mono).tobytes()

    async def play(
        self, seconds: float, until: Callable[[], bool] = lambda: True, most_s: float = 30.0
    ) -> None:
        """Play ``seconds`` of audio, then on until ``until()`` holds (``most_s`` at most:
        on a loaded machine the other side may take longer to hear enough)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert self.transport is not None
        self.transport.sendto(b"\xff" * self.fmt.frame_bytes, self.target)  # CNG first
        for n in range(1, int(most_s / FRAME_S)):
            if n >= seconds / FRAME_S and until():
                return
            delay = t0 + n * FRAME_S - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.transport.sendto(self.frame(n), self.target)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    samples = samples.astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with_target = os.path.join("/proc/self/fd", fd)
        try:
            if os.readlink(with_target).startswith("socket:"):
                count += 1
        except OSError:
            pass
    return count


async def bridged_call(
    fmt: ChannelFormat, codecs: tuple[str, ...], unicast_first: bool, alloc: PortAllocator
) -> None:
    loop = asyncio.get_running_loop()

    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTrack(ToneTrack(1000.0))
    heard: list[av.AudioFrame] = []
    listen_tasks: list[asyncio.Task[None]] = []

    async def listen(track: object) -> None:
        while True:
            try:
                heard.append(await track.recv())  # type: ignore[attr-defined]
            except MediaStreamError:
                return

    @browser.on("track")
    def _on_track(track: object) -> None:
        listen_tasks.append(loop.create_task(listen(track)))

    leg = MediaLeg(LegConfig(codecs=codecs), alloc, call_id="test")
    fake: FakeFreeSwitch | None = None
    try:
        if unicast_first:  # SIP side answered before the browser's offer came
            await leg.start_unicast(fmt)
        with use_host_addresses(["127.0.0.1"]):
            await browser.setLocalDescription(await browser.createOffer())
        answer = await leg.handle_offer(browser.localDescription.sdp)
        assert "a=candidate:" in answer and "127.0.0.1" in answer
        await browser.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert leg.codec == codecs[0].lower()

        params = await leg.start_unicast(fmt)
        transport, fake = await loop.create_datagram_endpoint(
            lambda: FakeFreeSwitch(fmt, (params.remote_ip, params.remote_port)),
            local_addr=(params.local_ip, params.local_port),
        )
        for _ in range(600):  # ICE + DTLS on loopback (slow on a loaded machine)
            if leg.pc.connectionState == "connected":
                break
            await asyncio.sleep(0.025)
        assert leg.pc.connectionState == "connected"
        heard.clear()
        # Frames ignored at the start (start-up) plus enough to judge, on both sides:
        # waited for, not expected within a wall-clock time.
        await fake.play(
            AUDIO_S,
            # fake.received counts the gateway's silence on empty ticks too: the leg's own
            # count of the browser's packets says the browser's audio has come.
            until=lambda: (
                len(heard) > 45
                and fake is not None
                and len(fake.received) > 45
                and leg.browser_packets > 45
            ),
        )
        await asyncio.sleep(0.1)
        stats = await leg.stats(with_rtp=True)
        # Once the tap is in, every packet from the browser is taken at the socket (those
        # before it went aiortc's way: how many depends on the loop's load, not judged).
        later = stats.receive
        for _ in range(1500):  # bounded only so that a stall fails instead of hanging
            later = (await leg.stats()).receive
            if later["received"] >= stats.receive["received"] + 10:
                break
            await asyncio.sleep(0.02)
        transport.close()
    finally:
        await leg.close()
        await leg.close()
        await browser.close()
        for task in listen_tasks:
            task.cancel()
        await asyncio.gather(*listen_tasks, return_exceptions=True)

    # FreeSWITCH side: exact frames, from our port, 1 kHz at the channel rate.
    assert fake is not None and fake.received
    assert fake.sources == {(params.remote_ip, params.remote_port)}
    assert {len(d) for d in fake.received} == {fmt.frame_bytes}
    pcm = np.frombuffer(b"".join(fake.received[25:]), dtype="<i2").reshape(-1, fmt.channels)
    for ch in range(fmt.channels):
        assert dominant_hz(pcm[:, ch], fmt.rate) == pytest.approx(1000, abs=15)
    assert np.sqrt(np.mean(pcm[:, 0].astype(float) ** 2)) > 1000

    # Browser side: 440 Hz from the channel.
    tail = heard[25:]
    assert len(tail) > 20
    rate = tail[0].sample_rate
    audio = np.concatenate([f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in tail])
    assert dominant_hz(audio, rate) == pytest.approx(440, abs=15)

    unicast = stats.unicast
    assert unicast is not None and unicast.rx_cng_frames == 1
    assert unicast.rx_size_mismatches == 0 and unicast.tx_packets > 0
    assert stats.codec == codecs[0].lower()
    # The browser's audio came through the receive tap and its own decoding, not aiortc's
    # jitter buffer and decoder thread (media/rtp_receive.py).
    assert stats.receive["received"] > 45 and stats.receive["frames_out"] > 45
    # ...taken at the ICE socket past aiortc's receive loop (media/srtp_tap.py), all but
    # what aiortc had queued before the DTLS handshake ended.
    assert stats.receive["socket_taken"] > 0
    taken_since = later["socket_taken"] - stats.receive["socket_taken"]
    assert taken_since == later["received"] - stats.receive["received"] >= 10
    assert stats.receive["srtp_errors"] == 0 and stats.receive["not_rtp"] == 0
    assert stats.browser_frames_out == stats.receive["frames_out"]

    assert alloc.in_use == 0


SCENARIOS = {
    # name: (rate, channels, codec preference, unicast started before the offer)
    "8k-mono": (8000, 1, ("opus", "PCMU", "PCMA"), False),
    "16k-mono": (16000, 1, ("opus", "PCMU", "PCMA"), False),
    "48k-mono": (48000, 1, ("opus", "PCMU", "PCMA"), False),
    "48k-stereo": (48000, 2, ("opus", "PCMU", "PCMA"), False),
    "8k-mono-pcmu": (8000, 1, ("PCMU", "PCMA"), False),
    "16k-pcma-unicast-first": (16000, 1, ("PCMA", "opus"), True),
}


async def all_scenarios() -> None:
    """Every scenario at once (one namespace, one event loop: the test stays short), then
    check that closing left nothing behind: sockets, tasks, ports."""
    assert [name for _, name in socket.if_nameindex()] == ["lo"]  # the house rule holds
    await asyncio.sleep(0)
    base_tasks = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    base_sockets = open_sockets()
    allocators = [PortAllocator(40000 + 100 * i, 40099 + 100 * i) for i in range(len(SCENARIOS))]
    results = await asyncio.gather(
        *(
            bridged_call(ChannelFormat(rate, channels), codecs, first, alloc)
            for (rate, channels, codecs, first), alloc in zip(
                SCENARIOS.values(), allocators, strict=True
            )
        ),
        return_exceptions=True,
    )
    failed = {name: repr(r) for name, r in zip(SCENARIOS, results, strict=True) if r is not None}
    assert not failed, failed

    def tasks_left() -> set[asyncio.Task[object]]:
        current = asyncio.current_task()
        return {t for t in asyncio.all_tasks() if t is not current and not t.done()} - base_tasks

    # Closed transports and cancelled tasks finish on the loop's next rounds: wait for
    # that (bounded only so that a leak fails instead of hanging), then judge.
    for _ in range(2000):
        if open_sockets() <= base_sockets and not tasks_left():
            break
        await asyncio.sleep(0.01)
    assert all(a.in_use == 0 for a in allocators)
    assert open_sockets() <= base_sockets
    left = tasks_left()
    assert not left, left


@loopback_only
@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_tones_cross_the_bridge_both_ways_every_format(kind: str) -> None:
    """On the gateway's default loop (uvloop: its transports call the SRTP tap's
    per-socket handler, its timers are whole milliseconds) and on the standard one."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        assert type(runner.get_loop()).__module__.split(".")[0] == kind
        runner.run(asyncio.wait_for(all_scenarios(), 240))


def test_codec_preference_names() -> None:
    caps = codec_capabilities(["PCMA", "opus"])
    assert [c.mimeType.lower() for c in caps] == ["audio/pcma", "audio/opus"]
    with pytest.raises(ValueError):
        codec_capabilities(["speex"])


def test_no_ice_server_by_default() -> None:
    config = LegConfig().rtc_configuration()
    assert config.iceServers == []
    turn = LegConfig(
        ice_servers=("turn:127.0.0.1:3478",), turn_username="u", turn_password="p"
    ).rtc_configuration()
    assert turn.iceServers is not None and turn.iceServers[0].username == "u"


def test_leg_config_from_the_media_section() -> None:
    from esl_bridge.config import defaults

    config = LegConfig.from_settings(defaults().media)
    assert config.host_addresses == ("127.0.0.1",)
    assert config.codecs == ("sip", "opus", "PCMU", "PCMA")
    assert config.ice_servers == () and config.unicast_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("in_rate", "in_layout", "out_rate", "out_layout"),
    [
        (48000, "stereo", 8000, "mono"),
        (48000, "stereo", 16000, "mono"),
        (48000, "stereo", 48000, "stereo"),
        (8000, "mono", 48000, "stereo"),
        (16000, "mono", 48000, "stereo"),
        (48000, "mono", 48000, "stereo"),
    ],
)
def test_reframer_one_frame_per_frame_no_lag(
    in_rate: int, in_layout: str, out_rate: int, out_layout: str
) -> None:
    reframer = Reframer(out_rate, out_layout)
    in_channels = 2 if in_layout == "stereo" else 1
    out_channels = 2 if out_layout == "stereo" else 1
    k = in_rate // 50
    outputs: list[bytes] = []
    for n in range(50):
        t = (np.arange(k) + n * k) / in_rate
        mono = (8000 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
        data = np.repeat(mono, 2) if in_channels == 2 else mono
        frame = av.AudioFrame(format="s16", layout=in_layout, samples=k)
        frame.planes[0].update(data.tobytes())
        frame.sample_rate = in_rate
        got = reframer.convert(frame)
        assert len(got) == 1  # each 20 ms in completes one 20 ms frame out: no frame of lag
        outputs.extend(got)
    assert {len(f) for f in outputs} == {out_rate // 50 * out_channels * 2}
    first = np.frombuffer(outputs[0], dtype=np.int16).reshape(-1, out_channels)[:, 0]
    assert np.abs(first).max() > 4000  # the tone is already in the first frame
    pcm = np.frombuffer(b"".join(outputs), dtype=np.int16).reshape(-1, out_channels)
    for ch in range(out_channels):
        assert dominant_hz(pcm[:, ch], out_rate) == pytest.approx(440, abs=5)


def test_close_without_offer_or_unicast() -> None:
    async def scenario() -> None:
        leg = MediaLeg(LegConfig(), PortAllocator(40000, 40009))
        await leg.close()
        with pytest.raises(RuntimeError):
            await leg.start_unicast(ChannelFormat(8000))
        stats = await leg.stats()
        assert stats.unicast is None and stats.connection_state == "closed"

    asyncio.run(asyncio.wait_for(scenario(), 10))


async def gathered_hosts(addresses: list[str] | None) -> list[str]:
    import aioice

    connection = aioice.Connection(ice_controlling=True)
    try:
        if addresses is None:
            await connection.gather_candidates()
        else:
            with use_host_addresses(addresses):
                await connection.gather_candidates()
        return sorted(c.host for c in connection.local_candidates)
    finally:
        await connection.close()


@loopback_only
def test_host_addresses_hook_lets_aioice_use_loopback() -> None:
    # aioice alone never offers 127.0.0.1; in a namespace with only lo it offers nothing.
    assert asyncio.run(gathered_hosts(None)) == []
    assert asyncio.run(gathered_hosts(["127.0.0.1"])) == ["127.0.0.1"]
    assert asyncio.run(gathered_hosts(None)) == []  # the choice does not leak out


async def gateway_offers() -> None:
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTrack(ToneTrack(1000.0))
    leg = MediaLeg(LegConfig(codecs=("PCMA", "PCMU")), PortAllocator(41000, 41009))
    try:
        offer = await leg.create_offer()
        assert "PCMA/8000" in offer and "opus" not in offer
        await browser.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        with use_host_addresses(["127.0.0.1"]):
            await browser.setLocalDescription(await browser.createAnswer())
        await leg.handle_answer(browser.localDescription.sdp)
        assert leg.codec == "pcma" and leg.track.rate == 8000
        for _ in range(600):
            if leg.pc.connectionState == "connected":
                break
            await asyncio.sleep(0.025)
        assert leg.pc.connectionState == "connected"
    finally:
        await leg.close()
        await browser.close()


@loopback_only
def test_gateway_can_be_the_offerer() -> None:
    asyncio.run(asyncio.wait_for(gateway_offers(), 30))
