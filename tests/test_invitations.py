"""Invitation state machines: every state x event pair, and each timer on a fake clock."""

from __future__ import annotations

import pytest

from esl_bridge.core import ids
from esl_bridge.core.invitations import (
    ApiError,
    CancelTimer,
    Deliver,
    InvitationTimeouts,
    LocalEvent,
    LocalFailureReason,
    LocalInvitation,
    LocalState,
    NotifyPeer,
    RemoteEvent,
    RemoteFailureReason,
    RemoteInvitation,
    RemoteState,
    StartTimer,
    StateChanged,
    Timer,
    local_table,
    remote_table,
)

L, LE, LR = LocalState, LocalEvent, LocalFailureReason
R, RE, RR = RemoteState, RemoteEvent, RemoteFailureReason
T = InvitationTimeouts(peer_offline=30.0, no_response=30.0, answer=60.0)

# The contract, written out independently of the implementation's table.
# Entry: ApiError -> rejected; otherwise (new state, reason, event told to the peer,
# whether the invitation is delivered). "=" keeps the state, nothing told.
SAME = "="
LOCAL_EXPECT: dict[tuple[LocalState, LocalEvent], object] = {}
for _s in L:
    for _e in LE:
        LOCAL_EXPECT[(_s, _e)] = SAME
LOCAL_EXPECT.update(
    {
        (L.IDLE, LE.SEND): (L.SENT_TO_REMOTE, None, None, True),
        (L.IDLE, LE.CANCEL): ApiError.NOT_STARTED,
        (L.SENT_TO_REMOTE, LE.SEND): ApiError.ALREADY_SENT,
        (L.RECEIVED_BY_REMOTE, LE.SEND): ApiError.ALREADY_SENT,
        (L.ACCEPTED_BY_REMOTE, LE.SEND): ApiError.ALREADY_ACCEPT,
        (L.REFUSED_BY_REMOTE, LE.SEND): ApiError.ALREADY_END,
        (L.CANCELED, LE.SEND): ApiError.ALREADY_END,
        (L.FAILURE, LE.SEND): ApiError.ALREADY_END,
        (L.SENT_TO_REMOTE, LE.CANCEL): (L.CANCELED, None, RE.CANCELED, False),
        (L.RECEIVED_BY_REMOTE, LE.CANCEL): (L.CANCELED, None, RE.CANCELED, False),
        (L.ACCEPTED_BY_REMOTE, LE.CANCEL): ApiError.ALREADY_ACCEPT,
        (L.REFUSED_BY_REMOTE, LE.CANCEL): ApiError.ALREADY_END,
        (L.CANCELED, LE.CANCEL): ApiError.ALREADY_END,
        (L.FAILURE, LE.CANCEL): ApiError.ALREADY_END,
        (L.SENT_TO_REMOTE, LE.PEER_ONLINE): (L.SENT_TO_REMOTE, None, None, True),
        (L.RECEIVED_BY_REMOTE, LE.PEER_OFFLINE): (L.FAILURE, LR.PEER_OFFLINE, RE.EXPIRED, False),
        (L.SENT_TO_REMOTE, LE.REMOTE_RECEIVED): (L.RECEIVED_BY_REMOTE, None, None, False),
        (L.SENT_TO_REMOTE, LE.REMOTE_ACCEPTED): (
            L.ACCEPTED_BY_REMOTE,
            None,
            RE.ACCEPT_CONFIRMED,
            False,
        ),
        (L.RECEIVED_BY_REMOTE, LE.REMOTE_ACCEPTED): (
            L.ACCEPTED_BY_REMOTE,
            None,
            RE.ACCEPT_CONFIRMED,
            False,
        ),
        (L.IDLE, LE.REMOTE_ACCEPTED): (L.IDLE, None, RE.ACCEPT_FAILED, False),
        (L.REFUSED_BY_REMOTE, LE.REMOTE_ACCEPTED): (
            L.REFUSED_BY_REMOTE,
            None,
            RE.ACCEPT_FAILED,
            False,
        ),
        (L.CANCELED, LE.REMOTE_ACCEPTED): (L.CANCELED, None, RE.ACCEPT_FAILED, False),
        (L.FAILURE, LE.REMOTE_ACCEPTED): (L.FAILURE, None, RE.ACCEPT_FAILED, False),
        (L.SENT_TO_REMOTE, LE.REMOTE_REFUSED): (L.REFUSED_BY_REMOTE, None, None, False),
        (L.RECEIVED_BY_REMOTE, LE.REMOTE_REFUSED): (L.REFUSED_BY_REMOTE, None, None, False),
        (L.SENT_TO_REMOTE, LE.LOGGED_OUT): (L.FAILURE, LR.NOT_LOGGEDIN, RE.CALLER_OFFLINE, False),
        (L.RECEIVED_BY_REMOTE, LE.LOGGED_OUT): (
            L.FAILURE,
            LR.NOT_LOGGEDIN,
            RE.CALLER_OFFLINE,
            False,
        ),
        (L.SENT_TO_REMOTE, LE.NO_ACK_PEER_ONLINE): (
            L.FAILURE,
            LR.PEER_NO_RESPONSE,
            RE.EXPIRED,
            False,
        ),
        (L.SENT_TO_REMOTE, LE.NO_ACK_PEER_OFFLINE): (L.FAILURE, LR.PEER_OFFLINE, RE.EXPIRED, False),
        (L.RECEIVED_BY_REMOTE, LE.ANSWER_TIMEOUT): (
            L.FAILURE,
            LR.INVITATION_EXPIRE,
            RE.EXPIRED,
            False,
        ),
    }
)

REMOTE_EXPECT: dict[tuple[RemoteState, RemoteEvent], object] = {}
for _s in R:
    for _e in RE:
        REMOTE_EXPECT[(_s, _e)] = SAME
for _s in (R.IDLE, R.INVITATION_RECEIVED):
    REMOTE_EXPECT.update(
        {
            (_s, RE.ACCEPT): (R.ACCEPT_SENT_TO_LOCAL, None, LE.REMOTE_ACCEPTED),
            (_s, RE.REFUSE): (R.REFUSED, None, LE.REMOTE_REFUSED),
            (_s, RE.CANCELED): (R.CANCELED, None, None),
            (_s, RE.CALLER_OFFLINE): (R.FAILURE, RR.PEER_OFFLINE, None),
            (_s, RE.EXPIRED): (R.FAILURE, RR.INVITATION_EXPIRE, None),
        }
    )
REMOTE_EXPECT.update(
    {
        (R.IDLE, RE.RECEIVE): (R.INVITATION_RECEIVED, None, LE.REMOTE_RECEIVED),
        (R.ACCEPT_SENT_TO_LOCAL, RE.ACCEPT): ApiError.ALREADY_ACCEPT,
        (R.ACCEPT_SENT_TO_LOCAL, RE.REFUSE): ApiError.ALREADY_ACCEPT,
        (R.ACCEPTED, RE.ACCEPT): ApiError.ALREADY_ACCEPT,
        (R.ACCEPTED, RE.REFUSE): ApiError.ALREADY_ACCEPT,
        (R.ACCEPT_SENT_TO_LOCAL, RE.ACCEPT_CONFIRMED): (R.ACCEPTED, None, None),
        (R.ACCEPT_SENT_TO_LOCAL, RE.ACCEPT_FAILED): (R.FAILURE, RR.ACCEPT_FAILURE, None),
        (R.ACCEPT_SENT_TO_LOCAL, RE.CALLER_OFFLINE): (R.FAILURE, RR.ACCEPT_FAILURE, None),
        (R.ACCEPT_SENT_TO_LOCAL, RE.EXPIRED): (R.FAILURE, RR.ACCEPT_FAILURE, None),
        (R.ACCEPT_SENT_TO_LOCAL, RE.CANCELED): (R.FAILURE, RR.ACCEPT_FAILURE, None),
    }
)
for _s in (R.REFUSED, R.CANCELED, R.FAILURE):
    REMOTE_EXPECT[(_s, RE.ACCEPT)] = ApiError.ALREADY_END
    REMOTE_EXPECT[(_s, RE.REFUSE)] = ApiError.ALREADY_END


def local_in(state: LocalState, now: float = 0.0) -> LocalInvitation:
    """A caller invitation driven into ``state`` through the public API only."""
    inv = LocalInvitation("callee", content="{}", peer_online=True, timeouts=T)
    if state is L.IDLE:
        return inv
    assert inv.send(now).ok
    path = {
        L.SENT_TO_REMOTE: [],
        L.RECEIVED_BY_REMOTE: [LE.REMOTE_RECEIVED],
        L.ACCEPTED_BY_REMOTE: [LE.REMOTE_RECEIVED, LE.REMOTE_ACCEPTED],
        L.REFUSED_BY_REMOTE: [LE.REMOTE_REFUSED],
        L.CANCELED: [LE.CANCEL],
        L.FAILURE: [LE.LOGGED_OUT],
    }[state]
    for event in path:
        assert inv.handle(event, now, "resp").ok
    assert inv.state is state
    return inv


def remote_in(state: RemoteState, now: float = 0.0) -> RemoteInvitation:
    inv = RemoteInvitation("caller", content="{}", timeouts=T)
    path = {
        R.IDLE: [],
        R.INVITATION_RECEIVED: [RE.RECEIVE],
        R.ACCEPT_SENT_TO_LOCAL: [RE.RECEIVE, RE.ACCEPT],
        R.REFUSED: [RE.REFUSE],
        R.ACCEPTED: [RE.ACCEPT, RE.ACCEPT_CONFIRMED],
        R.CANCELED: [RE.CANCELED],
        R.FAILURE: [RE.EXPIRED],
    }[state]
    for event in path:
        assert inv.handle(event, now, "resp").ok
    assert inv.state is state
    return inv


def test_tables_are_complete() -> None:
    assert set(local_table()) == {(s, e) for s in L for e in LE}
    assert set(remote_table()) == {(s, e) for s in R for e in RE}


@pytest.mark.parametrize(("state", "event"), sorted(LOCAL_EXPECT, key=str))
def test_local_every_state_and_event(state: LocalState, event: LocalEvent) -> None:
    inv = local_in(state, now=5.0)
    expect = LOCAL_EXPECT[(state, event)]
    out = inv.handle(event, 7.0, "answer")
    if isinstance(expect, ApiError):
        assert out.error is expect
        assert out.actions == []
        assert inv.state is state
        return
    assert out.ok
    notified = [a.event for a in out.actions if isinstance(a, NotifyPeer)]
    delivered = any(isinstance(a, Deliver) for a in out.actions)
    changes = [a for a in out.actions if isinstance(a, StateChanged)]
    if expect == SAME:
        assert inv.state is state
        assert notified == []
        assert not delivered
        assert changes == []
        return
    assert isinstance(expect, tuple)
    new, reason, told, deliver = expect
    assert inv.state is new
    assert notified == ([told] if told else [])
    assert delivered is deliver
    if new is state:
        assert changes == []
    else:
        assert changes == [StateChanged(int(state), int(new), reason, inv.response)]
        assert inv.reason == reason
    if inv.ended:
        assert inv.next_deadline() is None  # an ended invitation runs no timer


@pytest.mark.parametrize(("state", "event"), sorted(REMOTE_EXPECT, key=str))
def test_remote_every_state_and_event(state: RemoteState, event: RemoteEvent) -> None:
    inv = remote_in(state)
    expect = REMOTE_EXPECT[(state, event)]
    if event is RE.ACCEPT:
        out = inv.accept(1.0, "answer")
    elif event is RE.REFUSE:
        out = inv.refuse(1.0, "answer")
    else:
        out = inv.handle(event, 1.0)
    if isinstance(expect, ApiError):
        assert out.error is expect
        assert out.actions == []
        assert inv.state is state
        return
    assert out.ok
    notified = [a.event for a in out.actions if isinstance(a, NotifyPeer)]
    changes = [a for a in out.actions if isinstance(a, StateChanged)]
    if expect == SAME:
        assert inv.state is state
        assert notified == []
        assert changes == []
        return
    assert isinstance(expect, tuple)
    new, reason, told = expect
    assert inv.state is new
    assert notified == ([told] if told else [])
    assert changes == [StateChanged(int(state), int(new), reason, inv.response)]
    if event in (RE.ACCEPT, RE.REFUSE):
        assert inv.response == "answer"
        assert out.actions[-1] == NotifyPeer(told, "answer")
    assert inv.next_deadline() is None


# ---- timers on a fake clock ----------------------------------------------------------


def test_peer_offline_after_30s() -> None:
    inv = LocalInvitation("callee", peer_online=False, timeouts=T)
    out = inv.send(100.0)
    assert StartTimer(Timer.ACK, 130.0) in out.actions
    assert Deliver() in out.actions  # the owner holds it until the callee logs in
    assert inv.next_deadline() == 130.0
    assert inv.poll(129.999) == []
    assert inv.state is L.SENT_TO_REMOTE
    actions = inv.poll(130.0)
    assert StateChanged(1, 6, LR.PEER_OFFLINE, None) in actions
    assert NotifyPeer(RE.EXPIRED) in actions
    assert inv.reason == LR.PEER_OFFLINE
    assert inv.next_deadline() is None


def test_peer_no_response_after_30s() -> None:
    inv = LocalInvitation("callee", peer_online=True, timeouts=T)
    inv.send(0.0)
    assert inv.poll(29.0) == []
    assert StateChanged(1, 6, LR.PEER_NO_RESPONSE, None) in inv.poll(30.5)


def test_presence_change_picks_the_matching_limit() -> None:
    timeouts = InvitationTimeouts(peer_offline=10.0, no_response=20.0, answer=60.0)
    inv = LocalInvitation("callee", peer_online=False, timeouts=timeouts)
    inv.send(0.0)
    assert inv.next_deadline() == 10.0
    out = inv.handle(LE.PEER_ONLINE, 5.0)
    assert Deliver() in out.actions
    assert inv.next_deadline() == 20.0  # measured from the send, not from the login
    inv.handle(LE.PEER_OFFLINE, 12.0)
    assert inv.next_deadline() == 10.0
    assert StateChanged(1, 6, LR.PEER_OFFLINE, None) in inv.poll(12.0)


def test_invitation_expire_60s_after_ack() -> None:
    inv = LocalInvitation("callee", peer_online=True, timeouts=T)
    inv.send(0.0)
    out = inv.handle(LE.REMOTE_RECEIVED, 10.0)
    assert CancelTimer(Timer.ACK) in out.actions
    assert StartTimer(Timer.ANSWER, 70.0) in out.actions
    assert inv.poll(45.0) == []  # the ack timer no longer runs
    assert inv.poll(69.9) == []
    actions = inv.poll(70.0)
    assert StateChanged(2, 6, LR.INVITATION_EXPIRE, None) in actions
    assert NotifyPeer(RE.EXPIRED) in actions


def test_answer_stops_timers() -> None:
    inv = LocalInvitation("callee", peer_online=True, timeouts=T)
    inv.send(0.0)
    inv.handle(LE.REMOTE_RECEIVED, 1.0)
    out = inv.handle(LE.REMOTE_ACCEPTED, 2.0, '{"Mode":1}')
    assert CancelTimer(Timer.ANSWER) in out.actions
    assert inv.response == '{"Mode":1}'
    assert inv.poll(1000.0) == []
    assert inv.state is L.ACCEPTED_BY_REMOTE


def test_cancel_stops_timers() -> None:
    inv = LocalInvitation("callee", peer_online=True, timeouts=T)
    inv.send(0.0)
    out = inv.cancel(3.0)
    assert out.actions[1] == CancelTimer(Timer.ACK)
    assert NotifyPeer(RE.CANCELED) in out.actions
    assert inv.next_deadline() is None
    assert inv.cancel(4.0).error is ApiError.ALREADY_END


def test_poll_fires_only_once() -> None:
    inv = LocalInvitation("callee", timeouts=T)
    inv.send(0.0)
    assert len([a for a in inv.poll(31.0) if isinstance(a, StateChanged)]) == 1
    assert inv.poll(1e9) == []


# ---- limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "channel", "ok"),
    [
        ("a" * 8192, "c" * 64, True),
        ("a" * 8193, "", False),
        ("é" * 4096, "", True),  # 8192 bytes of UTF-8
        ("é" * 4096 + "a", "", False),
        ("", "c" * 65, False),
        ("", "é" * 32, True),
        ("", "é" * 32 + "a", False),
        ("€" * 2730 + "ab", "", True),  # 3-byte chars, 8192 bytes
        ("€" * 2731, "", False),  # 8193 bytes
    ],
)
def test_send_limits(content: str, channel: str, ok: bool) -> None:
    inv = LocalInvitation("callee", content=content, channel_id=channel, timeouts=T)
    out = inv.send(0.0)
    if ok:
        assert out.ok
        assert inv.state is L.SENT_TO_REMOTE
    else:
        assert out.error is ApiError.INVALID_ARGUMENT
        assert out.actions == []  # nothing sent
        assert inv.state is L.IDLE
        assert inv.next_deadline() is None


@pytest.mark.parametrize("method", ["accept", "refuse"])
@pytest.mark.parametrize(("response", "ok"), [("r" * 8192, True), ("r" * 8193, False)])
def test_response_limit(method: str, response: str, ok: bool) -> None:
    inv = remote_in(R.INVITATION_RECEIVED)
    out = getattr(inv, method)(0.0, response)
    if ok:
        assert out.ok
        assert inv.response == response
    else:
        assert out.error is ApiError.INVALID_ARGUMENT
        assert out.actions == []
        assert inv.state is R.INVITATION_RECEIVED
        assert inv.response is None


def test_state_numbers_match_the_contract() -> None:
    assert [int(s) for s in L] == list(range(7))
    assert [s.name for s in L] == [
        "IDLE",
        "SENT_TO_REMOTE",
        "RECEIVED_BY_REMOTE",
        "ACCEPTED_BY_REMOTE",
        "REFUSED_BY_REMOTE",
        "CANCELED",
        "FAILURE",
    ]
    assert [s.name for s in R] == [
        "IDLE",
        "INVITATION_RECEIVED",
        "ACCEPT_SENT_TO_LOCAL",
        "REFUSED",
        "ACCEPTED",
        "CANCELED",
        "FAILURE",
    ]
    assert {r.name: int(r) for r in LR} == {
        "PEER_OFFLINE": 1,
        "PEER_NO_RESPONSE": 2,
        "INVITATION_EXPIRE": 3,
        "NOT_LOGGEDIN": 4,
    }
    assert {r.name: int(r) for r in RR} == {
        "PEER_OFFLINE": 1,
        "ACCEPT_FAILURE": 2,
        "INVITATION_EXPIRE": 3,
    }
    assert {e.name: int(e) for e in ApiError} == {
        "INVALID_ARGUMENT": 1,
        "NOT_STARTED": 2,
        "ALREADY_END": 3,
        "ALREADY_ACCEPT": 4,
        "ALREADY_SENT": 5,
    }


def test_ids_are_unique() -> None:
    many = {ids.new_id("inv") for _ in range(10_000)}
    assert len(many) == 10_000
    assert len(ids.new_channel_id().encode()) <= 64
