"""The automatic lip-sync scorecard: landmarks re-detected on the rendered output, compared with what
the dub's phonemes demand and with the source (definitions in docs/notes lipsync.md).

Cost: one face-mesh pass over the output's usable frames on a fixed face crop; the source's openings are
detected once per source video and cached beside the face track (every language reuses them). Pixel
measures work on boxes around the mouth; PSNR outside the mask is the whole-frame error minus the
error inside the dilated mask, so no full-frame mask is ever built."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from dubforge.core.contracts import Phoneme
from dubforge.core.files import atomic_path, fingerprint
from dubforge.lipsync import geometry as g
from dubforge.lipsync.bank import canonical
from dubforge.lipsync.compose import mask_polygon
from dubforge.lipsync.detect import FaceMesh
from dubforge.lipsync.geometry import best_lag
from dubforge.lipsync.records import FaceTrack
from dubforge.lipsync.track import MAX_FACES, load_arrays
from dubforge.lipsync.video import frames
from dubforge.lipsync.visemes import BILABIAL, SIL, reference_opening, segments

CLOSED = 0.10  # inner-lip gap below this share of the mouth width counts as closed
MAX_LAG = 5
DILATE_PX = 8  # the render mask grows by this before "outside" is compared (encoder blocks bleed)
RING_PX = 2
SCORE_VERSION = 2


def score(rendered: Path, source: Path, track: FaceTrack, dub_phonemes: Sequence[Phoneme]) -> dict:

    arrays = load_arrays(track)
    times, valid, points = arrays["times"], arrays["valid"], np.nan_to_num(arrays["points"])
    canon = canonical(arrays)
    n = len(times)
    cache = _source_cache(track, Path(source))
    src_open = _load_source(cache, n)
    detect_src = src_open is None
    if detect_src:
        src_open = np.full(n, np.nan)
    out_open = np.full(n, np.nan)
    sq_err, sq_count = 0.0, 0
    seam_out = seam_src = sharp_out = sharp_src = 0.0
    grow = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * DILATE_PX + 1, 2 * DILATE_PX + 1))
    ring_k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_PX + 1, 2 * RING_PX + 1))
    crop = _face_region(points[valid], track.width, track.height)
    with FaceMesh(MAX_FACES) as mesh_out, (FaceMesh(MAX_FACES) if detect_src else nullcontext()) as mesh_src:
        for i, (fo, fs) in enumerate(zip(frames(rendered), frames(source))):
            if i >= n:
                break
            out, src = fo.to_ndarray(format="rgb24"), fs.to_ndarray(format="rgb24")
            frame_err, frame_px = float(cv2.norm(out, src, cv2.NORM_L2SQR)), out.shape[0] * out.shape[1]
            if valid[i]:
                centre = points[i].mean(0)
                out_open[i] = _opening(_detect(mesh_out, out, crop), centre)
                if detect_src:
                    src_open[i] = _opening(_detect(mesh_src, src, crop), centre)
                poly = g.apply(g.invert(arrays["pose"][i]), mask_polygon(canon[i]))
                x0, y0, x1, y1 = _box(poly, out.shape, DILATE_PX + 4 * RING_PX + 2)
                mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
                cv2.fillPoly(mask, [np.round(poly - [x0, y0]).astype(np.int32)], 1)
                band = (cv2.dilate(mask, ring_k) - cv2.erode(mask, ring_k)).astype(bool)
                go, gs = (_gradient(im[y0:y1, x0:x1]) for im in (out, src))
                seam_out, seam_src = seam_out + go[band].mean(), seam_src + gs[band].mean()
                lips = points[i][g.sub(g.LIPS)]
                mx0, my0, mx1, my1 = _box(lips, out.shape, int(0.15 * np.ptp(lips[:, 0])))
                sharp_out += _laplacian_var(out[my0:my1, mx0:mx1])
                sharp_src += _laplacian_var(src[my0:my1, mx0:mx1])
                mask = cv2.dilate(mask, grow)
                frame_err -= float(cv2.norm(out[y0:y1, x0:x1], src[y0:y1, x0:x1], cv2.NORM_L2SQR, mask))
                frame_px -= int(cv2.countNonZero(mask))
            sq_err += frame_err
            sq_count += 3 * frame_px
    if detect_src:
        _save_source(cache, src_open)
    rendered_n = int(valid.sum())
    result = {"closure": closure(out_open, times, dub_phonemes, valid)}
    ref = _reference(dub_phonemes, times)
    span = valid & ~np.isnan(out_open) & _speech_span(dub_phonemes, times)
    lag, corr = _lag(np.nan_to_num(out_open), ref, span)
    both = valid & ~np.isnan(out_open) & ~np.isnan(src_open)
    result.update(
        lag_frames=lag, correlation=corr,
        preservation_db=_psnr(sq_err, sq_count),
        seam_ratio=float(seam_out / seam_src) if seam_src > 0 else None,
        range_ratio=(float(np.percentile(out_open[both], 95) / max(np.percentile(src_open[both], 95), 1e-6))
                     if both.sum() >= 5 else None),
        sharpness_ratio=float(sharp_out / sharp_src) if sharp_src > 0 else None,
        frames_rendered=rendered_n, frames_passed_through=n - rendered_n,
    )
    return result


def closure(opening: np.ndarray, times: np.ndarray, phonemes: Sequence[Phoneme], valid: np.ndarray) -> float | None:
    """Share of the dub's bilabials at whose centre frame (+-1) the mouth is closed; None without any."""

    hits = total = 0
    for v, start, end in segments(phonemes):
        if v != BILABIAL:
            continue
        c = int(np.argmin(np.abs(times - (start + end) / 2)))
        if not valid[c]:
            continue
        total += 1
        near = opening[max(c - 1, 0): c + 2]
        hits += bool(np.nanmin(near) < CLOSED) if not np.all(np.isnan(near)) else False
    return hits / total if total else None


def _reference(phonemes, times):

    return reference_opening(phonemes, times)


def _speech_span(phonemes: Sequence[Phoneme], times: np.ndarray) -> np.ndarray:

    speech = [s for s in segments(phonemes) if s[0] != SIL]
    if not speech:
        return np.zeros(len(times), bool)
    return (times >= speech[0][1] - 0.3) & (times <= speech[-1][2] + 0.3)


def _lag(curve: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> tuple[int | None, float | None]:

    if mask.sum() < 5:
        return None, None
    return best_lag(curve, ref, mask, MAX_LAG)


def _source_cache(track: FaceTrack, source: Path) -> Path:
    """The source's openings depend only on the source video and its track: cached for every language."""

    key = fingerprint(Path(track.npz), source, SCORE_VERSION)
    return Path(track.npz).with_name(f"score-source-{key}.npy")


def _load_source(path: Path, n: int) -> np.ndarray | None:
    if not path.is_file():
        return None
    data = np.load(path)
    return data if data.shape == (n,) else None


def _save_source(path: Path, src_open: np.ndarray) -> None:

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, src_open)


def _face_region(points: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """Where faces are looked for: around everything the track saw (detection on a crop is faster)."""
    if not len(points):
        return 0, 0, width, height
    lo, hi = points.reshape(-1, 2).min(0), points.reshape(-1, 2).max(0)
    pad = 0.35 * (hi - lo).max()
    x0, y0 = np.maximum(np.floor(lo - pad).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(hi + pad).astype(int), [width, height])
    return int(x0), int(y0), int(x1), int(y1)


def _detect(mesh, rgb: np.ndarray, crop: tuple[int, int, int, int]) -> list[np.ndarray]:
    x0, y0, x1, y1 = crop
    return [f + np.array([x0, y0], np.float32) for f in mesh(rgb[y0:y1, x0:x1])]


def _opening(faces: list[np.ndarray], centre: np.ndarray | None) -> float:
    if not faces:
        return np.nan
    face = min(faces, key=lambda f: np.linalg.norm(f.mean(0) - centre)) if centre is not None else faces[0]
    return float(g.opening(face))


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
