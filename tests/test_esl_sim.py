"""The ESL control layer against the FreeSWITCH simulator (esl_bridge.sim, public API).

The simulator runs on its own asyncio loop in a thread; the client code runs on the gevent
hub of the test's thread, so every wait here polls with gevent.sleep.
"""

from __future__ import annotations

import socket as stdsocket
from collections.abc import Callable, Iterator

import gevent
import gevent.event
import gevent.socket
import pytest
from structlog.testing import capture_logs
from support.ports_and_waits import free_udp_port as _free_udp_port
from support.ports_and_waits import gevent_wait as _wait_until

from esl_bridge.esl import commands as cmd
from esl_bridge.esl.control import (
    ConnectionState,
    EslDisconnected,
    EslTimeout,
    InboundClient,
    OutboundServer,
    OutboundSession,
)
from esl_bridge.esl.protocol import ChannelRecord, Event

sim_thread = pytest.importorskip("esl_bridge.sim.thread")
SimConfig = pytest.importorskip("esl_bridge.sim.server").SimConfig

pytestmark = pytest.mark.timeout(60)


class _Outbound:
    def __init__(self, handler: Callable[[OutboundSession], None]) -> None:
        self.records: list[ChannelRecord] = []
        self.errors: list[BaseException] = []
        self.done = gevent.event.Event()

        def wrapped(session: OutboundSession) -> None:
            self.records.append(session.channel)
            try:
                handler(session)
            except BaseException as exc:
                self.errors.append(exc)
                raise
            finally:
                self.done.set()

        self.server = OutboundServer(wrapped, "127.0.0.1", 0, command_timeout=2.0)
        self.address = self.server.start()


@pytest.fixture
def gateway_socket() -> Iterator[dict[str, Callable[[OutboundSession], None]]]:
    """An outbound server whose handler the test sets in the returned dict."""
    slot: dict[str, Callable[[OutboundSession], None]] = {}

    def dispatch(session: OutboundSession) -> None:
        slot["handler"](session)

    server = _Outbound(dispatch)
    slot["server"] = server  # type: ignore[assignment]
    yield slot
    server.server.stop(timeout=1)


@pytest.fixture
def sim(gateway_socket) -> Iterator[object]:
    server: _Outbound = gateway_socket["server"]  # type: ignore[assignment]
    thread = sim_thread.SimulatorThread(SimConfig(socket_target=server.address))
    thread.start()
    yield thread
    thread.stop()


def _client(sim: object, **kwargs: object) -> InboundClient:
    host, port = sim.esl_address  # type: ignore[attr-defined]
    options: dict[str, object] = {
        "command_timeout": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.3,
    }
    options.update(kwargs)
    client = InboundClient(host, port, sim.password, **options)  # type: ignore[arg-type,attr-defined]
    client.connect(5)
    return client


def test_originate_park_and_unicast(sim) -> None:
    events: list[Event] = []
    client = _client(sim, on_event=events.append)
    udp = gevent.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        arg = cmd.originate_arg(
            cmd.user_endpoint("1000", "127.0.0.1"),
            cmd.park_app(),
            {"origination_caller_id_number": "1005", "sip_h_X-ArInfo": "ar-info-1"},
        )
        result = client.originate(arg, timeout=10)
        assert result.ok and result.uuid
        assert result.uuid in client.live_calls
        assert _wait_until(
            lambda: any(e.name == "CHANNEL_ANSWER" and e.uuid == result.uuid for e in events)
        )
        answer = next(e for e in events if e.name == "CHANNEL_ANSWER")
        assert answer.channel().has_media
        channel = sim.get_channel(result.uuid)
        assert channel is not None
        assert channel.get_var("sip_h_X-ArInfo") == "ar-info-1"
        fs_port = _free_udp_port()
        client.unicast(result.uuid, "127.0.0.1", fs_port, "127.0.0.1", udp.getsockname()[1])
        with gevent.Timeout(5):
            data, source = udp.recvfrom(8192)
        assert len(data) == 320 and source == ("127.0.0.1", fs_port)
        assert client.uuid_send_dtmf(result.uuid, "12").ok
        assert client.uuid_kill(result.uuid).ok
        assert _wait_until(lambda: not client.live_calls)
        assert not sim.crashed
    finally:
        udp.close()
        client.stop()


def test_escaped_variable_reaches_channel(sim) -> None:
    """Quotes, commas, backslashes, spaces and braces survive FreeSWITCH's three splits."""
    client = _client(sim)
    try:
        value = "O'Brien, \\x {y}"
        arg = cmd.originate_arg("user/1000", "&park()", {"sip_h_X-ArInfo": value})
        result = client.originate(arg, timeout=10)
        assert result.ok and result.uuid
        channel = sim.get_channel(result.uuid)
        assert channel is not None and channel.get_var("sip_h_X-ArInfo") == value
        client.uuid_kill(result.uuid)
    finally:
        client.stop()


@pytest.mark.parametrize(
    ("number", "cause"),
    [("1003", "USER_BUSY"), ("1019", "USER_NOT_REGISTERED"), ("1099", "SUBSCRIBER_ABSENT")],
)
def test_originate_failures(sim, number: str, cause: str) -> None:
    client = _client(sim)
    try:
        result = client.originate(cmd.originate_arg(f"user/{number}", "&park()"), timeout=10)
        assert not result.ok and result.cause == cause
        assert not client.live_calls
        unknown = client.api("nosuchcommand", "foo")
        assert not unknown.ok and unknown.text == "-ERR nosuchcommand Command not found!"
    finally:
        client.stop()


def test_phone_calls_gateway_through_socket(sim, gateway_socket) -> None:
    seen: dict[str, object] = {}

    def handler(session: OutboundSession) -> None:
        seen["record"] = session.channel
        session.set_var("rtp_autoflush", "true")
        session.pre_answer()
        session.answer()
        session.start_unicast("127.0.0.1", _free_udp_port(), "127.0.0.1", _free_udp_port())
        session.send_dtmf("5")
        session.hangup("NORMAL_CLEARING")
        assert session.wait_hangup(5)
        seen["cause"] = session.hangup_cause

    gateway_socket["handler"] = handler
    server: _Outbound = gateway_socket["server"]  # type: ignore[assignment]
    call = sim.place_call(caller="1001", dest="01002", cus_data="order 42, vip")
    assert server.done.wait(10)
    assert server.errors == []
    record = seen["record"]
    assert isinstance(record, ChannelRecord)
    assert (record.callee_uid, record.caller_number, record.cus_data) == (
        "1002",
        "1001",
        "order 42, vip",
    )
    assert record.async_full and record.direction == "inbound"
    assert seen["cause"] == "NORMAL_CLEARING"
    assert _wait_until(lambda: call.finished)
    assert call.answered and not sim.crashed
    assert call.dtmf_to_phone == "5"


def test_quoted_socket_originate_reaches_gateway(sim, gateway_socket) -> None:
    got = gevent.event.AsyncResult()
    gateway_socket["handler"] = lambda session: got.set(session.channel)
    server: _Outbound = gateway_socket["server"]  # type: ignore[assignment]
    client = _client(sim)
    try:
        arg = cmd.originate_arg(
            "user/1001",
            cmd.socket_app(*server.address),
            {"origination_caller_id_number": "1005"},
        )
        result = client.originate(arg, timeout=10)
        assert result.ok
        record = got.get(timeout=5)
        assert record.async_full and record.direction == "outbound"
        assert record.uuid == result.uuid
    finally:
        client.stop()


def test_drop_mid_command_is_an_error_and_client_comes_back(sim) -> None:
    client = _client(sim)
    try:
        sim.drop_next_command()
        with pytest.raises((EslDisconnected, EslTimeout)):
            client.api("status")
        assert _wait_until(lambda: client.connected and client.connections == 2)
        assert client.api("status").ok
    finally:
        client.stop()


def test_restart_reconnects_resubscribes_and_reports_lost_calls(sim) -> None:
    lost: list[list[str]] = []
    states: list[ConnectionState] = []
    events: list[Event] = []
    client = _client(sim, on_calls_lost=lost.append, on_state=states.append, on_event=events.append)
    try:
        result = client.originate(cmd.originate_arg("user/1001", "&park()"), timeout=10)
        assert result.ok
        sim.restart()
        assert _wait_until(lambda: lost == [[result.uuid]])
        client.wait_connected(5)
        assert client.connections == 2
        # Resubscribed: a new originate's events arrive on the new connection.
        again = client.originate(cmd.originate_arg("user/1001", "&park()"), timeout=10)
        assert again.ok
        assert _wait_until(
            lambda: any(e.name == "CHANNEL_ANSWER" and e.uuid == again.uuid for e in events)
        )
        client.uuid_kill(again.uuid or "")
    finally:
        client.stop()
    assert ConnectionState.DISCONNECTED in states


def test_garbage_and_truncated_frames(sim) -> None:
    with capture_logs() as logs:
        client = _client(sim)
        try:
            assert sim.inject_raw(b"Content-Type: api/response\nContent-Length: x\n\n") == 1
            assert _wait_until(lambda: client.connections == 2 and client.connected)
            assert sim.inject_raw(b"Content-Type: api/resp", close_after=True) == 1
            assert _wait_until(lambda: client.connections == 3 and client.connected)
            assert client.api("status").ok
        finally:
            client.stop()
    errors = [e["error"] for e in logs if e["event"] == "esl.protocol_error"]
    assert any("Content-Length" in e for e in errors)
    assert any("middle of a frame" in e for e in errors)
