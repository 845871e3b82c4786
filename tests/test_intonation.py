"""Intonation transfer in the voice stage: the dub follows the source actor's pitch contour (voice.intonation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import parselmouth
import pytest

from dubforge.core.contracts import Line, Stems, Transcript, Translation
from dubforge.core.manifest import Timing, Voice
from dubforge.media.audio import MIX_RATE, read_wav, write_wav
from dubforge.models.base import create_synthesizer
from dubforge.tasks.fit import fit_track
from dubforge.tasks.voice import dub_voice

START, END, DURATION = 0.5, 3.0, 4.0
TEXT = "The train leaves the station at eight in the morning."


def source_stem(path: Path, f_from: float, f_to: float) -> Path:
    """A 48 kHz dialogue stem holding one voiced 'line' in [START, END]: a vowel-like harmonic complex whose F0
    glides from f_from to f_to (exponentially, so linearly in semitones)."""
    n = int((END - START) * MIX_RATE)
    f0 = f_from * (f_to / f_from) ** np.linspace(0, 1, n)
    phase = 2 * np.pi * np.cumsum(f0) / MIX_RATE
    tone = sum(np.sin(h * phase) / h for h in range(1, 15) if h * f_to < 4000)
    stem = np.zeros(int(DURATION * MIX_RATE), np.float32)
    stem[int(START * MIX_RATE):int(START * MIX_RATE) + n] = 0.2 * tone / np.max(np.abs(tone))
    return write_wav(path, stem[:, None], MIX_RATE)


def dub(tmp_path: Path, name: str, stem: Path, intonation: str) -> tuple[Path, float, float]:
    translation = Translation(language="en", backend="test", lines=(
        Line(index=0, start=START, end=END, source_text="source", text=TEXT),))
    track = dub_voice("en", translation, {"*": Voice(backend="piper", intonation=intonation)}, {}, Timing(),
                      DURATION, Stems(background=None, dialogue=stem, mode="replace", backend="test"),
                      Transcript(language="en", segments=(), backend="test"), None, tmp_path / name / "work",
                      tmp_path / name / "refs", tmp_path / "tts")
    return track.wav, track.lines[0].start, track.lines[0].end


def rise(wav: Path, start: float, end: float) -> float:
    """Correlation of the line's F0 (semitones, Praat autocorrelation 75-500 Hz, voiced frames) with time:
    +1 a steady rise, -1 a steady fall. Independent of the transfer's own tracker and settings."""
    audio, rate = read_wav(wav)
    piece = audio[int(start * rate):int(end * rate), 0].astype(np.float64)
    pitch = parselmouth.Sound(piece, sampling_frequency=rate).to_pitch(pitch_floor=75, pitch_ceiling=500)
    f0 = pitch.selected_array["frequency"]
    voiced = np.flatnonzero(f0 > 0)
    assert len(voiced) > 20, "the dubbed line should be voiced"
    return float(np.corrcoef(voiced, np.log2(f0[voiced]))[0, 1])


@pytest.mark.parametrize(("f_from", "f_to", "sign"), [(100.0, 200.0, 1), (200.0, 100.0, -1)])
def test_dub_follows_the_source_contour(tmp_path: Path, f_from: float, f_to: float, sign: int) -> None:
    stem = source_stem(tmp_path / "dialogue.wav", f_from, f_to)
    own = rise(*dub(tmp_path, "voice", stem, "voice"))
    kept = rise(*dub(tmp_path, "source", stem, "source"))
    assert sign * kept > 0.6, f"the dub should follow the source's {'rise' if sign > 0 else 'fall'} ({kept:.2f})"
    assert sign * kept > sign * own + 0.3, (own, kept)


def test_off_or_no_voiced_source_leaves_the_audio_unchanged(tmp_path: Path) -> None:
    stem = source_stem(tmp_path / "dialogue.wav", 100.0, 200.0)
    silent = write_wav(tmp_path / "silent.wav", np.zeros((int(DURATION * MIX_RATE), 1), np.float32), MIX_RATE)
    today = fit_track(
        [Line(index=0, start=START, end=END, source_text="source", text=TEXT)],
        {"*": create_synthesizer("piper", language="en")}, Timing(), DURATION, tmp_path / "today", "en").wav
    for name, source, option in (("off", stem, "voice"), ("no-voicing", silent, "source")):
        wav = dub(tmp_path, name, source, option)[0]
        assert wav.read_bytes() == today.read_bytes(), name


def test_transfer_is_deterministic_and_cached_per_line(tmp_path: Path) -> None:
    stem = source_stem(tmp_path / "dialogue.wav", 100.0, 200.0)
    first = dub(tmp_path, "a", stem, "source")[0].read_bytes()
    cached = sorted((tmp_path / "tts").iterdir())
    assert dub(tmp_path, "b", stem, "source")[0].read_bytes() == first
    assert sorted((tmp_path / "tts").iterdir()) == cached  # the second run synthesised nothing new
    other = source_stem(tmp_path / "falling.wav", 200.0, 100.0)
    assert dub(tmp_path, "c", other, "source")[0].read_bytes() != first  # another contour is another line
