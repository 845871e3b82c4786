"""`dubforge prepare`: the proofread checkpoint. Runs a manifest up to translation and writes a review sheet per
language, without Prefect (the stage functions are called directly).

Every line is synthesised once at the voice's natural rate to estimate whether it fits its window; the audio goes
to the same per-line cache the run uses (`OUT/.dubforge/work/voice/tts-<lang>`), so `dubforge run` afterwards
synthesises only the lines the reviewer changed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from dubforge.core.contracts import Segment, Transcript, Translation
from dubforge.core.files import fingerprint
from dubforge.core.glossary import required_terms
from dubforge.core.model_store import registry_path
from dubforge.core.plan import LanguagePlan, Plan, make_plan
from dubforge.models.base import create_synthesizer
from dubforge.tasks.fit import speaker_voices, synthesize_cached
from dubforge.tasks.ingest import ingest
from dubforge.tasks.portrait import still_video
from dubforge.tasks.review import review_rows, write_review_csv, write_review_xlsx
from dubforge.tasks.transcribe import align_source, source_transcript
from dubforge.tasks.translate import translate as translate_stage


def review_dir(plan: Plan) -> Path:
    return plan.out_dir / "review"


def source_segments(plan: Plan, work_root: Path) -> tuple[list[Segment], float]:
    """The source lines (the script's, else ASR aligned and tightened as in the run) and the video duration."""
    m = plan.manifest
    if plan.script_segments is not None and plan.portrait_audio is None:
        return list(plan.script_segments), plan.duration
    video = plan.video
    if plan.portrait_audio is not None:
        video = still_video(plan.video, plan.portrait_audio, work_root / "prepare" / fingerprint(plan.video, plan.portrait_audio))
    media = ingest(video, work_root / "prepare" / fingerprint(video))
    transcript = source_transcript(media, plan.script, m.source.language, m.asr.backend, m.asr.options,
                                   registry_path(manifest_dir=m.root))
    transcript = align_source(media, transcript, m.alignment, from_script=plan.script is not None)
    return list(transcript.segments), media.duration


def translate(plan: Plan, lp: LanguagePlan, segments: list[Segment], duration: float) -> Translation:
    m = plan.manifest
    transcript = Transcript(language=m.source.language, segments=tuple(segments), backend="prepare")
    return translate_stage(lp.language, m.source.language, transcript, lp.translation_file, lp.machine, duration,
                           required_terms(m.glossary.keep, m.glossary.fixed, lp.language))


def natural_durations(lp: LanguagePlan, translation: Translation, cache_dir: Path,
                      models_file: Path) -> dict[int, float | None]:
    """Each line spoken once at its voice's natural rate (cached as the run caches it). Cloned voices need the
    separated dialogue, which prepare does not make: their lines are left unestimated."""

    def make(speaker: str, voice, reference):
        options = {"language": lp.language, "name": voice.name, "rate": voice.rate,
                   "model": lp.voice_models.get(speaker, voice.model)}
        return create_synthesizer(voice.backend, models_file, **options)

    plain = {speaker: voice for speaker, voice in lp.voices.items() if not voice.clone}
    synthesizers = speaker_voices(lp.language, plain, {line.speaker for line in translation.lines}, {}, make)
    durations: dict[int, float | None] = {}
    for line in translation.lines:
        synth = synthesizers.get(line.speaker) or synthesizers.get("*")
        durations[line.index] = (synthesize_cached(synth, line.text, 1.0, cache_dir).duration
                                 if synth is not None and line.text.strip() else None)
    return durations


def prepare(manifest: Path, languages: list[str] | None = None, out_dir: Path | None = None,
            on_language: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Write `OUT/review/<project>.<lang>.review.csv|.xlsx` for every target; return a summary per language."""
    plan = make_plan(manifest, languages, out_dir)
    m = plan.manifest
    work_root = plan.out_dir / ".dubforge" / "work"
    models_file = registry_path(manifest_dir=m.root)
    segments, duration = source_segments(plan, work_root)
    summary: dict[str, dict[str, Any]] = {}
    for lp in plan.languages:
        translation = translate(plan, lp, segments, duration)
        spoken = natural_durations(lp, translation, work_root / "voice" / f"tts-{lp.language}", models_file)
        rows = review_rows(translation, spoken, m.timing.max_speedup,
                           required_terms(m.glossary.keep, m.glossary.fixed, lp.language))
        stem = f"{m.project}.{lp.language}.review"
        result = {
            "csv": write_review_csv(review_dir(plan) / f"{stem}.csv", rows),
            "xlsx": write_review_xlsx(review_dir(plan) / f"{stem}.xlsx", rows, f"{m.project} {lp.language}"),
            "lines": len(rows),
            "fits": sum(r.fit == "fits" for r in rows),
            "sped_up": sum(r.fit.startswith("needs") for r in rows),
            "overflow": sum(r.fit.startswith("overflow") for r in rows),
            "glossary_missing": sum("MISSING" in r.glossary for r in rows),
        }
        summary[lp.language] = result
        if on_language:
            on_language(lp.language, result)
    return summary
