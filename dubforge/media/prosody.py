"""Intonation transfer: the source actor's pitch contour imposed on a synthesised line (Praat, no torch).

The source line's F0 (Praat autocorrelation, smoothed) is turned into semitone excursions around its own median,
time-normalised over its voiced span. The dub line keeps its own median pitch (its register); over its voiced
span, its F0 becomes `weight` x the source's excursions + (1 - weight) x its own, the source's span capped at
`MAX_SPAN_ST`. Praat's Manipulation imposes that PitchTier by pitch-synchronous overlap-add (PSOLA), which keeps
the duration and the timing of every phoneme.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import wavfile

VERSION = "1"  # bump when the transfer's output for equal inputs changes (line caches key on it)
FLOOR_HZ, CEILING_HZ = 60.0, 600.0
STEP_S = 0.01
SMOOTH_HZ = 10.0  # Praat's pitch smoothing bandwidth: intonation is the slow part of F0
POINTS = 100  # resolution of a time-normalised contour
MIN_VOICED = 5  # frames; fewer and a line has no usable contour
MAX_SPAN_ST = 12.0  # cap on the source's 5th-95th percentile span imposed on the dub (an octave)


def read_span(path: Path, start: float, end: float) -> tuple[np.ndarray, int]:
    """Mono float32 samples of `path` between `start` and `end` seconds (memory-mapped: long stems are not read)."""
    rate, data = wavfile.read(str(path), mmap=True)
    first, last = max(0, int(start * rate)), max(0, int(end * rate))
    piece = np.asarray(data[first:last], dtype=np.float32)
    if data.dtype == np.int16:
        piece /= 32768.0
    elif data.dtype == np.int32:
        piece /= 2147483648.0
    return (piece.mean(axis=1) if piece.ndim == 2 else piece), int(rate)


def _semitones(hz: np.ndarray) -> np.ndarray:
    return 12.0 * np.log2(hz / 100.0)


def source_contour(samples: np.ndarray, rate: int) -> np.ndarray | None:
    """The line's intonation: `POINTS` semitone excursions around its median over its voiced span, or None
    when it has too little voicing to say."""
    import parselmouth

    if len(samples) < int(0.1 * rate) or not np.any(samples):
        return None
    sound = parselmouth.Sound(np.asarray(samples, dtype=np.float64), sampling_frequency=rate)
    pitch = sound.to_pitch_ac(time_step=STEP_S, pitch_floor=FLOOR_HZ, pitch_ceiling=CEILING_HZ, very_accurate=True,
                              octave_jump_cost=0.5)
    f0 = _call(pitch, "Smooth", SMOOTH_HZ).selected_array["frequency"]
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) < MIN_VOICED:
        return None
    st = _semitones(f0[voiced])
    centre = float(np.median(st))
    st = np.where(st > centre + 9, st - 12, np.where(st < centre - 9, st + 12, st))  # octave jumps of the tracker
    span = np.arange(voiced[0], voiced[-1] + 1)
    curve = np.interp(span, voiced, st)
    if len(curve) >= 5:  # a 5-frame median smooths tracker jitter, keeps the shape
        padded = np.pad(curve, 2, mode="edge")
        curve = np.median(np.lib.stride_tricks.sliding_window_view(padded, 5), axis=1)
    contour = np.interp(np.linspace(0, len(curve) - 1, POINTS), np.arange(len(curve)), curve)
    return contour - float(np.median(contour))


def _spread(values: np.ndarray) -> float:
    return float(np.percentile(values, 95) - np.percentile(values, 5))


def _call(*args: Any) -> Any:
    from parselmouth.praat import call

    return call(*args)


def impose(samples: np.ndarray, rate: int, contour: np.ndarray, weight: float) -> np.ndarray:
    """`samples` (mono) with its F0 moved onto `contour` (from `source_contour`) as described above; the input
    unchanged when it has too little voicing."""
    import parselmouth

    sound = parselmouth.Sound(np.asarray(samples, dtype=np.float64), sampling_frequency=rate)
    manipulation = _call(sound, "To Manipulation", STEP_S, FLOOR_HZ, CEILING_HZ)
    tier = _call(manipulation, "Extract pitch tier")
    count = int(_call(tier, "Get number of points"))
    if count < MIN_VOICED:
        return np.asarray(samples, dtype=np.float32)
    times = np.array([_call(tier, "Get time from index", i) for i in range(1, count + 1)])
    own = _semitones(np.array([_call(tier, "Get value at index", i) for i in range(1, count + 1)]))
    centre = float(np.median(own))
    src = np.asarray(contour, dtype=np.float64)
    if _spread(src) > MAX_SPAN_ST:
        src = src * (MAX_SPAN_ST / _spread(src))
    position = (times - times[0]) / max(times[-1] - times[0], 1e-9)
    wanted = np.interp(position, np.linspace(0, 1, len(src)), src)
    blend = weight * wanted + (1 - weight) * (own - centre)
    # blending two contours narrows the range: rescale it to the source's (the range follows the actor)
    blend *= np.clip(_spread(wanted) / max(_spread(blend), 1e-6), 0.5, 2.0)
    target = centre + blend
    hz = np.clip(100.0 * 2 ** (target / 12.0), FLOOR_HZ, CEILING_HZ)
    new = _call("Create PitchTier", "intonation", sound.xmin, sound.xmax)
    for t, value in zip(times, hz, strict=True):
        _call(new, "Add point", float(t), float(value))
    _call([manipulation, new], "Replace pitch tier")
    out = _call(manipulation, "Get resynthesis (overlap-add)")
    result = np.asarray(out.values[0], dtype=np.float32)
    if len(result) != len(samples):  # PSOLA keeps the length; guard the sample count anyway
        result = np.pad(result, (0, max(0, len(samples) - len(result))))[: len(samples)]
    return result
