"""esl-bridge: a self-hosted WebRTC <-> SIP gateway driving FreeSWITCH over ESL."""

__version__ = "0.1.0"
