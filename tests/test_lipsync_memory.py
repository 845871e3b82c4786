"""Lip-sync memory flat in source length: the windowed readers give the whole arrays' values exactly, and what the
render and the scorecard hold before their frame loops does not grow with the number of frames.

Synthetic face tracks (no video, no detector): the landmarks of the real code paths, random but face-like."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dubforge.lipsync import geometry as g
from dubforge.lipsync.bank import Extremes, canonical, crop_size
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.rows import Rows, row_writer, spill
from dubforge.lipsync.score import _anchors
from dubforge.lipsync.track import Landmarks, _speech_envelope, load_arrays
from dubforge.media.audio import write_wav

S = len(g.SUBSET)


def fake_track(folder, n: int, seed: int = 0) -> FaceTrack:
    """A track of n frames: one face drifting and turning a little, a few frames without a face, three shots."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(-60, 60, (S, 2)) + [640, 360]
    drift = np.cumsum(rng.normal(0, 0.5, (n, 1, 2)), axis=0)
    points = (base + drift + rng.normal(0, 0.3, (n, S, 2))).astype(np.float32)
    valid = rng.random(n) > 0.05
    points[~valid] = np.nan
    angle = rng.normal(0, 0.05, n)
    scale = 1 / 120 * (1 + rng.normal(0, 0.02, n))
    pose = np.zeros((n, 2, 3))
    pose[:, 0, 0], pose[:, 0, 1] = scale * np.cos(angle), -scale * np.sin(angle)
    pose[:, 1, 0], pose[:, 1, 1] = scale * np.sin(angle), scale * np.cos(angle)
    pose[:, :, 2] = rng.normal(-5, 0.1, (n, 2))
    shot = (np.arange(n) * 3 // n).astype(np.int64)
    npz = folder / f"face-track-{n}-{seed}.npz"
    with open(npz, "wb") as handle:
        np.savez_compressed(handle, times=np.arange(n) / 29.97, pts=np.arange(n), valid=valid, points=points,
                            pose=pose, identity=np.where(valid, 0, -1), segment=np.where(valid, shot, -1), shot=shot,
                            occluded=np.zeros(n, bool))
    return FaceTrack(npz=npz, video_sha256="0" * 64, frame_count=n, fps=29.97, width=1280, height=720,
                     frames_with_face=int(valid.sum()), face_id=0, reason="synthetic")


@pytest.mark.parametrize("block", [7, 512])
def test_landmarks_by_window_equal_the_whole_arrays(tmp_path, block):
    track = fake_track(tmp_path, 1100)
    arrays = load_arrays(track)
    canon = canonical(arrays)
    marks = Landmarks(track, arrays["pose"], block)
    assert len(marks) == 1100 and "points" not in load_arrays(track, points=False)
    for i in (0, 6, 7, 511, 512, 1099, 3):  # in and out of order, across window edges
        assert np.array_equal(marks.points(i), np.nan_to_num(arrays["points"][i]))
        assert np.array_equal(marks.canon(i), canon[i])
    assert np.array_equal(marks.descriptors(), g.descriptor(canon))
    # The crop the mouth bank cuts: the old whole-array percentiles, to the bit.
    valid = arrays["valid"]
    pts = canon[valid][:, g.sub(g.ANCHORS + g.LIPS)].reshape(-1, 2)
    low, high = Extremes(len(pts), 1.0), Extremes(len(pts), 99.0)
    for a in range(0, len(pts), 1000):
        low.add(pts[a: a + 1000])
        high.add(pts[a: a + 1000])
    assert np.array_equal(low.percentile(), np.percentile(pts, 1, axis=0))
    assert np.array_equal(high.percentile(), np.percentile(pts, 99, axis=0))
    centres, w, h = crop_size(marks, arrays["pose"], valid)
    assert w % 2 == h % 2 == 0 and np.isfinite(centres).all()


@pytest.mark.parametrize("q", [0.0, 1.0, 37.5, 99.0, 100.0])
def test_streamed_percentile_is_numpys(q):
    rng = np.random.default_rng(int(q))
    for n in (1, 2, 3, 101, 2500):
        x = np.round(rng.normal(size=(n, 2)) * 100, 1)  # ties too
        e = Extremes(n, q)
        for a in range(0, n, 97):
            e.add(x[a: a + 97])
        assert np.array_equal(e.percentile(), np.percentile(x, q, axis=0)), (n, q)


def test_nearest_anchor_is_the_earlier_at_a_tie():
    rng = np.random.default_rng(3)
    n = 400
    valid = rng.random(n) > 0.7
    valid[:30] = False  # a shot that starts without a face
    shot = np.repeat([0, 1, 2], [150, 200, 50])
    valid[350:] = False  # a shot without any
    centres = rng.normal(size=(n, 2))
    got = _anchors(centres, valid, shot)
    for s in range(3):
        idx = np.flatnonzero(shot == s)
        have = idx[valid[idx]]
        if not len(have):
            assert np.isnan(got[idx]).all()
            continue
        nearest = have[np.abs(idx[:, None] - have[None, :]).argmin(1)]  # the old n x n way
        assert np.array_equal(got[idx], centres[nearest])


def test_rows_spill_and_row_writer(tmp_path):
    data = np.random.default_rng(0).normal(size=(1000, S, 2)).astype(np.float32)
    np.savez_compressed(tmp_path / "a.npz", points=data, other=np.arange(3))
    rows = Rows(spill(tmp_path / "a.npz", "points", tmp_path / "a.points.npy"), block=64)
    assert len(rows) == 1000 and np.array_equal(rows.window(990, 2000), data[990:])
    assert np.array_equal(np.concatenate([w for _, w in rows.windows()]), data)
    assert np.array_equal(rows.row(700), data[700]) and np.array_equal(rows.row(5), data[5])
    with row_writer(tmp_path / "b.npy", data.shape, np.float32) as write:
        for row in data:
            write(row)
    assert np.array_equal(np.load(tmp_path / "b.npy"), data)
    with pytest.raises(ValueError, match="999 rows written"):
        with row_writer(tmp_path / "c.npy", data.shape, np.float32) as write:
            for row in data[:-1]:
                write(row)
    assert not (tmp_path / "c.npy").exists()


def test_speech_envelope_read_in_blocks_equals_the_whole_file(tmp_path):
    rng = np.random.default_rng(2)
    audio = (rng.normal(size=(16000 * 23, 2)) * 0.1).astype(np.float32)
    write_wav(tmp_path / "s.wav", audio, 16000)
    times = np.concatenate([np.arange(0, 24, 1 / 29.97), rng.uniform(0, 24, 50), [-0.01, -2.0]])
    mono, half = audio.mean(axis=1), int(0.02 * 16000)
    want = np.zeros(len(times))
    for i, t in enumerate(times):  # the whole-file version it replaces
        seg = mono[max(int(t * 16000) - half, 0): int(t * 16000) + half]
        want[i] = float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0
    assert np.array_equal(_speech_envelope(tmp_path / "s.wav", times), np.log(want + 1e-4))


def _peak_bytes(track: FaceTrack) -> int:
    """Python-heap peak (tracemalloc) of what the render and the scorecard hold from the landmarks: the
    descriptors, the bank's crop size and the scorecard's anchors."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        arrays = load_arrays(track, points=False)
        marks = Landmarks(track, arrays["pose"])
        marks.descriptors()
        crop_size(marks, arrays["pose"], arrays["valid"])
        centres = np.concatenate([p.mean(1) for _, p, _ in marks.windows()])
        _anchors(centres, arrays["valid"], arrays["shot"])
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_what_the_landmarks_cost_does_not_grow_with_length(tmp_path):
    # 68 s and 205 s at 30 fps: both hold several full windows.
    short, long = fake_track(tmp_path, 2048), fake_track(tmp_path, 6144)
    Landmarks(short, np.zeros((2048, 2, 3)))  # spill both first: the copy streams, but is not what is measured
    Landmarks(long, np.zeros((6144, 2, 3)))
    a, b = _peak_bytes(short), _peak_bytes(long)
    # Only per-frame scalars grow (descriptors, centres, pose, flags: about 115 bytes a frame); the landmarks
    # (1 KB a frame as float32, 2 KB as canonical float64; the whole-array code held about 6.4 KB a frame)
    # are never whole.
    assert b - a < 300 * (6144 - 2048), (a, b)


def _whole_viterbi(cost_block, t_len: int, consecutive: np.ndarray, block: int = 256) -> np.ndarray:
    """The version that held every back-pointer ((T, K) bytes): the reference for the path."""
    from dubforge.lipsync.select import HOLD, JUMP

    first = cost_block(0, min(block, t_len))
    k = first.shape[1]
    acc, costs, base = first[0].copy(), first, 0
    choice, best_prev = np.zeros((t_len, k), np.uint8), np.zeros(t_len, np.int64)
    for t in range(1, t_len):
        if t - base >= len(costs):
            base, costs = t, cost_block(t, min(t + block, t_len))
        j = best_prev[t] = int(np.argmin(acc))
        cont = np.full(k, np.inf)
        cont[1:] = np.where(consecutive[1:], acc[:-1], np.inf)
        options = np.stack([cont, acc + HOLD, np.full(k, acc[j] + JUMP)])
        choice[t] = pick = np.argmin(options, axis=0)
        acc = costs[t - base] + options[pick, np.arange(k)]
    path = np.zeros(t_len, np.int64)
    path[-1] = int(np.argmin(acc))
    for t in range(t_len - 1, 0, -1):
        c = choice[t, path[t]]
        path[t - 1] = path[t] - 1 if c == 0 else path[t] if c == 1 else best_prev[t]
    return path


@pytest.mark.parametrize("t_len,block", [(1, 256), (2, 256), (900, 256), (900, 7)])
def test_viterbi_by_rows_gives_the_whole_arrays_path(t_len, block):
    from dubforge.lipsync.select import viterbi

    rng = np.random.default_rng(t_len + block)
    k = 50
    # Shapes that drift (so continuing, holding and jumping all win somewhere), with exact ties.
    costs = np.round(rng.random((t_len, k)) * 0.3 + np.abs(np.sin(np.arange(t_len)[:, None] / 40 + np.arange(k))), 2)
    consecutive = rng.random(k) > 0.3

    def cost_block(a, b):
        return costs[a:b]

    got = viterbi(cost_block, t_len, consecutive, block)
    assert np.array_equal(got, _whole_viterbi(cost_block, t_len, consecutive, block))
    if t_len > 100:
        assert len(np.unique(np.diff(got))) > 2  # the path continues, holds and jumps


def test_unit_selection_memory_does_not_grow_with_length():
    """The Viterbi back-pointers (one byte per frame and bank unit: 40 MB for an hour's single shot with 360
    units) are spilled: what grows is the path (8 bytes a frame) and the costs' block."""
    from dubforge.lipsync.select import viterbi

    k, rng = 360, np.random.default_rng(5)
    table = rng.random((256, k))
    consecutive = rng.random(k) > 0.2

    def peak(t_len: int) -> int:
        tracemalloc.start()
        try:
            viterbi(lambda a, b: table[np.arange(a, b) % 256], t_len, consecutive)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    a, b = peak(1000), peak(5000)
    assert b - a < 40 * 4000, (a, b)  # the whole back-pointers: about 370 bytes a frame


@pytest.mark.parametrize("block", [7, 512])
def test_compact_arrays_are_the_tracks_and_cost_22_bytes_a_frame(tmp_path, block):
    from dubforge.lipsync.perframe import Poses, load_compact

    short, long = fake_track(tmp_path, 2048), fake_track(tmp_path, 6144, seed=1)
    whole = load_arrays(long, points=False)
    compact = load_compact(long)
    poses = Poses(long, block)
    for key in ("times", "valid", "occluded", "segment", "identity", "shot"):
        assert np.array_equal(compact[key], whole[key]), key
    assert np.array_equal(poses[0:6144], whole["pose"]) and np.array_equal(poses[700:1300], whole["pose"][700:1300])
    for i in (0, 6, 7, 511, 512, 6143, 3):
        assert np.array_equal(poses[i], whole["pose"][i])
    chosen = np.array([3, 4, 5, 900, 6000])
    assert np.array_equal(poses[chosen], whole["pose"][chosen])
    marks, by_rows = Landmarks(long, whole["pose"]), Landmarks(long, poses)
    assert np.array_equal(by_rows.descriptors(), marks.descriptors())

    def held(track: FaceTrack) -> int:
        load_compact(track)  # the pose's .npy copy made first: it streams, but is not what is measured
        tracemalloc.start()
        try:
            arrays = load_compact(track)
            size = tracemalloc.get_traced_memory()[0]
            del arrays
            return size
        finally:
            tracemalloc.stop()

    # times 8, flags 2, three int32 ids 12: 22 bytes a frame (load_arrays: 90, the pose alone 48).
    assert held(long) - held(short) < 26 * (6144 - 2048)
