"""Coqui XTTS-v2 voice cloning through dubforge, with a small randomly initialised XTTS saved in the real
XTTS folder layout (config.json + model.pth + vocab.json), and reference clips cut from a dialogue stem
with two known speakers (Piper speech, true word times)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from dubforge.models.base import create_synthesizer
from tests.neural.conftest import NEEDS

pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("TTS", reason=NEEDS)

STEM_RATE, CLIP_RATE = 48_000, 24_000
TEXT = "Hello there, general Kenobi."


@pytest.fixture(scope="module")
def xtts_dir(tmp_path_factory) -> Path:
    """An XTTS-v2 folder as coqui's ModelManager leaves it (minus speakers_xtts.pth, which is optional):
    config.json (XttsConfig, model "xtts"), model.pth ({"model": state_dict}), vocab.json (HF tokenizers BPE
    with XTTS's special tokens). The GPT is shrunk (2 layers, 64 channels; the perceiver resampler of v2);
    HiFi-GAN decoder and speaker encoder are XTTS's fixed full-size ones. gpt_max_audio_tokens=25 caps
    generation at 22 codes (1.02 s) a sentence, and the stop code's logit bias is -1e4 so that every
    sentence runs to the cap: audio lengths are known exactly."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.models.xtts import Xtts

    folder = tmp_path_factory.mktemp("XTTS-v2")
    config = XttsConfig()
    special = ["[STOP]", "[UNK]", "[SPACE]", "[START]"] + [f"[{lang}]" for lang in config.languages]
    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = ["hello there, general kenobi.", "the quick brown fox jumps over the lazy dog.",
              "she sells sea shells by the sea shore?", "abcdefghijklmnopqrstuvwxyz 0123456789 .,;:!?'\"-()"]
    tokenizer.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=200, special_tokens=special,
                                                              show_progress=False))
    tokenizer.save(str(folder / "vocab.json"))

    args = config.model_args
    args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads = 2, 64, 2
    args.decoder_input_dim = args.gpt_n_model_channels  # the decoder reads GPT latents
    args.gpt_max_audio_tokens = 25
    args.gpt_num_audio_tokens, args.gpt_start_audio_token, args.gpt_stop_audio_token = 1026, 1024, 1025  # as v2
    args.gpt_use_perceiver_resampler = True  # v2
    args.gpt_number_text_tokens = max(tokenizer.get_vocab().values()) + 1
    args.gpt_start_text_token = tokenizer.token_to_id("[START]")
    args.gpt_stop_text_token = tokenizer.token_to_id("[STOP]")
    config.gpt_cond_len, config.gpt_cond_chunk_len, config.max_ref_len = 30, 4, 30  # v2's cloning settings
    torch.manual_seed(0)
    model = Xtts(config)
    with torch.no_grad():
        model.mel_stats.copy_(torch.rand(80) + 0.5)  # the cloning mel normalisation is part of the checkpoint
        model.gpt.mel_head.bias[args.gpt_stop_audio_token] = -1e4
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    config.save_json(str(folder / "config.json"))
    return folder


@pytest.fixture(scope="module")
def models_file(tmp_path_factory, xtts_dir) -> Path:
    from dubforge.core import model_store

    registry = tmp_path_factory.mktemp("registry") / "models.yaml"
    assert model_store.add(registry, "xtts_v2", xtts_dir).backend == "coqui"
    return registry


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory):
    """A 48 kHz stereo dialogue stem: anna and ben speak three lines each alone, then talk over each other.
    Returns (stem, segments, {speaker: [(start, end) of speech]}, (start, end) of the overlap)."""
    from dubforge.core.contracts import Segment
    from dubforge.media.audio import read_wav, write_wav
    from tests.media import speak_english

    folder = tmp_path_factory.mktemp("dialogue")
    lines = [("anna", "Maybe Bob prefers fluffy purple muffins today.", 1.0),
             ("ben", "The harbour lights were glowing over the water.", 1.25),
             ("anna", "Please bring the blue umbrella to the station.", 1.0),
             ("ben", "Nobody expected the parade to start so early.", 1.25),
             ("anna", "Seven hungry geese waddled across the garden.", 1.0),
             ("ben", "Turn left after the bakery and keep walking.", 1.25)]
    rng = np.random.default_rng(3)
    stem = np.zeros(int(60 * STEM_RATE), np.float32)
    segments, speech, pos = [], {"anna": [], "ben": []}, 0.5

    def place(i, speaker, text, scale, at):
        spoken = speak_english(text, folder / f"line{i}.wav", rate=STEM_RATE, lead=0.0, tail=0.0, length_scale=scale)
        audio = read_wav(spoken.path)[0][:, 0]
        start = int(at * STEM_RATE)
        stem[start:start + len(audio)] += audio
        a, b = at + spoken.words[0].start, at + spoken.words[-1].end
        segments.append(Segment(start=round(a - 0.1, 3), end=round(b + 0.1, 3), text=text, speaker=speaker))
        return a, b, spoken.duration

    for i, (speaker, text, scale) in enumerate(lines):
        a, b, length = place(i, speaker, text, scale, pos)
        speech[speaker].append((a, b))
        pos += length + 0.8
    overlap_start = pos
    _, end1, _ = place(6, "anna", "Wait, that is not what I said at all.", 1.0, pos)
    _, end2, _ = place(7, "ben", "Let me finish the sentence first, please.", 1.25, pos + 0.7)
    end = max(end1, end2) + 1.0
    stem = stem[: int(end * STEM_RATE)] + 0.002 * rng.standard_normal(int(end * STEM_RATE)).astype(np.float32)
    path = write_wav(folder / "dialogue.wav", np.stack([stem, 0.9 * stem], axis=1), STEM_RATE)
    return path, segments, speech, (overlap_start, end)


@pytest.fixture(scope="module")
def references(tmp_path_factory, dialogue) -> dict[str, Path]:
    from dubforge.models.coqui_tts import reference_clips

    stem, segments, _, _ = dialogue
    return reference_clips(stem, segments, tmp_path_factory.mktemp("refs"))


def test_models_check_loads_xtts(models_file, xtts_dir):
    from typer.testing import CliRunner

    from dubforge.cli import app
    from dubforge.core import model_store

    (result,) = model_store.check(models_file)
    assert result.exists and result.sha_ok and result.loads, result.message
    assert result.message.startswith("Xtts, 24000 Hz"), result.message
    assert "languages=17" in result.message, result.message
    out = CliRunner().invoke(app, ["models", "check", "--registry", str(models_file)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    for part in ("xtts_v2", "backend=coqui", "loads OK", "Xtts, 24000 Hz", "non-commercial"):
        assert part in text, out.output


def test_reference_clips_come_from_each_speakers_solo_speech(dialogue, references):
    from scipy.signal import correlate

    from dubforge.media.audio import read_wav, resample, to_channels

    stem, segments, speech, (overlap_start, overlap_end) = dialogue
    assert set(references) == {"anna", "ben"}
    audio, rate = read_wav(stem)
    source = resample(to_channels(audio, 1), rate, CLIP_RATE)[:, 0]  # what reference_clips cuts from
    for speaker, path in references.items():
        clip, clip_rate = read_wav(path)
        assert clip_rate == CLIP_RATE and clip.shape[1] == 1
        clip = clip[:, 0]
        assert 6.0 <= len(clip) / CLIP_RATE <= 10.0
        assert abs(float(np.abs(clip).max()) - 0.9) < 1e-3  # peak-normalised
        # pieces are separated by 150 ms of digital silence; the stem's noise floor has no exact zeros
        silent = np.concatenate([[False], clip == 0, [False]])
        edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
        runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a >= int(0.15 * CLIP_RATE)]
        bounds = [0] + [x for run in runs for x in run] + [len(clip)]
        pieces = [(a, b) for a, b in zip(bounds[::2], bounds[1::2]) if b - a > 0]
        assert len(pieces) >= 2, f"{speaker}: one line is under 6 s, so the clip joins several"
        voiced = 0.0
        for a, b in pieces:
            piece = clip[a:b].astype(np.float64)
            probe = piece[: CLIP_RATE // 5]
            at = int(np.argmax(correlate(source, probe, mode="valid", method="fft")))
            original = source[at:at + len(piece)].astype(np.float64)
            gain = float(piece @ original / (original @ original))
            assert gain > 0 and np.abs(piece - gain * original).max() < 1e-4, f"{speaker}: piece not cut from the stem"
            start, end = at / CLIP_RATE, (at + len(piece)) / CLIP_RATE
            own = [s for s in segments if s.speaker == speaker and s.start - 0.01 <= start and end <= s.end + 0.01]
            assert own, f"{speaker}: piece {start:.2f}-{end:.2f} s is not inside one of their segments"
            assert end <= overlap_start or start >= overlap_end, f"{speaker}: piece from the overlapping talk"
            spans = [(x, y) for x, y in speech[speaker] if x - 0.1 <= start and end <= y + 0.1]
            assert spans, f"{speaker}: piece {start:.2f}-{end:.2f} s reaches beyond the spoken words"
            level = float(np.sqrt((original ** 2).mean()))
            assert level > 10 * 0.002, f"{speaker}: piece {start:.2f}-{end:.2f} s is near the noise floor ({level:.4f})"
            voiced += end - start
        assert voiced + 0.15 * len(runs) >= len(clip) / CLIP_RATE - 1e-3  # speech pieces and gaps, nothing else


def test_xtts_clones_each_reference(tmp_path, monkeypatch, xtts_dir, models_file, references):
    import torch
    import TTS.tts.models.xtts as coqui_xtts

    from dubforge.media.audio import read_wav, resample, to_channels
    from dubforge.models.coqui_tts import _load, xtts_conditioning

    config_args = json.loads((xtts_dir / "config.json").read_text())["model_args"]
    codes = config_args["gpt_max_audio_tokens"] - 3  # every sentence runs to the cap (see xtts_dir)
    sentence = codes * config_args["gpt_code_stride_len"] / 22050  # seconds of audio for one sentence
    anna = create_synthesizer("coqui", language="en", model="xtts_v2", clone=True, reference=references["anna"],
                           registry=models_file)
    ben = create_synthesizer("coqui", language="en", model="xtts_v2", clone=True, reference=[references["ben"]],
                          registry=models_file)
    said = anna.synthesize(TEXT, tmp_path / "anna.wav")
    audio, rate = read_wav(said.wav)
    assert rate == said.sample_rate == 24_000 and audio.shape[1] == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() > 1e-3 and np.abs(audio).max() <= 1.0
    assert abs(said.duration - len(audio) / rate) < 1e-9 and abs(said.duration - sentence) < 0.02 * sentence
    ph = said.phonemes
    assert ph and all(p.symbol for p in ph)
    assert all(0 <= p.start <= p.end <= said.duration + 1e-3 for p in ph)
    assert all(a.start <= b.start and a.end <= b.start + 1e-3 for a, b in itertools.pairwise(ph))  # monotonic

    # ben's clip, the same text twice: two sentences, generated one by one and joined with coqui's
    # 10000-sample pause; the first has anna's text and seed, so only the reference clip differs
    other = ben.synthesize(f"{TEXT} {TEXT}", tmp_path / "ben.wav")
    assert other.sample_rate == 24_000 and abs(other.duration - (2 * said.duration + 10_000 / 24_000)) < 1e-6
    assert other.phonemes and other.phonemes[-1].end <= other.duration + 1e-3
    first = read_wav(other.wav)[0][: len(audio)]
    assert np.abs(first - audio).max() > 1e-3, "ben's clip gave anna's audio: the reference is not used"
    # rate reaches XTTS's speed: the GPT latents are stretched by 1/speed before the decoder
    fast = anna.synthesize(TEXT, tmp_path / "fast.wav", rate=2.0)
    assert abs(fast.duration / said.duration - 0.5) < 0.03

    # dubforge's conditioning equals coqui's own get_conditioning_latents on the same samples (coqui's
    # reader, torchaudio.load, needs FFmpeg's shared libraries: it is replaced by dubforge's for the check)
    model = _load(anna.folder, anna.device).synthesizer.tts_model
    cfg = model.config

    def load_audio(path, sampling_rate):
        data, source_rate = read_wav(Path(path))
        mono = np.clip(resample(to_channels(data, 1), source_rate, sampling_rate)[:, 0], -1, 1)
        return torch.from_numpy(np.ascontiguousarray(mono, np.float32))[None]

    monkeypatch.setattr(coqui_xtts, "load_audio", load_audio)
    want = model.get_conditioning_latents(audio_path=[str(references["anna"])], max_ref_length=cfg.max_ref_len,
                                          gpt_cond_len=cfg.gpt_cond_len, gpt_cond_chunk_len=cfg.gpt_cond_chunk_len)
    got = xtts_conditioning(model, [references["anna"]])
    assert got[0].shape == want[0].shape == (1, 32, cfg.model_args.gpt_n_model_channels)  # perceiver: 32 latents
    assert got[1].shape == want[1].shape == (1, cfg.model_args.d_vector_dim, 1)
    assert torch.allclose(got[0], want[0], atol=1e-5) and torch.allclose(got[1], want[1], atol=1e-5)
    assert anna._voice is not None and torch.equal(anna._voice[1][0], got[0])  # computed once, reused
    assert not torch.allclose(ben._voice[1][1], got[1])  # ben's speaker embedding differs


def test_clone_needs_a_reference(models_file):

    with pytest.raises(ValueError, match="clone needs reference clips"):
        create_synthesizer("coqui", language="en", model="xtts_v2", clone=True, registry=models_file)
