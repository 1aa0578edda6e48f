"""A web user's browser media, as an aiortc peer: it sends a tone and records what it hears.

It runs on the loop of whatever its WebUser runs on (a gateway in this process, or a
``Loops`` of the test when the gateway is a subprocess). Tests that use it open peer
connections, so they run in a loopback-only namespace (tests/support/netns.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from esl_bridge.media.leg import codec_capabilities, use_host_addresses
from support.gateway_support import WebUser
from support.tones import ToneTrack

BROWSER_HZ = 1000.0


class WebPeer:
    """The web user's browser media: an aiortc peer sending a tone (1 kHz unless ``hz``),
    recording what it hears. ``codecs``: the only codecs its offer holds (aiortc's names,
    e.g. ``("PCMU",)``); None offers aiortc's defaults (Opus first)."""

    def __init__(
        self, user: WebUser, hz: float = BROWSER_HZ, codecs: Sequence[str] | None = None
    ) -> None:
        self.user = user
        self.hz = hz
        self.codecs = codecs
        self.heard: list[av.AudioFrame] = []
        self.pc: RTCPeerConnection | None = None
        self.track = ToneTrack(hz)  # its ``freq`` set to 0 mutes it (digital silence)
        self._tasks: list[asyncio.Task[None]] = []

    def _new_pc(self) -> RTCPeerConnection:
        """The peer connection an offer is made on (a subclass may keep the old one)."""
        return RTCPeerConnection(RTCConfiguration(iceServers=[]))

    def offer(self, to: str, chan_id: str, address: str = "127.0.0.1") -> str:
        """Send the offer (gathered on ``address``), apply the gateway's answer; returns
        the answer's SDP."""

        async def make() -> str:
            self.pc = self._new_pc()
            self.pc.addTrack(self.track)
            if self.codecs is not None:
                for transceiver in self.pc.getTransceivers():
                    transceiver.setCodecPreferences(codec_capabilities(self.codecs))

            @self.pc.on("track")
            def _on_track(track: Any) -> None:
                self._tasks.append(asyncio.get_running_loop().create_task(self._listen(track)))

            with use_host_addresses([address]):
                await self.pc.setLocalDescription(await self.pc.createOffer())
            return str(self.pc.localDescription.sdp)

        sdp = self.user._run(make(), timeout=20)
        self.user.peer(to, Cmd="Offer", ChanId=chan_id, Sdp=sdp)
        answer = self.user.wait_peer_cmd("Answer", timeout=20)

        async def apply() -> None:
            assert self.pc is not None
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["Sdp"], type="answer")
            )

        self.user._run(apply(), timeout=20)
        return str(answer["Sdp"])

    async def _listen(self, track: Any) -> None:
        while True:
            try:
                self.heard.append(await track.recv())
            except MediaStreamError:
                return

    def connected(self) -> bool:
        return self.pc is not None and self.pc.connectionState == "connected"

    def audio(self) -> tuple[np.ndarray, int]:
        frames = list(self.heard)
        if not frames:
            return np.zeros(0), 8000
        rate = frames[0].sample_rate
        data = [f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in frames]
        return np.concatenate(data).astype(float), rate

    def close(self) -> None:
        async def close() -> None:
            if self.pc is not None:
                await self.pc.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

        self.user._run(close(), timeout=20)
