"""Record ESL sessions with a real FreeSWITCH, in the format of tests/fixtures/freeswitch.

Raw sockets and threads only (no esl_bridge code), so the recording does not depend on what it is
used to check. Every ``send()`` and every ``recv()`` chunk becomes one record (format: the fixtures'
README.md). The scenarios (``--help``) are the ones of tests/fixtures/freeswitch/orphans/; each
writes ``<out>/esl_*.txt`` files. Loopback only: ESL on 127.0.0.1:8021, the outbound-socket
listener on 127.0.0.1:8084 (``esl_bridge_socket``), baresip phones driven over ctrl_tcp.

A "dying" gateway is a child process of this script (``app-outbound``/``app-inbound``) that does
its part of the scenario, prints ``READY``, and is then killed with SIGKILL by the parent.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

ESL = ("127.0.0.1", 8021)
PASSWORD = "ClueCon"
LISTEN = ("127.0.0.1", 8084)
OBSERVED = (
    "CHANNEL_CREATE CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_ANSWER CHANNEL_CALLSTATE "
    "CHANNEL_EXECUTE CHANNEL_EXECUTE_COMPLETE CHANNEL_PARK CHANNEL_UNPARK CHANNEL_HANGUP "
    "CHANNEL_HANGUP_COMPLETE CHANNEL_DESTROY BACKGROUND_JOB"
)
RINGBACK = "tone_stream://%(2000,4000,440,480);loops=-1"
UUID_A = "5e1f0000-0000-4000-8000-0000000a0001"
UUID_B = "5e1f0000-0000-4000-8000-0000000a0002"


_CONF_DIR: list[bytes] = []


def _conf_dir() -> bytes:
    """`global_getvar conf_dir`, asked once over a connection of its own (not recorded)."""
    if not _CONF_DIR:
        with socket.create_connection(ESL, timeout=5) as sock:
            sock.sendall(f"auth {PASSWORD}\n\napi global_getvar conf_dir\n\n".encode())
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    raise ConnectionError("no reply to global_getvar conf_dir")
                data += chunk
                _, found, rest = data.partition(b"Content-Type: api/response\nContent-Length: ")
                size, sep, body = rest.partition(b"\n\n")
                if found and sep and len(body) >= int(size):
                    break
            _CONF_DIR.append(body[: int(size)].strip())
    return _CONF_DIR[0]


def redact(data: bytes) -> bytes:
    """The switch's configuration directory (vanilla dialplan log lines name it) becomes a
    placeholder of the same length, so every length in the transcript stays right."""
    conf = _conf_dir()
    mark = b"/conf_dir-redacted"
    return data.replace(conf, (mark + b"-" * len(conf))[: len(conf)]) if conf else data


def _wall() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Frame:
    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body
        self.event: dict[str, str] = {}
        if headers.get("Content-Type") == "text/event-plain":
            head = body.split(b"\n\n", 1)[0].decode()
            for line in head.split("\n"):
                key, _, value = line.partition(": ")
                self.event[key] = urllib.parse.unquote(value)

    @property
    def name(self) -> str:
        return self.event.get("Event-Name", "")

    @property
    def inner_body(self) -> bytes:
        """The body of an event (after its own headers), e.g. a BACKGROUND_JOB's result."""
        return self.body.split(b"\n\n", 1)[1] if b"\n\n" in self.body else b""


class Session:
    """One recorded TCP connection; a thread reads, splits frames and records every chunk."""

    def __init__(self, sock: socket.socket, path: Path, header: list[str], *, inbound: bool):
        self.sock = sock
        self.inbound = inbound
        self.file = path.open("wb")
        self.t0 = time.monotonic()
        self.seq = 0
        self.lock = threading.Condition()
        self.buf = b""
        self.replies: list[Frame] = []
        self.events: list[Frame] = []
        self.closed = False
        for line in [*header, "---- records ----"]:
            self.file.write(f"# {line}\n".encode())
        self.file.flush()
        threading.Thread(target=self._read, daemon=True).start()

    def _record(self, from_fs: bool, data: bytes) -> None:
        if self.inbound:
            arrow = "S->C (FreeSWITCH->app)" if from_fs else "C->S (app->FreeSWITCH)"
        else:
            arrow = "C->S (FreeSWITCH->app)" if from_fs else "S->C (app->FreeSWITCH)"
        with self.lock:
            self.seq += 1
            off = time.monotonic() - self.t0
            line = f"### {self.seq} +{off:.6f} {_wall()} {arrow} len={len(data)}\n"
            self.file.write(line.encode() + redact(data) + b"\n")
            self.file.flush()

    def note(self, text: str) -> None:
        with self.lock:
            off = time.monotonic() - self.t0
            self.file.write(f"#NOTE +{off:.6f} {_wall()} {text}\n".encode())
            self.file.flush()
        print(f"[{off:7.3f}] {text}", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def _read(self) -> None:
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.note("TCP connection closed by peer (recv returned EOF)")
                with self.lock:
                    self.closed = True
                    self.lock.notify_all()
                return
            self._record(True, chunk)
            with self.lock:
                self.buf += chunk
                self._split()
                self.lock.notify_all()

    def _split(self) -> None:
        while True:
            end = self.buf.find(b"\n\n")
            if end < 0:
                return
            headers: dict[str, str] = {}
            for line in self.buf[:end].decode().split("\n"):
                key, _, value = line.partition(": ")
                headers[key] = value
            size = int(headers.get("Content-Length", "0"))
            if len(self.buf) < end + 2 + size:
                return
            frame = Frame(headers, self.buf[end + 2 : end + 2 + size])
            self.buf = self.buf[end + 2 + size :]
            if frame.event:
                self.events.append(frame)
            else:
                self.replies.append(frame)

    def send(self, text: str) -> None:
        data = text.encode()
        self._record(False, data)
        self.sock.sendall(data)

    def reply(self, timeout: float = 10.0) -> Frame:
        with self.lock:
            if not self.lock.wait_for(lambda: self.replies or self.closed, timeout):
                raise TimeoutError("no reply")
            if not self.replies:
                raise ConnectionError("closed")
            return self.replies.pop(0)

    def command(self, text: str, timeout: float = 10.0) -> Frame:
        self.send(text + "\n\n")
        return self.reply(timeout)

    def api(self, text: str, timeout: float = 30.0) -> str:
        body = self.command("api " + text, timeout).body.decode()
        self.note(f"api {text.split()[0]} -> {body.strip()[:120]!r}")
        return body

    def wait_event(self, pred: Callable[[Frame], bool], timeout: float) -> Frame | None:
        """The first event (seen so far or arriving within timeout) matching pred; consumes it."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                for i, ev in enumerate(self.events):
                    if pred(ev):
                        return self.events.pop(i)
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.lock.wait(left)

    def close(self) -> None:
        self.sock.close()
        time.sleep(0.1)
        self.file.close()


def named(name: str, uuid: str | None = None) -> Callable[[Frame], bool]:
    return lambda ev: ev.name == name and (uuid is None or ev.event.get("Unique-ID") == uuid)


def executed(name: str, app: str) -> Callable[[Frame], bool]:
    return lambda ev: ev.name == name and ev.event.get("Application") == app


def inbound(path: Path, title: str) -> Session:
    sock = socket.create_connection(ESL, timeout=None)
    s = Session(
        sock,
        path,
        [
            f"FreeSWITCH inbound event socket session ({title})"
            " recorded by tests/tools/record_esl.py",
            "TCP client (C) = this app, server (S) = FreeSWITCH mod_event_socket on 127.0.0.1:8021",
            "C->S = app -> FreeSWITCH, S->C = FreeSWITCH -> app",
        ],
        inbound=True,
    )
    s.note(f"TCP connected to 127.0.0.1:8021 from 127.0.0.1:{sock.getsockname()[1]}")
    s.reply()  # auth/request
    assert s.command(f"auth {PASSWORD}").headers.get("Reply-Text") == "+OK accepted"
    return s


def phone(ctrl_port: int, command: str, params: str = "") -> None:
    """One baresip ctrl_tcp command (netstring-framed JSON)."""
    payload = json.dumps({"command": command, "params": params, "token": "rec"}).encode()
    with socket.create_connection(("127.0.0.1", ctrl_port), timeout=5) as sock:
        sock.sendall(str(len(payload)).encode() + b":" + payload + b",")
        sock.settimeout(2)
        with contextlib.suppress(TimeoutError):
            sock.recv(4096)


def snapshot(obs: Session, label: str) -> dict[str, object]:
    body = obs.api("show channels as json")
    rows = json.loads(body).get("rows", []) if body.startswith("{") else []
    brief = [(r["uuid"], r["state"], r["callstate"], r["application"]) for r in rows]
    obs.note(f"{label}: show channels as json -> {len(rows)} row(s) {brief}")
    return {"label": label, "rows": brief}


def rows_until(s: Session, count: int, polls: int = 20) -> None:
    """`show channels as json` every 0.25 s until it lists `count` rows (at most `polls` times)."""
    for _ in range(polls):
        body = s.api("show channels as json")
        if json.loads(body)["row_count"] == count:
            return
        time.sleep(0.25)


# ---- children: the gateway that dies ----------------------------------------------------------


def app_outbound(out: Path, mode: str) -> None:
    """Outbound-socket app: connect, myevents, linger, pre_answer|answer, ringback; then READY."""
    listener = socket.create_server(LISTEN)
    print("LISTENING", flush=True)
    sock, peer = listener.accept()
    listener.close()
    s = Session(
        sock,
        out,
        [
            "FreeSWITCH outbound event socket session recorded by tests/tools/record_esl.py",
            "TCP client (C) = FreeSWITCH (dialplan 'socket $${esl_bridge_socket} async full'), "
            "server (S) = this app on 127.0.0.1:8084",
            "C->S = FreeSWITCH -> app, S->C = app -> FreeSWITCH",
            f"peer 127.0.0.1:{peer[1]}",
        ],
        inbound=False,
    )
    connect = s.command("connect")
    uuid = urllib.parse.unquote(connect.headers.get("Unique-ID", ""))
    s.note(f"scenario={mode} uuid={uuid}")
    if mode.endswith("-tagged"):  # as the gateway does at the start of every socket session
        s.api(f"uuid_setvar_multi {uuid} esl_bridge_node=n1;esl_bridge_instance=abc")
    s.command("myevents")
    s.command("linger")
    app = "pre_answer" if mode.startswith("preanswer") else "answer"
    s.command(
        f"sendmsg\ncall-command: execute\nexecute-app-name: {app}\n"
        f"Event-UUID: 5e1f0000-0000-4000-8000-00000000e001"
    )
    done = s.wait_event(executed("CHANNEL_EXECUTE_COMPLETE", app), 10)
    s.note(f"{app} complete: {done is not None}")
    if mode.startswith("preanswer"):
        s.command(
            "sendmsg\ncall-command: execute\nexecute-app-name: playback\n"
            f"execute-app-arg: {RINGBACK}\nEvent-UUID: 5e1f0000-0000-4000-8000-00000000e002"
        )
        s.wait_event(executed("CHANNEL_EXECUTE", "playback"), 5)
    s.note("READY: the parent kills this process with SIGKILL now")
    print(f"READY {uuid}", flush=True)
    time.sleep(3600)


def app_inbound(out: Path, mode: str) -> None:
    """Inbound gateway: bgapi originate ... &park(); READY once answered (or ringing)."""
    s = inbound(out, f"gateway killed with SIGKILL, {mode}")
    s.command("event plain CHANNEL_CALLSTATE CHANNEL_ANSWER BACKGROUND_JOB")
    user, uuid = ("1001", UUID_A) if mode == "answered" else ("1002", UUID_B)
    s.command(
        f"bgapi originate {{origination_uuid={uuid},esl_bridge_instance=abc}}user/{user} &park()"
    )
    if mode == "answered":
        ok = s.wait_event(named("BACKGROUND_JOB"), 30)
        s.note(f"BACKGROUND_JOB body {ok.inner_body!r}" if ok else "no BACKGROUND_JOB")
    else:
        ok = s.wait_event(
            lambda e: (
                e.name == "CHANNEL_CALLSTATE" and e.event.get("Channel-Call-State") == "RINGING"
            ),
            30,
        )
        s.note(f"ringing: {ok is not None}")
    s.note("READY: the parent kills this process with SIGKILL now")
    print(f"READY {uuid}", flush=True)
    time.sleep(3600)


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True, bufsize=1
    )


def wait_line(child: subprocess.Popen[str], word: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    assert child.stdout is not None
    while time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            raise RuntimeError(f"child ended before {word}")
        print("child:", line.rstrip(), flush=True)
        if line.startswith(word):
            return line.split(maxsplit=1)[1].strip() if " " in line.strip() else ""
    raise TimeoutError(word)


def kill9(child: subprocess.Popen[str], obs: Session) -> float:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    obs.note(f"gateway process killed with SIGKILL (exit {child.returncode})")
    return obs.elapsed()


def sleep_until(obs: Session, t: float) -> None:
    time.sleep(max(0.0, t - obs.elapsed()))


# ---- scenarios ---------------------------------------------------------------------------------


def scenario_api(out: Path) -> None:
    s = inbound(out / "esl_inbound_orphan_api_replies.txt", "orphan watchdog api replies")
    s.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE")
    s.api("show channels as json")
    s.api("sched_api +30 esl_bridge_abc_0 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
    s.api("sched_del esl_bridge_abc_0")
    s.api("sched_del esl_bridge_nosuch_0")
    s.api("hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
    s.api(f"originate {{origination_uuid={UUID_A}}}user/1001 &park()")
    s.api(f"uuid_getvar {UUID_A} esl_bridge_node")
    s.api(f"uuid_setvar_multi {UUID_A} esl_bridge_node=n1;esl_bridge_instance=abc")
    s.api(f"uuid_getvar {UUID_A} esl_bridge_node")
    s.api(f"uuid_getvar {UUID_A} esl_bridge_instance")
    s.api(f"uuid_exists {UUID_A}")
    s.api(f"originate {{origination_uuid={UUID_B}}}user/1001 &park()")
    rows_until(s, 2)  # the channel list lags the channels (see the fixtures' README)
    s.api("hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
    hc = s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_A), 10)
    s.note(f"hangup of A: {hc.event.get('Hangup-Cause') if hc else None}")
    s.api(f"uuid_exists {UUID_A}")
    s.api(f"uuid_getvar {UUID_A} esl_bridge_node")
    s.api(f"uuid_exists {UUID_B}")
    s.api(f"uuid_kill {UUID_B}")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_B), 10)
    rows_until(s, 0)
    s.command("exit")
    time.sleep(0.3)
    s.close()


def scenario_watchdog(out: Path) -> None:
    s = inbound(out / "esl_inbound_orphan_sched_hupall.txt", "sched_api hupall watchdog")
    s.command("event plain CHANNEL_ANSWER CHANNEL_HANGUP CHANNEL_HANGUP_COMPLETE")
    for trial in range(3):  # the scheduler counts whole seconds: see how much of +3 is left
        s.note(f"part 1, trial {trial + 1}: sched_api +3 fires the hupall")
        s.api(f"originate {{origination_uuid={UUID_A},esl_bridge_instance=abc}}user/1001 &park()")
        time.sleep(0.3 * trial)
        t = s.elapsed()
        s.api("sched_api +3 g1 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
        ev = s.wait_event(named("CHANNEL_HANGUP", UUID_A), 10)
        if ev:
            s.note(
                f"CHANNEL_HANGUP cause={ev.event.get('Hangup-Cause')} "
                f"{s.elapsed() - t:.3f} s after sched_api was sent"
            )
        s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_A), 5)
    s.note("part 2: sched_api then sched_del; the task must not fire")
    s.api(f"originate {{origination_uuid={UUID_B},esl_bridge_instance=abc}}user/1001 &park()")
    s.api("sched_api +3 g1 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
    s.api("sched_del g1")
    ev = s.wait_event(named("CHANNEL_HANGUP", UUID_B), 6)
    s.note(f"6 s after sched_del: CHANNEL_HANGUP seen: {ev is not None}")
    s.api(f"uuid_exists {UUID_B}")
    s.api(f"uuid_kill {UUID_B}")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", UUID_B), 10)
    s.command("exit")
    time.sleep(0.3)
    s.close()


def scenario_outbound_dies(out: Path, mode: str) -> None:
    stem = "preanswer_ringback" if mode == "preanswer" else "answered"
    obs = inbound(
        out / f"esl_inbound_orphan_socket_killed_{stem}_observer.txt",
        f"observer: outbound-socket app killed, {stem}",
    )
    obs.command(f"event plain {OBSERVED}")
    child = spawn("app-outbound", str(out / f"esl_outbound_orphan_killed_{stem}.txt"), mode)
    wait_line(child, "LISTENING")
    obs.note("phone 1001 dials 01000")
    phone(4441, "dial", "01000")
    uuid = wait_line(child, "READY", 60)
    time.sleep(0.5)
    t = kill9(child, obs)
    sleep_until(obs, t + 1)
    snapshot(obs, "+1 s")
    sleep_until(obs, t + 5)
    snapshot(obs, "+5 s")
    if mode == "preanswer":
        sleep_until(obs, t + 30)
        snapshot(obs, "+30 s")
        obs.note("phone 1001 hangs up")
        phone(4441, "hangup")
    hc = obs.wait_event(named("CHANNEL_HANGUP_COMPLETE", uuid), 15)
    obs.note(
        f"CHANNEL_HANGUP_COMPLETE cause={hc.event.get('Hangup-Cause')} "
        f"at +{obs.elapsed() - t:.3f} s after the kill"
        if hc
        else "no CHANNEL_HANGUP_COMPLETE"
    )
    time.sleep(1)
    snapshot(obs, "end")
    obs.command("exit")
    time.sleep(0.3)
    obs.close()


def scenario_inbound_dies(out: Path, mode: str) -> None:
    obs = inbound(
        out / f"esl_inbound_orphan_originator_killed_{mode}_observer.txt",
        f"observer: inbound originator killed, {mode}",
    )
    obs.command(f"event plain {OBSERVED}")
    child = spawn(
        "app-inbound", str(out / f"esl_inbound_orphan_originator_killed_{mode}.txt"), mode
    )
    uuid = wait_line(child, "READY", 60)
    t = kill9(child, obs)
    sleep_until(obs, t + 1)
    snapshot(obs, "+1 s")
    sleep_until(obs, t + 5)
    snapshot(obs, "+5 s")
    if mode == "ringing":
        obs.note("phone 1002 accepts the call")
        phone(4442, "accept")
        ans = obs.wait_event(named("CHANNEL_ANSWER", uuid), 10)
        obs.note(f"answered after the originator died: {ans is not None}")
        time.sleep(1)
        snapshot(obs, "1 s after accept")
    obs.api(f"uuid_kill {uuid}")
    hc = obs.wait_event(named("CHANNEL_HANGUP_COMPLETE", uuid), 10)
    obs.note(f"CHANNEL_HANGUP_COMPLETE after uuid_kill: {hc is not None}")
    time.sleep(1)
    snapshot(obs, "end")
    obs.command("exit")
    time.sleep(0.3)
    obs.close()


def scenario_watchdog_orphans(out: Path) -> None:
    """Three orphans of one dead instance (a parked answered originate, a ringing originate,
    a SIP caller in the ringback), then the watchdog's task fires: does it end all three?"""
    obs = inbound(
        out / "esl_inbound_orphan_watchdog_ends_every_state_observer.txt",
        "observer: sched_api hupall ends the orphans of a killed gateway",
    )
    obs.command(f"event plain {OBSERVED}")
    uuids = []
    for mode in ("answered", "ringing"):
        child = spawn("app-inbound", str(out / f"esl_inbound_orphan_watchdog_{mode}.txt"), mode)
        uuids.append(wait_line(child, "READY", 60))
        kill9(child, obs)
    child = spawn(
        "app-outbound",
        str(out / "esl_outbound_orphan_watchdog_preanswer_tagged.txt"),
        "preanswer-tagged",
    )
    wait_line(child, "LISTENING")
    obs.note("phone 1001 dials 01000")
    phone(4441, "dial", "01000")
    uuids.append(wait_line(child, "READY", 60))
    time.sleep(0.5)
    t = kill9(child, obs)
    sleep_until(obs, t + 1)
    snapshot(obs, "+1 s, three orphans")
    for uuid in uuids:
        obs.api(f"uuid_getvar {uuid} esl_bridge_instance")
    obs.api("sched_api +2 esl_bridge_abc_9 hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance abc")
    sent = obs.elapsed()
    for uuid in uuids:
        hc = obs.wait_event(named("CHANNEL_HANGUP_COMPLETE", uuid), 10)
        if hc is None:
            obs.note(f"{uuid}: no CHANNEL_HANGUP_COMPLETE")
            continue
        e = hc.event
        obs.note(
            f"{uuid}: HANGUP_COMPLETE at +{obs.elapsed() - sent:.3f} s after sched_api, "
            f"cause={e.get('Hangup-Cause')} answer_state={e.get('Answer-State')} "
            f"sip_term_status={e.get('variable_sip_term_status')} "
            f"sip_invite_failure_status={e.get('variable_sip_invite_failure_status')} "
            f"disposition={e.get('variable_sip_hangup_disposition')}"
        )
    time.sleep(1)
    snapshot(obs, "end")
    obs.command("exit")
    time.sleep(0.3)
    obs.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scenario",
        choices=[
            "api",
            "watchdog",
            "socket-preanswer",
            "socket-answered",
            "inbound-answered",
            "inbound-ringing",
            "watchdog-orphans",
            "app-outbound",
            "app-inbound",
        ],
    )
    parser.add_argument("out", type=Path, help="output directory (file for app-*)")
    parser.add_argument("mode", nargs="?", default="")
    args = parser.parse_args()
    if args.scenario == "app-outbound":
        app_outbound(args.out, args.mode)
    elif args.scenario == "app-inbound":
        app_inbound(args.out, args.mode)
    elif args.scenario == "api":
        scenario_api(args.out)
    elif args.scenario == "watchdog":
        scenario_watchdog(args.out)
    elif args.scenario == "watchdog-orphans":
        scenario_watchdog_orphans(args.out)
    elif args.scenario.startswith("socket-"):
        scenario_outbound_dies(args.out, args.scenario.removeprefix("socket-").replace("-", ""))
    else:
        scenario_inbound_dies(args.out, args.scenario.removeprefix("inbound-"))


if __name__ == "__main__":
    main()
