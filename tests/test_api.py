"""The click-to-call HTTP API (gateway/api.py) through the whole gateway and the simulator.

The app's backend is an aiohttp client on the gateway's loop; the web user speaks the
WebSocket protocol (support/gateway_support.py) and its browser media is an aiortc peer
(support/web_peer.py), so every gateway test runs in a loopback-only namespace. The
ClickToCall state machine is also driven alone, with a fake clock.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import jsonschema
import numpy as np
import pytest
from openapi_spec_validator import validate as validate_openapi
from support.gateway_support import WebUser, assert_nothing_left, running_gateway, wait_until
from support.netns import loopback_only
from support.web_peer import BROWSER_HZ, WebPeer

from esl_bridge.core import call as c
from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.gateway.api import ERRORS, MAX_BODY, _is_loopback, openapi_document
from esl_bridge.gateway.process import Gateway
from esl_bridge.numbers import NumberPool
from esl_bridge.sim import AudioSource, Extension

TOKEN = "t0ken-for-the-tests-0123456789abcdef"
API = f"[api]\non = 1\ntoken = {TOKEN}\n"
# The tests send bursts of requests: far above the default limit (its own test below).
FAST = API + "requests_per_second = 1000\nburst = 1000\n"
PHONE_HZ = 440.0


class Backend:
    """The app's backend: HTTP requests to the gateway's /api/v1, run on its loop."""

    def __init__(self, gateway: Gateway, token: str | None = TOKEN) -> None:
        self.gateway = gateway
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        chunked: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        host, port = self.gateway.web_address  # type: ignore[misc]
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")

        async def go() -> tuple[int, Any, dict[str, str]]:
            payload: Any = data
            if chunked and data is not None:
                # No Content-Length: the gateway learns the size only by reading.
                async def pieces() -> Any:
                    for start in range(0, len(data), 1000):
                        yield data[start : start + 1000]

                payload = pieces()
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    method, f"http://{host}:{port}/api/v1{path}", data=payload, headers=sent
                ) as response,
            ):
                text = await response.text()
                return response.status, json.loads(text) if text else None, dict(response.headers)

        return self.gateway.loops.run_coroutine(go(), timeout=15)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, answer, _ = self.request(method, path, body)
        assert got == status, (got, answer)
        return answer


def error_code(answer: Any) -> str:
    return str(answer["error"]["code"])


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def assert_tones_both_ways(channel: Any, peer: WebPeer) -> None:
    """The phone's channel (simulator) gets the browser's tone, the browser the phone's."""
    wait_until(lambda: channel.unicast is not None, 20, "unicast on the phone's channel")
    stream = channel.unicast
    assert stream is not None
    wait_until(lambda: len(stream.received_samples()) >= 16000, 40, "2 s of browser audio")
    wait_until(lambda: len(peer.heard) >= 100, 40, "2 s of phone audio at the browser")
    sent = np.array(stream.received_samples()[-8000:], dtype=float)
    assert _dominant_hz(sent, 8000) == pytest.approx(BROWSER_HZ, abs=15)
    heard, rate = peer.audio()
    assert _dominant_hz(heard[-rate:], rate) == pytest.approx(PHONE_HZ, abs=15)


@contextlib.contextmanager
def gateway_and_phone() -> Iterator[tuple[Gateway, Any, Backend, WebUser]]:
    """A gateway whose number 1000 rings (180) for a second, then answers and sends a
    PHONE_HZ tone; its API's backend; web user alice online."""
    with running_gateway(FAST) as (gateway, sim):
        sim.set_extension(
            "1000", Extension("ringing", answer_after=1.0, audio=AudioSource("tone", PHONE_HZ))
        )
        yield gateway, sim, Backend(gateway), WebUser(gateway, "alice").connect()


@loopback_only(timeout=180)
def test_click_to_call_rings_the_web_user_then_dials_the_number_with_audio_both_ways() -> None:
    with gateway_and_phone() as (gateway, sim, backend, alice):
        assert backend.ok("GET", "/users/alice") == {"uid": "alice", "online": True, "calls": []}

        created = backend.ok("POST", "/calls", {"uid": "alice", "number": "1000"}, status=201)
        call_id = created["call_id"]
        assert (created["uid"], created["number"], created["state"]) == (
            "alice",
            "1000",
            "inviting",
        )
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 10, "alice rings")
        assert invitation["caller"] == "1000"
        content = json.loads(invitation["content"])
        chan_id = content["ChanId"]
        assert (content["DisplayName"], chan_id) == ("1000", invitation["channel_id"])
        # Nothing is dialled while the web user rings.
        assert sim.live_channel_count() == 0
        assert backend.ok("GET", f"/calls/{call_id}")["state"] == "inviting"
        assert backend.ok("GET", "/users/alice")["calls"] == [call_id]

        alice.request({"type": "ack", "inv": invitation["inv"]})
        reply = alice.request(
            {"type": "accept", "inv": invitation["inv"], "response": json.dumps({"Mode": 1})}
        )
        assert reply["type"] == "ok", reply
        peer = WebPeer(alice)
        peer.offer("1000", chan_id)
        ringing = alice.wait_peer_cmd("SipState", timeout=15)
        assert (ringing["from"], ringing["State"]) == ("1000", "ringing")
        answered = alice.wait_peer_cmd("SipState", timeout=15)
        assert (answered["from"], answered["State"]) == ("1000", "answered")
        [channel] = sim.channels()
        assert channel.variables.get("esl_bridge_call_id") == call_id
        assert channel.variables.get("origination_caller_id_number") == "alice"

        assert_tones_both_ways(channel, peer)

        shown = backend.ok("GET", f"/calls/{call_id}")
        assert (shown["state"], shown["answered"]) == ("connected", True)
        assert [row["call_id"] for row in backend.ok("GET", "/calls")["calls"]] == [call_id]

        ended = backend.ok("DELETE", f"/calls/{call_id}", status=202)
        assert ended["call_id"] == call_id
        assert alice.wait_peer_cmd("EndCall")["from"] == "1000"
        assert_nothing_left(gateway, sim)
        assert error_code(backend.request("GET", f"/calls/{call_id}")[1]) == "not_found"
        assert channel.hangup_cause == "NORMAL_CLEARING"
        peer.close()
        alice.close()


@loopback_only(timeout=120)
def test_refusals_are_json_errors_and_leave_nothing_behind() -> None:
    with running_gateway(FAST) as (gateway, sim):
        backend = Backend(gateway)
        alice = WebUser(gateway, "alice").connect()

        def refused(
            status: int, code: str, method: str = "POST", path: str = "/calls", **kw: Any
        ) -> None:
            got, answer, headers = backend.request(method, path, **kw)
            assert (got, error_code(answer)) == (status, code), answer
            assert ERRORS[code] == status
            if status == 401:
                assert headers.get("WWW-Authenticate") == "Bearer"

        good = {"uid": "alice", "number": "1000"}
        # Authentication: none, another scheme, a wrong token, a prefix of the right one.
        for auth in ("", f"Basic {TOKEN}", "Bearer wrong", f"Bearer {TOKEN[:-1]}"):
            refused(401, "unauthorized", body=good, headers={"Authorization": auth})
        refused(401, "unauthorized", "GET", "/calls", headers={"Authorization": ""})
        # Bad input.
        refused(400, "bad_json", data=b'{"uid": "alice", "number": ')
        refused(400, "bad_json", body=["alice", "1000"])
        refused(400, "bad_request", body={"uid": "alice"})
        refused(400, "bad_request", body={"uid": "alice", "number": 1000})
        refused(400, "bad_request", body={"uid": "al ice", "number": "1000"})
        refused(400, "bad_request", body={**good, "extra": 1})
        refused(400, "bad_request", body={"uid": "gateway", "number": "1000"})
        refused(413, "payload_too_large", data=b" " * (MAX_BODY + 1))
        padded = json.dumps({**good, "uid": "alice"}).encode() + b" " * MAX_BODY
        refused(413, "payload_too_large", data=padded)
        refused(413, "payload_too_large", data=padded, chunked=True)
        assert backend.request("POST", "/calls", data=b"[]", chunked=True)[0] == 400
        # The web user is not online; the number is not served.
        refused(404, "user_offline", body={"uid": "nobody", "number": "1000"})
        refused(404, "not_in_acc_rule", body={"uid": "alice", "number": "2000"})
        refused(404, "not_found", "GET", "/calls/call-none")
        refused(404, "not_found", "DELETE", "/calls/call-none")
        refused(404, "not_found", "GET", "/nothing/here")
        refused(405, "method_not_allowed", "PUT", "/calls", body=good)
        refused(405, "method_not_allowed", "POST", "/users/alice", body=good)
        refused(401, "unauthorized", "PUT", "/calls", headers={"Authorization": ""})
        assert sim.live_channel_count() == 0
        assert gateway.controller is not None and gateway.controller.status()["calls"] == 0

        # A number on a call is busy for a second click-to-call (and the first one ends
        # when its web user refuses: nothing dialled, nothing left).
        bob = WebUser(gateway, "bob").connect()
        first = backend.ok("POST", "/calls", good, status=201)
        refused(409, "number_busy", body={"uid": "bob", "number": "1000"})
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 10, "alice rings")
        alice.request(
            {
                "type": "refuse",
                "inv": invitation["inv"],
                "response": json.dumps({"Cmd": "Calling", "Reason": "calling"}),
            }
        )
        wait_until(
            lambda: backend.request("GET", f"/calls/{first['call_id']}")[0] == 404,
            10,
            "the refused call is gone",
        )
        assert_nothing_left(gateway, sim)
        assert sim.all_channels() == []

        # DELETE while the web user still rings cancels its invitation.
        second = backend.ok("POST", "/calls", {"uid": "bob", "number": "1001"}, status=201)
        invitation = bob.wait(lambda m: m.get("type") == "invitation", 10, "bob rings")
        backend.ok("DELETE", f"/calls/{second['call_id']}", status=202)
        bob.wait(
            lambda m: m.get("type") == "remote_state" and m.get("inv") == invitation["inv"],
            10,
            "the invitation canceled",
        )
        assert_nothing_left(gateway, sim)
        assert sim.all_channels() == []

        # With FreeSWITCH unreachable, 503 (and no call is created).
        controller = gateway.controller
        sim.stop_listener()
        sim.drop_all_connections()
        wait_until(lambda: controller.esl_state != "connected", 10, "ESL down")
        refused(503, "switch_unavailable", body=good)
        assert controller.status()["calls"] == 0
        sim.start_listener()
        wait_until(lambda: controller.esl_state == "connected", 15, "ESL back")
        alice.close()
        bob.close()


@loopback_only(timeout=120)
def test_openapi_document_is_valid_and_matches_the_routes() -> None:
    with running_gateway(FAST) as (gateway, sim):
        backend = Backend(gateway)
        status, doc, _ = backend.request("GET", "/openapi.json", headers={"Authorization": ""})
        assert status == 200
        validate_openapi(doc)
        assert doc == json.loads(json.dumps(openapi_document()))

        # Every route of /api/v1 is in the document, and every documented one exists.
        web = gateway._web
        assert web is not None
        served = {
            (route.method, route.resource.canonical.removeprefix("/api/v1"))
            for route in web.runner.app.router.routes()
            if route.resource is not None
            and route.resource.canonical.startswith("/api/v1/")
            and route.method not in ("HEAD", "*")  # "*": the JSON 404 / 405 answers
        }
        documented = {
            (method.upper(), path)
            for path, item in doc["paths"].items()
            for method in item
            if method != "parameters"
        }
        assert served == documented

        # Each documented operation answers with a documented status and body schema.
        alice = WebUser(gateway, "alice").connect()
        created = backend.ok("POST", "/calls", {"uid": "alice", "number": "1001"}, status=201)
        params = {"call_id": created["call_id"], "uid": "alice"}
        bodies = {("POST", "/calls"): {"uid": "alice", "number": "1002"}}
        order = sorted(documented, key=lambda op: op[0] == "DELETE")  # DELETE last
        for method, path in order:
            status, answer, _ = backend.request(
                method, path.format(**params), bodies.get((method, path))
            )
            responses = doc["paths"][path][method.lower()]["responses"]
            assert str(status) in responses, (method, path, status, answer)
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            jsonschema.validate(answer, {**schema, "components": doc["components"]})
        # Bad input answers as documented too.
        for method, template, path, body in (
            ("POST", "/calls", "/calls", {"uid": "nobody", "number": "1000"}),
            ("GET", "/calls/{call_id}", "/calls/none", None),
            ("GET", "/users/{uid}", "/users/bad%20uid", None),
        ):
            status, answer, _ = backend.request(method, path, body)
            responses = doc["paths"][template][method.lower()]["responses"]
            assert str(status) in responses, (method, path, status)
            schema = responses[str(status)]["content"]["application/json"]["schema"]
            jsonschema.validate(answer, {**schema, "components": doc["components"]})
        assert gateway.controller is not None
        for call in list(gateway.controller.book):
            backend.ok("DELETE", f"/calls/{call.call_id}", status=202)
        assert_nothing_left(gateway, sim)
        alice.close()


@loopback_only(timeout=120)
def test_requests_over_the_limit_get_429() -> None:
    extra = API + "requests_per_second = 0.001\nburst = 3\n"
    with running_gateway(extra) as (gateway, _sim):
        backend = Backend(gateway)
        for _ in range(3):
            backend.ok("GET", "/calls")
        status, answer, headers = backend.request("GET", "/calls")
        assert (status, error_code(answer)) == (429, "rate_limited")
        assert headers.get("Retry-After") == "1"
        # Unauthenticated requests count too (no free guessing of the token).
        status, answer, _ = backend.request("GET", "/calls", headers={"Authorization": "x"})
        assert status == 429


def test_only_loopback_peers_are_answered_unless_allowed() -> None:
    # The tests' namespace has loopback only: the address check is tested on its own.
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("127.8.0.1")
    assert not _is_loopback("192.0.2.1") and not _is_loopback("::ffff:192.0.2.8")
    assert not _is_loopback(None) and not _is_loopback("")


def test_api_off_by_default_and_token_required() -> None:
    from esl_bridge import config

    assert config.from_text("", "<t>").api.on is False
    with pytest.raises(config.ConfigError, match=r"\[api\] token"):
        config.from_text("[api]\non = 1\ntoken = short\n", "<t>")
    loaded = config.from_text(API, "<t>")
    assert TOKEN in loaded.secrets()
    assert loaded.as_sections()["api"]["token"] == "***"


# -- the ClickToCall state machine alone ---------------------------------------------------


def _book() -> CallBook:
    settings = BookSettings(rtm2sip_on=True, proxy_on=True, sip_domain="sip.test", gateway_uid="gw")
    return CallBook(settings, NumberPool(("1000", "1001")))


def test_click_to_call_dials_only_once_the_web_user_accepts() -> None:
    book = _book()
    call_id, refusal, actions = book.click_to_call("alice", "1000", callee_online=True, now=0.0)
    assert refusal == ""
    [invite] = actions
    assert isinstance(invite, c.SendInvitation)
    assert (invite.callee, invite.sender) == ("alice", "1000")
    assert book.pool.busy() == {"1000": call_id}
    accepted = book.handle(call_id, c.InvitationAccepted(), 1.0)
    kinds = [type(a) for a in accepted]
    assert kinds == [c.OpenMedia, c.Originate]
    originate = accepted[1]
    assert isinstance(originate, c.Originate)
    assert originate.destination == "user/1000@sip.test"
    assert book.handle(call_id, c.ChannelAnswered(), 2.0)[0] == c.SendPeerMessage(
        call_id, "1000", "alice", c.sip_state_message("answered")
    )
    ended = book.handle(call_id, c.ApiHangup(), 3.0)
    assert c.Hangup(call_id, originate.uuid, "NORMAL_CLEARING") in ended
    assert not book.pool.busy()


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (c.InvitationRefused(), "refused"),
        (c.InvitationFailed("PEER_NO_RESPONSE"), "peer_no_response"),
        (c.ApiHangup(), "api_hangup"),
        (c.WebUserGone(), "web_gone"),
    ],
)
def test_click_to_call_ended_before_accept_dials_nothing(event: c.Event, reason: str) -> None:
    book = _book()
    call_id, _, _ = book.click_to_call("alice", "1000", callee_online=True, now=0.0)
    actions = book.handle(call_id, event, 1.0)
    assert not [a for a in actions if isinstance(a, c.Hangup | c.Originate)]
    [end] = [a for a in actions if isinstance(a, c.CallEnded)]
    assert end.reason == reason
    assert len(book) == 0 and not book.pool.busy()


def test_click_to_call_refusals() -> None:
    book = _book()
    assert book.click_to_call("bob", "1000", callee_online=False, now=0.0)[1] == "user_offline"
    assert book.click_to_call("bob", "2000", callee_online=True, now=0.0)[1] == "not_in_acc_rule"
    book.click_to_call("alice", "1000", callee_online=True, now=0.0)
    assert book.click_to_call("bob", "1000", callee_online=True, now=0.0)[1] == "number_busy"
    assert len(book) == 1


def test_api_hangup_ends_a_phone_call_too() -> None:
    book = _book()
    actions = book.sip_call_arrived(
        uuid="u-1", callee="bob", caller_number="555", cus_data="", callee_online=True, now=0.0
    )
    [call] = list(book)
    assert any(isinstance(a, c.SendInvitation) for a in actions)
    ended = book.handle(call.call_id, c.ApiHangup(), 1.0)
    assert c.CancelInvitation(call.call_id, "bob") in ended
    assert c.Hangup(call.call_id, "u-1", "NORMAL_CLEARING") in ended
    assert book.handle(call.call_id, c.ChannelHungUp("NORMAL_CLEARING"), 2.0)[-1] == c.CallEnded(
        call.call_id, "api_hangup", "NORMAL_CLEARING"
    )
    assert len(book) == 0


@contextlib.contextmanager
def gateway_with_webhooks() -> Iterator[tuple[Any, Gateway, Any, Backend, WebUser]]:
    """A gateway posting webhooks to a receiver; its API's backend; web user alice online."""
    from test_webhooks import ThreadReceiver, hooks_config

    with (
        ThreadReceiver() as hooks,
        running_gateway(FAST + hooks_config(hooks.url)) as (gateway, sim),
    ):
        yield hooks, gateway, sim, Backend(gateway), WebUser(gateway, "alice").connect()


@loopback_only(timeout=120)
def test_click_to_call_posts_the_call_webhooks_once_each_in_order() -> None:
    with gateway_with_webhooks() as (hooks, gateway, sim, backend, alice):
        # Refused by the web user: started and ended (refused), never answered.
        refused = backend.ok("POST", "/calls", {"uid": "alice", "number": "1001"}, status=201)
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 10, "alice rings")
        alice.request({"type": "refuse", "inv": invitation["inv"], "response": ""})
        ended = hooks.wait_event("call.ended", call_id=refused["call_id"])
        assert (ended["data"]["reason"], ended["data"]["direction"]) == ("refused", "rtc2sip")
        # Accepted, answered by the phone, ended by the API.
        answered = backend.ok("POST", "/calls", {"uid": "alice", "number": "1001"}, status=201)
        invitation = alice.wait(lambda m: m.get("type") == "invitation", 10, "alice rings")
        alice.request({"type": "accept", "inv": invitation["inv"], "response": ""})
        hooks.wait_event("call.answered", call_id=answered["call_id"])
        backend.ok("DELETE", f"/calls/{answered['call_id']}", status=202)
        ended = hooks.wait_event("call.ended", call_id=answered["call_id"])
        assert (ended["data"]["reason"], ended["data"]["uid"]) == ("api_hangup", "alice")
        assert_nothing_left(gateway, sim)
        for call_id, kinds, stages in (
            (refused["call_id"], ["call.started", "call.ended"], []),
            (
                answered["call_id"],
                ["call.started", "call.answered", "call.ended"],
                ["originating", "connected"],
            ),
        ):
            mine = [e for e in hooks.events() if e["data"].get("call_id") == call_id]
            assert [e["type"] for e in mine if e["type"] != "call.progress"] == kinds, mine
            # call.progress: the stages between the start and the end (ringing and early
            # media as the phone gives them), each once.
            progress = [e["data"]["state"] for e in mine if e["type"] == "call.progress"]
            assert progress[:1] + progress[-1:] == stages, progress
            assert len(set(progress)) == len(progress)
            assert mine[0]["type"] == "call.started" and mine[-1]["type"] == "call.ended"
            assert {e["data"]["order"] for e in mine} == {"web_first"}
        alice.close()


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (c.OriginateFailed("USER_BUSY"), "busy"),
        (c.ChannelHungUp("NO_ANSWER"), "no_answer"),
    ],
)
def test_click_to_call_phone_failure_ends_the_accepted_call(event: c.Event, reason: str) -> None:
    book = _book()
    call_id, _, _ = book.click_to_call("alice", "1000", callee_online=True, now=0.0)
    book.handle(call_id, c.InvitationAccepted(), 1.0)
    actions = book.handle(call_id, event, 2.0)
    # The web user had accepted: it gets EndCall from the number; the channel is gone.
    assert c.SendPeerMessage(call_id, "1000", "alice", c.END_CALL) in actions
    assert not [a for a in actions if isinstance(a, c.Hangup)]
    assert actions[-1] == c.CallEnded(call_id, reason, event.cause)  # type: ignore[attr-defined]
    assert len(book) == 0 and not book.pool.busy()
