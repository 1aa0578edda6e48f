"""The direct RTP sender toward the browser (esl_bridge/media/rtp_send.py): a MediaLeg's
RTP goes out on the shared tick, not through aiortc's per-packet ``RTCRtpSender._run_rtp``.

The loopback tests put a real aiortc peer where the browser is (in a loopback-only
namespace) and record, on that peer's receiver instance, every RTP packet and RTCP sender
report as it arrives, before handing it on to aiortc: the header fields (sequence numbers,
timestamps, SSRC, payload type, marker, MID) and the sender report's counts are checked
against what arrived, and the peer's own decoder must hear a continuous sine."""

from __future__ import annotations

import asyncio
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, cast

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpSrPacket, RtpPacket
from aiortc.sdp import SessionDescription
from support.netns import loopback_only
from support.tones import ToneTrack

from esl_bridge.media.leg import LegConfig, MediaLeg, PacketEncoder, use_host_addresses
from esl_bridge.media.rtp_send import (
    NTP_PAIR_EVERY,
    DirectSender,
    HookPointChanged,
    check_send_hook_point,
)
from esl_bridge.media.ticker import SharedTicker
from esl_bridge.media.unicast import ChannelFormat, JitterSettings, PortAllocator

AMPLITUDE = 9000
TONE_HZ = 441.3
TONE_FRAMES = 100
# The switch's whole tone goes at once into a deep buffer that never trims or skips: every
# frame is played in order whatever the machine's load.
DEEP = JitterSettings(target_depth=1, max_depth=1000, window=10**9, max_catchup=10**9)


def sine_l16(fmt: ChannelFormat, n: int) -> bytes:
    k = fmt.samples_per_frame
    t = (np.arange(k) + n * k) / fmt.rate
    return (AMPLITUDE * np.sin(2 * math.pi * TONE_HZ * t)).astype("<i2").tobytes()


def max_click(samples: np.ndarray, rate: int) -> float:
    """Largest deviation from a pure TONE_HZ sine (x[n+1] + x[n-1] == 2 cos(w) x[n])."""
    c = 2 * math.cos(2 * math.pi * TONE_HZ / rate)
    return float(np.abs(samples[2:] - c * samples[1:-1] + samples[:-2]).max())


@dataclass
class Arrival:
    seq: int
    ts: int
    ssrc: int
    pt: int
    marker: int
    mid: str | None
    size: int


@dataclass
class Report:
    """An RTCP SR as it arrived, with what had arrived of RTP before it."""

    ssrc: int
    packet_count: int
    octet_count: int
    rtp_timestamp: int
    rtp_before: int
    octets_before: int
    pair_ts: int | None  # the timestamp the sender's clock pair should carry (see below)


@dataclass
class Heard:
    rtp: list[Arrival] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    frames: list[av.AudioFrame] = field(default_factory=list)
    recv_calls: int = 0


def record_on(receiver: Any, heard: Heard) -> None:
    """Wrap this receiver instance's RTP and RTCP handlers: record, then aiortc's own."""
    own_rtp = receiver._handle_rtp_packet
    own_rtcp = receiver._handle_rtcp_packet

    async def on_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
        heard.rtp.append(
            Arrival(
                packet.sequence_number,
                packet.timestamp,
                packet.ssrc,
                packet.payload_type,
                packet.marker,
                packet.extensions.mid,
                len(packet.payload),
            )
        )
        await own_rtp(packet, arrival_time_ms=arrival_time_ms)

    async def on_rtcp(packet: Any) -> None:
        if isinstance(packet, RtcpSrPacket):
            info = packet.sender_info
            heard.reports.append(
                Report(
                    packet.ssrc,
                    info.packet_count,
                    info.octet_count,
                    info.rtp_timestamp,
                    len(heard.rtp),
                    sum(a.size for a in heard.rtp),
                    # The (NTP, RTP) pair is refreshed on packets 1, 1 + N, 1 + 2N...
                    # (N = NTP_PAIR_EVERY): the last of those sent.
                    heard.rtp[NTP_PAIR_EVERY * ((len(heard.rtp) - 1) // NTP_PAIR_EVERY)].ts
                    if heard.rtp
                    else None,
                )
            )
        await own_rtcp(packet)

    receiver.__dict__["_handle_rtp_packet"] = on_rtp
    receiver.__dict__["_handle_rtcp_packet"] = on_rtcp


async def call_through_leg(
    codec: str, fmt: ChannelFormat, channel_codec: str
) -> tuple[MediaLeg, Heard, str]:
    """A browser peer and a switch socket around a MediaLeg; the switch plays a sine.
    Returns the leg (closed), what the browser got, and the browser's MID."""
    loop = asyncio.get_running_loop()
    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTrack(ToneTrack(1000.0))
    heard = Heard()
    tasks: list[asyncio.Task[None]] = []

    async def listen(track: Any) -> None:
        while True:
            try:
                heard.frames.append(await track.recv())
            except MediaStreamError:
                return

    @browser.on("track")
    def _on_track(track: Any) -> None:
        tasks.append(loop.create_task(listen(track)))

    leg = MediaLeg(LegConfig(codecs=(codec,), jitter=DEEP), PortAllocator(42400, 42499))
    own_recv = leg.track.recv

    async def counting_recv() -> Any:  # aiortc's sender loop would call this per packet
        heard.recv_calls += 1
        return await own_recv()

    leg.track.recv = counting_recv  # type: ignore[method-assign]
    switch: asyncio.DatagramTransport | None = None
    try:
        with use_host_addresses(["127.0.0.1"]):
            await browser.setLocalDescription(await browser.createOffer())
        answer = await leg.handle_offer(browser.localDescription.sdp)
        await browser.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        mid = browser.getTransceivers()[0].mid
        record_on(browser.getTransceivers()[0].receiver, heard)
        params = await leg.start_unicast(fmt, channel_codec)
        switch, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=(params.local_ip, params.local_port)
        )
        for _ in range(2400):  # ICE + DTLS: waited for, bounded only against a hang
            if leg.pc.connectionState == "connected" and heard.frames:
                break
            await asyncio.sleep(0.025)
        assert leg.pc.connectionState == "connected"
        if leg.path != "fast":
            tone = [sine_l16(fmt, n) for n in range(TONE_FRAMES)]
        else:  # native unicast: the switch sends the channel's own G.711
            encoder = PacketEncoder(channel_codec.lower(), 8000)
            tone = [encoder.encode(sine_l16(ChannelFormat(8000), n)) for n in range(TONE_FRAMES)]
        for frame in tone:
            switch.sendto(frame, (params.remote_ip, params.remote_port))
        checked, last_loud = 0, -1
        for _ in range(12000):  # until the tone is over and two sender reports came
            for i in range(checked, len(heard.frames)):
                if np.abs(heard.frames[i].to_ndarray()).max() > 2000:
                    last_loud = i
            checked = len(heard.frames)
            if last_loud >= 0 and checked - last_loud > 10 and len(heard.reports) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        if switch is not None:
            switch.close()
        await leg.close()
        await browser.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return leg, heard, mid


def check_call(leg: MediaLeg, heard: Heard, mid: str, step: int) -> None:
    # aiortc's loop never ran: the track was never asked for a packet.
    assert heard.recv_calls == 0
    sender = leg.direct_sender
    assert sender is not None and sender.codec is not None
    assert sender.packets >= len(heard.rtp) > TONE_FRAMES
    rtp = heard.rtp
    # One stream, as negotiated: the sender's SSRC and the answer's payload type.
    answer = SessionDescription.parse(leg.pc.localDescription.sdp).media[0]
    assert {a.ssrc for a in rtp} == {leg.transceiver.sender._ssrc}  # type: ignore[union-attr]
    assert {a.pt for a in rtp} == {answer.rtp.codecs[0].payloadType} == {sender.codec.payloadType}
    assert {a.mid for a in rtp} == {mid}
    # Continuity: every sequence number once, in order (loopback), timestamps one frame apart.
    seq_steps = {(b.seq - a.seq) & 0xFFFF for a, b in itertools.pairwise(rtp)}
    ts_steps = {(b.ts - a.ts) & 0xFFFFFFFF for a, b in itertools.pairwise(rtp)}
    assert seq_steps == {1}
    assert ts_steps == {step}
    assert [a.marker for a in rtp] == [1] + [0] * (len(rtp) - 1)
    # The peer's decoder hears the sine without a click or a gap.
    loud = [i for i, f in enumerate(heard.frames) if np.abs(f.to_ndarray()).max() > 2000]
    assert loud, "the browser never heard the tone"
    frames = heard.frames[loud[0] + 2 : loud[-1] - 1]
    assert len(frames) >= TONE_FRAMES - 8
    audio = np.concatenate(
        [f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in frames]
    ).astype(float)
    rate = frames[0].sample_rate
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert float(np.fft.rfftfreq(len(audio), 1 / rate)[int(np.argmax(spectrum))]) == (
        pytest.approx(440, abs=10)
    )
    assert max_click(audio, rate) < (1500.0 if rate == 8000 else 450.0)
    # RTCP sender reports count exactly what had arrived before them (loopback keeps the
    # order of one socket's datagrams), with the timestamp of the packet whose send
    # refreshed the clock pair last.
    reports = [r for r in heard.reports if r.packet_count > 0]
    assert len(reports) >= 2, heard.reports
    for report in reports:
        assert report.ssrc == leg.transceiver.sender._ssrc  # type: ignore[union-attr]
        assert report.packet_count == report.rtp_before
        assert report.octet_count == report.octets_before
        assert report.rtp_timestamp == report.pair_ts
    assert reports[-1].packet_count > reports[0].packet_count


async def opus_scenario() -> None:
    leg, heard, mid = await call_through_leg("opus", ChannelFormat(16000), "OPUS")
    assert leg.path == "transcode"
    check_call(leg, heard, mid, step=960)


@loopback_only
def test_direct_sender_carries_a_continuous_opus_sine_with_right_rtcp_reports() -> None:
    asyncio.run(asyncio.wait_for(opus_scenario(), 240))


async def fast_path_scenario() -> None:
    leg, heard, mid = await call_through_leg("PCMU", ChannelFormat(8000), "PCMU")
    assert leg.path == "fast"
    check_call(leg, heard, mid, step=160)


@loopback_only
def test_direct_sender_carries_the_fast_path_with_right_rtcp_reports() -> None:
    asyncio.run(asyncio.wait_for(fast_path_scenario(), 240))


# --------------------------------------------------------------------------- hook point


def sender_of_a_fresh_connection() -> tuple[RTCPeerConnection, RTCRtpSender]:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("audio", direction="sendrecv")
    return pc, transceiver.sender


def test_hook_point_holds_on_this_aiortc() -> None:
    async def run() -> None:
        pc, sender = sender_of_a_fresh_connection()
        try:
            check_send_hook_point(sender)
        finally:
            await pc.close()

    asyncio.run(run())


def test_hook_point_check_catches_a_changed_aiortc() -> None:
    async def run() -> None:
        pc, sender = sender_of_a_fresh_connection()
        direct = DirectSender(sender, cast(Any, object()), ticker=cast(SharedTicker, None))
        try:

            class Changed(RTCRtpSender):
                async def _run_rtp(self, codec: Any, extra: int = 0) -> None:  # type: ignore[override]
                    return None

            sender.__class__ = Changed
            with pytest.raises(HookPointChanged, match="signature"):
                direct.install()
            assert "_run_rtp" not in sender.__dict__

            class Renamed(RTCRtpSender):
                async def send(self, parameters: Any) -> None:  # starts its loop another way
                    return None

            sender.__class__ = Renamed
            with pytest.raises(HookPointChanged, match=r"RTCRtpSender\.send no longer does"):
                direct.install()
            sender.__class__ = RTCRtpSender

            count = sender.__dict__.pop("_RTCRtpSender__packet_count")
            with pytest.raises(HookPointChanged, match="__packet_count"):
                direct.install()
            sender.__dict__["_RTCRtpSender__packet_count"] = count
            with pytest.raises(HookPointChanged, match="not an aiortc"):
                check_send_hook_point(object())

            uninstall = direct.install()
            assert sender.__dict__["_run_rtp"] == direct._run_rtp
            with pytest.raises(RuntimeError, match="already has a direct RTP sender"):
                DirectSender(sender, cast(Any, object())).install()
            uninstall()
            assert "_run_rtp" not in sender.__dict__
        finally:
            await pc.close()

    asyncio.run(run())


# --------------------------------------------------------------------------- ticker callbacks


def test_ticker_calls_callbacks_on_the_grid_and_survives_one_that_raises() -> None:
    """``SharedTicker.call_at`` (what the direct sender paces on): every callback due runs
    in the one timer callback, in deadline order; one that raises goes to the loop's
    exception handler and the others still run."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        errors: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _loop, context: errors.append(context))
        ticker = SharedTicker(loop)
        order: list[str] = []
        done = loop.create_future()

        def boom() -> None:
            order.append("boom")
            raise ValueError("bad packet")

        now = loop.time()
        ticker.call_at(now + 0.003, lambda: order.append("b"))
        ticker.call_at(now + 0.001, lambda: order.append("a"))
        ticker.call_at(now + 0.002, boom)
        ticker.call_at(now + 0.004, lambda: done.set_result(None))
        await done
        assert order == ["a", "boom", "b"]
        assert [type(e["exception"]) for e in errors] == [ValueError]
        assert ticker.waiting == 0

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_relayed_pair_sends_in_order_bounded_and_survives_failures() -> None:
    """A TURN relay's ``send_data`` is a coroutine (a channel binding may be pending): the
    packets leave in order, at most MAX_IN_FLIGHT wait (the rest are dropped and counted),
    and a failed send is one counted loss, not a stuck chain."""
    from aiortc import RTCPeerConnection

    from esl_bridge.media.rtp_send import MAX_IN_FLIGHT, DirectSender

    class SlowRelay:
        def __init__(self) -> None:
            self.gate = asyncio.Event()
            self.sent: list[bytes] = []

        async def send_data(self, data: bytes, addr: tuple[str, int]) -> None:
            await self.gate.wait()
            if data == b"bad":
                raise OSError("relay refused")
            self.sent.append(data)

    async def scenario() -> tuple[list[bytes], int]:
        pc = RTCPeerConnection()
        try:
            sender = pc.addTransceiver("audio").sender
            direct = DirectSender(sender, track=None)  # type: ignore[arg-type]
            direct._loop = asyncio.get_running_loop()
            relay = SlowRelay()
            packets = [b"p0", b"bad"] + [f"p{i}".encode() for i in range(2, 2 * MAX_IN_FLIGHT)]
            for data in packets:
                direct._send_async(relay, data, ("127.0.0.1", 3478))
            relay.gate.set()
            while direct._in_flight:
                await asyncio.sleep(0)
            return relay.sent, direct.send_errors
        finally:
            await pc.close()

    sent, errors = asyncio.run(scenario())
    expected = [b"p0"] + [f"p{i}".encode() for i in range(2, MAX_IN_FLIGHT)]
    assert sent == expected  # in order; the rest were over the bound
    assert errors == 1 + MAX_IN_FLIGHT  # the refused one and the dropped ones


# --------------------------------------------------------------------------- the nominated pair


@loopback_only
def test_packets_follow_the_nominated_pair_and_stop_without_one() -> None:
    """The sender looks the nominated pair up per packet (cheaply: it keeps the last one
    and its socket): when ICE nominates another pair mid-call the next packet leaves on
    it, and with no pair at all the sender stops, as aiortc's loop would."""
    import os

    import aioice.ice
    from aiortc.rtcdtlstransport import State
    from pylibsrtp import Policy, Session

    class Ear(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: list[bytes] = []
            self.arrived = asyncio.Event()

        def datagram_received(self, data: bytes, addr: Any) -> None:
            self.got.append(data)
            self.arrived.set()

    @dataclass
    class Pair:
        protocol: Any
        remote_addr: tuple[str, int]

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        key = os.urandom(30)
        tx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
        rx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
        ears, sockets = [], []
        for _ in range(2):
            transport, ear = await loop.create_datagram_endpoint(Ear, local_addr=("127.0.0.1", 0))
            ears.append((transport, ear))
        for _ in range(2):
            transport, protocol = await loop.create_datagram_endpoint(
                lambda: aioice.ice.StunProtocol(receiver=None), local_addr=("127.0.0.1", 0)
            )
            sockets.append((transport, protocol))
        pairs = [Pair(sockets[i][1], ears[i][0].get_extra_info("sockname")) for i in range(2)]
        dtls = type("Dtls", (), {})()
        dtls.__dict__.update(
            _state=State.CONNECTED,
            _tx_srtp=tx,
            _RTCDtlsTransport__tx_bytes=0,
            _RTCDtlsTransport__tx_packets=0,
        )
        direct = DirectSender(cast(Any, type("Sender", (), {})()), track=cast(Any, None))
        direct._dtls = cast(Any, dtls)
        direct._dtls_state = dtls.__dict__
        direct._header = bytearray(b"\x80\x00" + bytes(10))
        direct._state = {}
        direct._running = True
        nominated: dict[int, Any] = {}
        direct._nominated = nominated
        try:
            direct._send(b"before any pair")  # no pair yet: stopped, as with none left
            assert not direct._running
            direct._running = True
            for turn, index in enumerate([0, 0, 1, 1, 0]):
                nominated[1] = pairs[index]
                ear = ears[index][1]
                ear.arrived.clear()
                direct._send(b"frame %d" % turn)
                await asyncio.wait_for(ear.arrived.wait(), 30)
            got = [[rx.unprotect(p)[12:] for p in ear.got] for _, ear in ears]
            assert got == [[b"frame 0", b"frame 1", b"frame 4"], [b"frame 2", b"frame 3"]]
            assert dtls.__dict__["_RTCDtlsTransport__tx_packets"] == 5
            del nominated[1]
            direct._send(b"frame 5")
            assert not direct._running  # stopped: no ICE pair
        finally:
            for transport, _ in ears + sockets:
                transport.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
