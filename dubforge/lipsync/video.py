"""Streaming video I/O with PyAV: frames in, the same frames (timestamps kept) out as H.264."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from dubforge.errors import InputError, Problem


@dataclass(frozen=True)
class StreamInfo:
    width: int
    height: int
    fps: float
    rate: Fraction
    time_base: Fraction
    frame_count: int


def probe(path: Path) -> StreamInfo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(Problem(str(path), "", "expected a video stream, found none"))
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            return StreamInfo(stream.width, stream.height, float(rate), Fraction(rate),
                              stream.time_base or Fraction(1, 90000), stream.frames)
    except av.error.FFmpegError as exc:
        raise InputError(Problem(str(path), "", f"cannot read as video: {exc}")) from exc


def frames(path: Path) -> Iterator:
    """Decoded av.VideoFrame objects in presentation order, one at a time."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)


def yuv_planes(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(buffer, Y, U, V) of a frame as yuv420p; the planes are writable views into the buffer."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    buf = frame.to_ndarray()
    h, w = frame.height, frame.width
    y = buf[:h]
    chroma = buf[h:].reshape(-1)
    q = (h // 2) * (w // 2)
    return buf, y, chroma[:q].reshape(h // 2, w // 2), chroma[q:].reshape(h // 2, w // 2)


def frame_time(frame, index: int, info: StreamInfo) -> float:
    if frame.pts is not None and frame.time_base is not None:
        return float(frame.pts * frame.time_base)
    return index / info.fps


class H264Writer:
    """Encodes yuv420p buffers to a video-only mp4 with the source's frame rate and timestamps."""

    def __init__(self, path: Path, info: StreamInfo, preset: str = "veryfast", crf: int = 18):
        import av

        if info.width % 2 or info.height % 2:
            raise InputError(Problem(str(path), "", f"H.264 4:2:0 needs even dimensions, got {info.width}x{info.height}"))
        self.container = av.open(str(path), mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=info.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = info.width, info.height, "yuv420p"
        self.stream.time_base = info.time_base
        self.stream.codec_context.time_base = info.time_base
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.info = info
        self.count = 0

    def write(self, buf: np.ndarray, pts: int | None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.time_base = self.info.time_base
        frame.pts = pts if pts is not None else round(self.count / self.info.fps / self.info.time_base)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> H264Writer:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.container.close()
