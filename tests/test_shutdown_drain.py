"""The shutdown drain of the call controller: ``CallController.stop`` ends every call and
then waits for the switch to confirm each hangup before it returns (and the gateway closes
its ESL connection and exits).

tests/test_sigterm_drain.py checks the whole process on SIGTERM, but there the ESL side's
last clean-up (``hupall`` of this instance's channels, which waits for its reply) ends the
channel too, so a controller that did not wait passed it (issue 18: "drop the wait loop").
Here the controller is alone, with a fake switch that confirms only when the test says so
and a fake clock that never reaches the drain's deadline: ``stop()`` must still be waiting
after the hangup went out, and return once the confirmation came.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from support.signaling_support import FakeClock

from esl_bridge import config
from esl_bridge.core import call as c
from esl_bridge.gateway.controller import CallController
from esl_bridge.gateway.esl_side import ChannelOp
from esl_bridge.signaling.hub import Hub
from esl_bridge.signaling.settings import signaling_settings

APPID = "drain"
# Loop turns given to a stop() that does not wait: it has nothing else to await here (no
# timer task, no media leg), so it returns within a handful.
TURNS = 200


class Switch:
    """The ChannelPort: records what the controller asks; confirms nothing by itself."""

    def __init__(self) -> None:
        self.originated: list[c.Originate] = []
        self.ops: list[ChannelOp] = []

    def originate(self, action: c.Originate) -> None:
        self.originated.append(action)

    def operate(self, op: ChannelOp) -> None:
        self.ops.append(op)


class Browser:
    def __init__(self, hub: Hub, clock: FakeClock, uid: str) -> None:
        self.hub, self.clock = hub, clock
        self.inbox: list[dict[str, Any]] = []
        self.cid = hub.connect(self, clock())
        self.say({"type": "login", "appid": APPID, "uid": uid})

    def send(self, message: dict[str, Any]) -> None:
        self.inbox.append(message)

    def close(self, code: int, reason: str) -> None:
        self.inbox.append({"type": "closed", "code": code})

    def say(self, message: dict[str, Any]) -> None:
        self.hub.receive(self.cid, json.dumps({"v": 1, **message}), self.clock())

    def peer_cmds(self) -> list[dict[str, Any]]:
        return [json.loads(m["text"]) for m in self.inbox if m.get("type") == "message"]


def _answered_call() -> tuple[CallController, Switch, Browser, str]:
    settings = config.from_text(
        f"""
[global]
appid = {APPID}
[rtm2sip]
on = 1
acc_rule = 10[00-09]
[proxy]
on = 1
[auth]
open_mode = 1
""",
        "<unit>",
    )
    clock = FakeClock()
    hub = Hub(signaling_settings(settings))
    switch = Switch()
    controller = CallController(settings, hub, switch, clock=clock)
    controller.handle.register([*controller.pool, controller.gateway_uid], clock(), present=False)
    controller.set_esl_state("connected")
    alice = Browser(hub, clock, "alice")
    content = json.dumps({"Mode": 1, "Conference": False, "ChanId": "ch-1"})
    alice.say({"type": "invite", "callee": "1000", "ref": "r1", "content": content})
    [originate] = switch.originated
    controller.channel_event(originate.uuid, "CHANNEL_ANSWER", {"Answer-State": "answered"})
    call = controller.book.by_uuid(originate.uuid)
    assert call is not None and call.state is c.State.CONNECTED
    return controller, switch, alice, originate.uuid


def test_stop_waits_for_the_switch_to_confirm_the_hangup() -> None:
    async def body() -> None:
        controller, switch, alice, uuid = _answered_call()
        stopping = asyncio.create_task(controller.stop(drain=5.0))
        for _ in range(TURNS):
            await asyncio.sleep(0)
        # The call was ended as a shutdown: the web user told, the channel asked to go.
        assert {"Cmd": "EndCall"}.items() <= alice.peer_cmds()[-1].items()
        hangups = [op for op in switch.ops if isinstance(op, c.Hangup)]
        assert [(h.uuid, h.cause) for h in hangups] == [(uuid, "SYSTEM_SHUTDOWN")]
        # The switch has not confirmed: stop() is still draining, the call still held.
        assert not stopping.done(), "stop() returned before the switch confirmed the hangup"
        assert len(controller.book) == 1

        controller.channel_event(
            uuid, "CHANNEL_HANGUP_COMPLETE", {"Hangup-Cause": "SYSTEM_SHUTDOWN"}
        )
        await asyncio.wait_for(stopping, 30)
        assert len(controller.book) == 0
        assert controller.ended_total.get("shutdown") == 1, controller.ended_total
        assert not controller.pool.busy()

    asyncio.run(body())
