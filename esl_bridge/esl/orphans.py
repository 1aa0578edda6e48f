"""No channel outlives its gateway: identity variables, the switch-side watchdog, cleanup.

No I/O here: this module says *what* to ask FreeSWITCH; ``gateway/esl_side.py`` asks it.

Every channel the gateway handles carries two channel variables (set in the originate's
``{...}`` block, or with ``uuid_setvar_multi`` as soon as a socket session starts):

* ``esl_bridge_node``: the gateway's node id (``[cluster] node_id``), stable across restarts;
* ``esl_bridge_instance``: a new random id at every process start.

**Watchdog.** A gateway killed with ``kill -9`` leaves its channels on the switch: a SIP
caller still hearing the endless ringback (the ``playback`` runs inside the socket
application's park loop, so the socket's end cannot return from it), an originated leg
parked forever (README.rst, section Reliability, has the measurements). So the gateway
keeps one task armed on the switch's own scheduler::

    sched_api +30 esl_bridge_<instance>_<n> \
        hupall NORMAL_TEMPORARY_FAILURE esl_bridge_instance <instance>

and re-arms it every third of that time (arm ``n+1`` first, then ``sched_del`` group
``n``, so there is never a moment without one). While the gateway lives the task never
fires; once it dies, every channel of that process ends within ``[esl] orphan_timeout``
seconds, in every state, with one scheduler task per process rather than one per call.

**Cleanup at start.** A starting gateway lists the switch's channels, asks each one's
``esl_bridge_node`` / ``esl_bridge_instance``, and ends those of its own node left by an
earlier instance (cause ``NORMAL_TEMPORARY_FAILURE``) before it serves any number. With
several processes, each has its own node id and so cleans only its own leftovers.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass

NODE_VAR = "esl_bridge_node"
INSTANCE_VAR = "esl_bridge_instance"
# What the phone sees when its call is ended for a dead gateway: Q.850 41, SIP 503.
ORPHAN_CAUSE = "NORMAL_TEMPORARY_FAILURE"
UNDEFINED = "_undef_"  # uuid_getvar's answer for a variable the channel does not have

_NODE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def valid_node_id(node_id: str) -> bool:
    """Node ids go into channel variables and scheduler group names: no spaces or quotes."""
    return bool(_NODE_RE.match(node_id))


def default_node_id(hostname: str, socket_port: int) -> str:
    """Stable across restarts of the same gateway (one outbound socket port per process)."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", hostname)[:50].strip("-.") or "host"
    return f"{host}-{socket_port}"


@dataclass(frozen=True)
class GatewayIdentity:
    node_id: str
    instance_id: str

    @classmethod
    def new(cls, node_id: str) -> GatewayIdentity:
        if not valid_node_id(node_id):
            raise ValueError(f"invalid node id {node_id!r}: use letters, digits, _ . -")
        return cls(node_id, secrets.token_hex(8))

    def channel_vars(self) -> dict[str, str]:
        return {NODE_VAR: self.node_id, INSTANCE_VAR: self.instance_id}

    def setvar_multi_arg(self) -> str:
        """The argument of ``uuid_setvar_multi <uuid> <arg>``."""
        return ";".join(f"{k}={v}" for k, v in self.channel_vars().items())

    def is_predecessor(self, node: str, instance: str) -> bool:
        """A channel left by an earlier process of this node (not ours, not another node's)."""
        return node == self.node_id and instance != self.instance_id


class Watchdog:
    """The re-arm schedule of the switch-side watchdog; the caller runs the commands."""

    def __init__(self, identity: GatewayIdentity, timeout: float) -> None:
        if not timeout > 0 or math.isinf(timeout):
            raise ValueError(f"orphan timeout must be a positive number, not {timeout!r}")
        self.identity = identity
        self.seconds = max(1, math.ceil(timeout))  # the scheduler counts whole seconds
        self._next = 0
        self.armed: str | None = None  # group of the task that is armed now

    @property
    def period(self) -> float:
        """How often to re-arm: three chances before the armed task would fire."""
        return self.seconds / 3.0

    def group(self, n: int) -> str:
        return f"esl_bridge_{self.identity.instance_id}_{n}"

    def arm_args(self) -> tuple[str, str]:
        """(api command, argument) arming the next task; call ``armed_ok`` on ``+OK``."""
        group = self.group(self._next)
        hupall = f"hupall {ORPHAN_CAUSE} {INSTANCE_VAR} {self.identity.instance_id}"
        return "sched_api", f"+{self.seconds} {group} {hupall}"

    def armed_ok(self) -> str | None:
        """The new task is armed; returns the group of the previous one, to ``sched_del``."""
        previous, self.armed = self.armed, self.group(self._next)
        self._next += 1
        return previous

    def disarm(self) -> str | None:
        """The group to ``sched_del`` when the gateway stops cleanly (its calls are over)."""
        group, self.armed = self.armed, None
        return group


def channel_uuids(show_channels_json: str) -> list[str]:
    """The uuids in ``show channels as json``.

    FreeSWITCH answers ``{"row_count":0}`` when there is no channel, else
    ``{"row_count":N,"rows":[{"uuid":...,...},...]}``.
    """
    try:
        body = json.loads(show_channels_json)
    except ValueError as exc:
        raise ValueError(f"show channels as json: not JSON ({exc})") from None
    if not isinstance(body, dict) or "row_count" not in body:
        raise ValueError("show channels as json: no row_count")
    rows = body.get("rows") or []
    if not isinstance(rows, list):
        raise ValueError("show channels as json: rows is not a list")
    return [str(r["uuid"]) for r in rows if isinstance(r, dict) and r.get("uuid")]


def getvar_value(reply_text: str) -> str | None:
    """The value in a ``uuid_getvar`` reply; None for an unset variable or a gone channel."""
    text = reply_text.strip()
    if not text or text == UNDEFINED or text.startswith("-ERR") or text.startswith("-USAGE"):
        return None
    return text
