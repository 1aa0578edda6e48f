"""No channel outlives its gateway (esl_bridge/esl/orphans.py).

* the sans-I/O parts: identity, the watchdog's re-arm schedule, parsing the switch's answers;
* the simulator's scheduler and ``hupall`` by variable, which the watchdog relies on;
* a gateway in this process: channels carry its identity, one watchdog task stays armed,
  a clean stop leaves nothing behind;
* a gateway in a subprocess killed with SIGKILL in each call state: the switch ends its
  channels within ``[esl] orphan_timeout``; a restarted gateway of the same node ends an
  earlier instance's leftovers (and only those) before it serves numbers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from support.gateway_process import GatewayProcess
from support.gateway_support import WebUser, running_gateway, wait_until
from support.netns import loopback_only
from support.ports_and_waits import free_port
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState
from esl_bridge.esl import orphans
from esl_bridge.esl.orphans import GatewayIdentity, Watchdog
from esl_bridge.loops import Loops
from esl_bridge.sim import SimConfig, SimulatorThread

ROOT = Path(__file__).resolve().parent.parent

# -- the sans-I/O parts ---------------------------------------------------------------------


def test_identity_variables_and_predecessors() -> None:
    me = GatewayIdentity("gw-a", "1111")
    assert me.channel_vars() == {"esl_bridge_node": "gw-a", "esl_bridge_instance": "1111"}
    assert me.setvar_multi_arg() == "esl_bridge_node=gw-a;esl_bridge_instance=1111"
    assert me.is_predecessor("gw-a", "0000")
    assert not me.is_predecessor("gw-a", "1111")  # my own channel
    assert not me.is_predecessor("gw-b", "0000")  # another node's
    assert not me.is_predecessor("", "")  # a channel the gateway never touched
    first, second = GatewayIdentity.new("gw-a"), GatewayIdentity.new("gw-a")
    assert first.instance_id != second.instance_id
    with pytest.raises(ValueError, match="invalid node id"):
        GatewayIdentity.new("gw a")


def test_default_node_id_is_stable_and_safe() -> None:
    assert orphans.default_node_id("pbx-1.example", 8084) == "pbx-1.example-8084"
    assert orphans.default_node_id("bad host;name", 8085) == "bad-host-name-8085"
    assert orphans.valid_node_id(orphans.default_node_id("ü" * 80, 1))


def test_watchdog_arms_the_next_task_before_deleting_the_previous() -> None:
    dog = Watchdog(GatewayIdentity("gw", "abc"), 30)
    assert dog.period == 10
    command, arg = dog.arm_args()
    assert (command, arg) == (
        "sched_api",
        "+30 esl_bridge_abc_0 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc",
    )
    assert dog.armed_ok() is None  # nothing to delete after the first
    assert dog.arm_args()[1].startswith("+30 esl_bridge_abc_1 ")
    assert dog.armed_ok() == "esl_bridge_abc_0"
    assert dog.armed == "esl_bridge_abc_1"
    assert dog.disarm() == "esl_bridge_abc_1"
    assert dog.disarm() is None
    # The switch's scheduler counts whole seconds: never shorter than asked.
    assert Watchdog(GatewayIdentity("gw", "abc"), 4.2).seconds == 5
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            Watchdog(GatewayIdentity("gw", "abc"), bad)


def test_parsing_the_switch_answers() -> None:
    assert orphans.channel_uuids('{"row_count":0}') == []
    listing = json.dumps({"row_count": 2, "rows": [{"uuid": "u1", "name": "x"}, {"uuid": "u2"}]})
    assert orphans.channel_uuids(listing) == ["u1", "u2"]
    for bad in ("-ERR no reply", "[]", '{"rows": 3, "row_count": 1}'):
        with pytest.raises(ValueError):
            orphans.channel_uuids(bad)
    assert orphans.getvar_value("gw-a") == "gw-a"
    assert orphans.getvar_value("_undef_") is None
    assert orphans.getvar_value("-ERR No such channel!\n") is None


# -- the simulator's scheduler and hupall by variable -----------------------------------------


def _originate(sim: SimulatorThread, variables: str, number: str = "1000") -> str:
    reply = sim.api(f"originate {{{variables}}}user/{number} &park()")
    assert reply.startswith("+OK "), reply
    return reply.split()[1]


def test_sim_scheduler_runs_hupall_for_matching_channels_only() -> None:
    with SimulatorThread() as sim:
        mine = _originate(sim, "esl_bridge_instance=abc")
        other = _originate(sim, "esl_bridge_instance=xyz")
        added = sim.api("sched_api +1 g0 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
        assert added.startswith("+OK Added: ")
        assert sim.api("sched_del nosuchgroup") == "+OK Deleted: 0\n"
        channel = sim.get_channel(mine)
        assert channel is not None
        wait_until(lambda: channel.hung_up, 10, "the scheduled hupall")
        assert channel.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
        assert not sim.get_channel(other).hung_up  # type: ignore[union-attr]
        # A deleted task never fires.
        sim.api("sched_api +1 g1 hupall NORMAL_CLEARING esl_bridge_instance xyz")
        assert sim.api("sched_del g1") == "+OK Deleted: 1\n"
        assert sim.run_sync(lambda: sim.sim.scheduled_groups()) == []


# -- a gateway in this process ------------------------------------------------------------------


@loopback_only
def test_channels_carry_the_identity_and_one_watchdog_task_stays_armed() -> None:
    with running_gateway(esl_extra="orphan_timeout = 3") as (gateway, sim):
        identity = gateway.identity
        dog = gateway.esl.watchdog  # type: ignore[union-attr]
        wait_until(lambda: dog.armed == dog.group(3), 15, "three re-arms")
        # A re-arm schedules the new task before it deletes the old one (never a moment
        # with none), so just after one both may be pending: wait for the old one to go.
        seen: list[list[str]] = []

        def only_the_armed_task() -> bool:
            armed = dog.armed
            seen.append(sim.run_sync(lambda: sim.sim.scheduled_groups()))
            return seen[-1] == [armed] and dog.armed == armed

        wait_until(only_the_armed_task, 15, "exactly the armed watchdog task scheduled")
        assert all(len(groups) <= 2 for groups in seen), seen  # never a pile of tasks
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1000", "ch-1")
        wait_until(lambda: len(sim.channels()) == 1, 5, "the originated leg")
        [originated] = sim.channels()
        assert originated.get_var("esl_bridge_node") == identity.node_id
        assert originated.get_var("esl_bridge_instance") == identity.instance_id
        bob = WebUser(gateway, "bob").connect()
        phone = sim.place_call(caller="1001", dest="0bob")
        bob.wait(lambda m: m.get("type") == "invitation")
        assert phone.channel.get_var("esl_bridge_instance") == identity.instance_id
        alice.close()
        bob.close()
        # A clean stop: its calls end, its task is deleted.
        gateway.stop(drain=2.0)
        wait_until(lambda: sim.live_channel_count() == 0, 10, "no channel left")
        assert sim.run_sync(lambda: sim.sim.scheduled_groups()) == []


# -- a gateway process killed with SIGKILL ---------------------------------------------------


def _gateway(
    tmp: Path, sim: SimulatorThread, socket_port: int, orphan_timeout: float
) -> GatewayProcess:
    return GatewayProcess(
        tmp,
        esl=("127.0.0.1", sim.esl_port, sim.password),
        socket=("127.0.0.1", socket_port),
        orphan_timeout=orphan_timeout,
    )


@contextmanager
def _switch_and_loop() -> Iterator[tuple[SimulatorThread, int, Loops]]:
    socket_port = free_port()
    sim = SimulatorThread(
        SimConfig(socket_target=("127.0.0.1", socket_port), first_call_event_delay=0.0)
    ).start()
    loops = Loops().start()
    try:
        yield sim, socket_port, loops
    finally:
        loops.stop()
        sim.stop()


# orphan_timeout 3 s: the bound the channels must end within (plus the scheduler's second);
# a leg rings up to 120 s, so only the watchdog can end a ringing one within the bound.
_FAST_WATCHDOG = 3
_BOUND = 3 + 1 + 10  # the watchdog, the scheduler's resolution, room for a busy machine


def _put_call_in_state(
    state: str, gateway: GatewayProcess, sim: SimulatorThread, loops: Loops
) -> Any:
    """A call of the gateway in ``state``; returns the simulated channel."""
    if state in ("sip_to_web_ringing", "sip_to_web_answered"):
        bob = gateway.web_user(loops, "bob")
        phone = sim.place_call(caller="1001", dest="0bob")
        invitation = bob.wait(lambda m: m.get("type") == "invitation")
        channel = phone.channel
        wait_until(lambda: channel.running_app == "playback", 10, "the ringback playing")
        if state == "sip_to_web_answered":
            bob.request({"type": "ack", "inv": invitation["inv"]})
            reply = bob.request(
                {"type": "accept", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})}
            )
            assert reply["type"] == "ok", reply
            wait_until(lambda: phone.answered, 10, "the phone answered")
        return channel
    alice = gateway.web_user(loops, "alice")
    number = "1004" if state == "web_to_sip_ringing" else "1000"  # no answer / answers
    alice.invite(number, "ch-1")
    wait_until(lambda: len(sim.channels()) == 1, 10, "the originated leg")
    [channel] = sim.channels()
    if state in ("web_to_sip_answered", "web_to_sip_unicast"):
        wait_until(lambda: channel.answered and channel.parked, 10, "the leg answered, parked")
    if state == "web_to_sip_unicast":
        # The browser's media connects and the audio flows through unicast.
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        WebPeer(alice).offer("1000", "ch-1")
        wait_until(lambda: channel.unicast is not None, 20, "unicast running on the leg")
    return channel


@pytest.mark.parametrize(
    "state",
    [
        "sip_to_web_ringing",
        "sip_to_web_answered",
        "web_to_sip_ringing",
        "web_to_sip_answered",
        "web_to_sip_unicast",
    ],
)
@loopback_only(timeout=120)
def test_a_killed_gateway_leaves_no_channel_on_the_switch(state: str, tmp_path: Path) -> None:
    with _switch_and_loop() as (sim, socket_port, loops):
        gateway = _gateway(tmp_path, sim, socket_port, _FAST_WATCHDOG)
        try:
            channel = _put_call_in_state(state, gateway, sim, loops)
            assert not channel.hung_up
            gateway.kill()
            wait_until(lambda: channel.hung_up, _BOUND, f"the {state} channel ended")
            if state != "sip_to_web_answered":
                # Nothing but the watchdog ends these: the ringback never ends by itself,
                # a parked or ringing originated leg neither.
                assert channel.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
            wait_until(lambda: sim.live_channel_count() == 0, 10, "the channel torn down")
        finally:
            gateway.stop()


@loopback_only(timeout=120)
def test_a_restarted_gateway_ends_its_predecessors_leftovers_only(tmp_path: Path) -> None:
    slow_watchdog = 3600
    with _switch_and_loop() as (sim, socket_port, loops):
        first = _gateway(tmp_path, sim, socket_port, slow_watchdog)
        try:
            leftover = _put_call_in_state("web_to_sip_answered", first, sim, loops)
            first.kill()
        finally:
            first.stop()
        # A channel of another gateway node on the same switch must survive the cleanup.
        foreign = _originate(sim, "esl_bridge_node=other-node,esl_bridge_instance=feed", "1001")
        assert not leftover.hung_up
        second = _gateway(tmp_path, sim, socket_port, slow_watchdog)
        try:
            # /healthz is 200 only after the cleanup: it has run by now.
            [done] = second.log_events("esl.orphans.cleanup_done")
            assert done["ended"] == 1, done
            wait_until(lambda: leftover.hung_up, 10, "the leftover ended")
            assert leftover.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
            assert not sim.get_channel(foreign).hung_up  # type: ignore[union-attr]
            ended = second.log_events("esl.orphans.channel_ended")
            assert [e["uuid"] for e in ended] == [leftover.uuid]
            [started] = second.log_events("gateway.started")
        finally:
            second.stop()
        # A clean stop leaves no task of its own on the switch (the killed one's stays, and
        # finds nothing to hang up when it fires).
        pending = sim.run_sync(lambda: sim.sim.scheduled_groups())
        assert pending, "the killed gateway's task is still armed"
        assert not [g for g in pending if started["instance"] in g], pending
