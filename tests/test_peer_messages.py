"""The call protocol's Cmd messages (core/peer_messages.py): parse, serialise, limits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from esl_bridge.core import peer_messages as pm

LONG_SDP = "v=0\r\n" + "a=x\r\n" * ((pm.MAX_SDP_BYTES - 5) // 5)
CHAN_64 = "c" * pm.CHANNEL_ID_MAX_BYTES


def _ids(cases: list[Any]) -> list[str]:
    return [str(i) for i in range(len(cases))]


# (the message, its exact wire text): serialise gives the text, parse gives the message.
ROUND_TRIPS: list[tuple[pm.PeerMessage, str]] = [
    (pm.EndCall(), '{"Cmd":"EndCall"}'),
    (pm.EndCall(chan_id="ch-1"), '{"Cmd":"EndCall","ChanId":"ch-1"}'),
    (pm.CallState(), '{"Cmd":"CallState"}'),
    (pm.CallStateResult(state=0), '{"Cmd":"CallStateResult","state":0,"Mode":1}'),
    (pm.CallStateResult(state=2, mode=None), '{"Cmd":"CallStateResult","state":2}'),
    (pm.Offer(chan_id="ch-1", sdp="v=0\r\n"), '{"Cmd":"Offer","ChanId":"ch-1","Sdp":"v=0\\r\\n"}'),
    (pm.Offer(sdp=""), '{"Cmd":"Offer","Sdp":""}'),
    (pm.Answer(chan_id="ch-1", sdp="v=0"), '{"Cmd":"Answer","ChanId":"ch-1","Sdp":"v=0"}'),
    (
        pm.MediaError(chan_id="ch-1", reason="not_ready"),
        '{"Cmd":"MediaError","ChanId":"ch-1","Reason":"not_ready"}',
    ),
    (pm.MediaError(reason="no_such_call"), '{"Cmd":"MediaError","Reason":"no_such_call"}'),
    (
        pm.MediaProblem(chan_id="ch-1", direction="browser_to_switch", verdict="browser_silent"),
        '{"Cmd":"MediaProblem","ChanId":"ch-1","Direction":"browser_to_switch",'
        '"Verdict":"browser_silent"}',
    ),
    (pm.Dtmf(chan_id="ch-1", digits="7"), '{"Cmd":"Dtmf","ChanId":"ch-1","Digit":"7"}'),
    (pm.Dtmf(digits="0123456789*#ABCDabcd"), '{"Cmd":"Dtmf","Digit":"0123456789*#ABCDabcd"}'),
    (pm.SipState(state="ringing"), '{"Cmd":"SipState","State":"ringing"}'),
    (
        pm.SipState(state="early_media", cause="X"),
        '{"Cmd":"SipState","State":"early_media","Cause":"X"}',
    ),
    (pm.Refused(reason="capacity"), '{"Cmd":"Refused","Reason":"capacity"}'),
    (
        pm.Refused(reason="busy", cause="USER_BUSY"),
        '{"Cmd":"Refused","Reason":"busy","Cause":"USER_BUSY"}',
    ),
    (pm.Calling(), '{"Cmd":"Calling","Reason":"calling"}'),
    (pm.Offer(chan_id=CHAN_64, sdp=LONG_SDP), None),  # at the limits: accepted
    (pm.Dtmf(digits="1" * pm.MAX_DTMF_DIGITS), None),
    (pm.Refused(reason="\u00e9" * (pm.MAX_WORD_BYTES // 2)), None),  # non-ASCII, escaped
]


@pytest.mark.parametrize(("msg", "text"), ROUND_TRIPS, ids=_ids(ROUND_TRIPS))
def test_round_trip(msg: pm.PeerMessage, text: str | None) -> None:
    wire = pm.serialise(msg)
    if text is not None:
        assert wire == text
    assert wire.isascii()
    assert pm.parse(wire) == msg
    assert pm.parse(wire.encode()) == msg


def test_every_command_has_a_round_trip() -> None:
    assert {type(msg).CMD for msg, _ in ROUND_TRIPS} == pm.commands()


# Text as browsers and ARCall clients send it -> what it reads as.
READS: list[tuple[str, pm.PeerMessage]] = [
    # The browser's DTMF field, the gateway's, and both at once when they agree.
    ('{"Cmd":"Dtmf","ChanId":"c","Digits":"12#"}', pm.Dtmf(chan_id="c", digits="12#")),
    ('{"Cmd":"Dtmf","Digit":"5"}', pm.Dtmf(digits="5")),
    ('{"Cmd":"Dtmf","Digits":"5","Digit":"5"}', pm.Dtmf(digits="5")),
    # Fields a message does not define are ignored; a null ChanId is none.
    ('{"Cmd":"EndCall","Extra":{"a":[1]},"ChanId":null}', pm.EndCall()),
    ('{"Cmd":"CallState","Mode":1}', pm.CallState()),
    ('{"Cmd":"CallStateResult","state":1}', pm.CallStateResult(state=1, mode=None)),
    ('{"Cmd":"Calling"}', pm.Calling()),
    ('{ "Cmd" : "Offer" , "Sdp" : "v=0" }', pm.Offer(sdp="v=0")),
]


@pytest.mark.parametrize(("text", "msg"), READS, ids=_ids(READS))
def test_reads(text: str, msg: pm.PeerMessage) -> None:
    assert pm.parse(text) == msg


def _j(**body: Any) -> str:
    return json.dumps(body)


def _u(**body: Any) -> str:
    """Non-ASCII characters as themselves, not escaped."""
    return json.dumps(body, ensure_ascii=False)


NESTED = '{"Cmd":"EndCall","x":' + "[" * 100 + "]" * 100 + "}"
DEEP = "[" * 100_000 + "]" * 100_000

# Text -> the error class, the Cmd it names (None: none), and words of the message.
BAD: list[tuple[str | bytes, type[pm.PeerMessageError], str | None, str]] = [
    ("hello", pm.NotACommand, None, "not JSON"),
    ("", pm.NotACommand, None, "not JSON"),
    (b"\xff\xfe", pm.NotACommand, None, "UTF-8"),
    ("[1,2]", pm.NotACommand, None, "object"),
    ('"EndCall"', pm.NotACommand, None, "object"),
    ("{}", pm.NotACommand, None, "Cmd"),
    ('{"Cmd":1}', pm.NotACommand, None, "Cmd"),
    ('{"Cmd":null}', pm.NotACommand, None, "Cmd"),
    ('{"Cmd":"EndCall","x":NaN}', pm.NotACommand, None, "NaN"),
    (NESTED, pm.NotACommand, None, "nested"),
    (DEEP, pm.NotACommand, None, "characters"),
    ("[" * 5000 + "]" * 5000, pm.NotACommand, None, "nested"),
    ('{"Cmd":"SwitchAudio"}', pm.UnknownCommand, None, "unknown Cmd"),
    ('{"Cmd":"endcall"}', pm.UnknownCommand, None, "unknown Cmd"),
    # Wrong types.
    (_j(Cmd="EndCall", ChanId=5), pm.PeerMessageError, "EndCall", "ChanId must be a string"),
    (_j(Cmd="Offer", ChanId="c"), pm.PeerMessageError, "Offer", "Sdp must be a string"),
    (_j(Cmd="Offer", Sdp=["v=0"]), pm.PeerMessageError, "Offer", "Sdp must be a string"),
    (_j(Cmd="Answer", Sdp={"type": "answer"}), pm.PeerMessageError, "Answer", "Sdp"),
    (_j(Cmd="MediaError"), pm.PeerMessageError, "MediaError", "Reason must be a string"),
    (_j(Cmd="MediaError", Reason=""), pm.PeerMessageError, "MediaError", "empty"),
    (_j(Cmd="SipState", State=1), pm.PeerMessageError, "SipState", "State must be a string"),
    (_j(Cmd="SipState", State="ringing", Cause=0), pm.PeerMessageError, "SipState", "Cause"),
    (_j(Cmd="Refused"), pm.PeerMessageError, "Refused", "Reason must be a string"),
    (_j(Cmd="Calling", Reason=None), pm.PeerMessageError, "Calling", "Reason"),
    (_j(Cmd="CallStateResult"), pm.PeerMessageError, "CallStateResult", "state"),
    (_j(Cmd="CallStateResult", state=True), pm.PeerMessageError, "CallStateResult", "state"),
    (_j(Cmd="CallStateResult", state="2"), pm.PeerMessageError, "CallStateResult", "state"),
    (_j(Cmd="CallStateResult", state=2.0), pm.PeerMessageError, "CallStateResult", "state"),
    (_j(Cmd="CallStateResult", state=3), pm.PeerMessageError, "CallStateResult", "state"),
    (_j(Cmd="CallStateResult", state=1, Mode="1"), pm.PeerMessageError, "CallStateResult", "Mode"),
    (_j(Cmd="Dtmf"), pm.PeerMessageError, "Dtmf", "non-empty"),
    (_j(Cmd="Dtmf", Digits=""), pm.PeerMessageError, "Dtmf", "non-empty"),
    (_j(Cmd="Dtmf", Digits=5), pm.PeerMessageError, "Dtmf", "non-empty"),
    (_j(Cmd="Dtmf", Digits="1; hangup"), pm.PeerMessageError, "Dtmf", "only"),
    (_j(Cmd="Dtmf", Digits="E"), pm.PeerMessageError, "Dtmf", "only"),
    (_j(Cmd="Dtmf", Digits="1", Digit="2"), pm.PeerMessageError, "Dtmf", "disagree"),
    # Limits, one past each.
    (_j(Cmd="Dtmf", Digits="1" * 33), pm.PeerMessageError, "Dtmf", "more than 32"),
    (_j(Cmd="Offer", Sdp="x" * (pm.MAX_SDP_BYTES + 1)), pm.PeerMessageError, "Offer", "longer"),
    (
        _u(Cmd="Offer", Sdp="\u00e9" * (pm.MAX_SDP_BYTES // 2 + 1)),
        pm.PeerMessageError,
        "Offer",
        "longer",
    ),
    (_j(Cmd="EndCall", ChanId="c" * 65), pm.PeerMessageError, "EndCall", "longer than 64"),
    (_j(Cmd="EndCall", ChanId="\u00e9" * 33), pm.PeerMessageError, "EndCall", "longer than 64"),
    (_j(Cmd="Refused", Reason="r" * 129), pm.PeerMessageError, "Refused", "longer than 128"),
    # Lone surrogates (an escaped pair is one character and fine: see READS_PAIR).
    ('{"Cmd":"Offer","Sdp":"v=0\\ud800"}', pm.PeerMessageError, "Offer", "surrogate"),
    ('{"Cmd":"EndCall","ChanId":"\\udc00"}', pm.PeerMessageError, "EndCall", "surrogate"),
    ('{"Cmd":"Refused","Reason":"x","Cause":"\\ud83d"}', pm.PeerMessageError, "Refused", "surr"),
    ('{"Cmd":"Dtmf","Digits":"\\ud800"}', pm.PeerMessageError, "Dtmf", "only"),
]


@pytest.mark.parametrize(("text", "error", "cmd", "words"), BAD, ids=_ids(BAD))
def test_bad_input_is_a_clear_value_error(
    text: str | bytes, error: type[pm.PeerMessageError], cmd: str | None, words: str
) -> None:
    with pytest.raises(error) as caught:
        pm.parse(text)
    assert isinstance(caught.value, ValueError)
    assert caught.value.cmd == cmd
    assert words in str(caught.value)
    if isinstance(text, str) and len(text) > 40:
        assert text not in str(caught.value)  # the peer's text is never echoed


def test_an_escaped_surrogate_pair_is_one_character_and_fine() -> None:
    msg = pm.parse('{"Cmd":"Refused","Reason":"\\ud83d\\ude00"}')
    assert msg == pm.Refused(reason="\U0001f600")
    assert pm.parse(pm.serialise(msg)) == msg


# The gateway cannot build what it would refuse to read.
UNBUILDABLE: list[tuple[type[pm.PeerMessage], dict[str, Any]]] = [
    (pm.Dtmf, {"digits": "x"}),
    (pm.Dtmf, {"digits": ""}),
    (pm.Answer, {"sdp": "s" * (pm.MAX_SDP_BYTES + 1)}),
    (pm.Answer, {"sdp": None}),
    (pm.MediaError, {"chan_id": "c" * 65, "reason": "bad_offer"}),
    (pm.SipState, {"state": "\ud800"}),
    (pm.CallStateResult, {"state": 5}),
]


@pytest.mark.parametrize(("cls", "fields"), UNBUILDABLE, ids=_ids(UNBUILDABLE))
def test_a_message_checks_its_fields_when_built(
    cls: type[pm.PeerMessage], fields: dict[str, Any]
) -> None:
    with pytest.raises(pm.PeerMessageError):
        cls(**fields)


def test_messages_take_keywords_only_and_are_frozen() -> None:
    with pytest.raises(TypeError):
        pm.Dtmf("c", "1")  # type: ignore[misc]
    msg = pm.Dtmf(digits="1")
    with pytest.raises(AttributeError):
        msg.digits = "2"  # type: ignore[misc]
