"""A gateway killed with SIGKILL on a real FreeSWITCH 1.10: the switch ends its calls (issue 17).

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set. The switch set-up and the
phone are those of tests/test_freeswitch_calls.py (its docstring): the ``0`` route's socket
points at ``ESL_BRIDGE_FREESWITCH_SOCKET`` (default 127.0.0.1:8084), and
``ESL_BRIDGE_FREESWITCH_USER`` (default 1001) is a registered phone that answers by itself.

Here the gateway is a child process (``python -m esl_bridge run rtx.conf``, with
``[esl] orphan_timeout = 3``) so that it can really be killed with SIGKILL. Web users speak
to it over its WebSocket; a separate ESL connection watches the switch. Without the
watchdog both calls would stay on the switch for good (tests/fixtures/freeswitch/orphans:
a parked answered leg, and a SIP caller in the endless ringback). The tests wait for the
switch's CHANNEL_HANGUP_COMPLETE, never for the clock.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_support import APPID, WebUser, wait_until
from sim_wire import Conn, Event

from esl_bridge.gateway.demo import free_port
from esl_bridge.loops import Loops

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_SOCKET = os.environ.get("ESL_BRIDGE_FREESWITCH_SOCKET", "127.0.0.1:8084")
_PHONE = os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")
ROOT = Path(__file__).resolve().parent.parent
ORPHAN_TIMEOUT = 3
# The watchdog's task fires within orphan_timeout of the gateway's death; the rest is margin
# for a busy machine (this bounds a wait, nothing is asserted about the time).
ENDED_WITHIN = ORPHAN_TIMEOUT + 20

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(120),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]

ACCEPTED = 3


class RemoteGateway:
    """What WebUser needs of a gateway, for one that runs in another process."""

    def __init__(self, web_port: int) -> None:
        self.loops = Loops("test-web-users").start()
        self.web_address = ("127.0.0.1", web_port)


def status(web_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/status.json", timeout=2) as reply:
        data: dict[str, Any] = json.load(reply)
    return data


def esl_connected(web_port: int) -> bool:
    try:
        return status(web_port).get("esl") == "connected"
    except OSError:
        return False


@contextlib.contextmanager
def gateway_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], RemoteGateway]]:
    host, port, password = _TARGET.split(":", 2)
    socket_host, socket_port = _SOCKET.rsplit(":", 1)
    web_port = free_port()
    conf = tmp_path / "rtx.conf"
    conf.write_text(
        f"""
[global]
appid = {APPID}
sip_svr = {host}:5060
[rtm2sip]
on = 1
acc_rule = {_PHONE}
[proxy]
on = 1
rtm_account = gateway
[esl]
host = {host}
port = {port}
password = {password}
orphan_timeout = {ORPHAN_TIMEOUT}
[socket]
host = {socket_host}
port = {socket_port}
[web]
host = 127.0.0.1
port = {web_port}
[auth]
open_mode = 1
[limits]
originate_timeout = 20
presence_grace = 1
""",
        encoding="utf-8",
    )
    with (tmp_path / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "esl_bridge", "run", str(conf)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        remote = RemoteGateway(web_port)
        try:
            wait_until(lambda: esl_connected(web_port), 30, "the gateway's ESL connected")
            yield proc, remote
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)
            remote.loops.stop()


def kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def observer(events: str) -> Conn:
    host, port, password = _TARGET.split(":", 2)
    c = Conn.connect(int(port), host)
    assert c.read_frame().content_type == "auth/request"
    assert c.command(f"auth {password}").get("Reply-Text") == "+OK accepted"
    c.command(f"event plain {events}")
    return c


def tagged_event(c: Conn, names: set[str], timeout: float) -> Event:
    """The first of `names` on a channel that carries the gateway's instance variable."""
    while True:
        ev = c.read_event(None, timeout)
        if ev.name in names and ev.get("variable_esl_bridge_instance"):
            return ev


def ended(c: Conn, uuid: str) -> tuple[Event, list[Event]]:
    """Wait for the channel's CHANNEL_HANGUP_COMPLETE; also returns its events until then."""
    seen = []
    while True:
        ev = c.read_event(None, ENDED_WITHIN)
        if ev.get("Unique-ID") == uuid:
            seen.append(ev)
            if ev.name == "CHANNEL_HANGUP_COMPLETE":
                return ev, seen


def cleanup(c: Conn, uuid: str) -> None:
    with contextlib.suppress(Exception):
        c.command(f"api uuid_kill {uuid}")


def test_answered_call_of_a_killed_gateway_is_ended_by_the_switch(tmp_path: Path) -> None:
    """Web user -> phone, answered (the leg is parked with unicast); kill -9; the switch's
    scheduler ends the leg with NORMAL_TEMPORARY_FAILURE."""
    watch = observer("CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    uuid = ""
    try:
        with gateway_process(tmp_path) as (proc, remote):
            alice = WebUser(remote, "alice").connect()  # type: ignore[arg-type]
            alice.invite(_PHONE, "orphan-1")
            alice.wait_local_state(ACCEPTED, timeout=30)
            answer = tagged_event(watch, {"CHANNEL_ANSWER"}, 30)
            uuid = answer.get("Unique-ID") or ""
            kill9(proc)
            done, _events = ended(watch, uuid)
            assert done.get("Hangup-Cause") == "NORMAL_TEMPORARY_FAILURE"
            assert watch.command(f"api uuid_exists {uuid}").body == b"false"
    finally:
        if uuid:
            cleanup(watch, uuid)
        watch.close()


def test_sip_caller_in_the_ringback_of_a_killed_gateway_is_ended_by_the_switch(
    tmp_path: Path,
) -> None:
    """SIP -> web user who does not answer: the gateway pre-answers and plays the endless
    ringback inside the socket application; kill -9. The socket's end cannot stop the
    ringback (recorded), so only the watchdog ends the call: no `hangup` application runs,
    the cause is NORMAL_TEMPORARY_FAILURE."""
    watch = observer(
        "CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE"
    )
    uuid = ""
    try:
        with gateway_process(tmp_path) as (proc, remote):
            bob = WebUser(remote, "bob").connect()  # type: ignore[arg-type]
            watch.command(
                "bgapi originate {origination_caller_id_number=1005}loopback/0bob/default &park()"
            )
            bob.wait(lambda m: m.get("type") == "invitation", timeout=15)
            ringback = tagged_event(watch, {"CHANNEL_EXECUTE"}, 15)
            while ringback.get("Application") != "playback":
                ringback = tagged_event(watch, {"CHANNEL_EXECUTE"}, 15)
            uuid = ringback.get("Unique-ID") or ""
            kill9(proc)
            done, events = ended(watch, uuid)
            assert done.get("Hangup-Cause") == "NORMAL_TEMPORARY_FAILURE"
            apps = [e.get("Application") for e in events if e.name == "CHANNEL_EXECUTE"]
            assert "hangup" not in apps  # the dialplan's hangup did not end it
            assert watch.command(f"api uuid_exists {uuid}").body == b"false"
    finally:
        if uuid:
            cleanup(watch, uuid)
        watch.close()
