"""Webhooks: call and presence events POSTed as signed JSON to the app's backend.

The controller's event hooks (the ones that feed the CUSTOM events for fs_cli,
gateway/ops_events.py) also hand each event to ``WebhookSender.emit``, on the asyncio loop.
``emit`` never blocks and never raises: it builds the JSON body and appends it to a bounded
queue per receiver (``[webhooks] url``, one or more). One task per receiver POSTs the events in
order, one at a time, so the events of a call arrive in the order they happened.

Each request: ``Content-Type: application/json``, ``X-Esl-Bridge-Event`` (the type),
``X-Esl-Bridge-Delivery`` (the event id, the same on every retry: a receiver that saw it
already answers 2xx and ignores it) and ``X-Esl-Bridge-Signature: t=<unix seconds>,v1=<hex>``,
the HMAC-SHA256 keyed with ``[webhooks] secret`` over ``<t>.<body>``; ``t`` is the time of
that attempt. The receiver recomputes it over the raw body and refuses a ``t`` outside its
replay window (``verify_signature``; README.rst, Integrate with your app).

Delivery: a 2xx answer delivers the event. A connection error, a timeout (``timeout``), a
408, 429 or 5xx answer is retried up to ``retries`` times, waiting ``backoff`` seconds, then
twice that, ... at most ``max_backoff``; after the last retry the event is dropped
(``retries_exhausted``). Any other answer (a 3xx, a 4xx) is dropped at once (``rejected``):
sending it again would not change the answer. While a receiver is down its queue fills; at
``queue_max`` the oldest event waiting is dropped for each new one (``queue_full``). Events
still waiting or in flight when the gateway stops are dropped (``stopped``) after a short
flush. Every drop is counted (``stats()``, ``/metrics``; ``error``: one this module failed to
send, a bug); drops are logged at most once per ``log_interval``.
Receiver URLs are never logged whole (they may carry credentials): a receiver is named by its
index in ``[webhooks] url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from esl_bridge.config import WebhookSettings
from esl_bridge.logs import bounded, get_logger

log = get_logger("gateway.webhooks")

# The controller's event names (gateway/ops_events.py) -> the webhook event types.
EVENT_TYPES: Mapping[str, str] = {
    "call_started": "call.started",
    "call_answered": "call.answered",
    "call_ended": "call.ended",
    "call_progress": "call.progress",
    "user_online": "user.online",
    "user_offline": "user.offline",
}
SIGNATURE_HEADER = "X-Esl-Bridge-Signature"
EVENT_HEADER = "X-Esl-Bridge-Event"
DELIVERY_HEADER = "X-Esl-Bridge-Delivery"
DEFAULT_TOLERANCE = 300.0  # seconds: the replay window README.rst suggests to receivers
DROP_REASONS = ("queue_full", "retries_exhausted", "rejected", "stopped", "error")
_RETRY_STATUSES = frozenset({408, 429})


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    mac = hmac.new(key, str(timestamp).encode("ascii") + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str | bytes,
    header: str,
    body: bytes,
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """What a receiver does: True when ``header`` signs ``body`` with ``secret`` and its
    timestamp is within ``tolerance`` seconds of ``now``."""
    fields: dict[str, str] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, value)
    stamp, given = fields.get("t", ""), fields.get("v1", "")
    if not stamp.isdigit() or not given:
        return False
    if abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(secret, int(stamp), body).partition(",v1=")[2]
    return hmac.compare_digest(expected, given)


@dataclass
class _Event:
    type: str
    id: str
    body: bytes


class _Receiver:
    """One ``[webhooks] url``: its queue and the task that delivers it."""

    def __init__(self, index: int, url: str, queue_max: int) -> None:
        self.index = index
        self.url = url
        self.queue: deque[_Event] = deque()
        self.queue_max = queue_max
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.busy = False


class WebhookSender:
    """The queues and delivery tasks; every method runs on the asyncio loop."""

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        common: Mapping[str, object] | None = None,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
        log_interval: float = 10.0,
    ) -> None:
        self.settings = settings
        self.common = dict(common or {})  # fields of every event's data (node, instance)
        self.wall_clock = wall_clock
        self._sleep = sleep
        self.log_interval = log_interval
        self._receivers = [
            _Receiver(i, url, settings.queue_max) for i, url in enumerate(settings.url)
        ]
        self._session: aiohttp.ClientSession | None = None
        self._seq = 0
        self.delivered: dict[str, int] = {}
        self.failed_attempts = 0
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._unlogged: dict[str, int] = {}
        self._last_drop_log: float | None = None

    @property
    def enabled(self) -> bool:
        return bool(self._receivers)

    # -- life

    async def start(self) -> None:
        if not self.enabled or self._session is not None:
            return
        # No cookies, no redirects followed (a 3xx is a rejection), our own timeout.
        self._session = aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
        )
        for receiver in self._receivers:
            receiver.task = asyncio.get_running_loop().create_task(
                self._deliver(receiver), name=f"webhooks-{receiver.index}"
            )
        log.info("webhooks.started", receivers=len(self._receivers))

    async def stop(self, flush_timeout: float = 2.0) -> None:
        """Give the queues up to ``flush_timeout`` seconds to empty, then stop; what is left
        is dropped as ``stopped``."""
        if self._session is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(flush_timeout):
                while any(r.queue or r.busy for r in self._receivers):
                    await asyncio.sleep(0.02)
        for receiver in self._receivers:
            if receiver.task is not None:
                receiver.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await receiver.task
                receiver.task = None
            while receiver.queue:
                receiver.queue.popleft()
                self._drop("stopped")
        session, self._session = self._session, None
        await session.close()
        self._log_drops(force=True)

    def stats(self) -> dict[str, Any]:
        return {
            "receivers": len(self._receivers),
            "delivered": dict(self.delivered),
            "failed_attempts": self.failed_attempts,
            "dropped": dict(self.dropped),
            "queued": sum(len(r.queue) for r in self._receivers),
        }

    # -- producing (never blocks, never raises)

    def emit(self, name: str, fields: Mapping[str, object]) -> bool:
        """Queue the event for every receiver; False when it is not a webhook event, when
        there is no receiver, or when it cannot be encoded."""
        kind = EVENT_TYPES.get(name)
        if kind is None or not self._receivers:
            return False
        self._seq += 1
        event_id = secrets.token_hex(12)
        data = {k: v for k, v in {**self.common, **fields}.items() if v is not None}
        try:
            body = json.dumps(
                {
                    "id": event_id,
                    "type": kind,
                    "created": round(self.wall_clock(), 3),
                    "seq": self._seq,
                    "data": data,
                },
                separators=(",", ":"),
                allow_nan=False,
            ).encode("utf-8")
        except (TypeError, ValueError) as exc:
            log.warning("webhooks.bad_event", kind=kind, error=bounded(str(exc)))
            return False
        for receiver in self._receivers:
            if len(receiver.queue) >= receiver.queue_max:
                receiver.queue.popleft()  # the oldest goes: the newest say more of now
                self._drop("queue_full")
            receiver.queue.append(_Event(kind, event_id, body))
            receiver.wake.set()
        return True

    # -- delivering

    async def _deliver(self, receiver: _Receiver) -> None:
        while True:
            if not receiver.queue:
                receiver.wake.clear()
                await receiver.wake.wait()
                continue
            event = receiver.queue.popleft()
            receiver.busy = True
            try:
                await self._send_with_retries(receiver, event)
            except asyncio.CancelledError:
                self._drop("stopped")  # in flight (or waiting to retry) when the gateway stopped
                raise
            except Exception as exc:  # a bug here must not end this receiver's deliveries
                log.error("webhooks.send_error", receiver=receiver.index, error=bounded(repr(exc)))
                self._drop("error")
            finally:
                receiver.busy = False

    async def _send_with_retries(self, receiver: _Receiver, event: _Event) -> None:
        settings = self.settings
        for attempt in range(settings.retries + 1):
            if attempt:
                delay = min(settings.max_backoff, settings.backoff * 2 ** (attempt - 1))
                await self._sleep(delay)
            outcome = await self._post(receiver, event)
            if outcome == "delivered":
                self.delivered[event.type] = self.delivered.get(event.type, 0) + 1
                return
            self.failed_attempts += 1
            if outcome == "rejected":
                self._drop("rejected")
                return
        self._drop("retries_exhausted")

    async def _post(self, receiver: _Receiver, event: _Event) -> str:
        """One attempt: "delivered", "retry" or "rejected"."""
        assert self._session is not None
        stamp = int(self.wall_clock())
        headers = {
            "Content-Type": "application/json",
            EVENT_HEADER: event.type,
            DELIVERY_HEADER: event.id,
            SIGNATURE_HEADER: sign(self.settings.secret, stamp, event.body),
        }
        try:
            async with self._session.post(
                receiver.url, data=event.body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            log.debug(
                "webhooks.attempt_failed",
                receiver=receiver.index,
                kind=event.type,
                error=bounded(f"{type(exc).__name__}: {exc}"),
            )
            return "retry"
        if 200 <= status < 300:
            return "delivered"
        log.debug(
            "webhooks.attempt_failed", receiver=receiver.index, kind=event.type, status=status
        )
        if status >= 500 or status in _RETRY_STATUSES:
            return "retry"
        return "rejected"

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        self._log_drops()

    def _log_drops(self, force: bool = False) -> None:
        if not self._unlogged:
            return
        now = time.monotonic()
        last = self._last_drop_log
        if not force and last is not None and now - last < self.log_interval:
            return
        self._last_drop_log = now
        counts, self._unlogged = self._unlogged, {}
        log.warning("webhooks.dropped", since_last=counts, total=dict(self.dropped))
