"""Record what multi-party calls need from a real FreeSWITCH (mod_conference), as fixtures.

Same transcript format and ESL plumbing as tests/tools/record_esl.py (raw sockets and threads, no
esl_bridge code). No phone is needed: every participant is a ``loopback/`` leg whose B side runs
``conference`` from the inline dialplan, which answers by itself. Written to ``<out>/``:

* ``esl_inbound_conference_control.txt``: the control connection: two web-style participants
  (``originate {...}loopback/conference:<room>@default/default/inline &park()``), the A legs'
  ``uuid_dump`` and ``other_loopback_leg_uuid``, ``conference <room> list`` and ``json_list``, a
  third participant in a room of the ``wideband`` profile (its read codec rate), then the
  participants hung up one by one (``uuid_kill`` of the A legs), with their channel events.
* ``esl_inbound_conference_observer.txt``: a second connection subscribed with ``event plain
  CUSTOM conference::maintenance``: what an admin or the gateway sees of the rooms.
* ``esl_inbound_conference_moderation.txt`` and ``esl_inbound_conference_moderation_observer.txt``
  (``--scenario moderation``): two participants in one room, then what an fs_cli admin does:
  ``conference <room> mute|unmute|kick <member id>`` (and with an unknown id, and on an unknown
  room), the list after each, with the events an observer gets.
* ``esl_inbound_conference_talking.txt`` and ``esl_inbound_conference_talking_observer.txt``
  (``--scenario talking``): two participants; a 1 s tone played into alice's A leg
  (``uuid_broadcast <A> playback::tone_stream://... aleg``), so her B leg talks in the room:
  the ``start-talking``/``stop-talking`` events and the list while she talks.
* ``esl_inbound_conference_wideband.txt`` and ``esl_inbound_conference_wideband_observer.txt``
  (``--scenario wideband``): a loopback participant of a ``wideband`` room keeps L16 at 8 kHz
  even with ``loopback_initial_codec`` among the originate's variables (mod_loopback reads it
  before they are set); with the global variable set (``global_setvar
  loopback_initial_codec=L16@16000h``) both of its legs run at 16 kHz. The global is put back as
  it was. Then the whole room is ended from the control connection with ``conference <room> hup
  all``, and a new one with ``kick all``, and what each does.
* ``esl_inbound_conference_phone.txt`` and ``esl_inbound_conference_phone_observer.txt``
  (``--scenario phone --phone N``): a web-style participant, then the registered
  auto-answering phone N originated straight into the room as the gateway invites a number
  (``originate {origination_uuid=...,origination_caller_id_number=alice}user/N
  &conference(<room>@default)``): its channel events, the list (what the phone's line
  shows as caller id), ``uuid_dump`` of the phone's leg, then an fs_cli-style kick of the
  phone and whether its channel ends, then the participant hung up.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import record_ops  # noqa: F401  (its redact(): the install prefix too, as for the ops recordings)
from record_esl import inbound, named

ROOM = "eb-app-room1"
ROOM_WIDE = "eb-app-room2"
UUID_ALICE = "5e1f0000-0000-4000-8000-0000000c0f01"
UUID_BOB = "5e1f0000-0000-4000-8000-0000000c0f02"
UUID_CAROL = "5e1f0000-0000-4000-8000-0000000c0f03"


def participant(uuid: str, uid: str, room: str, profile: str) -> str:
    variables = (
        f"origination_uuid={uuid},origination_caller_id_number={uid},"
        f"origination_caller_id_name={uid},esl_bridge_uid={uid}"
    )
    return f"originate {{{variables}}}loopback/conference:{room}@{profile}/default/inline &park()"


def scenario_conference(out: Path) -> None:
    obs = inbound(out / "esl_inbound_conference_observer.txt", "observer of conference events")
    obs.command("event plain CUSTOM conference::maintenance")
    s = inbound(out / "esl_inbound_conference_control.txt", "conference participants")
    s.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    s.api(participant(UUID_ALICE, "alice", ROOM, "default"))
    s.wait_event(named("CHANNEL_ANSWER", UUID_ALICE), 10)
    s.api(participant(UUID_BOB, "bob", ROOM, "default"))
    s.wait_event(named("CHANNEL_ANSWER", UUID_BOB), 10)
    time.sleep(0.5)
    s.api(f"uuid_dump {UUID_ALICE}")
    s.api(f"uuid_getvar {UUID_ALICE} other_loopback_leg_uuid")
    s.api(f"conference {ROOM} list")
    s.api(f"conference {ROOM} json_list")
    s.api("conference list")
    s.api(participant(UUID_CAROL, "carol", ROOM_WIDE, "wideband"))
    s.wait_event(named("CHANNEL_ANSWER", UUID_CAROL), 10)
    time.sleep(0.5)
    s.api(f"uuid_dump {UUID_CAROL}")
    for uuid in (UUID_BOB, UUID_ALICE, UUID_CAROL):
        s.api(f"uuid_kill {uuid}")
        s.wait_event(named("CHANNEL_HANGUP_COMPLETE", uuid), 10)
        time.sleep(0.5)
    s.api("conference list")
    time.sleep(1.0)
    obs.note(
        "observer saw: "
        + ", ".join(
            f"{e.event.get('Action', '')}/{e.event.get('Conference-Name', '')}"
            f"/{e.event.get('Caller-Caller-ID-Number', '')}"
            for e in obs.events
        )
    )
    for sess in (s, obs):
        sess.command("exit")
        time.sleep(0.3)
        sess.close()


def member_id(listing: str, uid: str) -> str:
    """The member id of the line of `conference <room> list` whose caller id number is `uid`."""
    for line in listing.splitlines():
        fields = line.split(";")
        if len(fields) == 9 and fields[4] == uid:
            return fields[0]
    raise SystemExit(f"{uid} not in the list: {listing!r}")


def scenario_moderation(out: Path) -> None:
    obs = inbound(
        out / "esl_inbound_conference_moderation_observer.txt", "observer of conference moderation"
    )
    obs.command("event plain CUSTOM conference::maintenance")
    s = inbound(out / "esl_inbound_conference_moderation.txt", "conference moderation")
    s.command("event plain CHANNEL_HANGUP_COMPLETE")
    room = "eb-app-room3"
    s.api(participant(UUID_ALICE, "alice", room, "default"))
    s.api(participant(UUID_BOB, "bob", room, "default"))
    time.sleep(0.5)
    bob = member_id(s.api(f"conference {room} list"), "bob")
    s.api(f"conference {room} mute {bob}")
    s.api(f"conference {room} list")
    s.api(f"conference {room} unmute {bob}")
    s.api(f"conference {room} list")
    s.api(f"conference {room} mute 9999")
    s.api(f"conference {room} kick 9999")
    s.api("conference eb-app-nosuch list")
    s.api("conference eb-app-nosuch kick 1")
    s.api(f"conference {room} kick {bob}")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_BOB), 10)
    time.sleep(0.5)
    s.api(f"conference {room} list")
    s.api(f"uuid_kill {UUID_ALICE}")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_ALICE), 10)
    time.sleep(0.5)
    s.api("conference list")
    s.api("show channels count")
    time.sleep(0.5)
    for sess in (s, obs):
        sess.command("exit")
        time.sleep(0.3)
        sess.close()


def scenario_talking(out: Path) -> None:
    obs = inbound(
        out / "esl_inbound_conference_talking_observer.txt", "observer of conference talking"
    )
    obs.command("event plain CUSTOM conference::maintenance")
    s = inbound(out / "esl_inbound_conference_talking.txt", "conference talking")
    s.command("event plain CHANNEL_HANGUP_COMPLETE")
    room = "eb-app-room4"
    s.api(participant(UUID_ALICE, "alice", room, "default"))
    s.api(participant(UUID_BOB, "bob", room, "default"))
    time.sleep(0.5)
    s.api(f"uuid_broadcast {UUID_ALICE} playback::tone_stream://%(1000,0,600) aleg")
    time.sleep(0.5)
    s.api(f"conference {room} list")
    time.sleep(2.0)
    s.api(f"conference {room} list")
    for uuid in (UUID_BOB, UUID_ALICE):
        s.api(f"uuid_kill {uuid}")
        s.wait_event(named("CHANNEL_HANGUP_COMPLETE", uuid), 10)
    time.sleep(0.5)
    for sess in (s, obs):
        sess.command("exit")
        time.sleep(0.3)
        sess.close()


def scenario_wideband(out: Path) -> None:
    obs = inbound(
        out / "esl_inbound_conference_wideband_observer.txt", "observer of a wideband room"
    )
    obs.command("event plain CUSTOM conference::maintenance")
    s = inbound(out / "esl_inbound_conference_wideband.txt", "wideband room and ending it")
    s.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    room = "eb-app-room5"
    before = s.api("global_getvar loopback_initial_codec")
    alice = participant(UUID_ALICE, "alice", room, "wideband").replace(
        "{", "{loopback_initial_codec=L16@16000h,", 1
    )
    s.api(alice)
    s.wait_event(named("CHANNEL_ANSWER", UUID_ALICE), 10)
    s.api(f"uuid_getvar {UUID_ALICE} read_rate")
    s.api("global_setvar loopback_initial_codec=L16@16000h")
    try:
        s.api(participant(UUID_BOB, "bob", room, "wideband"))
        s.wait_event(named("CHANNEL_ANSWER", UUID_BOB), 10)
    finally:
        restore = before.strip() if not before.startswith("-ERR") else ""
        s.api(f"global_setvar loopback_initial_codec={restore}")
    time.sleep(0.5)
    s.api(f"uuid_getvar {UUID_BOB} read_rate")
    bob_b = s.api(f"uuid_getvar {UUID_BOB} other_loopback_leg_uuid").strip()
    s.api(f"uuid_getvar {bob_b} read_rate")
    s.api(f"conference {room} list")
    s.api(f"conference {room} hup all")
    time.sleep(1.0)
    s.api(f"conference {room} list")
    s.api(participant(UUID_CAROL, "carol", room, "wideband"))
    s.wait_event(named("CHANNEL_ANSWER", UUID_CAROL), 10)
    time.sleep(0.5)
    s.api(f"conference {room} kick all")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_CAROL), 10)
    time.sleep(1.0)
    s.api(f"conference {room} list")
    for uuid in (UUID_ALICE, UUID_BOB):
        s.api(f"uuid_kill {uuid}")
    time.sleep(1.0)
    s.api("show channels count")


UUID_PHONE = "5e1f0000-0000-4000-8000-0000000c0f10"


def scenario_phone(out: Path, phone: str) -> None:
    obs = inbound(out / "esl_inbound_conference_phone_observer.txt", "observer, phone in a room")
    obs.command("event plain CUSTOM conference::maintenance")
    s = inbound(out / "esl_inbound_conference_phone.txt", "a registered phone in a room")
    s.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP_COMPLETE")
    room = "eb-app-room5"
    s.api(participant(UUID_ALICE, "alice", room, "default"))
    s.wait_event(named("CHANNEL_ANSWER", UUID_ALICE), 10)
    variables = (
        f"origination_uuid={UUID_PHONE},origination_caller_id_number=alice,"
        "origination_caller_id_name=alice"
    )
    s.api(f"originate {{{variables}}}user/{phone} &conference({room}@default)")
    s.wait_event(named("CHANNEL_ANSWER", UUID_PHONE), 20)
    time.sleep(1.0)
    listing = s.api(f"conference {room} list")
    s.api(f"conference {room} json_list")
    s.api(f"uuid_dump {UUID_PHONE}")
    phone_id = ""
    for line in listing.splitlines():
        fields = line.split(";")
        if len(fields) == 9 and fields[2] == UUID_PHONE:
            phone_id = fields[0]
    if not phone_id:
        raise SystemExit(f"the phone's leg is not in the list: {listing!r}")
    s.api(f"conference {room} kick {phone_id}")
    ended = s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_PHONE), 10)
    s.note(f"phone's leg after the kick: {'hung up' if ended else 'still up after 10 s'}")
    if not ended:
        s.api(f"uuid_kill {UUID_PHONE}")
        s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_PHONE), 10)
    s.api(f"conference {room} list")
    s.api(f"uuid_kill {UUID_ALICE}")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_ALICE), 10)
    time.sleep(0.5)
    s.api("conference list")
    time.sleep(0.5)
    for sess in (s, obs):
        sess.command("exit")
        time.sleep(0.3)
        sess.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("conference_recordings"))
    parser.add_argument(
        "--scenario",
        choices=("conference", "moderation", "talking", "wideband", "phone"),
        default="conference",
    )
    parser.add_argument("--phone", default="1001", help="registered phone (--scenario phone)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scenario == "moderation":
        scenario_moderation(args.out)
    elif args.scenario == "talking":
        scenario_talking(args.out)
    elif args.scenario == "wideband":
        scenario_wideband(args.out)
    elif args.scenario == "phone":
        scenario_phone(args.out, args.phone)
    else:
        scenario_conference(args.out)


if __name__ == "__main__":
    main()
