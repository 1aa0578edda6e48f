"""Simulated extensions (what answers when the gateway originates to `user/N`).

Default table (`default_extensions()`), directory users 1000-1019 as in the fixtures:

====== ============== =============================================================
number behaviour      what the originate sees
====== ============== =============================================================
1000   tone           answers at once, sends a 440 Hz tone
1001   echo           answers at once, echoes the unicast audio it receives (PCMU)
1002   tone           answers at once, 2 kHz tone (the fixtures' phone 1002)
1003   busy           `-ERR USER_BUSY` (CHANNEL_HANGUP cause USER_BUSY)
1004   no_answer      rings (180) for `ring_seconds`, then `-ERR NO_ANSWER`
1005   reject         `-ERR CALL_REJECTED`
1006   early_media    180, then 183 with SDP (+OK at 183), tone in early media, never answers
1007   ringing        180 without SDP for `answer_after` s, then answers (echo)
1008   echo           G.722 (640-byte datagrams, 16 kHz)
1009   echo           opus mono (1920-byte datagrams, 48 kHz)
1010   echo           opus stereo=1 (3840-byte interleaved datagrams)
1011   early_media    180, then 183 with a 600 Hz tone as early media for `answer_after`
                      (4 s), then answers and keeps sending the tone
1012-  echo           PCMU echo phones
1018
1019   not_registered `-ERR USER_NOT_REGISTERED` (in the directory, no registration)
other  (absent)       `-ERR SUBSCRIBER_ABSENT` (not in the directory)
====== ============== =============================================================

`originate_timeout` (dial-string variable) bounds every ringing phase: past it the result is
`-ERR NO_ANSWER`, like FreeSWITCH.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .codecs import G722, OPUS, OPUS_STEREO, PCMU, Codec
from .media import AudioSource

BEHAVIOURS = (
    "echo",
    "tone",
    "busy",
    "no_answer",
    "reject",
    "early_media",
    "ringing",
    "not_registered",
)


@dataclass
class Extension:
    behaviour: str = "echo"
    codec: Codec = PCMU
    # Audio the phone sends once media is up (ignored by "echo", which echoes).
    audio: AudioSource = field(default_factory=lambda: AudioSource("tone", 440.0))
    answer_after: float | None = 0.02  # seconds from INVITE to 200 OK (None: never answers)
    ring_seconds: float = 3.0  # no_answer: how long it rings before NO_ANSWER
    early_after: float = 0.05  # early_media: 180 -> 183 delay
    hangup_after: float | None = None  # phone hangs up this long after answering

    def __post_init__(self) -> None:
        if self.behaviour not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {self.behaviour!r}; known: {BEHAVIOURS}")

    def with_(self, **changes: object) -> Extension:
        return replace(self, **changes)  # type: ignore[arg-type]


def default_extensions() -> dict[str, Extension]:
    table: dict[str, Extension] = {
        "1000": Extension("tone", audio=AudioSource("tone", 440.0)),
        "1001": Extension("echo", audio=AudioSource("echo")),
        "1002": Extension("tone", audio=AudioSource("tone", 2000.0)),
        "1003": Extension("busy"),
        "1004": Extension("no_answer", answer_after=None),
        "1005": Extension("reject"),
        "1006": Extension("early_media", answer_after=None, audio=AudioSource("tone", 440.0)),
        "1007": Extension("ringing", answer_after=2.0, audio=AudioSource("echo")),
        "1008": Extension("echo", codec=G722, audio=AudioSource("echo")),
        "1009": Extension("echo", codec=OPUS, audio=AudioSource("echo")),
        "1010": Extension("echo", codec=OPUS_STEREO, audio=AudioSource("echo")),
        "1019": Extension("not_registered"),
    }
    for n in range(1012, 1019):
        table[str(n)] = Extension("echo", audio=AudioSource("echo"))
    # Early media, then an answer: what a browser caller hears before the phone picks up.
    table["1011"] = Extension("early_media", answer_after=4.0, audio=AudioSource("tone", 600.0))
    return table
