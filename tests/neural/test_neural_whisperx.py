"""whisperx ASR through the registry: bundled Whisper tiny.en, a random wav2vec2 aligner saved as a local
Hugging Face folder, and NLTK punkt_tab data in a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.neural.conftest import NEEDS

pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("whisperx", reason=NEEDS)


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import (Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC,
                              Wav2Vec2Processor)

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


@pytest.fixture(scope="module")
def nltk_data(tmp_path_factory) -> Path:
    """punkt_tab parameters for English (empty: no learned abbreviations), as NLTK lays them out."""
    root = tmp_path_factory.mktemp("nltk_data")
    english = root / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (english / name).write_text("")
    return root


def test_transcribes_and_aligns_words(tmp_path, speech_clip, wav2vec2_dir, nltk_data):
    from dubforge import model_store, registry
    from dubforge.audio import read_wav

    wav, text = speech_clip
    models = tmp_path / "models.yaml"
    model_store.add(models, "wav2vec2-en", wav2vec2_dir)
    asr = registry.create("asr", "whisperx", align_models={"en": "wav2vec2-en"}, registry=models, nltk_data=nltk_data)
    transcript = asr.transcribe(wav, "en")
    audio, rate = read_wav(wav)
    duration = len(audio) / rate
    assert transcript.backend == "whisperx" and transcript.segments
    heard = " ".join(s.text for s in transcript.segments).lower()
    assert sum(w in heard for w in ("quick", "brown", "fox", "lazy", "dog", "sells", "shore")) >= 5, heard
    words = [w for s in transcript.segments for w in s.words]
    assert len(words) >= 12
    for seg in transcript.segments:
        assert 0 <= seg.start <= seg.end <= duration
        for a, b in zip(seg.words, seg.words[1:]):
            assert a.start <= a.end <= b.start + 1e-3 and b.end <= duration
    (check,) = model_store.check(models)
    assert check.loads, check.message


def test_missing_aligner_is_a_clear_error(tmp_path, speech_clip):
    from dubforge.errors import StageError
    from dubforge.models.whisperx_asr import WhisperXTranscriber

    asr = WhisperXTranscriber(align_models={"de": "wav2vec2-de"}, registry=tmp_path / "models.yaml")
    with pytest.raises(StageError, match=r"dubforge models add wav2vec2-de PATH --backend wav2vec2"):
        asr.fingerprint()
