"""Interface of lip-sync renderers (the CPU mouth bank by default; a neural renderer can replace it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from dubforge.core.contracts import Phoneme
from dubforge.lipsync.records import FaceTrack, LipsyncResult


@runtime_checkable
class LipsyncRenderer(Protocol):
    name: str

    def fingerprint(self) -> str:
        """Changes whenever the output for the same inputs could change (version, options, weights)."""
        ...

    def render(
        self,
        video: Path,
        track: FaceTrack,
        dub_phonemes: Sequence[Phoneme],
        source_phonemes: Sequence[Phoneme],
        out_video: Path,
        preset: str = "veryfast",
        crf: int = 18,
        progress: Callable[[int, int], None] | None = None,
        portrait: bool = False,
    ) -> LipsyncResult:
        """Write a video-only H.264 mp4 (atomically) with the mouth following `dub_phonemes` (times on
        the source timeline); same frames, frame rate and timestamps as `video`. Frames without a
        usable face pass through unchanged and are counted. Streams: memory does not grow with length.
        portrait=True: `video` is a still photo made into a video (every frame identical): animate it
        without source footage of the mouth (warped mouth, synthesised interior, blinks, idle head motion)."""
        ...
