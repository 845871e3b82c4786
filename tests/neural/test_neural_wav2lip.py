"""Wav2Lip renderer: random generator weights in the published checkpoint layout, a real talking head
(carphone), the default renderer's face track, dub audio from Piper."""

from __future__ import annotations

import hashlib
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dubforge.models.base import create_renderer
from tests.neural.conftest import NEEDS

pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("mediapipe", reason="the face track needs mediapipe==0.10.21 (scripts/setup-neural.sh)")
N = 40


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    import torch

    from dubforge.models.wav2lip import build_network

    torch.manual_seed(0)
    net = build_network()
    path = tmp_path_factory.mktemp("wav2lip") / "wav2lip_gan.pth"
    # the published files come from DataParallel training: keys carry a "module." prefix
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "global_step": 0}, path)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The carphone talking head (N frames, 352x288, 25 fps), its face track and a Piper dub."""
    from dubforge.lipsync.testmedia import carphone_frames, write_clip
    from dubforge.models.piper_tts import PiperSynthesizer
    from dubforge.tasks.lipsync import track_face

    folder = tmp_path_factory.mktemp("clip")
    src = write_clip(folder / "src.mp4", carphone_frames(width=352, height=288, frames=N), fps=Fraction(25))
    speech = PiperSynthesizer("en").synthesize("Maybe Bob prefers purple muffins.", folder / "dub.wav")
    return src, track_face(src, folder / "cache"), speech


def reference_mel(audio: np.ndarray) -> np.ndarray:
    """The published features computed on the whole 16 kHz signal at once (what the render did before it streamed)."""
    import librosa

    from dubforge.models import wav2lip as w

    emphasised = np.append(audio[0], audio[1:] - 0.97 * audio[:-1]).astype(np.float32)
    spec = np.abs(librosa.stft(y=emphasised, n_fft=w.N_FFT, hop_length=w.HOP, win_length=w.N_FFT))
    basis = librosa.filters.mel(sr=w.SAMPLE_RATE, n_fft=w.N_FFT, n_mels=w.N_MELS, fmin=w.FMIN, fmax=w.FMAX)
    db = 20 * np.log10(np.maximum(1e-5, basis @ spec)) - 20
    return np.clip(8 * ((db + 100) / 100) - 4, -4, 4).astype(np.float32)


def in_blocks(x: np.ndarray, sizes: list[int]):
    start, k = 0, 0
    while start < len(x):
        yield x[start: start + sizes[k % len(sizes)]]
        start, k = start + sizes[k % len(sizes)], k + 1


ULP2 = 2 * float(np.spacing(np.float32(4)))  # two float32 steps at the features' largest magnitude


def test_streamed_mel_equals_the_whole_one():
    from dubforge.models.wav2lip import mel_frames

    rng = np.random.default_rng(3)
    for samples in (16_000 * 17 + 123, 16_000 * 5, 799, 5):
        x = (0.3 * rng.standard_normal(samples) * np.sin(np.linspace(0, 40, samples)) ** 2).astype(np.float32)
        whole = reference_mel(x)
        for sizes in ([samples], [1, 7, 799, 801, 4001, 12345, 160_003], [333], [200]):
            streamed = np.concatenate(list(mel_frames(in_blocks(x, sizes))), axis=1)
            assert streamed.shape == whole.shape, (samples, sizes)
            # measured: equal to the bit with NumPy's OpenBLAS (see mel_frames); 2 ulps allowed for other BLAS
            assert np.abs(streamed - whole).max() <= ULP2, (samples, sizes)


def test_mel_windows_of_a_wav_equal_the_whole_track(tmp_path, monkeypatch):
    from dubforge.media import audio as a
    from dubforge.models.wav2lip import MEL_STEP, MelWindows
    from tests.neural.conftest import write_stereo_mix

    wav = write_stereo_mix(tmp_path / "dub.wav", 7.3, rate=44_100)
    sound, rate = a.read_wav(wav)
    whole = reference_mel(a.resample(a.to_channels(sound, 1), rate, 16_000)[:, 0])
    blocks = a.WavReader.blocks
    monkeypatch.setattr(a.WavReader, "blocks", lambda self, seconds=0.37: blocks(self, seconds))
    monkeypatch.setattr(a, "BLOCK_S", 0.37)  # the resampler's chunks too
    mel = MelWindows(wav)
    assert mel.columns == whole.shape[1]
    for time in [*np.arange(0, 7.6, 1 / 29.97), 0.5]:  # frame times, then one back in time (a restart)
        start = min(max(int(80 * time), 0), whole.shape[1] - MEL_STEP)
        assert np.abs(mel.window(float(time)) - whole[:, start: start + MEL_STEP]).max() <= ULP2, time
        assert mel._held.shape[1] < 3 * 64 + 0.37 * 80 + MEL_STEP  # only the columns from the last window on


@pytest.mark.parametrize("whole", [512, 1])  # np.median on the stacked rows; radix selection window by window
def test_crop_square_medians_are_numpys_to_the_bit(clip, monkeypatch, whole):
    from functools import partial

    from dubforge.lipsync import geometry as g
    from dubforge.lipsync import rows
    from dubforge.lipsync.bank import canonical
    from dubforge.lipsync.track import Landmarks, load_arrays
    from dubforge.models import wav2lip

    monkeypatch.setattr(wav2lip, "exact_median", partial(rows.exact_median, whole=whole))
    _, track, _ = clip
    arrays = load_arrays(track)
    oval = canonical(arrays)[arrays["valid"]][:, g.sub(g.FACE_OVAL)]
    lo, hi = np.median(oval.min(1), 0), np.median(oval.max(1), 0)
    centre, side = wav2lip.crop_square(Landmarks(track, arrays["pose"], block=7), arrays["valid"])
    assert side == float(max(hi - lo) * 1.05)
    assert np.array_equal(centre, np.array([(lo[0] + hi[0]) / 2, hi[1] + 0.03 * side - side / 2]))


def frame_hash(video: Path) -> str:
    from dubforge.lipsync.video import frames

    digest = hashlib.sha256()
    for frame in frames(video):
        digest.update(frame.to_ndarray(format="yuv420p").tobytes())
    return digest.hexdigest()


def test_streamed_render_equals_a_whole_array_render(tmp_path, checkpoint, clip, monkeypatch):
    """The render with everything read whole (the WAV, its resample and spectrogram, every frame's landmarks and
    canonical coordinates: the code before it streamed) and the streamed render give the same decoded frames,
    with blocks and windows small enough to change mid-render."""
    from dubforge.core import model_store
    from dubforge.lipsync.bank import canonical
    from dubforge.lipsync.track import Landmarks, load_arrays
    from dubforge.media import audio as a
    from dubforge.models import wav2lip as w

    src, track, speech = clip
    models = tmp_path / "models.yaml"
    model_store.add(models, "wav2lip", checkpoint)
    renderer = w.Wav2LipRenderer(registry=models, batch=8)

    class WholeMel:
        def __init__(self, wav: Path):
            sound, rate = a.read_wav(wav)
            self.mel = reference_mel(a.resample(a.to_channels(sound, 1), rate, w.SAMPLE_RATE)[:, 0])

        def window(self, time: float) -> np.ndarray:
            start = min(max(int(80.0 * time), 0), max(self.mel.shape[1] - w.MEL_STEP, 0))
            window = self.mel[:, start:start + w.MEL_STEP]
            return np.pad(window, ((0, 0), (0, w.MEL_STEP - window.shape[1])), mode="edge")

    class WholeLandmarks:
        def __init__(self, track, pose):
            arrays = load_arrays(track)
            self.all = np.nan_to_num(arrays["points"]), canonical(arrays)

        def canon(self, i: int) -> np.ndarray:
            return self.all[1][i]

        def windows(self):
            yield 0, *self.all

    with monkeypatch.context() as patch:
        patch.setattr(w, "MelWindows", WholeMel)
        patch.setattr(w, "Landmarks", WholeLandmarks)
        whole = renderer.render(src, track, speech.phonemes, [], tmp_path / "whole.mp4", audio=speech.wav)
    blocks = a.WavReader.blocks
    monkeypatch.setattr(a.WavReader, "blocks", lambda self, seconds=0.29: blocks(self, seconds))
    monkeypatch.setattr(a, "BLOCK_S", 0.29)
    monkeypatch.setattr(w, "Landmarks", lambda track, pose: Landmarks(track, pose, block=7))
    streamed = renderer.render(src, track, speech.phonemes, [], tmp_path / "streamed.mp4", audio=speech.wav)
    assert streamed.frames_rendered == whole.frames_rendered == N
    assert frame_hash(streamed.out_video) == frame_hash(whole.out_video)


def test_render_memory_is_flat_in_length(tmp_path, checkpoint, clip):
    """Python-heap peak (tracemalloc: NumPy's buffers) of a render with 40 s of dub and a 2000-frame track against
    one with 120 s and 8000 frames: the same within 2 MB. Held whole, the longer dub adds about 31 MB (48 kHz stereo
    float) and the landmarks about 19 MB (float32 points, float64 canonical coordinates). The video is 100 small
    frames whose track times spread over the whole dub (every 10th with a face), so the dub is read to its end;
    the crop square reads every frame's landmarks."""
    from dubforge.core import model_store
    from dubforge.lipsync.testmedia import write_clip
    from dubforge.lipsync.track import load_arrays
    from tests.neural.conftest import write_stereo_mix

    reference_mel(np.zeros(4000, np.float32))  # librosa's first calls compile (numba): not part of a render
    _, track, speech = clip
    models = tmp_path / "models.yaml"
    model_store.add(models, "wav2lip", checkpoint)
    renderer = create_renderer("wav2lip", registry=models, batch=16)
    arrays = load_arrays(track)
    video = write_clip(tmp_path / "src.mp4", (np.full((64, 64, 3), 90, np.uint8) for _ in range(100)), fps=25)
    peaks = []
    for seconds, n in ((40, 2000), (120, 8000)):
        tiled = {k: np.resize(v, (n, *v.shape[1:])) for k, v in arrays.items()}
        tiled["times"], tiled["pts"] = np.arange(n) * (seconds / 100), np.arange(n)
        tiled["valid"] = np.arange(n) % 10 == 0
        with open(tmp_path / f"face{n}.npz", "wb") as handle:
            np.savez_compressed(handle, **tiled)
        long = track.model_copy(update={"npz": tmp_path / f"face{n}.npz", "frame_count": n, "width": 64, "height": 64})
        wav = write_stereo_mix(tmp_path / f"dub{seconds}.wav", seconds)
        tracemalloc.start()
        try:
            result = renderer.render(video, long, speech.phonemes, [], tmp_path / "out.mp4", audio=wav)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert result.frames_rendered == 10
    assert peaks[1] - peaks[0] < 2 << 20, [p / 2**20 for p in peaks]


def test_network_shapes(checkpoint):
    import torch

    from dubforge.models.wav2lip import load_network

    net = load_network(checkpoint)
    with torch.no_grad():
        out = net(torch.zeros(2, 1, 80, 16), torch.rand(2, 6, 96, 96))
    assert out.shape == (2, 3, 96, 96) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_renders_through_the_registry(tmp_path, checkpoint):
    from dubforge.core import model_store
    from dubforge.lipsync.testmedia import carphone_frames, write_clip
    from dubforge.lipsync.video import frames, probe
    from dubforge.models.piper_tts import PiperSynthesizer
    from dubforge.tasks.lipsync import track_face

    models = tmp_path / "models.yaml"
    entry = model_store.add(models, "wav2lip", checkpoint)
    assert entry.backend == "wav2lip" and "non-commercial" in entry.licence
    src = write_clip(tmp_path / "src.mp4", carphone_frames(width=352, height=288, frames=N), fps=Fraction(25))
    speech = PiperSynthesizer("en").synthesize("Maybe Bob prefers purple muffins.", tmp_path / "dub.wav")
    track = track_face(src, tmp_path / "cache")
    assert track.frames_with_face == N
    renderer = create_renderer("wav2lip", registry=models, batch=8)
    assert renderer.needs_weights and not renderer.supports_portrait
    result = renderer.render(src, track, speech.phonemes, [], tmp_path / "out.mp4", audio=speech.wav)
    assert result.frames_rendered == N and result.frames_passed_through == 0 and result.backend == "wav2lip"
    a, b = probe(src), probe(result.out_video)
    assert (b.width, b.height, b.rate) == (a.width, a.height, a.rate)
    before = [f.to_ndarray(format="gray") for f in frames(src)]
    after = [f.to_ndarray(format="gray") for f in frames(result.out_video)]
    assert len(after) == N
    diff = np.abs(np.stack(after).astype(int) - np.stack(before).astype(int)).mean(0)
    from dubforge.lipsync import geometry as g
    from dubforge.lipsync.track import load_arrays

    lips = load_arrays(track)["points"][:, g.sub(g.LIPS)]
    (x0, y0), (x1, y1) = np.nanmin(lips, axis=(0, 1)).astype(int), np.nanmax(lips, axis=(0, 1)).astype(int)
    inside = diff[y0:y1, x0:x1].mean()  # the painted mouth (random weights: far from the source)
    outside = diff[:20].mean()  # top rows, far outside the mask: codec noise only
    assert inside > 5 * max(outside, 0.2), (inside, outside)
    assert len(renderer.fingerprint()) == 20
