"""DirectSrtp (esl_bridge/media/srtp_direct.py): the same SRTP as pylibsrtp's public
methods on the same kind of session, byte for byte, with its refusals, and the fallback
when pylibsrtp is not what it was written for."""

from __future__ import annotations

import os
import struct

import pylibsrtp
import pytest
from pylibsrtp import Policy, Session

from esl_bridge.media.srtp_direct import DirectSrtp, PublicSrtp, check_session


def sessions(key: bytes) -> tuple[Session, Session]:
    tx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND))
    rx = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND))
    return tx, rx


def header(seq: int, ts: int = 0, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc)


def test_this_pylibsrtp_is_the_one_it_was_written_for() -> None:
    # A new pylibsrtp that moves its internals fails here (and the product falls back).
    tx, _ = sessions(os.urandom(30))
    assert check_session(tx) is None
    assert isinstance(DirectSrtp.for_session(tx), DirectSrtp)


def test_protect_is_byte_for_byte_what_pylibsrtp_makes() -> None:
    key = os.urandom(30)
    ours, _ = sessions(key)
    theirs, _ = sessions(key)
    direct = DirectSrtp(ours)
    for seq in range(300):  # past one replay window, with the marker and payload changing
        payload = os.urandom(160 if seq % 3 else 20)
        head = bytearray(header(seq, seq * 160))
        if seq == 0:
            head[1] |= 0x80
        assert direct.protect(head, payload) == theirs.protect(bytes(head) + payload)


def test_unprotect_gives_back_the_packet_and_refuses_replay_and_forgery() -> None:
    tx, rx = sessions(os.urandom(30))
    direct_tx, direct_rx = DirectSrtp(tx), DirectSrtp(rx)
    sent = [(header(seq), os.urandom(160)) for seq in range(50)]
    packets = [direct_tx.protect(h, p) for h, p in sent]
    for (h, p), packet in zip(sent, packets, strict=True):
        assert direct_rx.unprotect(packet) == h + p
    with pytest.raises(pylibsrtp.Error, match="replay"):
        direct_rx.unprotect(packets[-1])
    forged = bytearray(direct_tx.protect(header(50), bytes(160)))
    forged[20] ^= 1
    with pytest.raises(pylibsrtp.Error, match="auth"):
        direct_rx.unprotect(bytes(forged))
    # The session's own methods still work on the same context after ours.
    assert rx.unprotect(tx.protect(header(51) + b"x" * 10)) == header(51) + b"x" * 10


def test_a_packet_too_long_is_refused_before_libsrtp() -> None:
    tx, rx = sessions(os.urandom(30))
    with pytest.raises(ValueError, match="too long"):
        DirectSrtp(tx).protect(header(1), bytes(1500))
    with pytest.raises(ValueError, match="too long"):
        DirectSrtp(rx).unprotect(bytes(1501))
    # The largest that fits is protected (room left for the trailer, as pylibsrtp leaves).
    assert len(DirectSrtp(tx).protect(header(2), bytes(1500 - 12 - 144))) > 1500 - 144


def test_anything_else_than_a_pylibsrtp_session_goes_through_its_public_methods() -> None:
    class Wrapped:
        """Stands for a session of another SRTP library, or a pylibsrtp that changed."""

        def __init__(self, inner: Session) -> None:
            self.inner = inner

        def protect(self, packet: bytes) -> bytes:
            return self.inner.protect(packet)

        def unprotect(self, packet: bytes) -> bytes:
            return self.inner.unprotect(packet)

    tx, rx = sessions(os.urandom(30))
    assert check_session(Wrapped(tx)) == "not a pylibsrtp Session: Wrapped"
    with pytest.raises(ValueError, match="not a pylibsrtp Session"):
        DirectSrtp(Wrapped(tx))  # type: ignore[arg-type]
    sender, receiver = DirectSrtp.for_session(Wrapped(tx)), DirectSrtp.for_session(Wrapped(rx))
    assert isinstance(sender, PublicSrtp) and isinstance(receiver, PublicSrtp)
    assert receiver.unprotect(sender.protect(header(7), b"abc")) == header(7) + b"abc"


def test_a_session_without_the_internals_is_named() -> None:
    tx, _ = sessions(os.urandom(30))
    del tx.__dict__["_cdata"]
    assert check_session(tx) == "pylibsrtp Session has no _cdata"
    assert isinstance(DirectSrtp.for_session(tx), PublicSrtp)


def test_the_srtp_of_a_transport_follows_its_session() -> None:
    from esl_bridge.media.srtp_direct import SessionSrtp

    first, _ = sessions(os.urandom(30))
    second, _ = sessions(os.urandom(30))
    holder = SessionSrtp()
    made = holder.of(first)
    assert isinstance(made, DirectSrtp) and made.session is first
    assert holder.of(first) is made  # kept while the session is the same
    assert holder.of(second).session is second  # a new session, a new one
