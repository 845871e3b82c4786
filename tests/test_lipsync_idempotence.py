"""Idempotence control: rendering dub A over the video already rendered for A scores no worse."""

from __future__ import annotations

from fractions import Fraction

from dubforge.core.contracts import Phoneme
from dubforge.lipsync.testmedia import carphone_frames, write_clip
from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face
from tests.media import speak_english


def test_rendering_a_over_a_scores_no_worse(tmp_path):
    src = write_clip(tmp_path / "src.mp4", carphone_frames(frames=84), fps=Fraction(30000, 1001))
    spoken = speak_english("Maybe Bob prefers fluffy purple muffins.", tmp_path / "a.wav", lead=0.2, tail=0.1)
    dub = [Phoneme(symbol=p, start=s, end=e) for w in spoken.words for p, s, e in w.phonemes]
    track = track_face(src, tmp_path / "cache")
    first = render_lipsync(src, track, dub, [], tmp_path / "a.mp4")
    card1 = score_lipsync(first.out_video, src, track, dub)
    track_a = track_face(first.out_video, tmp_path / "cache")
    assert track_a.frames_with_face == 84
    second = render_lipsync(first.out_video, track_a, dub, [], tmp_path / "aa.mp4")
    card2 = score_lipsync(second.out_video, first.out_video, track_a, dub)
    print("first", card1, "\nsecond", card2)
    assert card2["closure"] >= card1["closure"] - 0.15  # one bilabial of eight
    assert card2["correlation"] >= card1["correlation"] - 0.05
    assert abs(card2["lag_frames"]) <= 1
    assert 0.6 <= card2["range_ratio"] <= 1.25
    assert card2["preservation_db"] >= 40
