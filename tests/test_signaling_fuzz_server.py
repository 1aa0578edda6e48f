"""Fuzzing the real server: aiohttp's test server, real WebSocket frames, bytes on the wire.

The hub-level fuzzer (test_signaling_fuzz.py) hands text to the hub directly; these
frames travel as a client sends them, so encoding, frame-size and writer faults show.
Strategies include lone surrogate escapes, deep nesting, huge and non-finite numbers,
invalid UTF-8, hostile tokens and frames past the size limit. After every sequence: no
error was logged, every reply was JSON, a bystander who receives whatever the attacker
addressed to it still gets its pong, and nothing is left on the hub once all are gone.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs
from support.signaling_support import APPID, CERT, env, run

from esl_bridge.signaling.settings import SignalingSettings

LIMIT = 64 * 1024  # max_message_bytes here: long frames cross it cheaply

# Text with every kind of code point, lone surrogates included (hypothesis leaves them
# out by default); json.dumps writes those as the \ud800-style escapes a client would send.
hostile_text = st.text(
    alphabet=st.one_of(
        st.characters(categories=["Cs"]),
        st.characters(codec="utf-8"),
        st.sampled_from(["\\", '"', "\x00", "\U0001f600"]),
    ),
    max_size=40,
)
deep = st.integers(1, 6000).map(lambda n: "[" * n + "]" * n)
numbers = st.one_of(
    st.integers(300, 6000).map(lambda n: "9" * n),
    st.sampled_from(["1e999", "-1e999", "NaN", "Infinity", "-0", "1" + "0" * 400 + ".5"]),
)


def _token(payload: str) -> str:
    b64 = base64.urlsafe_b64encode(payload.encode("utf-8", "surrogatepass")).rstrip(b"=")
    return "1." + b64.decode() + ".AAAA"


def _frame(kind: str, fields: dict[str, Any], raw_value: str | None) -> bytes:
    body = {"v": 1, "id": 1, "type": kind, **fields}
    text = json.dumps(body)  # ensure_ascii: surrogates go as escapes, bytes stay UTF-8
    if raw_value is not None:  # splice a raw JSON value (deep nesting, odd number)
        text = text[:-1] + ',"x":' + raw_value + "}"
    return text.encode("utf-8")


structured = st.builds(
    _frame,
    st.sampled_from(["message", "invite", "accept", "refuse", "login", "ping", "query"]),
    st.fixed_dictionaries(
        {},
        optional={
            "to": st.sampled_from(["victim", "mallory", "nobody"]),
            "callee": st.sampled_from(["victim", "nobody"]),
            "text": hostile_text,
            "content": hostile_text,
            "response": hostile_text,
            "channel_id": hostile_text,
            "ref": hostile_text,
            "inv": hostile_text,
            "uid": st.sampled_from(["victim", "mallory"]) | hostile_text,
            "appid": st.just(APPID) | hostile_text,
            "token": hostile_text | deep.map(_token) | hostile_text.map(_token),
            "session": hostile_text,
            "uids": st.lists(hostile_text, max_size=3),
            "id": hostile_text | st.integers() | st.floats(),
        },
    ),
    st.none() | deep | numbers,
)
raw_frames = st.one_of(
    deep.map(str.encode),
    st.binary(max_size=200),
    st.integers(LIMIT - 64, 3 * LIMIT).map(
        lambda n: b'{"v":1,"type":"ping","pad":"' + b"x" * n + b'"}'
    ),
)
# (payload, send as BINARY rather than TEXT)
frames = st.tuples(structured | raw_frames, st.booleans())


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(frames, min_size=1, max_size=6))
def test_hostile_frames_through_the_real_server(sequence: list[tuple[bytes, bool]]) -> None:
    async def main() -> None:
        config = SignalingSettings(appid="", app_certificate=CERT, max_message_bytes=LIMIT)
        with capture_logs() as logs:
            async with env(config) as e:
                victim = await e.login("victim")
                mallory = await e.login("mallory")
                for payload, binary in sequence:
                    if mallory.ws.closed:
                        break
                    opcode = WSMsgType.BINARY if binary else WSMsgType.TEXT
                    # A frame past the limit may be cut off by the server mid-write.
                    with contextlib.suppress(ConnectionError):
                        await mallory.ws.send_frame(payload, opcode)
                if not mallory.ws.closed:
                    # Replies come in order: once the pong is here, all were answered
                    # (every one parsed as JSON by recv), unless the server closed it.
                    try:
                        msg_id = await mallory.send("ping")
                    except ConnectionError:  # closed by the server meanwhile
                        msg_id = None
                    while msg_id is not None:
                        msg = await mallory.recv(timeout=30)
                        if msg is None or (msg.get("re") == msg_id and msg["type"] == "pong"):
                            break
                pong = await victim.request("ping")
                assert pong["type"] == "pong"
                await victim.ws.close()
                await mallory.ws.close()
                await e.until(lambda: e.hub.stats()["connections"] == 0)
        bad = [x for x in logs if x.get("log_level") in ("error", "critical") or "exc_info" in x]
        assert bad == [], bad

    run(main(), timeout=120)
