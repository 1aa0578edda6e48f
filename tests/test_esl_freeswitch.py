"""The same client code against a real FreeSWITCH 1.10 (vanilla config + dialplan/).

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set. Optional:
``ESL_BRIDGE_FREESWITCH_SOCKET=host:port`` where the dialplan's ``socket`` application
connects (``$${esl_bridge_socket}``, default 127.0.0.1:8084; the test listens there) and
``ESL_BRIDGE_FREESWITCH_USER=N`` a registered directory user that answers.
Written against the recorded facts (docs/freeswitch.rst, tests/fixtures/freeswitch).
"""

from __future__ import annotations

import contextlib
import os
import socket as stdsocket
from collections.abc import Iterator

import gevent
import gevent.event
import gevent.socket
import pytest
from support.ports_and_waits import free_udp_port as _free_udp_port
from support.ports_and_waits import gevent_wait as _wait_until

from esl_bridge.esl import commands as cmd
from esl_bridge.esl.control import InboundClient, OutboundServer, OutboundSession
from esl_bridge.esl.protocol import Event

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]


def _target() -> tuple[str, int, str]:
    host, port, password = _TARGET.split(":", 2)
    return host, int(port), password


@pytest.fixture
def events() -> list[Event]:
    return []


@pytest.fixture
def client(events: list[Event]) -> Iterator[InboundClient]:
    host, port, password = _target()
    esl = InboundClient(host, port, password, command_timeout=10, on_event=events.append)
    esl.connect(10)
    yield esl
    for uuid in list(esl.live_calls):
        with contextlib.suppress(Exception):
            esl.uuid_kill(uuid)
    esl.stop()


def test_status(client: InboundClient) -> None:
    status = client.api("status")
    assert status.ok and "is ready" in status.body
    unknown = client.api("nosuchcommand", "foo")
    assert unknown.text == "-ERR nosuchcommand Command not found!"


def test_originate_errors(client: InboundClient) -> None:
    # Fact 7/8: 1019 exists in the vanilla directory and is not registered; 1099 does not.
    result = client.originate(cmd.originate_arg("user/1019", cmd.park_app()), timeout=30)
    assert not result.ok and result.cause == "USER_NOT_REGISTERED"
    result = client.originate(cmd.originate_arg("user/1099", cmd.park_app()), timeout=30)
    assert not result.ok and result.cause == "SUBSCRIBER_ABSENT"


def test_loopback_park_events_and_unicast(client: InboundClient, events: list[Event]) -> None:
    udp = gevent.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        arg = cmd.originate_arg(
            cmd.loopback_endpoint("9196"),  # vanilla: echo test, answers at once
            cmd.park_app(),
            {"origination_caller_id_number": "1005", "sip_h_X-ArInfo": "a, b 'c'"},
        )
        result = client.originate(arg, timeout=30)
        assert result.ok and result.uuid
        assert _wait_until(
            lambda: any(e.name == "CHANNEL_ANSWER" and e.uuid == result.uuid for e in events)
        )
        fs_port = _free_udp_port()
        client.unicast(result.uuid, "127.0.0.1", fs_port, "127.0.0.1", udp.getsockname()[1])
        with gevent.Timeout(10):
            data, source = udp.recvfrom(8192)
        assert len(data) % 320 == 0 and source[1] == fs_port
        assert client.uuid_send_dtmf(result.uuid, "12").ok
        assert client.uuid_kill(result.uuid).ok
        assert _wait_until(
            lambda: any(
                e.name == "CHANNEL_HANGUP_COMPLETE" and e.uuid == result.uuid for e in events
            )
        )
        assert _wait_until(lambda: result.uuid not in client.live_calls)
    finally:
        udp.close()


@pytest.mark.skipif(
    not os.environ.get("ESL_BRIDGE_FREESWITCH_USER"), reason="no registered user given"
)
def test_originate_registered_user(client: InboundClient) -> None:
    user = os.environ["ESL_BRIDGE_FREESWITCH_USER"]
    arg = cmd.originate_arg(
        cmd.user_endpoint(user), cmd.park_app(), {"origination_caller_id_number": "1005"}
    )
    result = client.originate(arg, timeout=60)
    assert result.ok and result.uuid
    client.uuid_kill(result.uuid)


def test_outbound_socket_call_through_dialplan_route(client: InboundClient) -> None:
    host, port = os.environ.get("ESL_BRIDGE_FREESWITCH_SOCKET", "127.0.0.1:8084").rsplit(":", 1)
    seen = gevent.event.AsyncResult()

    def handler(session: OutboundSession) -> None:
        record = session.channel
        udp = gevent.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        try:
            session.set_var("rtp_autoflush", "true")
            session.answer()
            session.start_unicast("127.0.0.1", _free_udp_port(), "127.0.0.1", udp.getsockname()[1])
            with gevent.Timeout(10):
                data, _ = udp.recvfrom(8192)
            session.hangup("NORMAL_CLEARING")
            seen.set((record, len(data), session.channel.read_rate))
        except BaseException as exc:
            seen.set_exception(exc)
            raise
        finally:
            udp.close()

    server = OutboundServer(handler, host, int(port), command_timeout=10)
    server.start()
    try:
        arg = cmd.originate_arg(cmd.loopback_endpoint("01002"), cmd.park_app())
        job = gevent.spawn(client.originate, arg, timeout=30)
        record, size, rate = seen.get(timeout=30)
        assert record.callee_uid == "1002"
        assert record.async_full
        assert (rate and size == rate // 50 * 2 * (record.channels or 1)) or size % 320 == 0
        job.join(timeout=30)
    finally:
        server.stop(timeout=2)
