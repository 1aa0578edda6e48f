"""Settings of the signalling hub; the gateway fills them from rtx.conf."""

from __future__ import annotations

from dataclasses import dataclass, field

from esl_bridge.config import Settings
from esl_bridge.core.invitations import InvitationTimeouts


@dataclass(frozen=True)
class SignalingSettings:
    """Every knob of the hub and its WebSocket endpoint, with safe defaults.

    Sizes are bytes of UTF-8, times are seconds.
    """

    #: The tenant this gateway serves ([global] appid). Logins under another appid are
    #: refused unless it is listed in ``extra_appids``. Empty: any syntactically valid
    #: appid is accepted (users of different appids never see each other).
    appid: str = ""
    #: More appids accepted besides ``appid`` (a multi-tenant hub).
    extra_appids: tuple[str, ...] = ()
    #: Secret that signs login tokens ([auth] app certificate). Never logged.
    app_certificate: str = field(default="", repr=False)
    #: Accept logins without a token. For local demos only; logged as a warning.
    open_mode: bool = False
    #: Failure timers of invitations (README.rst: 30 s offline, 30 s no ack, 60 s no answer).
    invitation_timeouts: InvitationTimeouts = field(default_factory=InvitationTimeouts)
    #: A dropped WebSocket keeps its session (presence, invitations) this long; a login
    #: carrying the session id within it resumes the session.
    grace_period: float = 15.0
    #: A connection that is not logged in this long is closed (LOGIN_TIMEOUT); None: never.
    login_timeout: float | None = 30.0
    #: Largest accepted WebSocket frame (bytes as sent, JSON escapes included): room for
    #: a full invitation or peer message. Over it: error reply, then close.
    max_message_bytes: int = 128 * 1024
    #: Largest peer message text (RTM allows 32 KB). Over it: INVALID_ARGUMENT.
    max_peer_message_bytes: int = 32 * 1024
    #: Most uids in one presence query or subscribe request.
    max_uids_per_request: int = 256
    #: Most uids one session may be subscribed to.
    max_subscriptions: int = 1024
    #: Most invitations one uid may have pending as caller. Over it: error, then close.
    max_pending_invitations: int = 16
    #: Sustained messages per second per connection (token bucket) ...
    rate_per_second: float = 20.0
    #: ... and the burst it may send at once. Over it: error, then close.
    rate_burst: int = 40
    #: Messages queued for a session whose socket dropped (flushed on resume).
    #: Past it the session ends.
    max_detached_queue: int = 256
    #: Messages queued toward a slow reader before its connection is closed (4005) ...
    max_send_queue: int = 1024
    #: ... and bytes of UTF-8 queued toward it, whichever bound is reached first.
    max_send_queue_bytes: int = 1024 * 1024
    #: WebSocket ping interval that detects dead sockets; None disables it.
    heartbeat: float | None = 20.0
    #: Origins of pages on other sites that may open the WebSocket and load the SDK with
    #: CORS ([web] allowed_origins, normalized; ``*``: any). Empty: the gateway's own origin
    #: only. A handshake from another page is closed with 4008 ORIGIN_NOT_ALLOWED.
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        positive = {
            "grace_period": self.grace_period,
            "max_message_bytes": self.max_message_bytes,
            "max_peer_message_bytes": self.max_peer_message_bytes,
            "max_uids_per_request": self.max_uids_per_request,
            "max_subscriptions": self.max_subscriptions,
            "max_pending_invitations": self.max_pending_invitations,
            "rate_per_second": self.rate_per_second,
            "rate_burst": self.rate_burst,
            "max_detached_queue": self.max_detached_queue,
            "max_send_queue": self.max_send_queue,
            "max_send_queue_bytes": self.max_send_queue_bytes,
            "peer_offline": self.invitation_timeouts.peer_offline,
            "no_response": self.invitation_timeouts.no_response,
            "answer": self.invitation_timeouts.answer,
        }
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"signaling setting {name} must be positive, not {value!r}")
        for name, opt in (("login_timeout", self.login_timeout), ("heartbeat", self.heartbeat)):
            if opt is not None and not opt > 0:
                raise ValueError(f"signaling setting {name} must be positive or None")

    def accepts_appid(self, appid: str) -> bool:
        if not self.appid and not self.extra_appids:
            return True
        return appid == self.appid or appid in self.extra_appids


def signaling_settings(settings: Settings) -> SignalingSettings:
    """The hub's settings from rtx.conf ([global] appid, [auth], [limits])."""
    limits = settings.limits
    return SignalingSettings(
        appid=settings.global_.appid,
        app_certificate=settings.auth.app_certificate,
        open_mode=settings.auth.open_mode,
        invitation_timeouts=InvitationTimeouts(
            peer_offline=limits.invite_offline_timeout,
            no_response=limits.invite_no_response_timeout,
            answer=limits.invite_expire_timeout,
        ),
        grace_period=limits.presence_grace,
        max_message_bytes=limits.max_message_bytes,
        max_pending_invitations=limits.max_pending_invitations,
        rate_per_second=limits.messages_per_second,
        rate_burst=max(1, round(limits.messages_per_second * 2)),
        login_timeout=limits.login_timeout,
        max_send_queue_bytes=limits.send_queue_bytes,
        allowed_origins=settings.web.allowed_origins,
    )
