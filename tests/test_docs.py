"""README.rst stays true: every config key documented, the test command is CI's."""

from __future__ import annotations

import re
from pathlib import Path

import docutils.core
import docutils.utils
from configobj import ConfigObj

from esl_bridge.config import CONFIGSPEC

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.rst").read_text()


def test_readme_is_valid_restructuredtext() -> None:
    docutils.core.publish_doctree(README, settings_overrides={"report_level": 5, "halt_level": 2})


def test_every_config_key_is_in_the_reference() -> None:
    spec = ConfigObj(CONFIGSPEC.splitlines(), list_values=False, _inspec=True)
    text = " ".join(README.split())
    for section, keys in spec.items():
        assert f"``[{section}]``" in README, section
        for key in keys:
            assert re.search(rf"\b{re.escape(key)}\b", text), f"[{section}] {key}"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\n    scripts/test.sh\n" in README
    assert re.search(r"^exec scripts/test\.sh$", ci, re.M)
