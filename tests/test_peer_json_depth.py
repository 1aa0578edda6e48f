"""The nesting limit of peer JSON (core/peer_json.py), at its boundary.

``loads`` refuses JSON nested deeper than ``MAX_DEPTH`` levels; it walks the value only
when the text has more brackets than that, so these cases all carry enough brackets for
the walk to run: wide but shallow values, exactly the limit, one level more, and the deep
branch placed before or after a plain value.
"""

from __future__ import annotations

import json

import pytest

from esl_bridge.core import peer_json
from esl_bridge.core.peer_json import MAX_DEPTH, PeerJsonError


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_wide_but_shallow_json_with_many_brackets_is_read() -> None:
    text = json.dumps([[] for _ in range(2 * MAX_DEPTH)] + [{"a": {}}])
    assert len(peer_json.loads(text)) == 2 * MAX_DEPTH + 1


def test_exactly_the_limit_is_read_with_other_brackets_beside_it() -> None:
    text = "[" + nested(MAX_DEPTH - 1) + "," + ",".join(["[]"] * MAX_DEPTH) + "]"
    assert peer_json.loads(text)[1:] == [[]] * MAX_DEPTH
    assert peer_json.loads(nested(MAX_DEPTH)) == peer_json.loads(nested(MAX_DEPTH))


@pytest.mark.parametrize("before", [True, False])
def test_one_level_more_is_refused_wherever_the_deep_branch_is(before: bool) -> None:
    deep = nested(MAX_DEPTH)  # inside the outer list: MAX_DEPTH + 1 levels
    text = f"[{deep},1]" if before else f"[1,{deep}]"
    with pytest.raises(PeerJsonError) as caught:
        peer_json.loads(text)
    assert str(caught.value) == f"nested deeper than {MAX_DEPTH} levels"


def test_a_smaller_limit_is_kept_exactly() -> None:
    assert peer_json.loads('{"a":[{"b":[]}]}', max_depth=4) == {"a": [{"b": []}]}
    with pytest.raises(PeerJsonError):
        peer_json.loads('{"a":[{"b":[[]]}]}', max_depth=4)
