"""The voice stage of a language: a synthesizer per speaker, then every line synthesised and fitted (tasks/fit.py).

Intonation (`voice.intonation: source`, the default): each line is spoken with the pitch contour of the source
actor's line, read from the separated dialogue stem (or the original audio in voice-over mode) over the line's
source window and imposed by `dubforge.media.prosody`. Without source dialogue the voices keep their own."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dubforge.core.contracts import DubTrack, Line, Speech, Stems, Transcript, Translation
from dubforge.core.files import fingerprint
from dubforge.core.manifest import Timing, Voice
from dubforge.core.progress import ProgressCallback
from dubforge.media import prosody
from dubforge.media.audio import read_wav, write_wav
from dubforge.models.base import Synthesizer, create_synthesizer
from dubforge.models.coqui_tts import reference_clips
from dubforge.tasks.fit import fit_track, speaker_voices

INTONATION_WEIGHT = 1.0  # share of the source's contour in the dub's (the rest: the voice's own); measured best


class SourceIntonation:
    """`inner` speaking with a source line's intonation; the line cache keys on the contour through fingerprint()."""

    name: ClassVar[str] = "source-intonation"
    needs_weights: ClassVar[bool] = False

    def __init__(self, inner: Synthesizer, contour: np.ndarray, weight: float = INTONATION_WEIGHT):
        self.inner, self.contour, self.weight = inner, contour, weight

    def fingerprint(self) -> str:
        return fingerprint(self.inner.fingerprint(), "intonation", prosody.VERSION, self.weight,
                           [round(float(v), 3) for v in self.contour])

    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        speech = self.inner.synthesize(text, out_wav, rate=rate)
        audio, sr = read_wav(speech.wav)
        write_wav(speech.wav, prosody.impose(audio.mean(axis=1), sr, self.contour, self.weight)[:, None], sr)
        return speech


def source_dialogue(stems: Stems) -> Path | None:
    """The source actors' speech: the separated dialogue stem, else the original mix in voice-over mode."""
    if stems.dialogue is not None:
        return stems.dialogue
    return stems.background if stems.mode == "voice_over" else None


def dub_voice(language: str, translation: Translation, voices: Mapping[str, Voice], voice_models: Mapping[str, Path],
              timing: Timing, video_duration: float, stems: Stems, transcript: Transcript, models_file: Path | None,
              work_dir: Path, references_dir: Path, tts_cache: Path,
              progress: ProgressCallback | None = None) -> DubTrack:
    """The language's dialogue track. Cloning voices (XTTS) get 6-10 s of each speaker's own separated dialogue
    (written in `references_dir`); line audio is cached in `tts_cache` per text, voice, rate and source contour,
    so an edit re-synthesises only the lines that changed."""
    references: dict[str, Path] = {}
    if any(voice.clone for voice in voices.values()) and stems.dialogue is not None:
        references = reference_clips(stems.dialogue, transcript.segments, references_dir)

    def synthesizer(speaker: str, voice: Voice, reference: Path | None) -> Synthesizer:
        options: dict[str, Any] = {"language": language, "name": voice.name, "rate": voice.rate,
                                   "model": voice_models.get(speaker, voice.model)}
        if reference is not None:
            options.update(clone=True, reference=reference)
        return create_synthesizer(voice.backend, models_file, **options)

    dialogue = source_dialogue(stems)

    def line_voice(line: Line, synth: Synthesizer) -> Synthesizer:
        voice = voices.get(line.speaker) or voices.get("*")
        if dialogue is None or voice is None or voice.intonation != "source":
            return synth
        contour = prosody.source_contour(*prosody.read_span(dialogue, line.start, line.end))
        return synth if contour is None else SourceIntonation(synth, contour)

    synthesizers = speaker_voices(language, voices, {line.speaker for line in translation.lines}, references,
                                  synthesizer)
    return fit_track(translation.lines, synthesizers, timing, video_duration, work_dir, language,
                     progress=progress, tts_cache=tts_cache, line_voice=line_voice)
