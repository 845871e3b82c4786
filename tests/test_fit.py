"""Timing fit (isochrony) and the pitch-preserving time-stretch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dubforge.core.contracts import Line, Phoneme, Speech
from dubforge.core.manifest import Timing
from dubforge.media.audio import read_wav, write_wav
from dubforge.media.stretch import time_stretch
from dubforge.tasks.fit import fit_track

SR = 24_000
SEC_PER_CHAR = 0.05  # the test voice speaks 20 characters per second at rate 1
TIMING = Timing(max_speedup=1.25, max_rate=1.1, gap=0.08)


class ToneVoice:
    """Deterministic stand-in TTS: a modulated tone lasting len(text) * 0.05 / rate seconds,
    one evenly spaced phoneme per character. Records every call."""

    name = "tone"

    def __init__(self, pitch: float = 300.0):
        self.pitch = pitch
        self.calls: list[tuple[str, float]] = []

    def fingerprint(self) -> str:
        return f"tone-{self.pitch}"

    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        self.calls.append((text, rate))
        n = int(round(len(text) * SEC_PER_CHAR / rate * SR))
        t = np.arange(n) / SR
        audio = 0.3 * np.sin(2 * np.pi * self.pitch * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
        write_wav(out_wav, audio[:, None], SR)
        step = n / SR / len(text)
        phonemes = tuple(Phoneme(symbol=c, start=i * step, end=(i + 1) * step) for i, c in enumerate(text))
        return Speech(wav=Path(out_wav), sample_rate=SR, duration=n / SR, phonemes=phonemes)


def text(seconds: float) -> str:
    return "x" * int(round(seconds / SEC_PER_CHAR))


def line(i: int, start: float, end: float, seconds: float, speaker: str = "speaker 1") -> Line:
    body = text(seconds)
    return Line(index=i, start=start, end=end, source_text=f"src {i}", text=body, speaker=speaker)


def run(tmp_path: Path, lines: list[Line], duration: float = 20.0, voice: ToneVoice | None = None):
    voice = voice or ToneVoice()
    return fit_track(lines, {"*": voice}, TIMING, duration, tmp_path / "work", "es"), voice


def test_fit_rate_stretch_and_borrowing(tmp_path: Path) -> None:
    lines = [
        line(0, 0.5, 2.0, 1.0),  # fits: speed 1
        line(1, 3.0, 4.4, 1.5),  # needs 1.071: TTS rate alone
        line(2, 5.0, 6.25, 1.5),  # needs 1.2: rate 1.1, then stretch 1.0909
        line(3, 7.0, 8.0, 2.0),  # needs 2.0 in the window: speed up to the cap 1.25, then borrow 0.6 s
        line(4, 11.0, 12.0, 2.0),  # the same, with only 0.62 s of silence to borrow: just fits
        line(5, 12.7, 13.5, 0.5),
    ]
    dub, voice = run(tmp_path, lines)
    fitted = {f.index: f for f in dub.lines}

    f = fitted[0]
    assert (f.start, f.speed, f.rate, f.stretch, f.borrowed, f.overflow) == (0.5, 1.0, 1.0, 1.0, 0.0, 0.0)
    assert f.end == pytest.approx(1.5) and f.natural_duration == pytest.approx(1.0)

    f = fitted[1]
    assert f.rate == pytest.approx(1.5 / 1.4) and f.stretch == 1.0
    assert f.end == pytest.approx(4.4, abs=1e-4) and f.speed == pytest.approx(1.5 / 1.4, rel=1e-4)

    f = fitted[2]
    assert f.rate == pytest.approx(1.1) and f.stretch == pytest.approx(1.2 / 1.1, rel=1e-3)
    assert f.speed == pytest.approx(1.2, rel=1e-3) and f.end == pytest.approx(6.25, abs=1e-3)

    f = fitted[3]
    assert f.speed == pytest.approx(TIMING.max_speedup) and f.borrowed == pytest.approx(0.6, abs=1e-3)
    assert f.end == pytest.approx(8.6, abs=1e-3) and f.overflow == 0.0

    f = fitted[4]
    assert f.speed == pytest.approx(TIMING.max_speedup) and f.end == pytest.approx(12.6, abs=1e-3)
    assert f.borrowed == pytest.approx(0.6, abs=1e-3) and f.overflow == 0.0
    assert fitted[5].start == 12.7  # not pushed

    # audio where the lines were placed, silence elsewhere; exact length
    audio, rate = read_wav(dub.wav)
    assert rate == 48_000 and audio.shape == (20 * 48_000, 1)
    for f in dub.lines:
        inside = audio[int(f.start * rate) + 480 : int(f.end * rate) - 480, 0]
        assert np.sqrt(np.mean(inside**2)) > 0.05
    assert np.abs(audio[int(1.6 * rate) : int(2.9 * rate)]).max() == 0.0
    assert np.abs(audio[int(13.3 * rate) :]).max() == 0.0

    # phonemes on the source timeline, inside the placed spans, one per character
    assert len(dub.phonemes) == sum(len(ln.text) for ln in lines)
    for f in dub.lines:
        mine = [p for p in dub.phonemes if f.start - 1e-6 <= p.start < f.end]
        assert len(mine) == len(f.text)
        assert mine[0].start == pytest.approx(f.start, abs=2e-3) and mine[-1].end == pytest.approx(f.end, abs=2e-3)
    assert dub.backend == "tone" and dub.sample_rate == 48_000 and dub.language == "es"


def test_overflow_pushes_next_line_and_is_cut_at_video_end(tmp_path: Path) -> None:
    lines = [
        line(0, 1.0, 2.0, 3.0),  # 1.42 s available even with silence: speed 1.25 -> 2.4 s, 0.98 s overflow
        line(1, 2.5, 3.5, 0.5),  # pushed to 3.4 + gap
        line(2, 8.0, 9.5, 3.0),  # the video ends at 10.0: cut
    ]
    dub, _ = run(tmp_path, lines, duration=10.0)
    first, second, last = dub.lines
    assert first.speed == pytest.approx(1.25) and first.end == pytest.approx(3.4, abs=1e-3)
    assert first.borrowed == pytest.approx(0.42, abs=1e-3) and first.overflow == pytest.approx(0.98, abs=1e-3)
    assert first.text == lines[0].text  # never truncated
    assert second.start == pytest.approx(first.end + TIMING.gap) and second.window_start == 2.5
    assert second.speed == pytest.approx(1.25) and second.overflow == 0.0  # pushed: catches up at the cap
    assert last.speed == pytest.approx(1.25) and last.overflow == pytest.approx(2.4 - 2.0, abs=1e-3)

    audio, rate = read_wav(dub.wav)
    assert audio.shape == (10 * 48_000, 1)
    assert np.abs(audio[int(first.end * rate) + 10 : int(second.start * rate) - 10]).max() == 0.0
    assert np.abs(audio[-24:]).max() < 0.01  # faded out at the cut
    assert all(p.end <= 10.0 for p in dub.phonemes)


def test_cache_reuses_synthesis_and_redoes_only_changed_lines(tmp_path: Path) -> None:
    lines = [line(0, 0.5, 2.0, 1.0), line(1, 3.0, 4.25, 1.5), line(2, 5.0, 6.0, 0.5)]
    voice = ToneVoice()
    first, _ = run(tmp_path, lines, voice=voice)
    assert len(voice.calls) == 4  # three lines + one faster re-synthesis
    again, _ = run(tmp_path, lines, voice=voice)
    assert len(voice.calls) == 4 and again == first
    changed = [*lines[:2], lines[2].model_copy(update={"text": "y" * 12})]
    run(tmp_path, changed, voice=voice)
    assert voice.calls[4:] == [("y" * 12, 1.0)]


def test_speaker_voices_and_default(tmp_path: Path) -> None:
    ana, default = ToneVoice(400.0), ToneVoice(200.0)
    ana.name = "piper"
    lines = [line(0, 0.0, 1.0, 0.5, speaker="Ana"), line(1, 2.0, 3.0, 0.5, speaker="Bo")]
    dub = fit_track(lines, {"Ana": ana, "*": default}, TIMING, 4.0, tmp_path, "fr")
    assert [c[0] for c in ana.calls] == [lines[0].text] and [c[0] for c in default.calls] == [lines[1].text]
    assert dub.backend == "piper,tone"


def dominant(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * rate / len(audio))


@pytest.mark.parametrize("speed", [1.1, 1.25, 1.4])
def test_time_stretch_keeps_pitch(speed: float) -> None:
    rate = 48_000
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate).astype(np.float32)
    stereo = np.stack([tone, 0.5 * tone], axis=1)
    out = time_stretch(stereo, rate, speed)
    assert out.shape == (round(2 * rate / speed), 2) and out.dtype == np.float32
    assert dominant(out[:, 0], rate) == pytest.approx(440, rel=0.02)
    assert np.abs(out[rate // 4 : -rate // 4, 1]).max() == pytest.approx(0.5, rel=0.05)  # channels kept apart
    assert np.array_equal(time_stretch(stereo, rate, 1.0), stereo)


def test_real_espeak_line_fits(tmp_path: Path) -> None:
    espeak = pytest.importorskip("dubforge.models.espeak_tts")
    voice = espeak.EspeakSynthesizer(language="es")
    sentence = "El perro marrón corre muy rápido por el parque todas las mañanas."
    loose = Line(index=0, start=0.0, end=30.0, source_text="x", text=sentence)
    natural = fit_track([loose], {"*": voice}, TIMING, 30.0, tmp_path, "es")
    d = natural.lines[0].natural_duration
    assert 2.0 < d < 8.0
    window = d / 1.2  # needs rate 1.1 and a little stretch
    tight = loose.model_copy(update={"start": 1.0, "end": 1.0 + window})
    fitted = fit_track([tight], {"*": voice}, TIMING, 30.0, tmp_path, "es")
    f = fitted.lines[0]
    assert f.rate == pytest.approx(1.1) and f.end == pytest.approx(1.0 + window, abs=0.005)
    assert f.speed == pytest.approx(1.2, rel=0.01) and f.overflow == 0.0
    assert fitted.phonemes and all(f.start <= p.start < p.end <= f.end + 1e-6 for p in fitted.phonemes)
    audio, rate = read_wav(fitted.wav)
    assert np.abs(audio[int(1.0 * rate) : int(f.end * rate)]).max() > 0.1


def test_cloned_voices_are_each_speakers_own() -> None:
    from dubforge.core.errors import StageError
    from dubforge.core.manifest import Voice
    from dubforge.tasks.fit import speaker_voices

    clips = {"anna": Path("anna.wav"), "ben": Path("ben.wav")}
    made: list[tuple[str, Path | None]] = []

    def make(speaker, voice, reference):
        made.append((speaker, reference))
        return f"{voice.backend}:{speaker}:{reference}"

    clone = Voice(backend="coqui", clone=True)
    chosen = speaker_voices("es", {"*": clone, "cleo": Voice(backend="espeak")}, {"anna", "ben", "cleo"}, clips, make)
    assert chosen == {"anna": "coqui:anna:anna.wav", "ben": "coqui:ben:ben.wav", "cleo": "espeak:cleo:None"}
    assert "*" not in chosen  # nobody falls back to somebody else's clone

    with pytest.raises(StageError, match="'dan'.*under 6 s"):  # dan said too little to clone: a clear error
        speaker_voices("es", {"*": clone}, {"anna", "dan"}, clips, make)
    with pytest.raises(StageError, match="'dan'"):
        speaker_voices("es", {"dan": clone, "*": Voice()}, {"anna", "dan"}, clips, make)
    plain = speaker_voices("es", {"*": Voice(backend="piper")}, {"anna"}, clips, make)
    assert plain == {"*": "piper:*:None"}
