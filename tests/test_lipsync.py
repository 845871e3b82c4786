"""Lip-sync on a real talking head: carphone upscaled and pillarboxed to 1280x720, new English speech."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from dubforge.core.contracts import Phoneme
from dubforge.lipsync.testmedia import carphone_frames, write_clip
from dubforge.lipsync.video import frames, probe
from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face
from tests.media import speak_english

SENTENCE = "Maybe Bob prefers fluffy purple muffins."
N = 100


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("lipsync")
    src = write_clip(work / "src.mp4", carphone_frames(frames=N), fps=Fraction(30000, 1001))
    spoken = speak_english(SENTENCE, work / "dub.wav", lead=0.3, tail=0.2)
    dub = [Phoneme(symbol=p, start=s, end=e) for w in spoken.words for p, s, e in w.phonemes]
    track = track_face(src, work / "cache")
    ticks = []
    result = render_lipsync(src, track, dub, [], work / "out.mp4", progress=lambda i, n: ticks.append((i, n)))
    card = score_lipsync(result.out_video, src, track, dub)
    print("scorecard", card)
    return {"work": work, "src": src, "dub": dub, "track": track, "result": result, "card": card, "ticks": ticks}


def _timestamps(path):
    return [(f.pts, f.time_base) for f in frames(path)]


def test_track_is_cached_and_sees_the_face(run):
    track = run["track"]
    assert track.frame_count == N and track.frames_with_face == N and track.face_id == 0
    assert track.reason == "the only face" and abs(track.fps - 30000 / 1001) < 1e-9
    again = track_face(run["src"], run["work"] / "cache")
    assert again == track


def test_frames_rate_and_timestamps_are_kept(run):
    src, out = run["src"], run["result"].out_video
    a, b = probe(src), probe(out)
    assert (b.width, b.height) == (1280, 720) and b.rate == a.rate
    ts_src = [float(p * tb) for p, tb in _timestamps(src)]
    ts_out = [float(p * tb) for p, tb in _timestamps(out)]
    assert len(ts_out) == len(ts_src) == N
    assert np.abs(np.array(ts_out) - np.array(ts_src)).max() < 1e-6
    import av

    with av.open(str(out)) as c:
        assert [s.type for s in c.streams] == ["video"] and c.streams.video[0].codec_context.name == "h264"
    res = run["result"]
    assert res.frames_rendered == N and res.frames_passed_through == 0 and not res.warnings
    assert res.visemes == "generic"
    assert run["ticks"][-1] == (N, N) and len(run["ticks"]) == N


def test_scorecard_meets_the_sync_targets(run):
    card = run["card"]
    assert card["closure"] >= 0.9
    assert abs(card["lag_frames"]) <= 1
    assert card["correlation"] >= 0.6
    assert card["preservation_db"] >= 40  # outside the mask only encoder noise
    assert card["seam_ratio"] <= 1.15
    assert card["frames_rendered"] == N and card["frames_passed_through"] == 0
    assert card["coverage"] == 1.0 and card["frames_scored"] >= 0.5 * N


def test_scorecard_control_a_mouth_from_another_sentence_scores_low(run):
    """Known answer: the same render scored against a different sentence's phonemes."""
    other = speak_english("Will you show me where the rooms are?", run["work"] / "other.wav", lead=0.3, tail=0.2)
    phonemes = [Phoneme(symbol=p, start=s, end=e) for w in other.words for p, s, e in w.phonemes]
    card = score_lipsync(run["result"].out_video, run["src"], run["track"], phonemes)
    assert card["correlation"] < 0.35 and card["correlation"] < run["card"]["correlation"] - 0.3


def test_a_bare_reencode_scores_zero_coverage(run):
    """Known answer: a picture passed through untouched covers nothing and does not close on p/b/m."""
    from dubforge.lipsync.video import H264Writer, yuv_planes

    bare = run["work"] / "bare.mp4"
    with H264Writer(bare, probe(run["src"])) as writer:
        for frame in frames(run["src"]):
            writer.write(yuv_planes(frame)[0], frame.pts)
    card = score_lipsync(bare, run["src"], run["track"], run["dub"])
    assert card["coverage"] == 0.0 and card["frames_scored"] == run["card"]["frames_scored"]
    assert card["closure"] < 0.5 and card["correlation"] < 0.3


def test_pixels_outside_the_mask_are_encoder_noise(run):
    """Compare with a bare re-encode of the source: outside the mask the render differs no more."""
    import cv2

    from dubforge.lipsync import geometry as g
    from dubforge.lipsync.bank import canonical
    from dubforge.lipsync.compose import mask_polygon
    from dubforge.lipsync.track import load_arrays

    arrays = load_arrays(run["track"])
    canon = canonical(arrays)
    worst = 0.0
    for i, (fo, fs) in enumerate(zip(frames(run["result"].out_video), frames(run["src"]))):
        if i % 10:
            continue
        mask = np.zeros((720, 1280), np.uint8)
        poly = g.apply(g.invert(arrays["pose"][i]), mask_polygon(canon[i]))
        cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
        mask = cv2.dilate(mask, np.ones((17, 17), np.uint8))
        out, src = fo.to_ndarray(format="rgb24"), fs.to_ndarray(format="rgb24")
        diff = np.abs(out.astype(int) - src)[mask == 0]
        worst = max(worst, float(np.mean(diff)))
        assert np.percentile(diff, 99.9) <= 16
    assert worst < 1.5
