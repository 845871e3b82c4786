"""Lip-sync stage functions: track the face once per source video, render per language, score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dubforge.core.contracts import DubTrack, Phoneme, Transcript
from dubforge.core.errors import StageError
from dubforge.core.manifest import Lipsync
from dubforge.core.progress import ProgressCallback
from dubforge.lipsync.records import FaceTrack, LipsyncResult, LipsyncVerdict, RenderedPicture
from dubforge.lipsync.score import score
from dubforge.lipsync.track import track_face as run
from dubforge.models.base import create_renderer

DEFAULT_BACKEND = "mouth-bank"


def track_face(video: Path, work_dir: Path, speech_wav: Path | None = None,
               lines: Sequence[tuple[float, float, str]] = ()) -> FaceTrack:
    """Landmarks, smoothing and pose of the speaking face, cached in work_dir by content hash.

    With several faces, `speech_wav` (the source speech) picks the one whose mouth moves with it; `lines`
    (speaker_lines: the script's lines when it names two or more speakers) binds each speaker to a face, which
    is rendered during that speaker's lines."""

    return run(Path(video), Path(work_dir), Path(speech_wav) if speech_wav else None, lines)


def speaker_lines(transcript: Transcript) -> tuple[tuple[float, float, str], ...]:
    """(start, end, speaker) of each line when the transcript (a script's speaker column) names two or more
    speakers; () otherwise. Only these reach the face track, so editing a line's text does not track again."""
    if len({s.speaker for s in transcript.segments}) < 2:
        return ()
    return tuple((s.start, s.end, s.speaker) for s in transcript.segments)


def render_lipsync(
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
    backend: str = DEFAULT_BACKEND,
    portrait: bool = False,
    models_file: Path | None = None,
    options: dict[str, Any] | None = None,
) -> LipsyncResult:
    """Video-only H.264 mp4 whose mouth follows the dub (its phonemes, and `audio`, its dialogue WAV); frames,
    rate and timestamps as the source. portrait=True: the source is a still photo made into a video."""
    chosen = create_renderer(backend, models_file, **(options or {}))
    return chosen.render(Path(video), track, dub_phonemes, source_phonemes, Path(out_video), audio=audio,
                         preset=preset, crf=crf, progress=progress, portrait=portrait)


def lipsync_language(video: Path, track: FaceTrack, dub: DubTrack, transcript: Transcript, options: Lipsync,
                     portrait: bool, models_file: Path | None, out_video: Path,
                     progress: ProgressCallback | None = None) -> RenderedPicture:
    """Render a language's picture and score it on the rendered output."""
    source_phonemes = [p for seg in transcript.segments for w in seg.words for p in w.phonemes]
    result = render_lipsync(video, track, dub.phonemes, source_phonemes, out_video, audio=dub.wav,
                            preset=options.preset, crf=options.crf, progress=progress, backend=options.backend,
                            portrait=portrait, models_file=models_file)
    scorecard = score_lipsync(result.out_video, video, track, dub.phonemes)
    verdict = coverage_verdict(scorecard, options.min_coverage, options.strict)  # strict: raises
    return RenderedPicture(video=result.out_video, result=result, scorecard=scorecard, verdict=verdict)


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
