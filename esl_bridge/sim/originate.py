"""`originate`: dial strings to a SIP phone (`user/`, `sofia/gateway/`, `sofia/...`) or to
`loopback/`, the ringing/early-media/answer script of the called extension, and what the
answered (or early) leg does next: park, run an application, or the socket app."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid as uuidlib

from .channel import Channel, directory_user_vars, new_originated_leg, originated_progress_vars
from .dialstring import AppSpec, DialString, parse_app, parse_dial_string
from .dialstring import split_args as split_originate_args
from .extensions import Extension


class OriginateMixin:
    """Part of `server.Simulator`: `self` is the simulator."""

    async def _api_originate(self, arg: str) -> str:
        args = split_originate_args(arg)
        if len(args) < 2:
            return (
                "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] "
                "[<context>] [<cid_name>] [<cid_num>] [<timeout_sec>]\n"
            )
        ds = parse_dial_string(args[0])
        app = parse_app(args[1])
        timeout = self.config.default_originate_timeout
        if "originate_timeout" in ds.variables:
            with contextlib.suppress(ValueError):
                timeout = float(ds.variables["originate_timeout"])
        elif len(args) > 6:
            with contextlib.suppress(ValueError):
                timeout = float(args[6])
        cid_num = ds.variables.get("origination_caller_id_number") or (
            args[5] if len(args) > 5 else "0000000000"
        )
        cid_name = ds.variables.get("origination_caller_id_name") or (
            args[4] if len(args) > 4 else None
        )
        # Unquoted `&socket(host:port async full)`: FreeSWITCH splits it at the spaces, the
        # socket application only gets `host:port` and runs static (docs/freeswitch.rst, fact 6).
        if ds.endpoint == "error":
            return f"-ERR {ds.target}\n"
        if ds.endpoint == "user":
            ext = self.config.extensions.get(ds.target)
            if ext is None:
                return "-ERR SUBSCRIBER_ABSENT\n"
            if ext.behaviour == "not_registered":
                return "-ERR USER_NOT_REGISTERED\n"
            user = ds.target
        elif ds.endpoint == "gateway":
            ext = self.config.extensions.get(ds.target) or self.config.gateway_extension
            if ext.behaviour == "not_registered":
                return "-ERR USER_NOT_REGISTERED\n"
            user = ds.target
        elif ds.endpoint == "sofia":
            ext = self.config.extensions.get(ds.target) or self.config.gateway_extension
            user = ds.target
        elif ds.endpoint == "loopback":
            return await self._originate_loopback(ds, app, cid_num, cid_name, timeout)
        else:
            return "-ERR CHAN_NOT_IMPLEMENTED\n"
        return await self._originate_sip(ds, app, ext, user, cid_num, cid_name, timeout)

    async def _originate_sip(
        self,
        ds: DialString,
        app: AppSpec,
        ext: Extension,
        user: str,
        cid_num: str,
        cid_name: str | None,
        timeout: float,
    ) -> str:
        if self.crashed:
            return "-ERR NORMAL_TEMPORARY_FAILURE\n"
        uuid = ds.variables.get("origination_uuid") or str(uuidlib.uuid4())
        if uuid in self.channels:
            return "-ERR DESTINATION_OUT_OF_ORDER\n"
        ch = new_originated_leg(
            self,
            uuid,
            user=user,
            cid_number=cid_num,
            cid_name=cid_name,
            codec=ext.codec,
            session_id=self._new_session_id(),
            dial_vars=ds.variables,
            endpoint="sofia",
        )
        self._register(ch)
        ch.audio = ext.audio
        ch.extension = ext
        ch.state, ch.state_number = "CS_INIT", 2
        self.fire_channel(ch, "CHANNEL_CREATE")
        ignore_early = ds.variables.get("ignore_early_media", "").lower() == "true"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        hangup_event: asyncio.Event = ch.hangup_event

        async def wait(seconds: float | None) -> bool:
            """Sleep until `seconds` pass (True) or the leg ends / times out (False)."""
            limit = deadline - loop.time()
            if seconds is not None:
                limit = min(limit, seconds)
            try:
                await asyncio.wait_for(hangup_event.wait(), max(limit, 0))
                return False
            except TimeoutError:
                if seconds is None or loop.time() >= deadline - 1e-3:
                    if loop.time() >= deadline - 1e-3:
                        await self.hangup(ch, "NO_ANSWER")
                    return False
                return True

        def failed() -> str:
            return f"-ERR {ch.hangup_cause or 'NORMAL_CLEARING'}\n"

        await asyncio.sleep(0.02)
        if ch.hung_up:
            return failed()
        beh = ext.behaviour
        if beh in ("busy", "reject"):
            await self.hangup(ch, "USER_BUSY" if beh == "busy" else "CALL_REJECTED")
            return failed()
        self._mark_progress(ch, cid_num)
        if beh == "no_answer":
            if await wait(ext.ring_seconds):
                await self.hangup(ch, "NO_ANSWER")
            return failed()
        if beh == "early_media":
            if not await wait(ext.early_after):
                return failed()
            self._mark_progress_media(ch)
            if not ignore_early:
                # docs/freeswitch.rst, fact 7: +OK <uuid> at the 183; the channel parks in EARLY.
                self._after_originate(ch, ds, app, user)
                if ext.answer_after is not None:
                    self._spawn(self._answer_later(ch, ext.answer_after))
                return f"+OK {ch.uuid}\n"
            if ext.answer_after is None or not await wait(ext.answer_after):
                if not ch.hung_up:
                    await self._wait_forever_or_timeout(ch, deadline)
                return failed()
        elif beh == "ringing":
            if ext.answer_after is None or not await wait(ext.answer_after):
                if not ch.hung_up:
                    await self._wait_forever_or_timeout(ch, deadline)
                return failed()
        else:  # echo, tone
            delay = ext.answer_after if ext.answer_after is not None else 0.0
            if delay > 0 and not await wait(delay):
                return failed()
        if ch.hung_up:
            return failed()
        self._mark_answered(ch)
        self._after_originate(ch, ds, app, user)
        return f"+OK {ch.uuid}\n"

    async def _wait_forever_or_timeout(self, ch: Channel, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                ch.hangup_event.wait(),
                max(deadline - loop.time(), 0),
            )
        except TimeoutError:
            await self.hangup(ch, "NO_ANSWER")

    async def _answer_later(self, ch: Channel, delay: float) -> None:
        await asyncio.sleep(delay)
        if not ch.hung_up and not ch.answered:
            with self.batch():
                if ch.unicast:
                    ch.unicast.inject_ff(2)
                self._mark_answered(ch)

    def _mark_progress(self, ch: Channel, cid_num: str) -> None:
        """180 Ringing from the called phone (no SDP): no read codec yet."""
        ch.progress_us = ch.created_us
        ch.state, ch.state_number = "CS_CONSUME_MEDIA", 7
        ch.set_profile(Network_Addr="127.0.0.1")
        ch.set_vars(originated_progress_vars(ch, cid_num))
        self.fire_channel(ch, "CHANNEL_PROGRESS")
        ch.call_state = "RINGING"  # recorded: the event still says DOWN, the channel then rings

    def _mark_progress_media(self, ch: Channel) -> None:
        """183 with SDP: media (and a read codec) exist from here on."""
        ch.progress_media_us = ch.switch.event_timestamp_us()
        ch.call_state = "RINGING"
        ch.answer_state = "early"
        ch.set_var("ep_codec_string", ch.codec.ep_codec_string)
        ch.set_var("switch_r_sdp", ch.remote_sdp(ch.sip_contact_user))
        ch.set_var("endpoint_disposition", "EARLY MEDIA")
        # Recorded: this event has no Channel-Read-Codec-* yet; they appear at CHANNEL_PARK.
        self.fire_channel(ch, "CHANNEL_PROGRESS_MEDIA")
        ch.has_read_codec = True

    def _mark_answered(self, ch: Channel) -> None:
        if ch.answered:
            return
        if not ch.progress_us:
            ch.progress_us = ch.created_us
        if not ch.has_read_codec:
            ch.set_var("switch_r_sdp", ch.remote_sdp(ch.sip_contact_user))
            ch.set_var("ep_codec_string", ch.codec.ep_codec_string)
            ch.set_var("rtp_use_codec_string", "OPUS,G722,PCMU,PCMA,H264,VP8")
            ch.set_vars(ch.media_variables())
            ch.has_read_codec = True
        ch.answered = True
        ch.answered_us = ch.switch.event_timestamp_us()
        ch.answer_state = "answered"
        if ch.kind == "originated" and not ch.parked:
            ch.call_state = "RINGING"
        self.fire_channel(ch, "CHANNEL_ANSWER")
        ch.call_state = "ACTIVE"
        ch.set_var("endpoint_disposition", "ANSWER")
        ext = ch.extension
        if ext is not None and ext.hangup_after is not None:
            self._spawn(self._hangup_later(ch, ext.hangup_after))

    async def _hangup_later(self, ch: Channel, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.hangup(ch, "NORMAL_CLEARING")

    def _after_originate(self, ch: Channel, ds: DialString, app: AppSpec, user: str) -> None:
        """The leg is up (answered or early media): flip caller id, run the application."""
        if not any(k == "remote_media_port" for k in ch.variables):
            ch.set_vars(ch.media_variables())
        ch.set_vars(directory_user_vars(user))
        cid = ch.profile.get("Caller-ID-Number") or ""
        # Recorded order after originate: the dial-string variables are set again, then
        # the originate bookkeeping and call_uuid.
        ch.set_vars(ds.variables.items())
        ch.set_var("originate_early_media", "true")
        ch.set_var("originate_endpoint", "user" if ds.endpoint == "user" else "sofia")
        ch.set_var("pre_transfer_caller_id_number", cid)
        ch.set_var("channel_cid_flipped", "yes")
        ch.set_var("call_uuid", ch.uuid)
        # After originate FreeSWITCH swaps caller and callee ids on the a-leg (recorded).
        ch.set_profile(
            **{
                "Caller-ID-Name": "Outbound Call",
                "Caller-ID-Number": ch.sip_contact_user,
                # The originate's caller id name, when it gave one (recorded), else none.
                "Callee-ID-Name": ch.profile.get("Orig-Caller-ID-Name"),
                "Callee-ID-Number": cid,
                "Network-Addr": "127.0.0.1",
            }
        )
        ch.state, ch.state_number = "CS_EXECUTE", 4
        ch.hit_dialplan = True
        if ch.answered:
            ch.call_state = "ACTIVE"
        else:
            ch.call_state = "EARLY"
        if app.name == "socket":
            self._spawn(self._run_socket_app(ch, app.args, phone=None))
        elif app.name == "":
            self._spawn(self._run_dialplan(ch, app.extension or "", phone=None))
        elif app.name == "conference":
            self._spawn(self._conference_originated(ch, app.args))  # type: ignore[attr-defined]
        else:
            # park and every other application: the channel parks and obeys sendmsg.
            ch.set_var("current_application", app.name or "park")
            ch.current_app = app.name
            ch.last_app = app.name
            if ch.answered:
                self._spawn(self._park_after_originate(ch, app.name or "park"))
            else:
                self._park_originated(ch, app.name or "park")

    async def _park_after_originate(self, ch: Channel, app: str) -> None:
        """Recorded after an answer (orphans/esl_inbound_orphan_originator_killed_ringing_
        observer.txt): the originate's BACKGROUND_JOB comes first, then CHANNEL_EXECUTE park
        and CHANNEL_PARK. After a 183 (esl_inbound_unicast_early_media_originate.txt) the
        channel parks before the BACKGROUND_JOB: two threads of the switch race there."""
        await asyncio.sleep(0)
        if ch.hung_up:
            return
        self._park_originated(ch, app)

    def _park_originated(self, ch: Channel, app: str) -> None:
        with self.batch():
            if app == "park":
                self._exec_start(ch, "park", "", str(uuidlib.uuid4()))
            ch.parked = True
            self.fire_channel(ch, "CHANNEL_PARK")
        self._start_app_runner(ch)

    async def _originate_loopback(
        self,
        ds: DialString,
        app: AppSpec,
        cid_num: str,
        cid_name: str | None,
        timeout: float,
    ) -> str:
        """`loopback/0<uid>/default`: a b-leg runs the dialplan (the `0` route to the socket
        app); the a-leg answers when the b-leg does. Other loopback numbers behave like
        `user/<number>`. Not simulated: the a-leg's own events (only the b-leg is visible)."""
        number = ds.target
        if number.startswith("conference:"):
            return await self._originate_conference_loopback(  # type: ignore[attr-defined]
                ds, app, cid_num, cid_name
            )
        if not re.match(r"^0(.*)$", number):
            ext = self.config.extensions.get(number)
            if ext is None:
                return "-ERR NO_ROUTE_DESTINATION\n"
            return await self._originate_sip(ds, app, ext, number, cid_num, cid_name, timeout)
        call = await self.place_call(
            caller=cid_num,
            dest=number,
            caller_name=cid_name or cid_num,
            loopback=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        ch = call.channel
        while loop.time() < deadline:
            if ch.hung_up:
                return f"-ERR {ch.hangup_cause or 'NORMAL_CLEARING'}\n"
            if ch.answered or (
                ch.has_read_codec and ds.variables.get("ignore_early_media", "").lower() != "true"
            ):
                return f"+OK {ch.uuid}\n"
            await asyncio.sleep(0.01)
        await self.hangup(ch, "NO_ANSWER")
        return "-ERR NO_ANSWER\n"
