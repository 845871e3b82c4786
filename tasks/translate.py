"""Translation stage: source segments -> target-language lines in the same time windows.

Either a machine backend translates the transcript, or the user's translated script (SRT, VTT or dubbing CSV)
is read as is. Both give a `Translation` whose lines keep their source windows and speakers.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dubforge.core import registry
from dubforge.core.contracts import DEFAULT_SPEAKER, Line, Segment, Transcript, Translation
from dubforge.core.errors import StageError
from dubforge.core.glossary import check_line
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
              machine: MachineTranslation | None, video_duration: float,
              glossary: Mapping[str, str] | None = None) -> Translation:
    """A target language's lines: the user's translated script when given (a glossary term it misses is a
    warning on that line), else machine translation told the glossary."""
    if file is not None:
        return translation_from_file(file, language, video_duration, transcript.segments, glossary)
    if machine is None:
        raise StageError(f"{language}: no translation file and no machine translation configured")
    options = machine.model_dump(exclude={"from_", "backend"}, exclude_none=True)
    return translate_lines(transcript.segments, language, source_language, machine.backend, options, glossary)


def translate_lines(
    segments: Sequence[Segment],
    target_language: str,
    source_language: str,
    backend: str,
    options: dict[str, Any],
    glossary: Mapping[str, str] | None = None,
) -> Translation:
    """Machine-translate each segment; line i keeps segment i's window and speaker.

    `glossary` (source term -> required translation, `required_terms`) goes to backends whose `translate` takes
    one (the LLM backend); on every backend a line that misses a term gets a warning."""
    target, source = normalise_language(target_language), normalise_language(source_language)
    texts = [s.text for s in segments]
    if target == source:  # re-voicing in the same language
        translated, backend = list(texts), "none"
    else:
        translator = make_translator(backend, options)
        extra = {"glossary": dict(glossary)} if glossary and _takes_glossary(translator) else {}
        translated = translator.translate(texts, source, target, **extra)
    if len(translated) != len(texts):
        raise StageError(f"the {backend} backend returned {len(translated)} translations for {len(texts)} lines")
    lines = []
    for index, (seg, text) in enumerate(zip(segments, translated)):
        if seg.text.strip() and not text.strip():
            raise StageError(f"the {backend} backend gave an empty {target} translation for line {index + 1} "
                             f"({seg.start:.2f}-{seg.end:.2f}s): {seg.text!r}")
        lines.append(Line(index=index, start=seg.start, end=seg.end, source_text=seg.text, text=text.strip(),
                          speaker=seg.speaker, warnings=glossary_warnings(seg.text, text, glossary)))
    return Translation(language=target, lines=tuple(lines), backend=backend)


def _takes_glossary(translator: Any) -> bool:
    return "glossary" in inspect.signature(translator.translate).parameters


def glossary_warnings(source_text: str, text: str, glossary: Mapping[str, str] | None) -> tuple[str, ...]:
    return tuple(f"glossary: {hit.describe()}" for hit in check_line(source_text, text, dict(glossary or {}))
                 if not hit.found)


def translation_from_file(path: Path, target_language: str, video_duration: float,
                          source: Sequence[Segment] = (), glossary: Mapping[str, str] | None = None) -> Translation:
    """The user's translated script (SRT, VTT, dubbing CSV or review sheet).

    `source_text` is the sheet's transcription column, else the source segments that the line overlaps in time
    (each source segment goes to the line it overlaps most); a line without its own speaker label takes its
    source segment's speaker."""
    path = Path(path)
    segments = read_script(path, video_duration=video_duration, column="translation")
    rows = read_dubbing_csv(path) if path.suffix.lower() in (".csv", ".xlsx") else []
    matched = match_by_time(segments, source)
    lines = []
    for i, seg in enumerate(segments):
        text = rows[i].transcription if rows and rows[i].transcription else " ".join(s.text for s in matched[i])
        speaker = seg.speaker
        if speaker == DEFAULT_SPEAKER and matched[i]:
            speaker = matched[i][0].speaker
        lines.append(Line(index=i, start=seg.start, end=seg.end, source_text=text, text=seg.text, speaker=speaker,
                          warnings=glossary_warnings(text, seg.text, glossary)))
    return Translation(language=normalise_language(target_language), lines=tuple(lines), backend="file")


def match_by_time(lines: Sequence[Segment], source: Sequence[Segment]) -> list[list[Segment]]:
    """For each line, the source segments that overlap it most (in order); each source segment is used once."""
    matched: list[list[Segment]] = [[] for _ in lines]
    for seg in source:
        overlaps = [min(seg.end, line.end) - max(seg.start, line.start) for line in lines]
        best = max(range(len(lines)), key=overlaps.__getitem__, default=None)
        if best is not None and overlaps[best] > 0:
            matched[best].append(seg)
    return matched
