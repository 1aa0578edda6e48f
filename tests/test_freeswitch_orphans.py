"""A gateway killed with SIGKILL leaves nothing on a real FreeSWITCH 1.10 (esl/orphans.py).

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set; the same set-up as
tests/test_freeswitch_calls.py (vanilla configuration plus ``dialplan/``, whose
``esl_bridge_socket`` points at ``ESL_BRIDGE_FREESWITCH_SOCKET``, default 127.0.0.1:8084;
``ESL_BRIDGE_FREESWITCH_USER``, default 1001, a registered phone that answers by itself).
The SIP -> web calls need no phone: ``originate loopback/0bob`` runs the dialplan's ``0``
route. Each test runs the gateway as a subprocess, puts a call in a state, kills the
gateway, and waits for the switch to have no channel of that gateway left (its
CHANNEL_HANGUP_COMPLETE seen by a separate ESL connection, then ``uuid_exists``), within
``orphan_timeout`` plus the scheduler's second and room for a busy machine. Without the
watchdog the ringing and parked ones would stay for good (tests/fixtures/freeswitch/orphans).
"""

from __future__ import annotations

import json
import os
import uuid as uuidlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gevent
import pytest
from support.gateway_process import GatewayProcess
from support.gateway_support import wait_until
from support.sim_wire import Conn, Event

from esl_bridge.core.invitations import LocalState
from esl_bridge.esl import orphans
from esl_bridge.esl.control import InboundClient
from esl_bridge.loops import Loops

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_SOCKET = os.environ.get("ESL_BRIDGE_FREESWITCH_SOCKET", "127.0.0.1:8084")
_PHONE = os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]

_ORPHAN_TIMEOUT = 5
_BOUND = _ORPHAN_TIMEOUT + 1 + 15


@contextmanager
def _switch() -> Iterator[InboundClient]:
    host, port, password = _TARGET.split(":", 2)
    client = InboundClient(host, int(port), password, command_timeout=5)
    client.connect()
    try:
        yield client
    finally:
        client.stop()


def _gateway(tmp: Path, node_id: str, orphan_timeout: float) -> GatewayProcess:
    host, port, password = _TARGET.split(":", 2)
    socket_host, socket_port = _SOCKET.rsplit(":", 1)
    return GatewayProcess(
        tmp,
        esl=(host, int(port), password),
        socket=(socket_host, int(socket_port)),
        orphan_timeout=orphan_timeout,
        acc_rule=_PHONE,
        sip_svr=f"{host}:5060",
        node_id=node_id,
    )


def _channels_of(switch: InboundClient, node_id: str) -> list[str]:
    """The uuids of the live channels carrying ``esl_bridge_node=node_id``."""
    listing = switch.api("show", "channels as json").body
    found = []
    for uuid in orphans.channel_uuids(listing):
        value = orphans.getvar_value(switch.api("uuid_getvar", uuid, orphans.NODE_VAR).body)
        if value == node_id:
            found.append(uuid)
    return found


def _exists(switch: InboundClient, uuid: str) -> bool:
    return switch.api("uuid_exists", uuid).text == "true"


def _observer() -> Conn:
    """A raw ESL connection that sees the channels' events (hangup cause, applications)."""
    host, port, password = _TARGET.split(":", 2)
    c = Conn.connect(int(port), host)
    assert c.read_frame().content_type == "auth/request"
    assert c.command(f"auth {password}").get("Reply-Text") == "+OK accepted"
    c.command("event plain CHANNEL_EXECUTE CHANNEL_HANGUP_COMPLETE")
    return c


def _ended(watch: Conn, uuids: list[str]) -> dict[str, tuple[str, list[str]]]:
    """uuid -> (hangup cause, applications executed meanwhile), once each has ended."""
    apps: dict[str, list[str]] = {u: [] for u in uuids}
    causes: dict[str, str] = {}
    while len(causes) < len(uuids):
        event: Event = watch.read_event(None, _BOUND)
        uuid = event.get("Unique-ID") or ""
        if uuid not in apps:
            continue
        if event.name == "CHANNEL_EXECUTE":
            apps[uuid].append(event.get("Application") or "")
        elif event.name == "CHANNEL_HANGUP_COMPLETE":
            causes[uuid] = event.get("Hangup-Cause") or ""
    return {u: (causes[u], apps[u]) for u in uuids}


def _current_app(switch: InboundClient, uuid: str) -> str | None:
    """The application the channel runs now (FreeSWITCH's ``current_application``)."""
    return orphans.getvar_value(switch.api("uuid_getvar", uuid, "current_application").body)


def _loopback_call_to(switch: InboundClient, uid: str) -> str:
    """A SIP -> web call through the dialplan; returns the uuid of the caller's leg."""
    a_leg = str(uuidlib.uuid4())
    arg = f"{{origination_uuid={a_leg},origination_caller_id_number=1001}}loopback/0{uid} &park()"
    gevent.spawn(switch.bgapi, "originate", arg, timeout=120)
    return a_leg


@pytest.mark.parametrize("state", ["sip_to_web_ringing", "sip_to_web_answered", "web_to_sip"])
def test_a_killed_gateway_leaves_no_channel_on_the_switch(state: str, tmp_path: Path) -> None:
    node_id = f"fs-test-{state.replace('_', '-')}"
    loops = Loops().start()
    with _switch() as switch:
        gateway = _gateway(tmp_path, node_id, _ORPHAN_TIMEOUT)
        extra: list[str] = []
        try:
            if state.startswith("sip_to_web"):
                bob = gateway.web_user(loops, "bob")
                extra.append(_loopback_call_to(switch, "bob"))
                invitation = bob.wait(lambda m: m.get("type") == "invitation", 15)
                if state == "sip_to_web_answered":
                    bob.request({"type": "ack", "inv": invitation["inv"]})
                    bob.request(
                        {
                            "type": "accept",
                            "inv": invitation["inv"],
                            "response": json.dumps({"Mode": 1}),
                        }
                    )
            else:
                alice = gateway.web_user(loops, "alice")
                alice.invite(_PHONE, "fs-orphan-1")
                alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=30)
            wait_until(lambda: bool(_channels_of(switch, node_id)), 15, "the gateway's channel")
            mine = _channels_of(switch, node_id)
            if state == "sip_to_web_ringing":
                # The check below is about the endless ringback: kill the gateway only once
                # it plays (its playback may still be on its way when the channel shows up;
                # killed before, the socket app returns and the dialplan hangs up).
                wait_until(
                    lambda: all(_current_app(switch, u) == "playback" for u in mine),
                    15,
                    "the ringback playing",
                )
            watch = _observer()
            try:
                gateway.kill()
                ended = _ended(watch, mine)
            finally:
                watch.close()
            for uuid, (cause, apps) in ended.items():
                # The watchdog's cause; for the answered SIP caller, the dialplan's hangup
                # after the socket app returned (recorded), with the same cause.
                assert cause == "NORMAL_TEMPORARY_FAILURE", (uuid, cause, apps)
                if state == "sip_to_web_ringing":
                    assert "hangup" not in apps  # the endless ringback: only the watchdog
            wait_until(
                lambda: not any(_exists(switch, u) for u in mine + extra),
                _BOUND,
                f"no channel of the killed gateway ({state}) left on the switch",
            )
        finally:
            gateway.stop()
            for uuid in extra:
                switch.api("uuid_kill", uuid)
            loops.stop()


def test_a_restarted_gateway_ends_its_predecessors_channels(tmp_path: Path) -> None:
    node_id = "fs-test-restart"
    loops = Loops().start()
    with _switch() as switch:
        first = _gateway(tmp_path, node_id, 3600)
        try:
            alice = first.web_user(loops, "alice")
            alice.invite(_PHONE, "fs-orphan-2")
            alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=30)
            wait_until(lambda: bool(_channels_of(switch, node_id)), 15, "the gateway's channel")
            leftovers = _channels_of(switch, node_id)
            first.kill()
        finally:
            first.stop()
        assert all(_exists(switch, u) for u in leftovers), "the switch keeps them (no watchdog)"
        second = _gateway(tmp_path, node_id, 3600)
        try:
            [done] = second.log_events("esl.orphans.cleanup_done")
            assert done["ended"] == len(leftovers), done
            wait_until(
                lambda: not any(_exists(switch, u) for u in leftovers),
                15,
                "the predecessor's channels ended",
            )
        finally:
            second.stop()
            loops.stop()
