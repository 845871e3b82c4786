"""ASR and forced-alignment stage functions (plain; the flow wraps them as Prefect tasks and caches them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dubforge.core.contracts import SourceMedia, Transcript
from dubforge.core.errors import StageError
from dubforge.core.languages import base_language
from dubforge.core.scripts import read_script
from dubforge.models.base import create_aligner, create_transcriber

log = logging.getLogger(__name__)


def transcribe(speech_wav: Path, language: str, backend: str = "faster-whisper",
               options: dict[str, Any] | None = None, models_file: Path | None = None) -> Transcript:
    """16 kHz mono speech -> Transcript (segments with word times) from ASR backend `backend`."""
    return create_transcriber(backend, models_file, **(options or {})).transcribe(Path(speech_wav), language)


def source_transcript(media: SourceMedia, script: Path | None, language: str, backend: str,
                      options: dict[str, Any] | None = None, models_file: Path | None = None) -> Transcript:
    """The source's lines: the user's script when given (its cue times are the windows), else ASR."""
    if script is not None:
        segments = read_script(script, video_duration=media.duration, column="transcription")
        return Transcript(language=language, segments=tuple(segments), backend=f"script ({script.name})")
    if media.speech_wav is None:
        raise StageError("the source has no audio to transcribe: give its transcript as source.script")
    return transcribe(media.speech_wav, language, backend, options, models_file)


def alignment_backend(backend: str, language: str) -> str:
    """'auto': pocketsphinx for English (acoustic alignment), espeak-words (Whisper words + espeak phonemes)
    for every other language."""
    if backend != "auto":
        return backend
    return "pocketsphinx" if base_language(language) == "en" else "espeak-words"


def align(speech_wav: Path, transcript: Transcript, backend: str = "auto",
          options: dict[str, Any] | None = None) -> Transcript:
    """Fill every segment's words with aligned times and phonemes; segment times and text stay as they are."""
    backend = alignment_backend(backend, transcript.language)
    aligner = create_aligner(backend, **(options or {}))
    segments = aligner.align(Path(speech_wav), transcript.segments, transcript.language)
    return transcript.model_copy(update={"segments": tuple(segments), "backend": f"{transcript.backend}+{backend}"})


def tighten_to_words(transcript: Transcript) -> Transcript:
    """Set each segment's window to its aligned speech (first word start to last word end).

    ASR segment bounds include breaths and silence; the dub must fit the speech itself.
    """
    segments = tuple(
        seg.model_copy(update={"start": seg.words[0].start, "end": seg.words[-1].end})
        if seg.words and seg.words[-1].end > seg.words[0].start
        else seg
        for seg in transcript.segments
    )
    return transcript.model_copy(update={"segments": segments})


def align_source(media: SourceMedia, transcript: Transcript, backend: str, from_script: bool) -> Transcript:
    """Word and phoneme times of the source lines. Without an aligner for the language the lines are dubbed
    from their segment times alone (said in the transcript's backend). A script's cue times are the user's
    windows; ASR segment bounds are loose, so those are tightened to the aligned words."""
    if media.speech_wav is None:  # a script over a silent video: nothing to align against
        return transcript
    try:
        aligned = align(media.speech_wav, transcript, backend)
    except StageError as exc:
        log.warning("alignment skipped: %s", exc)
        return transcript.model_copy(update={"backend": f"{transcript.backend} (unaligned: {exc})"})
    return aligned if from_script else tighten_to_words(aligned)
