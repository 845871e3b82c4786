"""ASR and forced-alignment stage functions (plain; the flow wraps them as Prefect tasks and caches them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dubforge.core.contracts import Transcript
from dubforge.core.languages import base_language
from dubforge.core.registry import create


def transcribe(speech_wav: Path, language: str, backend: str = "faster-whisper",
               options: dict[str, Any] | None = None) -> Transcript:
    """16 kHz mono speech -> Transcript (segments with word times) from ASR backend `backend`."""
    return create("asr", backend, **(options or {})).transcribe(Path(speech_wav), language)


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
    aligner = create("align", backend, **(options or {}))
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
