"""Face-mesh landmark indices, the stored landmark subset, pose and mouth-shape descriptors."""

from __future__ import annotations

import numpy as np

# MediaPipe face mesh (478 points with refine_landmarks). Lips ordered corner to corner.
UPPER_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291]
LOWER_OUTER = [146, 91, 181, 84, 17, 314, 405, 321, 375]
UPPER_INNER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
LOWER_INNER = [95, 88, 178, 87, 14, 317, 402, 318, 324]
LIPS = UPPER_OUTER + LOWER_OUTER + UPPER_INNER + LOWER_INNER
LOWER_LIP = LOWER_OUTER + LOWER_INNER
FACE_OVAL = [10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
             152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109]
RIGID = [33, 133, 362, 263, 168, 6, 197, 195, 5, 4]
NOSE = [1, 2, 98, 327, 97, 326, 94]
# Skin around the mouth: fixed points for the warp at and beyond the mask edge.
ANCHORS = [2, 98, 327, 97, 326, 205, 425, 207, 427, 187, 411, 192, 416, 214, 434, 172, 136, 150, 149,
           176, 148, 152, 377, 400, 378, 379, 365, 397, 58, 288, 132, 361]
# Eyelids, corner to corner (outer, ..., inner): blinks in portraits and the eye aspect ratio.
LEFT_EYE_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
LEFT_EYE_LOWER = [33, 7, 163, 144, 145, 153, 154, 155, 133]
RIGHT_EYE_UPPER = [263, 466, 388, 387, 386, 385, 384, 398, 362]
RIGHT_EYE_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]
EYES = LEFT_EYE_UPPER + LEFT_EYE_LOWER + RIGHT_EYE_UPPER + RIGHT_EYE_LOWER
SUBSET = sorted(set(LIPS + FACE_OVAL + RIGID + NOSE + ANCHORS + EYES))
_POS = {idx: k for k, idx in enumerate(SUBSET)}


def sub(*indices: int | list[int]) -> list[int]:
    """Positions in the stored subset of the given mesh indices."""
    flat: list[int] = []
    for item in indices:
        flat.extend(item if isinstance(item, list) else [item])
    return [_POS[i] for i in flat]


# Inner-lip pairs whose distances make the opening.
_GAP_PAIRS = (sub(82, 13, 312), sub(87, 14, 317))
_CORNERS = sub(61, 291)


def canonical(pose: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Landmarks (T, len(SUBSET), 2) in each frame's canonical coordinates (pose (T, 2, 3)); NaN points -> 0."""
    points = np.nan_to_num(points)
    return np.einsum("tij,tkj->tki", pose[:, :, :2], points) + pose[:, None, :, 2]


def opening(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap / mouth width for landmarks (..., len(SUBSET), 2): the scorecard's opening measure."""
    gap = np.linalg.norm(points[..., _GAP_PAIRS[0], :] - points[..., _GAP_PAIRS[1], :], axis=-1).mean(-1)
    return gap / np.maximum(mouth_width(points), 1e-6)


def mouth_width(points: np.ndarray) -> np.ndarray:
    return np.linalg.norm(points[..., _CORNERS[0], :] - points[..., _CORNERS[1], :], axis=-1)


def descriptor(canon: np.ndarray) -> np.ndarray:
    """Mouth shape in canonical units (inter-ocular distance = 1): [open, width, outer height]."""
    gap = np.linalg.norm(canon[..., _GAP_PAIRS[0], :] - canon[..., _GAP_PAIRS[1], :], axis=-1).mean(-1)
    outer = np.linalg.norm(canon[..., _POS[0], :] - canon[..., _POS[17], :], axis=-1)
    return np.stack([gap, mouth_width(canon), outer], axis=-1)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2x3) mapping src points onto dst points (Umeyama, no reflection)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    a = (s * d).sum() / max((s * s).sum(), 1e-12)
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / max((s * s).sum(), 1e-12)
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (mu_d - rot @ mu_s)[:, None]])


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    rot = np.linalg.inv(matrix[:, :2])
    return np.hstack([rot, (-rot @ matrix[:, 2])[:, None]])


def eye_normalise(points: np.ndarray) -> np.ndarray:
    """Similarity (2x3) putting the outer eye corners at (-0.5, 0) and (0.5, 0)."""
    left, right = points[_POS[33]], points[_POS[263]]
    return similarity(np.stack([left, right]), np.array([[-0.5, 0.0], [0.5, 0.0]]))


def poses(points: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame->canonical similarity per frame (T,2,3) from the rigid points, and the rigid template."""
    rigid = sub(RIGID)
    normed = [apply(eye_normalise(p), p[rigid]) for p in points[valid]]
    template = np.median(np.stack(normed), axis=0) if normed else np.zeros((len(rigid), 2))
    out = np.tile(np.eye(2, 3), (len(points), 1, 1))
    for t in np.flatnonzero(valid):
        out[t] = similarity(points[t, rigid], template)
    return out, template


def yaw_ratio(points: np.ndarray) -> float:
    """Nose-to-cheek distance ratio left/right; 1 for a frontal face."""
    nose, left, right = points[_POS[1]], points[_POS[234]], points[_POS[454]]
    return float(np.linalg.norm(nose - left)) / max(float(np.linalg.norm(right - nose)), 1e-6)


def eye_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """Mean over both eyes of lid gap (upper/lower lid midpoints) / eye width, for (..., len(SUBSET), 2)."""
    out = []
    for upper, lower in ((LEFT_EYE_UPPER, LEFT_EYE_LOWER), (RIGHT_EYE_UPPER, RIGHT_EYE_LOWER)):
        mids = sub(upper[3:6]), sub(lower[3:6])
        gap = np.linalg.norm(points[..., mids[0], :] - points[..., mids[1], :], axis=-1).mean(-1)
        width = np.linalg.norm(points[..., _POS[upper[0]], :] - points[..., _POS[upper[-1]], :], axis=-1)
        out.append(gap / np.maximum(width, 1e-6))
    return 0.5 * (out[0] + out[1])


def best_lag(curve: np.ndarray, ref: np.ndarray, mask: np.ndarray, max_lag: int) -> tuple[int, float]:
    """(lag, r): curve[t] best matches ref[t - lag]; positive lag = the curve comes late."""
    best = (0, -1.0)
    for lag in sorted(range(-max_lag, max_lag + 1), key=abs):
        a = np.arange(len(curve))
        b = a - lag
        ok = (b >= 0) & (b < len(ref))
        ok[ok] &= mask[a[ok]]
        x, y = curve[a[ok]], ref[b[ok]]
        if len(x) < 5 or np.std(x) < 1e-9 or np.std(y) < 1e-9:
            r = 0.0
        else:
            r = float(np.corrcoef(x, y)[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best
