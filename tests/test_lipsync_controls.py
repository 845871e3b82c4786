"""Lip-sync controls: a clip with no face passes through; a mouth that never moves scores low."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from dubforge.core.contracts import Phoneme
from dubforge.lipsync.testmedia import carphone_frames, write_clip
from dubforge.lipsync.video import frames
from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face
from tests.media import speak_english


def _dub(tmp_path):
    spoken = speak_english("Maybe Bob prefers fluffy purple muffins.", tmp_path / "dub.wav", lead=0.2, tail=0.1)
    return [Phoneme(symbol=p, start=s, end=e) for w in spoken.words for p, s, e in w.phonemes]


def test_clip_without_a_face_passes_through_with_a_warning(tmp_path):
    rng = np.random.default_rng(3)
    base = (np.mgrid[0:240, 0:320][1] / 320 * 255).astype(np.uint8)
    clip = [np.dstack([np.roll(base, 4 * i, axis=1)] * 3) ^ rng.integers(0, 8, (240, 320, 3), np.uint8)
            for i in range(40)]
    src = write_clip(tmp_path / "noface.mp4", clip, fps=Fraction(25))
    track = track_face(src, tmp_path / "cache")
    assert track.frames_with_face == 0 and track.face_id is None and "no face" in track.reason
    result = render_lipsync(src, track, _dub(tmp_path), [], tmp_path / "out.mp4")
    assert result.frames_rendered == 0 and result.frames_passed_through == 40
    assert result.warnings and "no usable face" in result.warnings[0]
    outs = [f.to_ndarray(format="rgb24").astype(int) for f in frames(result.out_video)]
    srcs = [f.to_ndarray(format="rgb24").astype(int) for f in frames(src)]
    assert len(outs) == 40
    mse = np.mean([(a - b) ** 2 for a, b in zip(outs, srcs)])
    assert 10 * np.log10(255**2 / mse) > 38  # re-encoded at crf 18: encoder noise only
    card = score_lipsync(result.out_video, src, track, _dub(tmp_path))
    assert card["frames_passed_through"] == 40 and card["correlation"] is None


def test_a_mouth_that_never_moves_scores_low(tmp_path):
    frame = next(f for i, f in enumerate(carphone_frames(frames=41)) if i == 40)  # mouth half open
    src = write_clip(tmp_path / "frozen.mp4", [frame] * 80, fps=Fraction(30))
    track = track_face(src, tmp_path / "cache")
    assert track.frames_with_face == 80
    dub = _dub(tmp_path)
    card = score_lipsync(src, src, track, dub)
    assert card["closure"] <= 0.2
    assert card["correlation"] < 0.3
    assert card["preservation_db"] > 60  # the "render" is the source itself
    assert card["coverage"] == 0.0 and card["range_ratio"] is None  # nothing was re-rendered
