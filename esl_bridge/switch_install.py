"""``esl-bridge check-switch --install`` (``scripts/freeswitch.sh check --install``): the
three set-up steps of README.rst's FreeSWITCH setup, done on the switch's conf directory,
each only when needed (running it again changes nothing):

1. ``conf/vars.xml``: the line ``<X-PRE-PROCESS cmd="set" data="esl_bridge_socket=H:P"/>``
   with ``[socket]`` of rtx.conf. A line for ``esl_bridge_socket`` that is there already
   (FreeSWITCH acts on one even inside an XML comment) is given the right value; without
   one, the line goes before the last ``</include>``.
2. ``conf/dialplan/default/00_esl_bridge.xml``: the repository's
   ``dialplan/default/00_esl_bridge.xml``; with conference dial-in on (``[conference]
   on`` and a ``dialin_prefix``), also ``01_esl_bridge_conference.xml``, its expression's
   ``9`` replaced by that prefix.
3. ``reloadxml`` over the event socket, when 1 or 2 changed something.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CONF_DIRS = ("/usr/local/freeswitch/conf", "/etc/freeswitch")
EXTENSION = Path("dialplan") / "default" / "00_esl_bridge.xml"
DIAL_IN = Path("dialplan") / "default" / "01_esl_bridge_conference.xml"
_DIAL_IN_EXPRESSION = 'expression="^9('
_SOCKET_LINE = re.compile(
    r"<X-PRE-PROCESS\s+cmd=\"set\"\s+data=\"esl_bridge_socket=[^\"]*\"\s*/>", re.I
)


class InstallError(Exception):
    """The steps cannot be done (nothing was changed)."""


@dataclass(frozen=True)
class FileChange:
    path: Path
    text: str  # the file's content after the step
    changed: bool
    what: str


def default_conf_dir() -> Path | None:
    for candidate in CONF_DIRS:
        if (Path(candidate) / "vars.xml").is_file():
            return Path(candidate)
    return None


def plan(
    conf_dir: Path, socket: str, dialplan_dir: Path, dialin_prefix: str = ""
) -> list[FileChange]:
    """Steps 1 and 2 as file changes (nothing written); InstallError for a missing file.
    ``dialin_prefix``: the conference dial-in route's prefix; empty: no such route."""
    vars_xml = conf_dir / "vars.xml"
    if not vars_xml.is_file():
        raise InstallError(f"{vars_xml} does not exist: is {conf_dir} FreeSWITCH's conf?")
    source = dialplan_dir / "default" / EXTENSION.name
    if not source.is_file():
        raise InstallError(
            f"{source} does not exist: run from a checkout of esl-bridge, or give "
            "--dialplan-dir (the repository's dialplan/ folder)"
        )
    line = f'<X-PRE-PROCESS cmd="set" data="esl_bridge_socket={socket}"/>'
    text = vars_xml.read_text("utf-8")
    found = _SOCKET_LINE.findall(text)
    if found:
        new_text = _SOCKET_LINE.sub(line, text)
        what = f"set esl_bridge_socket={socket} in {vars_xml}"
    else:
        at = text.rfind("</include>")
        if at < 0:
            raise InstallError(f"{vars_xml} has no </include>: not a FreeSWITCH vars.xml?")
        new_text = text[:at] + f"  {line}\n" + text[at:]
        what = f"add esl_bridge_socket={socket} to {vars_xml}"
    target_dir = conf_dir / "dialplan" / "default"
    if not target_dir.is_dir():
        raise InstallError(f"{target_dir} does not exist: no default dialplan context?")
    target = target_dir / EXTENSION.name
    wanted = source.read_text("utf-8")
    current = target.read_text("utf-8") if target.is_file() else None
    changes = [
        FileChange(vars_xml, new_text, new_text != text, what),
        FileChange(target, wanted, current != wanted, f"copy {source} to {target}"),
    ]
    if dialin_prefix:
        changes.append(_dial_in_route(dialplan_dir, target_dir, dialin_prefix))
    return changes


def _dial_in_route(dialplan_dir: Path, target_dir: Path, prefix: str) -> FileChange:
    source = dialplan_dir / "default" / DIAL_IN.name
    if not source.is_file():
        raise InstallError(f"{source} does not exist: the conference dial-in route")
    text = source.read_text("utf-8")
    if text.count(_DIAL_IN_EXPRESSION) != 1:
        raise InstallError(f"{source}: expected one {_DIAL_IN_EXPRESSION}...: edited by hand?")
    wanted = text.replace(_DIAL_IN_EXPRESSION, f'expression="^{prefix}(')
    target = target_dir / DIAL_IN.name
    current = target.read_text("utf-8") if target.is_file() else None
    what = f"copy {source} to {target}" + ("" if prefix == "9" else f" (prefix {prefix})")
    return FileChange(target, wanted, current != wanted, what)


def install(
    changes: list[FileChange],
    reloadxml: Callable[[], str],
    *,
    dry_run: bool,
    out: Callable[[str], None],
) -> bool:
    """Write the changed files, then reloadxml; False when a step failed."""
    for change in changes:
        if not change.changed:
            out(f"unchanged: {change.path}")
        elif dry_run:
            out(f"would {change.what}")
        else:
            try:
                tmp = change.path.with_name(change.path.name + ".esl-bridge.tmp")
                tmp.write_text(change.text, "utf-8")
                if change.path.exists():
                    tmp.chmod(change.path.stat().st_mode & 0o777)
                tmp.replace(change.path)
            except OSError as exc:
                out(f"FAILED to {change.what}: {exc.strerror or exc}")
                return False
            out(f"done: {change.what}")
    if not any(c.changed for c in changes):
        return True
    if dry_run:
        out("would run: reloadxml")
        return True
    reply = reloadxml().strip()
    if not reply.startswith("+OK"):
        out(f"FAILED: reloadxml answered {reply!r}")
        return False
    out(f"done: reloadxml ({reply})")
    return True


def esl_api(host: str, port: int, password: str, command: str, timeout: float) -> str:
    """One api command over a fresh inbound connection (gevent, main thread)."""
    from esl_bridge.esl.control import EslError, InboundClient

    client = InboundClient(
        host,
        port,
        password,
        events=["BACKGROUND_JOB"],
        command_timeout=timeout,
        connect_timeout=timeout,
        backoff_max=0.5,
    )
    try:
        client.connect(timeout=timeout)
        name, _, arg = command.partition(" ")
        return str(client.api(name, *([arg] if arg else [])).body)
    except EslError as exc:
        return f"-ERR {exc}"
    finally:
        client.stop()
