"""Fake FreeSWITCH ESL peers for the control-layer tests (raw gevent sockets).

* :class:`FakeInboundSwitch` listens like ``mod_event_socket`` on 127.0.0.1 and answers
  with bytes cut from the recorded ``esl_inbound_main`` transcript; faults on demand
  (no reply, drop, garbage, refuse the password).
* :func:`hold_open` keeps a connection open and answers nothing, as a hung switch does.
* :func:`replay_outbound` connects to an outbound socket server the way FreeSWITCH's
  ``socket`` application does and replays a recorded ``esl_outbound_*`` transcript,
  checking that the application sends the recorded commands in order.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import gevent
import gevent.server
import gevent.socket

from support.esl_transcripts import FIXTURES, read_transcript

_MAIN = {r.seq: r.data for r in read_transcript(FIXTURES / "esl_inbound_main.txt").records}
_AUTH_FAIL = {
    r.seq: r.data for r in read_transcript(FIXTURES / "esl_inbound_auth_fail.txt").records
}

GREETING = _MAIN[1]
AUTH_OK = _MAIN[3]
AUTH_FAIL = _AUTH_FAIL[3]  # -ERR invalid + disconnect notice
API_STATUS = _MAIN[5]
API_UNKNOWN = _MAIN[7]
EVENT_OK = _MAIN[9]
RECORDED_JOB = "fe6e5e74-00d3-4a67-b8ea-9ff828d06697"
ORIGINATE_OK_EVENTS = _MAIN[12] + _MAIN[13]  # CHANNEL_CREATE, CHANNEL_ANSWER, BACKGROUND_JOB
ORIGINATED_UUID = "664e6576-b42e-49ab-95e9-0e0a20170d42"
_FAILED_JOB = "bb2114ea-965f-436b-a55a-e18a0f5876c2"
ORIGINATE_FAIL_EVENT = _MAIN[28][_MAIN[28].index(b"Content-Length") :]
SENDMSG_OK = _MAIN[15]
DTMF_EVENTS = _MAIN[16] + _MAIN[17]
SEND_DTMF_OK = _MAIN[19]
KILL_OK = _MAIN[23]
HANGUP_COMPLETE = _MAIN[24]
EXIT_OK = _MAIN[38] + _MAIN[39]
NOT_FOUND = b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"


def read_command(sock: gevent.socket.socket, buf: bytearray, timeout: float) -> bytes | None:
    """One ESL command (ends with an empty line) from ``sock``; None on EOF/timeout."""
    with gevent.Timeout(timeout, False):
        while b"\n\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return None
            buf += data
        end = buf.index(b"\n\n") + 2
        command = bytes(buf[:end])
        del buf[:end]
        return command
    return None


def hold_open(sock: gevent.socket.socket, buf: bytearray, limit: float) -> tuple[list[bytes], bool]:
    """Keep the connection open and answer nothing: every command the peer sends until
    it closes the connection, and whether it did (False: still open after ``limit`` s)."""
    commands: list[bytes] = []
    with gevent.Timeout(limit, False):
        while True:
            while b"\n\n" in buf:
                end = buf.index(b"\n\n") + 2
                commands.append(bytes(buf[:end]))
                del buf[:end]
            try:
                data = sock.recv(65536)
            except OSError:
                return commands, True
            if not data:
                return commands, True
            buf += data
    return commands, False


@dataclass
class FakeInboundSwitch:
    password: str = "ClueCon"
    port: int = 0
    honour_job_uuid: bool = True
    originate_ok: bool = True
    send_job_events: bool = True  # False: bgapi is accepted but no BACKGROUND_JOB follows
    silent: set[str] = field(default_factory=set)  # command prefixes never answered
    drop_on: set[str] = field(default_factory=set)  # close the socket on these
    garbage_on: set[str] = field(default_factory=set)  # answer these with garbage
    received: list[bytes] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._socks: list[gevent.socket.socket] = []
        self._server: gevent.server.StreamServer | None = None

    def start(self) -> int:
        self._server = gevent.server.StreamServer(("127.0.0.1", self.port), self._handle)
        self._server.start()
        self.port = self._server.address[1]
        return self.port

    def stop(self) -> None:
        """Like FreeSWITCH going away: close the port and every connection."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for sock in self._socks:
            sock.close()
        self._socks.clear()

    def push(self, data: bytes) -> None:
        for sock in list(self._socks):
            with contextlib.suppress(OSError):
                sock.sendall(data)

    def commands(self, prefix: str) -> list[bytes]:
        return [c for c in self.received if c.startswith(prefix.encode())]

    def _handle(self, sock: gevent.socket.socket, _peer: object) -> None:
        self.connections += 1
        self._socks.append(sock)
        buf = bytearray()
        try:
            sock.sendall(GREETING)
            while True:
                command = read_command(sock, buf, timeout=30)
                if command is None:
                    return
                self.received.append(command)
                text = command.decode()
                first = text.split("\n", 1)[0]
                if any(first.startswith(p) for p in self.drop_on):
                    return
                if any(first.startswith(p) for p in self.silent):
                    continue
                if any(first.startswith(p) for p in self.garbage_on):
                    sock.sendall(b"Content-Type: api/response\nContent-Length: banana\n\n")
                    continue
                reply = self._reply(first, text)
                sock.sendall(reply)
                if first.startswith("exit") or reply == AUTH_FAIL:
                    return
        except OSError:
            return
        finally:
            if sock in self._socks:
                self._socks.remove(sock)
            sock.close()

    def _reply(self, first: str, text: str) -> bytes:
        if first.startswith("auth "):
            return AUTH_OK if first[5:] == self.password else AUTH_FAIL
        if first.startswith("event plain "):
            return EVENT_OK
        if first == "api status":
            return API_STATUS
        if first.startswith("api nosuchcommand"):
            return API_UNKNOWN
        if first.startswith("bgapi originate "):
            match = re.search(r"^Job-UUID: (\S+)$", text, re.MULTILINE)
            job = match.group(1) if match and self.honour_job_uuid else RECORDED_JOB
            reply = (
                f"Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
            ).encode()
            if not self.send_job_events:
                return reply
            if self.originate_ok:
                events = ORIGINATE_OK_EVENTS.replace(RECORDED_JOB.encode(), job.encode())
            else:
                events = ORIGINATE_FAIL_EVENT.replace(_FAILED_JOB.encode(), job.encode())
            assert len(job) == 36, "the recorded Content-Length fits 36-char job ids"
            return reply + events
        if first.startswith("sendmsg "):
            return SENDMSG_OK
        if first.startswith("api uuid_send_dtmf "):
            return SEND_DTMF_OK
        if first.startswith("api uuid_kill "):
            return KILL_OK + HANGUP_COMPLETE
        if first == "exit":
            return EXIT_OK
        return NOT_FOUND


@dataclass
class ReplayResult:
    sent_by_app: list[bytes] = field(default_factory=list)
    expected: list[bytes] = field(default_factory=list)
    finished: bool = False
    error: str | None = None


def _normalise(command: bytes) -> bytes:
    # The session tags executes with its own Event-UUID; the recorder did not.
    return re.sub(rb"\nEvent-UUID: [^\n]*", b"", command)


def replay_outbound(
    address: tuple[str, int],
    name: str,
    *,
    until_seq: int | None = None,
    step_timeout: float = 5.0,
) -> ReplayResult:
    """Act as FreeSWITCH for a recorded outbound session; run it in a greenlet."""
    transcript = read_transcript(FIXTURES / name)
    result = ReplayResult()
    sock = gevent.socket.create_connection(address, timeout=step_timeout)
    sock.settimeout(None)
    buf = bytearray()
    try:
        for record in transcript.records:
            if until_seq is not None and record.seq > until_seq:
                break
            if record.from_freeswitch:
                sock.sendall(record.data)
                continue
            result.expected.append(record.data)
            command = read_command(sock, buf, step_timeout)
            if command is None:
                result.error = f"no command where record {record.seq} was expected"
                return result
            result.sent_by_app.append(_normalise(command))
        result.finished = True
        if until_seq is not None:
            # Anything the application sends after the cut is recorded too.
            extra = read_command(sock, buf, 0.3)
            while extra is not None:
                result.sent_by_app.append(_normalise(extra))
                extra = read_command(sock, buf, 0.3)
        return result
    finally:
        sock.close()
