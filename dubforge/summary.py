"""One-screen summaries: a validated plan (`dubforge validate`) and a finished run (`dubforge run`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from dubforge.core.plan import Plan
from dubforge.tasks.mux import delivery_suffix


def _container(codec: str) -> str:
    suffix = delivery_suffix(codec)
    return "MP4" if suffix == ".mp4" else f"MOV ({codec} picture stream-copied: MP4 cannot carry it)"


def plan_summary(plan: Plan) -> Group:
    m, media = plan.manifest, plan.media
    head = Text.assemble(
        ("✓ ", "green"), (f"{m.project}", "bold"), f" — {plan.manifest.path}\n",
        f"  source: {plan.video.name}"
        + (f" (still photo, speech {plan.portrait_audio.name})" if plan.portrait_audio else "")
        + f", {media.width}x{media.height} @ {media.fps:.3f} fps, {media.duration:.2f} s, "
        f"{media.frame_count} frames, audio: {'yes' if media.has_audio else 'none'}, language {m.source.language}\n",
        f"  transcript: {'script ' + plan.script.name if plan.script else 'ASR (' + m.asr.backend + ')'}; alignment: {m.alignment}\n",
        f"  separation: {plan.separation}; mix: {plan.mix_mode}, loudness {m.mix.loudness}; "
        f"timing: max speed-up x{m.timing.max_speedup}\n",
        f"  lip-sync: {'on' if m.lipsync.enabled else 'off'}; rights: consent={m.rights.consent} {m.rights.note}\n",
        f"  outputs: {plan.out_dir}; deliverables: {_container(media.video_codec)}",
    )
    table = Table(title=None, show_edge=False)
    for column in ("language", "translation", "voice", "lines"):
        table.add_column(column)
    for lp in plan.languages:
        voices = ", ".join(
            f"{'' if speaker == '*' else speaker + ': '}{v.backend}{'/' + v.name if v.name else ''}"
            for speaker, v in lp.voices.items()
        )
        lines = str(len(lp.translation_segments)) if lp.translation_segments is not None else "from transcript"
        table.add_row(lp.language, lp.translation, voices, lines)
    warnings = Text("".join(f"\n  ⚠ {w}" for w in plan.warnings), style="yellow")
    return Group(head, table, warnings) if plan.warnings else Group(head, table)


def _qc(out_dir: Path, language: str) -> dict[str, Any]:
    try:
        return json.loads((Path(out_dir) / language / "qc.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_summary(report: dict[str, Any], out_dir: Path) -> Table:
    """The end-of-run table: per language its status, file, loudness, timing fit, lip-sync coverage, warnings."""
    table = Table(title=f"{report['project']}: {report['total_seconds']:.1f} s"
                  + ("  (all cached)" if report.get("all_cached") else ""), show_edge=False)
    for column in ("language", "status", "file", "loudness", "fit", "lip-sync", "heard back", "warnings"):
        table.add_column(column, overflow="fold")
    for language, entry in report["languages"].items():
        qc = _qc(out_dir, language) if entry["status"] == "completed" else {}
        status = entry["status"] + (" (earlier run)" if entry.get("previous_run") else "")
        style = "green" if entry["status"] == "completed" else "red"
        if not qc:
            detail = entry.get("error") or entry.get("warning") or ""
            table.add_row(language, Text(status, style), "-", "-", "-", "-", "-", Text(detail, "red" if entry.get("error") else "yellow"))
            continue
        loud, fit = qc["loudness"], qc["summary"]
        level = "silent" if loud["integrated_lufs"] is None else f"{loud['integrated_lufs']:.1f} LUFS"
        loudness = Text(f"{level} {'pass' if loud['pass'] else 'FAIL'}", "green" if loud["pass"] else "red")
        timing = Text(f"{fit['lines']} lines, {fit['lines_sped_up']} sped up (max x{fit['max_speed']:.2f}), "
                      f"{fit['lines_overflowing']} overflow", "green" if not fit["lines_overflowing"] else "yellow")
        lips: Text | str = "-"
        if "lipsync" in qc:
            card = qc["lipsync"]
            coverage = card.get("coverage")
            lips = Text(f"{card['status']}" + (f", coverage {coverage:.0%}" if coverage is not None else ""),
                        "green" if card["status"] == "ok" else "yellow")
        heard: Text | str = "-"
        if "back_transcription" in qc:
            back = qc["back_transcription"]
            median = "-" if back["median_cer"] is None else f"{back['median_cer']:.2f}"
            flagged = ", ".join(str(f["index"] + 1) for f in back["flagged"])
            heard = Text(f"CER {median}" + (f"; flagged lines {flagged}" if flagged else ""), "yellow" if flagged else "green")
        warnings = fit.get("warnings", 0) + len(qc.get("lipsync", {}).get("warnings", []))
        mp4 = Path(entry["mp4"]) if entry.get("mp4") else None
        shown = str(mp4.relative_to(out_dir)) if mp4 and mp4.is_relative_to(out_dir) else str(mp4 or "-")
        table.add_row(language, Text(status, style), shown, loudness, timing, lips, heard,
                      Text(str(warnings), "yellow" if warnings else "green"))
    return table
