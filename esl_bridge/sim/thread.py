"""Run the simulator on its own asyncio loop in a background thread.

    with SimulatorThread(SimConfig(socket_target=("127.0.0.1", 8084))) as sim:
        port = sim.esl_port
        call = sim.place_call(caller="1001", dest="01002", cus_data="x")
        call.wait_connected(5)
        ...
        assert sim.live_channel_count() == 0
        assert not sim.crashed

Every method blocks the calling thread only for the short time the loop needs to act (and
never longer than its timeout). Inside a gevent program call them from ordinary greenlets:
the wait is short, but it does block that hub for that time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .channel import Channel, FiredEvent
from .codecs import PCMU, Codec
from .extensions import Extension
from .media import AudioSource, UnicastStream
from .server import PhoneCall, SimConfig, Simulator

T = TypeVar("T")


class PhoneCallHandle:
    """Thread-safe view of a `PhoneCall` placed through `SimulatorThread.place_call`."""

    def __init__(self, owner: SimulatorThread, call: PhoneCall) -> None:
        self._owner = owner
        self.call = call

    @property
    def uuid(self) -> str:
        return self.call.uuid

    @property
    def channel(self) -> Channel:
        return self.call.channel

    @property
    def answered(self) -> bool:
        return self.call.answered

    @property
    def hangup_cause(self) -> str | None:
        return self.call.hangup_cause

    @property
    def finished(self) -> bool:
        return self.call.finished.is_set()

    @property
    def connect_error(self) -> str | None:
        return self.call.connect_error

    @property
    def events(self) -> list[FiredEvent]:
        return self.call.events

    @property
    def event_names(self) -> list[str]:
        return [e.name for e in self.call.events]

    @property
    def commands(self) -> list[str]:
        return self.call.commands

    @property
    def unicast(self) -> UnicastStream | None:
        return self.call.unicast

    @property
    def dtmf_to_phone(self) -> str:
        return "".join(self.call.channel.dtmf_to_phone)

    def hangup(self, cause: str = "NORMAL_CLEARING", timeout: float = 5.0) -> None:
        """The phone hangs up (BYE)."""
        self._owner.call_soon(self.call.hangup(cause), timeout)

    def send_dtmf(self, digits: str, timeout: float = 5.0) -> None:
        """The phone sends RFC 2833 digits (DTMF events on the socket)."""
        self._owner.call_soon(self.call.send_dtmf(digits), timeout)

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """True once the gateway got the connect reply (False on error/timeout)."""
        ok = self._owner.wait_for(lambda: self.call.connected.is_set(), timeout)
        return ok and self.call.connect_error is None and self.call.session is not None

    def wait_answered(self, timeout: float = 5.0) -> bool:
        return self._owner.wait_for(lambda: self.call.answered or self.finished, timeout) and (
            self.call.answered
        )

    def wait_finished(self, timeout: float = 5.0) -> bool:
        return self._owner.wait_for(lambda: self.finished, timeout)

    def wait_event(self, name: str, timeout: float = 5.0) -> FiredEvent | None:
        found: list[FiredEvent] = []

        def check() -> bool:
            found[:] = [e for e in self.call.events if e.name == name]
            return bool(found)

        return found[0] if self._owner.wait_for(check, timeout) else None


class SimulatorThread:
    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = SimConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a SimConfig or keyword overrides, not both")
        self.config = config
        self.sim = Simulator(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> SimulatorThread:
        self._thread = threading.Thread(target=self._main, name="fs-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("simulator did not start")
        if self._error is not None:
            raise RuntimeError("simulator failed to start") from self._error
        return self

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.sim.start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self.sim.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self, timeout: float = 5.0) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- running things on the loop ----------------------------------------------------------
    def call_soon(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run a coroutine on the simulator's loop and wait for its result."""
        assert self._loop is not None, "simulator not started"
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    def run_sync(self, fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
        """Call a plain function on the simulator's loop (it owns all state)."""

        async def wrapper() -> T:
            return fn(*args)

        return self.call_soon(wrapper(), timeout)

    @staticmethod
    def wait_for(
        predicate: Callable[[], bool],
        timeout: float = 5.0,
        interval: float = 0.01,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> bool:
        """Poll `predicate` until true or `timeout`; pass gevent.sleep as `sleep` in gevent."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            sleep(interval)

    def answer(self, uuid: str, timeout: float = 5.0) -> None:
        """The phone of an originated channel picks up now (ringing or in early media): a
        test answers when it has checked what came before, not after a delay."""

        async def pick_up() -> None:
            ch = self.sim.channels.get(uuid)
            if ch is None or ch.hung_up:
                raise LookupError(f"no live channel {uuid}")
            await self.sim._answer_later(ch, 0.0)

        self.call_soon(pick_up(), timeout)

    # ---- state -------------------------------------------------------------------------------
    @property
    def esl_port(self) -> int:
        return self.sim.esl_port

    @property
    def esl_address(self) -> tuple[str, int]:
        return self.config.esl_host, self.sim.esl_port

    @property
    def password(self) -> str:
        return self.config.password

    @property
    def crashed(self) -> bool:
        return self.sim.crashed

    @property
    def crash_reason(self) -> str | None:
        return self.sim.crash_reason

    def channels(self) -> list[Channel]:
        """Live channels (snapshot)."""
        return self.run_sync(self.sim.live_channels)

    def live_channel_count(self) -> int:
        return len(self.channels())

    def all_channels(self) -> list[Channel]:
        """Every channel created since start, dead or alive (snapshot)."""
        return list(self.sim.all_channels)

    def get_channel(self, uuid: str) -> Channel | None:
        for ch in reversed(self.sim.all_channels):
            if ch.uuid == uuid:
                return ch
        return None

    def api(self, command: str, timeout: float = 10.0) -> str:
        """Run an api command as if sent over ESL (`status`, `originate ...`)."""
        cmd, _, arg = command.partition(" ")
        return self.call_soon(self.sim.api(cmd, arg.strip()), timeout)

    # ---- calls -------------------------------------------------------------------------------
    def place_call(
        self,
        caller: str = "1001",
        dest: str = "01002",
        *,
        caller_name: str | None = None,
        cus_data: str | None = None,
        sip_headers: dict[str, str] | None = None,
        codec: str | Codec = PCMU,
        audio: str | AudioSource | None = "tone440",
        hangup_after: float | None = None,
        dtmf: list[tuple[float, str]] | None = None,
        target: tuple[str, int] | None = None,
        timeout: float = 5.0,
    ) -> PhoneCallHandle:
        call = self.call_soon(
            self.sim.place_call(
                caller,
                dest,
                caller_name=caller_name,
                cus_data=cus_data,
                sip_headers=sip_headers,
                codec=codec,
                audio=audio,
                hangup_after=hangup_after,
                dtmf=dtmf,
                target=target,
            ),
            timeout,
        )
        return PhoneCallHandle(self, call)

    def hangup(self, uuid: str, cause: str = "NORMAL_CLEARING", timeout: float = 5.0) -> None:
        ch = self.get_channel(uuid)
        if ch is not None:
            self.call_soon(self.sim.hangup(ch, cause), timeout)

    def phone_dtmf(self, uuid: str, digits: str, timeout: float = 5.0) -> None:
        ch = self.get_channel(uuid)
        if ch is not None:
            self.call_soon(self.sim.phone_dtmf(ch, digits), timeout)

    def set_extension(self, number: str, extension: Extension) -> None:
        self.run_sync(self.config.extensions.__setitem__, number, extension)

    def remove_extension(self, number: str) -> None:
        self.run_sync(self.config.extensions.pop, number, None)

    # ---- fault injection ---------------------------------------------------------------------
    def drop_all_connections(self) -> None:
        self.run_sync(self.sim.drop_all_connections)

    def drop_inbound_connections(self) -> int:
        return self.run_sync(self.sim.drop_inbound_connections)

    def drop_outbound_socket(self, uuid: str) -> bool:
        return self.run_sync(self.sim.drop_outbound_socket, uuid)

    def drop_next_command(self, count: int = 1) -> None:
        self.run_sync(self.sim.drop_next_command, count)

    def set_reply_delay(self, seconds: float) -> None:
        self.run_sync(setattr, self.sim, "reply_delay", seconds)

    def inject_raw(self, data: bytes, close_after: bool = False, inbound_only: bool = True) -> int:
        return self.run_sync(self.sim.inject_raw, data, close_after, inbound_only)

    def stop_listener(self) -> None:
        self.call_soon(self.sim.stop_listener())

    def start_listener(self) -> None:
        self.call_soon(self.sim.start_listener())

    def restart(self) -> None:
        """Like a FreeSWITCH restart: everything dropped, new Core-UUID, same port."""
        self.call_soon(self.sim.restart())

    def crash(self, reason: str = "crash requested by test") -> None:
        self.run_sync(self.sim.crash, reason)
