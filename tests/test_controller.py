"""The call controller alone: a real hub, a fake channel port, a fake clock, no sockets.

The seams to the ESL side are typed (``ChannelOp`` values one way, ``EventSink`` method
calls the other), so these tests drive them as the ESL side would and read what the
controller asks of FreeSWITCH.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.signaling_support import FakeClock

from esl_bridge import config
from esl_bridge.core import call as c
from esl_bridge.esl.protocol import ChannelRecord
from esl_bridge.gateway.controller import CallController
from esl_bridge.gateway.esl_side import ChannelOp, SendDtmf, Unicast
from esl_bridge.media.unicast import ChannelFormat, UnicastParams
from esl_bridge.signaling.hub import Hub
from esl_bridge.signaling.settings import signaling_settings

APPID = "unit"


class Switch:
    """The ChannelPort: records what the controller asks."""

    def __init__(self) -> None:
        self.originated: list[c.Originate] = []
        self.ops: list[ChannelOp] = []

    def originate(self, action: c.Originate) -> None:
        self.originated.append(action)

    def operate(self, op: ChannelOp) -> None:
        self.ops.append(op)


class Browser:
    """A hub connection as the WebSocket endpoint would have it."""

    def __init__(self, hub: Hub, clock: FakeClock, uid: str) -> None:
        self.hub, self.clock, self.inbox = hub, clock, []  # type: list[dict[str, Any]]
        self.cid = hub.connect(self, clock())
        self.say({"type": "login", "appid": APPID, "uid": uid})

    def send(self, message: dict[str, Any]) -> None:
        self.inbox.append(message)

    def close(self, code: int, reason: str) -> None:
        self.inbox.append({"type": "closed", "code": code})

    def say(self, message: dict[str, Any]) -> None:
        self.hub.receive(self.cid, json.dumps({"v": 1, **message}), self.clock())

    def peer_cmds(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.inbox if m.get("type") == "message"]


def in_loop(test: Callable[[], None]) -> Callable[[], None]:
    """Run the test body on an event loop (the controller's home), no network."""

    @functools.wraps(test)
    def wrapper() -> None:
        async def body() -> None:
            test()

        asyncio.run(body())

    return wrapper


def _controller() -> tuple[CallController, Hub, Switch, FakeClock]:
    settings = config.from_text(
        f"""
[global]
appid = {APPID}
[rtm2sip]
on = 1
acc_rule = 10[00-09]
[proxy]
on = 1
[auth]
open_mode = 1
""",
        "<unit>",
    )
    clock = FakeClock()
    hub = Hub(signaling_settings(settings))
    switch = Switch()
    controller = CallController(settings, hub, switch, clock=clock)
    # What start() does first, without its timer task: serve the numbers.
    controller.handle.register([*controller.pool, controller.gateway_uid], clock(), present=False)
    controller.set_esl_state("connected")
    return controller, hub, switch, clock


def _answered_web_call() -> tuple[CallController, Switch, Browser, c.Originate]:
    controller, hub, switch, clock = _controller()
    alice = Browser(hub, clock, "alice")
    content = json.dumps({"Mode": 1, "Conference": False, "ChanId": "ch-1"})
    alice.say({"type": "invite", "callee": "1000", "ref": "r1", "content": content})
    [originate] = switch.originated
    controller.channel_event(originate.uuid, "CHANNEL_ANSWER", {"Answer-State": "answered"})
    call = controller.book.by_uuid(originate.uuid)
    assert call is not None and call.state is c.State.CONNECTED
    return controller, switch, alice, originate


@in_loop
def test_a_lost_channel_ends_its_call_like_a_hangup() -> None:
    controller, switch, alice, originate = _answered_web_call()
    controller.channel_lost(originate.uuid, "NORMAL_TEMPORARY_FAILURE")
    assert controller.book.by_uuid(originate.uuid) is None
    assert {"Cmd": "EndCall"}.items() <= alice.peer_cmds()[-1].items()
    assert controller.ended_total  # counted under its reason
    assert not controller.pool.busy()
    # Nothing is asked of a channel that is already gone.
    assert not [op for op in switch.ops if isinstance(op, c.Hangup)]


@in_loop
def test_a_lost_channel_nobody_knows_is_ignored() -> None:
    controller, _switch, _alice, _originate = _answered_web_call()
    controller.channel_lost("no-such-uuid", "NORMAL_CLEARING")
    assert len(controller.book) == 1


@in_loop
def test_failed_operations_end_the_call_except_a_failed_kill() -> None:
    controller, switch, _alice, originate = _answered_web_call()
    call_id = controller.book.by_uuid(originate.uuid).call_id  # type: ignore[union-attr]
    controller.operation_failed(c.Hangup(call_id, originate.uuid, "NORMAL_CLEARING"), "timeout")
    assert len(controller.book) == 1  # the grace timer retries the kill instead
    controller.operation_failed(SendDtmf(call_id, originate.uuid, "1"), "esl gone")
    kills = [op for op in switch.ops if isinstance(op, c.Hangup)]
    assert [k.uuid for k in kills] == [originate.uuid]


@in_loop
def test_browser_dtmf_becomes_a_typed_operation() -> None:
    _unused, switch, alice, originate = _answered_web_call()
    alice.say(
        {"type": "message", "to": "1000", "text": json.dumps({"Cmd": "Dtmf", "Digits": "12#"})}
    )
    [dtmf] = [op for op in switch.ops if isinstance(op, SendDtmf)]
    assert (dtmf.uuid, dtmf.digits) == (originate.uuid, "12#")
    alice.say(
        {"type": "message", "to": "1000", "text": json.dumps({"Cmd": "Dtmf", "Digits": "1;x"})}
    )
    assert len([op for op in switch.ops if isinstance(op, SendDtmf)]) == 1


def _record(uuid: str, callee: str) -> ChannelRecord:
    return ChannelRecord.from_headers(
        {
            "Unique-ID": uuid,
            "Caller-Caller-ID-Number": "1001",
            "variable_sip_h_X-Number": f"<sip:{callee}@127.0.0.1>",
        }
    )


@in_loop
def test_a_sip_call_rings_the_web_user_with_typed_channel_operations() -> None:
    controller, hub, switch, clock = _controller()
    bob = Browser(hub, clock, "bob")
    controller.sip_call_arrived(_record("u-1", "bob"))
    kinds = [type(op) for op in switch.ops]
    assert kinds == [c.SetChannelVars, c.SetChannelVar, c.PreAnswer, c.PlayRingback]
    assert [m["type"] for m in bob.inbox if m.get("type") == "invitation"] == ["invitation"]


@in_loop
def test_a_bug_while_taking_a_sip_call_still_hangs_the_caller_up() -> None:
    controller, _hub, switch, _clock = _controller()

    def broken(**_kw: Any) -> list[c.Action]:
        raise RuntimeError("a bug")

    controller.book.sip_call_arrived = broken  # type: ignore[method-assign]
    controller.sip_call_arrived(_record("u-2", "bob"))
    [hangup] = switch.ops
    assert isinstance(hangup, c.Hangup)
    assert (hangup.uuid, hangup.cause) == ("u-2", "NORMAL_TEMPORARY_FAILURE")


def _say_peer(browser: Browser, to: str, **body: Any) -> None:
    browser.say({"type": "message", "to": to, "text": json.dumps(body)})


@in_loop
def test_browser_dtmf_is_read_from_digits_or_digit() -> None:
    _unused, switch, alice, _originate = _answered_web_call()
    _say_peer(alice, "1000", Cmd="Dtmf", ChanId="ch-1", Digit="5")
    _say_peer(alice, "1000", Cmd="Dtmf", ChanId="ch-1", Digits="6")
    _say_peer(alice, "1000", Cmd="Dtmf", ChanId="ch-1", Digits="7", Digit="8")  # disagree
    _say_peer(alice, "1000", Cmd="Dtmf", ChanId="other", Digits="9")  # not this call
    sent = [op.digits for op in switch.ops if isinstance(op, SendDtmf)]
    assert sent == ["5", "6"]


@in_loop
def test_dtmf_from_the_phone_reaches_the_browser_as_digit_and_bad_digits_do_not() -> None:
    controller, _switch, alice, originate = _answered_web_call()
    controller.channel_event(originate.uuid, "DTMF", {"DTMF-Digit": "#"})
    controller.channel_event(originate.uuid, "DTMF", {"DTMF-Digit": "x"})
    controller.channel_event(originate.uuid, "DTMF", {"DTMF-Digit": ""})
    dtmf = [m for m in alice.peer_cmds() if m["Cmd"] == "Dtmf"]
    assert dtmf == [{"Cmd": "Dtmf", "ChanId": "ch-1", "Digit": "#"}]


@in_loop
def test_offers_that_cannot_be_answered_get_a_media_error_and_the_call_lives_on() -> None:
    controller, _switch, alice, _originate = _answered_web_call()
    _say_peer(alice, "1000", Cmd="Offer", ChanId="ch-1", Sdp=5)  # wrong type
    _say_peer(alice, "1000", Cmd="Offer", ChanId="ch-1", Sdp="x" * (24 * 1024 + 1))
    _say_peer(alice, "1000", Cmd="Offer", ChanId="ch-9", Sdp="v=0")  # no such call
    _say_peer(alice, "1001", Cmd="Offer", ChanId="ch-1", Sdp="v=0")  # not its peer
    errors = [m for m in alice.peer_cmds() if m["Cmd"] == "MediaError"]
    assert errors == [
        {"Cmd": "MediaError", "Reason": "bad_message"},
        {"Cmd": "MediaError", "Reason": "bad_message"},
        {"Cmd": "MediaError", "ChanId": "ch-9", "Reason": "no_such_call"},
        {"Cmd": "MediaError", "ChanId": "ch-1", "Reason": "no_such_call"},
    ]
    assert len(controller.book) == 1


@in_loop
def test_call_state_is_answered_and_garbage_is_dropped() -> None:
    controller, switch, alice, _originate = _answered_web_call()
    garbage = [
        "hello",
        "[1]",
        '{"Cmd":"SwitchAudio"}',
        '{"Cmd":"EndCall","ChanId":7}',
        '{"Cmd":"EndCall","ChanId":"\\ud800"}',  # a lone surrogate, escaped
        '{"Cmd":"EndCall","x":' + "[" * 40 + "]" * 40 + "}",  # too deep
        '{"Cmd":"Dtmf","ChanId":"ch-1","Digits":["1"]}',
    ]
    for text in garbage:
        alice.say({"type": "message", "to": "1000", "text": text})
    _say_peer(alice, "1000", Cmd="CallState")
    assert alice.peer_cmds()[-1] == {"Cmd": "CallStateResult", "state": 2, "Mode": 1}
    assert len(controller.book) == 1  # the EndCall with a bad ChanId ended nothing
    assert not [op for op in switch.ops if isinstance(op, SendDtmf)]
    _say_peer(alice, "1000", Cmd="EndCall", ChanId="ch-1")
    assert len(controller.book) == 1  # ENDING until FreeSWITCH confirms
    assert controller.book.call_state_of("alice") == 0


def _inbox_invitation(browser: Browser) -> dict[str, Any]:
    return [m for m in browser.inbox if m.get("type") == "invitation"][-1]


def _web_calls(controller: CallController, hub: Hub, clock: FakeClock, n: int) -> None:
    """``n`` RTC -> SIP calls, ended four different ways."""
    alice = Browser(hub, clock, "alice")
    for i in range(n):
        clock.t += 10.0  # one call at a time, well under the hub's message rate
        content = json.dumps({"ChanId": f"w-{i}"})
        alice.say({"type": "invite", "callee": "1000", "ref": f"r{i}", "content": content})
        call = controller.book.by_chan(f"w-{i}")
        assert call is not None, (i, alice.inbox[-3:])
        uuid = call.uuid
        way = i % 4
        if way == 0:  # the caller cancels: routed by its invitation id
            alice.say({"type": "cancel", "ref": f"r{i}"})
        elif way == 1:  # the phone is busy
            controller.channel_event(uuid, "CHANNEL_HANGUP", {"Hangup-Cause": "USER_BUSY"})
        else:  # answered, then one side hangs up
            controller.channel_event(uuid, "CHANNEL_ANSWER", {"Answer-State": "answered"})
            if way == 2:
                _say_peer(alice, "1000", Cmd="EndCall", ChanId=f"w-{i}")
        controller.channel_event(uuid, "CHANNEL_HANGUP_COMPLETE", {"Hangup-Cause": "X"})
        assert controller.book.by_uuid(uuid) is None, way


def _sip_calls(controller: CallController, hub: Hub, clock: FakeClock, n: int) -> None:
    """``n`` SIP -> RTC calls: refused, accepted then hung up, or canceled by the phone."""
    bob = Browser(hub, clock, "bob")
    for i in range(n):
        clock.t += 10.0
        uuid = f"s-{i}"
        controller.sip_call_arrived(_record(uuid, "bob"))
        inv = _inbox_invitation(bob)["inv"]
        way = i % 3
        if way == 0:  # refused: routed by the gateway's invitation ref
            bob.say({"type": "refuse", "inv": inv, "response": '{"Cmd":"Calling"}'})
        elif way == 1:
            bob.say({"type": "accept", "inv": inv, "response": "{}"})
            controller.channel_event(uuid, "CHANNEL_ANSWER", {"Answer-State": "answered"})
            controller.channel_event(uuid, "CHANNEL_HANGUP", {"Hangup-Cause": "NORMAL_CLEARING"})
        controller.channel_event(uuid, "CHANNEL_HANGUP_COMPLETE", {"Hangup-Cause": "X"})
        assert controller.book.by_uuid(uuid) is None, way


@in_loop
def test_invitation_states_reach_their_call_through_the_indexes() -> None:
    controller, hub, switch, clock = _controller()
    bob = Browser(hub, clock, "bob")
    controller.sip_call_arrived(_record("s-1", "bob"))
    assert controller.links_held() == {"links": 1, "by_inv": 0, "by_ref": 1}
    bob.say(
        {"type": "refuse", "inv": _inbox_invitation(bob)["inv"], "response": '{"Cmd":"Calling"}'}
    )
    assert [op.cause for op in switch.ops if isinstance(op, c.Hangup)] == ["USER_BUSY"]

    alice = Browser(hub, clock, "alice")
    alice.say({"type": "invite", "callee": "1001", "ref": "r1", "content": "{}"})
    assert controller.links_held()["by_inv"] == 1
    alice.say({"type": "cancel", "ref": "r1"})
    [_busy, cancel] = [op for op in switch.ops if isinstance(op, c.Hangup)]
    assert cancel.cause == "ORIGINATOR_CANCEL"


@in_loop
def test_after_many_calls_the_link_tables_are_empty() -> None:
    controller, hub, _switch, clock = _controller()
    _web_calls(controller, hub, clock, 40)
    _sip_calls(controller, hub, clock, 30)
    assert len(controller.book) == 0
    assert controller.links_held() == {"links": 0, "by_inv": 0, "by_ref": 0}
    assert controller.ended_total and sum(controller.ended_total.values()) == 70


class FakeLeg:
    """A media leg with no peer connection: its unicast endpoint is only its parameters."""

    endpoint = None
    has_offer = False  # a second offer would be an ICE restart (MediaLeg.has_offer)

    def __init__(self) -> None:
        self.unicast_asked = 0

    async def start_unicast(
        self, fmt: ChannelFormat, channel_codec: str | None = None
    ) -> UnicastParams:
        self.unicast_asked += 1
        return UnicastParams("127.0.0.1", 40000, "127.0.0.1", 40001)

    async def close(self) -> None:
        pass


def test_a_background_task_that_fails_is_logged_and_forgotten() -> None:
    """The controller's tasks (unicast setup, closing a leg...) are awaited by nobody: a
    failure among them is logged by name (seen: a leg's close timing out on a starved
    machine), and the task leaves the controller's set."""

    async def body() -> None:
        controller, *_ = _controller()

        async def close_leg() -> None:
            raise TimeoutError("the socket did not close")

        with capture_logs() as logs:
            controller._spawn(close_leg())
            controller._spawn(asyncio.sleep(0))
            await _settle()
        assert controller._tasks == set()
        [failed] = [entry for entry in logs if entry["event"] == "gateway.task_failed"]
        assert failed["log_level"] == "error"
        assert failed["task"].endswith("close_leg")
        assert failed["error"] == "TimeoutError('the socket did not close')"

    asyncio.run(body())


async def _settle() -> None:
    """Let every task the controller spawned (``_start_unicast``) run to its end."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=30)
    assert all(t.done() for t in others)


# Every event carries a read rate here, so that only the media-ready rule holds unicast
# back (the rate alone would let the controller's unicast setup go ahead).
RATE = {"Channel-Read-Codec-Rate": "8000"}
PRE_ANSWER_DONE = ("CHANNEL_EXECUTE_COMPLETE", {"Application": "pre_answer", **RATE})


@pytest.mark.parametrize(
    ("name", "headers"),
    [
        ("CHANNEL_ANSWER", {"Answer-State": "answered", **RATE}),
        ("CHANNEL_PROGRESS_MEDIA", {"Answer-State": "early", **RATE}),
        PRE_ANSWER_DONE,
    ],
    ids=["answer", "progress-media", "pre-answer-complete"],
)
def test_unicast_waits_for_channel_media_not_for_a_180(name: str, headers: dict[str, str]) -> None:
    """The browser's media is up, but a 180 (CHANNEL_PROGRESS) or a pre_answer still running
    gives the channel no read codec: unicast then would crash FreeSWITCH. The Unicast
    operation goes out once, on the first event that does give it media."""

    async def body() -> None:
        controller, hub, switch, clock = _controller()
        bob = Browser(hub, clock, "bob")
        controller.sip_call_arrived(_record("u-m", "bob"))
        call = controller.book.by_uuid("u-m")
        assert call is not None
        leg = FakeLeg()
        controller._links_of(call.call_id).leg = leg  # type: ignore[assignment]
        bob.say({"type": "accept", "inv": _inbox_invitation(bob)["inv"], "response": "{}"})
        assert [type(op) for op in switch.ops][-2:] == [c.StopRingback, c.Answer]
        controller.event(call.call_id, c.MediaConnected())
        controller.channel_event("u-m", "CHANNEL_PROGRESS", {"Answer-State": "ringing", **RATE})
        controller.channel_event("u-m", "CHANNEL_EXECUTE", {"Application": "pre_answer", **RATE})
        await _settle()
        assert not [op for op in switch.ops if isinstance(op, Unicast)]
        assert leg.unicast_asked == 0
        assert controller.book.by_uuid("u-m") is call  # the call waits, it is not ended

        controller.channel_event("u-m", name, headers)
        await _settle()
        [unicast] = [op for op in switch.ops if isinstance(op, Unicast)]
        assert (unicast.call_id, unicast.uuid) == (call.call_id, "u-m")
        # Later media events send nothing more.
        controller.channel_event("u-m", "CHANNEL_ANSWER", {"Answer-State": "answered", **RATE})
        controller.channel_event("u-m", *PRE_ANSWER_DONE)
        await _settle()
        assert len([op for op in switch.ops if isinstance(op, Unicast)]) == 1

    asyncio.run(body())


class AnsweringLeg(FakeLeg):
    """A FakeLeg that also answers the browser's offer."""

    async def handle_offer(self, sdp: str, sip_codec: object = None) -> str:
        return f"answer to {sdp}"


def test_early_media_opens_the_browser_leg_at_the_183_and_unicast_never_follows_a_180() -> None:
    """RTC -> SIP early media: a plain 180 (CHANNEL_PROGRESS) only says "ringing"; the 183
    with SDP (CHANNEL_PROGRESS_MEDIA) opens the browser's media leg, its offer is answered
    and unicast goes out once the browser's leg is connected and the channel's read rate is
    known (recorded: it comes with CHANNEL_PARK, after the 183). The answer then keeps that
    leg: no second leg, no second unicast."""

    async def body() -> None:
        controller, hub, switch, clock = _controller()
        alice = Browser(hub, clock, "alice")
        content = json.dumps({"Mode": 1, "Conference": False, "ChanId": "ch-1"})
        alice.say({"type": "invite", "callee": "1000", "ref": "r1", "content": content})
        [originate] = switch.originated
        uuid = originate.uuid
        call = controller.book.by_uuid(uuid)
        assert call is not None
        leg = AnsweringLeg()
        opened: list[str] = []

        def open_media(opening: c.Call) -> None:
            links = controller._links_of(opening.call_id)
            if links.leg is None:  # as CallController._open_media: one leg per call
                opened.append(opening.call_id)
                links.leg = leg  # type: ignore[assignment]

        controller._open_media = open_media  # type: ignore[method-assign]

        def unicasts() -> list[Unicast]:
            return [op for op in switch.ops if isinstance(op, Unicast)]

        def accepted() -> bool:
            return any(m.get("type") == "local_state" and m.get("state") == 3 for m in alice.inbox)

        # 180: the browser hears that the phone rings; no media leg, no unicast, even for
        # a browser leg that claims to be connected.
        controller.channel_event(uuid, "CHANNEL_PROGRESS", {"Answer-State": "ringing", **RATE})
        assert {"Cmd": "SipState", "State": "ringing"} in alice.peer_cmds()
        controller.event(call.call_id, c.MediaConnected())
        await _settle()
        assert opened == [] and unicasts() == [] and leg.unicast_asked == 0
        # (The 180 carried a read rate so that only the media rule could hold unicast back
        # above; a real 183 comes without one: forget it.)
        for key in RATE:
            controller._links_of(call.call_id).headers.pop(key)

        # 183 with SDP, as recorded: no read codec headers on this event.
        controller.channel_event(uuid, "CHANNEL_PROGRESS_MEDIA", {"Answer-State": "early"})
        assert {"Cmd": "SipState", "State": "early_media"} in alice.peer_cmds()
        assert opened == [call.call_id]
        _say_peer(alice, "1000", Cmd="Offer", ChanId="ch-1", Sdp="v=0 offer")
        await _settle()
        assert {"Cmd": "Answer", "ChanId": "ch-1", "Sdp": "answer to v=0 offer"} in (
            alice.peer_cmds()
        )
        # The browser's leg connects before CHANNEL_PARK brings the read rate: unicast waits
        # for the rate instead of failing the call.
        controller.event(call.call_id, c.MediaConnected())
        for _ in range(5):
            await asyncio.sleep(0)
        assert controller.book.by_uuid(uuid) is call
        controller.channel_event(uuid, "CHANNEL_PARK", {"Answer-State": "early", **RATE})
        await _settle()
        [unicast] = unicasts()
        assert (unicast.call_id, unicast.uuid) == (call.call_id, uuid)
        assert call.state is c.State.EARLY_MEDIA and not accepted()

        # The answer: the invitation is accepted, the same leg carries on.
        controller.channel_event(uuid, "CHANNEL_ANSWER", {"Answer-State": "answered", **RATE})
        await _settle()
        assert accepted() and call.state is c.State.CONNECTED
        assert opened == [call.call_id] and controller._links_of(call.call_id).leg is leg
        assert len(unicasts()) == 1 and leg.unicast_asked == 1

    asyncio.run(body())
