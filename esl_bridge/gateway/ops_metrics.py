"""Figures operators alert on, kept by the call controller and read at scrape time.

``esl_bridge_call_setup_seconds{direction}`` (histogram): from the call's start (the web
user's invitation, or the phone's call reaching the gateway) until both sides answered,
the ``setup_seconds`` of ``call_answered``; it includes the time the callee let it ring.
``esl_bridge_calls_ended_by_cause_total{cause}``: the FreeSWITCH hangup cause of each
ended call. ``esl_bridge_media_packets_total{direction,kind}``: summed over calls whose
media leg has closed; ``direction`` is ``browser_to_switch`` or ``switch_to_browser``,
``kind`` ``lost``, ``late`` (arrived too late to be played) or ``underrun`` (a 20 ms tick
with nothing to send); ``lost`` only for ``browser_to_switch`` (RTP sequence numbers).
``esl_bridge_esl_reconnects_total``: the inbound ESL connection came up again after being
down (the first connect is not counted).
``esl_bridge_media_verdicts_total{direction,verdict}``: per ended call whose media flowed,
one per direction: the first one-way audio problem it had (core/media_verdict.py), or
``ok``.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from esl_bridge.core.media_verdict import VERDICTS

DIRECTIONS = ("rtc2sip", "sip2rtc")
MEDIA_DIRECTIONS = ("browser_to_switch", "switch_to_browser")
MEDIA_KINDS = ("lost", "late", "underrun")
# Seconds; a call that rings is answered in seconds to tens of seconds.
SETUP_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class OpsMetrics:
    """Counters of the controller (asyncio thread), read by the scrape (another task of
    the same loop, or another thread: a lock keeps a read whole)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._setup = {d: [0] * (len(SETUP_BUCKETS) + 1) for d in DIRECTIONS}
        self._setup_sum = dict.fromkeys(DIRECTIONS, 0.0)
        self._causes: dict[str, int] = {}
        # FreeSWITCH's unicast datagrams carry no sequence number: no "lost" that way
        # (a gap shows as underruns).
        self._media = {
            (d, k): 0
            for d in MEDIA_DIRECTIONS
            for k in MEDIA_KINDS
            if (d, k) != ("switch_to_browser", "lost")
        }
        self._esl_up_before = False
        self._esl_up = False
        self.esl_reconnects = 0
        self._verdicts = {(d, v): 0 for d in VERDICTS for v in VERDICTS[d]}

    def call_answered(self, direction: str, seconds: float) -> None:
        if direction not in self._setup:
            return
        with self._lock:
            self._setup[direction][bisect.bisect_left(SETUP_BUCKETS, seconds)] += 1
            self._setup_sum[direction] += seconds

    def call_ended(self, cause: str) -> None:
        key = cause or "NONE"
        with self._lock:
            self._causes[key] = self._causes.get(key, 0) + 1

    def media(self, stats: Any) -> None:
        """Add a closed leg's figures (media/leg.py LegStats)."""
        receive = stats.receive or {}
        unicast = stats.unicast
        with self._lock:
            self._media["browser_to_switch", "lost"] += int(receive.get("lost", 0))
            self._media["browser_to_switch", "late"] += int(receive.get("late", 0))
            if unicast is not None:
                self._media["browser_to_switch", "underrun"] += unicast.tx_underruns
                self._media["switch_to_browser", "late"] += unicast.rx_late_drops
                self._media["switch_to_browser", "underrun"] += unicast.rx_underruns

    def media_verdict(self, direction: str, verdict: str) -> None:
        """One ended call's verdict of one direction."""
        key = (direction, verdict)
        if key not in self._verdicts:
            return
        with self._lock:
            self._verdicts[key] += 1

    def esl_state(self, state: str) -> None:
        up = state == "connected"
        with self._lock:
            if up and not self._esl_up and self._esl_up_before:
                self.esl_reconnects += 1
            self._esl_up = up
            self._esl_up_before = self._esl_up_before or up

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "setup": {d: (list(b), self._setup_sum[d]) for d, b in self._setup.items()},
                "causes": dict(self._causes),
                "media": dict(self._media),
                "esl_reconnects": self.esl_reconnects,
                "verdicts": dict(self._verdicts),
            }


class OpsMetricsCollector(Collector):
    def __init__(self, metrics: OpsMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        snap = self._metrics.snapshot()
        setup = HistogramMetricFamily(
            "esl_bridge_call_setup_seconds",
            "seconds from a call's start until both sides answered, by direction",
            labels=["direction"],
        )
        for direction, (counts, total) in snap["setup"].items():
            buckets: list[tuple[str, float]] = []
            running = 0
            for bound, count in zip((*SETUP_BUCKETS, float("inf")), counts, strict=True):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
            setup.add_metric([direction], buckets, total)
        yield setup
        causes = CounterMetricFamily(
            "esl_bridge_calls_ended_by_cause",
            "calls ended, by FreeSWITCH hangup cause",
            labels=["cause"],
        )
        for cause, count in sorted(snap["causes"].items()):
            causes.add_metric([cause], count)
        yield causes
        media = CounterMetricFamily(
            "esl_bridge_media_packets",
            "media packets lost, late or underrun (ticks with nothing to send) of ended "
            "calls, by direction",
            labels=["direction", "kind"],
        )
        for (direction, kind), count in sorted(snap["media"].items()):
            media.add_metric([direction, kind], count)
        yield media
        verdicts = CounterMetricFamily(
            "esl_bridge_media_verdicts",
            "ended calls by one-way audio verdict (the first problem, or ok) per direction",
            labels=["direction", "verdict"],
        )
        for (direction, verdict), count in sorted(snap["verdicts"].items()):
            verdicts.add_metric([direction, verdict], count)
        yield verdicts
        yield CounterMetricFamily(
            "esl_bridge_esl_reconnects",
            "times the inbound ESL connection came up again after being down",
            value=snap["esl_reconnects"],
        )
