"""acc_rule grammar and the number pool."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esl_bridge.numbers import (
    MAX_NUMBERS,
    AccRuleError,
    NumberBusy,
    NumberPool,
    NumberUnknown,
    parse_acc_rule,
)


def test_srproxy_example_expands_to_1005_and_1006_through_1019() -> None:
    numbers = parse_acc_rule("1005;10[06-19]")
    assert numbers == ("1005", *(f"10{n:02d}" for n in range(6, 20)))
    assert len(numbers) == 15  # 1005 plus the 14 numbers 1006..1019


def test_repo_sample_rule() -> None:
    assert parse_acc_rule("1016;1017;20[01-05]") == (
        "1016",
        "1017",
        "2001",
        "2002",
        "2003",
        "2004",
        "2005",
    )


def test_padding_follows_the_width_of_from_not_of_to() -> None:
    assert parse_acc_rule("7[8-11]") == ("78", "79", "710", "711")
    assert parse_acc_rule("[098-101]") == ("098", "099", "100", "101")


def test_whitespace_around_items_is_ignored() -> None:
    assert parse_acc_rule(" 1005 ; 10[06-07] ") == ("1005", "1006", "1007")


@pytest.mark.parametrize(
    ("rule", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1005;", "empty item"),
        (";1005", "empty item"),
        ("1005;;1006", "empty item"),
        ("10[19-06]", "below its start"),
        ("10[a-9]", "digits"),
        ("10[1-b]", "digits"),
        ("10[-9]", "digits"),
        ("10[06-19", "expected"),
        ("10]06-19[", "expected"),
        ("10[06-19]5", "expected"),
        ("x10[06-19]", "expected"),
        ("abc", "digits only"),
        ("1005;1005", "listed twice"),
        ("1005;10[04-06]", "listed twice"),
        ("1[0-99999999999999]", "limit"),
    ],
)
def test_bad_rules_are_rejected_with_a_reason(rule: str, fragment: str) -> None:
    with pytest.raises(AccRuleError) as info:
        parse_acc_rule(rule)
    assert fragment in str(info.value)


def test_limit_is_exactly_100000() -> None:
    assert len(parse_acc_rule("[00000-99999]")) == MAX_NUMBERS
    with pytest.raises(AccRuleError, match="100001 numbers"):
        parse_acc_rule("[00000-99999];100000")


def test_error_names_the_item_and_its_position() -> None:
    with pytest.raises(AccRuleError) as info:
        parse_acc_rule("1005;20[09-01];3000")
    assert info.value.position == 2
    assert info.value.item == "20[09-01]"


ranges = st.tuples(
    st.text(alphabet="0123456789", max_size=4),
    st.integers(min_value=0, max_value=999),
    st.integers(min_value=0, max_value=200),
    st.integers(min_value=0, max_value=2),
)


@given(ranges)
@settings(deadline=None)  # about parsing, not time: no per-example deadline
def test_range_expansion_matches_its_definition(r: tuple[str, int, int, int]) -> None:
    prefix, start, span, extra_width = r
    end = start + span
    width = len(str(start)) + extra_width
    item = f"{prefix}[{str(start).zfill(width)}-{end}]"
    numbers = parse_acc_rule(item)
    assert numbers == tuple(prefix + str(n).zfill(width) for n in range(start, end + 1))
    assert len(set(numbers)) == len(numbers)


@given(st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30, unique=True))
@settings(deadline=None)  # about parsing, not time: no per-example deadline
def test_literal_lists_keep_order_and_count(values: list[int]) -> None:
    rule = ";".join(str(v) for v in values)
    assert parse_acc_rule(rule) == tuple(str(v) for v in values)


@given(st.lists(st.integers(min_value=0, max_value=50), min_size=2, max_size=10))
@settings(deadline=None)  # about parsing, not time: no per-example deadline
def test_any_repeated_literal_is_a_duplicate(values: list[int]) -> None:
    rule = ";".join(str(v) for v in values)
    if len(set(values)) == len(values):
        assert len(parse_acc_rule(rule)) == len(values)
    else:
        with pytest.raises(AccRuleError, match="listed twice"):
            parse_acc_rule(rule)


@given(st.text(alphabet="0123456789[]-;ab ", max_size=24))
@settings(deadline=None)  # about parsing, not time: no per-example deadline
def test_parser_only_ever_returns_numbers_or_raises_acc_rule_error(rule: str) -> None:
    try:
        numbers = parse_acc_rule(rule)
    except AccRuleError:
        return
    assert numbers
    assert all(n.isdigit() for n in numbers)
    assert len(set(numbers)) == len(numbers)


def test_pool_hands_a_number_to_one_call_at_a_time() -> None:
    pool = NumberPool.from_rule("1005;10[06-07]")
    assert len(pool) == 3
    assert "1006" in pool and "1008" not in pool
    pool.acquire("1006", "call-a")
    pool.acquire("1006", "call-a")  # the same call asking again is not a second use
    with pytest.raises(NumberBusy):
        pool.acquire("1006", "call-b")
    assert pool.holder("1006") == "call-a"
    assert not pool.release("1006", "call-b")  # a call cannot free what it does not hold
    assert pool.busy() == {"1006": "call-a"}
    assert pool.release("1006", "call-a")
    pool.acquire("1006", "call-b")
    assert pool.busy() == {"1006": "call-b"}


def test_pool_refuses_numbers_outside_the_rule() -> None:
    pool = NumberPool.from_rule("1005")
    with pytest.raises(NumberUnknown):
        pool.acquire("1006", "call-a")
    assert pool.busy() == {}


def test_pool_never_gives_a_number_twice_under_contention() -> None:
    pool = NumberPool.from_rule("1005")
    winners: list[str] = []
    barrier = threading.Barrier(16)

    def grab(call_id: str) -> None:
        barrier.wait()
        try:
            pool.acquire("1005", call_id)
        except NumberBusy:
            return
        winners.append(call_id)

    threads = [threading.Thread(target=grab, args=(f"call-{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(winners) == 1
    assert pool.holder("1005") == winners[0]
