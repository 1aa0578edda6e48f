"""The simulator's ``unicast`` with ``flags: native`` against the recording of a real
FreeSWITCH 1.10.12 (tests/fixtures/freeswitch/native_unicast/, PCMU phones).

The recorded commands are sent to the simulator as they are (only the UDP ports change, so
the test never collides with another); the reply, the read codec headers of CHANNEL_PARK, the
datagram sizes, the 0xFF filler and the audio both ways must come out as the switch's did.
"""

from __future__ import annotations

import csv
import re
import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from support.esl_transcripts import FIXTURES, read_transcript
from support.ports_and_waits import free_udp_port
from support.sim_wire import Conn, Event, Frame, auth, split_frames

from esl_bridge.esl import commands as cmd
from esl_bridge.media.unicast import channel_codec_name
from esl_bridge.sim import Extension, SimConfig, SimulatorThread, g711
from esl_bridge.sim.codecs import codec_by_name
from esl_bridge.sim.media import AudioSource

NATIVE = FIXTURES / "native_unicast"
UUID_TALK = "5e1f0000-0000-4000-8000-0000000b0001"
UUID_NORTP = "5e1f0000-0000-4000-8000-0000000b0002"

pytestmark = pytest.mark.timeout(60)


def recorded(name: str) -> tuple[list[str], list[Frame]]:
    """The commands the recorder sent and every frame FreeSWITCH sent, in order."""
    commands, frames, buf = [], [], b""
    for rec in read_transcript(NATIVE / name).records:
        if rec.from_freeswitch:
            buf += rec.data
            got, buf = split_frames(buf)
            frames += got
        else:
            commands.append(rec.data.decode())
    return commands, frames


def recorded_reply(frames: list[Frame], prefix: str) -> str | None:
    """Reply-Text of FreeSWITCH's reply to the recorder's command starting with ``prefix``
    (replies come in the order of the commands)."""
    commands, _ = recorded("esl_inbound_native_unicast_talk.txt")
    replies = [f for f in frames if f.content_type in ("command/reply", "api/response")]
    index = next(i for i, c in enumerate(commands) if c.startswith(prefix))
    return replies[index].get("Reply-Text")


def recorded_event(frames: list[Frame], name: str) -> Event:
    return next(
        f.event() for f in frames if f.content_type == "text/event-plain" and f.event().name == name
    )


def codec_headers(event: Event) -> dict[str, str]:
    """The headers naming the channel's codec (what the gateway reads it from)."""
    return {
        k: event.get(k) or ""
        for k in event.names
        if "Codec-Name" in k or k in ("variable_read_codec", "variable_write_codec")
    }


def recorded_datagrams(scenario: str) -> list[dict[str, str]]:
    rows = csv.DictReader((NATIVE / f"{scenario}_datagrams.csv").open())
    return [r for r in rows if r["kind"] == "unicast fs->app"]


def pcmu_tone(freq: float, index: int) -> bytes:
    t = np.arange(index * 160, (index + 1) * 160) / 8000
    l16 = (9000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()
    return g711.encode("PCMU", l16)


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / 8000)[int(np.argmax(spectrum))])


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig()) as s:
        # The recorded phones: 1001 answers and plays 1 kHz, 1009 answers 183 and sends no RTP.
        s.set_extension("1001", Extension("tone", audio=AudioSource("tone", 1000.0)))
        s.set_extension(
            "1009", Extension("early_media", answer_after=None, audio=AudioSource("none"))
        )
        yield s
        assert not s.crashed, s.crash_reason


def with_ports(command: str, fs_port: int, app_port: int) -> str:
    command = re.sub(r"local-port: \d+", f"local-port: {fs_port}", command)
    return re.sub(r"remote-port: \d+", f"remote-port: {app_port}", command)


def replay_until_unicast(
    sim: SimulatorThread, scenario: str, udp: socket.socket, fs_port: int
) -> tuple[Conn, Event, Frame, list[Frame]]:
    """Send the recorded commands up to and including the unicast; returns the connection,
    the event the recorder waited for, the unicast reply and the recorded frames."""
    commands, frames = recorded(f"esl_inbound_native_unicast_{scenario}.txt")
    wait_for = "CHANNEL_PARK" if scenario == "talk" else "CHANNEL_PROGRESS_MEDIA"
    c = auth(sim.esl_port)
    event: Event | None = None
    for command in commands[1:]:  # [0] is auth
        if command.startswith("sendmsg"):
            assert event is not None
            unicast = with_ports(command, fs_port, udp.getsockname()[1])
            assert "\nflags: native\n" in unicast
            return c, event, c.command(unicast, timeout=10), frames
        c.command(command, timeout=10)
        if command.startswith("bgapi originate"):
            event = c.read_event(wait_for, timeout=10)
    raise AssertionError("no unicast in the recording")


def receive(udp: socket.socket, count: int) -> list[bytes]:
    out = []
    udp.settimeout(5)
    while len(out) < count:
        out.append(udp.recvfrom(8192)[0])
    return out


def test_native_talk_matches_the_recording(sim: SimulatorThread) -> None:
    fs_port = free_udp_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        c, park, reply, frames = replay_until_unicast(sim, "talk", udp, fs_port)
        assert reply.get("Reply-Text") == recorded_reply(frames, "sendmsg") == "+OK"
        # The read codec as the real switch names it, in the event the gateway reads.
        real = codec_headers(recorded_event(frames, "CHANNEL_PARK"))
        assert real == {
            "Channel-Read-Codec-Name": "PCMU",
            "Channel-Write-Codec-Name": "PCMU",
            "variable_read_codec": "PCMU",
            "variable_write_codec": "PCMU",
        }
        assert codec_headers(park) == real
        assert channel_codec_name(dict(park.headers)) == "PCMU"

        got = receive(udp, 60)
        rows = recorded_datagrams("talk")
        real_kinds = {(int(r["size"]), r["all_ff"] == "1") for r in rows}
        kinds = {(len(d), d.count(0xFF) == len(d)) for d in got}
        assert real_kinds == {(160, False), (320, True)}
        assert kinds == real_kinds  # 160-byte PCMU; the filler keeps the L16 size
        assert (rows[0]["size"], rows[0]["all_ff"]) == ("320", "1") and len(got[0]) == 320
        audio = np.concatenate(
            [np.asarray(g711.decode("PCMU", d), dtype=float) for d in got if len(d) == 160]
        )
        assert dominant_hz(audio) == pytest.approx(1000, abs=10)

        # Back toward the phone: the switch takes 160-byte PCMU frames.
        source = ("127.0.0.1", fs_port)
        for k in range(50):
            udp.sendto(pcmu_tone(440.0, k), source)
        channel = sim.get_channel(UUID_TALK)
        assert channel is not None and channel.unicast is not None
        stream = channel.unicast
        deadline = time.monotonic() + 10
        while stream.frames_received < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stream.native and stream.frames_received == 50
        heard = np.asarray(stream.received_samples(), dtype=float)
        assert len(heard) == 50 * 160
        assert dominant_hz(heard) == pytest.approx(440, abs=10)
        c.command(f"api uuid_kill {UUID_TALK}", timeout=10)
        c.close()
    finally:
        udp.close()


def test_native_filler_when_the_phone_sends_nothing_matches_the_recording(
    sim: SimulatorThread,
) -> None:
    fs_port = free_udp_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        c, progress, reply, frames = replay_until_unicast(sim, "nortp", udp, fs_port)
        assert reply.get("Reply-Text") == "+OK"
        # Early media names no read codec (the gateway then keeps the L16 path).
        real = codec_headers(recorded_event(frames, "CHANNEL_PROGRESS_MEDIA"))
        assert real == {} and codec_headers(progress) == real
        assert channel_codec_name(dict(progress.headers)) is None
        rows = recorded_datagrams("nortp")
        assert {(r["size"], r["all_ff"]) for r in rows} == {("320", "1")}
        got = receive(udp, 20)
        assert {(len(d), d.count(0xFF) == len(d)) for d in got} == {(320, True)}
        c.command(f"api uuid_kill {UUID_NORTP}", timeout=10)
        c.close()
    finally:
        udp.close()


def test_the_gateways_unicast_command_is_the_recorded_one() -> None:
    """esl/commands.py builds, byte for byte, the sendmsg the real switch took."""
    commands, _frames = recorded("esl_inbound_native_unicast_talk.txt")
    sent = next(c for c in commands if c.startswith("sendmsg"))
    ours = cmd.sendmsg_unicast("127.0.0.1", 9500, "127.0.0.1", 9501, uuid=UUID_TALK, flags="native")
    assert ours == sent.encode()


def test_native_on_a_codec_the_simulator_cannot_send_is_refused_loudly() -> None:
    with SimulatorThread(SimConfig()) as s:
        s.set_extension("1000", Extension("tone", codec=codec_by_name("G722")))
        c = auth(s.esl_port)
        c.send("event plain CHANNEL_PARK\n\n")
        c.read_reply()
        c.command(f"bgapi originate {{origination_uuid={UUID_TALK}}}user/1000 &park()")
        c.read_event("CHANNEL_PARK", timeout=10)
        port = free_udp_port()
        reply = c.command(
            cmd.sendmsg_unicast(
                "127.0.0.1", port, "127.0.0.1", free_udp_port(), uuid=UUID_TALK, flags="native"
            ).decode()
        )
        assert reply.get("Reply-Text") == "+OK"  # the switch answers first
        channel = s.get_channel(UUID_TALK)
        deadline = time.monotonic() + 5
        while (channel is None or channel.unicast is None) and time.monotonic() < deadline:
            time.sleep(0.02)
            channel = s.get_channel(UUID_TALK)
        assert channel is not None and channel.unicast is not None
        stream = channel.unicast
        while stream.error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stream.error == "native unicast of G722 is not simulated"
        assert not stream.started
        c.close()
        assert not s.crashed
