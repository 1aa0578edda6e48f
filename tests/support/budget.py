"""Hypothesis example counts that ``scripts/mutation.sh`` scales down (docs/mutation.rst)."""

from __future__ import annotations

import os


def examples(count: int) -> int:
    """``count``, or a tenth of it (at least 10) when the mutation script runs the tests.

    Under mutation each test runs once per mutant that reaches it, so a property test's
    full count is paid thousands of times; the script sets ``ESL_BRIDGE_MUTATION=1``."""
    if os.environ.get("ESL_BRIDGE_MUTATION") == "1":
        return max(10, count // 10)
    return count
