"""Translation stage: source segments -> target-language lines in the same time windows.

Either a machine backend translates the transcript, or the user's translated script (SRT, VTT or dubbing CSV)
is read as is. Both give a `Translation` whose lines keep their source windows and speakers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dubforge.core import registry
from dubforge.core.contracts import Line, Segment, Transcript, Translation
from dubforge.core.errors import StageError
from dubforge.core.languages import normalise_language
from dubforge.core.manifest import MachineTranslation
from dubforge.core.scripts import read_dubbing_csv, read_script
from dubforge.models.base import Translator, create_translator


def make_translator(backend: str, options: Mapping[str, Any]) -> Translator:
    """The registry's backend `backend`, built with the manifest's machine-translation options (None ones left out)."""
    try:
        return create_translator(backend, **{k: v for k, v in options.items() if v is not None})
    except registry.UnknownBackend as exc:
        raise StageError(str(exc)) from None


def translate(language: str, source_language: str, transcript: Transcript, file: Path | None,
              machine: MachineTranslation | None, video_duration: float) -> Translation:
    """A target language's lines: the user's translated script when given, else machine translation."""
    if file is not None:
        return translation_from_file(file, language, video_duration)
    if machine is None:
        raise StageError(f"{language}: no translation file and no machine translation configured")
    options = machine.model_dump(exclude={"from_", "backend"}, exclude_none=True)
    return translate_lines(transcript.segments, language, source_language, machine.backend, options)


def translate_lines(
    segments: Sequence[Segment],
    target_language: str,
    source_language: str,
    backend: str,
    options: dict[str, Any],
) -> Translation:
    """Machine-translate each segment; line i keeps segment i's window and speaker."""
    target, source = normalise_language(target_language), normalise_language(source_language)
    texts = [s.text for s in segments]
    if target == source:  # re-voicing in the same language
        translated, backend = list(texts), "none"
    else:
        translated = make_translator(backend, options).translate(texts, source, target)
    if len(translated) != len(texts):
        raise StageError(f"the {backend} backend returned {len(translated)} translations for {len(texts)} lines")
    lines = []
    for index, (seg, text) in enumerate(zip(segments, translated)):
        if seg.text.strip() and not text.strip():
            raise StageError(f"the {backend} backend gave an empty {target} translation for line {index + 1} "
                             f"({seg.start:.2f}-{seg.end:.2f}s): {seg.text!r}")
        lines.append(Line(index=index, start=seg.start, end=seg.end, source_text=seg.text, text=text.strip(),
                          speaker=seg.speaker))
    return Translation(language=target, lines=tuple(lines), backend=backend)


def translation_from_file(path: Path, target_language: str, video_duration: float) -> Translation:
    """The user's translated script. For a dubbing CSV the transcription column becomes `source_text`."""
    path = Path(path)
    segments = read_script(path, video_duration=video_duration, column="translation")
    sources = [row.transcription for row in read_dubbing_csv(path)] if path.suffix.lower() == ".csv" else [""] * len(segments)
    lines = tuple(
        Line(index=i, start=s.start, end=s.end, source_text=src, text=s.text, speaker=s.speaker)
        for i, (s, src) in enumerate(zip(segments, sources))
    )
    return Translation(language=normalise_language(target_language), lines=lines, backend="file")
