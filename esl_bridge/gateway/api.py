"""The HTTP API for the app's backend (``[api] on``): click-to-call under ``/api/v1``.

Every route but the OpenAPI document needs ``Authorization: Bearer <[api] token>``,
compared in constant time. Unless ``[api] allow_remote``, only loopback peers are
answered. Requests (all of /api/v1 together) are limited to ``[api] requests_per_second``
with bursts of ``[api] burst``; a JSON body is at most ``MAX_BODY`` bytes. Every error is
``{"error": {"code": ..., "message": ...}}`` with the status ``ERRORS`` gives its code.

A call started here is a ``ClickToCall`` of the call book (core/call.py): the web user is
invited from the acc_rule number, and the number is dialled once it accepts; from then on
it is carried as an RTC -> SIP call (same media path, limits, webhooks). With ``"order":
"number_first"`` the reverse (``NumberFirstClickToCall``): the number is dialled first and
the web user invited once it answered.

In a cluster (``[cluster] redis_url``) the number is claimed in Redis before anything is
dialled, as for a web user's invitation; the call lives on the process that took the
request (its channel and media leg are there), while its web user may be on any process
(the hub relays the invitation and the peer messages). Every process publishes its live
calls (``ClusterApi``, cluster/calls.py), so that listing, reading and hanging up work on
whichever process a request lands; a hangup of a call held elsewhere goes to its process
over the bus. While Redis cannot be reached, what needs it answers 503
``cluster_unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from esl_bridge.config import ApiSettings
from esl_bridge.core.call import Call, ClickToCall, Direction, State
from esl_bridge.core.callbook import CallRate
from esl_bridge.gateway.controller import CallController
from esl_bridge.logs import get_logger

if TYPE_CHECKING:
    from esl_bridge.cluster.node import ClusterNode

log = get_logger("api")

PREFIX = "/api/v1"
#: The largest request body read (bytes); a longer one is refused with 413.
MAX_BODY = 4096
_UID = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_NUMBER = re.compile(r"^[0-9*#+]{1,32}$")
#: ``order`` of POST /calls: who is rung first.
ORDERS = ("web_first", "number_first")

#: Error code -> HTTP status (README.rst, Integrate with your app).
ERRORS: dict[str, int] = {
    "bad_json": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "user_offline": 404,
    "not_in_acc_rule": 404,
    "method_not_allowed": 405,
    "number_busy": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "capacity": 429,
    "switch_unavailable": 503,
    "rtm2sip_off": 503,
    "cluster_unavailable": 503,
}
_MESSAGES = {
    "bad_json": "the body is not a JSON object",
    "unauthorized": "a valid 'Authorization: Bearer <token>' header is needed",
    "forbidden": "the API answers loopback addresses only ([api] allow_remote)",
    "not_found": "no such call",
    "user_offline": "the web user is not online",
    "not_in_acc_rule": "the number is not one of [rtm2sip] acc_rule",
    "number_busy": "the number is on another call",
    "payload_too_large": f"the body is longer than {MAX_BODY} bytes",
    "rate_limited": "too many API requests: retry later",
    "capacity": "the gateway's call limits ([limits] max_calls, max_call_rate) are reached",
    "switch_unavailable": "FreeSWITCH is not reachable",
    "rtm2sip_off": "calls to numbers are off ([rtm2sip] on = 0)",
    "cluster_unavailable": "the cluster's Redis cannot be reached: retry later",
}


def error(code: str, message: str = "") -> web.Response:
    status = ERRORS[code]
    body = {"error": {"code": code, "message": message or _MESSAGES.get(code, code)}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    if code in ("rate_limited", "capacity"):
        headers = {"Retry-After": "1"}
    return web.json_response(body, status=status, headers=headers)


def call_view(call: Call, now: float) -> dict[str, Any]:
    """A call as the API shows it (the ``Call`` schema of the OpenAPI document)."""
    view: dict[str, Any] = {
        "call_id": call.call_id,
        "direction": "rtc2sip" if call.direction is Direction.RTC_TO_SIP else "sip2rtc",
        "uid": call.web_uid,
        "number": call.number,
        "state": call.state.value,
        "duration": round(max(0.0, now - call.started_at), 1),
        "answered": call.answered_at is not None,
    }
    if isinstance(call, ClickToCall):
        view["order"] = call.order
    return view


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Api:
    """The /api/v1 routes over one controller (asyncio thread, as the controller)."""

    def __init__(
        self,
        settings: ApiSettings,
        controller: CallController,
        clock: Callable[[], float] = time.monotonic,
        cluster: ClusterApi | None = None,
    ) -> None:
        self.settings = settings
        self.controller = controller
        self.cluster = cluster
        self._token = settings.token.encode("utf-8")
        self._rate = CallRate(settings.requests_per_second, settings.burst)
        self._clock = clock
        self.refused: dict[str, int] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(f"{PREFIX}/openapi.json", self._guard(self.openapi, auth=False))
        app.router.add_post(f"{PREFIX}/calls", self._guard(self.start_call))
        app.router.add_get(f"{PREFIX}/calls", self._guard(self.list_calls))
        app.router.add_get(f"{PREFIX}/calls/{{call_id}}", self._guard(self.get_call))
        app.router.add_delete(f"{PREFIX}/calls/{{call_id}}", self._guard(self.end_call))
        app.router.add_get(f"{PREFIX}/users/{{uid}}", self._guard(self.get_user))
        # Anything else under /api/v1 gets a JSON error too, not aiohttp's text page.
        for path in ("/openapi.json", "/calls", "/calls/{call_id}", "/users/{uid}"):
            app.router.add_route("*", f"{PREFIX}{path}", self._guard(self.no_method))
        app.router.add_route("*", f"{PREFIX}/{{tail:.*}}", self._guard(self.no_route))

    def _guard(self, handler: Handler, *, auth: bool = True) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            code = self._check(request, auth)
            if code is not None:
                self.refused[code] = self.refused.get(code, 0) + 1
                log.info("api.refused", code=code, method=request.method, path=request.path)
                return error(code)
            return await handler(request)

        return guarded

    def _check(self, request: web.Request, auth: bool) -> str | None:
        if not self.settings.allow_remote and not _is_loopback(request.remote):
            return "forbidden"
        if not self._rate.take(self._clock()):
            return "rate_limited"
        if not auth:
            return None
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest: the time taken does not tell how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), self._token
        ):
            return "unauthorized"
        return None

    async def no_method(self, request: web.Request) -> web.Response:
        return error("method_not_allowed", f"{request.method} is not a method of this path")

    async def no_route(self, request: web.Request) -> web.Response:
        return error("not_found", f"no route {request.path} (see {PREFIX}/openapi.json)")

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def start_call(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return error("payload_too_large")
        raw = b""
        while len(raw) <= MAX_BODY:  # read() returns what has come: up to EOF or the limit
            chunk = await request.content.read(MAX_BODY + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
        if len(raw) > MAX_BODY:
            return error("payload_too_large")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return error("bad_json")
        if not isinstance(body, dict):
            return error("bad_json")
        uid, number = body.get("uid"), body.get("number")
        order = body.get("order", ORDERS[0])
        if not isinstance(uid, str) or not _UID.match(uid):
            return error("bad_request", "'uid' must be a uid (1-64 of A-Z a-z 0-9 _.@+-)")
        if not isinstance(number, str) or not _NUMBER.match(number):
            return error("bad_request", "'number' must be a number (1-32 of 0-9 * # +)")
        if order not in ORDERS:
            return error("bad_request", f"'order' must be one of {', '.join(ORDERS)}")
        unknown = sorted(set(body) - {"uid", "number", "order"})
        if unknown:
            return error("bad_request", f"unknown field(s): {', '.join(unknown)}")
        controller = self.controller
        if uid == controller.gateway_uid or uid in controller.pool:
            return error("bad_request", "'uid' is served by the gateway, not a web user")
        call_id, refusal = await controller.click_to_call_claimed(
            uid, number, number_first=order == "number_first"
        )
        call = controller.book.get(call_id) if call_id else None
        if call is None:
            # Refused, or ended at once (its invitation failed): say which.
            return error(refusal or "user_offline")
        log.info("api.call_started", call_id=call_id, uid=uid, number=number, order=order)
        if self.cluster is not None:
            # Answer once the call is in Redis: the app may ask any process about it next.
            # Bounded: a Redis that does not answer is the node's to notice, not the app's.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cluster.node.settings.redis_timeout):
                    await self.cluster.node.written()
        return web.json_response(
            call_view(call, controller.clock()),
            status=201,
            headers={"Location": f"{PREFIX}/calls/{call_id}"},
        )

    async def list_calls(self, request: web.Request) -> web.Response:
        now = self.controller.clock()
        calls = [call_view(call, now) for call in self.controller.book if not call.is_over]
        if self.cluster is not None:
            elsewhere = await self.cluster.calls()
            if elsewhere is None:
                return error("cluster_unavailable")
            calls += [view for _, view in elsewhere.values()]
        return web.json_response({"calls": calls})

    async def get_call(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        call = self.controller.book.get(call_id)
        if call is not None:
            return web.json_response(call_view(call, self.controller.clock()))
        if self.cluster is None:
            return error("not_found")
        elsewhere = await self.cluster.calls()
        if elsewhere is None:
            return error("cluster_unavailable")
        if call_id not in elsewhere:
            return error("not_found")
        return web.json_response(elsewhere[call_id][1])

    async def end_call(self, request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        if self.controller.hang_up(call_id):
            log.info("api.call_ended", call_id=call_id)
            call = self.controller.book.get(call_id)
            state = "ended" if call is None else call.state.value
            return web.json_response({"call_id": call_id, "state": state}, status=202)
        if self.cluster is None:
            return error("not_found")
        elsewhere = await self.cluster.calls()
        if elsewhere is None:
            return error("cluster_unavailable")
        if call_id not in elsewhere:
            return error("not_found")
        member = elsewhere[call_id][0]
        self.cluster.hang_up_at(member, call_id)
        log.info("api.call_ended", call_id=call_id, member=member)
        return web.json_response({"call_id": call_id, "state": "ending"}, status=202)

    async def get_user(self, request: web.Request) -> web.Response:
        uid = request.match_info["uid"]
        if not _UID.match(uid):
            return error("bad_request", "not a uid (1-64 of A-Z a-z 0-9 _.@+-)")
        controller = self.controller
        online = controller.handle.hub.is_online(controller.appid, uid)
        calls = [c.call_id for c in controller.book.calls_of(uid)]
        if self.cluster is not None:
            elsewhere = await self.cluster.calls()
            if elsewhere is None:
                return error("cluster_unavailable")
            calls += [i for i, (_, view) in elsewhere.items() if view.get("uid") == uid]
        return web.json_response({"uid": uid, "online": online, "calls": calls})


class ClusterApi:
    """The API's view of the other processes' calls (cluster/calls.py).

    It publishes this process's calls as the controller reports them (start, each change
    of state, end), reads the others', and carries hangups both ways over the bus.
    """

    def __init__(
        self,
        node: ClusterNode,
        controller: CallController,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.controller = controller
        self._wall = wall
        controller.call_watchers.append(self._changed)
        node.handlers[HANGUP_MESSAGE] = self._hang_up_here

    def _changed(self, call_id: str, call: Call | None) -> None:
        if call is None:
            self.node.call_changed(call_id, None)
            return
        now = self.controller.clock()
        record = call_view(call, now)
        # Wall-clock start: another process works the duration out when it reads it.
        record["started"] = self._wall() - max(0.0, now - call.started_at)
        self.node.call_changed(call_id, record)

    async def calls(self) -> dict[str, tuple[str, dict[str, Any]]] | None:
        """The other processes' live calls: id -> (member, view); None if Redis is away."""
        everyone = await self.node.cluster_calls()
        if everyone is None:
            return None
        now = self._wall()
        views: dict[str, tuple[str, dict[str, Any]]] = {}
        for call_id, (member, record) in everyone.items():
            if member == self.node.member:
                continue  # ours: the book has them, current to the instant
            view = {k: v for k, v in record.items() if k != "started"}
            started = record.get("started")
            if isinstance(started, int | float):
                view["duration"] = round(max(0.0, now - started), 1)
            views[call_id] = (member, view)
        return views

    def hang_up_at(self, member: str, call_id: str) -> None:
        self.node.send(member, {"t": HANGUP_MESSAGE, "call_id": call_id})

    def _hang_up_here(self, sender: str, message: dict[str, Any]) -> None:
        call_id = str(message.get("call_id", ""))
        found = self.controller.hang_up(call_id)
        log.info("api.call_ended", call_id=call_id, relayed_from=sender, found=found)


#: The bus message that asks a call's process to hang it up.
HANGUP_MESSAGE = "api_hangup"


def _is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def setup_api(
    app: web.Application,
    settings: ApiSettings,
    controller: CallController,
    cluster: ClusterNode | None = None,
) -> None:
    """Add /api/v1 to ``app`` when ``[api] on``; nothing otherwise."""
    if not settings.on:
        return
    shared = None if cluster is None else ClusterApi(cluster, controller)
    Api(settings, controller, cluster=shared).add_routes(app)
    log.info(
        "api.ready", prefix=PREFIX, allow_remote=settings.allow_remote, cluster=shared is not None
    )


# ---------------------------------------------------------------------------------------
# The OpenAPI 3 document (served at /api/v1/openapi.json; tests/test_api.py checks it
# against the routes above).


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def openapi_document() -> dict[str, Any]:
    common = {
        "401": _error_response("no or wrong bearer token (unauthorized)"),
        "403": _error_response("not from a loopback address (forbidden)"),
        "429": _error_response("over [api] requests_per_second (rate_limited)"),
    }
    unavailable = _error_response("cluster_unavailable (in a cluster: Redis cannot be reached)")
    call_id = {
        "name": "call_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "esl-bridge click-to-call API",
            "version": "1",
            "description": (
                "Start, watch and end calls from the app's backend. Errors are "
                "{'error': {'code', 'message'}}."
            ),
        },
        "servers": [{"url": PREFIX}],
        "security": [{"bearer": []}],
        "paths": {
            "/calls": {
                "post": {
                    "operationId": "startCall",
                    "summary": (
                        "Ring web user uid; once it accepts, dial the acc_rule number "
                        "(order number_first: the reverse)"
                    ),
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/NewCall"}}
                        },
                    },
                    "responses": {
                        "201": _json(
                            "Call", "the call, its web user (or number, number_first) being rung"
                        ),
                        "400": _error_response("bad_json or bad_request"),
                        "404": _error_response("user_offline or not_in_acc_rule"),
                        "409": _error_response("number_busy"),
                        "413": _error_response(f"payload_too_large (over {MAX_BODY} bytes)"),
                        "503": _error_response(
                            "switch_unavailable, rtm2sip_off or cluster_unavailable"
                        ),
                        **common,
                        "429": _error_response("rate_limited, or capacity (call limits)"),
                    },
                },
                "get": {
                    "operationId": "listCalls",
                    "summary": "The live calls (every direction)",
                    "responses": {
                        "200": _json("CallList", "the live calls (of every process of a cluster)"),
                        "503": unavailable,
                        **common,
                    },
                },
            },
            "/calls/{call_id}": {
                "parameters": [call_id],
                "get": {
                    "operationId": "getCall",
                    "summary": "A live call's state",
                    "responses": {
                        "200": _json("Call", "the call"),
                        "404": _error_response("not_found (no such live call)"),
                        "503": unavailable,
                        **common,
                    },
                },
                "delete": {
                    "operationId": "endCall",
                    "summary": "Hang a live call up (either side, in any state)",
                    "responses": {
                        "202": _json("Ending", "the call is being ended"),
                        "404": _error_response("not_found (no such live call)"),
                        "503": unavailable,
                        **common,
                    },
                },
            },
            "/users/{uid}": {
                "parameters": [
                    {"name": "uid", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": {
                    "operationId": "getUser",
                    "summary": "Whether a web user is online, and its live calls",
                    "responses": {
                        "200": _json("User", "the user"),
                        "400": _error_response("bad_request (not a uid)"),
                        "503": unavailable,
                        **common,
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document (no token needed)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "403": common["403"],
                        "429": common["429"],
                    },
                },
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "NewCall": {
                    "type": "object",
                    "required": ["uid", "number"],
                    "additionalProperties": False,
                    "properties": {
                        "uid": {"type": "string", "pattern": _UID.pattern},
                        "number": {"type": "string", "pattern": _NUMBER.pattern},
                        "order": {"type": "string", "enum": list(ORDERS), "default": ORDERS[0]},
                    },
                },
                "Call": {
                    "type": "object",
                    "required": [
                        "call_id",
                        "direction",
                        "uid",
                        "number",
                        "state",
                        "duration",
                        "answered",
                    ],
                    "properties": {
                        "call_id": {"type": "string"},
                        "direction": {"type": "string", "enum": ["rtc2sip", "sip2rtc"]},
                        "uid": {"type": "string"},
                        "number": {"type": "string"},
                        "state": {
                            "type": "string",
                            "enum": [s.value for s in State if s is not State.ENDED],
                        },
                        "duration": {"type": "number"},
                        "answered": {"type": "boolean"},
                        "order": {"type": "string", "enum": list(ORDERS)},
                    },
                },
                "CallList": {
                    "type": "object",
                    "required": ["calls"],
                    "properties": {
                        "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}}
                    },
                },
                "Ending": {
                    "type": "object",
                    "required": ["call_id", "state"],
                    "properties": {"call_id": {"type": "string"}, "state": {"type": "string"}},
                },
                "User": {
                    "type": "object",
                    "required": ["uid", "online", "calls"],
                    "properties": {
                        "uid": {"type": "string"},
                        "online": {"type": "boolean"},
                        "calls": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": sorted(ERRORS)},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
            },
        },
    }
