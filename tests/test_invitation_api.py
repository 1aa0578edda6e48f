"""The invitation machines through the methods the hub calls (core/invitations.py).

tests/test_invitations.py walks every state x event pair through ``handle``; here the
convenience methods (``receive``, ``accept``, ``refuse``), the defaults of a new
invitation, and what ``handle`` records on the way (when the invitation was sent, which
response is the callee's answer) are held on their own: mutation testing showed that
each could change with the table walk still green.
"""

from __future__ import annotations

from esl_bridge.core.invitations import (
    InvitationTimeouts,
    LocalEvent,
    LocalInvitation,
    LocalState,
    NotifyPeer,
    RemoteEvent,
    RemoteInvitation,
    RemoteState,
    StartTimer,
    StateChanged,
    Timer,
)

L, LE = LocalState, LocalEvent
R, RE = RemoteState, RemoteEvent


def test_a_new_caller_invitation_holds_its_callee_and_nothing_else() -> None:
    inv = LocalInvitation("bob")
    assert (inv.callee_id, inv.content, inv.channel_id) == ("bob", "", "")
    assert inv.peer_online is False
    assert (inv.sent_at, inv.reason, inv.response) == (None, None, None)
    assert inv.state is L.IDLE
    assert inv.timeouts == InvitationTimeouts()
    assert inv.next_deadline() is None


def test_a_new_callee_invitation_holds_its_caller_and_fields() -> None:
    inv = RemoteInvitation("alice", content="hello", channel_id="room-1")
    assert (inv.caller_id, inv.content, inv.channel_id) == ("alice", "hello", "room-1")
    assert (inv.reason, inv.response) == (None, None)
    assert inv.state is R.IDLE
    assert inv.timeouts == InvitationTimeouts()
    bare = RemoteInvitation("carol")
    assert (bare.content, bare.channel_id) == ("", "")


def test_default_timeouts_are_the_documented_30_30_60() -> None:
    # README.rst: 30 s when the callee stays offline, 60 s for an answer.
    inv = LocalInvitation("bob")
    out = inv.send(100.0)
    assert StartTimer(Timer.ACK, 130.0) in out.actions
    assert inv.sent_at == 100.0


def test_receive_acknowledges_and_tells_the_caller() -> None:
    inv = RemoteInvitation("alice")
    out = inv.receive(5.0)
    assert out.ok
    assert inv.state is R.INVITATION_RECEIVED
    assert out.actions == [
        StateChanged(int(R.IDLE), int(R.INVITATION_RECEIVED), None, None),
        NotifyPeer(LE.REMOTE_RECEIVED, None),
    ]


def test_accept_and_refuse_without_a_response_send_an_empty_one() -> None:
    accepted = RemoteInvitation("alice")
    accepted.receive(0.0)
    out = accepted.accept(1.0)
    assert out.ok and accepted.response == ""
    assert NotifyPeer(LE.REMOTE_ACCEPTED, "") in out.actions

    refused = RemoteInvitation("alice")
    refused.receive(0.0)
    out = refused.refuse(1.0)
    assert out.ok and refused.response == ""
    assert NotifyPeer(LE.REMOTE_REFUSED, "") in out.actions


def test_accept_and_refuse_carry_the_callees_response() -> None:
    accepted = RemoteInvitation("alice")
    out = accepted.accept(1.0, "on my way")
    assert accepted.state is R.ACCEPT_SENT_TO_LOCAL
    assert NotifyPeer(LE.REMOTE_ACCEPTED, "on my way") in out.actions

    refused = RemoteInvitation("alice")
    out = refused.refuse(1.0, "busy")
    assert refused.state is R.REFUSED
    assert NotifyPeer(LE.REMOTE_REFUSED, "busy") in out.actions


def test_a_rejected_second_send_does_not_move_the_ack_deadline() -> None:
    # Sent at 0 to an offline callee; a second send at 10 is refused (already sent).
    # When the callee comes online at 12 the ack limit becomes 30 s from the first send.
    inv = LocalInvitation("bob", timeouts=InvitationTimeouts(peer_offline=50.0))
    assert inv.send(0.0).ok
    assert not inv.send(10.0).ok
    assert inv.sent_at == 0.0
    inv.handle(LE.PEER_ONLINE, 12.0)
    assert inv.next_deadline() == 30.0


def test_an_event_before_sending_does_not_count_as_the_send_time() -> None:
    inv = LocalInvitation("bob")
    inv.handle(LE.REMOTE_ACCEPTED, 3.0)  # a stray notification: nothing was sent yet
    assert inv.sent_at is None
    assert inv.send(7.0).ok
    assert inv.sent_at == 7.0
    assert inv.next_deadline() == 37.0


def test_only_an_accept_or_refuse_sets_the_callees_response() -> None:
    inv = LocalInvitation("bob", peer_online=True)
    inv.send(0.0)
    out = inv.handle(LE.REMOTE_RECEIVED, 1.0, "ignored")
    assert inv.response is None
    assert StateChanged(int(L.SENT_TO_REMOTE), int(L.RECEIVED_BY_REMOTE), None, None) in (
        out.actions
    )
    out = inv.handle(LE.REMOTE_ACCEPTED, 2.0, "yes")
    assert inv.response == "yes"
    assert StateChanged(int(L.RECEIVED_BY_REMOTE), int(L.ACCEPTED_BY_REMOTE), None, "yes") in (
        out.actions
    )


def test_the_callers_confirmation_carries_the_response_to_the_callee() -> None:
    inv = LocalInvitation("bob", peer_online=True)
    inv.send(0.0)
    out = inv.handle(LE.REMOTE_ACCEPTED, 2.0, "yes")
    assert NotifyPeer(RE.ACCEPT_CONFIRMED, "yes") in out.actions
