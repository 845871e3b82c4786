"""What the Prefect UI shows: readable QC rows, lip-sync pass/fail, the language x stage matrix, scoped keys."""

from __future__ import annotations

from dubforge.flows.artifacts import artifact_key, lipsync_rows, qc_rows, stage_matrix, timecode

QC = {"segments": [
    {"index": 0, "window": [0.5, 2.1234567], "placed": [0.5, 2.0], "speed": 1.0, "borrowed": 0.0, "overflow": 0.0,
     "text": "Hola.", "warnings": []},
    {"index": 1, "window": [61.0, 62.0], "placed": [61.0, 63.3333333], "speed": 1.3999999, "borrowed": 0.9,
     "overflow": 0.4333333, "text": "Una frase larga.", "warnings": ["glossary: 'station' -> 'estación': MISSING"]},
]}


def test_qc_rows_are_timecodes_two_decimals_and_pass_fail():
    first, second = qc_rows(QC, max_speedup=1.25)
    assert first == {"line": "1", "window": "00:00:00.50 - 00:00:02.12", "placed": "00:00:00.50 - 00:00:02.00",
                     "speed": "x1.00", "borrowed": "0.00 s", "overflow": "0.00 s", "result": "pass", "text": "Hola."}
    assert second["window"] == "00:01:01.00 - 00:01:02.00" and second["speed"] == "x1.40"
    assert second["result"] == ("FAIL: overflows 0.43 s; speed above x1.25; "
                                "glossary: 'station' -> 'estación': MISSING")
    assert timecode(3725.5) == "01:02:05.50"


def test_lipsync_rows_against_targets():
    rows = {r["metric"]: r for r in lipsync_rows({"closure": 0.95, "seam_ratio": 1.3, "frames_rendered": 120,
                                                    "backend": "mouth-bank", "warnings": []})}
    assert rows["closure"] == {"metric": "closure", "value": "0.95", "target": ">= 0.9", "result": "pass"}
    assert rows["seam_ratio"]["result"] == "FAIL" and rows["frames_rendered"]["result"] == "-"
    assert set(rows) == {"closure", "seam_ratio", "frames_rendered"}


def test_stage_matrix_and_scoped_keys():
    report = {"languages": {
        "es": {"status": "completed", "stages": {"translate": {"state": "Cached"}, "voice": {"state": "Completed"}}},
        "fr": {"status": "failed", "stages": {"translate": {"state": "Failed"}}},
        "de": {"status": "completed", "previous_run": True, "stages": {"translate": {"state": "Completed"}}},
    }}
    matrix = {r["language"]: r for r in stage_matrix(report, ("translate", "voice", "lipsync"))}
    assert matrix["es"] == {"language": "es", "status": "completed", "translate": "Cached", "voice": "Completed"}
    assert matrix["fr"]["voice"] == "not run" and matrix["de"]["status"] == "completed (previous run)"
    assert artifact_key("demo", "qc", "pt-BR") == "demo-qc-pt-br"
