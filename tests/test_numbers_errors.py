"""acc_rule's errors name the item, its position and the reason (README.rst: every defect
named at start), and the pool keeps the rule's order through a reload: what mutation
testing of ``numbers.py`` showed no test held (docs/mutation.rst). Pure."""

from __future__ import annotations

import pytest

from esl_bridge.numbers import (
    AccRuleError,
    NumberBusy,
    NumberPool,
    NumberUnknown,
    parse_acc_rule,
)


@pytest.mark.parametrize(
    ("rule", "position", "item", "reason"),
    [
        ("1000;;1002", 2, "", "empty item"),
        ("1000; 10a ", 2, "10a", "a number must be digits only"),
        ("1000;10[0-", 2, "10[0-", "expected digits or prefix[from-to], e.g. 10[06-19]"),
        ("1000;5]", 2, "5]", "expected digits or prefix[from-to], e.g. 10[06-19]"),
        ("10[a-9];1000", 1, "10[a-9]", "range bounds must be digits"),
        ("1000;10[9-1]", 2, "10[9-1]", "range end 1 is below its start 9"),
        ("1000;1001; 100[0-1] ", 3, "100[0-1]", "number 1000 is listed twice (first in item 1)"),
        ("10[00-05];1003", 2, "1003", "number 1003 is listed twice (first in item 1)"),
    ],
)
def test_an_error_names_the_item_its_position_and_the_reason(
    rule: str, position: int, item: str, reason: str
) -> None:
    with pytest.raises(AccRuleError) as caught:
        parse_acc_rule(rule)
    error = caught.value
    assert (error.reason, error.item, error.position) == (reason, item, position)
    assert str(error) == f"item {position} {item!r}: {reason}"


def test_a_rule_wide_error_names_no_item() -> None:
    for rule, reason in (
        ("  ", "acc_rule is empty"),
        ("1[0-9]", "acc_rule expands to 10 numbers, more than the limit of 5"),
    ):
        with pytest.raises(AccRuleError) as caught:
            parse_acc_rule(rule, limit=5)
        assert (caught.value.reason, caught.value.item, caught.value.position) == (
            reason,
            None,
            None,
        )
        assert str(caught.value) == reason


def test_the_pool_lists_its_numbers_in_rule_order_also_after_a_reload() -> None:
    pool = NumberPool.from_rule("1009;1000;10[05-06]")
    assert list(pool) == ["1009", "1000", "1005", "1006"]
    pool.acquire("1000", "call-1")
    pool.replace(parse_acc_rule("2001;2000"))
    assert list(pool) == ["2001", "2000"]
    assert "2000" in pool and "1009" not in pool and len(pool) == 2
    assert pool.holder("1000") == "call-1"  # kept until its call ends
    with pytest.raises(NumberUnknown) as unknown:
        pool.acquire("1009", "call-2")
    assert unknown.value.args == ("1009",)
    pool.acquire("2000", "call-2")
    with pytest.raises(NumberBusy) as busy:
        pool.acquire("2000", "call-3")
    assert busy.value.args == ("2000",)
