"""Deliverables of a language (MP4, subtitles, review CSV, stems, QC, provenance) and the master MKV.

Everything is written to a temporary name and renamed, so an interrupted run leaves no half-written
deliverable. Outputs are marked AI-modified in container metadata and in a provenance sidecar.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dubforge.core.contracts import (
    DEFAULT_SPEAKER,
    DubTrack,
    Mix,
    Segment,
    SourceMedia,
    Stems,
    Transcript,
    Translation,
)
from dubforge.core.scripts import CsvRow, write_dubbing_csv, write_srt, write_vtt
from dubforge.core.subtitles import SubtitleRules, bilingual_cues, broadcast_cues
from dubforge.media.audio import decode_audio
from dubforge.media.files import atomic_path, sha256_file, write_json_atomic
from dubforge.media.loudness import integrated_lufs
from dubforge.media.loudness import preset as loudness_preset
from dubforge.tasks.mix import dialogue_mask
from dubforge.tasks.mux import burn_subtitles, mux_language, mux_master, write_provenance
from dubforge.tasks.qc import back_transcription, measure_delivery

AI_NOTICE = "AI-modified: dubbed with synthetic speech by dubforge (see the .provenance.json sidecar)"
LOUDNESS_TOLERANCE_LU = 1.0


def _metadata(kind: str, language: str | None, provenance_name: str) -> dict[str, str]:
    meta = {
        "comment": AI_NOTICE,
        "ai_modified": "true",
        "ai_modification": kind,
        "provenance": provenance_name,
        "encoder_software": f"dubforge {version('dubforge')}",
    }
    if language:
        meta["dub_language"] = language
    return meta


def _provenance(source: Path, info: dict[str, Any], actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "spec": "dubforge-provenance/1",
        "ai_modified": True,
        "digital_source_type": "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic",
        "generator": f"dubforge {version('dubforge')}",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"file": source.name, "sha256": sha256_file(source)},
        "rights": info["rights"],
        "actions": actions,
    }


def _spoken_segments(translation: Translation, dub: DubTrack, duration: float) -> list[tuple[Segment, str]]:
    """The dubbed speech as placed (clamped to the picture) with its translated text, and each line's source text."""
    by_index = {line.index: line for line in translation.lines}
    segments = []
    for line in dub.lines:
        start = min(max(line.start, 0.0), duration)
        end = min(max(line.end, start + 0.2), duration)
        source = by_index.get(line.index)
        if end > start:
            segments.append((Segment(start=start, end=end, text=line.text,
                                     speaker=source.speaker if source else DEFAULT_SPEAKER),
                             source.source_text if source else ""))
    return segments


def _rules(info: dict[str, Any]) -> SubtitleRules:
    style = info.get("subtitle_style") or {}
    return SubtitleRules(**{k: style[k] for k in ("max_cps", "max_chars", "max_lines", "min_duration") if k in style})


def _finite(value: float) -> float | None:
    """JSON has no infinities: digital silence measures -inf LUFS, reported as null."""
    return round(value, 2) if math.isfinite(value) else None


def _dialogue_gated_lufs(mp4: Path, dub: DubTrack) -> float:
    """Loudness of the delivered audio measured only where dubbed dialogue plays (Netflix-style gating)."""

    data, rate = decode_audio(mp4, key="outputs")
    mask = dialogue_mask(dub.lines, len(data)) if rate == dub.sample_rate else None
    return integrated_lufs(data[mask] if mask is not None and mask.any() else data, rate)


def _qc(language: str, info: dict[str, Any], transcript: Transcript, translation: Translation, dub: DubTrack,
        mix: Mix, stems: Stems, delivered: Any, mp4: Path) -> dict[str, Any]:
    target = loudness_preset(info["loudness"])
    integrated = delivered.integrated_lufs
    if target.dialogue_gated:
        integrated = _dialogue_gated_lufs(mp4, dub)
    warnings = {line.index: list(line.warnings) for line in translation.lines}
    lines = [
        {
            "index": line.index,
            "window": [round(line.window_start, 3), round(line.window_end, 3)],
            "placed": [round(line.start, 3), round(line.end, 3)],
            "dub_duration": round(line.end - line.start, 3),
            "natural_duration": round(line.natural_duration, 3),
            "speed": round(line.speed, 3),
            "rate": round(line.rate, 3),
            "stretch": round(line.stretch, 3),
            "borrowed": round(line.borrowed, 3),
            "overflow": round(line.overflow, 3),
            "text": line.text,
            "warnings": warnings.get(line.index, []),
        }
        for line in dub.lines
    ]
    loudness_ok = abs(integrated - target.target_lufs) <= LOUDNESS_TOLERANCE_LU
    peak_ok = delivered.true_peak_dbtp <= target.ceiling_dbtp + 0.2
    return {
        "language": language,
        "deliverable": mp4.name,
        "duration": {"video": round(delivered.video_duration, 4), "delivered": round(delivered.duration, 4)},
        "segments": lines,
        "summary": {
            "lines": len(lines),
            "max_speed": max((l["speed"] for l in lines), default=1.0),
            "lines_sped_up": sum(1 for l in lines if l["speed"] > 1.001),
            "lines_overflowing": sum(1 for l in lines if l["overflow"] > 0.0),
            "total_overflow": round(sum(l["overflow"] for l in lines), 3),
            "warnings": sum(len(l["warnings"]) for l in lines),
        },
        "loudness": {
            "preset": info["loudness"],
            "target_lufs": target.target_lufs,
            "max_true_peak_dbtp": target.ceiling_dbtp,
            "integrated_lufs": _finite(integrated),
            "dialogue_gated": target.dialogue_gated,
            "true_peak_dbtp": _finite(delivered.true_peak_dbtp),
            "measured_on": "delivered file",
            "pass": bool(loudness_ok and peak_ok),
        },
        "backends": {
            "transcription": transcript.backend,
            "translation": translation.backend,
            "tts": dub.backend,
            "separation": stems.backend,
            "mix_mode": mix.mode,
        },
    }


def deliver_language(language: str, info: dict[str, Any], media: SourceMedia, transcript: Transcript,
                     translation: Translation, dub: DubTrack, mix: Mix, stems: Stems, out_dir: Path,
                     picture: dict[str, Any] | None = None) -> dict[str, Any]:
    """`picture`: the lip-sync stage's output (rendered video + scorecard), or None to keep the source picture."""

    project = info["project"]
    folder = Path(out_dir) / language
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{project}.{language}"
    style, rules = info.get("subtitle_style") or {}, _rules(info)
    spoken = _spoken_segments(translation, dub, media.duration)
    cues = broadcast_cues([seg for seg, _ in spoken], media.duration, rules)
    srt_path = write_srt(folder / f"{stem}.srt", cues)
    outputs = {"srt": srt_path}
    if "vtt" in info["subtitles"]:
        outputs["vtt"] = write_vtt(folder / f"{stem}.vtt", cues)
    if style.get("bilingual"):
        outputs["bilingual_srt"] = write_srt(folder / f"{stem}.bilingual.srt", bilingual_cues(
            [seg for seg, _ in spoken], [source for _, source in spoken], media.duration, rules))
    outputs["csv"] = write_dubbing_csv(folder / f"{stem}.csv", [
        CsvRow(line.speaker, line.start, line.end, line.source_text, line.text) for line in translation.lines
    ])
    if info["stems"]:
        dialogue = folder / f"{stem}.dialogue.wav"
        with atomic_path(dialogue) as tmp:
            shutil.copyfile(dub.wav, tmp)
        outputs["dialogue_stem"] = dialogue

    mp4 = folder / f"{stem}.mp4"
    provenance_path = folder / f"{stem}.mp4.provenance.json"  # write_provenance's naming
    video = Path(picture["video"]) if picture else media.video
    kind = "synthetic dubbed speech and lip movement" if picture else "synthetic dubbed speech"
    mux_language(video, mix.wav, language, mp4, subtitles=srt_path, metadata=_metadata(kind, language, provenance_path.name))
    if style.get("burn_in"):
        outputs["captioned_mp4"] = burn_subtitles(mp4, srt_path, folder / f"{stem}.captioned.mp4")
    delivered = measure_delivery(mp4)
    qc = _qc(language, info, transcript, translation, dub, mix, stems, delivered, mp4)
    if picture:
        result = picture["result"]
        qc["lipsync"] = {**picture["scorecard"], "backend": result["backend"], "visemes": result["visemes"],
                         "warnings": list(result["warnings"])}
        qc["backends"]["lipsync"] = result["backend"]
    if info.get("back_transcribe"):
        qc["intelligibility"] = back_transcription(dub.wav, [line.text for line in dub.lines], language)
    write_json_atomic(folder / "qc.json", qc)  # the flow publishes it to the Prefect UI (flows/artifacts.py)
    actions = [
        {"action": "transcribed", "by": transcript.backend},
        {"action": "translated", "by": translation.backend},
        {"action": "speech synthesised (synthetic voice)", "by": dub.backend},
        {"action": f"mixed ({mix.mode}, {info['loudness']})", "by": stems.backend},
    ]
    if picture:
        actions.append({"action": "mouth re-rendered to match the dubbed speech (lip-sync)", "by": picture["result"]["backend"]})
    write_provenance(mp4, _provenance(Path(info["video"]), info, actions))
    return {
        "mp4": str(mp4),
        "mix_wav": str(mix.wav),
        "srt_for_master": str(srt_path),
        "qc": str(folder / "qc.json"),
        "provenance": str(provenance_path),
        "loudness_lufs": qc["loudness"]["integrated_lufs"],
        "true_peak_dbtp": qc["loudness"]["true_peak_dbtp"],
        "lines": qc["summary"]["lines"],
        "max_speed": qc["summary"]["max_speed"],
        **{k: str(v) for k, v in outputs.items()},
    }


def deliver_master(info: dict[str, Any], media: SourceMedia, deliveries: dict[str, dict[str, Any]],
                   out_dir: Path) -> dict[str, Any]:

    project = info["project"]
    out = Path(out_dir) / f"{project}.master.mkv"
    provenance_path = Path(out_dir) / f"{project}.master.mkv.provenance.json"
    tracks = [
        (lang, Path(d["mp4"]), Path(d["srt_for_master"]) if d.get("srt_for_master") else None)  # AAC copied
        for lang, d in sorted(deliveries.items())
    ]
    original = media.video if media.mix_wav is not None else None  # the source's own audio stream, copied
    mux_master(media.video, original, info["source_language"], tracks, out,
               metadata=_metadata("synthetic dubbed speech tracks", None, provenance_path.name))
    actions = [{"action": "multi-track master", "languages": [t[0] for t in tracks]}]
    write_provenance(out, _provenance(Path(info["video"]), info, actions))
    return {"mkv": str(out), "languages": [t[0] for t in tracks], "provenance": str(provenance_path)}
