"""The mouth bank: pose-normalised lower-face crops of chosen source frames, with their shapes.

Built once per source video (and cached beside the face track), so every language reuses it.
Memory is bounded by MAX_UNITS crops whatever the clip length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dubforge.files import atomic_path, fingerprint
from dubforge.lipsync import geometry as g
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.track import load_arrays, runs
from dubforge.lipsync.video import frames, yuv_planes

BANK_VERSION = 1
MAX_UNITS = 360
SEGMENT = 6  # frames per bank segment when a long clip has to be thinned (keeps consecutive runs)
MAX_SCALE = 256.0  # crop pixels per inter-ocular distance


@dataclass
class Bank:
    crops: np.ndarray  # (K, h, w, 3) uint8 YUV 4:4:4 in the canonical crop frame
    frames: np.ndarray  # (K,) source frame index of each unit
    canon: np.ndarray  # (K, len(SUBSET), 2) canonical landmarks of each unit
    desc: np.ndarray  # (K, 3) shape descriptor
    origin: np.ndarray  # canonical coordinates of crop pixel (0, 0)
    scale: float  # crop pixels per canonical unit

    def to_crop(self, canon_points: np.ndarray) -> np.ndarray:
        return (canon_points - self.origin) * self.scale

    @property
    def consecutive(self) -> np.ndarray:
        """consecutive[k]: unit k shows the source frame right after unit k-1's."""
        out = np.zeros(len(self.frames), bool)
        out[1:] = np.diff(self.frames) == 1
        return out


def canonical(arrays: dict[str, np.ndarray]) -> np.ndarray:
    pose, points = arrays["pose"], np.nan_to_num(arrays["points"])
    return np.einsum("tij,tkj->tki", pose[:, :, :2], points) + pose[:, None, :, 2]


def load_or_build(video: Path, track: FaceTrack) -> Bank:
    path = Path(track.npz).with_name(f"mouth-bank-{fingerprint(Path(track.npz), BANK_VERSION, MAX_UNITS, MAX_SCALE)}.npz")
    if path.is_file():
        with np.load(path) as d:
            return Bank(d["crops"], d["frames"], d["canon"], d["desc"], d["origin"], float(d["scale"]))
    bank = build(video, track)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, crops=bank.crops, frames=bank.frames, canon=bank.canon, desc=bank.desc,
                     origin=bank.origin, scale=np.float64(bank.scale))
    return bank


def build(video: Path, track: FaceTrack) -> Bank:
    import cv2

    arrays = load_arrays(track)
    valid = arrays["valid"]
    canon = canonical(arrays)
    desc = g.descriptor(canon)
    chosen = choose_units(desc, valid)
    # Crop extent: everything the lower-face mask and warp anchors reach, over the whole clip.
    pts = canon[valid][:, g.sub(g.ANCHORS + g.LIPS)].reshape(-1, 2)
    lo, hi = np.percentile(pts, 1, axis=0) - 0.12, np.percentile(pts, 99, axis=0) + 0.12
    iod_px = 1.0 / np.hypot(arrays["pose"][valid, 0, 0], arrays["pose"][valid, 1, 0])
    scale = float(min(np.median(iod_px), MAX_SCALE))
    w, h = (np.ceil((hi - lo) * scale).astype(int) + 1).tolist()
    crops = np.zeros((len(chosen), h, w, 3), np.uint8)
    slot = {int(f): k for k, f in enumerate(chosen)}
    to_crop = np.array([[scale, 0, -lo[0] * scale], [0, scale, -lo[1] * scale], [0, 0, 1]])
    for index, frame in enumerate(frames(video)):
        if index > chosen[-1]:
            break
        k = slot.get(index)
        if k is None:
            continue
        _, y, u, v = yuv_planes(frame)
        m = to_crop @ np.vstack([arrays["pose"][index], [0, 0, 1]])
        chroma = m @ np.array([[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]])  # chroma pixel -> luma position
        for c, (plane, mat) in enumerate(((y, m), (u, chroma), (v, chroma))):
            crops[k, :, :, c] = cv2.warpAffine(plane, mat[:2], (w, h), flags=cv2.INTER_CUBIC,
                                               borderMode=cv2.BORDER_REPLICATE)
    return Bank(crops, chosen, canon[chosen].astype(np.float32), desc[chosen], lo, scale)


def choose_units(desc: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Source frames for the bank: all usable frames if few; otherwise runs of SEGMENT frames spread
    over the shape space (farthest-point sampling), so rare shapes (closures, wide opens) survive."""
    usable = np.flatnonzero(valid)
    if len(usable) <= MAX_UNITS:
        return usable
    starts = [s for a, b in runs(valid) for s in range(a, b - SEGMENT + 1, SEGMENT)]
    feats = np.array([desc[s:s + SEGMENT].mean(0) for s in starts])
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-9)
    picked = [int(np.argmin(feats[:, 0]))]
    dist = np.linalg.norm(feats - feats[picked[0]], axis=1)
    for _ in range(min(MAX_UNITS // SEGMENT, len(starts)) - 1):
        nxt = int(np.argmax(dist))
        picked.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(feats - feats[nxt], axis=1))
    return np.array(sorted(f for p in picked for f in range(starts[p], starts[p] + SEGMENT)))
