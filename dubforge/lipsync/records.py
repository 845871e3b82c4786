"""Records of the lip-sync stage (JSON-serialisable, cached on disk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from dubforge.core.contracts import Record


class FaceTrack(Record):
    """Landmarks of one face through a source video (computed once, shared by every language)."""

    npz: Path = Field(description="per-frame arrays: times, valid, landmarks (subset), pose")
    video_sha256: str
    frame_count: int
    fps: float
    width: int
    height: int
    frames_with_face: int = Field(description="frames whose chosen face is usable for rendering")
    face_id: int | None = Field(description="id of the chosen face; None when no usable face was found")
    reason: str = Field(description="why this face was chosen (or why none was)")
    faces_seen: int = Field(0, description="distinct people (identities after re-linking across cuts and exits)")
    audio_correlation: float | None = Field(
        default=None, description="correlation of the chosen faces' mouth opening with the source speech envelope"
    )
    shots: int = Field(1, description="shots found (hard cuts + 1)")
    rotation: int = Field(0, description="display rotation of the source in degrees counter-clockwise")
    speakers: list[int] = Field(default_factory=list, description="identities rendered (the speaking face per shot)")
    frames_occluded: int = Field(0, description="frames of the speaking face left alone: something covers the mouth")


def finish_render(video: Path, out_video: Path, expected: int, decoded: int, rendered: int, warnings: list[str],
                  count_passed: bool = True, **fields) -> "LipsyncResult":
    """The result of a render: frame counts, and warnings when frames went missing or passed through untouched."""
    if decoded != expected:
        warnings.append(f"{video}: decoded {decoded} frames, the face track has {expected}")
    passed = decoded - rendered
    if count_passed and passed:
        warnings.append(f"{passed} of {decoded} frames had no usable face and were passed through unchanged")
    return LipsyncResult(out_video=Path(out_video), frames_rendered=rendered, frames_passed_through=passed,
                         warnings=tuple(warnings), **fields)


class LipsyncVerdict(Record):
    """Whether a language's lip-sync covers enough of the speech (from the scorecard's `coverage`)."""

    status: str = Field(description="ok | degraded (coverage below min_coverage) | unscored (no speech over a face)")
    coverage: float | None
    min_coverage: float
    message: str = ""


class LipsyncResult(Record):
    out_video: Path
    frames_rendered: int
    frames_passed_through: int
    warnings: tuple[str, ...] = ()
    visemes: str = Field(default="generic", description="speaker (learned from the source) | generic (fallback)")
    source_sync: float | None = Field(
        default=None, description="correlation of the source mouth with its own phonemes (decides `visemes`)"
    )
    backend: str = "mouth-bank"


class RenderedPicture(Record):
    """What the lip-sync stage hands to delivery: the rendered picture, how it was rendered, and its scorecard."""

    video: Path
    result: LipsyncResult
    scorecard: dict[str, Any] = Field(description="dubforge.lipsync.score, measured on the rendered output")
    verdict: LipsyncVerdict
