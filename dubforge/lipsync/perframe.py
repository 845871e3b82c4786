"""The face track's per-frame arrays as the render, the mouth bank and the scorecard hold them: flat in length.

`load_arrays` gives every array of the track's npz whole, at NumPy's default widths: about 90 bytes a frame (times,
pts, flags, ids as int64, the pose as six float64). Here the pose (48 bytes a frame) is read a window at a time from
an uncompressed copy beside the npz (`Poses`, like the landmarks), the ids are int32 (their values, so every
comparison, unchanged), `pts` is left out (none of them uses it): 22 bytes a frame stay, 2.4 MB for an hour at 30 fps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.rows import BLOCK, Rows, spill

IDS = ("segment", "identity", "shot")


class Poses:
    """The track's poses (T, 2, 3) read by windows: `poses[i]` (one frame), `poses[a:b]` (a window, as Landmarks
    takes it) and `poses[indices]` (sorted frame indices); values are the npz's to the bit."""

    def __init__(self, track: FaceTrack, block: int = BLOCK):
        npz = Path(track.npz)
        self.rows = Rows(spill(npz, "pose", npz.with_name(npz.stem + ".pose.npy")), block)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            a, b, step = key.indices(len(self))
            if step != 1:
                raise IndexError("poses are read by windows (step 1)")
            return self.rows.window(a, b)
        if isinstance(key, np.ndarray):
            return np.stack([self.rows.row(int(i)) for i in key]) if len(key) else np.zeros((0, 2, 3))
        return self.rows.row(int(key))


def load_compact(track: FaceTrack) -> dict:
    """times (float64), valid and occluded (bool), segment, identity and shot (int32) whole; "pose" as `Poses`.
    A track without segments (a portrait's) has one, as in `load_arrays`."""
    with np.load(track.npz) as data:
        arrays: dict = {k: data[k] for k in ("times", "valid", "occluded") if k in data.files}
        for key in IDS:
            if key in data.files:
                ids = data[key]
                if len(ids) and not (-(1 << 31) <= ids.min() and ids.max() < 1 << 31):
                    raise ValueError(f"{track.npz}: {key} ids beyond int32")
                arrays[key] = ids.astype(np.int32)
    n = len(arrays["times"])
    if "segment" not in arrays:
        arrays["segment"] = np.where(arrays["valid"], 0, -1).astype(np.int32)
        arrays["identity"] = arrays["segment"].copy()
    arrays.setdefault("shot", np.zeros(n, np.int32))
    arrays.setdefault("occluded", np.zeros(n, bool))
    arrays["pose"] = Poses(track)
    return arrays
