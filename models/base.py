"""One small interface per stage. Backends implement it and are found by name through the registry.

A backend is constructed with keyword options from the manifest and loads heavy things lazily.
`fingerprint()` returns a string that changes when the backend's output for the same input could
change (model file hash, engine version, options): stage caching keys on it.

Backends that load user-supplied weights declare `needs_weights = True`; they are then constructed with
`registry=` (the models.yaml in use) and resolve their weights through the model store, apart from use.
Build backends with the typed `create_*` functions below, never by instantiating a class found by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from dubforge.core import registry
from dubforge.core.contracts import Phoneme, Segment, Speech, Stems, Transcript
from dubforge.core.errors import StageError
from dubforge.core.progress import ProgressCallback
from dubforge.lipsync.records import FaceTrack, LipsyncResult


@runtime_checkable
class Backend(Protocol):
    name: ClassVar[str]
    needs_weights: ClassVar[bool] = False  # True: constructed with registry=<models.yaml> (user-supplied weights)

    def fingerprint(self) -> str: ...


@runtime_checkable
class Transcriber(Backend, Protocol):
    def transcribe(self, speech_wav: Path, language: str) -> Transcript:
        """Speech (16 kHz mono WAV) -> segments with words and times."""
        ...

    def load(self, language: str) -> None:
        """Load the model `transcribe` will use for `language` now (ahead of the audio), if it loads at all."""


@runtime_checkable
class Aligner(Backend, Protocol):
    def align(self, speech_wav: Path, segments: Sequence[Segment], language: str) -> tuple[Segment, ...]:
        """Return the same segments with `words` filled, each word with its phonemes."""
        ...


@runtime_checkable
class Translator(Backend, Protocol):
    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        """Translate each text; the result has the same length and order."""
        ...


@runtime_checkable
class Synthesizer(Backend, Protocol):
    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        """Speak `text` into `out_wav` (written atomically). `rate` > 1 speaks faster.

        Deterministic: equal inputs give equal audio. Phoneme times are relative to the clip start.
        """
        ...


@runtime_checkable
class Separator(Backend, Protocol):
    def separate(self, mix_wav: Path, out_dir: Path) -> Stems:
        """48 kHz stereo mix -> background stem (M&E) and the dialogue stem, written in out_dir."""
        ...


@runtime_checkable
class LipsyncRenderer(Backend, Protocol):
    supports_portrait: ClassVar[bool] = False  # can animate a still photo (source.image)

    def render(
        self,
        video: Path,
        track: FaceTrack,
        dub_phonemes: Sequence[Phoneme],
        source_phonemes: Sequence[Phoneme],
        out_video: Path,
        *,
        audio: Path | None = None,
        preset: str = "veryfast",
        crf: int = 18,
        progress: ProgressCallback | None = None,
        portrait: bool = False,
    ) -> LipsyncResult:
        """Write a video-only H.264 mp4 (atomically) with the mouth following the dub (`dub_phonemes`, times on
        the source timeline, and `audio`, the dub's dialogue WAV, which audio-driven renderers require); same frames, frame
        rate and timestamps as `video`. Frames without a usable face pass through unchanged and are counted.
        Streams: memory does not grow with length. portrait=True: `video` is a still photo made into a video
        (every frame identical): animate it without source footage of the mouth."""
        ...


def _create(stage: str, interface: Any, backend: str, models_file: Path | None, options: dict[str, Any]) -> Any:
    cls = registry.load_class(stage, backend)
    if getattr(cls, "needs_weights", False) and models_file is not None:
        options = {**options, "registry": models_file}
    made = cls(**options)
    if not isinstance(made, interface):
        raise StageError(f"{stage} backend {backend!r} ({cls.__module__}.{cls.__qualname__}) does not implement "
                         f"{interface.__name__} (models/base.py)")
    return made


def create_transcriber(backend: str, models_file: Path | None = None, **options: Any) -> Transcriber:
    return _create("asr", Transcriber, backend, models_file, options)


def create_aligner(backend: str, models_file: Path | None = None, **options: Any) -> Aligner:
    return _create("align", Aligner, backend, models_file, options)


def create_translator(backend: str, models_file: Path | None = None, **options: Any) -> Translator:
    return _create("translate", Translator, backend, models_file, options)


def create_synthesizer(backend: str, models_file: Path | None = None, **options: Any) -> Synthesizer:
    return _create("tts", Synthesizer, backend, models_file, options)


def create_separator(backend: str, models_file: Path | None = None, **options: Any) -> Separator:
    return _create("separate", Separator, backend, models_file, options)


def create_renderer(backend: str, models_file: Path | None = None, **options: Any) -> LipsyncRenderer:
    return _create("lipsync", LipsyncRenderer, backend, models_file, options)
