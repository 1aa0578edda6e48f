"""SIGHUP: the log file is reopened (logrotate) and what can change without dropping calls
is reloaded; a broken rtx.conf keeps the running configuration.

Runs ``esl-bridge run`` in a subprocess against the simulator, with a call up while the
signal arrives.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from support.gateway_process import gateway_on_simulator
from support.gateway_support import wait_until
from support.ports_and_waits import free_port

from esl_bridge.core.invitations import LocalState
from esl_bridge.sim import SimConfig, SimulatorThread


def _set(conf: Path, key: str, value: str) -> None:
    text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", conf.read_text())
    assert count == 1, key
    conf.write_text(text)


def test_sighup_reopens_the_log_and_reloads_numbers_level_and_limits_keeping_the_call(
    tmp_path: Path,
) -> None:
    with gateway_on_simulator(
        tmp_path,
        orphan_timeout=3600,
        acc_rule="10[00-09]",
    ) as (sim, loops, gateway):
        alice = gateway.web_user(loops, "alice")
        alice.invite("1000", "ch-1")
        wait_until(lambda: len(sim.channels()) == 1, 10, "the originated leg")
        [channel] = sim.channels()
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        assert not gateway.log_events("gateway.reloaded")
        # An unknown command is a VERBOSE (debug) line: not written at level 2 (the hub
        # hands the message to the gateway before it answers "ok")...
        alice.peer("1000", Cmd="NoSuchCommand")
        assert not gateway.log_events("calls.peer_message_unknown")

        # logrotate's way: move the file away, then SIGHUP.
        rotated = gateway.log_file.with_name(gateway.log_file.name + ".1")
        gateway.log_file.rename(rotated)
        _set(gateway.conf, "acc_rule", "10[00-09];1011")
        _set(gateway.conf, "originate_timeout", "30")
        _set(gateway.conf, "console", "off\nlevel = 1")  # [log] level 2 -> 1 (VERBOSE)
        _set(gateway.conf, "command_timeout", "4")  # [esl]: needs a restart
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: gateway.log_events("gateway.reloaded"), 20, "gateway.reloaded")

        [reloaded] = gateway.log_events("gateway.reloaded")  # in the new file
        assert set(reloaded["reloaded"]) == {
            "rtm2sip.acc_rule",
            "limits.originate_timeout",
            "log.level",
        }, reloaded
        assert reloaded["not_reloaded"] == ["esl.command_timeout"], reloaded
        assert reloaded["numbers_added"] == 1 and reloaded["numbers_removed"] == 0
        assert "gateway.reloaded" not in rotated.read_text()
        # The call went on through the reload.
        assert not channel.hung_up
        assert gateway.proc.poll() is None

        # The new number is served: a web user's call to it reaches the switch.
        alice.invite("1011", "ch-2")
        wait_until(lambda: len(sim.channels()) == 2, 10, "the call to the reloaded number")
        second = next(c for c in sim.channels() if c is not channel)
        assert second.variables.get("originate_timeout") == "30", second.variables
        # ...and written at level 1 (VERBOSE), after the reload.
        alice.peer("1000", Cmd="NoSuchCommand")
        wait_until(lambda: gateway.log_events("calls.peer_message_unknown"), 10, "a VERBOSE line")
        assert "calls.peer_message_unknown" not in rotated.read_text()

        # A broken file: nothing changes, the log says why, the process runs on.
        good = gateway.conf.read_text()
        gateway.conf.write_text(good + "[limits]\nmax_calls = -3\n")
        gateway.log_file.rename(rotated)  # rotated again: reopened even so
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: gateway.log_events("gateway.reload_failed"), 20, "reload_failed")
        [failed] = gateway.log_events("gateway.reload_failed")
        assert "running one is kept" in failed["reason"]
        assert failed["problems"], failed
        assert not gateway.log_events("gateway.reloaded")  # in the rotated file only
        assert "gateway.reloaded" in rotated.read_text()
        assert gateway.health()[0] == 200
        assert not channel.hung_up

        assert gateway.terminate() == 0


def _lines(path: Path) -> list[dict[str, object]]:
    import json

    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def test_a_change_that_needs_a_restart_is_named_at_every_reload_until_then(
    tmp_path: Path,
) -> None:
    """In-process: what was not taken stays as it runs, so the next reload names it again
    (here [rtm2sip] on, beside acc_rule of the same section, which is taken)."""
    from esl_bridge import config
    from esl_bridge.gateway.process import Gateway

    socket_port = free_port()
    sim = SimulatorThread(SimConfig(socket_target=("127.0.0.1", socket_port))).start()
    conf = tmp_path / "rtx.conf"
    conf.write_text(
        f"[rtm2sip]\non = 1\nacc_rule = 10[00-03]\n[esl]\nport = {sim.esl_port}\n"
        f"[socket]\nport = {socket_port}\n[web]\nport = {free_port()}\n"
        "[auth]\nopen_mode = 1\n[log]\nconsole = off\n"
    )
    gateway = Gateway(config.load(str(conf)))
    try:
        gateway.start()
        _set(conf, "on", "0")
        _set(conf, "acc_rule", "10[00-04]")
        first = gateway.reload()
        assert first["reloaded"] == ["rtm2sip.acc_rule"]
        assert first["not_reloaded"] == ["rtm2sip.on"]
        second = gateway.reload()
        assert second == {"reloaded": [], "not_reloaded": ["rtm2sip.on"], "failed": []}
        assert gateway.settings.rtm2sip.on is True
        assert gateway.settings.rtm2sip.numbers[-1] == "1004"
        assert gateway.controller is not None and "1004" in gateway.controller.pool
    finally:
        gateway.stop(drain=0)
        sim.stop()


def test_the_one_way_audio_thresholds_are_reloaded_for_the_calls_judged_next(
    tmp_path: Path,
) -> None:
    """[media] media_problem_after and silence_floor_dbov are taken at a reload (the judge
    of a call reads them when its media starts); the other [media] keys need a restart."""
    from esl_bridge import config
    from esl_bridge.gateway.process import Gateway

    socket_port = free_port()
    sim = SimulatorThread(SimConfig(socket_target=("127.0.0.1", socket_port))).start()
    conf = tmp_path / "rtx.conf"
    conf.write_text(
        f"[rtm2sip]\non = 1\nacc_rule = 10[00-03]\n[esl]\nport = {sim.esl_port}\n"
        f"[socket]\nport = {socket_port}\n[web]\nport = {free_port()}\n"
        "[auth]\nopen_mode = 1\n[log]\nconsole = off\n"
        "[media]\nmedia_problem_after = 5\nsilence_floor_dbov = -70\nmedia_timeout = 30\n"
    )
    gateway = Gateway(config.load(str(conf)))
    try:
        gateway.start()
        _set(conf, "media_problem_after", "2.5")
        _set(conf, "silence_floor_dbov", "-60")
        _set(conf, "media_timeout", "20")
        result = gateway.reload()
        assert result["reloaded"] == ["media.media_problem_after", "media.silence_floor_dbov"]
        assert result["not_reloaded"] == ["media.media_timeout"]
        controller = gateway.controller
        assert controller is not None
        media = controller.settings.media
        assert (media.media_problem_after, media.silence_floor_dbov) == (2.5, -60.0)
        assert media.media_timeout == 30.0  # as it runs, until a restart
        assert gateway.settings.media == media
        again = gateway.reload()
        assert again == {"reloaded": [], "not_reloaded": ["media.media_timeout"], "failed": []}
    finally:
        gateway.stop(drain=0)
        sim.stop()
