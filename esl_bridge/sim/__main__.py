"""`python -m esl_bridge.sim`: a standalone simulated FreeSWITCH for the demo.

    python -m esl_bridge.sim --esl-port 8021 --socket-target 127.0.0.1:8084 \
        --call 1001:01002:30

`--call caller:dest[:every_seconds]` makes a simulated phone dial into the gateway (once, or
again every N seconds) so the SIP -> RTC direction can be tried without a phone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from esl_bridge.config import LogSettings
from esl_bridge.logs import configure_logging, get_logger

from .server import SimConfig, Simulator

log = get_logger("sim")


def _host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m esl_bridge.sim", description=__doc__.split("\n")[0])
    p.add_argument("--esl-host", default="127.0.0.1")
    p.add_argument("--esl-port", type=int, default=8021, help="0 = ephemeral")
    p.add_argument("--password", default="ClueCon")
    p.add_argument("--domain", default="127.0.0.1")
    p.add_argument(
        "--socket-target",
        type=_host_port,
        default=None,
        help="host:port of the gateway's outbound socket server (the dialplan socket app)",
    )
    p.add_argument("--call", action="append", default=[], help="caller:dest[:every_seconds]")
    p.add_argument("--hangup-after", type=float, default=None, help="phone hangs up after N s")
    p.add_argument("--first-call-delay", type=float, default=0.0, help="late event batch (s)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    configure_logging(
        LogSettings(
            level=1 if args.verbose else 2,
            file="",
            max_file_size=100,
            backup_count=5,
            json=False,
            console="auto",
        ),
        secrets=[args.password],
    )
    config = SimConfig(
        esl_host=args.esl_host,
        esl_port=args.esl_port,
        password=args.password,
        domain=args.domain,
        socket_target=args.socket_target,
        first_call_event_delay=args.first_call_delay,
    )
    asyncio.run(_run(config, args.call, args.hangup_after))
    return 0


async def _run(config: SimConfig, calls: list[str], hangup_after: float | None) -> None:
    sim = Simulator(config)
    await sim.start()
    log.info("sim.listening", address=f"{config.esl_host}:{sim.esl_port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    async def dialer(spec: str) -> None:
        parts = spec.split(":")
        caller, dest = parts[0], parts[1]
        every = float(parts[2]) if len(parts) > 2 else None
        while not stop.is_set():
            if not sim.crashed:
                call = await sim.place_call(caller, dest, hangup_after=hangup_after)
                log.info("sim.phone_dials", caller=caller, dest=dest, uuid=call.uuid)
            if every is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)

    tasks = [asyncio.create_task(dialer(c)) for c in calls]
    await stop.wait()
    for t in tasks:
        t.cancel()
    await sim.stop()


if __name__ == "__main__":
    raise SystemExit(main())
