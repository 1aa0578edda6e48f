"""The invitation states and failure reasons have one set of numbers.

The tests name states (``LocalState.ACCEPTED_BY_REMOTE``) instead of writing their numbers,
so the numbers themselves are checked here, once: the enums of esl_bridge/core/invitations.py
are what README.rst ("Invitation states and reasons") documents and what the SDK
(esl_bridge/web/sdk.js) exports. A renumbered state fails here instead of passing everywhere.
"""

from __future__ import annotations

import re
from enum import IntEnum
from pathlib import Path

import pytest

from esl_bridge.core.invitations import (
    ApiError,
    LocalFailureReason,
    LocalState,
    RemoteFailureReason,
    RemoteState,
)

ROOT = Path(__file__).resolve().parent.parent
PAIR = re.compile(r"\b([A-Z][A-Z_]+):? (\d+)\b")


def sdk_enum(name: str) -> dict[str, int]:
    """``export const <name> = Object.freeze({ A: 0, B: 1 })`` of sdk.js, as a dict."""
    text = (ROOT / "esl_bridge" / "web" / "sdk.js").read_text()
    match = re.search(rf"export const {name} = Object\.freeze\(\{{(.*?)\}}\);", text, re.S)
    assert match, f"sdk.js exports no {name}"
    return {key: int(value) for key, value in PAIR.findall(match.group(1))}


def readme_section() -> str:
    text = (ROOT / "README.rst").read_text()
    start = text.index("Invitation states and reasons\n")
    return text[start : text.index("\n\n", text.index("Remote failure reasons", start))]


def readme_list(after: str, until: str) -> dict[str, int]:
    """``NAME n`` pairs of README's sentence starting with ``after``, up to ``until``."""
    section = readme_section()
    start = section.index(after) + len(after)
    end = section.index(until, start) if until else len(section)
    return {key: int(value) for key, value in PAIR.findall(section[start:end])}


def members(enum: type[IntEnum]) -> dict[str, int]:
    return {member.name: int(member) for member in enum}


@pytest.mark.parametrize(
    ("enum", "sdk_name"),
    [
        (LocalState, "LocalInvitationState"),
        (RemoteState, "RemoteInvitationState"),
        (LocalFailureReason, "LocalInvitationFailureReason"),
        (RemoteFailureReason, "RemoteInvitationFailureReason"),
        (ApiError, "InvitationApiError"),
    ],
)
def test_the_sdk_exports_the_numbers_of_the_server(enum: type[IntEnum], sdk_name: str) -> None:
    assert sdk_enum(sdk_name) == members(enum)


@pytest.mark.parametrize(
    ("enum", "after", "until"),
    [
        (LocalState, "LocalInvitationState (caller):", "RemoteInvitationState"),
        (RemoteState, "RemoteInvitationState (callee):", "Local failure reasons"),
        (LocalFailureReason, "Local failure reasons:", "Remote failure reasons"),
        (RemoteFailureReason, "Remote failure reasons:", ""),
    ],
)
def test_the_readme_documents_the_numbers_of_the_server(
    enum: type[IntEnum], after: str, until: str
) -> None:
    assert readme_list(after, until) == members(enum)
