"""Logging: structlog over the standard library's handlers, configured from [log].

Levels are SRProxy's: 0 SENSITIVE, 1 VERBOSE, 2 INFO, 3 WARNING, 4 ERROR, 5 NONE.
Only level 0 shows sensitive values (SDP, invitation content, custom SIP data, message
text). Secrets (the ESL password, tokens, the app certificate, SIP and TURN passwords) are
masked at every level where they stand as values: in a field with a secret-like name, after
a secret-like key (``password=``, ``X-Pass:``, ``{sip_auth_password=...}``, ``auth ...``,
``uuid_setvar UUID pwd_var ...``), and, for the configured secrets, wherever they stand as a
whole token (a secret of 8 characters or more: anywhere at all). A short secret is not
masked inside unrelated text: ``1234`` stays in a timestamp, a port or a uuid. Peer data
is bounded with ``bounded`` before it is logged. The call id, channel uuid and uid
are bound with contextvars (``bound_contextvars(call_id=..., uuid=..., uid=...)``) and so
appear on every line logged inside a call.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars, unbind_contextvars

from esl_bridge.config import LogSettings

__all__ = [
    "LEVEL_NAMES",
    "Redactor",
    "add_secret",
    "bind_contextvars",
    "bound_contextvars",
    "bounded",
    "configure_logging",
    "get_logger",
    "unbind_contextvars",
]

LEVEL_NAMES = {0: "SENSITIVE", 1: "VERBOSE", 2: "INFO", 3: "WARNING", 4: "ERROR", 5: "NONE"}
_STDLIB_LEVELS = {
    0: logging.DEBUG,
    1: logging.DEBUG,
    2: logging.INFO,
    3: logging.WARNING,
    4: logging.ERROR,
    5: logging.CRITICAL + 10,
}
MASK = "***"

# Field names whose values are secrets, at every level.
_SECRET_FIELD = re.compile(r"(pass(word|wd)?|pwd|token|secret|certificate|credential)", re.I)
# Field names whose values are private to the call's parties: shown at level 0 only.
SENSITIVE_FIELDS = frozenset(
    {"sdp", "content", "response", "user_data", "sip_data", "cus_data", "text", "payload", "raw"}
)
# Secrets inside free text, found by what stands before them. A key whose last part is a
# secret word: password=, sip_auth_password=, X-Pass:, "token": "..." (not token_ttl=, not
# passive=). The value: a quoted string, or up to the next separator of URLs, dial strings
# ({a=1,b=2} [a=1]), header lists and JSON; a backslash escapes a separator (FreeSWITCH).
_SECRET_WORD = r"(?:pass(?:word|wd)?|pwd|token|secret|certificate|credentials?)"
_VALUE = r"(?P<value>'[^'\n]*'|\"[^\"\n]*\"|(?:\\.|[^\s&,;\"'}\])\\])+)"
_INLINE_SECRET = re.compile(
    r"(?P<key>"
    # an ESL login line, "auth ClueCon", and "userauth user@domain:password"
    r"(?m:^)auth\s+(?=\S+\s*$)|(?m:^)userauth\s+[^:\s]+:"
    # key=value, key: value, "key": "value"
    rf"|(?<![A-Za-z0-9_.-])[_.-]*(?:[A-Za-z0-9]+[_.-])*{_SECRET_WORD}[\"']?\s*[=:]\s*"
    # uuid_setvar <uuid> sip_auth_password VALUE
    rf"|\buuid_setvar\s+\S+\s+(?:[A-Za-z0-9]+[_.-])*{_SECRET_WORD}\s+"
    # Authorization: Bearer VALUE
    r"|\bauthorization[\"']?\s*[=:]\s*(?:(?:bearer|basic)\s+)?"
    rf"){_VALUE}",
    re.I,
)
# user:password@ in a URL
_URL_PASSWORD = re.compile(r"(?P<key>://[^/\s:@]+:)(?P<value>[^/\s@]+)(?=@)")
# A registered secret at least this long is masked wherever it appears (it cannot be part
# of a timestamp or a number by chance); a shorter one only as a whole token, that is not
# next to a letter, digit or _, nor joined by . : - to one (a uuid, a time, a version).
_SUBSTRING_MIN = 8
_TOKEN_BEFORE = r"(?<![A-Za-z0-9_])(?<![A-Za-z0-9][.:-])"
_TOKEN_AFTER = r"(?![A-Za-z0-9_])(?![.:-][A-Za-z0-9])"
# Peer data in a log line: at most this many characters of each value.
BOUND = 200

# The application's loggers; third-party ones are held at WARNING above VERBOSE.
_OWN = "esl_bridge"
_THIRD_PARTY = ("aiortc", "aioice", "aiohttp", "greenswitch", "asyncio", "gevent")


class Redactor:
    """A structlog processor that masks secrets and, above level 0, sensitive values."""

    def __init__(self, show_sensitive: bool = False, secrets: Iterable[str] = ()):
        self.show_sensitive = show_sensitive
        self._long: tuple[str, ...] = ()
        self._short: set[str] = set()
        self._tokens: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        # Values under 4 characters would mask ordinary words and numbers even as whole
        # tokens; they are masked by field name and inline pattern only.
        if not secret or len(secret) < 4:
            return
        with self._lock:
            if len(secret) >= _SUBSTRING_MIN:
                # Longest first: a secret that contains another is masked whole.
                self._long = tuple(sorted({*self._long, secret}, key=len, reverse=True))
            elif secret not in self._short:
                self._short.add(secret)
                words = "|".join(re.escape(s) for s in sorted(self._short, key=len, reverse=True))
                self._tokens = re.compile(f"{_TOKEN_BEFORE}(?:{words}){_TOKEN_AFTER}")

    def scrub(self, text: str) -> str:
        """``text`` with every secret masked where it stands as a value."""
        for secret in self._long:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _INLINE_SECRET.sub(_mask_value, text)
        text = _URL_PASSWORD.sub(_mask_value, text)
        tokens = self._tokens
        return tokens.sub(MASK, text) if tokens is not None else text

    def _value(self, key: str, value: Any) -> Any:
        if key == "timestamp":  # set by the TimeStamper, never by a caller
            return value
        if _SECRET_FIELD.search(key):
            return MASK if value not in (None, "") else value
        if key in SENSITIVE_FIELDS and not self.show_sensitive:
            size = len(value) if isinstance(value, str | bytes) else None
            return "<hidden below log level 0>" if size is None else f"<{size} chars hidden>"
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, bytes):
            return self.scrub(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(key, v) for v in value]
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = self._value(key, event_dict[key])
        return event_dict


def _mask_value(match: re.Match[str]) -> str:
    value = match["value"]
    quote = value[0] if value[0] in "'\"" and len(value) > 1 and value[-1] == value[0] else ""
    return f"{match['key']}{quote}{MASK}{quote}"


_redactor = Redactor()


def add_secret(secret: str) -> None:
    """Mask ``secret`` in every later log line (e.g. a token met at run time)."""
    _redactor.add(secret)


def bounded(value: object, limit: int = BOUND) -> Any:
    """``value`` (peer data: a reply, a header, an error text) for a log line: secrets
    masked first, then cut to ``limit`` characters plus ``...(N bytes)``, N its UTF-8 size.
    None, booleans and numbers are returned as they are."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    text = _redactor.scrub(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text.encode('utf-8', 'replace'))} bytes)"


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    settings: LogSettings,
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Set up structlog and the standard handlers from [log]; safe to call again."""
    global _redactor
    stream = stream if stream is not None else sys.stderr
    _redactor = Redactor(show_sensitive=settings.level == 0, secrets=secrets)
    level = _STDLIB_LEVELS[settings.level]

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        _redactor,
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )

    def formatter(renderer: Any) -> logging.Formatter:
        # foreign_pre_chain runs the same processors (redaction included) over records
        # from libraries that log through the standard library.
        return structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )

    handlers: list[logging.Handler] = []
    if settings.file:
        file_handler = logging.handlers.RotatingFileHandler(
            settings.file,
            maxBytes=settings.max_file_size * 1024 * 1024,
            backupCount=settings.backup_count,
            encoding="utf-8",
        )
        renderer = (
            structlog.processors.JSONRenderer()
            if settings.json
            else structlog.dev.ConsoleRenderer(colors=False, exception_formatter=_plain_exception)
        )
        file_handler.setFormatter(formatter(renderer))
        handlers.append(file_handler)
    console = settings.console == "on" or (settings.console == "auto" and _is_tty(stream))
    if console or not settings.file:
        # Without a log file the lines still go somewhere: JSON when asked or not a terminal.
        if console and not settings.json:
            renderer = structlog.dev.ConsoleRenderer(colors=_is_tty(stream))
        else:
            renderer = structlog.processors.JSONRenderer()
        stream_handler = logging.StreamHandler(stream)
        stream_handler.setFormatter(formatter(renderer))
        handlers.append(stream_handler)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if getattr(old, "_esl_bridge", False):
            old.close()
    for handler in handlers:
        handler._esl_bridge = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger(_OWN).setLevel(level)
    third_party = level if settings.level == 0 else max(level, logging.WARNING)
    for name in _THIRD_PARTY:
        logging.getLogger(name).setLevel(third_party)


def _plain_exception(sio: TextIO, exc_info: Any) -> None:
    structlog.dev.plain_traceback(sio, exc_info)


def get_logger(name: str = _OWN) -> Any:
    """A structlog logger under the application's namespace."""
    if not name.startswith(_OWN):
        name = f"{_OWN}.{name}"
    return structlog.stdlib.get_logger(name)
