"""Deliverables of a language (MP4, subtitles, review CSV, stems, QC, provenance) and the master MKV.

Everything is written to a temporary name and renamed, so an interrupted run leaves no half-written
deliverable. Outputs are marked AI-modified in container metadata and in a provenance sidecar.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dubforge.core.contracts import (
    DEFAULT_SPEAKER,
    BackTranscription,
    DubTrack,
    Mix,
    Segment,
    SourceMedia,
    Stems,
    Transcript,
    Translation,
)
from dubforge.core.files import STAGING, atomic_path, sha256_file, staged_folder, write_json_atomic
from dubforge.core.reports import (
    Deliverable,
    DeliveredDuration,
    FitSummary,
    FlaggedLine,
    HeardBackQC,
    LineQC,
    LipsyncQC,
    LoudnessQC,
    MasterTrack,
    QCReport,
)
from dubforge.core.scripts import CsvRow, write_dubbing_csv, write_srt, write_vtt
from dubforge.core.subtitles import SubtitleRules, bilingual_cues, broadcast_cues
from dubforge.lipsync.records import RenderedPicture
from dubforge.media.audio import MIX_RATE, decode_audio_blocks
from dubforge.media.loudness import LoudnessMeter
from dubforge.media.loudness import preset as loudness_preset
from dubforge.media.probe import probe
from dubforge.tasks.mix import dialogue_mask
from dubforge.tasks.mux import burn_subtitles, delivery_suffix, master_audio, mux_language, mux_master, write_provenance
from dubforge.tasks.qc import back_transcribe, measure_delivery

AI_NOTICE = "AI-modified: dubbed with synthetic speech by dubforge (see the .provenance.json sidecar)"
LOUDNESS_TOLERANCE_LU = 1.0
DEFAULT_MAX_CER = 0.25  # manifest qc.max_cer
HEARD = Path(".dubforge", "work", "heard")  # under OUT: back-transcription kept per group of lines
SAME_AS_MIX_DB = -20.0  # the delivered track carries the mix that was heard (AAC 192 kb/s: about -30 dB; a wrong track: +1)
log = logging.getLogger(__name__)


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

    gated, everything = LoudnessMeter(MIX_RATE, 2), LoudnessMeter(MIX_RATE, 2)
    at = 0
    for block in decode_audio_blocks(mp4, key="outputs"):  # streamed: never the whole track in memory
        everything.add(block)
        if dub.sample_rate == MIX_RATE:
            gated.add(block[dialogue_mask(dub.lines, len(block), at)])
        at += len(block)
    return (gated if gated.samples else everything).integrated()


def _qc(language: str, info: dict[str, Any], transcript: Transcript, translation: Translation, dub: DubTrack,
        mix: Mix, stems: Stems, delivered: Any, mp4: Path) -> QCReport:
    target = loudness_preset(info["loudness"])
    integrated = delivered.integrated_lufs
    if target.dialogue_gated:
        integrated = _dialogue_gated_lufs(mp4, dub)
    warnings = {line.index: tuple(line.warnings) for line in translation.lines}
    lines = tuple(
        LineQC(index=line.index, window=(round(line.window_start, 3), round(line.window_end, 3)),
               placed=(round(line.start, 3), round(line.end, 3)), dub_duration=round(line.end - line.start, 3),
               natural_duration=round(line.natural_duration, 3), speed=round(line.speed, 3), rate=round(line.rate, 3),
               stretch=round(line.stretch, 3), borrowed=round(line.borrowed, 3), overflow=round(line.overflow, 3),
               text=line.text, warnings=warnings.get(line.index, ()))
        for line in dub.lines
    )
    loudness_ok = abs(integrated - target.target_lufs) <= LOUDNESS_TOLERANCE_LU
    peak_ok = delivered.true_peak_dbtp <= target.ceiling_dbtp + 0.2
    return QCReport(
        language=language,
        deliverable=mp4.name,
        duration=DeliveredDuration(video=round(delivered.video_duration, 4), delivered=round(delivered.duration, 4)),
        segments=lines,
        summary=FitSummary(
            lines=len(lines),
            max_speed=max((line.speed for line in lines), default=1.0),
            lines_sped_up=sum(1 for line in lines if line.speed > 1.001),
            lines_overflowing=sum(1 for line in lines if line.overflow > 0.0),
            total_overflow=round(sum(line.overflow for line in lines), 3),
            warnings=sum(len(line.warnings) for line in lines),
        ),
        loudness=LoudnessQC(
            preset=info["loudness"], target_lufs=target.target_lufs, max_true_peak_dbtp=target.ceiling_dbtp,
            integrated_lufs=_finite(integrated), dialogue_gated=target.dialogue_gated,
            true_peak_dbtp=_finite(delivered.true_peak_dbtp), passed=bool(loudness_ok and peak_ok),
        ),
        backends={
            "transcription": transcript.backend,
            "translation": translation.backend,
            "tts": dub.backend,
            "separation": stems.backend,
            "mix_mode": mix.mode,
        },
    )


def _with_back_transcription(qc: QCReport, checks: BackTranscription, mix_residual_db: float | None) -> QCReport:
    """Per line: heard text, WER, CER, flag; the summary beside. `mix_residual_db`: the mix was heard and the
    delivered track matches it this closely (None: the delivered track itself was heard)."""
    by_index = {c.index: c for c in checks.lines}
    segments = tuple(
        line.model_copy(update={"heard": c.heard, "wer": c.wer, "cer": c.cer, "flagged": c.flagged})
        if (c := by_index.get(line.index)) is not None else line
        for line in qc.segments
    )
    median = checks.median_cer
    heard_back = HeardBackQC(
        backend=checks.backend, language=checks.language, max_cer=checks.max_cer,
        median_cer=round(median, 4) if median is not None else None,
        flagged=tuple(FlaggedLine(index=c.index, start=c.start, end=c.end, text=c.text, heard=c.heard, cer=c.cer)
                      for c in checks.lines if c.flagged),
        heard="delivery" if mix_residual_db is None else "mix",
        mix_residual_db=None if mix_residual_db is None else round(mix_residual_db, 1),
    )
    return qc.model_copy(update={"segments": segments, "back_transcription": heard_back})


def _review_columns(translation: Translation, checks: BackTranscription | None) -> dict[str, list[str]]:
    """Review CSV columns: what Whisper heard back and its CER per line (empty when not checked)."""
    if checks is None:
        return {}
    by_index = {c.index: c for c in checks.lines}
    found = [by_index.get(line.index) for line in translation.lines]
    return {
        "heard_back": [c.heard if c else "" for c in found],
        "cer": [f"{c.cer:.3f}" if c else "" for c in found],
        "flagged": [("yes" if c.flagged else "no") if c else "" for c in found],
    }


def deliver_language(language: str, info: dict[str, Any], media: SourceMedia, transcript: Transcript,
                     translation: Translation, dub: DubTrack, mix: Mix, stems: Stems, out_dir: Path,
                     picture: RenderedPicture | None = None) -> Deliverable:
    """`picture`: the lip-sync stage's output (rendered video + scorecard), or None to keep the source picture.

    The language's files are built in a staging folder and replace `OUT/<lang>/` as a whole once all of them
    (MP4, QC, provenance, sidecars) are written: a failure leaves the previous set or none, never a part."""

    final = Path(out_dir) / language
    with staged_folder(final, Path(out_dir) / STAGING) as folder:
        written = _write_language(language, info, media, transcript, translation, dub, mix, stems, folder, picture,
                                  Path(out_dir) / HEARD)
    # the files were built in the staging folder: name them where they now are
    return written.model_copy(update={k: final / v.name for k, v in written if isinstance(v, Path) and k != "mix_wav"})


def _write_language(language: str, info: dict[str, Any], media: SourceMedia, transcript: Transcript,
                    translation: Translation, dub: DubTrack, mix: Mix, stems: Stems, folder: Path,
                    picture: RenderedPicture | None, heard: Path) -> Deliverable:
    """`heard`: where back-transcription keeps what it heard, per group of lines (outlives the mix: a re-delivery
    hears again only the groups whose audio changed)."""
    project = info["project"]
    stem = f"{project}.{language}"
    style, rules = info.get("subtitle_style") or {}, _rules(info)
    spoken = _spoken_segments(translation, dub, media.duration)
    cues = broadcast_cues([seg for seg, _ in spoken], media.duration, rules)
    srt_path = write_srt(folder / f"{stem}.srt", cues)
    outputs: dict[str, Path] = {"srt": srt_path}
    if "vtt" in info["subtitles"]:
        outputs["vtt"] = write_vtt(folder / f"{stem}.vtt", cues)
    if style.get("bilingual"):
        outputs["bilingual_srt"] = write_srt(folder / f"{stem}.bilingual.srt", bilingual_cues(
            [seg for seg, _ in spoken], [source for _, source in spoken], media.duration, rules))
    if info["stems"]:
        dialogue = folder / f"{stem}.dialogue.wav"
        with atomic_path(dialogue) as tmp:
            shutil.copyfile(dub.wav, tmp)
        outputs["dialogue_stem"] = dialogue

    video = picture.video if picture else media.video
    mp4 = folder / f"{stem}{delivery_suffix(probe(video, key='deliver.video').video_codec)}"  # MOV for ProRes/DNxHD
    provenance_path = folder / f"{mp4.name}.provenance.json"  # write_provenance's naming
    kind = "synthetic dubbed speech and lip movement" if picture else "synthetic dubbed speech"
    qc_options = info.get("qc", {})
    hear, max_cer = qc_options.get("back_transcription", True), qc_options.get("max_cer", DEFAULT_MAX_CER)
    # Whisper hears the mix while it is encoded into the file; the file's track is then checked against the mix
    with ThreadPoolExecutor(max_workers=1) as ear:
        hearing = None
        if hear:
            hearing = ear.submit(back_transcribe, mix.wav, dub.lines, language, max_cer, heard)
        mux_language(video, mix.wav, language, mp4, subtitles=srt_path,
                     metadata=_metadata(kind, language, provenance_path.name))
        if style.get("burn_in"):
            outputs["captioned_mp4"] = burn_subtitles(mp4, srt_path, folder / f"{stem}.captioned.mp4")
        delivered = measure_delivery(mp4, reference=mix.wav if hear else None)
        qc = _qc(language, info, transcript, translation, dub, mix, stems, delivered, mp4)
        checks = hearing.result() if hearing else None
    if checks is not None:
        residual = delivered.reference_residual_db
        if residual is None or residual > SAME_AS_MIX_DB:  # the file does not carry what was heard: hear the file
            log.warning("%s: the delivered track differs from its mix (%s dB): hearing the file", language,
                        "?" if residual is None else f"{residual:.1f}")
            checks, residual = back_transcribe(mp4, dub.lines, language, max_cer, heard), None
        qc = _with_back_transcription(qc, checks, residual)
    outputs["csv"] = write_dubbing_csv(folder / f"{stem}.csv", [
        CsvRow(line.speaker, line.start, line.end, line.source_text, line.text) for line in translation.lines
    ], extra=_review_columns(translation, checks))
    if picture:
        result, verdict = picture.result, picture.verdict
        card = LipsyncQC(**{**picture.scorecard, "status": verdict.status, "min_coverage": verdict.min_coverage,
                            "backend": result.backend, "visemes": result.visemes,
                            "warnings": (*result.warnings, *([verdict.message] if verdict.message else []))})
        qc = qc.model_copy(update={"lipsync": card, "backends": {**qc.backends, "lipsync": result.backend}})
    write_json_atomic(folder / "qc.json", qc.to_json())  # the flow publishes it to the Prefect UI (flows/artifacts.py)
    actions = [
        {"action": "transcribed", "by": transcript.backend},
        {"action": "translated", "by": translation.backend},
        {"action": "speech synthesised (synthetic voice)", "by": dub.backend},
        {"action": f"mixed ({mix.mode}, {info['loudness']})", "by": stems.backend},
    ]
    if picture:
        actions.append({"action": "mouth re-rendered to match the dubbed speech (lip-sync)", "by": picture.result.backend})
    write_provenance(mp4, _provenance(Path(info["video"]), info, actions))
    return Deliverable(
        mp4=mp4, mix_wav=Path(mix.wav), srt_for_master=srt_path, qc=folder / "qc.json", provenance=provenance_path,
        loudness_lufs=qc.loudness.integrated_lufs, true_peak_dbtp=qc.loudness.true_peak_dbtp,
        lines=qc.summary.lines, max_speed=qc.summary.max_speed,
        lipsync=qc.lipsync.status if qc.lipsync else None, lipsync_coverage=qc.lipsync.coverage if qc.lipsync else None,
        median_cer=qc.back_transcription.median_cer if qc.back_transcription else None,
        flagged_lines=qc.back_transcription.flagged if qc.back_transcription else None,
        srt=outputs["srt"], csv=outputs["csv"], vtt=outputs.get("vtt"), dialogue_stem=outputs.get("dialogue_stem"),
        bilingual_srt=outputs.get("bilingual_srt"), captioned_mp4=outputs.get("captioned_mp4"),
    )


def deliver_master(info: dict[str, Any], media: SourceMedia, deliveries: dict[str, MasterTrack],
                   out_dir: Path) -> dict[str, Any]:

    project = info["project"]
    out = Path(out_dir) / f"{project}.master.mkv"
    provenance_path = Path(out_dir) / f"{project}.master.mkv.provenance.json"
    tracks = [
        (lang, master_audio(d.mp4, d.mix_wav, media.video), d.srt)
        for lang, d in sorted(deliveries.items())
    ]
    original = media.video if media.mix_wav is not None else None  # the source's own audio stream, copied
    staging = Path(out_dir) / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="master.", dir=staging) as tmp:  # the pair appears together
        built = Path(tmp) / out.name
        mux_master(media.video, original, info["source_language"], tracks, built,
                   metadata=_metadata("synthetic dubbed speech tracks", None, provenance_path.name),
                   original_stream=media.audio_stream)
        actions = [{"action": "multi-track master", "languages": [t[0] for t in tracks]}]
        sidecar = write_provenance(built, _provenance(Path(info["video"]), info, actions))
        os.replace(sidecar, provenance_path)
        os.replace(built, out)  # last: the flow takes an existing master as delivered
    return {"mkv": str(out), "languages": [t[0] for t in tracks], "provenance": str(provenance_path)}
