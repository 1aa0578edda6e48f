"""Pure builders for every ESL command the gateway sends (bytes ready for the socket).

No I/O. Every value is checked: CR or LF inside a value would end the command early and
let the rest be read as another ESL command, so they raise :class:`ValueError`.

Dial-string escaping (``{var=value,...}`` in ``originate``) follows how FreeSWITCH 1.10
reads an ``originate`` argument, in three passes, each one a ``switch_separate_string``
that honours single quotes and backslash escapes and then strips them:

1. the whole argument is split at spaces (so ``'&socket(h:p async full)'`` must be
   quoted, docs/freeswitch.rst, fact 6);
2. the ``{...}`` block is split at commas (``\\,`` keeps a comma in a value; the
   ``^^<c>`` prefix that switches the separator is not needed then);
3. each ``name=value`` is split at the first ``=``.

:func:`escape_var_value` escapes a value once per pass (inside out), so what the channel
gets is exactly the value given. Braces cannot be escaped at all (FreeSWITCH finds the
closing ``}`` by counting), so only balanced braces are accepted; ``${`` is refused so a
caller-supplied value is never expanded as a variable or API call.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "CONNECT",
    "EXIT",
    "MYEVENTS",
    "api",
    "auth",
    "bgapi",
    "channel_vars",
    "escape_var_value",
    "event_plain",
    "linger",
    "loopback_endpoint",
    "myevents",
    "originate_arg",
    "park_app",
    "pstn_endpoint",
    "sendevent",
    "sendmsg_execute",
    "sendmsg_hangup",
    "sendmsg_unicast",
    "setvar_multi_arg",
    "socket_app",
    "user_endpoint",
    "uuid_kill",
    "uuid_send_dtmf",
]

CONNECT = b"connect\n\n"
MYEVENTS = b"myevents\n\n"
EXIT = b"exit\n\n"

_FORBIDDEN = re.compile(r"[\r\n\x00]")
_UUID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
_EVENT_RE = re.compile(r"^[A-Za-z0-9_:.\-]{1,128}$")
_APP_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_CAUSE_RE = re.compile(r"^(?:[A-Z][A-Z0-9_]{0,63}|[0-9]{1,3})$")
_VAR_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_NUMBER_RE = re.compile(r"^[A-Za-z0-9*#+_.\-]{1,64}$")
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")
_IP_RE = re.compile(r"^[0-9A-Fa-f:.]{2,45}$")
_DTMF_RE = re.compile(r"^[0-9A-Da-d*#wW]{1,64}$")
_GATEWAY_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _clean(value: str, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if _FORBIDDEN.search(value):
        raise ValueError(f"{what} contains CR, LF or NUL (ESL command injection)")
    return value


def _match(pattern: re.Pattern[str], value: str, what: str) -> str:
    _clean(value, what)
    if not pattern.match(value):
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def _port(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"invalid {what}: {value!r}")
    return value


def _frame(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n\n").encode("utf-8")


# ----------------------------------------------------------------- socket-level commands


def auth(password: str) -> bytes:
    """``auth <password>``. The caller must never log the result."""
    _clean(password, "ESL password")
    if not password or " " in password:
        raise ValueError("ESL password must be non-empty and contain no space")
    return _frame(f"auth {password}")


def api(command: str, *args: str) -> bytes:
    """``api <command> [args...]`` (blocking on the switch, answered by api/response)."""
    _match(re.compile(r"^[A-Za-z0-9_]{1,64}$"), command, "api command")
    parts = [command, *(_clean(a, "api argument") for a in args)]
    return _frame("api " + " ".join(p for p in parts if p))


def bgapi(command: str, *args: str, job_uuid: str | None = None) -> bytes:
    """``bgapi ...``; with ``job_uuid`` the BACKGROUND_JOB carries that Job-UUID, so the
    caller knows it before the reply arrives."""
    body = api(command, *args)[4:-2].decode("utf-8")
    lines = [f"bgapi {body}"]
    if job_uuid is not None:
        lines.append(f"Job-UUID: {_match(_UUID_RE, job_uuid, 'Job-UUID')}")
    return _frame(*lines)


def event_plain(names: Iterable[str]) -> bytes:
    """``event plain A B C``: a narrow subscription (only the events the gateway uses)."""
    checked = [_match(_EVENT_RE, n, "event name") for n in names]
    if not checked:
        raise ValueError("event_plain needs at least one event name")
    return _frame("event plain " + " ".join(checked))


def myevents(uuid: str | None = None) -> bytes:
    if uuid is None:
        return MYEVENTS
    return _frame(f"myevents {_match(_UUID_RE, uuid, 'uuid')}")


def linger(seconds: int | None = None) -> bytes:
    """``linger`` (until ``exit``, as recorded) or ``linger <seconds>``."""
    if seconds is None:
        return b"linger\n\n"
    if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds <= 0:
        raise ValueError(f"invalid linger time: {seconds!r}")
    return _frame(f"linger {seconds}")


_HEADER_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
# What FreeSWITCH reads back as it was sent: it URL-decodes every header value of a
# sendevent (docs/freeswitch.rst), so "%" must travel as "%25"; CR/LF/NUL and non-ASCII are
# encoded too (one line per header). The rest is left readable.
_SENDEVENT_SAFE = " !#$&'()*+,/:;<=>?@[]^_`{|}~-."


def sendevent(event_name: str, headers: Sequence[tuple[str, str]]) -> bytes:
    """``sendevent <EVENT>`` with one ``Name: value`` line per header, values URL-encoded
    (FreeSWITCH decodes them, so the event carries exactly the given text); no body.
    ``Content-Length`` is refused as a header name: it would announce a body."""
    _match(_EVENT_RE, event_name, "event name")
    lines = [f"sendevent {event_name}"]
    for name, value in headers:
        _match(_HEADER_NAME_RE, name, "event header name")
        if name.lower() == "content-length":
            raise ValueError("sendevent: a Content-Length header would announce a body")
        if not isinstance(value, str):
            raise TypeError(f"event header {name} must be str, not {type(value).__name__}")
        lines.append(f"{name}: {urllib.parse.quote(value, safe=_SENDEVENT_SAFE)}")
    return _frame(*lines)


# ------------------------------------------------------------------------------ sendmsg


def _sendmsg_head(uuid: str | None) -> str:
    return "sendmsg" if uuid is None else f"sendmsg {_match(_UUID_RE, uuid, 'uuid')}"


def sendmsg_execute(
    app: str,
    arg: str | None = None,
    *,
    uuid: str | None = None,
    event_lock: bool = False,
    event_uuid: str | None = None,
    loops: int | None = None,
) -> bytes:
    """``sendmsg [uuid]`` / ``call-command: execute``.

    ``event_uuid`` becomes the ``Application-UUID`` of the CHANNEL_EXECUTE[_COMPLETE]
    events, so the caller can wait for its own completion. ``event_lock`` makes the
    switch run queued messages one after the other.
    """
    lines = [
        _sendmsg_head(uuid),
        "call-command: execute",
        f"execute-app-name: {_match(_APP_RE, app, 'application name')}",
    ]
    if arg is not None and arg != "":
        lines.append(f"execute-app-arg: {_clean(arg, 'application argument')}")
    if loops is not None:
        if isinstance(loops, bool) or not isinstance(loops, int) or loops < 1:
            raise ValueError(f"invalid loops: {loops!r}")
        lines.append(f"loops: {loops}")
    if event_lock:
        lines.append("event-lock: true")
    if event_uuid is not None:
        lines.append(f"Event-UUID: {_match(_UUID_RE, event_uuid, 'event uuid')}")
    return _frame(*lines)


def sendmsg_hangup(cause: str = "NORMAL_CLEARING", *, uuid: str | None = None) -> bytes:
    """``call-command: hangup`` with ``hangup-cause``."""
    return _frame(
        _sendmsg_head(uuid),
        "call-command: hangup",
        f"hangup-cause: {_match(_CAUSE_RE, cause, 'hangup cause')}",
    )


def sendmsg_unicast(
    local_ip: str,
    local_port: int,
    remote_ip: str,
    remote_port: int,
    *,
    uuid: str | None = None,
    transport: str = "udp",
    flags: str | None = None,
) -> bytes:
    """``call-command: unicast``. ``local-*`` is FreeSWITCH's side (it binds there),
    ``remote-*`` the gateway's UDP endpoint. Only after the channel has a read codec
    (docs/freeswitch.rst, fact 1): the builder cannot know, the control layer checks."""
    if transport not in ("udp", "tcp"):
        raise ValueError(f"invalid unicast transport: {transport!r}")
    lines = [
        _sendmsg_head(uuid),
        "call-command: unicast",
        f"local-ip: {_match(_IP_RE, local_ip, 'local ip')}",
        f"local-port: {_port(local_port, 'local port')}",
        f"remote-ip: {_match(_IP_RE, remote_ip, 'remote ip')}",
        f"remote-port: {_port(remote_port, 'remote port')}",
        f"transport: {transport}",
    ]
    if flags is not None:
        for flag in flags.split("|"):
            if flag not in ("native", "native_write", "native_read"):
                raise ValueError(f"invalid unicast flag: {flag!r}")
        lines.append(f"flags: {flags}")
    return _frame(*lines)


# ----------------------------------------------------------------------- api shortcuts


def uuid_kill(uuid: str, cause: str | None = None) -> bytes:
    """``api uuid_kill <uuid> [cause]``."""
    args = [_match(_UUID_RE, uuid, "uuid")]
    if cause is not None:
        args.append(_match(_CAUSE_RE, cause, "hangup cause"))
    return api("uuid_kill", *args)


def uuid_send_dtmf(uuid: str, digits: str, duration_ms: int | None = None) -> bytes:
    """``api uuid_send_dtmf <uuid> <digits>[@<ms>]``."""
    data = _match(_DTMF_RE, digits, "DTMF digits")
    if duration_ms is not None:
        if isinstance(duration_ms, bool) or not 10 <= duration_ms <= 10000:
            raise ValueError(f"invalid DTMF duration: {duration_ms!r}")
        data = f"{data}@{duration_ms}"
    return api("uuid_send_dtmf", _match(_UUID_RE, uuid, "uuid"), data)


# ------------------------------------------------------------------------ dial strings


def _escape_pass(text: str, specials: str, space: bool) -> str:
    out: list[str] = []
    for ch in text:
        if ch == "\\" or ch == "'" or ch in specials:
            out.append("\\" + ch)
        elif space and ch == " ":
            out.append("\\s")
        else:
            out.append(ch)
    return "".join(out)


def _braces_balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def escape_var_value(value: str) -> str:
    """Escape one channel-variable value for ``{name=value}`` in an originate argument."""
    _clean(value, "channel variable value")
    if "${" in value:
        raise ValueError("channel variable value must not contain '${' (variable expansion)")
    if not _braces_balanced(value):
        raise ValueError(
            "channel variable value has unbalanced braces (FreeSWITCH cannot escape them)"
        )
    if "\t" in value:
        raise ValueError("channel variable value must not contain a TAB")
    # Pass 3 (name=value): keep quotes/backslashes; edge spaces would be trimmed.
    inner = _escape_pass(value, "", space=False)
    if inner.startswith(" "):
        inner = "\\s" + inner[1:]
    if inner.endswith(" "):
        inner = inner[:-1] + "\\s"
    # Pass 2 (comma list), then pass 1 (space-separated argument).
    return _escape_pass(_escape_pass(inner, ",", space=False), "", space=True)


def channel_vars(variables: Mapping[str, str | int | bool]) -> str:
    """``{a=1,b=x\\\\,y}``: the leading variable block of a dial string ('' if empty).

    Empty values are left out: FreeSWITCH cannot set a variable to "" from ``{}``.
    """
    parts: list[str] = []
    for name, raw in variables.items():
        _match(_VAR_NAME_RE, name, "channel variable name")
        if isinstance(raw, bool):
            value = "true" if raw else "false"
        elif isinstance(raw, int):
            value = str(raw)
        else:
            value = raw
        escaped = escape_var_value(value)
        if escaped:  # "name=" sets nothing in FreeSWITCH; unset reads as empty anyway
            parts.append(f"{name}={escaped}")
    return "{" + ",".join(parts) + "}" if parts else ""


_SETVAR_VALUE_RE = re.compile(r"^[^;=\s\\'\"{}$]{1,1024}$")


def setvar_multi_arg(variables: Mapping[str, str]) -> str:
    """``a=1;b=2``: the argument of ``api uuid_setvar_multi <uuid> <arg>``.

    FreeSWITCH splits it at ``;`` and each item at its first ``=``, with no escaping, so a
    value may hold none of ``; = \\ ' " { } $`` nor white space (it raises ValueError).
    """
    if not variables:
        raise ValueError("uuid_setvar_multi needs at least one variable")
    items = []
    for name, value in variables.items():
        _match(_VAR_NAME_RE, name, "channel variable name")
        _match(_SETVAR_VALUE_RE, value, "uuid_setvar_multi value")
        items.append(f"{name}={value}")
    return ";".join(items)


def user_endpoint(number: str, domain: str | None = None) -> str:
    """``user/1001@domain`` (a directory user; ``@domain`` optional)."""
    user = _match(_NUMBER_RE, number, "number")
    if domain is None:
        return f"user/{user}"
    return f"user/{user}@{_match(_HOST_RE, domain, 'SIP domain')}"


def pstn_endpoint(
    number: str,
    *,
    ip: str | None = None,
    prefix: str = "",
    gateway: str | None = None,
    profile: str = "external",
) -> str:
    """A PSTN leg: ``sofia/gateway/<gw>/<prefix><number>`` when a gateway is configured,
    else ``sofia/<profile>/<prefix><number>@<ip>`` (SRProxy's ``[pstn] ip``/``prefix``)."""
    dialled = _match(_NUMBER_RE, f"{prefix}{number}", "PSTN number")
    if gateway is not None:
        return f"sofia/gateway/{_match(_GATEWAY_RE, gateway, 'gateway')}/{dialled}"
    if ip is None:
        raise ValueError("pstn_endpoint needs ip or gateway")
    host = _match(_HOST_RE, ip, "PSTN ip")
    return f"sofia/{_match(_GATEWAY_RE, profile, 'profile')}/{dialled}@{host}"


def loopback_endpoint(number: str, context: str = "default") -> str:
    """``loopback/<number>/<context>``: run a leg through the dialplan (tests, routes)."""
    return (
        f"loopback/{_match(_NUMBER_RE, number, 'number')}/{_match(_GATEWAY_RE, context, 'context')}"
    )


def park_app() -> str:
    return "&park()"


def socket_app(host: str, port: int, mode: str = "async full") -> str:
    """``'&socket(host:port async full)'`` QUOTED: unquoted, originate splits it at the
    spaces and the socket runs static single-channel with no media (docs/freeswitch.rst, fact 6)."""
    if mode not in ("async full", "async", "full", ""):
        raise ValueError(f"invalid socket mode: {mode!r}")
    target = f"{_match(_HOST_RE, host, 'socket host')}:{_port(port, 'socket port')}"
    inner = f"{target} {mode}".strip()
    return f"'&socket({inner})'"


def originate_arg(
    endpoint: str,
    application: str,
    variables: Mapping[str, str | int | bool] | None = None,
) -> str:
    """``{vars}endpoint application``: the argument of ``api``/``bgapi originate``.

    ``endpoint`` comes from the ``*_endpoint`` helpers and ``application`` from
    :func:`park_app` / :func:`socket_app` (or an extension number).
    """
    _clean(endpoint, "endpoint")
    _clean(application, "originate application")
    if not endpoint or " " in endpoint or endpoint.startswith("{"):
        raise ValueError(f"invalid endpoint: {endpoint!r}")
    if " " in application and not (application.startswith("'") and application.endswith("'")):
        raise ValueError("an originate application with spaces must be single-quoted")
    return f"{channel_vars(variables or {})}{endpoint} {application}"
