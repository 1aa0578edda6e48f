"""CUSTOM events for FreeSWITCH admins: what the gateway does, visible in ``fs_cli``.

The gateway fires ``sendevent CUSTOM`` with ``Event-Subclass: esl_bridge::<name>`` over its
inbound ESL connection (docs/freeswitch.rst, "sendevent" facts); an admin watches them with
``/event plain CUSTOM esl_bridge::call_ended`` (README.rst, Operating esl-bridge). The events:
``call_started``, ``call_answered``, ``call_ended``, ``call_progress`` (a click-to-call's
stage), ``user_online``, ``user_offline``,
``gateway_started``, ``gateway_stopping`` and ``media_problem`` (core/media_verdict.py).

Sending never holds up a call: ``emit`` only puts the event in a bounded queue (on the gevent
hub, where the ESL client lives) and one greenlet sends them, one at a time. Bounds:

* rate: a token bucket (``rate`` per second, bursts of ``burst``); an event over it is dropped
  (100 a second by default: a call makes three events, and ``[limits] max_call_rate`` is 20);
* queue: at most ``queue_max`` events wait; one more is dropped;
* size: at most ``MAX_FIELDS`` headers, each value cut to ``MAX_VALUE`` characters (ending in
  ``...``); there is never a body;
* while the ESL connection is down the events wait (within those bounds) and go out once it
  is back; one whose send fails, or still waiting when the gateway stops, is dropped.

The events share the inbound connection with the call commands (replies are matched in
order, so an event never delays a command's reply). A command that times out closes that
connection, so an event waits ``send_timeout`` (30 s), far longer than ``[esl]
command_timeout``: a switch that stops answering is found by a call command first, never
by an event.

Drops are counted by reason (``stats()``, shown in ``/metrics``) and logged at most once per
``log_interval`` seconds, with the counts since the last such line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.queue

from esl_bridge.core.callbook import CallRate
from esl_bridge.esl import commands as cmd
from esl_bridge.esl.control import EslError
from esl_bridge.logs import bounded, get_logger

log = get_logger("gateway.ops_events")

SUBCLASS_PREFIX = "esl_bridge::"
EVENT_NAMES = frozenset(
    {
        "call_started",
        "call_answered",
        "call_ended",
        "call_progress",
        "user_online",
        "user_offline",
        "gateway_started",
        "gateway_stopping",
        "media_problem",
    }
)
FIELD_PREFIX = "esl_bridge_"
MAX_FIELDS = 32
MAX_VALUE = 256
DROP_REASONS = ("rate", "queue_full", "send_failed", "stopped", "bad_event")


class EslClient(Protocol):
    """What the sender needs of the inbound client (``esl.control.InboundClient``)."""

    @property
    def connected(self) -> bool: ...

    def wait_connected(self, timeout: float) -> None: ...

    def command(self, data: bytes, timeout: float | None = None) -> Any: ...


def event_headers(name: str, fields: Mapping[str, object]) -> list[tuple[str, str]]:
    """The headers of one event: ``Event-Subclass`` first, then ``esl_bridge_<field>`` per
    field (None left out), values as text cut to ``MAX_VALUE``; at most ``MAX_FIELDS``."""
    if name not in EVENT_NAMES:
        raise ValueError(f"not an esl-bridge event: {name!r}")
    headers = [("Event-Subclass", SUBCLASS_PREFIX + name)]
    for key, value in fields.items():
        if value is None:
            continue
        if len(headers) > MAX_FIELDS:
            break
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, float):
            text = f"{value:.3f}".rstrip("0").rstrip(".")
        else:
            text = str(value)
        if len(text) > MAX_VALUE:
            text = text[: MAX_VALUE - 3] + "..."
        headers.append((FIELD_PREFIX + key, text))
    return headers


@dataclass
class _Pending:
    name: str
    frame: bytes


class OpsEventSender:
    """The bounded queue and the greenlet that sends; ``emit`` runs on the gevent hub."""

    def __init__(
        self,
        client: EslClient,
        *,
        common: Mapping[str, object] | None = None,
        rate: float = 100.0,
        burst: int = 200,
        queue_max: int = 1000,
        send_timeout: float = 30.0,
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if queue_max < 1:
            raise ValueError(f"queue_max must be at least 1, not {queue_max!r}")
        self.client = client
        self.common = dict(common or {})  # fields of every event (node, instance)
        self.bucket = CallRate(rate, burst)
        self.send_timeout = send_timeout
        self.log_interval = log_interval
        self.clock = clock
        self._queue: gevent.queue.Queue[_Pending] = gevent.queue.Queue(maxsize=queue_max)
        self._greenlet: gevent.Greenlet | None = None
        self.sent: dict[str, int] = {}
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._unlogged: dict[str, int] = {}
        self._last_drop_log: float | None = None
        self._sending = False
        self._holding: _Pending | None = None  # taken from the queue, not sent yet

    # -- life

    def start(self) -> None:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self, flush_timeout: float = 1.0) -> None:
        """Give the queue up to ``flush_timeout`` to empty (gateway_stopping goes out), then
        stop the greenlet; what is left is dropped."""
        greenlet, self._greenlet = self._greenlet, None
        if greenlet is None:
            return
        with gevent.Timeout(flush_timeout, False):
            gevent.sleep(0.05)  # events handed over from the asyncio thread just now
            while (self._sending or not self._queue.empty()) and self.client.connected:
                gevent.sleep(0.01)
        greenlet.kill(block=True, timeout=1.0)
        if self._holding is not None:  # it was waiting for the connection
            self._holding = None
            self._drop("stopped")
        while not self._queue.empty():
            self._queue.get_nowait()
            self._drop("stopped")
        self._log_drops(force=True)

    def stats(self) -> dict[str, Any]:
        return {"sent": dict(self.sent), "dropped": dict(self.dropped)}

    # -- producing (never blocks)

    def emit(self, name: str, fields: Mapping[str, object]) -> bool:
        """Queue one event; False when it was dropped (counted and, rate-limited, logged)."""
        try:
            frame = cmd.sendevent("CUSTOM", event_headers(name, {**self.common, **fields}))
        except ValueError as exc:
            log.warning("ops_events.bad_event", name=name, error=bounded(str(exc)))
            return self._drop("bad_event")
        if not self.bucket.take(self.clock()):
            return self._drop("rate")
        try:
            self._queue.put_nowait(_Pending(name, frame))
        except gevent.queue.Full:
            return self._drop("queue_full")
        return True

    # -- sending

    def _run(self) -> None:
        while True:
            pending = self._holding = self._queue.get()
            while not self.client.connected:
                try:
                    self.client.wait_connected(self.send_timeout)
                except EslError:
                    gevent.sleep(0.1)  # refused or timed out: the client keeps reconnecting
            self._sending = True
            try:
                reply = self.client.command(pending.frame, timeout=self.send_timeout)
            except EslError as exc:
                log.debug("ops_events.send_failed", name=pending.name, error=bounded(str(exc)))
                self._drop("send_failed")
                continue
            finally:
                self._sending = False
                self._holding = None
            if not getattr(reply, "ok", False):
                self._drop("send_failed")
                continue
            self.sent[pending.name] = self.sent.get(pending.name, 0) + 1

    def _drop(self, reason: str) -> bool:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        self._log_drops()
        return False

    def _log_drops(self, force: bool = False) -> None:
        if not self._unlogged:
            return
        now = self.clock()
        last = self._last_drop_log
        if not force and last is not None and now - last < self.log_interval:
            return
        self._last_drop_log = now
        counts, self._unlogged = self._unlogged, {}
        log.warning("ops_events.dropped", since_last=counts, total=dict(self.dropped))
