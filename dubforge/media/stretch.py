"""Pitch-preserving time-stretch with FFmpeg's `atempo` (WSOLA), run in memory through PyAV.

Resampling would shorten the audio too, but raises the pitch with it (the "chipmunk" effect);
atempo keeps the pitch and timbre and only removes time.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

_CHUNK = 1 << 16  # samples per frame pushed into the graph


def _layout(channels: int) -> str:
    return {1: "mono", 2: "stereo"}.get(channels, f"{channels}c")


def time_stretch(samples: np.ndarray, rate: int, speed: float) -> np.ndarray:
    """Play `samples` (shape (n, channels), float32) `speed` times faster at the same pitch.

    The result has exactly round(n / speed) samples (atempo's own length is within a few ms of that;
    the remainder is trimmed or zero-padded). `speed` 1 returns the input unchanged.
    """

    data = np.asarray(samples, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]
    if data.ndim != 2:
        raise ValueError(f"expected samples shaped (n, channels), got {data.shape}")
    if not 0.5 <= speed <= 100.0:
        raise ValueError(f"speed must be within atempo's range 0.5..100, got {speed}")
    n, channels = data.shape
    target = int(round(n / speed))
    if speed == 1.0 or n == 0:
        return data

    graph = av.filter.Graph()
    source = graph.add_abuffer(
        format="fltp", sample_rate=rate, layout=_layout(channels), time_base=Fraction(1, rate)
    )
    tempo = graph.add("atempo", f"tempo={speed:.9f}")
    sink = graph.add("abuffersink")
    source.link_to(tempo)
    tempo.link_to(sink)
    graph.configure()

    planar = np.ascontiguousarray(data.T)
    pieces: list[np.ndarray] = []

    def drain() -> None:
        while True:
            try:
                frame = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            array = frame.to_ndarray()
            # atempo may hand back packed samples: (1, n * channels), interleaved
            pieces.append(array if frame.format.is_planar else array.reshape(-1, channels).T)

    for offset in range(0, n, _CHUNK):
        frame = av.AudioFrame.from_ndarray(planar[:, offset : offset + _CHUNK], format="fltp", layout=_layout(channels))
        frame.sample_rate = rate
        frame.pts = offset
        frame.time_base = Fraction(1, rate)
        graph.push(frame)
        drain()
    graph.push(None)
    drain()

    out = np.concatenate(pieces, axis=1).T if pieces else np.zeros((0, channels), np.float32)
    if len(out) >= target:
        return np.ascontiguousarray(out[:target], dtype=np.float32)
    return np.concatenate([out, np.zeros((target - len(out), channels), np.float32)]).astype(np.float32)
