"""Mix and loudness delivery, checked with an independent pyloudnorm / oversampled-peak measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import butter, resample_poly, sosfilt

from dubforge.core.contracts import DubTrack, FittedLine, Stems
from dubforge.core.errors import StageError
from dubforge.media import loudness
from dubforge.media.audio import read_wav, write_wav
from dubforge.tasks.mix import duck_envelope, mix

RATE = 48_000
DURATION = 16.0
SPANS = [(1.0, 2.6), (3.5, 5.5), (7.0, 8.2), (9.5, 12.0), (13.0, 15.0)]


def speech_like(n: int, seed: int) -> np.ndarray:
    """Band-limited noise with a 4 Hz syllable envelope (energy 150-1800 Hz)."""
    rng = np.random.default_rng(seed)
    noise = sosfilt(butter(4, [150, 1800], "bandpass", fs=RATE, output="sos"), rng.standard_normal(n))
    syllables = np.abs(np.sin(np.pi * 4 * np.arange(n) / RATE)) ** 0.5
    return (noise * syllables).astype(np.float32)


def dub_track(tmp_path: Path, gain: float = 0.5) -> DubTrack:
    voice = np.zeros(int(DURATION * RATE), np.float32)
    lines = []
    for i, (start, end) in enumerate(SPANS):
        a, b = int(start * RATE), int(end * RATE)
        burst = speech_like(b - a, i)
        voice[a:b] = gain * burst / np.abs(burst).max()
        lines.append(FittedLine(index=i, window_start=start, window_end=end, start=start, end=end,
                                natural_duration=end - start, rate=1.0, stretch=1.0, speed=1.0, borrowed=0.0,
                                overflow=0.0, text=f"line {i}"))
    wav = write_wav(tmp_path / "dub.es.wav", voice[:, None], RATE)
    return DubTrack(language="es", wav=wav, sample_rate=RATE, lines=tuple(lines), phonemes=(), backend="test")


def music_bed(n: int, level: float = 0.6) -> np.ndarray:
    """Loud chords at 44.1 kHz stereo with kick-like hits every 0.5 s (tests resampling too)."""
    rate = 44_100
    t = np.arange(int(n * rate / RATE)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (110.0, 138.6, 164.8, 220.0)) / 4
    kick = np.sin(2 * np.pi * 55 * t) * np.exp(-((t % 0.5) / 0.05))
    left, right = level * (0.6 * chord + 0.8 * kick), level * (0.5 * chord + 0.8 * kick)
    return np.stack([left, right], axis=1).astype(np.float32)


def true_peak(audio: np.ndarray) -> float:
    over = resample_poly(audio.astype(np.float64), 4, 1, axis=0)
    return 20 * np.log10(np.abs(over).max())


def spans_mask(n: int) -> np.ndarray:
    mask = np.zeros(n, bool)
    for start, end in SPANS:
        mask[int(start * RATE) : int(end * RATE)] = True
    return mask


@pytest.mark.parametrize("preset", ["ebu-r128", "atsc-a85", "netflix", "web"])
def test_presets_land_on_target(tmp_path: Path, preset: str) -> None:
    dub = dub_track(tmp_path, gain=0.9)
    bed_wav = write_wav(tmp_path / "me.wav", music_bed(int(DURATION * RATE)), 44_100)
    stems = Stems(background=bed_wav, mode="replace", backend="provided")
    result = mix(dub, stems, None, "replace", preset, -14.0, tmp_path / f"mix.{preset}.wav")

    audio, rate = read_wav(result.wav)
    assert rate == RATE and audio.shape == (int(DURATION * RATE), 2) and audio.dtype == np.float32
    spec = loudness.PRESETS[preset]
    measured = audio[spans_mask(len(audio))] if spec.dialogue_gated else audio
    integrated = pyloudnorm.Meter(RATE).integrated_loudness(measured.astype(np.float64))
    assert integrated == pytest.approx(spec.target_lufs, abs=0.5)
    assert true_peak(audio) <= spec.ceiling_dbtp
    assert result.integrated_lufs == pytest.approx(integrated, abs=0.05)
    assert result.true_peak_dbtp == pytest.approx(true_peak(audio), abs=0.05)
    assert (result.mode, result.preset, result.language) == ("replace", preset, "es")


def test_limiter_holds_ceiling_on_a_very_loud_signal() -> None:
    n = 8 * RATE
    loud = resample_poly(music_bed(n, level=1.5), RATE, 44_100, axis=0)[:n].astype(np.float32)
    loud[:, 0] += 0.8 * speech_like(len(loud), 7)
    out = loudness.normalise(loud, RATE, "web")
    integrated, peak = loudness.measure(out, RATE)
    assert integrated == pytest.approx(-14.0, abs=0.5) and peak <= -1.0
    assert true_peak(out) <= -1.0


def tone_level(audio: np.ndarray, start: float, end: float, freq: float) -> float:
    """dB level of a sinusoid at `freq` within [start, end] (windowed FFT peak)."""
    part = audio[int(start * RATE) : int(end * RATE)].mean(axis=1)
    window = np.hanning(len(part))
    spectrum = np.abs(np.fft.rfft(part * window)) * 2 / window.sum()  # amplitude, independent of length
    k = int(round(freq * len(part) / RATE))
    return 20 * np.log10(spectrum[k - 2 : k + 3].max())


def test_voice_over_ducks_original_under_dub(tmp_path: Path) -> None:
    dub = dub_track(tmp_path, gain=0.3)
    n = int(DURATION * RATE)
    t = np.arange(n) / RATE
    original = np.repeat((0.2 * np.sin(2 * np.pi * 5000 * t))[:, None], 2, axis=1)  # 5 kHz: far above the dub's band
    original_wav = write_wav(tmp_path / "original.wav", original, RATE)
    stems = Stems(background=None, mode="voice_over", backend="none")
    result = mix(dub, stems, original_wav, "voice_over", "ebu-r128", -14.0, tmp_path / "vo.wav")
    audio, _ = read_wav(result.wav)

    free = tone_level(audio, 5.8, 6.8, 5000)  # between lines: not ducked
    under = tone_level(audio, 9.8, 11.7, 5000)  # under a dubbed line
    assert under - free == pytest.approx(-14.0, abs=1.0)

    env = 20 * np.log10(duck_envelope(dub.lines, n, -14.0))
    at = lambda s: env[int(round(s * RATE))]  # noqa: E731
    assert at(3.5 - 0.1) == pytest.approx(0.0, abs=0.1)  # ramp starts 100 ms before the line
    assert at(3.5 + 0.05) == pytest.approx(-14.0, abs=0.1)  # 150 ms ramp
    assert at(5.5 + 0.075) == pytest.approx(-7.0, abs=0.2) and at(5.5 + 0.2) == 0.0


def test_dub_is_centred_and_errors_are_clear(tmp_path: Path) -> None:
    dub = dub_track(tmp_path)
    none = Stems(background=None, mode="replace", backend="none")
    result = mix(dub, none, None, "replace", "ebu-r128", -14.0, tmp_path / "solo.wav")
    audio, _ = read_wav(result.wav)
    assert np.array_equal(audio[:, 0], audio[:, 1]) and np.abs(audio).max() > 0.01
    assert result.integrated_lufs == pytest.approx(-23.0, abs=0.5)

    with pytest.raises(StageError, match="voice_over mode needs the original mix"):
        mix(dub, none, None, "voice_over", "ebu-r128", -14.0, tmp_path / "x.wav")
    original = write_wav(tmp_path / "orig.wav", np.zeros((RATE, 2), np.float32), RATE)
    with pytest.raises(StageError, match="needs an M&E stem"):
        wrong = Stems(background=original, mode="voice_over", backend="none")
        mix(dub, wrong, None, "replace", "ebu-r128", -14.0, tmp_path / "y.wav")
