"""acc_rule: the SIP numbers RTC users may call, and who holds each one right now.

Grammar (README.rst, section acc_rule): a ``;``-separated list of items.
``prefix[from-to]`` expands to ``prefix`` + every number from..to inclusive, zero-padded
to the width of ``from``; any other item is one literal number. ``1005;10[06-19]`` is
1005 and 1006..1019.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass

MAX_NUMBERS = 100_000

_RANGE = re.compile(r"^(?P<prefix>[0-9]*)\[(?P<start>[^\]\-]*)-(?P<end>[^\]]*)\]$")
_DIGITS = re.compile(r"^[0-9]+$")


class AccRuleError(ValueError):
    """acc_rule cannot be used; the message names the item and the reason."""

    def __init__(self, reason: str, item: str | None = None, position: int | None = None):
        self.reason = reason
        self.item = item
        self.position = position
        where = f"item {position} {item!r}: " if item is not None else ""
        super().__init__(where + reason)


@dataclass(frozen=True)
class _Span:
    """One item of the rule: numbers ``prefix + str(n).zfill(width)`` for n in start..end."""

    prefix: str
    start: int
    end: int
    width: int

    def __len__(self) -> int:
        return self.end - self.start + 1

    def __iter__(self) -> Iterator[str]:
        for n in range(self.start, self.end + 1):
            yield self.prefix + str(n).zfill(self.width)


def _parse_item(item: str, position: int) -> _Span:
    if not item:
        raise AccRuleError("empty item", item, position)
    if "[" not in item and "]" not in item:
        if not _DIGITS.match(item):
            raise AccRuleError("a number must be digits only", item, position)
        return _Span(prefix="", start=int(item), end=int(item), width=len(item))
    match = _RANGE.match(item)
    if match is None:
        raise AccRuleError("expected digits or prefix[from-to], e.g. 10[06-19]", item, position)
    start, end = match["start"], match["end"]
    if not _DIGITS.match(start) or not _DIGITS.match(end):
        raise AccRuleError("range bounds must be digits", item, position)
    if int(end) < int(start):
        raise AccRuleError(f"range end {end} is below its start {start}", item, position)
    return _Span(prefix=match["prefix"], start=int(start), end=int(end), width=len(start))


def parse_acc_rule(rule: str, limit: int = MAX_NUMBERS) -> tuple[str, ...]:
    """Expand ``rule`` into its numbers, in rule order; raise AccRuleError on any defect."""
    text = rule.strip()
    if not text:
        raise AccRuleError("acc_rule is empty")
    spans = [_parse_item(item.strip(), i + 1) for i, item in enumerate(text.split(";"))]
    # Count before expanding so a rule like 1[0-99999999999] fails fast, not out of memory.
    total = sum(len(span) for span in spans)
    if total > limit:
        raise AccRuleError(f"acc_rule expands to {total} numbers, more than the limit of {limit}")
    items = text.split(";")
    seen: dict[str, int] = {}
    for position, span in enumerate(spans, start=1):
        for number in span:
            if number in seen:
                raise AccRuleError(
                    f"number {number} is listed twice (first in item {seen[number]})",
                    items[position - 1].strip(),
                    position,
                )
            seen[number] = position
    numbers = tuple(seen)
    return numbers


class NumberBusy(Exception):
    """The number already carries a call."""


class NumberUnknown(KeyError):
    """The number is not part of acc_rule."""


class NumberPool:
    """The numbers of acc_rule and which call holds each one.

    A number is handed to at most one call at a time. Thread-safe, because the ESL side
    (gevent) and the signalling side (asyncio) both ask.
    """

    def __init__(self, numbers: tuple[str, ...]):
        self._numbers = frozenset(numbers)
        self._ordered = numbers
        self._holders: dict[str, str] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_rule(cls, rule: str) -> NumberPool:
        return cls(parse_acc_rule(rule))

    def __contains__(self, number: object) -> bool:
        return number in self._numbers

    def __len__(self) -> int:
        return len(self._numbers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ordered)

    def acquire(self, number: str, call_id: str) -> None:
        """Give ``number`` to ``call_id``; NumberBusy if another call holds it."""
        if number not in self._numbers:
            raise NumberUnknown(number)
        with self._lock:
            holder = self._holders.get(number)
            if holder is not None and holder != call_id:
                raise NumberBusy(number)
            self._holders[number] = call_id

    def release(self, number: str, call_id: str) -> bool:
        """Free ``number`` if ``call_id`` holds it; False if it did not (nothing changes)."""
        with self._lock:
            if self._holders.get(number) != call_id:
                return False
            del self._holders[number]
            return True

    def replace(self, numbers: tuple[str, ...]) -> None:
        """Serve ``numbers`` from now on (a reload); a number's call keeps it until it
        ends (``release``), even if the number is no longer served."""
        with self._lock:
            self._numbers = frozenset(numbers)
            self._ordered = numbers

    def holder(self, number: str) -> str | None:
        with self._lock:
            return self._holders.get(number)

    def busy(self) -> dict[str, str]:
        """A snapshot of number -> call id for every number in use."""
        with self._lock:
            return dict(self._holders)
