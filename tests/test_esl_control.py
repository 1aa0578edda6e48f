"""Control layer (gevent) against fake FreeSWITCH peers speaking recorded bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import gevent
import gevent.event
import gevent.server
import gevent.socket
import pytest
import structlog
from structlog.testing import capture_logs
from support.esl_fakes import (
    DTMF_EVENTS,
    ORIGINATED_UUID,
    FakeInboundSwitch,
    hold_open,
    read_command,
    replay_outbound,
)
from support.esl_transcripts import FIXTURES, read_transcript
from support.ports_and_waits import gevent_wait as _wait_until

from esl_bridge.esl import commands as cmd
from esl_bridge.esl.control import (
    DEFAULT_INBOUND_EVENTS,
    ConnectionState,
    EslAuthError,
    EslDisconnected,
    EslTimeout,
    InboundClient,
    OutboundServer,
    OutboundSession,
    UnicastNotSafe,
)
from esl_bridge.esl.protocol import DisconnectNotice, Event

pytestmark = pytest.mark.timeout(60)


# ------------------------------------------------------------------------------ outbound


class _Outbound:
    """An OutboundServer on an ephemeral port running ``handler`` for each call."""

    def __init__(self, handler: Callable[[OutboundSession], None], **kwargs: object) -> None:
        self.sessions: list[OutboundSession] = []
        self.errors: list[BaseException] = []
        self.done = gevent.event.Event()

        def wrapped(session: OutboundSession) -> None:
            self.sessions.append(session)
            try:
                handler(session)
            except BaseException as exc:
                self.errors.append(exc)
                raise
            finally:
                self.done.set()

        self.server = OutboundServer(wrapped, "127.0.0.1", 0, **kwargs)  # type: ignore[arg-type]
        self.address = self.server.start()

    def close(self) -> None:
        self.server.stop(timeout=1)


@pytest.fixture
def outbound() -> Iterator[Callable[..., _Outbound]]:
    servers: list[_Outbound] = []

    def make(handler: Callable[[OutboundSession], None], **kwargs: object) -> _Outbound:
        server = _Outbound(handler, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def _next_event(session: OutboundSession, name: str, timeout: float = 5.0) -> Event:
    with gevent.Timeout(timeout):
        while True:
            item = session.events.get()
            if item is None:
                raise EslDisconnected("closed before " + name)
            if isinstance(item, Event) and item.name == name:
                return item


def _main_call(session: OutboundSession) -> None:
    assert session.channel.callee_uid == "1002"
    assert not session.media_ready
    with pytest.raises(UnicastNotSafe):
        session.start_unicast("127.0.0.1", 9102, "127.0.0.1", 9103)
    session.answer()
    assert session.media_ready and session.channel.read_rate == 8000
    session.start_unicast("127.0.0.1", 9102, "127.0.0.1", 9103)
    digits = [_next_event(session, "DTMF").get("DTMF-Digit") for _ in range(3)]
    assert digits == ["1", "2", "#"]
    session.send_dtmf("456")
    reply = session.api("uuid_send_dtmf", session.uuid, "789")
    assert reply.ok and "sent DTMF 789" in reply.text
    assert session.wait_hangup(5)
    _next_event(session, "CHANNEL_HANGUP_COMPLETE")
    assert session.hangup_cause == "NORMAL_CLEARING"
    session.exit()


def _first_after_start(session: OutboundSession) -> None:
    _main_call(session)


def _pre_answer_call(session: OutboundSession) -> None:
    session.pre_answer()
    session.start_unicast("127.0.0.1", 9104, "127.0.0.1", 9105)
    session.answer()
    session.hangup("NORMAL_CLEARING")
    _next_event(session, "CHANNEL_HANGUP_COMPLETE")
    session.exit()


def _autoflush_call(session: OutboundSession) -> None:
    session.set_var("rtp_autoflush", "true")
    session.answer()
    session.start_unicast("127.0.0.1", 9104, "127.0.0.1", 9105)
    _next_event(session, "CHANNEL_HANGUP_COMPLETE")
    assert session.lingering  # the linger notice came before the hangup burst here
    session.exit()


def _simple_call(session: OutboundSession) -> None:
    session.answer()
    session.start_unicast("127.0.0.1", 9106, "127.0.0.1", 9107)
    _next_event(session, "CHANNEL_HANGUP_COMPLETE")
    session.exit()


def _originated_quoted(session: OutboundSession) -> None:
    # The leg arrives answered (Answer-State: answered, read codec PCMU/8000).
    assert session.channel.direction == "outbound" and session.media_ready
    session.start_unicast("127.0.0.1", 9106, "127.0.0.1", 9107)
    assert _next_event(session, "DTMF").get("DTMF-Digit") == "7"
    _next_event(session, "CHANNEL_HANGUP_COMPLETE")
    session.exit()


@pytest.mark.parametrize(
    ("name", "handler"),
    [
        ("esl_outbound_main_call.txt", _main_call),
        ("esl_outbound_originate_socket_quoted_async_full.txt", _originated_quoted),
        ("esl_outbound_main_call_first_after_fs_start.txt", _first_after_start),
        ("esl_outbound_pre_answer_early_media_app_hangup.txt", _pre_answer_call),
        ("esl_outbound_rtp_autoflush_phone_dtmf.txt", _autoflush_call),
        ("esl_outbound_simple_call_no_dtmf.txt", _simple_call),
    ],
)
def test_outbound_replays_recorded_call(outbound, name, handler) -> None:
    server = outbound(handler)
    replay = gevent.spawn(replay_outbound, server.address, name)
    result = replay.get(timeout=20)
    assert server.done.wait(5)
    assert server.errors == []
    assert result.error is None and result.finished
    assert result.sent_by_app == result.expected  # byte for byte (minus Event-UUID tags)
    session = server.sessions[0]
    assert _wait_until(lambda: session.closed)
    assert server.server.active_sessions == 0


def test_unicast_refused_before_answer(outbound) -> None:
    """The crash transcript: the session refuses instead of crashing the switch."""
    refused: list[bool] = []

    def handler(session: OutboundSession) -> None:
        _next_event(session, "CHANNEL_PARK")
        with pytest.raises(UnicastNotSafe):
            session.start_unicast("127.0.0.1", 9104, "127.0.0.1", 9105)
        refused.append(True)

    server = outbound(handler)
    name = "esl_outbound_unicast_before_answer_FS_CRASH.txt"
    result = gevent.spawn(replay_outbound, server.address, name, until_seq=7).get(timeout=10)
    assert refused == [True]
    assert result.sent_by_app[:3] == [cmd.CONNECT, cmd.MYEVENTS, cmd.linger()]
    assert all(b"unicast" not in sent for sent in result.sent_by_app)
    assert result.sent_by_app[3:] == [cmd.EXIT]  # the server ends the session


def test_static_mode_socket_is_reported(outbound) -> None:
    seen: list[tuple[bool, str | None]] = []

    def handler(session: OutboundSession) -> None:
        seen.append((session.channel.async_full, session.channel.socket_mode))

    server = outbound(handler)
    name = "esl_outbound_originate_socket_unquoted_static_mode.txt"
    with capture_logs() as logs:
        gevent.spawn(replay_outbound, server.address, name, until_seq=6).get(timeout=10)
    assert seen == [(False, "static")]
    events = {entry["event"] for entry in logs}
    assert {"esl.outbound.not_async_full", "esl.outbound.linger_refused"} <= events


def _fake_switch_outbound(
    address: tuple[str, int], after_linger: Callable[[gevent.socket.socket, bytearray], None]
) -> None:
    """Connect like FreeSWITCH, do the recorded handshake, then ``after_linger``."""
    records = read_transcript(FIXTURES / "esl_outbound_main_call.txt").records
    fs = {r.seq: r.data for r in records}
    sock = gevent.socket.create_connection(address)
    buf = bytearray()
    try:
        assert read_command(sock, buf, 5) == cmd.CONNECT
        sock.sendall(fs[2])
        assert read_command(sock, buf, 5) == cmd.MYEVENTS
        sock.sendall(fs[4])
        assert read_command(sock, buf, 5) == cmd.linger()
        sock.sendall(fs[6])
        after_linger(sock, buf)
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("behaviour", "error", "match"),
    [
        ("silent", EslTimeout, "no reply"),
        ("drop", EslDisconnected, "closed by FreeSWITCH"),
        ("garbage", EslDisconnected, "protocol error"),
        ("truncated", EslDisconnected, "middle of a frame"),
        ("no_complete", EslTimeout, "did not complete"),
    ],
)
def test_outbound_faults_give_errors_not_hangs(outbound, behaviour, error, match) -> None:
    caught: list[BaseException] = []

    def handler(session: OutboundSession) -> None:
        try:
            session.answer()
        except Exception as exc:
            caught.append(exc)

    def after(sock: gevent.socket.socket, buf: bytearray) -> None:
        read_command(sock, buf, 5)  # the answer
        if behaviour == "silent":
            gevent.sleep(1.0)
        elif behaviour == "garbage":
            sock.sendall(b"Content-Type: command/reply\n\x00\x01 no colon here\n\n")
            gevent.sleep(0.5)
        elif behaviour == "no_complete":
            sock.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
            gevent.sleep(1.0)
        elif behaviour == "truncated":
            sock.sendall(b"Content-Type: api/response\nContent-Length: 40\n\n+OK")
            sock.shutdown(2)

    server = outbound(handler, command_timeout=0.3)
    gevent.spawn(_fake_switch_outbound, server.address, after).get(timeout=10)
    assert server.done.wait(5)
    assert len(caught) == 1 and isinstance(caught[0], error)
    assert match in str(caught[0])
    assert _wait_until(lambda: server.sessions[0].closed)


def test_outbound_timeout_closes_the_connection_the_switch_keeps_open(outbound) -> None:
    """A command with no reply closes its connection: a late reply would otherwise be taken
    for the reply to the next command. The switch here never closes the socket itself."""
    caught: list[BaseException] = []
    held: list[tuple[list[bytes], bool]] = []

    def handler(session: OutboundSession) -> None:
        with pytest.raises(EslTimeout, match="no reply") as timed_out:
            session.answer()
        caught.append(timed_out.value)
        with pytest.raises(EslDisconnected, match="not connected") as refused:
            session.api("status")  # not sent on a connection whose replies are out of step
        caught.append(refused.value)

    def after(sock: gevent.socket.socket, buf: bytearray) -> None:
        assert read_command(sock, buf, 5) is not None  # the answer, never answered
        held.append(hold_open(sock, buf, 30))

    # 1 s: the handshake gets its replies at once, with room on a loaded machine.
    server = outbound(handler, command_timeout=1.0)
    gevent.spawn(_fake_switch_outbound, server.address, after).get(timeout=45)
    assert server.done.wait(5)
    # The bridge closed the connection and sent nothing more on it (no api, no exit).
    assert held == [([], True)]
    assert server.errors == []
    assert [type(e) for e in caught] == [EslTimeout, EslDisconnected]
    assert server.sessions[0].closed


def test_outbound_events_queue_ends_with_none(outbound) -> None:
    """The switch's events reach the queue in order, and None follows once it closes."""
    items: list[object] = []

    def handler(session: OutboundSession) -> None:
        session.execute("answer")  # the transcript's next step; its events follow
        while True:
            item = session.events.get(timeout=10)
            items.append(item)
            if item is None:
                return

    server = outbound(handler)
    gevent.spawn(
        replay_outbound, server.address, "esl_outbound_simple_call_no_dtmf.txt", until_seq=11
    ).get(timeout=20)
    assert server.done.wait(10)
    assert server.errors == []
    names = [i.name if isinstance(i, Event) else i for i in items]
    # The events of records 9-11 of the transcript, in the order recorded, then None.
    assert names == [
        "CHANNEL_EXECUTE",
        "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE_COMPLETE",
        None,
    ]


def test_greenswitch_free_accept_path_handles_many_calls(outbound) -> None:
    """Several sockets at once: every call reaches the handler (no accept polling)."""
    calls: list[str] = []

    def handler(session: OutboundSession) -> None:
        calls.append(session.uuid)

    server = outbound(handler)

    def one() -> None:
        _fake_switch_outbound(server.address, lambda s, b: read_command(s, b, 2))

    gevent.joinall([gevent.spawn(one) for _ in range(10)], timeout=10, raise_error=True)
    assert len(calls) == 10


# ------------------------------------------------------------------------------- inbound


@pytest.fixture
def switch() -> Iterator[FakeInboundSwitch]:
    fake = FakeInboundSwitch()
    fake.start()
    yield fake
    fake.stop()


def _client(switch: FakeInboundSwitch, **kwargs: object) -> InboundClient:
    options: dict[str, object] = {
        "command_timeout": 0.5,
        "connect_timeout": 2.0,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
    }
    options.update(kwargs)
    return InboundClient("127.0.0.1", switch.port, "ClueCon", **options)  # type: ignore[arg-type]


def test_inbound_connect_subscribe_and_commands(switch) -> None:
    events: list[Event] = []
    states: list[ConnectionState] = []
    client = _client(switch, on_event=events.append, on_state=states.append)
    try:
        client.connect()
        assert client.connected
        assert switch.received[:2] == [cmd.auth("ClueCon"), cmd.event_plain(DEFAULT_INBOUND_EVENTS)]
        status = client.api("status")
        assert status.ok and "is ready" in status.body

        arg = cmd.originate_arg(
            cmd.user_endpoint("1001"), cmd.park_app(), {"origination_caller_id_number": "1005"}
        )
        result = client.originate(arg, timeout=5)
        assert result.ok and result.uuid == ORIGINATED_UUID and result.cause is None
        assert client.live_calls == {ORIGINATED_UUID}
        sent = switch.commands("bgapi originate")[0]
        assert sent.startswith(f"bgapi originate {arg}\nJob-UUID: ".encode())

        client.unicast(ORIGINATED_UUID, "127.0.0.1", 9200, "127.0.0.1", 9201)
        assert switch.commands("sendmsg")[-1] == cmd.sendmsg_unicast(
            "127.0.0.1", 9200, "127.0.0.1", 9201, uuid=ORIGINATED_UUID
        )
        switch.push(DTMF_EVENTS)
        assert _wait_until(
            lambda: [e.get("DTMF-Digit") for e in events if e.name == "DTMF"] == ["3", "4"]
        )
        assert client.uuid_send_dtmf(ORIGINATED_UUID, "12").ok
        client.execute(ORIGINATED_UUID, "send_dtmf", "56")
        assert client.uuid_kill(ORIGINATED_UUID).ok
        assert _wait_until(lambda: not client.live_calls)
        assert _wait_until(lambda: events[-1].name == "CHANNEL_HANGUP_COMPLETE")
        names = [e.name for e in events]
        assert names[:3] == ["CHANNEL_CREATE", "CHANNEL_ANSWER", "BACKGROUND_JOB"]
    finally:
        client.stop()
    assert states[:2] == [ConnectionState.CONNECTING, ConnectionState.CONNECTED]
    assert states[-1] is ConnectionState.STOPPED
    assert switch.received[-1] == cmd.EXIT


@pytest.mark.parametrize("honour", [True, False])
def test_originate_results(switch, honour: bool) -> None:
    switch.honour_job_uuid = honour  # False: the job id comes from the reply only
    client = _client(switch)
    try:
        client.connect()
        assert client.originate("user/1001 &park()", timeout=5).uuid == ORIGINATED_UUID
        switch.originate_ok = False
        failed = client.originate("user/1019 &park()", timeout=5)
        assert not failed.ok and failed.cause == "USER_NOT_REGISTERED" and failed.uuid is None
        assert client.live_calls == {ORIGINATED_UUID}
    finally:
        client.stop()


def test_auth_failure_is_one_clear_error(switch) -> None:
    switch.password = "other"
    with capture_logs() as logs:
        client = _client(switch)
        with pytest.raises(EslAuthError, match="authentication failed"):
            client.connect()
        assert client.state is ConnectionState.AUTH_FAILED
        # No retry storm against a wrong password: the client gives up by itself (its
        # supervisor ends without being stopped), after one connection.
        supervisor = client._supervisor
        assert supervisor is not None
        supervisor.join(timeout=10)
        assert supervisor.dead, "the client keeps reconnecting after a refused password"
        assert client.state is ConnectionState.AUTH_FAILED
        client.stop()
    assert switch.connections == 1
    assert "ClueCon" not in repr(logs) and "ClueCon" not in repr(client)
    assert [e["event"] for e in logs].count("esl.inbound.state") >= 2


def test_commands_fail_fast_when_disconnected(switch) -> None:
    client = _client(switch)
    with pytest.raises(EslDisconnected, match="not connected"):
        client.api("status")
    client.stop()


def test_silent_switch_gives_timeout_then_client_recovers(switch) -> None:
    switch.silent.add("api uuid_kill")
    client = _client(switch)
    try:
        client.connect()
        with pytest.raises(EslTimeout, match="uuid_kill"):
            client.uuid_kill(ORIGINATED_UUID)
        assert _wait_until(lambda: client.connections == 2 and client.connected)
        assert len(switch.commands("event plain")) == 2  # resubscribed
        assert client.api("status").ok
    finally:
        client.stop()


def test_drop_mid_command_reports_lost_calls(switch) -> None:
    lost: list[list[str]] = []
    switch.drop_on.add("api uuid_send_dtmf")
    client = _client(switch, on_calls_lost=lost.append)
    try:
        client.connect()
        assert client.originate("user/1001 &park()", timeout=5).ok
        with pytest.raises(EslDisconnected):
            client.uuid_send_dtmf(ORIGINATED_UUID, "1")
        assert _wait_until(lambda: lost == [[ORIGINATED_UUID]])
        assert not client.live_calls
        assert _wait_until(lambda: client.connected and client.connections == 2)
    finally:
        client.stop()


def test_switch_restart_reconnects_and_resubscribes(switch) -> None:
    states: list[ConnectionState] = []
    client = _client(switch, on_state=states.append)
    try:
        client.connect()
        port = switch.port
        switch.stop()
        assert _wait_until(lambda: not client.connected)
        with pytest.raises(EslDisconnected):
            client.api("status")
        gevent.sleep(0.3)  # a few refused attempts while the switch is down
        restarted = FakeInboundSwitch(port=port)
        restarted.start()
        try:
            client.wait_connected(5)
            assert restarted.received[:2] == [
                cmd.auth("ClueCon"),
                cmd.event_plain(DEFAULT_INBOUND_EVENTS),
            ]
            assert client.api("status").ok
        finally:
            client.stop()
            restarted.stop()
    finally:
        client.stop()
    assert ConnectionState.DISCONNECTED in states
    assert states.count(ConnectionState.CONNECTED) == 2


def test_a_switch_that_refuses_is_asked_again_at_the_probe_interval(switch) -> None:
    """While nothing listens, the wait between tries stays at the probe interval (it had
    grown to 6.4 s by the time a restarted FreeSWITCH answered), and the state stays
    DISCONNECTED instead of logging every try."""
    states: list[ConnectionState] = []
    client = _client(switch, on_state=states.append, backoff_max=30.0, reconnect_probe=0.3)
    waits: list[float] = []

    def recorded_sleep(seconds: float) -> None:
        waits.append(seconds)
        gevent.sleep(0.01)  # the test does not wait the real interval

    client._sleep = recorded_sleep
    try:
        client.connect()
        port = switch.port
        switch.stop()
        assert _wait_until(lambda: len(waits) >= 12)  # far past where a backoff doubles
        assert set(waits[1:]) == {0.3}, waits
        # connecting, connected, disconnected, one more try, then quiet while it refuses
        assert states.count(ConnectionState.CONNECTING) == 2, states
        restarted = FakeInboundSwitch(port=port)
        restarted.start()
        try:
            client.wait_connected(5)
            assert client.api("status").ok
        finally:
            client.stop()
            restarted.stop()
    finally:
        client.stop()


def test_garbage_frame_is_a_clear_error_and_client_goes_on(switch) -> None:
    switch.garbage_on.add("api garbage")
    with capture_logs() as logs:
        client = _client(switch)
        try:
            client.connect()
            with pytest.raises(EslDisconnected, match=r"protocol error.*Content-Length"):
                client.api("garbage")
            assert _wait_until(lambda: client.connected and client.connections == 2)
            assert client.api("status").ok
        finally:
            client.stop()
    errors = [e for e in logs if e["event"] == "esl.protocol_error"]
    assert errors and "banana" in errors[0]["error"]


def test_event_callback_may_issue_commands(switch) -> None:
    answers: list[bool] = []
    holder: dict[str, InboundClient] = {}

    def on_event(event: Event) -> None:
        if event.name == "DTMF":
            answers.append(holder["client"].api("status").ok)

    client = _client(switch, on_event=on_event)
    holder["client"] = client
    try:
        client.connect()
        switch.push(DTMF_EVENTS)
        assert _wait_until(lambda: answers == [True, True])
    finally:
        client.stop()


def test_no_password_in_logs_or_repr(switch) -> None:
    structlog.reset_defaults()
    with capture_logs() as logs:
        client = _client(switch)
        client.connect()
        client.api("status")
        client.stop()
    assert "ClueCon" not in repr(logs)
    assert all("ClueCon" not in str(v) for e in logs for v in e.values())


def test_disconnect_notice_on_outbound_is_queued(outbound) -> None:
    notices: list[DisconnectNotice] = []

    def handler(session: OutboundSession) -> None:
        session.answer()
        session.start_unicast("127.0.0.1", 9106, "127.0.0.1", 9107)
        while not (notices and session.hung_up):
            item = session.events.get(timeout=5)
            if isinstance(item, DisconnectNotice):
                notices.append(item)
        session.exit()

    server = outbound(handler)
    name = "esl_outbound_simple_call_no_dtmf.txt"
    result = gevent.spawn(replay_outbound, server.address, name).get(timeout=10)
    assert server.done.wait(5) and result.finished
    assert [n.disposition for n in notices] == ["linger"]


def test_background_job_wait_is_bounded(switch) -> None:
    switch.send_job_events = False
    client = _client(switch)
    try:
        client.connect()
        with pytest.raises(EslTimeout, match="BACKGROUND_JOB"):
            client.originate("user/1001 &park()", timeout=0.3)
        assert client.connected  # the link is in sync: no reconnect needed
        waiting = gevent.spawn(client.originate, "user/1001 &park()", timeout=30)

        def job_pending() -> bool:
            # The second bgapi reached the switch and its reply was read: only the
            # BACKGROUND_JOB is awaited now (waited for, not assumed after a sleep).
            conn = client._conn
            return (
                len(switch.commands("bgapi originate")) == 2
                and conn is not None
                and not conn._pending
            )

        assert _wait_until(job_pending, 10)
        switch.stop()  # FreeSWITCH goes away while the job is pending
        with pytest.raises(EslDisconnected, match="connection lost while waiting"):
            waiting.get(timeout=5)
    finally:
        client.stop()


def test_a_huge_unexpected_connect_reply_is_logged_bounded(outbound) -> None:
    """A peer answering connect with a large header map that is not channel data: the
    session fails with one warning whose peer text is cut, not the whole map."""
    headers = "".join(f"X-Header-{i}: {'v' * 20}\n" for i in range(6000))
    reply = f"Content-Type: command/reply\nReply-Text: +OK\n{headers}\n".encode()

    def peer(address: tuple[str, int]) -> None:
        sock = gevent.socket.create_connection(address)
        buf = bytearray()
        try:
            assert read_command(sock, buf, 5) == cmd.CONNECT
            sock.sendall(reply)
            while sock.recv(65536):  # until the gateway ends the session
                pass
        except ConnectionResetError:  # it may close before reading all of the reply
            pass
        finally:
            sock.close()

    server = outbound(lambda session: None)
    with capture_logs() as logs:
        gevent.spawn(peer, server.address).get(timeout=20)
    failed = [entry for entry in logs if entry["event"] == "esl.outbound.session_failed"]
    assert len(failed) == 1
    error = failed[0]["error"]
    assert error.startswith("unexpected connect reply: ")
    assert len(error) <= 200 + len("...(999999 bytes)")
    assert error.endswith(" bytes)")
    assert not server.sessions  # the handler never saw it
