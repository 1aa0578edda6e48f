"""A registered phone originated straight into a room, as the gateway invites a number into a
conference (``originate {...}user/N &conference(<room>@<profile>)``): what FreeSWITCH 1.10.12
showed (tests/fixtures/freeswitch/conference/esl_inbound_conference_phone*.txt, recorded by
``tests/tools/record_conference.py --scenario phone``) and whether the simulator does the same.

Recorded: the phone's member is its originated leg (``Unique-ID`` = the ``origination_uuid``);
its ``add-member`` and its line in ``conference <room> list`` carry what FreeSWITCH puts in an
answered outbound leg's caller profile, caller id name ``Outbound Call`` and caller id number
the phone's contact user (``1001-0x557d65a13620``), not the ``origination_caller_id_*`` of the
originate (those are in ``Caller-Orig-Caller-ID-Number`` and ``Caller-Callee-ID-Number``); a
kick ends the phone's leg (the ``conference`` application returns, nothing follows it).
The simulator already does both; this holds it to the recording.
"""

from __future__ import annotations

import urllib.parse

from support.ports_and_waits import gevent_wait
from support.sim_wire import fs_events, fs_frames

from esl_bridge.sim import SimConfig, SimulatorThread

PHONE = "conference/esl_inbound_conference_phone.txt"
PHONE_OBSERVER = "conference/esl_inbound_conference_phone_observer.txt"
PHONE_UUID = "5e1f0000-0000-4000-8000-0000000c0f10"
ROOM = "eb-app-room5"


def _line_of(listing: str, uuid: str) -> list[str]:
    for line in listing.splitlines():
        fields = line.split(";")
        if len(fields) == 9 and fields[2] == uuid:
            return fields
    raise AssertionError(f"{uuid} not in {listing!r}")


def test_the_recording_shows_the_phones_contact_user_as_its_caller_id() -> None:
    bodies = [f.body.decode() for f in fs_frames(PHONE) if f.content_type == "api/response"]
    [listing] = [b for b in bodies if PHONE_UUID in b and b[:1].isdigit()]
    fields = _line_of(listing, PHONE_UUID)
    assert fields[1].startswith("sofia/internal/1001-0x")
    assert fields[3] == "Outbound Call"
    assert fields[4].startswith("1001-0x") and fields[4] == fields[1].split("/")[2].split("@")[0]
    [add] = [
        e
        for e in fs_events(PHONE_OBSERVER)
        if e.get("Action") == "add-member" and e.get("Unique-ID") == PHONE_UUID
    ]
    assert add.get("Caller-Caller-ID-Number") == fields[4]
    assert urllib.parse.unquote(add.get("Caller-Caller-ID-Name") or "") == "Outbound Call"
    assert add.get("Caller-Orig-Caller-ID-Number") == "alice"
    assert add.get("Caller-Callee-ID-Number") == "alice"
    # The kick ended the phone's leg at once (the recorder's note, then its hangup event).
    notes = [f for f in fs_frames(PHONE) if f.content_type == "text/event-plain"]
    hangups = [
        e.event()
        for e in notes
        if e.event().get("Event-Name") == "CHANNEL_HANGUP_COMPLETE"
        and e.event().get("Unique-ID") == PHONE_UUID
    ]
    assert len(hangups) == 1


def test_the_simulator_lists_an_originated_phone_as_freeswitch_does_and_a_kick_ends_it() -> None:
    sim = SimulatorThread(SimConfig(first_call_event_delay=0.0)).start()
    try:
        reply = sim.api(
            f"originate {{origination_uuid={PHONE_UUID},origination_caller_id_number=alice,"
            f"origination_caller_id_name=alice}}user/1000 &conference({ROOM}@default)"
        )
        assert reply.startswith("+OK"), reply
        assert gevent_wait(lambda: PHONE_UUID in sim.api(f"conference {ROOM} list"), 10)
        fields = _line_of(sim.api(f"conference {ROOM} list"), PHONE_UUID)
        contact = fields[1].split("/")[2].split("@")[0]
        assert contact.startswith("1000-0x")
        assert (fields[3], fields[4]) == ("Outbound Call", contact), fields
        # A kick ends the phone's leg, as recorded.
        assert sim.api(f"conference {ROOM} kick {fields[0]}").startswith("+OK kicked")
        assert gevent_wait(lambda: sim.live_channel_count() == 0, 10)
        assert sim.api("conference list").startswith("+OK No active conferences")
    finally:
        sim.stop()
