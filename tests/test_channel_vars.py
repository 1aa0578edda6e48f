"""The esl_bridge_* channel variables on every channel the gateway handles (issue 15).

The call core puts them in the originate of an RTC -> SIP call and asks for them with one
``uuid_setvar_multi`` as soon as a SIP -> RTC call is known; the simulator keeps every
channel's variables, so the whole gateway is checked against it too.
"""

from __future__ import annotations

import json

import pytest
from support.gateway_support import (
    APPID,
    WebUser,
    assert_nothing_left,
    running_gateway,
    wait_until,
)
from support.netns import loopback_only

from esl_bridge.core import call as c
from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.core.invitations import LocalState
from esl_bridge.esl import commands as cmd
from esl_bridge.numbers import NumberPool

NAMES = (
    "esl_bridge_call_id",
    "esl_bridge_direction",
    "esl_bridge_uid",
    "esl_bridge_appid",
    "esl_bridge_number",
)


def book() -> CallBook:
    settings = BookSettings(
        rtm2sip_on=True,
        proxy_on=True,
        sip_domain="127.0.0.1",
        gateway_uid="gateway",
        appid="app-1",
    )
    return CallBook(settings, NumberPool.from_rule("1005"), new_id=lambda prefix: f"{prefix}-1")


def test_an_originated_channel_carries_the_variables() -> None:
    b = book()
    actions = b.invitation_to_number("alice", "1005", json.dumps({"ChanId": "ch-a"}), 0.0)
    [originate] = [a for a in actions if isinstance(a, c.Originate)]
    assert {k: originate.variables.get(k) for k in NAMES} == {
        "esl_bridge_call_id": "call-1",
        "esl_bridge_direction": "rtc2sip",
        "esl_bridge_uid": "alice",
        "esl_bridge_appid": "app-1",
        "esl_bridge_number": "1005",
    }
    # They survive the originate's {...} escaping unchanged.
    block = cmd.channel_vars(originate.variables)
    assert "esl_bridge_direction=rtc2sip" in block
    assert "esl_bridge_call_id=call-1" in block


def test_a_received_channel_gets_them_first_in_one_setvar_multi() -> None:
    b = book()
    actions = b.sip_call_arrived(
        uuid="u-1",
        callee="bob",
        caller_number="1001",
        cus_data="",
        callee_online=True,
        now=0.0,
    )
    first = actions[0]
    assert isinstance(first, c.SetChannelVars) and first.uuid == "u-1"
    assert dict(first.variables) == {
        "esl_bridge_call_id": "call-1",
        "esl_bridge_direction": "sip2rtc",
        "esl_bridge_uid": "bob",
        "esl_bridge_appid": "app-1",
        "esl_bridge_number": "1001",
    }
    assert cmd.setvar_multi_arg(first.variables).split(";")[1] == "esl_bridge_direction=sip2rtc"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("1001", "1001"),
        ("+49 30;x=1", "+49_30_x_1"),
        ("${system rm}", "__system_rm_"),
        ("a'b\"c\\d", "a_b_c_d"),
        ("x" * 100, "x" * 64),
    ],
)
def test_a_caller_number_is_made_safe_for_every_way_it_is_sent(raw: str, shown: str) -> None:
    variables = c.call_variables("call-9", c.Direction.SIP_TO_RTC, "bob", "app", raw)
    assert variables["esl_bridge_number"] == shown
    # Both ways of sending accept it, and it arrives as it is.
    assert cmd.setvar_multi_arg(variables).endswith(f"esl_bridge_number={shown}")
    assert f"esl_bridge_number={shown}" in cmd.channel_vars(variables)


def test_setvar_multi_refuses_what_freeswitch_would_split() -> None:
    for value in ("a;b", "a=b", "a b", "", "a\nb"):
        with pytest.raises(ValueError):
            cmd.setvar_multi_arg({"esl_bridge_uid": value})
    with pytest.raises(ValueError):
        cmd.setvar_multi_arg({})


@loopback_only
def test_both_directions_channels_carry_the_variables_in_the_simulator() -> None:
    with running_gateway() as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        alice.invite("1000", "ch-v")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        [channel] = sim.channels()
        rtc2sip = {k: channel.variables.get(k) for k in NAMES}
        assert rtc2sip["esl_bridge_direction"] == "rtc2sip"
        assert (rtc2sip["esl_bridge_uid"], rtc2sip["esl_bridge_number"]) == ("alice", "1000")
        assert rtc2sip["esl_bridge_appid"] == APPID
        assert str(rtc2sip["esl_bridge_call_id"]).startswith("call")
        # What an admin asks: uuid_getvar answers it.
        assert sim.api(f"uuid_getvar {channel.uuid} esl_bridge_uid") == "alice"
        alice.peer("1000", Cmd="EndCall")
        assert_nothing_left(gateway, sim)

        bob = WebUser(gateway, "bob").connect()
        phone = sim.place_call(caller="1001", dest="0bob")
        bob.wait(lambda m: m.get("type") == "invitation")
        received = sim.get_channel(phone.uuid)
        assert received is not None
        wait_until(
            lambda: received.variables.get("esl_bridge_direction") == "sip2rtc",
            5,
            "the variables on the received channel",
        )
        sip2rtc = {k: received.variables.get(k) for k in NAMES}
        assert (sip2rtc["esl_bridge_uid"], sip2rtc["esl_bridge_number"]) == ("bob", "1001")
        assert sip2rtc["esl_bridge_appid"] == APPID
        assert sip2rtc["esl_bridge_call_id"] != rtc2sip["esl_bridge_call_id"]
        phone.hangup("NORMAL_CLEARING")
        assert_nothing_left(gateway, sim)
        for user in (alice, bob):
            user.close()
