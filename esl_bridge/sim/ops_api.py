"""The api commands ``scripts/freeswitch.sh check`` asks (module_exists, global_getvar,
xml_locate dialplan, show codec, user_exists, show registrations), answered as FreeSWITCH
1.10.12 did in tests/fixtures/freeswitch/ops/esl_inbound_check_api_replies.txt.

What the simulated switch has is in ``SimConfig``: ``modules``, ``global_vars`` (plus
``esl_bridge_socket`` from ``socket_target`` and ``domain``), ``codecs`` and ``dialplan_xml``
(None: a default context whose 0 route is the one of dialplan/default/00_esl_bridge.xml).
Tests make a misconfigured switch by changing them.

Recorded: every reply text here (``show registrations``, plain and json, with one phone
registered in ops/esl_inbound_registrations.txt; the simulator's rows have the same columns
and kinds of values). ``sofia status`` is not simulated.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

if TYPE_CHECKING:
    from .server import Simulator

# `module_exists` answers true for these in the simulator by default (the recorded switch
# had all of them).
DEFAULT_MODULES = frozenset(
    {
        "mod_event_socket",
        "mod_sofia",
        "mod_commands",
        "mod_dptools",
        "mod_loopback",
        "mod_conference",
        "mod_opus",
        "mod_spandsp",
        "mod_dialplan_xml",
    }
)

# `show codec` of the recorded switch (type, name, ikey), in its order.
DEFAULT_CODECS: tuple[tuple[str, str], ...] = (
    ("ADPCM (IMA)", "mod_spandsp"),
    ("G.711 alaw", "CORE_PCM_MODULE"),
    ("G.711 ulaw", "CORE_PCM_MODULE"),
    ("G.722", "mod_spandsp"),
    ("G.726 16k", "mod_spandsp"),
    ("G.726 16k (AAL2)", "mod_spandsp"),
    ("G.726 24k", "mod_spandsp"),
    ("G.726 24k (AAL2)", "mod_spandsp"),
    ("G.726 32k", "mod_spandsp"),
    ("G.726 32k (AAL2)", "mod_spandsp"),
    ("G.726 40k", "mod_spandsp"),
    ("G.726 40k (AAL2)", "mod_spandsp"),
    ("GSM", "mod_spandsp"),
    ("LPC-10", "mod_spandsp"),
    ("OPUS (STANDARD)", "mod_opus"),
    ("PROXY PASS-THROUGH", "CORE_PCM_MODULE"),
    ("PROXY VIDEO PASS-THROUGH", "CORE_PCM_MODULE"),
    ("RAW Signed Linear (16 bit)", "CORE_PCM_MODULE"),
    ("Speex", "CORE_SPEEX_MODULE"),
)


REGISTRATION_COLUMNS = (
    "reg_user",
    "realm",
    "token",
    "url",
    "expires",
    "network_ip",
    "network_port",
    "network_proto",
    "hostname",
    "metadata",
)


def esl_bridge_extension(socket: str) -> str:
    """The 0 route as FreeSWITCH shows it once loaded ($${esl_bridge_socket} expanded)."""
    return (
        '    <extension name="esl_bridge">\n'
        '        <condition field="destination_number" expression="^0(.*)$">\n'
        '            <action application="set" '
        'data="sip_h_X-Number=&lt;sip:$1@${domain_name}&gt;"></action>\n\n'
        '            <action application="set" data="rtp_autoflush=true"></action>\n\n'
        f'            <action application="socket" data={quoteattr(socket + " async full")}>'
        "</action>\n\n"
        '            <action application="hangup" data="NORMAL_TEMPORARY_FAILURE"></action>\n\n'
        "    </condition>\n\n"
        "  </extension>\n\n"
    )


def default_dialplan(socket: str) -> str:
    """A default context: the vanilla operator route before the 0 route, the directory
    users' route after it (as in the recorded switch, where the 0 route is included from
    conf/dialplan/default/)."""
    return (
        '<context name="default">\n\n'
        '    <extension name="operator">\n'
        '      <condition field="destination_number" expression="^(operator|0)$">\n'
        '        <action application="transfer" data="1000 XML default"></action>\n\n'
        "      </condition>\n\n"
        "    </extension>\n\n"
        + esl_bridge_extension(socket)
        + '    <extension name="Local_Extension">\n'
        '      <condition field="destination_number" expression="^(10[01][0-9])$">\n'
        '        <action application="bridge" data="user/${dialed_extension}@${domain_name}">'
        "</action>\n\n"
        "      </condition>\n\n"
        "    </extension>\n\n"
        "  </context>\n"
    )


def global_var(sim: Simulator, name: str) -> str | None:
    config = sim.config
    if name in config.global_vars:
        return config.global_vars[name]
    if name == "esl_bridge_socket" and config.socket_target is not None:
        host, port = config.socket_target
        return f"{host}:{port}"
    if name == "domain":
        return config.domain
    return None


async def api_module_exists(sim: Simulator, arg: str) -> str:
    # Recorded: "true" / "false", no newline.
    return "true" if arg.strip() in sim.config.modules else "false"


async def api_global_getvar(sim: Simulator, arg: str) -> str:
    value = global_var(sim, arg.strip())
    # Recorded: the bare value, no newline; "-ERR no reply\n" for an unset variable.
    return "-ERR no reply\n" if value is None else value


async def api_xml_locate(sim: Simulator, arg: str) -> str:
    words = arg.split()
    if words[:4] == ["dialplan", "context", "name", "default"] and len(words) == 4:
        xml = sim.config.dialplan_xml
        if xml is None:
            xml = default_dialplan(global_var(sim, "esl_bridge_socket") or "")
        return xml
    # Recorded for a context that does not exist; any other section is not simulated.
    return "can't find anything\n"


async def api_user_exists(sim: Simulator, arg: str) -> str:
    words = arg.split()
    if len(words) != 3 or words[0] != "id":
        return "false"
    user, domain = words[1], words[2]
    return "true" if domain == sim.domain and user in sim.config.extensions else "false"


def show_codec(sim: Simulator) -> str:
    lines = ["type,name,ikey", *(f"codec,{n},{m}" for n, m in sim.config.codecs)]
    return "\n".join(lines) + f"\n\n{len(sim.config.codecs)} total.\n"


def _registrations(sim: Simulator) -> list[dict[str, str]]:
    """One row per registered extension, with the columns and kind of values recorded in
    ops/esl_inbound_registrations.txt (``expires`` is an epoch, ``url`` the contact)."""
    expires = str(int(time.time()) + 3600)
    return [
        {
            "reg_user": user,
            "realm": sim.domain,
            "token": f"{int(user):016x}",
            "url": f"sofia/internal/sip:{user}@127.0.0.1:5071",
            "expires": expires,
            "network_ip": "127.0.0.1",
            "network_port": "5071",
            "network_proto": "udp",
            "hostname": sim.hostname,
            "metadata": "",
        }
        for user, ext in sorted(sim.config.extensions.items())
        if ext.behaviour != "not_registered" and user.isdigit()
    ]


def show_registrations_json(sim: Simulator) -> str:
    rows = _registrations(sim)
    if not rows:
        return '{"row_count": 0}\n'  # recorded: as show channels, with a space and a newline
    return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))


def show_registrations(sim: Simulator) -> str:
    rows = _registrations(sim)
    if not rows:
        return "\n0 total.\n"
    lines = [",".join(REGISTRATION_COLUMNS), *(",".join(r.values()) for r in rows)]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"
