"""The hub's cluster side (esl_bridge/signaling/hub.py with esl_bridge/cluster/node.py),
without Redis: hubs joined by an in-memory bus that carries what each ClusterNode
queued, in order, to the others' ``_dispatch``, as the pub/sub connection would.

Deterministic (fake clocks, the bus pumped by the test): two simultaneous logins of
one uid on two processes leave exactly the later one; invitations both ways with
cancel, refusal and acceptance; a callee moving process between delivery and answer;
a process dying under a SIP-like call (the browser hears EndCall from the gateway
uid) and under a pending invitation (it waits, then reaches the callee's new process);
peer messages to a gateway uid go to the process holding the call.
"""

from __future__ import annotations

import json
from typing import Any

from esl_bridge import config
from esl_bridge.cluster.node import ClusterNode
from esl_bridge.core.invitations import LocalState, RemoteState
from esl_bridge.signaling.hub import Hub, QueueParticipant
from esl_bridge.signaling.settings import SignalingSettings

APPID = "app"
SETTINGS = config.from_text("[cluster]\nredis_url = redis://127.0.0.1:1/0\n").cluster


class Conn:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("type") == kind]


class Process:
    """One gateway process: a hub and its (never started) ClusterNode."""

    def __init__(self, net: Net, member: str, wall: list[float]) -> None:
        self.net = net
        self.member = member
        self.hub = Hub(SignalingSettings(appid=APPID, open_mode=True), wall_clock=lambda: wall[0])
        self.node = ClusterNode(SETTINGS, APPID, member)
        self.node._joined = True  # as after a join; the test carries its messages
        self.hub.attach_cluster(APPID, self.node)
        self.node.attach(self.hub, lambda: None)
        self._next = 0

    def login(self, uid: str) -> tuple[int, Conn]:
        conn = Conn()
        cid = self.hub.connect(conn, self.net.now)
        self.send(cid, "login", appid=APPID, uid=uid)
        assert conn.sent[-1]["type"] == "ok", conn.sent[-1]
        return cid, conn

    def send(self, cid: int, kind: str, **fields: Any) -> None:
        self._next += 1
        frame = json.dumps({"v": 1, "id": self._next, "type": kind, **fields})
        self.hub.receive(cid, frame, self.net.now)


class Net:
    def __init__(self, *members: str) -> None:
        self.now = 1000.0
        self.wall = [5000.0]
        self.procs = {m: Process(self, m, self.wall) for m in members}

    def pump(self) -> int:
        """Carry every queued message (all processes, in order) until none is left."""
        carried = 0
        while any(p.node._pending for p in self.procs.values()):
            for proc in self.procs.values():
                pending = list(proc.node._pending)
                proc.node._pending.clear()
                for kind, target, message in pending:
                    if kind != "publish":
                        continue  # the Redis hash: not read here
                    for other in self.procs.values():
                        if other is proc or target not in (None, other.member):
                            continue
                        other.node._dispatch({**message, "from": proc.member})
                        carried += 1
        return carried

    def gone(self, member: str) -> None:
        """``member`` died: the others' census finds it (ClusterNode._member_gone)."""
        dead = self.procs.pop(member)
        dead.node._pending.clear()
        for proc in self.procs.values():
            proc.node._member_gone(member, self.now, reason="expired")


def test_two_simultaneous_logins_leave_exactly_the_later_one() -> None:
    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    net.wall[0] = 5000.0
    _, on_a = a.login("alice")
    _, on_b = b.login("alice")  # same stamp: the member id decides ("b" > "a")
    net.pump()
    assert on_a.closed == (4001, "TAKEOVER")
    assert on_b.closed is None
    assert a.hub.is_online(APPID, "alice") and b.hub.is_online(APPID, "alice")
    assert a.node.where("alice") == "b" and b.node.where("alice") is None

    net.wall[0] = 6000.0
    _, again_on_a = a.login("alice")  # later: takes it back
    net.pump()
    assert on_b.closed == (4001, "TAKEOVER")
    assert again_on_a.closed is None
    assert b.node.where("alice") == "a"


def test_takeover_across_processes_shows_no_presence_flap() -> None:
    net = Net("a", "b", "c")
    a, b, c = net.procs["a"], net.procs["b"], net.procs["c"]
    _, alice_a = a.login("alice")
    bob_cid, bob = c.login("bob")
    net.pump()
    c.send(bob_cid, "subscribe", uids=["alice"])
    assert bob.sent[-1]["peers"] == {"alice": True}
    watcher_cid, watcher = a.login("watcher")  # on the process losing alice
    a.send(watcher_cid, "subscribe", uids=["alice"])
    net.wall[0] += 1
    alice_b_cid, _ = b.login("alice")
    net.pump()
    assert alice_a.closed == (4001, "TAKEOVER")
    assert bob.of("peer_status") == []  # online all along
    assert watcher.of("peer_status") == []  # here too
    b.send(alice_b_cid, "logout")
    net.pump()
    assert [m["peers"] for m in bob.of("peer_status")] == [{"alice": "OFFLINE"}]


def test_invitations_both_ways_accept_refuse_cancel() -> None:
    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    alice_cid, alice = a.login("alice")
    bob_cid, bob = b.login("bob")
    net.pump()
    a.send(alice_cid, "invite", ref="r1", callee="bob", content="x")
    net.pump()
    [inv] = bob.of("invitation")
    assert (inv["caller"], inv["content"]) == ("alice", "x")
    b.send(bob_cid, "ack", inv=inv["inv"])
    b.send(bob_cid, "accept", inv=inv["inv"], response="ok")
    net.pump()
    states = [m["state"] for m in alice.of("local_state")]
    assert states == [
        LocalState.SENT_TO_REMOTE,
        LocalState.RECEIVED_BY_REMOTE,
        LocalState.ACCEPTED_BY_REMOTE,
    ]
    assert [m["state"] for m in bob.of("remote_state")][-1] == RemoteState.ACCEPTED
    assert b.hub._mirrors == {} and a.hub._invitations == {}  # both sides forgot it

    b.send(bob_cid, "invite", ref="r2", callee="alice")
    net.pump()
    inv = alice.of("invitation")[-1]
    a.send(alice_cid, "refuse", inv=inv["inv"], response="no")
    net.pump()
    assert bob.of("local_state")[-1]["state"] == LocalState.REFUSED_BY_REMOTE

    b.send(bob_cid, "invite", ref="r3", callee="alice")
    net.pump()
    inv = alice.of("invitation")[-1]
    b.send(bob_cid, "cancel", ref="r3")
    net.pump()
    assert alice.of("remote_state")[-1]["state"] == RemoteState.CANCELED
    a.send(alice_cid, "accept", inv=inv["inv"])  # too late: the API error of an ended one
    assert alice.sent[-1]["type"] == "error"
    assert a.hub._mirrors == {} and b.hub._invitations == {}


def test_callee_moving_process_gets_the_invitation_on_its_new_process() -> None:
    net = Net("a", "b", "c")
    a, b, c = net.procs["a"], net.procs["b"], net.procs["c"]
    alice_cid, alice = a.login("alice")
    _, bob_b = b.login("bob")
    net.pump()
    a.send(alice_cid, "invite", ref="r1", callee="bob")
    net.pump()
    assert len(bob_b.of("invitation")) == 1
    net.wall[0] += 1
    bob_c_cid, bob_c = c.login("bob")  # before acknowledging: moves to c
    net.pump()
    assert bob_b.closed == (4001, "TAKEOVER")
    [inv] = bob_c.of("invitation")
    c.send(bob_c_cid, "accept", inv=inv["inv"])
    net.pump()
    assert alice.of("local_state")[-1]["state"] == LocalState.ACCEPTED_BY_REMOTE


def test_a_dead_process_ends_its_gateway_calls_for_browsers_elsewhere() -> None:
    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    events: list[tuple[str, dict[str, Any]]] = []
    handle = b.hub.register_participant(APPID, QueueParticipant(events.append))
    handle.register(["gateway"], net.now)
    a_local = a.hub.register_participant(APPID, QueueParticipant(lambda _: None))
    a_local.register(["gateway"], net.now)
    bob_cid, bob = a.login("bob")
    net.pump()
    # b's gateway calls bob (a SIP call whose socket landed on b).
    reply = handle.invite("gateway", "bob", net.now, content="{}", channel_id="ch1")
    assert reply["type"] == "ok"
    net.pump()
    [inv] = bob.of("invitation")
    a.send(bob_cid, "accept", inv=inv["inv"])
    net.pump()
    # bob's messages to "gateway" go to b (the call's process), not a's own gateway uid.
    a.send(bob_cid, "message", to="gateway", text='{"Cmd":"CallState"}')
    net.pump()
    assert ("gateway", {"type": "message", "from": "bob"}) in [
        (uid, {"type": m["type"], "from": m.get("from")}) for uid, m in events
    ]
    net.gone("b")
    [end] = [m for m in bob.of("message") if m["from"] == "gateway"]
    assert json.loads(end["text"]) == {"Cmd": "EndCall"}
    assert bob.sent[-1] is end  # told once


def test_pending_invitation_waits_when_the_callee_process_dies_then_reaches_it() -> None:
    net = Net("a", "b", "c")
    a, b, c = net.procs["a"], net.procs["b"], net.procs["c"]
    alice_cid, alice = a.login("alice")
    a.send(alice_cid, "subscribe", uids=["bob"])
    b.login("bob")
    net.pump()
    a.send(alice_cid, "invite", ref="r1", callee="bob")
    net.pump()
    net.gone("b")
    assert a.hub._invitations  # still pending: sent, not acknowledged
    assert [m["peers"] for m in alice.of("peer_status")][-1] == {"bob": "OFFLINE"}
    assert not a.hub.is_online(APPID, "bob")
    bob_c_cid, bob_c = c.login("bob")
    net.pump()
    [inv] = bob_c.of("invitation")
    c.send(bob_c_cid, "accept", inv=inv["inv"])
    net.pump()
    assert alice.of("local_state")[-1]["state"] == LocalState.ACCEPTED_BY_REMOTE


def test_a_mirror_of_a_dead_caller_fails_on_the_callee_side() -> None:
    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    alice_cid, _ = a.login("alice")
    _, bob = b.login("bob")
    net.pump()
    a.send(alice_cid, "invite", ref="r1", callee="bob")
    net.pump()
    assert b.hub._mirrors
    net.gone("a")
    failure = bob.of("remote_state")[-1]
    assert failure["state"] == RemoteState.FAILURE
    assert failure["reason_name"] == "PEER_OFFLINE"
    assert b.hub._mirrors == {}


def _reconnect(proc: Process, uid: str, session: str) -> tuple[int, Conn]:
    """A new WebSocket on ``proc`` that resumes ``session`` (the reply may come later)."""
    conn = Conn()
    cid = proc.hub.connect(conn, proc.net.now)
    proc.send(cid, "login", appid=APPID, uid=uid, session=session)
    return cid, conn


def test_a_resume_landing_on_another_process_keeps_the_session_and_its_queue() -> None:
    """run --workers N spreads reconnects over the processes: a resume that lands on b
    while alice's session is on a is served by a through the bus, queue and all."""
    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    alice_cid, alice = a.login("alice")
    sid = alice.sent[-1]["session"]
    bob_cid, bob = b.login("bob")
    net.pump()
    a.hub.disconnect(alice_cid, net.now)  # her network drops; the session waits
    b.send(bob_cid, "message", to="alice", text="while you were away")
    net.pump()
    b.send(bob_cid, "invite", ref="r1", callee="alice", content="call?")
    net.pump()
    new_cid, again = _reconnect(b, "alice", sid)
    assert again.sent == []  # b asks a first
    net.pump()
    ok, *queued = again.sent
    assert (ok["type"], ok["resumed"], ok["session"]) == ("ok", True, sid)
    assert [m["type"] for m in queued] == ["message", "invitation"]
    assert queued[0]["text"] == "while you were away"
    assert a.node.where("alice") is None and b.node.where("alice") == "a"  # still a's
    # Her frames go to a, a's answers come back: she accepts bob's invitation.
    b.send(new_cid, "accept", inv=queued[1]["inv"], response="yes")
    net.pump()
    assert bob.of("local_state")[-1]["state"] == LocalState.ACCEPTED_BY_REMOTE
    after = again.sent[3:]  # the reply to her accept and her side's state, relayed
    assert after[0]["type"] == "ok"
    states = [m["state"] for m in after if m["type"] == "remote_state"]
    assert states == [RemoteState.ACCEPT_SENT_TO_LOCAL, RemoteState.ACCEPTED]
    b.send(bob_cid, "message", to="alice", text="hello again")
    net.pump()
    assert again.of("message")[-1]["text"] == "hello again"
    assert bob.of("peer_status") == []  # she never went offline
    # Her socket on b closes: a detaches the session, which then waits its grace period.
    b.hub.disconnect(new_cid, net.now)
    net.pump()
    assert a.hub._relayed == {} and a.hub.is_online(APPID, "alice")
    a.hub.poll(a.node.clock() + 3600)  # (the bus hands the hub the node's clock)
    net.pump()
    assert not b.hub.is_online(APPID, "alice")


def test_a_resume_with_a_wrong_session_id_is_an_ordinary_login_elsewhere() -> None:
    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    _, alice = a.login("alice")
    net.pump()
    net.wall[0] += 1
    _, again = _reconnect(b, "alice", "not-her-session")
    net.pump()
    assert again.sent[0]["type"] == "ok" and again.sent[0]["resumed"] is False
    assert alice.closed == (4001, "TAKEOVER")  # the later login wins, as always
    assert a.hub._relayed == {} and b.hub.is_online(APPID, "alice")


def test_relayed_connections_are_cut_when_either_process_or_redis_goes() -> None:
    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    alice_cid, alice = a.login("alice")
    sid = alice.sent[-1]["session"]
    net.pump()
    a.hub.disconnect(alice_cid, net.now)
    _, again = _reconnect(b, "alice", sid)
    net.pump()
    assert again.sent[0]["resumed"] is True
    net.gone("a")  # a dies: b closes her socket so that she reconnects (and logs in)
    assert again.closed == (1001, "SERVER_SHUTDOWN")

    net = Net("a", "b")
    a, b = net.procs["a"], net.procs["b"]
    alice_cid, alice = a.login("alice")
    sid = alice.sent[-1]["session"]
    net.pump()
    a.hub.disconnect(alice_cid, net.now)
    _, again = _reconnect(b, "alice", sid)
    net.pump()
    assert a.hub._relayed
    b.hub.cluster_down(net.now)  # Redis gone: nothing can cross any more
    a.hub.cluster_down(net.now)
    assert again.closed == (1001, "SERVER_SHUTDOWN")
    assert a.hub._relayed == {} and a.hub.is_online(APPID, "alice")  # waits for her
