"""Loudness delivery presets, measurement (BS.1770 integrated + true peak) and normalisation.

pyloudnorm only measures and applies a plain gain. A gain that lands a dynamic mix on -14 or -23
LUFS often pushes its peaks over the true-peak ceiling, and lowering the gain again would miss the
loudness target, so normalise() adds a look-ahead true-peak limiter that turns down only the short
peaks, then re-measures and re-gains until both numbers are in spec.

Everything streams: the meter, the true-peak envelope and the limiter take blocks of any length and give the
whole signal's results (to float rounding), so a track of any length is measured and normalised in constant
memory (`normalise_to_wav`); the array functions feed the same code one array.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from scipy.ndimage import minimum_filter1d

from dubforge.media.audio import BLOCK_S, Rechunker, WavReader, WavWriter, wav_writer

OVERSAMPLE = 4
TOLERANCE_LU = 0.1
MAX_PASSES = 4
LIMIT_MARGIN_DB = 0.2  # the limiter aims this far under the ceiling (inter-sample slack)
BLOCK_S_LIMITER = 0.001  # the limiter's gain is computed per block of this length
LOOKAHEAD_S = 0.005
RELEASE_S = 0.08


@dataclass(frozen=True)
class Preset:
    name: str
    target_lufs: float
    ceiling_dbtp: float
    dialogue_gated: bool = False


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("ebu-r128", -23.0, -1.0),
        Preset("atsc-a85", -24.0, -2.0),
        Preset("netflix", -27.0, -2.0, dialogue_gated=True),
        Preset("web", -14.0, -1.0),
    )
}


def preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown loudness preset {name!r} (known: {', '.join(PRESETS)})") from None


_lookup = preset  # normalise() names its parameter `preset` too


def _2d(samples: np.ndarray) -> np.ndarray:
    data = np.asarray(samples, dtype=np.float64)
    return data[:, None] if data.ndim == 1 else data


_GATE_BLOCK_S, _GATE_STEP = 0.4, 0.25  # BS.1770 gating blocks: 400 ms, 75% overlap
_CHANNEL_GAINS = (1.0, 1.0, 1.0, 1.41, 1.41)
_ABSOLUTE_GATE = -70.0


class LoudnessMeter:
    """BS.1770-4 gated integrated loudness fed block by block: pyloudnorm's K-weighting filters, block bounds and
    gating, with the filter state and per-block sums carried across blocks (so any split gives the same result)."""

    def __init__(self, rate: int, channels: int):
        import pyloudnorm

        self.rate, self.channels, self.samples = int(rate), int(channels), 0
        self._stages = [(f.passband_gain, f.b, f.a) for f in pyloudnorm.Meter(rate)._filters.values()]
        self._state = [np.zeros((max(len(a), len(b)) - 1, channels)) for _, b, a in self._stages]
        self._sum = np.zeros(channels)  # sum of squares of the weighted signal so far
        self._next = 0  # next gating block whose lower bound is still ahead
        self._open: dict[int, np.ndarray] = {}  # block -> sum at its lower bound
        # sums of squares of the finished blocks, in order: rows [0, _count) of one growing array (an hour is 36 000
        # blocks; as one small array each they held about 5 MB per meter)
        self._done = np.zeros((256, channels))
        self._count = 0

    def _bound(self, j: float) -> int:
        return int(_GATE_BLOCK_S * j * self.rate)  # pyloudnorm's arithmetic, for the same samples

    def add(self, block: np.ndarray) -> None:
        data = np.asarray(block, dtype=np.float64).reshape(len(block), self.channels)
        if not len(data):
            return
        from scipy.signal import lfilter  # ~0.8 s to import: a cached re-run never pays it

        for k, (gain, b, a) in enumerate(self._stages):
            data, self._state[k] = lfilter(b, a, data, axis=0, zi=self._state[k])
            data = gain * data
        running = np.cumsum(np.square(data), axis=0)
        running += self._sum
        first, last = self.samples, self.samples + len(data)

        def at(i: int) -> np.ndarray:
            return self._sum if i == first else running[i - first - 1]

        while self._bound(self._next * _GATE_STEP) <= last:
            self._open[self._next] = at(self._bound(self._next * _GATE_STEP)).copy()
            self._next += 1
        for j in sorted(self._open):
            upper = self._bound(j * _GATE_STEP + 1)
            if upper > last:
                break
            if self._count == len(self._done):
                self._done = np.concatenate([self._done, np.zeros_like(self._done)])
            self._done[self._count] = at(upper) - self._open.pop(j)
            self._count += 1
        self._sum, self.samples = running[-1].copy(), last

    def integrated(self) -> float:
        """Loudness of everything added (-inf for silence); call once, at the end."""
        minimum = int(np.ceil(_GATE_BLOCK_S * self.rate)) + 1
        if self.samples < minimum:  # the meter needs one 400 ms block; zeros are gated out anyway
            self.add(np.zeros((minimum - self.samples, self.channels)))
        seconds = self.samples / self.rate
        count = int(np.round((seconds - _GATE_BLOCK_S) / (_GATE_BLOCK_S * _GATE_STEP))) + 1
        cut = [self._sum - self._open[j] for j in sorted(self._open)]  # blocks cut by the end
        sums = np.concatenate([self._done[: self._count], np.reshape(cut, (-1, self.channels))])
        z = np.zeros((count, self.channels))
        z[: min(count, len(sums))] = sums[:count]
        z /= _GATE_BLOCK_S * self.rate
        weights = np.array(_CHANNEL_GAINS[: self.channels])
        with np.errstate(divide="ignore"):
            levels = -0.691 + 10.0 * np.log10(z @ weights)
            above = levels >= _ABSOLUTE_GATE
            if not above.any():
                return float("-inf")
            relative = -0.691 + 10.0 * np.log10(z[above].mean(axis=0) @ weights) - 10.0
            gated = (levels > relative) & (levels > _ABSOLUTE_GATE)
            mean = z[gated].mean(axis=0) if gated.any() else np.zeros(self.channels)
            return float(-0.691 + 10.0 * np.log10(mean @ weights))


def integrated_lufs(samples: np.ndarray, rate: int) -> float:
    """BS.1770-4 gated integrated loudness (pyloudnorm's definition); -inf for silence."""
    data = _2d(samples)
    meter = LoudnessMeter(rate, data.shape[1])
    meter.add(data)
    return meter.integrated()


def _peak_envelope(data: np.ndarray) -> np.ndarray:
    """Per-sample true-peak magnitude (max over channels and the 4 oversampled points)."""

    from scipy.signal import resample_poly  # ~0.8 s to import: a cached re-run never pays it

    planar = np.ascontiguousarray(data.T, dtype=np.float32)  # float32, time on the last axis: ~3x faster
    over = resample_poly(planar, OVERSAMPLE, 1, axis=1)[:, : len(data) * OVERSAMPLE]
    np.abs(over, out=over)
    peak = over[0] if len(over) == 1 else np.maximum.reduce(list(over))
    return peak.reshape(len(data), OVERSAMPLE).max(axis=1)


_PEAK_CONTEXT = 32  # samples around a chunk: more than the oversampling filter's reach (10 samples)
_PEAK_PIECE = 4096  # samples: a chunk's pieces are oversampled loudest first, until none can beat the peak


@cache
def _filter_gain() -> float:
    """The most the oversampling filter can make of a signal within [-1, 1]: per output phase, the sum of its taps'
    magnitudes (the taps are the oversampled unit impulse), the largest phase; a margin for float rounding."""
    from scipy.signal import resample_poly

    impulse = np.zeros(64, np.float32)
    impulse[32] = 1.0
    taps = np.abs(resample_poly(impulse, OVERSAMPLE, 1))
    return max(float(taps[phase::OVERSAMPLE].sum()) for phase in range(OVERSAMPLE)) * (1 + 1e-4)


class PeakMeter:
    """True peak (4x oversampled) of a signal fed block by block. A piece of the signal whose samples, times the
    filter's gain, stay under the peak found so far cannot hold the peak, so it is not oversampled (the result is
    the same; most of a programme is skipped)."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._chunks = Rechunker(int(BLOCK_S * 48_000), _PEAK_CONTEXT, self._process)

    def _process(self, ext: np.ndarray, ext_start: int, start: int, end: int, last: bool) -> None:
        magnitude = np.abs(ext).max(axis=1) if ext.ndim == 2 else np.abs(ext)
        pieces = []
        for a in range(start, end, _PEAK_PIECE):
            lo, hi = max(a - _PEAK_CONTEXT, ext_start), min(a + _PEAK_PIECE + _PEAK_CONTEXT, ext_start + len(ext))
            pieces.append((float(magnitude[lo - ext_start : hi - ext_start].max()), a, lo, hi))
        for loudest, a, lo, hi in sorted(pieces, reverse=True):
            if loudest * _filter_gain() <= self.peak:
                break
            b = min(a + _PEAK_PIECE, end)
            envelope = _peak_envelope(ext[lo - ext_start : hi - ext_start])[a - lo : b - lo]
            self.peak = max(self.peak, float(envelope.max()) if len(envelope) else 0.0)

    def add(self, block: np.ndarray) -> None:
        self._chunks.push(np.asarray(block, dtype=np.float32))

    def result(self) -> float:
        """The peak (linear); call once, at the end."""
        self._chunks.close()
        return self.peak


def dbtp(peak: float) -> float:
    return 20 * np.log10(peak) if peak > 0 else -np.inf


def true_peak_dbtp(samples: np.ndarray, rate: int) -> float:
    data = _2d(samples)
    if not len(data):
        return -np.inf
    peak = float(_peak_envelope(data).max())
    return 20 * np.log10(peak) if peak > 0 else -np.inf


def measure(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """(integrated LUFS, true peak dBTP with 4x oversampling)."""
    return integrated_lufs(samples, rate), true_peak_dbtp(samples, rate)


def _block_size(rate: int) -> int:
    return max(1, int(round(BLOCK_S_LIMITER * rate)))


def _targets(env: np.ndarray, ceiling: float) -> np.ndarray:
    """Per 1 ms block: the gain each block must not exceed, ramped down over the look-ahead (before the release)."""
    need = np.minimum(1.0, ceiling / np.maximum(env, 1e-12))
    ahead = max(1, int(round(LOOKAHEAD_S / BLOCK_S_LIMITER)))
    # window [k-1, k+ahead]: covers the neighbours that linear interpolation between block centres mixes in
    size = ahead + 2
    lowest = minimum_filter1d(need, size=size, origin=-(size // 2) + 1, mode="nearest")
    padded = np.concatenate([np.full(ahead - 1, lowest[0]), lowest])
    smooth = np.convolve(padded, np.ones(ahead) / ahead, mode="valid")  # mean of lowest[k-ahead+1 .. k]
    return np.minimum(smooth, lowest)  # guards float rounding


class _Release:
    """The one-pole release, carried from block to block."""

    def __init__(self) -> None:
        self.alpha, self.current = np.exp(-BLOCK_S_LIMITER / RELEASE_S), 1.0

    def __call__(self, targets: np.ndarray) -> np.ndarray:
        gain, current, alpha = targets.tolist(), self.current, self.alpha
        for k, g in enumerate(gain):
            if current == 1.0 and g >= 1.0:
                continue
            current = min(g, alpha * current + (1 - alpha) * g)
            current = 1.0 if current > 0.99999 else current
            gain[k] = current
        self.current = current
        return np.asarray(gain)


def _centres(first: int, count: int, block: int) -> np.ndarray:
    return (np.arange(first, first + count) + 0.5) * block - 0.5


def limit(samples: np.ndarray, rate: int, ceiling_dbtp: float, envelope: np.ndarray | None = None) -> np.ndarray:
    """Look-ahead true-peak limiter: a smooth gain envelope that keeps every oversampled peak <= ceiling.

    Per 1 ms block the required gain comes from the oversampled peaks (`envelope`, computed when not
    given); a minimum filter over the look-ahead window and a box average of the same length make the
    gain ramp down before a peak (never above the required gain), and a one-pole release lets it
    recover smoothly.
    """

    data = _2d(samples)
    n = len(data)
    if not n:
        return data.astype(np.float32)
    ceiling = 10 ** (ceiling_dbtp / 20)
    block = _block_size(rate)
    blocks = -(-n // block)
    env = _peak_envelope(data) if envelope is None else envelope
    env = np.concatenate([env, np.zeros(blocks * block - n)]).reshape(blocks, block).max(axis=1)
    gain = _Release()(_targets(env, ceiling))
    per_sample = np.interp(np.arange(n), _centres(0, blocks, block), gain)
    return (data * per_sample[:, None]).astype(np.float32)


class StreamLimiter:
    """`limit` on a signal fed block by block: `emit` gets the limited samples, in order, about a chunk late."""

    CONTEXT_BLOCKS = 17  # > the targets' reach (ahead + 2 blocks each way) plus the oversampling filter's

    def __init__(self, rate: int, ceiling_dbtp: float, emit: Callable[[np.ndarray], None]):
        self.block = _block_size(rate)
        self.ceiling, self.emit = 10 ** (ceiling_dbtp / 20), emit
        self._release = _Release()
        self._previous: tuple[float, float] | None = None  # (centre, gain) of the block before the chunk
        self._done = 0  # samples emitted
        chunk = max(1, int(BLOCK_S * rate) // self.block) * self.block
        self._chunks = Rechunker(chunk, self.CONTEXT_BLOCKS * self.block, self._process)

    def _process(self, ext: np.ndarray, ext_start: int, start: int, end: int, last: bool) -> None:
        block = self.block
        data = np.asarray(ext, dtype=np.float64)
        blocks = -(-len(data) // block)
        env = _peak_envelope(data)
        env = np.concatenate([env, np.zeros(blocks * block - len(data))]).reshape(blocks, block).max(axis=1)
        first, stop = start // block, -(-end // block)
        offset = ext_start // block
        gain = self._release(_targets(env, self.ceiling)[first - offset : stop - offset])
        centres = _centres(first, stop - first, block)
        if self._previous is not None:
            centres, gain = np.concatenate([[self._previous[0]], centres]), np.concatenate([[self._previous[1]], gain])
        upto = end if last else int(np.floor(centres[-1])) + 1  # samples past the last centre wait for the next gain
        positions = np.arange(self._done, upto)
        per_sample = np.interp(positions, centres, gain)
        self.emit((data[self._done - ext_start : upto - ext_start] * per_sample[:, None]).astype(np.float32))
        self._previous, self._done = (centres[-1], gain[-1]), upto

    def add(self, block: np.ndarray) -> None:
        self._chunks.push(np.asarray(block, dtype=np.float32))

    def close(self) -> None:
        self._chunks.close()


class _Spool:
    """Where an intermediate pass is kept: in memory (`folder` None) or in a float WAV in `folder`."""

    def __init__(self, folder: Path | None, rate: int, channels: int):
        self._blocks: list[np.ndarray] = []
        self.path: Path | None = None
        self._writer: WavWriter | None = None
        if folder is not None:
            handle, name = tempfile.mkstemp(prefix=".loudness-", suffix=".wav", dir=folder)
            os.close(handle)
            self.path = Path(name)
            self._writer = WavWriter(self.path, rate, channels)

    def write(self, block: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.write(block)
        else:
            self._blocks.append(block)

    def blocks(self) -> Iterator[np.ndarray]:
        if self._writer is not None:
            self._writer.close()
            yield from WavReader(self.path).blocks()  # type: ignore[arg-type]
        else:
            yield from self._blocks

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


Dialogue = Callable[[int, int], np.ndarray]  # (first sample, count) -> where dubbed dialogue plays (bool per sample)


def _measure(blocks: Iterable[np.ndarray], rate: int, channels: int, dialogue: Dialogue | None,
             sink: Callable[[np.ndarray], None] | None = None) -> tuple[float, float]:
    """(integrated loudness, gated to `dialogue` when given and not empty, true peak linear) of the blocks,
    each passed on to `sink` as well."""
    everything, speech, peak = LoudnessMeter(rate, channels), LoudnessMeter(rate, channels), PeakMeter()
    done = 0
    for block in blocks:
        everything.add(block)
        peak.add(block)
        if dialogue is not None:
            speech.add(block[dialogue(done, len(block))])
        if sink is not None:
            sink(block)
        done += len(block)
    gated = dialogue is not None and speech.samples > 0
    return (speech if gated else everything).integrated(), peak.result()


def _normalise(source: Callable[[], Iterable[np.ndarray]], rate: int, channels: int, preset: str,
               dialogue: Dialogue | None, sink: Callable[[np.ndarray], None],
               folder: Path | None) -> tuple[float, float]:
    """Stream core of `normalise_measured`: passes over `source()` (called once per pass), the result to `sink`."""
    spec = _lookup(preset)
    gate = dialogue if spec.dialogue_gated else None
    loudness, peak = _measure(source(), rate, channels, gate)
    current, gain, spools = source, 1.0, []
    try:
        if np.isfinite(loudness):
            for _ in range(MAX_PASSES):
                gain = 10 ** ((spec.target_lufs - loudness) / 20)
                peak *= gain  # the oversampling filter is linear: no need to re-measure
                loudness = spec.target_lufs  # likewise loudness: a gain of g dB moves it by exactly g
                if dbtp(peak) <= spec.ceiling_dbtp - LIMIT_MARGIN_DB / 2:
                    break  # gain only: loudness is now on target
                limited = _Spool(folder, rate, channels)
                spools.append(limited)
                limiter = StreamLimiter(rate, spec.ceiling_dbtp - LIMIT_MARGIN_DB, limited.write)
                for block in current():
                    limiter.add((block * gain).astype(np.float32))
                limiter.close()
                if len(spools) > 1:
                    spools.pop(0).discard()  # the pass before: no longer read
                current, gain = limited.blocks, 1.0
                loudness, peak = _measure(current(), rate, channels, gate)
                if abs(loudness - spec.target_lufs) <= TOLERANCE_LU:
                    break
        for block in current():
            sink(block if gain == 1.0 else (block * gain).astype(np.float32))
    finally:
        for spool in spools:
            spool.discard()
    return loudness, dbtp(peak)


def normalise(samples: np.ndarray, rate: int, preset: str, dialogue_mask: np.ndarray | None = None) -> np.ndarray:
    """`normalise_measured` without the levels."""
    return normalise_measured(samples, rate, preset, dialogue_mask)[0]


def normalise_measured(
    samples: np.ndarray, rate: int, preset: str, dialogue_mask: np.ndarray | None = None
) -> tuple[np.ndarray, float, float]:
    """Bring `samples` (n, channels) to the preset's integrated loudness with true peak <= its ceiling;
    return them with their integrated loudness (dialogue-gated for netflix) and true peak.

    Dialogue-gated presets (netflix) measure loudness only where `dialogue_mask` is True (all audio
    when no mask is given). Silence is returned unchanged. The limiter runs last, so the ceiling holds
    even if the loudness is still a little off after MAX_PASSES passes.
    """
    data = _2d(samples).astype(np.float32)
    dialogue = None
    if dialogue_mask is not None:
        mask = np.asarray(dialogue_mask, dtype=bool)
        if mask.shape[0] != data.shape[0]:
            raise ValueError(f"dialogue mask has {mask.shape[0]} samples, audio has {data.shape[0]}")
        dialogue = lambda start, count: mask[start : start + count]  # noqa: E731
    out: list[np.ndarray] = []
    loudness, peak = _normalise(lambda: [data], rate, data.shape[1], preset, dialogue, out.append, None)
    return (np.concatenate(out) if out else data), loudness, peak


def normalise_to_wav(source: Callable[[], Iterable[np.ndarray]], rate: int, channels: int, preset: str, out_wav: Path,
                     dialogue: Dialogue | None = None) -> tuple[float, float]:
    """`normalise_measured` of the blocks `source()` yields (called once per pass), written block by block to
    `out_wav` (float WAV, atomically); intermediate passes are spooled to files beside it. Returns
    (integrated loudness, true peak dBTP)."""
    out_wav = Path(out_wav)
    with wav_writer(out_wav, rate, channels) as writer:
        return _normalise(source, rate, channels, preset, dialogue, writer.write, out_wav.parent)
