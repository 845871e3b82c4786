"""Timed scripts: SRT, WebVTT and the dubbing CSV (`speaker,start_time,end_time,transcription,translation`).

Readers return `Segment`s and raise `InputError` naming the file, the cue or row, and what was wrong.
Writers are atomic. SRT/VTT go through the `srt` and `webvtt-py` libraries.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import srt
import webvtt

from dubforge.core.contracts import DEFAULT_SPEAKER, Segment
from dubforge.core.errors import InputError, Problem
from dubforge.core.files import write_text_atomic

CSV_COLUMNS = ("speaker", "start_time", "end_time", "transcription", "translation")
LINE_ID = "line_id"  # optional first column: the line's number, as written in review sheets
SCRIPT_SUFFIXES = (".srt", ".vtt", ".csv", ".xlsx")
_DELIMITERS = {",": "','", ";": "';'", "\t": "tab"}


@dataclass(frozen=True)
class CsvRow:
    speaker: str
    start: float
    end: float
    transcription: str
    translation: str
    line_id: str = ""


_TIME = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:[.,]\d+)?)$")


def parse_time(value: str) -> float:
    """'00:01:02,500', '01:02.5', '62.5', '62,5' (a decimal comma, as Excel writes in es/de/pt) -> seconds."""
    value = value.strip()
    try:
        return float(value.replace(",", ".") if re.fullmatch(r"\d+,\d+", value) else value)
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
        raise InputError(Problem(str(path), "", "not a UTF-8 text file (save as 'CSV UTF-8')")) from None


def _column(name: Any) -> str:
    return "_".join(str(name or "").strip().lower().split())


def _csv_table(path: Path) -> tuple[list[str], list[list[str]], str]:
    """Header, rows and the delimiter found: ',' or ';' (Excel's "CSV UTF-8" in es/de/pt locales) or tab."""
    text = _read_text(path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    known = set(CSV_COLUMNS) | {LINE_ID}

    def score(delimiter: str) -> tuple[int, int]:
        names = [_column(c) for c in next(csv.reader([first], delimiter=delimiter), [])]
        return len(known.intersection(names)), len(names)

    delimiter = max(_DELIMITERS, key=score)
    rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    return ([_column(c) for c in rows[0]] if rows else []), rows[1:], _DELIMITERS[delimiter]


def _cell_text(value: Any) -> str:
    """An XLSX cell as text; times Excel turned into time/duration values become seconds."""
    if value is None:
        return ""
    if isinstance(value, dt.timedelta):
        return f"{value.total_seconds():.3f}"
    if isinstance(value, dt.datetime):
        value = value.time()
    if isinstance(value, dt.time):
        return f"{value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1e6:.3f}"
    return str(value)


def _xlsx_table(path: Path) -> tuple[list[str], list[list[str]], str]:
    import openpyxl  # 0.1-0.3 s to import: every run validates a manifest, few read a workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (InvalidFileException, KeyError, OSError, ValueError) as exc:
        raise InputError(Problem(str(path), "", f"not a readable .xlsx workbook: {exc}")) from None
    try:
        rows = [[_cell_text(v) for v in row] for row in book.worksheets[0].iter_rows(values_only=True)]
    finally:
        book.close()
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    return ([_column(c) for c in rows[0]] if rows else []), rows[1:], "xlsx sheet"


def read_dubbing_csv(path: Path) -> list[CsvRow]:
    """Rows of a dubbing CSV or review sheet: `,`/`;`/tab-separated UTF-8 (BOM or not), or the first sheet of
    an .xlsx. Extra columns (characters, fit, glossary...) are ignored; `line_id` is kept when present."""
    path = Path(path)
    header, rows, delimiter = _xlsx_table(path) if path.suffix.lower() == ".xlsx" else _csv_table(path)
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise InputError(Problem(
            str(path), "header",
            f"missing column(s) {', '.join(missing)}; found {header} (delimiter {delimiter}); "
            f"expected {','.join(CSV_COLUMNS)} (',' or ';' separated)"))
    where = {name: i for i, name in reversed(list(enumerate(header)))}
    parsed, problems = [], []
    for number, values in enumerate(rows, start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(header) and any(v.strip() for v in values[len(header):]):
            problems.append(Problem(str(path), f"row {number}",
                                    f"{len(values)} fields but the header has {len(header)} (delimiter {delimiter}); "
                                    "quote text that contains the delimiter"))
            continue
        cell = {name: (values[i] if i < len(values) else "").strip() for name, i in where.items()}
        times = {}
        for column in ("start_time", "end_time"):
            try:
                times[column] = parse_time(cell[column])
            except ValueError as exc:
                problems.append(Problem(str(path), f"row {number}, column {column}", f"{exc} (delimiter {delimiter})"))
        if len(times) < 2:
            continue
        parsed.append(CsvRow(speaker=cell["speaker"] or DEFAULT_SPEAKER, start=times["start_time"], end=times["end_time"],
                             transcription=cell["transcription"], translation=cell["translation"],
                             line_id=cell.get(LINE_ID, "")))
    if problems:
        raise InputError(problems)
    return parsed


# "ANNA: text", "[Anna] text" and WebVTT "<v Anna>text" name the speaker of a cue.
_LABELS = (re.compile(r"^<v(?:\.[\w.-]+)?\s+([^>]{1,40})>\s*(.*?)(?:</v>)?$", re.S),
           re.compile(r"^\[([^\]]{1,30})\]\s*(.+)$", re.S),
           re.compile(r"^([A-ZÀ-Þ][A-ZÀ-Þ0-9 .'-]{0,29}):\s+(.+)$", re.S))


def speaker_label(text: str) -> tuple[str | None, str]:
    """(speaker, text without the label) for a cue that starts with a speaker label, else (None, text)."""
    for pattern in _LABELS:
        match = pattern.match(text.strip())
        if match and match.group(2).strip():
            return match.group(1).strip(), match.group(2).strip()
    return None, text


def _cue(start: float, end: float, text: str) -> Segment:
    speaker, text = speaker_label(" ".join(text.split()))
    return Segment(start=start, end=end, text=text, speaker=speaker or DEFAULT_SPEAKER)


def _segments_from_file(path: Path, column: str) -> list[tuple[str, Segment]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".xlsx"):
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
            (f"cue {c.index}", _cue(c.start.total_seconds(), c.end.total_seconds(), c.content))
            for c in cues
        ]
    if suffix == ".vtt":
        try:
            captions = webvtt.from_buffer(io.StringIO(text)).captions
        except Exception as exc:  # webvtt raises its own MalformedFileError and others
            raise InputError(Problem(str(path), "", f"invalid WebVTT: {exc}")) from None
        return [
            (f"cue {i}", _cue(parse_time(c.start), parse_time(c.end), c.raw_text))
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


def write_dubbing_csv(path: Path, rows: Sequence[CsvRow], extra: Mapping[str, Sequence[str]] | None = None) -> Path:
    """UTF-8 with a BOM, so Excel opens accents right; `line_id` first (1, 2, ... unless the rows carry ids).
    `extra`: review columns after the standard ones (one value per row); reading the CSV back ignores them."""
    extra = extra or {}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow((LINE_ID, *CSV_COLUMNS, *extra))
    for number, r in enumerate(rows, start=1):
        writer.writerow([r.line_id or number, r.speaker, format_time(r.start), format_time(r.end), r.transcription,
                         r.translation, *(values[number - 1] for values in extra.values())])
    return write_text_atomic(path, "\ufeff" + buffer.getvalue())
