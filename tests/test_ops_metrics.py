"""The metrics operators alert on, and the example alert rules and dashboard in contrib/.

A gateway against the simulator makes an answered call with browser audio and a busy
one, loses its ESL connection once, and then ``/metrics`` must show the setup latency,
the causes, the media counters, the reconnect and the WebSocket connection; every
``esl_bridge_*`` name in contrib/prometheus-alerts.yml and contrib/grafana-dashboard.json
must be among its samples.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from prometheus_client.parser import text_string_to_metric_families
from support.gateway_support import WebUser, assert_nothing_left, running_gateway, wait_until
from support.netns import loopback_only
from support.web_peer import WebPeer

from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.ops_metrics import OpsMetrics
from esl_bridge.gateway.process import Gateway

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "contrib" / "prometheus-alerts.yml"
DASHBOARD = ROOT / "contrib" / "grafana-dashboard.json"
_NAME = re.compile(r"\besl_bridge_[a-z0-9_]+")


def _samples(gateway: Gateway) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert gateway.web_address is not None
    host, port = gateway.web_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _contrib_names() -> set[str]:
    names = set(_NAME.findall(ALERTS.read_text()))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert exprs
    for expr in exprs:
        names.update(_NAME.findall(expr))
    return names


def test_the_dashboard_is_json_and_the_rules_name_their_alerts() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["title"] == "esl-bridge"
    assert all(p["targets"] for p in dashboard["panels"])
    text = ALERTS.read_text()
    assert text.count("- alert: ") == text.count("expr: ") >= 5
    try:
        import yaml
    except ImportError:  # not a test dependency; the structure is checked when it is there
        return
    rules = yaml.safe_load(text)["groups"][0]["rules"]
    assert all({"alert", "expr", "labels", "annotations"} <= set(r) for r in rules)


@loopback_only(timeout=120)
def test_metrics_count_setup_causes_media_reconnects_and_the_contrib_files_use_only_them() -> None:
    with running_gateway() as (gateway, sim):
        before = _samples(gateway)
        assert _value(before, "esl_bridge_esl_reconnects_total") == 0
        assert _value(before, "esl_bridge_call_setup_seconds_count", direction="rtc2sip") == 0

        alice = WebUser(gateway, "alice").connect()
        wait_until(
            lambda: _value(_samples(gateway), "esl_bridge_hub_connections") == 1,
            10,
            "alice's WebSocket counted",
        )
        alice.invite("1000", "ch-1")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        [channel] = sim.channels()
        peer = WebPeer(alice)
        peer.offer("1000", "ch-1")
        wait_until(lambda: channel.unicast is not None, 20, "unicast running on the leg")
        stream = channel.unicast
        assert stream is not None
        wait_until(lambda: stream.frames_received > 0, 20, "the browser's audio at the switch")
        alice.peer("1000", Cmd="EndCall")
        assert_nothing_left(gateway, sim)
        controller = gateway.controller
        assert controller is not None
        # The leg's figures are added once it has closed (after the call ended).
        wait_until(lambda: not controller.links_held()["links"], 10, "the call forgotten")
        alice.invite("1003", "ch-2")  # busy
        alice.wait_local_state(LocalState.REFUSED_BY_REMOTE, timeout=15)
        assert_nothing_left(gateway, sim)

        sim.run_sync(sim.sim.drop_inbound_connections)
        wait_until(
            lambda: _value(_samples(gateway), "esl_bridge_esl_reconnects_total") == 1,
            20,
            "the reconnect counted",
        )

        after = _samples(gateway)
        assert _value(after, "esl_bridge_call_setup_seconds_count", direction="rtc2sip") == 1
        assert _value(after, "esl_bridge_call_setup_seconds_count", direction="sip2rtc") == 0
        assert (_value(after, "esl_bridge_call_setup_seconds_sum", direction="rtc2sip") or 0) > 0
        assert (
            _value(after, "esl_bridge_call_setup_seconds_bucket", direction="rtc2sip", le="+Inf")
            == 1
        )
        assert _value(after, "esl_bridge_calls_ended_by_cause_total", cause="USER_BUSY") == 1
        assert (
            sum(
                v
                for (name, _), v in after.items()
                if name == "esl_bridge_calls_ended_by_cause_total"
            )
            == 2
        )
        for direction in ("browser_to_switch", "switch_to_browser"):
            for kind in ("lost", "late", "underrun")[direction == "switch_to_browser" :]:
                value = _value(
                    after, "esl_bridge_media_packets_total", direction=direction, kind=kind
                )
                assert value is not None and value >= 0, (direction, kind)

        present = {name for name, _ in after}
        missing = sorted(
            name for name in _contrib_names() if not ({name, f"{name}_total"} & present)
        )
        assert not missing, missing
        peer.close()
        alice.close()


def test_media_figures_are_summed_per_direction_and_kind() -> None:
    metrics = OpsMetrics()
    unicast = SimpleNamespace(tx_underruns=3, rx_underruns=4, rx_late_drops=5)
    metrics.media(SimpleNamespace(receive={"lost": 7, "late": 2}, unicast=unicast))
    metrics.media(SimpleNamespace(receive={"lost": 1}, unicast=None))
    media = metrics.snapshot()["media"]
    assert media == {
        ("browser_to_switch", "lost"): 8,
        ("browser_to_switch", "late"): 2,
        ("browser_to_switch", "underrun"): 3,
        ("switch_to_browser", "late"): 5,
        ("switch_to_browser", "underrun"): 4,
    }


def test_the_first_connect_is_not_a_reconnect() -> None:
    metrics = OpsMetrics()
    for state in ("connecting", "connected", "connected", "disconnected", "connected"):
        metrics.esl_state(state)
    assert metrics.esl_reconnects == 1


def test_one_way_verdicts_are_counted_by_direction_and_verdict() -> None:
    metrics = OpsMetrics()
    metrics.media_verdict("browser_to_switch", "browser_silent")
    metrics.media_verdict("browser_to_switch", "browser_silent")
    metrics.media_verdict("switch_to_browser", "ok")
    metrics.media_verdict("switch_to_browser", "browser_silent")  # not a verdict of that way
    metrics.media_verdict("sideways", "ok")
    verdicts = metrics.snapshot()["verdicts"]
    assert verdicts[("browser_to_switch", "browser_silent")] == 2
    assert verdicts[("switch_to_browser", "ok")] == 1
    assert sum(verdicts.values()) == 3
    # Every verdict of each direction is exported from the start, at 0.
    assert ("switch_to_browser", "browser_not_playing") in verdicts
    assert ("browser_to_switch", "switch_silent") not in verdicts
