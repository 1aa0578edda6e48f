"""The media_problem rule (the gateway's CUSTOM event, gateway/ops_events.py): no audio in
one direction of a connected call. No I/O: fed with counters and ``now``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Direction:
    count: int = 0
    since: float = 0.0  # when the count last grew (or the watch started)
    reported: bool = False


class MediaWatch:
    """The media_problem rule for one call, fed with its audio counters and ``now``.

    Two directions: ``from_switch`` (unicast datagrams from FreeSWITCH that are not its
    all-0xFF filler, i.e. the SIP side's audio) and ``from_browser`` (RTP packets from the
    browser). The watch starts when the call is connected and both media paths are up.
    A direction whose counter has not grown for ``silence`` seconds is reported once; it
    is reported again only after its audio came back and stopped again.
    """

    def __init__(self, now: float, silence: float = 5.0) -> None:
        self.silence = silence
        self._dirs = {"from_switch": _Direction(since=now), "from_browser": _Direction(since=now)}

    def update(self, now: float, from_switch: int, from_browser: int) -> list[tuple[str, float]]:
        """(direction, seconds without audio) for each direction that just went silent."""
        found: list[tuple[str, float]] = []
        for name, count in (("from_switch", from_switch), ("from_browser", from_browser)):
            d = self._dirs[name]
            if count != d.count:
                d.count, d.since, d.reported = count, now, False
                continue
            quiet = now - d.since
            if quiet >= self.silence and not d.reported:
                d.reported = True
                found.append((name, quiet))
        return found
