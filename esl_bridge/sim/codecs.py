"""Codecs a simulated phone can negotiate, with the numbers FreeSWITCH reports for them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Codec:
    name: str  # Channel-Read-Codec-Name
    rate: int  # Channel-Read-Codec-Rate == variable_read_rate == unicast L16 rate
    channels: int  # variable_rtp_use_codec_channels: unicast datagrams are interleaved
    bit_rate: int  # Channel-Read-Codec-Bit-Rate
    codec_rate: int  # variable_rtp_use_codec_rate (G.722 says 8000 although it runs at 16 kHz)
    pt: int
    ep_codec_string: str
    sdp_rtpmap: str

    @property
    def frame_bytes(self) -> int:
        """One 20 ms unicast datagram: L16 samples x channels."""
        return self.rate // 50 * 2 * self.channels

    @property
    def last_audio_codec_string(self) -> str:
        return f"{self.name}@{self.codec_rate}h@20i@{self.channels}c"


# Measured: PCMU 320 B, G722 640 B, opus stereo=0 1920 B, opus stereo=1 3840 B
# (docs/freeswitch.rst, fact 2).
# The opus bit rate is not in the fixtures (no transcript was kept for those calls): 0 is assumed.
PCMU = Codec("PCMU", 8000, 1, 64000, 8000, 0, "CORE_PCM_MODULE.PCMU@8000h@20i@64000b", "PCMU/8000")
PCMA = Codec("PCMA", 8000, 1, 64000, 8000, 8, "CORE_PCM_MODULE.PCMA@8000h@20i@64000b", "PCMA/8000")
G722 = Codec("G722", 16000, 1, 64000, 8000, 9, "mod_spandsp.G722@8000h@20i@64000b", "G722/8000")
OPUS = Codec("opus", 48000, 1, 0, 48000, 96, "mod_opus.opus@48000h@20i@2c", "opus/48000/2")
OPUS_STEREO = Codec("opus", 48000, 2, 0, 48000, 96, "mod_opus.opus@48000h@20i@2c", "opus/48000/2")

CODECS: dict[str, Codec] = {
    "PCMU": PCMU,
    "PCMA": PCMA,
    "G722": G722,
    "OPUS": OPUS,
    "OPUS_STEREO": OPUS_STEREO,
}


def codec_by_name(name: str | Codec) -> Codec:
    if isinstance(name, Codec):
        return name
    try:
        return CODECS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown codec {name!r}; known: {', '.join(CODECS)}") from None
