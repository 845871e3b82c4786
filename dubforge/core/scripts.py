"""Timed scripts: SRT, WebVTT and the dubbing CSV (`speaker,start_time,end_time,transcription,translation`).

Readers return `Segment`s and raise `InputError` naming the file, the cue or row, and what was wrong.
Writers are atomic. SRT/VTT go through the `srt` and `webvtt-py` libraries.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

import srt
import webvtt

from dubforge.core.contracts import Segment
from dubforge.core.errors import InputError, Problem
from dubforge.core.files import write_text_atomic

CSV_COLUMNS = ("speaker", "start_time", "end_time", "transcription", "translation")
SCRIPT_SUFFIXES = (".srt", ".vtt", ".csv")


@dataclass(frozen=True)
class CsvRow:
    speaker: str
    start: float
    end: float
    transcription: str
    translation: str


_TIME = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)$")


def parse_time(value: str) -> float:
    """'00:01:02,500', '01:02.5', '62.5' -> seconds."""
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    match = _TIME.match(value)
    if not match:
        raise ValueError(f"not a time: {value!r} (expected seconds or HH:MM:SS,mmm)")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds.replace(",", "."))


def format_time(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(Problem(str(path), "", "not a UTF-8 text file")) from None


def read_dubbing_csv(path: Path) -> list[CsvRow]:
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InputError(
            Problem(str(path), "header", f"missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)}")
        )
    rows, problems = [], []
    for number, raw in enumerate(reader, start=2):
        try:
            start, end = parse_time(raw["start_time"] or ""), parse_time(raw["end_time"] or "")
        except ValueError as exc:
            problems.append(Problem(str(path), f"row {number}", str(exc)))
            continue
        rows.append(
            CsvRow(
                speaker=(raw["speaker"] or "speaker").strip() or "speaker",
                start=start,
                end=end,
                transcription=(raw["transcription"] or "").strip(),
                translation=(raw["translation"] or "").strip(),
            )
        )
    if problems:
        raise InputError(problems)
    return rows


def _segments_from_file(path: Path, column: str) -> list[tuple[str, Segment]]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return [
            (f"row {i}", Segment(start=r.start, end=r.end, text=getattr(r, column), speaker=r.speaker))
            for i, r in enumerate(read_dubbing_csv(path), start=2)
        ]
    text = _read_text(path)
    if suffix == ".srt":
        try:
            cues = list(srt.parse(text))
        except srt.SRTParseError as exc:
            raise InputError(Problem(str(path), "", f"invalid SRT: {exc}")) from None
        return [
            (f"cue {c.index}", Segment(start=c.start.total_seconds(), end=c.end.total_seconds(), text=" ".join(c.content.split())))
            for c in cues
        ]
    if suffix == ".vtt":
        try:
            captions = webvtt.from_buffer(io.StringIO(text)).captions
        except Exception as exc:  # webvtt raises its own MalformedFileError and others
            raise InputError(Problem(str(path), "", f"invalid WebVTT: {exc}")) from None
        return [
            (f"cue {i}", Segment(start=parse_time(c.start), end=parse_time(c.end), text=" ".join(c.text.split())))
            for i, c in enumerate(captions, start=1)
        ]
    raise InputError(Problem(str(path), "", f"unsupported script format {suffix!r}; expected one of {', '.join(SCRIPT_SUFFIXES)}"))


def read_script(
    path: Path,
    video_duration: float | None = None,
    column: Literal["transcription", "translation"] = "translation",
) -> list[Segment]:
    """Read timed lines; every problem (empty line, bad times, past the video end, overlaps) is reported at once.

    `column` picks the dubbing-CSV column; SRT/VTT have one text per cue.
    """
    path = Path(path)
    entries = _segments_from_file(path, column)
    problems: list[Problem] = []
    if not entries:
        problems.append(Problem(str(path), "", "no cues/rows found"))
    previous_end = 0.0
    for where, seg in entries:
        if not seg.text:
            problems.append(Problem(str(path), where, "empty line: every cue needs text to dub"))
        if seg.end <= seg.start:
            problems.append(Problem(str(path), where, f"ends ({seg.end:.3f}s) before it starts ({seg.start:.3f}s)"))
        if video_duration is not None and seg.end > video_duration + 1e-3:
            problems.append(
                Problem(str(path), where, f"runs past the end of the video ({seg.end:.3f}s > {video_duration:.3f}s)")
            )
        if seg.start < previous_end - 1e-3:
            problems.append(Problem(str(path), where, f"starts at {seg.start:.3f}s, before the previous line ends ({previous_end:.3f}s)"))
        previous_end = max(previous_end, seg.end)
    if problems:
        raise InputError(problems)
    return [seg for _, seg in entries]


def write_srt(path: Path, segments: Sequence[Segment]) -> Path:
    cues = [
        srt.Subtitle(index=i, start=timedelta(seconds=s.start), end=timedelta(seconds=s.end), content=s.text)
        for i, s in enumerate(segments, start=1)
    ]
    return write_text_atomic(path, srt.compose(cues))


def write_vtt(path: Path, segments: Sequence[Segment]) -> Path:
    vtt = webvtt.WebVTT()
    for s in segments:
        vtt.captions.append(
            webvtt.Caption(format_time(s.start).replace(",", "."), format_time(s.end).replace(",", "."), s.text)
        )
    return write_text_atomic(path, vtt.content)


def write_dubbing_csv(path: Path, rows: Sequence[CsvRow], extra: dict[str, Sequence[str]] | None = None) -> Path:
    """`extra`: review columns after the standard ones (one value per row); reading the CSV back ignores them."""
    extra = extra or {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *extra])
    for i, r in enumerate(rows):
        writer.writerow([r.speaker, format_time(r.start), format_time(r.end), r.transcription, r.translation,
                         *(values[i] for values in extra.values())])
    return write_text_atomic(path, buffer.getvalue())
