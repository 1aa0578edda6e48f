"""The hold of a call whose browser path is lost (core/browser_hold.py), on a fake clock,
and the end it leads to in the call core (reason ``browser_lost``, its hangup cause)."""

from __future__ import annotations

import pytest

from esl_bridge.core import call as c
from esl_bridge.core.browser_hold import (
    BROWSER_LOST,
    BROWSER_LOST_CAUSE,
    ICE,
    WS,
    BrowserHolds,
)


def test_a_lost_path_is_held_until_its_deadline_then_expires_once() -> None:
    holds = BrowserHolds(30.0)
    assert holds.next_deadline() is None
    assert holds.lost("call-1", ICE, 100.0) is True
    assert holds.held("call-1") and holds.next_deadline() == 130.0
    assert holds.expired(129.9) == []
    assert holds.expired(130.0) == ["call-1"]
    assert not holds.held("call-1") and len(holds) == 0
    assert holds.expired(500.0) == []  # once


def test_the_path_back_ends_the_hold_with_how_long_it_lasted() -> None:
    holds = BrowserHolds(30.0)
    holds.lost("call-1", ICE, 100.0)
    assert holds.back("call-1", ICE, 104.5) == 4.5
    assert not holds.held("call-1")
    assert holds.expired(1000.0) == []
    assert holds.back("call-1", ICE, 1000.0) is None  # not held: nothing to end


def test_a_second_reason_neither_moves_the_deadline_nor_lets_one_return_end_it() -> None:
    holds = BrowserHolds(10.0)
    assert holds.lost("call-1", WS, 0.0) is True
    assert holds.lost("call-1", ICE, 5.0) is False  # already held
    assert holds.next_deadline() == 10.0
    assert holds.reasons("call-1") == {ICE, WS}
    assert holds.back("call-1", WS, 6.0) is None  # the media path is still down
    assert holds.held("call-1")
    assert holds.back("call-1", ICE, 7.0) == 7.0
    assert len(holds) == 0


def test_calls_are_held_independently_and_forgotten_when_they_end() -> None:
    holds = BrowserHolds(5.0)
    holds.lost("a", ICE, 0.0)
    holds.lost("b", ICE, 3.0)
    holds.forget("a")
    assert holds.next_deadline() == 8.0
    assert holds.expired(6.0) == []
    assert holds.expired(8.0) == ["b"]


def test_bad_settings_and_reasons_are_refused() -> None:
    with pytest.raises(ValueError):
        BrowserHolds(0)
    with pytest.raises(ValueError):
        BrowserHolds(30.0).lost("a", "wifi", 0.0)


def test_a_call_whose_browser_never_came_back_ends_as_browser_lost() -> None:
    call = c.RtcToSipCall(
        call_id="call-1",
        uuid="uuid-1",
        chan_id="ch-1",
        web_uid="alice",
        number="1000",
        settings=c.CallSettings(gateway_uid="gateway"),
        started_at=0.0,
        state=c.State.CONNECTED,
        TABLE=c.rtc_to_sip_table(),
    )
    actions = call.handle(c.MediaFailed(BROWSER_LOST), 40.0)
    hangups = [a for a in actions if isinstance(a, c.Hangup)]
    assert [h.cause for h in hangups] == [BROWSER_LOST_CAUSE] == ["NORMAL_TEMPORARY_FAILURE"]
    assert any(isinstance(a, c.CloseMedia) for a in actions)
    assert call.ended_reason == BROWSER_LOST
    # Other media failures keep their cause.
    other = c.RtcToSipCall(
        call_id="call-2",
        uuid="uuid-2",
        chan_id="ch-2",
        web_uid="alice",
        number="1001",
        settings=c.CallSettings(gateway_uid="gateway"),
        started_at=0.0,
        state=c.State.CONNECTED,
        TABLE=c.rtc_to_sip_table(),
    )
    assert [
        a.cause for a in other.handle(c.MediaFailed("ice_failed"), 1.0) if isinstance(a, c.Hangup)
    ] == ["MEDIA_TIMEOUT"]


def test_any_positive_hold_time_is_taken_and_refusals_say_why() -> None:
    assert BrowserHolds(0.5).hold_time == 0.5
    with pytest.raises(ValueError, match=r"^hold_time must be positive, not 0$"):
        BrowserHolds(0)
    with pytest.raises(ValueError, match=r"^hold_time must be positive, not -1\.0$"):
        BrowserHolds(-1.0)
    with pytest.raises(ValueError, match=r"^unknown reason 'wifi'$"):
        BrowserHolds(30.0).lost("a", "wifi", 0.0)


def test_a_call_never_held_has_no_reasons_and_forgetting_it_is_harmless() -> None:
    holds = BrowserHolds(30.0)
    assert holds.reasons("call-1") == frozenset()
    holds.forget("call-1")
    holds.lost("call-1", ICE, 0.0)
    holds.forget("call-1")
    holds.forget("call-1")  # twice: still nothing to do
    assert len(holds) == 0 and holds.reasons("call-1") == frozenset()


def test_a_short_hold_is_reported_as_it_lasted_and_a_clock_behind_as_zero() -> None:
    holds = BrowserHolds(30.0)
    holds.lost("call-1", ICE, 100.0)
    assert holds.back("call-1", ICE, 100.25) == 0.25
    holds.lost("call-2", WS, 100.0)
    assert holds.back("call-2", WS, 99.0) == 0.0
