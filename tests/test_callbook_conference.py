"""The call book's conference legs, field by field (core/callbook.py): the web member's
leg (``conference_join``) and the dial-in phone's call (``conference_dial_in``), and the
lookup of a call by its ChanId. tests/test_conference_core.py drives both through their
life; here what each one is created with is held.
"""

from __future__ import annotations

from test_conference_core import APPID, book

from esl_bridge.core import call as c


def test_a_web_members_leg_is_created_with_its_user_room_and_time() -> None:
    b = book()
    call, actions = b.conference_join("alice", "r1", "Alice", "eb-app-r1", "wb", 3.5)
    assert isinstance(call, c.ConfWebCall)
    assert call.call_id.startswith("call-")
    assert (call.web_uid, call.chan_id, call.room, call.started_at) == (
        "alice",
        "r1",
        "eb-app-r1",
        3.5,
    )
    originate = next(a for a in actions if isinstance(a, c.Originate))
    assert originate.uuid == call.uuid and len(call.uuid) == 36
    assert originate.variables["origination_caller_id_name"] == "Alice"
    assert originate.variables[c.CALL_ID_VAR] == call.call_id
    assert originate.variables[c.UID_VAR] == "alice"
    assert originate.variables[c.APPID_VAR] == APPID
    assert c.NUMBER_VAR not in originate.variables  # a web leg dials no number
    assert b.get(call.call_id) is call


def test_a_web_member_without_a_display_name_shows_its_uid() -> None:
    call, actions = book().conference_join("alice", "r1", "", "eb-app-r1", "wb", 0.0)
    assert call is not None
    originate = next(a for a in actions if isinstance(a, c.Originate))
    assert originate.variables["origination_caller_id_name"] == "alice"


def test_two_web_legs_get_different_a_leg_uuids() -> None:
    b = book()
    first, _ = b.conference_join("alice", "r1", "", "eb-app-r1", "wb", 0.0)
    second, _ = b.conference_join("bob", "r1", "", "eb-app-r1", "wb", 0.0)
    assert first is not None and second is not None
    assert first.uuid != second.uuid and first.call_id != second.call_id


def test_the_call_rate_counts_conference_legs_at_their_time() -> None:
    # One call per second: a second leg in the same second is refused, one later is not.
    b = book(max_call_rate=1.0, call_burst=1)
    assert b.conference_join("alice", "r1", "", "eb-app-r1", "wb", 10.0)[0] is not None
    assert b.conference_join("bob", "r1", "", "eb-app-r1", "wb", 10.2) == (None, [])
    assert b.conference_join("bob", "r1", "", "eb-app-r1", "wb", 11.5)[0] is not None


def test_a_dial_in_call_is_created_with_its_channel_and_number() -> None:
    b = book()
    call, _ = b.conference_dial_in(
        uuid="u-1", caller_number="1001", chan_id="r1", target="eb-app-r1@wb", now=4.0
    )
    assert isinstance(call, c.ConfDialInCall)
    assert call.call_id.startswith("call-")
    assert (call.uuid, call.chan_id, call.number, call.started_at) == ("u-1", "r1", "1001", 4.0)
    assert b.get(call.call_id) is call
    assert b.by_chan("r1") is None  # a room's ChanId is every member's, not one call's key


def test_a_dial_in_refused_by_the_rate_gets_switch_congestion_and_its_own_call_id() -> None:
    b = book(max_call_rate=1.0, call_burst=1)
    first, _ = b.conference_dial_in(
        uuid="u-1", caller_number="1", chan_id="r", target="t", now=10.0
    )
    assert first is not None
    call, refused = b.conference_dial_in(
        uuid="u-2", caller_number="1", chan_id="r", target="t", now=10.1
    )
    assert call is None and len(refused) == 1
    hangup = refused[0]
    assert isinstance(hangup, c.Hangup)
    assert (hangup.uuid, hangup.cause) == ("u-2", "SWITCH_CONGESTION")
    assert hangup.call_id.startswith("call-") and hangup.call_id != first.call_id
    later, _ = b.conference_dial_in(
        uuid="u-3", caller_number="1", chan_id="r", target="t", now=11.5
    )
    assert later is not None


def test_by_chan_finds_a_bridged_call_by_its_chan_id_and_nothing_else() -> None:
    b = book()
    b.invitation_to_number("alice", "1000", '{"ChanId":"ch-a"}', 0.0)
    call = b.by_chan("ch-a")
    assert call is not None and call.chan_id == "ch-a" and call.web_uid == "alice"
    assert b.by_chan("ch-b") is None
    assert b.by_chan("") is None
    b.conference_join("bob", "r1", "", "eb-app-r1", "wb", 0.0)
    assert b.by_chan("r1") is None
