"""whisperx ASR through the registry: bundled Whisper tiny.en, a random wav2vec2 aligner saved as a local
Hugging Face folder, and NLTK punkt_tab data in a temp dir."""

from __future__ import annotations

import pytest

from dubforge.models.base import create_transcriber
from tests.neural.conftest import NEEDS

pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("whisperx", reason=NEEDS)


def test_transcribes_and_aligns_words(tmp_path, speech_clip, wav2vec2_dir, nltk_data):
    from dubforge.core import model_store
    from dubforge.media.audio import read_wav

    wav, text = speech_clip
    models = tmp_path / "models.yaml"
    model_store.add(models, "wav2vec2-en", wav2vec2_dir)
    asr = create_transcriber("whisperx", align_models={"en": "wav2vec2-en"}, registry=models, nltk_data=nltk_data)
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
    from dubforge.core.errors import StageError
    from dubforge.models.whisperx_asr import WhisperXTranscriber

    asr = WhisperXTranscriber(align_models={"de": "wav2vec2-de"}, registry=tmp_path / "models.yaml")
    with pytest.raises(StageError, match=r"dubforge models add wav2vec2-de PATH --backend wav2vec2"):
        asr.fingerprint()
