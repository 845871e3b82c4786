"""Coqui TTS with a randomly initialised VITS saved as model.pth + config.json; reference clips for
cloning cut from a dialogue stem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dubforge.models.base import create_synthesizer
from tests.neural.conftest import NEEDS

pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("TTS", reason=NEEDS)


@pytest.fixture(scope="module")
def vits_dir(tmp_path_factory) -> Path:
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits

    torch.manual_seed(0)
    config = VitsConfig(use_phonemes=False, text_cleaner="english_cleaners", add_blank=True,
                        audio=BaseAudioConfig(sample_rate=16000, hop_length=256, win_length=1024, fft_size=1024))
    args = config.model_args
    args.hidden_channels, args.hidden_channels_ffn_text_encoder, args.num_layers_text_encoder = 32, 64, 2
    args.num_heads_text_encoder, args.upsample_initial_channel_decoder = 2, 64
    args.num_layers_flow, args.num_layers_posterior_encoder = 1, 2
    args.dp_hidden_channels = 32
    model = Vits(config)
    folder = tmp_path_factory.mktemp("vits")
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    model.config.save_json(str(folder / "config.json"))
    return folder


def test_vits_synthesises_with_durations(tmp_path, vits_dir):
    from dubforge.core import model_store
    from dubforge.media.audio import read_wav

    models = tmp_path / "models.yaml"
    entry = model_store.add(models, "tiny-vits", vits_dir)
    assert entry.backend == "coqui"
    tts = create_synthesizer("coqui", language="en", model="tiny-vits", registry=models)
    speech = tts.synthesize("Hello there, general Kenobi.", tmp_path / "a.wav")
    audio, rate = read_wav(speech.wav)
    assert rate == speech.sample_rate == 16000 and audio.shape[1] == 1
    assert abs(speech.duration - len(audio) / rate) < 1e-9 and speech.duration > 0.2
    ph = speech.phonemes
    assert ph and ph[0].start == 0 and abs(ph[-1].end - speech.duration) < 1e-6  # durations cover the audio
    assert all(a.end == b.start for a, b in zip(ph, ph[1:]))
    assert "".join(p.symbol for p in ph if p.symbol != "_").replace(" ", "").startswith("helloth")
    again = tts.synthesize("Hello there, general Kenobi.", tmp_path / "b.wav")
    assert again.wav.read_bytes() == speech.wav.read_bytes()  # deterministic
    faster = tts.synthesize("Hello there, general Kenobi.", tmp_path / "c.wav", rate=1.5)
    assert faster.duration < 0.8 * speech.duration
    (check,) = model_store.check(models)
    assert check.loads and "Vits" in check.message, check.message


def test_reference_clips_per_speaker(tmp_path):
    from dubforge.core.contracts import Segment
    from dubforge.media.audio import read_wav, write_wav
    from dubforge.models.coqui_tts import reference_clips

    rate = 48_000
    rng = np.random.default_rng(1)
    t = np.arange(40 * rate) / rate
    voice = 0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 0.5 * t) > -0.5)
    stem = (voice + 0.001 * rng.standard_normal(len(t)))[:, None].repeat(2, 1)
    dialogue = write_wav(tmp_path / "dialogue.wav", stem.astype(np.float32), rate)
    segs = [Segment(start=float(s), end=float(s) + 3.5, text="x", speaker="anna" if s < 20 else "ben")
            for s in range(0, 40, 4)]
    segs.append(Segment(start=1.0, end=2.0, text="overlap", speaker="ben"))  # overlaps anna: not used
    clips = reference_clips(dialogue, segs, tmp_path / "refs")
    assert set(clips) == {"anna", "ben"}
    for path in clips.values():
        audio, r = read_wav(path)
        assert r == 24_000 and 6.0 <= len(audio) / r <= 10.0
    few = reference_clips(dialogue, segs[:1], tmp_path / "few")  # 3.5 s of speech: not enough
    assert few == {}
