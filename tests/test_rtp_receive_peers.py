"""The receive path between two real aiortc peers on loopback: a "browser" sending a 440 Hz
sine, and a "gateway" whose receiver is tapped (esl_bridge/media/rtp_receive.py). Once
direct, once through a UDP relay that drops 5 % of the browser's RTP packets and delays
another 5 % by one place. Every test here runs in a loopback-only namespace."""

from __future__ import annotations

import asyncio
import math
import random
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.sdp import SessionDescription
from support.netns import loopback_only
from support.tones import ToneTrack

from esl_bridge.media.leg import codec_capabilities, use_host_addresses
from esl_bridge.media.rtp_receive import ReceivePath, ReceiverTap, seq_delta
from esl_bridge.media.srtp_tap import SrtpTap
from esl_bridge.media.unicast import ChannelFormat

WAIT_S = 90.0  # bound on waiting for the frames (a busy machine); never a pass condition
CANDIDATE = re.compile(r"127\.0\.0\.1 (\d+) typ host")


def is_rtp(data: bytes) -> bool:
    return len(data) >= 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223


@dataclass
class LossyRelay:
    """Sits between the browser (A) and the gateway (B): each side's SDP candidate is
    rewritten to one of the relay's sockets. A's RTP to B loses ``loss`` of its packets and
    ``swap`` of them arrive one place late; everything else (ICE, DTLS, RTCP, B's media)
    passes untouched. The first ``clean`` RTP packets pass as they are."""

    loss: float = 0.05
    swap: float = 0.05
    clean: int = 5
    rng: random.Random = field(default_factory=lambda: random.Random(10))
    a_addr: tuple[str, int] | None = None
    b_addr: tuple[str, int] | None = None
    to_a: asyncio.DatagramTransport | None = None  # socket A talks to
    to_b: asyncio.DatagramTransport | None = None  # socket B talks to
    held: tuple[int, bytes] | None = None
    first_seq: int | None = None
    forwarded: list[int] = field(default_factory=list)  # offsets from the first, in order
    dropped: list[int] = field(default_factory=list)
    swapped: list[int] = field(default_factory=list)
    passing: bool = True

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        relay = self

        class FromA(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                relay.from_a(data)

        class FromB(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if relay.to_a is not None and relay.a_addr is not None:
                    relay.to_a.sendto(data, relay.a_addr)

        self.to_a, _ = await loop.create_datagram_endpoint(FromA, local_addr=("127.0.0.1", 0))
        self.to_b, _ = await loop.create_datagram_endpoint(FromB, local_addr=("127.0.0.1", 0))

    def port(self, transport: asyncio.DatagramTransport | None) -> int:
        assert transport is not None
        return int(transport.get_extra_info("sockname")[1])

    def rewrite_a(self, sdp: str) -> str:
        """A's offer as B must see it: A's candidate becomes the relay's B-facing socket."""
        match = CANDIDATE.search(sdp)
        assert match, sdp
        self.a_addr = ("127.0.0.1", int(match.group(1)))
        return CANDIDATE.sub(f"127.0.0.1 {self.port(self.to_b)} typ host", sdp)

    def rewrite_b(self, sdp: str) -> str:
        match = CANDIDATE.search(sdp)
        assert match, sdp
        self.b_addr = ("127.0.0.1", int(match.group(1)))
        return CANDIDATE.sub(f"127.0.0.1 {self.port(self.to_a)} typ host", sdp)

    def send_b(self, data: bytes) -> None:
        if self.to_b is not None and self.b_addr is not None:
            self.to_b.sendto(data, self.b_addr)

    def from_a(self, data: bytes) -> None:
        if not is_rtp(data):
            self.send_b(data)
            return
        if not self.passing:
            return
        seq = int.from_bytes(data[2:4], "big")
        if self.first_seq is None:
            self.first_seq = seq
        offset = seq_delta(seq, self.first_seq)
        if offset >= self.clean:
            r = self.rng.random()
            if r < self.loss:
                self.dropped.append(offset)
                return
            if r < self.loss + self.swap and self.held is None:
                self.held = (offset, data)
                return
        self.send_b(data)
        self.forwarded.append(offset)
        if self.held is not None:
            offset, held = self.held
            self.held = None
            self.send_b(held)
            self.forwarded.append(offset)
            self.swapped.append(offset)

    def close(self) -> None:
        for transport in (self.to_a, self.to_b):
            if transport is not None:
                transport.close()


@dataclass
class Call:
    frames: list[bytes]
    path: ReceivePath
    gateway: RTCPeerConnection
    browser: RTCPeerConnection
    tracks: list[Any]
    early_packets: int
    untap: Any
    srtp: SrtpTap
    untap_srtp: Any


async def connect(codec: str, fmt: Any, relay: LossyRelay | None, frames_wanted: int) -> Call:
    """Browser -> gateway call; returns once the sink got ``frames_wanted`` frames."""
    loop = asyncio.get_running_loop()
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser_tx = browser.addTransceiver(ToneTrack(440.0, "mono"), direction="sendonly")
    browser_tx.setCodecPreferences(codec_capabilities([codec]))
    gateway = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = gateway.addTransceiver("audio", direction="recvonly")
    transceiver.setCodecPreferences(codec_capabilities([codec]))
    frames: list[bytes] = []
    holder: dict[str, ReceivePath] = {}
    early = [0]

    def on_packet(packet: Any, now: float) -> None:
        path = holder.get("path")
        if path is None:
            early[0] += 1
        else:
            path.on_packet(packet, now)

    tap = ReceiverTap(transceiver.receiver, on_packet, clock_s=loop.time)
    tracks: list[Any] = []
    gateway.on("track", tracks.append)

    with use_host_addresses(["127.0.0.1"]):
        await browser.setLocalDescription(await browser.createOffer())
    offer = browser.localDescription.sdp
    if relay is not None:
        offer = relay.rewrite_a(offer)
    await gateway.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    with use_host_addresses(["127.0.0.1"]):
        await gateway.setLocalDescription(await gateway.createAnswer())
    # As the media leg does: the browser's SRTP taken at the ICE sockets (srtp_tap.py).
    srtp = SrtpTap(transceiver.receiver.transport, tap)
    untap_srtp = srtp.install()

    def untap() -> None:
        untap_srtp()
        tap.untap()

    answer = gateway.localDescription.sdp
    negotiated = SessionDescription.parse(answer).media[0].rtp.codecs[0]
    assert negotiated.name.lower() == codec.lower()
    path = ReceivePath(negotiated, fmt, frames.append)
    holder["path"] = path
    if relay is not None:
        answer = relay.rewrite_b(answer)
    await browser.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    deadline = loop.time() + WAIT_S
    while len(frames) < frames_wanted:
        if loop.time() > deadline:
            pytest.fail(f"only {len(frames)} frames arrived; stats {path.stats}")
        await asyncio.sleep(0.05)
    return Call(frames, path, gateway, browser, tracks, early[0], untap, srtp, untap_srtp)


def max_step(samples: np.ndarray) -> int:
    return int(np.max(np.abs(np.diff(samples.astype(np.int64)))))


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(float) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def mulaw_to_pcm(data: bytes) -> np.ndarray:
    dec = av.CodecContext.create("pcm_mulaw", "r")
    dec.sample_rate = 8000  # type: ignore[attr-defined]
    dec.layout = "mono"  # type: ignore[attr-defined]
    frames = dec.decode(av.Packet(data))  # type: ignore[attr-defined]
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])


async def direct_call(codec: str) -> None:
    fmt = ChannelFormat(48000) if codec == "opus" else ChannelFormat.native("PCMU")
    call = await connect(codec, fmt, None, frames_wanted=100)
    try:
        stats = call.path.stats
        assert {len(f) for f in call.frames} == {fmt.frame_bytes}
        assert stats.frames_out == len(call.frames)
        assert stats.decode_errors == 0 and stats.duplicates == 0 and stats.resets == 0
        if codec == "opus":
            pcm = np.frombuffer(b"".join(call.frames[25:]), dtype="<i2")
            rate, amplitude = 48000, 8000
        else:
            assert call.path.native
            pcm = mulaw_to_pcm(b"".join(call.frames[25:]))
            rate, amplitude = 8000, 8000
        assert abs(dominant_hz(pcm, rate) - 440.0) < 15
        # Continuity of the sine: a click (a missing, repeated or cut piece) is a step far
        # larger than the sine's own; one is allowed per concealed (lost) packet.
        limit = 1.5 * 2 * math.pi * 440 / rate * amplitude + 400
        steps = np.abs(np.diff(pcm.astype(np.int64)))
        assert int(np.sum(steps > limit)) <= 2 * stats.concealed, (max_step(pcm), stats)
        # aiortc's statistics still count the packets; its decoder produced nothing.
        report = await call.gateway.getStats()
        inbound = [s for s in report.values() if s.type == "inbound-rtp"]
        assert inbound and inbound[0].packetsReceived >= stats.received  # (a snapshot)
        assert call.tracks and call.tracks[0]._queue.qsize() == 0
        # Taken at the socket, past aiortc's receive loop: all but what was queued for
        # aiortc before the DTLS handshake finished (none of it failed SRTP).
        assert call.srtp.packets >= stats.received - 10 and call.srtp.packets > 90
        assert call.srtp.srtp_errors == 0 and call.srtp.malformed == 0
    finally:
        call.untap()
        call.path.close()
        await call.browser.close()
        await call.gateway.close()


@loopback_only
@pytest.mark.parametrize("codec", ["opus", "PCMU"])
def test_browser_sine_arrives_through_the_tap_decoded_and_continuous(codec: str) -> None:
    asyncio.run(direct_call(codec))


async def lossy_call() -> None:
    relay = LossyRelay()
    await relay.open()
    call: Call | None = None
    try:
        call = await connect("opus", ChannelFormat(16000), relay, frames_wanted=400)
        relay.passing = False  # nothing more from here on: then count
        relay.held = None
        path = call.path
        assert call.early_packets == 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_S
        while path.stats.received < len(relay.forwarded):  # what is in flight lands
            assert loop.time() < deadline, (path.stats, len(relay.forwarded))
            await asyncio.sleep(0.02)
        assert path.stats.received == len(relay.forwarded)
        path.poll(float("inf"))  # resolve the last gap, if any
        stats = path.stats
        delivered = set(relay.forwarded)
        last = max(delivered)
        expected_lost = sum(1 for k in range(last + 1) if k not in delivered)
        assert relay.dropped and relay.swapped  # the relay did impair the stream
        assert stats.lost - stats.late == expected_lost, (stats, expected_lost)
        assert stats.reordered + stats.late == len(relay.swapped), stats
        assert stats.reordered > 0  # a packet one place late is put back, not dropped
        assert stats.duplicates == 0 and stats.resets == 0 and stats.decode_errors == 0
        # No stall: one frame per packet sent, concealed ones included.
        emitted = path.buffer.stats.emitted
        assert stats.frames_out == len(call.frames) == emitted + stats.concealed
        assert len(call.frames) >= 400 and {len(f) for f in call.frames} == {640}
        pcm = np.frombuffer(b"".join(call.frames[25:]), dtype="<i2")
        assert abs(dominant_hz(pcm, 16000) - 440.0) < 15
    finally:
        if call is not None:
            call.untap()
            call.path.close()
            await call.browser.close()
            await call.gateway.close()
        relay.close()


@loopback_only
def test_five_percent_loss_and_reordering_do_not_stall_and_counters_match() -> None:
    asyncio.run(lossy_call())


async def wait_until(condition: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"waited in vain for {what}")
        await asyncio.sleep(0.02)


async def srtp_tap_edges() -> None:
    call = await connect("PCMU", ChannelFormat.native("PCMU"), None, frames_wanted=30)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        protocols = call.gateway.getTransceivers()[
            0
        ].receiver.transport.transport._connection._protocols
        assert protocols and all("datagram_received" in p.__dict__ for p in protocols)
        # A stranger's datagram shaped as SRTP of the negotiated payload type fails
        # authentication: counted, nothing reaches the path, the call goes on.
        port = int(CANDIDATE.search(call.gateway.localDescription.sdp).group(1))  # type: ignore[union-attr]
        forged = bytes([0x80, call.path.payload_type]) + bytes(10) + bytes(160) + bytes(10)
        for _ in range(5):
            stranger.sendto(forged, ("127.0.0.1", port))
        await wait_until(lambda: call.srtp.srtp_errors == 5, "5 forged packets refused")
        frames = len(call.frames)
        await wait_until(lambda: len(call.frames) > frames + 10, "the call's audio going on")
        assert call.path.stats.decode_errors == 0 and call.srtp.malformed == 0

        # RTCP still takes aiortc's way: the browser's sender reports reach the receiver.
        async def remote_outbound() -> bool:
            report = await call.gateway.getStats()
            return any(s.type == "remote-outbound-rtp" for s in report.values())

        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not await remote_outbound():
            assert asyncio.get_running_loop().time() < deadline, "no sender report reached aiortc"
            await asyncio.sleep(0.1)

        # Uninstalled: every socket has its own handler back, and the packets take
        # aiortc's way again (still to the receiver tap, none at the socket).
        call.untap_srtp()
        call.untap_srtp()  # idempotent
        assert not any("datagram_received" in p.__dict__ for p in protocols)
        taken, frames = call.srtp.packets, len(call.frames)
        await wait_until(lambda: len(call.frames) > frames + 10, "audio through aiortc's loop")
        assert call.srtp.packets == taken
    finally:
        stranger.close()
        call.untap()
        call.path.close()
        await call.browser.close()
        await call.gateway.close()


@loopback_only
def test_srtp_tap_refuses_forgeries_leaves_rtcp_to_aiortc_and_uninstalls() -> None:
    asyncio.run(srtp_tap_edges())
