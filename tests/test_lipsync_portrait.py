"""Talking portrait: a still photo (skimage's astronaut) made into a still video, animated for new speech."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from dubforge.core.contracts import Phoneme
from dubforge.lipsync import geometry as g
from dubforge.lipsync.portrait import blink_curve, idle_motion
from dubforge.lipsync.testmedia import write_clip
from dubforge.lipsync.video import frames, probe
from dubforge.tasks.lipsync import render_lipsync, score_lipsync, track_face
from tests.media import speak_english

FPS = 25


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    data = pytest.importorskip("skimage.data")
    work = tmp_path_factory.mktemp("portrait")
    spoken = speak_english("Maybe Bob prefers fluffy purple muffins.", work / "dub.wav", lead=0.3, tail=0.3)
    dub = [Phoneme(symbol=p, start=s, end=e) for w in spoken.words for p, s, e in w.phonemes]
    n = int(round(spoken.duration * FPS))
    src = write_clip(work / "still.mp4", [data.astronaut()] * n, fps=Fraction(FPS))
    track = track_face(src, work / "cache")
    result = render_lipsync(src, track, dub, [], work / "out.mp4", portrait=True)
    card = score_lipsync(result.out_video, src, track, dub)
    print("portrait scorecard", card)
    return {"src": src, "track": track, "result": result, "card": card, "n": n, "dub": dub}


def test_frames_and_timing_are_kept(run):
    n = run["n"]
    assert run["track"].frames_with_face == n
    res = run["result"]
    assert res.frames_rendered == n and res.frames_passed_through == 0 and not res.warnings
    a, b = probe(run["src"]), probe(res.out_video)
    assert (b.width, b.height, b.rate) == (a.width, a.height, a.rate)
    assert [f.pts for f in frames(res.out_video)] == [f.pts for f in frames(run["src"])]


def test_mouth_follows_the_dub(run):
    card = run["card"]
    assert card["closure"] >= 0.8
    assert abs(card["lag_frames"]) <= 1
    assert card["correlation"] >= 0.6


def test_it_blinks_and_the_head_moves_a_little(run):
    from dubforge.lipsync.detect import FaceMesh

    ear, centres = [], []
    with FaceMesh(1) as mesh:
        for f in frames(run["result"].out_video):
            faces = mesh(f.to_ndarray(format="rgb24"))
            assert faces, "the face must stay detectable in every frame"
            ear.append(float(g.eye_aspect_ratio(faces[0])))
            centres.append(faces[0][g.sub(g.RIGID)].mean(0))
    ear = np.array(ear)
    times = np.arange(run["n"]) / FPS
    blinks = blink_curve(times, int(run["track"].video_sha256[:8], 16))
    shut, open_ = blinks > 0.8, blinks < 0.05
    assert shut.any()
    assert ear[shut].max() < 0.6 * np.median(ear[open_])  # the detector sees the lids close
    moved = np.linalg.norm(np.array(centres) - centres[0], axis=1)
    assert 0.2 < moved.max() < 8  # alive, but only a few pixels


def test_idle_life_is_natural_and_deterministic():
    times = np.arange(0, 60, 1 / FPS)
    blinks = blink_curve(times, 7)
    starts = times[1:][(blinks[1:] > 0) & (blinks[:-1] == 0)]
    gaps = np.diff(starts)
    assert len(starts) >= 60 / 6 - 1 and gaps.min() >= 2.0 - 0.05 and gaps.max() <= 6.0 + 0.05
    widths = [np.sum(blinks[(times >= s) & (times < s + 0.5)] > 0) / FPS for s in starts]
    assert 0.08 <= np.median(widths) <= 0.2  # ~150 ms
    motion = idle_motion(times, 7, 250.0)
    assert np.abs(motion[:, :, 2]).max() <= 2.0 + 1e-9 and np.abs(motion[:, :, 2]).max() > 0.5
    assert np.abs(np.diff(motion[:, :, 2], axis=0)).max() < 0.25  # slow: a fraction of a pixel per frame
    assert np.array_equal(blink_curve(times, 7), blinks)
