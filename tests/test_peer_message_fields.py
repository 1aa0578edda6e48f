"""Peer messages (core/peer_messages.py): every message keeps its ChanId, the required
words refuse an empty value, and a refusal says exactly why.

``parse`` raises ``PeerMessageError`` "saying why not"; the gateway logs that text
(``calls.peer_message_rejected``), so it is held word for word here, beside
tests/test_peer_messages.py which checks the kind of each refusal.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from esl_bridge.core import peer_messages as pm


def _j(**body: Any) -> str:
    return json.dumps(body)


# Every command read with a ChanId keeps it (and loses nothing else).
WITH_CHAN: list[tuple[str, pm.PeerMessage]] = [
    (_j(Cmd="EndCall", ChanId="c1"), pm.EndCall(chan_id="c1")),
    (_j(Cmd="CallState", ChanId="c1"), pm.CallState(chan_id="c1")),
    (
        _j(Cmd="CallStateResult", ChanId="c1", state=2, Mode=1),
        pm.CallStateResult(chan_id="c1", state=2, mode=1),
    ),
    (_j(Cmd="Offer", ChanId="c1", Sdp="v=0"), pm.Offer(chan_id="c1", sdp="v=0")),
    (_j(Cmd="Answer", ChanId="c1", Sdp="v=0"), pm.Answer(chan_id="c1", sdp="v=0")),
    (
        _j(Cmd="MediaError", ChanId="c1", Reason="bad"),
        pm.MediaError(chan_id="c1", reason="bad"),
    ),
    (_j(Cmd="Dtmf", ChanId="c1", Digits="1"), pm.Dtmf(chan_id="c1", digits="1")),
    (
        _j(Cmd="SipState", ChanId="c1", State="ringing", Cause="X"),
        pm.SipState(chan_id="c1", state="ringing", cause="X"),
    ),
    (
        _j(Cmd="Refused", ChanId="c1", Reason="busy", Cause="USER_BUSY"),
        pm.Refused(chan_id="c1", reason="busy", cause="USER_BUSY"),
    ),
    (_j(Cmd="Calling", ChanId="c1"), pm.Calling(chan_id="c1")),
    (
        _j(Cmd="MediaProblem", ChanId="c1", Direction="browser_to_switch", Verdict="ok"),
        pm.MediaProblem(chan_id="c1", direction="browser_to_switch", verdict="ok"),
    ),
    (_j(Cmd="Calling", ChanId="c1", Reason="other"), pm.Calling(chan_id="c1", reason="other")),
]


@pytest.mark.parametrize(("text", "msg"), WITH_CHAN, ids=[str(i) for i in range(len(WITH_CHAN))])
def test_every_command_keeps_its_chan_id(text: str, msg: pm.PeerMessage) -> None:
    read = pm.parse(text)
    assert read == msg
    assert read.chan_id == "c1"
    assert pm.parse(pm.serialise(read)) == msg


def test_every_command_is_read() -> None:
    assert {m.CMD for _, m in WITH_CHAN} == pm.commands()


# Text -> the exact refusal.
EXACT: list[tuple[str, str]] = [
    ("[1]", "not a JSON object"),
    ("{}", "no string Cmd"),
    (_j(Cmd=None), "no string Cmd"),
    (_j(Cmd="CallStateResult", state=7), "CallStateResult: state must be 0, 1 or 2"),
    (_j(Cmd="CallStateResult", state=1, Mode="1"), "CallStateResult: Mode must be an integer"),
    (_j(Cmd="Dtmf"), "Dtmf: Digits must be a non-empty string"),
    (_j(Cmd="Dtmf", Digits="E"), "Dtmf: Digits allows only 0-9 * # A-D a-d"),
    (_j(Cmd="Dtmf", Digits="1" * 33), "Dtmf: more than 32 digits"),
    (_j(Cmd="Dtmf", Digits="1", Digit="2"), "Dtmf: Digits and Digit disagree"),
    (_j(Cmd="MediaError", Reason=""), "MediaError: Reason must not be empty"),
    (_j(Cmd="MediaError", Reason=3), "MediaError: Reason must be a string"),
    (_j(Cmd="SipState", State=""), "SipState: State must not be empty"),
    (_j(Cmd="SipState", State="ringing", Cause=1), "SipState: Cause must be a string"),
    (_j(Cmd="Refused", Reason=""), "Refused: Reason must not be empty"),
    (_j(Cmd="Refused", Reason="busy", Cause=[]), "Refused: Cause must be a string"),
    (_j(Cmd="Calling", Reason=""), "Calling: Reason must not be empty"),
    (_j(Cmd="Calling", Reason=1), "Calling: Reason must be a string"),
    (_j(Cmd="EndCall", ChanId=1), "EndCall: ChanId must be a string"),
    (_j(Cmd="EndCall", ChanId="c" * 65), "EndCall: ChanId longer than 64 bytes"),
    (_j(Cmd="Refused", Reason="r" * 129), "Refused: Reason longer than 128 bytes"),
    ('{"Cmd":"Offer","Sdp":"\\ud800"}', "Offer: Sdp holds a lone surrogate"),
]


@pytest.mark.parametrize(("text", "message"), EXACT, ids=[m for _, m in EXACT])
def test_a_refusal_says_exactly_why(text: str, message: str) -> None:
    with pytest.raises(pm.PeerMessageError) as caught:
        pm.parse(text)
    assert str(caught.value) == message


def test_text_of_exactly_the_length_limit_is_still_read() -> None:
    # MAX_TEXT_LENGTH characters are decoded (here: an Offer whose Sdp is then too long);
    # one more is refused before any decoding.
    head, tail = '{"Cmd":"Offer","Sdp":"', '"}'
    fill = "x" * (pm.MAX_TEXT_LENGTH - len(head) - len(tail))
    at_limit = head + fill + tail
    assert len(at_limit) == pm.MAX_TEXT_LENGTH
    with pytest.raises(pm.PeerMessageError) as caught:
        pm.parse(at_limit)
    assert str(caught.value) == f"Offer: Sdp longer than {pm.MAX_SDP_BYTES} bytes"
    with pytest.raises(pm.NotACommand) as caught:
        pm.parse(head + fill + "x" + tail)
    assert str(caught.value) == f"longer than {pm.MAX_TEXT_LENGTH} characters"


# MediaProblem's two words, each refused with its own name, and the command in ``cmd``.
MEDIA_PROBLEM: list[tuple[dict[str, Any], str]] = [
    ({"Verdict": "ok"}, "MediaProblem: Direction must be a string"),
    ({"Direction": 1, "Verdict": "ok"}, "MediaProblem: Direction must be a string"),
    ({"Direction": "", "Verdict": "ok"}, "MediaProblem: Direction must not be empty"),
    ({"Direction": "d" * 129, "Verdict": "ok"}, "MediaProblem: Direction longer than 128 bytes"),
    (
        {"Direction": "\u00e9" * 65, "Verdict": "ok"},
        "MediaProblem: Direction longer than 128 bytes",
    ),
    ({"Direction": "\ud800", "Verdict": "ok"}, "MediaProblem: Direction holds a lone surrogate"),
    ({"Direction": "browser_to_switch"}, "MediaProblem: Verdict must be a string"),
    ({"Direction": "browser_to_switch", "Verdict": ""}, "MediaProblem: Verdict must not be empty"),
    (
        {"Direction": "browser_to_switch", "Verdict": "v" * 129},
        "MediaProblem: Verdict longer than 128 bytes",
    ),
    (
        {"Direction": "browser_to_switch", "Verdict": "\udc00"},
        "MediaProblem: Verdict holds a lone surrogate",
    ),
]


@pytest.mark.parametrize(("fields", "message"), MEDIA_PROBLEM, ids=[m for _, m in MEDIA_PROBLEM])
def test_a_media_problem_refusal_names_its_field(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(pm.PeerMessageError) as caught:
        pm.parse(json.dumps({"Cmd": "MediaProblem", **fields}))
    assert str(caught.value) == message
    assert caught.value.cmd == "MediaProblem"


def test_media_problem_words_of_exactly_the_limit_are_read() -> None:
    word = "w" * pm.MAX_WORD_BYTES
    assert pm.parse(_j(Cmd="MediaProblem", Direction=word, Verdict=word)) == pm.MediaProblem(
        direction=word, verdict=word
    )
