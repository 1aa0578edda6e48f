"""The simulator keeps one list of the event names it fires (sim/channel.py, EVENT_NAMES)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from esl_bridge.sim import Simulator
from esl_bridge.sim.channel import CALLING, EVENT_NAMES, EVENTS_WITH_VARIABLES

SIM = Path(__file__).resolve().parent.parent / "esl_bridge" / "sim"
# fire(None, "NAME", ...) and fire_channel(ch, "NAME", ...) calls in the simulator's source.
_FIRED = re.compile(r"\bfire(?:_channel)?\(\s*[\w.]+,\s*\"([A-Z_]+)\"")


def test_every_fired_name_is_in_the_one_list() -> None:
    fired = {m for path in SIM.glob("*.py") for m in _FIRED.findall(path.read_text())}
    assert {"CHANNEL_CREATE", "CHANNEL_HANGUP_COMPLETE", "BACKGROUND_JOB", "DTMF"} <= fired
    assert fired <= EVENT_NAMES
    assert set(CALLING) >= EVENT_NAMES
    assert EVENTS_WITH_VARIABLES - {"CHANNEL_DATA"} <= EVENT_NAMES


def test_fire_refuses_a_name_not_in_the_list() -> None:
    async def fire_unknown() -> None:
        sim = Simulator()
        with pytest.raises(ValueError, match="CHANNEL_DESTROY"):
            sim.fire(None, "CHANNEL_DESTROY", [])
        assert sim.events == []

    asyncio.run(fire_unknown())
