"""Record what operating esl-bridge needs from a real FreeSWITCH (issue 15), as the fixtures.

Same transcript format and ESL plumbing as tests/tools/record_esl.py (raw sockets and threads, no
esl_bridge code). No phone is needed: the only channel is a ``loopback/9664`` leg (the vanilla
dialplan's hold music), which answers by itself. Two scenarios, written to ``<out>/``:

* ``sendevent``: an *observer* connection subscribes with ``event plain CUSTOM
  esl_bridge::call_ended``; a *sender* connection fires ``sendevent CUSTOM`` events: the subscribed
  subclass, another subclass, one with a body, one with spaces/percent/UTF-8/colon in a value, one
  with an already URL-encoded value, one with a 2000-byte value, and one without a subclass.
* ``registrations``: ``show registrations`` (plain and json) and ``sofia status profile internal
  reg`` while one phone is registered (baresip as 1017; README.md of the fixtures).
* ``check``: the api calls of ``scripts/freeswitch.sh check`` (module_exists, global_getvar,
  xml_locate, show codec, user_exists, show registrations, sofia status) and the channel variables
  of an originated leg (originate with ``{esl_bridge_*=...}``, uuid_setvar_multi, uuid_dump,
  show channels as json, uuid_kill).
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import record_esl
from record_esl import inbound, named

UUID_V = "5e1f0000-0000-4000-8000-0000000c0001"

_BASE_DIR: list[bytes] = []
_redact_conf_dir = record_esl.redact


def _base_dir() -> bytes:
    """`global_getvar base_dir`, asked once over a connection of its own (not recorded)."""
    if not _BASE_DIR:
        with socket.create_connection(record_esl.ESL, timeout=5) as sock:
            sock.sendall(f"auth {record_esl.PASSWORD}\n\napi global_getvar base_dir\n\n".encode())
            data = b""
            head = b"Content-Type: api/response\nContent-Length: "
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("no reply to global_getvar base_dir")
                data += chunk
                _, found, rest = data.partition(head)
                size, sep, body = rest.partition(b"\n\n")
                if found and sep and len(body) >= int(size):
                    break
            _BASE_DIR.append(body[: int(size)].strip())
    return _BASE_DIR[0]


def redact(data: bytes) -> bytes:
    """As record_esl.redact, and the install prefix too (xml_locate shows paths under it)."""
    data = _redact_conf_dir(data)
    base = _base_dir()
    mark = b"/base_dir-redacted"
    return data.replace(base, (mark + b"-" * len(base))[: len(base)]) if base else data


record_esl.redact = redact


def scenario_sendevent(out: Path) -> None:
    obs = inbound(out / "esl_inbound_custom_event_observer.txt", "observer of CUSTOM events")
    obs.command("event plain CUSTOM esl_bridge::call_ended")
    s = inbound(out / "esl_inbound_sendevent.txt", "sendevent CUSTOM")
    sends = [
        (
            "subscribed subclass",
            "sendevent CUSTOM\nEvent-Subclass: esl_bridge::call_ended\n"
            "esl_bridge_call_id: call-1\nCause: NORMAL_CLEARING\nDuration: 12.5\n\n",
        ),
        (
            "another subclass (the observer did not subscribe to it)",
            "sendevent CUSTOM\nEvent-Subclass: esl_bridge::call_started\n"
            "esl_bridge_call_id: call-2\n\n",
        ),
        (
            "with a body",
            "sendevent CUSTOM\nEvent-Subclass: esl_bridge::call_ended\n"
            "esl_bridge_call_id: call-3\ncontent-length: 11\n\nhello world",
        ),
        (
            "value with spaces, percent, UTF-8 and a colon",
            "sendevent CUSTOM\nEvent-Subclass: esl_bridge::call_ended\n"
            "esl_bridge_call_id: call-4\nReason: a b%c d\u00e9: e\n\n",
        ),
        (
            "value already URL-encoded",
            "sendevent CUSTOM\nEvent-Subclass: esl_bridge::call_ended\n"
            "esl_bridge_call_id: call-5\nReason: a%20b\n\n",
        ),
        (
            "a 2000-byte value",
            "sendevent CUSTOM\nEvent-Subclass: esl_bridge::call_ended\n"
            "esl_bridge_call_id: call-6\nLong: " + "x" * 2000 + "\n\n",
        ),
        ("no subclass", "sendevent CUSTOM\nesl_bridge_call_id: call-7\n\n"),
    ]
    for label, text in sends:
        s.note(f"send: {label}")
        s.send(text)
        reply = s.reply()
        s.note(f"reply: {reply.headers}")
        time.sleep(0.3)
    time.sleep(1.0)
    obs.note(
        "observer saw: "
        + ", ".join(
            f"{e.event.get('Event-Subclass', '')}/{e.event.get('esl_bridge_call_id', '')}"
            for e in obs.events
        )
    )
    for sess in (s, obs):
        sess.command("exit")
        time.sleep(0.3)
        sess.close()


def scenario_check(out: Path) -> None:
    s = inbound(out / "esl_inbound_check_api_replies.txt", "api replies of freeswitch.sh check")
    for mod in ("mod_event_socket", "mod_sofia", "mod_commands", "mod_dptools", "mod_loopback"):
        s.api(f"module_exists {mod}")
    s.api("module_exists mod_conference")
    s.api("module_exists mod_nosuch")
    s.api("global_getvar esl_bridge_socket")
    s.api("global_getvar esl_bridge_nosuch")
    s.api("global_getvar domain")
    s.api("xml_locate dialplan context name default")
    s.api("xml_locate dialplan context name nosuch")
    s.api("show codec")
    s.api("user_exists id 1000 127.0.0.1")
    s.api("user_exists id 1999 127.0.0.1")
    s.api("show registrations as json")
    s.api("sofia status profile internal reg")
    s.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    variables = (
        f"origination_uuid={UUID_V},esl_bridge_call_id=call-v1,esl_bridge_direction=rtc2sip,"
        "esl_bridge_uid=alice,esl_bridge_appid=app1,esl_bridge_number=1000"
    )
    s.api(f"originate {{{variables}}}loopback/9664/default &park()")
    s.api(f"uuid_setvar_multi {UUID_V} esl_bridge_uid=bob;esl_bridge_number=1001")
    s.api(f"uuid_getvar {UUID_V} esl_bridge_uid")
    s.api(f"uuid_dump {UUID_V}")
    s.api(f"uuid_dump {UUID_V} json")
    for _ in range(20):  # the channel list lags the channels (see the fixtures' README)
        if UUID_V in s.api("show channels as json"):
            break
        time.sleep(0.25)
    s.api(f"uuid_kill {UUID_V}")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_V), 10)
    s.command("exit")
    time.sleep(0.3)
    s.close()


def scenario_registrations(out: Path) -> None:
    """With one phone registered (baresip as user 1017 on 127.0.0.1:5097, regint=60)."""
    s = inbound(out / "esl_inbound_registrations.txt", "registrations with one phone")
    s.api("show registrations")
    s.api("show registrations as json")
    s.api("sofia status profile internal reg")
    s.api("user_exists id 1017 127.0.0.1")
    s.command("exit")
    time.sleep(0.3)
    s.close()


SCENARIOS = {
    "sendevent": scenario_sendevent,
    "check": scenario_check,
    "registrations": scenario_registrations,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--out", type=Path, default=Path("ops_recordings"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    SCENARIOS[args.scenario](args.out)


if __name__ == "__main__":
    main()
