"""What the Prefect UI shows for a run: QC tables per language, a language x stage matrix and the summary.

Keys are scoped by project (`<project>-qc-es`), so projects sharing a server never overwrite each other's, and
everything is published by the flow from the delivered `qc.json`, so a cached re-run shows the same tables.
Values are for people: timecodes, two decimals, pass/fail against the thresholds below.
"""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

# Lip-sync scorecard targets (min, max), as the end-to-end lip-sync test holds the renderer to.
LIPSYNC_TARGETS = {"closure": (0.9, None), "correlation": (0.6, None), "preservation_db": (40.0, None),
                   "seam_ratio": (None, 1.15), "range_ratio": (0.6, 1.25), "sharpness_ratio": (0.7, None)}


def artifact_key(project: str, *parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes."""
    raw = "-".join([project, *parts]).lower()
    return "".join(c if c.isalnum() else "-" for c in raw)


def timecode(seconds: float) -> str:
    minutes, rest = divmod(max(float(seconds), 0.0), 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours:02d}:{minutes:02d}:{rest:05.2f}"


def qc_rows(qc: dict[str, Any], max_speedup: float | None = None) -> list[dict[str, str]]:
    rows = []
    for line in qc["segments"]:
        problems = []
        if line["overflow"] > 0:
            problems.append(f"overflows {line['overflow']:.2f} s")
        if max_speedup is not None and line["speed"] > max_speedup + 1e-3:
            problems.append(f"speed above x{max_speedup:.2f}")
        problems += line.get("warnings", [])
        rows.append({
            "line": str(line["index"] + 1),
            "window": f"{timecode(line['window'][0])} - {timecode(line['window'][1])}",
            "placed": f"{timecode(line['placed'][0])} - {timecode(line['placed'][1])}",
            "speed": f"x{line['speed']:.2f}",
            "borrowed": f"{line['borrowed']:.2f} s",
            "overflow": f"{line['overflow']:.2f} s",
            "result": "FAIL: " + "; ".join(problems) if problems else "pass",
            "text": line["text"],
        })
    return rows


def lipsync_rows(card: dict[str, Any]) -> list[dict[str, str]]:
    rows = []
    for metric, value in card.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        low, high = LIPSYNC_TARGETS.get(metric, (None, None))
        target = " and ".join(t for t in (f">= {low}" if low is not None else "", f"<= {high}" if high is not None else "") if t)
        ok = (low is None or value >= low) and (high is None or value <= high)
        rows.append({"metric": metric, "value": f"{value:.2f}" if isinstance(value, float) else str(value),
                     "target": target or "-", "result": ("pass" if ok else "FAIL") if target else "-"})
    return rows


def publish_qc(project: str, language: str, qc: dict[str, Any], max_speedup: float | None = None) -> None:
    key = artifact_key(project, "qc", language)
    create_table_artifact(table=qc_rows(qc, max_speedup), key=key,
                          description=f"{project} {language}: per-line timing fit (times as HH:MM:SS.ss)")
    loud, summary = qc["loudness"], qc["summary"]

    def level(value: float | None) -> str:
        return "silent" if value is None else f"{value:.2f}"

    create_markdown_artifact(key=f"{key}-summary", markdown="\n".join([
        f"# {project} {language}: {qc['deliverable']}",
        f"- loudness: {level(loud['integrated_lufs'])} LUFS (target {loud['target_lufs']:.2f}), true peak "
        f"{level(loud['true_peak_dbtp'])} dBTP (max {loud['max_true_peak_dbtp']:.2f}): **{'pass' if loud['pass'] else 'FAIL'}**",
        f"- lines: {summary['lines']}; sped up: {summary['lines_sped_up']} (max x{summary['max_speed']:.2f}); "
        f"overflowing: {summary['lines_overflowing']} ({summary['total_overflow']:.2f} s): "
        f"**{'pass' if summary['lines_overflowing'] == 0 else 'FAIL'}**",
        f"- warnings: {summary.get('warnings', 0)}",
        *([f"- intelligibility: CER {qc['intelligibility']['cer']:.2f} (the dub transcribed back by "
           f"{qc['intelligibility']['backend']})"] if (qc.get("intelligibility") or {}).get("cer") is not None else []),
        "- backends: " + ", ".join(f"{k}: {v}" for k, v in qc["backends"].items()),
    ]))
    if "lipsync" in qc:
        create_table_artifact(table=lipsync_rows(qc["lipsync"]), key=f"{key}-lipsync",
                              description=f"{project} {language}: lip-sync scorecard (re-detected on the rendered output)")


def stage_matrix(report: dict[str, Any], stages: tuple[str, ...]) -> list[dict[str, str]]:
    """One row per language, one column per stage: Completed / Cached / Failed / not run."""
    rows = []
    for language, entry in report["languages"].items():
        states = entry.get("stages", {})
        row = {"language": language, "status": entry["status"] + (" (previous run)" if entry.get("previous_run") else "")}
        for stage in stages:
            if stage in states or stage != "lipsync":
                row[stage] = states.get(stage, {}).get("state", "not run")
        rows.append(row)
    return rows


def publish_report(report: dict[str, Any], stages: tuple[str, ...]) -> None:
    project = report["project"]
    rows = [
        {"language": lang, "status": r["status"], "detail": r.get("error") or r.get("mp4", "")}
        for lang, r in report["languages"].items()
    ]
    create_table_artifact(table=rows, key=artifact_key(project, "dub-report"), description=f"{project}: languages")
    create_table_artifact(table=stage_matrix(report, stages), key=artifact_key(project, "stages"),
                          description=f"{project}: language x stage")
    lines = [f"# {project}", "",
             f"Total {report['total_seconds']:.2f} s; all cached: {'yes' if report['all_cached'] else 'no'}", ""]
    lines += [f"- **{r['language']}**: {r['status']} {r['detail']}" for r in rows]
    create_markdown_artifact(markdown="\n".join(lines), key=artifact_key(project, "dub-summary"))
