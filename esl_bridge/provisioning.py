"""``scripts/freeswitch.sh --acc-rule``: the acc_rule expression for a set of numbers, and
how rtx.conf's acc_rule differs from the users a switch has (no I/O).

``acc_rule_for`` writes the shortest rule of the grammar ``numbers.parse_acc_rule`` reads
(README.rst, acc_rule): each run of consecutive numbers of one length becomes one item,
``prefix[from-to]`` with the longest prefix the run shares (``1020``-``1099`` is
``10[20-99]``), or the number itself when the run has one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from esl_bridge.numbers import AccRuleError


def acc_rule_for(numbers: Iterable[str]) -> str:
    """The acc_rule of exactly these numbers (digits only; duplicates are one number)."""
    distinct = set(numbers)
    for n in distinct:
        if not n.isdigit() or not n.isascii():
            raise AccRuleError(f"{n!r} is not a number (digits only)")
    if not distinct:
        raise AccRuleError("no number: an acc_rule needs at least one")
    ordered = sorted(distinct, key=_numeric)
    items: list[str] = []
    start = prev = ordered[0]
    for n in [*ordered[1:], None]:
        if n is not None and len(n) == len(prev) and int(n) == int(prev) + 1:
            prev = n
            continue
        items.append(_item(start, prev))
        if n is not None:
            start = prev = n
    return ";".join(items)


def _item(first: str, last: str) -> str:
    if first == last:
        return first
    common = 0
    while common < len(first) - 1 and first[common] == last[common]:
        common += 1
    return f"{first[:common]}[{first[common:]}-{last[common:]}]"


@dataclass(frozen=True)
class Difference:
    """rtx.conf's acc_rule against the switch's users."""

    not_in_rule: tuple[str, ...]  # users the rule leaves out
    not_provisioned: tuple[str, ...]  # numbers of the rule that are no user

    @property
    def same(self) -> bool:
        return not self.not_in_rule and not self.not_provisioned


def compare(users: Iterable[str], rule_numbers: Iterable[str]) -> Difference:
    have, want = set(users), set(rule_numbers)
    return Difference(
        tuple(sorted(have - want, key=_numeric)), tuple(sorted(want - have, key=_numeric))
    )


def _numeric(number: str) -> tuple[int, int]:
    return len(number), int(number)
