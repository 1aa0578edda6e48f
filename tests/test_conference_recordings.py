"""The conference facts recorded on FreeSWITCH 1.10.12 (tests/fixtures/freeswitch/conference/, its
README section "Conference recordings"), held here so the simulator's conferences (issue 14) can be
built on them: a broken or re-recorded transcript that says otherwise fails."""

from __future__ import annotations

from support.sim_wire import fs_events, fs_frames

OBSERVER = "conference/esl_inbound_conference_observer.txt"
CONTROL = "conference/esl_inbound_conference_control.txt"


def test_maintenance_events_in_order_with_their_fields() -> None:
    subclass = "conference::maintenance"
    events = [e for e in fs_events(OBSERVER) if e.get("Event-Subclass") == subclass]
    members = [
        (e.get("Action"), e.get("Conference-Name"), e.get("Caller-Caller-ID-Number"))
        for e in events
        if e.get("Action") in ("add-member", "del-member", "conference-destroy")
    ]
    assert members == [
        ("add-member", "eb-app-room1", "alice"),
        ("add-member", "eb-app-room1", "bob"),
        ("add-member", "eb-app-room2", "carol"),
        ("del-member", "eb-app-room1", "bob"),
        ("del-member", "eb-app-room1", "alice"),
        ("conference-destroy", "eb-app-room1", None),
        ("del-member", "eb-app-room2", "carol"),
        ("conference-destroy", "eb-app-room2", None),
    ]
    for event in events:
        if event.get("Action") in ("add-member", "del-member"):
            for field in ("Conference-Size", "Member-ID", "Unique-ID", "Channel-Name"):
                assert event.get(field), (event.get("Action"), field)
            # The member is the loopback B leg; the originate's own variables are not there.
            assert (event.get("Channel-Name") or "").endswith("-b")
            assert event.get("variable_esl_bridge_uid") is None


def test_participant_a_leg_is_answered_l16_8k_and_list_format() -> None:
    bodies = [f.body.decode() for f in fs_frames(CONTROL) if f.content_type == "api/response"]
    dumps = [b for b in bodies if b.startswith("Event-Name: CHANNEL_DATA")]
    assert len(dumps) == 2  # alice (default profile) and carol (wideband profile)
    for dump in dumps:
        assert "\nAnswer-State: answered\n" in dump
        assert "\nChannel-Read-Codec-Name: L16\n" in dump
        assert "\nChannel-Read-Codec-Rate: 8000\n" in dump
        assert "%40default-a\n" in dump or "%40wideband-a\n" in dump
    member = ";loopback/conference:eb-app-room1@default-b;"
    # `conference eb-app-room1 list`: member lines only; `conference list` heads them.
    [listing] = [b for b in bodies if member in b and not b.startswith("+OK")]
    head = "+OK Conference eb-app-room1 "
    [everything] = [b for b in bodies if member in b and b.startswith(head)]
    assert everything.split("\n", 1)[1].strip() == listing.strip()
    lines = listing.strip().split("\n")
    assert [line.split(";")[4] for line in lines] == ["bob", "alice"]  # newest first
    assert all(len(line.split(";")) == 9 for line in lines)


MODERATION = "conference/esl_inbound_conference_moderation.txt"
MODERATION_OBSERVER = "conference/esl_inbound_conference_moderation_observer.txt"
TALKING = "conference/esl_inbound_conference_talking.txt"
TALKING_OBSERVER = "conference/esl_inbound_conference_talking_observer.txt"


def test_moderation_replies_and_events() -> None:
    """README facts 5-7: mute/unmute/kick replies, the errors, kick-member before del-member."""
    bodies = [f.body.decode() for f in fs_frames(MODERATION) if f.content_type == "api/response"]
    assert "+OK mute 8\n" in bodies and "+OK unmute 8\n" in bodies
    assert "+OK kicked 8\n" in bodies
    assert bodies.count("-ERR Non-Existant ID 9999\n") == 2
    assert bodies.count("-ERR Conference eb-app-nosuch not found\n") == 2
    muted = [b for b in bodies if ";bob;bob;hear;" in b]
    assert len(muted) == 1  # the list between mute and unmute: no `speak`
    events = [
        e
        for e in fs_events(MODERATION_OBSERVER)
        if e.get("Event-Subclass") == "conference::maintenance"
    ]
    actions = [(e.get("Action"), e.get("Member-ID")) for e in events]
    i = actions.index(("kick-member", "8"))
    assert actions[i - 2 : i] == [("mute-member", "8"), ("unmute-member", "8")]
    assert ("del-member", "8") in actions[i + 1 :]
    speak = {e.get("Action"): e.get("Speak") for e in events}
    assert speak["mute-member"] == "false" and speak["unmute-member"] == "true"


def test_talking_events_and_the_floor() -> None:
    """README fact 8: start-talking, the talker takes the floor, stop-talking with statistics."""
    events = [
        e
        for e in fs_events(TALKING_OBSERVER)
        if e.get("Event-Subclass") == "conference::maintenance"
    ]
    talk = [e for e in events if e.get("Action") in ("start-talking", "stop-talking")]
    assert [(e.get("Action"), e.get("Caller-Caller-ID-Number")) for e in talk] == [
        ("start-talking", "alice"),
        ("stop-talking", "alice"),
    ]
    start, stop = talk
    assert start.get("Talking") == "true" and stop.get("Talking") == "false"
    after = events[events.index(start) + 1]
    assert after.get("Action") == "floor-change" and after.get("New-ID") == start.get("Member-ID")
    assert stop.get("talking-duration-ms") == "980"
    assert stop.names.index("talking-gate-hits") < stop.names.index("Action")
    bodies = [f.body.decode() for f in fs_frames(TALKING) if f.content_type == "api/response"]
    assert any(";alice;alice;hear|speak|talking|floor;" in b for b in bodies)


WIDEBAND = "conference/esl_inbound_conference_wideband.txt"
WIDEBAND_OBSERVER = "conference/esl_inbound_conference_wideband_observer.txt"


def test_wideband_needs_the_global_loopback_codec() -> None:
    """README fact 9: originate's own loopback_initial_codec is too late; the global works."""
    bodies = [f.body.decode() for f in fs_frames(WIDEBAND) if f.content_type == "api/response"]
    rates = [b.strip() for b in bodies if b.strip() in ("8000", "16000")]
    # alice (variable on her originate only), then bob's A and B legs (the global set).
    assert rates == ["8000", "16000", "16000"]
    events = [e for e in fs_events(WIDEBAND) if e.get("Event-Name") == "CHANNEL_ANSWER"]
    assert {
        e.get("Channel-Read-Codec-Rate")
        for e in events
        if e.get("Caller-Caller-ID-Number") == "bob"
    } == {"16000"}


def test_hup_all_and_kick_all_end_every_leg() -> None:
    """README fact 10: `hup all` / `kick all` answer per member and leave no leg behind."""
    bodies = [f.body.decode() for f in fs_frames(WIDEBAND) if f.content_type == "api/response"]
    [hup] = [b for b in bodies if b.startswith("+OK hup ")]
    assert len(hup.strip().split("\n")) == 2
    assert any(b.startswith("+OK kicked ") for b in bodies)
    assert "0 total.\n" in [b.strip() + "\n" for b in bodies]
    actions = [
        e.get("Action")
        for e in fs_events(WIDEBAND_OBSERVER)
        if e.get("Event-Subclass") == "conference::maintenance"
    ]
    first_room, second_room = (
        actions[: actions.index("conference-destroy") + 1],
        actions[actions.index("conference-destroy") + 1 :],
    )
    assert first_room[0] == "conference-create"
    assert first_room.count("hup-member") == 2 and first_room.count("del-member") == 2
    assert first_room.index("hup-member") < first_room.index("del-member")
    assert second_room[0] == "conference-create" and second_room[-1] == "conference-destroy"
    assert second_room.index("kick-member") < second_room.index("del-member")
