"""Hostile frames through the real aiohttp server (issue 11, items 1, 3, 5, 6).

Each test replays one reproduction: a frame that silenced another user, nesting that
raised RecursionError, a frame that got a bare 1009, a reader that held megabytes.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from support.signaling_support import APPID, CERT, env, run

from esl_bridge.signaling.hub import QueueParticipant
from esl_bridge.signaling.settings import SignalingSettings

SURROGATE = "\\ud800"  # the six characters, as a client sends them inside JSON text


def settings(**kw: Any) -> SignalingSettings:
    base: dict[str, Any] = {"appid": "", "app_certificate": CERT}
    base.update(kw)
    return SignalingSettings(**base)


def frame(kind: str, msg_id: int, **fields: str) -> str:
    """A client frame whose string fields are spliced in raw (escapes kept as sent)."""
    parts = [f'"v":1,"id":{msg_id},"type":"{kind}"']
    parts += [f'"{key}":"{value}"' for key, value in fields.items()]
    return "{" + ",".join(parts) + "}"


async def still_served(ws: Any) -> None:
    """The connection answers (its own pong) and nothing is stuck in front of it."""
    reply = await ws.request("ping")
    assert reply["type"] == "pong", reply


def test_lone_surrogate_in_a_peer_message_is_refused_and_the_victim_keeps_working() -> None:
    async def main() -> None:
        async with env() as e:
            attacker = await e.login("mallory")
            victim = await e.login("victim")
            await attacker.send_raw(frame("message", 1, to="victim", text=f"hi {SURROGATE}"))
            reply = await attacker.reply(1)
            assert reply["type"] == "error", reply
            assert reply["code"] == "INVALID_ARGUMENT"
            assert "'text'" in reply["message"]
            await still_served(victim)
            # The same text, well formed, still reaches the victim.
            ok = await attacker.request("message", to="victim", text="hi \U0001f600")
            assert ok["delivered"] is True
            assert (await victim.event("message"))["text"] == "hi \U0001f600"
            await still_served(victim)

    run(main())


@pytest.mark.parametrize("verb", ["accept", "refuse"])
def test_lone_surrogates_in_invitations_and_answers_are_refused(verb: str) -> None:
    async def main() -> None:
        async with env() as e:
            caller = await e.login("alice")
            callee = await e.login("bob")
            await caller.send_raw(
                frame("invite", 1, ref="r1", callee="bob", content=f"x{SURROGATE}y")
            )
            reply = await caller.reply(1)
            assert (reply["code"], "'content'" in reply["message"]) == ("INVALID_ARGUMENT", True)
            assert e.hub.stats()["invitations"] == 0
            await still_served(callee)
            sent = await caller.request("invite", ref="r2", callee="bob", content="{}")
            invitation = await callee.event("invitation", inv=sent["inv"])
            await callee.send_raw(frame(verb, 7, inv=invitation["inv"], response=SURROGATE))
            answer = await callee.reply(7)
            assert (answer["code"], "'response'" in answer["message"]) == (
                "INVALID_ARGUMENT",
                True,
            )
            await still_served(caller)
            # The invitation is untouched and can be answered properly.
            assert (await callee.request(verb, inv=invitation["inv"], response="ok"))[
                "type"
            ] == "ok"
            await caller.event("local_state", ref="r2")
            await still_served(caller)

    run(main())


def test_lone_surrogate_in_the_request_id_is_refused_without_echoing_it() -> None:
    async def main() -> None:
        async with env() as e:
            ws = await e.login("alice")
            await ws.send_raw('{"v":1,"id":"' + SURROGATE + '","type":"ping"}')
            err = await ws.recv()
            assert err is not None and err["code"] == "INVALID_ARGUMENT", err
            assert err["re"] is None and "'id'" in err["message"]
            await still_served(ws)

    run(main())


def test_a_surrogate_that_reaches_a_connection_is_escaped_not_fatal() -> None:
    """Defence in depth: a participant (not the door) hands over an unencodable string."""

    async def main() -> None:
        async with env() as e:
            victim = await e.login("victim")
            handle = e.hub.register_participant(APPID, QueueParticipant(lambda _: None))
            handle.register(["robot"], e.clock())
            reply = handle.send_message("robot", "victim", "bad \ud800 text", e.clock())
            assert reply["delivered"] is True
            e.service.kick()
            got = await victim.event("message")
            assert got["text"] == "bad \ud800 text"  # escaped on the wire, decoded here
            await still_served(victim)

    run(main())


def _token_with_payload(payload: bytes) -> str:
    b64 = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
    return f"1.{b64}.AAAA"


@pytest.mark.parametrize(
    "payload",
    [b"[" * 1500, b"[" * 40 + b"]" * 40, b'{"a":"\\ud800","u":"alice","e":1}', b"NaN"],
)
def test_hostile_token_payloads_are_malformed(payload: bytes) -> None:
    async def main() -> None:
        async with env() as e:
            ws = await e.ws()
            reply = await ws.request(
                "login", appid=APPID, uid="alice", token=_token_with_payload(payload)
            )
            assert reply["type"] == "error", reply
            assert (reply["code"], reply["message"]) == ("AUTH_FAILED", "malformed")
            await still_served(ws)

    run(main())


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 1500,
        "[" * 4000 + "]" * 4000,
        '{"v":1,"type":"ping","x":' + "[" * 33 + "]" * 33 + "}",
        '{"v":1,"type":"ping","x":NaN}',
        '{"v":1,"type":"ping","x":' + "9" * 5000 + "}",
    ],
)
def test_deep_nesting_and_non_json_numbers_are_bad_messages(raw: str) -> None:
    async def main() -> None:
        async with env() as e:
            ws = await e.login("alice")
            await ws.send_raw(raw)
            err = await ws.recv()
            assert err is not None and err["code"] == "BAD_MESSAGE", err
            await still_served(ws)

    run(main())


@pytest.mark.parametrize("size", [128 * 1024 + 1, 600 * 1024, 2 * 1024 * 1024])
def test_any_frame_over_the_limit_gets_the_error_and_4003(size: int) -> None:
    async def main() -> None:
        async with env(settings()) as e:
            ws = await e.login("alice")
            head = '{"v":1,"type":"ping","pad":"'
            # The server may close while the client is still writing the frame.
            with contextlib.suppress(ConnectionError):
                await ws.send_raw(head + "x" * (size - len(head) - 2) + '"}')
            err = await ws.recv(timeout=30)
            assert err is not None and err["type"] == "error", err
            assert err["code"] == "MESSAGE_TOO_LARGE"
            closing = await ws.recv(timeout=30)
            assert closing is not None, "no closing frame"
            assert (closing["type"], closing["code"]) == ("closing", 4003)
            assert await ws.closed() == 4003
            await e.until(lambda: e.hub.stats()["connections"] == 0)

    run(main())


def test_a_reader_that_does_not_read_is_bounded_in_bytes_and_told_why() -> None:
    async def main() -> None:
        limit = 256 * 1024
        async with env(settings(max_send_queue_bytes=limit)) as e:
            reader = await e.login("slow")
            handle = e.hub.register_participant(APPID, QueueParticipant(lambda _: None))
            handle.register(["robot"], e.clock())
            text = "y" * 30_000
            # One burst, no await in between: the writer task cannot drain meanwhile.
            for _ in range(40):  # 40 frames (far under 1024), about 1.2 MB
                handle.send_message("robot", "slow", text, e.clock())
            e.service.kick()
            frames = []
            while True:
                msg = await reader.recv(timeout=30)
                if msg is None:
                    break
                frames.append(msg)
            messages = [m for m in frames if m["type"] == "message"]
            assert len(messages) * len(text) <= limit
            assert frames[-1]["type"] == "closing", [m["type"] for m in frames]
            assert (frames[-1]["code"], frames[-1]["reason"]) == (4005, "SLOW_CONSUMER")
            assert reader.close_code == 4005
            await e.until(lambda: e.hub.stats()["connections"] == 0)

    run(main())


def test_send_queue_bytes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_send_queue_bytes"):
        settings(max_send_queue_bytes=0)


def test_no_peer_text_reaches_the_log() -> None:
    from structlog.testing import capture_logs

    async def main() -> None:
        async with env() as e:
            with capture_logs() as logs:
                a = await e.login("alice")
                await e.login("bob")
                await a.send_raw(frame("message", 1, to="bob", text=f"secret-words {SURROGATE}"))
                await a.reply(1)
                await a.send_raw("[" * 5000)
                await a.recv()
                await still_served(a)
            text = json.dumps(logs, default=str)
            assert "secret-words" not in text
            assert all(entry["log_level"] not in ("error", "critical") for entry in logs), logs

    run(main())
