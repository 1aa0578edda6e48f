"""Dialplan applications: the `^0(.*)$` route and the `socket` application (the outbound ESL
connection), the park loop that runs `sendmsg` messages in order (execute: answer, playback,
sleep, hangup, ...; unicast), and the application bookkeeping events."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid as uuidlib
from typing import TYPE_CHECKING

from esl_bridge.logs import get_logger

from . import wire
from .channel import Channel
from .dialstring import parse_socket_args
from .media import UnicastStream
from .session import EslSession

if TYPE_CHECKING:
    from .phone import PhoneCall

log = get_logger(__name__)

# dialplan/default/01_esl_bridge_conference.xml: a conference room's dial-in number.
DIAL_IN_ROUTE = r"^9([0-9]{4,8})$"


class AppsMixin:
    """Part of `server.Simulator`: `self` is the simulator."""

    async def _run_dialplan(
        self,
        ch: Channel,
        dest: str,
        *,
        phone: PhoneCall | None,
        target: tuple[str, int] | None = None,
    ) -> None:
        """The `^0(.*)$` extension of dialplan/ (set X-Number, socket async full), and its
        conference dial-in route `^9([0-9]{4,8})$` (set esl_bridge_conf_code, socket)."""
        tgt = target or self.config.socket_target
        dial_in = re.match(DIAL_IN_ROUTE, dest)
        if dial_in is not None and tgt is not None:
            code = dial_in.group(1)
            set_arg = f"esl_bridge_conf_code={code}"
            ch.set_var("DP_MATCH", f"ARRAY::{dest}|:{code}")
            ch.set_var("call_uuid", ch.uuid)
            self._exec_start(ch, "set", set_arg, str(uuidlib.uuid4()))
            ch.set_var("esl_bridge_conf_code", code)
            self._exec_complete(ch, "set", set_arg, str(uuidlib.uuid4()))
            ch.after_socket_hangup = "NORMAL_TEMPORARY_FAILURE"
            await self._run_socket_app(ch, f"{tgt[0]}:{tgt[1]} async full", phone=phone)
            return
        m = re.match(r"^0(.*)$", dest)
        if m is None or tgt is None:
            await self.hangup(ch, "NO_ROUTE_DESTINATION")
            if phone:
                phone.connect_error = "no route" if m is None else "no socket_target configured"
                phone.connected.set()
            return
        ch.set_var("DP_MATCH", f"ARRAY::{dest}|:{m.group(1)}")
        ch.set_var("call_uuid", ch.uuid)
        set_arg = f"sip_h_X-Number=<sip:{m.group(1)}@{self.domain}>"
        self._exec_start(ch, "set", set_arg, str(uuidlib.uuid4()))
        ch.set_var("sip_h_X-Number", f"<sip:{m.group(1)}@{self.domain}>")
        self._exec_complete(ch, "set", set_arg, str(uuidlib.uuid4()))
        ch.after_socket_hangup = "NORMAL_TEMPORARY_FAILURE"  # the route's last action
        await self._run_socket_app(ch, f"{tgt[0]}:{tgt[1]} async full", phone=phone)

    async def _run_socket_app(self, ch: Channel, args: str, *, phone: PhoneCall | None) -> None:
        app_uuid = str(uuidlib.uuid4())
        ch.socket_app = (args, app_uuid)
        self._exec_start(ch, "socket", args, app_uuid)
        # Recorded connect reply: ..., current_application_data, current_application, socket_host.
        ch.set_var("current_application_data", args)
        ch.set_var("current_application", "socket")
        ch.current_app = "socket"
        ch.last_app, ch.last_arg = "socket", args
        try:
            host, port, is_async, full = parse_socket_args(args)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5.0)
        except (TimeoutError, OSError, ValueError) as exc:
            log.info("sim.socket_app_connect_failed", uuid=ch.uuid, target=args, error=str(exc))
            if phone:
                phone.connect_error = str(exc)
                phone.connected.set()
            self._exec_complete(ch, "socket", args, app_uuid)
            await self.hangup(ch, "NORMAL_CLEARING")
            return
        if ch.hung_up or self.crashed:
            writer.close()
            return
        ch.set_var("socket_host", host)
        session = EslSession(self, reader, writer, outbound=True, channel=ch)
        session.socket_async = is_async
        session.socket_full = full
        if self._late_batch_armed and ch.kind != "originated":
            self._late_batch_armed = False
            session.hold_until = time.monotonic() + self.config.first_call_event_delay
            self._spawn(self._release_later(session, self.config.first_call_event_delay))
        ch.session = session
        self.sessions.add(session)
        if phone:
            phone.session = session
        session.task = self._spawn(session.run())

    async def _release_later(self, session: EslSession, delay: float) -> None:
        await asyncio.sleep(delay)
        session.release_held()

    async def _outbound_connect(self, session: EslSession) -> None:
        ch = session.channel
        if ch is None:
            session.send(wire.command_reply("-ERR no channel"))
            return
        session.connected = True
        mode = "async" if session.socket_async else "static"
        control = "full" if session.socket_full else "single-channel"
        session.send(wire.connect_reply(ch.channel_data(), mode, control))
        phone = ch.phone_call
        if phone:
            phone.connected.set()
        if session.socket_async:
            self._spawn(self._park_soon(ch))
        if phone:
            self._spawn(self._phone_script(phone))

    async def _park_soon(self, ch: Channel) -> None:
        await asyncio.sleep(self.config.park_event_delay)
        if ch.hung_up:
            return
        ch.parked = True
        self.fire_channel(ch, "CHANNEL_PARK")
        self._start_app_runner(ch)

    def _exec_start(self, ch: Channel, app: str, arg: str, app_uuid: str) -> None:
        ch.set_var("current_application", app)
        if arg:
            ch.set_var("current_application_data", arg)
        else:
            ch.unset_var("current_application_data")
        ch.applications.append((app, arg))
        tail = [("Application", app)]
        if arg:
            tail.append(("Application-Data", arg))
        tail.append(("Application-UUID", app_uuid))
        self.fire_channel(ch, "CHANNEL_EXECUTE", tail=tail)

    def _exec_complete(
        self, ch: Channel, app: str, arg: str, app_uuid: str, response: str = "_none_"
    ) -> None:
        if arg:
            # Recorded: both are set again (data first) when the application had data.
            ch.set_var("current_application_data", arg)
            ch.set_var("current_application", app)
        tail = [("Application", app)]
        if arg:
            tail.append(("Application-Data", arg))
        tail += [("Application-Response", response), ("Application-UUID", app_uuid)]
        self.fire_channel(ch, "CHANNEL_EXECUTE_COMPLETE", tail=tail)

    def _start_app_runner(self, ch: Channel) -> None:
        if ch.app_runner is None:
            ch.app_runner = self._spawn(self._app_runner(ch))

    async def _app_runner(self, ch: Channel) -> None:
        """Executes queued sendmsg messages in order, like the park loop of FreeSWITCH."""
        queue: asyncio.Queue[tuple[str, dict[str, str]]] = ch.app_queue
        while not ch.hung_up:
            kind, msg = await queue.get()
            if ch.hung_up:
                return
            if kind == "unicast":
                await self._process_unicast(ch, msg)
            elif kind == "execute":
                ch.running_app = msg.get("execute-app-name", "")
                try:
                    await self._execute(ch, msg)
                finally:
                    ch.running_app = None
            if ch.socket_gone and not ch.hung_up:
                # The socket app returned once that application ended; the dialplan goes on.
                await self._socket_app_returned(ch)
                return

    async def _execute(self, ch: Channel, msg: dict[str, str]) -> None:
        app = msg.get("execute-app-name", "")
        arg = msg.get("execute-app-arg", "")
        app_uuid = msg.get("event-uuid") or str(uuidlib.uuid4())
        loops = 1
        with contextlib.suppress(ValueError):
            loops = max(1, int(msg.get("loops", "1")))
        for _ in range(loops):
            if ch.hung_up:
                return
            await self._execute_once(ch, app, arg, app_uuid)

    async def _execute_once(self, ch: Channel, app: str, arg: str, app_uuid: str) -> None:
        step = self.config.app_step_delay
        known = {
            "answer",
            "pre_answer",
            "ring_ready",
            "set",
            "export",
            "unset",
            "playback",
            "sleep",
            "hangup",
            "send_dtmf",
            "park",
            "echo",
            "log",
            "info",
            "respond",
            "conference",
        }
        if app not in known:
            # FreeSWITCH: "Invalid Application", the channel is hung up.
            log.info("sim.application_not_simulated", uuid=ch.uuid, application=app)
            await self.hangup(ch, "DESTINATION_OUT_OF_ORDER")
            return
        ch.set_var("current_loop", "1")
        ch.set_var("total_loops", "1")
        ch.last_app, ch.last_arg = app, arg
        await asyncio.sleep(step)
        if ch.hung_up:
            return
        self._exec_start(ch, app, arg, app_uuid)
        if app == "answer":
            await asyncio.sleep(step)
            with self.batch():
                if not ch.has_read_codec:
                    self._phone_media_up(ch)
                elif ch.unicast and not ch.answered:
                    ch.unicast.inject_ff(2)  # recorded: 2 x 0xFF at answer after pre_answer
                if not ch.answered:
                    ch.call_state = "EARLY"
                    self._mark_answered(ch)
                self._exec_complete(ch, app, arg, app_uuid)
            return
        if app == "pre_answer":
            await asyncio.sleep(step)
            with self.batch():
                if not ch.has_read_codec:
                    self._phone_media_up(ch)
                ch.call_state = "EARLY" if not ch.answered else ch.call_state
                self._exec_complete(ch, app, arg, app_uuid)
            return
        if app == "ring_ready" or (app == "respond" and arg.startswith("180")):
            if not ch.progress_us:
                ch.progress_us = self.event_timestamp_us()
                self.fire_channel(ch, "CHANNEL_PROGRESS")
        elif app == "respond" and arg.startswith("183"):
            if not ch.has_read_codec:
                self._phone_media_up(ch)
        elif app in ("set", "export"):
            key, _, value = arg.partition("=")
            if key:
                ch.set_var(key, value)
        elif app == "unset":
            ch.unset_var(arg)
        elif app == "sleep":
            with contextlib.suppress(ValueError):
                await self._interruptible(ch, float(arg) / 1000.0)
        elif app == "playback":
            ch.running_exec = (app, arg, app_uuid)
            try:
                await self._interruptible(ch, _playback_seconds(arg))
            finally:
                if ch.running_exec is not None and ch.running_exec[2] == app_uuid:
                    ch.running_exec = None
            if ch.hung_up:
                return
            self._exec_complete(ch, app, arg, app_uuid, response="FILE PLAYED")
            return
        elif app == "conference":
            ch.running_exec = (app, arg, app_uuid)
            try:
                await self._conference_app(ch, arg)  # type: ignore[attr-defined]
            finally:
                if ch.running_exec is not None and ch.running_exec[2] == app_uuid:
                    ch.running_exec = None
            if ch.hung_up:
                return
        elif app == "echo" or app == "park":
            await self._interruptible(ch, None)
            if ch.hung_up:
                return
        elif app == "send_dtmf":
            digits = arg.split("@")[0]
            ch.dtmf_to_phone.extend(d for d in digits if d not in "wW")
            if ch.unicast:
                ch.unicast.inject_ff(1)
            ch.set_var("last_dtmf_duration", "1500")
        elif app == "hangup":
            cause = arg.strip() or "NORMAL_CLEARING"
            await self._hangup_from_app(ch, cause, app_uuid, arg)
            return
        self._exec_complete(ch, app, arg, app_uuid)

    async def _interruptible(self, ch: Channel, seconds: float | None) -> None:
        """Wait for `seconds` (None: forever) unless uuid_break or hangup comes first."""
        brk: asyncio.Event = ch.break_event
        brk.clear()
        hup: asyncio.Event = ch.hangup_event
        waiters = [asyncio.ensure_future(brk.wait()), asyncio.ensure_future(hup.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    def _phone_media_up(self, ch: Channel) -> None:
        """The inbound leg sends its 183/200 with SDP: read codec + PROGRESS_MEDIA."""
        ch.progress_media_us = ch.created_us
        media = ch.media_variables()
        ch.set_var("rtp_use_codec_string", "OPUS,G722,PCMU,PCMA,H264,VP8")
        ch.set_vars(media[:3])  # remote_*_media_flow
        ch.set_var("audio_media_flow", "sendrecv")
        ch.set_vars(media[3:])
        ch.set_var("endpoint_disposition", "EARLY MEDIA")
        ch.has_read_codec = True
        ch.answer_state = "early"
        self.fire_channel(ch, "CHANNEL_PROGRESS_MEDIA")
        ch.set_var("rtp_local_sdp_str", ch.local_sdp())

    # ---- sendmsg -----------------------------------------------------------------------------
    async def _sendmsg(
        self, session: EslSession, arg: str, headers: list[tuple[str, str]], body: bytes
    ) -> None:
        msg = {k.lower(): v for k, v in headers}
        target_uuid = arg.strip() or (session.channel.uuid if session.channel else "")
        ch = self.channels.get(target_uuid)
        if ch is None or ch.hung_up:
            session.send(wire.command_reply(f"-ERR invalid session id [{target_uuid}]"))
            return
        command = msg.get("call-command", "").lower()
        if body and "execute-app-arg" not in msg:
            msg["execute-app-arg"] = body.decode("utf-8", "replace")
        session.send(wire.command_reply("+OK"))
        static = ch.session is not None and not ch.session.socket_async
        if command == "hangup":
            cause = msg.get("hangup-cause", "NORMAL_CLEARING")
            self._spawn(self._kill_soon(ch, cause))
            return
        if command not in ("execute", "unicast"):
            return  # nomedia, xferext, ...: acknowledged, not simulated
        if static:
            # Static single-channel mode: the message is queued but never parsed
            # (docs/freeswitch.rst, fact 6).
            ch.pending_msgs.append((command, msg))
            return
        if command == "unicast" and not ch.parked:
            # A ringing originated leg parses its queued messages in its state machine too
            # (crash 2 of the fixtures): the unicast is handled right away.
            self._spawn(self._process_unicast(ch, msg))
            return
        ch.app_queue.put_nowait((command, msg))

    async def _process_unicast(self, ch: Channel, msg: dict[str, str]) -> None:
        await asyncio.sleep(0.001)
        if ch.hung_up or self.crashed:
            return
        if not ch.has_read_codec:
            # switch_ivr_activate_unicast dereferences a NULL read codec (docs/freeswitch.rst,
            # fact 1).
            reason = (
                f"unicast on channel {ch.uuid} without a read codec "
                f"(Answer-State {ch.answer_state}, Channel-Call-State {ch.call_state}): "
                "FreeSWITCH 1.10.12 segfaults here"
            )
            self._spawn(self._crash_later(reason))
            return
        local = (msg.get("local-ip", "127.0.0.1"), int(msg.get("local-port", "0") or 0))
        remote = (msg.get("remote-ip", "127.0.0.1"), int(msg.get("remote-port", "0") or 0))
        if self.unicast_redirect is not None:
            local, remote = await self.unicast_redirect(local, remote)
        if ch.unicast is not None:
            ch.unicast.stop()
        stream = UnicastStream(
            codec=ch.codec,
            local=local,
            remote=remote,
            source=ch.audio,
            first_frame_ff=self.config.first_frame_ff,
            native="native" in msg.get("flags", ""),  # switch_ivr.c: strstr(flags, "native")
        )
        ch.unicast = stream
        ch.unicast_history.append(stream)
        await stream.start()


def _playback_seconds(arg: str) -> float | None:
    """How long `playback <arg>` runs: forever for looping tone streams (`loops=-1`)."""
    if "loops=-1" in arg or "loops=0" in arg:
        return None
    m = re.search(r"%\(([\d,]+)\)", arg)
    if m:
        nums = [int(x) for x in m.group(1).split(",") if x]
        return sum(nums[:2]) / 1000.0 if nums else 1.0
    return 1.0
