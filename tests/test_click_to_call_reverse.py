"""Click-to-call in the reverse order (``"order": "number_first"``): the number is dialled
first, the web user rung once it answered (core/call.py NumberFirstClickToCall).

The state machine alone, with a fake clock, one test per transition; then through the
whole gateway and the simulator (the phone answers, the web user's aiortc peer accepts,
audio checked both ways by tone) and its failure paths, in a loopback-only namespace.
"""

from __future__ import annotations

import json

import pytest
from support.gateway_support import WebUser, assert_nothing_left, wait_until
from support.netns import loopback_only
from support.web_peer import WebPeer
from test_api import (
    assert_tones_both_ways,
    error_code,
    gateway_and_phone,
    gateway_with_webhooks,
)

from esl_bridge.core import call as c
from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.numbers import NumberPool
from esl_bridge.sim import AudioSource, Extension


def _book() -> CallBook:
    settings = BookSettings(rtm2sip_on=True, proxy_on=True, sip_domain="sip.test", gateway_uid="gw")
    return CallBook(settings, NumberPool(("1000", "1001")))


def _dialling(book: CallBook) -> tuple[str, c.Originate]:
    call_id, refusal, actions = book.click_to_call(
        "alice", "1000", callee_online=True, now=0.0, number_first=True
    )
    assert refusal == ""
    [originate] = actions
    assert isinstance(originate, c.Originate)
    return call_id, originate


def _state(book: CallBook, call_id: str) -> str:
    call = book.get(call_id)
    return "gone" if call is None else call.state.value


def _invited(book: CallBook) -> tuple[str, c.Originate]:
    call_id, originate = _dialling(book)
    book.handle(call_id, c.ChannelAnswered(), 1.0)
    assert _state(book, call_id) == "inviting"
    return call_id, originate


def test_the_number_is_dialled_first_and_the_web_user_rung_once_it_answered() -> None:
    book = _book()
    call_id, originate = _dialling(book)
    assert originate.destination == "user/1000@sip.test"
    assert originate.variables["origination_caller_id_number"] == "alice"
    assert originate.variables["esl_bridge_call_id"] == call_id
    assert _state(book, call_id) == "originating"
    assert book.get(call_id).order == "number_first"  # type: ignore[union-attr]
    assert book.pool.busy() == {"1000": call_id}
    # Ringing and early media of the number: only the stage changes, nobody is told.
    assert book.handle(call_id, c.ChannelRinging(), 0.5) == []
    assert _state(book, call_id) == "ringing"
    assert book.handle(call_id, c.ChannelEarlyMedia(), 0.6) == []
    assert _state(book, call_id) == "early_media"
    # Answered: ringback to the number, the invitation to the web user from it.
    answered = book.handle(call_id, c.ChannelAnswered(), 1.0)
    assert answered[0] == c.PlayRingback(call_id, originate.uuid)
    invite = answered[1]
    assert isinstance(invite, c.SendInvitation)
    assert (invite.callee, invite.sender) == ("alice", "1000")
    content = json.loads(invite.content)
    assert (content["DisplayName"], content["ChanId"]) == ("1000", book.get(call_id).chan_id)  # type: ignore[union-attr]
    assert _state(book, call_id) == "inviting"
    # Accepted: ringback stops, the media leg opens, the web user hears "answered".
    accepted = book.handle(call_id, c.InvitationAccepted(), 2.0)
    assert accepted == [
        c.StopRingback(call_id, originate.uuid),
        c.OpenMedia(call_id, book.get(call_id).chan_id),  # type: ignore[union-attr]
        c.SendPeerMessage(call_id, "1000", "alice", c.sip_state_message("answered")),
    ]
    call = book.get(call_id)
    assert call is not None and call.state is c.State.CONNECTED and call.answered_at == 2.0


def test_unicast_starts_once_the_channel_has_media_and_the_browser_is_connected() -> None:
    book = _book()
    call_id, originate = _invited(book)
    # The answer brought the channel's media while the web user was still being rung.
    assert book.handle(call_id, c.ChannelMediaReady(), 1.0) == []
    book.handle(call_id, c.InvitationAccepted(), 2.0)
    assert book.handle(call_id, c.MediaConnected(), 3.0) == [
        c.StartUnicast(call_id, originate.uuid)
    ]
    assert book.handle(call_id, c.MediaConnected(), 3.5) == []  # an ICE restart: once only


def test_ringing_only_number_answers_straight_from_originating() -> None:
    book = _book()
    call_id, _ = _dialling(book)
    assert isinstance(book.handle(call_id, c.ChannelAnswered(), 1.0)[1], c.SendInvitation)


@pytest.mark.parametrize("stage", ["originating", "ringing", "early_media"])
@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (c.OriginateFailed("USER_BUSY"), "busy"),
        (c.ChannelHungUp("NO_ANSWER"), "no_answer"),
        (c.OriginateFailed("NETWORK_OUT_OF_ORDER"), c.UNREACHABLE),
        (c.ChannelLost("LOSE_RACE"), c.UNREACHABLE),
    ],
)
def test_a_number_that_fails_ends_the_call_before_the_web_user_is_rung(
    stage: str, event: c.Event, reason: str
) -> None:
    book = _book()
    call_id, _ = _dialling(book)
    if stage != "originating":
        book.handle(call_id, c.ChannelRinging(), 0.5)
    if stage == "early_media":
        book.handle(call_id, c.ChannelEarlyMedia(), 0.6)
    assert _state(book, call_id) == stage
    actions = book.handle(call_id, event, 1.0)
    # Nobody on the web side heard of the call: no invitation, no message, no hangup (the
    # channel is gone already).
    assert not [
        a
        for a in actions
        if isinstance(a, c.SendInvitation | c.CancelInvitation | c.SendPeerMessage | c.Hangup)
    ]
    assert actions[-1] == c.CallEnded(call_id, reason, event.cause)  # type: ignore[attr-defined]
    assert len(book) == 0 and not book.pool.busy()


@pytest.mark.parametrize(
    ("event", "reason", "cause", "cancels"),
    [
        (c.InvitationRefused(), "refused", "CALL_REJECTED", False),
        (c.InvitationFailed("PEER_OFFLINE"), "peer_offline", "USER_NOT_REGISTERED", False),
        (c.InvitationFailed("PEER_NO_RESPONSE"), "peer_no_response", "NO_USER_RESPONSE", False),
        (c.InvitationFailed("INVITATION_EXPIRE"), "invitation_expire", "NO_ANSWER", False),
        (c.WebUserGone(), "web_gone", "USER_NOT_REGISTERED", True),
        (c.ApiHangup(), "api_hangup", "NORMAL_CLEARING", True),
        (c.Shutdown(), "shutdown", "SYSTEM_SHUTDOWN", True),
        (c.GatewayError("esl PlayRingback failed"), "esl PlayRingback failed",
         "NORMAL_TEMPORARY_FAILURE", True),
    ],
)  # fmt: skip
def test_the_web_user_not_taking_the_call_hangs_the_number_up(
    event: c.Event, reason: str, cause: str, cancels: bool
) -> None:
    book = _book()
    call_id, originate = _invited(book)
    actions = book.handle(call_id, event, 2.0)
    assert c.Hangup(call_id, originate.uuid, cause) in actions
    assert (c.CancelInvitation(call_id, "alice", sender="1000") in actions) is cancels
    assert not book.pool.busy()
    assert _state(book, call_id) == "ending"
    done = book.handle(call_id, c.ChannelHungUp(cause), 3.0)
    assert done == [c.CallEnded(call_id, reason, cause)]
    assert len(book) == 0


def test_the_number_hanging_up_while_the_web_user_rings_cancels_the_invitation() -> None:
    book = _book()
    call_id, _ = _invited(book)
    actions = book.handle(call_id, c.ChannelHungUp("NORMAL_CLEARING"), 2.0)
    assert c.CancelInvitation(call_id, "alice", sender="1000") in actions
    assert not [a for a in actions if isinstance(a, c.Hangup)]
    assert actions[-1] == c.CallEnded(call_id, "sip_hangup", "NORMAL_CLEARING")
    assert len(book) == 0


@pytest.mark.parametrize(
    ("event", "reason", "cause"),
    [
        (c.WebUserGone(), "web_gone", "ORIGINATOR_CANCEL"),
        (c.ApiHangup(), "api_hangup", "NORMAL_CLEARING"),
        (c.Shutdown(), "shutdown", "SYSTEM_SHUTDOWN"),
        (
            c.GatewayError("esl Originate failed"),
            "esl Originate failed",
            "NORMAL_TEMPORARY_FAILURE",
        ),
    ],
)
def test_ending_while_the_number_rings_hangs_it_up_and_tells_nobody(
    event: c.Event, reason: str, cause: str
) -> None:
    book = _book()
    call_id, originate = _dialling(book)
    book.handle(call_id, c.ChannelRinging(), 0.5)
    actions = book.handle(call_id, event, 1.0)
    assert c.Hangup(call_id, originate.uuid, cause) in actions
    assert not [a for a in actions if isinstance(a, c.CancelInvitation | c.SendPeerMessage)]
    assert book.handle(call_id, c.ChannelHungUp(cause), 2.0) == [
        c.CallEnded(call_id, reason, cause)
    ]


@pytest.mark.parametrize(
    ("event", "reason", "cause", "web_told"),
    [
        (c.ChannelHungUp("NORMAL_CLEARING"), "sip_hangup", "NORMAL_CLEARING", True),
        (c.PeerEndCall(), "web_hangup", "NORMAL_CLEARING", False),
        (c.WebUserGone(), "web_gone", "NORMAL_CLEARING", False),
        (c.MediaFailed("media_timeout"), "media_timeout", "MEDIA_TIMEOUT", True),
        (c.ApiHangup(), "api_hangup", "NORMAL_CLEARING", True),
        (c.Shutdown(), "shutdown", "SYSTEM_SHUTDOWN", True),
    ],
)
def test_a_connected_call_ends_as_the_other_order_does(
    event: c.Event, reason: str, cause: str, web_told: bool
) -> None:
    book = _book()
    call_id, originate = _invited(book)
    book.handle(call_id, c.InvitationAccepted(), 2.0)
    chan_id = book.get(call_id).chan_id  # type: ignore[union-attr]
    actions = book.handle(call_id, event, 3.0)
    end_call = c.SendPeerMessage(call_id, "1000", "alice", c.END_CALL)
    assert (end_call in actions) is web_told
    assert c.CloseMedia(call_id, chan_id) in actions
    hung_up = isinstance(event, c.ChannelHungUp)
    assert (c.Hangup(call_id, originate.uuid, cause) in actions) is not hung_up
    if not hung_up:
        actions = book.handle(call_id, c.ChannelHungUp(cause), 4.0)
    assert actions[-1] == c.CallEnded(call_id, reason, cause)
    assert len(book) == 0 and not book.pool.busy()


@pytest.mark.parametrize(
    ("stage", "event"),
    [
        ("originating", c.InvitationAccepted()),  # nobody was invited
        ("originating", c.PeerEndCall()),
        ("originating", c.MediaConnected()),
        ("inviting", c.ChannelAnswered()),  # a second answer
        ("inviting", c.PeerEndCall()),  # not accepted: no call to end from the browser
        ("inviting", c.MediaConnected()),
    ],
)
def test_events_that_do_not_apply_change_nothing(stage: str, event: c.Event) -> None:
    book = _book()
    call_id, _ = _invited(book) if stage == "inviting" else _dialling(book)
    [ignored] = book.handle(call_id, event, 2.0)
    assert isinstance(ignored, c.Ignored)
    assert _state(book, call_id) == stage


def test_refusals_are_those_of_the_other_order() -> None:
    book = _book()
    assert (
        book.click_to_call("bob", "1000", callee_online=False, now=0.0, number_first=True)[1]
        == "user_offline"
    )
    _dialling(book)
    refused = book.click_to_call("bob", "1000", callee_online=True, now=0.0, number_first=True)
    assert refused == ("", "number_busy", [])
    assert len(book) == 1


# -- through the gateway and the simulator ------------------------------------------------

NUMBER_FIRST = {"uid": "alice", "number": "1000", "order": "number_first"}


def _ringback(channel: object) -> bool:
    running = getattr(channel, "running_exec", None)
    return running is not None and running[0] == "playback" and "tone_stream://" in running[1]


def _invitations(user: WebUser) -> list[dict[str, object]]:
    return [m for m in user.inbox if m.get("type") == "invitation"]


@loopback_only(timeout=180)
def test_number_first_dials_the_phone_then_rings_the_browser_with_audio_both_ways() -> None:
    with gateway_and_phone() as (gateway, sim, backend, alice):
        created = backend.ok("POST", "/calls", NUMBER_FIRST, status=201)
        call_id = created["call_id"]
        assert (created["state"], created["order"]) == ("originating", "number_first")
        wait_until(lambda: len(sim.channels()) == 1, 10, "the phone's channel")
        [channel] = sim.channels()
        assert channel.variables.get("esl_bridge_call_id") == call_id
        assert channel.variables.get("origination_caller_id_number") == "alice"

        # The browser rings only once the phone answered; the phone hears ringback.
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 15, "alice rings")
        assert channel.answered
        assert invitation["caller"] == "1000"
        chan_id = json.loads(invitation["content"])["ChanId"]
        assert chan_id == invitation["channel_id"]
        wait_until(lambda: _ringback(channel), 10, "ringback played to the phone")
        shown = backend.ok("GET", f"/calls/{call_id}")
        assert (shown["state"], shown["answered"]) == ("inviting", False)

        alice.request({"type": "ack", "inv": invitation["inv"]})
        reply = alice.request(
            {"type": "accept", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})}
        )
        assert reply["type"] == "ok", reply
        answered = alice.wait_peer_cmd("SipState", timeout=15)
        assert (answered["from"], answered["State"]) == ("1000", "answered")
        peer = WebPeer(alice)
        peer.offer("1000", chan_id)
        wait_until(lambda: not _ringback(channel), 10, "the ringback stopped")
        assert_tones_both_ways(channel, peer)

        shown = backend.ok("GET", f"/calls/{call_id}")
        assert (shown["state"], shown["answered"], shown["order"]) == (
            "connected",
            True,
            "number_first",
        )
        backend.ok("DELETE", f"/calls/{call_id}", status=202)
        assert alice.wait_peer_cmd("EndCall")["from"] == "1000"
        assert_nothing_left(gateway, sim)
        assert channel.hangup_cause == "NORMAL_CLEARING"
        peer.close()
        alice.close()


@loopback_only(timeout=180)
def test_number_first_failures_end_the_call_on_every_side() -> None:
    with gateway_with_webhooks() as (hooks, gateway, sim, backend, alice):
        got, answer, _ = backend.request("POST", "/calls", {**NUMBER_FIRST, "order": "both"})
        assert (got, error_code(answer)) == (400, "bad_request")
        assert "'order'" in answer["error"]["message"]

        def ended(call_id: str) -> dict[str, object]:
            event = hooks.wait_event("call.ended", call_id=call_id)
            assert_nothing_left(gateway, sim)
            return dict(event["data"])

        # The phone is busy: the call ends before the browser is ever rung.
        busy = backend.ok("POST", "/calls", {**NUMBER_FIRST, "number": "1003"}, status=201)
        data = ended(busy["call_id"])
        assert (data["reason"], data["cause"], data["order"]) == (
            "busy",
            "USER_BUSY",
            "number_first",
        )
        # Unreachable (not registered): the same.
        gone = backend.ok("POST", "/calls", {**NUMBER_FIRST, "number": "1019"}, status=201)
        assert ended(gone["call_id"])["reason"] == "not_registered"
        assert _invitations(alice) == []

        # The web user refuses: the answered phone is hung up with CALL_REJECTED.
        sim.set_extension("1001", Extension("echo", audio=AudioSource("echo")))
        refused = backend.ok("POST", "/calls", {**NUMBER_FIRST, "number": "1001"}, status=201)
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 15, "alice rings")
        [channel] = sim.channels()
        wait_until(lambda: _ringback(channel), 10, "ringback played to the phone")
        alice.request({"type": "refuse", "inv": invitation["inv"], "response": ""})
        assert ended(refused["call_id"])["reason"] == "refused"
        assert channel.hangup_cause == "CALL_REJECTED"

        # DELETE while the phone still rings: hung up, the browser never rung.
        sim.set_extension("1004", Extension("no_answer", answer_after=None, ring_seconds=120))
        ringing = backend.ok("POST", "/calls", {**NUMBER_FIRST, "number": "1004"}, status=201)
        wait_until(lambda: len(sim.channels()) == 1, 10, "the phone's channel")
        [channel] = sim.channels()
        hooks.wait_event("call.progress", call_id=ringing["call_id"], state="ringing")
        shown = backend.ok("GET", f"/calls/{ringing['call_id']}")
        assert shown["state"] == "ringing"
        backend.ok("DELETE", f"/calls/{ringing['call_id']}", status=202)
        assert ended(ringing["call_id"])["reason"] == "api_hangup"
        assert channel.hangup_cause == "NORMAL_CLEARING"

        # DELETE while the browser rings: its invitation is canceled, the phone hung up.
        rung = backend.ok("POST", "/calls", {**NUMBER_FIRST, "number": "1001"}, status=201)
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 15, "alice rings")
        hooks.wait_event("call.progress", call_id=rung["call_id"], state="inviting")
        backend.ok("DELETE", f"/calls/{rung['call_id']}", status=202)
        alice.wait(
            lambda m: m.get("type") == "remote_state" and m.get("inv") == invitation["inv"],
            10,
            "the invitation canceled",
        )
        assert ended(rung["call_id"])["reason"] == "api_hangup"
        assert _invitations(alice) == []

        # The webhooks show each stage, in order.
        stages = [
            e["data"]["state"]
            for e in hooks.events()
            if e["type"] == "call.progress" and e["data"]["call_id"] == rung["call_id"]
        ]
        assert stages[0] == "ringing" or stages[0] == "inviting", stages
        assert stages[-1] == "inviting", stages
        alice.close()
