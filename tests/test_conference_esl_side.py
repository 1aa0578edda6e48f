"""EslSide's conference parts against the simulator (issue 14), without the rest.

With ``conference=True`` the inbound connection subscribes to ``CUSTOM
conference::maintenance`` and forwards those events (only the headers the room table
reads); a web member's loopback originate reports the A leg's answer with the B leg's
uuid; a ``conference`` command that answers ``-ERR`` is reported as a failed operation;
an originate may run another application than ``park``. No peer connection is opened.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest
from support.ports_and_waits import free_port, gevent_wait

from esl_bridge.config import EslSettings, SocketSettings
from esl_bridge.core import call as c
from esl_bridge.esl.orphans import GatewayIdentity
from esl_bridge.esl.protocol import ChannelRecord
from esl_bridge.gateway.esl_side import CONFERENCE_HEADERS, ChannelOp, ConferenceApi, EslSide
from esl_bridge.sim import SimConfig, SimulatorThread

A_LEG = "5e1f0000-0000-4000-8000-00000000ca01"


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, str]]] = []
        self.conference: list[dict[str, str]] = []
        self.failed: list[tuple[ChannelOp, str]] = []
        self.states: list[str] = []

    def channel_event(self, uuid: str, name: str, headers: Mapping[str, str]) -> None:
        self.events.append((uuid, name, dict(headers)))

    def channel_lost(self, uuid: str, cause: str) -> None:
        pass

    def originate_failed(self, call_id: str, uuid: str, cause: str) -> None:
        self.events.append((uuid, "originate_failed", {"cause": cause}))

    def operation_failed(self, op: ChannelOp, error: str) -> None:
        self.failed.append((op, error))

    def esl_state(self, state: str) -> None:
        self.states.append(state)

    def sip_call(self, record: ChannelRecord) -> bool:
        return True

    def conference_event(self, headers: Mapping[str, str]) -> None:
        self.conference.append(dict(headers))


def make_side(sim: SimulatorThread, sink: Sink, conference: bool) -> EslSide:
    return EslSide(
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
        SocketSettings(host="127.0.0.1", port=free_port()),
        sink,
        identity=GatewayIdentity.new("unit"),
        conference=conference,
    )


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig()) as sim:
        yield sim


def started(sim: SimulatorThread, conference: bool) -> tuple[EslSide, Sink]:
    sink = Sink()
    esl = make_side(sim, sink, conference)
    esl.start()
    assert gevent_wait(lambda: "connected" in sink.states, 20), sink.states
    return esl, sink


def join(esl: EslSide, room: str) -> None:
    esl.originate(
        "call-1",
        A_LEG,
        f"loopback/conference:{room}@wideband/default/inline",
        {
            "origination_uuid": A_LEG,
            "origination_caller_id_number": "alice",
            "origination_caller_id_name": "Alice",
        },
    )


def test_room_events_and_the_b_leg_reach_the_sink(sim: SimulatorThread) -> None:
    esl, sink = started(sim, conference=True)
    try:
        join(esl, "eb-app-r1")
        assert gevent_wait(lambda: any(e.get("Action") == "add-member" for e in sink.conference))
        [added] = [e for e in sink.conference if e.get("Action") == "add-member"]
        assert set(added) <= set(CONFERENCE_HEADERS)
        assert added["Conference-Name"] == "eb-app-r1"
        assert added["Caller-Caller-ID-Number"] == "alice"
        assert added["Member-ID"].isdigit()
        answers = [h for u, name, h in sink.events if u == A_LEG and name == "CHANNEL_ANSWER"]
        assert answers and answers[0]["variable_other_loopback_leg_uuid"] == added["Unique-ID"]
        # A command the switch refuses: reported, so that the asker can be told.
        bad = ConferenceApi("", "eb-app-r1", ("kick", "99999"))
        esl.submit(bad)
        assert gevent_wait(lambda: bool(sink.failed))
        assert sink.failed[0][0] == bad and "Non-Existant ID" in sink.failed[0][1]
        member = added["Member-ID"]
        esl.submit(ConferenceApi("", "eb-app-r1", ("mute", member)))
        assert gevent_wait(lambda: any(e.get("Action") == "mute-member" for e in sink.conference))
        esl.submit(ConferenceApi("", "eb-app-r1", ("kick", member)))
        assert gevent_wait(lambda: any(e.get("Action") == "del-member" for e in sink.conference))
        assert gevent_wait(lambda: sim.live_channel_count() == 0)
        assert len(sink.failed) == 1
    finally:
        esl.stop()


def test_an_invitee_is_originated_with_the_conference_application(sim: SimulatorThread) -> None:
    esl, sink = started(sim, conference=True)
    try:
        uuid = "5e1f0000-0000-4000-8000-00000000ca02"
        esl.originate(
            "call-2",
            uuid,
            "user/1000@127.0.0.1",
            {"origination_uuid": uuid},
            app="&conference(eb-app-r2@wideband)",
        )
        assert gevent_wait(lambda: any(e.get("Unique-ID") == uuid for e in sink.conference))
        assert "eb-app-r2" in sim.api("conference list")
        esl.submit(c.Hangup("", uuid, "NORMAL_CLEARING"))
        assert gevent_wait(lambda: sim.live_channel_count() == 0)
    finally:
        esl.stop()


def test_without_conference_no_room_event_is_subscribed(sim: SimulatorThread) -> None:
    esl, sink = started(sim, conference=False)
    try:
        join(esl, "eb-app-r3")
        assert gevent_wait(
            lambda: any(u == A_LEG and n == "CHANNEL_ANSWER" for u, n, _ in sink.events)
        )
        # The room exists on the switch; its events were not asked for.
        assert "eb-app-r3" in sim.api("conference list")
        esl.submit(c.Hangup("", A_LEG, "NORMAL_CLEARING"))
        assert gevent_wait(lambda: sim.live_channel_count() == 0)
        assert sink.conference == []
    finally:
        esl.stop()
