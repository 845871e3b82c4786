"""Random weights in each library's real on-disk format, built in temp dirs (tests/neural only).

These tests need the neural stack (torch, demucs, whisperx, coqui-tts): `scripts/setup-neural.sh`, then
`.venv-neural/bin/python -m pytest tests/neural`. Without torch every module skips with that reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

NEEDS = "neural backends need torch: run scripts/setup-neural.sh, then .venv-neural/bin/python -m pytest tests/neural"
os.environ.setdefault("OMP_NUM_THREADS", "2")


def write_stereo_mix(path: Path, seconds: float, rate: int = 48_000, seed: int = 0) -> Path:
    """Speech-like bursts over a tone-and-noise bed, 48 kHz stereo float WAV."""
    from dubforge.audio import write_wav

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    bed = 0.1 * np.sin(2 * np.pi * 110 * t) + 0.02 * rng.standard_normal(len(t))
    voice = 0.2 * np.sin(2 * np.pi * 220 * t + 3 * np.sin(2 * np.pi * 5 * t)) * (np.sin(2 * np.pi * 0.7 * t) > 0)
    mix = np.stack([bed + voice, 0.8 * bed + voice], axis=1).astype(np.float32)
    return write_wav(path, mix, rate)


@pytest.fixture(scope="session")
def demucs_repo(tmp_path_factory) -> Path:
    """A local demucs repo: `tiny.th` (klass/args/kwargs/state) of a small randomly initialised HTDemucs."""
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"], channels=8, depth=4, t_layers=1,
                     t_hidden_scale=1.0, t_heads=2, segment=4, samplerate=44100)
    args, kwargs = model._init_args_kwargs
    repo = tmp_path_factory.mktemp("demucs-repo")
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": model.state_dict()}, repo / "tiny.th")
    return repo


@pytest.fixture(scope="session")
def speech_clip(tmp_path_factory) -> tuple[Path, str]:
    """English speech (Piper) at 16 kHz mono and its text."""
    from dubforge.audio import SPEECH_RATE, read_wav, resample, to_channels, write_wav
    from dubforge.models.piper_tts import PiperSynthesizer

    text = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."
    folder = tmp_path_factory.mktemp("speech")
    speech = PiperSynthesizer("en").synthesize(text, folder / "raw.wav")
    audio, rate = read_wav(speech.wav)
    out = write_wav(folder / "speech16k.wav", resample(to_channels(audio, 1), rate, SPEECH_RATE), SPEECH_RATE)
    return out, text
