"""The mouth bank: lower-face crops of chosen source frames, with their shapes and poses.

Built once per source video (and cached beside the face track), so every language reuses it.
Memory is bounded (MAX_UNITS crops, BUDGET_BYTES) whatever the clip length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dubforge.core.files import atomic_path, fingerprint
from dubforge.lipsync import geometry as g
from dubforge.lipsync.perframe import load_compact
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.track import Landmarks, runs
from dubforge.lipsync.video import frames, prefetched, yuv_planes

BANK_VERSION = 2
MAX_UNITS = 360
SEGMENT = 6  # frames per bank segment when a long clip has to be thinned (keeps consecutive runs)
BUDGET_BYTES = 96 << 20  # crops of huge faces (4K close-ups) keep fewer units, never more memory
PAD = 0.12  # canonical units around the mask/anchor extent


@dataclass
class Bank:
    """Crops are cut straight out of the decoded source planes (no resampling: the render resamples once).
    Crop pixel (0, 0) of unit k is source pixel origin[k]; chroma crops are the matching 4:2:0 samples."""

    luma: np.ndarray  # (K, h, w) uint8
    chroma: np.ndarray  # (K, h/2, w/2, 2) uint8 (U, V)
    frames: np.ndarray  # (K,) source frame index of each unit
    canon: np.ndarray  # (K, len(SUBSET), 2) canonical landmarks of each unit
    desc: np.ndarray  # (K, 3) shape descriptor
    pose: np.ndarray  # (K, 2, 3) source frame -> canonical similarity of each unit
    origin: np.ndarray  # (K, 2) even source pixel of each crop's (0, 0)

    def to_crop(self, k: int, canon_points: np.ndarray) -> np.ndarray:
        return g.apply(g.invert(self.pose[k]), canon_points) - self.origin[k]

    @property
    def consecutive(self) -> np.ndarray:
        """consecutive[k]: unit k shows the source frame right after unit k-1's."""
        out = np.zeros(len(self.frames), bool)
        out[1:] = np.diff(self.frames) == 1
        return out


_FIELDS = ("luma", "chroma", "frames", "canon", "desc", "pose", "origin")


def canonical(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return g.canonical(arrays["pose"], arrays["points"])


def load_or_build(video: Path, track: FaceTrack) -> Bank:
    path = Path(track.npz).with_name(
        f"mouth-bank-{fingerprint(Path(track.npz), BANK_VERSION, MAX_UNITS, BUDGET_BYTES, PAD)}.npz")
    if path.is_file():
        with np.load(path) as d:
            return Bank(*(d[k] for k in _FIELDS))
    bank = build(video, track)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **{k: getattr(bank, k) for k in _FIELDS})
    return bank


def crop_size(marks: Landmarks, pose: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Per-frame source-pixel centre of the region the mask and anchors reach, and one even crop size
    (w, h) that holds it in every usable frame."""
    region = g.sub(g.ANCHORS + g.LIPS)
    low, high = Extremes(int(valid.sum()) * len(region), 1.0), Extremes(int(valid.sum()) * len(region), 99.0)
    for a, _, canon in marks.windows():
        pts = canon[valid[a: a + len(canon)]][:, region].reshape(-1, 2)
        low.add(pts)
        high.add(pts)
    lo, hi = low.percentile() - PAD, high.percentile() + PAD
    corners = np.array([[lo[0], lo[1]], [hi[0], lo[1]], [lo[0], hi[1]], [hi[0], hi[1]]])
    centres = np.zeros((len(valid), 2))
    w = h = 8
    for t in np.flatnonzero(valid):
        px = g.apply(g.invert(pose[t]), corners)
        centres[t] = px.mean(0)
        w, h = max(w, int(np.ceil(np.ptp(px[:, 0])))), max(h, int(np.ceil(np.ptp(px[:, 1]))))
    return centres, w + 4 + w % 2, h + 4 + h % 2


class Extremes:
    """np.percentile(x, q, axis=0) of `count` rows given in parts, holding only the rows' smallest (q < 50) or
    largest values per column that the percentile can fall on (1% of the rows for q = 1 or 99), not all of
    them. Same interpolation as NumPy's default ("linear"), to the bit (tests/test_lipsync_memory.py)."""

    def __init__(self, count: int, q: float):
        self.count = count
        self.virtual = (count - 1) * np.true_divide(q, 100)  # NumPy's virtual index for "linear"
        self.below = min(max(int(np.floor(self.virtual)), 0), count - 1)
        self.above = min(self.below + 1, count - 1)
        self.lower = q < 50
        self.keep = self.above + 1 if self.lower else count - self.below  # values from the near end needed
        self.kept: np.ndarray | None = None

    def add(self, rows: np.ndarray) -> None:
        both = rows if self.kept is None else np.concatenate([self.kept, rows])
        if len(both) > self.keep:
            both = (np.partition(both, self.keep - 1, axis=0)[: self.keep] if self.lower
                    else np.partition(both, len(both) - self.keep, axis=0)[len(both) - self.keep:])
        self.kept = both

    def percentile(self) -> np.ndarray:
        if self.kept is None or not self.count:
            raise ValueError("percentile of no values")
        ordered = np.sort(self.kept, axis=0)
        first = 0 if self.lower else self.count - len(ordered)  # rank of ordered[0] among all the values
        a, b = ordered[self.below - first], ordered[self.above - first]
        if self.below == self.above:  # at either end: NumPy takes that value
            return a
        gamma = self.virtual - self.below
        diff = b - a
        return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def build(video: Path, track: FaceTrack) -> Bank:
    arrays = load_compact(track)
    valid, pose = arrays["valid"], arrays["pose"]
    marks = Landmarks(track, pose)
    desc = marks.descriptors()
    centres, w, h = crop_size(marks, pose, valid)
    units = int(max(SEGMENT, min(MAX_UNITS, BUDGET_BYTES // (w * h * 3 // 2))))
    chosen = choose_units(desc, valid, units)
    luma = np.zeros((len(chosen), h, w), np.uint8)
    chroma = np.zeros((len(chosen), h // 2, w // 2, 2), np.uint8)
    origin = np.zeros((len(chosen), 2), np.int64)
    slot = {int(f): k for k, f in enumerate(chosen)}
    for index, frame in enumerate(prefetched(frames(video))):
        if index > chosen[-1]:
            break
        k = slot.get(index)
        if k is None:
            continue
        _, y, u, v = yuv_planes(frame)
        x0, y0 = (np.round(centres[index] - [w / 2, h / 2]).astype(int) // 2 * 2).tolist()
        origin[k] = (x0, y0)
        luma[k] = _cut(y, x0, y0, w, h)
        chroma[k, ..., 1] = _cut(v, x0 // 2, y0 // 2, w // 2, h // 2)
        chroma[k, ..., 0] = _cut(u, x0 // 2, y0 // 2, w // 2, h // 2)
    canon = np.stack([marks.canon(int(f)) for f in chosen]).astype(np.float32)
    return Bank(luma, chroma, chosen, canon, desc[chosen], pose[chosen], origin)


def _cut(plane: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """plane[y0:y0+h, x0:x0+w], edge pixels repeated where the window leaves the frame."""
    rows = np.clip(np.arange(y0, y0 + h), 0, plane.shape[0] - 1)
    cols = np.clip(np.arange(x0, x0 + w), 0, plane.shape[1] - 1)
    return plane[np.ix_(rows, cols)]


def choose_units(desc: np.ndarray, valid: np.ndarray, max_units: int = MAX_UNITS) -> np.ndarray:
    """Source frames for the bank: all usable frames if few; otherwise runs of SEGMENT frames spread
    over the shape space (farthest-point sampling), so rare shapes (closures, wide opens) survive."""
    usable = np.flatnonzero(valid)
    if len(usable) <= max_units:
        return usable
    starts = [s for a, b in runs(valid) for s in range(a, b - SEGMENT + 1, SEGMENT)]
    feats = np.array([desc[s:s + SEGMENT].mean(0) for s in starts])
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    picked = [int(np.argmin(feats[:, 0]))]
    dist = np.linalg.norm(feats - feats[picked[0]], axis=1)
    for _ in range(min(max_units // SEGMENT, len(starts)) - 1):
        nxt = int(np.argmax(dist))
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(feats - feats[nxt], axis=1))
    return np.array(sorted(f for p in picked for f in range(starts[p], starts[p] + SEGMENT)))
