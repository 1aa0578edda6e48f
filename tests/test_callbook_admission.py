"""The call book's admission and bookkeeping (core/callbook.py), field by field: each
refusal names the call, the caller and the number it answers; a channel id is checked at
its byte limit and against the live calls; the call rate refills at its configured
speed; an ended call leaves no key behind; a number the pool dropped between the check and
the acquire is refused, not crashed on. No I/O, ``now`` passed in.
"""

from __future__ import annotations

import json
import uuid

import pytest
from test_call import arrive, book, invite

from esl_bridge.core import call as c
from esl_bridge.core.callbook import (
    CALL_STATE_IDLE,
    CALL_STATE_IN_CALL,
    CallBook,
    CallRate,
)
from esl_bridge.core.invitations import CHANNEL_ID_MAX_BYTES
from esl_bridge.numbers import NumberPool


def refusal_text(reason: str) -> str:
    return json.dumps({"Cmd": "Refused", "Reason": reason}, separators=(",", ":"))


# -- the call rate ----------------------------------------------------------------------


@pytest.mark.parametrize(("per_second", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0), (0.0, 0)])
def test_a_call_rate_that_admits_nothing_is_refused_with_its_values(
    per_second: float, burst: int
) -> None:
    with pytest.raises(ValueError, match="must be positive") as raised:
        CallRate(per_second, burst)
    assert repr(per_second) in str(raised.value) and repr(burst) in str(raised.value)


def test_the_call_rate_refills_at_its_speed() -> None:
    rate = CallRate(4.0, 1)  # one token every quarter of a second
    assert rate.take(10.0)
    assert not rate.take(10.1)
    assert not rate.ready(10.2)
    assert rate.take(10.25)
    # A clock read out of order gives nothing back.
    assert not rate.take(10.0)
    assert rate.take(10.5)


# -- a web user's invitation to a number -------------------------------------------------


def test_a_refusal_names_the_call_the_caller_and_the_number() -> None:
    b = book()
    assert invite(b, number="2000", caller="alice") == [
        c.RefuseInvitation("call-1", "alice", "2000", refusal_text("not_in_acc_rule"))
    ]
    assert invite(b, content="[]", caller="bob") == [
        c.RefuseInvitation("call-2", "bob", "1005", refusal_text("bad_content"))
    ]


def test_a_call_gets_a_call_id_and_the_caller_as_its_caller_id_name() -> None:
    b = book()
    [originate] = invite(b, {"ChanId": "ch-a"}, caller="alice")
    assert isinstance(originate, c.Originate) and originate.call_id == "call-1"
    assert originate.variables["origination_caller_id_name"] == "alice"
    assert str(uuid.UUID(originate.uuid)) == originate.uuid


def test_without_a_chan_id_each_call_gets_a_new_one() -> None:
    b = book()
    first = _call_of(b, invite(b, {"SipData": "1"}, number="1005"))
    second = _call_of(b, invite(b, {"SipData": "2"}, number="1006"))
    assert first.chan_id.startswith("ch-") and second.chan_id.startswith("ch-")
    assert first.chan_id != second.chan_id


@pytest.mark.parametrize(
    ("chan_id", "accepted"),
    [
        ("x" * CHANNEL_ID_MAX_BYTES, True),
        ("x" * (CHANNEL_ID_MAX_BYTES + 1), False),
        ("é" * (CHANNEL_ID_MAX_BYTES // 2), True),  # two bytes each: counted in bytes
        ("é" * (CHANNEL_ID_MAX_BYTES // 2) + "x", False),
    ],
)
def test_a_chan_id_is_limited_in_bytes(chan_id: str, accepted: bool) -> None:
    b = book()
    actions = invite(b, {"ChanId": chan_id})
    if accepted:
        assert _call_of(b, actions).chan_id == chan_id
    else:
        assert actions == [
            c.RefuseInvitation("call-1", "alice", "1005", refusal_text("bad_channel_id"))
        ]


def test_a_chan_id_in_use_is_refused_for_a_call_but_shared_by_a_room() -> None:
    b = book()
    invite(b, {"ChanId": "ch-a"}, number="1005")
    assert invite(b, {"ChanId": "ch-a"}, number="1006", caller="bob") == [
        c.RefuseInvitation("call-2", "bob", "1006", refusal_text("bad_channel_id"))
    ]
    # A room's ChanId is every member's: two numbers invited into the same room.
    for number in ("1007", "1008"):
        actions = b.invitation_to_number("alice", number, '{"ChanId":"r1"}', 0.0, room=("r", "p"))
        assert [type(a) for a in actions] == [c.Originate]


def test_an_ended_call_leaves_its_chan_id_and_uuid_free() -> None:
    b = book()
    call = _call_of(b, invite(b, {"ChanId": "ch-a"}))
    b.handle(call.call_id, c.OriginateFailed("USER_BUSY"), 1.0)
    assert b.get(call.call_id) is None and b.by_chan("ch-a") is None
    assert b.by_uuid(call.uuid) is None
    again = _call_of(b, invite(b, {"ChanId": "ch-a"}, now=2.0))
    assert again.chan_id == "ch-a" and b.by_chan("ch-a") is again

    arrive(b)
    sip = b.by_uuid("uuid-1")
    assert sip is not None
    b.handle(sip.call_id, c.ChannelHungUp("ORIGINATOR_CANCEL"), 3.0)
    assert b.by_uuid("uuid-1") is None
    # The same channel brought again (a new socket session for it) is a new call.
    assert [type(a) for a in arrive(b)][-1] is c.SendInvitation
    assert b.by_uuid("uuid-1") is not None


class ReloadedPool(NumberPool):
    """A pool whose acquire finds the numbers replaced since the caller's check (a
    configuration reload landing between the two)."""

    def acquire(self, number: str, call_id: str) -> None:
        self.replace(("1009",))
        super().acquire(number, call_id)


def reloading_book() -> CallBook:
    b = book()
    return CallBook(b.settings, ReloadedPool(("1005", "1009")), new_id=lambda p: f"{p}-1")


def test_a_number_dropped_by_a_reload_during_admission_is_refused() -> None:
    b = reloading_book()
    assert invite(b, {"ChanId": "ch-a"}) == [
        c.RefuseInvitation("call-1", "alice", "1005", refusal_text("not_in_acc_rule"))
    ]
    assert len(b) == 0
    b = reloading_book()
    assert b.click_to_call("carol", "1005", callee_online=True, now=0.0) == (
        "",
        "not_in_acc_rule",
        [],
    )
    assert len(b) == 0


# -- click-to-call ---------------------------------------------------------------------


@pytest.mark.parametrize("number_first", [False, True])
def test_click_to_call_gets_a_call_id_and_its_own_channel_uuid(number_first: bool) -> None:
    b = book()
    call_id, refused, _ = b.click_to_call(
        "carol", "1006", callee_online=True, now=0.0, number_first=number_first
    )
    assert (call_id, refused) == ("call-1", "")
    call = b.get(call_id)
    assert isinstance(call, c.ClickToCall)
    assert str(uuid.UUID(call.uuid)) == call.uuid and b.by_uuid(call.uuid) is call
    assert call.variables["origination_uuid"] == call.uuid
    assert call.variables["origination_caller_id_name"] == "carol"


# -- a phone calling a web user ----------------------------------------------------------


def test_a_channel_brought_twice_is_one_call() -> None:
    b = book()
    first = arrive(b)
    assert first and b.by_uuid("uuid-1") is not None
    assert arrive(b) == []  # the first session owns it
    assert len(b) == 1


def test_phone_calls_over_the_rate_get_switch_congestion_at_their_time() -> None:
    b = book(max_call_rate=1.0, call_burst=1)

    def at(uuid_: str, now: float) -> list[c.Action]:
        return b.sip_call_arrived(
            uuid=uuid_,
            callee="bob",
            caller_number="1001",
            cus_data="",
            callee_online=True,
            now=now,
        )

    assert at("u-1", 10.0)[-1].call_id == "call-1"
    assert at("u-2", 10.5) == [c.Hangup("call-2", "u-2", "SWITCH_CONGESTION")]
    assert at("u-3", 11.5)[-1].call_id == "call-3"


# -- state, shutdown ---------------------------------------------------------------------


def test_a_users_call_state_counts_only_its_own_calls() -> None:
    b = book()
    call = _call_of(b, invite(b, caller="alice"))
    b.handle(call.call_id, c.ChannelAnswered(), 1.0)
    assert b.call_state_of("alice") == CALL_STATE_IN_CALL
    assert b.calls_of("bob") == [] and b.call_state_of("bob") == CALL_STATE_IDLE


def test_shutdown_ends_a_call_that_has_no_channel_yet_at_once() -> None:
    b = book()
    call_id, _, _ = b.click_to_call("carol", "1006", callee_online=True, now=0.0)
    call = b.get(call_id)
    assert call is not None
    assert b.shutdown(1.0) == [
        c.CloseMedia(call_id, call.chan_id),
        c.CancelInvitation(call_id, "carol", sender="1006"),
        c.CallEnded(call_id, "shutdown", "SYSTEM_SHUTDOWN"),
    ]
    assert len(b) == 0 and b.pool.holder("1006") is None


def _call_of(b: CallBook, actions: list[c.Action]) -> c.Call:
    [originate] = actions
    assert isinstance(originate, c.Originate), actions
    found = b.by_uuid(originate.uuid)
    assert found is not None
    return found


def test_sip_data_or_user_data_that_is_not_text_is_left_out() -> None:
    b = book()
    [originate] = invite(b, {"ChanId": "ch-a", "SipData": 5551234, "UserData": {"a": 1}})
    assert isinstance(originate, c.Originate)
    assert originate.variables["origination_caller_id_number"] == "alice"
    assert "sip_h_X-ArInfo" not in originate.variables
