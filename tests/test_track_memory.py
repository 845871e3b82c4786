"""Face tracking flat in source length: the detections are spilled to row files while tracking, and the medians,
smoothing, poses and the npz are computed from them a window at a time, giving the whole arrays' results to the bit.

A synthetic video (drawn faces, a stand-in for the face mesh that returns their landmarks) goes through the real
`track_face`: decoding, cuts, signatures, mouth colours, association, relinking, occlusion, speaker choice."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pytest

import dubforge.lipsync.track as track
from dubforge.lipsync import geometry as g
from dubforge.lipsync.rows import Rows, exact_median, row_appender, write_npz
from dubforge.media.audio import write_wav

S = len(g.SUBSET)
W, H, FPS = 320, 240, 25.0


def _face(rng: np.random.Generator, cx: float, cy: float) -> np.ndarray:
    """Face-like landmarks about 120 px wide: eyes, cheeks, nose and mouth where face mesh puts them."""
    pts = rng.uniform(-45, 45, (S, 2)) + [cx, cy]
    at = {33: (-30, -25), 263: (30, -25), 234: (-60, 0), 454: (60, 0), 1: (0, 0), 61: (-22, 30), 291: (22, 30)}
    for index, (x, y) in at.items():
        pts[g.sub(index)[0]] = (cx + x, cy + y)
    for contour, y, half in ((g.UPPER_OUTER, 26, 22), (g.LOWER_OUTER, 36, 18), (g.UPPER_INNER, 30, 18),
                             (g.LOWER_INNER, 32, 16)):
        pts[g.sub(contour)] = np.stack([cx + np.linspace(-half, half, len(contour)), np.full(len(contour), cy + y)], 1)
    return pts.astype(np.float32)


class _Scene:
    """`n` frames of `faces` faces; face k's mouth opens with openings[k], drawn red on skin; the first face's mouth
    is covered by a grey bar during `covered`, it leaves the picture during `away`; a hard cut at `cut`."""

    def __init__(self, n: int, faces: int = 1, seed: int = 0, covered=(40, 60), away=(100, 125), cut=None):
        rng = np.random.default_rng(seed)
        self.n, self.cut, self.covered, self.away = n, cut, covered, away
        self.bases = [_face(rng, 90 + 140 * k, 120) for k in range(faces)]
        self.openings = rng.uniform(0, 12, (faces, n))
        self.jitter = rng.normal(0, 0.4, (n, faces, 1, 2)).astype(np.float32)

    def landmarks(self, i: int) -> list[np.ndarray]:
        out = []
        for k, base in enumerate(self.bases):
            if k == 0 and self.away[0] <= i < self.away[1]:
                continue
            pts = base + self.jitter[i, k]
            if self.cut is not None and i >= self.cut:
                pts = pts * 1.2 - [20, 20]  # a closer framing
            pts[g.sub(g.LOWER_LIP)] += [0, self.openings[k, i]]  # (the corners stay)
            out.append(pts.astype(np.float32))
        return out

    def picture(self, i: int) -> np.ndarray:
        after_cut = self.cut is not None and i >= self.cut
        rgb = np.full((H, W, 3), (230, 230, 230) if after_cut else (20, 20, 20), np.uint8)
        for k, pts in enumerate(self.landmarks(i)):
            x0, y0 = np.clip(pts.min(0).astype(int), 0, [W, H])
            x1, y1 = np.clip(pts.max(0).astype(int), 0, [W, H])
            rgb[y0:y1, x0:x1] = (200, 150, 120)  # skin
            lips = pts[g.sub(g.LIPS)]
            lx0, ly0 = lips.min(0).astype(int)
            lx1, ly1 = lips.max(0).astype(int) + 1
            rgb[ly0:ly1, lx0:lx1] = (190, 60, 70)  # lips
            if k == 0 and self.covered[0] <= i < self.covered[1]:
                rgb[ly0 - 8:ly1 + 8, lx0 - 8:lx1 + 8] = 128
        return rgb

    def install(self, monkeypatch) -> None:
        scene = self

        class Mesh:  # the face mesh: the landmarks of the frame being decoded (upright pixels)
            def __init__(self, *_):
                pass

            def __call__(self, rgb):
                return scene.landmarks(scene.current)

            def close(self):
                pass

        def frames(_):
            for i in range(scene.n):
                scene.current = i
                yield SimpleNamespace(pts=i * 40, time_base=0.001, rotation=0), scene.picture(i)

        monkeypatch.setattr(track, "probe", lambda _: SimpleNamespace(fps=FPS, width=W, height=H))
        monkeypatch.setattr(track, "rgb_frames", frames)
        monkeypatch.setattr(track, "FaceMesh", Mesh)

    def speech(self, path, follow: list[int]) -> object:
        """A buzz whose loudness follows face follow[k]'s mouth in the k-th part of the clip."""
        rate = 16000
        t = np.arange(int(self.n / FPS * rate)) / rate
        frame = np.minimum((t * FPS).astype(int), self.n - 1)
        part = frame * len(follow) // self.n
        level = self.openings[np.asarray(follow)[part], frame] / 12
        write_wav(path, (np.sin(2 * np.pi * 150 * t) * level * 0.3).astype(np.float32)[:, None], rate)
        return path


def _arrays(result) -> dict[str, np.ndarray]:
    with np.load(result.npz) as data:
        return {k: data[k] for k in data.files}


def _run(tmp_path, monkeypatch, scene: _Scene, name: str, window: int | None = None, speech=None, lines=()):
    if window:
        monkeypatch.setattr(track, "WINDOW", window)
    video = tmp_path / "video.mp4"
    video.write_bytes(b"a synthetic video: the decoder and the face mesh are stand-ins")
    return track.track_face(video, tmp_path / name, speech, lines)


def test_streamed_track_equals_the_whole_array_track(tmp_path, monkeypatch):
    """Windows of 7 frames (medians by radix selection, smoothing and poses window by window) against one window
    holding everything (np.median of the stacked rows, each segment smoothed whole: the old code's computation):
    byte-identical arrays and record, with two faces taking turns, a cut, an occluded mouth and a face leaving."""
    scene = _Scene(250, faces=2, covered=(100, 120), away=(140, 155), cut=200)
    scene.install(monkeypatch)
    speech = scene.speech(tmp_path / "speech.wav", [1, 0, 1])
    lines = [(0.0, 3.3, "A"), (3.3, 6.6, "B"), (6.6, 10.0, "A")]
    runs = {}
    for window in (7, 10**6):
        for with_lines in (False, True):
            got = _run(tmp_path, monkeypatch, scene, f"w{window}-{with_lines}", window, speech,
                       lines if with_lines else ())
            runs[window, with_lines] = got, _arrays(got)
    for with_lines in (False, True):
        (small, a), (whole, b) = runs[7, with_lines], runs[10**6, with_lines]
        assert list(a) == list(b) == ["times", "pts", "valid", "points", "pose", "identity", "segment", "shot",
                                      "occluded"]
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
        assert small.model_dump(exclude={"npz"}) == whole.model_dump(exclude={"npz"})
        # The landmarks' copy that Landmarks reads is the npz's.
        marks = np.load(small.npz.with_name(small.npz.stem + ".points.npy"))
        assert marks.tobytes() == a["points"].tobytes()
    # What the scene holds was found: both faces, the cut, the covered mouth, the face leaving, both speakers.
    got, arrays = runs[7, False]
    assert got.faces_seen == 2 and got.shots == 2 and sorted(got.speakers) == [0, 1], got.reason
    assert arrays["occluded"][102:118].all()  # (the drawn mouth's edges flicker: other frames are flagged too)
    assert "script speakers: A = face" in runs[7, True][0].reason
    assert not list((tmp_path / "w7-False").glob(".face-track-*"))  # the spilled detections are gone


def _peak(tmp_path, monkeypatch, n: int) -> int:
    scene = _Scene(n, faces=1, covered=(40, 60), away=(100, 125))
    scene.install(monkeypatch)
    # Windows of 64 frames: both lengths work window by window (the medians by radix selection), as an hour does.
    monkeypatch.setattr(track, "WINDOW", 64, raising=False)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        _run(tmp_path, monkeypatch, scene, f"n{n}")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_what_tracking_holds_does_not_grow_with_length(tmp_path, monkeypatch):
    """Python-heap peak (tracemalloc) of tracking 600 frames against 1800. The detections (landmarks, signature,
    mouth colours: about 2.3 KB a frame as small arrays) were held in lists until the end, then whole per-person
    arrays (about 1.4 KB a frame); now only per-frame scalars grow (times, pts, flags, ids, the person's opening
    and width: about 100 bytes a frame)."""
    short, long = _peak(tmp_path, monkeypatch, 600), _peak(tmp_path, monkeypatch, 1800)
    per_frame = (long - short) / 1200
    print(f"tracking peak: {short} bytes for 600 frames, {long} for 1800: {per_frame:.0f} bytes a frame")
    assert per_frame < 400, (short, long, per_frame)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_median_is_numpys(dtype):
    rng = np.random.default_rng(7)
    for n in (1, 2, 3, 4, 50, 51, 999):
        for kind in ("normal", "ties", "special"):
            x = rng.normal(size=(n, 5, 2)) * 100
            if kind == "ties":
                x = np.round(x / 80) * 80  # many equal values, zeros among them
            if kind == "special":
                x[rng.random(x.shape) < 0.02] = np.nan
                x[0, 0] = (-np.inf, np.inf)
            x = x.astype(dtype)
            want = np.median(x, axis=0)
            for whole in (0, 10**6):  # radix selection, and the stacked rows handed to NumPy
                got = exact_median(lambda: (x[a: a + 13] for a in range(0, n, 13)), n, whole)
                assert got.dtype == want.dtype and np.array_equal(got, want, equal_nan=True), (n, kind, whole)
                # To the bit (but for the sign of a zero).
                nonzero = want != 0
                assert np.array_equal(got[nonzero].view(f"u{x.itemsize}"), want[nonzero].view(f"u{x.itemsize}"))


def test_row_appender_take_and_npz_by_rows(tmp_path):
    data = np.random.default_rng(1).normal(size=(1234, 3, 2)).astype(np.float32)
    with row_appender(tmp_path / "a.npy", (3, 2), np.float32) as append:
        assert [append(row) for row in data[:3]] == [0, 1, 2]
        for row in data[3:]:
            append(row)
    assert np.array_equal(np.load(tmp_path / "a.npy"), data)
    rows = Rows(tmp_path / "a.npy", block=100)
    index = np.array([0, 1, 99, 100, 101, 550, 1000, 1233])
    assert np.array_equal(np.concatenate(list(rows.take(index))), data[index])
    assert all(len(w) <= 100 for w in rows.take(np.arange(1234)))
    arrays = {"a": np.arange(5), "b": (data.shape, np.float32, (w for _, w in rows.windows())), "c": np.ones((2, 2))}
    write_npz(tmp_path / "x.npz", arrays)
    with np.load(tmp_path / "x.npz") as got:
        assert got.files == ["a", "b", "c"]
        assert np.array_equal(got["b"], data) and np.array_equal(got["a"], np.arange(5))
    with pytest.raises(ValueError, match="b: 1233 rows written, 1234 expected"):
        write_npz(tmp_path / "y.npz", {"b": (data.shape, np.float32, iter([data[:-1]]))})
    assert not (tmp_path / "y.npz").exists()
