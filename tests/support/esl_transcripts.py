"""Reader for the recorded ESL transcripts in tests/fixtures/freeswitch/esl_*.txt.

Format (fixtures README): ``### <seq> +<secs> <wall> <C->S|S->C> (<who->who>) len=<n>\\n``
followed by exactly n raw bytes and one ``\\n``. ``#`` lines outside records are notes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "freeswitch"
SUMMARIES = FIXTURES / "summaries"

_RECORD = re.compile(
    rb"^### (\d+) \+([0-9.]+) (\S+) (C->S|S->C) \(([^)]*)\) len=(\d+)\n", re.MULTILINE
)


@dataclass(frozen=True)
class Record:
    seq: int
    offset_s: float
    direction: str  # "C->S" or "S->C" as written
    who: str  # e.g. "FreeSWITCH->app"
    data: bytes

    @property
    def from_freeswitch(self) -> bool:
        return self.who.startswith("FreeSWITCH->")


@dataclass(frozen=True)
class Transcript:
    path: Path
    records: list[Record]
    notes: list[str]

    @property
    def outbound(self) -> bool:
        return self.path.name.startswith("esl_outbound")

    def freeswitch_chunks(self) -> list[bytes]:
        return [r.data for r in self.records if r.from_freeswitch]

    def app_chunks(self) -> list[bytes]:
        return [r.data for r in self.records if not r.from_freeswitch]

    def summary(self) -> dict[str, Any]:
        return load_summary(self.path.stem)


def read_transcript(path: Path) -> Transcript:
    raw = path.read_bytes()
    records: list[Record] = []
    notes: list[str] = []
    pos = 0
    while pos < len(raw):
        match = _RECORD.match(raw, pos)
        if match is None:
            end = raw.find(b"\n", pos)
            end = len(raw) if end < 0 else end
            line = raw[pos:end].decode("utf-8", "replace")
            if line and not line.startswith("#"):
                raise ValueError(f"{path.name}: unexpected line at byte {pos}: {line[:60]!r}")
            if line.startswith("#NOTE"):
                notes.append(line)
            pos = end + 1
            continue
        size = int(match.group(6))
        start = match.end()
        data = raw[start : start + size]
        if len(data) != size or raw[start + size : start + size + 1] != b"\n":
            raise ValueError(f"{path.name}: record {match.group(1)} is truncated")
        records.append(
            Record(
                seq=int(match.group(1)),
                offset_s=float(match.group(2)),
                direction=match.group(4).decode(),
                who=match.group(5).decode(),
                data=data,
            )
        )
        pos = start + size + 1
    return Transcript(path, records, notes)


def all_transcripts() -> list[Path]:
    return sorted(FIXTURES.glob("esl_*.txt"))


def load_summary(stem: str) -> dict[str, Any]:
    path = SUMMARIES / f"{stem}.summary.json"
    with path.open(encoding="utf-8") as handle:
        data: dict[str, Any] = json.load(handle)
    return data
