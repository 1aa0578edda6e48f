"""One-way audio verdicts (issue 16 part 2) on a real FreeSWITCH 1.10 with a real phone.

Skipped unless ``ESL_BRIDGE_FREESWITCH=host:port:password`` is set (the switch's setup is in
tests/test_freeswitch_calls.py). ``ESL_BRIDGE_FREESWITCH_USER`` (default 1001) is a
registered baresip that answers automatically and plays a 1 kHz tone (the fixtures' setup);
``ESL_BRIDGE_FREESWITCH_PHONE_CTRL`` (default 127.0.0.1:4441) is its ``ctrl_tcp`` port. To
mute it the test loads baresip's ``menu`` module there (``insmod menu``), which brings the
``mute`` command (a toggle). With ``menu`` loaded, baresip 1.0.0 hangs a call up when its
``aufile`` source reaches the end of the file ("audio error"): the tone file must outlast
the call (the fixtures' is 60 s).

A web user (an aiortc peer) calls the phone: a few verdict windows pass with no
``MediaProblem`` and both directions ``ok``; the peer's track muted is ``browser_silent``,
unmuted ``ok``; the phone muted is ``switch_silent`` (what the switch then sends over
unicast is checked: L16 frames of digital zeros, not the 0xFF filler, which is what the
simulator's ``silence`` source sends too), unmuted ``ok``; the call's verdicts at its end
are in ``/metrics``; nothing is left on the switch.

Known to fail (not explained yet): on the fast path, in 3 runs of 6 on the loaded 2-core
machine, ``switch_silent`` came 20-25 s after the phone's mute and ``ok`` not within the
40 s wait after its unmute, with most of the switch's datagrams counted as receive
underruns (``rx_underruns`` about 2300 of 3000) and 23-58 ms of jitter, at a load average
of 5-8; later, at a load average of 3, 8 runs of 8 passed. The transcode path passed every
run.

The peer runs in a loopback-only namespace; the switch is reached through
tests/support/host_bridge.py, and the phone's control port through a UNIX socket relay
made here the same way (both namespaces share the filesystem).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.gateway_support import WebUser, wait_until
from support.host_bridge import bridged_to_host, netns_log
from support.web_peer import WebPeer
from test_freeswitch_calls import assert_switch_clean, channels_of, exists, gateway_on_freeswitch
from test_one_way_audio import WINDOW, verdict_counts

from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.process import Gateway

_TARGET = os.environ.get("ESL_BRIDGE_FREESWITCH", "")
_PHONE = os.environ.get("ESL_BRIDGE_FREESWITCH_USER", "1001")
_CTRL = os.environ.get("ESL_BRIDGE_FREESWITCH_PHONE_CTRL", "127.0.0.1:4441")
_ESL_PORT = int(_TARGET.split(":")[1]) if _TARGET.count(":") >= 2 else 8021
_PORTS = (31400, 31419)
_CTRL_DIR = "ESL_BRIDGE_PHONE_CTRL_DIR"
# Set to a directory to write what the switch sent while the phone was muted there.
_RECORD = os.environ.get("ESL_BRIDGE_RECORD_FIXTURES", "")
CHAN_ID = "fs-oneway-1"

pytestmark = [
    pytest.mark.freeswitch,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not _TARGET, reason="ESL_BRIDGE_FREESWITCH=host:port:password not set"),
]


# --------------------------------------------------------------------------- phone control


def _relay(listener: socket.socket) -> None:
    """Host side: each UNIX connection is one ctrl_tcp exchange with the phone."""
    host, port = _CTRL.rsplit(":", 1)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, socket.create_connection((host, int(port)), timeout=10) as phone:
            request = conn.recv(65536)
            phone.sendall(request)
            conn.sendall(phone.recv(65536))


def phone_ctrl(func: Callable[..., Any]) -> Callable[..., Any]:
    """Outside the namespace: relay a UNIX socket to the phone's ctrl_tcp port."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get(_CTRL_DIR):  # already relayed (in the namespace's pytest)
            return func(*args, **kwargs)
        with tempfile.TemporaryDirectory(prefix="esl-bridge-phone-") as tmp:
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(Path(tmp) / "ctrl"))
            listener.listen(4)
            threading.Thread(target=_relay, args=(listener,), daemon=True).start()
            os.environ[_CTRL_DIR] = tmp
            try:
                return func(*args, **kwargs)
            finally:
                os.environ.pop(_CTRL_DIR, None)
                listener.close()

    return wrapper


def phone(command: str, params: str = "") -> dict[str, Any]:
    """One ctrl_tcp command (netstring JSON) to the phone; its response."""
    body = json.dumps({"command": command, "params": params, "token": "t"}).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(Path(os.environ[_CTRL_DIR]) / "ctrl"))
        sock.sendall(str(len(body)).encode() + b":" + body + b",")
        reply = sock.recv(65536)
    length, _, rest = reply.partition(b":")
    return dict(json.loads(rest[: int(length)]))


# --------------------------------------------------------------------------- the call


def problems(user: WebUser) -> list[tuple[str, str]]:
    out = []
    for m in user.inbox:
        if m.get("type") == "message":
            body = json.loads(m["text"])
            if body.get("Cmd") == "MediaProblem":
                out.append((body["Direction"], body["Verdict"]))
    return out


def told(user: WebUser, direction: str, verdict: str) -> None:
    """Wait for the MediaProblem of that direction; it must name ``verdict``."""
    message = user.wait(
        lambda m: (
            m.get("type") == "message"
            and json.loads(m["text"]).get("Cmd") == "MediaProblem"
            and json.loads(m["text"]).get("Direction") == direction
        ),
        40,
        f"{direction} {verdict}",
    )
    body = json.loads(message["text"])
    assert message["from"] == _PHONE, message
    assert (body["Direction"], body["Verdict"], body["ChanId"]) == (direction, verdict, CHAN_ID)


def kinds(frames: list[bytes]) -> dict[str, int]:
    """Unicast datagrams from the switch by kind: 0xFF filler, digital zeros, audio."""
    out = {"filler": 0, "zeros": 0, "audio": 0}
    for d in frames:
        if d.count(0xFF) == len(d):
            out["filler"] += 1
        elif d.count(0) == len(d):
            out["zeros"] += 1
        else:
            out["audio"] += 1
    return out


@contextlib.contextmanager
def call(
    gateway: Gateway, codecs: tuple[str, ...] | None
) -> Iterator[tuple[WebUser, WebPeer, Any]]:
    alice = WebUser(gateway, "alice").connect()
    peer = WebPeer(alice, hz=440.0, codecs=codecs)
    alice.invite(_PHONE, CHAN_ID)
    alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE, timeout=30)
    peer.offer(_PHONE, CHAN_ID)
    controller = gateway.controller
    assert controller is not None
    [record] = list(controller.book)
    links = controller._links[record.call_id]
    try:
        yield alice, peer, links
    finally:
        peer.close()
        alice.close()


# The browser's codecs -> the media path the gateway takes with the PCMU phone: aiortc's
# defaults hold PCMU, so the PCMU fast path (``flags: native``, 160-byte PCMU datagrams);
# Opus only, the transcode path (320-byte L16 datagrams).
PATHS = {"fast": None, "transcode": ("opus",)}


@phone_ctrl
@bridged_to_host(_ESL_PORT, *_PORTS, timeout=280)
def test_verdicts_on_the_fast_path_to_a_real_phone() -> None:
    verdicts_on_a_call(_PORTS, "fast")


# Ports of their own: the previous test's bridge may still be letting its ports go.
_PORTS_2 = (31420, 31439)


@phone_ctrl
@bridged_to_host(_ESL_PORT, *_PORTS_2, timeout=280)
def test_verdicts_on_the_transcode_path_to_a_real_phone() -> None:
    verdicts_on_a_call(_PORTS_2, "transcode")


def verdicts_on_a_call(ports: tuple[int, int], path: str) -> None:
    phone("insmod", "menu")  # brings `mute` (a second load is refused, harmlessly)
    extra = (
        f"max_calls = 10\n[media]\nunicast_port_min = {ports[0]}\nunicast_port_max = {ports[1]}\n"
        f"media_problem_after = {WINDOW}\n"
    )
    with (
        gateway_on_freeswitch(extra, esl_host="127.0.0.1") as gateway,
        call(gateway, PATHS[path]) as (alice, peer, links),
    ):
        # Healthy: the judge saw four windows, nothing was told, ok both ways.
        wait_until(
            lambda: links.watch is not None and links.watch.snapshots >= 5,
            40,
            "the one-way judge running for 4 windows",
        )
        assert problems(alice) == []
        assert links.leg is not None and links.leg.path == path
        assert links.watch.verdicts == {"browser_to_switch": "ok", "switch_to_browser": "ok"}

        # The browser's microphone muted (digital silence in its packets), then back.
        peer.track.freq = 0.0
        told(alice, "browser_to_switch", "browser_silent")
        peer.track.freq = 440.0
        told(alice, "browser_to_switch", "ok")

        # The phone muted: what does the switch send? Then the verdict.
        log = netns_log()
        wait_until(lambda: len(log.from_switch) >= 100, 30, "unicast from the switch")
        assert phone("mute")["ok"] is True
        told(alice, "switch_to_browser", "switch_silent")
        start = len(log.from_switch)
        wait_until(lambda: len(log.from_switch) >= start + 100, 30, "2 s of the muted phone")
        muted = [d for _f, _g, d in log.from_switch[start : start + 100]]
        assert phone("mute")["ok"] is True  # toggles back
        told(alice, "switch_to_browser", "ok")
        muted_kinds = kinds(muted)
        if _RECORD:
            _record(path, muted, muted_kinds)
        # baresip's mute sends PCMU frames of silence (0xFF, mu-law's zero), not no RTP: the
        # switch passes them on natively as 160 bytes of 0xFF, or decodes them to L16
        # zeros; never its 320-byte 0xFF filler. The simulator's ``silence`` source does
        # the same (tests/test_sim_recorded_silence.py).
        sizes = {len(d) for d in muted}
        if path == "fast":
            assert muted_kinds == {"filler": 100, "zeros": 0, "audio": 0}, muted_kinds
            assert sizes == {160}, sizes
        else:
            assert muted_kinds == {"filler": 0, "zeros": 100, "audio": 0}, muted_kinds
            assert sizes == {320}, sizes

        [uuid] = channels_of(gateway)
        alice.peer(_PHONE, Cmd="EndCall")
        assert_switch_clean(gateway)
        assert not exists(gateway, uuid)
        counts = verdict_counts(gateway)
        # The call's first problem per direction, counted once at its end.
        assert counts[("browser_to_switch", "browser_silent")] == 1, counts
        assert counts[("switch_to_browser", "switch_silent")] == 1, counts
        assert sum(counts.values()) == 2, counts


def _record(media_path: str, muted: list[bytes], muted_kinds: dict[str, int]) -> None:
    flags = "flags: native" if media_path == "fast" else "no flags"
    path = Path(_RECORD) / f"unicast_phone_muted_{media_path}.txt"
    lines = [
        f"# FreeSWITCH -> app unicast datagrams ({flags}) while baresip (PCMU) was muted",
        "# (`mute` of its menu module, over ctrl_tcp): 100 consecutive datagrams after the",
        "# gateway's switch_silent verdict, one line each: its size, its kind (filler = all",
        f"# 0xFF, zeros = all 0x00, audio = other), its first 8 bytes. Totals: {muted_kinds}",
    ]
    for d in muted:
        kind = "filler" if d.count(0xFF) == len(d) else "zeros" if d.count(0) == len(d) else "audio"
        lines.append(f"{len(d)} {kind} {d[:8].hex()}")
    path.write_text("\n".join(lines) + "\n")
