"""Face tracking once per source video: landmarks, smoothing, pose; the speaking face is chosen."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from dubforge.core.files import (
    atomic_path,
    fingerprint,
    sha256_file,
    write_json_atomic,
)
from dubforge.lipsync import geometry as g
from dubforge.lipsync.detect import FaceMesh
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.video import frame_time, frames, probe
from dubforge.media.audio import read_wav

TRACK_VERSION = 2  # 2: eyelid landmarks stored
MAX_FACES = 3
MIN_FACE_PX = 40.0  # narrower faces are passed through: too small to render a mouth into
LIP_SIGMA, FACE_SIGMA, POSE_SIGMA = 0.6, 1.0, 1.5  # temporal smoothing, in frames


def track_face(video: Path, work_dir: Path, speech_wav: Path | None = None) -> FaceTrack:
    video = Path(video)
    info = probe(video)
    video_sha = sha256_file(video)
    key = fingerprint(video_sha, TRACK_VERSION, speech_wav if speech_wav else None)
    json_path = Path(work_dir) / f"face-track-{key}.json"
    if json_path.is_file():
        cached = FaceTrack.model_validate_json(json_path.read_text())
        if cached.npz.is_file():
            return cached

    times: list[float] = []
    pts: list[int] = []
    detections: list[tuple[int, int, np.ndarray]] = []  # (frame, face id, points)
    last: dict[int, tuple[int, np.ndarray]] = {}  # face id -> (frame, centre)
    next_id = 0
    with FaceMesh(MAX_FACES) as mesh:
        for index, frame in enumerate(frames(video)):
            times.append(frame_time(frame, index, info))
            pts.append(frame.pts if frame.pts is not None else -1)
            for points in mesh(frame.to_ndarray(format="rgb24")):
                centre, size = points.mean(0), np.ptp(points[:, 0])
                best, best_d = None, 0.5 * size
                for face_id, (seen, c) in last.items():
                    d = float(np.linalg.norm(c - centre))
                    if seen < index and index - seen <= 15 and d < best_d:
                        best, best_d = face_id, d
                if best is None:
                    best, next_id = next_id, next_id + 1
                last[best] = (index, centre)
                detections.append((index, best, points))

    n = len(times)
    face_ids = sorted({d[1] for d in detections})
    curves = {f: _face_arrays(detections, f, n) for f in face_ids}
    envelope = _speech_envelope(speech_wav, np.asarray(times)) if speech_wav else None
    face_id, reason, audio_corr = _choose(curves, envelope)

    points = np.full((n, len(g.SUBSET), 2), np.nan, np.float32)
    valid = np.zeros(n, bool)
    if face_id is not None:
        points, present = curves[face_id]
        valid = present & np.array([_usable(p) if ok else False for p, ok in zip(points, present)])
    points = _smooth(points, valid)
    pose, template = g.poses(np.nan_to_num(points), valid)
    pose = _smooth_pose(pose, valid)

    npz_path = json_path.with_suffix(".npz")
    with atomic_path(npz_path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, times=np.asarray(times), pts=np.asarray(pts, np.int64), valid=valid,
                                points=points.astype(np.float32), pose=pose, template=template)
    track = FaceTrack(
        npz=npz_path, video_sha256=video_sha, frame_count=n, fps=info.fps, width=info.width,
        height=info.height, frames_with_face=int(valid.sum()), face_id=face_id if valid.any() else None,
        reason=reason if valid.any() or face_id is None else f"{reason}; but never usable (too small or turned away)",
        faces_seen=len(face_ids), audio_correlation=audio_corr,
    )
    write_json_atomic(json_path, json.loads(track.model_dump_json()))
    return track


def load_arrays(track: FaceTrack) -> dict[str, np.ndarray]:
    with np.load(track.npz) as data:
        return {k: data[k] for k in data.files}


def _face_arrays(detections, face_id: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    points = np.full((n, len(g.SUBSET), 2), np.nan, np.float32)
    present = np.zeros(n, bool)
    for index, fid, p in detections:
        if fid == face_id:
            points[index], present[index] = p, True
    return points, present


def _usable(points: np.ndarray) -> bool:
    width = float(np.ptp(points[g.sub(g.FACE_OVAL), 0]))
    return width >= MIN_FACE_PX and 0.33 <= g.yaw_ratio(points) <= 3.0


def _choose(curves, envelope) -> tuple[int | None, str, float | None]:
    if not curves:
        return None, "no face detected in any frame", None
    present = {f: int(c[1].sum()) for f, c in curves.items()}
    if envelope is not None:
        corr = {f: _masked_corr(g.opening(np.nan_to_num(c[0])), envelope, c[1]) for f, c in curves.items()}
    if len(curves) == 1:
        (face_id,) = curves
        return face_id, "the only face", corr[face_id] if envelope is not None else None
    # Ignore faces seen only briefly (false detections, people passing by).
    candidates = [f for f in curves if present[f] >= 0.25 * max(present.values())]
    if envelope is not None and len(candidates) > 1:
        face_id = max(candidates, key=lambda f: corr[f])
        others = ", ".join(f"face {f}: {corr[f]:.2f}" for f in candidates if f != face_id)
        return face_id, (f"{len(curves)} faces; face {face_id} mouth opening correlates best with the source "
                         f"speech ({corr[face_id]:.2f}; {others})"), corr[face_id]
    sizes = {f: float(np.nanmedian(np.ptp(c[0][c[1]][:, :, 0], axis=1))) for f, c in curves.items()}
    face_id = max(candidates, key=lambda f: (present[f], sizes[f]))
    return face_id, (f"{len(curves)} faces and no source speech to compare with; face {face_id} is on screen "
                     f"longest ({present[face_id]} frames)"), corr[face_id] if envelope is not None else None


def _speech_envelope(wav: Path, times: np.ndarray) -> np.ndarray:

    data, rate = read_wav(wav)
    mono = data.mean(axis=1) if data.ndim > 1 else data
    half = int(0.02 * rate)
    out = np.zeros(len(times))
    for i, t in enumerate(times):
        c = int(t * rate)
        seg = mono[max(c - half, 0): c + half]
        out[i] = float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0
    return np.log(out + 1e-4)


def _masked_corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 5 or np.std(a[mask]) < 1e-9 or np.std(b[mask]) < 1e-9:
        return 0.0
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    edges = np.diff(np.concatenate([[0], valid.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _smooth(points: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Zero-phase Gaussian smoothing along time within each run of usable frames (lips lighter)."""

    out = points.copy()
    lips = np.zeros(points.shape[1], bool)
    lips[g.sub(g.LIPS)] = True
    for a, b in runs(valid):
        if b - a < 3:
            continue
        out[a:b, lips] = gaussian_filter1d(points[a:b, lips], LIP_SIGMA, axis=0, mode="nearest")
        out[a:b, ~lips] = gaussian_filter1d(points[a:b, ~lips], FACE_SIGMA, axis=0, mode="nearest")
    return out


def _smooth_pose(pose: np.ndarray, valid: np.ndarray) -> np.ndarray:

    out = pose.copy()
    for a, b in runs(valid):
        if b - a >= 3:
            out[a:b] = gaussian_filter1d(pose[a:b], POSE_SIGMA, axis=0, mode="nearest")
    return out
