"""QC intelligibility: a dub transcribed back by an independent multilingual recogniser, scored by CER."""

from __future__ import annotations

import numpy as np
import pytest
from dubforge.core.model_store import multilingual_whisper_installed
from dubforge.core.registry import create
from dubforge.media.audio import read_wav, write_wav
from dubforge.tasks.qc import back_transcription, character_error_rate


def test_character_error_rate():
    assert character_error_rate("Hola, ¿cómo estás?", "hola cómo estás") == 0.0  # case and punctuation ignored
    assert character_error_rate("abcd", "abxd") == 0.25
    assert character_error_rate("abcd", "") == 1.0  # nothing heard: every character missed
    assert character_error_rate("", "") == 0.0


@pytest.mark.skipif(not multilingual_whisper_installed(), reason="the qc extra (multilingual Whisper) is not installed")
def test_spanish_dub_heard_back(tmp_path):
    text = ["Buenos días a todos.", "Hoy vamos a hablar del tiempo en la montaña."]
    tts = create("tts", "espeak", language="es")
    clips = [read_wav(tts.synthesize(line, tmp_path / f"{i}.wav").wav) for i, line in enumerate(text)]
    rate = clips[0][1]
    gap = np.zeros((rate // 2, 1), np.float32)
    track = np.concatenate([gap, clips[0][0], gap, clips[1][0], gap])
    write_wav(tmp_path / "dub.wav", track, rate)
    heard = back_transcription(tmp_path / "dub.wav", text, "es")
    print(heard)
    assert heard["cer"] < 0.35, heard  # espeak's Spanish is robotic but intelligible
    wrong = back_transcription(tmp_path / "dub.wav", ["Una frase que nadie ha dicho nunca aquí."], "es")
    assert wrong["cer"] > 0.5 > heard["cer"]
