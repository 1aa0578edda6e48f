"""``esl-bridge check-switch`` (``scripts/freeswitch.sh check``): is FreeSWITCH set up the way
the gateway needs it?

One ``Check`` per line, OK or FAIL, with the fix for a FAIL. Everything is asked over the
event socket with the project's ESL client (api commands only; nothing is changed on the
switch). The answers' formats are FreeSWITCH 1.10.12's, recorded in
tests/fixtures/freeswitch/ops/esl_inbound_check_api_replies.txt:

* ``module_exists <mod>``: ``true`` / ``false``;
* ``global_getvar esl_bridge_socket``: the bare value, ``-ERR no reply`` when unset;
* ``xml_locate dialplan context name <ctx>``: the context's XML as loaded (``$${...}``
  expanded), ``can't find anything`` for no such context;
* ``show codec``: ``type,name,ikey`` lines (names like ``G.711 ulaw``, ``OPUS (STANDARD)``);
* ``user_exists id <user> <domain>``: ``true`` / ``false``;
* ``show registrations as json``: ``{"row_count": 0}`` or rows with ``reg_user``.

How the 0 route is judged (``route_for``): the default context's extensions are read in
order; an extension "takes" a number when it has a ``destination_number`` condition and all
its ``destination_number`` conditions match (Python regular expressions; conditions on other
fields are assumed to match, since the check cannot know a call's variables) and it is not
``continue="true"``. The first one that takes ``0<uid>`` must be the gateway's (its ``socket``
action connects to ``esl_bridge_socket``), and it must set ``rtp_autoflush=true`` before the
socket and run the socket ``async full``.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from esl_bridge.config import Settings

REQUIRED_MODULES = (
    "mod_event_socket",
    "mod_sofia",
    "mod_commands",
    "mod_dptools",
    "mod_loopback",
    "mod_conference",
)
# [media] codecs entry -> (the name `show codec` gives, the module that provides it).
CODEC_NAMES = {
    "opus": ("OPUS (STANDARD)", "mod_opus"),
    "PCMU": ("G.711 ulaw", "CORE_PCM_MODULE (built in)"),
    "PCMA": ("G.711 alaw", "CORE_PCM_MODULE (built in)"),
}
PROBE_UIDS = ("1000", "alice")  # the route is checked for 01000 and 0alice
DESTINATION_FIELDS = ("destination_number", "${destination_number}")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        status = "OK  " if self.ok else "FAIL"
        text = f"{status} {self.name}: {self.detail}"
        return text if self.ok or not self.fix else f"{text} -- fix: {self.fix}"


Api = Callable[[str], str]  # "module_exists mod_sofia" -> the reply body


# ---------------------------------------------------------------------------------------
# Reading the answers (pure).


def getvar_value(body: str) -> str | None:
    text = body.strip()
    return None if not text or text.startswith("-ERR") else text


def codec_names(show_codec: str) -> set[str]:
    names = set()
    for line in show_codec.splitlines():
        parts = line.split(",")
        if len(parts) >= 3 and parts[0] == "codec":
            names.add(",".join(parts[1:-1]))
    return names


def registered_users(show_registrations_json: str) -> set[str]:
    try:
        body = json.loads(show_registrations_json)
    except ValueError:
        return set()
    rows = body.get("rows") or [] if isinstance(body, dict) else []
    return {str(r.get("reg_user")) for r in rows if isinstance(r, dict) and r.get("reg_user")}


@dataclass(frozen=True)
class Route:
    """The extension that takes a number, and what the check needs to know of it."""

    name: str
    position: int  # 1-based, among the context's extensions
    socket: str | None  # data of its first socket action
    autoflush_before_socket: bool


def route_for(context_xml: str, number: str) -> Route | None:
    """The first extension that takes ``number`` (the module docstring's rule), or None."""
    root = ET.fromstring(context_xml)
    for position, ext in enumerate(root.iter("extension"), start=1):
        if ext.get("continue", "").lower() == "true":
            continue
        conditions = ext.findall("condition")
        on_number = [c for c in conditions if c.get("field") in DESTINATION_FIELDS]
        if not on_number:
            continue
        try:
            if not all(re.search(c.get("expression") or "", number) for c in on_number):
                continue
        except re.error:
            continue  # a PCRE-only expression: cannot judge it here
        socket = None
        autoflush = False
        for action in ext.iter("action"):
            app, data = action.get("application"), action.get("data") or ""
            if app == "set" and data.replace(" ", "") == "rtp_autoflush=true" and socket is None:
                autoflush = True
            if app == "socket" and socket is None:
                socket = data
        return Route(ext.get("name") or "?", position, socket, autoflush)
    return None


# ---------------------------------------------------------------------------------------
# The checks.


def run_checks(api: Api, settings: Settings, context: str = "default") -> list[Check]:
    """Every check after the ESL one (``api`` runs one api command on a connection)."""
    checks: list[Check] = []
    for module in REQUIRED_MODULES:
        loaded = api(f"module_exists {module}").strip() == "true"
        checks.append(
            Check(
                f"module {module}",
                loaded,
                "loaded" if loaded else "not loaded",
                f"fs_cli -x 'load {module}', and add it to autoload_configs/modules.conf.xml",
            )
        )
    want = f"{settings.socket.host}:{settings.socket.port}"
    have = getvar_value(api("global_getvar esl_bridge_socket"))
    checks.append(
        Check(
            "esl_bridge_socket",
            have == want,
            f"{have} (= [socket] of rtx.conf)"
            if have == want
            else f"{'not set' if have is None else have}, [socket] of rtx.conf is {want}",
            f'put <X-PRE-PROCESS cmd="set" data="esl_bridge_socket={want}"/> in conf/vars.xml '
            "(dialplan/esl_bridge_vars.xml), then fs_cli -x reloadxml",
        )
    )
    # The route is judged against what the switch uses; a socket unlike rtx.conf's is the
    # line above.
    context_xml = api(f"xml_locate dialplan context name {context}")
    checks.extend(_route_checks(context_xml, have or want, context))
    names = codec_names(api("show codec"))
    for entry in settings.media.codecs:
        if entry not in CODEC_NAMES:
            continue  # "sip": whatever the phone speaks
        name, module = CODEC_NAMES[entry]
        checks.append(
            Check(
                f"codec {entry}",
                name in names,
                f"{name} available" if name in names else f"{name} not in show codec",
                f"load {module} (fs_cli -x 'load {module}', and modules.conf.xml)",
            )
        )
    checks.append(_directory_check(api, settings))
    return checks


def _route_checks(context_xml: str, socket: str, context: str) -> list[Check]:
    fix = (
        "copy dialplan/default/00_esl_bridge.xml to conf/dialplan/default/ (no extension "
        "before it may match 0<uid>), then fs_cli -x reloadxml"
    )
    name = "0 route"
    if not context_xml.lstrip().startswith("<context"):
        detail = f"no dialplan context {context!r}"
        return [Check(name, False, detail, fix)]
    try:
        routes = {uid: route_for(context_xml, "0" + uid) for uid in PROBE_UIDS}
    except ET.ParseError as exc:
        return [Check(name, False, f"cannot read the {context} context's XML: {exc}", fix)]
    checks: list[Check] = []
    wrong = {uid: r for uid, r in routes.items() if r is None or not _is_gateway_socket(r, socket)}
    if wrong:
        uid, route = next(iter(wrong.items()))
        if route is None:
            detail = f"nothing in context {context} takes 0{uid}"
        else:
            detail = (
                f"0{uid} goes to extension {route.name!r} (number {route.position} of "
                f"context {context}), not to the gateway's socket {socket}"
            )
        return [Check(name, False, detail, fix)]
    first = next(iter(routes.values()))
    assert first is not None
    checks.append(
        Check(
            name,
            True,
            f"0<uid> goes first to extension {first.name!r} (number {first.position} of "
            f"context {context}): socket {first.socket}",
        )
    )
    mode_ok = (first.socket or "").split()[1:] == ["async", "full"]
    checks.append(
        Check(
            "socket mode",
            mode_ok,
            "async full" if mode_ok else f"socket {first.socket!r} is not 'async full'",
            "the socket action's data must be '$${esl_bridge_socket} async full' "
            "(dialplan/default/00_esl_bridge.xml)",
        )
    )
    checks.append(
        Check(
            "rtp_autoflush",
            first.autoflush_before_socket,
            "set to true before the socket"
            if first.autoflush_before_socket
            else "not set before the socket",
            'add <action application="set" data="rtp_autoflush=true"/> before the socket '
            "action (dialplan/default/00_esl_bridge.xml)",
        )
    )
    return checks


def _is_gateway_socket(route: Route, socket: str) -> bool:
    return route.socket is not None and route.socket.split()[:1] == [socket]


def _directory_check(api: Api, settings: Settings) -> Check:
    numbers: Sequence[str] = settings.rtm2sip.numbers
    domain = settings.global_.sip_domain
    name = "acc_rule users"
    if not numbers:
        return Check(name, True, "[rtm2sip] acc_rule names no number")
    missing = [n for n in numbers if api(f"user_exists id {n} {domain}").strip() != "true"]
    registered = registered_users(api("show registrations as json")) & set(numbers)
    if missing:
        shown = ", ".join(missing[:10]) + (", ..." if len(missing) > 10 else "")
        return Check(
            name,
            False,
            f"{len(missing)} of {len(numbers)} not in the directory of {domain}: {shown}",
            "create them: scripts/freeswitch.sh --ext N,... or --range FROM-TO",
        )
    listed = ", ".join(sorted(registered)[:10]) + (", ..." if len(registered) > 10 else "")
    return Check(
        name,
        True,
        f"all {len(numbers)} in the directory of {domain}; {len(registered)} registered now"
        + (f" ({listed})" if registered else ""),
    )


def report(checks: Sequence[Check], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}, indent=2
        )
    return "\n".join(c.line() for c in checks)


def check_switch(settings: Settings, context: str = "default", timeout: float = 5.0) -> list[Check]:
    """Connect with [esl] of ``settings`` and run every check (gevent, main thread)."""
    from esl_bridge.esl.control import EslAuthError, EslError, InboundClient

    esl = settings.esl
    where = f"{esl.host}:{esl.port}"
    client = InboundClient(
        esl.host,
        esl.port,
        esl.password,
        events=["BACKGROUND_JOB"],
        command_timeout=timeout,
        connect_timeout=timeout,
        backoff_max=0.5,
    )
    try:
        client.connect(timeout=timeout)
    except EslAuthError:
        client.stop()
        return [
            Check(
                "event socket",
                False,
                f"{where} refused the [esl] password (or its ACL refused this host)",
                "make [esl] password equal to the password of "
                "autoload_configs/event_socket.conf.xml (and apply-inbound-acl)",
            )
        ]
    except EslError as exc:
        client.stop()
        return [
            Check(
                "event socket",
                False,
                f"cannot connect to {where}: {exc}",
                "start FreeSWITCH with mod_event_socket, and make [esl] host/port of rtx.conf "
                "its listen-ip/listen-port (autoload_configs/event_socket.conf.xml)",
            )
        ]
    try:

        def api(line: str) -> str:
            command, _, arg = line.partition(" ")
            return client.api(command, *([arg] if arg else [])).body

        checks = [Check("event socket", True, f"{where} reachable, password accepted")]
        try:
            checks.extend(run_checks(api, settings, context))
        except EslError as exc:
            checks.append(Check("api", False, f"the switch stopped answering: {exc}", ""))
        return checks
    finally:
        client.stop()
