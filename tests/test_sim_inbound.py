"""Inbound ESL of the simulator against the recorded FreeSWITCH 1.10.12 sessions."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from support.ports_and_waits import free_udp_port as _free_udp_port
from support.sim_wire import Conn, Event, auth, fs_events, read_transcript

from esl_bridge.sim import Extension, SimConfig, SimulatorThread, wire
from esl_bridge.sim.media import AudioSource


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig()) as s:
        yield s
        assert not s.crashed, s.crash_reason


def skeleton(ev: Event) -> list[str]:
    """Header names without the channel variables (those vary with the SIP details)."""
    return [k for k in ev.names if not k.startswith("variable_")]


def recorded(name: str, event: str, nth: int = 0) -> Event:
    return [e for e in fs_events(name) if e.name == event][nth]


def test_greeting_and_auth_bytes(sim: SimulatorThread) -> None:
    recs = read_transcript("esl_inbound_main.txt")
    c = Conn.connect(sim.esl_port)
    assert c.read_frame().raw == recs[0].data
    c.send("auth ClueCon\n\n")
    assert c.read_frame().raw == recs[2].data


def test_auth_failure_sequence_is_exact(sim: SimulatorThread) -> None:
    recs = read_transcript("esl_inbound_auth_fail.txt")
    c = Conn.connect(sim.esl_port)
    c.read_frame()
    c.send(recs[1].data)
    rest = c.wait_closed()
    assert c.closed
    assert rest == recs[2].data


def test_api_replies(sim: SimulatorThread) -> None:
    recs = {r.seq: r.data for r in read_transcript("esl_inbound_main.txt")}
    c = auth(sim.esl_port)
    status = c.command("api status")
    assert status.content_type == "api/response"
    assert int(status.get("Content-Length") or 0) == len(status.body)
    lines = status.body.decode().split("\n")
    assert re.match(r"UP \d+ years, \d+ days, \d+ hours, \d+ minutes, \d+ seconds", lines[0])
    assert lines[1] == "FreeSWITCH (Version 1.10.12-release  64bit) is ready"
    assert lines[-1] == "" and len(lines) == 9
    c.send("api nosuchcommand foo\n\n")
    assert c.read_frame().raw == recs[7]
    c.send(recs[8])  # event plain ...
    assert c.read_frame().raw == recs[9]
    c.send("exit\n\n")
    assert c.wait_closed() == recs[38] + recs[39]


def test_bgapi_originate_park_matches_recording(sim: SimulatorThread) -> None:
    name = "esl_inbound_main.txt"
    c = auth(sim.esl_port)
    c.command(
        "event plain CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB DTMF"
    )
    reply = c.command("bgapi originate {origination_caller_id_number=1005}user/1001 &park()")
    job = reply.get("Job-UUID")
    assert job and reply.raw == wire.command_reply(f"+OK Job-UUID: {job}", [("Job-UUID", job)])
    events = c.events_until("BACKGROUND_JOB")
    assert [e.name for e in events] == ["CHANNEL_CREATE", "CHANNEL_ANSWER", "BACKGROUND_JOB"]
    for ev in events:
        assert skeleton(ev) == skeleton(recorded(name, ev.name)), ev.name
    create, answer, bg = events
    rec_create = recorded(name, "CHANNEL_CREATE")
    assert create.names == rec_create.names  # same variables, same order
    assert "Channel-Read-Codec-Name" not in create.names
    assert answer.get("Channel-Read-Codec-Name") == "PCMU"
    assert answer.get("variable_read_rate") == "8000"
    uuid = create.get("Unique-ID")
    assert bg.body == f"+OK {uuid}\n".encode()
    assert bg.get("Job-UUID") == job
    assert (
        dict(bg.headers)["Job-Command-Arg"]
        == "%7Borigination_caller_id_number%3D1005%7Duser/1001%20%26park()"
    )
    assert bg.names == recorded(name, "BACKGROUND_JOB").names
    assert create.get("Caller-Caller-ID-Number") == "1005"
    assert create.get("Caller-Callee-ID-Name") == "Outbound Call"

    # DTMF from the phone, DTMF to the phone, kill.
    sim.phone_dtmf(uuid or "", "3")
    dtmf = c.read_event("DTMF")
    assert skeleton(dtmf) == skeleton(recorded(name, "DTMF"))
    assert (dtmf.get("DTMF-Digit"), dtmf.get("DTMF-Duration"), dtmf.get("DTMF-Source")) == (
        "3",
        "1440",
        "RTP",
    )
    assert c.command(f"api uuid_send_dtmf {uuid} 12").body == f"+OK {uuid} sent DTMF 12.\n".encode()
    assert c.command(f"api uuid_exists {uuid}").body == b"true"
    assert c.command(f"api uuid_kill {uuid}").raw == wire.api_response("+OK\n")
    done = c.read_event("CHANNEL_HANGUP_COMPLETE")
    assert skeleton(done) == skeleton(recorded(name, "CHANNEL_HANGUP_COMPLETE"))
    assert done.get("Hangup-Cause") == "NORMAL_CLEARING"
    assert c.command(f"api uuid_exists {uuid}").body == b"false"
    assert c.command("api show channels count").body == b"\n0 total.\n"
    assert c.command(f"api uuid_kill {uuid}").body == b"-ERR No such channel!\n"
    assert sim.live_channel_count() == 0
    assert sim.get_channel(uuid or "") is not None
    assert "".join(sim.get_channel(uuid or "").dtmf_to_phone) == "12"  # type: ignore[union-attr]


def test_only_subscribed_events_are_sent(sim: SimulatorThread) -> None:
    c = auth(sim.esl_port)
    c.command("event plain CHANNEL_ANSWER BACKGROUND_JOB")
    c.command("bgapi originate user/1000 &park()")
    events = c.events_until("BACKGROUND_JOB")
    assert [e.name for e in events] == ["CHANNEL_ANSWER", "BACKGROUND_JOB"]
    other = auth(sim.esl_port)  # a second connection without subscription gets nothing
    uuid = events[0].get("Unique-ID")
    c.command(f"api uuid_kill {uuid}")
    assert c.drain_events(0.3) == []
    assert other.drain_events(0.1) == []


def test_job_uuid_header_is_honoured(sim: SimulatorThread) -> None:
    c = auth(sim.esl_port)
    c.command("event plain BACKGROUND_JOB")
    reply = c.command("bgapi status\nJob-UUID: 11111111-2222-3333-4444-555555555555")
    assert reply.get("Job-UUID") == "11111111-2222-3333-4444-555555555555"
    bg = c.read_event("BACKGROUND_JOB")
    assert bg.get("Job-UUID") == "11111111-2222-3333-4444-555555555555"
    assert "Job-Command-Arg" not in bg.names
    assert bg.body.startswith(b"UP ")


@pytest.mark.parametrize(
    ("dest", "error"),
    [
        ("user/1019", "-ERR USER_NOT_REGISTERED\n"),
        ("user/1099", "-ERR SUBSCRIBER_ABSENT\n"),
        ("user/1003", "-ERR USER_BUSY\n"),
        ("user/1005", "-ERR CALL_REJECTED\n"),
        ("{originate_timeout=0.3}user/1004", "-ERR NO_ANSWER\n"),
        ("error/USER_BUSY", "-ERR USER_BUSY\n"),
    ],
)
def test_originate_failures(sim: SimulatorThread, dest: str, error: str) -> None:
    c = auth(sim.esl_port)
    c.command("event plain BACKGROUND_JOB CHANNEL_HANGUP_COMPLETE")
    assert c.command(f"api originate {dest} &park()", timeout=10).body == error.encode()
    c.command(f"bgapi originate {dest} &park()")
    bg = c.read_event("BACKGROUND_JOB", timeout=10)
    assert bg.body == error.encode()
    assert sim.live_channel_count() == 0


def test_no_answer_after_extension_ring_time(sim: SimulatorThread) -> None:
    sim.set_extension("1004", Extension("no_answer", answer_after=None, ring_seconds=0.2))
    c = auth(sim.esl_port)
    c.command("event plain CHANNEL_HANGUP_COMPLETE")
    assert c.command("api originate user/1004 &park()").body == b"-ERR NO_ANSWER\n"
    assert c.read_event("CHANNEL_HANGUP_COMPLETE").get("Hangup-Cause") == "NO_ANSWER"


def test_early_media_reports_ok_at_183(sim: SimulatorThread) -> None:
    name = "esl_inbound_unicast_early_media_originate.txt"
    c = auth(sim.esl_port)
    c.command(
        "event plain CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER "
        "CHANNEL_PARK CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB"
    )
    uuid = "5e1f0000-0000-4000-8000-0000000ea21e"
    c.command(
        f"bgapi originate {{origination_uuid={uuid},origination_caller_id_number=1005}}"
        "user/1006 &park()"
    )
    events = c.events_until("BACKGROUND_JOB")
    rec = fs_events(name)
    assert [e.name for e in events] == [e.name for e in rec[: len(events)]]
    for mine, theirs in zip(events, rec, strict=False):
        assert skeleton(mine) == skeleton(theirs), mine.name
        assert mine.get("Channel-Call-State") == theirs.get("Channel-Call-State")
        assert mine.get("Answer-State") == theirs.get("Answer-State")
    assert events[-1].body == f"+OK {uuid}\n".encode()
    # Unicast after CHANNEL_PROGRESS_MEDIA is fine (no crash) and media flows.
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    fs_port = _free_udp_port()
    reply = c.command(
        f"sendmsg {uuid}\ncall-command: unicast\nlocal-ip: 127.0.0.1\nlocal-port: {fs_port}\n"
        f"remote-ip: 127.0.0.1\nremote-port: {udp.getsockname()[1]}\ntransport: udp"
    )
    assert reply.get("Reply-Text") == "+OK"
    data, addr = udp.recvfrom(4096)
    assert len(data) == 320 and addr[1] == fs_port
    c.command(f"api uuid_kill {uuid}")
    assert c.read_event("CHANNEL_HANGUP_COMPLETE").get("Hangup-Cause") == "NORMAL_CLEARING"


def test_ringing_without_sdp_reports_nothing_until_answer(sim: SimulatorThread) -> None:
    sim.set_extension("1007", Extension("ringing", answer_after=0.3, audio=AudioSource("echo")))
    c = auth(sim.esl_port)
    c.command("event plain CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER BACKGROUND_JOB")
    c.command("bgapi originate user/1007 &park()")
    names = [e.name for e in c.events_until("BACKGROUND_JOB")]
    assert names == ["CHANNEL_PROGRESS", "CHANNEL_ANSWER", "BACKGROUND_JOB"]


def test_ignore_early_media_waits_for_answer(sim: SimulatorThread) -> None:
    sim.set_extension("1006", Extension("early_media", answer_after=0.2))
    c = auth(sim.esl_port)
    c.command("event plain CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER BACKGROUND_JOB")
    c.command("bgapi originate {ignore_early_media=true}user/1006 &park()")
    names = [e.name for e in c.events_until("BACKGROUND_JOB")]
    assert names == ["CHANNEL_PROGRESS_MEDIA", "CHANNEL_ANSWER", "BACKGROUND_JOB"]


def test_origination_variables_show_on_the_channel(sim: SimulatorThread) -> None:
    c = auth(sim.esl_port)
    c.command("event plain CHANNEL_CREATE BACKGROUND_JOB")
    uuid = "00000000-1111-4222-8333-444444444444"
    c.command(
        f"bgapi originate {{origination_uuid={uuid},origination_caller_id_number=1005,"
        "origination_caller_id_name='Web User',sip_h_X-ArInfo=hello}user/1002@127.0.0.1 &park()"
    )
    create = c.read_event("CHANNEL_CREATE")
    assert create.get("Unique-ID") == uuid
    assert create.get("variable_sip_h_X-ArInfo") == "hello"
    assert create.get("Caller-Caller-ID-Name") == "Web User"
    assert create.get("variable_origination_uuid") == uuid
    assert c.read_event("BACKGROUND_JOB").body == f"+OK {uuid}\n".encode()
    assert sim.api(f"uuid_getvar {uuid} sip_h_X-ArInfo") == "hello"
    sim.hangup(uuid)


def test_unicast_on_parked_echo_channel(sim: SimulatorThread) -> None:
    np = pytest.importorskip("numpy")
    c = auth(sim.esl_port)
    reply = c.command("api originate {origination_caller_id_number=1005}user/1001 &park()")
    uuid = reply.body.decode().split()[1]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    fs_port = _free_udp_port()
    c.command(
        f"sendmsg {uuid}\ncall-command: unicast\nlocal-ip: 127.0.0.1\nlocal-port: {fs_port}\n"
        f"remote-ip: 127.0.0.1\nremote-port: {udp.getsockname()[1]}\ntransport: udp"
    )
    # Play 440 Hz into the echo phone; it comes back.
    n = np.arange(160 * 60)
    tone = (9000 * np.sin(2 * np.pi * 440 * n / 8000)).astype("<i2").tobytes()
    got: list[bytes] = []
    data, _ = udp.recvfrom(4096)
    for i in range(60):
        udp.sendto(tone[i * 320 : (i + 1) * 320], ("127.0.0.1", fs_port))
        data, _ = udp.recvfrom(4096)
        got.append(data)
    audio = np.frombuffer(b"".join(g for g in got if g.count(0xFF) != len(g)), "<i2")
    spectrum = np.abs(np.fft.rfft(audio.astype(float)))
    assert abs(np.argmax(spectrum) * 8000 / len(audio) - 440) < 15
    ch = sim.get_channel(uuid)
    assert ch is not None and ch.unicast is not None
    assert ch.unicast.frames_received >= 50
    c.command(f"api uuid_kill {uuid}")
    assert sim.wait_for(lambda: sim.live_channel_count() == 0, 5)


def test_stale_timestamps_option() -> None:
    with SimulatorThread(SimConfig(timestamp_refresh_s=30.0)) as s:
        s.set_extension("1007", Extension("ringing", answer_after=0.2))
        c = auth(s.esl_port)
        c.command("event plain CHANNEL_CREATE CHANNEL_ANSWER")
        c.command("bgapi originate user/1007 &park()")
        create = c.read_event("CHANNEL_CREATE")
        time.sleep(0.05)
        answer = c.read_event("CHANNEL_ANSWER", timeout=5)
        assert create.get("Event-Date-Timestamp") == answer.get("Event-Date-Timestamp")
