"""Per-frame compositing: the lower-face mask, the lip-contour fit (thin-plate spline on a coarse grid
+ cv2.remap), colour match and a feathered blend, all in YUV 4:2:0 on a crop around the mouth."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np

from dubforge.lipsync import geometry as g

GRID = 8  # pixels between thin-plate-spline evaluations
_UO, _LO, _UI, _LI = (g.sub(x) for x in (g.UPPER_OUTER, g.LOWER_OUTER, g.UPPER_INNER, g.LOWER_INNER))
_LIPS = g.sub(g.LIPS)
_ANCHORS = g.sub(g.ANCHORS)
_P = {i: g.sub(i)[0] for i in (0, 2, 17, 152, 61, 291)}
_ANGLES = np.linspace(0, 2 * np.pi, 40, endpoint=False)


def mask_polygon(canon: np.ndarray) -> np.ndarray:
    """Lower-face region in canonical coordinates: from under the nose to above the chin, around the
    mouth, inside the face oval. Depends only on the tracked landmarks (the scorecard rebuilds it)."""
    top = canon[_P[2], 1] + 0.3 * (canon[_P[0], 1] - canon[_P[2], 1])
    bottom = canon[_P[17], 1] + 0.8 * (canon[_P[152], 1] - canon[_P[17], 1])
    cx = 0.5 * (canon[_P[61], 0] + canon[_P[291], 0])
    a = 0.8 * abs(canon[_P[291], 0] - canon[_P[61], 0])
    b, cy = 0.5 * (bottom - top), 0.5 * (bottom + top)
    c, s = np.cos(_ANGLES), np.sin(_ANGLES)
    e = 2 / 2.6  # superellipse: boxier than an ellipse, so the corners of a wide mouth stay inside
    return np.stack([cx + a * np.sign(c) * np.abs(c) ** e, cy + b * np.sign(s) * np.abs(s) ** e], axis=1)


def target_lips(unit: np.ndarray, cur: np.ndarray, target: np.ndarray, closed: bool) -> np.ndarray:
    """Where the unit's 40 lip points go (canonical): anchored at the current upper lip, width and
    inner opening set to the target, lower lip thinned for a tuck; full closure for bilabials."""
    lips = unit[_LIPS].copy()
    uo, lo, ui, li = (slice(0, 11), slice(11, 20), slice(20, 31), slice(31, 40))
    cx_u = 0.5 * (unit[_P[61], 0] + unit[_P[291], 0])
    cx_c = 0.5 * (cur[_P[61], 0] + cur[_P[291], 0])
    width_u = abs(unit[_P[291], 0] - unit[_P[61], 0])
    sx = float(np.clip(target[1] / max(width_u, 1e-6), 0.88, 1.12))
    lips[:, 0] = (lips[:, 0] - cx_u) * sx + cx_c
    lips[:, 1] += cur[_P[0], 1] - unit[_P[0], 1]
    gap_u = float(g.descriptor(unit[None])[0, 0])
    half = 0.5 * width_u * sx
    fall = np.clip(1 - ((lips[:, 0] - cx_c) / max(half, 1e-6)) ** 2, 0, 1) ** 0.5
    thick = lips[lo, 1] - np.interp(lips[lo, 0], *_sorted(lips[li]))
    if closed:
        upper_x, upper_y = _sorted(lips[ui])
        before = lips[li, 1].copy()
        lips[li, 1] = np.interp(lips[li, 0], upper_x, upper_y) + 0.004
        lips[lo, 1] += np.interp(lips[lo, 0], *_sorted(np.stack([lips[li, 0], lips[li, 1] - before], 1)))
    else:
        delta = float(target[0]) - gap_u
        lips[li, 1] += delta * fall[li]
        lips[lo, 1] += delta * fall[lo]
    # Lower-lip tuck (labiodentals): the target outer height is below what the opening implies.
    outer_now = float(np.interp(cx_c, *_sorted(lips[lo])) - np.interp(cx_c, *_sorted(lips[uo])))
    tuck = np.clip(float(target[2]) - outer_now, -0.5 * np.median(thick), 0)
    lips[lo, 1] += tuck * fall[lo]
    return lips


def _sorted(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]


def tps_fit(dst: np.ndarray, src: np.ndarray, reg: float = 1e-3) -> tuple[np.ndarray, np.ndarray, float]:
    """Thin-plate spline mapping dst -> src (the backward map cv2.remap needs)."""
    centre = dst.mean(0)
    scale = float(np.ptp(dst, axis=0).max()) or 1.0
    d = (dst - centre) / scale
    n = len(d)
    k = _kernel(_sq_dist(d, d)) + reg * np.eye(n)
    p = np.hstack([np.ones((n, 1)), d])
    a = np.zeros((n + 3, n + 3))
    a[:n, :n], a[:n, n:], a[n:, :n] = k, p, p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = src
    coef = np.linalg.solve(a, rhs)
    return coef, np.vstack([centre, d]), scale


def tps_eval(model, points: np.ndarray) -> np.ndarray:
    coef, ctrl, scale = model
    centre, d = ctrl[0], ctrl[1:]
    q = (points - centre) / scale
    u = _kernel(_sq_dist(q, d))
    return u @ coef[: len(d)] + coef[len(d)] + q @ coef[len(d) + 1:]


def _sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0.0)


def _kernel(r2: np.ndarray) -> np.ndarray:
    """r^2 log r, from squared distances."""
    return 0.5 * r2 * np.log(r2 + 1e-20)


def region(polygon_px: np.ndarray, width: int, height: int, margin: int) -> tuple[int, int, int, int] | None:
    """Even-aligned crop box (x0, y0, x1, y1) around the polygon, clipped to the frame."""
    x0, y0 = np.floor(polygon_px.min(0)).astype(int) - margin
    x1, y1 = np.ceil(polygon_px.max(0)).astype(int) + margin
    x0, y0 = max(x0 - x0 % 2, 0), max(y0 - y0 % 2, 0)
    x1, y1 = min(x1 + x1 % 2, width), min(y1 + y1 % 2, height)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return int(x0), int(y0), int(x1), int(y1)


def alpha_mask(polygon_px: np.ndarray, box: tuple[int, int, int, int], feather: float) -> np.ndarray:
    """1 inside, fading to exactly 0 two pixels inside the polygon edge (never spilling out): a smoothstep
    of the distance to the edge over 2*feather pixels (one distance transform, no blur)."""

    x0, y0, x1, y1 = box
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [np.round((polygon_px - [x0, y0]) * 4).astype(np.int32)], 1, cv2.LINE_8, shift=2)
    f = max(float(feather), 1.0)
    dist = cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_3)
    t = np.clip((dist - 2.0) / (2.0 * f), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def warp_map(model, box: tuple[int, int, int, int]) -> np.ndarray:
    """Per-pixel backward map (h, w, 2) float32 of the box: the spline evaluated on a coarse grid, upsampled."""

    x0, y0, x1, y1 = box
    gx = np.arange(x0, x1 + GRID, GRID, dtype=np.float64)
    gy = np.arange(y0, y1 + GRID, GRID, dtype=np.float64)
    mesh = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    mapped = tps_eval(model, mesh).reshape(len(gy), len(gx), 2).astype(np.float32)
    # Node (i, j) sits at pixel (i*GRID, j*GRID) of the box.
    full = cv2.resize(mapped, ((len(gx) - 1) * GRID + 1, (len(gy) - 1) * GRID + 1), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(full[: y1 - y0, : x1 - x0])


def warp_unit(luma: np.ndarray, chroma: np.ndarray, model, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A unit's crop (luma (h, w), 4:2:0 chroma (h/2, w/2, 2)) resampled once into the frame box: luma
    (H, W) and chroma at the box's 4:2:0 sample positions (H/2, W/2, 2), float32."""

    full = warp_map(model, box)
    # Lanczos keeps the lips' fine texture (cubic halves its Laplacian energy at half-pixel shifts).
    y = cv2.remap(luma, full[..., 0], full[..., 1], cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REPLICATE)
    # A chroma sample sits at the centre of its 2x2 luma block, in the box and in the crop alike.
    h2, w2 = full.shape[0] // 2, full.shape[1] // 2
    half = (cv2.resize(full[: 2 * h2, : 2 * w2], (w2, h2), interpolation=cv2.INTER_AREA) - 0.5) * 0.5
    uv = cv2.remap(chroma, half[..., 0], half[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return y.astype(np.float32), uv.astype(np.float32)


def blend(planes: tuple[np.ndarray, np.ndarray, np.ndarray], warped, alpha: np.ndarray,
          box: tuple[int, int, int, int], state: dict) -> None:
    """`warped`: (luma (h, w), chroma (h/2, w/2, 2)) as warp_unit makes, or YUV 4:4:4 (h, w, 3). Colour-match (mean YUV on the skin ring at the mask edge, smoothed over frames in `state`) and
    write the warped unit into the Y, U, V planes inside the feathered mask, in place."""

    x0, y0, x1, y1 = box
    y, u, v = planes
    if isinstance(warped, np.ndarray):  # full-resolution YUV 4:4:4 (h, w, 3)
        half = ((x1 - x0) // 2, (y1 - y0) // 2)
        warped = (warped[..., 0], cv2.resize(np.ascontiguousarray(warped[..., 1:]), half, interpolation=cv2.INTER_AREA))
    luma, chroma = warped
    alpha_c = cv2.resize(alpha, (chroma.shape[1], chroma.shape[0]), interpolation=cv2.INTER_AREA)
    regions = [y[y0:y1, x0:x1], u[y0 // 2:y1 // 2, x0 // 2:x1 // 2], v[y0 // 2:y1 // 2, x0 // 2:x1 // 2]]
    layers = [luma, *cv2.split(chroma)]
    ring = ((alpha > 0.02) & (alpha < 0.7)).astype(np.uint8)
    ring_c = ((alpha_c > 0.02) & (alpha_c < 0.7)).astype(np.uint8)
    if cv2.countNonZero(ring) >= 20 and cv2.countNonZero(ring_c) >= 5:
        offset = np.array([cv2.mean(reg, m)[0] - cv2.mean(lay, m)[0]
                           for reg, lay, m in zip(regions, layers, (ring, ring_c, ring_c))])
        prev = state.get("offset")
        state["offset"] = offset if prev is None else 0.7 * prev + 0.3 * offset
    offsets = state.get("offset")
    for reg, lay, a, off in zip(regions, layers, (alpha, alpha_c, alpha_c), np.zeros(3) if offsets is None else offsets):
        # reg + a * (layer + off - reg); where a == 0 this rounds back to reg exactly.
        base = reg.astype(np.float32)
        mixed = cv2.add(base, cv2.multiply(a, cv2.subtract(cv2.add(lay, float(off)), base)))  # type: ignore[call-overload]
        np.clip(mixed + 0.5, 0, 255, out=mixed)
        reg[...] = mixed


SHARP_SIGMA = 2.0
SHARP_MAX = 1.5  # most unsharp-mask gain ever applied (beyond it halos show)


def sharpen_to_match(luma: np.ndarray, source_luma: np.ndarray, box: tuple[int, int, int, int],
                     state: dict, margin: float = 1.0) -> np.ndarray:
    """Unsharp-mask the warped luma so the Laplacian variance of its mouth box matches the source's there
    (times `margin`). Variance terms are summed over the frames so far (in `state`), so the gain is steady:
    var(lap(L + k D)) = a + 2 k b + k^2 c with D = L - blur(L), solved for k."""

    x0, y0, x1, y1 = box
    if x1 - x0 < 8 or y1 - y0 < 8:
        return luma
    detail = luma - cv2.GaussianBlur(luma, (0, 0), SHARP_SIGMA)
    lap_l = cv2.Laplacian(luma[y0:y1, x0:x1], cv2.CV_32F)
    lap_d = cv2.Laplacian(detail[y0:y1, x0:x1], cv2.CV_32F)
    lap_s = cv2.Laplacian(source_luma, cv2.CV_32F)
    ml, md = float(lap_l.mean()), float(lap_d.mean())
    sums = state.setdefault("sharp", np.zeros(4))
    sums += [lap_l.var(), float((lap_l * lap_d).mean()) - ml * md, lap_d.var(), lap_s.var()]
    a, b, c, target = sums[0], sums[1], sums[2], margin * sums[3]
    if c <= 1e-9 or target <= a:
        return luma
    k = (-b + np.sqrt(max(b * b - c * (a - target), 0.0))) / c
    return luma + float(min(k, SHARP_MAX)) * detail


def encode_loss(buffers: list[np.ndarray], boxes: list[tuple[int, int, int, int]], preset: str, crf: int) -> float:
    """Share of the mouth boxes' Laplacian variance that survives an x264 round trip at this preset and
    crf, measured on yuv420p frame buffers of the source itself (a short clip encoded in memory)."""

    if len(buffers) < 2:
        return 1.0
    h, w = buffers[0].shape[0] * 2 // 3, buffers[0].shape[1]
    data = io.BytesIO()
    with av.open(data, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for i, buf in enumerate(buffers):
            frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data.seek(0)
    with av.open(data, "r", format="h264") as back:
        decoded = [f.to_ndarray()[:h] for f in back.decode(video=0)]

    def lap(y: np.ndarray, box) -> float:
        x0, y0, x1, y1 = box
        return float(cv2.Laplacian(y[y0:y1, x0:x1], cv2.CV_64F).var())

    before = sum(lap(b[:h], box) for b, box in zip(buffers, boxes))
    after = sum(lap(y, box) for y, box in zip(decoded, boxes))
    return float(np.clip(after / before, 0.3, 1.0)) if before > 0 else 1.0
