"""Review sheets and dubbing CSVs as localization teams edit them (Excel in es/de/pt locales, XLSX, labels)."""

from __future__ import annotations

import datetime as dt

import pytest

from dubforge.core.contracts import Segment
from dubforge.core.errors import InputError
from dubforge.core.scripts import CsvRow, read_dubbing_csv, read_script, write_dubbing_csv
from dubforge.tasks.translate import translation_from_file

EXCEL_ES = (  # what Excel's "CSV UTF-8" writes in a Spanish locale: BOM, ';', CRLF, decimal commas
    "\ufeffline_id;speaker;start_time;end_time;transcription;translation\r\n"
    "1;Ana;0,5;2;Good morning.;Buenos días; señores.\r\n"
)


def test_excel_semicolon_csv_with_bom(tmp_path):
    path = tmp_path / "sheet.csv"
    path.write_bytes(
        ("\ufeffline_id;speaker;start_time;end_time;transcription;translation\r\n"
         '1;Ana;0,5;2;Good morning.;"Buenos días; señores."\r\n'
         "2;;00:00:02,400;00:00:04,100;Where is it?;¿Dónde está?\r\n").encode("utf-8"))
    rows = read_dubbing_csv(path)
    assert rows == [CsvRow("Ana", 0.5, 2.0, "Good morning.", "Buenos días; señores.", "1"),
                    CsvRow("speaker 1", 2.4, 4.1, "Where is it?", "¿Dónde está?", "2")]


def test_errors_name_the_row_column_and_delimiter(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("speaker;start_time;end_time;transcription;translation\nAna;0,5;soon;Hi.;Hola.\n", encoding="utf-8")
    with pytest.raises(InputError) as error:
        read_dubbing_csv(path)
    assert "row 2, column end_time" in str(error.value) and "';'" in str(error.value)
    path.write_text(EXCEL_ES, encoding="utf-8")  # an unquoted ';' inside the translation
    with pytest.raises(InputError, match=r"row 2.*7 fields but the header has 6 \(delimiter ';'\)"):
        read_dubbing_csv(path)
    path.write_text("speaker|start|end\nAna|1|2\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"missing column\(s\) speaker, start_time.*delimiter"):
        read_dubbing_csv(path)


def test_xlsx_sheet_with_excel_times(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Line ID", "Speaker", "Start Time", "End Time", "Transcription", "Translation", "Fit"])
    sheet.append([1, "Ben", dt.time(0, 0, 1, 500_000), 3.25, "Hello.", "Hallo.", "fits"])
    sheet.append([None] * 7)
    book.save(tmp_path / "review.xlsx")
    (seg,) = read_script(tmp_path / "review.xlsx", video_duration=10.0)
    assert (seg.start, seg.end, seg.speaker, seg.text) == (1.5, 3.25, "Ben", "Hallo.")


def test_written_csv_has_bom_line_ids_and_reads_back(tmp_path):
    rows = [CsvRow("Ana", 0.5, 2.0, "Good morning.", "Buenos días, señores."), CsvRow("Ben", 2.4, 4.1, "Bye.", "Adiós.")]
    path = write_dubbing_csv(tmp_path / "out.csv", rows)
    data = path.read_bytes()
    assert data.startswith(b"\xef\xbb\xbfline_id,speaker,start_time")
    assert [(r.line_id, r.speaker, r.translation) for r in read_dubbing_csv(path)] == [
        ("1", "Ana", "Buenos días, señores."), ("2", "Ben", "Adiós.")]


def test_script_translation_gets_source_text_and_speakers_by_time(tmp_path):
    srt_path = tmp_path / "es.srt"
    srt_path.write_text("1\n00:00:00,400 --> 00:00:02,100\nANA: Buenos días.\n\n"
                        "2\n00:00:02,300 --> 00:00:05,000\n¿Dónde está la estación?\n\n"
                        "3\n00:00:05,500 --> 00:00:06,500\n<v Carla>Aquí.\n\n", encoding="utf-8")
    source = [Segment(start=0.5, end=2.0, text="Good morning.", speaker="Ana"),
              Segment(start=2.4, end=3.5, text="Where is", speaker="Ben"),
              Segment(start=3.5, end=4.9, text="the station?", speaker="Ben"),
              Segment(start=5.6, end=6.4, text="Here.", speaker="Ben")]
    lines = translation_from_file(srt_path, "es", 10.0, source).lines
    assert [(l.speaker, l.text, l.source_text) for l in lines] == [
        ("ANA", "Buenos días.", "Good morning."),
        ("Ben", "¿Dónde está la estación?", "Where is the station?"),
        ("Carla", "Aquí.", "Here."),  # the cue's own label wins over the source's speaker
    ]
    plain = translation_from_file(srt_path, "es", 10.0).lines
    assert plain[1].speaker == "speaker 1" and plain[1].source_text == ""
