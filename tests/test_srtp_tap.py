"""The RTP header parse and the hook-point check of the SRTP tap (media/srtp_tap.py); the
tap between real aiortc peers is in test_rtp_receive_peers.py."""

from __future__ import annotations

import asyncio
import struct

import pytest
from aiortc import RTCPeerConnection

from esl_bridge.media.rtp_receive import HookPointChanged
from esl_bridge.media.srtp_tap import check_srtp_hook_point, parse_rtp


def rtp(
    payload: bytes,
    *,
    pt: int = 0,
    seq: int = 7,
    ts: int = 1600,
    ssrc: int = 0x1234,
    marker: int = 0,
    csrcs: int = 0,
    extension: bytes | None = None,
    padding: int = 0,
    version: int = 2,
) -> bytes:
    first = version << 6 | csrcs | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    out = struct.pack("!BBHII", first, marker << 7 | pt, seq, ts, ssrc)
    out += bytes(4 * csrcs)
    if extension is not None:
        out += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


def test_plain_header() -> None:
    view = parse_rtp(rtp(b"\xff" * 160, pt=8, seq=65535, ts=2**32 - 1, ssrc=9, marker=1))
    assert view is not None
    assert (view.payload_type, view.sequence_number, view.timestamp, view.ssrc, view.marker) == (
        8,
        65535,
        2**32 - 1,
        9,
        1,
    )
    assert view.payload == b"\xff" * 160


def test_csrcs_extension_and_padding_are_skipped() -> None:
    data = rtp(b"abc", csrcs=2, extension=b"\x10\x30\x00\x00", padding=5)
    view = parse_rtp(data)
    assert view is not None and view.payload == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        rtp(b"x")[:11],  # shorter than the fixed header
        rtp(b"x", version=1),
        rtp(b"", csrcs=3)[:20],  # CSRC list cut
        rtp(b"", extension=b"")[:14],  # extension header cut
        rtp(b"", extension=b"\x00" * 8)[:16],  # extension longer than the packet
        rtp(b"ab", padding=2)[:-1] + bytes([200]),  # padding longer than the payload
    ],
)
def test_not_rtp_is_none(data: bytes) -> None:
    assert parse_rtp(data) is None


def test_hook_point_check() -> None:
    with pytest.raises(HookPointChanged):
        check_srtp_hook_point(object())

    async def check() -> None:
        pc = RTCPeerConnection()
        try:
            transceiver = pc.addTransceiver("audio")
            dtls = transceiver.receiver.transport
            check_srtp_hook_point(dtls)  # this aiortc is the one the tap was written for
            dtls.__dict__.pop("_RTCDtlsTransport__rx_packets")
            with pytest.raises(HookPointChanged, match="rx_packets"):
                check_srtp_hook_point(dtls)
        finally:
            await pc.close()

    asyncio.run(check())
