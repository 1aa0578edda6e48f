"""The simulator against the FreeSWITCH 1.10.12 recordings of issue 15 (tests/fixtures/
freeswitch/ops/, made by tests/tools/record_ops.py; README.md there).

1. ``sendevent CUSTOM``: the sender's commands of the recording replayed against the
   simulator, with an observer subscribed as recorded (``event plain CUSTOM
   esl_bridge::call_ended``): the same replies, and the observer gets the same events
   (subclass filter, header names in order, values, body), apart from what differs per
   switch and moment (uuids, host, dates, sequence).
2. The api replies ``freeswitch.sh check`` relies on, byte for byte, from a simulator set up
   like the recorded switch.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from support.esl_transcripts import FIXTURES
from support.esl_transcripts import read_transcript as read_path
from support.sim_wire import Event, Frame, auth, split_frames

from esl_bridge.sim import Extension, SimConfig, SimulatorThread
from esl_bridge.sim.ops_api import esl_bridge_extension

SENDER = "ops/esl_inbound_sendevent.txt"
OBSERVER = "ops/esl_inbound_custom_event_observer.txt"
CHECK = "ops/esl_inbound_check_api_replies.txt"
VOLATILE = {
    "Event-UUID",
    "Core-UUID",
    "FreeSWITCH-Hostname",
    "FreeSWITCH-Switchname",
    "FreeSWITCH-IPv4",
    "FreeSWITCH-IPv6",
    "Event-Date-Local",
    "Event-Date-GMT",
    "Event-Date-Timestamp",
    "Event-Sequence",
}
OK_UUID = re.compile(r"^\+OK [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def exchanges(name: str) -> list[tuple[str, Frame | None]]:
    """(command the recorder sent, FreeSWITCH's reply) in order; events are left out."""
    out: list[tuple[str, Frame | None]] = []
    buf = b""
    for rec in read_path(FIXTURES / name).records:
        if not rec.from_freeswitch:
            out.append((rec.data.decode(), None))
            continue
        buf += rec.data
        frames, buf = split_frames(buf)
        for frame in frames:
            if frame.content_type in ("command/reply", "api/response", "auth/request"):
                if frame.content_type == "auth/request":
                    continue
                i = next(i for i, (_c, r) in enumerate(out) if r is None)
                out[i] = (out[i][0], frame)
    return out


def recorded_events(name: str) -> list[Event]:
    stream = b"".join(r.data for r in read_path(FIXTURES / name).records if r.from_freeswitch)
    frames, _rest = split_frames(stream)
    return [f.event() for f in frames if f.content_type == "text/event-plain"]


def stable(event: Event) -> list[tuple[str, str | None]]:
    return [(k, None if k in VOLATILE else event.get(k)) for k in event.names]


@pytest.fixture
def sim() -> Iterator[SimulatorThread]:
    config = SimConfig(
        socket_target=("127.0.0.1", 8084),
        # The recorded switch: 1000 in the directory, nothing registered.
        extensions={"1000": Extension("not_registered")},
    )
    with SimulatorThread(config) as s:
        yield s
        assert not s.crashed, s.crash_reason


def test_sendevent_custom_reaches_a_subscribed_observer_as_recorded(
    sim: SimulatorThread,
) -> None:
    [(subscribe, _reply)] = [
        x for x in exchanges(OBSERVER) if x[0].startswith("event plain CUSTOM")
    ]
    observer = auth(sim.esl_port)
    assert observer.command(subscribe.rstrip("\n")).get("Reply-Text") == (
        "+OK event listener enabled plain"
    )
    sender = auth(sim.esl_port)
    sent = [(c, r) for c, r in exchanges(SENDER) if c.startswith("sendevent")]
    assert len(sent) == 7
    replies = []
    for command, recorded in sent:
        assert recorded is not None
        sender.send(command)
        reply = sender.read_reply()
        assert OK_UUID.match(reply.get("Reply-Text") or ""), reply.headers
        assert OK_UUID.match(recorded.get("Reply-Text") or "")
        assert [k for k, _v in reply.headers] == [k for k, _v in recorded.headers]
        replies.append(reply.get("Reply-Text"))
    expected = recorded_events(OBSERVER)
    # Events arrive in the order they were fired: the same ids in the same order means
    # call-2 (another subclass, sent between call-1 and call-3) never came.
    got = [observer.read_event("CUSTOM") for _ in expected]
    assert [e.get("esl_bridge_call_id") for e in got] == [
        e.get("esl_bridge_call_id") for e in expected
    ]
    for mine, theirs in zip(got, expected, strict=True):
        assert stable(mine) == stable(theirs)
        assert mine.body == theirs.body
    # The reply names the event it fired.
    fired = {e.get("Event-UUID") for e in got}
    assert {r.split()[1] for r in replies if r} >= fired
    # What a value arrives as: URL-decoded on the way in ("a%20b" is "a b").
    by_id = {e.get("esl_bridge_call_id"): e for e in got}
    assert by_id["call-5"].get("Reason") == "a b"
    assert by_id["call-4"].get("Reason") == "a b%c d\u00e9: e"
    observer.close()
    sender.close()


def test_a_plain_custom_subscription_gets_only_events_without_a_subclass(
    sim: SimulatorThread,
) -> None:
    """FreeSWITCH's rule for `event plain CUSTOM` without subclass names (what the recorded
    no-subclass event shows from the other side)."""
    observer = auth(sim.esl_port)
    observer.command("event plain CUSTOM")
    sender = auth(sim.esl_port)
    sender.command("sendevent CUSTOM\nEvent-Subclass: esl_bridge::call_started\nx: 1")
    sender.command("sendevent CUSTOM\nx: 2")
    got = observer.read_event("CUSTOM")  # the first one to arrive: the subclassed one did not
    assert (got.get("x"), got.get("Event-Subclass")) == ("2", None)
    observer.close()
    sender.close()


def test_the_check_api_replies_match_the_recording(sim: SimulatorThread) -> None:
    conn = auth(sim.esl_port)
    checked = 0
    for command, recorded in exchanges(CHECK):
        line = command.rstrip("\n")
        if not line.startswith("api ") or recorded is None:
            continue
        word = line.split()[1]
        if word not in ("module_exists", "global_getvar", "xml_locate", "show", "user_exists"):
            continue
        if line in ("api show channels as json",):
            continue  # the channel list of the recorded call; not the check's business
        reply = conn.command(line)
        if line == "api xml_locate dialplan context name default":
            # The recorded switch runs the vanilla dialplan; the simulator's is short. The 0
            # route must look exactly the same in both.
            socket = esl_bridge_extension("127.0.0.1:8084").encode()
            assert socket in recorded.body
            assert socket in reply.body
            assert reply.body.startswith(b'<context name="default">\n')
            assert recorded.body.startswith(b'<context name="default">\n')
        else:
            assert reply.body == recorded.body, line
        checked += 1
    assert checked == 16
    conn.close()
