"""Several FreeSWITCH switches in ``[esl] switches``: two simulators on two ports.

EslSide keeps one inbound connection per switch; originates are spread over the ready
switches (fewest calls of this process, ties in turn) and move to another when the chosen
one cannot take the command; later operations on a channel go to the switch that owns it.
A recording sink stands where the call logic would be; everything is on 127.0.0.1 and no
peer connection is opened.
"""

from __future__ import annotations

import json
import urllib.request
import uuid as uuidlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from support.gateway_support import APPID, WebUser, wait_until
from support.netns import loopback_only
from support.ports_and_waits import free_port, gevent_wait

from esl_bridge import config
from esl_bridge.config import EslSettings, SocketSettings
from esl_bridge.core import call as c
from esl_bridge.core.invitations import LocalState
from esl_bridge.esl.orphans import GatewayIdentity
from esl_bridge.esl.protocol import ChannelRecord
from esl_bridge.gateway.esl_side import ChannelOp, EslSide, SendDtmf
from esl_bridge.gateway.process import Gateway
from esl_bridge.sim import SimConfig, SimulatorThread


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def channel_event(self, uuid: str, name: str, headers: Mapping[str, str]) -> None:
        self.calls.append(("event", (uuid, name)))

    def channel_lost(self, uuid: str, cause: str) -> None:
        self.calls.append(("lost", uuid))

    def originate_failed(self, call_id: str, uuid: str, cause: str) -> None:
        self.calls.append(("originate_failed", (call_id, cause)))

    def operation_failed(self, op: ChannelOp, error: str) -> None:
        self.calls.append(("operation_failed", (op, error)))

    def esl_state(self, state: str) -> None:
        self.calls.append(("esl_state", state))

    def sip_call(self, record: ChannelRecord) -> bool:
        return True

    def of(self, kind: str) -> list[Any]:
        return [value for k, value in self.calls if k == kind]


Two = tuple[EslSide, Sink, SimulatorThread, SimulatorThread]


@pytest.fixture
def two() -> Iterator[Two]:
    socket_port = free_port()
    target = ("127.0.0.1", socket_port)
    with (
        SimulatorThread(SimConfig(socket_target=target, hostname="fs-a")) as a,
        SimulatorThread(SimConfig(socket_target=target, hostname="fs-b")) as b,
    ):
        sink = Sink()
        side = EslSide(
            EslSettings(
                host="127.0.0.1",
                port=8021,
                password=a.password,
                command_timeout=10.0,
                connect_timeout=5.0,
                reconnect_max_delay=1.0,
                reconnect_probe_interval=0.2,
                orphan_timeout=30.0,
                switches=(f"127.0.0.1:{a.esl_port}", f"127.0.0.1:{b.esl_port}"),
            ),
            SocketSettings(host="127.0.0.1", port=socket_port),
            sink,
            identity=GatewayIdentity.new("unit"),
        )
        side.start()
        try:
            assert gevent_wait(lambda: all(s.ready for s in side.switches), 20), sink.calls
            yield side, sink, a, b
        finally:
            side.stop()
        assert not a.crashed and not b.crashed


def originate(side: EslSide, sink: Sink, name: str) -> str:
    """Originate a call to the simulator's tone extension; its uuid once it is up."""
    uuid = str(uuidlib.uuid4())
    side.originate(name, uuid, "user/1000", {"origination_uuid": uuid})
    assert gevent_wait(
        lambda: (
            any(uuid in s.inbound.live_calls for s in side.switches)
            and uuid not in side._originating
        ),
        20,
    ), sink.calls
    assert sink.of("originate_failed") == []
    return uuid


def owner(uuid: str, a: SimulatorThread, b: SimulatorThread) -> str:
    """Which simulator has the live channel."""
    found = [name for name, sim in (("a", a), ("b", b)) if uuid in {c.uuid for c in sim.channels()}]
    assert len(found) == 1, found
    return found[0]


def test_originates_are_spread_and_operations_go_to_the_owning_switch(two: Two) -> None:
    side, sink, a, b = two
    uuids = [originate(side, sink, f"call-{n}") for n in range(4)]
    # Fewest calls first, ties in turn: a, b, a, b.
    assert [owner(u, a, b) for u in uuids] == ["a", "b", "a", "b"]
    assert [s["calls"] for s in side.switch_states()] == [2, 2]

    # DTMF (uuid_send_dtmf over the inbound connection) reaches each channel on its switch.
    for n, uuid in enumerate(uuids):
        side.submit(SendDtmf(f"call-{n}", uuid, str(n)))
    for n, uuid in enumerate(uuids):
        sim = a if owner(uuid, a, b) == "a" else b
        channel = sim.get_channel(uuid)
        assert channel is not None
        assert gevent_wait(lambda ch=channel, d=str(n): d in ch.dtmf_to_phone, 20), sink.calls

    # A hangup goes to the switch of its channel (uuid_kill there); the others go on.
    side.submit(c.Hangup("call-1", uuids[1], "NORMAL_CLEARING"))
    assert gevent_wait(lambda: (uuids[1], "CHANNEL_HANGUP_COMPLETE") in sink.of("event"), 20)
    assert {ch.uuid for ch in b.channels()} == {uuids[3]}
    assert {ch.uuid for ch in a.channels()} == {uuids[0], uuids[2]}
    assert sink.of("operation_failed") == [] and sink.of("lost") == []


def test_a_stopped_switch_loses_only_its_calls_and_new_calls_go_to_the_other(two: Two) -> None:
    side, sink, a, b = two
    on_a, on_b = originate(side, sink, "call-a"), originate(side, sink, "call-b")
    assert (owner(on_a, a, b), owner(on_b, a, b)) == ("a", "b")

    b.stop()
    # Its call is gone for the gateway; the gateway stays connected (switch a is ready).
    assert gevent_wait(lambda: on_b in sink.of("lost"), 20), sink.calls
    assert gevent_wait(lambda: not side.switches[1].ready, 20)
    assert sink.of("lost") == [on_b]
    states = sink.of("esl_state")
    assert states[states.index("connected") :] == ["connected"], states

    # New calls all go to switch a, the call on a goes on (its DTMF still arrives).
    later = [originate(side, sink, f"later-{n}") for n in range(3)]
    assert {ch.uuid for ch in a.channels()} == {on_a, *later}
    side.submit(SendDtmf("call-a", on_a, "7"))
    channel = a.get_channel(on_a)
    assert channel is not None
    assert gevent_wait(lambda: "7" in channel.dtmf_to_phone, 20)
    assert not channel.hung_up
    assert sink.of("operation_failed") == []


def test_an_originate_the_chosen_switch_did_not_take_goes_to_the_other(two: Two) -> None:
    side, sink, a, b = two
    first = originate(side, sink, "call-1")
    assert owner(first, a, b) == "a"  # so switch b, with fewer calls, is chosen next
    # Switch b's connection closes between the choice and the command: nothing has run
    # yet that would tell the gateway (no greenlet switch until the originate is sent).
    conn = side.switches[1].inbound._conn
    assert conn is not None
    conn.close()
    uuid = str(uuidlib.uuid4())
    side._originate("call-2", uuid, "user/1000", {"origination_uuid": uuid})
    assert sink.of("originate_failed") == []
    assert owner(uuid, a, b) == "a"
    assert uuid in side.switches[0].inbound.live_calls
    assert uuid not in side.switches[1].inbound.live_calls
    # Switch b comes back by itself (its connection only was closed).
    assert gevent_wait(lambda: side.switches[1].ready, 20)


def test_no_switch_connected_fails_the_originate_cleanly(two: Two) -> None:
    side, sink, a, b = two
    a.stop()
    b.stop()
    assert gevent_wait(lambda: not any(s.ready for s in side.switches), 20)
    assert gevent_wait(lambda: sink.of("esl_state")[-1] != "connected", 20)
    uuid = str(uuidlib.uuid4())
    side._originate("call-1", uuid, "user/1000", {"origination_uuid": uuid})
    assert sink.of("originate_failed") == [("call-1", "NORMAL_TEMPORARY_FAILURE")]
    assert all(uuid not in s.inbound.live_calls for s in side.switches)


def test_a_gateway_with_two_switches_reports_each_in_status() -> None:
    socket_port, web_port = free_port(), free_port()
    target = ("127.0.0.1", socket_port)
    with (
        SimulatorThread(SimConfig(socket_target=target)) as a,
        SimulatorThread(SimConfig(socket_target=target)) as b,
    ):
        settings = config.from_text(
            f"[esl]\nswitches = 127.0.0.1:{a.esl_port}, 127.0.0.1:{b.esl_port}\n"
            "reconnect_probe_interval = 0.2\n"
            f"[socket]\nport = {socket_port}\n[web]\nport = {web_port}\n"
            "[auth]\nopen_mode = 1\n",
            "<two>",
        )
        gateway = Gateway(settings)
        gateway.start()
        try:

            def status() -> dict[str, Any]:
                url = f"http://127.0.0.1:{web_port}/status.json"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    return dict(json.loads(reply.read()))

            assert gevent_wait(
                lambda: [s["ready"] for s in status()["switches"]] == [True, True], 20
            )
            assert [s["switch"] for s in status()["switches"]] == [
                f"127.0.0.1:{a.esl_port}",
                f"127.0.0.1:{b.esl_port}",
            ]
            a.stop()
            assert gevent_wait(lambda: not status()["switches"][0]["ready"], 20)
            # One switch is enough to serve: still healthy.
            assert status()["esl"] == "connected"
        finally:
            gateway.stop(drain=1.0)


def test_switches_in_rtx_conf() -> None:
    text = "[auth]\nopen_mode = 1\n[esl]\n"
    two = config.from_text(text + "switches = fs1:8021, [::1]:8022\n").esl
    assert two.endpoints == (("fs1", 8021), ("::1", 8022))
    assert config.from_text(text + "switches = fs1:8021\n").esl.endpoints == (("fs1", 8021),)
    assert config.from_text(text + "host = fs9\n").esl.endpoints == (("fs9", 8021),)
    bad = {
        "switches = fs1\n": "expected host:port items",
        "switches = fs1:8021, fs1:8021\n": "names the same switch twice",
        "switches = fs1:8021\nport = 8022\n": "set either switches or host and port",
        "switches = fs1:99999\n": "port out of range",
        "switches = 'fs 1:8021'\n": "expected host:port items",
    }
    for lines, reason in bad.items():
        with pytest.raises(config.ConfigError) as refused:
            config.from_text(text + lines, "<t>")
        [problem] = refused.value.problems
        assert (problem.section, problem.key) == ("esl", "switches")
        assert reason in problem.reason, problem.reason


@loopback_only
def test_web_calls_through_a_gateway_with_two_switches() -> None:
    """The whole gateway: two web users' calls land on the two switches; a web hangup
    kills the channel on its own switch; a switch that stops ends only its calls, and the
    next call goes to the switch that is left."""
    socket_port, web_port = free_port(), free_port()
    target = ("127.0.0.1", socket_port)
    with (
        SimulatorThread(SimConfig(socket_target=target, hostname="fs-a")) as a,
        SimulatorThread(SimConfig(socket_target=target, hostname="fs-b")) as b,
    ):
        settings = config.from_text(
            f"[global]\nappid = {APPID}\n[rtm2sip]\non = 1\nacc_rule = 10[00-19]\n"
            "[proxy]\non = 1\n"
            f"[esl]\nswitches = 127.0.0.1:{a.esl_port}, 127.0.0.1:{b.esl_port}\n"
            "command_timeout = 3\nreconnect_probe_interval = 0.2\n"
            f"[socket]\nport = {socket_port}\n[web]\nport = {web_port}\n"
            "[auth]\nopen_mode = 1\n[limits]\noriginate_timeout = 5\npresence_grace = 0.5\n",
            "<two>",
        )
        gateway = Gateway(settings)
        gateway.start()
        users: list[WebUser] = []
        try:
            esl = gateway.esl
            assert esl is not None
            wait_until(lambda: all(s.ready for s in esl.switches), 20, "both switches ready")
            alice = WebUser(gateway, "alice").connect()
            bob = WebUser(gateway, "bob").connect()
            carol = WebUser(gateway, "carol").connect()
            users += [alice, bob, carol]
            alice.invite("1000", "ch-a")
            alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
            bob.invite("1002", "ch-b")
            bob.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
            [on_a], [on_b] = a.channels(), b.channels()
            assert on_a.variables.get("origination_caller_id_number") == "alice"
            assert on_b.variables.get("origination_caller_id_number") == "bob"

            # Bob hangs up: uuid_kill on switch b; alice's call on a goes on.
            bob.peer("1002", Cmd="EndCall")
            wait_until(lambda: on_b.hung_up, 10, "bob's channel ended on switch b")
            assert not on_a.hung_up
            # ... and the gateway has heard its hangup: switch b carries no call now.
            wait_until(lambda: esl.switches[1].active_calls == 0, 10, "b's call counted out")

            # Bob calls again: switch b has fewer calls. Then switch b stops: bob's call
            # ends, alice's goes on, and carol's new call goes to switch a.
            bob.invite("1002", "ch-b2")
            bob.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
            [on_b_again] = b.channels()
            b.stop()
            assert bob.wait_peer_cmd("EndCall", timeout=10)["from"] == "1002"
            carol.invite("1001", "ch-c")
            carol.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
            [carols] = [ch for ch in a.channels() if ch.uuid != on_a.uuid]
            assert carols.variables.get("origination_caller_id_number") == "carol"
            assert not on_a.hung_up and on_b_again.uuid not in {ch.uuid for ch in a.channels()}
            alice.peer("1000", Cmd="EndCall")
            carol.peer("1001", Cmd="EndCall")
            controller = gateway.controller
            assert controller is not None
            wait_until(lambda: controller.status()["calls"] == 0, 10, "no call left")
            wait_until(lambda: a.live_channel_count() == 0, 10, "no channel left on a")
            assert not a.crashed
        finally:
            for user in users:
                user.close()
            gateway.stop(drain=1.0)
