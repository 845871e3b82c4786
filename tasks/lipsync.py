"""Lip-sync stage functions: track the face once per source video, render per language, score."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dubforge.core import registry
from dubforge.core.contracts import Phoneme
from dubforge.core.errors import StageError
from dubforge.lipsync.records import FaceTrack, LipsyncResult, LipsyncVerdict
from dubforge.lipsync.score import score
from dubforge.lipsync.track import track_face as run

DEFAULT_BACKEND = "mouth-bank"


def track_face(video: Path, work_dir: Path, speech_wav: Path | None = None) -> FaceTrack:
    """Landmarks, smoothing and pose of the speaking face, cached in work_dir by content hash.

    With several faces, `speech_wav` (the source speech) picks the one whose mouth moves with it."""

    return run(Path(video), Path(work_dir), Path(speech_wav) if speech_wav else None)


def renderer(backend: str = DEFAULT_BACKEND, **options: Any):

    try:
        return registry.create("lipsync", backend, **options)
    except registry.UnknownBackend:
        if backend != DEFAULT_BACKEND:
            raise
        from dubforge.models.mouth_bank import (
            MouthBankRenderer,  # until the registry lists "lipsync"
        )

        return MouthBankRenderer(**options)


def render_lipsync(
    video: Path,
    track: FaceTrack,
    dub_phonemes: Sequence[Phoneme],
    source_phonemes: Sequence[Phoneme],
    out_video: Path,
    preset: str = "veryfast",
    crf: int = 18,
    progress: Callable[[int, int], None] | None = None,
    backend: str = DEFAULT_BACKEND,
    portrait: bool = False,
    audio: Path | None = None,
    options: dict[str, Any] | None = None,
) -> LipsyncResult:
    """Video-only H.264 mp4 whose mouth follows the dub; frames, rate and timestamps as the source.

    portrait=True: the source is a still photo made into a video (talking portrait)."""
    chosen = renderer(backend, **(options or {}))
    extra: dict[str, Any] = {"portrait": True} if portrait else {}  # renderers without it keep working otherwise
    if getattr(chosen, "needs_audio", False):  # audio-driven networks (Wav2Lip) hear the dub itself
        extra["audio"] = Path(audio) if audio else None
    return chosen.render(Path(video), track, dub_phonemes, source_phonemes, Path(out_video),
                                    preset=preset, crf=crf, progress=progress, **extra)


def score_lipsync(rendered: Path, source: Path, track: FaceTrack, dub_phonemes: Sequence[Phoneme],
                  per_frame: dict | None = None) -> dict:
    """The automatic lip-sync scorecard (see dubforge.lipsync.score)."""

    return score(Path(rendered), Path(source), track, dub_phonemes, per_frame)


def coverage_verdict(scorecard: dict, min_coverage: float = 0.9, strict: bool = False) -> LipsyncVerdict:
    """"degraded" when the scorecard's coverage is below `min_coverage` (the language is delivered with a
    warning); with `strict` a degraded language fails (StageError)."""

    coverage = scorecard.get("coverage")
    if coverage is None:
        return LipsyncVerdict(status="unscored", coverage=None, min_coverage=min_coverage,
                              message="lip-sync not scored: the dub never speaks over a detectable face")
    if coverage >= min_coverage:
        return LipsyncVerdict(status="ok", coverage=coverage, min_coverage=min_coverage)
    message = (f"lip-sync degraded: {coverage:.0%} of the {scorecard.get('frames_scored')} frames where the dub "
               f"speaks over a face were re-rendered (lipsync.min_coverage {min_coverage:.0%})")
    if strict:
        raise StageError(message + "; lipsync.strict is on")
    return LipsyncVerdict(status="degraded", coverage=coverage, min_coverage=min_coverage, message=message)
