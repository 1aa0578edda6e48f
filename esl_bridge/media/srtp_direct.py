"""SRTP protect and unprotect on a pylibsrtp ``Session``'s own libsrtp context, per packet
without the wrapper's allocations.

pylibsrtp 1.0's ``Session.protect(packet)`` / ``unprotect(packet)`` check the type, allocate
a fresh ``int *`` with cffi, copy the packet into the session's 1500-byte buffer, call
libsrtp and copy the result out. On the G.711 fast path that wrapper, with the
``bytes(header) + payload`` a sender builds to call it, costs more than libsrtp itself
(measured on the reference machine: 4.3 us per protect against 2.3 us here). ``DirectSrtp``
keeps one ``int *`` per session and writes the header and the payload straight into the
session's buffer: the same libsrtp call on the same context (so the same keys, rollover
counter and replay window as aiortc's own use of the session, e.g. for RTCP), one copy in,
one copy out.

Facts about pylibsrtp (read in its 1.0 source; ``check_session`` verifies them, and
``DirectSrtp.for_session`` falls back to the session's public methods when they do not
hold, so a new pylibsrtp costs speed, never correctness):

* ``Session`` keeps its ``srtp_t *`` in ``_srtp``, a ``char[1500]`` in ``_cdata`` and a
  cffi buffer over it in ``_buffer``; its private ``__process`` calls
  ``func(self._srtp[0], self._cdata, len_p)`` with ``func`` one of ``lib.srtp_protect`` /
  ``lib.srtp_unprotect`` and returns ``self._buffer[0 : len_p[0]]``.
* A non-zero return is an error; pylibsrtp raises ``pylibsrtp.Error`` for it, and so does
  this module (the SRTP tap counts those as ``srtp_errors``).

The session's buffer is shared with the session's own methods; both run on the event
loop's thread, one call at a time, each copying its result out before returning, as
pylibsrtp does itself.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import pylibsrtp
from pylibsrtp import _binding

__all__ = ["DirectSrtp", "SessionSrtp", "check_session"]

_ffi = _binding.ffi
_lib = _binding.lib
# Room left for libsrtp's largest SRTP trailer, as pylibsrtp leaves it.
_MAX_TRAILER: int = getattr(pylibsrtp, "SRTP_MAX_TRAILER_LEN", 16 + 128)


def _error_text(status: int) -> str:
    """pylibsrtp's text for a libsrtp status (what its own methods raise)."""
    errors = pylibsrtp.ERRORS
    return str(errors[status]) if 0 <= status < len(errors) else f"libsrtp error {status}"


@functools.cache
def _class_problem() -> str | None:
    process = getattr(pylibsrtp.Session, "_Session__process", None)
    if process is None:
        return "pylibsrtp Session.__process is gone"
    try:
        text = inspect.getsource(process)
    except (OSError, TypeError):
        return "cannot read the source of pylibsrtp Session.__process"
    for needle in ("func(self._srtp[0], self._cdata, len_p)", "self._buffer[0 : len_p[0]]"):
        if needle not in text:
            return f"pylibsrtp Session.__process no longer does {needle!r}"
    for name in ("srtp_protect", "srtp_unprotect"):
        if not hasattr(_lib, name):
            return f"pylibsrtp's binding has no {name}"
    if not isinstance(getattr(pylibsrtp, "ERRORS", None), list):
        return "pylibsrtp has no ERRORS table"
    return None


def check_session(session: Any) -> str | None:
    """What keeps ``DirectSrtp`` from working on ``session`` (None: nothing)."""
    if not isinstance(session, pylibsrtp.Session):
        return f"not a pylibsrtp Session: {type(session).__name__}"
    problem = _class_problem()
    if problem is not None:
        return problem
    state = session.__dict__
    for name in ("_srtp", "_cdata", "_buffer"):
        if name not in state:
            return f"pylibsrtp Session has no {name}"
    return None


class DirectSrtp:
    """``protect(header, payload)`` and ``unprotect(packet)`` on one session's context."""

    def __init__(self, session: pylibsrtp.Session) -> None:
        problem = check_session(session)
        if problem is not None:
            raise ValueError(problem)
        self.session = session  # keeps the context (freed with the session) alive
        state = session.__dict__
        self._context = state["_srtp"][0]
        self._cdata = state["_cdata"]
        self._buffer = state["_buffer"]
        self._capacity = len(self._buffer)
        self._length = _ffi.new("int *")
        # Looked up once: an attribute of cffi's lib is a lookup by name on every access.
        self._protect = _lib.srtp_protect
        self._unprotect = _lib.srtp_unprotect

    @classmethod
    def for_session(cls, session: Any) -> DirectSrtp | PublicSrtp:
        """A ``DirectSrtp`` when the session is what it was written for, else the same
        two methods through the session's public API."""
        if check_session(session) is None:
            return cls(session)
        return PublicSrtp(session)

    def protect(self, header: bytes | bytearray, payload: bytes) -> bytes:
        """The SRTP packet of RTP ``header`` + ``payload``."""
        size = len(header)
        total = size + len(payload)
        if total > self._capacity - _MAX_TRAILER:
            raise ValueError("packet is too long")
        buffer = self._buffer
        buffer[0:size] = header
        buffer[size:total] = payload
        return self._run(self._protect, total)

    def unprotect(self, packet: bytes) -> bytes:
        """The RTP packet inside SRTP ``packet``; ``pylibsrtp.Error`` when it does not
        authenticate (forged, replayed, another session's)."""
        total = len(packet)
        if total > self._capacity:
            raise ValueError("packet is too long")
        self._buffer[0:total] = packet
        return self._run(self._unprotect, total)

    def _run(self, function: Any, total: int) -> bytes:
        """libsrtp's ``function`` over the first ``total`` bytes of the buffer, in place."""
        length = self._length
        length[0] = total
        status = function(self._context, self._cdata, length)
        if status:
            raise pylibsrtp.Error(_error_text(status))
        return self._buffer[0 : length[0]]


class PublicSrtp:
    """The same two methods through pylibsrtp's public ``protect``/``unprotect``."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def protect(self, header: bytes | bytearray, payload: bytes) -> bytes:
        return self.session.protect(bytes(header) + payload)

    def unprotect(self, packet: bytes) -> bytes:
        return self.session.unprotect(packet)


class SessionSrtp:
    """``of(session)``: the ``DirectSrtp`` (or ``PublicSrtp``) of whichever session a DTLS
    transport holds now, made again only when the transport's session changes."""

    def __init__(self) -> None:
        self._session: Any = None
        self._srtp: DirectSrtp | PublicSrtp | None = None

    def of(self, session: Any) -> DirectSrtp | PublicSrtp:
        srtp = self._srtp
        if session is not self._session or srtp is None:
            self._session = session
            srtp = self._srtp = DirectSrtp.for_session(session)
        return srtp
