"""The ``esl-bridge`` command: run, demo, check-config, check-switch, acc-rule,
install-service, status, token, version."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from esl_bridge import __version__, config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # a config file that cannot be used


def _load(path: str, *, for_run: bool = False) -> config.Settings | None:
    """Load a config file, printing every defect to stderr; None when it cannot be used.

    ``for_run``: also what ``run`` would refuse (``run_problems``). ``run`` and
    ``check-config`` both load this way, so they cannot disagree about a file.
    """
    try:
        settings = config.load(path)
    except config.ConfigError as exc:
        _report(exc.problems)
        return None
    for warning in settings.warnings:
        print(f"esl-bridge: warning: {warning}", file=sys.stderr)
    problems = run_problems(settings) if for_run else []
    if problems:
        _report(problems)
        return None
    return settings


def _report(problems: Sequence[config.ConfigProblem]) -> None:
    print(f"esl-bridge: {len(problems)} problem(s) in the configuration:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config, for_run=True)
    if settings is None:
        return EXIT_CONFIG
    print(config.render(settings))
    numbers = settings.rtm2sip.numbers
    if numbers:
        shown = ", ".join(numbers[:5]) + (", ..." if len(numbers) > 5 else "")
        print(f"# acc_rule: {len(numbers)} numbers ({shown})")
    print(f"# {settings.source}: OK")
    return EXIT_OK


def run_problems(settings: config.Settings) -> list[config.ConfigProblem]:
    """What keeps ``run`` from starting with these settings, though the file itself is valid.

    Besides the login rule, the parts of the gateway that check their own settings are
    built here once, before anything starts, so a value they refuse is a config problem.
    """
    source = settings.source
    problems: list[config.ConfigProblem] = []
    if not settings.auth.open_mode and not settings.auth.app_certificate:
        problems.append(
            config.ConfigProblem(
                source,
                None,
                None,
                None,
                "[auth] app_certificate is empty: no web user could log in. Set it to a long "
                "random secret (tokens are signed with it), or open_mode = 1 for a local demo.",
            )
        )
    from esl_bridge.media.unicast import PortAllocator
    from esl_bridge.signaling.settings import signaling_settings

    try:
        signaling_settings(settings)
    except ValueError as exc:
        problems.append(config.ConfigProblem(source, "limits", None, None, str(exc)))
    media = settings.media
    try:
        PortAllocator(media.unicast_port_min, media.unicast_port_max)
    except ValueError as exc:
        problems.append(
            config.ConfigProblem(
                source, "media", "unicast_port_max", media.unicast_port_max, str(exc)
            )
        )
    if settings.web.tls:
        from esl_bridge.gateway.web import ssl_context

        try:
            ssl_context(settings)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            problems.append(
                config.ConfigProblem(
                    source,
                    "web",
                    "tls_cert",
                    settings.web.tls_cert,
                    f"cannot load it with tls_key: {exc}",
                )
            )
    if settings.cluster.enabled:
        # redis-py's own reading of the URL (no connection is made here).
        from redis.asyncio import ConnectionPool

        try:
            ConnectionPool.from_url(settings.cluster.redis_url)
        except ValueError as exc:
            problems.append(
                config.ConfigProblem(
                    source,
                    "cluster",
                    "redis_url",
                    config.masked_redis_url(settings.cluster.redis_url),
                    f"redis cannot use it: {exc}",
                )
            )
    if settings.log.file:
        problem = _log_file_problem(settings)
        if problem is not None:
            problems.append(problem)
    return problems


def _log_file_problem(settings: config.Settings) -> config.ConfigProblem | None:
    """Open [log] file for appending as the log handler will; a file made here is removed."""
    path = Path(settings.log.file)
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        reason = f"cannot be opened for writing: {exc.strerror or exc}"
        return config.ConfigProblem(settings.source, "log", "file", settings.log.file, reason)
    if not existed:
        path.unlink(missing_ok=True)
    return None


def cmd_run(args: argparse.Namespace) -> int:
    if args.config is None and args.workers != 1:
        print(
            "esl-bridge run: --workers needs an rtx.conf (the demo is one process)", file=sys.stderr
        )
        return EXIT_FAILURE
    if args.config is None:
        print(
            "esl-bridge run: no rtx.conf given, so no FreeSWITCH is configured: "
            "starting the built-in demo with a simulated FreeSWITCH.",
            file=sys.stderr,
        )
        return cmd_demo(argparse.Namespace(host="127.0.0.1", port=8080, log_level=2))
    settings = _load(args.config, for_run=True)
    if settings is None:
        return EXIT_CONFIG
    from esl_bridge.gateway import workers
    from esl_bridge.logs import configure_logging

    worker: tuple[int, int] | None = args.worker
    if worker is None and args.workers > 1:
        return _run_supervisor(args.config, settings, args.workers)
    if worker is not None:
        if not workers.die_with_supervisor(args.supervisor_pid):
            print(
                "esl-bridge run: --worker is for the processes of run --workers N, and "
                "their supervisor is gone",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        settings = workers.worker_settings(settings, worker[0])
    try:
        configure_logging(settings.log, secrets=settings.secrets())
    except OSError as exc:  # the file went away or lost its rights since the check
        reason = f"cannot be opened for writing: {exc.strerror or exc}"
        _report([config.ConfigProblem(settings.source, "log", "file", settings.log.file, reason)])
        return EXIT_CONFIG
    from esl_bridge.gateway.process import Gateway
    from esl_bridge.service import ServiceNotifier

    gateway = Gateway(settings, reuse_port=worker is not None)
    if worker is not None:
        gateway.prepare_reload = lambda new: workers.worker_settings(new, worker[0])
    # A worker of run --workers N talks to its supervisor, if anyone (workers.NotifyRelay).
    notifier = ServiceNotifier(gateway.healthy, gateway.loop_alive)
    gateway.on_stopping = notifier.stopping
    gateway.stop_on_signals()
    try:
        gateway.start()
    except OSError as exc:
        print(f"esl-bridge run: cannot start: {exc}", file=sys.stderr)
        gateway.stop(drain=0)
        return EXIT_FAILURE
    except ValueError as exc:  # a setting some part refuses that the checks above missed
        print(f"esl-bridge run: {settings.source}: cannot start: {exc}", file=sys.stderr)
        gateway.stop(drain=0)
        return EXIT_CONFIG
    host, port = gateway.web_address or (settings.web.host, settings.web.port)
    scheme = "https" if settings.web.tls else "http"
    who = f"worker {worker[0]}/{worker[1]}" if worker is not None else "gateway"
    print(
        f"esl-bridge: {who} running, web client at {scheme}://{host}:{port}/ (Ctrl-C to stop)",
        file=sys.stderr,
    )
    notifier.start()
    gateway.wait()
    gateway.stop()
    exit_now(EXIT_OK)


def _run_supervisor(path: str, settings: config.Settings, count: int) -> int:
    """``run --workers N``: start N worker processes and watch them (gateway/workers.py)."""
    from esl_bridge.gateway import workers
    from esl_bridge.logs import configure_logging

    problems = workers.workers_problems(settings, count)
    if problems:
        _report(problems)
        return EXIT_CONFIG
    held = workers.ports_in_use(settings)
    if held:
        print(
            "esl-bridge run: cannot start: in use already: " + "; ".join(held),
            file=sys.stderr,
        )
        return EXIT_FAILURE
    try:
        configure_logging(settings.log, secrets=settings.secrets())
    except OSError as exc:
        reason = f"cannot be opened for writing: {exc.strerror or exc}"
        _report([config.ConfigProblem(settings.source, "log", "file", settings.log.file, reason)])
        return EXIT_CONFIG
    scheme = "https" if settings.web.tls else "http"
    print(
        f"esl-bridge: {count} worker processes, web client at "
        f"{scheme}://{settings.web.host}:{settings.web.port}/ (Ctrl-C to stop)",
        file=sys.stderr,
    )
    relay = workers.NotifyRelay() if os.environ.get("NOTIFY_SOCKET") else None
    supervisor = workers.Supervisor(count, workers.spawn_worker(path, count, relay), relay=relay)

    def reopen_log() -> None:  # SIGHUP: logrotate moved the supervisor's file away
        with contextlib.suppress(OSError):
            configure_logging(settings.log, secrets=settings.secrets())

    supervisor.on_hup = reopen_log
    return supervisor.run()


def _workers_count(text: str) -> int:
    from esl_bridge.gateway.workers import MAX_WORKERS

    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= count <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_WORKERS}, not {count}")
    return count


def _worker_of(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise argparse.ArgumentTypeError(f"expected <index>/<count>, not {text!r}")
    return int(index), int(count)


def exit_now(code: int) -> NoReturn:
    """The gateway has stopped: end the process at once, logs flushed.

    By now every call, socket, peer connection and the asyncio thread are closed
    (``gateway.stopped`` is logged after them). What the interpreter would still do is
    tear down every module and object of aiortc, PyAV, numpy and gevent: 0.3-0.5 s on an
    idle machine and seconds on a loaded one, after the log said the gateway stopped.
    So the process exits without it. A thread that would have held the exit is named.
    """
    from esl_bridge.logs import get_logger

    main = threading.main_thread()
    lingering = sorted(
        t.name for t in threading.enumerate() if t is not main and not t.daemon and t.is_alive()
    )
    log = get_logger("cli")
    if lingering:
        log.warning("process.exit", code=code, lingering_threads=lingering)
    else:
        log.info("process.exit", code=code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def cmd_check_switch(args: argparse.Namespace) -> int:
    """Is FreeSWITCH set up for the gateway? (esl_bridge/switch_check.py)"""
    if args.conf is None:
        settings: config.Settings | None = config.from_text("", "<defaults>")
    else:
        settings = _load(args.conf)
    if settings is None:
        return EXIT_CONFIG
    from esl_bridge.config import LogSettings
    from esl_bridge.logs import configure_logging
    from esl_bridge.switch_check import check_switch, report

    # stdout is the report (JSON with --json); only warnings and errors, on stderr.
    configure_logging(
        LogSettings(
            level=3, file="", max_file_size=100, backup_count=5, json=False, console="auto"
        ),
        secrets=settings.secrets(),
    )

    if args.dry_run and not args.install:
        print("esl-bridge check-switch: --dry-run goes with --install", file=sys.stderr)
        return EXIT_CONFIG
    if args.install:
        installed = _install_switch(args, settings)
        if installed is not None:
            return installed
    checks = check_switch(settings, context=args.context, timeout=args.timeout)
    print(report(checks, as_json=args.json))
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILURE


def _install_switch(args: argparse.Namespace, settings: config.Settings) -> int | None:
    """check-switch --install: the README's set-up steps (esl_bridge/switch_install.py);
    an exit status when it ends here, None to go on with the checks."""
    from esl_bridge import switch_install as si

    conf_dir = Path(args.conf_dir) if args.conf_dir else si.default_conf_dir()
    if conf_dir is None:
        print(
            "esl-bridge check-switch: FreeSWITCH's conf directory not found in "
            f"{' or '.join(si.CONF_DIRS)}: give --conf-dir",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    dialplan = (
        Path(args.dialplan_dir) if args.dialplan_dir else Path(__file__).parents[1] / "dialplan"
    )
    socket = f"{settings.socket.host}:{settings.socket.port}"
    try:
        conference = settings.conference
        dial_in = conference.dialin_prefix if conference.on else ""
        changes = si.plan(conf_dir, socket, dialplan, dial_in)
    except si.InstallError as exc:
        print(f"esl-bridge check-switch: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    esl = settings.esl

    def reloadxml() -> str:
        return si.esl_api(esl.host, esl.port, esl.password, "reloadxml", args.timeout)

    # With --json stdout is the report only: the steps go to stderr.
    out = (lambda line: print(line, file=sys.stderr)) if args.json else print
    if not si.install(changes, reloadxml, dry_run=args.dry_run, out=out):
        return EXIT_FAILURE
    return EXIT_OK if args.dry_run else None


def cmd_acc_rule(args: argparse.Namespace) -> int:
    """The acc_rule of the numbers on stdin (one a line); with --conf, rtx.conf's against them."""
    import json

    from esl_bridge.numbers import AccRuleError
    from esl_bridge.provisioning import acc_rule_for, compare

    users = [line.strip() for line in sys.stdin if line.strip()]
    try:
        rule = acc_rule_for(users)
    except AccRuleError as exc:
        print(f"esl-bridge acc-rule: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.conf is None:
        print(json.dumps({"acc_rule": rule, "users": len(set(users))}) if args.json else rule)
        return EXIT_OK
    settings = _load(args.conf)
    if settings is None:
        return EXIT_CONFIG
    diff = compare(users, settings.rtm2sip.numbers)
    if args.json:
        print(
            json.dumps(
                {
                    "acc_rule": rule,
                    "users": len(set(users)),
                    "ok": diff.same,
                    "not_in_rule": list(diff.not_in_rule),
                    "not_provisioned": list(diff.not_provisioned),
                }
            )
        )
    elif diff.same:
        print(f"OK   acc_rule of {args.conf} names exactly the {len(set(users))} users: {rule}")
    else:
        for what, numbers in (
            ("users not in acc_rule", diff.not_in_rule),
            ("acc_rule numbers that are no user", diff.not_provisioned),
        ):
            if numbers:
                shown = ", ".join(numbers[:10]) + (", ..." if len(numbers) > 10 else "")
                print(f"FAIL {what}: {shown}")
        print(f"fix: set [rtm2sip] acc_rule = {rule}")
    return EXIT_OK if diff.same else EXIT_FAILURE


def cmd_install_service(args: argparse.Namespace) -> int:
    """Write the systemd unit and the service user's sysusers.d file (esl_bridge/service.py)."""
    from esl_bridge.service import find_executable, install_plan, run_plan

    executable = args.executable or find_executable()
    if not os.path.isabs(executable) or not os.path.isabs(args.conf):
        print("esl-bridge install-service: give absolute paths", file=sys.stderr)
        return EXIT_FAILURE
    steps = install_plan(
        executable, args.conf, args.unit_dir, args.sysusers_dir, run_commands=not args.no_reload
    )
    if not run_plan(steps, args.dry_run, print):
        return EXIT_FAILURE
    if not args.dry_run:
        print(
            f"next: put the gateway's rtx.conf at {args.conf} (readable by group "
            "esl-bridge; [log] file under /var/log/esl-bridge, [web] admin_socket = "
            "/run/esl-bridge/admin.sock), then: systemctl enable --now esl-bridge"
        )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Ask the running gateway through its admin socket (gateway/admin.py)."""
    import json

    from esl_bridge.gateway.admin import AdminUnreachable, fetch_status

    path = args.socket
    if path is None:
        settings = _load(args.conf) if args.conf is not None else None
        if args.conf is not None and settings is None:
            return EXIT_CONFIG
        path = settings.web.admin_socket if settings is not None else ""
        if not path:
            where = args.conf or "no --conf given"
            print(
                f"esl-bridge status: no admin socket ({where}): set [web] admin_socket in "
                "rtx.conf and restart the gateway, or give --socket PATH",
                file=sys.stderr,
            )
            return EXIT_CONFIG
    try:
        status = fetch_status(path, timeout=args.timeout)
    except AdminUnreachable as exc:
        print(f"esl-bridge status: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    print(render_status(status))
    return EXIT_OK


def render_status(status: dict[str, object]) -> str:
    """The status reply as lines for a terminal."""
    reply: dict[str, Any] = dict(status)
    switches = ", ".join(f"{s['switch']} {s['state']}" for s in reply.get("switches", []))
    lines = [
        f"esl-bridge {reply.get('version')}  node {reply.get('node')}  "
        f"{'healthy' if reply.get('healthy') else 'NOT healthy'}",
        f"ESL: {reply.get('esl')}" + (f" ({switches})" if switches else ""),
    ]
    users = list(reply.get("users_online", []))
    lines.append(f"users online: {len(users)}" + (f" ({', '.join(users)})" if users else ""))
    calls = list(reply.get("calls", []))
    lines.append(f"calls: {len(calls)}")
    if calls:
        header = ("DIRECTION", "UID", "NUMBER", "STATE", "DURATION", "CODEC", "LOST", "CALL ID")
        rows = [header] + [
            (
                str(c["direction"]),
                str(c["uid"]),
                str(c["number"]),
                str(c["state"]),
                f"{c['duration']:.1f}s",
                str(c["codec"] or "-"),
                "-" if c["lost"] is None else str(c["lost"]),
                str(c["call_id"]),
            )
            for c in calls
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        for row in rows:
            lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


def cmd_token(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    if not settings.auth.app_certificate:
        print(
            f"esl-bridge token: {settings.source}: [auth] app_certificate is empty; "
            "tokens are signed with it",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    from esl_bridge.signaling.auth import mint_token
    from esl_bridge.signaling.protocol import valid_uid

    if not valid_uid(args.uid):
        print(f"esl-bridge token: {args.uid!r} is not a valid uid", file=sys.stderr)
        return EXIT_FAILURE
    ttl = args.ttl if args.ttl is not None else settings.auth.token_ttl
    if ttl <= 0:
        print("esl-bridge token: --ttl must be positive", file=sys.stderr)
        return EXIT_FAILURE
    # The token goes to stdout only, for the caller's own script; never to a log.
    print(
        mint_token(
            settings.global_.appid, args.uid, settings.auth.app_certificate, ttl, time.time()
        )
    )
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from esl_bridge.config import LogSettings
    from esl_bridge.gateway.demo import Demo
    from esl_bridge.logs import configure_logging

    configure_logging(
        LogSettings(
            level=args.log_level,
            file="",
            max_file_size=100,
            backup_count=5,
            json=False,
            console="auto",
        )
    )
    demo = Demo(web_host=args.host, web_port=args.port, log_level=args.log_level)
    try:
        gateway = demo.start()
    except OSError as exc:
        print(f"esl-bridge demo: cannot start: {exc}", file=sys.stderr)
        demo.stop()
        return EXIT_FAILURE
    host, port = gateway.web_address or (args.host, args.port)
    print(
        f"esl-bridge demo: open http://{host}:{port}/ in a browser on this machine.\n"
        "  Log in with any name (demo mode needs no token), then call 1000 (tone), "
        "1001 (echo), 1003 (busy), 1004 (no answer)...\n"
        "  FreeSWITCH is simulated; Ctrl-C stops everything.",
        flush=True,
    )
    gateway.wait()
    demo.stop()
    exit_now(EXIT_OK)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esl-bridge",
        description="WebRTC <-> SIP gateway driving FreeSWITCH over its Event Socket.",
    )
    parser.add_argument("--version", action="version", version=f"esl-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run", help="run the gateway from an rtx.conf file (without one: the demo)"
    )
    run.add_argument("config", nargs="?", help="path to rtx.conf; omitted: run the demo")
    run.add_argument(
        "--workers",
        type=_workers_count,
        default=1,
        metavar="N",
        help="worker processes sharing the web and socket ports (1; more needs "
        "[cluster] redis_url)",
    )
    # Set by the supervisor of --workers N on the processes it starts.
    run.add_argument("--worker", type=_worker_of, default=None, help=argparse.SUPPRESS)
    run.add_argument("--supervisor-pid", type=int, default=0, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    demo = sub.add_parser(
        "demo", help="run the gateway with a built-in FreeSWITCH simulator (no setup needed)"
    )
    demo.add_argument("--host", default="127.0.0.1", help="web server address (127.0.0.1)")
    demo.add_argument("--port", type=int, default=8080, help="web server port (8080)")
    demo.add_argument(
        "--log-level", type=int, default=2, choices=range(0, 6), help="0 SENSITIVE .. 5 NONE (2)"
    )
    demo.set_defaults(func=cmd_demo)

    check = sub.add_parser(
        "check-config", help="validate rtx.conf and print the effective settings (secrets masked)"
    )
    check.add_argument("config", help="path to rtx.conf")
    check.set_defaults(func=cmd_check_config)

    switch = sub.add_parser(
        "check-switch",
        help="check that FreeSWITCH is set up for the gateway (one OK/FAIL line per check)",
    )
    switch.add_argument("--conf", help="path to rtx.conf ([esl], [socket], acc_rule, codecs)")
    switch.add_argument("--json", action="store_true", help="print the result as JSON")
    switch.add_argument("--context", default="default", help="dialplan context of the phones")
    switch.add_argument("--timeout", type=float, default=5.0, help="seconds per ESL step (5)")
    switch.add_argument(
        "--install",
        action="store_true",
        help="first do the set-up steps that are missing (vars.xml, the 0 route, reloadxml)",
    )
    switch.add_argument("--dry-run", action="store_true", help="with --install: only print")
    switch.add_argument("--conf-dir", help="FreeSWITCH's conf directory (found when omitted)")
    switch.add_argument("--dialplan-dir", help="the repository's dialplan/ folder")
    switch.set_defaults(func=cmd_check_switch)

    rule = sub.add_parser(
        "acc-rule",
        help="the acc_rule of the numbers on stdin; with --conf, check rtx.conf's against them",
    )
    rule.add_argument("--conf", help="path to rtx.conf whose [rtm2sip] acc_rule to check")
    rule.add_argument("--json", action="store_true", help="print the result as JSON")
    rule.set_defaults(func=cmd_acc_rule)

    service = sub.add_parser(
        "install-service",
        help="install the systemd unit (esl-bridge.service) and the esl-bridge system user",
    )
    service.add_argument("--dry-run", action="store_true", help="print what it would do")
    service.add_argument(
        "--conf", default="/etc/esl-bridge/rtx.conf", help="rtx.conf the service runs with"
    )
    service.add_argument("--unit-dir", default="/etc/systemd/system", help=argparse.SUPPRESS)
    service.add_argument("--sysusers-dir", default="/etc/sysusers.d", help=argparse.SUPPRESS)
    service.add_argument("--executable", help=argparse.SUPPRESS)
    service.add_argument(
        "--no-reload",
        action="store_true",
        help="only write the files (no systemd-sysusers, no systemctl daemon-reload)",
    )
    service.set_defaults(func=cmd_install_service)

    status = sub.add_parser(
        "status", help="ask the running gateway (its [web] admin_socket): calls, users, ESL"
    )
    status.add_argument("--conf", help="path to rtx.conf (for [web] admin_socket)")
    status.add_argument("--socket", help="the admin socket's path (instead of --conf)")
    status.add_argument("--json", action="store_true", help="print the reply as JSON")
    status.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (5)")
    status.set_defaults(func=cmd_status)

    token = sub.add_parser(
        "token", help="mint a login token for a web user (signed with [auth] app_certificate)"
    )
    token.add_argument("config", help="path to rtx.conf")
    token.add_argument("--uid", required=True, help="the web user's uid")
    token.add_argument(
        "--ttl", type=int, default=None, help="lifetime in seconds (default: [auth] token_ttl)"
    )
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_FAILURE
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
