"""Call-invitation state machines of the RTM contract, without any I/O (README.rst,
Signalling protocol).

``LocalInvitation`` is the caller's side, ``RemoteInvitation`` the callee's. Each takes
events together with the current time ``now`` (seconds on any monotonic clock) and returns
actions; it never sleeps, never touches a socket and never reads a clock. Every transition
lives in one table (``local_table()`` / ``remote_table()``): state x event -> either a
``Transition`` (new state, failure reason, operations) or a ``Reject`` (an API error,
nothing changes, nothing is sent). Timers are deadlines kept inside the machine: the owner
asks ``next_deadline()`` and calls ``poll(now)`` when it is due, so a fake clock drives
them exactly in tests.

The owner (the signalling hub) wires the two sides together: a ``NotifyPeer`` action of
one machine is an event for the other one.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Generic, TypeVar

__all__ = [
    "CHANNEL_ID_MAX_BYTES",
    "CONTENT_MAX_BYTES",
    "RESPONSE_MAX_BYTES",
    "ApiError",
    "CancelTimer",
    "Deliver",
    "InvitationTimeouts",
    "LocalEvent",
    "LocalFailureReason",
    "LocalInvitation",
    "LocalState",
    "NotifyPeer",
    "Op",
    "Outcome",
    "Reject",
    "RemoteEvent",
    "RemoteFailureReason",
    "RemoteInvitation",
    "RemoteState",
    "StartTimer",
    "StateChanged",
    "Timer",
    "Transition",
    "local_table",
    "remote_table",
    "utf8_len",
]

CONTENT_MAX_BYTES = 8 * 1024
RESPONSE_MAX_BYTES = 8 * 1024
CHANNEL_ID_MAX_BYTES = 64


class LocalState(IntEnum):
    """LocalInvitationState: numbers are part of the wire contract."""

    IDLE = 0
    SENT_TO_REMOTE = 1
    RECEIVED_BY_REMOTE = 2
    ACCEPTED_BY_REMOTE = 3
    REFUSED_BY_REMOTE = 4
    CANCELED = 5
    FAILURE = 6


class RemoteState(IntEnum):
    """RemoteInvitationState: numbers are part of the wire contract."""

    IDLE = 0
    INVITATION_RECEIVED = 1
    ACCEPT_SENT_TO_LOCAL = 2
    REFUSED = 3
    ACCEPTED = 4
    CANCELED = 5
    FAILURE = 6


class LocalFailureReason(IntEnum):
    PEER_OFFLINE = 1
    PEER_NO_RESPONSE = 2
    INVITATION_EXPIRE = 3
    NOT_LOGGEDIN = 4


class RemoteFailureReason(IntEnum):
    PEER_OFFLINE = 1
    ACCEPT_FAILURE = 2
    INVITATION_EXPIRE = 3


class ApiError(IntEnum):
    INVALID_ARGUMENT = 1
    NOT_STARTED = 2
    ALREADY_END = 3
    ALREADY_ACCEPT = 4
    ALREADY_SENT = 5


class LocalEvent(Enum):
    """Everything that can happen to a caller's invitation."""

    SEND = "send"  # API: the caller sends it
    CANCEL = "cancel"  # API: the caller cancels it
    PEER_ONLINE = "peer_online"  # the callee logged in (or was online at send)
    PEER_OFFLINE = "peer_offline"  # the callee went offline
    REMOTE_RECEIVED = "remote_received"  # the callee acknowledged the invitation
    REMOTE_ACCEPTED = "remote_accepted"  # the callee accepted (carries the response)
    REMOTE_REFUSED = "remote_refused"  # the callee refused (carries the response)
    LOGGED_OUT = "logged_out"  # the caller's own session ended
    NO_ACK_PEER_ONLINE = "no_ack_peer_online"  # ack timer fired, callee online
    NO_ACK_PEER_OFFLINE = "no_ack_peer_offline"  # ack timer fired, callee offline
    ANSWER_TIMEOUT = "answer_timeout"  # answer timer fired after the acknowledgement


class RemoteEvent(Enum):
    """Everything that can happen to a callee's invitation."""

    RECEIVE = "receive"  # the callee acknowledged receipt
    ACCEPT = "accept"  # API: the callee accepts (with a response)
    REFUSE = "refuse"  # API: the callee refuses (with a response)
    CANCELED = "canceled"  # the caller canceled
    CALLER_OFFLINE = "caller_offline"  # the caller's session ended
    EXPIRED = "expired"  # the caller's side gave up (no ack / no answer / callee gone)
    ACCEPT_CONFIRMED = "accept_confirmed"  # the caller's side took the acceptance
    ACCEPT_FAILED = "accept_failed"  # the caller's side could not take it


class Timer(Enum):
    ACK = "ack"  # send -> acknowledgement (PEER_OFFLINE / PEER_NO_RESPONSE)
    ANSWER = "answer"  # acknowledgement -> accept/refuse (INVITATION_EXPIRE)


class Op(Enum):
    """Symbolic operations listed in the tables; the machine turns them into actions."""

    DELIVER = "deliver"
    START_ACK_TIMER = "start_ack_timer"
    RESTART_ACK_TIMER = "restart_ack_timer"  # callee presence changed: new offline/no-ack limit
    START_ANSWER_TIMER = "start_answer_timer"
    CANCEL_ACK_TIMER = "cancel_ack_timer"
    CANCEL_TIMERS = "cancel_timers"


@dataclass(frozen=True)
class Notify:
    """Table operation: tell the other side's machine ``event``."""

    event: LocalEvent | RemoteEvent


@dataclass(frozen=True)
class Transition:
    """A table entry that is carried out. ``target`` None means: the state stays."""

    target: LocalState | RemoteState | None
    reason: int | None = None
    ops: tuple[Op | Notify, ...] = ()


@dataclass(frozen=True)
class Reject:
    """A table entry that refuses an API call: nothing changes, nothing is sent."""

    error: ApiError


IGNORE = Transition(None)

# ---- actions returned to the owner -------------------------------------------------


@dataclass(frozen=True)
class Deliver:
    """Caller side: hand the invitation to the callee (now, or when it comes online)."""


@dataclass(frozen=True)
class NotifyPeer:
    """Feed ``event`` (with ``response`` for accept/refuse) to the other side's machine."""

    event: LocalEvent | RemoteEvent
    response: str | None = None


@dataclass(frozen=True)
class StartTimer:
    timer: Timer
    deadline: float


@dataclass(frozen=True)
class CancelTimer:
    timer: Timer


@dataclass(frozen=True)
class StateChanged:
    """Emit to the application: the invitation moved from ``old`` to ``new``."""

    old: int
    new: int
    reason: int | None = None
    response: str | None = None


Action = Deliver | NotifyPeer | StartTimer | CancelTimer | StateChanged


@dataclass
class Outcome:
    """Result of one event: actions to carry out, or an API error (and no actions)."""

    actions: list[Action] = field(default_factory=list)
    error: ApiError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class InvitationTimeouts:
    """Failure timers in seconds (README.rst: 30 / 30 / 60; tests shorten them)."""

    peer_offline: float = 30.0  # callee offline that long after sending -> PEER_OFFLINE
    no_response: float = 30.0  # callee online, no ack that long -> PEER_NO_RESPONSE
    answer: float = 60.0  # acknowledged, no accept/refuse that long -> INVITATION_EXPIRE


def utf8_len(text: str) -> int:
    # surrogatepass: a lone surrogate from a JS string still has a defined size
    return len(text.encode("utf-8", "surrogatepass"))


# ---- the tables --------------------------------------------------------------------

L = LocalState
LE = LocalEvent
LR = LocalFailureReason
R = RemoteState
RE = RemoteEvent
RR = RemoteFailureReason

_L_PENDING = (L.SENT_TO_REMOTE, L.RECEIVED_BY_REMOTE)
_L_ENDED = (L.REFUSED_BY_REMOTE, L.CANCELED, L.FAILURE)


def _local_table() -> dict[tuple[LocalState, LocalEvent], Transition | Reject]:
    t: dict[tuple[LocalState, LocalEvent], Transition | Reject] = {}
    for s in L:
        for e in LE:
            t[(s, e)] = IGNORE  # late notifications after the end are harmless
    # API calls: every state answers, with a transition or an error.
    t[(L.IDLE, LE.SEND)] = Transition(L.SENT_TO_REMOTE, ops=(Op.START_ACK_TIMER, Op.DELIVER))
    t[(L.IDLE, LE.CANCEL)] = Reject(ApiError.NOT_STARTED)
    for s in _L_PENDING:
        t[(s, LE.SEND)] = Reject(ApiError.ALREADY_SENT)
        t[(s, LE.CANCEL)] = Transition(L.CANCELED, ops=(Op.CANCEL_TIMERS, Notify(RE.CANCELED)))
    t[(L.ACCEPTED_BY_REMOTE, LE.SEND)] = Reject(ApiError.ALREADY_ACCEPT)
    t[(L.ACCEPTED_BY_REMOTE, LE.CANCEL)] = Reject(ApiError.ALREADY_ACCEPT)
    for s in _L_ENDED:
        t[(s, LE.SEND)] = Reject(ApiError.ALREADY_END)
        t[(s, LE.CANCEL)] = Reject(ApiError.ALREADY_END)
    # Waiting for the acknowledgement.
    t[(L.SENT_TO_REMOTE, LE.PEER_ONLINE)] = Transition(None, ops=(Op.RESTART_ACK_TIMER, Op.DELIVER))
    t[(L.SENT_TO_REMOTE, LE.PEER_OFFLINE)] = Transition(None, ops=(Op.RESTART_ACK_TIMER,))
    t[(L.SENT_TO_REMOTE, LE.REMOTE_RECEIVED)] = Transition(
        L.RECEIVED_BY_REMOTE, ops=(Op.CANCEL_ACK_TIMER, Op.START_ANSWER_TIMER)
    )
    t[(L.SENT_TO_REMOTE, LE.NO_ACK_PEER_ONLINE)] = Transition(
        L.FAILURE, LR.PEER_NO_RESPONSE, (Op.CANCEL_TIMERS, Notify(RE.EXPIRED))
    )
    t[(L.SENT_TO_REMOTE, LE.NO_ACK_PEER_OFFLINE)] = Transition(
        L.FAILURE, LR.PEER_OFFLINE, (Op.CANCEL_TIMERS, Notify(RE.EXPIRED))
    )
    # Acknowledged: waiting for the answer.
    t[(L.RECEIVED_BY_REMOTE, LE.PEER_OFFLINE)] = Transition(
        L.FAILURE, LR.PEER_OFFLINE, (Op.CANCEL_TIMERS, Notify(RE.EXPIRED))
    )
    t[(L.RECEIVED_BY_REMOTE, LE.ANSWER_TIMEOUT)] = Transition(
        L.FAILURE, LR.INVITATION_EXPIRE, (Op.CANCEL_TIMERS, Notify(RE.EXPIRED))
    )
    for s in _L_PENDING:
        # An answer without a prior ack is an implicit ack (e.g. an immediate busy refusal).
        t[(s, LE.REMOTE_ACCEPTED)] = Transition(
            L.ACCEPTED_BY_REMOTE, ops=(Op.CANCEL_TIMERS, Notify(RE.ACCEPT_CONFIRMED))
        )
        t[(s, LE.REMOTE_REFUSED)] = Transition(L.REFUSED_BY_REMOTE, ops=(Op.CANCEL_TIMERS,))
        t[(s, LE.LOGGED_OUT)] = Transition(
            L.FAILURE, LR.NOT_LOGGEDIN, (Op.CANCEL_TIMERS, Notify(RE.CALLER_OFFLINE))
        )
    # An acceptance that arrives after the end cannot be taken: the callee must know.
    for s in (L.IDLE, *_L_ENDED):
        t[(s, LE.REMOTE_ACCEPTED)] = Transition(None, ops=(Notify(RE.ACCEPT_FAILED),))
    return t


_R_OPEN = (R.IDLE, R.INVITATION_RECEIVED)
_R_ACCEPTING = (R.ACCEPT_SENT_TO_LOCAL, R.ACCEPTED)
_R_ENDED = (R.REFUSED, R.CANCELED, R.FAILURE)


def _remote_table() -> dict[tuple[RemoteState, RemoteEvent], Transition | Reject]:
    t: dict[tuple[RemoteState, RemoteEvent], Transition | Reject] = {}
    for s in R:
        for e in RE:
            t[(s, e)] = IGNORE
    # IDLE means: handed to the callee, not yet acknowledged.
    t[(R.IDLE, RE.RECEIVE)] = Transition(R.INVITATION_RECEIVED, ops=(Notify(LE.REMOTE_RECEIVED),))
    for s in _R_OPEN:
        t[(s, RE.ACCEPT)] = Transition(R.ACCEPT_SENT_TO_LOCAL, ops=(Notify(LE.REMOTE_ACCEPTED),))
        t[(s, RE.REFUSE)] = Transition(R.REFUSED, ops=(Notify(LE.REMOTE_REFUSED),))
        t[(s, RE.CANCELED)] = Transition(R.CANCELED)
        t[(s, RE.CALLER_OFFLINE)] = Transition(R.FAILURE, RR.PEER_OFFLINE)
        t[(s, RE.EXPIRED)] = Transition(R.FAILURE, RR.INVITATION_EXPIRE)
    for s in _R_ACCEPTING:
        t[(s, RE.ACCEPT)] = Reject(ApiError.ALREADY_ACCEPT)
        t[(s, RE.REFUSE)] = Reject(ApiError.ALREADY_ACCEPT)
    for s in _R_ENDED:
        t[(s, RE.ACCEPT)] = Reject(ApiError.ALREADY_END)
        t[(s, RE.REFUSE)] = Reject(ApiError.ALREADY_END)
    # The acceptance is on its way to the caller.
    t[(R.ACCEPT_SENT_TO_LOCAL, RE.ACCEPT_CONFIRMED)] = Transition(R.ACCEPTED)
    t[(R.ACCEPT_SENT_TO_LOCAL, RE.ACCEPT_FAILED)] = Transition(R.FAILURE, RR.ACCEPT_FAILURE)
    t[(R.ACCEPT_SENT_TO_LOCAL, RE.CALLER_OFFLINE)] = Transition(R.FAILURE, RR.ACCEPT_FAILURE)
    t[(R.ACCEPT_SENT_TO_LOCAL, RE.EXPIRED)] = Transition(R.FAILURE, RR.ACCEPT_FAILURE)
    t[(R.ACCEPT_SENT_TO_LOCAL, RE.CANCELED)] = Transition(R.FAILURE, RR.ACCEPT_FAILURE)
    return t


# Built on first use, not at import: the same dict from then on (one cached call), and
# mutation testing sees each builder run under the mutant (docs/mutation.rst).
@functools.cache
def local_table() -> Mapping[tuple[LocalState, LocalEvent], Transition | Reject]:
    return _local_table()


@functools.cache
def remote_table() -> Mapping[tuple[RemoteState, RemoteEvent], Transition | Reject]:
    return _remote_table()


S = TypeVar("S", LocalState, RemoteState)
E = TypeVar("E", LocalEvent, RemoteEvent)


class _Machine(ABC, Generic[S, E]):
    _table: Mapping[tuple[S, E], Transition | Reject]
    _terminal: frozenset[S]

    def __init__(self, initial: S, timeouts: InvitationTimeouts) -> None:
        self.state: S = initial
        self.reason: int | None = None
        self.response: str | None = None
        self.timeouts = timeouts
        self._timers: dict[Timer, float] = {}

    @property
    def ended(self) -> bool:
        return self.state in self._terminal

    def next_deadline(self) -> float | None:
        """The earliest timer deadline, or None when no timer runs."""
        return min(self._timers.values(), default=None)

    def poll(self, now: float) -> list[Action]:
        """Fire every timer due at ``now`` (in deadline order) and return the actions."""
        actions: list[Action] = []
        while self._timers:
            timer, deadline = min(self._timers.items(), key=lambda kv: kv[1])
            if deadline > now:
                break
            del self._timers[timer]
            actions.extend(self.handle(self._timer_event(timer), now).actions)
        return actions

    def handle(self, event: E, now: float, response: str | None = None) -> Outcome:
        """Apply one event from the table. ``response`` rides along accept/refuse."""
        entry = self._table[(self.state, event)]
        if isinstance(entry, Reject):
            return Outcome(error=entry.error)
        # The state change comes first: an owner that reports actions in order tells the
        # application about this state before any consequence the peer feeds back.
        actions: list[Action] = []
        target = entry.target
        if target is not None and target != self.state:
            old = self.state
            self.state = target  # type: ignore[assignment]  # tables only hold own states
            self.reason = entry.reason
            actions.append(StateChanged(int(old), int(target), entry.reason, self.response))
        for op in entry.ops:
            if isinstance(op, Notify):
                actions.append(NotifyPeer(op.event, response))
            else:
                actions.extend(self._run_op(op, now))
        return Outcome(actions)

    def _cancel(self, timer: Timer) -> list[Action]:
        if self._timers.pop(timer, None) is None:
            return []
        return [CancelTimer(timer)]

    def _start(self, timer: Timer, deadline: float) -> list[Action]:
        self._timers[timer] = deadline
        return [StartTimer(timer, deadline)]

    def _run_op(self, op: Op, now: float) -> list[Action]:
        if op is Op.CANCEL_TIMERS:
            out: list[Action] = []
            for timer in list(self._timers):
                out.extend(self._cancel(timer))
            return out
        raise ValueError(f"{type(self).__name__} cannot run {op}")

    @abstractmethod
    def _timer_event(self, timer: Timer) -> E:
        """The event a timer of this side turns into when it fires."""


class LocalInvitation(_Machine[LocalState, LocalEvent]):
    """The caller's invitation. Create, set ``content`` / ``channel_id``, then ``send``."""

    _terminal = frozenset({L.ACCEPTED_BY_REMOTE, L.REFUSED_BY_REMOTE, L.CANCELED, L.FAILURE})

    def __init__(
        self,
        callee_id: str,
        *,
        content: str = "",
        channel_id: str = "",
        peer_online: bool = False,
        timeouts: InvitationTimeouts | None = None,
    ) -> None:
        super().__init__(L.IDLE, timeouts or InvitationTimeouts())
        self._table = local_table()
        self.callee_id = callee_id
        self.content = content
        self.channel_id = channel_id
        self.peer_online = peer_online
        self.sent_at: float | None = None

    def get_state(self) -> LocalState:
        return self.state

    def send(self, now: float) -> Outcome:
        # Limits first: over a limit nothing is sent and the state stays IDLE.
        if self.state is L.IDLE and (
            utf8_len(self.content) > CONTENT_MAX_BYTES
            or utf8_len(self.channel_id) > CHANNEL_ID_MAX_BYTES
        ):
            return Outcome(error=ApiError.INVALID_ARGUMENT)
        return self.handle(LE.SEND, now)

    def cancel(self, now: float) -> Outcome:
        return self.handle(LE.CANCEL, now)

    def handle(self, event: LocalEvent, now: float, response: str | None = None) -> Outcome:
        if event is LE.PEER_ONLINE:
            self.peer_online = True
        elif event is LE.PEER_OFFLINE:
            self.peer_online = False
        elif event is LE.SEND and self.state is L.IDLE:
            self.sent_at = now
        elif event in (LE.REMOTE_ACCEPTED, LE.REMOTE_REFUSED) and self.state in _L_PENDING:
            self.response = response
        return super().handle(event, now, response)

    def _ack_deadline(self) -> float:
        assert self.sent_at is not None
        limit = self.timeouts.no_response if self.peer_online else self.timeouts.peer_offline
        return self.sent_at + limit

    def _run_op(self, op: Op, now: float) -> list[Action]:
        if op is Op.DELIVER:
            return [Deliver()]
        if op in (Op.START_ACK_TIMER, Op.RESTART_ACK_TIMER):
            return self._start(Timer.ACK, self._ack_deadline())
        if op is Op.START_ANSWER_TIMER:
            return self._start(Timer.ANSWER, now + self.timeouts.answer)
        if op is Op.CANCEL_ACK_TIMER:
            return self._cancel(Timer.ACK)
        return super()._run_op(op, now)

    def _timer_event(self, timer: Timer) -> LocalEvent:
        if timer is Timer.ANSWER:
            return LE.ANSWER_TIMEOUT
        return LE.NO_ACK_PEER_ONLINE if self.peer_online else LE.NO_ACK_PEER_OFFLINE


class RemoteInvitation(_Machine[RemoteState, RemoteEvent]):
    """The callee's invitation: created when it is handed over, IDLE until acknowledged."""

    _terminal = frozenset({R.ACCEPTED, R.REFUSED, R.CANCELED, R.FAILURE})

    def __init__(
        self,
        caller_id: str,
        *,
        content: str = "",
        channel_id: str = "",
        timeouts: InvitationTimeouts | None = None,
    ) -> None:
        super().__init__(R.IDLE, timeouts or InvitationTimeouts())
        self._table = remote_table()
        self.caller_id = caller_id
        self.content = content
        self.channel_id = channel_id

    def get_state(self) -> RemoteState:
        return self.state

    def receive(self, now: float) -> Outcome:
        return self.handle(RE.RECEIVE, now)

    def accept(self, now: float, response: str = "") -> Outcome:
        return self._answer(RE.ACCEPT, now, response)

    def refuse(self, now: float, response: str = "") -> Outcome:
        return self._answer(RE.REFUSE, now, response)

    def _answer(self, event: RemoteEvent, now: float, response: str) -> Outcome:
        if utf8_len(response) > RESPONSE_MAX_BYTES:
            return Outcome(error=ApiError.INVALID_ARGUMENT)
        entry = self._table[(self.state, event)]
        if isinstance(entry, Transition):
            self.response = response  # only once the answer is actually given
        return self.handle(event, now, response)

    def _timer_event(self, timer: Timer) -> RemoteEvent:
        # The callee side runs no timer: the caller's side decides expiry and tells it.
        raise ValueError(f"remote invitation has no timer {timer}")
