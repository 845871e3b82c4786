"""Mix a language's dialogue track with the background and deliver it at a loudness preset.

replace:    dub + M&E stem (the original dialogue is gone).
voice_over: dub + the original mix, ducked by `duck_db` under dubbed speech.
The dub is levelled first so that its dialogue sits where the original dialogue sat: at the original
mix's integrated loudness when it is known (dialogue dominates a programme's loudness), else 10 LU
over the M&E bed. The whole mix is then normalised to the preset (true-peak limited).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from dubforge.core.contracts import DubTrack, FittedLine, Mix, Stems
from dubforge.core.errors import StageError
from dubforge.media import loudness
from dubforge.media.audio import MIX_RATE, read_wav, resample, to_channels, write_wav

DUCK_LEAD_S = 0.1  # the ramp down starts this long before a line
DUCK_RAMP_S = 0.15
BED_BELOW_DIALOGUE_LU = 10.0
DEFAULT_DIALOGUE_LUFS = -23.0
CENTRE = 10 ** (-3 / 20)  # equal-power pan law: a centred mono source sits 3 dB down in each channel


def _load(path: Path, n: int, what: str) -> np.ndarray:
    if not Path(path).is_file():
        raise StageError(f"{what} not found: {path}")
    data, rate = read_wav(path)
    data = to_channels(resample(data, rate, MIX_RATE), 2)
    if len(data) >= n:
        return data[:n]
    return np.concatenate([data, np.zeros((n - len(data), 2), np.float32)])


def _spans(lines: tuple[FittedLine, ...], duration: float) -> list[tuple[float, float]]:
    """Placed spans of the lines, clipped to the video (lines cut at the end stop there)."""
    return [(ln.start, min(ln.end, duration)) for ln in lines if min(ln.end, duration) > ln.start]


def dialogue_mask(lines: tuple[FittedLine, ...], n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    for start, end in _spans(lines, n / MIX_RATE):
        mask[int(round(start * MIX_RATE)) : int(round(end * MIX_RATE))] = True
    return mask


def duck_envelope(lines: tuple[FittedLine, ...], n: int, duck_db: float) -> np.ndarray:
    """Linear gain per sample: 1 away from speech, 10^(duck_db/20) under it, with 150 ms ramps in dB
    that start 100 ms before each line and rise after it ends."""
    depth = np.zeros(n)  # 0 = no duck, 1 = full duck
    for start, end in _spans(lines, n / MIX_RATE):
        down = start - DUCK_LEAD_S
        lo = max(0, int(np.floor(down * MIX_RATE)))
        hi = min(n, int(np.ceil((end + DUCK_RAMP_S) * MIX_RATE)))
        if hi <= lo:
            continue
        t = np.arange(lo, hi) / MIX_RATE
        shape = np.minimum(np.clip((t - down) / DUCK_RAMP_S, 0, 1), np.clip((end + DUCK_RAMP_S - t) / DUCK_RAMP_S, 0, 1))
        depth[lo:hi] = np.maximum(depth[lo:hi], shape)
    return (10 ** (duck_db * depth / 20)).astype(np.float32)


@lru_cache(maxsize=8)
def _file_loudness(path: Path, size: int, mtime_ns: int) -> float:
    """Loudness of a WAV, memoised: every language's mix measures the same original."""
    data, rate = read_wav(path)
    return loudness.integrated_lufs(data, rate)


def _dialogue_reference(reference: Path | None, bed: np.ndarray | None) -> float:
    if reference is not None:
        stat = Path(reference).stat()
        level = _file_loudness(Path(reference), stat.st_size, stat.st_mtime_ns)
        if np.isfinite(level):
            return level
    if bed is not None:
        level = loudness.integrated_lufs(bed, MIX_RATE)
        if np.isfinite(level):
            return level + BED_BELOW_DIALOGUE_LU
    return DEFAULT_DIALOGUE_LUFS


def mix(
    dub: DubTrack,
    stems: Stems,
    media_mix_wav: Path | None,
    mode: str,
    preset: str,
    duck_db: float,
    out_wav: Path,
) -> Mix:
    """Write the 48 kHz stereo float mix of `dub` to `out_wav` (atomically) and return its measured loudness.

    For the dialogue-gated preset (netflix) `integrated_lufs` is measured over the dubbed lines only.
    """
    loudness.preset(preset)  # an unknown preset fails here, before any work
    if mode not in ("replace", "voice_over"):
        raise StageError(f"mix mode must be 'replace' or 'voice_over', got {mode!r}")
    voice, rate = read_wav(dub.wav)
    voice = resample(voice.mean(axis=1, keepdims=True), rate, MIX_RATE)[:, 0]
    n = len(voice)
    mask = dialogue_mask(dub.lines, n)

    original = _load(media_mix_wav, n, "original mix") if media_mix_wav is not None else None
    if mode == "replace":
        if stems.background is not None and stems.mode != "replace":
            raise StageError(f"replace mode needs an M&E stem, but {stems.background} is a {stems.mode} background")
        bed = _load(stems.background, n, "M&E stem") if stems.background is not None else None
    else:
        if original is None and stems.mode == "voice_over" and stems.background is not None:
            original = _load(stems.background, n, "original mix")
        if original is None:
            raise StageError("voice_over mode needs the original mix (media_mix_wav or a voice_over background stem)")
        bed = original * duck_envelope(dub.lines, n, duck_db)[:, None]

    speech_level = loudness.integrated_lufs(voice[mask] if mask.any() else voice, MIX_RATE)
    if np.isfinite(speech_level):
        voice = voice * 10 ** ((_dialogue_reference(media_mix_wav, bed) - speech_level) / 20)
    out = np.repeat((voice * CENTRE)[:, None], 2, axis=1).astype(np.float32)
    if bed is not None:
        out += bed.astype(np.float32)

    out, integrated, true_peak = loudness.normalise_measured(out, MIX_RATE, preset, dialogue_mask=mask)
    write_wav(out_wav, out, MIX_RATE)  # float32 WAV: the file holds exactly the measured samples
    return Mix(
        language=dub.language,
        wav=Path(out_wav),
        mode=mode,
        preset=preset,
        integrated_lufs=integrated,
        true_peak_dbtp=true_peak,
    )
