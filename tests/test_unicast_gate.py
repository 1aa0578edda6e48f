"""The unicast gate: never unicast before the channel has a read codec, never after hangup."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.budget import examples

from esl_bridge.core.unicast_gate import (
    TABLE,
    GateInput,
    GateState,
    RefuseReason,
    RefuseUnicast,
    SendUnicast,
    UnicastGate,
    WaitForMedia,
    classify_event,
)

UUID = "5e1f0000-0000-4000-8000-00000000c0de"

# Named steps: (event name, headers) or the request. Some steps look like readiness but are
# not (pre_answer still executing, 180 without SDP, another channel's answer).
STEPS: dict[str, tuple[str, dict[str, str]] | None] = {
    "answer": ("CHANNEL_ANSWER", {}),
    "pre_answer_exec": ("CHANNEL_EXECUTE", {"Application": "pre_answer"}),
    "pre_answer_complete": ("CHANNEL_EXECUTE_COMPLETE", {"Application": "pre_answer"}),
    "other_complete": ("CHANNEL_EXECUTE_COMPLETE", {"Application": "playback"}),
    "progress": ("CHANNEL_PROGRESS", {}),
    "progress_media": ("CHANNEL_PROGRESS_MEDIA", {}),
    "other_channel_answer": ("CHANNEL_ANSWER", {"Unique-ID": "someone-else"}),
    "park": ("CHANNEL_PARK", {}),
    "hangup": ("CHANNEL_HANGUP", {}),
    "hangup_complete": ("CHANNEL_HANGUP_COMPLETE", {}),
    "request": None,
}
READY_STEPS = {"answer", "pre_answer_complete", "progress_media"}
HANGUP_STEPS = {"hangup", "hangup_complete"}


def run(steps: list[str]) -> list[tuple[int, object]]:
    """Feed the steps; returns (step index, action) for every action the gate produced."""
    gate = UnicastGate(uuid=UUID)
    out: list[tuple[int, object]] = []
    for i, step in enumerate(steps):
        spec = STEPS[step]
        if spec is None:
            out.append((i, gate.request_unicast()))
        else:
            name, headers = spec
            out.extend((i, a) for a in gate.on_event(name, {"Unique-ID": UUID, **headers}))
    return out


def expected_send_index(steps: list[str]) -> int | None:
    """Oracle: the first step at which a request and readiness have both happened, if no
    hangup came before it."""
    requested = ready = False
    for i, step in enumerate(steps):
        if step in HANGUP_STEPS:
            return None
        requested |= step == "request"
        ready |= step in READY_STEPS
        if requested and ready:
            return i
    return None


def check(steps: list[str]) -> None:
    actions = run(steps)
    sends = [i for i, a in actions if isinstance(a, SendUnicast)]
    expected = expected_send_index(steps)
    assert sends == ([] if expected is None else [expected]), (steps, actions)
    for i in sends:  # never early, never after hangup
        assert any(s in READY_STEPS for s in steps[: i + 1])
        assert not any(s in HANGUP_STEPS for s in steps[:i])


def test_table_is_complete() -> None:
    assert set(TABLE) == set(itertools.product(GateState, GateInput))


@pytest.mark.parametrize(
    ("steps", "actions"),
    [
        (["request"], [WaitForMedia()]),
        (["request", "answer"], [WaitForMedia(), SendUnicast()]),
        (["answer", "request"], [SendUnicast()]),
        (["request", "pre_answer_exec"], [WaitForMedia()]),
        (["request", "pre_answer_exec", "pre_answer_complete"], [WaitForMedia(), SendUnicast()]),
        (["request", "progress"], [WaitForMedia()]),
        (["request", "progress_media"], [WaitForMedia(), SendUnicast()]),
        (["request", "other_complete", "park"], [WaitForMedia()]),
        (["request", "other_channel_answer"], [WaitForMedia()]),
        (["request", "hangup"], [WaitForMedia(), RefuseUnicast(RefuseReason.HUNG_UP)]),
        (["hangup", "answer", "request"], [RefuseUnicast(RefuseReason.HUNG_UP)]),
        (["answer", "hangup", "request"], [RefuseUnicast(RefuseReason.HUNG_UP)]),
        (
            ["answer", "request", "request"],
            [SendUnicast(), RefuseUnicast(RefuseReason.ALREADY_SENT)],
        ),
        (
            ["request", "request", "answer", "answer"],
            [WaitForMedia(), WaitForMedia(), SendUnicast()],
        ),
        (
            ["answer", "request", "hangup", "request"],
            [SendUnicast(), RefuseUnicast(RefuseReason.HUNG_UP)],
        ),
    ],
)
def test_table_cases(steps: list[str], actions: list[object]) -> None:
    assert [a for _, a in run(steps)] == actions


def test_classify_uses_only_documented_events() -> None:
    assert classify_event("CHANNEL_ANSWER") is GateInput.MEDIA_READY
    assert classify_event("CHANNEL_PROGRESS_MEDIA") is GateInput.MEDIA_READY
    assert classify_event("CHANNEL_EXECUTE_COMPLETE", {"Application": "pre_answer"}) is (
        GateInput.MEDIA_READY
    )
    assert classify_event("CHANNEL_EXECUTE", {"Application": "pre_answer"}) is None
    assert classify_event("CHANNEL_EXECUTE_COMPLETE", {"Application": "answer"}) is None
    assert classify_event("CHANNEL_PROGRESS") is None
    assert classify_event("CHANNEL_DESTROY") is GateInput.HANGUP


def test_hangup_without_event_drops_the_queued_request() -> None:
    gate = UnicastGate()
    assert gate.request_unicast() == WaitForMedia()
    assert gate.hangup() == [RefuseUnicast(RefuseReason.HUNG_UP)]
    assert gate.on_event("CHANNEL_ANSWER") == []
    assert gate.hung_up


def test_every_ordering_of_the_core_events() -> None:
    core = ["answer", "pre_answer_complete", "progress_media", "hangup", "request"]
    for size in range(1, len(core) + 1):
        for subset in itertools.combinations(core, size):
            for order in itertools.permutations(subset):
                check(list(order))


@settings(max_examples=examples(400), deadline=None)
@given(st.lists(st.sampled_from(sorted(STEPS)), max_size=14))
def test_any_interleaving_never_early_never_after_hangup_exactly_once(steps: list[str]) -> None:
    check(steps)


def test_an_event_without_a_unique_id_counts_for_the_gate_another_channels_does_not() -> None:
    # An outbound socket's own events (its channel only) are taken as they are; on an
    # inbound connection another channel's answer must not open this channel's gate.
    gate = UnicastGate(uuid=UUID)
    assert gate.request_unicast() == WaitForMedia()
    assert gate.on_event("CHANNEL_ANSWER", {"Unique-ID": "someone-else"}) == []
    assert gate.on_event("CHANNEL_ANSWER", {}) == [SendUnicast()]
    assert gate.sent
