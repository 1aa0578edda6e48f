"""What goes wrong, on purpose: the simulated FreeSWITCH crash, and the fault hooks tests use
(dropped connections and commands, raw bytes on the wire)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from esl_bridge.logs import get_logger

from .channel import Channel

log = get_logger(__name__)

Address = tuple[str, int]
# A unicast redirect: given a unicast's (local, remote) addresses, the ones the simulated
# channel really binds and sends to.
UnicastRedirect = Callable[[Address, Address], Awaitable[tuple[Address, Address]]]


class SimulatorCrashed(RuntimeError):
    pass


class FaultsMixin:
    """Part of `server.Simulator`: `self` is the simulator."""

    async def _crash_later(self, reason: str) -> None:
        await asyncio.sleep(self.config.crash_delay)
        self.crash(reason)

    def crash(self, reason: str) -> None:
        """What a FreeSWITCH segfault looks like from outside: every connection and call
        drops at once, and nothing listens until restart()."""
        if self.crashed:
            return
        log.error("sim.crash", reason=reason)
        self.crashed = True
        self.crash_reason = reason
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_everything()

    def _drop_everything(self) -> None:
        self._sched.clear()  # the scheduler dies with the switch (its tasks are cancelled below)
        self._conference_reset()  # so do the rooms (their mixers are cancelled below)
        for ch in list(self.channels.values()):
            self._destroy_silently(ch)
        for s in list(self.sessions):
            s.close(abort=True)
        for t in list(self._tasks):
            if t is not asyncio.current_task():
                t.cancel()

    def _destroy_silently(self, ch: Channel) -> None:
        if ch.unicast is not None:
            ch.unicast.stop()
        ch.hung_up = True
        ch.destroyed = True
        if ch.hangup_cause is None:
            ch.hangup_cause = "CRASH"
        ch.hangup_event.set()
        self.channels.pop(ch.uuid, None)
        phone = ch.phone_call
        if phone is not None:
            phone.finished.set()
            phone.connected.set()

    def drop_all_connections(self) -> None:
        """Fault hook: every ESL TCP connection (inbound and outbound) is reset now."""
        for s in list(self.sessions):
            s.close(abort=True)

    def drop_inbound_connections(self) -> int:
        """Fault hook: only the inbound ESL connections are reset; channels stay up."""
        dropped = [s for s in list(self.sessions) if not s.outbound]
        for s in dropped:
            s.close(abort=True)
        return len(dropped)

    def drop_outbound_socket(self, uuid: str) -> bool:
        """Fault hook: the outbound socket of channel ``uuid`` is reset. As in FreeSWITCH
        the socket application ends with it and the channel is hung up."""
        for s in list(self.sessions):
            if s.outbound and s.channel is not None and s.channel.uuid == uuid:
                s.close(abort=True)
                self._on_outbound_gone(s)
                return True
        return False

    def drop_next_command(self, count: int = 1) -> None:
        """Fault hook: the next `count` commands (any connection) get no reply; the
        connection is reset right after they arrive."""
        self._drop_next_command += count

    def inject_raw(self, data: bytes, close_after: bool = False, inbound_only: bool = True) -> int:
        """Fault hook: write raw bytes (garbage, a truncated frame) to the ESL connections."""
        n = 0
        for s in list(self.sessions):
            if inbound_only and s.outbound:
                continue
            if s.closed:
                continue
            s.send(data)
            n += 1
            if close_after:
                s.close()
        return n
