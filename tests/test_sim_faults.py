"""Fault injection and FreeSWITCH's own faults, as the simulator reproduces them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.ports_and_waits import free_udp_port
from support.sim_wire import Conn, auth, read_transcript

from esl_bridge.sim import Extension, SimConfig, SimulatorThread, wire


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig()) as s:
        yield s


def _unicast(uuid: str) -> str:
    local, remote = free_udp_port(), free_udp_port()
    return (
        f"sendmsg {uuid}\ncall-command: unicast\nlocal-ip: 127.0.0.1\nlocal-port: {local}\n"
        f"remote-ip: 127.0.0.1\nremote-port: {remote}\ntransport: udp"
    )


def test_unicast_on_ringing_originated_leg_is_fatal(sim: SimulatorThread) -> None:
    """Crash 2 of the fixtures: 180 without SDP, then unicast -> +OK, then everything drops."""
    rec = read_transcript("esl_inbound_unicast_while_ringing_FS_CRASH.txt")
    sim.set_extension("1007", Extension("ringing", answer_after=5.0))
    c = auth(sim.esl_port)
    watcher = auth(sim.esl_port)
    c.command(
        "event plain CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER "
        "CHANNEL_PARK CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB"
    )
    uuid = "5e1f0000-0000-4000-8000-00000000c0de"
    c.command(
        f"bgapi originate {{origination_uuid={uuid},origination_caller_id_number=1005}}"
        "user/1007 &park()"
    )
    names = [e.name for e in c.events_until("CHANNEL_PROGRESS")]
    assert names == ["CHANNEL_CREATE", "CHANNEL_PROGRESS"]
    reply = c.command(_unicast(uuid))
    assert reply.raw == rec[-1].data == wire.command_reply("+OK")
    c.wait_closed(3)
    watcher.wait_closed(3)
    assert c.closed and watcher.closed
    assert sim.crashed
    assert uuid in (sim.crash_reason or "")
    assert sim.live_channel_count() == 0
    with pytest.raises(OSError):
        Conn.connect(sim.esl_port).read_frame(1)


def test_restart_after_crash_keeps_port_and_changes_core_uuid(sim: SimulatorThread) -> None:
    port = sim.esl_port
    c = auth(sim.esl_port)
    c.command("event plain BACKGROUND_JOB")
    before = sim.sim.core_uuid
    sim.crash("test")
    c.wait_closed(3)
    assert c.closed and sim.crashed
    sim.restart()
    assert sim.esl_port == port and not sim.crashed
    assert sim.sim.core_uuid != before
    c = auth(port)
    assert c.command("api status").body.startswith(b"UP ")


def test_drop_in_the_middle_of_a_command(sim: SimulatorThread) -> None:
    c = auth(sim.esl_port)
    sim.drop_next_command()
    c.send("api status\n\n")
    rest = c.wait_closed(3)
    assert c.closed and rest == b""
    # The next connection works normally.
    assert auth(sim.esl_port).command("api status").content_type == "api/response"


def test_drop_all_connections_and_listener_restart(sim: SimulatorThread) -> None:
    a, b = auth(sim.esl_port), auth(sim.esl_port)
    sim.drop_all_connections()
    a.wait_closed(3)
    b.wait_closed(3)
    assert a.closed and b.closed
    port = sim.esl_port
    sim.stop_listener()
    with pytest.raises(OSError):
        Conn.connect(port).read_frame(1)
    sim.start_listener()
    assert sim.esl_port == port
    assert auth(port).command("api status").content_type == "api/response"


def test_garbage_and_truncated_frames(sim: SimulatorThread) -> None:
    c = auth(sim.esl_port)
    assert sim.inject_raw(b"\x00\xffgarbage without structure\n\n") == 1
    c._recv(2)
    assert b"garbage" in c.buf
    c.buf = b""
    truncated = b"Content-Type: api/response\nContent-Length: 100\n\n+OK only part"
    sim.inject_raw(truncated, close_after=True)
    assert c.wait_closed(3) == truncated


def test_reply_delay(sim: SimulatorThread) -> None:
    c = auth(sim.esl_port)
    sim.set_reply_delay(0.5)
    c.send("api status\n\n")
    with pytest.raises(TimeoutError):
        c.read_frame(0.2)  # not there yet
    assert c.read_frame(5).content_type == "api/response"
    sim.set_reply_delay(0)


def test_exit_while_originate_pending_leaves_no_channel(sim: SimulatorThread) -> None:
    sim.set_extension("1004", Extension("no_answer", answer_after=None, ring_seconds=0.3))
    c = auth(sim.esl_port)
    c.command("bgapi originate user/1004 &park()")
    c.send("exit\n\n")
    c.wait_closed(3)
    assert sim.wait_for(lambda: sim.live_channel_count() == 0, 3)
    assert not sim.crashed
