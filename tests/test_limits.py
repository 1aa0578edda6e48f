"""Limits that protect the switch: concurrent calls and new calls per second.

A flood of invitations (or of SIP arrivals) must never become a flood of originates on
FreeSWITCH: over ``[limits] max_calls`` or ``[limits] max_call_rate`` (with its burst
``call_burst``) a web caller gets the documented ``capacity`` refusal and nothing is
originated; a SIP caller is hung up with a congestion cause. The core takes ``now``, so
the rate is tested with a fake clock.
"""

from __future__ import annotations

import json
from itertools import count

import pytest
from support.gateway_support import WebUser, assert_nothing_left, running_gateway, wait_until
from support.netns import loopback_only

from esl_bridge import config
from esl_bridge.core import call as c
from esl_bridge.core.callbook import BookSettings, CallBook, CallRate
from esl_bridge.core.invitations import LocalState
from esl_bridge.numbers import NumberPool

CAPACITY = {"Cmd": "Refused", "Reason": "capacity"}


def book(**overrides: object) -> CallBook:
    ids = count(1)
    values: dict[str, object] = {
        "rtm2sip_on": True,
        "proxy_on": True,
        "sip_domain": "127.0.0.1",
        "gateway_uid": "gateway",
        "max_calls": 100,
        **overrides,
    }
    return CallBook(
        BookSettings(**values),  # type: ignore[arg-type]
        NumberPool.from_rule("10[00-99]"),
        new_id=lambda prefix: f"{prefix}-{next(ids)}",
    )


def invite(b: CallBook, n: int, now: float) -> list[c.Action]:
    return b.invitation_to_number("alice", f"10{n:02d}", json.dumps({"ChanId": f"ch-{n}"}), now)


def arrive(b: CallBook, n: int, now: float) -> list[c.Action]:
    return b.sip_call_arrived(
        uuid=f"uuid-{n}",
        callee="bob",
        caller_number="1001",
        cus_data="",
        callee_online=True,
        now=now,
    )


def originates(actions: list[c.Action]) -> int:
    return sum(isinstance(a, c.Originate) for a in actions)


def refusals(actions: list[c.Action]) -> list[dict]:
    return [json.loads(a.response) for a in actions if isinstance(a, c.RefuseInvitation)]


# -- the token bucket -------------------------------------------------------------------


def test_call_rate_allows_a_burst_then_the_rate() -> None:
    rate = CallRate(per_second=2.0, burst=3)
    assert [rate.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not rate.take(0.4)  # 0.8 of a token so far
    assert rate.take(0.5)  # one token after half a second at 2/s
    assert not rate.take(0.5)
    # A long pause refills the burst, never more.
    assert [rate.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_call_rate_survives_a_clock_that_goes_back() -> None:
    rate = CallRate(per_second=1.0, burst=1)
    assert rate.take(10.0)
    assert not rate.take(5.0)  # no negative refill, no crash
    assert rate.take(11.0)


@pytest.mark.parametrize(("per_second", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_call_rate_refuses_nonsense_settings(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        CallRate(per_second=per_second, burst=burst)


# -- RTC -> SIP -------------------------------------------------------------------------


def test_a_flood_of_invitations_originates_only_the_burst_then_the_rate() -> None:
    b = book(max_call_rate=5.0, call_burst=4)
    results = [invite(b, n, now=0.0) for n in range(20)]
    assert sum(originates(a) for a in results) == 4
    assert all(refusals(a) == [CAPACITY] for a in results[4:])
    assert len(b) == 4
    # Refused invitations hold no number.
    assert sorted(b.pool.busy()) == ["1000", "1001", "1002", "1003"]
    # A second later, 5 more (the rate), not 20.
    later = [invite(b, n, now=1.0) for n in range(20, 40)]
    assert sum(originates(a) for a in later) == 4  # the bucket holds at most the burst
    assert sum(originates(invite(b, n, now=1.25)) for n in range(40, 45)) == 1


def test_a_refusal_for_another_reason_costs_no_token() -> None:
    b = book(max_call_rate=1.0, call_burst=1)
    invite(b, 0, now=0.0)
    # The same number again: busy, no originate, and the bucket is not charged.
    busy = b.invitation_to_number("bob", "1000", json.dumps({"ChanId": "ch-x"}), 1.0)
    assert refusals(busy) == [{"Cmd": "Calling", "Reason": "calling"}]
    assert originates(invite(b, 1, now=1.0)) == 1


def test_max_calls_refuses_with_capacity_and_never_originates() -> None:
    b = book(max_calls=2)
    assert originates(invite(b, 0, 0.0)) == 1
    assert originates(arrive(b, 1, 0.0)) == 0  # SIP -> RTC: invites the browser instead
    assert len(b) == 2
    over = invite(b, 2, 0.0)
    assert refusals(over) == [CAPACITY] and originates(over) == 0
    hung = arrive(b, 3, 0.0)
    assert [type(a).__name__ for a in hung] == ["Hangup"]
    assert hung[0].cause == "NORMAL_CIRCUIT_CONGESTION"  # type: ignore[attr-defined]
    assert len(b) == 2 and sorted(b.pool.busy()) == ["1000"]


def test_sip_arrivals_over_the_rate_are_hung_up_with_switch_congestion() -> None:
    b = book(max_call_rate=1.0, call_burst=2)
    first = [arrive(b, n, 0.0) for n in range(5)]
    assert [any(isinstance(a, c.Hangup) for a in acts) for acts in first] == [
        False,
        False,
        True,
        True,
        True,
    ]
    for acts in first[2:]:
        assert acts[0].cause == "SWITCH_CONGESTION"  # type: ignore[attr-defined]
    assert len(b) == 2


def test_the_same_channel_twice_is_ignored_even_at_the_limits() -> None:
    b = book(max_calls=1, max_call_rate=1.0, call_burst=1)
    arrive(b, 1, 0.0)
    # The same uuid again (a second socket session): the first owns it, no hangup.
    assert arrive(b, 1, 0.0) == []
    assert len(b) == 1


# -- configuration ----------------------------------------------------------------------


def test_the_limits_have_defaults_and_are_checked() -> None:
    limits = config.from_text("", "<t>").limits
    assert (limits.max_call_rate, limits.call_burst) == (20.0, 10)
    settings = config.from_text("[limits]\nmax_call_rate = 2.5\ncall_burst = 3\n", "<t>")
    assert (settings.limits.max_call_rate, settings.limits.call_burst) == (2.5, 3)
    for bad in ("max_call_rate = 0", "call_burst = 0", "max_call_rate = fast"):
        with pytest.raises(config.ConfigError) as info:
            config.from_text(f"[limits]\n{bad}\n", "<t>")
        assert "[limits] " + bad.split(" ")[0] in str(info.value)


# -- through the whole gateway ----------------------------------------------------------

STAYING_UP = ["1000", "1001", "1002", "1008", "1009", "1010"]  # answer and stay up


def flood(alice: WebUser, numbers: list[str], tag: str) -> dict[str, dict]:
    """Send every invitation before reading any answer; the final state of each."""
    refs = []
    for number in numbers:
        ref = f"{tag}-{number}"
        body = {"Mode": 1, "Conference": False, "ChanId": ref}
        alice.send(
            {
                "type": "invite",
                "ref": ref,
                "callee": number,
                "content": json.dumps(body),
                "channel_id": ref,
            }
        )
        refs.append(ref)
    final: dict[str, dict] = {}
    for ref in refs:
        final[ref] = alice.wait(
            lambda m, ref=ref: (
                m.get("type") == "local_state"
                and m.get("ref") == ref
                and m.get("state") in (LocalState.ACCEPTED_BY_REMOTE, LocalState.REFUSED_BY_REMOTE)
            ),
            timeout=15,
            what=f"the end of the ringing of {ref}",
        )
    return final


def outcome(final: dict[str, dict]) -> tuple[list[str], list[dict]]:
    accepted = [ref for ref, m in final.items() if m["state"] == LocalState.ACCEPTED_BY_REMOTE]
    refused = [
        json.loads(m["response"])
        for m in final.values()
        if m["state"] == LocalState.REFUSED_BY_REMOTE
    ]
    return accepted, refused


def end_calls(alice: WebUser, refs: list[str]) -> None:
    for ref in refs:
        alice.peer(ref.split("-")[-1], Cmd="EndCall")


@loopback_only
def test_gateway_over_max_calls_refuses_and_never_originates() -> None:
    with running_gateway("max_calls = 2\n") as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        accepted, refused = outcome(flood(alice, STAYING_UP, "a"))
        assert len(accepted) == 2
        assert refused == [CAPACITY] * 4
        assert len(sim.all_channels()) == 2  # FreeSWITCH saw two originates, no more
        end_calls(alice, accepted)
        assert_nothing_left(gateway, sim)
        # Room again: the next call works.
        accepted, refused = outcome(flood(alice, ["1001"], "b"))
        assert (len(accepted), refused) == (1, [])
        end_calls(alice, accepted)
        assert_nothing_left(gateway, sim)
        alice.close()


@loopback_only
def test_gateway_over_the_call_rate_refuses_and_never_originates() -> None:
    # One new call per 10 s after a burst of 2: the flood below takes far less than that.
    with running_gateway("max_call_rate = 0.1\ncall_burst = 2\n") as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        accepted, refused = outcome(flood(alice, STAYING_UP, "a"))
        assert len(accepted) == 2
        assert refused == [CAPACITY] * 4
        assert len(sim.all_channels()) == 2
        end_calls(alice, accepted)
        assert_nothing_left(gateway, sim)
        # A SIP caller over the rate is hung up at once, and the browser never rings.
        bob = WebUser(gateway, "bob").connect()
        phone = sim.place_call(caller="1001", dest="0bob")
        wait_until(lambda: phone.finished, 5, "the phone hung up")
        assert phone.hangup_cause == "SWITCH_CONGESTION"
        assert not [m for m in bob.inbox if m.get("type") == "invitation"]
        assert_nothing_left(gateway, sim)
        alice.close()
        bob.close()
