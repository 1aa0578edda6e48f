"""Random message sequences against the pure hub: it never raises, never leaks."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from esl_bridge.core.invitations import InvitationTimeouts, LocalState
from esl_bridge.signaling import protocol as p
from esl_bridge.signaling.auth import mint_token
from esl_bridge.signaling.hub import Hub, QueueParticipant
from esl_bridge.signaling.settings import SignalingSettings

CERT = "fuzz-cert"
WALL = 1_700_000_000.0
APPIDS = ["a1", "a1", "a1", "a2"]  # mostly one appid, so that users meet
UIDS = ["u0", "u1", "u2", "1005"]
REFS = ["r0", "r1", "r2"]


class FakeConn:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        assert self.closed is None, "sent after close"
        p.encode(message).encode("utf-8")  # as the socket sends it: strict UTF-8
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        assert self.closed is None
        self.closed = (code, reason)


# Lone surrogates included (hypothesis leaves them out of text by default); json.dumps
# sends them as the \ud800-style escapes a hostile client would.
TEXTS = st.just('{"Cmd":"EndCall"}') | st.text(
    alphabet=st.characters(categories=["Cs"]) | st.characters(), max_size=20
)
RAW = (
    st.text(alphabet=st.characters(categories=["Cs"]) | st.characters(), max_size=40)
    | st.binary(max_size=20)
    | st.integers(1, 3000).map(lambda n: "[" * n + "]" * n)
    | TEXTS.map(lambda t: json.dumps({"v": 1, "type": "message", "to": "u1", "text": t}))
)


def frame(kind: str, **fields: Any) -> str:
    return json.dumps({"v": 1, "type": kind, "id": 1, **fields})


ops = st.one_of(
    st.tuples(st.just("connect")),
    st.tuples(
        st.just("login"),
        st.integers(0, 5),
        st.sampled_from(APPIDS),
        st.sampled_from(UIDS),
        st.sampled_from(["good", "good", "good", "bad", "resume"]),
    ),
    st.tuples(st.just("logout"), st.integers(0, 5)),
    st.tuples(st.just("drop"), st.integers(0, 5)),
    st.tuples(st.just("raw"), st.integers(0, 5), RAW),
    st.tuples(
        st.just("invite"),
        st.integers(0, 5),
        st.sampled_from(UIDS),
        st.sampled_from(REFS),
        st.sampled_from([0, 8192, 8193]),
    ),
    st.tuples(st.just("cancel"), st.integers(0, 10)),
    st.tuples(
        st.just("answer"),
        st.integers(0, 5),
        st.sampled_from(["ack", "accept", "refuse"]),
        st.integers(0, 10),
    ),
    st.tuples(
        st.just("presence"),
        st.integers(0, 5),
        st.sampled_from(["query", "subscribe", "unsubscribe"]),
        st.lists(st.sampled_from(UIDS), min_size=1, max_size=3),
    ),
    st.tuples(st.just("message"), st.integers(0, 5), st.sampled_from(UIDS), TEXTS),
    st.tuples(st.just("tick"), st.sampled_from([0.5, 5.0, 14.0, 31.0, 61.0])),
    st.tuples(
        st.just("gw"),
        st.sampled_from(["invite", "ack", "accept", "refuse", "present", "absent", "cancel"]),
        st.integers(0, 10),
    ),
)


def check_invariants(hub: Hub) -> None:
    for inv in hub._invitations.values():
        assert not inv.local.ended
        caller = inv.caller
        assert not caller.ended
        assert hub._sessions.get(caller.key) is caller
        assert caller.outgoing.get(inv.ref) is inv
        if inv.remote is not None:
            callee = inv.callee_session
            assert callee is not None and not callee.ended
            assert hub._sessions.get(callee.key) is callee
            assert callee.incoming.get(inv.id) is inv
            assert not inv.remote.ended
        else:
            assert inv.local.state is LocalState.SENT_TO_REMOTE
            assert inv.id in hub._awaiting.get((inv.appid, inv.callee), set())
    for session in hub._sessions.values():
        assert not session.ended
        for inv in [*session.outgoing.values(), *session.incoming.values()]:
            assert hub._invitations.get(inv.id) is inv
        for uid in session.subscriptions:
            assert session in hub._watchers[(session.appid, uid)]
        if session.conn is not None:
            assert session.conn.session is session
            assert hub._conns.get(session.conn.cid) is session.conn
    for key, watchers in hub._watchers.items():
        assert watchers
        for w in watchers:
            assert hub._sessions.get(w.key) is w and key[1] in w.subscriptions
    for key, waiting in hub._awaiting.items():
        assert waiting
        for inv_id in waiting:
            assert hub._invitations[inv_id].callee == key[1]
    for session in hub._detached:
        assert session.conn is None and hub._sessions.get(session.key) is session
    for cs in hub._conns.values():
        if cs.session is not None:
            assert cs.session.conn is cs
            assert cs.cid not in hub._unauth
        elif hub.settings.login_timeout is not None:
            assert cs.cid in hub._unauth
    assert set(hub._unauth) <= set(hub._conns)


def check_delivery(hub: Hub, wire: list[dict[str, Any]]) -> None:
    """Every invitation whose callee is online has reached it: on its socket, in the
    gateway's queue, or in the queue kept for its detached session (``wire`` holds every
    message sent to any socket or to the gateway so far)."""
    handed = {m["inv"] for m in wire if m["type"] == "invitation"}
    for inv in hub._invitations.values():
        callee = inv.callee_session
        if callee is None:
            target = hub._sessions.get((inv.appid, inv.callee))
            assert target is None or not target.present, f"{inv.id} not offered to its callee"
            continue
        queued = {m.get("inv") for m in callee.detached if m["type"] == "invitation"}
        assert inv.id in handed | queued, f"{inv.id} was never sent to its callee"


def play(sequence: list[tuple[Any, ...]], open_mode: bool, strict: bool = False) -> None:
    """Run ``sequence``; with ``strict`` every step must find what it acts on (a
    connection, an invitation handed to the callee, an invite to cancel)."""
    now = 100.0
    cfg = SignalingSettings(
        app_certificate=CERT,
        open_mode=open_mode,
        grace_period=15.0,
        invitation_timeouts=InvitationTimeouts(30.0, 30.0, 60.0),
        rate_burst=30,
        rate_per_second=5.0,
        max_pending_invitations=2,
        max_detached_queue=8,
    )
    hub = Hub(cfg, wall_clock=lambda: WALL)
    conns: list[tuple[int, FakeConn]] = []
    conns_by_id: dict[int, FakeConn] = {}
    invites: list[tuple[int, str]] = []
    gw_events: list[tuple[str, dict[str, Any]]] = []
    gw = hub.register_participant("a1", QueueParticipant(gw_events.append))
    gw.register(["1005"], now)

    def pick(i: int) -> tuple[int, FakeConn] | None:
        live = [c for c in conns if c[1].closed is None]
        return live[i % len(live)] if live else None

    def sessions_seen(conn: FakeConn) -> list[str]:
        return [m["session"] for m in conn.sent if m["type"] == "ok" and "session" in m]

    for op in sequence:
        kind = op[0]
        if kind == "connect":
            conn = FakeConn()
            conns.append((hub.connect(conn, now), conn))
            conns_by_id[conns[-1][0]] = conn
        elif kind == "tick":
            now += op[1]
            hub.poll(now)
        elif kind == "answer":
            # The callee side answers something it was actually handed (or a stale one).
            handed = [
                (cid, m["inv"])
                for cid, c in conns
                for m in c.sent
                if m["type"] == "invitation" and c.closed is None
            ]
            assert handed or not strict, f"{op}: no invitation was handed to anyone"
            if handed:
                cid, inv = handed[op[1] % len(handed)]
                hub.receive(cid, frame(op[2], inv=inv, response="ok"), now)
        elif kind == "cancel":
            sent = [(cid, ref) for cid, ref in invites if conns_by_id[cid].closed is None]
            assert sent or not strict, f"{op}: no invite to cancel"
            if sent:
                cid, ref = sent[op[1] % len(sent)]
                hub.receive(cid, frame("cancel", ref=ref), now)
        elif kind == "gw":
            verb, i = op[1], op[2]
            incoming = [m["inv"] for _, m in gw_events if m["type"] == "invitation"]
            if verb == "invite":
                gw.invite("1005", UIDS[i % 3], now, ref=f"g{i % 3}")
            elif verb == "cancel":
                gw.cancel("1005", f"g{i % 3}", now)
            elif verb in ("present", "absent"):
                gw.set_present("1005", verb == "present", now)
            else:
                assert incoming or not strict, f"{op}: the gateway was handed nothing"
                if incoming:
                    getattr(gw, verb)("1005", incoming[i % len(incoming)], now)
        else:
            target = pick(op[1])
            assert target is not None or not strict, f"{op}: no live connection"
            if target is None:
                continue
            cid, conn = target
            if kind == "login":
                appid, uid, how = op[2], op[3], op[4]
                fields: dict[str, Any] = {"appid": appid, "uid": uid}
                if how == "good":
                    fields["token"] = mint_token(appid, uid, CERT, 60, WALL)
                elif how == "bad":
                    fields["token"] = mint_token(appid, uid, "wrong", 60, WALL)
                else:
                    seen = [s for c in conns for s in sessions_seen(c[1])]
                    fields["session"] = seen[-1] if seen else "none"
                hub.receive(cid, frame("login", **fields), now)
            elif kind == "logout":
                hub.receive(cid, frame("logout"), now)
            elif kind == "drop":
                hub.disconnect(cid, now)
                conn.closed = (1006, "drop")
            elif kind == "raw":
                hub.receive(cid, op[2], now)
            elif kind == "invite":
                invites.append((cid, op[3]))
                invite = frame("invite", callee=op[2], ref=op[3], content="x" * op[4])
                hub.receive(cid, invite, now)
            elif kind == "presence":
                hub.receive(cid, frame(op[2], uids=op[3]), now)
            elif kind == "message":
                hub.receive(cid, frame("message", to=op[2], text=op[3]), now)
        # The server drops a socket the hub closed.
        for cid, conn in conns:
            if conn.closed is not None and cid in hub._conns:
                hub.disconnect(cid, now)
        check_invariants(hub)
        check_delivery(hub, [m for _, c in conns for m in c.sent] + [m for _, m in gw_events])

    # Everyone leaves; after every deadline nothing may remain.
    for cid, _conn in conns:
        hub.disconnect(cid, now)
    gw.unregister("1005", now)
    now += 1000.0
    hub.poll(now)
    check_invariants(hub)
    assert hub.stats() == {
        "connections": 0,
        "sessions": 0,
        "detached": 0,
        "invitations": 0,
        "awaiting": 0,
        "watched": 0,
        "awaiting_login": 0,
    }
    assert hub.next_deadline() is None


# Three users logged in first, so that random steps meet each other often.
PRELUDE: list[tuple[Any, ...]] = [
    ("connect",),
    ("connect",),
    ("connect",),
    ("login", 0, "a1", "u0", "good"),
    ("login", 1, "a1", "u1", "good"),
    ("login", 2, "a1", "u2", "good"),
]


@given(st.lists(ops, min_size=10, max_size=80))
@settings(max_examples=400, deadline=None)
def test_random_sequences_with_tokens(sequence: list[tuple[Any, ...]]) -> None:
    play([*PRELUDE, *sequence], open_mode=False)


@given(st.lists(ops, min_size=10, max_size=80))
@settings(max_examples=200, deadline=None)
def test_random_sequences_open_mode(sequence: list[tuple[Any, ...]]) -> None:
    play([("connect",), ("connect",), *sequence], open_mode=True)


def test_a_full_call_leaves_nothing_behind() -> None:
    play(
        [
            ("connect",),
            ("connect",),
            ("login", 0, "a1", "u0", "good"),
            ("login", 1, "a1", "u1", "good"),
            ("presence", 0, "subscribe", ["u1"]),
            ("invite", 0, "u1", "r0", 0),
            ("answer", 1, "ack", 0),
            ("answer", 1, "accept", 0),
            ("invite", 1, "1005", "r1", 0),
            ("gw", "ack", 0),
            ("gw", "refuse", 0),
            ("drop", 1),
            ("tick", 5.0),
            ("login", 2, "a1", "u1", "resume"),
        ],
        open_mode=False,
        strict=True,
    )
