"""Outbound socket calls (a simulated phone dials 0<uid>) against the recorded sessions."""

from __future__ import annotations

import itertools
import socket
import time
import urllib.parse
from collections.abc import Iterator

import pytest
from support.ports_and_waits import free_port
from support.ports_and_waits import free_udp_port as _free_udp_port
from support.sim_wire import Conn, Event, auth, fs_events, fs_frames, read_transcript

from esl_bridge.sim import SimConfig, SimulatorThread, wire

MAIN = "esl_outbound_main_call.txt"
PRE_ANSWER = "esl_outbound_pre_answer_early_media_app_hangup.txt"


@pytest.fixture
def gateway() -> Iterator[socket.socket]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(5)
    yield srv
    srv.close()


@pytest.fixture
def sim(gateway: socket.socket) -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig(socket_target=gateway.getsockname())) as s:
        yield s
        assert not s.crashed, s.crash_reason


def accept(gateway: socket.socket) -> Conn:
    sock, _ = gateway.accept()
    return Conn(sock)


def skeleton(names: list[str]) -> list[str]:
    return [k for k in names if not k.startswith("variable_")]


def setup_call(conn: Conn) -> None:
    conn.command("connect")
    assert conn.command("myevents").get("Reply-Text") == "+OK Events Enabled"
    assert conn.command("linger").get("Reply-Text") == "+OK will linger"


def label(ev: Event) -> str:
    app = ev.get("Application")
    return f"{ev.name}/{app}" if app else ev.name


def test_connect_reply_matches_recording(sim: SimulatorThread, gateway: socket.socket) -> None:
    call = sim.place_call("1001", "01002", cus_data="a b&c")
    g = accept(gateway)
    reply = g.command("connect")
    rec = fs_frames(MAIN)[0]
    names = [k for k, _ in reply.headers]
    rec_names = [k for k, _ in rec.headers]
    assert skeleton(names) == skeleton(rec_names)
    assert reply.raw.endswith(
        b"Content-Type: command/reply\nReply-Text: %2BOK%0A\nSocket-Mode: async\nControl: full\n\n"
    )
    assert "Content-Length" not in names
    values = dict(reply.headers)
    assert values["variable_sip_h_X-Number"] == "%3Csip%3A1002%40127.0.0.1%3E"
    assert values["variable_sip_h_X-CusData"] == "a%20b%26c"
    for key in (
        "Caller-Caller-ID-Number",
        "Caller-Caller-ID-Name",
        "Caller-Destination-Number",
        "Channel-Destination-Number",
        "variable_sip_req_user",
        "variable_sip_to_user",
        "variable_DP_MATCH",
        "variable_effective_caller_id_name",
        "Answer-State",
        "Channel-Call-State",
        "Channel-State",
        "Call-Direction",
        "Channel-Name",
        "variable_current_application",
    ):
        assert values[key] == dict(rec.headers)[key], key
    assert not any(k.startswith("Channel-Read-Codec") for k in names)
    # Same variables as the recording (plus X-CusData), in the same order.
    rec_vars = [k for k in rec_names if k.startswith("variable_")]
    my_vars = [k for k in names if k.startswith("variable_") and k != "variable_sip_h_X-CusData"]
    assert my_vars == rec_vars
    # Every value is URL-encoded the FreeSWITCH way.
    for k, v in reply.headers[:-4]:
        assert wire.url_encode(urllib.parse.unquote(v)) == v, k
    assert values["Unique-ID"] == call.uuid


def test_main_call_event_flow(sim: SimulatorThread, gateway: socket.socket) -> None:
    """connect, myevents, linger, answer, unicast, DTMF both ways, caller BYE, exit."""
    call = sim.place_call("1001", "01002")
    g = accept(gateway)
    setup_call(g)
    assert g.command("sendmsg\ncall-command: execute\nexecute-app-name: answer").get(
        "Reply-Text"
    ) == ("+OK")
    events = g.events_until("CHANNEL_EXECUTE_COMPLETE")
    rec = fs_events(MAIN)
    first = rec[:5]  # CHANNEL_PARK, then the answer's four events
    assert first[0].name == "CHANNEL_PARK"
    if events[0].name != "CHANNEL_PARK":
        # The park comes a moment after connect, and events reach a socket only once it
        # has said myevents: a client slower than that (a loaded machine) never sees it.
        first = first[1:]
    assert [label(e) for e in events] == [label(e) for e in first]
    for mine, theirs in zip(events, first, strict=True):
        assert skeleton(mine.names) == skeleton(theirs.names), mine.name
        assert mine.names == theirs.names, mine.name  # variables too, same order
        for key in ("Channel-State", "Channel-Call-State", "Answer-State", "Application-Response"):
            assert mine.get(key) == theirs.get(key), (mine.name, key)
    assert call.answered
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    fs_port = _free_udp_port()
    g.command(_unicast(fs_port, udp.getsockname()[1]))
    data, addr = udp.recvfrom(4096)
    assert len(data) == 320 and addr == ("127.0.0.1", fs_port)

    call.send_dtmf("12#")
    dtmf = [g.read_event("DTMF") for _ in range(3)]
    assert [d.get("DTMF-Digit") for d in dtmf] == ["1", "2", "#"]
    assert dict(dtmf[2].headers)["DTMF-Digit"] == "%23"
    rec_dtmf = next(e for e in rec if e.name == "DTMF")
    assert dtmf[0].names == rec_dtmf.names

    g.command("sendmsg\ncall-command: execute\nexecute-app-name: send_dtmf\nexecute-app-arg: 456")
    ex = g.events_until("CHANNEL_EXECUTE_COMPLETE")
    assert [label(e) for e in ex] == [
        "CHANNEL_EXECUTE/send_dtmf",
        "CHANNEL_EXECUTE_COMPLETE/send_dtmf",
    ]
    api = g.command(f"api uuid_send_dtmf {call.uuid} 789")
    assert api.raw == wire.api_response(f"+OK {call.uuid} sent DTMF 789.\n")
    assert call.dtmf_to_phone == "456789"

    call.hangup()
    burst = g.events_until("CHANNEL_HANGUP_COMPLETE")
    rec_tail = rec[-6:]
    assert [label(e) for e in burst] == [label(e) for e in rec_tail]
    for mine, theirs in zip(burst, rec_tail, strict=False):
        assert skeleton(mine.names) == skeleton(theirs.names), label(mine)
    assert burst[-1].get("Hangup-Cause") == "NORMAL_CLEARING"
    notice = g.read_frame()
    assert notice.raw == wire.linger_notice(call.uuid, "sofia/internal/1001@127.0.0.1")
    # The socket stays open until the app says exit.
    g.wait_closed(0.3)
    assert not g.closed
    g.send("exit\n\n")
    assert g.wait_closed() == wire.command_reply("+OK bye") + wire.disconnect_notice_outbound(
        call.uuid
    )
    assert g.closed
    assert sim.live_channel_count() == 0
    assert call.finished


def test_pre_answer_unicast_answer_app_hangup(sim: SimulatorThread, gateway: socket.socket) -> None:
    """The recorded pre_answer call: early media works, app hangup event order."""
    call = sim.place_call("1001", "0998")
    g = accept(gateway)
    setup_call(g)
    g.command("sendmsg\ncall-command: execute\nexecute-app-name: pre_answer")
    events = g.events_until("CHANNEL_EXECUTE_COMPLETE")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    fs_port = _free_udp_port()
    g.command(_unicast(fs_port, udp.getsockname()[1]))
    assert len(udp.recvfrom(4096)[0]) == 320
    g.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    events += g.events_until("CHANNEL_EXECUTE_COMPLETE")
    g.command(
        "sendmsg\ncall-command: execute\nexecute-app-name: hangup\nexecute-app-arg: NORMAL_CLEARING"
    )
    frames = []
    while True:
        f = g.read_frame()
        frames.append(f)
        if f.content_type == "text/event-plain" and f.event().name == "CHANNEL_HANGUP_COMPLETE":
            break
    seq = [label(f.event()) if f.content_type == "text/event-plain" else "NOTICE" for f in frames]
    rec_frames = fs_frames(PRE_ANSWER)
    rec_seq = [
        label(f.event())
        if f.content_type == "text/event-plain"
        else ("NOTICE" if f.content_type == "text/disconnect-notice" else "REPLY")
        for f in rec_frames
    ]
    rec_events = [s for s in rec_seq if s not in ("REPLY",)]
    mine = [label(e) for e in events] + seq
    # Same events in the same order as recorded (the recorded PARK came before the first
    # EXECUTE; the linger notice right after CHANNEL_HANGUP).
    assert mine == rec_events[: rec_events.index("CHANNEL_HANGUP_COMPLETE") + 1]
    for ev in events:
        if ev.name == "CHANNEL_EXECUTE_COMPLETE" and ev.get("Application") == "pre_answer":
            assert (ev.get("Channel-Call-State"), ev.get("Answer-State")) == ("EARLY", "early")
    g.send("exit\n\n")
    assert g.wait_closed().endswith(wire.disconnect_notice_outbound(call.uuid))
    assert call.hangup_cause == "NORMAL_CLEARING"


@pytest.mark.parametrize(
    ("codec", "size", "channels", "rate"),
    [
        ("PCMU", 320, 1, 8000),
        ("G722", 640, 1, 16000),
        ("OPUS", 1920, 1, 48000),
        ("OPUS_STEREO", 3840, 2, 48000),
    ],
)
def test_unicast_datagrams(
    sim: SimulatorThread, gateway: socket.socket, codec: str, size: int, channels: int, rate: int
) -> None:
    np = pytest.importorskip("numpy")
    call = sim.place_call("1003", "01002", codec=codec, audio="tone440")
    g = accept(gateway)
    setup_call(g)
    g.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    answer = g.events_until("CHANNEL_ANSWER")[-1]
    assert answer.get("variable_read_rate") == str(rate)
    assert answer.get("variable_rtp_use_codec_channels") == str(channels)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    fs_port = _free_udp_port()
    g.command(_unicast(fs_port, udp.getsockname()[1]))
    got = []
    t0 = time.monotonic()
    while len(got) < 25:
        data, addr = udp.recvfrom(8192)
        assert addr == ("127.0.0.1", fs_port)
        got.append(data)
        udp.sendto(data, addr)  # the app answers with frames of the same size
    elapsed = time.monotonic() - t0
    assert {len(d) for d in got} == {size}
    assert got[0] == b"\xff" * size  # the recorded first datagram
    assert elapsed > 0.2  # 25 frames paced at 20 ms cannot arrive in a burst
    audio = np.frombuffer(b"".join(got[1:]), "<i2").reshape(-1, channels)
    if channels == 2:
        assert (audio[:, 0] == audio[:, 1]).all()  # interleaved L == R
    mono = audio[:, 0].astype(float)
    freq = np.argmax(np.abs(np.fft.rfft(mono))) * rate / len(mono)
    assert abs(freq - 440) < 15  # little-endian: clean tone
    big = np.frombuffer(b"".join(got[1:]), ">i2").astype(float)
    assert np.abs(big).mean() > np.abs(mono).mean()  # as big-endian it is noise
    stream = call.unicast
    assert stream is not None
    assert sim.wait_for(lambda: stream.frames_received >= 20, 2)
    assert {len(d.data) for d in stream.received} == {size}
    call.hangup()
    assert call.wait_finished()


def test_datagram_rate_is_about_50_per_second(sim: SimulatorThread, gateway: socket.socket) -> None:
    """One datagram per 20 ms, judged from the simulator's own send times (counting what
    arrives in a wall-clock second would judge the test thread's scheduling instead: a
    stall of this thread makes a burst of what queued meanwhile)."""
    call = sim.place_call("1001", "01002")
    g = accept(gateway)
    setup_call(g)
    g.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    g.events_until("CHANNEL_EXECUTE_COMPLETE")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    g.command(_unicast(_free_udp_port(), udp.getsockname()[1]))
    udp.recvfrom(4096)
    wanted = 51
    assert sim.wait_for(lambda: call.unicast is not None, 10)
    stream = call.unicast
    assert stream is not None
    assert sim.wait_for(lambda: len(stream.sent) >= wanted, 30)
    times = [d.monotonic for d in stream.sent[:wanted]]
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    median_ms = gaps[len(gaps) // 2] * 1000
    assert 15.0 <= median_ms <= 25.0, f"median spacing {median_ms:.1f} ms"
    # Never faster than real time (a stall re-anchors the clock rather than bursting).
    assert times[-1] - times[0] >= 0.75 * (wanted - 1) * 0.02
    udp.close()


def test_unicast_before_answer_is_fatal(sim: SimulatorThread, gateway: socket.socket) -> None:
    """docs/freeswitch.rst, fact 1: +OK, then everything drops; the simulator reports why."""
    inbound = auth(sim.esl_port)
    call = sim.place_call("1001", "0999")
    g = accept(gateway)
    setup_call(g)
    reply = g.command(_unicast(_free_udp_port(), _free_udp_port()))
    assert reply.raw == wire.command_reply("+OK")
    g.wait_closed(3)
    assert g.closed
    inbound.wait_closed(3)
    assert inbound.closed
    assert sim.crashed and "without a read codec" in (sim.crash_reason or "")
    assert call.finished
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", sim.esl_port), timeout=1).recv(1)
    sim.restart()
    assert not sim.crashed
    auth(sim.esl_port).command("api status")


def test_unquoted_socket_runs_static(sim: SimulatorThread, gateway: socket.socket) -> None:
    rec = read_transcript("esl_outbound_originate_socket_unquoted_static_mode.txt")
    c = auth(sim.esl_port)
    host, port = gateway.getsockname()
    c.command("event plain BACKGROUND_JOB")
    c.command(
        "bgapi originate {origination_caller_id_number=1005}user/1001 "
        f"&socket({host}:{port} async full)"
    )
    uuid = c.read_event("BACKGROUND_JOB").body.decode().split()[1]
    g = accept(gateway)
    reply = g.command("connect")
    assert reply.raw.endswith(b"Socket-Mode: static\nControl: single-channel\n\n")
    rec_reply = fs_frames("esl_outbound_originate_socket_unquoted_static_mode.txt")[0]
    assert skeleton([k for k, _ in reply.headers]) == skeleton([k for k, _ in rec_reply.headers])
    assert g.command("myevents").raw == rec[3].data
    assert g.command("linger").raw == rec[5].data  # -ERR command not found
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.4)
    assert g.command(_unicast(_free_udp_port(), udp.getsockname()[1])).raw == rec[7].data
    with pytest.raises(TimeoutError):
        udp.recvfrom(4096)  # no datagram ever flows
    assert not sim.crashed
    c.command(f"api uuid_kill {uuid}")
    hup = g.read_event("CHANNEL_HANGUP")
    assert hup.get("Hangup-Cause") == "NORMAL_CLEARING"
    assert g.wait_closed() == wire.disconnect_notice_outbound(uuid)


def test_quoted_socket_runs_async_full(sim: SimulatorThread, gateway: socket.socket) -> None:
    name = "esl_outbound_originate_socket_quoted_async_full.txt"
    c = auth(sim.esl_port)
    host, port = gateway.getsockname()
    c.command("event plain BACKGROUND_JOB")
    c.command(
        "bgapi originate {origination_caller_id_number=1005}user/1001 "
        f"'&socket({host}:{port} async full)'"
    )
    uuid = c.read_event("BACKGROUND_JOB").body.decode().split()[1]
    g = accept(gateway)
    reply = g.command("connect")
    rec = fs_frames(name)[0]
    assert skeleton([k for k, _ in reply.headers]) == skeleton([k for k, _ in rec.headers])
    assert [k for k, _ in reply.headers if k.startswith("variable_")] == [
        k for k, _ in rec.headers if k.startswith("variable_")
    ]
    values = dict(reply.headers)
    assert values["Socket-Mode"] == "async" and values["Control"] == "full"
    assert values["Call-Direction"] == "outbound"
    assert values["Caller-Caller-ID-Name"] == "Outbound%20Call"
    assert values["Caller-Orig-Caller-ID-Number"] == "1005"
    assert "variable_sip_h_X-Number" not in values
    setup = [g.command("myevents"), g.command("linger")]
    assert [r.get("Reply-Text") for r in setup] == ["+OK Events Enabled", "+OK will linger"]
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(2)
    g.command(_unicast(_free_udp_port(), udp.getsockname()[1]))
    assert len(udp.recvfrom(4096)[0]) == 320
    c.command(f"api uuid_kill {uuid}")
    names = [label(e) for e in g.events_until("CHANNEL_HANGUP_COMPLETE")]
    assert names[-6:] == [label(e) for e in fs_events(name)[-6:]]
    g.read_frame()  # linger notice
    g.send("exit\n\n")
    g.wait_closed()


def test_first_call_after_start_gets_late_batch(gateway: socket.socket) -> None:
    with SimulatorThread(
        # The recorded delay is about 0.5 s; a longer one keeps the "nothing yet" window
        # below well inside it on a loaded machine.
        SimConfig(socket_target=gateway.getsockname(), first_call_event_delay=3.0)
    ) as sim:
        sim.place_call("1001", "01002")
        g = accept(gateway)
        setup_call(g)
        g.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
        assert g.drain_events(0.3) == []  # nothing yet
        names: list[str] = []
        while "CHANNEL_EXECUTE_COMPLETE/answer" not in names:
            names.append(label(g.read_event(timeout=20)))
        rec = fs_events("esl_outbound_main_call_first_after_fs_start.txt")
        assert names == [label(e) for e in rec[: len(names)]]
        assert names[:4] == [
            "CHANNEL_STATE",
            "CHANNEL_EXECUTE/set",
            "CHANNEL_EXECUTE_COMPLETE/set",
            "CHANNEL_EXECUTE/socket",
        ]


def test_exit_hangs_up_and_connect_failure(sim: SimulatorThread, gateway: socket.socket) -> None:
    call = sim.place_call("1001", "01002")
    g = accept(gateway)
    setup_call(g)
    g.send("exit\n\n")
    # Events (CHANNEL_PARK, sent a moment after connect) may come before or after the
    # reply: FreeSWITCH does not order them, so the reply is looked for among them.
    assert g.read_reply().raw == wire.command_reply("+OK bye")
    g.wait_closed()
    assert g.closed
    assert call.wait_finished()
    # The socket app returns; the route of dialplan/ ends with its hangup (recorded:
    # orphans/esl_outbound_orphan_killed_answered.txt).
    assert call.hangup_cause == "NORMAL_TEMPORARY_FAILURE"
    closed = free_port()
    failed = sim.place_call("1001", "01002", target=("127.0.0.1", closed))
    assert not failed.wait_connected(3)
    assert failed.connect_error
    assert failed.wait_finished()
    assert sim.live_channel_count() == 0


def test_phone_hangup_after_and_dtmf_plan(sim: SimulatorThread, gateway: socket.socket) -> None:
    call = sim.place_call("1001", "01002", hangup_after=0.4, dtmf=[(0.1, "5")])
    g = accept(gateway)
    setup_call(g)
    g.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    events = g.events_until("CHANNEL_HANGUP_COMPLETE")
    assert [e.get("DTMF-Digit") for e in events if e.name == "DTMF"] == ["5"]
    assert call.finished and call.hangup_cause == "NORMAL_CLEARING"


def _unicast(local: int, remote: int) -> str:
    return (
        f"sendmsg\ncall-command: unicast\nlocal-ip: 127.0.0.1\nlocal-port: {local}\n"
        f"remote-ip: 127.0.0.1\nremote-port: {remote}\ntransport: udp"
    )


def test_loopback_originate_reaches_the_socket_route(
    sim: SimulatorThread, gateway: socket.socket
) -> None:
    """`originate loopback/0<uid>/default &park()` runs the `0` route (the issue's real-FS test)."""
    c = auth(sim.esl_port)
    c.command("event plain BACKGROUND_JOB")
    c.command("bgapi originate {origination_caller_id_number=1005}loopback/01002/default &park()")
    g = accept(gateway)
    reply = g.command("connect")
    values = dict(reply.headers)
    assert values["variable_sip_h_X-Number"] == "%3Csip%3A1002%40127.0.0.1%3E"
    assert values["Caller-Caller-ID-Number"] == "1005"
    assert values["Channel-Name"].startswith("loopback/01002")
    setup_call(g)
    g.command("sendmsg\ncall-command: execute\nexecute-app-name: answer")
    bg = c.read_event("BACKGROUND_JOB")
    assert bg.body.startswith(b"+OK ")
    uuid = bg.body.decode().split()[1]
    c.command(f"api uuid_kill {uuid}")
    g.events_until("CHANNEL_HANGUP_COMPLETE")
    g.send("exit\n\n")
    g.wait_closed()
    assert sim.wait_for(lambda: sim.live_channel_count() == 0, 3)


def test_gateway_destination(sim: SimulatorThread) -> None:
    c = auth(sim.esl_port)
    reply = c.command(
        "api originate {origination_caller_id_number=1005}sofia/gateway/pstn/9001 &park()"
    )
    assert reply.body.startswith(b"+OK ")
    uuid = reply.body.decode().split()[1]
    assert c.command("api show channels count").body == b"\n1 total.\n"
    listing = c.command("api show channels").body.decode()
    assert listing.startswith("uuid,direction,created,") and uuid in listing
    assert listing.endswith("\n\n1 total.\n")
    c.command(f"api uuid_kill {uuid}")
    assert sim.wait_for(lambda: sim.live_channel_count() == 0, 3)
