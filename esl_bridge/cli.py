"""The ``esl-bridge`` command: run, demo, check-config, token, version."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from esl_bridge import __version__, config

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2  # a config file that cannot be used
EXIT_UNAVAILABLE = 3  # asked for a part of the gateway that does not exist yet


def _load(path: str) -> config.Settings | None:
    """Load a config file, printing every defect to stderr; None when it cannot be used."""
    try:
        settings = config.load(path)
    except config.ConfigError as exc:
        print(f"esl-bridge: {len(exc.problems)} problem(s) in the configuration:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return None
    for warning in settings.warnings:
        print(f"esl-bridge: warning: {warning}", file=sys.stderr)
    return settings


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    print(config.render(settings))
    for note in startup_problems(settings):
        print(f"esl-bridge: warning: {note}", file=sys.stderr)
    numbers = settings.rtm2sip.numbers
    if numbers:
        shown = ", ".join(numbers[:5]) + (", ..." if len(numbers) > 5 else "")
        print(f"# acc_rule: {len(numbers)} numbers ({shown})")
    print(f"# {settings.source}: OK")
    return EXIT_OK


def startup_problems(settings: config.Settings) -> list[str]:
    """What keeps ``run`` from starting with these settings, though the file itself is valid."""
    problems = []
    if not settings.auth.open_mode and not settings.auth.app_certificate:
        problems.append(
            "[auth] app_certificate is empty: no web user could log in. Set it to a long "
            "random secret (tokens are signed with it), or open_mode = 1 for a local demo."
        )
    return problems


def cmd_run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return EXIT_CONFIG
    problems = startup_problems(settings)
    if problems:
        for problem in problems:
            print(f"esl-bridge: {settings.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    from esl_bridge.logs import configure_logging, get_logger

    configure_logging(settings.log, secrets=settings.secrets())
    get_logger("cli").error("gateway_unavailable", reason=_NOT_BUILT)
    print(f"esl-bridge run: {_NOT_BUILT}", file=sys.stderr)
    return EXIT_UNAVAILABLE


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


_NOT_BUILT = (
    "the call gateway (ESL control, signalling hub, media leg, call logic) is not built yet "
    "in this version; only check-config works. Nothing was started."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esl-bridge",
        description="WebRTC <-> SIP gateway driving FreeSWITCH over its Event Socket.",
    )
    parser.add_argument("--version", action="version", version=f"esl-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway from an rtx.conf file")
    run.add_argument("config", help="path to rtx.conf")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check-config", help="validate rtx.conf and print the effective settings (secrets masked)"
    )
    check.add_argument("config", help="path to rtx.conf")
    check.set_defaults(func=cmd_check_config)

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
