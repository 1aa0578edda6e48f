"""The simulator's `api`/`bgapi` commands (status, uuid_*, show, hupall, sched_api, ...), one
method each, found through `API_COMMANDS`; originate is in originate.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import ops_api, wire
from .channel import Q850, Channel, common_event_headers
from .conference import ConferenceMixin
from .originate import OriginateMixin

if TYPE_CHECKING:
    from .session import EslSession

SHOW_CHANNELS_HEADER = (
    "uuid,direction,created,created_epoch,name,state,cid_name,cid_num,ip_addr,dest,"
    "application,application_data,dialplan,context,read_codec,read_rate,read_bit_rate,"
    "write_codec,write_rate,write_bit_rate,secure,hostname,presence_id,presence_data,"
    "accountcode,callstate,callee_name,callee_num,callee_direction,call_uuid,sent_callee_name,"
    "sent_callee_num,initial_cid_name,initial_cid_num,initial_ip_addr,initial_dest,"
    "initial_dialplan,initial_context"
)


class ApiMixin:
    """Part of `server.Simulator`: `self` is the simulator."""

    async def api(self, cmd: str, arg: str, session: EslSession | None = None) -> str:
        handler = API_COMMANDS.get(cmd.lower()) if cmd else None
        if handler is None:
            return f"-ERR {cmd} Command not found!\n"
        return await handler(self, arg)

    async def _bgapi(self, job_uuid: str, cmd: str, arg: str) -> None:
        result = await self.api(cmd, arg)
        headers = common_event_headers(self, "BACKGROUND_JOB")
        headers += [("Job-UUID", job_uuid), ("Job-Command", cmd)]
        if arg:
            headers.append(("Job-Command-Arg", arg))
        self.fire(None, "BACKGROUND_JOB", headers, result.encode())

    async def _api_status(self, arg: str) -> str:
        up = time.monotonic() - self._started_mono
        us = int(up * 1_000_000)
        secs, usec = divmod(us, 1_000_000)
        mins, s = divmod(secs, 60)
        hours, m = divmod(mins, 60)
        days, h = divmod(hours, 24)
        years, d = divmod(days, 365)
        total = self._session_counter
        live = len(self.channels)
        return (
            f"UP {years} years, {d} days, {h} hours, {m} minutes, {s} seconds, "
            f"{usec // 1000} milliseconds, {usec % 1000} microseconds\n"
            "FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
            f"{total} session(s) since startup\n"
            f"{live} session(s) - peak {max(live, 1 if total else 0)}, last 5min {total} \n"
            f"0 session(s) per Sec out of max 30, peak 1, last 5min {total} \n"
            "1000 session(s) max\n"
            "min idle cpu 0.00/99.33\n"
            "Current Stack Size/Max 240K/8192K\n"
        )

    async def _api_version(self, arg: str) -> str:
        return "FreeSWITCH Version 1.10.12-release (esl-bridge simulator; 64bit)\n"

    async def _api_reloadxml(self, arg: str) -> str:
        return "+OK [Success]\n"

    async def _api_uuid_exists(self, arg: str) -> str:
        return "true" if arg.split()[:1] and arg.split()[0] in self.channels else "false"

    async def _api_uuid_kill(self, arg: str) -> str:
        parts = arg.split()
        ch = self.channels.get(parts[0]) if parts else None
        if ch is None or ch.hung_up:
            return "-ERR No such channel!\n"
        cause = parts[1] if len(parts) > 1 else "NORMAL_CLEARING"
        self._spawn(self._kill_soon(ch, cause))
        return "+OK\n"

    async def _kill_soon(self, ch: Channel, cause: str) -> None:
        await asyncio.sleep(0.02)  # recorded: the hangup events follow the +OK by ~20 ms
        await self.hangup(ch, cause, by_switch=True)

    async def _api_uuid_send_dtmf(self, arg: str) -> str:
        parts = arg.split()
        ch = self.channels.get(parts[0]) if parts else None
        if ch is None or len(parts) < 2:
            return "-ERR no such channel\n" if ch is None else "-USAGE: <uuid> <dtmf_data>\n"
        digits = parts[1].split("@")[0]
        ch.dtmf_to_phone.extend(digits)
        if ch.unicast:
            ch.unicast.inject_ff(1)
        return f"+OK {ch.uuid} sent DTMF {digits}.\n"

    def _channel_and_args(
        self, arg: str, maxsplit: int, usage: str
    ) -> tuple[Channel, list[str]] | str:
        """`<uuid> <args...>` of a uuid_* api: the channel and the words, or the error reply
        (FreeSWITCH's texts: no such channel first, then the usage)."""
        parts = arg.split(maxsplit=maxsplit)
        ch = self.channels.get(parts[0]) if parts else None
        if ch is None:
            return "-ERR No such channel!\n"
        if len(parts) < 2:
            return f"-USAGE: {usage}\n"
        return ch, parts

    async def _api_uuid_getvar(self, arg: str) -> str:
        found = self._channel_and_args(arg, 2, "<uuid> <var>")
        if isinstance(found, str):
            return found
        ch, parts = found
        # Recorded: the bare value, no newline; `_undef_` for an unset variable.
        return ch.get_var(parts[1]) or "_undef_"

    async def _api_uuid_setvar(self, arg: str) -> str:
        found = self._channel_and_args(arg, 2, "<uuid> <var> [value]")
        if isinstance(found, str):
            return found
        ch, parts = found
        if len(parts) == 3:
            ch.set_var(parts[1], parts[2])
        else:
            ch.unset_var(parts[1])
        return "+OK\n"

    async def _api_uuid_dump(self, arg: str) -> str:
        """`uuid_dump <uuid>` (plain): the CHANNEL_DATA event headers, the channel's data and
        caller profile, then its variables (recorded in conference/, the A legs')."""
        ch = self.channels.get(arg.split()[0]) if arg.split() else None
        if ch is None:
            return "-ERR No such channel!\n"
        calling = {
            "Event-Calling-File": "mod_commands.c",
            "Event-Calling-Function": "uuid_dump_function",
            "Event-Calling-Line-Number": "6468",
        }
        head = [(k, calling.get(k, v)) for k, v in common_event_headers(self, "CHANNEL_DATA")]
        headers = head + ch.basic_headers() + ch.variable_headers()
        return wire.serialize_event(headers).decode()

    async def _api_uuid_break(self, arg: str) -> str:
        ch = self.channels.get(arg.split()[0]) if arg.split() else None
        if ch is None:
            return "-ERR No such channel!\n"
        ch.break_event.set()
        return "+OK\n"

    async def _api_hupall(self, arg: str) -> str:
        """`hupall [cause] [var value]...`: every channel, or those whose variables match."""
        words = arg.split()
        cause = words[0] if words and words[0] in Q850 else "MANAGER_REQUEST"
        pairs = list(zip(words[1::2], words[2::2], strict=False))
        for ch in list(self.channels.values()):
            if ch.hung_up or any(ch.get_var(k) != v for k, v in pairs):
                continue
            self._spawn(self.hangup(ch, cause, by_switch=True))
        if not pairs:
            return f"+OK hangup all channels with cause {cause}\n"
        more = "" if len(pairs) == 1 else "..."
        k, v = pairs[0]
        return f"+OK hangup all channels matching [{k}]=[{v}]{more} with cause: {cause}\n"

    async def _api_sched_api(self, arg: str) -> str:
        """`sched_api +<secs>|@<secs>|<epoch> <group> <command...>` on the switch's scheduler."""
        parts = arg.split(" ", 2)
        if len(parts) < 3 or not parts[2]:
            return "-ERR Invalid syntax. USAGE: [+@]<time> <group_name> <command_string>[&]\n"
        when, group, command = parts
        try:
            if when[:1] in "+@":
                delay = float(int(when[1:] or "0"))
            else:
                delay = max(0.0, int(when) - time.time())
        except ValueError:
            delay = 0.0
        self._sched_next += 1
        task_id = self._sched_next
        self._sched[task_id] = (group, self._spawn(self._sched_run(task_id, delay, command)))
        return f"+OK Added: {task_id}\n"

    async def _sched_run(self, task_id: int, delay: float, command: str) -> None:
        await asyncio.sleep(delay)
        self._sched.pop(task_id, None)
        name, _, rest = command.rstrip("&").partition(" ")
        await self.api(name, rest)

    async def _api_sched_del(self, arg: str) -> str:
        target = arg.strip()
        if not target:
            return "-ERR Invalid syntax\n"
        if target.isdigit():
            ids = [int(target)] if int(target) in self._sched else []
        else:
            ids = [i for i, (group, _t) in self._sched.items() if group == target]
        for i in ids:
            _group, task = self._sched.pop(i)
            task.cancel()
        return f"+OK Deleted: {len(ids)}\n"

    def scheduled_groups(self) -> list[str]:
        """Test hook: the groups of the scheduler tasks still pending."""
        return [group for group, _t in self._sched.values()]

    async def _api_uuid_setvar_multi(self, arg: str) -> str:
        found = self._channel_and_args(arg, 1, "<uuid> <var>=<value>;<var>=<value>...")
        if isinstance(found, str):
            return found
        ch, parts = found
        for item in parts[1].split(";"):
            name, eq, value = item.partition("=")
            if name and eq:
                ch.set_var(name, value)
            elif name:
                ch.unset_var(name)
        return "+OK\n"

    async def _api_sofia_contact(self, arg: str) -> str:
        target = arg.split()[0] if arg.split() else ""
        user = target.split("/")[-1].split("@")[0]
        ext = self.config.extensions.get(user)
        if ext is None or ext.behaviour == "not_registered":
            return "error/user_not_registered"
        return f"sofia/internal/sip:{user}@127.0.0.1:5071"

    async def _api_show(self, arg: str) -> str:
        words = arg.split()
        what = words[0].lower() if words else ""
        if what == "codec" and len(words) == 1:
            return ops_api.show_codec(self)  # type: ignore[arg-type]
        if words == ["registrations", "as", "json"]:
            return ops_api.show_registrations_json(self)  # type: ignore[arg-type]
        if words == ["registrations"]:
            return ops_api.show_registrations(self)  # type: ignore[arg-type]
        if what not in ("channels", "calls"):
            return "-USAGE: channels|calls [count]\n"
        live = [c for c in self.channels.values() if not c.destroyed]
        if what == "calls":
            # A "call" is a bridged pair; the simulator never bridges.
            live = []
        if len(words) > 1 and words[1].lower() == "count":
            return f"\n{len(live)} total.\n"
        columns = SHOW_CHANNELS_HEADER.split(",")
        if words[1:] == ["as", "json"]:
            # Recorded (orphans/esl_inbound_orphan_api_replies.txt): `{"row_count": 0}` and a
            # newline when empty, else compact JSON without one.
            if not live:
                return '{"row_count": 0}\n'
            rows = [dict(zip(columns, self._show_row(c), strict=True)) for c in live]
            return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":"))
        if not live:
            return f"\n{len(live)} total.\n"
        lines = [SHOW_CHANNELS_HEADER, *(",".join(self._show_row(c)) for c in live)]
        return "\n".join(lines) + f"\n\n{len(live)} total.\n"

    def _show_row(self, c: Channel) -> list[str]:
        """One channel's values in the order of SHOW_CHANNELS_HEADER (from the core's
        channel table: the running application, codecs once media is up)."""
        app = c.running_app or c.current_app or ""
        codec = [c.codec.name, str(c.codec.rate), str(c.codec.bit_rate)]
        codec = codec if c.has_read_codec else ["", "", ""]
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.created_us / 1e6))
        cid_name = c.profile.get("Caller-ID-Name") or ""
        cid_num = c.profile.get("Caller-ID-Number") or ""
        dest = c.profile.get("Destination-Number") or c.sip_contact_user or ""
        user = c.sip_contact_user.split("-")[0] if c.sip_contact_user else ""
        presence = c.presence_id or (f"{user}@{self.domain}" if user else "")
        return [
            c.uuid,
            c.direction,
            created,
            str(c.created_us // 1_000_000),
            c.name,
            c.state,
            cid_name,
            cid_num,
            "127.0.0.1",
            dest,
            app,
            "",
            "XML",
            "default",
            *codec,
            *codec,
            "",
            self.hostname,
            presence,
            "",
            user,
            c.call_state,
            "",
            c.profile.get("Callee-ID-Number") or dest,
            "RECV" if c.answered else "",
            c.uuid,
            "",
            "",
            cid_name,
            cid_num or "0000000000",
            "127.0.0.1",
            dest,
            "XML",
            "default",
        ]


# `api <word> <arg>`: the handler of each command word the simulator knows (lower case).
API_COMMANDS: dict[str, Callable[[Any, str], Awaitable[str]]] = {
    "status": ApiMixin._api_status,
    "version": ApiMixin._api_version,
    "reloadxml": ApiMixin._api_reloadxml,
    "uuid_exists": ApiMixin._api_uuid_exists,
    "uuid_kill": ApiMixin._api_uuid_kill,
    "uuid_send_dtmf": ApiMixin._api_uuid_send_dtmf,
    "uuid_getvar": ApiMixin._api_uuid_getvar,
    "uuid_setvar": ApiMixin._api_uuid_setvar,
    "uuid_setvar_multi": ApiMixin._api_uuid_setvar_multi,
    "uuid_break": ApiMixin._api_uuid_break,
    "uuid_dump": ApiMixin._api_uuid_dump,
    "hupall": ApiMixin._api_hupall,
    "sched_api": ApiMixin._api_sched_api,
    "sched_del": ApiMixin._api_sched_del,
    "sofia_contact": ApiMixin._api_sofia_contact,
    "show": ApiMixin._api_show,
    "originate": OriginateMixin._api_originate,
    "conference": ConferenceMixin._api_conference,
    # What scripts/freeswitch.sh check asks (sim/ops_api.py).
    "module_exists": ops_api.api_module_exists,
    "global_getvar": ops_api.api_global_getvar,
    "xml_locate": ops_api.api_xml_locate,
    "user_exists": ops_api.api_user_exists,
}
