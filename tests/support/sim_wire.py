"""Minimal ESL frame reading for the simulator tests (independent of esl_bridge.esl).

Transcripts are read by tests/support/esl_transcripts.py, the one reader of the recordings.
"""

from __future__ import annotations

import socket
import time
import urllib.parse
from dataclasses import dataclass

from support.esl_transcripts import FIXTURES, Record
from support.esl_transcripts import read_transcript as read_esl_transcript


@dataclass
class Frame:
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.headers:
            if k == key:
                return v
        return default

    @property
    def content_type(self) -> str | None:
        return self.get("Content-Type")

    def event(self) -> Event:
        assert self.content_type == "text/event-plain", self.headers
        return parse_event_body(self.body)


@dataclass
class Event:
    headers: list[tuple[str, str]]  # raw (URL-encoded) values
    body: bytes

    @property
    def names(self) -> list[str]:
        return [k for k, _ in self.headers]

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.headers:
            if k == key:
                return urllib.parse.unquote(v)
        return default

    @property
    def name(self) -> str:
        return self.get("Event-Name") or ""


def parse_event_body(body: bytes) -> Event:
    head, _, rest = body.partition(b"\n\n")
    lines = head.decode().split("\n")
    headers = [tuple(line.split(": ", 1)) for line in lines if line]
    ev_headers = [(k, v) for k, v in headers if k != "Content-Length"]
    inner = b""
    length = dict(headers).get("Content-Length")
    if length is not None:
        inner = rest[: int(length)]
    return Event(ev_headers, inner)  # type: ignore[arg-type]


def split_frames(data: bytes) -> tuple[list[Frame], bytes]:
    """Split a byte stream into complete frames; returns (frames, leftover)."""
    frames: list[Frame] = []
    while True:
        end = data.find(b"\n\n")
        if end < 0:
            return frames, data
        head = data[:end].decode()
        headers = [tuple(line.split(": ", 1)) for line in head.split("\n")]
        if any(len(h) != 2 for h in headers):
            raise ValueError(f"bad header block: {head[:200]!r}")
        length = int(dict(headers).get("Content-Length", "0"))  # type: ignore[arg-type]
        if len(data) < end + 2 + length:
            return frames, data
        body = data[end + 2 : end + 2 + length]
        frames.append(Frame(headers, body, data[: end + 2 + length]))  # type: ignore[arg-type]
        data = data[end + 2 + length :]


class Conn:
    """A blocking ESL connection with a frame reader (tests only)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(5.0)
        self.buf = b""
        self.chunks: list[bytes] = []
        self.closed = False

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1") -> Conn:
        return cls(socket.create_connection((host, port), timeout=5.0))

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def _recv(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.chunks.append(chunk)
        self.buf += chunk
        return True

    def read_frame(self, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            frames, _ = split_frames(self.buf)
            if frames:
                f = frames[0]
                self.buf = self.buf[len(f.raw) :]
                return f
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise TimeoutError(f"no complete frame; buffered {self.buf[:200]!r}")
            self._recv(min(left, 0.5))

    def command(self, cmd: str, timeout: float = 5.0) -> Frame:
        """Send a command and return the next non-event frame (events are kept)."""
        self.send(cmd if cmd.endswith("\n\n") else cmd + "\n\n")
        return self.read_reply(timeout)

    def read_reply(self, timeout: float = 5.0) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            f = self.read_frame(max(deadline - time.monotonic(), 0.01))
            if f.content_type != "text/event-plain":
                return f
            self.pending_events.append(f)

    @property
    def pending_events(self) -> list[Frame]:
        if not hasattr(self, "_pending"):
            self._pending: list[Frame] = []
        return self._pending

    def read_event(self, name: str | None = None, timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            while self.pending_events:
                f = self.pending_events.pop(0)
                ev = f.event()
                if name is None or ev.name == name:
                    return ev
            f = self.read_frame(max(deadline - time.monotonic(), 0.01))
            if f.content_type == "text/event-plain":
                self.pending_events.append(f)
            else:
                raise AssertionError(f"unexpected non-event frame {f.headers}")

    def events_until(self, name: str, timeout: float = 5.0) -> list[Event]:
        """All events up to and including the first `name` (pending ones first)."""
        out: list[Event] = []
        deadline = time.monotonic() + timeout
        while True:
            ev = self.read_event(None, max(deadline - time.monotonic(), 0.01))
            out.append(ev)
            if ev.name == name:
                return out

    def drain_events(self, quiet: float = 0.3) -> list[Event]:
        """Every event that arrives until the connection is quiet for `quiet` seconds."""
        out = [f.event() for f in self.pending_events]
        self.pending_events.clear()
        while True:
            try:
                f = self.read_frame(quiet)
            except TimeoutError:
                return out
            if f.content_type == "text/event-plain":
                out.append(f.event())
            else:
                self.pending_events.append(f)
                return out

    def wait_closed(self, timeout: float = 5.0) -> bytes:
        """Read until EOF; returns everything not yet consumed."""
        deadline = time.monotonic() + timeout
        while not self.closed and time.monotonic() < deadline:
            self._recv(min(deadline - time.monotonic(), 0.5))
        return self.buf

    def close(self) -> None:
        self.sock.close()


def auth(port: int, password: str = "ClueCon") -> Conn:
    c = Conn.connect(port)
    assert c.read_frame().content_type == "auth/request"
    reply = c.command(f"auth {password}")
    assert reply.get("Reply-Text") == "+OK accepted", reply.headers
    return c


# ---- transcripts ---------------------------------------------------------------------------


def read_transcript(name: str) -> list[Record]:
    """The records of a fixture transcript, by file name (one reader for all tests)."""
    return read_esl_transcript(FIXTURES / name).records


def fs_frames(name: str) -> list[Frame]:
    """Every frame FreeSWITCH sent in a transcript, in order."""
    stream = b"".join(r.data for r in read_transcript(name) if r.from_freeswitch)
    frames, rest = split_frames(stream)
    assert rest == b"", rest[:100]
    return frames


def fs_events(name: str) -> list[Event]:
    return [f.event() for f in fs_frames(name) if f.content_type == "text/event-plain"]
