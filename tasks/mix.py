"""Mix a language's dialogue track with the background and deliver it at a loudness preset.

replace:    dub + M&E stem (the original dialogue is gone).
voice_over: dub + the original mix, ducked by `duck_db` under dubbed speech.
The dub is levelled first so that its dialogue sits where the original dialogue sat: at the original
mix's integrated loudness when it is known (dialogue dominates a programme's loudness), else 10 LU
over the M&E bed. The whole mix is then normalised to the preset (true-peak limited).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from pathlib import Path

import numpy as np

from dubforge.core.contracts import DubTrack, FittedLine, Mix, Stems
from dubforge.core.errors import StageError
from dubforge.core.files import measured
from dubforge.media import loudness
from dubforge.media.audio import BLOCK_S, MIX_RATE, WavReader, fitted, regrouped, resample_blocks, to_channels

DUCK_LEAD_S = 0.1  # the ramp down starts this long before a line
DUCK_RAMP_S = 0.15
BED_BELOW_DIALOGUE_LU = 10.0
DEFAULT_DIALOGUE_LUFS = -23.0
BLOCK = int(BLOCK_S * MIX_RATE)  # the mix is made this many samples at a time
CENTRE = 10 ** (-3 / 20)  # equal-power pan law: a centred mono source sits 3 dB down in each channel


def _blocks(path: Path | None, n: int, what: str) -> Callable[[], Iterator[np.ndarray]]:
    """Blocks of a WAV as 48 kHz stereo, cut or padded to n samples (read again on every call)."""
    if not Path(path).is_file():  # type: ignore[arg-type]
        raise StageError(f"{what} not found: {path}")
    reader = WavReader(Path(path))  # type: ignore[arg-type]

    def blocks() -> Iterator[np.ndarray]:
        stereo = resample_blocks((to_channels(b, 2) for b in reader.blocks()), reader.rate, MIX_RATE)
        return regrouped(fitted(stereo, n, 2), BLOCK)

    return blocks


def _spans(lines: tuple[FittedLine, ...], duration: float) -> list[tuple[float, float]]:
    """Placed spans of the lines, clipped to the video (lines cut at the end stop there)."""
    return [(ln.start, min(ln.end, duration)) for ln in lines if min(ln.end, duration) > ln.start]


def dialogue_mask(lines: tuple[FittedLine, ...], n: int, start: int = 0) -> np.ndarray:
    """Where dubbed dialogue plays, for samples [start, start + n)."""
    mask = np.zeros(n, bool)
    for first, last in _spans(lines, (start + n) / MIX_RATE):
        lo, hi = int(round(first * MIX_RATE)) - start, int(round(last * MIX_RATE)) - start
        if hi > 0 and lo < n:
            mask[max(lo, 0) : hi] = True
    return mask


def duck_envelope(lines: tuple[FittedLine, ...], n: int, duck_db: float, start: int = 0,
                  total: int | None = None) -> np.ndarray:
    """Linear gain per sample [start, start + n) of a track of `total` samples (default start + n): 1 away from
    speech, 10^(duck_db/20) under it, with 150 ms ramps in dB that start 100 ms before each line and rise after
    it ends."""
    depth = np.zeros(n)  # 0 = no duck, 1 = full duck
    for first, end in _spans(lines, (total if total is not None else start + n) / MIX_RATE):
        down = first - DUCK_LEAD_S
        lo = max(start, int(np.floor(down * MIX_RATE)))
        hi = min(start + n, int(np.ceil((end + DUCK_RAMP_S) * MIX_RATE)))
        if hi <= lo:
            continue
        t = np.arange(lo, hi) / MIX_RATE
        shape = np.minimum(np.clip((t - down) / DUCK_RAMP_S, 0, 1), np.clip((end + DUCK_RAMP_S - t) / DUCK_RAMP_S, 0, 1))
        depth[lo - start : hi - start] = np.maximum(depth[lo - start : hi - start], shape)
    return (10 ** (duck_db * depth / 20)).astype(np.float32)


def _loudness(blocks: Iterable[np.ndarray], channels: int, rate: int = MIX_RATE) -> float:
    meter = loudness.LoudnessMeter(rate, channels)
    for block in blocks:
        meter.add(block)
    return meter.integrated()


def _file_loudness(path: Path) -> float:
    reader = WavReader(path)
    return _loudness(reader.blocks(), reader.channels, reader.rate)


def _dialogue_reference(reference: Path | None, bed: Callable[[], Iterator[np.ndarray]] | None) -> float:
    if reference is not None:
        level = measured(Path(reference), "integrated-lufs-1", _file_loudness)  # every language's mix, every run
        if np.isfinite(level):
            return level
    if bed is not None:
        level = _loudness(bed(), 2)
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

    For the dialogue-gated preset (netflix) `integrated_lufs` is measured over the dubbed lines only. Every pass
    streams blocks of BLOCK samples from the WAVs, so memory does not grow with the length of the programme.
    """
    loudness.preset(preset)  # an unknown preset fails here, before any work
    if mode not in ("replace", "voice_over"):
        raise StageError(f"mix mode must be 'replace' or 'voice_over', got {mode!r}")
    reader = WavReader(dub.wav)
    n = -(-reader.frames * MIX_RATE // reader.rate)  # the resampled length

    def voice() -> Iterator[np.ndarray]:
        mono = (b.mean(axis=1, keepdims=True) for b in reader.blocks())
        return regrouped(resample_blocks(mono, reader.rate, MIX_RATE), BLOCK)

    original = _blocks(media_mix_wav, n, "original mix") if media_mix_wav is not None else None
    bed: Callable[[], Iterator[np.ndarray]] | None
    if mode == "replace":
        if stems.background is not None and stems.mode != "replace":
            raise StageError(f"replace mode needs an M&E stem, but {stems.background} is a {stems.mode} background")
        bed = _blocks(stems.background, n, "M&E stem") if stems.background is not None else None
    else:
        if original is None and stems.mode == "voice_over" and stems.background is not None:
            original = _blocks(stems.background, n, "original mix")
        if original is None:
            raise StageError("voice_over mode needs the original mix (media_mix_wav or a voice_over background stem)")
        unducked = original

        def bed() -> Iterator[np.ndarray]:
            at = 0
            for block in unducked():
                yield block * duck_envelope(dub.lines, len(block), duck_db, at, n)[:, None]
                at += len(block)

    speech, everything = loudness.LoudnessMeter(MIX_RATE, 1), loudness.LoudnessMeter(MIX_RATE, 1)
    for at, block in zip(range(0, n, BLOCK), voice()):
        everything.add(block)
        speech.add(block[dialogue_mask(dub.lines, len(block), at)])
    speech_level = (speech if speech.samples else everything).integrated()
    gain = 1.0
    if np.isfinite(speech_level):
        gain = 10 ** ((_dialogue_reference(media_mix_wav, bed) - speech_level) / 20)

    def blocks() -> Iterator[np.ndarray]:
        beds = bed() if bed is not None else repeat(None)
        for block, under in zip(voice(), beds):
            out = np.repeat(block * gain * CENTRE, 2, axis=1).astype(np.float32)
            yield out if under is None else out + under.astype(np.float32)

    integrated, true_peak = loudness.normalise_to_wav(
        blocks, MIX_RATE, 2, preset, out_wav, dialogue=lambda at, count: dialogue_mask(dub.lines, count, at))
    return Mix(
        language=dub.language,
        wav=Path(out_wav),
        mode=mode,
        preset=preset,
        integrated_lufs=integrated,
        true_peak_dbtp=true_peak,
    )
