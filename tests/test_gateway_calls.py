"""Calls through the whole gateway against the FreeSWITCH simulator (docs/architecture.rst).

Web users speak the WebSocket protocol directly (no browser, no SDP here: the media is
tested on its own and in the browser tests). After every scenario nothing may be left:
no channel in the simulator, no call in the gateway, no busy number, no port.
The simulator's own wait_* helpers block the calling thread, which is the gevent hub
here, so the tests poll with wait_until instead. The gateway creates aiortc peer
connections for connected calls, so every test runs in a loopback-only namespace.
"""

from __future__ import annotations

import json

from support.gateway_support import (
    WebUser,
    assert_nothing_left,
    running_gateway,
    wait_until,
)
from support.netns import loopback_only

from esl_bridge.core.invitations import LocalState, RemoteState


def response_of(state_message: dict) -> dict:
    return json.loads(state_message["response"])


@loopback_only
def test_rtc_to_sip_answered_call_then_web_hangup() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1000", "ch-1", UserData="ticket 42")
        alice.wait_local_state(LocalState.RECEIVED_BY_REMOTE)
        accepted = alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        assert response_of(accepted) == {
            "Mode": 1,
            "Conference": False,
            "ChanId": "ch-1",
            "SipNumber": "1000",
            "SipData": "",
        }
        [channel] = sim.channels()
        assert channel.variables.get("sip_h_X-ArInfo") == "ticket 42"
        assert channel.variables.get("origination_caller_id_number") == "alice"
        state = alice.request(
            {"type": "message", "to": "1000", "text": json.dumps({"Cmd": "CallState"})}
        )
        assert state["type"] == "ok"
        result = alice.wait_peer_cmd("CallStateResult")
        assert (result["from"], result["state"]) == ("1000", 2)
        alice.peer("1000", Cmd="EndCall")
        assert_nothing_left(gateway, sim)
        alice.close()


@loopback_only
def test_rtc_to_sip_failures_refuse_with_json_reasons() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        cases = {
            "1003": {"Cmd": "Refused", "Reason": "busy", "Cause": "USER_BUSY"},
            "1005": {"Cmd": "Refused", "Reason": "rejected", "Cause": "CALL_REJECTED"},
            "1019": {"Cmd": "Refused", "Reason": "not_registered", "Cause": "USER_NOT_REGISTERED"},
            "1004": {"Cmd": "Refused", "Reason": "no_answer", "Cause": "NO_ANSWER"},
        }
        for number, expected in cases.items():
            alice.invite(number, f"ch-{number}")
            refused = alice.wait_local_state(LocalState.REFUSED_BY_REMOTE, timeout=15)
            assert response_of(refused) == expected, number
            assert_nothing_left(gateway, sim)
        alice.close()


@loopback_only
def test_ringing_is_reported_and_cancel_kills_the_sip_leg() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1007", "ch-r")  # rings 2 s without SDP, then answers
        ringing = alice.wait_peer_cmd("SipState")
        assert ringing == {"from": "1007", "Cmd": "SipState", "State": "ringing"}
        assert sim.live_channel_count() == 1
        reply = alice.request({"type": "cancel", "ref": "ch-r"})
        assert reply["type"] == "ok"
        alice.wait_local_state(LocalState.CANCELED)
        assert_nothing_left(gateway, sim)
        kills = [c for c in sim.all_channels() if c.hangup_cause == "ORIGINATOR_CANCEL"]
        assert kills, [c.hangup_cause for c in sim.all_channels()]
        alice.close()


@loopback_only
def test_a_busy_number_refuses_a_second_caller() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        bob = WebUser(gateway, "bob").connect()
        alice.invite("1001", "ch-a")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        bob.invite("1001", "ch-b")
        refused = bob.wait_local_state(LocalState.REFUSED_BY_REMOTE)
        assert response_of(refused) == {"Cmd": "Calling", "Reason": "calling"}
        alice.peer("1001", Cmd="EndCall")
        assert_nothing_left(gateway, sim)
        for user in (alice, bob):
            user.close()


@loopback_only
def test_sip_side_hangup_sends_end_call() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1000", "ch-h")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        [channel] = sim.channels()
        assert sim.api(f"uuid_kill {channel.uuid} NORMAL_CLEARING").startswith("+OK")
        assert alice.wait_peer_cmd("EndCall")["from"] == "1000"
        assert_nothing_left(gateway, sim)
        alice.close()


@loopback_only
def test_web_caller_gone_past_grace_ends_the_call() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1000", "ch-g")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        alice.close()  # tab closed; the presence grace is 0.5 s in these tests
        assert_nothing_left(gateway, sim)


@loopback_only
def test_sip_to_rtc_ringback_accept_and_web_hangup() -> None:
    with running_gateway() as (gateway, sim):
        bob = WebUser(gateway, "bob").connect()
        phone = sim.place_call(caller="1001", dest="0bob", cus_data="order=7")
        invitation = bob.wait(lambda m: m.get("type") == "invitation")
        assert invitation["caller"] == "gateway"
        content = json.loads(invitation["content"])
        assert (content["DisplayName"], content["SipData"], content["Mode"]) == (
            "1001",
            "order=7",
            1,
        )
        assert content["ChanId"] == invitation["channel_id"]
        # The phone hears ringback, not an answered call, while the browser rings.
        channel = sim.get_channel(phone.uuid)
        assert channel is not None
        wait_until(lambda: channel.answer_state == "early", 5, "pre_answer (183)")
        assert not phone.answered
        assert bob.request({"type": "ack", "inv": invitation["inv"]})["type"] == "ok"
        assert (
            bob.request(
                {"type": "accept", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})}
            )["type"]
            == "ok"
        )
        wait_until(lambda: phone.answered, 5, "the phone answered")
        bob.peer("gateway", Cmd="EndCall", ChanId=content["ChanId"])
        wait_until(lambda: phone.finished, 5, "the phone hung up")
        assert_nothing_left(gateway, sim)
        bob.close()


@loopback_only
def test_sip_to_rtc_refused_offline_and_caller_cancel() -> None:
    with running_gateway() as (gateway, sim):
        # The callee is not logged in: hung up at once, not after 30 s.
        phone = sim.place_call(caller="1001", dest="0nobody")
        wait_until(lambda: phone.finished, 5, "the phone hung up")
        assert phone.hangup_cause == "USER_NOT_REGISTERED"

        bob = WebUser(gateway, "bob").connect()
        phone = sim.place_call(caller="1002", dest="0bob")
        invitation = bob.wait(lambda m: m.get("type") == "invitation")
        bob.request(
            {
                "type": "refuse",
                "inv": invitation["inv"],
                "response": json.dumps({"Cmd": "Calling", "Reason": "calling"}),
            }
        )
        wait_until(lambda: phone.finished, 5, "the phone hung up")
        assert phone.hangup_cause == "USER_BUSY"

        phone = sim.place_call(caller="1003", dest="0bob")
        invitation = bob.wait(lambda m: m.get("type") == "invitation")
        phone.hangup("NORMAL_CLEARING")  # the caller gives up while the browser rings
        canceled = bob.wait(
            lambda m: (
                m.get("type") == "remote_state"
                and m.get("inv") == invitation["inv"]
                and m.get("state") == RemoteState.CANCELED
            )
        )
        assert canceled["state_name"] == "CANCELED"
        assert_nothing_left(gateway, sim)
        bob.close()


@loopback_only
def test_sip_to_rtc_unanswered_invitation_expires_with_no_answer() -> None:
    extra = "invite_expire_timeout = 1\n"
    with running_gateway(extra) as (gateway, sim):
        bob = WebUser(gateway, "bob").connect()
        phone = sim.place_call(caller="1001", dest="0bob")
        invitation = bob.wait(lambda m: m.get("type") == "invitation")
        bob.request({"type": "ack", "inv": invitation["inv"]})
        wait_until(lambda: phone.finished, 8, "the phone hung up")
        assert phone.hangup_cause == "NO_ANSWER"
        assert_nothing_left(gateway, sim)
        bob.close()


@loopback_only
def test_gateway_shutdown_ends_calls_on_both_sides() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1000", "ch-s")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        gateway.stop(drain=3.0)
        wait_until(lambda: sim.live_channel_count() == 0, 5, "channels ended by shutdown")
        assert not sim.crashed


@loopback_only
def test_dtmf_travels_both_ways() -> None:
    with running_gateway() as (gateway, sim):
        bob = WebUser(gateway, "bob").connect()
        phone = sim.place_call(caller="1001", dest="0bob")
        invitation = bob.wait(lambda m: m.get("type") == "invitation")
        chan_id = json.loads(invitation["content"])["ChanId"]
        bob.request({"type": "accept", "inv": invitation["inv"]})
        wait_until(lambda: phone.answered, 5, "the phone answered")
        # Browser -> SIP: over signalling, then uuid_send_dtmf.
        bob.peer("gateway", Cmd="Dtmf", ChanId=chan_id, Digits="12#")
        wait_until(lambda: phone.dtmf_to_phone == "12#", 5, "digits at the phone")
        # Not digits: ignored, nothing sent.
        bob.peer("gateway", Cmd="Dtmf", ChanId=chan_id, Digits="1; hangup")
        # SIP -> browser: the phone's RFC 2833 digit arrives as a DTMF event.
        phone.send_dtmf("7")
        message = bob.wait_peer_cmd("Dtmf")
        assert (message["from"], message["ChanId"], message["Digit"]) == ("gateway", chan_id, "7")
        assert phone.dtmf_to_phone == "12#"
        bob.peer("gateway", Cmd="EndCall", ChanId=chan_id)
        assert_nothing_left(gateway, sim)
        bob.close()


@loopback_only
def test_freeswitch_restart_ends_live_calls_and_the_gateway_reconnects() -> None:
    with running_gateway() as (gateway, sim):
        controller = gateway.controller
        assert controller is not None
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1000", "ch-restart")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        sim.restart()  # every connection and call dropped, same port
        assert alice.wait_peer_cmd("EndCall", timeout=10)["from"] == "1000"
        wait_until(lambda: controller.status()["calls"] == 0, 10, "the call ended")
        wait_until(lambda: controller.esl_state == "connected", 10, "ESL back")
        assert controller.status()["numbers_busy"] == 0
        # And the next call works.
        alice.invite("1000", "ch-after")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        alice.peer("1000", Cmd="EndCall")
        assert_nothing_left(gateway, sim)
        alice.close()
