"""CUSTOM events for fs_cli (gateway/ops_events.py), against the simulator.

The simulator delivers ``sendevent CUSTOM`` to subscribed connections as FreeSWITCH 1.10.12
does (tests/test_sim_recorded_ops.py checks that against the recording), so an observer
connection here sees what an admin's fs_cli would. Rates use a fake clock; nothing waits on
wall time to decide.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import gevent
import pytest
from structlog.testing import capture_logs
from support.gateway_support import (
    APPID,
    WebUser,
    assert_nothing_left,
    running_gateway,
    wait_until,
)
from support.netns import loopback_only
from support.sim_wire import Conn, Event, auth

from esl_bridge.core.invitations import LocalState
from esl_bridge.core.media_verdict import HopCounters
from esl_bridge.esl import commands as cmd
from esl_bridge.esl.control import InboundClient
from esl_bridge.gateway.ops_events import (
    MAX_FIELDS,
    MAX_VALUE,
    OpsEventSender,
    event_headers,
)
from esl_bridge.sim import SimConfig, SimulatorThread

# -- pure parts ----------------------------------------------------------------------------


def test_headers_are_prefixed_texts_cut_to_the_bounds() -> None:
    headers = event_headers(
        "call_ended",
        {"call_id": "call-1", "duration": 12.5, "forced": False, "gone": None, "x": "y" * 1000},
    )
    assert headers[0] == ("Event-Subclass", "esl_bridge::call_ended")
    assert dict(headers[1:]) == {
        "esl_bridge_call_id": "call-1",
        "esl_bridge_duration": "12.5",
        "esl_bridge_forced": "false",
        "esl_bridge_x": "y" * (MAX_VALUE - 3) + "...",
    }
    many = event_headers("call_started", {f"f{i}": i for i in range(100)})
    assert len(many) == MAX_FIELDS + 1
    with pytest.raises(ValueError):
        event_headers("no_such_event", {})


def test_the_frame_encodes_what_freeswitch_would_decode() -> None:
    frame = cmd.sendevent("CUSTOM", [("esl_bridge_reason", "100% sure\r\nexit")])
    assert frame == b"sendevent CUSTOM\nesl_bridge_reason: 100%25 sure%0D%0Aexit\n\n"
    for bad in ([("Content-Length", "5")], [("bad name", "x")]):
        with pytest.raises(ValueError):
            cmd.sendevent("CUSTOM", bad)


# -- the sender against the simulator -------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def switch() -> Iterator[tuple[SimulatorThread, InboundClient, Conn]]:
    with SimulatorThread(SimConfig()) as sim:
        client = InboundClient("127.0.0.1", sim.esl_port, "ClueCon", events=["BACKGROUND_JOB"])
        client.connect(timeout=5)
        observer = auth(sim.esl_port)
        observer.command("event plain CUSTOM esl_bridge::call_ended esl_bridge::user_online")
        try:
            yield sim, client, observer
        finally:
            observer.close()
            client.stop()


def read_custom(observer: Conn) -> Event:
    """The next CUSTOM event, reading the socket between gevent yields (the sender runs on
    this thread's hub)."""
    result: list[Event] = []

    def read() -> None:
        result.append(observer.read_event("CUSTOM", timeout=5.0))

    gevent.get_hub().threadpool.spawn(read).get(timeout=6.0)
    return result[0]


def test_an_emitted_event_reaches_a_subscribed_connection_with_its_fields(
    switch: tuple[SimulatorThread, InboundClient, Conn],
) -> None:
    _sim, client, observer = switch
    sender = OpsEventSender(client, common={"node": "n1"})
    sender.start()
    assert sender.emit("call_started", {"call_id": "c-0"})  # not subscribed: never seen
    assert sender.emit("call_ended", {"call_id": "c-1", "cause": "NORMAL_CLEARING", "x": "50%"})
    event = read_custom(observer)
    assert event.get("Event-Subclass") == "esl_bridge::call_ended"
    assert event.get("esl_bridge_call_id") == "c-1"
    assert event.get("esl_bridge_cause") == "NORMAL_CLEARING"
    assert event.get("esl_bridge_x") == "50%"
    assert event.get("esl_bridge_node") == "n1"
    sender.stop()
    assert sender.stats()["sent"] == {"call_started": 1, "call_ended": 1}


def test_the_rate_bound_drops_counts_and_logs_once_per_interval(
    switch: tuple[SimulatorThread, InboundClient, Conn],
) -> None:
    _sim, client, observer = switch
    clock = FakeClock()
    sender = OpsEventSender(client, rate=1.0, burst=3, clock=clock, log_interval=10.0)
    sender.start()
    with capture_logs() as logs:
        results = [sender.emit("call_ended", {"call_id": f"c-{i}"}) for i in range(10)]
        clock.now = 5.0  # within the log interval: no second line; 3 tokens back (burst 3)
        results.append(sender.emit("call_ended", {"call_id": "c-10"}))
        clock.now = 5.0
        results += [sender.emit("call_ended", {"call_id": f"c-{i}"}) for i in range(11, 14)]
        clock.now = 20.0  # past the interval: the drops since are logged on the next drop
        results += [sender.emit("call_ended", {"call_id": f"c-{i}"}) for i in range(14, 20)]
    assert results == [True] * 3 + [False] * 7 + [True] * 3 + [False] + [True] * 3 + [False] * 3
    assert sender.stats()["dropped"]["rate"] == 11
    lines = [e for e in logs if e["event"] == "ops_events.dropped"]
    assert [line["since_last"] for line in lines] == [{"rate": 1}, {"rate": 8}]
    seen = [read_custom(observer).get("esl_bridge_call_id") for _ in range(9)]
    assert seen == ["c-0", "c-1", "c-2", "c-10", "c-11", "c-12", "c-14", "c-15", "c-16"]
    sender.stop()


def test_a_full_queue_drops_and_emit_never_blocks(
    switch: tuple[SimulatorThread, InboundClient, Conn],
) -> None:
    _sim, client, _observer = switch
    sender = OpsEventSender(client, queue_max=2, rate=1000.0, burst=1000)
    # Not started: nothing takes from the queue, so it fills.
    assert [sender.emit("user_online", {"uid": str(i)}) for i in range(4)] == [
        True,
        True,
        False,
        False,
    ]
    assert sender.stats()["dropped"]["queue_full"] == 2


# -- the whole gateway ----------------------------------------------------------------------


def custom_events(sim: SimulatorThread) -> list[dict[str, Any]]:
    """Every CUSTOM event the simulated switch fired, as name -> decoded fields."""

    def collect() -> list[dict[str, Any]]:
        return [dict(e.headers) for e in sim.sim.events if e.name == "CUSTOM"]

    return sim.run_sync(collect)


def wait_custom(sim: SimulatorThread, subclass: str, **match: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def check() -> bool:
        for e in custom_events(sim):
            wanted = {f"esl_bridge_{k}": v for k, v in match.items()}
            if e.get("Event-Subclass") == subclass and all(
                e.get(k) == v for k, v in wanted.items()
            ):
                found.append(e)
                return True
        return False

    wait_until(check, 10, f"CUSTOM {subclass} {match}")
    return found[0]


@loopback_only
def test_the_gateway_fires_its_events_for_users_and_calls() -> None:
    with running_gateway() as (gateway, sim):
        started = wait_custom(sim, "esl_bridge::gateway_started")
        assert started["esl_bridge_instance"] == gateway.identity.instance_id
        alice = WebUser(gateway, "alice").connect()
        online = wait_custom(sim, "esl_bridge::user_online", uid="alice")
        assert online["esl_bridge_appid"] == APPID
        # The numbers the gateway serves itself are not users.
        assert not [e for e in custom_events(sim) if e.get("esl_bridge_uid") == "1000"]

        alice.invite("1000", "ch-e")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        call = wait_custom(sim, "esl_bridge::call_started", uid="alice")
        call_id = call["esl_bridge_call_id"]
        assert (call["esl_bridge_direction"], call["esl_bridge_number"]) == ("rtc2sip", "1000")
        [channel] = sim.channels()
        assert call["esl_bridge_uuid"] == channel.uuid
        answered = wait_custom(sim, "esl_bridge::call_answered", call_id=call_id)
        assert float(answered["esl_bridge_setup_seconds"]) >= 0
        alice.peer("1000", Cmd="EndCall")
        ended = wait_custom(sim, "esl_bridge::call_ended", call_id=call_id)
        assert (ended["esl_bridge_reason"], ended["esl_bridge_cause"]) == (
            "web_hangup",
            "NORMAL_CLEARING",
        )
        assert float(ended["esl_bridge_duration"]) >= float(ended["esl_bridge_talk_seconds"])
        # The media figures of the call's leg (no browser media in this test: zeros).
        assert ended["esl_bridge_packets_from_browser"] == "0"
        assert "esl_bridge_frames_to_browser" in ended
        assert_nothing_left(gateway, sim)

        phone = sim.place_call(caller="1001", dest="0alice")
        alice.wait(lambda m: m.get("type") == "invitation")
        sip = wait_custom(sim, "esl_bridge::call_started", direction="sip2rtc")
        phone.hangup("NORMAL_CLEARING")
        ended = wait_custom(sim, "esl_bridge::call_ended", call_id=sip["esl_bridge_call_id"])
        assert ended["esl_bridge_reason"] == "sip_canceled"
        assert ended["esl_bridge_talk_seconds"] == "0"
        assert_nothing_left(gateway, sim)

        alice.close()
        wait_custom(sim, "esl_bridge::user_offline", uid="alice")
        stats = gateway.controller.status()["ops_events"]  # type: ignore[union-attr]
        assert stats["sent"]["call_ended"] == 2
        assert sum(stats["dropped"].values()) == 0
        gateway.stop(drain=1.0)
        wait_custom(sim, "esl_bridge::gateway_stopping")


# -- media_problem through the controller ----------------------------------------------------


class FakeEndpoint:
    """What _watch_media reads of a unicast endpoint: the switch's address."""

    def __init__(self) -> None:
        self.fs_addr: tuple[str, int] | None = ("127.0.0.1", 9000)


class FakeLeg:
    """A leg whose hop counters the test sets (media/leg.py ``MediaLeg.hop_counters``)."""

    def __init__(self) -> None:
        self.endpoint = FakeEndpoint()
        self.counters = HopCounters(browser_connected=True)

    def hop_counters(self) -> HopCounters:
        return self.counters

    async def close(self) -> None:
        pass

    def flow(self, **more: int) -> None:
        """Every counter grows by 50 (one second of packets), those named by ``more``."""
        c = self.counters
        grow = dict.fromkeys(
            (
                "rtp_from_browser",
                "frames_from_browser",
                "frames_to_switch",
                "datagrams_from_switch",
                "packets_to_browser",
            ),
            50,
        )
        grow.update(more)
        self.counters = replace(
            c,
            **{k: getattr(c, k) + v for k, v in grow.items()},
            browser_level_dbov=-12.0,
            switch_level_dbov=-12.0,
        )


def test_media_problem_names_the_direction_and_its_verdict_with_the_calls_fields() -> None:
    from test_controller import _answered_web_call, in_loop

    @in_loop
    def body() -> None:
        controller, _switch, alice, originate = _answered_web_call()
        emitted: list[tuple[str, dict[str, object]]] = []
        controller._emit = lambda name, fields: emitted.append((name, dict(fields)))
        call = controller.book.by_uuid(originate.uuid)
        assert call is not None
        links = controller._links[call.call_id]
        leg = FakeLeg()
        links.leg = leg  # type: ignore[assignment]
        # The phone's audio flows; the browser sends nothing after its first 10 packets.
        leg.flow(rtp_from_browser=10, frames_from_browser=10, frames_to_switch=10)
        controller._watch_media(call, links, 100.0)
        for now in (101.0, 102.0, 103.0, 104.0):
            leg.flow(rtp_from_browser=0, frames_from_browser=0, frames_to_switch=0)
            controller._watch_media(call, links, now)
        assert emitted == []
        leg.flow(rtp_from_browser=0, frames_from_browser=0, frames_to_switch=0)
        leg.counters = replace(leg.counters, filler_from_switch=3)  # filler is not audio
        controller._watch_media(call, links, 105.0)
        [(name, fields)] = emitted
        assert name == "media_problem"
        assert fields == {
            "call_id": call.call_id,
            "direction": "rtc2sip",
            "uid": "alice",
            "number": "1000",
            "uuid": originate.uuid,
            "appid": controller.appid,
            "silent": "from_browser",
            "silent_seconds": 5.0,
            "packets_from_switch": 297,
            "packets_from_browser": 10,
            "verdict": "browser_rtp_missing",
        }
        # The web user is told too, as a peer message from the gateway's uid.
        told = [m for m in alice.peer_cmds() if m["Cmd"] == "MediaProblem"]
        assert told == [
            {
                "Cmd": "MediaProblem",
                "ChanId": call.chan_id,
                "Direction": "browser_to_switch",
                "Verdict": "browser_rtp_missing",
            }
        ]
        leg.flow(rtp_from_browser=0, frames_from_browser=0, frames_to_switch=0)
        controller._watch_media(call, links, 110.0)  # the same problem: reported once
        assert len(emitted) == 1
        controller._watch_media(call, links, 115.0)  # now the phone's audio stopped too
        assert [(f["silent"], f["verdict"]) for _n, f in emitted] == [
            ("from_browser", "browser_rtp_missing"),
            ("from_switch", "switch_filler_only"),
        ]

    body()


def test_no_verdict_before_the_browser_is_connected_and_the_end_line_has_both() -> None:
    from test_controller import _answered_web_call, in_loop

    @in_loop
    def body() -> None:
        controller, _switch, alice, originate = _answered_web_call()
        call = controller.book.by_uuid(originate.uuid)
        assert call is not None
        links = controller._links[call.call_id]
        leg = FakeLeg()
        links.leg = leg  # type: ignore[assignment]
        # ICE/DTLS not up: nothing flows from the browser, and nothing is judged, however long.
        leg.counters = replace(leg.counters, browser_connected=False)
        for now in range(100, 130):
            leg.flow(rtp_from_browser=0, frames_from_browser=0, frames_to_switch=0)
            controller._watch_media(call, links, float(now))
        assert links.watch is None
        assert not [m for m in alice.peer_cmds() if m["Cmd"] == "MediaProblem"]
        # Up: the judge starts; a muted microphone is named after 5 s.
        leg.counters = replace(leg.counters, browser_connected=True)
        for now in range(130, 137):
            leg.flow()
            leg.counters = replace(leg.counters, browser_level_dbov=-127.0)
            controller._watch_media(call, links, float(now))
        assert [m["Verdict"] for m in alice.peer_cmds() if m["Cmd"] == "MediaProblem"] == [
            "browser_silent"
        ]
        with capture_logs() as logs:
            controller.channel_lost(originate.uuid, "NORMAL_CLEARING")
        [ended] = [e for e in logs if e["event"] == "calls.ended"]
        assert ended["verdict_browser_to_switch"] == "browser_silent"
        assert ended["verdict_switch_to_browser"] == "ok"
        verdicts = controller.metrics.snapshot()["verdicts"]
        assert verdicts[("browser_to_switch", "browser_silent")] == 1
        assert verdicts[("switch_to_browser", "ok")] == 1
        assert sum(verdicts.values()) == 2

    body()


def test_a_held_call_is_not_judged_and_an_ice_restarts_new_leg_is_judged_afresh() -> None:
    """While the browser's path is lost (core/browser_hold.py) nothing is judged; the
    new leg of an ICE restart starts its counters at zero, and is judged from then on:
    the problem the old path had is told as ok once the new one carries audio."""
    from test_controller import _answered_web_call, in_loop

    @in_loop
    def body() -> None:
        controller, _switch, alice, originate = _answered_web_call()
        call = controller.book.by_uuid(originate.uuid)
        assert call is not None
        links = controller._links[call.call_id]
        old = FakeLeg()
        links.leg = old  # type: ignore[assignment]
        for now in range(100, 107):  # the browser's RTP stops after the first second
            old.flow(**({} if now == 100 else dict.fromkeys(BROWSER_SIDE, 0)))
            controller._watch_media(call, links, float(now))

        def told() -> list[str]:
            return [m["Verdict"] for m in alice.peer_cmds() if m["Cmd"] == "MediaProblem"]

        assert told() == ["browser_rtp_missing"]
        assert controller.holds.lost(call.call_id, "ice", 107.0)
        for now in range(107, 130):  # held: nothing flows either way, nothing is judged
            controller._watch_media(call, links, float(now))
        assert told() == ["browser_rtp_missing"]
        controller.holds.back(call.call_id, "ice", 130.0)
        new = FakeLeg()  # its counters start at zero, below the old leg's
        links.leg = new  # type: ignore[assignment]
        for now in range(130, 133):
            new.flow()
            controller._watch_media(call, links, float(now))
        assert told() == ["browser_rtp_missing", "ok"]
        assert links.watch is not None
        assert links.watch.first_problem["browser_to_switch"] == "browser_rtp_missing"

    body()


BROWSER_SIDE = ("rtp_from_browser", "frames_from_browser", "frames_to_switch")


class DownClient:
    """An ESL client whose connection never comes up."""

    connected = False

    def wait_connected(self, timeout: float) -> None:
        from esl_bridge.esl.control import EslTimeout

        gevent.sleep(0.01)
        raise EslTimeout("down")

    def command(self, data: bytes, timeout: float | None = None) -> Any:
        raise AssertionError("nothing is sent while the connection is down")


def test_events_wait_for_the_connection_and_are_counted_when_the_gateway_stops() -> None:
    sender = OpsEventSender(DownClient())
    sender.start()
    assert sender.emit("gateway_started", {"socket": "127.0.0.1:8084"})
    assert sender.emit("user_online", {"uid": "alice"})
    gevent.sleep(0)  # the greenlet may take one and wait for the connection: counted either way
    sender.stop(flush_timeout=0.1)
    assert sender.stats() == {
        "sent": {},
        "dropped": {"rate": 0, "queue_full": 0, "send_failed": 0, "stopped": 2, "bad_event": 0},
    }
