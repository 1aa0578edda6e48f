"""EslSide alone: the gateway's FreeSWITCH side against the simulator, without the rest.

No asyncio side, no hub, no web server: a recording ``EventSink`` stands where the call
logic would be. The simulator places a SIP -> RTC call that connects to EslSide's outbound
socket; channel operations submitted for it must reach the switch in the order given, and
a socket that drops without the hangup events must be reported as ``channel_lost`` once.
Everything stays on 127.0.0.1 and no peer connection is opened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from support.ports_and_waits import free_port, free_udp_port, gevent_wait

from esl_bridge.config import EslSettings, SocketSettings
from esl_bridge.core import call as c
from esl_bridge.esl.orphans import GatewayIdentity
from esl_bridge.esl.protocol import ChannelRecord
from esl_bridge.gateway.esl_side import ChannelOp, EslSide
from esl_bridge.sim import SimConfig, SimulatorThread


class RecordingSink:
    """An EventSink that keeps what it is told, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.sip_calls: list[str] = []

    def channel_event(self, uuid: str, name: str, headers: Mapping[str, str]) -> None:
        self.calls.append(("event", (uuid, name)))

    def channel_lost(self, uuid: str, cause: str) -> None:
        self.calls.append(("lost", (uuid, cause)))

    def originate_failed(self, call_id: str, uuid: str, cause: str) -> None:
        self.calls.append(("originate_failed", (call_id, uuid, cause)))

    def operation_failed(self, op: ChannelOp, error: str) -> None:
        self.calls.append(("operation_failed", (op, error)))

    def esl_state(self, state: str) -> None:
        self.calls.append(("esl_state", state))

    def sip_call(self, record: ChannelRecord) -> bool:
        self.sip_calls.append(record.uuid)
        return True

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.calls if k == kind]


@pytest.fixture
def side() -> Iterator[tuple[EslSide, RecordingSink, SimulatorThread]]:
    socket_port = free_port()
    with SimulatorThread(SimConfig(socket_target=("127.0.0.1", socket_port))) as sim:
        sink = RecordingSink()
        esl = EslSide(
            EslSettings(
                host="127.0.0.1",
                port=sim.esl_port,
                password=sim.password,
                command_timeout=10.0,
                connect_timeout=5.0,
                reconnect_max_delay=1.0,
                reconnect_probe_interval=5.0,
                orphan_timeout=30.0,
            ),
            SocketSettings(host="127.0.0.1", port=socket_port),
            sink,
            identity=GatewayIdentity.new("unit"),
        )
        esl.start()
        try:
            assert gevent_wait(lambda: "connected" in sink.of("esl_state"), 20), sink.calls
            yield esl, sink, sim
        finally:
            esl.stop()
        assert not sim.crashed, sim.crash_reason


def test_channel_operations_reach_the_switch_in_the_order_given(
    side: tuple[EslSide, RecordingSink, SimulatorThread],
) -> None:
    esl, sink, sim = side
    phone = sim.place_call("1001", "01002")
    assert gevent_wait(lambda: phone.uuid in sink.sip_calls, 20), sink.calls
    uuid = phone.uuid
    ops: list[ChannelOp] = [
        c.SetChannelVar("call-1", uuid, "esl_bridge_test", "first"),
        c.PreAnswer("call-1", uuid),
        c.PlayRingback("call-1", uuid),
        c.StopRingback("call-1", uuid),
        c.Answer("call-1", uuid),
    ]
    for op in ops:  # queued at once: the worker must still run them one after the other
        esl.submit(op)
    assert gevent_wait(lambda: phone.answered, 20), phone.commands
    # What the channel executed, in order (the simulator's record of its applications;
    # StopRingback breaks the playback and is not an application of its own).
    applications = phone.channel.applications
    assert gevent_wait(lambda: ("answer", "") in applications, 20), applications
    ours = applications[[app for app, _ in applications].index("socket") + 1 :]
    assert [app for app, _ in ours] == ["set", "pre_answer", "playback", "answer"], ours
    assert ours[0][1] == "esl_bridge_test=first"
    assert sink.of("operation_failed") == []
    assert sink.of("lost") == []

    esl.submit(c.Hangup("call-1", uuid, "NORMAL_CLEARING"))
    assert gevent_wait(lambda: phone.finished, 20), phone.commands
    assert gevent_wait(lambda: (uuid, "CHANNEL_HANGUP_COMPLETE") in sink.of("event"), 20)
    assert sink.of("lost") == []  # the hangup events came: nothing is reported lost


def test_a_dropped_socket_reports_channel_lost_once(
    side: tuple[EslSide, RecordingSink, SimulatorThread],
) -> None:
    esl, sink, sim = side
    phone = sim.place_call("1001", "01002")
    assert gevent_wait(lambda: phone.uuid in sink.sip_calls, 20), sink.calls
    uuid = phone.uuid
    esl.submit(c.Answer("call-2", uuid))
    assert gevent_wait(lambda: phone.answered, 20), phone.commands

    assert sim.drop_outbound_socket(uuid)
    assert gevent_wait(lambda: any(u == uuid for u, _ in sink.of("lost")), 20), sink.calls
    # The session's greenlet has ended (it reports last): nothing more can come from it.
    assert gevent_wait(lambda: uuid not in esl._sessions, 20)
    assert [u for u, _ in sink.of("lost")] == [uuid]
    assert sink.of("operation_failed") == []


def test_native_unicast_params_become_the_flags_native_line(
    side: tuple[EslSide, RecordingSink, SimulatorThread],
) -> None:
    """EslSide turns ``UnicastParams(flags="native")`` into the ``flags: native`` line, on
    the outbound socket of a SIP call; the simulated channel then streams PCMU (160 bytes,
    and FreeSWITCH's 320-byte filler)."""
    import socket

    import gevent.socket

    from esl_bridge.gateway.esl_side import Unicast
    from esl_bridge.media.unicast import UnicastParams

    esl, sink, sim = side
    udp = gevent.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # EslSide runs on gevent
    udp.bind(("127.0.0.1", 0))
    try:
        phone = sim.place_call("1001", "01002")
        assert gevent_wait(lambda: phone.uuid in sink.sip_calls, 20), sink.calls
        esl.submit(c.Answer("call-1", phone.uuid))
        assert gevent_wait(lambda: phone.answered, 20), phone.commands
        params = UnicastParams(
            "127.0.0.1", free_udp_port(), "127.0.0.1", udp.getsockname()[1], flags="native"
        )
        esl.submit(Unicast("call-1", phone.uuid, params))
        udp.settimeout(10)
        sizes = {len(udp.recvfrom(8192)[0]) for _ in range(10)}
        assert sizes <= {160, 320} and 160 in sizes, sizes
        assert phone.channel.unicast is not None and phone.channel.unicast.native
        assert sink.of("operation_failed") == []
    finally:
        udp.close()
