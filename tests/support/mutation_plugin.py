"""pytest plugin that only ``scripts/mutation.sh`` loads (``-p support.mutation_plugin``).

mutmut runs the tests once in its main process (to learn which test reaches which
function) and then forks one worker per mutant. Two things would otherwise hide mutants
or waste the time budget (docs/mutation.rst):

* The core's transition tables are built on first use and cached (``functools.cache``).
  A cache filled by an earlier test, or inherited from the main process, holds a table
  built by the unmutated builder, so a mutant of the builder would never run. Every test
  starts with those caches empty: each test that uses a table builds it, under the
  mutant, and mutmut's statistics tie the builder to every such test.
* Hypothesis shrinks a failing example before reporting it. Under mutation only "fails
  or not" matters, so the ``mutation`` profile skips the shrink phase (a killed mutant
  stops at its first failing example) and keeps no example database, so a verdict does
  not depend on what earlier mutants left behind. It runs 10 examples where a test keeps
  Hypothesis's default count (100); ``support.budget.examples`` scales the explicit
  counts the same way (a tenth).
"""

from __future__ import annotations

import sys
from typing import Any

from hypothesis import Phase, settings

settings.register_profile(
    "mutation",
    phases=(Phase.explicit, Phase.generate),
    database=None,
    deadline=None,
    max_examples=10,
    print_blob=False,
)
settings.load_profile("mutation")


def _clear_core_caches() -> None:
    for name, module in list(sys.modules.items()):
        if not name.startswith("esl_bridge.core.") or module is None:
            continue
        for value in list(vars(module).values()):
            clear = getattr(value, "cache_clear", None)
            if callable(clear):
                clear()


def pytest_runtest_setup(item: Any) -> None:
    _clear_core_caches()
