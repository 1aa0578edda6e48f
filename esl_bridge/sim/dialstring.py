"""Parsing of `originate` arguments the way FreeSWITCH splits them (pure functions)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# switch_separate_string() turns these escapes into characters; any other `\\x` stays as is.
_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(token: str, delim: str | None) -> str:
    """What FreeSWITCH does to every piece it splits off: drop leading blanks, resolve escapes
    (`\\'`, `\\"`, `\\\\`, `\\<delim>`, `\\n`, `\\r`, `\\t`, `\\s`), remove paired single quotes,
    trim trailing blanks outside quotes."""
    i = 0
    while i < len(token) and token[i] == " ":
        i += 1
    out: list[str] = []
    end: int | None = None
    inside = False
    while i < len(token):
        ch = token[i]
        if ch == "\\" and i + 1 < len(token):
            nxt = token[i + 1]
            rep = nxt if nxt in "'\"\\" or nxt == delim else _UNESCAPES.get(nxt)
            if rep is not None:
                out.append(rep)
                end = len(out)
                i += 2
                continue
        if ch == "'" and (inside or "'" in token[i + 1 :]):
            inside = not inside
            if inside:
                end = len(out)
        else:
            out.append(ch)
            if ch != " " or inside:
                end = len(out)
        i += 1
    return "".join(out if end is None else out[:end])


def split_args(text: str) -> list[str]:
    """Split an api argument at blanks the way FreeSWITCH does (quotes group, `\\` escapes).

    This is why an unquoted `&socket(127.0.0.1:8084 async full)` becomes three arguments
    (`&socket(127.0.0.1:8084`, `async`, `full)`) and runs in static mode
    (docs/freeswitch.rst, fact 6).
    """
    tokens: list[str] = []
    cur: list[str] = []
    inside = False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == "'":
            # Unlike the other splits, a quote toggles here even with no closing one.
            inside = not inside
        if ch == " " and not inside:
            if cur:
                tokens.append("".join(cur))
                cur = []
        else:
            cur.append(ch)
        i += 1
    if cur:
        tokens.append("".join(cur))
    return [_cleanup(t, None) for t in tokens]


def split_char(buf: str, delim: str, limit: int) -> list[str]:
    """Split at `delim` outside quotes, at most `limit` pieces (the last one keeps the rest).
    Like FreeSWITCH, no piece starts at the end of the text: `x=` is one piece, not two."""
    pieces: list[str] = []
    start = 0
    inside = False
    i = 0
    while i < len(buf) and len(pieces) < limit - 1:
        ch = buf[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "'" and (inside or "'" in buf[i + 1 :]):
            inside = not inside
        elif ch == delim and not inside:
            pieces.append(buf[start:i])
            start = i + 1
        i += 1
    if start < len(buf):
        pieces.append(buf[start:])
    return [_cleanup(p, delim) for p in pieces]


def _split_vars(body: str) -> dict[str, str]:
    """`a=1,b=2` (or `^^:a=1:b=2`) of a `{}`/`[]`/`<>` block; every split unescapes again."""
    delim = ","
    if body.startswith("^^") and len(body) > 2:
        delim, body = body[2], body[3:]
    out: dict[str, str] = {}
    for item in split_char(body, delim, 1024):
        pair = split_char(item, "=", 2)
        if len(pair) == 2:
            out[pair[0]] = pair[1]
    return out


def _block_end(text: str, open_ch: str, close_ch: str) -> int:
    depth = 0
    for i, ch in enumerate(text):
        if ch == open_ch:
            depth += 1
        elif ch == close_ch:
            depth -= 1
            if depth == 0:
                return i
    return -1


@dataclass
class DialString:
    variables: dict[str, str] = field(default_factory=dict)
    endpoint: str = ""  # "user", "loopback", "gateway", "error", "sofia" or another name
    target: str = ""  # user / number / cause
    domain: str | None = None
    context: str | None = None
    gateway: str | None = None
    raw: str = ""
    leg: str = ""  # the first leg, without the variable blocks: `user/1001@domain`


def parse_dial_string(text: str) -> DialString:
    """`{a=b}[c=d]user/1001@domain` and friends. Only the first of `,`/`|` legs is used."""
    ds = DialString(raw=text)
    rest = text
    while rest and rest[0] in "{[<":
        close = {"{": "}", "[": "]", "<": ">"}[rest[0]]
        end = _block_end(rest, rest[0], close)
        if end < 0:
            break
        ds.variables.update(_split_vars(rest[1:end]))
        rest = rest[end + 1 :]
    rest = re.split(r"[,|]", rest, maxsplit=1)[0]
    ds.leg = rest
    parts = rest.split("/")
    kind = parts[0]
    if kind == "user" and len(parts) >= 2:
        ds.endpoint = "user"
        user, _, domain = parts[1].partition("@")
        ds.target, ds.domain = user, domain or None
    elif kind == "loopback" and len(parts) >= 2:
        ds.endpoint = "loopback"
        ds.target = parts[1]
        ds.context = parts[2] if len(parts) > 2 else "default"
    elif kind == "sofia" and len(parts) >= 4 and parts[1] == "gateway":
        ds.endpoint = "gateway"
        ds.gateway = parts[2]
        ds.target = parts[3].split("@")[0]
    elif kind == "sofia" and len(parts) >= 3:
        ds.endpoint = "sofia"
        user, _, domain = parts[2].partition("@")
        ds.target, ds.domain = user, domain or None
    elif kind == "error" and len(parts) >= 2:
        ds.endpoint = "error"
        ds.target = parts[1]
    else:
        ds.endpoint = kind
        ds.target = "/".join(parts[1:])
    return ds


@dataclass
class AppSpec:
    """`&name(args)` of an originate, or a dialplan extension when `name` is empty."""

    name: str
    args: str
    extension: str | None = None


def parse_app(text: str) -> AppSpec:
    if not text.startswith("&"):
        return AppSpec("", "", extension=text)
    body = text[1:]
    m = re.match(r"([A-Za-z0-9_]+)(.*)$", body, re.S)
    if not m:
        return AppSpec(body, "")
    name, rest = m.group(1), m.group(2)
    if rest.startswith("("):
        args = rest[1:]
        if args.endswith(")"):
            args = args[:-1]
    elif rest.startswith(":") or rest.startswith(" "):
        args = rest[1:]
    else:
        args = rest
    return AppSpec(name, args)


def parse_socket_args(args: str) -> tuple[str, int, bool, bool]:
    """`host:port [async] [full]` -> (host, port, async, full)."""
    words = args.split()
    if not words:
        raise ValueError("socket: missing host:port")
    host, _, port = words[0].rpartition(":")
    return host or "127.0.0.1", int(port), "async" in words[1:], "full" in words[1:]
