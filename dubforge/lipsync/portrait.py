"""A still photo as source (a talking portrait): no mouth bank exists, so the photo's own mouth is warped
(thin-plate spline of lips and the skin around them) to the viseme targets, the opened mouth gets a
synthesised interior (dark cavity, upper-teeth hint, tongue), and idle life is added: blinks every 2-6 s
and a slow, small similarity motion of the whole frame. Deterministic for equal inputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from dubforge.core.contracts import Phoneme
from dubforge.core.files import atomic_path
from dubforge.lipsync import compose as c
from dubforge.lipsync import geometry as g
from dubforge.lipsync.perframe import load_compact
from dubforge.lipsync.records import FaceTrack, LipsyncResult, finish_render
from dubforge.lipsync.track import Landmarks
from dubforge.lipsync.video import EncodeThread, H264Writer, copy_into, frames, probe
from dubforge.lipsync.visemes import Range, generic_shapes, trajectory

OPEN_OF_WIDTH = 0.45  # widest inner-lip gap (an "ah") as a share of the mouth width
BLINK_GAP = (2.0, 6.0)  # seconds between blinks
BLINK_S = 0.15  # one blink: closing, a short hold, opening
MOTION_PX = 2.0  # head motion amplitude (translation, pixels at 720p; scaled with the face)
MOTION_DEG, MOTION_SCALE = 0.4, 0.004
# YUV (limited range) of the synthesised interior.
CAVITY, TEETH, TONGUE = (28.0, 126.0, 142.0), (188.0, 124.0, 131.0), (86.0, 114.0, 166.0)


def portrait_range(canon: np.ndarray) -> Range:
    """A mouth range for a face seen in one pose only (canonical units): closed .. OPEN_OF_WIDTH of its width."""
    gap, width, outer = (float(x) for x in g.descriptor(canon[None])[0])
    lips = max(outer - gap, 0.05)
    return Range(closed=0.0, rest=min(gap, 0.02), open=OPEN_OF_WIDTH * width, rest_width=width, widest=1.1 * width,
                 roundest=0.75 * width, outer_a=lips, outer_b=1.0, lip=0.5 * lips)


def blink_curve(times: np.ndarray, seed: int) -> np.ndarray:
    """Lid closure 0..1 per frame time: blinks at random 2-6 s intervals, each BLINK_S long."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(times))
    if not len(times):
        return out
    t = float(times[0]) + rng.uniform(0.6, 2.0)
    while t < times[-1]:
        phase = (times - t) / BLINK_S
        shape = np.where((phase >= 0) & (phase <= 1), np.sin(np.pi * np.clip(phase, 0, 1)) ** 0.6, 0.0)
        out = np.maximum(out, np.clip(shape * 1.15, 0, 1))
        t += rng.uniform(*BLINK_GAP)
    return out


def idle_motion(times: np.ndarray, seed: int, face_px: float) -> np.ndarray:
    """(T, 2, 3) small similarity transforms about the face centre (0, 0): sums of slow sinusoids
    (periods 2.5-9 s) with random phases, i.e. smooth low-frequency noise."""
    rng = np.random.default_rng(seed + 1)
    amp = MOTION_PX * max(face_px, 1.0) / 250.0

    def noise() -> np.ndarray:
        periods = rng.uniform(2.5, 9.0, 3)
        phases = rng.uniform(0, 2 * np.pi, 3)
        return sum(np.sin(2 * np.pi * times / p + q) for p, q in zip(periods, phases)) / 3

    tx, ty = amp * noise(), amp * noise()
    ang, scale = np.deg2rad(MOTION_DEG) * noise(), 1 + MOTION_SCALE * noise()
    cos, sin = scale * np.cos(ang), scale * np.sin(ang)
    return np.stack([np.stack([cos, -sin, tx], -1), np.stack([sin, cos, ty], -1)], 1)


def warp_mouth(planes, photo: tuple[np.ndarray, np.ndarray], points_px: np.ndarray, inv: np.ndarray,
               canon: np.ndarray, target: np.ndarray, closed: bool, box, alpha: np.ndarray, state: dict) -> None:
    """Move the photo's lips (and the skin inside the mask) to `target`, paint the opened interior, blend."""
    lips_c = c.target_lips(canon, canon, target, closed)
    lips_px = g.apply(inv, lips_c)
    dst = np.vstack([lips_px, points_px[c._ANCHORS]])
    src = np.vstack([points_px[c._LIPS], points_px[c._ANCHORS]]) - [box[0], box[1]]
    luma, chroma = c.warp_unit(photo[0], photo[1], c.tps_fit(dst, src), box)
    gap_photo, gap_target = float(g.descriptor(canon[None])[0, 0]), float(target[0])
    if not closed and gap_target > gap_photo + 1e-3:
        strength = float(np.clip(1 - gap_photo / max(gap_target, 1e-6), 0, 1))
        paint_interior(luma, chroma, lips_px - [box[0], box[1]], strength)
    c.blend(planes, (luma, chroma), alpha, box, state)


def paint_interior(luma: np.ndarray, chroma: np.ndarray, lips_box: np.ndarray, strength: float) -> None:
    """Dark cavity inside the inner lips, a band of upper teeth under the upper lip and a tongue at the
    bottom, with soft (anti-aliased, slightly blurred) edges; in place, box coordinates."""

    upper = lips_box[20:31]  # inner upper lip, corner to corner
    lower = lips_box[31:40]  # inner lower lip, corner to corner (without the corners)
    inner = np.vstack([upper, lower[::-1]])
    h, w = luma.shape
    gap = float(np.median(lower[:, 1]) - np.median(upper[3:8, 1]))
    width = float(np.ptp(upper[:, 0]))
    if gap < 1.0 or width < 4.0:
        return

    def fill(poly: np.ndarray) -> np.ndarray:
        m = np.zeros((h, w), np.float32)
        cv2.fillPoly(m, [np.round(poly * 4).astype(np.int32)], 1.0, cv2.LINE_AA, shift=2)
        return m

    cavity = cv2.GaussianBlur(fill(inner), (0, 0), 0.8)
    teeth_h = min(0.4 * gap, 0.09 * width)
    band = np.vstack([upper[1:-1], (upper[1:-1] + [0, teeth_h])[::-1]])
    teeth = cv2.GaussianBlur(fill(band), (0, 0), 0.8) * cavity
    centre = lower[len(lower) // 2]
    tongue = np.zeros((h, w), np.float32)
    cv2.ellipse(tongue, (int(round(centre[0] * 4)), int(round((centre[1] - 0.15 * gap) * 4))),
                (max(int(0.28 * width * 4), 4), max(int(0.3 * gap * 4), 4)), 0, 180, 360, 1.0, -1, cv2.LINE_AA, 2)
    tongue = cv2.GaussianBlur(tongue, (0, 0), 1.2) * cavity * (1 - teeth)
    # Deeper is darker: the cavity's luma falls off away from the lips.
    yy = np.arange(h, dtype=np.float32)[:, None]
    depth = 1 - 0.35 * np.exp(-((yy - (np.median(upper[:, 1]) + 0.5 * gap)) / max(0.35 * gap, 1.0)) ** 2)
    colour = CAVITY[0] * depth * (1 - teeth - tongue) + TEETH[0] * teeth + TONGUE[0] * tongue
    a = strength * cavity
    luma[...] = luma * (1 - a) + colour * a
    half = (w // 2, h // 2)
    cav_c, teeth_c, tongue_c = (cv2.resize(m, half, interpolation=cv2.INTER_AREA) for m in (cavity, teeth, tongue))
    for k in range(2):
        colour = CAVITY[k + 1] * (1 - teeth_c - tongue_c) + TEETH[k + 1] * teeth_c + TONGUE[k + 1] * tongue_c
        a = strength * cav_c
        chroma[..., k] = chroma[..., k] * (1 - a) + colour * a


def close_eyes(planes, points_px: np.ndarray, amount: float) -> None:
    """Lower both upper lids by `amount` (0 open .. 1 shut): the lid skin above the eye is stretched down
    over it (a per-column backward map, identity at the box edges), with a darker lash line at the edge."""

    if amount <= 0.01:
        return
    y_plane, u_plane, v_plane = planes
    height, width = y_plane.shape
    for upper_i, lower_i in ((g.LEFT_EYE_UPPER, g.LEFT_EYE_LOWER), (g.RIGHT_EYE_UPPER, g.RIGHT_EYE_LOWER)):
        up, lo = points_px[g.sub(upper_i)], points_px[g.sub(lower_i)]
        eye_w = float(np.ptp(up[:, 0]))
        lid = 0.6 * eye_w  # skin above the lid that stretches
        x0 = int(max(np.floor(up[:, 0].min()) - 2, 0)) // 2 * 2
        x1 = int(min(np.ceil(up[:, 0].max()) + 4, width)) // 2 * 2
        y0 = int(max(np.floor(up[:, 1].min() - lid) - 2, 0)) // 2 * 2
        y1 = int(min(np.ceil(lo[:, 1].max()) + 4, height)) // 2 * 2
        if x1 - x0 < 6 or y1 - y0 < 6:
            continue
        xs = np.arange(x0, x1, dtype=np.float32)
        order_u, order_l = np.argsort(up[:, 0]), np.argsort(lo[:, 0])
        u_x = np.interp(xs, up[order_u, 0], up[order_u, 1])
        l_x = np.interp(xs, lo[order_l, 0], lo[order_l, 1])
        inside = (xs > up[:, 0].min()) & (xs < up[:, 0].max())
        edge = u_x + amount * np.maximum(l_x - u_x, 0) * inside  # where the lid edge now is
        top = u_x - lid
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        # Between top and the new edge, sample the lid skin between top and the old lid line, stretched.
        t = (ys - top) / np.maximum(edge - top, 1e-3)
        stretched = top + t * (u_x - top)
        map_y = np.where((ys >= top) & (ys <= edge), stretched, ys).astype(np.float32)
        map_x = np.broadcast_to(xs, map_y.shape).astype(np.float32)
        region = y_plane[y0:y1, x0:x1]
        warped = cv2.remap(y_plane, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
        lash = np.exp(-(((ys - edge) / 1.2) ** 2)) * inside * amount
        region[...] = np.clip(warped * (1 - 0.45 * lash) + 0.5, 0, 255)
        cy, cx = (map_y[::2, ::2] - 0.5) * 0.5, (map_x[::2, ::2] - 0.5) * 0.5
        for plane in (u_plane, v_plane):
            plane[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = cv2.remap(plane, cx + 0.25, cy + 0.25, cv2.INTER_LINEAR,
                                                                borderMode=cv2.BORDER_REPLICATE)


def move_frame(planes, motion: np.ndarray, centre: np.ndarray, scratch: dict) -> None:
    """Apply a small similarity (about `centre`, pixels) to the whole frame, in place (one resampling)."""

    m = motion.copy()
    m[:, 2] += centre - m[:, :2] @ centre  # rotate/scale about the face centre
    inv = cv2.invertAffineTransform(m)
    for k, plane in enumerate(planes):
        if k == 0:
            mat = inv
        else:  # chroma pixel (j, i) sits at luma (2j + 0.5, 2i + 0.5)
            to_luma = np.array([[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1]])
            mat = (np.linalg.inv(to_luma) @ np.vstack([inv, [0, 0, 1]]) @ to_luma)[:2]
        buf = scratch.get(k)
        if buf is None or buf.shape != plane.shape:
            buf = scratch[k] = np.empty_like(plane)
        cv2.warpAffine(plane, mat, (plane.shape[1], plane.shape[0]), dst=buf, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
        plane[...] = buf


def render_portrait(video: Path, track: FaceTrack, dub_phonemes: Sequence[Phoneme], out_video: Path, preset: str,
                    crf: int, progress: Callable[[int, int], None] | None, feather: float, backend: str) -> LipsyncResult:
    """The portrait render loop (streams like the bank renderer: constant memory)."""

    info = probe(video)
    arrays = load_compact(track)  # the landmarks and the pose are read a window at a time
    times, valid, n = arrays["times"], arrays["valid"], track.frame_count
    warnings: list[str] = []
    if valid.any():
        marks = Landmarks(track, arrays["pose"])
        first = int(np.flatnonzero(valid)[0])
        targets, closed = trajectory(dub_phonemes, times, generic_shapes(portrait_range(marks.canon(first))))
        seed = int(track.video_sha256[:8], 16)
        blinks = blink_curve(times, seed)
        face_px = float(np.ptp(marks.points(first)[g.sub(g.FACE_OVAL), 0]))
        motion = idle_motion(times, seed, face_px)
    else:
        warnings.append(f"{video}: no usable face in the portrait ({track.reason}); video passed through unchanged")
    rendered = 0
    with atomic_path(Path(out_video)) as tmp:
        with H264Writer(tmp, info, preset=preset, crf=crf) as writer:
            with EncodeThread(writer) as pipe:
                state: dict = {}
                scratch: dict = {}
                for i, frame in enumerate(frames(video)):
                    slot = pipe.acquire()
                    planes = slot[1]
                    copy_into(frame, planes)
                    if i < n and valid[i]:
                        pose = arrays["pose"][i]
                        inv = g.invert(pose)
                        iod_px = 1.0 / np.hypot(pose[0, 0], pose[1, 0])
                        points, canon = marks.points(i), marks.canon(i)
                        polygon = g.apply(inv, c.mask_polygon(canon))
                        box = c.region(polygon, planes[0].shape[1], planes[0].shape[0], int(feather * iod_px) + 2)
                        if box is not None:
                            x0, y0, x1, y1 = box
                            photo = (planes[0][y0:y1, x0:x1].copy(),
                                     np.dstack([planes[1][y0 // 2:y1 // 2, x0 // 2:x1 // 2],
                                                planes[2][y0 // 2:y1 // 2, x0 // 2:x1 // 2]]))
                            alpha = c.alpha_mask(polygon, box, feather * iod_px)
                            warp_mouth(planes, photo, points, inv, canon, targets[i], bool(closed[i]), box,
                                       alpha, state)
                        close_eyes(planes, points, float(blinks[i]))
                        move_frame(planes, motion[i], points[g.sub(g.NOSE)].mean(0), scratch)
                        rendered += 1
                    pipe.submit(slot, frame.pts)
                    if progress:
                        progress(i + 1, n)
            count = writer.count
    return finish_render(video, out_video, n, count, rendered, warnings, count_passed=False,
                         visemes="generic", source_sync=None, backend=backend)
