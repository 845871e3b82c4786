"""Long sources: audio is decoded, resampled, measured, mixed and written in blocks, with the same results as the
whole-array code, and memory that does not grow with the length of the programme."""

from __future__ import annotations

import subprocess
import tracemalloc

import imageio_ffmpeg
import numpy as np
import pyloudnorm
import pytest
from scipy.io import wavfile
from scipy.signal import resample_poly

from dubforge.core.contracts import DubTrack, FittedLine, SourceMedia, Stems
from dubforge.media import loudness
from dubforge.media.audio import (
    WavReader,
    decode_audio_blocks,
    read_wav,
    resample,
    resample_blocks,
    wav_writer,
    write_wav,
)
from dubforge.tasks.ingest import ingest
from dubforge.tasks.mix import mix
from dubforge.tasks.separate import separate

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
RATE = 48_000


def ffmpeg(*args) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *map(str, args)], check=True)


def splits(data: np.ndarray, seed: int) -> list[np.ndarray]:
    """`data` in blocks of random lengths (1 sample to 7 s)."""
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.integers(0, len(data), 12))
    return [part for part in np.split(data, edges) if len(part)]


def programme(seconds: float, seed: int = 0) -> np.ndarray:
    """Stereo music-like signal with loud transients (the limiter has work to do)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.3 * t))
    data = np.stack([tone, 0.7 * tone], axis=1) + 0.05 * rng.standard_normal((len(t), 2))
    for at in rng.integers(0, len(t) - 2000, 8):
        data[at : at + 2000] *= 4
    return data.astype(np.float32)


@pytest.mark.parametrize("rates", [(44_100, 48_000), (48_000, 16_000), (22_050, 48_000), (48_000, 44_100)])
def test_block_resampling_equals_whole(rates):
    data = programme(23.0)[: int(23.0 * rates[0] / RATE * RATE)]
    whole = resample(data, *rates)
    streamed = np.concatenate(list(resample_blocks(iter(splits(data, 1)), *rates)))
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-6)


def test_wav_reader_and_writer(tmp_path):
    data = programme(3.0)
    with wav_writer(tmp_path / "float.wav", RATE, 2) as writer:
        for part in splits(data, 2):
            writer.write(part)
    back, rate = read_wav(tmp_path / "float.wav")  # scipy reads what the writer wrote
    assert rate == RATE and np.array_equal(back, data)
    reader = WavReader(tmp_path / "float.wav")
    assert (reader.frames, reader.channels, reader.rate) == (len(data), 2, RATE)
    assert np.array_equal(reader.read(1000, 500), data[1000:1500])
    for dtype in (np.int16, np.int32, np.uint8):  # scipy's PCM flavours
        wavfile.write(str(tmp_path / "pcm.wav"), 16_000, (data[:, :1] * 100).astype(dtype))
        assert np.array_equal(np.concatenate(list(WavReader(tmp_path / "pcm.wav").blocks(0.01))),
                              read_wav(tmp_path / "pcm.wav")[0])
    ffmpeg("-i", tmp_path / "float.wav", "-c:a", "pcm_s24le", tmp_path / "pcm24.wav")  # FFmpeg's 24-bit
    np.testing.assert_allclose(WavReader(tmp_path / "pcm24.wav").read(0, len(data)), data.clip(-1, 1), atol=1e-6)
    with pytest.raises(RuntimeError), wav_writer(tmp_path / "cut.wav", RATE, 2) as writer:
        writer.write(data)
        raise RuntimeError("interrupted")
    assert not (tmp_path / "cut.wav").exists()


@pytest.mark.parametrize("rate", [48_000, 44_100])
def test_meter_in_blocks_equals_pyloudnorm(rate):
    data = programme(30.0)[: 30 * rate].astype(np.float64)
    meter = loudness.LoudnessMeter(rate, 2)
    for part in splits(data, 3):
        meter.add(part)
    assert meter.integrated() == pytest.approx(pyloudnorm.Meter(rate).integrated_loudness(data), abs=1e-6)
    peak = loudness.PeakMeter()
    for part in splits(data, 4):
        peak.add(part)
    over = resample_poly(data, 4, 1, axis=0)
    assert loudness.dbtp(peak.result()) == pytest.approx(20 * np.log10(np.abs(over).max()), abs=1e-3)


def test_limiter_in_blocks_equals_whole():
    data = programme(25.0) * 2
    whole = loudness.limit(data, RATE, -1.2)
    out: list[np.ndarray] = []
    limiter = loudness.StreamLimiter(RATE, -1.2, out.append)
    for part in splits(data, 5):
        limiter.add(part)
    limiter.close()
    assert np.array_equal(np.concatenate(out), whole)


@pytest.mark.parametrize("preset", ["web", "netflix"])
def test_normalise_to_wav(tmp_path, preset):
    """The file version lands on the preset (measured by pyloudnorm and a 4x oversampled peak) and holds the
    same samples as the array version; its intermediate passes are removed."""
    data = programme(40.0)
    mask = np.zeros(len(data), bool)
    mask[5 * RATE : 15 * RATE] = True
    lufs, peak = loudness.normalise_to_wav(lambda: splits(data, 6), RATE, 2, preset, tmp_path / "out.wav",
                                           dialogue=lambda start, count: mask[start : start + count])
    out, _ = read_wav(tmp_path / "out.wav")
    array, array_lufs, array_peak = loudness.normalise_measured(data, RATE, preset, mask)
    np.testing.assert_allclose(out, array, atol=1e-6)
    assert (lufs, peak) == pytest.approx((array_lufs, array_peak), abs=1e-6)
    spec = loudness.preset(preset)
    measured = out[mask] if spec.dialogue_gated else out
    assert pyloudnorm.Meter(RATE).integrated_loudness(measured.astype(np.float64)) == pytest.approx(spec.target_lufs, abs=0.1)
    assert 20 * np.log10(np.abs(resample_poly(out.astype(np.float64), 4, 1, axis=0)).max()) <= spec.ceiling_dbtp + 0.05
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]


def test_separate_provided_stem_is_conformed_in_blocks(tmp_path):
    """A 44.1 kHz mono AAC stem shorter than the video becomes 48 kHz stereo of the video's length."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=44100:duration=14", "-c:a", "aac", tmp_path / "me.m4a")
    media = SourceMedia(video=tmp_path / "v.mp4", duration=20.0, width=64, height=48, fps=25.0, frame_count=500,
                        video_codec="h264", speech_wav=None, mix_wav=None, audio_language="en")
    stems = separate(media, tmp_path / "me.m4a", "provided", tmp_path)
    out, rate = read_wav(stems.background)
    reference = np.concatenate(list(decode_audio_blocks(tmp_path / "me.m4a", "source.music_effects")))
    assert rate == RATE and out.shape == (20 * RATE, 2)
    np.testing.assert_array_equal(out[: len(reference)], reference)
    assert not out[len(reference) :].any() and len(reference) > 13 * RATE


def traced_peak(function) -> float:
    """Peak of memory allocated while `function` runs (numpy arrays included), MiB."""
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def test_memory_of_ingest_and_mix_does_not_grow_with_length(tmp_path):
    """A 4-minute programme (90 MB as one float32 stereo array at 48 kHz) is ingested and mixed holding a few
    blocks: the same peak as a 1-minute one, within 10%."""
    peaks = {}
    for minutes in (1, 4):
        folder = tmp_path / f"{minutes}min"
        folder.mkdir()
        seconds = minutes * 60
        video = folder / "v.mp4"
        ffmpeg("-f", "lavfi", "-i", f"color=gray:s=32x32:r=5:d={seconds}", "-f", "lavfi", "-i",
               f"sine=frequency=220:sample_rate=44100:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
               "-c:a", "aac", "-ac", "2", video)
        media = ingest(video, folder)
        lines = tuple(FittedLine(index=i, window_start=t, window_end=t + 2, start=t, end=t + 2, natural_duration=2,
                                 rate=1, stretch=1, speed=1, borrowed=0, overflow=0, text="x")
                      for i, t in enumerate(range(1, seconds - 3, 5)))
        voice = np.zeros((seconds * RATE, 1), np.float32)
        for line in lines:
            voice[int(line.start * RATE) : int(line.end * RATE), 0] = 0.3 * np.sin(np.arange(2 * RATE) * 0.05)
        dub = DubTrack(language="es", wav=write_wav(folder / "dub.wav", voice, RATE), sample_rate=RATE, lines=lines,
                       phonemes=(), backend="test")
        del voice
        stems = Stems(background=media.mix_wav, mode="voice_over", backend="none")
        peaks[minutes] = {
            "ingest": traced_peak(lambda: ingest(video, folder / "again")),
            "mix": traced_peak(lambda: mix(dub, stems, media.mix_wav, "voice_over", "web", -14.0, folder / "mix.wav")),
        }
        assert WavReader(folder / "mix.wav").frames == seconds * RATE
    for stage in ("ingest", "mix"):
        # 3 more minutes would add 66 MB if the track were held whole; +1 MiB: tracemalloc's own noise
        assert peaks[4][stage] <= 1.1 * peaks[1][stage] + 1.0, peaks


def test_true_peak_between_samples_of_a_quieter_piece():
    """The loudest samples (a click at 0.4) are not where the true peak is: a quarter-rate tone sampled 45 degrees
    off its crests, samples at 0.35, peaks at 0.5 between them. The meter oversamples pieces loudest first and
    may skip the rest only when they cannot beat the peak: it must still find the tone's."""
    rate = 48_000
    data = np.zeros((10 * rate, 2), np.float32)
    data[rate, 0] = 0.4
    n = np.arange(rate)
    data[5 * rate : 6 * rate, 1] = 0.5 * np.sin(np.pi / 2 * n + np.pi / 4)
    peak = loudness.PeakMeter()
    for part in splits(data, 3):
        peak.add(part)
    over = np.abs(resample_poly(data, 4, 1, axis=0)).max()
    assert peak.result() == pytest.approx(over, rel=1e-6) and over > 0.45
