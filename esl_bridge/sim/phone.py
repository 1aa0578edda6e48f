"""Simulated phones that dial the gateway: `PhoneCall` (a handle on one such call), and
`place_call`, which runs the dialplan's `^0(.*)$` route to the socket app, then the phone's
DTMF and hangup script."""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from typing import TYPE_CHECKING

from .channel import Channel, FiredEvent, new_phone_leg
from .codecs import PCMU, Codec, codec_by_name
from .faults import SimulatorCrashed
from .media import AudioSource, UnicastStream

if TYPE_CHECKING:
    from .server import Simulator
    from .session import EslSession


class PhoneCall:
    """A simulated phone that dialled a `0<uid>` number (SIP -> gateway).

    Read its attributes from any thread; act on it through the simulator's loop (the thread
    handle wraps these calls).
    """

    def __init__(
        self,
        sim: Simulator,
        channel: Channel,
        *,
        hangup_after: float | None = None,
        dtmf_plan: list[tuple[float, str]] | None = None,
    ) -> None:
        self.sim = sim
        self.channel = channel
        self.hangup_after = hangup_after
        self.dtmf_plan = list(dtmf_plan or [])
        self.session: EslSession | None = None
        self.connect_error: str | None = None
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()

    @property
    def uuid(self) -> str:
        return self.channel.uuid

    @property
    def answered(self) -> bool:
        return self.channel.answered

    @property
    def hangup_cause(self) -> str | None:
        return self.channel.hangup_cause

    @property
    def events(self) -> list[FiredEvent]:
        """Events sent on the gateway's socket for this call."""
        return list(self.session.sent_events) if self.session else []

    @property
    def commands(self) -> list[str]:
        """First lines of the commands the gateway sent on the socket."""
        return list(self.session.received_commands) if self.session else []

    @property
    def unicast(self) -> UnicastStream | None:
        return self.channel.unicast or (
            self.channel.unicast_history[-1] if self.channel.unicast_history else None
        )

    async def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        await self.sim.hangup(self.channel, cause)

    async def send_dtmf(self, digits: str) -> None:
        await self.sim.phone_dtmf(self.channel, digits)


class PhoneMixin:
    """Part of `server.Simulator`: `self` is the simulator."""

    async def place_call(
        self,
        caller: str = "1001",
        dest: str = "01002",
        *,
        caller_name: str | None = None,
        cus_data: str | None = None,
        sip_headers: dict[str, str] | None = None,
        codec: str | Codec = PCMU,
        audio: str | AudioSource | None = "tone440",
        hangup_after: float | None = None,
        dtmf: list[tuple[float, str]] | None = None,
        target: tuple[str, int] | None = None,
        loopback: bool = False,
    ) -> PhoneCall:
        """A registered phone `caller` dials `dest`. With `^0(.*)$` the dialplan sets
        `sip_h_X-Number=<sip:$1@domain>` and runs `socket <target> async full`; with a
        conference dial-in number `^9([0-9]{4,8})$` it sets `esl_bridge_conf_code=$1` and
        runs the same socket (apps.DIAL_IN_ROUTE).

        hangup_after: the phone hangs up (BYE) this long after the call is answered.
        dtmf: [(seconds after answer, digits)] the phone sends as RFC 2833 (DTMF events).
        """
        if self.crashed:
            raise SimulatorCrashed(self.crash_reason or "crashed")
        headers = dict(sip_headers or {})
        if cus_data is not None:
            headers["X-CusData"] = cus_data
        uuid = str(uuidlib.uuid4())
        c = codec_by_name(codec)
        ch = new_phone_leg(
            self,
            uuid,
            caller=caller,
            caller_name=caller_name or caller,
            dest=dest,
            codec=c,
            session_id=self._new_session_id(),
            sip_headers=headers,
        )
        if loopback:
            ch.kind = "loopback"
            ch.name = f"loopback/{dest}-b"
            ch.set_var("channel_name", ch.name)
            ch.set_profile(Source="mod_loopback", Network_Addr=None, Username=None)
            ch.presence_id = None
        self._register(ch)
        ch.audio = AudioSource.parse(audio)
        call = PhoneCall(self, ch, hangup_after=hangup_after, dtmf_plan=dtmf)
        ch.phone_call = call
        self.phone_calls.append(call)
        self.fire_channel(ch, "CHANNEL_CREATE")
        ch.state, ch.state_number = "CS_EXECUTE", 4
        ch.call_state = "RINGING"
        ch.hit_dialplan = True
        self.fire_channel(ch, "CHANNEL_STATE")
        self._spawn(self._run_dialplan(ch, dest, phone=call, target=target))
        return call

    async def _phone_script(self, call: PhoneCall) -> None:
        """hangup_after / dtmf plan of a placed call, counted from the answer."""
        ch = call.channel
        plan = call.dtmf_plan
        hangup_after = call.hangup_after
        if not plan and hangup_after is None:
            return
        while not ch.answered and not ch.hung_up:
            await asyncio.sleep(0.01)
        if ch.hung_up:
            return
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for at, digits in sorted(plan):
            await asyncio.sleep(max(t0 + at - loop.time(), 0))
            if ch.hung_up:
                return
            await self.phone_dtmf(ch, digits)
        if hangup_after is not None:
            await asyncio.sleep(max(t0 + hangup_after - loop.time(), 0))
            await self.hangup(ch, "NORMAL_CLEARING")

    async def phone_dtmf(self, ch: Channel, digits: str) -> None:
        """The far end sends RFC 2833 digits: DTMF events (and 0xFF frames on the unicast)."""
        for i, digit in enumerate(digits):
            if ch.hung_up:
                return
            if i:
                await asyncio.sleep(0.1)
            ch.dtmf_from_phone.append(digit)
            if ch.unicast:
                ch.unicast.inject_ff(2)
            self.fire_channel(
                ch,
                "DTMF",
                tail=[("DTMF-Digit", digit), ("DTMF-Duration", "1440"), ("DTMF-Source", "RTP")],
            )
