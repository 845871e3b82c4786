"""Wav2Lip renderer: random generator weights in the published checkpoint layout, a real talking head
(carphone), the default renderer's face track, dub audio from Piper."""

from __future__ import annotations

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
