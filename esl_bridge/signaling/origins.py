"""Which web pages may use this gateway's SDK: ``[web] allowed_origins``.

A browser names the page's origin in the ``Origin`` header of a WebSocket handshake and of
a cross-origin fetch (the SDK module, ``/config.json``). The gateway accepts its own origin
(the ``Origin`` host and port equal the request's ``Host``, so a TLS-terminating proxy in
front changes nothing), the origins listed, or every origin with ``*``. A request without
``Origin`` is not from a page (a script, a test client) and is accepted: the token, not the
origin, authenticates a login.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = [
    "cors_headers",
    "normalize_origin",
    "origin_allowed",
    "parse_allowed_origins",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in lower case without a default port, or None when
    ``origin`` is not an http(s) origin (``null``, a path, user info, a query...)."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc:
        return None
    host = parts.hostname.lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_allowed_origins(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The setting's entries normalized; ValueError names the first one that is not
    ``*`` or ``scheme://host[:port]``."""
    result: list[str] = []
    for value in values:
        if value.strip() == "*":
            result.append("*")
            continue
        norm = normalize_origin(value)
        if norm is None:
            raise ValueError(
                f"{value!r} is not an origin: expected '*' or scheme://host[:port] "
                "(http or https, no path)"
            )
        result.append(norm)
    return tuple(dict.fromkeys(result))


def _host_port(netloc: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc.strip()}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname.lower(), port if port is not None else default_port


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """May a page of ``origin`` use this server, reached as ``host`` (the Host header)?"""
    if origin is None:
        return True
    if "*" in allowed:
        return True
    norm = normalize_origin(origin)
    if norm is None:
        return False
    if norm in allowed:
        return True
    if not host:
        return False
    scheme = norm.split(":", 1)[0]
    default = _DEFAULT_PORTS[scheme]
    return _host_port(norm.split("://", 1)[1], default) == _host_port(host, default)


def cors_headers(headers: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    """CORS response headers for a GET of ``headers`` (the request's): the page's origin
    echoed when it may use the SDK; nothing else, so a browser refuses the response to
    another page. ``Vary: Origin`` in both cases, for caches."""
    origin = headers.get("Origin")
    if origin is not None and origin_allowed(origin, headers.get("Host"), allowed):
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    return {"Vary": "Origin"}
