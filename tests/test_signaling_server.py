"""The signalling protocol end to end through aiohttp's test client (fake clock)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from structlog.testing import capture_logs
from support.signaling_support import APPID, CERT, WALL, Env, env, run, token

from esl_bridge.core.invitations import ApiError, LocalFailureReason, LocalState, RemoteState
from esl_bridge.signaling.auth import CLOCK_SKEW, mint_legacy_token, mint_token
from esl_bridge.signaling.hub import QueueParticipant
from esl_bridge.signaling.settings import SignalingSettings

OPEN = SignalingSettings(open_mode=True)


def settings(**kw: Any) -> SignalingSettings:
    base: dict[str, Any] = {"appid": "", "app_certificate": CERT}
    base.update(kw)
    return SignalingSettings(**base)


def assert_error(reply: dict[str, Any], code: str | ApiError) -> None:
    """An error reply; an invitation API error carries its name and its number."""
    assert reply["type"] == "error", reply
    if isinstance(code, ApiError):
        assert (reply["code"], reply["errno"]) == (code.name, code), reply
    else:
        assert reply["code"] == code, reply


async def assert_clean(e: Env) -> None:
    stats = e.hub.stats()
    assert stats["invitations"] == 0, stats
    assert stats["awaiting"] == 0, stats


# ---- login and auth ----------------------------------------------------------------


def test_login_logout_ping() -> None:
    async def main() -> None:
        async with env() as e:
            ws = await e.ws()
            assert (await ws.request("ping"))["type"] == "pong"
            assert_error(await ws.request("query", uids=["a"]), "NOT_LOGGED_IN")
            reply = await ws.request("login", appid=APPID, uid="alice", token=token("alice"))
            assert reply["type"] == "ok"
            assert reply["uid"] == "alice"
            assert reply["resumed"] is False
            assert len(reply["session"]) >= 16
            again = await ws.request("login", appid=APPID, uid="alice", token=token("alice"))
            assert_error(again, "ALREADY_LOGGED_IN")
            assert (await ws.request("logout"))["type"] == "ok"
            assert_error(await ws.request("query", uids=["a"]), "NOT_LOGGED_IN")
            assert e.hub.stats()["sessions"] == 0
            # The connection lives on and may log in again.
            reply = await ws.request("login", appid=APPID, uid="bob", token=token("bob"))
            assert reply["type"] == "ok"

    run(main())


def _unsigned(uid: str) -> str:
    """A JWT with ``alg: none`` and no signature, claims otherwise right."""
    head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    return head + "." + mint_token(APPID, uid, CERT, 60, WALL).split(".")[1] + "."


@pytest.mark.parametrize(
    ("tok", "reason"),
    [
        (None, "token required"),
        ("", "token required"),
        ("garbage", "malformed"),
        ("1.e30.AAAA", "malformed"),
        # JWTs (what esl-bridge token and the backends mint)
        (mint_token(APPID, "alice", "other-cert", 60, WALL), "bad signature"),
        (mint_token(APPID, "bob", CERT, 60, WALL), "wrong uid"),
        (mint_token("app2", "alice", CERT, 60, WALL), "wrong appid"),
        (mint_token(APPID, "alice", CERT, 60, WALL - 60 - CLOCK_SKEW), "expired"),
        (
            mint_token(APPID, "alice", CERT, 60, WALL, not_before=WALL + CLOCK_SKEW + 1),
            "not yet valid",
        ),
        (_unsigned("alice"), "algorithm not allowed"),
        # the old format, accepted for one release
        (mint_legacy_token(APPID, "alice", "other-cert", 60, WALL), "bad signature"),
        (mint_legacy_token(APPID, "bob", CERT, 60, WALL), "wrong uid"),
        (mint_legacy_token("app2", "alice", CERT, 60, WALL), "wrong appid"),
        (mint_legacy_token(APPID, "alice", CERT, 60, WALL - 61), "expired"),
        (mint_legacy_token(APPID, "alice", CERT, 60, WALL - 60), "expired"),  # at the instant
    ],
)
def test_login_auth_failures(tok: str | None, reason: str) -> None:
    async def main() -> None:
        async with env() as e:
            ws = await e.ws()
            reply = await ws.request("login", appid=APPID, uid="alice", token=tok)
            assert_error(reply, "AUTH_FAILED")
            assert reply["message"] == reason
            assert e.hub.stats()["sessions"] == 0
            # Still usable: a good token works afterwards.
            reply = await ws.request("login", appid=APPID, uid="alice", token=token("alice"))
            assert reply["type"] == "ok"

    run(main())


def relabel(tok: str, **fields: str) -> str:
    """The JWT with its payload re-encoded (``sub``/``aud`` replaced), its signature kept."""
    head, payload, sig = tok.split(".")
    data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    data.update(fields)
    raw = json.dumps(data, separators=(",", ":")).encode()
    return f"{head}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{sig}"


@pytest.mark.parametrize(
    ("appid", "uid", "forged"),
    [("app1", "bob", {"sub": "bob"}), ("app2", "alice", {"aud": "app2"})],
    ids=["other-uid", "other-appid"],
)
def test_relabelled_token_is_refused(appid: str, uid: str, forged: dict[str, str]) -> None:
    """A token minted for alice in app1, its payload re-encoded for another uid or appid
    with alice's signature kept, is refused as a bad signature: the signature binds both."""

    async def main() -> None:
        # appid "" serves every appid, so the forged appid reaches the token check.
        async with env(settings()) as e:
            ws = await e.ws()
            tok = relabel(token("alice", "app1"), **forged)
            reply = await ws.request("login", appid=appid, uid=uid, token=tok)
            assert_error(reply, "AUTH_FAILED")
            assert reply["message"] == "bad signature"
            assert e.hub.stats()["sessions"] == 0
            # The genuine token for that uid and appid logs in on the same connection.
            reply = await ws.request("login", appid=appid, uid=uid, token=token(uid, appid))
            assert reply["type"] == "ok", reply
            assert reply["uid"] == uid

    run(main())


def test_token_one_second_before_expiry_is_accepted() -> None:
    """A JWT one second before its exp plus the skew allowance; an old-format token one
    second before its expiry (that format has no allowance)."""

    async def main() -> None:
        async with env() as e:
            ws = await e.ws()
            tok = mint_token(APPID, "alice", CERT, 60, WALL - 59 - CLOCK_SKEW)
            assert (await ws.request("login", appid=APPID, uid="alice", token=tok))["type"] == "ok"
            ws = await e.ws()
            tok = mint_legacy_token(APPID, "bob", CERT, 60, WALL - 59)
            assert (await ws.request("login", appid=APPID, uid="bob", token=tok))["type"] == "ok"

    run(main())


def test_legacy_token_logs_a_warning_jwt_does_not() -> None:
    async def main() -> None:
        async with env() as e:
            with capture_logs() as logs:
                ws = await e.ws()
                tok = mint_token(APPID, "alice", CERT, 60, WALL)
                reply = await ws.request("login", appid=APPID, uid="alice", token=tok)
                assert reply["type"] == "ok"
                assert not [x for x in logs if x["event"] == "signaling.legacy_token"]
                ws = await e.ws()
                tok = mint_legacy_token(APPID, "bob", CERT, 60, WALL)
                reply = await ws.request("login", appid=APPID, uid="bob", token=tok)
                assert reply["type"] == "ok"
            warned = [x for x in logs if x["event"] == "signaling.legacy_token"]
            assert len(warned) == 1, logs
            assert warned[0]["uid"] == "bob"
            assert warned[0]["log_level"] == "warning"
            assert tok not in repr(logs)  # the token itself is never logged

    run(main())


def test_open_mode_needs_no_token() -> None:
    async def main() -> None:
        async with env(OPEN) as e:
            ws = await e.ws()
            assert (await ws.request("login", appid="demo", uid="u1"))["type"] == "ok"

    run(main())


def test_appid_refused() -> None:
    async def main() -> None:
        async with env(settings(appid="app1")) as e:
            ws = await e.ws()
            reply = await ws.request("login", appid="app2", uid="u", token=token("u", "app2"))
            assert_error(reply, "APPID_REFUSED")
            reply = await ws.request("login", appid="app1", uid="u", token=token("u", "app1"))
            assert reply["type"] == "ok"

    run(main())


# ---- malformed frames ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("not json", "BAD_MESSAGE"),
        ("[1,2]", "BAD_MESSAGE"),
        ('"text"', "BAD_MESSAGE"),
        (b"\xff\xfe", "BAD_MESSAGE"),
        ('{"v":2,"type":"ping"}', "UNSUPPORTED_VERSION"),
        ('{"type":"ping"}', "UNSUPPORTED_VERSION"),
        ('{"v":true,"type":"ping"}', "UNSUPPORTED_VERSION"),
        ('{"v":1}', "BAD_MESSAGE"),
        ('{"v":1,"type":"dance"}', "UNKNOWN_TYPE"),
        ('{"v":1,"type":"login","appid":"a"}', "BAD_MESSAGE"),
        ('{"v":1,"type":"login","appid":"a b","uid":"u"}', "INVALID_ARGUMENT"),
        ('{"v":1,"type":"login","appid":"a","uid":"' + "u" * 65 + '"}', "INVALID_ARGUMENT"),
        ('{"v":1,"type":"ping","id":[1]}', "BAD_MESSAGE"),
        ('{"v":1,"type":"ping","id":true}', "BAD_MESSAGE"),
        ('{"v":1,"type":"query","uids":"a"}', "BAD_MESSAGE"),
        ('{"v":1,"type":"query","uids":[]}', "INVALID_ARGUMENT"),
        ('{"v":1,"type":"invite","ref":"r","callee":5}', "BAD_MESSAGE"),
        ('{"v":1,"type":"accept","inv":"x","response":7}', "BAD_MESSAGE"),
        ("[" * 100_00 + "]" * 100_00, "BAD_MESSAGE"),
    ],
)
def test_malformed_frames_get_an_error_and_the_connection_goes_on(
    raw: str | bytes, code: str
) -> None:
    async def main() -> None:
        async with env() as e:
            ws = await e.login("alice")
            await ws.send_raw(raw)
            reply = await ws.recv()
            assert reply is not None
            assert_error(reply, code)
            assert (await ws.request("ping"))["type"] == "pong"
            assert e.hub.stats()["sessions"] == 1

    run(main())


def test_error_echoes_the_request_id() -> None:
    async def main() -> None:
        async with env() as e:
            ws = await e.ws()
            await ws.send_raw('{"v":1,"type":"dance","id":"abc"}')
            reply = await ws.recv()
            assert reply == {
                "v": 1,
                "type": "error",
                "re": "abc",
                "code": "UNKNOWN_TYPE",
                "message": "unknown message type",
            }

    run(main())


# ---- presence ------------------------------------------------------------------------


def test_query_subscribe_and_notifications() -> None:
    async def main() -> None:
        async with env() as e:
            alice = await e.login("alice")
            reply = await alice.request("query", uids=["bob", "alice", "bob"])
            assert reply["peers"] == {"bob": False, "alice": True}
            reply = await alice.request("subscribe", uids=["bob"])
            assert reply["peers"] == {"bob": False}
            bob = await e.login("bob")
            assert (await alice.event("peer_status"))["peers"] == {"bob": "ONLINE"}
            assert (await alice.request("query", uids=["bob"]))["peers"] == {"bob": True}
            await bob.request("logout")
            assert (await alice.event("peer_status"))["peers"] == {"bob": "OFFLINE"}
            assert (await alice.request("unsubscribe", uids=["bob"]))["type"] == "ok"
            await e.login("bob")
            assert await alice.quiet() == []
            assert e.hub.stats()["watched"] == 0

    run(main())


def test_subscription_limits() -> None:
    async def main() -> None:
        async with env(settings(max_subscriptions=3, max_uids_per_request=2)) as e:
            alice = await e.login("alice")
            assert (await alice.request("subscribe", uids=["a", "b"]))["type"] == "ok"
            assert_error(
                await alice.request("subscribe", uids=["a", "b", "c"]), ApiError.INVALID_ARGUMENT
            )
            assert (await alice.request("subscribe", uids=["b", "c"]))["type"] == "ok"
            assert_error(await alice.request("subscribe", uids=["d"]), "TOO_MANY_SUBSCRIPTIONS")
            await alice.request("logout")
            assert e.hub.stats()["watched"] == 0

    run(main())


# ---- peer messages -------------------------------------------------------------------


def test_peer_messages_and_limit() -> None:
    async def main() -> None:
        async with env() as e:
            alice = await e.login("alice")
            reply = await alice.request("message", to="bob", text='{"Cmd":"EndCall"}')
            assert reply["delivered"] is False
            bob = await e.login("bob")
            for text in (
                '{"Cmd":"EndCall"}',
                '{"Cmd":"CallState"}',
                '{"Cmd":"SwitchAudio"}',
                "free text",
                "é" * (32 * 1024 // 2),
            ):
                reply = await alice.request("message", to="bob", text=text)
                assert reply["delivered"] is True
                msg = await bob.event("message")
                assert msg["from"] == "alice"
                assert msg["text"] == text
            reply = await alice.request("message", to="bob", text="é" * (32 * 1024 // 2) + "x")
            assert_error(reply, ApiError.INVALID_ARGUMENT)
            assert await bob.quiet() == []

    run(main())


# ---- invitations ---------------------------------------------------------------------


async def invite(
    e: Env, caller: Any, callee: Any, ref: str = "r1", **fields: Any
) -> tuple[str, dict[str, Any]]:
    reply = await caller.request("invite", ref=ref, callee=callee_uid(callee), **fields)
    assert reply["type"] == "ok", reply
    assert reply["ref"] == ref
    sent = await caller.event("local_state", ref=ref)
    assert sent["state"] == LocalState.SENT_TO_REMOTE
    assert sent["state_name"] == "SENT_TO_REMOTE"
    got = await callee.event("invitation")
    assert got["inv"] == reply["inv"]
    return reply["inv"], got


def callee_uid(ws: Any) -> str:
    return str(ws.uid)


async def pair(e: Env) -> tuple[Any, Any]:
    alice = await e.login("alice")
    bob = await e.login("bob")
    alice.uid, bob.uid = "alice", "bob"
    return alice, bob


def test_invite_ack_accept() -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            content = json.dumps({"Mode": 1, "Conference": False, "ChanId": "c1"})
            inv, got = await invite(e, alice, bob, content=content, channel_id="c1")
            assert got["caller"] == "alice"
            assert got["content"] == content
            assert got["channel_id"] == "c1"
            assert (await bob.request("ack", inv=inv))["type"] == "ok"
            assert (await bob.event("remote_state", inv=inv))[
                "state"
            ] == RemoteState.INVITATION_RECEIVED
            assert (await alice.event("local_state"))["state_name"] == "RECEIVED_BY_REMOTE"
            resp = json.dumps({"Mode": 1, "Conference": False, "ChanId": "c1"})
            assert (await bob.request("accept", inv=inv, response=resp))["type"] == "ok"
            assert (await bob.event("remote_state", inv=inv))["state_name"] == (
                "ACCEPT_SENT_TO_LOCAL"
            )
            assert (await bob.event("remote_state", inv=inv))["state_name"] == "ACCEPTED"
            accepted = await alice.event("local_state")
            assert accepted["state"] == LocalState.ACCEPTED_BY_REMOTE
            assert accepted["response"] == resp
            await assert_clean(e)
            # API errors after the end.
            assert_error(await alice.request("cancel", ref="r1"), ApiError.ALREADY_ACCEPT)
            assert_error(await bob.request("refuse", inv=inv), ApiError.ALREADY_ACCEPT)
            assert_error(await bob.request("accept", inv=inv), ApiError.ALREADY_ACCEPT)
            assert (await bob.request("ack", inv=inv))["type"] == "ok"

    run(main())


def test_invite_refuse_busy() -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            inv, _ = await invite(e, alice, bob)
            busy = '{"Cmd":"Calling","Reason":"calling"}'
            # A refusal without an ack is an implicit acknowledgement.
            assert (await bob.request("refuse", inv=inv, response=busy))["type"] == "ok"
            assert (await bob.event("remote_state", inv=inv))["state_name"] == "REFUSED"
            refused = await alice.event("local_state")
            assert refused["state_name"] == "REFUSED_BY_REMOTE"
            assert refused["response"] == busy
            assert_error(await alice.request("cancel", ref="r1"), ApiError.ALREADY_END)
            assert_error(await bob.request("accept", inv=inv), ApiError.ALREADY_END)
            await assert_clean(e)

    run(main())


def test_invite_cancel() -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            inv, _ = await invite(e, alice, bob)
            await bob.request("ack", inv=inv)
            assert (await alice.request("cancel", ref="r1"))["type"] == "ok"
            assert (await alice.event("local_state", state=LocalState.CANCELED))[
                "state_name"
            ] == "CANCELED"
            assert (await bob.event("remote_state", state=RemoteState.CANCELED))[
                "state_name"
            ] == "CANCELED"
            assert_error(await alice.request("cancel", ref="r1"), ApiError.ALREADY_END)
            assert_error(await bob.request("accept", inv=inv), ApiError.ALREADY_END)
            assert_error(await bob.request("refuse", inv=inv), ApiError.ALREADY_END)
            await assert_clean(e)

    run(main())


def test_invitation_errors() -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            assert_error(
                await alice.request("invite", ref="x", callee="alice"), ApiError.INVALID_ARGUMENT
            )
            await invite(e, alice, bob, ref="dup")
            assert_error(await alice.request("invite", ref="dup", callee="bob"), "DUPLICATE_REF")
            assert_error(await alice.request("cancel", ref="nope"), "UNKNOWN_INVITATION")
            assert_error(await bob.request("accept", inv="nope"), "UNKNOWN_INVITATION")
            assert_error(await bob.request("ack", inv="nope"), "UNKNOWN_INVITATION")
            # Only the callee may answer.
            inv = e.hub._sessions[("app1", "alice")].outgoing["dup"].id
            assert_error(await alice.request("accept", inv=inv), "UNKNOWN_INVITATION")

    run(main())


@pytest.mark.parametrize(
    ("fields", "ok"),
    [
        ({"content": "a" * 8192, "channel_id": "c" * 64}, True),
        ({"content": "a" * 8193}, False),
        ({"content": "é" * 4096}, True),
        ({"content": "é" * 4096 + "a"}, False),
        ({"channel_id": "c" * 65}, False),
        ({"channel_id": "é" * 32 + "c"}, False),
    ],
)
def test_invitation_limits(fields: dict[str, str], ok: bool) -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            reply = await alice.request("invite", ref="r1", callee="bob", **fields)
            if ok:
                assert reply["type"] == "ok"
                got = await bob.event("invitation")
                assert got["content"] == fields.get("content", "")
            else:
                assert_error(reply, ApiError.INVALID_ARGUMENT)
                assert await bob.quiet() == []  # nothing sent
                assert await alice.quiet() == []
                await assert_clean(e)

    run(main())


@pytest.mark.parametrize("verb", ["accept", "refuse"])
@pytest.mark.parametrize(("response", "ok"), [("r" * 8192, True), ("r" * 8193, False)])
def test_response_limits(verb: str, response: str, ok: bool) -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            inv, _ = await invite(e, alice, bob)
            reply = await bob.request(verb, inv=inv, response=response)
            if ok:
                assert reply["type"] == "ok"
                state = {
                    "accept": LocalState.ACCEPTED_BY_REMOTE,
                    "refuse": LocalState.REFUSED_BY_REMOTE,
                }[verb]
                assert (await alice.event("local_state", state=state))["response"] == response
            else:
                assert_error(reply, ApiError.INVALID_ARGUMENT)
                assert await alice.quiet() == []
                assert (await bob.request("ack", inv=inv))["type"] == "ok"  # still open

    run(main())


# ---- failure timers on the fake clock -------------------------------------------------


def test_peer_offline_after_30s_and_late_delivery() -> None:
    async def main() -> None:
        async with env() as e:
            alice = await e.login("alice")
            assert (await alice.request("invite", ref="r1", callee="bob"))["type"] == "ok"
            assert (await alice.event("local_state"))["state"] == LocalState.SENT_TO_REMOTE
            await e.advance(10)
            bob = await e.login("bob")
            got = await bob.event("invitation")  # held until bob came online
            await e.advance(19.9)
            assert await alice.quiet(0.05) == []
            await e.advance(0.1)
            failed = await alice.event("local_state")
            assert failed["state"] == LocalState.FAILURE
            assert failed["reason_name"] == "PEER_NO_RESPONSE"  # bob was online at 30 s
            expired = await bob.event("remote_state", inv=got["inv"])
            assert expired["reason_name"] == "INVITATION_EXPIRE"
            await assert_clean(e)

            assert (await alice.request("invite", ref="r2", callee="carol"))["type"] == "ok"
            await alice.event("local_state", ref="r2", state=LocalState.SENT_TO_REMOTE)
            await e.advance(30)
            failed = await alice.event("local_state", ref="r2")
            assert (failed["state"], failed["reason"], failed["reason_name"]) == (
                6,
                1,
                "PEER_OFFLINE",
            )
            await assert_clean(e)

    run(main())


def test_invitation_expire_60s_after_ack() -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            inv, _ = await invite(e, alice, bob)
            await e.advance(29)
            await bob.request("ack", inv=inv)
            await alice.event("local_state", state=LocalState.RECEIVED_BY_REMOTE)
            await e.advance(59.5)
            assert await alice.quiet(0.05) == []
            await e.advance(0.5)
            failed = await alice.event("local_state", state=LocalState.FAILURE)
            assert failed["reason"] == LocalFailureReason.INVITATION_EXPIRE
            failed = await bob.event("remote_state", state=RemoteState.FAILURE)
            assert failed["reason_name"] == "INVITATION_EXPIRE"
            await assert_clean(e)

    run(main())


def test_caller_logout_fails_both_sides() -> None:
    async def main() -> None:
        async with env() as e:
            alice, bob = await pair(e)
            inv, _ = await invite(e, alice, bob)
            await bob.request("ack", inv=inv)
            await alice.request("logout")
            failed = await alice.event("local_state", state=LocalState.FAILURE)
            assert failed["reason_name"] == "NOT_LOGGEDIN"
            failed = await bob.event("remote_state", state=RemoteState.FAILURE)
            assert failed["reason_name"] == "PEER_OFFLINE"
            await assert_clean(e)

    run(main())


# ---- isolation, takeover, grace ------------------------------------------------------


def test_appid_isolation() -> None:
    async def main() -> None:
        async with env() as e:
            alice = await e.login("alice", "app1")
            bob2 = await e.login("bob", "app2")
            await e.login("alice", "app2")  # same uid in another appid: no takeover
            assert (await alice.request("query", uids=["bob"]))["peers"] == {"bob": False}
            assert (await alice.request("subscribe", uids=["bob"]))["peers"] == {"bob": False}
            assert (await alice.request("message", to="bob", text="hi"))["delivered"] is False
            assert (await alice.request("invite", ref="r", callee="bob"))["type"] == "ok"
            await e.login("carol", "app2")
            assert await bob2.quiet() == []
            await e.advance(30)
            failed = await alice.event("local_state", state=LocalState.FAILURE)
            assert failed["reason_name"] == "PEER_OFFLINE"
            assert [m for m in alice.events if m["type"] == "peer_status"] == []
            assert e.hub.stats()["sessions"] == 4

    run(main())


def test_takeover() -> None:
    async def main() -> None:
        async with env() as e:
            watcher = await e.login("watcher")
            await watcher.request("subscribe", uids=["alice"])
            first = await e.login("alice")
            await watcher.event("peer_status")
            second = await e.login("alice")
            closing = await first.event("closing")
            assert closing["reason"] == "TAKEOVER"
            assert closing["code"] == 4001
            assert await first.closed() == 4001
            assert (await second.request("ping"))["type"] == "pong"
            assert await watcher.quiet() == []  # alice never looked offline
            assert e.hub.stats()["sessions"] == 2

    run(main())


def test_takeover_moves_waiting_invitations_to_the_new_session() -> None:
    async def main() -> None:
        async with env() as e:
            alice = await e.login("alice")
            first = await e.login("bob")
            assert (await alice.request("invite", ref="r", callee="bob"))["type"] == "ok"
            await first.event("invitation")
            second = await e.login("bob")
            got = await second.event("invitation")
            await second.request("accept", inv=got["inv"])
            accepted = await alice.event("local_state", state=LocalState.ACCEPTED_BY_REMOTE)
            assert accepted["state_name"] == "ACCEPTED_BY_REMOTE"

    run(main())


def test_grace_reconnect_keeps_the_session() -> None:
    async def main() -> None:
        async with env(settings(grace_period=15.0)) as e:
            alice, bob = await pair(e)
            await alice.request("subscribe", uids=["bob"])
            inv, _ = await invite(e, alice, bob)
            session = bob.session
            await e.dropped(bob)
            assert e.hub.stats()["detached"] == 1
            # Still online for the others; the caller's side waits.
            assert (await alice.request("query", uids=["bob"]))["peers"] == {"bob": True}
            await alice.request("message", to="bob", text="while away")
            await e.advance(14.9)
            back = await e.ws()
            reply = await back.request("login", appid=APPID, uid="bob", session=session)
            assert reply["resumed"] is True
            assert reply["session"] == session
            assert (await back.event("message"))["text"] == "while away"
            assert (await back.request("accept", inv=inv))["type"] == "ok"
            accepted = await alice.event("local_state", state=LocalState.ACCEPTED_BY_REMOTE)
            assert accepted["state_name"] == "ACCEPTED_BY_REMOTE"
            assert [m for m in alice.events if m["type"] == "peer_status"] == []

    run(main())


def test_grace_expiry_goes_offline() -> None:
    async def main() -> None:
        async with env(settings(grace_period=15.0)) as e:
            alice, bob = await pair(e)
            await alice.request("subscribe", uids=["bob"])
            inv, _ = await invite(e, alice, bob)
            await bob.request("ack", inv=inv)
            session = bob.session
            await e.dropped(bob)
            await e.advance(15)
            assert (await alice.event("peer_status"))["peers"] == {"bob": "OFFLINE"}
            failed = await alice.event("local_state", state=LocalState.FAILURE)
            assert failed["reason_name"] == "PEER_OFFLINE"
            await assert_clean(e)
            assert e.hub.stats()["sessions"] == 1
            # Too late to resume: the stale session id gives a fresh login (token needed).
            back = await e.ws()
            reply = await back.request("login", appid=APPID, uid="bob", session=session)
            assert_error(reply, "AUTH_FAILED")

    run(main())


def test_reconnect_before_the_server_noticed_the_drop() -> None:
    async def main() -> None:
        async with env() as e:
            bob = await e.login("bob")
            again = await e.ws()
            reply = await again.request("login", appid=APPID, uid="bob", session=bob.session)
            assert reply["resumed"] is True
            assert (await bob.event("closing"))["reason"] == "RESUMED_ELSEWHERE"
            assert await bob.closed() == 4006
            assert (await again.request("ping"))["type"] == "pong"
            assert e.hub.stats()["sessions"] == 1

    run(main())


# ---- abuse limits --------------------------------------------------------------------


def test_rate_limit() -> None:
    async def main() -> None:
        async with env(settings(rate_burst=5, rate_per_second=1.0)) as e:
            ws = await e.login("alice")  # 1 token used
            for _ in range(4):
                assert (await ws.request("ping"))["type"] == "pong"
            await ws.send("ping")
            err = await ws.recv()
            assert err is not None
            assert_error(err, "RATE_LIMITED")
            closing = await ws.recv()
            assert closing is not None
            assert closing["reason"] == "RATE_LIMITED"
            assert await ws.closed() == 4002
            assert e.hub.stats()["sessions"] == 0

    run(main())


def test_rate_refills_with_time() -> None:
    async def main() -> None:
        async with env(settings(rate_burst=2, rate_per_second=1.0)) as e:
            ws = await e.ws()
            for _ in range(6):
                assert (await ws.request("ping"))["type"] == "pong"
                await e.advance(1.0)

    run(main())


def test_message_size_limit() -> None:
    async def main() -> None:
        limit = 4096
        async with env(settings(max_message_bytes=limit)) as e:
            ws = await e.login("alice")
            head = '{"v":1,"type":"ping","pad":"'
            exact = head + "x" * (limit - len(head) - 2) + '"}'
            assert len(exact.encode()) == limit
            await ws.send_raw(exact)
            assert (await ws.recv())["type"] == "pong"  # type: ignore[index]
            await ws.send_raw(exact[:-2] + 'x"}')
            err = await ws.recv()
            assert err is not None
            assert_error(err, "MESSAGE_TOO_LARGE")
            assert await ws.closed() == 4003

    run(main())


def test_too_many_pending_invitations() -> None:
    async def main() -> None:
        async with env(settings(max_pending_invitations=2)) as e:
            alice = await e.login("alice")
            for ref in ("a", "b"):
                assert (await alice.request("invite", ref=ref, callee="bob"))["type"] == "ok"
            err = await alice.request("invite", ref="c", callee="bob")
            assert_error(err, "TOO_MANY_INVITATIONS")
            assert await alice.closed() == 4004
            await assert_clean(e)
            assert e.hub.stats()["sessions"] == 0

    run(main())


# ---- the gateway as a participant ----------------------------------------------------


def test_gateway_participant() -> None:
    async def main() -> None:
        async with env() as e:
            events: list[tuple[str, dict[str, Any]]] = []
            gw = e.hub.register_participant(APPID, QueueParticipant(events.append))
            gw.register(["1005", "1006", "1086"], e.clock())
            alice = await e.login("alice")
            reply = await alice.request("query", uids=["1005", "1086", "1007"])
            assert reply["peers"] == {"1005": True, "1086": True, "1007": False}
            # A browser cannot take a number served by the gateway.
            ws = await e.ws()
            assert_error(
                await ws.request("login", appid=APPID, uid="1005", token=token("1005")),
                "UID_RESERVED",
            )
            # Browser -> number: the gateway gets it, acknowledges, accepts.
            await alice.request("invite", ref="r", callee="1005", content='{"Mode":1}')
            uid, got = events.pop(0)
            assert (uid, got["type"], got["caller"]) == ("1005", "invitation", "alice")
            assert gw.ack("1005", got["inv"], e.clock())["type"] == "ok"
            await alice.event("local_state", state=LocalState.RECEIVED_BY_REMOTE)
            assert gw.accept("1005", got["inv"], e.clock(), '{"SipNumber":"1005"}')["type"] == "ok"
            accepted = await alice.event("local_state", state=LocalState.ACCEPTED_BY_REMOTE)
            assert accepted["response"] == '{"SipNumber":"1005"}'
            assert [m["state_name"] for u, m in events if m["type"] == "remote_state"] == [
                "INVITATION_RECEIVED",
                "ACCEPT_SENT_TO_LOCAL",
                "ACCEPTED",
            ]
            events.clear()
            # Number -> browser, and peer messages both ways.
            reply = gw.invite("1086", "alice", e.clock(), content='{"Mode":1}')
            assert reply["type"] == "ok"
            got = await alice.event("invitation")
            assert got["caller"] == "1086"
            await alice.request("refuse", inv=got["inv"], response="no")
            assert [m["state_name"] for u, m in events if m["type"] == "local_state"] == [
                "SENT_TO_REMOTE",
                "REFUSED_BY_REMOTE",
            ]
            assert (
                gw.send_message("1086", "alice", '{"Cmd":"EndCall"}', e.clock())["delivered"]
                is True
            )
            assert (await alice.event("message"))["from"] == "1086"
            await alice.request("message", to="1086", text='{"Cmd":"CallState"}')
            assert events[-1] == (
                "1086",
                {"v": 1, "type": "message", "from": "alice", "text": '{"Cmd":"CallState"}'},
            )
            # Registration state shows in presence.
            await alice.request("subscribe", uids=["1006"])
            gw.set_present("1006", False, e.clock())
            assert (await alice.event("peer_status"))["peers"] == {"1006": "OFFLINE"}
            gw.unregister("1005", e.clock())
            assert (await alice.request("query", uids=["1005"]))["peers"] == {"1005": False}
            await assert_clean(e)

    run(main())


def test_participant_may_call_back_from_its_callback() -> None:
    async def main() -> None:
        async with env() as e:
            handle: Any = None

            class Busy:
                def on_event(self, uid: str, message: dict[str, Any]) -> None:
                    if message["type"] == "invitation":
                        reply = handle.refuse(
                            uid, message["inv"], e.clock(), '{"Cmd":"Calling","Reason":"calling"}'
                        )
                        assert reply["type"] == "ok"

            handle = e.hub.register_participant(APPID, Busy())
            handle.register(["1005"], e.clock())
            alice = await e.login("alice")
            await alice.request("invite", ref="r", callee="1005")
            refused = await alice.event("local_state", state=LocalState.REFUSED_BY_REMOTE)
            assert refused["response"] == '{"Cmd":"Calling","Reason":"calling"}'
            await assert_clean(e)

    run(main())


def test_sdk_is_served() -> None:
    async def main() -> None:
        async with env() as e:
            resp = await e.client.get("/sdk.js")
            assert resp.status == 200
            assert resp.content_type == "text/javascript"
            assert "export" in await resp.text()

    run(main())


# ---- robustness and operations -------------------------------------------------------


def test_detached_queue_overflow_ends_the_session() -> None:
    async def main() -> None:
        async with env(settings(max_detached_queue=2)) as e:
            alice, bob = await pair(e)
            await alice.request("subscribe", uids=["bob"])
            await e.dropped(bob)
            for _ in range(2):
                assert (await alice.request("message", to="bob", text="x"))["delivered"]
            assert e.hub.stats()["sessions"] == 2
            await alice.request("message", to="bob", text="one too many")
            assert (await alice.event("peer_status"))["peers"] == {"bob": "OFFLINE"}
            assert e.hub.stats()["sessions"] == 1

    run(main())


def test_gateway_registration_takes_a_number_from_a_browser() -> None:
    async def main() -> None:
        async with env() as e:
            squatter = await e.login("1005")
            gw = e.hub.register_participant(APPID, QueueParticipant(lambda _: None))
            gw.register(["1005"], e.clock())
            assert (await squatter.event("closing"))["reason"] == "TAKEOVER"
            assert await squatter.closed() == 4001
            assert e.hub.is_online(APPID, "1005")
            assert gw.query("1005", ["1005"], e.clock())["peers"] == {"1005": True}
            assert_error(gw.accept("1006", "x", e.clock()), "NOT_LOGGED_IN")

    run(main())


def test_shutdown_tells_clients() -> None:
    async def main() -> None:
        async with env() as e:
            alice = await e.login("alice")
            await e.service.stop()
            closing = await alice.event("closing")
            assert (closing["code"], closing["reason"]) == (1001, "SERVER_SHUTDOWN")
            assert await alice.closed() == 1001
            assert e.hub.stats()["sessions"] == 0

    run(main())


def test_tokens_and_certificates_never_reach_the_logs() -> None:
    from structlog.testing import capture_logs

    async def main() -> None:
        async with env() as e:
            with capture_logs() as logs:
                await e.login("alice")
                ws = await e.ws()
                bad = mint_token(APPID, "bob", "wrong-cert", 60, WALL)
                await ws.request("login", appid=APPID, uid="bob", token=bad)
            text = repr(logs)
            assert "signaling.login" in text and "signaling.auth_failed" in text
            assert token("alice") not in text
            assert bad not in text
            assert CERT not in text
            assert CERT not in repr(e.service.settings)

    run(main())


def test_mount_into_an_existing_app() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient as Client
    from aiohttp.test_utils import TestServer as Server

    from esl_bridge.signaling.server import setup_signaling

    async def main() -> None:
        app = web.Application()
        service = setup_signaling(app, settings(open_mode=True), ws_path="/rtm")
        client: Any = Client(Server(app))
        await client.start_server()
        try:
            raw = await client.ws_connect("/rtm")
            await raw.send_str('{"v":1,"type":"login","appid":"a","uid":"u"}')
            assert json.loads((await raw.receive()).data)["type"] == "ok"
            assert service.hub.is_online("a", "u")
            assert (await client.get("/sdk.js")).status == 200
        finally:
            await client.close()

    run(main())


def test_login_timeout() -> None:
    async def main() -> None:
        async with env(settings(login_timeout=30.0)) as e:
            idle = await e.ws()
            assert (await idle.request("ping"))["type"] == "pong"
            user = await e.login("alice")
            await e.advance(29.9)
            assert (await idle.request("ping"))["type"] == "pong"
            await e.advance(0.1)
            closing = await idle.event("closing")
            assert (closing["code"], closing["reason"]) == (4007, "LOGIN_TIMEOUT")
            assert await idle.closed() == 4007
            # A logged-in connection has no deadline; after a logout it gets one again.
            assert (await user.request("logout"))["type"] == "ok"
            await e.advance(30)
            assert (await user.event("closing"))["reason"] == "LOGIN_TIMEOUT"
            assert e.hub.stats()["connections"] == 0

    run(main())
