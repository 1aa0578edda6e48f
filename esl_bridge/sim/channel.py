"""A simulated FreeSWITCH channel: its state, caller profile, variables, and the events it emits.

Header names and order follow the events recorded from FreeSWITCH 1.10.12
(tests/fixtures/freeswitch/): common event headers, then the channel's basic data
(`Channel-State` .. `Answer-State`, `Hangup-Cause` once hung up, the six codec headers once a
read codec exists), the `Caller-*` profile, then `variable_*` for the event types that carry
them, then event-specific headers (Application*, DTMF-*). Variable values are modelled on the
recorded ones; the set is close to, not identical with, the real one (SIP details such as
tags, Via branches and SDP bodies are synthetic).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .codecs import PCMU, Codec
from .media import AudioSource
from .wire import Header

if TYPE_CHECKING:
    from .extensions import Extension
    from .media import UnicastStream
    from .phone import PhoneCall
    from .session import EslSession

# Caller-profile fields in FreeSWITCH's order; absent (None) fields are skipped.
PROFILE_ORDER = (
    "Direction",
    "Logical-Direction",
    "Username",
    "Dialplan",
    "Caller-ID-Name",
    "Caller-ID-Number",
    "Orig-Caller-ID-Name",
    "Orig-Caller-ID-Number",
    "Callee-ID-Name",
    "Callee-ID-Number",
    "Network-Addr",
    "ANI",
    "Destination-Number",
    "Unique-ID",
    "Source",
    "Context",
    "Channel-Name",
    "Profile-Index",
    "Profile-Created-Time",
    "Channel-Created-Time",
    "Channel-Answered-Time",
    "Channel-Progress-Time",
    "Channel-Progress-Media-Time",
    "Channel-Hangup-Time",
    "Channel-Transfer-Time",
    "Channel-Resurrect-Time",
    "Channel-Bridged-Time",
    "Channel-Last-Hold",
    "Channel-Hold-Accum",
    "Screen-Bit",
    "Privacy-Hide-Name",
    "Privacy-Hide-Number",
)

# Event-Calling-File / -Function / -Line-Number as recorded for each event type.
CALLING: dict[str, tuple[str, str, str]] = {
    "CHANNEL_CREATE": ("switch_core_state_machine.c", "switch_core_session_run", "626"),
    "CHANNEL_STATE": ("switch_channel.c", "switch_channel_perform_set_running_state", "2408"),
    "CHANNEL_PROGRESS": (
        "switch_channel.c",
        "switch_channel_perform_mark_ring_ready_value",
        "3505",
    ),
    "CHANNEL_PROGRESS_MEDIA": (
        "switch_channel.c",
        "switch_channel_perform_mark_pre_answered",
        "3560",
    ),
    "CHANNEL_ANSWER": ("switch_channel.c", "switch_channel_perform_mark_answered", "3846"),
    "CHANNEL_EXECUTE": ("switch_core_session.c", "switch_core_session_exec", "2944"),
    "CHANNEL_EXECUTE_COMPLETE": ("switch_core_session.c", "switch_core_session_exec", "2967"),
    "CHANNEL_PARK": ("switch_ivr.c", "switch_ivr_park", "1002"),
    "CHANNEL_UNPARK": ("switch_ivr.c", "switch_ivr_park", "1213"),
    "CHANNEL_HANGUP": ("switch_channel.c", "switch_channel_perform_hangup", "3445"),
    "CHANNEL_HANGUP_COMPLETE": (
        "switch_core_state_machine.c",
        "switch_core_session_reporting_state",
        "943",
    ),
    "DTMF": ("switch_channel.c", "switch_channel_dequeue_dtmf", "677"),
    "CHANNEL_DATA": ("mod_event_socket.c", "parse_command", "2021"),
    "BACKGROUND_JOB": ("mod_event_socket.c", "api_exec", "1572"),
    # ops/esl_inbound_custom_event_observer.txt: fired by an ESL client's `sendevent`.
    "CUSTOM": ("mod_event_socket.c", "parse_command", "2275"),
}

# The one list of event names: every event type the simulator fires (what `event plain ALL`
# delivers). CHANNEL_DATA has calling data above but is the outbound connect reply, not an event.
EVENT_NAMES = frozenset(CALLING) - {"CHANNEL_DATA"}

# Event types that carry the channel variables (the others stop after the caller profile).
EVENTS_WITH_VARIABLES = frozenset(
    {
        "CHANNEL_CREATE",
        "CHANNEL_PROGRESS",
        "CHANNEL_PROGRESS_MEDIA",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE",
        "CHANNEL_EXECUTE_COMPLETE",
        "CHANNEL_PARK",
        "CHANNEL_UNPARK",
        "CHANNEL_HANGUP",
        "CHANNEL_HANGUP_COMPLETE",
        "CHANNEL_DATA",
    }
)

Q850 = {
    "NORMAL_CLEARING": 16,
    "USER_BUSY": 17,
    "NO_USER_RESPONSE": 18,
    "NO_ANSWER": 19,
    "SUBSCRIBER_ABSENT": 20,
    "CALL_REJECTED": 21,
    "UNALLOCATED_NUMBER": 1,
    "NORMAL_TEMPORARY_FAILURE": 41,
    "ORIGINATOR_CANCEL": 487,
    "DESTINATION_OUT_OF_ORDER": 27,
    "USER_NOT_REGISTERED": 606,
    "RECOVERY_ON_TIMER_EXPIRE": 102,
    "MEDIA_TIMEOUT": 604,
}

SIP_STATUS = {
    "NORMAL_CLEARING": "200",
    "USER_BUSY": "486",
    "NO_ANSWER": "480",
    "CALL_REJECTED": "603",
    "ORIGINATOR_CANCEL": "487",
}


SIP_PHRASE = {
    "486": "Busy Here",
    "480": "Temporarily Unavailable",
    "603": "Decline",
    "487": "Request Terminated",
}


class Switch(Protocol):
    """What a channel needs from the simulator: identity and clocks."""

    core_uuid: str
    hostname: str
    ipv4: str
    ipv6: str
    domain: str

    def next_sequence(self) -> int: ...

    def event_timestamp_us(self) -> int: ...


def _rand_token(n: int = 13) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(random.choice(alphabet) for _ in range(n))


def now_us() -> int:
    return int(time.time() * 1_000_000)


@dataclass
class FiredEvent:
    """One event as the simulator fired it (for tests: names, decoded headers, time)."""

    name: str
    headers: list[Header]
    body: bytes = b""
    monotonic: float = field(default_factory=time.monotonic)

    def get(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.headers:
            if k == key:
                return v
        return default


class Channel:
    """State of one simulated channel. Only the simulator's event loop mutates it."""

    def __init__(
        self,
        switch: Switch,
        uuid: str,
        *,
        kind: str,
        name: str,
        direction: str,
        codec: Codec = PCMU,
        session_id: int = 1,
    ) -> None:
        self.switch = switch
        self.uuid = uuid
        self.kind = kind  # "phone" (a phone dialled in), "originated", "loopback"
        self.name = name
        self.direction = direction
        self.codec = codec
        self.session_id = session_id
        self.state = "CS_INIT"
        self.state_number = 2  # recorded CHANNEL_CREATE says CS_INIT with number 2
        self.call_state = "DOWN"
        self.answer_state = "ringing"
        self.hit_dialplan = False
        self.presence_id: str | None = None
        self.has_read_codec = False  # True once media is up (183 with SDP, pre_answer, answer)
        self.answered = False
        self.hangup_cause: str | None = None
        self.hung_up = False
        self.destroyed = False
        self.parked = False
        self.created_us = now_us()
        self.answered_us = 0
        self.progress_us = 0
        self.progress_media_us = 0
        self.hangup_us = 0
        self.profile: dict[str, str | None] = {}
        self.variables: dict[str, str] = {}
        self.local_media_port = random.randint(16384, 32767)
        self.remote_media_port = random.randint(20000, 30000)
        self.sip_contact_user = ""
        self.sip_port = "5071"
        # Observable by tests.
        self.events: list[FiredEvent] = []
        self.dtmf_from_phone: list[str] = []  # digits the far end sent (DTMF events fired)
        self.dtmf_to_phone: list[str] = []  # digits FreeSWITCH sent to the far end
        self.applications: list[tuple[str, str]] = []  # (app, arg) executed
        self.unicast: UnicastStream | None = None
        self.unicast_history: list[UnicastStream] = []
        self.last_app = ""
        self.last_arg = ""
        # Simulator plumbing (owned by server.Simulator, on its event loop).
        self.hangup_event = asyncio.Event()
        self.break_event = asyncio.Event()  # uuid_break
        self.app_queue: asyncio.Queue[tuple[str, dict[str, str]]] = asyncio.Queue()
        self.pending_msgs: list[tuple[str, dict[str, str]]] = []  # static mode: never parsed
        self.session: EslSession | None = None  # the outbound socket controlling it
        self.app_runner: asyncio.Task[None] | None = None
        self.current_app: str | None = None
        # An application running inside the socket app's park loop (e.g. the ringback);
        # when the socket goes meanwhile, the socket app returns only after it ends.
        self.running_app: str | None = None
        self.running_exec: tuple[str, str, str] | None = None  # (app, arg, Application-UUID)
        self.socket_gone = False
        # The dialplan's `hangup` cause after the socket app, for channels that came through
        # the `0` route of dialplan/ (None: no dialplan runs after it).
        self.after_socket_hangup: str | None = None
        self.hangup_by_switch = False  # uuid_kill, hupall, the hangup app (not the phone)
        self.socket_app: tuple[str, str] | None = None  # (args, Application-UUID)
        self.notice_sent = False
        self.audio = AudioSource("tone", 440.0)  # what the far end sends
        self.extension: Extension | None = None  # of an originated leg
        self.phone_call: PhoneCall | None = None  # of a placed call

    # ---- profile helpers -------------------------------------------------------------------
    def set_profile(self, **fields: str | None) -> None:
        for key, value in fields.items():
            self.profile[key.replace("_", "-")] = value

    def set_var(self, name: str, value: str) -> None:
        # FreeSWITCH deletes and re-appends a variable on every set: it moves to the end.
        self.variables.pop(name, None)
        self.variables[name] = value

    def set_vars(self, pairs: Iterable[tuple[str, str]]) -> None:
        for k, v in pairs:
            self.set_var(k, v)

    def unset_var(self, name: str) -> None:
        self.variables.pop(name, None)

    def get_var(self, name: str) -> str | None:
        return self.variables.get(name)

    # ---- header building ------------------------------------------------------------------
    def _profile_headers(self, prefix: str) -> list[Header]:
        times = {
            "Profile-Created-Time": str(self.created_us),
            "Channel-Created-Time": str(self.created_us),
            "Channel-Answered-Time": str(self.answered_us),
            "Channel-Progress-Time": str(self.progress_us),
            "Channel-Progress-Media-Time": str(self.progress_media_us),
            "Channel-Hangup-Time": str(self.hangup_us),
        }
        fixed = {
            "Unique-ID": self.uuid,
            "Channel-Name": self.name,
            "Profile-Index": "1",
            "Channel-Transfer-Time": "0",
            "Channel-Resurrect-Time": "0",
            "Channel-Bridged-Time": "0",
            "Channel-Last-Hold": "0",
            "Channel-Hold-Accum": "0",
            "Screen-Bit": "true",
            "Privacy-Hide-Name": "false",
            "Privacy-Hide-Number": "false",
        }
        out: list[Header] = []
        for key in PROFILE_ORDER:
            if key in times:
                value: str | None = times[key]
            elif key in fixed:
                value = fixed[key]
            else:
                value = self.profile.get(key)
            if value is not None:
                out.append((prefix + key, value))
        return out

    def basic_headers(self) -> list[Header]:
        out: list[Header] = [
            ("Channel-State", self.state),
            ("Channel-Call-State", self.call_state),
            ("Channel-State-Number", str(self.state_number)),
            ("Channel-Name", self.name),
            ("Unique-ID", self.uuid),
            ("Call-Direction", self.direction),
            ("Presence-Call-Direction", self.direction),
            ("Channel-HIT-Dialplan", "true" if self.hit_dialplan else "false"),
        ]
        if self.presence_id is not None:
            out.append(("Channel-Presence-ID", self.presence_id))
        out.append(("Channel-Call-UUID", self.uuid))
        out.append(("Answer-State", self.answer_state))
        if self.hangup_cause is not None:
            out.append(("Hangup-Cause", self.hangup_cause))
        if self.has_read_codec:
            c = self.codec
            out += [
                ("Channel-Read-Codec-Name", c.name),
                ("Channel-Read-Codec-Rate", str(c.rate)),
                ("Channel-Read-Codec-Bit-Rate", str(c.bit_rate)),
                ("Channel-Write-Codec-Name", c.name),
                ("Channel-Write-Codec-Rate", str(c.rate)),
                ("Channel-Write-Codec-Bit-Rate", str(c.bit_rate)),
            ]
        out += self._profile_headers("Caller-")
        return out

    def variable_headers(self) -> list[Header]:
        return [("variable_" + k, v) for k, v in self.variables.items()]

    def event_headers(
        self,
        name: str,
        *,
        pre: Iterable[Header] = (),
        tail: Iterable[Header] = (),
        with_variables: bool | None = None,
    ) -> list[Header]:
        headers = common_event_headers(self.switch, name)
        headers += list(pre)
        headers += self.basic_headers()
        if with_variables is None:
            with_variables = name in EVENTS_WITH_VARIABLES
        if with_variables:
            headers += self.variable_headers()
        headers += list(tail)
        return headers

    def channel_data(self) -> list[Header]:
        """The CHANNEL_DATA header set of the outbound-socket connect reply."""
        headers = common_event_headers(self.switch, "CHANNEL_DATA")
        headers += self._profile_headers("Channel-")
        headers += self.basic_headers()
        headers += self.variable_headers()
        return headers

    # ---- variable sets modelled on the recordings -------------------------------------------
    def media_variables(self) -> list[tuple[str, str]]:
        """Variables FreeSWITCH adds once the media is negotiated (recorded order)."""
        c = self.codec
        return [
            ("remote_video_media_flow", "inactive"),
            ("remote_text_media_flow", "inactive"),
            ("remote_audio_media_flow", "sendrecv"),
            ("rtp_audio_recv_pt", str(c.pt)),
            ("rtp_use_codec_name", c.name),
            ("rtp_use_codec_rate", str(c.codec_rate)),
            ("rtp_use_codec_ptime", "20"),
            ("rtp_use_codec_channels", str(c.channels)),
            ("rtp_last_audio_codec_string", c.last_audio_codec_string),
            ("read_codec", c.name),
            ("original_read_codec", c.name),
            ("read_rate", str(c.rate)),
            ("original_read_rate", str(c.rate)),
            ("write_codec", c.name),
            ("write_rate", str(c.rate)),
            ("dtmf_type", "rfc2833"),
            ("local_media_ip", "127.0.0.1"),
            ("local_media_port", str(self.local_media_port)),
            ("advertised_media_ip", "127.0.0.1"),
            ("rtp_use_timer_name", "soft"),
            ("rtp_use_pt", str(c.pt)),
            ("rtp_use_ssrc", str(random.randint(1, 2**32 - 1))),
            ("rtp_2833_send_payload", "101"),
            ("rtp_2833_recv_payload", "101"),
            ("remote_media_ip", "127.0.0.1"),
            ("remote_media_port", str(self.remote_media_port)),
        ]

    def local_sdp(self) -> str:
        c = self.codec
        o = random.randint(10**9, 2 * 10**9)
        return (
            f"v=0\r\no=FreeSWITCH {o} {o + 1} IN IP4 127.0.0.1\r\ns=FreeSWITCH\r\n"
            "c=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.local_media_port} RTP/AVP {c.pt} 101\r\n"
            f"a=rtpmap:{c.pt} {c.sdp_rtpmap}\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\n"
            "a=sendrecv\r\n"
        )

    def remote_sdp(self, user: str) -> str:
        c = self.codec
        return (
            f"v=0\r\no=- {random.randint(10**9, 4 * 10**9)} {random.randint(10**8, 2 * 10**9)}"
            " IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "a=tool:esl-bridge-sim\r\n"
            f"m=audio {self.remote_media_port} RTP/AVP {c.pt} 101\r\n"
            f"a=rtpmap:{c.pt} {c.sdp_rtpmap}\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
            f"a=ssrc:{random.randint(1, 2**32 - 1)} cname:sip:{user}@127.0.0.1\r\n"
            "a=ptime:20\r\n"
        )

    def hangup_variables(self, end_us: int) -> list[tuple[str, str]]:
        """The CDR-like variables of CHANNEL_HANGUP_COMPLETE (recorded order, computed values)."""

        def stamp(us: int) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(us / 1e6))

        cause = self.hangup_cause or "NORMAL_CLEARING"
        out: list[tuple[str, str]] = [
            ("hangup_cause", cause),
            ("hangup_cause_q850", str(Q850.get(cause, 16))),
            ("digits_dialed", "".join(self.dtmf_from_phone) or "none"),
            ("start_stamp", stamp(self.created_us)),
            ("profile_start_stamp", stamp(self.created_us)),
        ]
        if self.answered_us:
            out.append(("answer_stamp", stamp(self.answered_us)))
        if self.progress_us:
            out.append(("progress_stamp", stamp(self.progress_us)))
        if self.progress_media_us:
            out.append(("progress_media_stamp", stamp(self.progress_media_us)))
        out.append(("end_stamp", stamp(end_us)))
        for key, us in (
            ("start", self.created_us),
            ("profile_start", self.created_us),
            ("answer", self.answered_us),
            ("bridge", 0),
            ("last_hold", 0),
        ):
            out += [(f"{key}_epoch", str(us // 1_000_000)), (f"{key}_uepoch", str(us))]
        out += [
            ("hold_accum_seconds", "0"),
            ("hold_accum_usec", "0"),
            ("hold_accum_ms", "0"),
            ("resurrect_epoch", "0"),
            ("resurrect_uepoch", "0"),
        ]
        for key, us in (
            ("progress", self.progress_us),
            ("progress_media", self.progress_media_us),
            ("end", end_us),
        ):
            out += [(f"{key}_epoch", str(us // 1_000_000)), (f"{key}_uepoch", str(us))]
        out.append(("last_app", self.last_app or "park"))
        if self.last_arg:
            out.append(("last_arg", self.last_arg))
        name = self.profile.get("Caller-ID-Name") or ""
        number = self.profile.get("Caller-ID-Number") or ""
        out.append(("caller_id", f'"{name}" <{number}>'))
        dur = end_us - self.created_us
        bill = end_us - self.answered_us if self.answered_us else 0

        def since(us: int) -> int:
            return us - self.created_us if us else 0

        out += [
            ("duration", str(dur // 1_000_000)),
            ("billsec", str(bill // 1_000_000)),
            ("progresssec", str(since(self.progress_us) // 1_000_000)),
            ("answersec", str(since(self.answered_us) // 1_000_000)),
            ("waitsec", str(since(self.answered_us) // 1_000_000)),
            ("progress_mediasec", str(since(self.progress_media_us) // 1_000_000)),
            ("flow_billsec", str(dur // 1_000_000)),
            ("mduration", str(dur // 1000)),
            ("billmsec", str(bill // 1000)),
            ("progressmsec", str(since(self.progress_us) // 1000)),
            ("answermsec", str(since(self.answered_us) // 1000)),
            ("waitmsec", str(since(self.answered_us) // 1000)),
            ("progress_mediamsec", str(since(self.progress_media_us) // 1000)),
            ("flow_billmsec", str(dur // 1000)),
            ("uduration", str(dur)),
            ("billusec", str(bill)),
            ("progressusec", str(since(self.progress_us))),
            ("answerusec", str(since(self.answered_us))),
            ("waitusec", str(since(self.answered_us))),
            ("progress_mediausec", str(since(self.progress_media_us))),
            ("flow_billusec", str(dur)),
        ]
        if self.has_read_codec:
            sent = self.unicast.frames_sent if self.unicast else 0
            got = self.unicast.frames_received if self.unicast else 0
            out += [
                ("rtp_audio_in_raw_bytes", str(sent * 172)),
                ("rtp_audio_in_media_bytes", str(sent * 160)),
                ("rtp_audio_in_packet_count", str(sent)),
                ("rtp_audio_in_media_packet_count", str(sent)),
                ("rtp_audio_in_skip_packet_count", "0"),
                ("rtp_audio_in_jitter_packet_count", "0"),
                ("rtp_audio_in_dtmf_packet_count", "0"),
                ("rtp_audio_in_cng_packet_count", "0"),
                ("rtp_audio_in_flush_packet_count", "0"),
                ("rtp_audio_in_largest_jb_size", "0"),
                ("rtp_audio_in_jitter_min_variance", "0.00"),
                ("rtp_audio_in_jitter_max_variance", "0.00"),
                ("rtp_audio_in_jitter_loss_rate", "0.00"),
                ("rtp_audio_in_jitter_burst_rate", "0.00"),
                ("rtp_audio_in_mean_interval", "20.00"),
                ("rtp_audio_in_flaw_total", "0"),
                ("rtp_audio_in_quality_percentage", "100.00"),
                ("rtp_audio_in_mos", "4.50"),
                ("rtp_audio_out_raw_bytes", str(got * 172)),
                ("rtp_audio_out_media_bytes", str(got * 160)),
                ("rtp_audio_out_packet_count", str(got)),
                ("rtp_audio_out_media_packet_count", str(got)),
                ("rtp_audio_out_skip_packet_count", "0"),
                ("rtp_audio_out_dtmf_packet_count", "0"),
                ("rtp_audio_out_cng_packet_count", "0"),
                ("rtp_audio_rtcp_packet_count", "0"),
                ("rtp_audio_rtcp_octet_count", "0"),
            ]
        return out

    def summary(self) -> dict[str, str]:
        """One row of `show channels` (a subset of its columns)."""
        return {
            "uuid": self.uuid,
            "direction": self.direction,
            "name": self.name,
            "state": self.state,
            "cid_num": self.profile.get("Caller-ID-Number") or "",
            "dest": self.profile.get("Destination-Number") or "",
            "callstate": self.call_state,
            "answered": str(self.answered),
        }


def common_event_headers(switch: Switch, name: str) -> list[Header]:
    ts = switch.event_timestamp_us()
    secs = ts / 1_000_000
    file_, func, line = CALLING.get(name, ("switch_event.c", "switch_event_fire", "0"))
    return [
        ("Event-Name", name),
        ("Core-UUID", switch.core_uuid),
        ("FreeSWITCH-Hostname", switch.hostname),
        ("FreeSWITCH-Switchname", switch.hostname),
        ("FreeSWITCH-IPv4", switch.ipv4),
        ("FreeSWITCH-IPv6", switch.ipv6),
        ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(secs))),
        ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(secs))),
        ("Event-Date-Timestamp", str(ts)),
        ("Event-Calling-File", file_),
        ("Event-Calling-Function", func),
        ("Event-Calling-Line-Number", line),
        ("Event-Sequence", str(switch.next_sequence())),
    ]


# ---- channel factories ------------------------------------------------------------------------


def new_phone_leg(
    switch: Switch,
    uuid: str,
    *,
    caller: str,
    caller_name: str,
    dest: str,
    codec: Codec,
    session_id: int,
    sip_headers: dict[str, str],
) -> Channel:
    """An inbound SIP leg: registered phone `caller` dialled `dest` (recorded: 1001 -> 01002)."""
    domain = switch.domain
    ch = Channel(
        switch,
        uuid,
        kind="phone",
        name=f"sofia/internal/{caller}@{domain}",
        direction="inbound",
        codec=codec,
        session_id=session_id,
    )
    ch.presence_id = f"{caller}@{domain}"
    ch.sip_contact_user = f"{caller}-0x{random.randint(0x10000000, 0xFFFFFFFF):x}"
    ch.set_profile(
        Direction="inbound",
        Logical_Direction="inbound",
        Username=caller,
        Dialplan="XML",
        **{
            "Caller-ID-Name": caller_name,
            "Caller-ID-Number": caller,
            "Orig-Caller-ID-Name": caller_name,
            "Orig-Caller-ID-Number": caller,
            "Network-Addr": "127.0.0.1",
        },
        ANI=caller,
        **{"Destination-Number": dest},
        Source="mod_sofia",
        Context="default",
    )
    ts = str(ch.created_us)
    tag = _rand_token(16)
    port = str(5060 + random.randint(1, 99))
    ch.sip_port = port
    req_event = [
        ("Event-Name", "REQUEST_PARAMS"),
        ("Core-UUID", switch.core_uuid),
        ("FreeSWITCH-Hostname", switch.hostname),
        ("FreeSWITCH-Switchname", switch.hostname),
        ("FreeSWITCH-IPv4", switch.ipv4),
        ("FreeSWITCH-IPv6", switch.ipv6),
        ("Event-Date-Local", time.strftime("%Y-%m-%d %H:%M:%S")),
        ("Event-Date-GMT", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())),
        ("Event-Date-Timestamp", ts),
        ("Event-Calling-File", "sofia.c"),
        ("Event-Calling-Function", "sofia_handle_sip_i_invite"),
        ("Event-Calling-Line-Number", "10723"),
        ("Event-Sequence", str(switch.next_sequence())),
    ]
    ch.set_vars(
        [
            ("direction", "inbound"),
            ("uuid", uuid),
            ("session_id", str(session_id)),
            ("sip_from_user", caller),
            ("sip_from_uri", f"{caller}@{domain}"),
            ("sip_from_host", domain),
            ("video_media_flow", "disabled"),
            ("audio_media_flow", "disabled"),
            ("text_media_flow", "disabled"),
            ("channel_name", ch.name),
            ("sip_call_id", f"{random.getrandbits(64):016x}"),
            ("sip_local_network_addr", "127.0.0.1"),
            ("sip_network_ip", "127.0.0.1"),
            ("sip_network_port", port),
            ("sip_invite_stamp", ts),
            ("sip_received_ip", "127.0.0.1"),
            ("sip_received_port", port),
            ("sip_via_protocol", "udp"),
            ("sip_authorized", "true"),
        ]
    )
    # The REQUEST_PARAMS event of the directory lookup is copied into the channel variables.
    ch.set_vars(req_event)
    ch.set_vars(
        [
            ("sip_number_alias", caller),
            ("sip_auth_username", caller),
            ("sip_auth_realm", domain),
            ("number_alias", caller),
            ("requested_user_name", caller),
            ("requested_domain_name", domain),
            ("record_stereo", "true"),
            ("default_gateway", "example.com"),
            ("default_areacode", "918"),
            ("transfer_fallback_extension", "operator"),
            ("toll_allow", "domestic,international,local"),
            ("accountcode", caller),
            ("user_context", "default"),
            ("effective_caller_id_name", f"Extension {caller}"),
            ("effective_caller_id_number", caller),
            ("outbound_caller_id_name", "FreeSWITCH"),
            ("outbound_caller_id_number", "0000000000"),
            ("callgroup", "techsupport"),
            ("user_name", caller),
            ("domain_name", domain),
            ("sip_from_user_stripped", caller),
            ("sip_from_tag", tag),
            ("sofia_profile_name", "internal"),
            ("sofia_profile_url", f"sip:mod_sofia@{domain}:5060"),
            ("recovery_profile_name", "internal"),
            (
                "sip_full_via",
                f"SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{_rand_token(16)};rport={port}",
            ),
            ("sip_full_from", f"<sip:{caller}@{domain}>;tag={tag}"),
            ("sip_full_to", f"<sip:{dest}@{domain};transport=udp>"),
            (
                "sip_allow",
                "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, SUBSCRIBE, INFO, MESSAGE, REFER",
            ),
            ("sip_req_params", "transport=udp"),
            ("sip_req_user", dest),
            ("sip_req_uri", f"{dest}@{domain}"),
            ("sip_req_host", domain),
            ("sip_to_params", "transport=udp"),
            ("sip_to_user", dest),
            ("sip_to_uri", f"{dest}@{domain}"),
            ("sip_to_host", domain),
            ("sip_contact_user", ch.sip_contact_user),
            ("sip_contact_port", port),
            ("sip_contact_uri", f"{ch.sip_contact_user}@127.0.0.1:{port}"),
            ("sip_contact_host", "127.0.0.1"),
            ("rtp_use_codec_string", "OPUS,G722,PCMU,PCMA,H264,VP8"),
            ("sip_user_agent", "esl-bridge-sim phone"),
            ("sip_via_host", "127.0.0.1"),
            ("sip_via_port", port),
            ("sip_via_rport", port),
            ("max_forwards", "70"),
            ("presence_id", f"{caller}@{domain}"),
            ("switch_r_sdp", ch.remote_sdp(caller)),
            ("ep_codec_string", codec.ep_codec_string),
            ("endpoint_disposition", "DELAYED NEGOTIATION"),
        ]
    )
    # Custom SIP headers of the INVITE (X-CusData etc.) arrive as sip_h_* variables.
    for key, value in sip_headers.items():
        ch.set_var(f"sip_h_{key}", value)
    return ch


def new_originated_leg(
    switch: Switch,
    uuid: str,
    *,
    user: str,
    cid_number: str,
    cid_name: str | None,
    codec: Codec,
    session_id: int,
    dial_vars: dict[str, str],
    endpoint: str = "sofia",
) -> Channel:
    """An outbound SIP leg created by `originate user/<user>` (recorded as user/1001)."""
    domain = switch.domain
    contact = f"{user}-0x{random.randint(0x10000000, 0xFFFFFFFF):x}"
    port = str(5060 + random.randint(1, 99))
    ch = Channel(
        switch,
        uuid,
        kind="originated",
        name=f"sofia/internal/{contact}@127.0.0.1:{port}",
        direction="outbound",
        codec=codec,
        session_id=session_id,
    )
    ch.sip_contact_user = contact
    ch.presence_id = f"{user}@{domain}"
    ch.set_profile(
        Direction="outbound",
        Logical_Direction="outbound",
        **{
            "Caller-ID-Name": cid_name,
            "Caller-ID-Number": cid_number,
            # Recorded (a phone invited into a room with origination_caller_id_name set):
            # the name is kept as Orig-Caller-ID-Name; absent (None, skipped) without one.
            "Orig-Caller-ID-Name": cid_name,
            "Orig-Caller-ID-Number": cid_number,
            "Callee-ID-Name": "Outbound Call",
            "Callee-ID-Number": contact,
        },
        ANI=cid_number,
        **{"Destination-Number": contact},
        Source="src/switch_ivr_originate.c",
        Context="default",
    )
    ch.set_vars(
        [
            ("direction", "outbound"),
            ("is_outbound", "true"),
            ("uuid", uuid),
            ("call_uuid", uuid),
            ("session_id", str(session_id)),
            ("sip_local_network_addr", "127.0.0.1"),
            ("sip_profile_name", "internal"),
            ("video_media_flow", "disabled"),
            ("text_media_flow", "disabled"),
            ("channel_name", ch.name),
            ("sip_destination_url", f"sip:{contact}@127.0.0.1:{port}"),
        ]
    )
    ch.set_vars(dial_vars.items())
    ch.set_vars(
        [
            ("dialed_user", user),
            ("dialed_domain", domain),
            ("sip_invite_domain", domain),
            ("presence_id", f"{user}@{domain}"),
            ("originate_early_media", "true"),
            ("originate_endpoint", endpoint),
            ("rtp_use_codec_string", "OPUS,G722,PCMU,PCMA,H264,VP8"),
            ("local_media_ip", "127.0.0.1"),
            ("local_media_port", str(ch.local_media_port)),
            ("advertised_media_ip", "127.0.0.1"),
            ("audio_media_flow", "sendrecv"),
            ("rtp_local_sdp_str", ch.local_sdp()),
            ("sip_outgoing_contact_uri", f"<sip:mod_sofia@{domain}:5060>"),
            ("sip_req_uri", f"{contact}@127.0.0.1:{port}"),
            ("sip_to_host", f"127.0.0.1:{port}"),
            ("sip_from_host", domain),
            ("sofia_profile_name", "internal"),
            ("recovery_profile_name", "internal"),
            ("sofia_profile_url", f"sip:mod_sofia@{domain}:5060"),
        ]
    )
    ch.sip_port = port
    return ch


def originated_progress_vars(ch: Channel, cid_number: str) -> list[tuple[str, str]]:
    """Variables set by the 180/183 reply of the called phone (recorded order)."""
    domain = ch.switch.domain
    port = ch.sip_port
    contact = ch.sip_contact_user
    via = f"SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{_rand_token(13)};rport=5060;received=127.0.0.1"
    from_tag, to_tag = _rand_token(13), f"{random.getrandbits(64):016x}"
    return [
        ("sip_local_network_addr", "127.0.0.1"),
        ("sip_reply_host", "127.0.0.1"),
        ("sip_reply_port", port),
        ("sip_network_ip", "127.0.0.1"),
        ("sip_network_port", port),
        ("sip_user_agent", "esl-bridge-sim phone"),
        (
            "sip_allow",
            "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, SUBSCRIBE, INFO, MESSAGE, REFER",
        ),
        ("sip_recover_contact", f"<sip:{contact}@127.0.0.1:{port}>"),
        ("sip_full_via", via),
        ("sip_recover_via", via),
        ("sip_full_from", f"<sip:{cid_number}@{domain}>;tag={from_tag}"),
        ("sip_full_to", f"<sip:{contact}@127.0.0.1:{port}>;tag={to_tag}"),
        ("sip_from_user", cid_number),
        ("sip_from_uri", f"{cid_number}@{domain}"),
        ("sip_from_host", domain),
        ("sip_to_user", contact),
        ("sip_to_port", port),
        ("sip_to_uri", f"{contact}@127.0.0.1:{port}"),
        ("sip_to_host", "127.0.0.1"),
        ("sip_contact_user", contact),
        ("sip_contact_port", port),
        ("sip_contact_uri", f"{contact}@127.0.0.1:{port}"),
        ("sip_contact_host", "127.0.0.1"),
        ("sip_to_tag", to_tag),
        ("sip_from_tag", from_tag),
        ("sip_cseq", str(random.randint(10**8, 2 * 10**8))),
        ("sip_call_id", f"{random.getrandbits(128):032x}"),
    ]


def directory_user_vars(user: str) -> list[tuple[str, str]]:
    """Variables of the vanilla directory entry of `user` (recorded for 1001)."""
    return [
        ("record_stereo", "true"),
        ("default_gateway", "example.com"),
        ("default_areacode", "918"),
        ("transfer_fallback_extension", "operator"),
        ("toll_allow", "domestic,international,local"),
        ("accountcode", user),
        ("user_context", "default"),
        ("effective_caller_id_name", f"Extension {user}"),
        ("effective_caller_id_number", user),
        ("outbound_caller_id_name", "FreeSWITCH"),
        ("outbound_caller_id_number", "0000000000"),
        ("callgroup", "techsupport"),
    ]
