"""The simulator keeps one list of the event names it fires (sim/channel.py, EVENT_NAMES)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from esl_bridge.config import LogSettings
from esl_bridge.logs import configure_logging
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


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    settings = LogSettings(
        level=2, file="", max_file_size=1, backup_count=1, json=True, console="off"
    )
    configure_logging(settings, stream=stream)
    yield stream
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
        handler.close()


def test_sim_logs_dotted_events_with_fields(log_stream: io.StringIO) -> None:
    """The simulator logs through esl_bridge.logs: `sim.<event>` names, data as fields."""

    async def crash() -> None:
        Simulator().crash("unicast without a read codec")

    asyncio.run(crash())
    lines = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    crash_lines = [line for line in lines if line["event"] == "sim.crash"]
    assert len(crash_lines) == 1, lines
    assert crash_lines[0]["reason"] == "unicast without a read codec"
    assert crash_lines[0]["level"] == "error"
    assert crash_lines[0]["logger"].startswith("esl_bridge.sim")
