"""Record ``unicast`` with ``flags: native`` against a real FreeSWITCH (PCMU phones).

Same transcript format and ESL plumbing as tests/tools/record_esl.py (raw sockets and threads,
no esl_bridge code). Two scenarios, written to ``<out>/``:

* ``talk``: inbound ESL originates ``user/1001`` (auto answer, PCMU, a 1 kHz tone as microphone)
  into ``&park()`` and sends ``unicast`` with ``flags: native``. The app's UDP peer answers
  FreeSWITCH's first datagram with 160-byte PCMU frames of a 440 Hz tone on an absolute 20 ms
  schedule for 5 s, sends nothing for 2 s, then the tone again for 3 s. A raw packet socket on
  ``lo`` captures the unicast datagrams both ways and the RTP between FreeSWITCH and the phone.
* ``norp``: the same toward ``user/1009`` in ``answermode=early`` (183 with SDP, then no RTP at
  all): which datagrams does FreeSWITCH send when the phone sends nothing?

Outputs: ``esl_inbound_native_unicast_<scenario>.txt`` (transcript), ``<scenario>_datagrams.csv``
(every captured UDP packet: time, direction, size, RTP header fields, all-0xFF or not, first bytes),
``<scenario>_fs_to_app_first1s.bin`` (the payloads of FreeSWITCH's first 50 datagrams, concatenated)
and ``<scenario>_summary.json`` (what the recorder measured). Needs root (AF_PACKET).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import socket
import struct
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from record_esl import Session, inbound, named

UUID_TALK = "5e1f0000-0000-4000-8000-0000000b0001"
UUID_NORTP = "5e1f0000-0000-4000-8000-0000000b0002"
FS_PORT, APP_PORT = 9500, 9501
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


def ulaw_encode(sample: int) -> int:
    """ITU-T G.711 mu-law, written out so the recording depends on no project code."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), clip) + bias
    exponent = 7
    for exp in range(7, -1, -1):
        if magnitude & (0x4000 >> (7 - exp)):
            exponent = exp
            break
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode(byte: int) -> int:
    byte = ~byte & 0xFF
    sign = byte & 0x80
    exponent = (byte >> 4) & 0x07
    mantissa = byte & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -magnitude if sign else magnitude


def tone_pcmu(freq: float, index: int, amplitude: int = 9000) -> bytes:
    w = 2 * math.pi * freq / 8000
    return bytes(ulaw_encode(int(amplitude * math.sin(w * (index * 160 + i)))) for i in range(160))


def dominant_hz(samples: list[int], rate: int = 8000) -> tuple[float, float]:
    """(peak frequency, RMS) by a plain DFT scan in 10 Hz steps (no numpy needed)."""
    if not samples:
        return 0.0, 0.0
    n = len(samples)
    rms = math.sqrt(sum(s * s for s in samples) / n)
    best, best_power = 0.0, -1.0
    for hz in range(100, 3900, 10):
        w = 2 * math.pi * hz / rate
        re = sum(s * math.cos(w * i) for i, s in enumerate(samples))
        im = sum(s * math.sin(w * i) for i, s in enumerate(samples))
        if re * re + im * im > best_power:
            best, best_power = float(hz), re * re + im * im
    return best, rms


class Capture:
    """UDP packets on ``lo`` whose ports are in ``ports`` (incoming copies only)."""

    def __init__(self, ports: set[int]) -> None:
        self.ports = ports
        self.packets: list[tuple[float, int, int, bytes]] = []
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while self.running:
            try:
                frame, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            now = time.monotonic()
            if addr[2] == PACKET_OUTGOING or len(frame) < 42 or frame[12:14] != b"\x08\x00":
                continue
            ihl = (frame[14] & 0x0F) * 4
            if frame[23] != 17:  # UDP
                continue
            udp = 14 + ihl
            sport, dport, ulen = struct.unpack("!HHH", frame[udp : udp + 6])
            if sport in self.ports or dport in self.ports:
                self.packets.append((now, sport, dport, frame[udp + 8 : udp + ulen]))

    def stop(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def rtp_fields(payload: bytes) -> tuple[int, int, int, int] | None:
    if len(payload) < 12 or payload[0] >> 6 != 2:
        return None
    pt = payload[1] & 0x7F
    seq, ts = struct.unpack("!HI", payload[2:8])
    return pt, seq, ts, len(payload) - 12 - (payload[0] & 0x0F) * 4


def channel_codec_headers(ev: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in ev.items() if "odec" in k or k.endswith("_rate")}


def run(out: Path, scenario: str, phone_rtp: range) -> None:
    talk = scenario == "talk"
    uuid, user = (UUID_TALK, "1001") if talk else (UUID_NORTP, "1009")
    cap = Capture({FS_PORT, APP_PORT, *phone_rtp})
    s: Session = inbound(out / f"esl_inbound_native_unicast_{scenario}.txt", f"native {scenario}")
    s.command("event plain CHANNEL_ANSWER CHANNEL_PROGRESS_MEDIA CHANNEL_PARK BACKGROUND_JOB")
    extra = ",ignore_early_media=true" if talk else ""
    s.command(
        f"bgapi originate {{origination_uuid={uuid},origination_caller_id_number=1005{extra}}}"
        f"user/{user} &park()"
    )
    trigger = named("CHANNEL_PARK", uuid) if talk else named("CHANNEL_PROGRESS_MEDIA", uuid)
    ev = s.wait_event(trigger, 30)
    s.note(f"{'CHANNEL_PARK' if talk else 'CHANNEL_PROGRESS_MEDIA'} seen: {ev is not None}")
    if ev is None:
        raise SystemExit("the call did not come up")
    headers = channel_codec_headers(ev.event)
    read_codec = s.api(f"uuid_getvar {uuid} read_codec")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", APP_PORT))
    udp.settimeout(0.5)
    got: list[tuple[float, bytes]] = []
    sent: list[tuple[float, bytes]] = []
    stop = threading.Event()
    first = threading.Event()

    def receiver() -> None:
        while not stop.is_set():
            try:
                data, _addr = udp.recvfrom(4096)
            except TimeoutError:
                continue
            got.append((time.monotonic(), data))
            first.set()

    def sender() -> None:
        first.wait()
        t0 = time.monotonic()
        for k in range(500):  # 10 s of schedule: tone 0-5 s, nothing 5-7 s, tone 7-10 s
            delay = t0 + k * 0.020 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop.is_set():
                return
            if k < 250 or k >= 350:
                frame = tone_pcmu(440.0, k)
                udp.sendto(frame, ("127.0.0.1", FS_PORT))
                sent.append((time.monotonic(), frame))

    threads = [threading.Thread(target=receiver, daemon=True)]
    if talk:
        threads.append(threading.Thread(target=sender, daemon=True))
    for t in threads:
        t.start()
    s.command(
        f"sendmsg {uuid}\ncall-command: unicast\nlocal-ip: 127.0.0.1\nlocal-port: {FS_PORT}\n"
        f"remote-ip: 127.0.0.1\nremote-port: {APP_PORT}\ntransport: udp\nflags: native"
    )
    s.note("unicast sent (flags: native)")
    first.wait(5)
    time.sleep(10.5 if talk else 3.0)
    stop.set()
    s.api(f"uuid_kill {uuid}")
    s.wait_event(named("CHANNEL_HANGUP_COMPLETE", uuid), 2)
    time.sleep(0.5)
    for t in threads:
        t.join()
    udp.close()
    s.command("exit")
    s.close()
    cap.stop()
    summarize(out, scenario, cap, got, sent, headers, read_codec, phone_rtp)


def summarize(
    out: Path,
    scenario: str,
    cap: Capture,
    got: list[tuple[float, bytes]],
    sent: list[tuple[float, bytes]],
    headers: dict[str, str],
    read_codec: str,
    phone_rtp: range,
) -> None:
    t0 = cap.packets[0][0] if cap.packets else 0.0
    rows = []
    to_phone: list[tuple[float, int, int, int, bytes]] = []
    for t, sport, dport, payload in cap.packets:
        if sport == FS_PORT:
            kind = "unicast fs->app"
        elif dport == FS_PORT:
            kind = "unicast app->fs"
        elif dport in phone_rtp:
            kind = "rtp fs->phone"
        else:
            kind = "rtp phone->fs"
        rtp = rtp_fields(payload) if kind.startswith("rtp") else None
        if kind == "rtp fs->phone" and rtp is not None and rtp[0] in (0, 8):
            to_phone.append((t, rtp[1], rtp[2], rtp[3], payload[12:]))
        rows.append(
            {
                "t": f"{t - t0:.6f}",
                "kind": kind,
                "size": len(payload),
                "pt": "" if rtp is None else rtp[0],
                "seq": "" if rtp is None else rtp[1],
                "ts": "" if rtp is None else rtp[2],
                "all_ff": int(len(payload) > 0 and payload.count(0xFF) == len(payload)),
                "head_hex": payload[:8].hex(),
            }
        )
    with (out / f"{scenario}_datagrams.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["t"])
        writer.writeheader()
        writer.writerows(rows)

    def gaps(times: list[float]) -> dict[str, float]:
        d = [b - a for a, b in itertools.pairwise(times)]
        if not d:
            return {}
        mean = sum(d) / len(d)
        return {
            "mean_ms": round(mean * 1000, 3),
            "min_ms": round(min(d) * 1000, 3),
            "max_ms": round(max(d) * 1000, 3),
        }

    sizes: dict[int, int] = {}
    for _t, data in got:
        sizes[len(data)] = sizes.get(len(data), 0) + 1
    ff = [len(d) for _t, d in got if d.count(0xFF) == len(d)]
    audio = [d for _t, d in got if d.count(0xFF) != len(d) and len(d) == 160]
    heard = [ulaw_decode(b) for d in audio[50:100] for b in d]
    ts_steps: dict[int, int] = {}
    for a, b in itertools.pairwise(to_phone):
        step = (b[2] - a[2]) & 0xFFFFFFFF
        ts_steps[step] = ts_steps.get(step, 0) + 1
    phone_pcm = [ulaw_decode(x) for p in to_phone[50:100] for x in p[4]]
    summary = {
        "scenario": scenario,
        "event_codec_headers": headers,
        "uuid_getvar_read_codec": read_codec,
        "fs_to_app": {
            "datagrams": len(got),
            "sizes": sizes,
            "all_ff_datagrams": len(ff),
            "all_ff_sizes": sorted(set(ff)),
            "interarrival": gaps([t for t, _d in got]),
            "fft_of_datagrams_50_100_as_pcmu": dominant_hz(heard),
        },
        "app_to_fs": {"datagrams": len(sent), "interval": gaps([t for t, _d in sent])},
        "rtp_fs_to_phone": {
            "packets": len(to_phone),
            "payload_sizes": sorted({p[3] for p in to_phone}),
            "timestamp_steps": ts_steps,
            "interarrival": gaps([p[0] for p in to_phone]),
            "fft_of_packets_50_100": dominant_hz(phone_pcm),
            "payload_equals_sent": sum(
                1 for p in to_phone if any(p[4] == d for _t, d in sent[:600])
            ),
        },
    }
    # The raw payload of FreeSWITCH's first 50 datagrams (1 s), concatenated.
    (out / f"{scenario}_fs_to_app_first1s.bin").write_bytes(b"".join(d for _t, d in got[:50]))
    (out / f"{scenario}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["talk", "nortp"])
    parser.add_argument("--out", type=Path, default=Path("native_unicast"))
    parser.add_argument("--phone-rtp", default="27100-27199", help="the phone's RTP port range")
    args = parser.parse_args()
    lo, hi = (int(x) for x in args.phone_rtp.split("-"))
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.out, args.scenario, range(lo, hi + 1))


if __name__ == "__main__":
    main()
