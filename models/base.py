"""One small interface per stage. Backends implement it and are found through the registry.

A backend is constructed with keyword options from the manifest and loads heavy things lazily.
`fingerprint()` returns a string that changes when the backend's output for the same input could
change (model file hash, engine version, options): stage caching keys on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from dubforge.core.contracts import Segment, Speech, Stems, Transcript


@runtime_checkable
class Backend(Protocol):
    name: str

    def fingerprint(self) -> str: ...


class Transcriber(Backend, Protocol):
    def transcribe(self, speech_wav: Path, language: str) -> Transcript:
        """Speech (16 kHz mono WAV) -> segments with words and times."""
        ...


class Aligner(Backend, Protocol):
    def align(self, speech_wav: Path, segments: Sequence[Segment], language: str) -> tuple[Segment, ...]:
        """Return the same segments with `words` filled, each word with its phonemes."""
        ...


class Translator(Backend, Protocol):
    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        """Translate each text; the result has the same length and order."""
        ...


class Synthesizer(Backend, Protocol):
    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        """Speak `text` into `out_wav` (written atomically). `rate` > 1 speaks faster.

        Deterministic: equal inputs give equal audio. Phoneme times are relative to the clip start.
        """
        ...


class Separator(Backend, Protocol):
    def separate(self, mix_wav: Path, out_dir: Path) -> Stems:
        """48 kHz stereo mix -> background stem (M&E) and the dialogue stem, written in out_dir."""
        ...
