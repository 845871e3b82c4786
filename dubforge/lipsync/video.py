"""Streaming video I/O with PyAV: frames in, the same frames (timestamps kept) out as H.264."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from dubforge.core.errors import InputError, Problem


@dataclass(frozen=True)
class Picture:
    """How the stored pixels are meant to be shown: carried from the source onto every rendered picture."""

    rotation: int = 0  # display matrix, degrees counter-clockwise
    sample_aspect_ratio: Fraction | None = None
    field_order: int = 0  # AVFieldOrder: 0 unknown, 1 progressive, 2 tt, 3 bb, 4 tb, 5 bt
    color_primaries: int = 2  # 2 = unspecified (AVColorPrimaries and friends)
    color_trc: int = 2
    colorspace: int = 2
    color_range: int = 0  # 0 unspecified, 1 limited (tv), 2 full (pc)


@dataclass(frozen=True)
class StreamInfo:
    width: int
    height: int
    fps: float
    rate: Fraction
    time_base: Fraction
    frame_count: int
    picture: Picture = Picture()


def probe(path: Path) -> StreamInfo:

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(Problem(str(path), "", "expected a video stream, found none"))
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            cc = stream.codec_context
            first = next(container.decode(stream), None)  # the display matrix arrives as frame side data
            sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
            picture = Picture(
                rotation=rotation(first) if first is not None else 0,
                sample_aspect_ratio=Fraction(sar) if sar and Fraction(sar) != 1 else None,
                field_order=int(cc.field_order or 0), color_primaries=int(cc.color_primaries),
                color_trc=int(cc.color_trc), colorspace=int(cc.colorspace), color_range=int(cc.color_range),
            )
            return StreamInfo(stream.width, stream.height, float(rate), Fraction(rate),
                              stream.time_base or Fraction(1, 90000), stream.frames, picture)
    except av.error.FFmpegError as exc:
        raise InputError(Problem(str(path), "", f"cannot read as video: {exc}")) from exc


def frames(path: Path) -> Iterator:
    """Decoded av.VideoFrame objects in presentation order, one at a time."""

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)


class RgbConverter:
    """Decoded frame -> RGB uint8 array with one reused swscale context: `frame.to_ndarray(format="rgb24")`
    builds a new one for every frame, which costs more than the conversion itself (~1.5 ms of ~2 ms at 720p)."""

    def __init__(self) -> None:
        self._reformatter = av.video.reformatter.VideoReformatter()

    def __call__(self, frame) -> np.ndarray:
        return self._reformatter.reformat(frame, format="rgb24").to_ndarray()


def rgb_frames(path: Path) -> Iterator[tuple]:
    """(av.VideoFrame, its RGB uint8 array) in presentation order, decoded and converted ahead on a
    background thread (see prefetched)."""

    def convert() -> Iterator[tuple]:
        to_rgb = RgbConverter()
        for frame in frames(path):
            yield frame, to_rgb(frame)

    return prefetched(convert())


def prefetched(items: Iterator, depth: int = 4) -> Iterator:
    """The items of `items`, produced on a background thread up to `depth` ahead, so decoding and colour
    conversion (PyAV releases the GIL in both) overlap the consumer's work on a second core. Memory: `depth`
    items. The producer stops when the consumer stops early; its errors are raised in the consumer."""

    todo: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                todo.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    break
            else:
                put((end, None))
        except BaseException as exc:  # re-raised in the consumer
            put((end, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator:
        thread = threading.Thread(target=produce, name="prefetch", daemon=True)
        thread.start()  # on the first next(): a generator never started is never closed
        try:
            while True:
                item, error = todo.get()
                if error is not None:
                    raise error
                if item is end:
                    return
                yield item
        finally:
            stop.set()
            thread.join()

    return consume()


def rotation(frame) -> int:
    """The display rotation of a decoded frame in degrees counter-clockwise (0, 90, 180 or 270): how far
    a player turns the stored pixels to show them (the display matrix; ffprobe's side_data rotation)."""
    try:
        angle = float(frame.rotation or 0)
    except (AttributeError, ValueError):  # pragma: no cover - older PyAV
        return 0
    return int(round(angle / 90.0)) % 4 * 90


def upright(image: np.ndarray, turn: int) -> np.ndarray:
    """Stored pixels -> as displayed (turned `turn` degrees counter-clockwise)."""
    return np.ascontiguousarray(np.rot90(image, k=turn // 90)) if turn else image


def upright_to_stored(points: np.ndarray, turn: int, width: int, height: int) -> np.ndarray:
    """Pixel coordinates (x, y) in the upright image -> the same places in the stored frame (width x height)."""
    x, y = points[..., 0], points[..., 1]
    k = turn // 90 % 4
    if k == 0:
        return points
    if k == 1:  # upright = stored turned 90 ccw: upright (x, y) is stored (width - y, x)
        out = np.stack([width - y, x], axis=-1)
    elif k == 2:
        out = np.stack([width - x, height - y], axis=-1)
    else:
        out = np.stack([y, height - x], axis=-1)
    return out.astype(points.dtype)


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

        if info.width % 2 or info.height % 2:
            raise InputError(Problem(str(path), "", f"H.264 4:2:0 needs even dimensions, got {info.width}x{info.height}"))
        self.container = av.open(str(path), mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=info.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = info.width, info.height, "yuv420p"
        self.stream.time_base = info.time_base
        self.stream.codec_context.time_base = info.time_base
        options: dict[str, str] = {"crf": str(crf), "preset": preset}
        pic, cc = info.picture, self.stream.codec_context
        # The picture is shown as the source's: display matrix, pixel aspect, colour tags, field order.
        if pic.rotation:
            self.stream.set_display_rotation(pic.rotation)
        if pic.sample_aspect_ratio:
            cc.sample_aspect_ratio = pic.sample_aspect_ratio
        cc.color_primaries, cc.color_trc, cc.colorspace = pic.color_primaries, pic.color_trc, pic.colorspace
        cc.color_range = pic.color_range
        if pic.field_order > 1:  # interlaced: x264 codes fields in the source's order (the decoder reads it back)
            cc.field_order = pic.field_order
            options["x264-params"] = "interlaced=1:" + ("tff=1" if pic.field_order in (2, 4) else "bff=1")
        elif pic.field_order == 1:
            cc.field_order = 1
        self.stream.options = dict(options)
        self.info = info
        self.count = 0

    def write(self, buf: np.ndarray, pts: int | None) -> None:

        self.write_frame(av.VideoFrame.from_ndarray(buf, format="yuv420p"), pts)

    def write_frame(self, frame, pts: int | None) -> None:
        """Encode a yuv420p av.VideoFrame (x264 copies it: the frame may be reused once this returns)."""
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


def plane_views(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Writable (Y, U, V) numpy views into a yuv420p av.VideoFrame's own planes (no copy)."""
    out = []
    for plane, (w, h) in zip(frame.planes, ((frame.width, frame.height),) + ((frame.width // 2, frame.height // 2),) * 2):
        out.append(np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:h, :w])
    return out[0], out[1], out[2]


def copy_into(frame, planes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    """Copy a decoded frame's pixels (converted to yuv420p if needed) into (Y, U, V) arrays."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    for dst, src in zip(planes, plane_views(frame)):
        np.copyto(dst, src)


class EncodeThread:
    """Runs an H264Writer on a background thread: PyAV releases the GIL inside x264, so compositing frame
    i+1 overlaps encoding frame i. A fixed pool of frames (reused once x264 has copied them) and a bounded
    queue keep memory constant whatever the clip length.

        with EncodeThread(writer) as pipe:
            frame, (y, u, v) = pipe.acquire()   # fill/modify the planes
            pipe.submit(frame, pts)
    """

    def __init__(self, writer: H264Writer, depth: int = 3):

        self.writer = writer
        self._free: queue.Queue = queue.Queue()
        for _ in range(depth + 2):
            frame = av.VideoFrame(writer.info.width, writer.info.height, "yuv420p")
            self._free.put((frame, plane_views(frame)))
        self._todo: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="h264-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._todo.get()
            if item is None:
                return
            slot, pts = item
            try:
                if self._error is None:
                    self.writer.write_frame(slot[0], pts)
            except BaseException as exc:  # re-raised in the producer
                self._error = exc
            finally:
                self._free.put(slot)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def acquire(self):
        """A free frame and its writable (Y, U, V) views."""
        self._check()
        return self._free.get()

    def submit(self, slot, pts: int | None) -> None:
        self._check()
        self._todo.put((slot, pts))

    def close(self) -> None:
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()
        self._check()

    def __enter__(self) -> EncodeThread:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # stop the worker without masking the original error
            self._error = self._error or exc[1]
            self._todo.put(None)
            self._thread.join()
