"""Deeply nested JSON sent to the gateway's own uids (issue 11, item 3).

Invitation content ``"[" * 4000 + "]" * 4000`` to a SIP number used to raise
RecursionError in the call book: a traceback, and the caller waited 30 s for
PEER_NO_RESPONSE. The same text as a peer message to a number or to the gateway's uid
logged a traceback per message. Now the invitation is refused at once, like any content
that is not a JSON object, and the messages are ignored like any free text.
"""

from __future__ import annotations

import json
from itertools import count

from structlog.testing import capture_logs
from support.gateway_support import WebUser, assert_nothing_left, running_gateway
from support.netns import loopback_only

from esl_bridge.core import call as c
from esl_bridge.core.callbook import BookSettings, CallBook
from esl_bridge.core.invitations import LocalState
from esl_bridge.numbers import NumberPool

DEEP = "[" * 4000 + "]" * 4000


def test_the_call_book_refuses_deep_content_as_bad_content() -> None:
    ids = count(1)
    book = CallBook(
        BookSettings(
            rtm2sip_on=True,
            proxy_on=True,
            sip_domain="127.0.0.1",
            gateway_uid="gateway",
            max_calls=3,
            originate_timeout=45,
            hangup_grace=5.0,
        ),
        NumberPool.from_rule("1005"),
        new_id=lambda prefix: f"{prefix}-{next(ids)}",
    )
    for content in (DEEP, '{"a":' + "[" * 40 + "]" * 40 + "}", '{"ChanId":NaN}'):
        actions = book.invitation_to_number("alice", "1005", content, 0.0)
        assert [type(a) for a in actions] == [c.RefuseInvitation], actions
        refusal = actions[0]
        assert isinstance(refusal, c.RefuseInvitation)
        assert json.loads(refusal.response) == {"Cmd": "Refused", "Reason": "bad_content"}
    assert len(book) == 0 and book.pool.busy() == {}


@loopback_only
def test_deep_json_to_the_gateway_is_refused_at_once_without_a_traceback() -> None:
    with running_gateway() as (gateway, sim), capture_logs() as logs:
        alice = WebUser(gateway, "alice").connect()
        reply = alice.request(
            {
                "type": "invite",
                "ref": "deep",
                "callee": "1005",
                "content": DEEP,
                "channel_id": "ch-deep",
            }
        )
        assert reply["type"] == "ok", reply
        # Whatever ends the invitation first; before the fix: FAILURE after 30 s.
        ended = alice.wait(
            lambda m: (
                m.get("type") == "local_state"
                and m.get("state") in (LocalState.REFUSED_BY_REMOTE, LocalState.FAILURE)
            ),
            60,
            "the invitation's end",
        )
        assert ended["state"] == LocalState.REFUSED_BY_REMOTE, ended
        assert json.loads(ended["response"]) == {"Cmd": "Refused", "Reason": "bad_content"}
        for to in ("1005", "gateway"):
            sent = alice.request({"type": "message", "to": to, "text": DEEP})
            assert sent["type"] == "ok", sent
        # A command after them: its answer means the gateway has handled the two before.
        alice.request({"type": "message", "to": "gateway", "text": '{"Cmd":"CallState"}'})
        assert alice.wait_peer_cmd("CallStateResult", timeout=30)["state"] == 0
        assert_nothing_left(gateway, sim)
        alice.close()
    bad = [e for e in logs if e.get("log_level") in ("error", "critical") or "exc_info" in e]
    assert bad == [], bad
