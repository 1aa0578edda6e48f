"""rtx.conf: SRProxy's configuration file, read with configobj and checked by a configspec.

An unchanged SRProxy rtx.conf loads (``## comment`` tails, ``#[rtc]`` commented sections,
``on=1`` flags, empty ``ip=`` / ``port=``). The sections this gateway adds have safe
defaults: everything bound to 127.0.0.1 and no STUN/TURN server at all.
Every defect is reported at once, each naming file, section, key, value and reason.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from configobj import ConfigObj, ConfigObjError, flatten_errors, get_extra_values
from configobj.validate import (
    ValidateError,
    Validator,
    VdtTypeError,
    VdtValueError,
    VdtValueTooBigError,
    VdtValueTooLongError,
    VdtValueTooShortError,
    VdtValueTooSmallError,
    is_float,
)

from esl_bridge.core.conference import ConferenceSettings
from esl_bridge.esl.orphans import default_node_id, valid_node_id
from esl_bridge.numbers import AccRuleError, parse_acc_rule
from esl_bridge.signaling.origins import parse_allowed_origins
from esl_bridge.signaling.protocol import valid_appid, valid_uid

# The configspec is the single place where keys, types, ranges and defaults live;
# README.rst's configuration reference documents the same table.
CONFIGSPEC = """
[global]
appid = string(min=1, max=64, default='esl-bridge')
sip_svr = hostport(default='127.0.0.1:5060')

[rtc]
ip = string(default='')
port = port_or_empty(default='')

[rtm]
ip = string(default='')
port = port_or_empty(default='')

[rtm2sip]
on = boolean(default=False)
acc_rule = acc_rule(default='')

[proxy]
on = boolean(default=False)
sip_account = string(default='')
sip_pwd = string(default='')
rtm_account = uid(default='gateway')

[pstn]
ip = string(default='')
prefix = dial_prefix(default='')
gateway = string(default='')

[log]
level = integer(min=0, max=5, default=2)
file = string(default='')
max_file_size = integer(min=1, max=10240, default=100)
backup_count = integer(min=1, max=100, default=5)
json = boolean(default=False)
console = option('auto', 'on', 'off', default='auto')

[esl]
host = string(min=1, default='127.0.0.1')
port = integer(min=1, max=65535, default=8021)
switches = switch_list(default=list())
password = string(min=1, default='ClueCon')
command_timeout = float(min=0.1, max=120, default=5.0)
connect_timeout = float(min=0.1, max=60, default=5.0)
reconnect_max_delay = float(min=0.5, max=300, default=30.0)
reconnect_probe_interval = float(min=0.1, max=10, default=0.5)
orphan_timeout = float(min=3, max=3600, default=30.0)

[cluster]
node_id = string(max=64, default='')
redis_url = string(default='')
heartbeat_interval = float(min=0.1, max=60, default=1.0)
claim_ttl = float(min=0.5, max=600, default=5.0)
redis_timeout = float(min=0.1, max=60, default=2.0)

[socket]
host = string(min=1, default='127.0.0.1')
port = integer(min=1, max=65535, default=8084)

[web]
host = string(min=1, default='127.0.0.1')
port = integer(min=1, max=65535, default=8080)
tls_cert = string(default='')
tls_key = string(default='')
header_timeout = float(min=0.1, max=600, default=10.0)
max_connections = integer(min=1, max=1000000, default=512)
max_connections_per_ip = integer(min=1, max=1000000, default=100)
admin_socket = string(default='')
allowed_origins = force_list(default=list())

[media]
ice_servers = string_list(default=list())
turn_username = string(default='')
turn_password = string(default='')
host_addresses = string_list(default=list('127.0.0.1'))
codecs = string_list(min=1, default=list('sip', 'opus', 'PCMU', 'PCMA'))
unicast_host = string(min=1, default='127.0.0.1')
unicast_port_min = integer(min=1024, max=65535, default=30000)
unicast_port_max = integer(min=1024, max=65535, default=30999)
media_timeout = float(min=1, max=3600, default=30.0)
unicast_start_timeout = float(min=0.5, max=120, default=5.0)
unicast_port_quarantine = float(min=0, max=3600, default=60.0)
media_problem_after = float(min=1, max=600, default=5.0)
silence_floor_dbov = float(min=-120, max=-20, default=-70.0)
browser_hold = float(min=0.1, max=3600, default=30.0)
browser_hold_tone = float(min=0, max=3400, default=0.0)
event_loop = option('uvloop', 'asyncio', default='uvloop')

[limits]
max_calls = integer(min=1, max=100000, default=200)
max_call_rate = float(min=0.1, max=10000, default=20.0)
call_burst = integer(min=1, max=10000, default=10)
originate_timeout = integer(min=5, max=600, default=60)
invite_offline_timeout = float(min=0.1, max=3600, default=30.0)
invite_no_response_timeout = float(min=0.1, max=3600, default=30.0)
invite_expire_timeout = float(min=0.1, max=3600, default=60.0)
presence_grace = float(min=0.1, max=3600, default=15.0)
max_message_bytes = integer(min=65536, max=4194304, default=131072)
messages_per_second = float(min=0.1, max=10000, default=20.0)
max_pending_invitations = integer(min=1, max=1000, default=16)
login_timeout = float(min=0.1, max=3600, default=30.0)
send_queue_bytes = integer(min=65536, max=1073741824, default=1048576)

[auth]
app_certificate = string(default='')
open_mode = boolean(default=False)
token_ttl = integer(min=60, max=31536000, default=86400)

[webhooks]
url = url_list(default=list())
secret = string(default='')
timeout = float(min=0.1, max=60, default=5.0)
retries = integer(min=0, max=20, default=5)
backoff = float(min=0.001, max=60, default=1.0)
max_backoff = float(min=0.001, max=3600, default=60.0)
queue_max = integer(min=1, max=1000000, default=1000)

[conference]
on = boolean(default=True)
profile = conference_profile(default='wideband')
max_members = integer(min=2, max=1000, default=50)
max_rooms_per_appid = integer(min=1, max=100000, default=20)
dialin_prefix = dialin_prefix(default='9')

[api]
on = boolean(default=False)
token = string(default='')
allow_remote = boolean(default=False)
requests_per_second = float(min=0.001, max=10000, default=5.0)
burst = integer(min=1, max=10000, default=20)
"""

# Keys whose values are secrets: masked in check-config output and in every log line.
SECRET_KEYS: frozenset[tuple[str, str]] = frozenset(
    {
        ("esl", "password"),
        ("proxy", "sip_pwd"),
        ("proxy", "pwd"),
        ("sip", "acc_pwd"),
        ("auth", "app_certificate"),
        ("media", "turn_password"),
        ("webhooks", "secret"),
        ("api", "token"),
    }
)

# Keys that older SRProxy releases read and this gateway does not need. A file that has
# them still loads, with a warning that says why each is ignored.
LEGACY_KEYS: Mapping[tuple[str, str], str] = {
    ("global", "sip_local_port"): "ignored: FreeSWITCH does the SIP side here",
    ("proxy", "account"): "old name of sip_account, read as it when sip_account is unset",
    ("proxy", "pwd"): "old name of sip_pwd, read as it when sip_pwd is unset",
    ("ivr", "on"): "ignored: SRProxy's IVR mode does not exist here",
    ("ivr", "rtm_account"): "ignored: SRProxy's IVR mode does not exist here",
    ("ivr", "sip_account"): "ignored: SRProxy's IVR mode does not exist here",
    ("sip", "acc_prefix"): "ignored: old SRProxy number rule, use [rtm2sip] acc_rule",
    ("sip", "acc_pwd"): "ignored: FreeSWITCH's directory holds the passwords",
    ("sip", "acc_rule"): "ignored: old SRProxy number rule, use [rtm2sip] acc_rule",
}

CODECS = ("opus", "PCMU", "PCMA")
# ``sip`` in [media] codecs: the SIP side's codec when the browser can use it
# (media/codec_choice.py), so a G.711 phone meets a G.711 browser on the fast path.
CODEC_ENTRIES = ("sip", *CODECS)
# A host name is letters, digits, _ . - (it ends up in FreeSWITCH dial strings, where
# braces, commas, quotes or @ would change their meaning).
_HOSTNAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})"
_HOSTPORT = re.compile(rf"^(?P<host>\[[0-9A-Fa-f:.]+\]|{_HOSTNAME})(?::(?P<port>[0-9]{{1,5}}))?$")
_HOST = re.compile(rf"^{_HOSTNAME}$")
_GATEWAY_NAME = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_INTERPOLATION = re.compile(r"%\(|\$\{")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*:)[^@/\s]*@")
_UID = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_DIAL_PREFIX = re.compile(r"^[0-9*#+]{0,16}$")
# As aiortc parses them (no IPv6 literal), with a host that is a name or IPv4 address.
_ICE_URL = re.compile(
    rf"^(?P<scheme>stun|turn|turns):{_HOSTNAME}(?::(?P<port>[0-9]{{1,5}}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


class ConfigProblem:
    """One defect of a config file, naming where it is and why it is wrong."""

    def __init__(self, file: str, section: str | None, key: str | None, value: object, reason: str):
        self.file = file
        self.section = section
        self.key = key
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        where = self.file
        if self.section is not None:
            where += f": [{self.section}]"
            if self.key is not None:
                shown = "***" if (self.section, self.key) in SECRET_KEYS else self.value
                if (self.section, self.key) == ("webhooks", "url"):
                    shown = _URL_PASSWORD.sub(r"\1***@", str(shown))
                where += f" {self.key} = {shown!r}"
        return f"{where}: {self.reason}"


class ConfigError(Exception):
    """The file cannot be used. ``problems`` lists every defect found."""

    def __init__(self, problems: list[ConfigProblem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _check_port_or_empty(value: Any) -> int | None:
    if isinstance(value, list):
        raise VdtTypeError(value)
    text = str(value).strip()
    if text == "":
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise VdtValueError(value)
    return int(text)


class VdtNotFinite(ValidateError):
    """A float key given nan or inf: no timer or rate can use it."""

    def __init__(self, value: object):
        super().__init__("is not a finite number (nan and inf are not allowed)")
        self.value = value


def _check_finite_float(value: Any, min: Any = None, max: Any = None) -> float:
    # Replaces validate's own "float" check, which lets nan through every min/max.
    number = is_float(value, min, max)
    if not math.isfinite(number):
        raise VdtNotFinite(value)
    return number


def _interpolation_reason(value: str) -> str | None:
    if _INTERPOLATION.search(value):
        return "interpolation (%(name)s, ${name}) is not supported: write the value itself"
    return None


def _check_hostport(value: Any) -> str:
    if isinstance(value, str) and _interpolation_reason(value):
        raise ValidateError(_interpolation_reason(value))
    if not isinstance(value, str) or not _HOSTPORT.match(value.strip()):
        raise ValidateError(f"expected host or host:port, got {value!r}")
    port = _HOSTPORT.match(value.strip())["port"]  # type: ignore[index]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValidateError(f"port {port} is out of range 1-65535")
    return value.strip()


def _check_url_list(value: Any) -> list[str]:
    # One URL needs no trailing comma ("url = https://app.example/hook" is one receiver).
    items = value if isinstance(value, list) else str(value).split(",")
    urls = [str(item).strip() for item in items if str(item).strip()]
    for url in urls:
        problem = webhook_url_problem(url)
        if problem:
            raise ValidateError(f"{problem}: {masked_redis_url(url)!r}")
    return urls


def _check_switch_list(value: Any) -> list[str]:
    # One item needs no trailing comma here ("switches = fs1:8021" is one switch).
    items = value if isinstance(value, list) else str(value).split(",")
    switches = [str(item).strip() for item in items if str(item).strip()]
    for item in switches:
        if _interpolation_reason(item):
            raise ValidateError(_interpolation_reason(item))
        match = _HOSTPORT.match(item)
        if match is None or match["port"] is None:
            raise ValidateError(f"expected host:port items separated by commas, got {item!r}")
        if not 1 <= int(match["port"]) <= 65535:
            raise ValidateError(f"{item!r}: port out of range 1-65535")
    seen = [split_switch(item) for item in switches]
    if len(set(seen)) != len(seen):
        raise ValidateError("names the same switch twice")
    return switches


def _check_uid(value: Any) -> str:
    # The signalling protocol's own uid rule, and narrower: the uid also names SIP legs.
    if not isinstance(value, str) or not (valid_uid(value) and _UID.match(value)):
        raise ValidateError("expected 1-64 characters of letters, digits and _ . @ + -")
    return value


def _check_acc_rule(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidateError("expected one value; separate items with ';', not ','")
    if value.strip():
        try:
            parse_acc_rule(value)
        except AccRuleError as exc:
            raise ValidateError(str(exc)) from None
    return value


_CONFERENCE_PROFILE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DIALIN_PREFIX = re.compile(r"^(?:[1-9][0-9]{0,7})?$")


def _check_conference_profile(value: Any) -> str:
    if not isinstance(value, str) or not _CONFERENCE_PROFILE.match(value):
        raise ValidateError(
            "expected a conference.conf.xml profile name: 1-64 of A-Z a-z 0-9 _ . -"
        )
    return value


def _check_dialin_prefix(value: Any) -> str:
    if not isinstance(value, str) or not _DIALIN_PREFIX.match(value):
        raise ValidateError(
            "expected up to 8 digits not starting with 0 (0<uid> is the SIP -> RTC route), "
            "or empty for no dial-in"
        )
    return value


def _check_dial_prefix(value: Any) -> str:
    if not isinstance(value, str) or not _DIAL_PREFIX.match(value):
        raise ValidateError("expected up to 16 of the characters 0-9 * # +")
    return value


@dataclass(frozen=True)
class GlobalSettings:
    appid: str
    sip_svr: str

    @property
    def sip_domain(self) -> str:
        """The host part of sip_svr: the SIP domain of dial strings."""
        return _HOSTPORT.match(self.sip_svr)["host"]  # type: ignore[index]


@dataclass(frozen=True)
class Rtm2SipSettings:
    on: bool
    acc_rule: str
    numbers: tuple[str, ...]


@dataclass(frozen=True)
class ProxySettings:
    on: bool
    sip_account: str
    sip_pwd: str
    rtm_account: str


@dataclass(frozen=True)
class PstnSettings:
    ip: str
    prefix: str
    gateway: str

    @property
    def enabled(self) -> bool:
        return bool(self.ip or self.gateway)


@dataclass(frozen=True)
class LogSettings:
    level: int
    file: str
    max_file_size: int
    backup_count: int
    json: bool
    console: str


@dataclass(frozen=True)
class EslSettings:
    host: str
    port: int
    password: str
    command_timeout: float
    connect_timeout: float
    reconnect_max_delay: float
    reconnect_probe_interval: float
    orphan_timeout: float
    # Several FreeSWITCH switches, "host:port" each (sharing the password); empty: the
    # one switch of host and port.
    switches: tuple[str, ...] = ()

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """(host, port) of every switch, in the configured order; one at least."""
        if not self.switches:
            return ((self.host, self.port),)
        return tuple(split_switch(item) for item in self.switches)


def split_switch(item: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` (as checked by the configspec) -> (host, port)."""
    match = _HOSTPORT.match(item)
    if match is None or match["port"] is None:
        raise ValueError(f"expected host:port, got {item!r}")
    return match["host"].strip("[]"), int(match["port"])


@dataclass(frozen=True)
class ClusterSettings:
    node_id: str  # filled in by load(): "<hostname>-<socket port>" when the file leaves it empty
    # Empty: one process, nothing shared (esl_bridge/cluster is never imported).
    redis_url: str = ""
    heartbeat_interval: float = 1.0
    claim_ttl: float = 5.0
    redis_timeout: float = 2.0

    @property
    def enabled(self) -> bool:
        return bool(self.redis_url)


@dataclass(frozen=True)
class SocketSettings:
    host: str
    port: int


@dataclass(frozen=True)
class WebSettings:
    host: str
    port: int
    tls_cert: str
    tls_key: str
    header_timeout: float = 10.0
    max_connections: int = 512
    max_connections_per_ip: int = 100
    # unix socket of the local admin endpoint (esl-bridge status); empty: none
    admin_socket: str = ""
    # origins of pages on other sites that may use the SDK and /ws; empty: same origin only
    allowed_origins: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert)


@dataclass(frozen=True)
class MediaSettings:
    ice_servers: tuple[str, ...]
    turn_username: str
    turn_password: str
    host_addresses: tuple[str, ...]
    codecs: tuple[str, ...]
    unicast_host: str
    unicast_port_min: int
    unicast_port_max: int
    media_timeout: float
    unicast_start_timeout: float
    unicast_port_quarantine: float
    # One-way audio (core/media_verdict.py): seconds a hop stays broken before its verdict,
    # and the level (dBov) below which a frame is silence.
    media_problem_after: float = 5.0
    silence_floor_dbov: float = -70.0
    browser_hold: float = 30.0  # seconds a call waits for its browser's new path
    browser_hold_tone: float = 0.0  # Hz of the beep the phone hears meanwhile; 0: silence
    event_loop: str = "uvloop"  # the asyncio loop of web and media (esl_bridge/loops.py)


@dataclass(frozen=True)
class LimitSettings:
    max_calls: int
    max_call_rate: float
    call_burst: int
    originate_timeout: int
    invite_offline_timeout: float
    invite_no_response_timeout: float
    invite_expire_timeout: float
    presence_grace: float
    max_message_bytes: int
    messages_per_second: float
    max_pending_invitations: int
    login_timeout: float = 30.0
    send_queue_bytes: int = 1048576


@dataclass(frozen=True)
class AuthSettings:
    app_certificate: str
    open_mode: bool
    token_ttl: int


@dataclass(frozen=True)
class WebhookSettings:
    # Empty: no webhooks (gateway/webhooks.py is idle).
    url: tuple[str, ...] = ()
    secret: str = field(default="", repr=False)
    timeout: float = 5.0
    retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    queue_max: int = 1000


@dataclass(frozen=True)
class ApiSettings:
    # Off: no /api/v1 route at all (gateway/api.py).
    on: bool = False
    token: str = field(default="", repr=False)
    allow_remote: bool = False
    requests_per_second: float = 5.0
    burst: int = 20


#: The shortest [api] token accepted (a bearer token is a password: make it long).
API_TOKEN_MIN = 32


@dataclass(frozen=True)
class Settings:
    """The effective configuration, typed. Built only by ``load`` / ``from_text``."""

    source: str
    global_: GlobalSettings
    rtm2sip: Rtm2SipSettings
    proxy: ProxySettings
    pstn: PstnSettings
    log: LogSettings
    esl: EslSettings
    cluster: ClusterSettings
    socket: SocketSettings
    web: WebSettings
    media: MediaSettings
    limits: LimitSettings
    auth: AuthSettings
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    conference: ConferenceSettings = field(default_factory=ConferenceSettings)
    warnings: tuple[str, ...] = field(default=())

    def secrets(self) -> list[str]:
        """Every secret value of this configuration, for log masking."""
        values = [
            self.esl.password,
            self.proxy.sip_pwd,
            self.auth.app_certificate,
            self.media.turn_password,
            redis_url_password(self.cluster.redis_url),
            self.webhooks.secret,
            self.api.token,
            *(redis_url_password(url) for url in self.webhooks.url),
        ]
        return [v for v in values if v]

    def as_sections(self, mask: bool = True) -> dict[str, dict[str, Any]]:
        """section -> key -> effective value, with secrets masked unless ``mask`` is False."""
        out: dict[str, dict[str, Any]] = {}
        for f in fields(self):
            if f.name in ("source", "warnings"):
                continue
            section = f.name.rstrip("_")
            values = asdict(getattr(self, f.name))
            values.pop("numbers", None)
            for key, value in values.items():
                if mask and (section, key) in SECRET_KEYS and value:
                    values[key] = "***"
                elif mask and (section, key) == ("cluster", "redis_url"):
                    values[key] = masked_redis_url(value)
                elif mask and (section, key) == ("webhooks", "url"):
                    values[key] = [masked_redis_url(url) for url in value]
                elif isinstance(value, tuple):
                    values[key] = list(value)
            out[section] = values
        return out


def _validator() -> Validator:
    return Validator(
        {
            "port_or_empty": _check_port_or_empty,
            "hostport": _check_hostport,
            "uid": _check_uid,
            "dial_prefix": _check_dial_prefix,
            "conference_profile": _check_conference_profile,
            "dialin_prefix": _check_dialin_prefix,
            "acc_rule": _check_acc_rule,
            "switch_list": _check_switch_list,
            "url_list": _check_url_list,
            "float": _check_finite_float,
        }
    )


_TYPE_NAMES = {
    "integer": "not a whole number",
    "float": "not a number",
    "boolean": "not a boolean (use 1 or 0, on or off, yes or no, true or false)",
    "string": "not a single value (quote it if it contains a comma)",
    "string_list": "not a list of values",
}


def _reason(error: object, check: str | None) -> str:
    """A reason a person can act on, from validate's exception and the key's check."""
    if error is False:
        return "is required but missing"
    if check is None or not isinstance(error, ValidateError):
        return str(error)
    name, _args, kwargs, _default = _validator()._parse_with_caching(check)
    if isinstance(error, VdtValueTooSmallError):
        return f"is below the minimum {kwargs.get('min')}"
    if isinstance(error, VdtValueTooBigError):
        return f"is above the maximum {kwargs.get('max')}"
    if isinstance(error, VdtValueTooShortError):
        return "must not be empty" if kwargs.get("min") in ("1", 1) else "is too short"
    if isinstance(error, VdtValueTooLongError):
        return f"is longer than {kwargs.get('max')} characters"
    if name == "option":
        return f"must be one of {', '.join(_args)}"
    if isinstance(error, VdtTypeError) and name in _TYPE_NAMES:
        return _TYPE_NAMES[name]
    return str(error)


def load(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a config file; ConfigError lists every defect."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(name, None, None, None, "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(name, None, None, None, f"cannot read: {exc}")]) from None
    return from_text(text, name, base_dir=Path(path).resolve().parent)


def from_text(text: str, name: str = "<text>", base_dir: Path | None = None) -> Settings:
    """Validate config text; ``name`` is used in messages, ``base_dir`` anchors log.file."""
    try:
        raw = ConfigObj(
            text.splitlines(),
            configspec=CONFIGSPEC.splitlines(),
            encoding="utf-8",
            interpolation=False,
            file_error=False,
            raise_errors=False,
            list_values=True,
        )
    except ConfigObjError as exc:
        errors = getattr(exc, "errors", None) or [exc]
        problems = [ConfigProblem(name, None, None, None, _syntax_reason(e)) for e in errors]
        raise ConfigError(problems) from None

    problems: list[ConfigProblem] = []
    warnings: list[str] = []
    esl_given = set(raw["esl"]) if isinstance(raw.get("esl"), dict) else set()
    result = raw.validate(_validator(), preserve_errors=True, copy=True)
    if result is not True:
        for sections, key, error in flatten_errors(raw, result):
            section = "/".join(sections)
            value = raw.get(sections[0], {}).get(key) if sections and key else None
            check = raw.configspec[sections[0]].get(key) if sections and key else None
            problems.append(ConfigProblem(name, section, key, value, _reason(error, check)))

    for sections, key in get_extra_values(raw):
        if not sections and isinstance(raw.get(key), dict):
            # A whole section the spec does not know: legacy (every key known) or unknown.
            keys = list(raw[key].keys())
            if keys and all((key, k) in LEGACY_KEYS for k in keys):
                warnings.extend(_legacy_warning(name, key, k) for k in keys)
            else:
                problems.append(ConfigProblem(name, key, None, None, "unknown section"))
        elif not sections:
            problems.append(ConfigProblem(name, None, None, None, f"{key!r} is outside a section"))
        elif (sections[0], key) in LEGACY_KEYS:
            warnings.append(_legacy_warning(name, sections[0], key))
        elif isinstance(raw[sections[0]].get(key), dict):
            section = "/".join(sections)
            problems.append(ConfigProblem(name, section, key, None, "unknown subsection"))
        else:
            value = raw[sections[0]].get(key) if len(sections) == 1 else None
            problems.append(ConfigProblem(name, "/".join(sections), key, value, "unknown key"))
    if problems:
        raise ConfigError(problems)

    settings = _build(raw, name, base_dir or Path.cwd(), problems, warnings, esl_given)
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    return settings


def _legacy_warning(name: str, section: str, key: str) -> str:
    return f"{name}: [{section}] {key}: {LEGACY_KEYS[(section, key)]}"


def _syntax_reason(error: object) -> str:
    line = getattr(error, "line_number", None)
    message = str(error)
    if line is not None and f"line {line}" not in message:
        message = f"line {line}: {message}"
    return f"syntax error: {message}"


def _build(
    raw: ConfigObj,
    name: str,
    base_dir: Path,
    problems: list[ConfigProblem],
    warnings: list[str],
    esl_given: set[str] | None = None,
) -> Settings | None:
    def bad(section: str, key: str, reason: str) -> None:
        if any((p.section, p.key) == (section, key) for p in problems):
            return  # one problem per key: the first found
        problems.append(ConfigProblem(name, section, key, raw[section][key], reason))

    # A newline in a '''triple-quoted''' value would end an ESL command early (the
    # rest of the password becomes a command); no key has a use for control characters.
    for section in raw.configspec:
        for key in raw.configspec[section]:
            value = raw[section][key]
            items = value if isinstance(value, list) else [value]
            if any(isinstance(item, str) and _CONTROL.search(item) for item in items):
                bad(section, key, "contains a control character (newline, tab, NUL, ...)")
    if not valid_appid(raw["global"]["appid"]):
        # The login frame's appid rule: any other appid could never log in.
        bad("global", "appid", "expected 1-64 of the characters A-Z a-z 0-9 _ . -")
    _check_hosts(raw, bad)

    if raw["esl"]["switches"] and {"host", "port"} & (esl_given or set()):
        bad("esl", "switches", "set either switches or host and port, not both")

    rtm2sip = raw["rtm2sip"]
    numbers: tuple[str, ...] = ()
    if rtm2sip["acc_rule"].strip():
        numbers = parse_acc_rule(rtm2sip["acc_rule"])  # already checked by the spec
    elif rtm2sip["on"]:
        bad("rtm2sip", "acc_rule", "is empty while [rtm2sip] on = 1")

    proxy = raw["proxy"]
    if proxy["rtm_account"] in numbers:
        bad("proxy", "rtm_account", "is also a number of [rtm2sip] acc_rule")
    if not proxy["sip_account"] and "account" in proxy:
        proxy["sip_account"] = str(proxy["account"])
    if not proxy["sip_pwd"] and "pwd" in proxy:
        proxy["sip_pwd"] = str(proxy["pwd"])

    pstn = raw["pstn"]
    if pstn["ip"] and pstn["gateway"]:
        bad("pstn", "gateway", "set either [pstn] ip or [pstn] gateway, not both")
    if pstn["ip"] and not _HOSTPORT.match(pstn["ip"]):
        bad("pstn", "ip", _interpolation_reason(pstn["ip"]) or "expected host or host:port")
    if pstn["gateway"] and not _GATEWAY_NAME.match(pstn["gateway"]):
        bad("pstn", "gateway", "expected 1-64 of the characters A-Z a-z 0-9 _ . @ + -")

    # SRProxy's [rtc]/[rtm] ip and port pointed at anyRTC's private cloud; here they are the
    # bind address of the one web/signalling server, and override [web] when set.
    web = dict(raw["web"])
    for section in ("rtm", "rtc"):
        for key, target in (("ip", "host"), ("port", "port")):
            value = raw[section][key]
            if value in ("", None):
                continue
            rtc_value = raw["rtc"][key]
            if section == "rtm" and rtc_value not in ("", None) and rtc_value != value:
                bad(section, key, f"differs from [rtc] {key}; both name the one web server")
            web[target] = value
    if bool(web["tls_cert"]) != bool(web["tls_key"]):
        missing = "tls_key" if web["tls_cert"] else "tls_cert"
        bad("web", missing, "set tls_cert and tls_key together")
    for key in ("tls_cert", "tls_key"):
        if web[key]:
            resolved = _resolve(web[key], base_dir)
            if not resolved.is_file():
                bad("web", key, f"no such file: {resolved}")
            web[key] = str(resolved)
    if web["admin_socket"]:
        web["admin_socket"] = str(_resolve(web["admin_socket"], base_dir))
    try:
        web["allowed_origins"] = parse_allowed_origins(web["allowed_origins"])
    except ValueError as exc:
        bad("web", "allowed_origins", str(exc))
        web["allowed_origins"] = ()

    node_id = raw["cluster"]["node_id"] or default_node_id(
        socket.gethostname(), raw["socket"]["port"]
    )
    if not valid_node_id(node_id):
        bad("cluster", "node_id", "use 1-64 letters, digits, '_', '.' or '-'")
    cluster = raw["cluster"]
    if cluster["redis_url"]:
        url_problem = redis_url_problem(cluster["redis_url"])
        if url_problem is not None:
            bad("cluster", "redis_url", url_problem)
    if cluster["claim_ttl"] < 2 * cluster["heartbeat_interval"]:
        bad(
            "cluster",
            "claim_ttl",
            f"must be at least twice heartbeat_interval ({cluster['heartbeat_interval']}): "
            "one late heartbeat must not free a live process's numbers",
        )

    if (raw["socket"]["host"], raw["socket"]["port"]) == (web["host"], web["port"]):
        bad("socket", "port", "the outbound socket server and the web server share host:port")

    media = raw["media"]
    for url in media["ice_servers"]:
        ice = _ICE_URL.match(url)
        if not ice or not 1 <= int(ice["port"] or 3478) <= 65535:
            bad("media", "ice_servers", f"{url!r} is not a stun:, turn: or turns: URL")
        elif ice["transport"] and ice["scheme"] == "stun":
            bad("media", "ice_servers", f"{url!r}: a stun: URL takes no ?transport")
        elif url.startswith("turn") and not (media["turn_username"] and media["turn_password"]):
            bad("media", "ice_servers", "a TURN server needs turn_username and turn_password")
    unknown_codecs = [c for c in media["codecs"] if c not in CODEC_ENTRIES]
    if unknown_codecs:
        bad(
            "media",
            "codecs",
            f"unknown codec(s) {unknown_codecs}; choose from {list(CODEC_ENTRIES)}",
        )
    elif not any(c in CODECS for c in media["codecs"]):
        # 'sip' alone would leave nothing to offer when the SIP side's codec is unknown
        bad("media", "codecs", f"name at least one codec of {list(CODECS)} besides 'sip'")
    low, high = media["unicast_port_min"], media["unicast_port_max"]
    pairs = unicast_pairs(low, high)
    if pairs == 0:
        bad("media", "unicast_port_max", f"{low}-{high} holds no (even, odd) port pairs")
    elif pairs < raw["limits"]["max_calls"]:
        max_calls = raw["limits"]["max_calls"]
        bad(
            "media",
            "unicast_port_max",
            f"{low}-{high} holds {pairs} port pairs, fewer than [limits] max_calls = "
            f"{max_calls} (each call uses one pair)",
        )

    log = raw["log"]
    log_file = ""
    if log["file"]:
        resolved = _resolve(log["file"], base_dir)
        if not resolved.parent.is_dir():
            bad("log", "file", f"directory {resolved.parent} does not exist")
        elif resolved.is_dir():
            bad("log", "file", f"{resolved} is a directory; name a file")
        elif not os.access(resolved if resolved.exists() else resolved.parent, os.W_OK):
            bad("log", "file", f"{resolved} cannot be written")
        log_file = str(resolved)

    auth = raw["auth"]
    if auth["open_mode"] and auth["app_certificate"]:
        warnings.append(f"{name}: [auth] open_mode = 1 ignores app_certificate: anyone may log in")

    hooks = raw["webhooks"]
    if hooks["url"] and not hooks["secret"]:
        bad("webhooks", "secret", "is empty: webhook requests are signed with it")
    api = raw["api"]
    if api["on"] and len(api["token"]) < API_TOKEN_MIN:
        bad("api", "token", f"needs {API_TOKEN_MIN} characters or more with [api] on = 1")

    if problems:
        return None
    return Settings(
        source=name,
        global_=GlobalSettings(appid=raw["global"]["appid"], sip_svr=raw["global"]["sip_svr"]),
        rtm2sip=Rtm2SipSettings(on=rtm2sip["on"], acc_rule=rtm2sip["acc_rule"], numbers=numbers),
        proxy=ProxySettings(
            on=proxy["on"],
            sip_account=proxy["sip_account"],
            sip_pwd=proxy["sip_pwd"],
            rtm_account=proxy["rtm_account"],
        ),
        pstn=PstnSettings(ip=pstn["ip"], prefix=pstn["prefix"], gateway=pstn["gateway"]),
        log=LogSettings(
            level=log["level"],
            file=log_file,
            max_file_size=log["max_file_size"],
            backup_count=log["backup_count"],
            json=log["json"],
            console=log["console"],
        ),
        esl=EslSettings(
            **{**_pick(raw["esl"], EslSettings), "switches": tuple(raw["esl"]["switches"])}
        ),
        cluster=ClusterSettings(
            node_id=node_id,
            redis_url=cluster["redis_url"],
            heartbeat_interval=cluster["heartbeat_interval"],
            claim_ttl=cluster["claim_ttl"],
            redis_timeout=cluster["redis_timeout"],
        ),
        socket=SocketSettings(**_pick(raw["socket"], SocketSettings)),
        web=WebSettings(**_pick(web, WebSettings)),
        media=MediaSettings(
            **{
                **_pick(media, MediaSettings),
                "ice_servers": tuple(media["ice_servers"]),
                "host_addresses": tuple(media["host_addresses"]),
                "codecs": tuple(media["codecs"]),
            }
        ),
        limits=LimitSettings(**_pick(raw["limits"], LimitSettings)),
        auth=AuthSettings(**_pick(auth, AuthSettings)),
        webhooks=WebhookSettings(**{**_pick(hooks, WebhookSettings), "url": tuple(hooks["url"])}),
        api=ApiSettings(**_pick(api, ApiSettings)),
        conference=ConferenceSettings(**_pick(raw["conference"], ConferenceSettings)),
        warnings=tuple(warnings),
    )


# Bind addresses: a host name or an IP address. ICE host candidates: IP addresses only.
_HOST_KEYS = (("esl", "host"), ("socket", "host"), ("web", "host"), ("media", "unicast_host"))


def _check_hosts(raw: ConfigObj, bad: Any) -> None:
    keys = [*_HOST_KEYS, *((s, "ip") for s in ("rtc", "rtm") if raw[s]["ip"])]
    for section, key in keys:
        value = raw[section][key]
        if not (_HOST.match(value) or _is_ip(value)):
            bad(section, key, _interpolation_reason(value) or "expected a host name or IP address")
    for address in raw["media"]["host_addresses"]:
        if not _is_ip(address):
            bad("media", "host_addresses", f"{address!r} is not an IP address")


_REDIS_SCHEMES = ("redis", "rediss", "unix")


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a [cluster] redis_url, or None. Checked here, without
    importing redis, so a single-process gateway never pays for it."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a Redis URL ({exc})"
    if parts.scheme not in _REDIS_SCHEMES:
        return "expected redis://host[:port][/db], rediss://... or unix:///path"
    if parts.scheme == "unix":
        if parts.netloc.rpartition("@")[2] or not parts.path.startswith("/"):
            return "a unix: URL needs an absolute path: unix:///path/to/redis.sock"
        return None
    if not parts.hostname:
        return "a redis:// URL needs a host"
    if port == 0:
        return "port 0 is not a Redis port"
    db = parts.path.strip("/")
    if db and not db.isdigit():
        return f"database {db!r} is not a number (redis://host:port/0)"
    if parts.query or parts.fragment:
        return "query and fragment are not read here: put options in [cluster]"
    return None


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a [webhooks] url, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected http://host[:port]/path or https://..."
    if port == 0 or _CONTROL.search(url):
        return "not a usable URL"
    return None


def redis_url_password(url: str) -> str:
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def masked_redis_url(url: str) -> str:
    """``url`` with its password, if any, shown as ***."""
    password = redis_url_password(url)
    return url.replace(f":{password}@", ":***@", 1) if password else url


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def unicast_pairs(port_min: int, port_max: int) -> int:
    """How many (even, odd) port pairs [port_min, port_max] holds, as the allocator counts."""
    first = port_min + port_min % 2
    return len(range(first, port_max, 2))


def _pick(section: Mapping[str, Any], cls: type) -> dict[str, Any]:
    return {f.name: section[f.name] for f in fields(cls)}


def _resolve(value: str, base_dir: Path) -> Path:
    # Relative paths are taken from the config file's folder, not from wherever the
    # service manager happened to start the process.
    path = Path(value).expanduser()
    return path if path.is_absolute() else base_dir / path


def defaults() -> Settings:
    """The settings of an empty file: what the demo runs with."""
    return from_text("", "<defaults>")


def render(settings: Settings, mask: bool = True) -> str:
    """The effective settings as rtx.conf text (secrets masked), for check-config."""
    lines: list[str] = [f"# effective settings of {settings.source}"]
    for section, values in settings.as_sections(mask=mask).items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_format_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, Iterable) and not isinstance(value, str):
        items = [str(v) for v in value]
        if not items:
            return ","
        # configobj reads "a," as a one-item list, "a" as a string.
        return ", ".join(items) + ("," if len(items) == 1 else "")
    if value is None or value == "":
        return '""'
    return str(value)
