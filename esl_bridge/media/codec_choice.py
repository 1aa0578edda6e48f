"""Which codec the browser leg should prefer: the SIP side's, when the browser can speak it.

``[media] codecs`` is the browser-side preference list. Its entry ``sip`` stands for "the
SIP side's codec, when it is one the browser leg can use": a PCMU phone then meets a PCMU
browser and the call takes the G.711 fast path (native unicast, no decode/encode in the
gateway); an Opus or G.722 phone, or a SIP side not known yet, falls through to the next
entries (Opus by default). Without ``sip`` in the list the order is fixed.

What the channel says of its codec (docs/freeswitch.rst, fact 5): before answer only
``variable_ep_codec_string`` (the codecs the SIP side offered, FreeSWITCH's order, e.g.
``CORE_PCM_MODULE.PCMU@8000h@20i@64000b,CORE_PCM_MODULE.PCMA@8000h@20i@64000b``); after
answer ``Channel-Read-Codec-Name`` (and ``variable_read_codec``) name the one in use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .unicast import channel_codec_name

__all__ = ["SIP_ENTRY", "browser_codec_order", "sip_side_codec"]

SIP_ENTRY = "sip"

# Codecs the browser leg can negotiate (aiortc's names), by upper-case FreeSWITCH name.
_BROWSER_NAMES = {"OPUS": "opus", "PCMU": "PCMU", "PCMA": "PCMA"}


def sip_side_codec(headers: Mapping[str, str]) -> str | None:
    """The SIP side's codec, upper-case (``PCMU``, ``OPUS``, ``G722``...), or None when the
    channel does not say yet: the codec in use after answer, else the first one offered."""
    in_use = channel_codec_name(headers)
    if in_use is not None:
        return in_use
    offered = headers.get("variable_ep_codec_string", "")
    first = offered.split(",", 1)[0].strip()
    if not first:
        return None
    # "CORE_PCM_MODULE.PCMU@8000h@20i@64000b" -> "PCMU"
    name = first.split("@", 1)[0].rsplit(".", 1)[-1].strip()
    return name.upper() or None


def browser_codec_order(configured: Sequence[str], sip_codec: str | None) -> tuple[str, ...]:
    """``configured`` with ``sip`` replaced by the SIP side's codec when the browser leg can
    use it (and dropped otherwise); each codec once, first place wins."""
    order: list[str] = []
    for entry in configured:
        if entry == SIP_ENTRY:
            name = _BROWSER_NAMES.get((sip_codec or "").upper())
            if name is None:
                continue
            entry = name
        if entry not in order:
            order.append(entry)
    return tuple(order)
