"""SIGTERM during a live call: the gateway drains it before it exits.

``esl-bridge run`` stops on SIGTERM (a service manager's stop): every call ends as a
shutdown (``CallController.stop``, esl_bridge/gateway/controller.py), which tells the web
user ``EndCall`` and hangs the channel up with ``SYSTEM_SHUTDOWN``, and the gateway waits
for the switch to confirm before it closes its ESL connection and exits with status 0.
A gateway that exited first would leave the phone on a dead line until the orphan
watchdog fires, with another hangup cause.
"""

from __future__ import annotations

from pathlib import Path

from support.gateway_process import gateway_on_simulator
from support.gateway_support import wait_until
from support.netns import loopback_only
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState

# Long enough that only the drain, never the watchdog, can end the channel in this test.
_SLOW_WATCHDOG = 3600


@loopback_only(timeout=120)
def test_sigterm_during_a_live_call_ends_it_before_the_process_exits(tmp_path: Path) -> None:
    with gateway_on_simulator(
        tmp_path,
        orphan_timeout=_SLOW_WATCHDOG,
    ) as (sim, loops, gateway):
        # A live call: web -> SIP, answered, the browser's audio flowing over unicast.
        alice = gateway.web_user(loops, "alice")
        alice.invite("1000", "ch-1")
        wait_until(lambda: len(sim.channels()) == 1, 10, "the originated leg")
        [channel] = sim.channels()
        wait_until(lambda: channel.answered and channel.parked, 10, "the leg answered, parked")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        peer = WebPeer(alice)
        peer.offer("1000", "ch-1")
        wait_until(lambda: channel.unicast is not None, 20, "unicast running on the leg")
        stream = channel.unicast
        assert stream is not None
        wait_until(lambda: stream.frames_received > 0, 20, "the browser's audio at the switch")
        assert not channel.hung_up

        status = gateway.terminate()

        assert status == 0
        # Checked at once, not waited for: the process has exited, so the channel must
        # have ended while it was still there.
        assert channel.hung_up, "the gateway exited with its call still up on the switch"
        assert channel.hangup_cause == "SYSTEM_SHUTDOWN"
        # The message went out before the exit; this thread may read it a moment later.
        assert alice.wait_peer_cmd("EndCall")["from"] == "1000"
        assert [e["reason"] for e in gateway.log_events("calls.ended")] == ["shutdown"], (
            gateway.log_events("calls.ended")
        )
        assert gateway.log_events("gateway.stopped")
        assert not gateway.log_events("gateway.drain_incomplete")
        peer.close()
