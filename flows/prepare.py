"""`dubforge prepare`: the proofread checkpoint. Runs a manifest up to translation and writes a review sheet per
language, without Prefect (the stage functions are called directly).

Every line is synthesised once at the voice's natural rate to estimate whether it fits its window; the audio goes
to the same per-line cache the run uses (`OUT/.dubforge/work/voice/tts-<lang>`), so `dubforge run` afterwards
synthesises only the lines the reviewer changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from dubforge.core.contracts import Segment, SourceMedia, Transcript, Translation
from dubforge.core.files import fingerprint, write_json_atomic
from dubforge.core.glossary import required_terms
from dubforge.core.languages import normalise_language
from dubforge.core.manifest import Rewrite
from dubforge.core.model_store import registry_path
from dubforge.core.plan import LanguagePlan, Plan, make_plan
from dubforge.core.voice_bank import bank_path, bank_voices, read_voice_bank
from dubforge.models.base import create_synthesizer
from dubforge.models.coqui_tts import reference_clips
from dubforge.models.openai_mt import OpenAITranslator
from dubforge.tasks.fit import speaker_voices, synthesize_cached
from dubforge.tasks.ingest import ingest
from dubforge.tasks.portrait import still_video
from dubforge.tasks.review import ReviewRow, fit_verdict, review_rows, write_review_csv, write_review_xlsx
from dubforge.tasks.transcribe import align_source, source_transcript
from dubforge.tasks.translate import translate as translate_stage


def review_dir(plan: Plan) -> Path:
    return plan.out_dir / "review"


def source_segments(plan: Plan, work_root: Path) -> tuple[list[Segment], SourceMedia]:
    """The source lines (the script's, else ASR aligned and tightened as in the run) and the ingested media."""
    m = plan.manifest
    video = plan.video
    if plan.portrait_audio is not None:
        video = still_video(plan.video, plan.portrait_audio, work_root / "prepare" / fingerprint(plan.video, plan.portrait_audio))
    media = ingest(video, work_root / "prepare" / fingerprint(video))
    transcript = source_transcript(media, plan.script, m.source.language, m.asr.backend, m.asr.options,
                                   registry_path(manifest_dir=m.root))
    transcript = align_source(media, transcript, m.alignment, from_script=plan.script is not None)
    return list(transcript.segments), media


def translate(plan: Plan, lp: LanguagePlan, segments: list[Segment], duration: float) -> Translation:
    m = plan.manifest
    transcript = Transcript(language=m.source.language, segments=tuple(segments), backend="prepare")
    return translate_stage(lp.language, m.source.language, transcript, lp.translation_file, lp.machine, duration,
                           required_terms(m.glossary.keep, m.glossary.fixed, lp.language))


def synthesizers(lp: LanguagePlan, translation: Translation, models_file: Path) -> dict[str, Any]:
    """speaker -> the run's synthesizer. Cloned voices need the separated dialogue, which prepare does not make:
    their lines are left unestimated."""

    def make(speaker: str, voice, reference):
        options = {"language": lp.language, "name": voice.name, "rate": voice.rate,
                   "model": lp.voice_models.get(speaker, voice.model)}
        return create_synthesizer(voice.backend, models_file, **options)

    plain = {speaker: voice for speaker, voice in lp.voices.items() if not voice.clone}
    return speaker_voices(lp.language, plain, {line.speaker for line in translation.lines}, {}, make)


def spoken_duration(voices: dict[str, Any], speaker: str, text: str, cache_dir: Path) -> float | None:
    """`text` spoken once at the voice's natural rate, cached as the run caches it (None: no voice, no text)."""
    synth = voices.get(speaker) or voices.get("*")
    return synthesize_cached(synth, text, 1.0, cache_dir).duration if synth is not None and text.strip() else None


def suggest_shorter(rows: list[ReviewRow], language: str, voices: dict[str, Any], cache_dir: Path, rewrite: Rewrite,
                    max_speedup: float) -> tuple[list[ReviewRow], list[dict[str, Any]]]:
    """The fit helper: for each line that overflows at the cap, the endpoint's shorter translation (an isometric
    rewrite sized to the window), synthesised to check its fit. Suggestions go beside the line and in the log."""
    helper = OpenAITranslator(model=rewrite.model, endpoint=rewrite.endpoint, api_key_env=rewrite.api_key_env)
    out, log = [], []
    for row in rows:
        if not row.fit.startswith("overflow") or not row.spoken:
            out.append(row)
            continue
        window = row.end - row.start
        budget = max(1, int(len(row.translation) * window * max_speedup / row.spoken))
        after = helper.shorten(row.translation, row.source, language, budget)
        fit = fit_verdict(spoken_duration(voices, row.speaker, after, cache_dir), window, max_speedup)
        out.append(replace(row, suggestion=after, suggestion_fit=fit))
        log.append({"line": row.line_id, "before": row.translation, "before_fit": row.fit, "after": after,
                    "after_fit": fit, "max_chars": budget})
    return out, log


def prepare(manifest: Path, languages: list[str] | None = None, out_dir: Path | None = None,
            on_language: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
    """Write `OUT/review/<project>.<lang>.review.csv|.xlsx` for every target; return a summary per language."""
    plan = make_plan(manifest, languages, out_dir)
    m = plan.manifest
    work_root = plan.out_dir / ".dubforge" / "work"
    models_file = registry_path(manifest_dir=m.root)
    segments, media = source_segments(plan, work_root)
    duration = media.duration
    summary: dict[str, dict[str, Any]] = {}
    translations: dict[str, Translation] = {}
    for lp in plan.languages:
        translation = translations[lp.language] = translate(plan, lp, segments, duration)
        cache_dir = work_root / "voice" / f"tts-{lp.language}"
        voices = synthesizers(lp, translation, models_file)
        spoken = {line.index: spoken_duration(voices, line.speaker, line.text, cache_dir) for line in translation.lines}
        rows = review_rows(translation, spoken, m.timing.max_speedup,
                           required_terms(m.glossary.keep, m.glossary.fixed, lp.language))
        rewrites: list[dict[str, Any]] = []
        if m.rewrite is not None:
            rows, rewrites = suggest_shorter(rows, lp.language, voices, cache_dir, m.rewrite, m.timing.max_speedup)
        stem = f"{m.project}.{lp.language}.review"
        result = {
            "csv": write_review_csv(review_dir(plan) / f"{stem}.csv", rows),
            "xlsx": write_review_xlsx(review_dir(plan) / f"{stem}.xlsx", rows, f"{m.project} {lp.language}"),
            "lines": len(rows),
            "fits": sum(r.fit == "fits" for r in rows),
            "sped_up": sum(r.fit.startswith("needs") for r in rows),
            "overflow": sum(r.fit.startswith("overflow") for r in rows),
            "glossary_missing": sum("MISSING" in r.glossary for r in rows),
            "rewrites": rewrites,
        }
        summary[lp.language] = result
        if on_language:
            on_language(lp.language, result)
    write_json_atomic(review_dir(plan) / "speakers.json",
                      speaker_cards(plan, translations, media, review_dir(plan) / "speakers"))
    return summary


def speaker_cards(plan: Plan, translations: dict[str, Translation], media: SourceMedia,
                  folder: Path) -> list[dict[str, Any]]:
    """Per speaker (labels as the translations use them): lines, seconds of speech, a 5-10 s sample clip of
    their source speech for the reviewer, and the voice each language gives them and where it was chosen."""
    m = plan.manifest
    voices_file = bank_path(m)
    bank = read_voice_bank(voices_file) if voices_file else {}
    by_speaker: dict[str, list[list[float]]] = {}
    for start, end, speaker in sorted({(l.start, l.end, l.speaker) for t in translations.values() for l in t.lines}):
        spans = by_speaker.setdefault(speaker, [])
        if spans and start <= spans[-1][1]:  # languages may time the same speech differently: merge
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    segments = sorted((Segment(start=a, end=b, text="-", speaker=who) for who, spans in by_speaker.items()
                       for a, b in spans), key=lambda seg: seg.start)
    audio = media.mix_wav or media.speech_wav
    samples = reference_clips(audio, segments, folder, min_seconds=5.0, max_seconds=10.0) if audio else {}
    cards = []
    for speaker in dict.fromkeys(seg.speaker for seg in segments):
        own = [seg for seg in segments if seg.speaker == speaker]
        lines = max(sum(line.speaker == speaker for line in t.lines) for t in translations.values())
        voices = {}
        for lp in plan.languages:
            target = next(t for t in m.targets if normalise_language(t.language) == lp.language)
            voice = lp.voices.get(speaker) or lp.voices["*"]
            chosen_by = ("manifest voices" if speaker in target.voices else
                         "voice bank" if speaker in bank_voices(bank, lp.language) else "default voice")
            voices[lp.language] = {**voice.model_dump(exclude_none=True), "chosen_by": chosen_by}
        cards.append({
            "speaker": speaker,
            "lines": lines,
            "speech_seconds": round(sum(seg.duration for seg in own), 2),
            "sample": str(samples[speaker].relative_to(plan.out_dir)) if speaker in samples else None,
            "sample_note": None if speaker in samples else "under 5 s of speech without another speaker",
            "voices": voices,
        })
    return cards
