"""The automatic lip-sync scorecard, independent of the renderer (definitions in docs/lipsync.md).

What it does not share with the renderer:
- landmarks come from the face mesh in static-image mode, detected afresh on every frame (no tracking, no
  smoothing), on the source and on the rendered output alike;
- the reference mouth opening comes from its own phone-class table (`lipsync/phoneclass.py`), not from the
  renderer's visemes;
- sharpness is measured over the whole lower face (jaw line to nose), not the box the renderer sharpens;
- whether a frame was re-rendered is read from the pixels (the output's mouth differs from the source's by
  more than re-encoding does), not from the renderer's record.

Every measure counts the frames where the dub speaks and the source shows a detectable face (`frames_scored`):
a frame passed through unrendered is a miss for `coverage`, keeps the source's mouth for closure and
correlation, and a frame whose output has no detectable face is a miss for both.

Cost: a static face-mesh pass over the source frames the dub speaks over (cached beside the face track: every
language reuses them and adds what it needs) and over the output's. PSNR outside the render mask is the whole-frame
error minus the error inside the dilated mask, so no full-frame mask is ever built."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from dubforge.core.contracts import Phoneme
from dubforge.core.files import atomic_path, fingerprint
from dubforge.lipsync import geometry as g
from dubforge.lipsync.compose import mask_polygon
from dubforge.lipsync.detect import FaceMesh
from dubforge.lipsync.perframe import load_compact
from dubforge.lipsync.phoneclass import bilabials, openness, speaking
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.rows import Rows, row_writer
from dubforge.lipsync.track import MAX_FACES, Landmarks
from dubforge.lipsync.video import rgb_frames, rotation, upright, upright_to_stored

CLOSED = 0.10  # inner-lip gap below this share of the mouth width counts as closed
MAX_LAG = 5
DILATE_PX = 8  # the render mask grows by this before "outside" is compared (encoder blocks bleed)
RING_PX = 2
RENDERED_DIFF = 4.0  # mean |luma| difference in the mouth box (0..255) above which a frame was re-rendered
SCORE_VERSION = 5
LOWER_FACE = g.sub([132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361,
                    2, 98, 327])


def score(rendered: Path, source: Path, track: FaceTrack, dub_phonemes: Sequence[Phoneme],
          per_frame: dict | None = None) -> dict:
    """The scorecard (JSON-ready). `per_frame`, when given, receives the boolean arrays `scored` and
    `covered` (which frames counted, which of those were re-rendered)."""

    arrays = load_compact(track)  # the pose and the landmarks: a window at a time, memory flat in length
    times, valid = arrays["times"], arrays["valid"]
    marks = Landmarks(track, arrays["pose"])
    n = len(times)
    speak = speaking(dub_phonemes, times)
    cache = _source_cache(track, Path(source))
    old_faces, src_done = _load_source(cache, n)
    detect_src = bool((speak & ~src_done).any())
    # The face centres (16 bytes a frame) live only while the anchors are made.
    anchor = _anchors(np.concatenate([points.mean(1) for _, points, _ in marks.windows()] or [np.zeros((0, 2))]),
                      valid, arrays["shot"])
    nothing = np.full((len(g.SUBSET), 2), np.nan, np.float32)
    src_open, out_open = np.full(n, np.nan), np.full(n, np.nan)
    face_ok, redone = np.zeros(n, bool), np.zeros(n, bool)
    sq_err, sq_count = 0.0, 0
    seam_out = seam_src = sharp_out = sharp_src = 0.0
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * DILATE_PX + 1, 2 * DILATE_PX + 1))
    ring_k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_PX + 1, 2 * RING_PX + 1))
    # The source's detections are read from the cache and, when this dub needs frames it lacks, written to its
    # new version row by row (memory: one window either way).
    written = 0
    with FaceMesh(MAX_FACES, static=True) as mesh, _source_writer(cache, n, detect_src) as write:
        for i, ((fo, out), (fs, src)) in enumerate(zip(rgb_frames(rendered), rgb_frames(source))):
            if i >= n:
                break
            src_face = old_faces.row(i) if old_faces is not None else nothing
            if speak[i] and not src_done[i]:
                found = _detect(mesh, src, rotation(fs))
                picked = _pick(np.stack(found), anchor[i]) if found else None
                if picked is not None:
                    src_face = picked.astype(np.float32)
                src_done[i] = True
            write(src_face)
            written += 1
            frame_err, frame_px = float(cv2.norm(out, src, cv2.NORM_L2SQR)), out.shape[0] * out.shape[1]
            face = src_face if np.isfinite(src_face).all() else None
            if speak[i] and face is not None:
                face_ok[i] = True
                src_open[i] = float(g.opening(face))
                mine = _pick(np.stack(_detect(mesh, out, rotation(fo)) or [np.full_like(face, np.nan)]),
                             face.mean(0), limit=0.5 * _width(face))
                out_open[i] = float(g.opening(mine)) if mine is not None else np.nan
                lips = face[g.sub(g.LIPS)]
                mx0, my0, mx1, my1 = _box(lips, out.shape, int(0.15 * _width(lips)))
                gray_o = cv2.cvtColor(out[my0:my1, mx0:mx1], cv2.COLOR_RGB2GRAY).astype(np.float32)
                gray_s = cv2.cvtColor(src[my0:my1, mx0:mx1], cv2.COLOR_RGB2GRAY).astype(np.float32)
                redone[i] = gray_o.size > 0 and float(np.mean(np.abs(gray_o - gray_s))) > RENDERED_DIFF
                lx0, ly0, lx1, ly1 = _box(face[LOWER_FACE], out.shape, 0)
                sharp_out += _laplacian_var(out[ly0:ly1, lx0:lx1])
                sharp_src += _laplacian_var(src[ly0:ly1, lx0:lx1])
            if valid[i]:
                poly = g.apply(g.invert(arrays["pose"][i]), mask_polygon(marks.canon(i)))
                x0, y0, x1, y1 = _box(poly, out.shape, DILATE_PX + 4 * RING_PX + 2)
                mask: np.ndarray = np.zeros((y1 - y0, x1 - x0), np.uint8)
                cv2.fillPoly(mask, [np.round(poly - [x0, y0]).astype(np.int32)], 1)
                band = (cv2.dilate(mask, ring_k) - cv2.erode(mask, ring_k)).astype(bool)
                go, gs = (_gradient(im[y0:y1, x0:x1]) for im in (out, src))
                seam_out, seam_src = seam_out + go[band].mean(), seam_src + gs[band].mean()
                mask = cv2.dilate(mask, grow)
                frame_err -= float(cv2.norm(out[y0:y1, x0:x1], src[y0:y1, x0:x1], cv2.NORM_L2SQR, mask))
                frame_px -= int(cv2.countNonZero(mask))
            sq_err += frame_err
            sq_count += 3 * frame_px
        for k in range(written, n):  # frames the videos lack: the cache keeps what it had
            write(old_faces.row(k) if old_faces is not None else nothing)
    if detect_src:
        _save_done(cache, src_done)
    rendered_n = int(valid.sum())
    scored = face_ok
    # A frame whose output lost the face is a miss: it gets the least helpful value, the median.
    curve = np.where(np.isnan(out_open), np.nanmedian(out_open) if np.isfinite(out_open).any() else 0.0, out_open)
    ref = openness(dub_phonemes, times)
    lag, corr_any = best_lag(curve, ref, scored, MAX_LAG)
    near = best_lag(curve, ref, scored, 1)[1]
    both = scored & redone
    if per_frame is not None:
        per_frame.update(scored=scored, covered=both)
    return {
        "coverage": float(both.sum() / scored.sum()) if scored.any() else None,
        "frames_scored": int(scored.sum()),
        "frames_covered": int(both.sum()),
        "closure": closure(out_open, times, dub_phonemes, scored),
        "lag_frames": lag, "correlation": near, "correlation_any_lag": corr_any,
        "preservation_db": _psnr(sq_err, sq_count),
        "seam_ratio": float(seam_out / seam_src) if seam_src > 0 else None,
        "range_ratio": (float(np.nanpercentile(out_open[both], 95) / max(np.nanpercentile(src_open[both], 95), 1e-6))
                        if np.isfinite(out_open[both]).sum() >= 5 else None),
        "sharpness_ratio": float(sharp_out / sharp_src) if sharp_src > 0 else None,
        "frames_rendered": rendered_n, "frames_passed_through": n - rendered_n,
    }


def closure(opening: np.ndarray, times: np.ndarray, phonemes: Sequence[Phoneme], scored: np.ndarray) -> float | None:
    """Share of the dub's bilabials (at scored frames) at whose centre frame (+-1) the output mouth is
    closed; no detectable mouth there is a miss. None without any."""

    hits = total = 0
    for t in bilabials(phonemes):
        c = int(np.argmin(np.abs(times - t)))
        if not scored[c]:
            continue
        total += 1
        near = opening[max(c - 1, 0): c + 2]
        hits += bool(np.nanmin(near) < CLOSED) if not np.all(np.isnan(near)) else False
    return hits / total if total else None


def best_lag(curve: np.ndarray, ref: np.ndarray, mask: np.ndarray, max_lag: int) -> tuple[int | None, float | None]:
    """(lag, r): curve[t] best matches ref[t - lag] over the masked frames; positive lag = the curve is late."""
    if mask.sum() < 5:
        return None, None
    best: tuple[int | None, float] = (None, -1.0)
    idx = np.arange(len(curve))
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):
        b = idx - lag
        ok = (b >= 0) & (b < len(ref))
        ok[ok] &= mask[idx[ok]]
        x, y = curve[idx[ok]], ref[b[ok]]
        r = float(np.corrcoef(x, y)[0, 1]) if len(x) >= 5 and np.std(x) > 1e-9 and np.std(y) > 1e-9 else 0.0
        if r > best[1]:
            best = (lag, r)
    return best


def _anchors(centres: np.ndarray, valid: np.ndarray, shot: np.ndarray) -> np.ndarray:
    """Per frame, where the dubbed speaker's face is expected: the tracked face's centre (`centres`, per frame),
    else the nearest tracked frame's in the same shot (the earlier at a tie); NaN where the shot has none (then
    the largest face is scored)."""
    n = len(valid)
    out = np.full((n, 2), np.nan)
    for s in np.unique(shot):
        idx = np.flatnonzero(shot == s)
        have = idx[valid[idx]]
        if not len(have):
            continue
        after = np.minimum(np.searchsorted(have, idx), len(have) - 1)
        before = np.maximum(after - 1, 0)
        nearest = np.where(np.abs(idx - have[before]) <= np.abs(have[after] - idx), have[before], have[after])
        out[idx] = centres[nearest]
    return out


def _pick(candidates: np.ndarray, centre: np.ndarray, limit: float | None = None) -> np.ndarray | None:
    faces = [f for f in candidates if np.isfinite(f).all()]
    if not faces:
        return None
    if centre is None or not np.isfinite(centre).all():
        return max(faces, key=_width)
    face = min(faces, key=lambda f: np.linalg.norm(f.mean(0) - centre))
    if limit is not None and np.linalg.norm(face.mean(0) - centre) > limit:
        return None
    return face


def _width(points: np.ndarray) -> float:
    return float(np.ptp(points[:, 0]) + np.ptp(points[:, 1])) / 2 if len(points) > 20 else float(
        np.linalg.norm(points.max(0) - points.min(0)))


def _detect(mesh, rgb: np.ndarray, turn: int) -> list[np.ndarray]:
    h, w = rgb.shape[:2]
    return [upright_to_stored(f, turn, w, h) for f in mesh(upright(rgb, turn))]


def _source_cache(track: FaceTrack, source: Path) -> Path:
    """The source's static detections (per frame, the dubbed speaker's face; NaN: none) depend only on the
    source video and its track: cached for every language. Only the frames some language's dub speaks over are
    detected; later languages add the frames they need. The faces (one per frame, like the track's landmarks)
    are a .npy read and written a window at a time; beside it, `.done.npy` says which frames were looked at."""

    key = fingerprint(Path(track.npz), SCORE_VERSION, MAX_FACES)
    return Path(track.npz).with_name(f"score-source-{key}.npy")


def _done_path(path: Path) -> Path:
    return path.with_suffix(".done.npy")


def _load_source(path: Path, n: int) -> tuple[Rows | None, np.ndarray]:
    """(the cached faces, read by rows, or None; which frames were looked at)."""
    if path.is_file() and _done_path(path).is_file():
        faces, done = Rows(path), np.load(_done_path(path))
        if len(faces) == n and faces.shape[1:] == (len(g.SUBSET), 2) and done.shape == (n,):
            return faces, done
    return None, np.zeros(n, bool)


@contextlib.contextmanager
def _source_writer(path: Path, n: int, needed: bool) -> Iterator[Callable[[np.ndarray], None]]:
    """`write(face)` for every frame in order: the cache's new faces file (only when `needed`)."""
    if not needed:
        yield lambda face: None
        return
    with row_writer(path, (n, len(g.SUBSET), 2), np.float32) as write:
        yield write


def _save_done(path: Path, done: np.ndarray) -> None:
    # Written after the faces: a run stopped in between leaves faces for frames `done` does not list yet.
    with atomic_path(_done_path(path)) as tmp, open(tmp, "wb") as handle:
        np.save(handle, done)


def _box(points: np.ndarray, shape, margin: int) -> tuple[int, int, int, int]:
    h, w = shape[:2]
    x0, y0 = np.maximum(np.floor(points.min(0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(points.max(0)).astype(int) + margin, [w, h])
    return int(x0), int(y0), int(max(x1, x0 + 1)), int(max(y1, y0 + 1))


def _gradient(rgb: np.ndarray) -> np.ndarray:

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


def _laplacian_var(rgb: np.ndarray) -> float:

    if rgb.size == 0:
        return 0.0
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _psnr(sq_err: float, count: int) -> float | None:
    if count == 0:
        return None
    mse = sq_err / count
    return 99.0 if mse <= 1e-10 else float(10 * np.log10(255.0**2 / mse))
