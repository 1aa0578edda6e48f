"""One-way audio, explained per call: a verdict per direction from the counters at every
hop the gateway sees. No I/O: fed with ``HopCounters`` snapshots and ``now``.

Two directions, named as in ``/metrics`` (gateway/ops_metrics.py):

``browser_to_switch`` (what the phone hears)::

    browser --RTP--> socket tap (rtp_from_browser) --> decoder, or the payload as it is on
    the G.711 fast path (frames_from_browser, level of the last one) --> unicast paced
    sender --> FreeSWITCH (frames_to_switch: audio frames, not the silence of empty ticks)

``switch_to_browser`` (what the web user hears)::

    FreeSWITCH --unicast--> datagrams_from_switch (filler_from_switch of them all-0xFF,
    level of the last other one) --> encoder --> RTP to the browser (packets_to_browser)
    --> the browser's RTCP reception reports on that stream (browser_reports, and the
    extended highest sequence number it says it received)

A verdict names the first hop along the direction's path that has been broken for
``window`` seconds (default ``WINDOW_S``); "broken" means a counter did not grow, or every
level sampled stayed below ``floor_dbov`` (default ``LEVEL_FLOOR_DBOV``, a 20 ms frame's
peak sample against full scale):

``browser_to_switch``
    ``browser_rtp_missing``: no RTP packet from the browser (ICE/DTLS up, or the peer
    connection never came up: the log line has its state); ``gateway_not_sending``:
    packets arrive but no audio frame came out of the decoder or went to the switch;
    ``browser_silent``: audio flows, but below the floor (a muted microphone sends
    digital silence); else ``ok``.
``switch_to_browser``
    ``switch_filler_only``: FreeSWITCH sent only its all-0xFF filler, or nothing (the phone
    sends no RTP: muted on hold, NAT on the SIP side, a codec it cannot decode);
    ``switch_silent``: real frames, but below the floor; ``gateway_not_sending``: no RTP
    packet went to the browser; ``browser_not_playing``: the browser's reception reports
    keep coming but the highest sequence number in them has not moved (our packets do
    not arrive); else ``ok``. A browser that sends no report about our stream at all
    cannot be judged on that hop, nor on a time we sent it nothing: its window starts
    again after any pause of ours (``SEND_PAUSE_S`` or more), since its reports tell
    of our packets only a report interval later.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BROWSER_NOT_PLAYING",
    "BROWSER_RTP_MISSING",
    "BROWSER_SILENT",
    "BROWSER_TO_SWITCH",
    "DIRECTIONS",
    "GATEWAY_NOT_SENDING",
    "LEVEL_FLOOR_DBOV",
    "OK",
    "SEND_PAUSE_S",
    "SWITCH_FILLER_ONLY",
    "SWITCH_SILENT",
    "SWITCH_TO_BROWSER",
    "VERDICTS",
    "WINDOW_S",
    "Change",
    "HopCounters",
    "OneWayJudge",
]

BROWSER_TO_SWITCH = "browser_to_switch"
SWITCH_TO_BROWSER = "switch_to_browser"
DIRECTIONS = (BROWSER_TO_SWITCH, SWITCH_TO_BROWSER)

OK = "ok"
BROWSER_RTP_MISSING = "browser_rtp_missing"
BROWSER_SILENT = "browser_silent"
SWITCH_FILLER_ONLY = "switch_filler_only"
SWITCH_SILENT = "switch_silent"
GATEWAY_NOT_SENDING = "gateway_not_sending"
BROWSER_NOT_PLAYING = "browser_not_playing"
#: Every verdict, per direction, in the order of the hops.
VERDICTS = {
    BROWSER_TO_SWITCH: (OK, BROWSER_RTP_MISSING, GATEWAY_NOT_SENDING, BROWSER_SILENT),
    SWITCH_TO_BROWSER: (
        OK,
        SWITCH_FILLER_ONLY,
        SWITCH_SILENT,
        GATEWAY_NOT_SENDING,
        BROWSER_NOT_PLAYING,
    ),
}

#: Seconds a hop must stay broken before its verdict is given.
WINDOW_S = 5.0
#: A frame whose peak is below this (dBov: 0 is full scale) is silence. A muted browser
#: track sends digital zeros (-127), a muted G.711 phone mu-law's zero (-127) or A-law's
#: smallest step (-72.2); the noise of a live microphone or line peaks above it.
LEVEL_FLOOR_DBOV = -70.0
#: Snapshots at least this far apart (five packets' time) with no packet sent to the
#: browser between them are a pause of ours: the browser's sequence number had no reason
#: to move. Closer snapshots can fall between two packets.
SEND_PAUSE_S = 0.1


@dataclass(frozen=True)
class HopCounters:
    """One snapshot of a call's media counters (all totals since the call's media began).
    A level is the peak of the last frame of that kind, in dBov (-127 for digital
    silence), None when there was none yet."""

    browser_connected: bool = False  # ICE and DTLS up: the judge starts only then
    rtp_from_browser: int = 0
    frames_from_browser: int = 0
    frames_to_switch: int = 0
    browser_level_dbov: float | None = None
    datagrams_from_switch: int = 0
    filler_from_switch: int = 0
    switch_level_dbov: float | None = None
    packets_to_browser: int = 0
    browser_reports: int = 0
    browser_highest_seq: int | None = None

    @property
    def audio_from_switch(self) -> int:
        return self.datagrams_from_switch - self.filler_from_switch


@dataclass(frozen=True)
class Change:
    """A direction's verdict changed: ``seconds`` is how long the hop it names has been
    broken (0 for ``ok``)."""

    direction: str
    verdict: str
    seconds: float


# The hops whose "last grew at" is kept, by the counter that shows them alive.
_GROWTH = (
    "rtp_from_browser",
    "frames_from_browser",
    "frames_to_switch",
    "audio_from_switch",
    "packets_to_browser",
    "browser_reports",
)


class OneWayJudge:
    """The verdicts of one call, from the moment its media flows (``now`` of the first
    snapshot is the start: every hop gets ``window`` seconds to show itself alive)."""

    def __init__(
        self,
        now: float,
        window: float = WINDOW_S,
        floor_dbov: float = LEVEL_FLOOR_DBOV,
        *,
        switch_level: bool = True,
    ) -> None:
        """``switch_level`` False: the switch's level is not judged (no ``switch_silent``),
        for a conference, whose mix is silent whenever nobody speaks."""
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.floor_dbov = floor_dbov
        self.switch_level = switch_level
        self._last: HopCounters | None = None
        self._last_at = now
        self._since: dict[str, float] = dict.fromkeys(
            (*_GROWTH, "browser_loud", "switch_loud", "seq_moved"), now
        )
        self.snapshots = 0
        self.verdicts: dict[str, str] = dict.fromkeys(DIRECTIONS, OK)
        #: The first problem each direction had during the call (``ok`` if none).
        self.first_problem: dict[str, str] = dict.fromkeys(DIRECTIONS, OK)

    def update(self, now: float, counters: HopCounters) -> list[Change]:
        """Take a snapshot; the directions whose verdict changed."""
        self.snapshots += 1
        last = self._last
        grew: dict[str, bool] = {}
        for name in _GROWTH:
            value = getattr(counters, name)
            grew[name] = last is None or value != getattr(last, name)
            if last is not None and grew[name]:
                self._since[name] = now
        if last is not None:
            # A level counts only when a new frame of its kind came since the last snapshot
            # (the last frame is kept after its stream stopped).
            if grew["frames_from_browser"] and self._loud(counters.browser_level_dbov):
                self._since["browser_loud"] = now
            if grew["audio_from_switch"] and (
                not self.switch_level or self._loud(counters.switch_level_dbov)
            ):
                self._since["switch_loud"] = now
            if counters.browser_highest_seq != last.browser_highest_seq:
                self._since["seq_moved"] = now
            elif not grew["packets_to_browser"] and now - self._last_at >= SEND_PAUSE_S:
                self._since["seq_moved"] = now  # we paused: nothing for it to count
        self._last = counters
        self._last_at = now
        changes: list[Change] = []
        for direction, (verdict, since) in (
            (BROWSER_TO_SWITCH, self._browser_to_switch(now)),
            (SWITCH_TO_BROWSER, self._switch_to_browser(now)),
        ):
            if verdict == self.verdicts[direction]:
                continue
            self.verdicts[direction] = verdict
            if verdict != OK and self.first_problem[direction] == OK:
                self.first_problem[direction] = verdict
            seconds = 0.0 if verdict == OK else round(now - since, 3)
            changes.append(Change(direction, verdict, seconds))
        return changes

    def _loud(self, level: float | None) -> bool:
        return level is not None and level >= self.floor_dbov

    def _quiet(self, name: str, now: float) -> bool:
        return now - self._since[name] >= self.window

    def _browser_to_switch(self, now: float) -> tuple[str, float]:
        since = self._since
        if self._quiet("rtp_from_browser", now):
            return BROWSER_RTP_MISSING, since["rtp_from_browser"]
        for name in ("frames_from_browser", "frames_to_switch"):
            if self._quiet(name, now):
                return GATEWAY_NOT_SENDING, since[name]
        if self._quiet("browser_loud", now):
            return BROWSER_SILENT, since["browser_loud"]
        return OK, now

    def _switch_to_browser(self, now: float) -> tuple[str, float]:
        since = self._since
        if self._quiet("audio_from_switch", now):
            return SWITCH_FILLER_ONLY, since["audio_from_switch"]
        if self._quiet("switch_loud", now):
            return SWITCH_SILENT, since["switch_loud"]
        if self._quiet("packets_to_browser", now):
            return GATEWAY_NOT_SENDING, since["packets_to_browser"]
        # Reports keep coming (one within the window) and none says a new packet arrived.
        if not self._quiet("browser_reports", now) and self._quiet("seq_moved", now):
            return BROWSER_NOT_PLAYING, since["seq_moved"]
        return OK, now
