"""Review sheets: one row per line to dub, for the localization team to proofread and edit before synthesis.

Written as CSV (UTF-8 with a BOM, so Excel opens accents right) and XLSX. The editable columns are those of the
dubbing CSV (`speaker, start_time, end_time, transcription, translation`), so an edited sheet is read back as a
translation file (`translation: {from: file, path: ...review.xlsx}`); the other columns are information for the
reviewer and are ignored on reading.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from dubforge.core.contracts import Translation
from dubforge.core.files import atomic_path, write_text_atomic
from dubforge.core.glossary import check_line
from dubforge.core.scripts import CSV_COLUMNS, LINE_ID, format_time

INFO_COLUMNS = ("characters", "spoken_seconds", "window_seconds", "fit", "glossary", "warnings", "suggestion",
                "suggestion_fit")
COLUMNS = (LINE_ID, *CSV_COLUMNS, *INFO_COLUMNS)


@dataclass(frozen=True)
class ReviewRow:
    line_id: int
    speaker: str
    start: float
    end: float
    source: str
    translation: str
    spoken: float | None  # natural duration of the synthesised line at the voice's rate; None if not estimated
    fit: str
    glossary: str
    warnings: str
    suggestion: str = ""  # the fit helper's shorter translation, for the reviewer to accept or not
    suggestion_fit: str = ""

    def values(self) -> list[object]:
        return [self.line_id, self.speaker, format_time(self.start), format_time(self.end), self.source,
                self.translation, len(self.translation), "" if self.spoken is None else round(self.spoken, 2),
                round(self.end - self.start, 2), self.fit, self.glossary, self.warnings, self.suggestion,
                self.suggestion_fit]


def fit_verdict(spoken: float | None, window: float, max_speedup: float) -> str:
    """'fits' at the natural rate, 'needs x1.15' within the manifest's speed-up cap, else 'overflow'."""
    if spoken is None:
        return "not estimated"
    if spoken <= window + 1e-6:
        return "fits"
    ratio = spoken / window if window > 0 else float("inf")
    return f"needs x{ratio:.2f}" if ratio <= max_speedup + 1e-6 else f"overflow (x{ratio:.2f} > cap x{max_speedup:g})"


def review_rows(translation: Translation, spoken: Mapping[int, float | None], max_speedup: float,
                glossary: Mapping[str, str]) -> list[ReviewRow]:
    """`spoken`: line index -> natural spoken duration; `glossary`: source term -> required translation."""
    rows = []
    for line in translation.lines:
        hits = check_line(line.source_text, line.text, dict(glossary))
        duration = spoken.get(line.index)
        rows.append(ReviewRow(
            line_id=line.index + 1, speaker=line.speaker, start=line.start, end=line.end, source=line.source_text,
            translation=line.text, spoken=duration, fit=fit_verdict(duration, line.end - line.start, max_speedup),
            glossary="; ".join(hit.describe() for hit in hits),
            warnings="; ".join(w for w in line.warnings if not w.startswith("glossary:"))))
    return rows


def write_review_csv(path: Path, rows: Sequence[ReviewRow]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")  # as Excel writes it
    writer.writerow(COLUMNS)
    writer.writerows(row.values() for row in rows)
    return write_text_atomic(path, "\ufeff" + buffer.getvalue())


def write_review_xlsx(path: Path, rows: Sequence[ReviewRow], title: str) -> Path:
    import openpyxl  # 0.1-0.3 s to import: only `prepare` writes a workbook
    from openpyxl.styles import Alignment, Font, PatternFill

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.title = title[:31]  # Excel's limit
    sheet.append(list(COLUMNS))
    for row in rows:
        sheet.append(row.values())
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    widths = {"transcription": 48, "translation": 48, "suggestion": 48, "glossary": 30, "warnings": 30, "fit": 22,
              "suggestion_fit": 22, "speaker": 14}
    for index, name in enumerate(COLUMNS, start=1):
        letter = openpyxl.utils.get_column_letter(index)
        sheet.column_dimensions[letter].width = widths.get(name, 13)
        if name in ("transcription", "translation", "suggestion"):
            for cell in sheet[letter][1:]:
                cell.alignment = Alignment(wrap_text=True, vertical="top")
    flag = PatternFill("solid", fgColor="FFE0B2")
    fit_col, glossary_col = COLUMNS.index("fit") + 1, COLUMNS.index("glossary") + 1
    for r, row in enumerate(rows, start=2):
        if row.fit.startswith("overflow"):
            sheet.cell(r, fit_col).fill = flag
        if "MISSING" in row.glossary:
            sheet.cell(r, glossary_col).fill = flag
    sheet.freeze_panes = "A2"
    with atomic_path(path) as tmp:
        book.save(tmp)
    return Path(path)
