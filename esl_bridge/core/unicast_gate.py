"""When ESL ``unicast`` may be sent on a channel, without any I/O (docs/freeswitch.rst, fact 1).

On a real FreeSWITCH 1.10.12, ``unicast`` on a channel that has no read codec yet answers
``+OK`` and then crashes the whole switch (SIGSEGV in ``switch_ivr_activate_unicast``),
killing every call. A channel has a read codec once it is answered (``CHANNEL_ANSWER``), once
the ``pre_answer`` application has completed (its ``CHANNEL_EXECUTE_COMPLETE`` with
``Application: pre_answer``), or once early media is up (``CHANNEL_PROGRESS_MEDIA``).
Nothing else counts: not ``CHANNEL_EXECUTE`` of pre_answer (still running), not
``CHANNEL_PROGRESS`` (a 180 without SDP), not a reply ``+OK`` to a command.

This module is the rule's one home: the ESL layer (``OutboundSession``, which refuses an
early ``unicast``), the controller (which turns events into ``ChannelMediaReady``) and the
call core (which holds a ``UnicastGate`` per call and emits ``StartUnicast`` from it) all
ask it, and nothing else decides.

``UnicastGate`` is one channel's gate. The owner feeds it channel events as plain data
(``on_event(name, headers)``) and the wish to start media (``request_unicast()``); it answers
with actions. A request made too early is queued and fires, once, when the channel becomes
ready; a hangup drops it. Every transition is one row of ``TABLE``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "HANGUP_EVENTS",
    "MEDIA_READY_EVENTS",
    "TABLE",
    "GateAction",
    "GateInput",
    "GateState",
    "RefuseReason",
    "RefuseUnicast",
    "SendUnicast",
    "UnicastGate",
    "WaitForMedia",
    "classify_channel",
    "classify_event",
]


class GateState(Enum):
    IDLE = "idle"  # no read codec yet, nobody asked for unicast
    QUEUED = "queued"  # asked for, waiting for the channel to get media
    READY = "ready"  # channel has media, unicast not asked for yet
    SENT = "sent"  # unicast was emitted (exactly once)
    HUNG_UP = "hung_up"  # terminal


class GateInput(Enum):
    MEDIA_READY = "media_ready"
    HANGUP = "hangup"
    REQUEST = "request"


class RefuseReason(Enum):
    HUNG_UP = "hung up"
    ALREADY_SENT = "unicast already sent"


@dataclass(frozen=True)
class SendUnicast:
    """Send the ``unicast`` sendmsg now: the channel has a read codec."""


@dataclass(frozen=True)
class WaitForMedia:
    """Not yet: the request is queued and a ``SendUnicast`` comes when the channel is ready."""


@dataclass(frozen=True)
class RefuseUnicast:
    reason: RefuseReason


GateAction = SendUnicast | WaitForMedia | RefuseUnicast

_SEND = SendUnicast()
_WAIT = WaitForMedia()
_HUNG_UP = RefuseUnicast(RefuseReason.HUNG_UP)
_AGAIN = RefuseUnicast(RefuseReason.ALREADY_SENT)

#: state x input -> (next state, action or None). Every pair is present.
TABLE: dict[tuple[GateState, GateInput], tuple[GateState, GateAction | None]] = {
    (GateState.IDLE, GateInput.MEDIA_READY): (GateState.READY, None),
    (GateState.IDLE, GateInput.HANGUP): (GateState.HUNG_UP, None),
    (GateState.IDLE, GateInput.REQUEST): (GateState.QUEUED, _WAIT),
    (GateState.QUEUED, GateInput.MEDIA_READY): (GateState.SENT, _SEND),
    # The queued request dies with the channel; tell the owner so it stops waiting.
    (GateState.QUEUED, GateInput.HANGUP): (GateState.HUNG_UP, _HUNG_UP),
    (GateState.QUEUED, GateInput.REQUEST): (GateState.QUEUED, _WAIT),
    (GateState.READY, GateInput.MEDIA_READY): (GateState.READY, None),
    (GateState.READY, GateInput.HANGUP): (GateState.HUNG_UP, None),
    (GateState.READY, GateInput.REQUEST): (GateState.SENT, _SEND),
    (GateState.SENT, GateInput.MEDIA_READY): (GateState.SENT, None),
    (GateState.SENT, GateInput.HANGUP): (GateState.HUNG_UP, None),
    (GateState.SENT, GateInput.REQUEST): (GateState.SENT, _AGAIN),
    (GateState.HUNG_UP, GateInput.MEDIA_READY): (GateState.HUNG_UP, None),
    (GateState.HUNG_UP, GateInput.HANGUP): (GateState.HUNG_UP, None),
    (GateState.HUNG_UP, GateInput.REQUEST): (GateState.HUNG_UP, _HUNG_UP),
}

#: Events after which the channel has a read codec (fact 1).
MEDIA_READY_EVENTS = frozenset({"CHANNEL_ANSWER", "CHANNEL_PROGRESS_MEDIA"})
#: Events after which the channel is gone or going: unicast must never follow.
HANGUP_EVENTS = frozenset({"CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY"})


def classify_event(name: str, headers: Mapping[str, str] | None = None) -> GateInput | None:
    """Map one ESL event (``Event-Name`` and its headers) to a gate input, or None."""
    headers = headers or {}
    if name in MEDIA_READY_EVENTS:
        return GateInput.MEDIA_READY
    if name in HANGUP_EVENTS:
        return GateInput.HANGUP
    # Only the *completion* of pre_answer gives the channel its codec; its CHANNEL_EXECUTE
    # arrives while the 183 is still being set up.
    if name == "CHANNEL_EXECUTE_COMPLETE" and headers.get("Application") == "pre_answer":
        return GateInput.MEDIA_READY
    return None


def classify_channel(answer_state: str | None, has_read_codec: bool) -> GateInput | None:
    """A channel as a snapshot (the outbound socket's connect reply): MEDIA_READY when it is
    answered or in early media and its read codec is known."""
    if answer_state in ("answered", "early") and has_read_codec:
        return GateInput.MEDIA_READY
    return None


class UnicastGate:
    """One channel's unicast gate. ``uuid``: ignore events of other channels (inbound ESL
    delivers every channel's events on one connection)."""

    def __init__(self, uuid: str | None = None) -> None:
        self.uuid = uuid
        self.state = GateState.IDLE

    @property
    def sent(self) -> bool:
        return self.state is GateState.SENT

    @property
    def hung_up(self) -> bool:
        return self.state is GateState.HUNG_UP

    def _apply(self, gate_input: GateInput) -> list[GateAction]:
        self.state, action = TABLE[(self.state, gate_input)]
        return [] if action is None else [action]

    def on_event(self, name: str, headers: Mapping[str, str] | None = None) -> list[GateAction]:
        """Feed one channel event; returns ``[SendUnicast()]`` when a queued request fires."""
        if (
            self.uuid is not None
            and headers is not None
            and headers.get("Unique-ID", self.uuid) != self.uuid
        ):
            return []
        gate_input = classify_event(name, headers)
        if gate_input is None:
            return []
        return self._apply(gate_input)

    @property
    def media_ready(self) -> bool:
        """The channel has a read codec now (unicast sent or not) and is not hung up."""
        return self.state in (GateState.READY, GateState.SENT)

    def on_input(self, gate_input: GateInput) -> list[GateAction]:
        """Feed an input already classified (``classify_event``/``classify_channel``)."""
        return self._apply(gate_input)

    def hangup(self) -> list[GateAction]:
        """The channel is gone without an event (ESL socket closed, disconnect notice)."""
        return self._apply(GateInput.HANGUP)

    def request_unicast(self) -> GateAction:
        """The call logic wants media: send now, wait, or refuse."""
        (action,) = self._apply(GateInput.REQUEST)
        return action
