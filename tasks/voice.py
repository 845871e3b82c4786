"""The voice stage of a language: a synthesizer per speaker, then every line synthesised and fitted (tasks/fit.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dubforge.core.contracts import DubTrack, Stems, Transcript, Translation
from dubforge.core.manifest import Timing, Voice
from dubforge.core.progress import ProgressCallback
from dubforge.models.base import Synthesizer, create_synthesizer
from dubforge.models.coqui_tts import reference_clips
from dubforge.tasks.fit import fit_track, speaker_voices


def dub_voice(language: str, translation: Translation, voices: Mapping[str, Voice], voice_models: Mapping[str, Path],
              timing: Timing, video_duration: float, stems: Stems, transcript: Transcript, models_file: Path | None,
              work_dir: Path, references_dir: Path, tts_cache: Path,
              progress: ProgressCallback | None = None) -> DubTrack:
    """The language's dialogue track. Cloning voices (XTTS) get 6-10 s of each speaker's own separated dialogue
    (written in `references_dir`); line audio is cached in `tts_cache` per text, voice and rate, so an edit
    re-synthesises only the lines that changed."""
    references: dict[str, Path] = {}
    if any(voice.clone for voice in voices.values()) and stems.dialogue is not None:
        references = reference_clips(stems.dialogue, transcript.segments, references_dir)

    def synthesizer(speaker: str, voice: Voice, reference: Path | None) -> Synthesizer:
        options: dict[str, Any] = {"language": language, "name": voice.name, "rate": voice.rate,
                                   "model": voice_models.get(speaker, voice.model)}
        if reference is not None:
            options.update(clone=True, reference=reference)
        return create_synthesizer(voice.backend, models_file, **options)

    synthesizers = speaker_voices(language, voices, {line.speaker for line in translation.lines}, references,
                                  synthesizer)
    return fit_track(translation.lines, synthesizers, timing, video_duration, work_dir, language,
                     progress=progress, tts_cache=tts_cache)
