"""The browser leg's codec order: the SIP side's codec first when ``sip`` is configured."""

from __future__ import annotations

import asyncio

import pytest
from support.esl_transcripts import load_summary
from support.netns import loopback_only

from esl_bridge import config
from esl_bridge.media.codec_choice import browser_codec_order, sip_side_codec


def test_default_config_puts_the_sip_codec_first() -> None:
    assert config.defaults().media.codecs[0] == "sip"


@pytest.mark.parametrize(
    ("sip", "expected"),
    [
        ("PCMU", ("PCMU", "opus", "PCMA")),
        ("PCMA", ("PCMA", "opus", "PCMU")),
        ("OPUS", ("opus", "PCMU", "PCMA")),
        # G.722 and unknown: the browser leg cannot do it; the configured order stands
        ("G722", ("opus", "PCMU", "PCMA")),
        (None, ("opus", "PCMU", "PCMA")),
    ],
)
def test_sip_entry_stands_for_the_sip_sides_codec(sip: str | None, expected: tuple) -> None:
    assert browser_codec_order(("sip", "opus", "PCMU", "PCMA"), sip) == expected


def test_without_sip_entry_the_order_is_fixed() -> None:
    assert browser_codec_order(("opus", "PCMU"), "PCMU") == ("opus", "PCMU")


def test_sip_codec_outside_the_configured_list_is_still_preferred() -> None:
    # 'sip' means "what the phone speaks, when the browser can": PCMA need not be listed
    assert browser_codec_order(("sip", "opus"), "PCMA") == ("PCMA", "opus")


def test_codec_in_use_after_answer_wins_over_the_offer() -> None:
    headers = {
        "Channel-Read-Codec-Name": "PCMA",
        "variable_ep_codec_string": "CORE_PCM_MODULE.PCMU@8000h@20i@64000b",
    }
    assert sip_side_codec(headers) == "PCMA"


def test_before_answer_the_first_offered_codec_counts() -> None:
    headers = {
        "variable_ep_codec_string": (
            "mod_opus.opus@48000h@20i@2c,CORE_PCM_MODULE.PCMU@8000h@20i@64000b"
        )
    }
    assert sip_side_codec(headers) == "OPUS"


def test_no_codec_known() -> None:
    assert sip_side_codec({}) is None
    assert sip_side_codec({"variable_ep_codec_string": ""}) is None


def test_recorded_connect_reply_names_the_phones_pcmu() -> None:
    """A real FreeSWITCH's connect reply (before answer) offers the PCMU phone's codec."""
    reply = load_summary("esl_outbound_main_call")["connect_reply"]
    assert "Channel-Read-Codec-Name" not in reply
    assert sip_side_codec(reply) == "PCMU"


async def negotiated(sip_codec: str | None) -> str | None:
    """The codec a leg configured with the default order answers a browser's offer with."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from esl_bridge.media.leg import LegConfig, MediaLeg, use_host_addresses
    from esl_bridge.media.unicast import PortAllocator

    browser = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    browser.addTransceiver("audio", direction="sendrecv")  # offers opus, PCMU, PCMA
    leg = MediaLeg(LegConfig(codecs=config.defaults().media.codecs), PortAllocator(41200, 41209))
    try:
        with use_host_addresses(["127.0.0.1"]):
            await browser.setLocalDescription(await browser.createOffer())
        answer = await leg.handle_offer(browser.localDescription.sdp, sip_codec)
        await browser.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        return leg.codec
    finally:
        await leg.close()
        await browser.close()


@loopback_only
def test_a_pcmu_phone_gets_a_pcmu_browser_leg_and_an_opus_phone_opus() -> None:
    assert asyncio.run(negotiated("PCMU")) == "pcmu"
    assert asyncio.run(negotiated("PCMA")) == "pcma"
    assert asyncio.run(negotiated("OPUS")) == "opus"
    assert asyncio.run(negotiated(None)) == "opus"
