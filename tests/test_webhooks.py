"""Webhooks (gateway/webhooks.py): an aiohttp test server is the app's backend.

The sender's retry waits go through an injected ``sleep`` (recorded, or held on an event), and
its timestamps through an injected wall clock: nothing here waits on wall time to decide.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from support.gateway_support import (
    APPID,
    WebUser,
    assert_nothing_left,
    running_gateway,
    wait_until,
)
from support.netns import loopback_only
from support.ports_and_waits import free_port
from support.webhook_receiver import Receiver, ThreadReceiver

from esl_bridge.config import WebhookSettings
from esl_bridge.core.invitations import LocalState
from esl_bridge.gateway.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    WebhookSender,
    sign,
    verify_signature,
)

SECRET = "whsec-test-0123456789"
WALL = 1_800_000_000.0


# -- the signature ---------------------------------------------------------------------------


def test_signature_check_and_replay_window() -> None:
    body = b'{"type":"call.started"}'
    header = sign(SECRET, int(WALL), body)
    assert header.startswith(f"t={int(WALL)},v1=")
    assert verify_signature(SECRET, header, body, WALL)
    assert verify_signature(SECRET, header, body, WALL + 300, tolerance=300)
    assert not verify_signature(SECRET, header, body, WALL + 301, tolerance=300)  # replayed
    assert not verify_signature(SECRET, header, body, WALL - 301, tolerance=300)
    assert not verify_signature(SECRET, header, body + b" ", WALL)  # tampered body
    assert not verify_signature("other-secret", header, body, WALL)
    stamp, _, mac = header.partition(",")
    moved = f"t={int(WALL) + 1},{mac}"  # the timestamp is signed too
    assert not verify_signature(SECRET, moved, body, WALL)
    for bad in ("", "t=,v1=", "v1=abc", f"t={int(WALL)}", "t=x,v1=00", stamp + ",v1="):
        assert not verify_signature(SECRET, bad, body, WALL), bad


# -- the receiver ------------------------------------------------------------------------------


async def wait_for(check: Callable[[], bool], what: str, limit: int = 20000) -> None:
    """Yield to the loop until ``check`` holds (a bound on iterations, not on time)."""
    for _ in range(limit):
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"never happened: {what}")


def settings(url: str, **kw: Any) -> WebhookSettings:
    base: dict[str, Any] = {"url": (url,), "secret": SECRET, "retries": 3, "backoff": 0.5}
    base.update(kw)
    return WebhookSettings(**base)


class Sleeps:
    """The sender's backoff waits: recorded; held while ``gate`` is clear."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self.gate.wait()


def run(receiver: Receiver, body: Callable[[TestServer, Sleeps], Awaitable[None]]) -> None:
    async def main() -> None:
        server = TestServer(receiver.app(), host="127.0.0.1")
        await server.start_server()
        try:
            await body(server, Sleeps())
        finally:
            await server.close()

    asyncio.run(main())


def call_fields(call_id: str, number: str = "1000") -> dict[str, object]:
    return {"call_id": call_id, "direction": "rtc2sip", "uid": "alice", "number": number}


def test_each_event_once_in_order_per_call_with_a_valid_signature() -> None:
    receiver = Receiver()

    async def body(server: TestServer, sleeps: Sleeps) -> None:
        sender = WebhookSender(
            settings(str(server.make_url("/hook"))),
            common={"node": "n1"},
            wall_clock=lambda: WALL,
            sleep=sleeps,
        )
        await sender.start()
        sent = [
            ("user_online", {"uid": "alice", "appid": APPID}),
            ("call_started", call_fields("c1")),
            ("call_started", call_fields("c2", "1001")),
            ("call_answered", {**call_fields("c1"), "setup_seconds": 0.25}),
            ("gateway_started", {"socket": "x"}),  # not a webhook event
            ("call_ended", {**call_fields("c2", "1001"), "cause": "USER_BUSY", "duration": 1.0}),
            ("call_answered", call_fields("c1")),
            ("call_ended", {**call_fields("c1"), "cause": "NORMAL_CLEARING", "duration": 3.5}),
            ("user_offline", {"uid": "alice", "appid": APPID}),
        ]
        accepted = [sender.emit(name, fields) for name, fields in sent]
        assert accepted == [name != "gateway_started" for name, _ in sent]
        await wait_for(lambda: len(receiver.got) == 8, "8 requests")
        await sender.stop()
        assert len(receiver.got) == 8  # each once: nothing retried, nothing more
        events = [r.event for r in receiver.got]
        assert len({e["id"] for e in events}) == 8
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        for r in receiver.got:
            assert verify_signature(SECRET, r.headers[SIGNATURE_HEADER], r.body, WALL)
            assert r.headers[EVENT_HEADER] == r.event["type"]
            assert r.headers[DELIVERY_HEADER] == r.event["id"]
            assert r.headers["Content-Type"] == "application/json"
            assert r.event["created"] == WALL
            assert r.event["data"]["node"] == "n1"
        per_call = {
            cid: [e["type"] for e in events if e["data"].get("call_id") == cid]
            for cid in ("c1", "c2")
        }
        assert per_call == {
            "c1": ["call.started", "call.answered", "call.answered", "call.ended"],
            "c2": ["call.started", "call.ended"],
        }
        assert events[0]["type"] == "user.online" and events[-1]["type"] == "user.offline"
        ended = next(e for e in events if e["type"] == "call.ended")
        assert ended["data"] == {
            "node": "n1",
            **call_fields("c2", "1001"),
            "cause": "USER_BUSY",
            "duration": 1.0,
        }
        stats = sender.stats()
        assert stats["delivered"] == {
            "user.online": 1,
            "call.started": 2,
            "call.answered": 2,
            "call.ended": 2,
            "user.offline": 1,
        }
        assert stats["failed_attempts"] == 0 and sum(stats["dropped"].values()) == 0
        assert sleeps.delays == []

    run(receiver, body)


def test_failures_are_retried_with_backoff_then_delivered_once() -> None:
    statuses = iter([503, 500, 429, 200, 200])
    receiver = Receiver(answer=lambda r: next(statuses))
    clock = iter(range(int(WALL), int(WALL) + 100))

    async def body(server: TestServer, sleeps: Sleeps) -> None:
        sender = WebhookSender(
            settings(str(server.make_url("/hook")), retries=3, backoff=0.5, max_backoff=1.5),
            wall_clock=lambda: float(next(clock)),
            sleep=sleeps,
        )
        await sender.start()
        sender.emit("call_started", call_fields("c1"))
        sender.emit("call_ended", call_fields("c1"))
        await wait_for(lambda: len(receiver.got) == 5, "4 attempts, then the second event")
        await sender.stop()
        first = receiver.got[:4]
        assert {r.headers[DELIVERY_HEADER] for r in first} == {first[0].event["id"]}
        assert receiver.got[4].event["type"] == "call.ended"  # after the first, not before
        # each attempt signed at its own time (a receiver's replay window holds for retries)
        stamps = [r.headers[SIGNATURE_HEADER].split(",")[0] for r in first]
        assert len(set(stamps)) == 4
        assert sleeps.delays == [0.5, 1.0, 1.5]  # doubled, capped at max_backoff
        stats = sender.stats()
        assert stats["delivered"] == {"call.started": 1, "call.ended": 1}
        assert stats["failed_attempts"] == 3
        assert sum(stats["dropped"].values()) == 0

    run(receiver, body)


def test_a_client_error_is_not_retried() -> None:
    receiver = Receiver(answer=lambda r: 400 if r.event["type"] == "call.started" else 200)

    async def body(server: TestServer, sleeps: Sleeps) -> None:
        sender = WebhookSender(settings(str(server.make_url("/hook"))), sleep=sleeps)
        await sender.start()
        sender.emit("call_started", call_fields("c1"))
        sender.emit("call_ended", call_fields("c1"))
        await wait_for(lambda: len(receiver.got) == 2, "two requests")
        await sender.stop()
        assert sleeps.delays == []
        stats = sender.stats()
        assert stats["dropped"]["rejected"] == 1 and stats["delivered"] == {"call.ended": 1}

    run(receiver, body)


def test_receiver_down_retries_then_counted_drops_and_emit_never_blocks() -> None:
    async def main() -> None:
        sleeps = Sleeps()
        url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
        sender = WebhookSender(settings(url, retries=2, queue_max=3), sleep=sleeps)
        await sender.start()
        sleeps.gate.clear()  # the first event's backoff holds: the queue fills behind it
        sender.emit("call_started", call_fields("c0"))
        await wait_for(lambda: len(sleeps.delays) == 1, "first attempt failed")
        assert sender.stats()["failed_attempts"] == 1
        # While it waits, 10 more events: emit returns at once (no await), the oldest go.
        for i in range(1, 11):
            assert sender.emit("call_started", call_fields(f"c{i}")) is True
        stats = sender.stats()
        assert stats["queued"] == 3
        assert stats["dropped"]["queue_full"] == 7
        sleeps.gate.set()
        await wait_for(lambda: sender.stats()["dropped"]["retries_exhausted"] == 4, "all given up")
        stats = sender.stats()
        assert stats["failed_attempts"] == 4 * 3  # each of the 4 kept events: 1 + 2 retries
        assert stats["delivered"] == {} and stats["queued"] == 0
        # Events still queued at stop are counted as stopped.
        sleeps.gate.clear()
        sender.emit("call_started", call_fields("late"))
        sender.emit("call_ended", call_fields("late"))
        await wait_for(lambda: len(sleeps.delays) == 4 * 2 + 1, "held again")
        await sender.stop(flush_timeout=0.05)
        stats = sender.stats()
        assert stats["dropped"]["stopped"] == 2  # the one waiting and the one in flight
        assert stats["dropped"] == {
            "queue_full": 7,
            "retries_exhausted": 4,
            "rejected": 0,
            "stopped": 2,
            "error": 0,
        }

    asyncio.run(main())


def test_no_url_means_no_sender_work() -> None:
    async def main() -> None:
        sender = WebhookSender(WebhookSettings())
        await sender.start()
        assert not sender.enabled
        assert sender.emit("call_started", call_fields("c1")) is False
        await sender.stop()
        assert sender.stats()["queued"] == 0

    asyncio.run(main())


# -- the gateway, against the simulator ----------------------------------------------------------


def hooks_config(url: str, extra: str = "") -> str:
    return f"[webhooks]\nurl = {url}\nsecret = {SECRET}\n{extra}"


@loopback_only
def test_the_gateway_posts_its_call_and_user_events() -> None:
    with ThreadReceiver() as backend, running_gateway(hooks_config(backend.url)) as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        backend.wait_event("user.online", uid="alice")
        alice.invite("1000", "ch-w")
        alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
        started = backend.wait_event("call.started", uid="alice")
        call_id = started["data"]["call_id"]
        assert (started["data"]["direction"], started["data"]["number"]) == ("rtc2sip", "1000")
        backend.wait_event("call.answered", call_id=call_id)
        alice.peer("1000", Cmd="EndCall")
        ended = backend.wait_event("call.ended", call_id=call_id)
        data = ended["data"]
        assert (data["reason"], data["cause"]) == ("web_hangup", "NORMAL_CLEARING")
        assert data["duration"] >= data["talk_seconds"] >= 0
        assert data["packets_from_browser"] == 0 and "frames_to_browser" in data  # media figures
        assert data["appid"] == APPID and data["node"] == gateway.identity.node_id
        alice.close()
        backend.wait_event("user.offline", uid="alice")
        assert_nothing_left(gateway, sim)
        got = list(backend.receiver.got)
        for r in got:
            stamp = int(r.headers[SIGNATURE_HEADER].split(",")[0][2:])
            assert verify_signature(SECRET, r.headers[SIGNATURE_HEADER], r.body, stamp)
        mine = [r.event["type"] for r in got if r.event["data"].get("call_id") == call_id]
        assert mine == ["call.started", "call.answered", "call.ended"]  # each once, in order
        kinds = [r.event["type"] for r in got]
        assert kinds.count("user.online") == 1 and kinds.count("user.offline") == 1
        stats = gateway.webhooks.stats()
        assert stats["delivered"]["call.ended"] == 1 and sum(stats["dropped"].values()) == 0
        # /metrics shows them
        metrics = fetch_metrics(gateway)
        assert 'esl_bridge_webhooks_delivered_total{event="call.ended"} 1.0' in metrics


def fetch_metrics(gateway: Any) -> str:
    import urllib.request

    host, port = gateway.web_address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        return response.read().decode()  # type: ignore[no-any-return]


@loopback_only
def test_calls_go_on_while_the_receiver_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nobody listens there
    extra = hooks_config(url, "retries = 1\nbackoff = 0.01\nqueue_max = 2\n")
    with running_gateway(extra) as (gateway, sim):
        alice = WebUser(gateway, "alice").connect()
        for n in range(3):
            alice.invite("1000", f"ch-{n}")
            alice.wait_local_state(LocalState.ACCEPTED_BY_REMOTE)
            alice.peer("1000", Cmd="EndCall")
            wait_until(lambda: not gateway.controller.book, 10, "call ended")  # type: ignore
            assert_nothing_left(gateway, sim)

        def settled() -> bool:
            stats = gateway.webhooks.stats()
            return stats["queued"] == 0 and not any(r.busy for r in gateway.webhooks._receivers)

        wait_until(settled, 20, "webhook queue settled")
        stats = gateway.webhooks.stats()
        emitted = 1 + 3 * 3  # user.online, then started/answered/ended per call
        dropped = stats["dropped"]
        assert stats["delivered"] == {}
        assert dropped["retries_exhausted"] + dropped["queue_full"] == emitted, stats
        assert stats["failed_attempts"] == 2 * dropped["retries_exhausted"]
        metrics = fetch_metrics(gateway)
        assert "esl_bridge_webhooks_dropped_total" in metrics
        assert gateway.controller.status()["ended"] == {"web_hangup": 3}  # type: ignore


# -- README.rst's examples, run as written ------------------------------------------------------


def readme_block(after: str) -> str:
    """The literal block that follows the paragraph ending in ``after`` in README.rst."""
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
    start = text.index(after) + len(after)
    lines = text[start:].split("\n")[2:]  # the "::" line's end, then one blank line
    block = []
    for line in lines:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    return "\n".join(block).strip() + "\n"


def test_readme_signature_check_accepts_ours_and_refuses_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    namespace: dict[str, Any] = {}
    exec(readme_block("(five minutes here). In Python"), namespace)
    valid = namespace["valid"]
    monkeypatch.setattr(time, "time", lambda: WALL)  # the example reads the clock itself
    body = b'{"type":"call.ended"}'
    now = int(WALL)
    assert valid(SECRET.encode(), sign(SECRET, now, body), body)
    assert valid(SECRET.encode(), sign(SECRET, now - 300, body), body)
    assert not valid(SECRET.encode(), sign(SECRET, now, body), body + b"x")
    assert not valid(b"other", sign(SECRET, now, body), body)
    assert not valid(SECRET.encode(), sign(SECRET, now - 301, body), body)  # replayed
    assert not valid(SECRET.encode(), "garbage", body)


# -- [webhooks] in rtx.conf ---------------------------------------------------------------------


def test_webhooks_config_checks_and_masks() -> None:
    from esl_bridge import config

    one = config.from_text(f"[webhooks]\nurl = https://app.test/hook\nsecret = {SECRET}\n")
    assert one.webhooks.url == ("https://app.test/hook",)  # one URL needs no trailing comma
    two = config.from_text(
        f"[webhooks]\nurl = http://127.0.0.1:9/a, https://u:pw-in-url@h.test/b\nsecret = {SECRET}\n"
    )
    assert two.webhooks.url == ("http://127.0.0.1:9/a", "https://u:pw-in-url@h.test/b")
    shown = config.render(two)
    assert SECRET not in shown and "pw-in-url" not in shown
    assert "https://u:***@h.test/b" in shown
    assert {SECRET, "pw-in-url"} <= set(two.secrets())  # masked in every log line
    assert config.defaults().webhooks.url == ()
    for text, reason in [
        ("url = ftp://h.test/\nsecret = s", "expected http://"),
        ("url = http:///nohost\nsecret = s", "expected http://"),
        ("url = https://h.test/\n", "secret"),
        ("url = http://u:pw-in-url@h.test:99999/\nsecret = s", "not a URL"),
    ]:
        with pytest.raises(config.ConfigError) as info:
            config.from_text(f"[webhooks]\n{text}\n")
        message = str(info.value)
        assert reason in message, message
        assert "pw-in-url" not in message
