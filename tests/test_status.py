"""``esl-bridge status``: the running gateway answers over its admin unix socket.

A gateway process with a live call (web -> SIP, browser audio flowing) is asked with the
CLI, as an operator would; the admin endpoint is on the socket only, not the web port.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from support.gateway_process import gateway_on_simulator
from support.gateway_support import wait_until
from support.netns import loopback_only
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.admin import AdminUnreachable, fetch_status, start_admin_server

ROOT = Path(__file__).resolve().parents[1]


def _status(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esl_bridge", "status", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@loopback_only(timeout=120)
def test_status_shows_the_live_call_the_users_and_esl_of_the_running_gateway(
    tmp_path: Path,
) -> None:
    with gateway_on_simulator(
        tmp_path,
        orphan_timeout=3600,
        web_lines="admin_socket = admin.sock",  # relative: beside rtx.conf
    ) as (sim, loops, gateway):
        admin = tmp_path / "admin.sock"
        assert stat.S_ISSOCK(admin.stat().st_mode)
        assert stat.S_IMODE(admin.stat().st_mode) == 0o660

        idle = _status("--conf", str(gateway.conf), "--json")
        assert idle.returncode == 0, idle.stderr
        body = json.loads(idle.stdout)
        assert body["esl"] == "connected" and body["healthy"] is True
        assert body["calls"] == [] and body["users_online"] == []
        from esl_bridge import __version__

        assert body["version"] == __version__

        alice = gateway.web_user(loops, "alice")
        alice.invite("1000", "ch-1")
        wait_until(lambda: len(sim.channels()) == 1, 10, "the originated leg")
        [channel] = sim.channels()
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        peer = WebPeer(alice)
        peer.offer("1000", "ch-1")
        wait_until(lambda: channel.unicast is not None, 20, "unicast running on the leg")
        stream = channel.unicast
        assert stream is not None
        wait_until(lambda: stream.frames_received > 0, 20, "the browser's audio at the switch")

        live = _status("--socket", str(admin), "--json")
        assert live.returncode == 0, live.stderr
        body = json.loads(live.stdout)
        assert body["users_online"] == ["alice"]
        [call] = body["calls"]
        assert (call["direction"], call["uid"], call["number"], call["state"]) == (
            "rtc2sip",
            "alice",
            "1000",
            "connected",
        )
        assert call["codec"] and isinstance(call["lost"], int) and call["duration"] >= 0

        text = _status("--conf", str(gateway.conf))
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[1].startswith("ESL: connected")
        assert "users online: 1 (alice)" in lines
        assert "calls: 1" in lines
        row = next(line for line in lines if call["call_id"] in line).split()
        assert row[:4] == ["rtc2sip", "alice", "1000", "connected"]
        assert row[5] == call["codec"]

        # Nothing of it on the web port, which the browsers reach.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{gateway.web_port}/status", timeout=5)
        assert refused.value.code == 404

        peer.close()
        assert gateway.terminate() == 0
        assert not admin.exists()  # removed at stop
        gone = _status("--socket", str(admin))
        assert gone.returncode == 1
        assert "is the gateway running?" in gone.stderr


def test_status_without_an_admin_socket_says_how_to_get_one(tmp_path: Path) -> None:
    conf = tmp_path / "rtx.conf"
    conf.write_text("[auth]\nopen_mode = 1\n")
    done = _status("--conf", str(conf))
    assert done.returncode == 2
    assert "[web] admin_socket" in done.stderr
    assert _status().returncode == 2


def test_a_stale_socket_file_is_replaced_and_a_served_one_or_a_plain_file_refused(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "admin.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what a killed process leaves
    stale.close()

    async def scenario() -> None:
        async def read() -> dict[str, object]:
            return {"version": "x"}

        first = await start_admin_server(path, read)
        try:
            reply = await asyncio.get_running_loop().run_in_executor(None, fetch_status, path)
            assert reply == {"version": "x"}
            with pytest.raises(OSError, match="served by another process"):
                await start_admin_server(path, read)
        finally:
            await first.stop()
        assert not os.path.exists(path)
        Path(path).write_text("not a socket")
        with pytest.raises(OSError, match="not a socket"):
            await start_admin_server(path, read)
        assert Path(path).read_text() == "not a socket"

    asyncio.run(scenario())
    with pytest.raises(AdminUnreachable):
        fetch_status(path)
