"""The simulator against FreeSWITCH 1.10.12 recordings for the orphan watchdog (issue 17).

The recordings are in tests/fixtures/freeswitch/orphans/ (README.md there: how each was made).
1. the api replies the watchdog relies on, byte for byte (sched_api, sched_del, hupall by
   variable, uuid_setvar_multi, uuid_getvar, uuid_exists, show channels as json);
2. a sched_api'd hupall hangs the tagged channel up, and sched_del keeps it from firing;
3. what a channel does when the gateway that controls it dies (its TCP connection ends
   abruptly): a. outbound socket, pre_answer + endless ringback; b. outbound socket, answered;
   c. inbound originator, answered and parked / still ringing.

The simulator does not model CHANNEL_CALLSTATE and CHANNEL_DESTROY (its module docstring), so
event sequences are compared without those two. Nothing here waits on the clock to decide:
every wait is for an event, a reply or a state the simulator reports.
"""

from __future__ import annotations

import json
import re
import socket
import struct
from collections.abc import Iterator

import pytest
from support.esl_transcripts import FIXTURES
from support.esl_transcripts import read_transcript as read_path
from support.sim_wire import Conn, Event, Frame, auth, split_frames

from esl_bridge.esl import orphans
from esl_bridge.esl.protocol import FrameParser, decode
from esl_bridge.sim import Extension, SimConfig, SimulatorThread

ORPHANS = "orphans/"
API = ORPHANS + "esl_inbound_orphan_api_replies.txt"
SCHED = ORPHANS + "esl_inbound_orphan_sched_hupall.txt"
UUID_A = "5e1f0000-0000-4000-8000-0000000a0001"
UUID_B = "5e1f0000-0000-4000-8000-0000000a0002"
RINGBACK = "tone_stream://%(2000,4000,440,480);loops=-1"
OBSERVED = (
    "CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER CHANNEL_CALLSTATE "
    "CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_PARK CHANNEL_UNPARK CHANNEL_HANGUP "
    "CHANNEL_HANGUP_COMPLETE CHANNEL_DESTROY BACKGROUND_JOB"
)
NOT_SIMULATED = {"CHANNEL_CALLSTATE", "CHANNEL_DESTROY"}
TAGS = "esl_bridge_node=n1;esl_bridge_instance=abc"


# ---- the recordings ----------------------------------------------------------------------------


class Exchange:
    """One command the recorder sent, FreeSWITCH's reply, and the events that came before the
    recorder's next command (the replay waits for those, by name and channel)."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.reply: Frame | None = None
        self.events: list[Event] = []


def exchanges(name: str) -> list[Exchange]:
    out: list[Exchange] = []
    buf = b""
    for rec in read_path(FIXTURES / name).records:
        if not rec.from_freeswitch:
            out.append(Exchange(rec.data.decode().rstrip("\n")))
            continue
        buf += rec.data
        frames, buf = split_frames(buf)
        for frame in frames:
            if frame.content_type == "text/event-plain":
                if out:
                    out[-1].events.append(frame.event())
            elif frame.content_type in ("command/reply", "api/response"):
                pending = next(x for x in out if x.reply is None)
                pending.reply = frame
    return out


def recorded_events(name: str) -> list[tuple[float, Event]]:
    """Every event FreeSWITCH sent, with the offset (s) of the record that completed it."""
    out: list[tuple[float, Event]] = []
    buf = b""
    for rec in read_path(FIXTURES / name).records:
        if rec.from_freeswitch:
            buf += rec.data
            frames, buf = split_frames(buf)
            out += [
                (rec.offset_s, f.event()) for f in frames if f.content_type == "text/event-plain"
            ]
    return out


def kill_offset(name: str) -> float:
    """When the recorder killed the gateway (its #NOTE), on the observer's clock."""
    for note in read_path(FIXTURES / name).notes:
        if "killed with SIGKILL" in note:
            return float(note.split()[1])
    raise AssertionError(f"{name}: no kill note")


def sequence(events: list[Event], uuid: str | None = None) -> list[str]:
    """Event names (with the application for EXECUTE events) of one channel."""
    out = []
    for ev in events:
        if ev.name in NOT_SIMULATED or (uuid and ev.get("Unique-ID") != uuid):
            continue
        app = ev.get("Application")
        out.append(f"{ev.name}/{app}" if "EXECUTE" in ev.name else ev.name)
    return out


def recorded_after_kill(name: str, uuid: str | None = None) -> list[str]:
    cut = kill_offset(name)
    return sequence([ev for t, ev in recorded_events(name) if t > cut], uuid)


def show_json_replies(name: str) -> list[bytes]:
    return [
        x.reply.body
        for x in exchanges(name)
        if x.command == "api show channels as json" and x.reply is not None
    ]


# ---- helpers against the simulator ------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimConfig()) as s:
        yield s
        assert not s.crashed, s.crash_reason


def wait_events(c: Conn, wanted: list[tuple[str, str | None]], timeout: float = 10.0) -> None:
    """Read events until each (name, Unique-ID) of `wanted` has been seen."""
    left = list(wanted)
    while left:
        ev = c.read_event(None, timeout)
        key = (ev.name, ev.get("Unique-ID"))
        if key in left:
            left.remove(key)
        elif (ev.name, None) in left:
            left.remove((ev.name, None))


def replay(sim: SimulatorThread, name: str) -> list[tuple[str, bytes, bytes]]:
    """Send the recorded commands to the simulator in order, waiting after each for the events
    the switch sent before the recorder's next command. Returns (command, recorded reply body,
    simulator reply body) for every api command; `show channels as json` is polled in the
    recording (the switch's channel list lags), so it is left to its own tests."""
    c = auth(sim.esl_port)
    out = []
    for x in exchanges(name)[1:]:  # [0] is auth
        if x.command == "api show channels as json" or x.command == "exit":
            wait_events(c, [(e.name, e.get("Unique-ID")) for e in x.events if e.name])
            continue
        assert x.reply is not None, x.command
        mine = c.command(x.command, timeout=10)
        out.append((x.command, x.reply.raw, mine.raw))
        wait_events(c, [(e.name, e.get("Unique-ID")) for e in x.events if e.name])
    return out


# ---- the gateway's own parsing, on the real bytes ---------------------------------------------


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "orphans").glob("esl_*.txt")), ids=lambda p: p.stem
)
def test_gateway_parser_reads_every_orphan_transcript(path) -> None:
    chunks = read_path(path).freeswitch_chunks()
    parser, whole = FrameParser(), FrameParser()
    frames = [f for chunk in chunks for f in parser.feed(chunk)]
    assert frames and frames == whole.feed(b"".join(chunks))
    for frame in frames:
        decode(frame)


def test_gateway_reads_the_recorded_listing_and_getvar_replies() -> None:
    listings = show_json_replies(API)
    assert [len(orphans.channel_uuids(b.decode())) for b in listings] == [0, 1, 2, 1, 0]
    assert orphans.channel_uuids(listings[2].decode()) == [UUID_A, UUID_B]
    getvar = [
        x.reply.body.decode()
        for x in exchanges(API)
        if x.command.startswith("api uuid_getvar ") and x.reply is not None
    ]
    assert [orphans.getvar_value(text) for text in getvar] == [None, "n1", "abc", None]


# ---- 1. api replies ---------------------------------------------------------------------------


def test_recorded_api_replies_parse_as_expected() -> None:
    replies = {x.command: x.reply.body for x in exchanges(API) if x.reply is not None}
    assert replies["api sched_del esl_bridge_abc_0"] == b"+OK Deleted: 1\n"
    assert replies["api sched_del esl_bridge_nosuch_0"] == b"+OK Deleted: 0\n"
    assert replies[
        f"api uuid_setvar_multi {UUID_A} esl_bridge_node=n1;esl_bridge_instance=abc"
    ] == (b"+OK\n")
    assert replies[f"api uuid_exists {UUID_B}"] == b"true"
    # `uuid_getvar` of an unset variable is `_undef_` with no newline; set: the bare value.
    getvar = [
        x.reply.body
        for x in exchanges(API)
        if x.command == f"api uuid_getvar {UUID_A} esl_bridge_node" and x.reply is not None
    ]
    assert getvar == [b"_undef_", b"n1", b"-ERR No such channel!\n"]


@pytest.mark.parametrize("name", [API, SCHED], ids=["api_replies", "sched_hupall"])
def test_api_replies_byte_for_byte(sim: SimulatorThread, name: str) -> None:
    different = []
    for command, theirs, mine in replay(sim, name):
        if command.startswith("api sched_api "):
            # The task id counts every task of the switch (it had its own): only the form.
            pattern = rb"Content-Type: api/response\nContent-Length: \d+\n\n\+OK Added: \d+\n"
            assert re.fullmatch(pattern, theirs), theirs
            if not re.fullmatch(pattern, mine):
                different.append((command, theirs, mine))
        elif mine != theirs:
            different.append((command, theirs, mine))
    assert different == []


def test_show_channels_as_json_empty_is_byte_exact(sim: SimulatorThread) -> None:
    recorded = show_json_replies(API)[0]
    assert recorded == b'{"row_count": 0}\n'  # a space after the colon, and a newline
    c = auth(sim.esl_port)
    assert c.command("api show channels as json").body == recorded


def test_show_channels_as_json_rows_like_the_switch(sim: SimulatorThread) -> None:
    """Two parked originated channels: the recorded columns in the recorded order, the values
    that identify the calls, and the text: compact JSON without a trailing newline."""
    recorded = next(b for b in show_json_replies(API) if b.startswith(b'{"row_count":2'))
    theirs = json.loads(recorded)
    assert recorded == json.dumps(theirs, separators=(",", ":")).encode()
    c = auth(sim.esl_port)
    for uuid in (UUID_A, UUID_B):
        assert c.command(f"api originate {{origination_uuid={uuid}}}user/1001 &park()").body == (
            f"+OK {uuid}\n".encode()
        )
    body = c.command("api show channels as json").body
    mine = json.loads(body)
    assert mine["row_count"] == 2
    assert [list(r) for r in mine["rows"]] == [list(r) for r in theirs["rows"]]
    keys = ("uuid", "direction", "state", "callstate", "application", "read_codec", "read_rate")
    checks = [
        (f"row {i} {k}", r[k], theirs["rows"][i][k])
        for i, r in enumerate(mine["rows"])
        for k in keys
    ]
    for i, r in enumerate(mine["rows"]):
        filled = [k for k, v in theirs["rows"][i].items() if v]
        checks.append((f"row {i} columns left empty", [k for k in filled if not r[k]], []))
    checks.append(("compact text", body, json.dumps(mine, separators=(",", ":")).encode()))
    found = differences(checks)
    assert not found, "\n".join(found)


def differences(checks: list[tuple[str, object, object]]) -> list[str]:
    """Every (what, simulator, FreeSWITCH) that differs, spelled out for the failure report."""
    return [
        f"{what}: simulator {mine!r} != FreeSWITCH {theirs!r}"
        for what, mine, theirs in checks
        if mine != theirs
    ]


# ---- 2. the watchdog --------------------------------------------------------------------------


def test_sched_api_hupall_fires_and_sched_del_cancels(sim: SimulatorThread) -> None:
    """As recorded: the hupall fires (cause NORMAL_TEMPORARY_FAILURE, about 2.5-3 s after a
    `+3` on the switch: whole seconds); after `sched_del` nothing is pending and the channel
    stays."""
    recorded = [(ev.name, ev.get("Hangup-Cause")) for _t, ev in recorded_events(SCHED) if ev.name]
    fired = [r for r in recorded if r[0] == "CHANNEL_HANGUP"]
    assert fired[:3] == [("CHANNEL_HANGUP", "NORMAL_TEMPORARY_FAILURE")] * 3
    c = auth(sim.esl_port)
    c.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE")
    c.command(
        f"api originate {{origination_uuid={UUID_A},esl_bridge_instance=abc}}user/1001 &park()"
    )
    c.command("api sched_api +3 g1 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
    hangup = c.read_event("CHANNEL_HANGUP", timeout=15)
    assert (hangup.get("Unique-ID"), hangup.get("Hangup-Cause")) == (
        UUID_A,
        "NORMAL_TEMPORARY_FAILURE",
    )
    c.read_event("CHANNEL_HANGUP_COMPLETE")
    c.command(
        f"api originate {{origination_uuid={UUID_B},esl_bridge_instance=abc}}user/1001 &park()"
    )
    c.command("api sched_api +3 g1 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
    assert c.command("api sched_del g1").body == b"+OK Deleted: 1\n"
    assert sim.run_sync(sim.sim.scheduled_groups) == []
    assert c.command(f"api uuid_exists {UUID_B}").body == b"true"


# ---- 3. the controlling connection dies -------------------------------------------------------


def abort(sock: socket.socket) -> None:
    """Close with RST, as the kernel does for a killed process with unread data."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def sessions_open(sim: SimulatorThread, *, outbound: bool) -> int:
    def count() -> int:
        return sum(1 for s in sim.sim.sessions if s.outbound == outbound and not s.closed)

    return sim.run_sync(count)


def rows(c: Conn) -> list[tuple[str, str, str, str]]:
    body = c.command("api show channels as json").body
    data = json.loads(body)
    return [(r["uuid"], r["state"], r["callstate"], r["application"]) for r in data.get("rows", [])]


def recorded_rows(name: str, label: str) -> list[tuple[str, str, str, str]]:
    for note in read_path(FIXTURES / name).notes:
        if f" {label}: show channels as json" in note:
            return [
                tuple(t)
                for t in re.findall(r"\('([^']*)', '([^']*)', '([^']*)', '([^']*)'\)", note)
            ]
    raise AssertionError(f"{name}: no {label} snapshot")


def outbound_app(
    sim: SimulatorThread, app: str, *, tag: bool = False, observer: Conn | None = None
) -> tuple[socket.socket, str, Conn]:
    """Listen where the dialplan's socket app connects; a phone dials 01000; the app does
    connect, (with `tag`, uuid_setvar_multi as the gateway does), myevents, linger, `app`,
    and for pre_answer the endless ringback."""
    listener = socket.create_server(("127.0.0.1", 0))
    if observer is None:
        observer = auth(sim.esl_port)
        observer.command(f"event plain {OBSERVED}")
    sim.place_call(caller="1001", dest="01000", target=listener.getsockname()[:2])
    listener.settimeout(10)
    sock, _ = listener.accept()
    listener.close()
    app_conn = Conn(sock)
    uuid = app_conn.command("connect").get("Unique-ID") or ""
    if tag:
        reply = app_conn.command(f"api uuid_setvar_multi {uuid} {TAGS}")
        assert reply.body == b"+OK\n"
    app_conn.command("myevents")
    app_conn.command("linger")
    app_conn.command(f"sendmsg\ncall-command: execute\nexecute-app-name: {app}")
    last = ("CHANNEL_EXECUTE_COMPLETE", app)
    read_until(app_conn, *last)
    if app == "pre_answer":
        app_conn.command(
            "sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
            f"execute-app-arg: {RINGBACK}"
        )
        last = ("CHANNEL_EXECUTE", "playback")
        read_until(app_conn, *last)
    read_until(observer, *last)  # what came before the death is not compared
    return sock, uuid, observer


def read_until(c: Conn, name: str, app: str) -> None:
    while True:
        ev = c.read_event(name, timeout=10)
        if ev.get("Application") == app:
            return


def test_socket_killed_in_ringback_channel_stays_until_the_phone_hangs_up(
    sim: SimulatorThread,
) -> None:
    """3a. Recorded: after the kill nothing happens to the channel (no event, still CS_EXECUTE
    and EARLY in `show channels` at +1 s, +5 s, +30 s); it ends when the phone gives up."""
    name = ORPHANS + "esl_inbound_orphan_socket_killed_preanswer_ringback_observer.txt"
    recorded_until_hangup = []
    for t, ev in recorded_events(name):
        if t > kill_offset(name) and ev.name == "CHANNEL_HANGUP":
            break
        if t > kill_offset(name):
            recorded_until_hangup.append(ev.name)
    assert recorded_until_hangup == []
    [(_u, state, callstate, _app)] = recorded_rows(name, "+30 s")
    sock, uuid, observer = outbound_app(sim, "pre_answer")
    abort(sock)
    assert sim.wait_for(lambda: sessions_open(sim, outbound=True) == 0, 10)
    assert [r[:3] for r in rows(observer)] == [(uuid, state, callstate)]  # CS_EXECUTE, EARLY
    assert sequence(observer.drain_events(0.2), uuid) == []
    assert sim.live_channel_count() == 1
    sim.hangup(uuid, "ORIGINATOR_CANCEL")  # the caller gives up (CANCEL)
    wait_events(observer, [("CHANNEL_HANGUP_COMPLETE", uuid)])
    assert sim.live_channel_count() == 0


def test_socket_killed_in_ringback_details(sim: SimulatorThread) -> None:
    """3a in detail: `show channels` names the running application, and the events when the
    phone hangs up."""
    name = ORPHANS + "esl_inbound_orphan_socket_killed_preanswer_ringback_observer.txt"
    sock, uuid, observer = outbound_app(sim, "pre_answer")
    abort(sock)
    assert sim.wait_for(lambda: sessions_open(sim, outbound=True) == 0, 10)
    [(_u, _state, _callstate, app)] = recorded_rows(name, "+5 s")
    [(_u, _state, _callstate, mine)] = rows(observer)
    sim.hangup(uuid, "ORIGINATOR_CANCEL")
    seen: list[Event] = []
    while not seen or seen[-1].name != "CHANNEL_HANGUP_COMPLETE":
        seen.append(observer.read_event(None, 10))
    causes = {ev.get("Hangup-Cause") for ev in seen if ev.get("Hangup-Cause")}
    checks = [
        ("application column", mine, app),  # playback
        ("events at the phone's hangup", sequence(seen, uuid), recorded_after_kill(name)),
        ("causes", causes, {"ORIGINATOR_CANCEL"}),
    ]
    found = differences(checks)
    assert not found, "\n".join(found)


def test_socket_killed_after_answer_dialplan_hangs_up(sim: SimulatorThread) -> None:
    """3b. Recorded: CHANNEL_UNPARK 27 ms after the kill, then the dialplan's `hangup
    NORMAL_TEMPORARY_FAILURE` runs: the phone gets 503, not a normal clearing."""
    name = ORPHANS + "esl_inbound_orphan_socket_killed_answered_observer.txt"
    sock, uuid, observer = outbound_app(sim, "answer")
    abort(sock)
    seen: list[Event] = []
    while not seen or seen[-1].name != "CHANNEL_HANGUP_COMPLETE":
        seen.append(observer.read_event(None, 10))
    assert sim.live_channel_count() == 0
    cause = seen[-1].get("Hangup-Cause")
    checks = [
        ("cause", cause, "NORMAL_TEMPORARY_FAILURE"),
        ("events after the kill", sequence(seen, uuid), recorded_after_kill(name)),
    ]
    found = differences(checks)
    assert not found, "\n".join(found)


def originator(sim: SimulatorThread, user: str, uuid: str, wait_for: str) -> Conn:
    c = auth(sim.esl_port)
    c.command("event plain CHANNEL_PROGRESS CHANNEL_ANSWER BACKGROUND_JOB")
    c.command(
        f"bgapi originate {{origination_uuid={uuid},esl_bridge_instance=abc}}user/{user} &park()"
    )
    c.read_event(wait_for, timeout=10)
    return c


def test_originator_killed_parked_channel_stays(sim: SimulatorThread) -> None:
    """3c, answered. Recorded: still parked (CS_EXECUTE, ACTIVE, park) at +1 s and +5 s; only
    the observer's uuid_kill ended it."""
    name = ORPHANS + "esl_inbound_orphan_originator_killed_answered_observer.txt"
    assert recorded_after_kill(name, UUID_A)[0] == "CHANNEL_HANGUP"
    observer = auth(sim.esl_port)
    observer.command(f"event plain {OBSERVED}")
    gateway = originator(sim, "1001", UUID_A, "BACKGROUND_JOB")
    abort(gateway.sock)
    assert sim.wait_for(lambda: sessions_open(sim, outbound=False) == 1, 10)  # the observer
    assert recorded_rows(name, "+5 s") == [(UUID_A, "CS_EXECUTE", "ACTIVE", "park")]
    assert rows(observer) == recorded_rows(name, "+5 s")
    assert "CHANNEL_HANGUP" not in sequence(observer.drain_events(0.2), UUID_A)
    assert observer.command(f"api uuid_kill {UUID_A}").body == b"+OK\n"
    wait_events(observer, [("CHANNEL_HANGUP_COMPLETE", UUID_A)])


def ringing_originator_killed(sim: SimulatorThread) -> Conn:
    sim.set_extension("1007", Extension("ringing", answer_after=5.0))
    observer = auth(sim.esl_port)
    observer.command(f"event plain {OBSERVED}")
    gateway = originator(sim, "1007", UUID_B, "CHANNEL_PROGRESS")
    wait_events(observer, [("CHANNEL_PROGRESS", UUID_B)])  # what came before is not compared
    abort(gateway.sock)
    assert sim.wait_for(lambda: sessions_open(sim, outbound=False) == 1, 10)
    channel = sim.get_channel(UUID_B)
    assert channel is not None and not channel.answered  # killed while it rang
    return observer


def test_originator_killed_while_ringing_answer_still_parks(sim: SimulatorThread) -> None:
    """3c, ringing. Recorded: the originate goes on without its connection; the phone rings
    on (CS_CONSUME_MEDIA), and when it answers the channel parks, ACTIVE, for good."""
    name = ORPHANS + "esl_inbound_orphan_originator_killed_ringing_observer.txt"
    observer = ringing_originator_killed(sim)
    [(_u, state, _callstate, app)] = recorded_rows(name, "+5 s")
    assert (state, app) == ("CS_CONSUME_MEDIA", "")
    assert [(r[0], r[1], r[3]) for r in rows(observer)] == [(UUID_B, state, app)]
    wait_events(observer, [("CHANNEL_PARK", UUID_B)], timeout=15)
    assert rows(observer) == recorded_rows(name, "1 s after accept")  # CS_EXECUTE, ACTIVE, park
    observer.command(f"api uuid_kill {UUID_B}")
    wait_events(observer, [("CHANNEL_HANGUP_COMPLETE", UUID_B)])
    assert sim.live_channel_count() == 0


def test_originator_killed_while_ringing_details(sim: SimulatorThread) -> None:
    """3c, ringing, in detail: the call state column while it rings, and the events from the
    answer to the park (BACKGROUND_JOB still fires, to whoever subscribed)."""
    name = ORPHANS + "esl_inbound_orphan_originator_killed_ringing_observer.txt"
    observer = ringing_originator_killed(sim)
    [(_u, _state, callstate, _app)] = recorded_rows(name, "+5 s")
    [(_u, _state, mine, _app)] = rows(observer)
    seen: list[Event] = []
    while not {"CHANNEL_PARK", "BACKGROUND_JOB"} <= {e.name for e in seen}:
        seen.append(observer.read_event(None, 15))
    expected = recorded_after_kill(name)
    expected = expected[: expected.index("CHANNEL_PARK") + 1]
    checks = [
        ("callstate column while ringing", mine, callstate),  # RINGING
        ("events from the answer to the park", sequence(seen), expected),
    ]
    observer.command(f"api uuid_kill {UUID_B}")
    wait_events(observer, [("CHANNEL_HANGUP_COMPLETE", UUID_B)])
    found = differences(checks)
    assert not found, "\n".join(found)


# ---- 2 + 3: the watchdog ends the orphans of every state ---------------------------------------


WATCHDOG = ORPHANS + "esl_inbound_orphan_watchdog_ends_every_state_observer.txt"


def end_orphans_of_every_state(sim: SimulatorThread) -> tuple[dict[str, Event], str]:
    """A parked answered originate, a ringing originate and a SIP caller in the ringback,
    each left by its killed controller; then the watchdog's task. Returns the
    CHANNEL_HANGUP_COMPLETE events by uuid, and the SIP caller's uuid."""
    sim.set_extension("1007", Extension("ringing", answer_after=None))
    observer = auth(sim.esl_port)
    observer.command(f"event plain {OBSERVED}")
    answered = originator(sim, "1001", UUID_A, "BACKGROUND_JOB")
    abort(answered.sock)
    ringing = originator(sim, "1007", UUID_B, "CHANNEL_PROGRESS")
    abort(ringing.sock)
    sock, uuid, _observer = outbound_app(sim, "pre_answer", tag=True, observer=observer)
    abort(sock)
    assert sim.wait_for(lambda: sessions_open(sim, outbound=False) == 1, 10)
    assert sim.wait_for(lambda: sessions_open(sim, outbound=True) == 0, 10)
    assert sim.live_channel_count() == 3
    reply = observer.command(
        "api sched_api +2 esl_bridge_abc_9 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc"
    )
    assert reply.body.startswith(b"+OK Added: ")
    ended: dict[str, Event] = {}
    while len(ended) < 3:
        ev = observer.read_event("CHANNEL_HANGUP_COMPLETE", timeout=15)
        ended[ev.get("Unique-ID") or ""] = ev
    return ended, uuid


def test_watchdog_ends_the_orphans_of_every_state(sim: SimulatorThread) -> None:
    """Recorded: after the gateway died with a parked answered originate, a ringing originate
    and a SIP caller in the ringback (tagged with uuid_setvar_multi), `sched_api +2 ... hupall
    ... esl_bridge_instance abc` ended all three with NORMAL_TEMPORARY_FAILURE (1.53 s later)."""
    recorded = [
        ev.get("Hangup-Cause")
        for _t, ev in recorded_events(WATCHDOG)
        if ev.name == "CHANNEL_HANGUP_COMPLETE"
    ]
    assert recorded == ["NORMAL_TEMPORARY_FAILURE"] * 3
    ended, uuid = end_orphans_of_every_state(sim)
    assert set(ended) == {UUID_A, UUID_B, uuid}
    assert [ev.get("Hangup-Cause") for ev in ended.values()] == recorded
    assert sim.live_channel_count() == 0


def test_watchdog_ends_the_orphans_of_every_state_details(sim: SimulatorThread) -> None:
    """How each leg ends on the SIP side: a BYE, a CANCEL, a refusal of the early dialog."""
    recorded = {
        ev.get("Unique-ID"): ev.get("variable_sip_hangup_disposition")
        for _t, ev in recorded_events(WATCHDOG)
        if ev.name == "CHANNEL_HANGUP_COMPLETE"
    }
    sip_caller = next(u for u in recorded if u not in (UUID_A, UUID_B))
    assert (recorded[UUID_A], recorded[UUID_B], recorded[sip_caller]) == (
        "send_bye",
        "send_cancel",
        "send_refuse",
    )
    ended, uuid = end_orphans_of_every_state(sim)
    checks = [
        (
            f"sip_hangup_disposition of {what}",
            ended[mine].get("variable_sip_hangup_disposition"),
            recorded[theirs],
        )
        for what, mine, theirs in (
            ("the answered originate", UUID_A, UUID_A),
            ("the ringing originate", UUID_B, UUID_B),
            ("the SIP caller in early media", uuid, sip_caller),
        )
    ]
    found = differences(checks)
    assert not found, "\n".join(found)
