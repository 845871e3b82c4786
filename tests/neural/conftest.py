"""Random weights in each library's real on-disk format, built in temp dirs (tests/neural only).

These tests need the neural stack (torch, demucs, whisperx, coqui-tts): `scripts/setup-neural.sh`, then
`.venv-neural/bin/python -m pytest tests/neural`. Without torch every module skips with that reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

NEEDS = "neural backends need torch: run scripts/setup-neural.sh, then .venv-neural/bin/python -m pytest tests/neural"
os.environ.setdefault("OMP_NUM_THREADS", "2")


def write_stereo_mix(path: Path, seconds: float, rate: int = 48_000, seed: int = 0) -> Path:
    """Speech-like bursts over a tone-and-noise bed, 48 kHz stereo float WAV."""
    from dubforge.media.audio import write_wav

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
    from dubforge.media.audio import SPEECH_RATE, read_wav, resample, to_channels, write_wav
    from dubforge.models.piper_tts import PiperSynthesizer

    text = "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore."
    folder = tmp_path_factory.mktemp("speech")
    speech = PiperSynthesizer("en").synthesize(text, folder / "raw.wav")
    audio, rate = read_wav(speech.wav)
    out = write_wav(folder / "speech16k.wav", resample(to_channels(audio, 1), rate, SPEECH_RATE), SPEECH_RATE)
    return out, text


@pytest.fixture(scope="session")
def wav2vec2_dir(tmp_path_factory) -> Path:
    """A random English wav2vec2 CTC aligner saved as a local Hugging Face folder."""
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    folder = tmp_path_factory.mktemp("wav2vec2-en")
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4}
    for ch in "abcdefghijklmnopqrstuvwxyz'":
        vocab[ch] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                     word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, conv_dim=(32,) * 7, num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=4, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def nltk_data(tmp_path_factory) -> Path:
    """punkt_tab parameters for English (empty: no learned abbreviations), as NLTK lays them out."""
    root = tmp_path_factory.mktemp("nltk_data")
    english = root / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (english / name).write_text("")
    return root
