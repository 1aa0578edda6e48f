"""What operators see, against a real FreeSWITCH 1.10 (issue 15).

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set; the switch is set up as
tests/test_freeswitch_calls.py says (vanilla configuration, ``dialplan/`` installed with
``esl_bridge_socket`` = ``ESL_BRIDGE_FREESWITCH_SOCKET``, default 127.0.0.1:8084, directory
users 1000-1019). No phone is needed: the SIP -> web leg is ``originate loopback/0<uid>``
through the 0 route, and the originated leg of the variables test is ``loopback/9664`` (the
vanilla hold music, which answers by itself).

* the channel variables, read back with ``uuid_dump``: on the socket leg the gateway was
  handed, and on a leg originated with exactly the variables the gateway puts in its
  originate;
* the CUSTOM events, seen by a second ESL connection subscribed to them;
* ``scripts/freeswitch.sh check``: all OK for this switch, FAIL for a wrong [socket].
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from uuid import uuid4

import gevent
import pytest
from support.gateway_support import APPID, WebUser, wait_until
from support.sim_wire import Conn, Event, auth
from test_freeswitch_calls import (
    assert_switch_clean,
    channels_of,
    gateway_on_freeswitch,
    ring_through_zero_route,
)

from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.esl import commands as cmd
from esl_bridge.esl.control import InboundClient
from esl_bridge.gateway.ops_events import OpsEventSender
from esl_bridge.numbers import NumberPool

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_SOCKET = os.environ.get("ESL_BRIDGE_FREESWITCH_SOCKET", "127.0.0.1:8084")
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "freeswitch.sh"
NAMES = ("call_id", "direction", "uid", "appid", "number")

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]


def target() -> tuple[str, int, str]:
    host, port, password = _TARGET.split(":", 2)
    return host, int(port), password


def client() -> InboundClient:
    host, port, password = target()
    c = InboundClient(host, port, password, events=["BACKGROUND_JOB", "CHANNEL_HANGUP_COMPLETE"])
    c.connect(timeout=10)
    return c


def observer(*subclasses: str) -> Conn:
    host, port, password = target()
    conn = auth(port, password) if host == "127.0.0.1" else None
    assert conn is not None, "the observer connects to 127.0.0.1 only (loopback rule)"
    reply = conn.command("event plain CUSTOM " + " ".join(subclasses))
    assert reply.get("Reply-Text") == "+OK event listener enabled plain"
    return conn


def read_custom(conn: Conn, timeout: float = 15.0) -> Event:
    """The next CUSTOM event, read in a thread so the gevent hub (ESL, gateway) runs on."""
    result: list[Event] = []
    gevent.get_hub().threadpool.spawn(
        lambda: result.append(conn.read_event("CUSTOM", timeout=timeout))
    ).get(timeout=timeout + 1)
    return result[0]


def dumped_vars(c: InboundClient, uuid: str) -> dict[str, str]:
    """The esl_bridge_* variables in ``uuid_dump <uuid>`` (plain format, URL-encoded)."""
    from urllib.parse import unquote

    body = c.api("uuid_dump", uuid).body
    out = {}
    for line in body.splitlines():
        key, _, value = line.partition(": ")
        if key.startswith("variable_esl_bridge_"):
            out[key.removeprefix("variable_esl_bridge_")] = unquote(value)
    return out


def test_custom_events_reach_a_second_connection_exactly() -> None:
    watcher = observer("esl_bridge::call_ended")
    c = client()
    sender = OpsEventSender(c, common={"node": "fs-test"})
    sender.start()
    try:
        sender.emit("call_started", {"call_id": "not-subscribed"})
        reason = "100% done: caf\u00e9 ;x=1 {a}"
        sender.emit("call_ended", {"call_id": "fs-ops-1", "reason": reason, "duration": 1.25})
        event = read_custom(watcher)
        assert event.get("Event-Subclass") == "esl_bridge::call_ended"
        assert event.get("esl_bridge_call_id") == "fs-ops-1"
        assert event.get("esl_bridge_reason") == reason
        assert (event.get("esl_bridge_duration"), event.get("esl_bridge_node")) == (
            "1.25",
            "fs-test",
        )
    finally:
        sender.stop()
        c.stop()
        watcher.close()
    assert sender.stats()["sent"] == {"call_started": 1, "call_ended": 1}


def test_an_originated_leg_carries_the_gateways_variables_in_uuid_dump() -> None:
    """The originate argument the gateway builds for an RTC -> SIP call, on a loopback leg."""
    book = CallBook(
        BookSettings(
            rtm2sip_on=True, proxy_on=True, sip_domain="127.0.0.1", gateway_uid="gw", appid="ops"
        ),
        NumberPool.from_rule("1000"),
    )
    [originate] = book.invitation_to_number("alice", "1000", '{"ChanId":"ch-fs"}', 0.0)
    uuid = str(uuid4())
    variables = {**originate.variables, "origination_uuid": uuid}  # type: ignore[attr-defined]
    c = client()
    try:
        arg = cmd.originate_arg("loopback/9664/default", cmd.park_app(), variables)
        assert c.api("originate", arg, timeout=20).body.startswith("+OK")
        got = dumped_vars(c, uuid)
        assert {k: got.get(k) for k in NAMES} == {
            "call_id": originate.call_id,
            "direction": "rtc2sip",
            "uid": "alice",
            "appid": "ops",
            "number": "1000",
        }
    finally:
        c.api("uuid_kill", uuid)
        c.stop()


def test_the_socket_leg_gets_the_variables_and_the_call_fires_its_events() -> None:
    watcher = observer("esl_bridge::call_started", "esl_bridge::call_ended")
    with gateway_on_freeswitch() as gateway:
        bob = WebUser(gateway, "bob").connect()
        a_leg = ring_through_zero_route(gateway, bob)
        invitation = bob.wait(lambda m: m.get("type") == "invitation", timeout=15)
        [uuid] = channels_of(gateway)
        c = client()
        try:
            wait_until(
                lambda: dumped_vars(c, uuid).get("direction") == "sip2rtc",
                10,
                "the variables on the socket leg",
            )
            got = dumped_vars(c, uuid)
        finally:
            c.stop()
        assert (got["uid"], got["number"], got["appid"]) == ("bob", "1005", APPID)
        started = read_custom(watcher)
        assert started.get("Event-Subclass") == "esl_bridge::call_started"
        assert started.get("esl_bridge_call_id") == got["call_id"]
        assert started.get("esl_bridge_uuid") == uuid
        bob.request(
            {"type": "refuse", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})}
        )
        ended = read_custom(watcher)
        assert ended.get("Event-Subclass") == "esl_bridge::call_ended"
        assert ended.get("esl_bridge_call_id") == got["call_id"]
        assert (ended.get("esl_bridge_reason"), ended.get("esl_bridge_cause")) == (
            "refused",
            "CALL_REJECTED",
        )
        assert_switch_clean(gateway, extra=(a_leg,))
        bob.close()
    watcher.close()


def run_check(tmp_path: Path, socket: str) -> subprocess.CompletedProcess[str]:
    host, port, password = target()
    socket_host, socket_port = socket.rsplit(":", 1)
    conf = tmp_path / "rtx.conf"
    conf.write_text(
        f"[rtm2sip]\non = 1\nacc_rule = 10[00-03]\n[esl]\nhost = {host}\nport = {port}\n"
        f"password = {password}\n[socket]\nhost = {socket_host}\nport = {socket_port}\n"
        "[auth]\nopen_mode = 1\n",
        encoding="utf-8",
    )
    return subprocess.run(
        [str(SCRIPT), "check", "--conf", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_passes_on_this_switch_and_names_a_wrong_socket(tmp_path: Path) -> None:
    good = run_check(tmp_path, _SOCKET)
    assert good.returncode == 0, good.stdout + good.stderr
    assert all(line.startswith("OK") for line in good.stdout.splitlines()), good.stdout
    assert "OK   0 route: 0<uid> goes first to extension 'esl_bridge'" in good.stdout
    host, port = _SOCKET.rsplit(":", 1)
    wrong = run_check(tmp_path, f"{host}:{int(port) + 1}")
    assert wrong.returncode == 1
    [fail] = [line for line in wrong.stdout.splitlines() if line.startswith("FAIL")]
    assert fail.startswith(f"FAIL esl_bridge_socket: {_SOCKET}, [socket] of rtx.conf is")
    assert "0 route" not in fail
