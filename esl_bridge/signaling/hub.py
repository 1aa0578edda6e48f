"""The signalling hub: sessions, presence, peer messages and invitation routing.

The hub is synchronous and knows no event loop: an adapter (``server.py`` for WebSockets,
``ParticipantHandle`` for the gateway itself) feeds it frames or calls together with the
current time, and the hub answers through ``Conn.send`` / ``Conn.close`` or participant
callbacks. Timers are deadlines: the owner sleeps until ``next_deadline()`` and calls
``poll(now)``. Every bad input ends as an error reply, never as an exception.

Sessions are keyed by (appid, uid); nothing ever crosses appids. A session outlives a
dropped socket for ``grace_period`` seconds: frames meant for it are queued and a login
with its session id resumes it. In a cluster that login may reach another process: it
asks the holder (``resume``), which keeps the session and serves the new socket through
the bus (``_RemoteConn`` there; ``relay_to`` on the socket's side; README.rst, Scaling out).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from esl_bridge.core import ids
from esl_bridge.core.invitations import (
    Action,
    ApiError,
    Deliver,
    LocalEvent,
    LocalFailureReason,
    LocalInvitation,
    LocalState,
    NotifyPeer,
    Outcome,
    Reject,
    RemoteEvent,
    RemoteFailureReason,
    RemoteInvitation,
    RemoteState,
    StateChanged,
    local_table,
    remote_table,
)
from esl_bridge.logs import get_logger
from esl_bridge.signaling import protocol as p
from esl_bridge.signaling.auth import TokenError, verify_token
from esl_bridge.signaling.settings import SignalingSettings

log = get_logger("signaling")

Key = tuple[str, str]  # (appid, uid)
Message = dict[str, Any]

_ENDED_MEMORY = 64  # ended invitation ids remembered per session, for exact API errors
# What a browser hears from a gateway uid whose call died with its process (peer
# message EndCall, esl_bridge/core/peer_messages.py, as the gateway sends it).
_GATEWAY_GONE = '{"Cmd":"EndCall"}'


class Conn(Protocol):
    """One client connection as the hub sees it. Both calls must not block."""

    def send(self, message: Message) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class ClusterPort(Protocol):
    """The other gateway processes, as the hub sees them (esl_bridge/cluster/node.py).
    Every call returns at once: lookups read memory, the rest is queued."""

    member: str  # this process's member id

    def where(self, uid: str) -> str | None:
        """The member holding ``uid``'s web session elsewhere, or None."""
        ...

    def session_started(self, uid: str, stamp: float) -> None: ...

    def session_ended(self, uid: str, stamp: float, *, broadcast: bool = True) -> None: ...

    def send(self, member: str, message: Message) -> None: ...


class Participant(Protocol):
    """An in-process member of the hub (the gateway). Receives the server messages of the
    wire protocol for each uid it serves: ``invitation``, ``remote_state``,
    ``local_state``, ``message``, ``peer_status``. Called after the hub finished the
    operation, so it may call the hub again from inside the callback."""

    def on_event(self, uid: str, message: Message) -> None: ...


@dataclass(eq=False)
class _ConnState:
    cid: int
    conn: Conn
    tokens: float
    last: float
    session: _Session | None = None
    # In a cluster, a resume whose session is on another process: while that process is
    # asked (``resume``), the login and any frames after it wait here; once it said yes,
    # ``relay_to`` names it and every frame of this connection goes there.
    asking: tuple[str, p.Login, p.MsgId] | None = None
    held: list[str] = field(default_factory=list)
    relay_to: str | None = None
    resume_refused: bool = False


class _RemoteConn:
    """A client's WebSocket held by another process (``member``, its connection ``cid``)
    whose session is here: a reconnect that the kernel (``run --workers N``) or a load
    balancer gave to another process than the one holding the session. What the hub
    sends it crosses the bus and that process writes it to the socket."""

    def __init__(self, hub: Hub, member: str, cid: int) -> None:
        self.hub, self.member, self.cid = hub, member, cid

    def send(self, message: Message) -> None:
        self.hub._to_member(self.member, "conn_out", cid=self.cid, m=message)

    def close(self, code: int, reason: str) -> None:
        self.hub._relayed.pop((self.member, self.cid), None)
        self.hub._to_member(self.member, "conn_close", cid=self.cid, code=code, reason=reason)


@dataclass(eq=False)
class _Session:
    key: Key
    sid: str
    participant: Participant | None = None
    conn: _ConnState | None = None
    present: bool = True  # participants may be served but shown offline
    grace_deadline: float | None = None
    detached: list[Message] = field(default_factory=list)
    subscriptions: set[str] = field(default_factory=set)
    outgoing: dict[str, _Invitation] = field(default_factory=dict)  # by caller's ref
    incoming: dict[str, _Invitation | _Mirror] = field(default_factory=dict)  # by inv id
    stamp: float = 0.0  # wall-clock login time: orders two logins of a uid in a cluster
    # In a cluster: gateway uids (served by every process) whose messages from this
    # session go to the process that invited it from that uid (the one with the call).
    routes: dict[str, str] = field(default_factory=dict)
    ended_refs: OrderedDict[str, LocalState] = field(default_factory=OrderedDict)
    ended_invs: OrderedDict[str, RemoteState] = field(default_factory=OrderedDict)
    ended: bool = False

    @property
    def appid(self) -> str:
        return self.key[0]

    @property
    def uid(self) -> str:
        return self.key[1]


@dataclass(eq=False)
class _Invitation:
    id: str
    appid: str
    caller: _Session
    callee: str
    ref: str
    local: LocalInvitation
    remote: RemoteInvitation | None = None  # exists once handed to a callee session
    callee_session: _Session | None = None
    remote_member: str | None = None  # in a cluster: the process the callee is on


@dataclass(eq=False)
class _Mirror:
    """In a cluster, the callee's side of an invitation whose caller is on another
    process (``origin``): that process keeps the caller's state machine and timers."""

    id: str
    appid: str
    caller: str
    origin: str
    remote: RemoteInvitation
    callee_session: _Session


#: Frames a client may send while its resume is being asked of another process.
RELAY_HELD_MAX = 16
_RELAY_KINDS = frozenset(
    (
        "resume",
        "resume_ok",
        "resume_no",
        "conn_in",
        "conn_out",
        "conn_close",
        "conn_gone",
        "conn_oversized",
    )
)


def _remember(memory: OrderedDict[str, Any], key: str, value: Any) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > _ENDED_MEMORY:
        memory.popitem(last=False)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _remote_state_message(inv_id: str, action: StateChanged) -> Message:
    """The callee's ``remote_state`` event for a state change of its invitation (held here
    or, in a cluster, mirrored from the caller's process)."""
    msg = p.server_message(
        "remote_state", inv=inv_id, state=action.new, state_name=RemoteState(action.new).name
    )
    if action.reason is not None:
        msg["reason"] = action.reason
        msg["reason_name"] = RemoteFailureReason(action.reason).name
    return msg


def _api_error(err: ApiError, re_: p.MsgId) -> Message:
    return p.error(re_, err.name, f"invitation API error {err.name}")


class Hub:
    """All signalling state of one process."""

    def __init__(
        self,
        settings: SignalingSettings | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or SignalingSettings()
        self._wall_clock = wall_clock  # token expiry is Unix time; `now` is monotonic
        self._limits = p.Limits(
            max_message_bytes=self.settings.max_message_bytes,
            max_peer_message_bytes=self.settings.max_peer_message_bytes,
            max_uids_per_request=self.settings.max_uids_per_request,
        )
        self._next_cid = 1
        self._conns: dict[int, _ConnState] = {}
        self._sessions: dict[Key, _Session] = {}
        self._detached: set[_Session] = set()
        self._watchers: dict[Key, set[_Session]] = {}
        self._invitations: dict[str, _Invitation] = {}
        self._awaiting: dict[Key, set[str]] = {}  # sent to an offline callee
        self._unauth: dict[int, float] = {}  # connection id -> login deadline
        self._to_participants: deque[tuple[Participant, str, Message]] = deque()
        self._flushing = False
        self.cluster: ClusterPort | None = None
        self._cluster_appid = ""
        self._mirrors: dict[str, _Mirror] = {}
        # Connections of other processes whose sessions are here: (member, its cid) -> cid.
        self._relayed: dict[tuple[str, int], int] = {}
        # Told (appid, uid, online, here) at every presence change (the gateway's CUSTOM
        # events and webhooks). ``here``: this process is the one to report it (the
        # session is on this process, or was on a dead one this process reports for), so
        # a cluster of N processes reports each change once, not N times.
        self.on_presence: Callable[[str, str, bool, bool], None] | None = None

    # ---- adapter entry points ----------------------------------------------------------

    def connect(self, conn: Conn, now: float) -> int:
        cid = self._next_cid
        self._next_cid += 1
        self._conns[cid] = _ConnState(cid, conn, float(self.settings.rate_burst), now)
        self._await_login(cid, now)
        return cid

    def receive(self, cid: int, raw: str | bytes, now: float) -> None:
        """One frame from connection ``cid``."""
        cs = self._conns.get(cid)
        if cs is None:
            return  # closed by the hub already; late frames are dropped
        if cs.relay_to is not None or cs.asking is not None:
            self._relay_frame(cs, raw, now)
            return
        if not self._take_token(cs, now):
            self._fatal(
                cs,
                p.ProtocolError(
                    p.Err.RATE_LIMITED, "too many messages", fatal=True, close=p.Close.RATE_LIMITED
                ),
                now,
            )
        else:
            decoded = p.decode_client(raw, self._limits)
            if isinstance(decoded, p.ProtocolError):
                if decoded.fatal:
                    self._fatal(cs, decoded, now)
                else:
                    cs.conn.send(decoded.to_wire())
            else:
                self._dispatch(cs, decoded, now)
        self._flush_participants(now)

    def _relay_frame(self, cs: _ConnState, raw: str | bytes, now: float) -> None:
        """A frame of a connection whose session is on another process (or being asked)."""
        if not self._take_token(cs, now):
            too_many = p.ProtocolError(
                p.Err.RATE_LIMITED, "too many messages", fatal=True, close=p.Close.RATE_LIMITED
            )
            self._fatal(cs, too_many, now)
            return
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        if cs.relay_to is not None:
            self._to_member(cs.relay_to, "conn_in", cid=cs.cid, raw=text)
        elif len(cs.held) < RELAY_HELD_MAX:
            cs.held.append(text)

    def _drop_relay(self, cs: _ConnState) -> None:
        """This side closed a relayed connection: the session's process detaches it."""
        member = cs.relay_to or (cs.asking[0] if cs.asking else None)
        if member is not None:
            self._to_member(member, "conn_gone", cid=cs.cid)
        cs.relay_to = cs.asking = None

    def oversized(self, cid: int, now: float) -> None:
        """Connection ``cid`` sent a frame the adapter refused to read, being over
        ``max_message_bytes``: the same error and close as for one it did read."""
        cs = self._conns.get(cid)
        if cs is not None and cs.relay_to is not None:
            self._to_member(cs.relay_to, "conn_oversized", cid=cid)
        elif cs is not None:
            self._fatal(cs, p.too_large(self._limits), now)
        self._flush_participants(now)

    def disconnect(self, cid: int, now: float) -> None:
        """The socket of ``cid`` is gone: its session waits ``grace_period`` for a resume."""
        cs = self._conns.pop(cid, None)
        self._unauth.pop(cid, None)
        if cs is not None:
            self._drop_relay(cs)
        if cs is not None and cs.session is not None:
            self._detach(cs.session, now)
            cs.session = None
        self._flush_participants(now)

    def next_deadline(self) -> float | None:
        deadlines = [s.grace_deadline for s in self._detached if s.grace_deadline is not None]
        deadlines.extend(self._unauth.values())
        for inv in self._invitations.values():
            d = inv.local.next_deadline()
            if d is not None:
                deadlines.append(d)
        return min(deadlines, default=None)

    def poll(self, now: float) -> None:
        """Fire every deadline due at ``now``."""
        for cid in [c for c, deadline in self._unauth.items() if deadline <= now]:
            cs = self._conns.get(cid)
            if cs is not None:
                self._close(cs, p.Close.LOGIN_TIMEOUT, now)
        for session in [s for s in self._detached if (s.grace_deadline or 0) <= now]:
            log.info("signaling.grace_expired", appid=session.appid, uid=session.uid)
            self._end_session(session, now)
        for inv in list(self._invitations.values()):
            d = inv.local.next_deadline()
            if d is not None and d <= now and inv.id in self._invitations:
                self._run_local(inv, inv.local.poll(now), now)
        self._flush_participants(now)

    def shutdown(self, now: float) -> None:
        """Close every connection and end every session (graceful stop)."""
        for cs in list(self._conns.values()):
            self._close(cs, p.Close.SHUTDOWN, now)
        for session in list(self._sessions.values()):
            self._end_session(session, now)
        self._flush_participants(now)

    def register_participant(self, appid: str, participant: Participant) -> ParticipantHandle:
        """Give the gateway its in-process handle for ``appid`` (see ParticipantHandle)."""
        return ParticipantHandle(self, appid, participant)

    def stats(self) -> dict[str, int]:
        return {
            "connections": len(self._conns),
            "sessions": len(self._sessions),
            "detached": len(self._detached),
            "invitations": len(self._invitations),
            "awaiting": sum(len(v) for v in self._awaiting.values()),
            "watched": len(self._watchers),
            "awaiting_login": len(self._unauth),
        }

    def users_online(self) -> list[tuple[str, str]]:
        """(appid, uid) of every web user logged in to this process (not the gateway's
        own uids), for ``esl-bridge status``."""
        return sorted(
            key for key, s in self._sessions.items() if s.participant is None and s.present
        )

    def is_online(self, appid: str, uid: str) -> bool:
        session = self._sessions.get((appid, uid))
        if session is None:
            return self._member_of((appid, uid)) is not None
        return session.present

    # ---- connection plumbing -----------------------------------------------------------

    def _await_login(self, cid: int, now: float) -> None:
        # A socket that never logs in would hold resources forever: give it a deadline.
        if self.settings.login_timeout is not None:
            self._unauth[cid] = now + self.settings.login_timeout

    def _take_token(self, cs: _ConnState, now: float) -> bool:
        elapsed = max(0.0, now - cs.last)
        cs.last = max(cs.last, now)
        cs.tokens = min(
            float(self.settings.rate_burst), cs.tokens + elapsed * self.settings.rate_per_second
        )
        if cs.tokens < 1.0:
            return False
        cs.tokens -= 1.0
        return True

    def _fatal(self, cs: _ConnState, err: p.ProtocolError, now: float) -> None:
        cs.conn.send(err.to_wire())
        self._close(cs, err.close or p.Close.RATE_LIMITED, now)

    def _close(self, cs: _ConnState, close: tuple[int, str], now: float) -> None:
        """Tell the client why, close it, and end its session at once (no grace)."""
        self._drop_relay(cs)
        self._conns.pop(cs.cid, None)
        self._unauth.pop(cs.cid, None)
        cs.conn.send(p.closing(close))
        cs.conn.close(*close)
        session, cs.session = cs.session, None
        if session is not None:
            log.info("signaling.closed", appid=session.appid, uid=session.uid, reason=close[1])
            session.conn = None
            self._end_session(session, now)

    def _send(self, session: _Session, message: Message) -> None:
        if session.ended:
            return
        if session.participant is not None:
            self._to_participants.append((session.participant, session.uid, message))
        elif session.conn is not None:
            session.conn.conn.send(message)
        else:
            session.detached.append(message)

    def _overflowed(self, session: _Session) -> bool:
        return len(session.detached) > self.settings.max_detached_queue

    def _flush_participants(self, now: float) -> None:
        if self._flushing:
            return  # a participant called back into the hub: the outer loop drains
        self._flushing = True
        try:
            while self._to_participants:
                participant, uid, message = self._to_participants.popleft()
                try:
                    participant.on_event(uid, message)
                except Exception:  # a participant's bug must not take the hub down
                    log.exception("signaling.participant_error", uid=uid, type=message["type"])
        finally:
            self._flushing = False
        # Sessions whose detached queue overflowed end here, outside any iteration.
        for session in [s for s in self._detached if self._overflowed(s)]:
            log.info("signaling.detached_overflow", appid=session.appid, uid=session.uid)
            self._end_session(session, now)

    # ---- sessions and presence ---------------------------------------------------------

    def _detach(self, session: _Session, now: float) -> None:
        session.conn = None
        session.grace_deadline = now + self.settings.grace_period
        self._detached.add(session)
        log.info("signaling.detached", appid=session.appid, uid=session.uid)

    def _start_session(self, key: Key, participant: Participant | None, now: float) -> _Session:
        session = _Session(key, ids.new_secret(), participant=participant)
        self._sessions[key] = session
        return session

    def _went_online(self, session: _Session, now: float) -> None:
        self._notify_presence(session.key, True)
        for inv_id in list(self._awaiting.pop(session.key, ())):
            inv = self._invitations.get(inv_id)
            if inv is not None:
                self._run_local(inv, inv.local.handle(LocalEvent.PEER_ONLINE, now).actions, now)

    def _went_offline(self, session: _Session, now: float, *, notify: bool = True) -> None:
        # Invitations handed to this session go back to waiting (or fail if acknowledged).
        for inv in list(session.incoming.values()):
            if isinstance(inv, _Mirror):
                self._mirror_lost(inv)
                continue
            inv.remote = None
            inv.callee_session = None
            session.incoming.pop(inv.id, None)
            self._run_local(inv, inv.local.handle(LocalEvent.PEER_OFFLINE, now).actions, now)
            if inv.id in self._invitations:
                self._awaiting.setdefault(session.key, set()).add(inv.id)
        if notify:
            self._notify_presence(session.key, False)

    def _end_session(
        self, session: _Session, now: float, *, notify: bool = True, announce: bool | None = None
    ) -> None:
        if session.ended:
            return
        if session.stamp and self.cluster is not None and session.appid == self._cluster_appid:
            # announce False: a login here takes its place, no offline in between.
            self.cluster.session_ended(
                session.uid, session.stamp, broadcast=notify if announce is None else announce
            )
        session.routes.clear()
        self._detached.discard(session)
        for inv in list(session.outgoing.values()):
            self._run_local(inv, inv.local.handle(LocalEvent.LOGGED_OUT, now).actions, now)
        was_present = session.present
        session.present = False
        self._went_offline(session, now, notify=False)
        session.ended = True
        for uid in session.subscriptions:
            self._unwatch(session, (session.appid, uid))
        session.subscriptions.clear()
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
        if session.conn is not None:
            session.conn.session = None
            session.conn = None
        if notify and was_present:
            self._notify_presence(session.key, False)

    def _unwatch(self, session: _Session, key: Key) -> None:
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.discard(session)
            if not watchers:
                del self._watchers[key]

    def _notify_presence(self, key: Key, online: bool, *, here: bool = True) -> None:
        if self.on_presence is not None:
            self.on_presence(key[0], key[1], online, here)
        state = "ONLINE" if online else "OFFLINE"
        for watcher in list(self._watchers.get(key, ())):
            self._send(watcher, p.server_message("peer_status", peers={key[1]: state}))

    def _set_present(self, session: _Session, present: bool, now: float) -> None:
        if session.present == present or session.ended:
            return
        session.present = present
        if present:
            self._went_online(session, now)
        else:
            self._went_offline(session, now)

    # ---- dispatch ----------------------------------------------------------------------

    def _dispatch(self, cs: _ConnState, msg: p.ClientMessage, now: float) -> None:
        body, re_ = msg.body, msg.id
        if isinstance(body, p.Login):
            self._login(cs, body, re_, now)
            return
        if isinstance(body, p.Ping):
            cs.conn.send(p.server_message("pong", re=re_))
            return
        session = cs.session
        if session is None:
            cs.conn.send(p.error(re_, p.Err.NOT_LOGGED_IN, "log in first"))
            return
        if isinstance(body, p.Logout):
            log.info("signaling.logout", appid=session.appid, uid=session.uid)
            # Still attached: the client hears its invitations end (NOT_LOGGEDIN) first.
            self._end_session(session, now)
            cs.session = None
            self._await_login(cs.cid, now)
            cs.conn.send(p.ok(re_))
            return
        if isinstance(body, p.Invite) and self._too_many(session):
            self._fatal(
                cs,
                p.ProtocolError(
                    p.Err.TOO_MANY_INVITATIONS,
                    f"more than {self.settings.max_pending_invitations} pending invitations",
                    re_,
                    fatal=True,
                    close=p.Close.TOO_MANY_INVITATIONS,
                ),
                now,
            )
            return
        self._session_request(session, body, re_, now, cs.conn.send)

    def _too_many(self, session: _Session) -> bool:
        return len(session.outgoing) >= self.settings.max_pending_invitations

    def _session_request(
        self,
        session: _Session,
        body: p.Body,
        re_: p.MsgId,
        now: float,
        reply: Callable[[Message], None],
    ) -> None:
        """Requests of a logged-in uid, shared by WebSocket clients and participants."""
        appid = session.appid
        if isinstance(body, p.Query):
            reply(p.ok(re_, peers={u: self.is_online(appid, u) for u in body.uids}))
        elif isinstance(body, p.Subscribe):
            new = [u for u in body.uids if u not in session.subscriptions]
            if len(session.subscriptions) + len(new) > self.settings.max_subscriptions:
                reply(
                    p.error(
                        re_,
                        p.Err.TOO_MANY_SUBSCRIPTIONS,
                        f"at most {self.settings.max_subscriptions} subscriptions",
                    )
                )
                return
            for uid in new:
                session.subscriptions.add(uid)
                self._watchers.setdefault((appid, uid), set()).add(session)
            reply(p.ok(re_, peers={u: self.is_online(appid, u) for u in body.uids}))
        elif isinstance(body, p.Unsubscribe):
            for uid in body.uids:
                if uid in session.subscriptions:
                    session.subscriptions.discard(uid)
                    self._unwatch(session, (appid, uid))
            reply(p.ok(re_))
        elif isinstance(body, p.PeerMessage):
            target = self._sessions.get((appid, body.to))
            delivered = target is not None and target.present
            member = self._member_of((appid, body.to)) if target is None else None
            if target is not None and target.participant is not None:
                member = session.routes.get(body.to)  # the process with the gateway's call
            if member is not None:
                self._to_member(member, "message", sender=session.uid, to=body.to, text=body.text)
                reply(p.ok(re_, delivered=True))
            elif target is not None and delivered:
                msg = p.server_message("message", text=body.text)
                msg["from"] = session.uid
                self._send(target, msg)
            reply(p.ok(re_, delivered=delivered))
        elif isinstance(body, p.Invite):
            self._invite(session, body, re_, now, reply)
        elif isinstance(body, p.Cancel):
            self._cancel(session, body, re_, now, reply)
        elif isinstance(body, p.Ack | p.Accept | p.Refuse):
            self._answer(session, body, re_, now, reply)
        else:  # Login / Logout / Ping are connection-level; a participant has none
            reply(p.error(re_, p.Err.BAD_MESSAGE, "not a session request"))

    # ---- login -------------------------------------------------------------------------

    def _login(self, cs: _ConnState, body: p.Login, re_: p.MsgId, now: float) -> None:
        send = cs.conn.send
        if cs.session is not None:
            send(p.error(re_, p.Err.ALREADY_LOGGED_IN, "this connection is logged in"))
            return
        if not self.settings.accepts_appid(body.appid):
            send(p.error(re_, p.Err.APPID_REFUSED, "this appid is not served here"))
            return
        key = (body.appid, body.uid)
        existing = self._sessions.get(key)
        elsewhere = self._member_of(key) if existing is None else None
        if existing is not None and existing.participant is not None:
            send(p.error(re_, p.Err.UID_RESERVED, "this uid is served by the gateway"))
            return
        # Resume: the session id is a secret only its client got; it proves continuity.
        if existing is not None and body.session is not None and body.session == existing.sid:
            self._resume(cs, existing, re_, now)
            return
        if (
            elsewhere is not None
            and body.session is not None
            and not cs.resume_refused
            and getattr(self.cluster, "healthy", True)
        ):
            # The session may be there: that process checks the id and, if it is the
            # one, keeps the session and serves this connection through the bus.
            cs.asking = (elsewhere, body, re_)
            self._to_member(
                elsewhere, "resume", cid=cs.cid, uid=body.uid, session=body.session, re=re_
            )
            return
        if not self.settings.open_mode:
            if not body.token:
                send(p.error(re_, p.Err.AUTH_FAILED, "token required"))
                return
            checked = verify_token(
                body.token,
                body.appid,
                body.uid,
                self.settings.app_certificate,
                self._wall_clock(),
            )
            if isinstance(checked, TokenError):
                log.info(
                    "signaling.auth_failed", appid=body.appid, uid=body.uid, reason=checked.value
                )
                send(p.error(re_, p.Err.AUTH_FAILED, checked.value))
                return
            if checked.legacy:
                # The old token format is accepted for this release only: its backend
                # must move to JWTs (README.rst, Integrate with your app) before the next.
                log.warning(
                    "signaling.legacy_token",
                    appid=body.appid,
                    uid=body.uid,
                    reason="old token format, accepted until the next release; mint a JWT",
                )
        takeover = existing is not None or elsewhere is not None
        if elsewhere is not None:
            # That process ends its session when it hears of this one (remote_session_started).
            log.info("signaling.takeover", appid=body.appid, uid=body.uid, elsewhere=elsewhere)
        if existing is not None:
            log.info("signaling.takeover", appid=body.appid, uid=body.uid)
            old = existing.conn
            if old is not None:
                old.session = None
                existing.conn = None
                self._close(old, p.Close.TAKEOVER, now)
            self._end_session(existing, now, notify=False)  # the uid stays online
        session = self._start_session(key, None, now)
        session.conn = cs
        cs.session = session
        self._unauth.pop(cs.cid, None)
        if self.cluster is not None and body.appid == self._cluster_appid:
            session.stamp = self._wall_clock()
            self.cluster.session_started(body.uid, session.stamp)
        log.info("signaling.login", appid=body.appid, uid=body.uid, takeover=takeover)
        send(p.ok(re_, uid=body.uid, session=session.sid, resumed=False))
        if takeover:
            # Invitations waiting for this uid go to the new session; no presence flap.
            for inv_id in list(self._awaiting.pop(key, ())):
                inv = self._invitations.get(inv_id)
                if inv is not None:
                    self._run_local(inv, inv.local.handle(LocalEvent.PEER_ONLINE, now).actions, now)
        else:
            self._went_online(session, now)

    def _resume(self, cs: _ConnState, session: _Session, re_: p.MsgId, now: float) -> None:
        old = session.conn
        if old is not None:
            # The client reconnected before the server saw its old socket die.
            old.session = None
            session.conn = None
            self._conns.pop(old.cid, None)
            self._unauth.pop(old.cid, None)
            old.conn.send(p.closing(p.Close.RESUMED_ELSEWHERE))
            old.conn.close(*p.Close.RESUMED_ELSEWHERE)
        self._detached.discard(session)
        session.grace_deadline = None
        session.conn = cs
        cs.session = session
        self._unauth.pop(cs.cid, None)
        log.info(
            "signaling.resumed", appid=session.appid, uid=session.uid, queued=len(session.detached)
        )
        cs.conn.send(p.ok(re_, uid=session.uid, session=session.sid, resumed=True))
        queued, session.detached = session.detached, []
        for message in queued:
            cs.conn.send(message)

    # ---- invitations -------------------------------------------------------------------

    def _invite(
        self,
        session: _Session,
        body: p.Invite,
        re_: p.MsgId,
        now: float,
        reply: Callable[[Message], None],
    ) -> None:
        if body.callee == session.uid:
            reply(p.error(re_, p.Err.INVALID_ARGUMENT, "cannot invite yourself"))
            return
        if body.ref in session.outgoing:
            reply(p.error(re_, p.Err.DUPLICATE_REF, "this ref names a pending invitation"))
            return
        session.routes.pop(body.callee, None)  # a gateway uid invited here: its call is here
        local = LocalInvitation(
            body.callee,
            content=body.content,
            channel_id=body.channel_id,
            peer_online=self.is_online(session.appid, body.callee),
            timeouts=self.settings.invitation_timeouts,
        )
        out = local.send(now)
        if out.error is not None:
            reply(_api_error(out.error, re_))
            return
        inv = _Invitation(ids.new_id("inv"), session.appid, session, body.callee, body.ref, local)
        self._invitations[inv.id] = inv
        session.outgoing[body.ref] = inv
        session.ended_refs.pop(body.ref, None)
        log.info(
            "signaling.invite", appid=session.appid, uid=session.uid, callee=body.callee, inv=inv.id
        )
        reply(p.ok(re_, ref=body.ref, inv=inv.id))
        self._run_local(inv, out.actions, now)

    def _cancel(
        self,
        session: _Session,
        body: p.Cancel,
        re_: p.MsgId,
        now: float,
        reply: Callable[[Message], None],
    ) -> None:
        inv = session.outgoing.get(body.ref)
        if inv is None:
            ended = session.ended_refs.get(body.ref)
            entry = local_table()[(ended, LocalEvent.CANCEL)] if ended is not None else None
            if isinstance(entry, Reject):
                reply(_api_error(entry.error, re_))
            else:
                reply(p.error(re_, p.Err.UNKNOWN_INVITATION, "no invitation with this ref"))
            return
        out = inv.local.cancel(now)
        self._reply_outcome(out, re_, reply)
        self._run_local(inv, out.actions, now)

    def _answer(
        self,
        session: _Session,
        body: p.Ack | p.Accept | p.Refuse,
        re_: p.MsgId,
        now: float,
        reply: Callable[[Message], None],
    ) -> None:
        inv = session.incoming.get(body.inv)
        if isinstance(inv, _Mirror):
            self._answer_mirror(inv, body, re_, now, reply)
            return
        if inv is None or inv.remote is None:
            ended = session.ended_invs.get(body.inv)
            event = RemoteEvent.REFUSE if isinstance(body, p.Refuse) else RemoteEvent.ACCEPT
            entry = remote_table()[(ended, event)] if ended is not None else None
            if isinstance(entry, Reject) and not isinstance(body, p.Ack):
                reply(_api_error(entry.error, re_))
            elif ended is not None:
                reply(p.ok(re_))  # a late ack of an ended invitation is harmless
            else:
                reply(p.error(re_, p.Err.UNKNOWN_INVITATION, "no invitation with this id"))
            return
        if isinstance(body, p.Ack):
            out = inv.remote.receive(now)
        elif isinstance(body, p.Accept):
            out = inv.remote.accept(now, body.response)
        else:
            out = inv.remote.refuse(now, body.response)
        self._reply_outcome(out, re_, reply)
        self._run_remote(inv, out.actions, now)

    @staticmethod
    def _reply_outcome(out: Outcome, re_: p.MsgId, reply: Callable[[Message], None]) -> None:
        if out.error is not None:
            reply(_api_error(out.error, re_))
        else:
            reply(p.ok(re_))

    def _deliver(self, inv: _Invitation, now: float) -> None:
        key = (inv.appid, inv.callee)
        target = self._sessions.get(key)
        member = self._member_of(key) if target is None else None
        if member is not None:
            self._deliver_elsewhere(inv, member)
            return
        if target is None or not target.present:
            self._awaiting.setdefault(key, set()).add(inv.id)
            return
        if inv.callee_session is target:
            return  # already there
        target.routes.pop(inv.caller.uid, None)
        inv.remote = RemoteInvitation(
            inv.caller.uid,
            content=inv.local.content,
            channel_id=inv.local.channel_id,
            timeouts=self.settings.invitation_timeouts,
        )
        inv.callee_session = target
        target.incoming[inv.id] = inv
        self._send(
            target,
            p.server_message(
                "invitation",
                inv=inv.id,
                caller=inv.caller.uid,
                content=inv.local.content,
                channel_id=inv.local.channel_id,
                state=int(RemoteState.IDLE),
            ),
        )

    def _run_local(self, inv: _Invitation, actions: Iterable[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, StateChanged):
                msg = p.server_message(
                    "local_state",
                    ref=inv.ref,
                    inv=inv.id,
                    state=action.new,
                    state_name=LocalState(action.new).name,
                )
                if action.reason is not None:
                    msg["reason"] = action.reason
                    msg["reason_name"] = LocalFailureReason(action.reason).name
                if action.response is not None:
                    msg["response"] = action.response
                self._send(inv.caller, msg)
            elif isinstance(action, Deliver):
                self._deliver(inv, now)
            elif isinstance(action, NotifyPeer) and inv.remote is not None:
                assert isinstance(action.event, RemoteEvent)
                out = inv.remote.handle(action.event, now, action.response)
                self._run_remote(inv, out.actions, now)
            elif isinstance(action, NotifyPeer) and inv.remote_member is not None:
                self._to_member(
                    inv.remote_member,
                    "inv_remote",
                    inv=inv.id,
                    event=action.event.name,
                    response=action.response,
                )
        self._maybe_forget(inv)

    def _run_remote(self, inv: _Invitation, actions: Iterable[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, StateChanged) and inv.callee_session is not None:
                self._send(inv.callee_session, _remote_state_message(inv.id, action))
            elif isinstance(action, NotifyPeer):
                assert isinstance(action.event, LocalEvent)
                out = inv.local.handle(action.event, now, action.response)
                self._run_local(inv, out.actions, now)
        self._maybe_forget(inv)

    def _maybe_forget(self, inv: _Invitation) -> None:
        if not inv.local.ended or inv.id not in self._invitations:
            return
        del self._invitations[inv.id]
        caller = inv.caller
        if caller.outgoing.get(inv.ref) is inv:
            del caller.outgoing[inv.ref]
            _remember(caller.ended_refs, inv.ref, inv.local.state)
        callee = inv.callee_session
        if callee is not None and callee.incoming.pop(inv.id, None) is not None:
            assert inv.remote is not None
            _remember(callee.ended_invs, inv.id, inv.remote.state)
        key = (inv.appid, inv.callee)
        waiting = self._awaiting.get(key)
        if waiting is not None:
            waiting.discard(inv.id)
            if not waiting:
                del self._awaiting[key]
        log.info(
            "signaling.invitation_ended",
            appid=inv.appid,
            uid=caller.uid,
            inv=inv.id,
            state=inv.local.state.name,
        )

    # ---- cluster (several processes; esl_bridge/cluster) -------------------------------
    #
    # Presence: the cluster port knows which other process holds a web user's session;
    # is_online, queries, subscriptions and invitations count those users as online.
    # An invitation to a user elsewhere stays here with its caller (state machine and
    # timers); that process holds a _Mirror with the callee's side, and the two trade
    # the machines' notifications ("inv_remote" / "inv_local"). Peer messages to a user
    # elsewhere are forwarded ("message"). Every entry point below runs on the loop.

    def attach_cluster(self, appid: str, cluster: ClusterPort) -> None:
        self.cluster = cluster
        self._cluster_appid = appid

    def _member_of(self, key: Key) -> str | None:
        cluster = self.cluster
        if cluster is None or key[0] != self._cluster_appid:
            return None
        return cluster.where(key[1])

    def _to_member(self, member: str, kind: str, **fields: Any) -> None:
        if self.cluster is not None:
            self.cluster.send(member, {"t": kind, **fields})

    def _deliver_elsewhere(self, inv: _Invitation, member: str) -> None:
        if inv.remote_member == member:
            return  # already there
        inv.remote_member = member
        self._to_member(
            member,
            "deliver",
            inv=inv.id,
            caller=inv.caller.uid,
            callee=inv.callee,
            content=inv.local.content,
            channel_id=inv.local.channel_id,
        )

    def _mirror_lost(self, mirror: _Mirror) -> None:
        """The callee's session here ended: the caller's process hears PEER_OFFLINE."""
        self._forget_mirror(mirror, remember=False)
        self._to_member(mirror.origin, "inv_local", inv=mirror.id, event="PEER_OFFLINE")

    def _forget_mirror(self, mirror: _Mirror, *, remember: bool = True) -> None:
        self._mirrors.pop(mirror.id, None)
        if mirror.callee_session.incoming.pop(mirror.id, None) is not None and remember:
            _remember(mirror.callee_session.ended_invs, mirror.id, mirror.remote.state)

    def _answer_mirror(
        self,
        mirror: _Mirror,
        body: p.Ack | p.Accept | p.Refuse,
        re_: p.MsgId,
        now: float,
        reply: Callable[[Message], None],
    ) -> None:
        if isinstance(body, p.Ack):
            out = mirror.remote.receive(now)
        elif isinstance(body, p.Accept):
            out = mirror.remote.accept(now, body.response)
        else:
            out = mirror.remote.refuse(now, body.response)
        self._reply_outcome(out, re_, reply)
        self._run_mirror(mirror, out.actions, now)

    def _run_mirror(self, mirror: _Mirror, actions: Iterable[Action], now: float) -> None:
        for action in actions:
            if isinstance(action, StateChanged):
                self._send(mirror.callee_session, _remote_state_message(mirror.id, action))
            elif isinstance(action, NotifyPeer):
                self._to_member(
                    mirror.origin,
                    "inv_local",
                    inv=mirror.id,
                    event=action.event.name,
                    response=action.response,
                )
        if mirror.remote.ended:
            self._forget_mirror(mirror)

    def remote_session_started(
        self, uid: str, member: str, stamp: float, new: bool, now: float
    ) -> None:
        """``uid`` logged in on ``member`` at ``stamp`` (``new``: it was not online
        elsewhere before)."""
        key = (self._cluster_appid, uid)
        local = self._sessions.get(key)
        if local is not None and local.participant is None and self.cluster is not None:
            if (stamp, member) < (local.stamp, self.cluster.member):
                return  # the login here is the later one: that process ends its own
            # The later login keeps the uid; both processes compare the same stamps.
            log.info("signaling.taken_over", appid=key[0], uid=uid, by=member)
            old = local.conn
            if old is not None:
                old.session = None  # closed below without ending the session: no offline
                local.conn = None
                self._close(old, p.Close.TAKEOVER, now)
            self._end_session(local, now, notify=False, announce=True)
        elif local is not None:
            return  # a gateway uid here: never a web user's
        if new and local is None:  # (taken over from here: it was online all along)
            self._notify_presence(key, True, here=False)  # its own process reports it
        for inv_id in list(self._awaiting.pop(key, ())):
            inv = self._invitations.get(inv_id)
            if inv is not None:
                self._run_local(inv, inv.local.handle(LocalEvent.PEER_ONLINE, now).actions, now)
        self._flush_participants(now)

    def remote_session_ended(self, uid: str, now: float, *, report: bool = False) -> None:
        """``uid``'s session elsewhere ended (logout, its process died or left).
        ``report``: its process cannot say so (it died) and this one was chosen to."""
        key = (self._cluster_appid, uid)
        if key in self._sessions:
            return  # logged in here: still online
        for inv in [i for i in self._invitations.values() if (i.appid, i.callee) == key]:
            if inv.remote_member is not None:
                self._callee_gone(inv, now)
        if not self.is_online(*key):
            self._notify_presence(key, False, here=report)
        self._flush_participants(now)

    def remote_member_gone(self, member: str, now: float) -> None:
        """Process ``member`` died or left: its invitations to users here fail."""
        self._drop_relays(now, member)
        for mirror in [m for m in self._mirrors.values() if m.origin == member]:
            out = mirror.remote.handle(RemoteEvent.CALLER_OFFLINE, now)
            self._run_mirror(mirror, out.actions, now)
        for inv in [i for i in self._invitations.values() if i.remote_member == member]:
            self._callee_gone(inv, now)
        for session in list(self._sessions.values()):
            for uid in [u for u, m in session.routes.items() if m == member]:
                # That process held this user's call with the gateway uid ``uid``: the
                # call is over, and nobody else would say so.
                del session.routes[uid]
                msg = p.server_message("message", text=_GATEWAY_GONE)
                msg["from"] = uid
                self._send(session, msg)
        self._flush_participants(now)

    def _callee_gone(self, inv: _Invitation, now: float) -> None:
        """The callee's process says it is not there (any more): as a local callee going
        offline, the invitation waits for it again (or fails if acknowledged)."""
        inv.remote_member = None
        self._run_local(inv, inv.local.handle(LocalEvent.PEER_OFFLINE, now).actions, now)
        if inv.id in self._invitations:
            if self.is_online(inv.appid, inv.callee):
                self._deliver(inv, now)
            else:
                self._awaiting.setdefault((inv.appid, inv.callee), set()).add(inv.id)

    def cluster_message(self, sender: str, message: Message, now: float) -> None:
        """A message of another process to this one (esl_bridge/cluster/bus.py)."""
        kind = message.get("t")
        try:
            if kind == "deliver":
                self._remote_deliver(sender, message)
            elif kind == "inv_local":
                self._remote_inv_local(sender, message, now)
            elif kind == "inv_remote":
                mirror = self._mirrors.get(str(message.get("inv")))
                if mirror is not None and mirror.origin == sender:
                    event = RemoteEvent[str(message.get("event"))]
                    out = mirror.remote.handle(event, now, _opt_str(message.get("response")))
                    self._run_mirror(mirror, out.actions, now)
            elif kind in _RELAY_KINDS:
                self._relay_message(sender, kind, message, now)
            elif kind == "message":
                target = self._sessions.get((self._cluster_appid, str(message.get("to"))))
                if target is not None and target.present:
                    msg = p.server_message("message", text=str(message.get("text", "")))
                    msg["from"] = str(message.get("sender", ""))
                    self._send(target, msg)
            else:
                log.info("signaling.cluster_unknown", type=str(kind)[:32], member=sender)
        except (KeyError, ValueError) as exc:
            log.warning("signaling.cluster_bad", type=str(kind)[:32], member=sender, error=str(exc))
        self._flush_participants(now)

    def cluster_down(self, now: float) -> None:
        """Redis is unreachable: connections relayed through it are cut (their clients
        reconnect; sessions here wait their grace period for them)."""
        self._drop_relays(now)
        self._flush_participants(now)

    def _drop_relays(self, now: float, member: str | None = None) -> None:
        """Cut the connections relayed to or from ``member`` (every one when None)."""
        for cs in list(self._conns.values()):
            via = cs.relay_to or (cs.asking[0] if cs.asking else None)
            if via is not None and member in (None, via):
                cs.relay_to = cs.asking = None  # that side is gone: nothing to tell it
                self._close(cs, p.Close.SHUTDOWN, now)  # the client reconnects
        for (m, _), cid in list(self._relayed.items()):
            if member in (None, m):
                del self._relayed[(m, _)]
                self.disconnect(cid, now)  # the session waits for it (grace period)

    def _relay_message(self, sender: str, kind: str, message: Message, now: float) -> None:
        cid = int(message["cid"])
        if kind == "resume":  # here: is the session ours, with that id?
            key = (self._cluster_appid, str(message["uid"]))
            session = self._sessions.get(key)
            sid = str(message.get("session"))
            if session is None or session.participant is not None or session.sid != sid:
                self._to_member(sender, "resume_no", cid=cid)
                return
            local = self._next_cid
            self._next_cid += 1
            cs = _ConnState(
                local, _RemoteConn(self, sender, cid), float(self.settings.rate_burst), now
            )
            self._conns[local] = cs
            self._relayed[(sender, cid)] = local
            self._to_member(sender, "resume_ok", cid=cid)
            log.info("signaling.resumed_through", appid=key[0], uid=key[1], member=sender)
            self._resume(cs, session, message.get("re"), now)
            return
        if kind in ("conn_in", "conn_gone", "conn_oversized"):  # here: the session's side
            local = self._relayed.get((sender, cid))
            if local is None:
                if kind == "conn_in":  # its session ended here meanwhile
                    code, reason = p.Close.SHUTDOWN
                    self._to_member(sender, "conn_close", cid=cid, code=code, reason=reason)
                return
            if kind == "conn_in":
                self.receive(local, str(message["raw"]), now)
            elif kind == "conn_oversized":
                self.oversized(local, now)
            else:
                del self._relayed[(sender, cid)]
                self.disconnect(local, now)
            return
        # here: the socket's side
        cs = self._conns.get(cid)
        if kind == "resume_ok":
            if cs is None or cs.asking is None or cs.asking[0] != sender:
                self._to_member(sender, "conn_gone", cid=cid)  # closed meanwhile
                return
            cs.relay_to, cs.asking = sender, None
            self._unauth.pop(cid, None)
            held, cs.held = cs.held, []
            for text in held:
                self._to_member(sender, "conn_in", cid=cid, raw=text)
        elif kind == "resume_no":
            if cs is not None and cs.asking is not None and cs.asking[0] == sender:
                _, body, re_ = cs.asking
                cs.asking, cs.resume_refused = None, True
                self._login(cs, body, re_, now)  # not that session: an ordinary login
                held, cs.held = cs.held, []
                for text in held:
                    self.receive(cid, text, now)
        elif cs is not None and cs.relay_to == sender:
            if kind == "conn_out" and isinstance(message.get("m"), dict):
                cs.conn.send(message["m"])
            elif kind == "conn_close":
                self._conns.pop(cid, None)
                cs.conn.close(int(message["code"]), str(message["reason"]))

    def _remote_deliver(self, sender: str, message: Message) -> None:
        inv_id = str(message["inv"])
        appid = self._cluster_appid
        target = self._sessions.get((appid, str(message["callee"])))
        if target is None or not target.present or target.participant is not None:
            self._to_member(sender, "inv_local", inv=inv_id, event="PEER_OFFLINE")
            return
        if inv_id in self._mirrors:
            return
        caller = str(message["caller"])
        content = str(message.get("content") or "")
        channel_id = str(message.get("channel_id") or "")
        mirror = _Mirror(
            inv_id,
            appid,
            caller,
            sender,
            RemoteInvitation(
                caller,
                content=content,
                channel_id=channel_id,
                timeouts=self.settings.invitation_timeouts,
            ),
            target,
        )
        self._mirrors[inv_id] = mirror
        target.incoming[inv_id] = mirror
        target.routes[caller] = sender
        self._send(
            target,
            p.server_message(
                "invitation",
                inv=inv_id,
                caller=caller,
                content=content,
                channel_id=channel_id,
                state=int(RemoteState.IDLE),
            ),
        )

    def _remote_inv_local(self, sender: str, message: Message, now: float) -> None:
        inv = self._invitations.get(str(message["inv"]))
        event = LocalEvent[str(message["event"])]
        if inv is None:
            if event is LocalEvent.REMOTE_ACCEPTED:
                # Ended here meanwhile: the callee must know its acceptance was not taken.
                self._to_member(
                    sender, "inv_remote", inv=str(message["inv"]), event="ACCEPT_FAILED"
                )
            return
        if inv.remote_member != sender:
            return  # from a process the callee has left since
        if event is LocalEvent.PEER_OFFLINE:
            self._callee_gone(inv, now)
            return
        out = inv.local.handle(event, now, _opt_str(message.get("response")))
        self._run_local(inv, out.actions, now)


class ParticipantHandle:
    """The gateway's side of the hub for one appid.

    ``register`` makes uids (acc_rule numbers, rtm_account) members served in-process:
    browsers cannot log in as them, and everything addressed to them reaches
    ``participant.on_event(uid, message)`` as protocol messages. The methods act as that
    uid and return the reply a WebSocket client would get (``{"type": "ok", ...}`` or
    ``{"type": "error", ...}``).
    """

    def __init__(self, hub: Hub, appid: str, participant: Participant) -> None:
        self.hub = hub
        self.appid = appid
        self.participant = participant

    def register(self, uids: Iterable[str], now: float, *, present: bool = True) -> None:
        """Serve ``uids``. A browser logged in with one of them is taken over."""
        hub = self.hub
        for uid in uids:
            key = (self.appid, uid)
            existing = hub._sessions.get(key)
            if existing is not None:
                if existing.participant is self.participant:
                    continue
                if existing.conn is not None:
                    hub._close(existing.conn, p.Close.TAKEOVER, now)
                hub._end_session(existing, now)
            session = hub._start_session(key, self.participant, now)
            session.present = present
            if present:
                hub._went_online(session, now)
        hub._flush_participants(now)

    def unregister(self, uid: str, now: float) -> None:
        session = self._own(uid)
        if session is not None:
            self.hub._end_session(session, now)
        self.hub._flush_participants(now)

    def set_present(self, uid: str, present: bool, now: float) -> None:
        """Show ``uid`` online or offline (e.g. its extension's registration state)."""
        session = self._own(uid)
        if session is not None:
            self.hub._set_present(session, present, now)
        self.hub._flush_participants(now)

    def invite(
        self,
        uid: str,
        callee: str,
        now: float,
        *,
        content: str = "",
        channel_id: str = "",
        ref: str | None = None,
    ) -> Message:
        """Invite ``callee`` as ``uid``; the ok reply carries ``ref`` and ``inv``."""
        return self._request(
            uid, p.Invite(ref or ids.new_id("ref"), callee, content, channel_id), now
        )

    def cancel(self, uid: str, ref: str, now: float) -> Message:
        return self._request(uid, p.Cancel(ref), now)

    def ack(self, uid: str, inv: str, now: float) -> Message:
        return self._request(uid, p.Ack(inv), now)

    def accept(self, uid: str, inv: str, now: float, response: str = "") -> Message:
        return self._request(uid, p.Accept(inv, response), now)

    def refuse(self, uid: str, inv: str, now: float, response: str = "") -> Message:
        return self._request(uid, p.Refuse(inv, response), now)

    def send_message(self, uid: str, to: str, text: str, now: float) -> Message:
        return self._request(uid, p.PeerMessage(to, text), now)

    def query(self, uid: str, uids: Iterable[str], now: float) -> Message:
        return self._request(uid, p.Query(tuple(uids)), now)

    def subscribe(self, uid: str, uids: Iterable[str], now: float) -> Message:
        return self._request(uid, p.Subscribe(tuple(uids)), now)

    def unsubscribe(self, uid: str, uids: Iterable[str], now: float) -> Message:
        return self._request(uid, p.Unsubscribe(tuple(uids)), now)

    def _own(self, uid: str) -> _Session | None:
        session = self.hub._sessions.get((self.appid, uid))
        if session is None or session.participant is not self.participant:
            return None
        return session

    def _request(self, uid: str, body: p.Body, now: float) -> Message:
        session = self._own(uid)
        if session is None:
            return p.error(None, p.Err.NOT_LOGGED_IN, f"uid {uid!r} is not registered")
        replies: list[Message] = []
        self.hub._session_request(session, body, None, now, replies.append)
        self.hub._flush_participants(now)
        return replies[0]


class QueueParticipant:
    """A Participant that appends ``(uid, message)`` to a queue-like object
    (``asyncio.Queue.put_nowait``, ``collections.deque.append``, ``list.append``)."""

    def __init__(self, put: Callable[[tuple[str, Message]], Any]) -> None:
        self._put = put

    def on_event(self, uid: str, message: Message) -> None:
        self._put((uid, message))
