"""Small audio helpers shared by stages: float32 arrays shaped (samples, channels).

Whole-track work streams in blocks (`WavReader`, `WavWriter`, `decode_audio_blocks`, `resample_blocks`), so memory
is bounded by a block, not by the length of the source.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from math import gcd
from pathlib import Path

import av
import numpy as np
from scipy.io import wavfile

from dubforge.core.errors import InputError, Problem
from dubforge.core.files import atomic_path

LONG_SOURCE_S = 600.0  # from this length on, a run bounds its heap (`bound_heap`)


def bound_heap(size: int = 1 << 20) -> None:
    """Serve every allocation of `size` bytes or more (audio blocks, Whisper's features) by its own mmap, returned to
    the OS when freed. glibc raises its threshold after each large free, and then carves later blocks out of the
    heap, which fragments: a long run's RSS crept up by 60-90 MB over an hour of blocks and ASR windows. Fixing the
    threshold keeps it flat, at a CPU cost (page faults: about 12% on a minute's decode, resample and loudness), so
    the flow calls this for sources of LONG_SOURCE_S or more only. Process-wide; elsewhere than glibc it does
    nothing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


MIX_RATE = 48_000
SPEECH_RATE = 16_000
BLOCK_S = 10.0  # streamed work holds about this much audio at a time
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE


class WavReader:
    """Random-access blocks of a PCM (8/16/24/32-bit) or float (32/64-bit) WAV as float32 (samples, channels)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as handle:
            riff = handle.read(12)
            if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
                raise ValueError(f"{self.path} is not a RIFF/WAVE file")
            fmt = None
            while True:
                header = handle.read(8)
                if len(header) < 8:
                    raise ValueError(f"{self.path} has no data chunk")
                kind, size = header[:4], struct.unpack("<I", header[4:])[0]
                if kind == b"fmt ":
                    fmt = handle.read(size + (size & 1))
                elif kind == b"data":
                    if fmt is None:
                        raise ValueError(f"{self.path}: data before fmt")
                    self._offset = handle.tell()
                    data_size = size
                    break
                else:
                    handle.seek(size + (size & 1), 1)
        tag, self.channels, self.rate, _, align, bits = struct.unpack("<HHIIHH", fmt[:16])
        if tag == _EXTENSIBLE and len(fmt) >= 26:
            tag = struct.unpack("<H", fmt[24:26])[0]
        kinds = {(_PCM, 8): "u1", (_PCM, 16): "<i2", (_PCM, 24): "i3", (_PCM, 32): "<i4",
                 (_FLOAT, 32): "<f4", (_FLOAT, 64): "<f8"}
        if (tag, bits) not in kinds or self.channels < 1 or align != self.channels * bits // 8:
            raise ValueError(f"{self.path}: unsupported WAV format (tag {tag}, {bits} bits)")
        self._kind, self._width = kinds[(tag, bits)], bits // 8
        file_size = self.path.stat().st_size
        self.frames = min(data_size, file_size - self._offset) // align

    def read(self, start: int, count: int) -> np.ndarray:
        start = max(0, min(start, self.frames))
        count = max(0, min(count, self.frames - start))
        width, channels = self._width, self.channels
        with open(self.path, "rb") as handle:
            handle.seek(self._offset + start * width * channels)
            raw = handle.read(count * width * channels)
        if self._kind == "i3":  # 24-bit: widen to int32 (little endian, sign from the top byte)
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
            data = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)).astype(np.float32) / 2147483648.0
        else:
            data = np.frombuffer(raw, self._kind)
            if self._kind == "u1":
                data = (data.astype(np.float32) - 128.0) / 128.0
            elif self._kind == "<i2":
                data = data.astype(np.float32) / 32768.0
            elif self._kind == "<i4":
                data = data.astype(np.float32) / 2147483648.0
            else:
                data = data.astype(np.float32)
        return data.reshape(-1, channels)

    def blocks(self, seconds: float = BLOCK_S) -> Iterator[np.ndarray]:
        size = max(1, int(seconds * self.rate))
        for start in range(0, self.frames, size):
            yield self.read(start, size)


class WavWriter:
    """Append float32 blocks to a 32-bit float WAV; the header is completed by `close()`."""

    def __init__(self, path: Path, rate: int, channels: int):
        self.path, self.rate, self.channels, self.frames = Path(path), int(rate), int(channels), 0
        self._handle = open(self.path, "wb")
        self._handle.write(self._header())

    def _header(self) -> bytes:
        data, align = self.frames * self.channels * 4, self.channels * 4
        fmt = struct.pack("<HHIIHH", _FLOAT, self.channels, self.rate, self.rate * align, align, 32)
        riff = struct.pack("<I", 4 + 8 + len(fmt) + 8 + data)
        return b"RIFF" + riff + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data)

    def write(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype="<f4")
        block = block.reshape(-1, 1) if block.ndim == 1 else block
        if block.shape[1] != self.channels:
            raise ValueError(f"{self.path}: block has {block.shape[1]} channels, the file {self.channels}")
        self._handle.write(np.ascontiguousarray(block).tobytes())
        self.frames += len(block)

    def close(self) -> None:
        if self._handle.closed:
            return
        self._handle.seek(0)
        self._handle.write(self._header())
        self._handle.close()


@contextmanager
def wav_writer(path: Path, rate: int, channels: int) -> Iterator[WavWriter]:
    """A WavWriter on a temporary name, renamed to `path` when the block exits cleanly."""
    with atomic_path(Path(path)) as tmp:
        writer = WavWriter(tmp, rate, channels)
        try:
            yield writer
        finally:
            writer.close()


def fitted(blocks: Iterable[np.ndarray], length: int, channels: int) -> Iterator[np.ndarray]:
    """`blocks` cut or zero-padded to exactly `length` samples."""
    done = 0
    for block in blocks:
        block = block[: max(0, length - done)]
        done += len(block)
        if len(block):
            yield block
    while done < length:
        count = min(length - done, int(BLOCK_S * MIX_RATE))
        yield np.zeros((count, channels), np.float32)
        done += count


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


def regrouped(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The same samples in blocks of exactly `size` (the last may be shorter): streams with different block
    boundaries can then be zipped."""
    parts: list[np.ndarray] = []
    held = 0
    for block in blocks:
        parts.append(block)
        held += len(block)
        if held >= size:
            joined = np.concatenate(parts)
            cut = len(joined) - len(joined) % size
            yield from np.split(joined[:cut], cut // size)
            parts, held = [joined[cut:]], len(joined) - cut
    if held:
        yield np.concatenate(parts)


def two_ways(blocks: Iterable[np.ndarray]) -> tuple[Iterator[np.ndarray], Iterator[np.ndarray]]:
    """Two iterators over the same blocks, each block released once both have taken it (itertools.tee holds
    up to 57 items in each of its link cells: 57 blocks of audio)."""
    source = iter(blocks)
    queues: tuple[deque[np.ndarray], deque[np.ndarray]] = (deque(), deque())

    def side(queue: deque[np.ndarray]) -> Iterator[np.ndarray]:
        while True:
            if not queue:
                block = next(source, None)
                if block is None:
                    return
                for q in queues:
                    q.append(block)
            yield queue.popleft()

    return side(queues[0]), side(queues[1])


class Rechunker:
    """Push blocks of any length; `process(ext, ext_start, start, end, last)` is called for consecutive chunks
    [start, end) of `chunk` samples (the last may be shorter), with `ext` holding samples [ext_start, end + context)
    (fewer at the edges of the signal): filters that look `context` samples around see what the whole signal
    would give them. `last` is True only for the final chunk (from `close`)."""

    def __init__(self, chunk: int, context: int, process: Callable[[np.ndarray, int, int, int, bool], None]):
        self.chunk, self.context, self.process = int(chunk), int(context), process
        self._parts: list[np.ndarray] = []
        self._buffered = 0
        self._start = 0  # global index of the buffer's first sample
        self._next = 0  # the next chunk's first sample
        self.total = 0

    def push(self, block: np.ndarray) -> None:
        if not len(block):
            return
        self._parts.append(block)
        self._buffered += len(block)
        self.total += len(block)
        if self.total <= self._next + self.chunk + self.context:  # keep one sample more: close() has a last chunk
            return
        buf = np.concatenate(self._parts) if len(self._parts) > 1 else self._parts[0]
        while self.total > self._next + self.chunk + self.context:
            ext_start = max(0, self._next - self.context)
            end = self._next + self.chunk
            ext = buf[ext_start - self._start : end + self.context - self._start]
            self.process(ext, ext_start, self._next, end, False)
            self._next = end
        keep = max(0, self._next - self.context) - self._start
        self._parts, self._start = [buf[keep:]], self._start + keep
        self._buffered = len(self._parts[0])

    def close(self) -> None:
        buf = np.concatenate(self._parts) if len(self._parts) > 1 else (self._parts[0] if self._parts else None)
        while buf is not None and self._next < self.total:
            ext_start = max(0, self._next - self.context)
            end = min(self._next + self.chunk, self.total)
            self.process(buf[ext_start - self._start :], ext_start, self._next, end, end == self.total)
            self._next = end
        self._parts = []


def resample_blocks(blocks: Iterable[np.ndarray], rate_in: int, rate_out: int) -> Iterator[np.ndarray]:
    """`resample` of the concatenated blocks, block by block (the same samples, to float rounding)."""
    if rate_in == rate_out:
        yield from blocks
        return
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    # resample_poly's filter reaches 10 * max(up, down) upsampled samples each way; whole multiples of `down`
    # keep every chunk's first output sample on the whole signal's output grid
    context = -(-(10 * max(up, down) // up + 4) // down) * down
    chunk = max(1, int(BLOCK_S * rate_in) // down) * down
    out: list[np.ndarray] = []

    from scipy.signal import resample_poly  # ~0.8 s to import: a cached re-run never pays it

    def process(ext: np.ndarray, ext_start: int, start: int, end: int, last: bool) -> None:
        y = resample_poly(ext, up, down, axis=0)
        first = (start - ext_start) * up // down
        count = -(-end * up // down) - start * up // down
        out.append(y[first : first + count].astype(np.float32))

    chunker = Rechunker(chunk, context, process)
    for block in blocks:
        chunker.push(block)
        yield from out
        out.clear()
    chunker.close()
    yield from out


def resample(data: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return data

    from scipy.signal import resample_poly  # ~0.8 s to import: a cached re-run never pays it

    g = gcd(rate_in, rate_out)
    return resample_poly(data, rate_out // g, rate_in // g, axis=0).astype(np.float32)


def to_channels(data: np.ndarray, channels: int) -> np.ndarray:
    if data.shape[1] == channels:
        return data
    mono = data.mean(axis=1, keepdims=True)
    return np.repeat(mono, channels, axis=1)


def decode_audio_blocks(path: Path, key: str, rate: int = MIX_RATE, layout: str = "stereo",
                        stream_index: int = 0) -> Iterator[np.ndarray]:
    """Any audio file PyAV reads, decoded and resampled by FFmpeg as float32 (samples, channels) blocks of
    about BLOCK_S at `rate`. A float WAV (what the stages write) is read as it is, resampled here."""
    if path.suffix.lower() == ".wav":
        try:
            reader = WavReader(path)
        except ValueError:
            pass  # a WAV flavour this reader does not know: let FFmpeg decode it
        else:
            channels = 1 if layout == "mono" else 2
            yield from resample_blocks((to_channels(b, channels) for b in reader.blocks()), reader.rate, rate)
            return
    size = int(BLOCK_S * rate)
    parts: list[np.ndarray] = []
    held = 0
    found = False
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise InputError(Problem(str(path), key, "the file contains no audio"))
        stream = container.streams.audio[stream_index]
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        for frame in chain(container.decode(stream), [None]):  # None flushes the resampler
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().T)
                held += out.samples
                found = True
            if held >= size or (frame is None and parts):
                yield np.concatenate(parts).astype(np.float32)
                parts, held = [], 0
    if not found:
        raise InputError(Problem(str(path), key, "the file contains no audio"))


def decode_audio(path: Path, key: str) -> tuple[np.ndarray, int]:
    """Any audio file PyAV reads -> float32 (samples, 2) at MIX_RATE, whole; `key` names the manifest key in errors."""
    return np.concatenate(list(decode_audio_blocks(path, key))), MIX_RATE
