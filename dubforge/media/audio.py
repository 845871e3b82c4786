"""Small audio helpers shared by stages: float32 arrays shaped (samples, channels)."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import av
import numpy as np
from scipy.io import wavfile
from scipy.signal import resample_poly

from dubforge.core.errors import InputError, Problem
from dubforge.core.files import atomic_path

MIX_RATE = 48_000
SPEECH_RATE = 16_000


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as float32 in [-1, 1], shape (samples, channels)."""
    rate, data = wavfile.read(str(path))
    if data.dtype == np.int16:
        data = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        data = data.astype(np.float32) / 2147483648.0
    elif data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128.0) / 128.0
    else:
        data = data.astype(np.float32)
    if data.ndim == 1:
        data = data[:, None]
    return data, int(rate)


def write_wav(path: Path, data: np.ndarray, rate: int) -> Path:
    """Write float audio as 32-bit float WAV, atomically."""
    data = np.asarray(data, dtype=np.float32)
    with atomic_path(Path(path)) as tmp:
        wavfile.write(str(tmp), int(rate), data)
    return Path(path)


def resample(data: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return data

    g = gcd(rate_in, rate_out)
    return resample_poly(data, rate_out // g, rate_in // g, axis=0).astype(np.float32)


def to_channels(data: np.ndarray, channels: int) -> np.ndarray:
    if data.shape[1] == channels:
        return data
    mono = data.mean(axis=1, keepdims=True)
    return np.repeat(mono, channels, axis=1)


def decode_audio(path: Path, key: str) -> tuple[np.ndarray, int]:
    """Any audio file PyAV reads -> float32 (samples, 2) at MIX_RATE; `key` names the manifest key in errors."""
    if path.suffix.lower() == ".wav":
        try:
            return read_wav(path)
        except ValueError:
            pass  # a WAV flavour scipy cannot read: let FFmpeg decode it

    chunks, rate = [], MIX_RATE
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=MIX_RATE)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().T)
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().T)
    if not chunks:
        raise InputError(Problem(str(path), key, "the file contains no audio"))
    return np.concatenate(chunks).astype(np.float32), rate
