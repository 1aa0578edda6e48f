"""Click-to-call in the core alone (``CallBook.click_to_call``, ``ClickToCall`` in
core/call.py): the web user is invited first, the number dialled only once it accepts;
every refusal and every way the call ends, with the number released. No I/O, ``now`` passed
in. Mutation testing found no pure test reaching this code (docs/mutation.rst)."""

from __future__ import annotations

import json
from itertools import count

import pytest

from esl_bridge.core import call as c
from esl_bridge.core import peer_messages as pm
from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.numbers import NumberPool

SETTINGS = BookSettings(
    rtm2sip_on=True,
    proxy_on=True,
    sip_domain="127.0.0.1",
    gateway_uid="gateway",
    max_calls=2,
    originate_timeout=45,
    hangup_grace=5.0,
)


def book(**overrides: object) -> CallBook:
    ids = count(1)
    values = {**SETTINGS.__dict__, **overrides}
    return CallBook(
        BookSettings(**values),  # type: ignore[arg-type]
        NumberPool.from_rule("1005;1006"),
        new_id=lambda prefix: f"{prefix}-{next(ids)}",
    )


def started(b: CallBook, callee: str = "alice", number: str = "1005") -> tuple[str, c.Call]:
    call_id, refusal, actions = b.click_to_call(callee, number, callee_online=True, now=0.0)
    assert refusal == "" and call_id
    call = b.get(call_id)
    assert call is not None
    [invitation] = actions
    assert isinstance(invitation, c.SendInvitation)
    assert (invitation.call_id, invitation.callee, invitation.sender) == (call_id, callee, number)
    assert json.loads(invitation.content) == {
        "Mode": 1,
        "Conference": False,
        "ChanId": call.chan_id,
        "DisplayName": number,
    }
    assert call.state is c.State.INVITING
    assert b.pool.holder(number) == call_id  # held from the start: nobody else dials it
    return call_id, call


def ended(actions: list[c.Action]) -> c.CallEnded:
    [end] = [a for a in actions if isinstance(a, c.CallEnded)]
    return end


def peer_texts(actions: list[c.Action]) -> list[dict[str, object]]:
    return [json.loads(a.text) for a in actions if isinstance(a, c.SendPeerMessage)]


def test_refusals() -> None:
    assert book(rtm2sip_on=False).click_to_call("alice", "1005", callee_online=True, now=0) == (
        "",
        "rtm2sip_off",
        [],
    )
    b = book()
    assert b.click_to_call("alice", "2000", callee_online=True, now=0) == (
        "",
        "not_in_acc_rule",
        [],
    )
    assert b.click_to_call("alice", "1005", callee_online=False, now=0) == (
        "",
        "user_offline",
        [],
    )
    started(b, "alice", "1005")
    assert b.click_to_call("bob", "1005", callee_online=True, now=0) == ("", "number_busy", [])
    started(b, "bob", "1006")
    assert b.click_to_call("carol", "1006", callee_online=True, now=0) == ("", "capacity", [])
    assert not b.pool.holder("2000")


def test_accepted_dials_the_number_then_answer_connects() -> None:
    b = book()
    call_id, call = started(b)
    actions = b.handle(call_id, c.InvitationAccepted(), 1.0)
    assert [type(a) for a in actions] == [c.OpenMedia, c.Originate]
    media, originate = actions
    assert isinstance(media, c.OpenMedia) and media.chan_id == call.chan_id
    assert isinstance(originate, c.Originate) and originate.uuid == call.uuid
    assert originate.destination and originate.variables
    assert call.state is c.State.ORIGINATING and call.channel_alive
    assert b.by_uuid(call.uuid) is call

    early = b.handle(call_id, c.ChannelEarlyMedia(), 2.0)
    assert call.state is c.State.EARLY_MEDIA
    assert peer_texts(early) == [json.loads(c.sip_state_message("early_media"))]
    answered = b.handle(call_id, c.ChannelAnswered(), 3.0)
    assert call.state is c.State.CONNECTED and call.answered_at == 3.0
    assert peer_texts(answered) == [json.loads(c.sip_state_message("answered"))]
    for a in answered:
        if isinstance(a, c.SendPeerMessage):
            assert (a.sender, a.to) == ("1005", "alice")


@pytest.mark.parametrize(
    ("event", "reason", "cause"),
    [
        (c.InvitationRefused(), "refused", "CALL_REJECTED"),
        (c.InvitationFailed("PEER_OFFLINE"), "peer_offline", "USER_NOT_REGISTERED"),
        (c.InvitationFailed("INVITATION_EXPIRE"), "invitation_expire", "NO_ANSWER"),
        (c.InvitationFailed("SOMETHING_NEW"), "something_new", "NO_ANSWER"),
    ],
)
def test_an_invitation_that_does_not_lead_anywhere_ends_without_a_channel(
    event: c.Event, reason: str, cause: str
) -> None:
    b = book()
    call_id, _call = started(b)
    actions = b.handle(call_id, event, 1.0)
    end = ended(actions)
    assert (end.reason, end.cause) == (reason, cause)
    assert not [a for a in actions if isinstance(a, c.Hangup | c.CancelInvitation)]
    assert b.get(call_id) is None and b.pool.holder("1005") is None


@pytest.mark.parametrize(
    ("event", "reason", "cause"),
    [
        (c.WebUserGone(), "web_gone", "USER_NOT_REGISTERED"),
        (c.Shutdown(), "shutdown", "SYSTEM_SHUTDOWN"),
        (c.ApiHangup(), "api_hangup", "NORMAL_CLEARING"),
    ],
)
def test_ended_while_inviting_cancels_the_invitation(
    event: c.Event, reason: str, cause: str
) -> None:
    b = book()
    call_id, _call = started(b)
    actions = b.handle(call_id, event, 1.0)
    [cancel] = [a for a in actions if isinstance(a, c.CancelInvitation)]
    assert (cancel.callee, cancel.sender) == ("alice", "1005")
    end = ended(actions)
    assert (end.reason, end.cause) == (reason, cause)
    assert not [a for a in actions if isinstance(a, c.Hangup)]  # nothing was dialled
    assert b.pool.holder("1005") is None


def test_the_sip_side_failing_tells_the_web_user() -> None:
    b = book()
    call_id, call = started(b)
    b.handle(call_id, c.InvitationAccepted(), 1.0)
    actions = b.handle(call_id, c.OriginateFailed("USER_BUSY"), 2.0)
    assert {"Cmd": "EndCall"}.items() <= peer_texts(actions)[0].items()
    end = ended(actions)
    assert (end.reason, end.cause) == (c.sip_failure_reason("USER_BUSY"), "USER_BUSY")
    assert not call.channel_alive and b.pool.holder("1005") is None


def test_the_web_user_hanging_up_before_the_answer_cancels_the_dialling() -> None:
    b = book()
    call_id, call = started(b)
    b.handle(call_id, c.InvitationAccepted(), 1.0)
    b.handle(call_id, c.ChannelRinging(), 1.5)
    actions = b.handle(call_id, c.PeerEndCall(), 2.0)
    [hangup] = [a for a in actions if isinstance(a, c.Hangup)]
    assert (hangup.uuid, hangup.cause) == (call.uuid, "ORIGINATOR_CANCEL")
    assert call.state is c.State.ENDING and b.pool.holder("1005") is None
    done = b.handle(call_id, c.ChannelHungUp("ORIGINATOR_CANCEL"), 2.1)
    assert (ended(done).reason, ended(done).cause) == ("web_hangup", "ORIGINATOR_CANCEL")
    assert b.get(call_id) is None


def test_an_api_hangup_after_the_answer_ends_the_call_for_the_web_user() -> None:
    b = book()
    call_id, call = started(b)
    b.handle(call_id, c.InvitationAccepted(), 1.0)
    b.handle(call_id, c.ChannelAnswered(), 2.0)
    actions = b.handle(call_id, c.ApiHangup(), 3.0)
    assert [t.get("Cmd") for t in peer_texts(actions)] == [pm.EndCall.CMD]
    assert not [a for a in actions if isinstance(a, c.CancelInvitation)]
    [hangup] = [a for a in actions if isinstance(a, c.Hangup)]
    assert (hangup.uuid, hangup.cause) == (call.uuid, "NORMAL_CLEARING")
